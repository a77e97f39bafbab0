//! Enforcement backends: they turn the engine's decisions into dropped packets.
//!
//! The engine speaks only to the [`Enforcer`] trait, so the XDP backend and (where XDP cannot
//! load) an nftables backend enforce exactly the same policy.

pub mod bpffs;
pub mod clock;
pub mod nft;
pub mod perimeter;
pub mod program;
pub mod xdp;

use std::time::SystemTime;

use ipnet::IpNet;
use pbxguard_common::Reason;
use serde::Serialize;

/// Failures of a backend; each says what to check next.
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    /// Loading the eBPF object into the kernel failed.
    #[error(
        "cannot load the XDP program: {0}; pbxguard needs root (CAP_BPF, CAP_NET_ADMIN) and a kernel with BPF LPM tries (5.x or newer)"
    )]
    Load(#[from] aya::EbpfError),
    /// A program-level operation failed (load, attach, replace).
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    /// A map operation failed.
    #[error("BPF map: {0}")]
    Map(#[from] aya::maps::MapError),
    /// Attaching to an interface failed.
    #[error("cannot attach XDP to interface `{interface}`: {message}")]
    Attach {
        /// The interface from `[enforce] interfaces`.
        interface: String,
        /// What went wrong and what to try.
        message: String,
    },
    /// Pinning or reading pins under the bpffs directory failed.
    #[error("bpffs {path}: {message}")]
    Pin {
        /// The pin path involved.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// nftables refused a change or could not be run.
    #[error(
        "nftables: {0}; check that the `nft` command (Debian package nftables) is installed and pbxguard has CAP_NET_ADMIN"
    )]
    Nft(String),
    /// A map is full.
    #[error("the {map} map is full ({capacity} entries); raise [ban] max_entries and restart")]
    Full {
        /// Which map.
        map: &'static str,
        /// Its capacity.
        capacity: u32,
    },
}

/// How one interface is protected, for `pbxguard status`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct InterfaceStatus {
    /// Interface name.
    pub name: String,
    /// `native` or `generic`.
    pub mode: String,
    /// Whether the attachment survives the daemon (pinned bpf_link).
    pub pinned: bool,
}

/// Packets and bytes for one verdict reason, summed over CPUs.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ReasonStats {
    /// Stable reason name (`banned`, `allowlisted`, ...).
    pub reason: &'static str,
    /// `drop` or `pass`.
    pub action: &'static str,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

impl ReasonStats {
    /// Builds the row for `reason` from raw totals.
    pub fn new(reason: Reason, packets: u64, bytes: u64) -> Self {
        Self {
            reason: reason.name(),
            action: if reason.drops() { "drop" } else { "pass" },
            packets,
            bytes,
        }
    }
}

/// A place where bans and the allowlist take effect.
pub trait Enforcer: Send {
    /// `xdp` or `nft`, for status output.
    fn backend(&self) -> &'static str;
    /// The protected interfaces and how.
    fn interfaces(&self) -> Vec<InterfaceStatus>;
    /// Replaces the allowlist with `nets`.
    fn set_allowlist(&mut self, nets: &[IpNet]) -> Result<(), EnforceError>;
    /// Bans `net` until `expires` (`None` = permanent); replaces an existing ban.
    fn ban(&mut self, net: IpNet, expires: Option<SystemTime>) -> Result<(), EnforceError>;
    /// Lifts the ban on exactly `net`; absent is not an error.
    fn unban(&mut self, net: IpNet) -> Result<(), EnforceError>;
    /// Bans many at once; backends with a per-change cost (nft) apply them in few batches.
    fn ban_many(&mut self, bans: &[(IpNet, Option<SystemTime>)]) -> Result<(), EnforceError> {
        bans.iter()
            .try_for_each(|(net, expires)| self.ban(*net, *expires))
    }
    /// Lifts many bans at once.
    fn unban_many(&mut self, nets: &[IpNet]) -> Result<(), EnforceError> {
        nets.iter().try_for_each(|net| self.unban(*net))
    }
    /// Every network currently banned in the backend (for reconciliation with the store).
    fn banned(&self) -> Result<Vec<IpNet>, EnforceError>;
    /// Verdict counters.
    fn stats(&self) -> Result<Vec<ReasonStats>, EnforceError>;
    /// Replaces the perimeter rules (trusted-only ports, SIP flood limit, scanners). A backend
    /// that cannot express them says so once and enforces the rest.
    fn set_perimeter(&mut self, _perimeter: &perimeter::Perimeter) -> Result<(), EnforceError> {
        tracing::warn!(
            backend = self.backend(),
            "this backend does not enforce [[protect]], [flood] or [scanners]"
        );
        Ok(())
    }
    /// Makes the geo-blocked networks exactly `nets`.
    fn set_geo(&mut self, nets: &[IpNet]) -> Result<(), EnforceError> {
        if !nets.is_empty() {
            tracing::warn!(
                backend = self.backend(),
                "this backend does not enforce [geo]"
            );
        }
        Ok(())
    }
    /// The program's detection events (flood overruns, scanners), if the backend has them;
    /// taken once by the daemon.
    fn take_events(&mut self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        None
    }
    /// Called on daemon exit: keep enforcing (`detach == false`) or remove everything.
    /// The backend must not be used afterwards.
    fn shutdown(&mut self, detach: bool) -> Result<(), EnforceError>;
}
