//! The engine loop: one thread owns the [`Engine`]; everything else talks to it through
//! [`EngineHandle`] (the shape of tokio's mini-redis). Failures from the log and XDP
//! sources arrive on one channel and are taken in bursts; commands from the control socket
//! and the daemon on another, each with a reply. After every unit of work the loop
//! publishes a [`Snapshot`] on a `watch` channel, *before* replying, so a `bans list` right
//! after `bans add` sees the ban, and `status` never waits on the loop at all.

use std::{
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot, watch};

use super::{BanRequest, Engine, Snapshot};
use crate::{
    enforce::Counters,
    guard::HostAddress,
    source::{Event, SourceStats},
    store::BanRecord,
};

/// How often ended bans are swept (the kernel already ignores them) and the geo database
/// is checked for replacement.
pub const SWEEP: Duration = Duration::from_secs(1);

/// Failures taken from the channel in one burst (one journal write, one kernel batch).
const BURST: usize = 4096;

/// A reply: the result or an error for the admin.
pub type Reply<T> = oneshot::Sender<Result<T, String>>;

/// What the engine loop can be asked to do.
pub enum Command {
    /// `bans add` (one or many networks).
    Ban(Vec<BanRequest>, Reply<Vec<BanRecord>>),
    /// `bans del`.
    Unban(Vec<IpNet>, Reply<Vec<BanRecord>>),
    /// `pbxguard reload` or SIGHUP.
    Reload(Reply<()>),
    /// The host's addresses changed.
    HostAddresses(Vec<HostAddress>),
    /// `pbxguard explain IP`.
    Explain(std::net::IpAddr, Reply<super::explain::Explanation>),
    /// The PBX configs were read again.
    PbxTrust(crate::trust::Discovered),
    /// Bans and unbans from other nodes (`[cluster]`), already parsed and accepted.
    Peer(
        Vec<crate::cluster::wire::Wire>,
        Reply<super::peer::PeerOutcome>,
    ),
    /// The cluster link's state, for `status` and metrics.
    Cluster(Box<crate::cluster::ClusterStatus>),
    /// A toll-fraud rule fired: alert, and ban where the extension registered from.
    Fraud(Box<crate::fraud::rules::Hit>, Reply<String>),
    /// The fraud thread's counters, for `fraud status` and metrics.
    FraudReport(Arc<crate::fraud::FraudReport>),
    /// A blocklist feed was refreshed, found unchanged, or failed.
    Feed(String, super::feeds::FeedNews),
    /// A CrowdSec pull: its decisions (`true`: a startup pull, the whole list).
    Crowdsec(crate::crowdsec::Delta, bool),
    /// A CrowdSec pull failed (enforced decisions stay).
    CrowdsecFailed(String, String),
    /// The log sources were restarted after a reload: show these counters.
    Sources(Vec<Arc<SourceStats>>, Reply<()>),
    /// Stop the loop; keep enforcing unless `detach`.
    Shutdown {
        /// Remove the program or table on the way out.
        detach: bool,
        /// Answered once the backend is shut down.
        reply: Reply<()>,
    },
}

/// The way in to the engine loop, cloned by every user.
#[derive(Clone)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    counters: Arc<dyn Counters>,
}

impl EngineHandle {
    /// The state published last.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that wakes on every publication.
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// The verdict counters (read straight from the kernel, not through the loop).
    pub fn counters(&self) -> Arc<dyn Counters> {
        self.counters.clone()
    }

    /// Sends a command and waits for its reply.
    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| "the engine has stopped".to_string())?;
        rx.await
            .map_err(|_| "the engine stopped before answering".to_string())?
    }

    /// Sends a command if the queue has room; false when it is full or the engine is gone
    /// (for reports that the next one replaces).
    pub fn try_send(&self, command: Command) -> bool {
        self.commands.try_send(command).is_ok()
    }

    /// Sends a command and waits for its reply, from a plain thread (not a runtime's).
    pub fn ask_blocking<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .blocking_send(make(tx))
            .map_err(|_| "the engine has stopped".to_string())?;
        rx.blocking_recv()
            .map_err(|_| "the engine stopped before answering".to_string())?
    }

    /// Sends a command without waiting (from a plain thread).
    pub fn send_blocking(&self, command: Command) -> bool {
        self.commands.blocking_send(command).is_ok()
    }
}

