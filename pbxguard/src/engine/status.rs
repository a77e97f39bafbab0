//! What the engine publishes after every change: a snapshot that `status`, `bans list`,
//! metrics and the XDP event reader read without waiting on the engine (no fsync, `nft` run
//! or geo walk stands between an admin and the answer).

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Instant, SystemTime},
};

use serde::Serialize;

use crate::{
    config::{Config, Mode},
    enforce::{InterfaceStatus, RuleOff},
    guard::HostAddress,
    metrics::DetectionMetrics,
    source::SourceStats,
    store::{BanRecord, Damage},
};

/// `pbxguard status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// pbxguard version.
    pub version: &'static str,
    /// Live backend (`xdp`).
    pub backend: &'static str,
    /// Why this backend is live when it is not XDP (fallback reason or configuration).
    pub backend_note: Option<String>,
    /// Protected interfaces and how.
    pub interfaces: Vec<InterfaceStatus>,
    /// Rules the live backend does not enforce, and why (empty when all are on).
    pub rules_off: Vec<RuleOff>,
    /// Active bans.
    pub bans: usize,
    /// Allowlisted networks.
    pub allowlisted: usize,
    /// This host's addresses, never banned (refreshed on netlink address changes).
    pub host_addresses: Vec<HostAddress>,
    /// Peers the PBX's own configs name, with file and line: never banned.
    pub pbx_trusted: Vec<crate::trust::Trusted>,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Damaged journal lines found at start (empty when healthy).
    pub store_damage: Vec<Damage>,
    /// The journal file lags memory after a failed write; it is rewritten on the next
    /// change. Free disk space if this stays true.
    pub journal_stale: bool,
    /// Journal bans the kernel could not take at start (map smaller than the journal).
    pub dropped_at_start: usize,
    /// `enforce` or `observe` (dry run).
    pub mode: Mode,
    /// Whether the off-hours thresholds apply right now.
    pub offhours_active: bool,
    /// Sources with failures being counted.
    pub tracked_sources: usize,
    /// Failures from protected addresses that were ignored.
    pub ignored_failures: u64,
    /// Spoofable evidence against known addresses that was ignored.
    pub ignored_spoofable: u64,
    /// Addresses known from success lines (`[policy] known_for`).
    pub known: usize,
    /// Extensions whose registration address is known (for the fraud rules' bans).
    pub registrations: usize,
    /// Bans observe mode would have made.
    pub would_ban: u64,
    /// Bans due that the kernel refused (map or set full).
    pub not_enforced: u64,
    /// Networks loaded by the geo rules.
    pub geo_networks: usize,
    /// Per log source: alive, last read, lines and matches.
    pub sources: Vec<SourceStatus>,
    /// Blocklist feeds: entries, refusals, last refresh, errors.
    pub feeds: Vec<super::feeds::FeedStatus>,
    /// The CrowdSec bouncer (`[crowdsec]`); absent without it.
    pub crowdsec: Option<super::crowdsec::CrowdsecStatus>,
    /// The NATS link and peers' bans (`[cluster]`); absent without it.
    pub cluster: Option<crate::cluster::ClusterStatus>,
}

/// One source's follower in `status`.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// File path or journal unit.
    pub name: String,
    /// Whether its follower thread runs.
    pub alive: bool,
    /// When it last read a line (RFC 3339), if ever.
    pub last_read: Option<String>,
    /// Lines read.
    pub lines: u64,
    /// Lines that matched a rule.
    pub matches: u64,
}

impl SourceStatus {
    /// The live view of one source's counters.
    pub fn of(stats: &SourceStats) -> SourceStatus {
        SourceStatus {
            name: stats.name.clone(),
            alive: stats.is_alive(),
            last_read: stats.last_read().map(crate::units::rfc3339::format),
            lines: stats.lines.load(Ordering::Relaxed),
            matches: stats.matches.load(Ordering::Relaxed),
        }
    }
}

/// The engine's published state.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Status as of the last change (source counters and uptime are filled in live).
    pub status: Status,
    /// Every ban, in network order.
    pub bans: Arc<Vec<BanRecord>>,
    /// Matches and time-to-ban.
    pub detection: DetectionMetrics,
    /// The config in force.
    pub config: Arc<Config>,
    /// When the engine last finished a unit of work (the watchdog's liveness signal).
    pub heartbeat: Instant,
    /// When the daemon started.
    pub started: Instant,
    /// The sources' live counters.
    pub sources: Vec<Arc<SourceStats>>,
    /// The fraud thread's last report (`[fraud]`).
    pub fraud: Option<Arc<crate::fraud::FraudReport>>,
}

impl Snapshot {
    /// Status with live source counters and uptime.
    pub fn status(&self) -> Status {
        let mut status = self.status.clone();
        status.uptime_secs = self.started.elapsed().as_secs();
        status.sources = self.sources.iter().map(|s| SourceStatus::of(s)).collect();
        status.offhours_active = crate::engine::policy::offhours_active(
            crate::engine::policy::offhours_schedule(&self.config).as_ref(),
            SystemTime::now(),
        );
        status
    }
}
