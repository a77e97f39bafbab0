//! What travels on the stream: one JSON message per (node, network) subject,
//! `pbxguard.bans.<node>.<network>`, the latest of which is that node's word on that
//! network (the stream keeps one message per subject). A peer may be compromised or
//! mistaken, so [`parse`] trusts nothing: the payload's node and network must be the ones
//! its subject names, every string is bounded and sanitised, and an unknown field or
//! version is refused.

use std::time::SystemTime;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    config::valid_node_name,
    detect::Evidence,
    store::BanRecord,
    units::{net_serde, rfc3339},
};

/// Subjects of every node's bans.
pub const SUBJECTS: &str = "pbxguard.bans.>";
/// The part before the node's name.
const PREFIX: &str = "pbxguard.bans.";
/// The wire format's version.
const VERSION: u8 = 1;
/// Larger payloads are refused before parsing.
pub const MAX_PAYLOAD: usize = 4096;
/// Longest reason kept; the rest is cut.
const MAX_REASON: usize = 200;
/// Longest filter or rule name accepted.
const MAX_NAME: usize = 64;
/// Source prefix of peers' bans in `bans list`: `peer:<node>`.
pub const PEER_SOURCE: &str = "peer:";

/// A ban or its lifting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// The network is banned until `expires`.
    Ban,
    /// The node lifted its ban (an expiry is not announced: every node expires on time).
    Unban,
}

/// One message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wire {
    /// Format version.
    pub v: u8,
    /// Ban or unban.
    pub op: Op,
    /// The publishing node.
    pub node: String,
    /// The network.
    #[serde(with = "net_serde")]
    pub net: IpNet,
    /// When it was made on the publishing node.
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    /// When the ban ends; `None` is permanent (bans only).
    #[serde(with = "rfc3339::option", default)]
    pub expires: Option<SystemTime>,
    /// Why, as the publishing node said it.
    #[serde(default)]
    pub reason: String,
    /// `manual` or the filter that detected it.
    #[serde(default)]
    pub filter: String,
    /// The filter's rule.
    #[serde(default)]
    pub rule: Option<String>,
    /// The publishing node's escalation step.
    #[serde(default)]
    pub offense: Option<u32>,
    /// How hard the evidence was to forge.
    #[serde(default)]
    pub evidence: Option<Evidence>,
}

/// Why a message was refused before it reached the engine.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Malformed {
    /// Too large to be ours.
    #[error("payload of {0} bytes is over the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    /// Not our JSON.
    #[error("unreadable payload: {0}")]
    Json(String),
    /// A version this build does not know.
    #[error("unknown format version {0}")]
    Version(u8),
    /// The payload names another node or network than its subject.
    #[error("subject `{subject}` does not match the payload (node `{node}`, network {net})")]
    Subject {
        /// The subject it came on.
        subject: String,
        /// The node in the payload.
        node: String,
        /// The network in the payload.
        net: IpNet,
    },
    /// A node name, filter or rule outside the allowed characters or length.
    #[error("invalid {0}")]
    Name(&'static str),
}

/// The subject `node` publishes `net` on (`.` in addresses become `-`: a subject's tokens
/// are dot-separated).
pub fn subject(node: &str, net: &IpNet) -> String {
    format!("{PREFIX}{node}.{}", net.to_string().replace('.', "-"))
}

