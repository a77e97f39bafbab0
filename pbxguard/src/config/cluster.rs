//! `[cluster]`: sharing bans with other pbxguard nodes through NATS JetStream.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Which of this node's bans are shared (`publish`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Share {
    /// Bans made by detection (a filter, the XDP flood or scanner rule).
    Detected,
    /// Bans made with `pbxguard bans add`.
    Manual,
}

/// `[cluster]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://10.0.0.5:4222`, `tls://nats.example.net:4222`); the
    /// client fails over between them and learns the rest of a NATS cluster from them.
    pub servers: Vec<String>,
    /// This node's name on the stream (`pbxguard.bans.<node>.…`); the host name when empty.
    pub node: String,
    /// The JetStream stream, created when missing.
    pub stream: String,
    /// Stream replicas when this node creates it (3 on a 3-server NATS cluster for HA).
    pub replicas: usize,
    /// Which of this node's bans are shared: `detected`, `manual`.
    pub publish: Vec<Share>,
    /// Nodes whose bans are accepted: names, or `*` for every node.
    pub accept_from: Vec<String>,
    /// Enforce accepted peers' bans here (false: only count them).
    pub apply: bool,
    /// NATS user (with `password`).
    pub user: Option<String>,
    /// NATS password (with `user`).
    pub password: Option<String>,
    /// NATS token.
    pub token: Option<String>,
    /// A `.creds` file (JWT and nkey seed, from `nsc`).
    pub creds: Option<PathBuf>,
    /// CA certificate (PEM) to verify the servers with; turns TLS on.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), for servers that verify clients (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM), with `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            node: String::new(),
            stream: "PBXGUARD_BANS".into(),
            replicas: 1,
            publish: vec![Share::Detected],
            accept_from: vec!["*".into()],
            apply: true,
            user: None,
            password: None,
            token: None,
            creds: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// Whether `name` can be a node name: it becomes one token of a NATS subject and part of a
/// durable consumer name, so letters, digits, `-` and `_` only, 1 to 64 of them.
pub fn valid_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// This host's name made into a node name (dots and other characters become `-`).
pub fn default_node_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let name: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "pbxguard".into()
    } else {
        name
    }
}

impl ClusterConfig {
    /// The node name in force: `node`, or the host name.
    pub fn node_name(&self) -> String {
        if self.node.is_empty() {
            default_node_name()
        } else {
            self.node.clone()
        }
    }

    /// Whether bans from `node` are accepted.
    pub fn accepts(&self, node: &str) -> bool {
        self.accept_from.iter().any(|a| a == "*" || a == node)
    }

    /// Checks serde cannot express; the key and what to do.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.servers.is_empty() {
            return Err((
                "cluster.servers",
                "no NATS server: give e.g. servers = [\"nats://10.0.0.5:4222\"], or remove [cluster]"
                    .into(),
            ));
        }
        for server in &self.servers {
            let rest = server
                .strip_prefix("nats://")
                .or_else(|| server.strip_prefix("tls://"))
                .unwrap_or(server);
            if rest.is_empty() || rest.contains(char::is_whitespace) || rest.contains('/') {
                return Err((
                    "cluster.servers",
                    format!(
                        "`{server}` is not a NATS URL: use nats://HOST:PORT or tls://HOST:PORT"
                    ),
                ));
            }
        }
        if !self.node.is_empty() && !valid_node_name(&self.node) {
            return Err((
                "cluster.node",
                format!(
                    "`{}` is not a node name: 1 to 64 letters, digits, - and _",
                    self.node
                ),
            ));
        }
        if !valid_node_name(&self.stream) {
            return Err((
                "cluster.stream",
                format!(
                    "`{}` is not a stream name: letters, digits, - and _",
                    self.stream
                ),
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err((
                "cluster.replicas",
                format!("{} is out of range: JetStream allows 1 to 5", self.replicas),
            ));
        }
        if self.accept_from.is_empty() {
            return Err((
                "cluster.accept_from",
                "empty: list node names, or [\"*\"] for every node (set apply = false to only count peers' bans)".into(),
            ));
        }
        for name in &self.accept_from {
            if name != "*" && !valid_node_name(name) {
                return Err((
                    "cluster.accept_from",
                    format!("`{name}` is not a node name (letters, digits, - and _) or `*`"),
                ));
            }
        }
        let methods = [
            self.user.is_some() || self.password.is_some(),
            self.token.is_some(),
            self.creds.is_some(),
        ];
        if methods.iter().filter(|&&m| m).count() > 1 {
            return Err((
                "cluster.token",
                "give one way to log in: user and password, token, or creds".into(),
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(("cluster.password", "user and password go together".into()));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(("cluster.tls_key", "tls_cert and tls_key go together".into()));
        }
        Ok(())
    }
}
