//! Trust derived from the PBX's own configuration: the trunks and fixed peers the PBX is
//! configured to talk to are the addresses an attacker most wants us to ban (forging one
//! UDP packet from a trunk provider's address would otherwise cut the PBX off). Each
//! parser takes addresses and host names only from the fields that name a peer:
//!
//! - Asterisk PJSIP: `type=identify` `match=`, the hosts of `type=aor` `contact=`, and
//!   `type=registration` `server_uri=` (`pjsip.conf` and every file it `#include`s, as FreePBX
//!   writes them);
//! - Asterisk chan_sip: peers with a fixed `host=` (not `dynamic`);
//! - FreeSWITCH: sofia gateways' `proxy` and `realm` (`sip_profiles/**/*.xml`);
//! - Kamailio / OpenSIPS: `dispatcher.list` destinations and the permissions module's
//!   db_text `address` table.
//!
//! Every entry keeps the file and line it came from, for `pbxguard status --json`.
//! Networks wider than /16 (IPv4) or /32 (IPv6) are refused: a config typo must not turn
//! bans off for a continent.

mod asterisk;
mod freeswitch;
mod kamailio;
pub mod watch;

use std::{
    net::{IpAddr, ToSocketAddrs as _},
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::Serialize;

/// Where a PBX names a peer: an address, a network or a host name to resolve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Peer {
    /// An address or network.
    Net(#[serde(with = "crate::units::net_serde")] IpNet),
    /// A DNS name (resolved, and re-resolved on refresh).
    Name(String),
}

/// One peer found in a PBX config file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrustEntry {
    /// The peer.
    pub peer: Peer,
    /// The file it is in.
    pub file: PathBuf,
    /// Its 1-based line.
    pub line: usize,
    /// Which setting named it (`pjsip identify match`, `sofia gateway proxy`, ...).
    pub origin: &'static str,
}

/// A trusted network with where it came from (a name resolves to one per address).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Trusted {
    /// The network.
    #[serde(with = "crate::units::net_serde")]
    pub net: IpNet,
    /// The entry that named it.
    #[serde(flatten)]
    pub entry: TrustEntry,
}

/// What was found, and what was refused or could not be resolved (for the log).
#[derive(Clone, Debug, Default)]
pub struct Discovered {
    /// Networks to trust.
    pub trusted: Vec<Trusted>,
    /// Entries skipped, with why.
    pub problems: Vec<String>,
}

/// Widest network a PBX config may make trusted.
const MIN_PREFIX_V4: u8 = 16;
const MIN_PREFIX_V6: u8 = 32;

/// Reads the PBX configs under `root` (`/` on a live host) and resolves names.
pub fn discover(root: &Path) -> Discovered {
    let mut entries = Vec::new();
    entries.extend(asterisk::pjsip(&root.join("etc/asterisk")));
    entries.extend(asterisk::chan_sip(&root.join("etc/asterisk")));
    entries.extend(freeswitch::gateways(
        &root.join("etc/freeswitch/sip_profiles"),
    ));
    for dir in ["etc/kamailio", "etc/opensips"] {
        entries.extend(kamailio::dispatcher(
            &root.join(dir).join("dispatcher.list"),
        ));
        entries.extend(kamailio::address_table(
            &root.join(dir).join("dbtext/address"),
        ));
    }
    resolve(entries)
}

/// Turns entries into networks: names are resolved now; too-wide networks are refused.
pub fn resolve(entries: Vec<TrustEntry>) -> Discovered {
    let mut out = Discovered::default();
    for entry in entries {
        let where_ = format!("{}:{}", entry.file.display(), entry.line);
        match &entry.peer {
            Peer::Net(net) => {
                let min = if net.addr().is_ipv4() {
                    MIN_PREFIX_V4
                } else {
                    MIN_PREFIX_V6
                };
                if net.prefix_len() < min {
                    out.problems.push(format!(
                        "{where_}: {net} ({}) is wider than /{min}; not trusted (allowlist it in [allow] if you mean it)",
                        entry.origin
                    ));
                    continue;
                }
                out.trusted.push(Trusted {
                    net: *net,
                    entry: entry.clone(),
                });
            }
            Peer::Name(name) => match (name.as_str(), 0).to_socket_addrs() {
                Ok(addrs) => {
                    let mut seen: Vec<IpAddr> = Vec::new();
                    for addr in addrs.map(|a| a.ip()).filter(|ip| !ip.is_unspecified()) {
                        if !seen.contains(&addr) {
                            seen.push(addr);
                            out.trusted.push(Trusted {
                                net: IpNet::from(addr),
                                entry: entry.clone(),
                            });
                        }
                    }
                }
                Err(e) => out.problems.push(format!(
                    "{where_}: cannot resolve {name} ({}): {e}; retried on the next refresh",
                    entry.origin
                )),
            },
        }
    }
    out
}

