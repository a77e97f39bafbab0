//! "Never lock out the owner": the networks pbxguard refuses to ban.
//!
//! A ban is refused when it lies inside an allowlisted network, or when it would cover
//! loopback or any address of this host. This is checked for every ban, manual or
//! automatic, because a crafted log line must never be able to cut off the admin.

use std::net::IpAddr;

use ipnet::IpNet;

/// Why a network may not be banned, phrased for the admin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing to ban {net}: {why}; pbxguard never bans what would lock out the owner")]
pub struct Refusal {
    /// The network that was asked for.
    pub net: IpNet,
    /// Which protection it hits.
    pub why: String,
}

/// The protected set: the allowlist plus loopback and the host's own addresses.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<IpNet>,
}

const LOOPBACK: [&str; 2] = ["127.0.0.0/8", "::1/128"];

impl Guard {
    /// A guard for the given allowlist.
    pub fn new(allow: &[IpNet]) -> Guard {
        Guard {
            allow: allow.to_vec(),
        }
    }

    /// Ok if `net` may be banned.
    pub fn check(&self, net: &IpNet) -> Result<(), Refusal> {
        let refuse = |why: String| Err(Refusal { net: *net, why });
        if let Some(allowed) = self.allow.iter().find(|a| a.contains(net)) {
            return refuse(format!(
                "it is inside the allowlisted network {allowed} ([allow] networks)"
            ));
        }
        for loopback in LOOPBACK {
            let loopback: IpNet = loopback.parse().expect("constant");
            if overlaps(net, &loopback) {
                return refuse(format!("it covers loopback ({loopback})"));
            }
        }
        for (interface, addr) in host_addresses() {
            if net.contains(&addr) {
                return refuse(format!(
                    "it covers {addr}, an address of this host ({interface})"
                ));
            }
        }
        Ok(())
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// Every address configured on this host's interfaces (in the current network namespace),
/// read fresh each time so that a new DHCP lease is protected at once.
pub fn host_addresses() -> Vec<(String, IpAddr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|ifa| {
            let storage = ifa.address?;
            let ip = if let Some(v4) = storage.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else {
                IpAddr::V6(storage.as_sockaddr_in6()?.ip())
            };
            Some((ifa.interface_name, ip))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::parse_net;

    fn net(s: &str) -> IpNet {
        parse_net(s).unwrap()
    }

    #[test]
    fn allowlisted_networks_cannot_be_banned() {
        let guard = Guard::new(&[net("203.0.113.0/24")]);
        let err = guard.check(&net("203.0.113.10")).unwrap_err();
        assert!(
            err.to_string()
                .contains("allowlisted network 203.0.113.0/24"),
            "{err}"
        );
        // A wider ban is allowed: the allowlist still wins in the data path.
        guard.check(&net("203.0.0.0/16")).unwrap();
        guard.check(&net("198.51.100.7")).unwrap();
    }

    #[test]
    fn loopback_cannot_be_banned() {
        let guard = Guard::default();
        for bad in ["127.0.0.1", "127.5.0.0/16", "::1", "0.0.0.0/0", "::/0"] {
            assert!(guard.check(&net(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_addresses_cannot_be_banned() {
        let guard = Guard::default();
        let (interface, addr) = host_addresses()
            .into_iter()
            .find(|(_, a)| !a.is_loopback())
            .unwrap_or(("lo".into(), "127.0.0.1".parse().unwrap()));
        let err = guard.check(&IpNet::from(addr)).unwrap_err();
        assert!(
            err.to_string().contains(&addr.to_string()),
            "{err} ({interface})"
        );
    }
}
