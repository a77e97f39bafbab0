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
    /// Geo-blocked IPv4 networks (LPM trie, value: country code).
    pub const GEO_V4: &str = "GEO_V4";
    /// Geo-blocked IPv6 networks.
    pub const GEO_V6: &str = "GEO_V6";
    /// Protected destination ports ([`crate::PortKey`] -> rule id).
    pub const PROTECTED: &str = "PROTECTED";
    /// Trusted IPv4 sources per protected rule (LPM trie, key data = rule id BE ++ address).
    pub const TRUSTED_V4: &str = "TRUSTED_V4";
    /// Trusted IPv6 sources per protected rule.
    pub const TRUSTED_V6: &str = "TRUSTED_V6";
    /// Ports that carry SIP ([`crate::PortKey`] -> 1): flood limit and scanner checks apply.
    pub const SIP_PORTS: &str = "SIP_PORTS";
    /// Settings of the runtime rules (one [`crate::Settings`]).
    pub const SETTINGS: &str = "SETTINGS";
    /// Token buckets per source (LRU hash, key: address as 16 bytes).
    pub const BUCKETS: &str = "BUCKETS";
    /// Scanner User-Agent signatures ([`crate::Signature`] by index).
    pub const SCANNERS: &str = "SCANNERS";
    /// Which signatures may match a User-Agent, by its first two folded bytes (hash,
    /// [`crate::ScannerPrefix`] -> bit mask of [`SCANNERS`] indexes): most User-Agents start
    /// unlike every signature and cost one lookup instead of a compare per signature.
    pub const SCANNER_PREFIXES: &str = "SCANNER_PREFIXES";
    /// Ring buffer of [`crate::DetectionEvent`]s for the daemon.
    pub const EVENTS: &str = "EVENTS";
    /// Switches (one `u32` of `FLAG_*` bits). A map of its own rather than a field of
    /// [`crate::Settings`]: a pinned map keeps its value size across upgrades.
    pub const FLAGS: &str = "FLAGS";
    /// Peers named in the PBX's own configs (LPM, IPv4): pass every rule but the flood limit.
    pub const PBX_V4: &str = "PBX_V4";
    /// The same for IPv6.
    pub const PBX_V6: &str = "PBX_V6";
    /// Bans of single IPv4 addresses (/32), checked before [`BAN_V4`]: a hash lookup costs
    /// the same at one ban and at a million, where an LPM trie walk grows with the set. The
    /// entry carries the effective expiry (the latest of its own and every wider ban), so it
    /// alone decides, as the longest prefix would.
    pub const BAN_EXACT_V4: &str = "BAN_EXACT_V4";
    /// The same for single IPv6 addresses (/128).
    pub const BAN_EXACT_V6: &str = "BAN_EXACT_V6";
    /// Blocklist feeds' entries (LPM, IPv4); the value is a bit mask of the feeds listing it.
    pub const BLOCK_V4: &str = "BLOCK_V4";
    /// The same for IPv6.
    pub const BLOCK_V6: &str = "BLOCK_V6";
    /// Per-CPU packet and byte counters per feed (the lowest feed bit of the entry that
    /// dropped the packet), indexed by feed number.
    pub const FEED_COUNTERS: &str = "FEED_COUNTERS";
    /// Every map the daemon pins, in a stable order.
    pub const ALL: [&str; 24] = [
        ALLOW_V4,
        ALLOW_V6,
        BAN_V4,
        BAN_V6,
        COUNTERS,
        GEO_V4,
        GEO_V6,
        PROTECTED,
        TRUSTED_V4,
        TRUSTED_V6,
        SIP_PORTS,
        SETTINGS,
        BUCKETS,
        SCANNERS,
        EVENTS,
        FLAGS,
        PBX_V4,
        PBX_V6,
        BLOCK_V4,
        BLOCK_V6,
        FEED_COUNTERS,
        BAN_EXACT_V4,
        BAN_EXACT_V6,
        SCANNER_PREFIXES,
    ];
}

/// Capacity of each blocklist trie (all feeds together, per family).
pub const MAX_BLOCK: u32 = 1_048_576;
/// Most blocklist feeds: one bit each in a [`maps::BLOCK_V4`] value.
pub const MAX_FEEDS: u32 = 64;

