//! The perimeter sections enforced in XDP before any log is read: `[sip]`, `[flood]`,
//! `[scanners]` and `[[protect]]`.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::units::net_serde;

/// A destination port with its protocol, written `5060/udp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortSpec {
    /// Port number.
    pub port: u16,
    /// 6 (tcp) or 17 (udp).
    pub proto: u8,
}

impl std::str::FromStr for PortSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || format!("`{text}` is not a port (expected e.g. \"5060/udp\" or \"5061/tcp\")");
        let (port, proto) = text.trim().split_once('/').ok_or_else(err)?;
        let port: u16 = port.parse().map_err(|_| err())?;
        let proto = match proto.to_ascii_lowercase().as_str() {
            "udp" => 17,
            "tcp" => 6,
            _ => return Err(err()),
        };
        if port == 0 {
            return Err(err());
        }
        Ok(PortSpec { port, proto })
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.port,
            if self.proto == 6 { "tcp" } else { "udp" }
        )
    }
}

impl Serialize for PortSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `[sip]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// SIP ports (`5060/udp`, ...).
    pub ports: Vec<PortSpec>,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            ports: vec![
                PortSpec {
                    port: 5060,
                    proto: 17,
                },
                PortSpec {
                    port: 5060,
                    proto: 6,
                },
                PortSpec {
                    port: 5061,
                    proto: 6,
                },
            ],
        }
    }
}

/// `[flood]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FloodConfig {
    /// Packets per second one source may send to the SIP ports (0 = no limit).
    pub packets_per_second: u32,
    /// Packets it may send in a burst above that rate.
    pub burst: u32,
    /// Every this many over-limit packets count as one failure toward a ban (filter
    /// `sip-flood`, banned at the first one unless `[policy.filter.sip-flood]` says otherwise).
    pub overruns_per_failure: u32,
    /// Failures (each `overruns_per_failure` over-limit packets) within `findtime` that ban:
    /// a flood can come from forged source addresses, so one is not enough.
    pub failures_to_ban: u32,
}

impl Default for FloodConfig {
    fn default() -> Self {
        Self {
            packets_per_second: 100,
            burst: 400,
            overruns_per_failure: 200,
            failures_to_ban: 3,
        }
    }
}

/// `[scanners]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScannersConfig {
    /// User-Agent prefixes of SIP scanners (case-insensitive, at most 32 bytes each, at most
    /// 32 entries); `[]` turns the check off.
    pub user_agents: Vec<String>,
    /// Hits over UDP within `findtime` that ban a source: one forged datagram can carry a
    /// scanner's User-Agent and any source address. Each hit is dropped at once; over an
    /// established TCP connection one hit bans.
    pub udp_hits: u32,
}

/// Scanners seen in the wild, by the User-Agent they announce.
pub const DEFAULT_SCANNERS: [&str; 14] = [
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "VaxSIPUserAgent",
    "pplsip",
    "iWar",
    "sip-scan",
    "SIPScan",
    "smap",
    "sundayddr",
    "siparmyknife",
    "Cisco-SIPGateway/IOS-12.x",
    "sipsak",
    "PortSIP VoIP SDK",
];

impl Default for ScannersConfig {
    fn default() -> Self {
        Self {
            user_agents: DEFAULT_SCANNERS.iter().map(|s| s.to_string()).collect(),
            udp_hits: 3,
        }
    }
}

/// `[[protect]]`: ports only the trusted may reach.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProtectConfig {
    /// Ports (`5060/udp`, `22/tcp`).
    pub ports: Vec<PortSpec>,
    /// Sources allowed to reach them (your SIP trunk provider, office, phones).
    #[serde(with = "net_serde::vec")]
    pub trusted: Vec<IpNet>,
}