/// Parses what a PBX writes for a peer: an address, a CIDR, `[v6]`, or a host name,
/// with an optional `:port`. Anything else (spaces, quotes, `dynamic`) is `None`.
pub(crate) fn parse_peer(text: &str) -> Option<Peer> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("dynamic") {
        return None;
    }
    if let Ok(net) = crate::units::parse_net(text) {
        return Some(Peer::Net(net));
    }
    // [v6] or [v6]:port
    if let Some(rest) = text.strip_prefix('[') {
        let inner = rest.split(']').next()?;
        return inner
            .parse::<IpAddr>()
            .ok()
            .map(|ip| Peer::Net(IpNet::from(ip)));
    }
    // host:port or v4:port
    let host = match text.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => text,
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(Peer::Net(IpNet::from(ip)));
    }
    let valid_name = host.len() <= 253
        && host.contains('.')
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    valid_name.then(|| Peer::Name(host.to_ascii_lowercase()))
}

/// The host part of a SIP URI (`sip:user@host:port;params`, `sips:host`, `<sip:...>`).
pub(crate) fn uri_host(uri: &str) -> Option<Peer> {
    let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .or_else(|| uri.strip_prefix("SIP:"))?;
    let rest = rest.split([';', '?', '>']).next()?;
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    parse_peer(hostport)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_only_from_clean_text() {
        let net = |s: &str| Some(Peer::Net(crate::units::parse_net(s).unwrap()));
        assert_eq!(parse_peer("203.0.113.5"), net("203.0.113.5"));
        assert_eq!(parse_peer("203.0.113.5:5060"), net("203.0.113.5"));
        assert_eq!(parse_peer("198.51.100.0/24"), net("198.51.100.0/24"));
        assert_eq!(parse_peer("[2001:db8::5]:5061"), net("2001:db8::5"));
        assert_eq!(
            parse_peer("Sip.Provider.example:5060"),
            Some(Peer::Name("sip.provider.example".into()))
        );
        for bad in [
            "dynamic",
            "",
            "evil host.example",
            "\"x\"",
            "a..b",
            "localhost",
            "x;y.z",
        ] {
            assert_eq!(parse_peer(bad), None, "{bad}");
        }
        assert_eq!(
            uri_host("sip:trunk@203.0.113.9:5060;transport=udp"),
            net("203.0.113.9")
        );
        assert_eq!(uri_host("<sips:[2001:db8::9]>"), net("2001:db8::9"));
        assert_eq!(uri_host("sip:a@b@203.0.113.9"), net("203.0.113.9"));
        assert_eq!(uri_host("http://203.0.113.9"), None);
    }

    #[test]
    fn wide_networks_are_refused_and_names_resolve() {
        let entry = |peer| TrustEntry {
            peer,
            file: "pjsip.conf".into(),
            line: 7,
            origin: "pjsip identify match",
        };
        let found = resolve(vec![
            entry(Peer::Net("0.0.0.0/0".parse().unwrap())),
            entry(Peer::Net("10.0.0.0/8".parse().unwrap())),
            entry(Peer::Net("203.0.113.0/24".parse().unwrap())),
            entry(Peer::Name("localhost.".into())),
        ]);
        let nets: Vec<String> = found.trusted.iter().map(|t| t.net.to_string()).collect();
        assert!(nets.contains(&"203.0.113.0/24".to_string()), "{nets:?}");
        assert!(
            !nets
                .iter()
                .any(|n| n.starts_with("0.0.0.0") || n.starts_with("10."))
        );
        assert_eq!(
            found
                .problems
                .iter()
                .filter(|p| p.contains("wider than"))
                .count(),
            2,
            "{:?}",
            found.problems
        );
        assert!(found.problems.iter().all(|p| p.contains("pjsip.conf:7")));
    }
}