/// Most protect rules at once.
pub const MAX_PROTECT_RULES: u32 = 256;
/// Capacity of [`maps::PROTECTED`]: distinct protected ports over all protect rules (eight
/// per rule on average; a rule may use more if others use fewer).
pub const MAX_PROTECTED_PORTS: u32 = MAX_PROTECT_RULES * 8;
/// Capacity of [`maps::SIP_PORTS`]: a PBX listens for SIP on a handful of ports, so a small
/// hash map keeps the per-packet lookup cheap; the config validation rejects more.
pub const MAX_SIP_PORTS: u32 = 64;
/// Most trusted networks per address family, over all protect rules.
pub const MAX_TRUSTED: u32 = 65_536;
/// Sources tracked by the flood limit (least recently seen are evicted first).
pub const MAX_BUCKETS: u32 = 262_144;
/// Most scanner signatures.
pub const MAX_SIGNATURES: u32 = 32;
/// Longest scanner signature, in bytes.
pub const SIGNATURE_LEN: usize = 32;
/// Capacity of [`maps::SCANNER_PREFIXES`]: a one-byte signature takes a key for every
/// folded second byte (128), longer ones one key each.
pub const MAX_SCANNER_PREFIXES: u32 = MAX_SIGNATURES * 128;

/// Key of [`maps::SCANNER_PREFIXES`]: the first two bytes of a User-Agent, folded as
/// [`Signature`] folds them (`| 0x20`).
pub type ScannerPrefix = [u8; 2];
/// Geo map capacity per family (a full country database aggregates to well under this).
pub const MAX_GEO: u32 = 1_048_576;
/// Most IPv6 extension headers the program walks to find the ports. An RFC 8200 chain has
/// at most six that Linux walks (hop-by-hop, destination options, routing, fragment, AH,
/// destination options); past this limit a packet is `unclassified`.
pub const MAX_V6_EXT_HEADERS: usize = 8;
/// How far into a UDP payload the program looks for the User-Agent header.
pub const SCAN_WINDOW: usize = 512;

/// Key of [`maps::PROTECTED`] and [`maps::SIP_PORTS`]: destination port and IP protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortKey {
    /// Destination port, host byte order.
    pub port: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    /// Zero.
    pub pad: u8,
}

/// Runtime switches and limits for the perimeter rules, changed without reloading.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Flood limit on SIP ports: packets per second per source (0 = off).
    pub flood_rate: u32,
    /// Flood limit burst (bucket size, packets).
    pub flood_burst: u32,
    /// Send an event to the daemon every this many over-limit packets of one source.
    pub flood_event_every: u32,
    /// Number of valid entries in [`maps::SCANNERS`] (0 = scanner check off).
    pub signatures: u32,
}

/// [`maps::FLAGS`] bit: some rule judges packets by destination port (`[[protect]]`, or SIP
/// ports with the flood limit or scanner check), so a packet whose ports the program cannot
/// reach is dropped as [`Reason::Unclassified`] instead of passing those rules unjudged.
pub const FLAG_PORT_RULES: u32 = 1;

/// One source's token bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens in thousandths of a packet.
    pub milli_tokens: u64,
    /// ns of the last refill: the coarse monotonic clock in the full program, boot time in
    /// the one without the scanner rule.
    pub last_ns: u64,
    /// Over-limit packets so far.
    pub overruns: u64,
}

/// A scanner User-Agent prefix, folded (every byte OR 0x20, so ASCII letters compare
/// case-insensitively) and packed into little-endian words with a mask of the used bytes:
/// the program compares it in four branch-free word steps, which keeps the verifier happy.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The folded prefix bytes, zero beyond its length.
    pub words: [u64; 4],
    /// 0xff for each byte of the prefix, zero beyond.
    pub mask: [u64; 4],
}

impl Signature {
    /// Folds and packs `prefix` (at most [`SIGNATURE_LEN`] bytes are used).
    pub fn new(prefix: &[u8]) -> Signature {
        let mut bytes = [0u8; SIGNATURE_LEN];
        let mut mask = [0u8; SIGNATURE_LEN];
        for (i, b) in prefix.iter().take(SIGNATURE_LEN).enumerate() {
            bytes[i] = b | 0x20;
            mask[i] = 0xff;
        }
        let word = |a: &[u8; SIGNATURE_LEN], k: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&a[k * 8..k * 8 + 8]);
            u64::from_le_bytes(w)
        };
        Signature {
            words: [
                word(&bytes, 0),
                word(&bytes, 1),
                word(&bytes, 2),
                word(&bytes, 3),
            ],
            mask: [
                word(&mask, 0),
                word(&mask, 1),
                word(&mask, 2),
                word(&mask, 3),
            ],
        }
    }
}