/// Starts the engine loop on its own thread.
pub fn spawn(mut engine: Engine, events: mpsc::Receiver<Event>) -> (EngineHandle, JoinHandle<()>) {
    let (commands_tx, commands_rx) = mpsc::channel(256);
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(engine.snapshot()));
    let counters = engine.enforcer().counters();
    let thread = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("engine runtime");
            runtime.block_on(run(&mut engine, commands_rx, events, snapshot_tx));
        })
        .expect("spawn engine thread");
    (
        EngineHandle {
            commands: commands_tx,
            snapshot: snapshot_rx,
            counters,
        },
        thread,
    )
}

async fn run(
    engine: &mut Engine,
    mut commands: mpsc::Receiver<Command>,
    mut events: mpsc::Receiver<Event>,
    snapshot: watch::Sender<Arc<Snapshot>>,
) {
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events_open = true;
    loop {
        tokio::select! {
            biased;
            command = commands.recv() => {
                let Some(command) = command else { return };
                if carry_out(engine, command, &snapshot) {
                    return;
                }
            }
            event = events.recv(), if events_open => {
                let Some(first) = event else {
                    events_open = false;
                    continue;
                };
                let mut batch = vec![first];
                while batch.len() < BURST {
                    match events.try_recv() {
                        Ok(event) => batch.push(event),
                        Err(_) => break,
                    }
                }
                fail::fail_point!("engine-failures", |_| ());
                if let Err(e) = engine.on_failures(&batch, SystemTime::now()) {
                    tracing::error!(events = batch.len(), error = %e, "acting on detected failures failed; nothing was banned");
                }
                snapshot.send_replace(Arc::new(engine.snapshot()));
            }
            _ = sweep.tick() => {
                if let Err(e) = engine.expire(SystemTime::now()) {
                    tracing::error!(error = %e, "sweeping expired bans failed; retrying next second");
                }
                if let Err(e) = engine.refresh_geo() {
                    tracing::error!(error = %e, "reloading geo rules failed");
                }
                snapshot.send_replace(Arc::new(engine.snapshot()));
            }
        }
    }
}

/// Carries out one command, publishes, then replies; true when the loop must stop.
fn carry_out(
    engine: &mut Engine,
    command: Command,
    snapshot: &watch::Sender<Arc<Snapshot>>,
) -> bool {
    let publish = |engine: &mut Engine| snapshot.send_replace(Arc::new(engine.snapshot()));
    match command {
        Command::Ban(requests, reply) => {
            let result = engine
                .ban_many(requests, SystemTime::now())
                .map_err(|e| e.to_string());
            publish(engine);
            let _ = reply.send(result);
        }
        Command::Unban(nets, reply) => {
            let result = match engine.unban_many(&nets) {
                Ok(lifted) if lifted.is_empty() && nets.len() == 1 => {
                    Err(super::EngineError::NotBanned(nets[0]).to_string())
                }
                other => other.map_err(|e| e.to_string()),
            };
            publish(engine);
            let _ = reply.send(result);
        }
        Command::Reload(reply) => {
            let result = engine.reload_file();
            if let Err(e) = &result {
                tracing::error!("{e}");
            }
            publish(engine);
            let _ = reply.send(result);
        }
        Command::Sources(stats, reply) => {
            engine.attach_sources(stats);
            publish(engine);
            let _ = reply.send(Ok(()));
        }
        Command::Peer(messages, reply) => {
            let outcome = engine.apply_peers(messages, SystemTime::now());
            publish(engine);
            let _ = reply.send(Ok(outcome));
        }
        Command::Fraud(hit, reply) => {
            let outcome = engine.on_fraud(&hit, SystemTime::now());
            publish(engine);
            let _ = reply.send(Ok(outcome));
        }
        Command::FraudReport(report) => {
            engine.set_fraud_report(report);
            publish(engine);
        }
        Command::Feed(name, news) => {
            engine.on_feed(&name, news, SystemTime::now());
            publish(engine);
        }
        Command::Crowdsec(delta, startup) => {
            engine.on_crowdsec(delta, startup, SystemTime::now());
            publish(engine);
        }
        Command::CrowdsecFailed(url, error) => {
            engine.crowdsec_failed(&url, error);
            publish(engine);
        }
        Command::Cluster(status) => {
            engine.set_cluster_status(*status);
            publish(engine);
        }
        Command::Explain(ip, reply) => {
            let _ = reply.send(Ok(engine.explain(ip)));
        }
        Command::PbxTrust(found) => {
            engine.set_pbx_trust(found);
            publish(engine);
        }
        Command::HostAddresses(host) => {
            engine.set_host_addresses(host);
            publish(engine);
        }
        Command::Shutdown { detach, reply } => {
            let result = engine.shutdown(detach).map_err(|e| e.to_string());
            let _ = reply.send(result);
            return true;
        }
    }
    false
}
