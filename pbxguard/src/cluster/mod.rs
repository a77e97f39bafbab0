//! A fleet that learns together: bans shared between pbxguard nodes over NATS JetStream
//! (`[cluster]`). No replication of our own: JetStream keeps one message per
//! (node, network) subject (`wire.rs`), every node reads the stream with its own durable
//! consumer, and each node decides for itself whether to apply a peer's ban
//! (`engine/peer.rs`).
//!
//! - **Publishing** (`publish.rs`) derives what to send from the ledger's bans in the
//!   engine's published snapshot, never from a queue in memory: on every (re)connection
//!   the node reads back its own subjects and publishes the difference, so a ban made while
//!   NATS was down, or before a restart, is published once NATS is back.
//! - **Consuming** (`consume.rs`) hands peers' messages to the engine in batches and acks
//!   them only after the engine answered (journaled), so a crash redelivers.
//! - NATS being down never touches local protection: this runs as its own task, retries with
//!   backoff, and only reports its state to the engine for `status` and metrics.

mod consume;
mod publish;
pub mod wire;

use std::{collections::BTreeMap, time::Duration};

use async_nats::jetstream;
use serde::Serialize;

use crate::{
    config::{BanConfig, ClusterConfig, PolicyConfig},
    engine::actor::{Command, EngineHandle},
    units::BanDuration,
};

/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a session with NATS ended; the task starts another after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Connecting, the stream, the consumer, a publish or a fetch failed.
    #[error("NATS: {0}")]
    Nats(String),
    /// The engine stopped: the task ends.
    #[error("the engine has stopped")]
    EngineGone,
}

impl ClusterError {
    fn nats(e: impl std::fmt::Display) -> ClusterError {
        ClusterError::Nats(e.to_string())
    }
}

/// One peer's numbers in `status`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PeerStatus {
    /// Its bans in force here (from the ledger).
    pub bans: usize,
    /// Messages received from it.
    pub received: u64,
    /// Its bans refused here.
    pub refused: u64,
}

/// The cluster link in `status` and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterStatus {
    /// This node's name on the stream.
    pub node: String,
    /// The stream.
    pub stream: String,
    /// Whether a NATS connection is up and the stream and consumer are in place.
    pub connected: bool,
    /// The server connected to (`host:port`, and its name), or the configured list.
    pub server: String,
    /// The last stream sequence this node consumed.
    pub last_sequence: u64,
    /// Bans and unbans published by this node.
    pub published: u64,
    /// Peers' messages received.
    pub received: u64,
    /// Peers' bans applied here.
    pub applied: u64,
    /// Peers' bans refused here (guard, width, known address, kernel, node not accepted).
    pub refused: u64,
    /// Messages that could not be read (and were dropped).
    pub malformed: u64,
    /// Why the last session ended, while disconnected.
    pub last_error: Option<String>,
    /// Per peer node.
    pub peers: BTreeMap<String, PeerStatus>,
}

/// What the sessions share: settings, the engine and the numbers.
struct Link {
    config: ClusterConfig,
    node: String,
    max_age: Duration,
    engine: EngineHandle,
    status: ClusterStatus,
}

impl Link {
    /// Sends the status to the engine (for `status` and metrics); never blocks the link for
    /// long, and a full command queue just skips one report.
    fn report(&self) {
        let _ = self
            .engine
            .try_send(Command::Cluster(Box::new(self.status.clone())));
    }
}

/// How long the stream keeps a message: the longest ban detection makes
/// (`[policy] bantime_max`) or the default manual length, whichever is longer; 0 (no limit)
/// when either is permanent. Longer manual bans are published again before they age out.
pub fn stream_max_age(policy: &PolicyConfig, ban: &BanConfig) -> Duration {
    match (policy.bantime_max, ban.default_duration) {
        (BanDuration::For(a), BanDuration::For(b)) => a.max(b),
        _ => Duration::ZERO,
    }
}

/// Starts the cluster link on the current tokio runtime; it runs until the engine stops.
pub fn spawn(
    config: ClusterConfig,
    max_age: Duration,
    engine: EngineHandle,
) -> tokio::task::JoinHandle<()> {
    let node = config.node_name();
    let status = ClusterStatus {
        node: node.clone(),
        stream: config.stream.clone(),
        server: config.servers.join(","),
        ..Default::default()
    };
    let link = Link {
        config,
        node,
        max_age,
        engine,
        status,
    };
    tokio::spawn(run(link))
}

async fn run(mut link: Link) {
    link.report();
    let last_event = std::sync::Arc::new(std::sync::Mutex::new(None));
    let client = match connect(&link.config, &link.node, last_event.clone()).await {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "[cluster] cannot be used; local protection is unaffected. Fix the [cluster] settings and restart pbxguard");
            link.status.last_error = Some(e.to_string());
            link.report();
            return;
        }
    };
    let js = jetstream::new(client.clone());
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = tokio::time::Instant::now();
        let result = session(&mut link, &client, &js).await;
        link.status.connected = false;
        match result {
            Err(ClusterError::EngineGone) | Ok(()) => return,
            Err(e) => {
                // A refused login or TLS failure shows only as a client event; say it.
                let why = match last_event.lock().expect("event lock").clone() {
                    Some(event)
                        if client.connection_state()
                            != async_nats::connection::State::Connected =>
                    {
                        format!("{e} (not connected: {event})")
                    }
                    _ => e.to_string(),
                };
                tracing::warn!(error = %why, retry_in = ?backoff, "cluster link down; local protection is unaffected, retrying");
                link.status.last_error = Some(why);
                link.report();
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A client that connects (and reconnects) in the background: a NATS that is down at start
/// does not hold the daemon up.
/// `last_event` holds the latest connection error the client reported (cleared on connect).
async fn connect(
    config: &ClusterConfig,
    node: &str,
    last_event: std::sync::Arc<std::sync::Mutex<Option<String>>>,
) -> Result<async_nats::Client, ClusterError> {
    let mut options = match &config.creds {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| ClusterError::Nats(format!("creds file {}: {e}", path.display())))?,
        None => async_nats::ConnectOptions::new(),
    };
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let Some(ca) = &config.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    options
        .name(format!("pbxguard {node}"))
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            let last_event = last_event.clone();
            async move {
                let mut last = last_event.lock().expect("event lock");
                match event {
                    async_nats::Event::Connected => {
                        *last = None;
                        tracing::info!("NATS connected");
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS disconnected; reconnecting")
                    }
                    async_nats::Event::ServerError(e) => {
                        tracing::warn!(error = %e, "NATS server error");
                        *last = Some(e.to_string());
                    }
                    async_nats::Event::ClientError(e) => *last = Some(e.to_string()),
                    other => tracing::debug!(event = %other, "NATS"),
                }
            }
        })
        .connect(config.servers.as_slice())
        .await
        .map_err(ClusterError::nats)
}