/// Folding applied to both sides of a signature comparison.
pub const FOLD: u64 = 0x2020_2020_2020_2020;

/// What the program tells the daemon: a source worth banning.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectionEvent {
    /// [`EVENT_FLOOD`] or [`EVENT_SCANNER`].
    pub kind: u32,
    /// 4 or 6.
    pub family: u32,
    /// Source address (IPv4 in the first 4 bytes).
    pub addr: [u8; 16],
    /// Destination port.
    pub port: u16,
    /// Signature index for scanner events.
    pub detail: u16,
    /// IP protocol of the packet (6 TCP, 17 UDP): decides whether the daemon treats the
    /// event as proven or spoofable evidence.
    pub protocol: u8,
    /// Zero.
    pub pad: [u8; 3],
}

/// [`DetectionEvent::kind`]: a source kept exceeding the SIP flood limit.
pub const EVENT_FLOOD: u32 = 1;
/// [`DetectionEvent::kind`]: a known scanner's User-Agent.
pub const EVENT_SCANNER: u32 = 2;

/// Name of the XDP program inside the object file.
pub const PROGRAM_NAME: &str = "pbxguard";
/// The same program without the scanner rule, for kernels without `bpf_loop` (Linux 5.17)
/// or `bpf_xdp_load_bytes` (5.18).
pub const PROGRAM_NAME_BASIC: &str = "pbxguard_basic";

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
    /// The frame is not IP, or too short for its IP header and source address: passed, as
    /// the kernel has no use for it either (ARP and the like pass here).
    Unparsed = 1,
    /// Source is allowlisted: passed before any other rule.
    Allowlisted = 2,
    /// Source is banned: dropped.
    Banned = 3,
    /// Source matched a ban whose expiry has passed: passed.
    BanExpired = 4,
    /// Source is in a geo-blocked network: dropped.
    GeoBlocked = 5,
    /// Destination port is protected and the source is not trusted: dropped.
    ProtectedPort = 6,
    /// Source exceeds the SIP flood limit: dropped.
    Flood = 7,
    /// SIP request from a known scanner's User-Agent: dropped.
    Scanner = 8,
    /// IP packet whose TCP/UDP ports the program cannot reach (a longer IPv6 extension header
    /// chain than it walks, a header chain or transport header cut short) while port rules
    /// are configured: dropped, so it cannot slip past them.
    Unclassified = 9,
    /// Source is a peer the PBX's own configs name: passed after the flood limit only.
    PbxTrusted = 10,
    /// Source is listed by a blocklist feed: dropped.
    Blocklisted = 11,
}

impl Reason {
    /// Every reason, in index order.
    pub const ALL: [Reason; 12] = [
        Reason::Passed,
        Reason::Unparsed,
        Reason::Allowlisted,
        Reason::Banned,
        Reason::BanExpired,
        Reason::GeoBlocked,
        Reason::ProtectedPort,
        Reason::Flood,
        Reason::Scanner,
        Reason::Unclassified,
        Reason::PbxTrusted,
        Reason::Blocklisted,
    ];

    /// Stable, human-readable name used by `pbxguard stats` and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Passed => "passed",
            Reason::Unparsed => "unparsed",
            Reason::Allowlisted => "allowlisted",
            Reason::Banned => "banned",
            Reason::BanExpired => "ban_expired",
            Reason::GeoBlocked => "geo_blocked",
            Reason::ProtectedPort => "protected_port",
            Reason::Flood => "sip_flood",
            Reason::Scanner => "sip_scanner",
            Reason::Unclassified => "unclassified",
            Reason::PbxTrusted => "pbx_trusted",
            Reason::Blocklisted => "blocklisted",
        }
    }

    /// Whether packets with this reason are dropped.
    pub const fn drops(self) -> bool {
        matches!(
            self,
            Reason::Banned
                | Reason::GeoBlocked
                | Reason::ProtectedPort
                | Reason::Flood
                | Reason::Scanner
                | Reason::Unclassified
                | Reason::Blocklisted
        )
    }
}

/// Size of the counters map. Larger than [`Reason::ALL`] so that later reasons fit in a
/// map pinned by an older daemon.
pub const COUNTER_SLOTS: u32 = 32;
