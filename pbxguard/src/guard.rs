//! "Never lock out the owner": the networks pbxguard refuses to ban.
//!
//! A ban is refused when it lies inside an allowlisted network, or when it would cover
//! loopback or any address of this host. This is checked for every ban, manual or
//! automatic, because a crafted log line must never be able to cut off the admin.
//!
//! The guard is pure: the host's addresses are handed to it, read once at start and again
//! whenever the kernel reports an address change ([`watch_addresses`], netlink), not on
//! every event.

use std::{net::IpAddr, os::fd::AsRawFd as _};

use ipnet::IpNet;
use serde::Serialize;

/// Why a network may not be banned, phrased for the admin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing to ban {net}: {why}; pbxguard never bans what would lock out the owner")]
pub struct Refusal {
    /// The network that was asked for.
    pub net: IpNet,
    /// Which protection it hits.
    pub why: String,
}

/// One address of this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostAddress {
    /// The interface it is on.
    pub interface: String,
    /// The address.
    pub addr: IpAddr,
}

/// The protected set: the allowlist plus loopback and the host's own addresses.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<IpNet>,
    host: Vec<HostAddress>,
    /// Peers named in the PBX's own configs, with where (`file:line`).
    pbx: Vec<(IpNet, String)>,
}

const LOOPBACK: [&str; 2] = ["127.0.0.0/8", "::1/128"];

impl Guard {
    /// A guard for the given allowlist and host addresses.
    pub fn new(allow: &[IpNet], host: Vec<HostAddress>) -> Guard {
        Guard {
            allow: allow.to_vec(),
            host,
            pbx: Vec::new(),
        }
    }

    /// Replaces the allowlist (after a reload).
    pub fn set_allowlist(&mut self, allow: &[IpNet]) {
        self.allow = allow.to_vec();
    }

    /// Replaces the peers trusted from the PBX configs.
    pub fn set_pbx_trusted(&mut self, pbx: Vec<(IpNet, String)>) {
        self.pbx = pbx;
    }

    /// Replaces the host's addresses (after a netlink address change).
    pub fn set_host_addresses(&mut self, host: Vec<HostAddress>) {
        self.host = host;
    }

    /// The host addresses it protects.
    pub fn host_addresses(&self) -> &[HostAddress] {
        &self.host
    }

    /// Ok if `net` may be banned.
    pub fn check(&self, net: &IpNet) -> Result<(), Refusal> {
        let refuse = |why: String| Err(Refusal { net: *net, why });
        if let Some(allowed) = self.allow.iter().find(|a| a.contains(net)) {
            return refuse(format!(
                "it is inside the allowlisted network {allowed} ([allow] networks)"
            ));
        }
        // A ban covering a PBX peer would cut the PBX off from its trunk: refused both ways.
        if let Some((trusted, from)) = self.pbx.iter().find(|(t, _)| overlaps(net, t)) {
            return refuse(format!(
                "it covers {trusted}, a peer the PBX is configured to use ({from}; [trust] pbx_configs)"
            ));
        }
        for loopback in LOOPBACK {
            let loopback: IpNet = loopback.parse().expect("constant");
            if overlaps(net, &loopback) {
                return refuse(format!("it covers loopback ({loopback})"));
            }
        }
        for HostAddress { interface, addr } in &self.host {
            if net.contains(addr) {
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

/// Every address configured on this host's interfaces (in the current network namespace).
pub fn host_addresses() -> Vec<HostAddress> {
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
            Some(HostAddress {
                interface: ifa.interface_name,
                addr: ip,
            })
        })
        .collect()
}

/// Calls `changed` with the host's addresses whenever the kernel reports an address added
/// or removed (a new DHCP lease is protected at once), until `changed` returns false.
/// Runs on its own thread; returns an error if the netlink socket cannot be opened.
pub fn watch_addresses(
    mut changed: impl FnMut(Vec<HostAddress>) -> bool + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, socket,
    };
    let groups = (libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
    std::thread::Builder::new()
        .name("host-addresses".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                    // Any message (or an overrun) means: read the addresses again.
                    Ok(_) | Err(nix::errno::Errno::ENOBUFS) => {
                        if !changed(host_addresses()) {
                            return;
                        }
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "netlink address watch failed; host addresses are no longer refreshed");
                        return;
                    }
                }
            }
        })
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
        let guard = Guard::new(&[net("203.0.113.0/24")], host_addresses());
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
        let guard = Guard::new(&[], host_addresses());
        let HostAddress { interface, addr } = host_addresses()
            .into_iter()
            .find(|h| !h.addr.is_loopback())
            .unwrap_or(HostAddress {
                interface: "lo".into(),
                addr: "127.0.0.1".parse().unwrap(),
            });
        let err = guard.check(&IpNet::from(addr)).unwrap_err();
        assert!(
            err.to_string().contains(&addr.to_string()),
            "{err} ({interface})"
        );
    }
}