/// One connected stretch: the stream and consumer in place, this node's subjects read back
/// and caught up, then publishing and consuming until either fails.
async fn session(
    link: &mut Link,
    client: &async_nats::Client,
    js: &jetstream::Context,
) -> Result<(), ClusterError> {
    let stream = ensure_stream(js, &link.config, link.max_age).await?;
    let on_stream = publish::read_back(&stream, &link.node).await?;
    let consumer = consume::durable(&stream, &link.node).await?;
    let info = client.server_info();
    link.status.connected = true;
    link.status.last_error = None;
    link.status.server = format!("{}:{} ({})", info.host, info.port, info.server_name);
    tracing::info!(server = %link.status.server, stream = %link.config.stream, node = %link.node,
        own_subjects = on_stream.len(), "cluster link up");
    link.report();
    let mut publisher = publish::Publisher::new(link, on_stream);
    let mut consumer = consume::Consumer::new(consumer);
    // Both halves share `link` (status numbers), so they take turns on one task: a publish
    // burst and a consumed batch each end quickly.
    publish::follow(link, js, &mut publisher, &mut consumer).await
}

async fn ensure_stream(
    js: &jetstream::Context,
    config: &ClusterConfig,
    max_age: Duration,
) -> Result<jetstream::stream::Stream, ClusterError> {
    let wanted = jetstream::stream::Config {
        name: config.stream.clone(),
        subjects: vec![wire::SUBJECTS.into()],
        max_messages_per_subject: 1,
        max_age,
        storage: jetstream::stream::StorageType::File,
        num_replicas: config.replicas,
        discard: jetstream::stream::DiscardPolicy::Old,
        description: Some("pbxguard bans: one message per node and network".into()),
        ..Default::default()
    };
    let mut stream = js
        .get_or_create_stream(wanted)
        .await
        .map_err(|e| ClusterError::Nats(format!("stream {}: {e}", config.stream)))?;
    let held = stream
        .info()
        .await
        .map_err(ClusterError::nats)?
        .config
        .clone();
    if held.max_messages_per_subject != 1 || !held.subjects.iter().any(|s| s == wire::SUBJECTS) {
        return Err(ClusterError::Nats(format!(
            "stream {} exists with other settings (subjects {:?}, max messages per subject {}); \
             delete it (`nats stream rm {}`) or name another in [cluster] stream",
            config.stream, held.subjects, held.max_messages_per_subject, config.stream
        )));
    }
    Ok(stream)
}

/// The `pbxguard_cluster_*` Prometheus lines.
pub fn metrics(status: &ClusterStatus) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP pbxguard_cluster_{name} {help}\n# TYPE pbxguard_cluster_{name} {kind}\npbxguard_cluster_{name} {value}\n"
        ));
    };
    metric(
        "connected",
        "gauge",
        "Whether the NATS link is up.",
        status.connected.into(),
    );
    metric(
        "last_sequence",
        "gauge",
        "The last stream sequence consumed.",
        status.last_sequence,
    );
    metric(
        "published_total",
        "counter",
        "Bans and unbans this node published.",
        status.published,
    );
    metric(
        "received_total",
        "counter",
        "Peers' messages received.",
        status.received,
    );
    metric(
        "applied_total",
        "counter",
        "Peers' bans applied here.",
        status.applied,
    );
    metric(
        "refused_total",
        "counter",
        "Peers' bans refused here.",
        status.refused,
    );
    metric(
        "malformed_total",
        "counter",
        "Messages that could not be read.",
        status.malformed,
    );
    out.push_str("# HELP pbxguard_cluster_peer_bans Peers' bans in force here, per node.\n# TYPE pbxguard_cluster_peer_bans gauge\n");
    for (node, peer) in &status.peers {
        out.push_str(&format!(
            "pbxguard_cluster_peer_bans{{node=\"{}\"}} {}\n",
            crate::metrics::label(node),
            peer.bans
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_name_every_number_and_each_peer() {
        let mut status = ClusterStatus {
            connected: true,
            last_sequence: 42,
            published: 3,
            refused: 2,
            ..Default::default()
        };
        status.peers.insert(
            "pbx-b".into(),
            PeerStatus {
                bans: 7,
                ..Default::default()
            },
        );
        let text = metrics(&status);
        for line in [
            "pbxguard_cluster_connected 1",
            "pbxguard_cluster_last_sequence 42",
            "pbxguard_cluster_published_total 3",
            "pbxguard_cluster_refused_total 2",
            "pbxguard_cluster_peer_bans{node=\"pbx-b\"} 7",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
