//! `pbxguard run`: wires config, store, enforcer, engine loop, sources and control socket
//! together and runs until SIGTERM/SIGINT. SIGHUP re-reads the config (a bad one is
//! rejected and the running config stays). Threads and who owns what: ARCHITECTURE.md.

use std::{
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};
use nix::sys::stat::{Mode, umask};
use tokio::{
    net::UnixListener,
    signal::unix::{SignalKind, signal},
};

use crate::{
    config::Backend,
    config::Config,
    control,
    enforce::{Enforcer, nft::NftEnforcer, xdp::XdpEnforcer},
    engine::{
        Engine,
        actor::{self, Command, EngineHandle},
    },
    notify::{Notifier, NotifyState},
    source::Sources,
    store::Store,
};

/// Exit code after a thread panicked: the state may be half-changed, so the process ends
/// and systemd restarts it; the journal restores the bans.
pub const PANIC_EXIT: i32 = 70;

/// Options from the command line.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The config file.
    pub config: PathBuf,
    /// Detach the program on exit even if the config says otherwise.
    pub detach_on_exit: bool,
}

/// Runs the daemon to completion.
pub fn run(options: RunOptions) -> anyhow::Result<()> {
    fail_loudly();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(options))
}

/// A panic in any thread (engine, follower, event reader, a socket task) ends the process
/// with [`PANIC_EXIT`], instead of leaving a daemon that answers `status` but no longer
/// detects or bans.
fn fail_loudly() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed").to_string();
        tracing::error!(thread = %name, panic = %info, "a pbxguard thread panicked; exiting so that systemd restarts pbxguard (bans are restored from the journal)");
        default(info);
        std::process::exit(PANIC_EXIT);
    }));
}

async fn run_async(options: RunOptions) -> anyhow::Result<()> {
    let config = Config::load(&options.config)?;
    let detach = options.detach_on_exit || config.daemon.detach_on_exit;

    // One daemon per state directory: a second one must not touch the pins or the journal.
    let _lock = lock_state_dir(&config.daemon.state_dir)?;
    let store = Store::open(&config.daemon.state_dir, SystemTime::now())?;
    for damage in store.damage() {
        tracing::error!(line = damage.line, problem = %damage.problem,
            copy = ?store.damaged_copy(), "ban journal damaged; the readable bans were kept");
    }
    let (enforcer, note) = start_backend(&config)?;
    let socket = config.daemon.socket.clone();
    let metrics_listen = config.metrics.listen;
    let mut engine = Engine::start(config.clone(), store, enforcer)?;
    engine.set_backend_note(note.clone());
    engine.set_config_path(options.config.clone());
    let alerts = crate::alert::start(&config.notify);
    engine.set_alerts(alerts.as_ref().map(|(a, _)| a.clone()));
    if let Some(note) = note.filter(|n| n.starts_with("XDP could not")) {
        engine.alert(crate::alert::Notice::new(
            "fallback",
            None,
            Some(note),
            None,
            None,
        ));
    }
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(10_000);
    let mut sources = Sources::start(&config, events_tx.clone())?;
    engine.attach_sources(sources.stats().to_vec());
    let ring = engine.take_events();
    let (engine, engine_thread) = actor::spawn(engine, events_rx);
    let program_events = ring.map(|ring| {
        let stop = Arc::new(AtomicBool::new(false));
        (
            crate::source::program::spawn(ring, engine.watch(), events_tx.clone(), stop.clone()),
            stop,
        )
    });
    let addresses = {
        let engine = engine.clone();
        crate::guard::watch_addresses(move |host| {
            engine.send_blocking(Command::HostAddresses(host))
        })
    };
    if let Err(e) = addresses {
        tracing::warn!(error = %e, "cannot watch address changes; the host's addresses are read only at start");
    }
    if config.trust.pbx_configs {
        let engine = engine.clone();
        crate::trust::watch::spawn(config.trust.clone(), move |found| {
            engine.send_blocking(Command::PbxTrust(found))
        });
    }
    // Bans shared over NATS: its own task, so NATS being down never touches local protection.
    let cluster = config.cluster.clone().map(|cluster| {
        crate::cluster::spawn(
            cluster,
            crate::cluster::stream_max_age(&config.policy, &config.ban),
            engine.clone(),
        )
    });
    // Toll fraud: the call records on their own thread; hits go to the engine.
    // (`fraud_stop` stops every helper thread below.)
    let fraud_stop = Arc::new(AtomicBool::new(false));
    let fraud = crate::fraud::watch::spawn(&config, engine.clone(), fraud_stop.clone());
    // Blocklist feeds and CrowdSec decisions: their own threads, stopped with the fraud one.
    let feeds = crate::feeds::watch::spawn(&config, engine.clone(), fraud_stop.clone());
    let bouncer = crate::bouncer::spawn(&config, engine.clone(), fraud_stop.clone());
    let mut running_sources = (config.source.clone(), config.filter.clone());
    // The socket last: once the CLI can reach us, every source is being followed.
    let listener = bind_socket(&socket)?;
    {
        let status = engine.snapshot().status();
        tracing::info!(backend = status.backend, interfaces = ?status.interfaces.iter().map(|i| format!("{}:{}", i.name, i.mode)).collect::<Vec<_>>(),
            bans = status.bans, socket = %socket.display(), "pbxguard ready");
    }
    let server = tokio::spawn(control::serve(listener, engine.clone()));
    let metrics = match metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding [metrics] listen = \"{addr}\""))?;
            tracing::info!(%addr, "serving Prometheus metrics on /metrics");
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                engine.clone(),
            )))
        }
        None => None,
    };
    // Ready only now: the program is attached, bans are restored, sources followed, the
    // socket answers.
    let notifier = Notifier::from_env();
    notifier.send(&[
        NotifyState::Ready,
        NotifyState::Status(&format!(
            "enforcing with {}",
            engine.snapshot().status.backend
        )),
    ]);
    let watchdog_every = notifier.watchdog_interval();
    // Without a watchdog the tick is hourly and harmless.
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut published = engine.watch();
    let mut save = tokio::time::interval(actor::SWEEP);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&engine, &notifier).await,
            _ = watchdog.tick() => {
                // Only a live engine loop keeps systemd's watchdog fed.
                let beat = engine.snapshot().heartbeat;
                if beat.elapsed() < watchdog_every.unwrap_or(Duration::MAX).saturating_mul(2).max(actor::SWEEP * 10) {
                    notifier.send(&[NotifyState::Watchdog]);
                } else {
                    tracing::error!(since = ?beat.elapsed(), "the engine loop is not answering; withholding the watchdog ping");
                }
            }
            _ = save.tick() => sources.save_positions(),
            changed = published.changed() => {
                if changed.is_err() {
                    bail!("the engine loop stopped unexpectedly");
                }
                // A reload (SIGHUP or `pbxguard reload`) changed the sources: swap them.
                // Positions are saved on stop, so nothing written meanwhile is missed.
                let config = published.borrow_and_update().config.clone();
                let wanted = (config.source.clone(), config.filter.clone());
                if wanted != running_sources {
                    let old = std::mem::replace(&mut sources, Sources::start(&config, events_tx.clone())?);
                    tokio::task::spawn_blocking(move || old.stop()).await?;
                    // The engine shows the new sources' counters from its next snapshot.
                    let stats = sources.stats().to_vec();
                    let _ = engine.ask(|reply| Command::Sources(stats, reply)).await;
                    tracing::info!(sources = config.source.len(), "log sources reloaded");
                    running_sources = wanted;
                }
            }
        }
    }
    tracing::info!(detach, "stopping");
    notifier.send(&[NotifyState::Stopping]);
    server.abort();
    if let Some(cluster) = cluster {
        cluster.abort();
    }
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    tokio::task::spawn_blocking(move || sources.stop()).await?;
    fraud_stop.store(true, Ordering::Release);
    for thread in [fraud, feeds, bouncer].into_iter().flatten() {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    drop(events_tx);
    if let Some((thread, stop)) = program_events {
        stop.store(true, Ordering::Release);
        let _ = thread.join();
    }
    let shutdown = engine
        .ask(|reply| Command::Shutdown { detach, reply })
        .await;
    let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    let _ = std::fs::remove_file(&socket);
    shutdown.map_err(anyhow::Error::msg)
}

