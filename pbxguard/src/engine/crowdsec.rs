//! CrowdSec's decisions in the engine (`[crowdsec]`, `crowdsec.rs` pulls them): a `ban`
//! decision becomes a ban with source `crowdsec` and the decision's duration, through this
//! node's guard like any ban; CrowdSec deleting it lifts it (only a ban CrowdSec made). A
//! startup pull is the whole truth: `crowdsec` bans it no longer lists are lifted, so a
//! restart of either side converges.

use std::{collections::BTreeSet, time::SystemTime};

use ipnet::IpNet;
use serde::Serialize;

use super::Engine;
use crate::{crowdsec::Delta, store::BanRecord};

/// Source of CrowdSec's bans in `bans list`.
pub const SOURCE: &str = "crowdsec";

/// The bouncer in `status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CrowdsecStatus {
    /// The LAPI.
    pub lapi_url: String,
    /// Whether the last pull succeeded.
    pub connected: bool,
    /// When the last pull succeeded.
    #[serde(with = "crate::units::rfc3339::option")]
    pub last_pull: Option<SystemTime>,
    /// Why the last pull failed (enforced decisions stay).
    pub last_error: Option<String>,
    /// CrowdSec bans in force.
    pub bans: usize,
    /// Decisions applied since start.
    pub applied: u64,
    /// Decisions lifted since start.
    pub lifted: u64,
    /// Decisions refused (protected address, not a ban, unreadable).
    pub refused: u64,
}

impl Engine {
    /// Applies one pull; `startup` pulls list every active decision.
    pub fn on_crowdsec(&mut self, delta: Delta, startup: bool, now: SystemTime) {
        let mut status = self.crowdsec.clone().unwrap_or_default();
        status.refused += delta.skipped as u64;
        let mut wanted: BTreeSet<IpNet> = BTreeSet::new();
        let mut records = Vec::new();
        for decision in &delta.new {
            if !decision.kind.eq_ignore_ascii_case("ban") {
                status.refused += 1;
                continue;
            }
            let Some(duration) = decision.duration else {
                continue; // already over
            };
            if let Err(refusal) = self.guard.check(&decision.net) {
                status.refused += 1;
                tracing::warn!(net = %decision.net, why = %refusal.why, "CrowdSec decision refused");
                continue;
            }
            wanted.insert(decision.net);
            let expires = now.checked_add(duration);
            if let Some(held) = self
                .ledger
                .get(&decision.net)
                .filter(|b| !b.is_expired(now))
            {
                let later = match (held.expires, expires) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(a), Some(b)) => b > a + std::time::Duration::from_secs(1),
                };
                // A ban of this node's own stands; CrowdSec's own is extended, never cut.
                if held.source != SOURCE || !later {
                    continue;
                }
            }
            records.push(BanRecord {
                net: decision.net,
                reason: crate::units::sanitize_reason(&format!(
                    "crowdsec: {} ({})",
                    decision.scenario, decision.origin
                )),
                source: SOURCE.into(),
                created: now,
                expires,
                rule: Some(decision.scenario.clone()),
                failures: None,
                offense: None,
                evidence: None,
            });
        }
        if !records.is_empty() {
            match self.ledger.ban(records, None) {
                Ok(applied) => {
                    status.applied += applied.banned.len() as u64;
                    status.refused += applied.refused.len() as u64;
                    for record in &applied.banned {
                        tracing::info!(net = %record.net, source = SOURCE, reason = %record.reason, "banned");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "CrowdSec decisions not applied; retrying at the next startup pull");
                    status.last_error = Some(e.to_string());
                }
            }
        }
        // Lifted: what CrowdSec deleted, and on a startup pull whatever it no longer lists.
        let ours = |engine: &Engine, net: &IpNet| {
            engine.ledger.get(net).is_some_and(|b| b.source == SOURCE)
        };
        let mut lift: BTreeSet<IpNet> = delta
            .deleted
            .iter()
            .map(|d| d.net)
            .filter(|net| !wanted.contains(net) && ours(self, net))
            .collect();
        if startup {
            lift.extend(
                self.ledger
                    .bans()
                    .filter(|b| b.source == SOURCE && !wanted.contains(&b.net))
                    .map(|b| b.net),
            );
        }
        if !lift.is_empty() {
            let nets: Vec<IpNet> = lift.into_iter().collect();
            match self.ledger.unban(&nets) {
                Ok(lifted) => {
                    status.lifted += lifted.len() as u64;
                    for record in &lifted {
                        tracing::info!(net = %record.net, "CrowdSec decision deleted: unbanned");
                    }
                }
                Err(e) => tracing::error!(error = %e, "lifting CrowdSec bans failed"),
            }
        }
        self.published_bans = None;
        status.bans = self.ledger.bans().filter(|b| b.source == SOURCE).count();
        status.connected = true;
        status.last_pull = Some(now);
        status.last_error = None;
        self.crowdsec = Some(status);
    }

    /// A pull failed: enforced decisions stay; `status` says why.
    pub fn crowdsec_failed(&mut self, lapi_url: &str, error: String) {
        let status = self.crowdsec.get_or_insert_with(|| CrowdsecStatus {
            lapi_url: lapi_url.into(),
            ..Default::default()
        });
        status.connected = false;
        status.last_error = Some(error);
    }
}
