//! The TOML configuration: schema, defaults and validation.
//!
//! Every error names the file, the line, the key and what is wrong, because the admin reading
//! it is usually fixing a PBX under attack and should not have to guess.
//!
//! The sections live in submodules by concern and are re-exported here, so every type is
//! reached as `crate::config::Name`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::detect::{FilterSpec, filters};

mod capacity;
mod cluster;
mod daemon;
mod detection;
mod enforcement;
mod error;
mod feeds;
mod fraud;
mod perimeter;
#[cfg(test)]
mod tests;
mod trust;
mod validate;

pub use cluster::{ClusterConfig, Share, default_node_name, valid_node_name};
pub use daemon::{DaemonConfig, MetricsConfig};
pub use detection::{Mode, OffHoursConfig, PolicyConfig, SourceConfig, Thresholds};
pub use enforcement::{AllowConfig, Backend, BanConfig, EnforceConfig, MAX_BAN_ENTRIES, XdpMode};
pub use error::ConfigError;
pub use feeds::{APIBAN_URL, BlocklistConfig, CrowdsecConfig, FeedFormat};
pub use fraud::{FRAUD_RULES, FraudConfig, FraudLimits};
pub use perimeter::{
    DEFAULT_SCANNERS, FloodConfig, PortSpec, ProtectConfig, ScannersConfig, SipConfig,
};
pub use trust::TrustConfig;

use error::{key_line, line_of};

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
    /// Peers trusted from the PBX's own configuration.
    pub trust: TrustConfig,
    /// Bans shared with other nodes over NATS JetStream; none when absent.
    pub cluster: Option<ClusterConfig>,
    /// Toll-fraud rules over the call records; none when absent.
    pub fraud: Option<FraudConfig>,
    /// Call-record files to follow (`[[cdr]]`), for `[fraud]`.
    pub cdr: Vec<crate::fraud::cdr::CdrSourceConfig>,
    /// Blocklist feeds (`[[blocklist]]`), dropped in their own maps.
    pub blocklist: Vec<BlocklistConfig>,
    /// CrowdSec's decisions, enforced as bans.
    pub crowdsec: Option<CrowdsecConfig>,
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

    /// Names of every usable filter: built-in (opt-in ones included) and `[[filter]]`.
    pub fn filter_names(&self) -> Vec<String> {
        filters::names()
            .map(str::to_string)
            .chain(self.filter.iter().map(|f| f.name.clone()))
            .collect()
    }

    /// The usable filter names as a "known: ..." message lists them.
    pub fn known_filters(&self) -> String {
        filters::known_names(self.filter.iter().map(|f| f.name.as_str()))
    }

    /// The filter spec called `name`: an admin's `[[filter]]` or a built-in.
    pub fn filter_spec(&self, name: &str) -> Option<FilterSpec> {
        self.filter
            .iter()
            .find(|f| f.name == name)
            .cloned()
            .or_else(|| filters::named(name))
    }
}
