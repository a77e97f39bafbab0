//! `pbxguard run`: wires config, store, enforcer, engine and control socket together and
//! runs until SIGTERM/SIGINT. SIGHUP re-reads the config (a bad one is rejected and the
//! running config stays).

use std::{
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
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
    engine::Engine,
    notify::Notifier,
    source::{Event, Sources},
    store::Store,
};

/// How often ended bans are swept from the store (the XDP program already ignores them).
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);

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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(options))
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
    let config_path = options.config.clone();
    let engine = Arc::new(Mutex::new(Engine::start(config, store, enforcer)?));
    engine
        .lock()
        .expect("not poisoned yet")
        .set_backend_note(note);
    engine
        .lock()
        .expect("not poisoned yet")
        .set_config_path(config_path);
    let alerts = crate::alert::start(&engine.lock().expect("not poisoned yet").config().notify);
    {
        let mut engine = engine.lock().expect("not poisoned yet");
        engine.set_alerts(alerts.as_ref().map(|(a, _)| a.clone()));
        let note = engine.status().backend_note;
        if let Some(note) = note.filter(|n| n.starts_with("XDP could not")) {
            engine.alert(crate::alert::Notice::new(
                "fallback",
                None,
                Some(note),
                None,
                None,
            ));
        }
    }
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(10_000);
    let mut sources = Sources::start(
        &engine.lock().expect("not poisoned yet").config().clone(),
        events_tx.clone(),
    )?;
    engine
        .lock()
        .expect("not poisoned yet")
        .attach_sources(sources.stats().to_vec());
    let program_events = {
        let mut engine = engine.lock().expect("not poisoned yet");
        let signatures = engine.config().scanners.user_agents.clone();
        engine.take_events().map(|ring| {
            let stop = Arc::new(AtomicBool::new(false));
            (
                crate::source::program::spawn(ring, signatures, events_tx.clone(), stop.clone()),
                stop,
            )
        })
    };
    let detector = spawn_detector(engine.clone(), events_rx);
    let mut running_sources = {
        let engine = engine.lock().expect("not poisoned yet");
        (
            engine.config().source.clone(),
            engine.config().filter.clone(),
        )
    };
    // The socket last: once the CLI can reach us, every source is being followed.
    let listener = bind_socket(&socket)?;
    {
        let status = engine.lock().expect("not poisoned yet").status();
        tracing::info!(backend = status.backend, interfaces = ?status.interfaces.iter().map(|i| format!("{}:{}", i.name, i.mode)).collect::<Vec<_>>(),
            bans = status.bans, socket = %socket.display(), "pbxguard ready");
    }
    let server = tokio::spawn(control::serve(listener, engine.clone()));
    let metrics_listen = engine
        .lock()
        .expect("not poisoned yet")
        .config()
        .metrics
        .listen;
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
    notifier.send(&format!(
        "READY=1\nSTATUS=enforcing with {}",
        engine.lock().expect("not poisoned yet").status().backend
    ));
    // Without a watchdog the tick is hourly and harmless.
    let mut watchdog = tokio::time::interval(
        notifier
            .watchdog_interval()
            .unwrap_or(Duration::from_secs(3600)),
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut sweep = tokio::time::interval(EXPIRY_SWEEP);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&engine, &notifier),
            _ = watchdog.tick() => notifier.send("WATCHDOG=1"),
            _ = sweep.tick() => {
                let shared = engine.clone();
                let (swept, refreshed) = tokio::task::spawn_blocking(move || {
                    let mut engine = shared.lock().unwrap_or_else(|p| p.into_inner());
                    (engine.expire(SystemTime::now()), engine.refresh_geo())
                }).await?;
                if let Err(e) = swept {
                    tracing::error!(error = %e, "sweeping expired bans failed");
                }
                if let Err(e) = refreshed {
                    tracing::error!(error = %e, "reloading geo rules failed");
                }
                sources.save_positions();
                // A reload (SIGHUP or `pbxguard reload`) changed the sources: swap them.
                // Positions are saved on stop, so nothing written meanwhile is missed.
                let wanted = {
                    let engine = engine.lock().unwrap_or_else(|p| p.into_inner());
                    (engine.config().source.clone(), engine.config().filter.clone())
                };
                if wanted != running_sources {
                    let config = engine.lock().unwrap_or_else(|p| p.into_inner()).config().clone();
                    let old = std::mem::replace(&mut sources, Sources::start(&config, events_tx.clone())?);
                    tokio::task::spawn_blocking(move || old.stop()).await?;
                    engine.lock().unwrap_or_else(|p| p.into_inner()).attach_sources(sources.stats().to_vec());
                    tracing::info!(sources = config.source.len(), "log sources reloaded");
                    running_sources = wanted;
                }
            }
        }
    }
    tracing::info!(detach, "stopping");
    notifier.send("STOPPING=1");
    server.abort();
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    tokio::task::spawn_blocking(move || sources.stop()).await?;
    drop(events_tx);
    if let Some((thread, stop)) = program_events {
        stop.store(true, Ordering::Release);
        let _ = thread.join();
    }
    let _ = detector.join();
    let _ = std::fs::remove_file(&socket);
    // Connection tasks may still hold the engine; lock it rather than wait for them.
    engine
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .shutdown(detach)?;
    Ok(())
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

/// Hands detected failures to the engine, on its own thread (bans fsync the journal).
fn spawn_detector(
    engine: Arc<Mutex<Engine>>,
    mut events: tokio::sync::mpsc::Receiver<Event>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("detector".into())
        .spawn(move || {
            while let Some(first) = events.blocking_recv() {
                // Take whatever else is already queued: a burst becomes one batch.
                let mut batch = vec![first];
                while batch.len() < 4096 {
                    match events.try_recv() {
                        Ok(event) => batch.push(event),
                        Err(_) => break,
                    }
                }
                let outcome = engine.lock().unwrap_or_else(|p| p.into_inner()).on_failures(&batch, SystemTime::now());
                if let Err(e) = outcome {
                    tracing::error!(events = batch.len(), error = %e, "acting on detected failures failed");
                }
            }
        })
        .expect("spawn detector thread")
}

fn reload(engine: &Mutex<Engine>, notifier: &Notifier) {
    notifier.send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}",
        crate::notify::monotonic_usec()
    ));
    if let Err(e) = engine
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .reload_file()
    {
        tracing::error!("{e}");
    }
    notifier.send("READY=1");
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