/// Starts the configured backend; `auto` falls back from XDP to nftables and says why.
fn start_backend(config: &Config) -> anyhow::Result<(Box<dyn Enforcer>, Option<String>)> {
    let nft = |config: &Config| -> anyhow::Result<Box<dyn Enforcer>> {
        // Stale XDP pins from an earlier run would keep enforcing a ban list nobody updates.
        if crate::enforce::xdp::remove_pins(&config.daemon.bpffs) {
            tracing::info!("removed XDP pins of an earlier run: nftables is the backend now");
        }
        Ok(Box::new(NftEnforcer::start(config)?))
    };
    let xdp = |config: &Config| -> anyhow::Result<Box<dyn Enforcer>> {
        let enforcer = XdpEnforcer::start(config)?;
        if crate::enforce::nft::remove_table().unwrap_or(false) {
            tracing::info!("removed table inet pbxguard of an earlier run: XDP is the backend now");
        }
        Ok(Box::new(enforcer))
    };
    match config.enforce.backend {
        Backend::Xdp => Ok((xdp(config)?, None)),
        Backend::Nft => Ok((
            nft(config)?,
            Some("configured: [enforce] backend = \"nft\"".into()),
        )),
        Backend::Auto => match xdp(config) {
            Ok(enforcer) => Ok((enforcer, None)),
            Err(e) => {
                let reason = format!("XDP could not load or attach: {e:#}");
                tracing::warn!(reason = %reason, "falling back to nftables");
                Ok((nft(config)?, Some(reason)))
            }
        },
    }
}

async fn reload(engine: &EngineHandle, notifier: &Notifier) {
    if let Some(reloading) = crate::notify::reloading() {
        notifier.send(&reloading);
    }
    // The engine logs a rejected config itself.
    let _ = engine.ask(Command::Reload).await;
    notifier.send(&[NotifyState::Ready]);
}

/// Holds an exclusive lock on `state_dir/pbxguard.lock` for the daemon's lifetime.
fn lock_state_dir(dir: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the state directory {}", dir.display()))?;
    let path = dir.join("pbxguard.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        anyhow::anyhow!(
            "another pbxguard daemon is already running on this state directory ({}: {errno}); stop it first",
            path.display()
        )
    })
}

/// Binds the control socket root-only, refusing to steal it from a running daemon.
fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("creating the socket directory {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another pbxguard daemon is already running on {}; stop it first",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let old = umask(Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    umask(old);
    let listener =
        listener.with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}
