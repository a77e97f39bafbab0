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

use crate::units::{BanDuration, net_serde};

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

/// `[enforce]`
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EnforceConfig {
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
            .map_err(|(key, message)| error(key_line(text, key), Some(key.to_string()), message))?;
        Ok(config)
    }

    /// Semantic checks serde cannot express; returns the offending key and the message.
    fn validate(&self) -> Result<(), (&'static str, String)> {
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
fn key_line(text: &str, dotted: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut table = doc.as_table() as &dyn toml_edit::TableLike;
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        let (key, item) = table.get_key_value(part)?;
        if parts.peek().is_none() {
            let span = key.span().or_else(|| item.span())?;
            return Some(line_of(text, span.start));
        }
        table = item.as_table_like()?;
    }
    None
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
    fn syntax_error_has_a_line() {
        let err = parse("[enforce]\ninterfaces = [\"eth0\"\n").unwrap_err();
        assert!(err.line.is_some(), "{err}");
    }
}
