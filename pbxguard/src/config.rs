//! The TOML configuration: schema, defaults and validation.
//!
//! Every error names the file, the line, the key and what is wrong, because the admin reading
//! it is usually fixing a PBX under attack and should not have to guess.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use std::{collections::BTreeMap, time::Duration};

use crate::{
    detect::{FilterSpec, Matcher, filters},
    schedule::Schedule,
    units::{BanDuration, duration_serde, net_serde},
};

/// Names under which the XDP program's own detections (flood overruns, scanner
/// User-Agents) reach the engine; usable in `[policy.filter.NAME]`.
pub const XDP_FILTERS: [&str; 2] = ["sip-flood", "sip-scanner"];

/// Where the daemon and the CLI look for the config when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/pbxguard/pbxguard.toml";

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Process-level settings: where state, the socket and the pins live.
    pub daemon: DaemonConfig,
    /// How bans are enforced.
    pub enforce: EnforceConfig,
    /// Sources that are never dropped and never banned.
    pub allow: AllowConfig,
    /// Ban defaults and capacity.
    pub ban: BanConfig,
    /// How detected failures become bans (fail2ban-style thresholds, escalation).
    pub policy: PolicyConfig,
    /// Stricter thresholds on a weekly schedule (nights, weekends).
    pub offhours: Option<OffHoursConfig>,
    /// Logs to follow (`[[source]]`).
    pub source: Vec<SourceConfig>,
    /// Admin-defined filters (`[[filter]]`), used like the built-in ones.
    pub filter: Vec<FilterSpec>,
    /// Which ports carry SIP (flood limit and scanner check apply there).
    pub sip: SipConfig,
    /// Per-source SIP flood limit, enforced in XDP.
    pub flood: FloodConfig,
    /// Known SIP scanners, dropped from their first packet.
    pub scanners: ScannersConfig,
    /// Trusted-only ports (`[[protect]]`).
    pub protect: Vec<ProtectConfig>,
    /// Countries to drop.
    pub geo: crate::geo::GeoConfig,
    /// Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Webhook and command hook on ban, unban and fallback.
    pub notify: crate::alert::NotifyConfig,
}

/// `[metrics]`
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address to serve `/metrics` on (`127.0.0.1:9771`); absent = off.
    pub listen: Option<std::net::SocketAddr>,
}

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
}

impl Default for FloodConfig {
    fn default() -> Self {
        Self {
            packets_per_second: 100,
            burst: 400,
            overruns_per_failure: 200,
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
    /// Escalation stops here (`permanent` lets it grow without bound).
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

/// `[daemon]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Control socket used by the CLI (created mode 0600).
    pub socket: PathBuf,
    /// Durable state: the ban journal.
    pub state_dir: PathBuf,
    /// bpffs directory for pinned program, links and maps (mounted if missing).
    pub bpffs: PathBuf,
    /// On SIGTERM, detach the XDP program and stop enforcing (default: keep enforcing).
    pub detach_on_exit: bool,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            socket: "/run/pbxguard/pbxguard.sock".into(),
            state_dir: "/var/lib/pbxguard".into(),
            bpffs: "/sys/fs/bpf/pbxguard".into(),
            detach_on_exit: false,
        }
    }
}

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