/// The subjects of every ban `node` published.
pub fn node_subjects(node: &str) -> String {
    format!("{PREFIX}{node}.>")
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Reads a message as received on `subject`.
pub fn parse(subject_name: &str, payload: &[u8]) -> Result<Wire, Malformed> {
    if payload.len() > MAX_PAYLOAD {
        return Err(Malformed::TooLarge(payload.len()));
    }
    let mut wire: Wire =
        serde_json::from_slice(payload).map_err(|e| Malformed::Json(e.to_string()))?;
    if wire.v != VERSION {
        return Err(Malformed::Version(wire.v));
    }
    if !valid_node_name(&wire.node) {
        return Err(Malformed::Name("node name"));
    }
    wire.net = wire.net.trunc();
    if subject(&wire.node, &wire.net) != subject_name {
        return Err(Malformed::Subject {
            subject: subject_name.chars().take(200).collect(),
            node: wire.node,
            net: wire.net,
        });
    }
    if wire.op == Op::Ban {
        if !valid_name(&wire.filter) {
            return Err(Malformed::Name("filter name"));
        }
        if wire.rule.as_deref().is_some_and(|r| !valid_name(r)) {
            return Err(Malformed::Name("rule name"));
        }
    }
    wire.reason = crate::units::sanitize_reason(&wire.reason)
        .chars()
        .take(MAX_REASON)
        .collect();
    Ok(wire)
}

impl Wire {
    /// The message announcing `record`, made on `node`.
    pub fn ban(node: &str, record: &BanRecord) -> Wire {
        Wire {
            v: VERSION,
            op: Op::Ban,
            node: node.to_string(),
            net: record.net,
            at: record.created,
            expires: record.expires,
            reason: record.reason.chars().take(MAX_REASON).collect(),
            filter: record.source.clone(),
            rule: record.rule.clone(),
            offense: record.offense,
            evidence: record.evidence,
        }
    }

    /// The message lifting `node`'s ban on `net`.
    pub fn unban(node: &str, net: IpNet, at: SystemTime) -> Wire {
        Wire {
            v: VERSION,
            op: Op::Unban,
            node: node.to_string(),
            net,
            at,
            expires: None,
            reason: String::new(),
            filter: String::new(),
            rule: None,
            offense: None,
            evidence: None,
        }
    }

    /// The JSON payload.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("wire messages always serialize")
    }

    /// The ban this node journals for a peer's ban message: source `peer:<node>`, the
    /// peer's filter and rule as `filter/rule`, no local offense. `created` is never later
    /// than `now` (a peer's clock may be ahead).
    pub fn to_record(&self, now: SystemTime) -> BanRecord {
        BanRecord {
            net: self.net,
            reason: if self.reason.is_empty() {
                format!("banned by {}", self.node)
            } else {
                self.reason.clone()
            },
            source: format!("{PEER_SOURCE}{}", self.node),
            created: self.at.min(now),
            expires: self.expires,
            rule: Some(match &self.rule {
                Some(rule) => format!("{}/{rule}", self.filter),
                None => self.filter.clone(),
            }),
            failures: None,
            offense: self.offense,
            evidence: self.evidence,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;
    use crate::units::parse_net;

    fn record(net: &str) -> BanRecord {
        BanRecord {
            net: parse_net(net).unwrap(),
            reason: "5 failures in 10m (auth-failed)".into(),
            source: "asterisk".into(),
            created: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            expires: Some(UNIX_EPOCH + Duration::from_secs(1_800_003_600)),
            rule: Some("auth-failed".into()),
            failures: Some(5),
            offense: Some(1),
            evidence: Some(Evidence::Proven),
        }
    }

    #[test]
    fn a_ban_round_trips_through_its_subject() {
        for net in ["203.0.113.5", "2001:db8::/64", "198.51.100.0/24"] {
            let wire = Wire::ban("pbx-a", &record(net));
            let subject = subject("pbx-a", &wire.net);
            assert!(!subject["pbxguard.bans.pbx-a.".len()..].contains('.'));
            assert_eq!(parse(&subject, &wire.to_payload()).unwrap(), wire);
            let peer = wire.to_record(UNIX_EPOCH + Duration::from_secs(1_900_000_000));
            assert_eq!(peer.source, "peer:pbx-a");
            assert_eq!(peer.rule.as_deref(), Some("asterisk/auth-failed"));
            assert_eq!(peer.expires, record(net).expires);
        }
    }

    #[test]
    fn a_payload_for_another_subject_is_refused() {
        let wire = Wire::ban("pbx-a", &record("203.0.113.5"));
        let payload = wire.to_payload();
        // Another node's subject, another network's subject.
        for other in [
            "pbxguard.bans.pbx-b.203-0-113-5/32",
            "pbxguard.bans.pbx-a.203-0-113-6/32",
            "pbxguard.bans.pbx-a.0-0-0-0/0",
        ] {
            assert!(
                matches!(parse(other, &payload), Err(Malformed::Subject { .. })),
                "{other}"
            );
        }
    }

    #[test]
    fn hostile_fields_are_refused_or_cleaned() {
        let subject = "pbxguard.bans.pbx-a.203-0-113-5/32";
        let mut wire = Wire::ban("pbx-a", &record("203.0.113.5"));
        wire.reason = format!("evil\u{1b}[2J\u{202e}{}", "x".repeat(5000));
        let cleaned = parse(subject, &wire.to_payload());
        assert!(matches!(cleaned, Err(Malformed::TooLarge(_))));
        wire.reason = "evil\u{1b}[2J\u{202e}".into();
        let cleaned = parse(subject, &wire.to_payload()).unwrap();
        assert!(
            !cleaned.reason.chars().any(char::is_control),
            "{:?}",
            cleaned.reason
        );
        wire.filter = "a b".into();
        assert_eq!(
            parse(subject, &wire.to_payload()),
            Err(Malformed::Name("filter name"))
        );
        let unknown = br#"{"v":1,"op":"ban","node":"pbx-a","net":"203.0.113.5/32","at":"2027-01-15T08:00:00Z","filter":"x","extra":1}"#;
        assert!(matches!(parse(subject, unknown), Err(Malformed::Json(_))));
        let v2 = br#"{"v":2,"op":"ban","node":"pbx-a","net":"203.0.113.5/32","at":"2027-01-15T08:00:00Z","filter":"x"}"#;
        assert_eq!(parse(subject, v2), Err(Malformed::Version(2)));
        assert!(matches!(
            parse(subject, b"\xff\x00"),
            Err(Malformed::Json(_))
        ));
    }

    proptest! {
        /// Whatever bytes arrive on whatever subject, parsing answers without panicking,
        /// and anything it accepts names exactly the subject it came on.
        #[test]
        fn parse_never_panics_and_accepts_only_its_own_subject(
            subject in "\\PC{0,80}",
            payload in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            if let Ok(wire) = parse(&subject, &payload) {
                prop_assert_eq!(super::subject(&wire.node, &wire.net), subject);
            }
        }

        /// Mutated real messages: same property.
        #[test]
        fn mutated_messages_never_escape_their_subject(
            index in 0usize..200, byte in any::<u8>(),
        ) {
            let wire = Wire::ban("pbx-a", &record("203.0.113.5"));
            let subject = super::subject("pbx-a", &wire.net);
            let mut payload = wire.to_payload();
            let i = index % payload.len();
            payload[i] = byte;
            if let Ok(wire) = parse(&subject, &payload) {
                prop_assert_eq!(super::subject(&wire.node, &wire.net), subject);
                prop_assert!(!wire.reason.chars().any(char::is_control));
            }
        }
    }
}
