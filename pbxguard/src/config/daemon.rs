//! Process-level sections: `[daemon]` (paths, exit behaviour) and `[metrics]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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

/// `[metrics]`
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address to serve `/metrics` on (`127.0.0.1:9771`); absent = off.
    pub listen: Option<std::net::SocketAddr>,
}
