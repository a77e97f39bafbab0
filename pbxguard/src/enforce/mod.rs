//! Enforcement backends: they turn the engine's decisions into dropped packets.
//!
//! The engine speaks only to the [`Enforcer`] trait, so the XDP backend and (where XDP cannot
//! load) an nftables backend enforce exactly the same policy.

pub mod bpffs;
pub mod clock;
pub mod nft;
pub mod overlap;
pub mod perimeter;
pub mod program;
pub mod xdp;
pub mod xdp_log;

use std::sync::Arc;

use ipnet::IpNet;
use pbxguard_common::Reason;
use serde::Serialize;

/// Failures of a backend; each says what to check next.
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    /// Loading the eBPF object into the kernel failed.
    #[error(
        "cannot load the XDP program: {0}; pbxguard needs root (CAP_BPF, CAP_NET_ADMIN) and Linux 5.9 or newer"
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
    /// The `nft` command could not be run at all.
    #[error(
        "cannot run nft: {0}; install the Debian package nftables and give pbxguard CAP_NET_ADMIN"
    )]
    NftMissing(String),
    /// nftables refused a change; the message is nft's own.
    #[error("nftables refused the change: {0}")]
    Nft(String),
    /// A map or set is full.
    #[error(
        "the {map} map is full ({capacity} entries); raise [ban] max_entries and restart (bans are restored from the journal)"
    )]
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

/// A rule the live backend does not enforce, and why: shown by `pbxguard status` so that a
/// missing rule is never silent.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RuleOff {
    /// The rule, by its verdict reason name (`sip_scanner`).
    pub rule: &'static str,
    /// Why it is off and what would turn it on.
    pub reason: String,
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

/// Reads the verdict counters without going through the engine, so `stats` and metrics
/// never wait behind a journal fsync or an `nft` run.
pub trait Counters: Send + Sync {
    /// Packets and bytes per reason.
    fn read(&self) -> Result<Vec<ReasonStats>, EnforceError>;
    /// Packets and bytes dropped per blocklist feed number (empty where the backend cannot
    /// tell feeds apart).
    fn feeds(&self) -> Result<Vec<(u64, u64)>, EnforceError> {
        Ok(Vec::new())
    }
}

/// A place where bans and the allowlist take effect.
///
/// Ban operations report one result per element: the ledger records exactly what the
/// kernel accepted. Nested bans follow [`overlap`]: an address is dropped until the latest
/// expiry among the bans covering it, on every backend.
pub trait Enforcer: Send {
    /// `xdp` or `nft`, for status output.
    fn backend(&self) -> &'static str;
    /// The protected interfaces and how.
    fn interfaces(&self) -> Vec<InterfaceStatus>;
    /// Rules this backend does not enforce here (a kernel too old for them, a backend that
    /// cannot express them).
    fn rules_off(&self) -> Vec<RuleOff> {
        Vec::new()
    }
    /// Replaces the allowlist with `nets`.
    fn set_allowlist(&mut self, nets: &[IpNet]) -> Result<(), EnforceError>;
    /// Bans each network until its expiry (`None` = permanent), replacing an existing ban
    /// on it. One result per ban, in order; a refused ban leaves that network as it was.
    fn ban_many(&mut self, bans: &[(IpNet, overlap::Expiry)]) -> Vec<Result<(), EnforceError>>;
    /// Lifts the bans on exactly these networks (absent is fine); one result per network.
    fn unban_many(&mut self, nets: &[IpNet]) -> Vec<Result<(), EnforceError>>;
    /// Bans one network (see [`Enforcer::ban_many`]).
    fn ban(&mut self, net: IpNet, expires: overlap::Expiry) -> Result<(), EnforceError> {
        self.ban_many(&[(net, expires)])
            .pop()
            .expect("one result per ban")
    }
    /// Bans all or reports the first refusal (the others may be in force): for tools and
    /// benchmarks; the ledger uses the per-element [`Enforcer::ban_many`].
    fn ban_all(&mut self, bans: &[(IpNet, overlap::Expiry)]) -> Result<(), EnforceError> {
        self.ban_many(bans).into_iter().collect()
    }
    /// Lifts the ban on exactly one network.
    fn unban(&mut self, net: IpNet) -> Result<(), EnforceError> {
        self.unban_many(&[net])
            .pop()
            .expect("one result per network")
    }
    /// The verdict counters now.
    fn stats(&self) -> Result<Vec<ReasonStats>, EnforceError> {
        self.counters().read()
    }
    /// Every network the backend enforces a ban on (for reconciliation with the journal).
    fn banned(&self) -> Result<Vec<IpNet>, EnforceError>;
    /// The verdict counters, readable from any thread.
    fn counters(&self) -> Arc<dyn Counters>;
    /// Replaces the perimeter rules (trusted-only ports, SIP flood limit, scanners). A backend
    /// that cannot express them says so once and enforces the rest.
    fn set_perimeter(&mut self, _perimeter: &perimeter::Perimeter) -> Result<(), EnforceError> {
        tracing::warn!(
            backend = self.backend(),
            "this backend does not enforce [[protect]], [flood] or [scanners]"
        );
        Ok(())
    }
    /// Makes the blocklist feeds' entries exactly `want` (network -> bit mask of the feeds
    /// listing it), with no moment in which a wanted entry is missing.
    fn set_blocklist(
        &mut self,
        want: &std::collections::BTreeMap<IpNet, u64>,
    ) -> Result<(), EnforceError> {
        if !want.is_empty() {
            tracing::warn!(
                backend = self.backend(),
                "this backend does not enforce [[blocklist]]"
            );
        }
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
    /// Makes the peers trusted from the PBX configs exactly `nets`: they pass every rule
    /// except the SIP flood limit.
    fn set_pbx_trusted(&mut self, nets: &[IpNet]) -> Result<(), EnforceError>;
    /// The program's detection events (flood overruns, scanners), if the backend has them;
    /// taken once by the daemon.
    fn take_events(&mut self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        None
    }
    /// Called on daemon exit: keep enforcing (`detach == false`) or remove everything.
    /// The backend must not be used afterwards.
    fn shutdown(&mut self, detach: bool) -> Result<(), EnforceError>;
}
