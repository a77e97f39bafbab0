//! How log failures become bans: `[policy]`, `[offhours]` and `[[source]]`.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::units::{BanDuration, duration_serde};

/// Whether detections ban or only report.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Ban.
    #[default]
    Enforce,
    /// Dry run: log what would be banned, ban nothing.
    Observe,
}

/// Threshold overrides: each key, when set, replaces the inherited value.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Failures within `findtime` that trigger a ban.
    pub maxretry: Option<u32>,
    /// Window in which failures are counted.
    #[serde(
        with = "duration_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub findtime: Option<Duration>,
    /// First ban's length (later ones escalate).
    pub bantime: Option<BanDuration>,
}

/// `[policy]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// `enforce` (default) or `observe` (dry run).
    pub mode: Mode,
    /// Failures within `findtime` that trigger a ban.
    pub maxretry: u32,
    /// Window in which failures are counted.
    #[serde(with = "duration_serde")]
    pub findtime: Duration,
    /// First ban's length.
    pub bantime: BanDuration,
    /// Each further ban of the same address lasts this many times longer.
    pub bantime_factor: f64,
    /// Escalation stops here (`permanent` lets it grow up to 100 years).
    pub bantime_max: BanDuration,
    /// Ban permanently from this offense on (0 = never).
    pub permanent_after: u32,
    /// Forget an address's past offenses after this long without a new one.
    #[serde(with = "duration_serde")]
    pub forget_after: Duration,
    /// IPv6 sources are tracked and banned per network of this prefix length.
    pub ipv6_prefix: u8,
    /// Per-filter overrides: `[policy.filter.sshd] maxretry = 3`.
    pub filter: BTreeMap<String, Thresholds>,
    /// How long an address stays *known* after a success line (spoofable evidence never
    /// counts against it); `0s` learns nothing.
    #[serde(with = "duration_serde")]
    pub known_for: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            maxretry: 5,
            findtime: Duration::from_secs(600),
            bantime: BanDuration::For(Duration::from_secs(3600)),
            bantime_factor: 2.0,
            bantime_max: BanDuration::For(Duration::from_secs(30 * 86400)),
            permanent_after: 0,
            forget_after: Duration::from_secs(30 * 86400),
            ipv6_prefix: 64,
            filter: BTreeMap::new(),
            known_for: Duration::from_secs(7 * 86400),
        }
    }
}

/// `[offhours]`
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OffHoursConfig {
    /// Windows in local time: `["Mon-Fri 18:00-08:00", "Sat-Sun"]`.
    pub schedule: Vec<String>,
    /// Failures within `findtime` that trigger a ban.
    pub maxretry: Option<u32>,
    /// Window in which failures are counted.
    #[serde(
        with = "duration_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub findtime: Option<Duration>,
    /// Ban length inside the windows.
    pub bantime: Option<BanDuration>,
}

impl OffHoursConfig {
    /// The overrides that apply inside the windows.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            maxretry: self.maxretry,
            findtime: self.findtime,
            bantime: self.bantime,
        }
    }
}

/// `[[source]]`: one log to follow and the filters that read it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// A log file, or a glob of files (`/var/log/asterisk/full`).
    pub path: Option<PathBuf>,
    /// Or a systemd journal unit (`ssh.service`).
    pub journal_unit: Option<String>,
    /// With `journal_unit`: read this journal directory instead of the system journal.
    pub journal_directory: Option<PathBuf>,
    /// Filters applied to every line (built-in names or `[[filter]]` names).
    pub filters: Vec<String>,
    /// Read what a file already holds when pbxguard first sees it (default: start at its end).
    pub read_backlog: bool,
    /// Failures within `findtime` that trigger a ban.
    pub maxretry: Option<u32>,
    /// Window in which failures are counted.
    #[serde(
        with = "duration_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub findtime: Option<Duration>,
    /// First ban's length (later ones escalate).
    pub bantime: Option<BanDuration>,
}

impl SourceConfig {
    /// This source's threshold overrides.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            maxretry: self.maxretry,
            findtime: self.findtime,
            bantime: self.bantime,
        }
    }
}