/// A config that cannot be used, located as precisely as the file allows.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key path (`daemon.socket`), when known.
    pub key: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: None,
            message: format!("cannot read the config file: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let error = |line: Option<usize>, key: Option<String>, message: String| ConfigError {
            file: path.to_path_buf(),
            line,
            key,
            message,
        };
        let deserializer = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let line = inner.span().map(|span| line_of(text, span.start));
            let message = inner.message().trim_end().to_string();
            let key = (path != "." && !path.is_empty()).then_some(path);
            error(line, key, message)
        })?;
        config
            .validate()
            .map_err(|(key, message)| error(key_line(text, &key), Some(key), message))?;
        Ok(config)
    }

    /// Semantic checks serde cannot express; returns the offending key and the message.
    fn validate(&self) -> Result<(), (String, String)> {
        self.validate_basics()
            .map_err(|(k, m)| (k.to_string(), m))?;
        self.validate_detection()
    }

    /// Names of every usable filter: built-in and `[[filter]]`.
    pub fn filter_names(&self) -> Vec<String> {
        filters::NAMES
            .iter()
            .map(|s| s.to_string())
            .chain(self.filter.iter().map(|f| f.name.clone()))
            .collect()
    }

    fn validate_perimeter(&self) -> Result<(), (String, String)> {
        self.geo.validate().map_err(|(k, m)| (k.to_string(), m))?;
        if self.scanners.user_agents.len() > pbxguard_common::MAX_SIGNATURES as usize {
            return Err((
                "scanners.user_agents".into(),
                format!("at most {} entries", pbxguard_common::MAX_SIGNATURES),
            ));
        }
        for ua in &self.scanners.user_agents {
            if ua.is_empty() || ua.len() > pbxguard_common::SIGNATURE_LEN || !ua.is_ascii() {
                return Err((
                    "scanners.user_agents".into(),
                    format!(
                        "`{ua}`: a signature is 1 to {} ASCII bytes (a User-Agent prefix)",
                        pbxguard_common::SIGNATURE_LEN
                    ),
                ));
            }
        }
        if self.flood.packets_per_second > 0 && self.flood.burst == 0 {
            return Err((
                "flood.burst".into(),
                "must be at least 1 when packets_per_second is set".into(),
            ));
        }
        if self.protect.len() > pbxguard_common::MAX_PROTECT_RULES as usize {
            return Err((
                "protect".into(),
                format!(
                    "at most {} [[protect]] rules",
                    pbxguard_common::MAX_PROTECT_RULES
                ),
            ));
        }
        for (i, rule) in self.protect.iter().enumerate() {
            if rule.ports.is_empty() {
                return Err((
                    format!("protect[{i}].ports"),
                    "name the ports to protect, e.g. ports = [\"5060/udp\"]".into(),
                ));
            }
            if rule.trusted.is_empty() {
                return Err((
                    format!("protect[{i}].trusted"),
                    "no trusted sources: everyone would be dropped; list your trunk provider and office networks"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// The filter spec called `name`: an admin's `[[filter]]` or a built-in.
    pub fn filter_spec(&self, name: &str) -> Option<FilterSpec> {
        self.filter
            .iter()
            .find(|f| f.name == name)
            .cloned()
            .or_else(|| filters::named(name))
    }

    fn validate_detection(&self) -> Result<(), (String, String)> {
        self.validate_perimeter()?;
        let p = &self.policy;
        if p.maxretry == 0 {
            return Err(("policy.maxretry".into(), "must be at least 1".into()));
        }
        if !(1.0..=100.0).contains(&p.bantime_factor) {
            return Err((
                "policy.bantime_factor".into(),
                format!(
                    "{} is out of range: use 1.0 (no escalation) to 100",
                    p.bantime_factor
                ),
            ));
        }
        if !(1..=128).contains(&p.ipv6_prefix) {
            return Err((
                "policy.ipv6_prefix".into(),
                format!(
                    "{} is not a prefix length: use 1 to 128 (default 64)",
                    p.ipv6_prefix
                ),
            ));
        }
        for (name, t) in &p.filter {
            if !self.filter_names().contains(name) && !XDP_FILTERS.contains(&name.as_str()) {
                return Err((
                    format!("policy.filter.{name}"),
                    format!(
                        "no filter called `{name}`; known: {}",
                        self.filter_names().join(", ")
                    ),
                ));
            }
            if t.maxretry == Some(0) {
                return Err((
                    format!("policy.filter.{name}.maxretry"),
                    "must be at least 1".into(),
                ));
            }
        }
        if let Some(off) = &self.offhours {
            if off.schedule.is_empty() {
                return Err((
                    "offhours.schedule".into(),
                    "no windows: give e.g. schedule = [\"Mon-Fri 18:00-08:00\", \"Sat-Sun\"]"
                        .into(),
                ));
            }
            Schedule::parse(&off.schedule)
                .map_err(|e| ("offhours.schedule".to_string(), e.to_string()))?;
        }
        for (i, f) in self.filter.iter().enumerate() {
            let key = format!("filter[{i}]");
            if f.name.is_empty()
                || !f
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err((
                    format!("{key}.name"),
                    format!(
                        "`{}` is not a valid filter name (letters, digits, - and _)",
                        f.name
                    ),
                ));
            }
            if filters::NAMES.contains(&f.name.as_str())
                || self.filter[..i].iter().any(|o| o.name == f.name)
            {
                return Err((
                    format!("{key}.name"),
                    format!(
                        "a filter called `{}` already exists; pick another name",
                        f.name
                    ),
                ));
            }
            if f.rules.is_empty() {
                return Err((
                    format!("{key}.rule"),
                    "a filter needs at least one [[filter.rule]]".into(),
                ));
            }
            for (j, rule) in f.rules.iter().enumerate() {
                Matcher::new(&[FilterSpec {
                    rules: vec![rule.clone()],
                    ..f.clone()
                }])
                .map_err(|e| (format!("{key}.rule[{j}].regex"), e.to_string()))?;
            }
        }
        let known = self.filter_names();
        for (i, s) in self.source.iter().enumerate() {
            let key = format!("source[{i}]");
            match (&s.path, &s.journal_unit) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => return Err((key, "give exactly one of `path` or `journal_unit`".into())),
            }
            if let Some(path) = &s.path
                && !path.is_absolute()
            {
                return Err((
                    format!("{key}.path"),
                    format!("`{}` must be an absolute path", path.display()),
                ));
            }
            if s.filters.is_empty() {
                return Err((
                    format!("{key}.filters"),
                    format!("no filters: name at least one of {}", known.join(", ")),
                ));
            }
            for name in &s.filters {
                if !known.contains(name) {
                    return Err((
                        format!("{key}.filters"),
                        format!("no filter called `{name}`; known: {}", known.join(", ")),
                    ));
                }
            }
            if s.maxretry == Some(0) {
                return Err((format!("{key}.maxretry"), "must be at least 1".into()));
            }
        }
        Ok(())
    }

    fn validate_basics(&self) -> Result<(), (&'static str, String)> {
        if self.enforce.interfaces.is_empty() {
            return Err((
                "enforce.interfaces",
                "no interface to protect: list the internet-facing interfaces, e.g. interfaces = [\"eth0\"]".into(),
            ));
        }
        for name in &self.enforce.interfaces {
            if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ']) {
                return Err((
                    "enforce.interfaces",
                    format!("`{name}` is not a valid interface name (see `ip link`)"),
                ));
            }
        }
        if self.ban.max_entries == 0 || self.ban.max_entries > MAX_BAN_ENTRIES {
            return Err((
                "ban.max_entries",
                format!(
                    "{} is out of range: use 1 to {MAX_BAN_ENTRIES} (default {})",
                    self.ban.max_entries,
                    pbxguard_common::DEFAULT_MAX_BANS
                ),
            ));
        }
        for (key, path) in [
            ("daemon.socket", &self.daemon.socket),
            ("daemon.state_dir", &self.daemon.state_dir),
            ("daemon.bpffs", &self.daemon.bpffs),
        ] {
            if !path.is_absolute() {
                return Err((
                    key,
                    format!("`{}` must be an absolute path", path.display()),
                ));
            }
        }
        Ok(())
    }
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Line of a dotted key in the document, if the key is written there.
/// Line of a key path like `source[1].filters` in the document, if it is written there;
/// falls back to the innermost part that is.
fn key_line(text: &str, path: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut table = doc.as_table() as &dyn toml_edit::TableLike;
    let mut found = None;
    for part in path.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some((key, item)) = table.get_key_value(name) else {
            break;
        };
        found = key
            .span()
            .or_else(|| item.span())
            .map(|s| line_of(text, s.start));
        if let Some(index) = index {
            let Some(element) = item.as_array_of_tables().and_then(|a| a.get(index)) else {
                break;
            };
            found = element.span().map(|s| line_of(text, s.start)).or(found);
            table = element;
            continue;
        }
        match item.as_table_like() {
            Some(t) => table = t,
            None => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/pbxguard/test.toml"))
    }

    const MINIMAL: &str = "[enforce]\ninterfaces = [\"eth0\"]\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.ban.max_entries, 1_000_000);
        assert_eq!(config.enforce.xdp_mode, XdpMode::Auto);
        assert_eq!(config.daemon.bpffs, PathBuf::from("/sys/fs/bpf/pbxguard"));
    }

    #[test]
    fn shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/pbxguard.toml");
        let config = Config::load(&path).unwrap();
        assert!(!config.enforce.interfaces.is_empty());
    }

    fn assert_error(text: &str, line: usize, key: &str, words: &str) {
        let err = parse(text).unwrap_err();
        let shown = err.to_string();
        assert_eq!(err.line, Some(line), "{shown}");
        assert_eq!(err.key.as_deref(), Some(key), "{shown}");
        assert!(shown.starts_with("/etc/pbxguard/test.toml:"), "{shown}");
        assert!(shown.contains(words), "{shown}");
    }

    #[test]
    fn unknown_key_is_named() {
        assert_error(
            "[enforce]\ninterfaces = [\"eth0\"]\n\n[daemon]\nsockt = \"/run/x\"\n",
            5,
            "daemon.sockt",
            "unknown field `sockt`",
        );
    }

    #[test]
    fn unknown_section_is_named() {
        assert_error(
            &format!("{MINIMAL}[bans]\nx = 1\n"),
            3,
            "bans",
            "unknown field `bans`",
        );
    }

    #[test]
    fn wrong_type_is_named() {
        assert_error(
            &format!("{MINIMAL}[ban]\nmax_entries = \"lots\"\n"),
            4,
            "ban.max_entries",
            "invalid type",
        );
    }

    #[test]
    fn bad_cidr_is_named() {
        assert_error(
            &format!("{MINIMAL}[allow]\nnetworks = [\"10.0.0.0/8\", \"10.1.2.300\"]\n"),
            4,
            "allow.networks",
            "`10.1.2.300` is not an IP address",
        );
    }

    #[test]
    fn bad_duration_is_named() {
        assert_error(
            &format!("{MINIMAL}[ban]\ndefault_duration = \"a while\"\n"),
            4,
            "ban.default_duration",
            "is not a duration",
        );
    }

    #[test]
    fn bad_mode_is_named() {
        assert_error(
            "[enforce]\ninterfaces = [\"eth0\"]\nxdp_mode = \"turbo\"\n",
            3,
            "enforce.xdp_mode",
            "turbo",
        );
    }

    #[test]
    fn out_of_range_capacity_is_named() {
        assert_error(
            &format!("{MINIMAL}[ban]\nmax_entries = 0\n"),
            4,
            "ban.max_entries",
            "1 to",
        );
    }

    #[test]
    fn missing_interfaces_is_explained() {
        let err = parse("[daemon]\nstate_dir = \"/var/lib/pbxguard\"\n").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("enforce.interfaces"));
        assert!(err.to_string().contains("interfaces = [\"eth0\"]"), "{err}");
    }

    #[test]
    fn relative_path_is_named() {
        assert_error(
            &format!("{MINIMAL}[daemon]\n\nstate_dir = \"state\"\n"),
            5,
            "daemon.state_dir",
            "absolute path",
        );
    }

    #[test]
    fn detection_config_parses() {
        let config = parse(&format!(
            "{MINIMAL}[policy]\nmaxretry = 3\nfindtime = \"5m\"\nbantime = \"1h\"\nmode = \"observe\"\n\
             [policy.filter.sshd]\nmaxretry = 6\n\
             [offhours]\nschedule = [\"Mon-Fri 18:00-08:00\", \"Sat-Sun\"]\nmaxretry = 1\n\
             [[source]]\npath = \"/var/log/asterisk/full\"\nfilters = [\"asterisk\", \"mine\"]\nmaxretry = 2\n\
             [[source]]\njournal_unit = \"ssh.service\"\nfilters = [\"sshd\"]\n\
             [[filter]]\nname = \"mine\"\n[[filter.rule]]\nname = \"bad\"\nregex = \"auth failed from <HOST>\"\n"
        ))
        .unwrap();
        assert_eq!(config.policy.maxretry, 3);
        assert_eq!(config.policy.mode, Mode::Observe);
        assert_eq!(config.policy.filter["sshd"].maxretry, Some(6));
        assert_eq!(config.offhours.unwrap().maxretry, Some(1));
        assert_eq!(config.source[0].thresholds().maxretry, Some(2));
        assert_eq!(config.filter[0].rules[0].name, "bad");
    }

    #[test]
    fn unknown_filter_in_a_source_is_named() {
        assert_error(
            &format!(
                "{MINIMAL}\n[[source]]\npath = \"/var/log/a\"\nfilters = [\"asterisk\"]\n\n[[source]]\npath = \"/var/log/b\"\nfilters = [\"astrisk\"]\n"
            ),
            10,
            "source[1].filters",
            "no filter called `astrisk`",
        );
    }

    #[test]
    fn bad_custom_rule_is_named() {
        assert_error(
            &format!(
                "{MINIMAL}[[filter]]\nname = \"mine\"\n[[filter.rule]]\nname = \"x\"\nregex = \"no host here\"\n"
            ),
            7,
            "filter[0].rule[0].regex",
            "exactly one <HOST>",
        );
    }

    #[test]
    fn bad_schedule_is_named() {
        assert_error(
            &format!("{MINIMAL}[offhours]\nschedule = [\"weekends\"]\n"),
            4,
            "offhours.schedule",
            "Mon-Fri 18:00-08:00",
        );
    }

    #[test]
    fn unknown_key_in_a_source_is_named() {
        assert_error(
            &format!("{MINIMAL}[[source]]\npath = \"/var/log/a\"\nfilter = [\"asterisk\"]\n"),
            5,
            "source[0].filter",
            "unknown field `filter`",
        );
    }

    #[test]
    fn syntax_error_has_a_line() {
        let err = parse("[enforce]\ninterfaces = [\"eth0\"\n").unwrap_err();
        assert!(err.line.is_some(), "{err}");
    }
}
