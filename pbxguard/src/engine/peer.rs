//! Bans from other nodes (`[cluster]`, `cluster/`): each goes through this node's own guard
//! (its allowlist, its PBX peers, its addresses), is refused when its evidence is spoofable
//! and it covers an address known here, and is then journaled and enforced like a local
//! ban with source `peer:<node>`. A peer can never lift or shorten a ban it did not make:
//! a local ban on the same network stands, and its unban lifts only its own ban.

use std::{collections::BTreeMap, time::SystemTime};

use ipnet::IpNet;
use serde::Serialize;

use super::Engine;
use crate::{
    cluster::wire::{Op, PEER_SOURCE, Wire},
    detect::Evidence,
    store::BanRecord,
};

/// Peers' bans wider than these prefixes are refused: no peer can blank out a /7 of the
/// internet (and `0.0.0.0/0` would cover this host anyway).
const WIDEST_V4: u8 = 8;
/// The IPv6 counterpart of [`WIDEST_V4`].
const WIDEST_V6: u8 = 16;

/// A peer's ban this node would not apply, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PeerRefusal {
    /// The node that sent it.
    pub node: String,
    /// The network.
    pub net: IpNet,
    /// Why, for the log.
    pub why: String,
}

/// What became of a batch of peers' messages.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PeerOutcome {
    /// Peers' bans now journaled and enforced here.
    pub applied: usize,
    /// Peers' bans lifted by their unban.
    pub lifted: usize,
    /// Messages with nothing to do: already expired, a local or longer ban stands, an
    /// unban of a ban this node does not hold from that peer.
    pub skipped: usize,
    /// Refused, never applied.
    pub refused: Vec<PeerRefusal>,
}

/// Whether `record` came from a peer (and is therefore never published again).
pub fn is_peer_ban(record: &BanRecord) -> bool {
    record.source.starts_with(PEER_SOURCE)
}

impl Engine {
    /// Applies peers' messages in order: the last message per (node, network) counts. One
    /// journal write and one kernel batch for the bans, one of each for the unbans.
    pub fn apply_peers(&mut self, messages: Vec<Wire>, now: SystemTime) -> PeerOutcome {
        let mut outcome = PeerOutcome::default();
        let mut latest: BTreeMap<(IpNet, String), Wire> = BTreeMap::new();
        let total = messages.len();
        for wire in messages {
            latest.insert((wire.net, wire.node.clone()), wire);
        }
        outcome.skipped += total - latest.len();

        let mut unbans = Vec::new();
        let mut bans: BTreeMap<IpNet, BanRecord> = BTreeMap::new();
        for ((net, node), wire) in latest {
            match wire.op {
                Op::Unban => {
                    let source = format!("{PEER_SOURCE}{node}");
                    if self.ledger.get(&net).is_some_and(|b| b.source == source) {
                        unbans.push(net);
                    } else {
                        outcome.skipped += 1;
                    }
                }
                Op::Ban => match self.screen_peer_ban(&wire, now) {
                    Err(why) => outcome.refused.push(PeerRefusal { node, net, why }),
                    Ok(false) => outcome.skipped += 1,
                    Ok(true) => {
                        let record = wire.to_record(now);
                        // Two peers on one network in one batch: the longer ban wins.
                        match bans.get(&net) {
                            Some(held) if !outlasts(record.expires, held.expires) => {
                                outcome.skipped += 1;
                            }
                            _ => {
                                bans.insert(net, record);
                            }
                        }
                    }
                },
            }
        }
        if !unbans.is_empty() {
            match self.ledger.unban(&unbans) {
                Ok(lifted) => {
                    outcome.lifted = lifted.len();
                    for record in &lifted {
                        tracing::info!(net = %record.net, source = %record.source, "peer's ban lifted by its unban");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "lifting peers' bans failed; they stay until the peer's next message or their expiry");
                }
            }
        }
        let records: Vec<BanRecord> = bans.into_values().collect();
        if !records.is_empty() {
            let count = records.len();
            match self.ledger.ban(records, None) {
                Ok(applied) => {
                    outcome.applied = applied.banned.len();
                    for record in &applied.banned {
                        tracing::info!(net = %record.net, source = %record.source, rule = ?record.rule,
                            expires = ?record.expires.map(crate::units::rfc3339::format), "banned by a peer");
                    }
                    for (record, e) in applied.refused {
                        self.not_enforced += 1;
                        outcome.refused.push(PeerRefusal {
                            node: record.source[PEER_SOURCE.len()..].to_string(),
                            net: record.net,
                            why: format!("the kernel refused it: {e}"),
                        });
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, bans = count, "journaling peers' bans failed; none applied (they are redelivered)");
                    self.published_bans = None;
                    return outcome;
                }
            }
        }
        self.published_bans = None;
        for refusal in &outcome.refused {
            tracing::warn!(node = %refusal.node, net = %refusal.net, why = %refusal.why, "peer's ban refused");
        }
        outcome
    }

    /// `Ok(true)`: apply; `Ok(false)`: nothing to do; `Err`: refused, with why.
    fn screen_peer_ban(&self, wire: &Wire, now: SystemTime) -> Result<bool, String> {
        if wire.expires.is_some_and(|t| t <= now) {
            return Ok(false);
        }
        let widest = match wire.net {
            IpNet::V4(_) => WIDEST_V4,
            IpNet::V6(_) => WIDEST_V6,
        };
        if wire.net.prefix_len() < widest {
            return Err(format!(
                "wider than /{widest}: a peer may not ban that much of the internet"
            ));
        }
        self.guard.check(&wire.net).map_err(|r| r.why)?;
        if wire.evidence != Some(Evidence::Proven) && self.known.any_within(&wire.net, now) {
            return Err(
                "its evidence can be forged and it covers an address that logged in successfully here"
                    .into(),
            );
        }
        let Some(held) = self.ledger.get(&wire.net).filter(|b| !b.is_expired(now)) else {
            return Ok(true);
        };
        if !is_peer_ban(held) {
            return Ok(false); // this node's own ban stands
        }
        let same_peer = held.source[PEER_SOURCE.len()..] == wire.node;
        Ok(same_peer || outlasts(wire.expires, held.expires))
    }
}

/// Whether an expiry of `a` ends later than `b` (`None` is permanent).
fn outlasts(a: Option<SystemTime>, b: Option<SystemTime>) -> bool {
    match (a, b) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(a), Some(b)) => a > b,
    }
}
