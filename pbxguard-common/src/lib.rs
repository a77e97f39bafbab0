//! Types shared by the XDP program (kernel side) and the pbxguard daemon (user side).
//!
//! Everything here is `#[repr(C)]` plain data because it crosses the BPF map boundary:
//! both sides must agree on the exact byte layout.
#![no_std]

#[cfg(feature = "user")]
mod user;

/// Map names, so the daemon and the program cannot drift apart on a typo.
pub mod maps {
    /// Allowlisted IPv4 networks (LPM trie): always passed, checked first.
    pub const ALLOW_V4: &str = "ALLOW_V4";
    /// Allowlisted IPv6 networks (LPM trie).
    pub const ALLOW_V6: &str = "ALLOW_V6";
    /// Banned IPv4 networks (LPM trie, value [`crate::BanEntry`]).
    pub const BAN_V4: &str = "BAN_V4";
    /// Banned IPv6 networks (LPM trie, value [`crate::BanEntry`]).
    pub const BAN_V6: &str = "BAN_V6";
    /// Per-CPU packet and byte counters, indexed by [`crate::Reason`].
    pub const COUNTERS: &str = "COUNTERS";
    /// Every map the daemon pins, in a stable order.
    pub const ALL: [&str; 5] = [ALLOW_V4, ALLOW_V6, BAN_V4, BAN_V6, COUNTERS];
}

/// Name of the XDP program inside the object file.
pub const PROGRAM_NAME: &str = "pbxguard";

/// Default capacity of each ban map (v4 and v6); the config can change it.
pub const DEFAULT_MAX_BANS: u32 = 1_000_000;
/// Default capacity of each allowlist map.
pub const DEFAULT_MAX_ALLOW: u32 = 65_536;

/// Value stored for every banned network.
///
/// The expiry is kept in the kernel's boot-time clock (`bpf_ktime_get_boot_ns`) so the
/// program itself ends a ban on time, even while the daemon is stopped or dead.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanEntry {
    /// Boot-time nanoseconds after which the ban no longer applies; 0 = permanent.
    pub expires_boot_ns: u64,
}

/// Packet and byte totals for one verdict reason on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets that received this verdict.
    pub packets: u64,
    /// Bytes (whole frames) that received this verdict.
    pub bytes: u64,
}

/// Why the program gave a packet its verdict; the index into the counters map.
///
/// Values are stable: they are pinned in a map that outlives daemon upgrades, so new
/// reasons are only ever appended.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Parsed, matched no rule: passed.
    Passed = 0,
    /// The frame could not be parsed (unknown ethertype, truncated header): passed,
    /// because the program must never drop what it does not understand.
    Unparsed = 1,
    /// Source is allowlisted: passed before any other rule.
    Allowlisted = 2,
    /// Source is banned: dropped.
    Banned = 3,
    /// Source matched a ban whose expiry has passed: passed.
    BanExpired = 4,
}

impl Reason {
    /// Every reason, in index order.
    pub const ALL: [Reason; 5] = [
        Reason::Passed,
        Reason::Unparsed,
        Reason::Allowlisted,
        Reason::Banned,
        Reason::BanExpired,
    ];

    /// Stable, human-readable name used by `pbxguard stats` and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Passed => "passed",
            Reason::Unparsed => "unparsed",
            Reason::Allowlisted => "allowlisted",
            Reason::Banned => "banned",
            Reason::BanExpired => "ban_expired",
        }
    }

    /// Whether packets with this reason are dropped.
    pub const fn drops(self) -> bool {
        matches!(self, Reason::Banned)
    }
}

/// Size of the counters map. Larger than [`Reason::ALL`] so that later reasons fit in a
/// map pinned by an older daemon.
pub const COUNTER_SLOTS: u32 = 32;
