//! How and where bans are enforced: `[enforce]`, `[allow]` and `[ban]`.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::units::{BanDuration, net_serde};

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic when the driver refuses.
    #[default]
    Auto,
    /// Driver mode only: fastest, fails on drivers without XDP support.
    Native,
    /// Generic (skb) mode: works on every interface, slower.
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// Which enforcement backend runs.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// XDP, falling back to nftables when the program cannot load or attach.
    #[default]
    Auto,
    /// XDP only (start fails if it cannot load).
    Xdp,
    /// nftables only.
    Nft,
}

/// `[enforce]`
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EnforceConfig {
    /// `auto` (XDP, else nftables), `xdp` or `nft`.
    pub backend: Backend,
    /// Interfaces the program is attached to (the ones facing the internet).
    pub interfaces: Vec<String>,
    /// `auto`, `native` or `generic`.
    pub xdp_mode: XdpMode,
}

/// `[allow]`
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AllowConfig {
    /// Trunks, phones, office networks, monitoring: always passed, never banned.
    #[serde(with = "net_serde::vec")]
    pub networks: Vec<IpNet>,
}

/// `[ban]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BanConfig {
    /// Duration of a ban when none is given (`1h`, `7d`, `permanent`).
    pub default_duration: BanDuration,
    /// Capacity of each ban map (IPv4 and IPv6 each).
    pub max_entries: u32,
}

impl Default for BanConfig {
    fn default() -> Self {
        Self {
            default_duration: BanDuration::For(std::time::Duration::from_secs(3600)),
            max_entries: pbxguard_common::DEFAULT_MAX_BANS,
        }
    }
}

/// Largest ban map we accept: 16 M entries per family is far beyond any real ban list and
/// keeps a typo from asking the kernel for gigabytes.
pub const MAX_BAN_ENTRIES: u32 = 16 * 1024 * 1024;
