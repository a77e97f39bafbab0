//! Log sources: files followed with inotify and systemd journal units, each
//! on its own thread, turning matching lines into [`Event`]s for the engine.
//!
//! inotify wakes a source when its directory changes; a slow safety re-check (every few
//! seconds) covers the rare lost event. Positions are kept in `state_dir/positions.json`
//! so a restarted daemon reads what was written while it was down.

pub mod file;
pub mod journal;
pub mod lines;
pub mod positions;
pub mod program;

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use serde::Serialize;
use tokio::sync::mpsc::Sender;

use self::{
    file::{FileFollower, Start},
    positions::Positions,
};
use crate::{
    config::{Config, SourceConfig},
    detect::{Evidence, Kind, Matcher, Scratch, pattern::PatternError},
};

/// A recognised failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The source address at the rule's anchored position.
    pub ip: IpAddr,
    /// Filter name.
    pub filter: Arc<str>,
    /// Rule name.
    pub rule: Arc<str>,
    /// Index of the `[[source]]` it came from (for per-source thresholds).
    pub source: usize,
    /// When the line was read.
    pub at: SystemTime,
    /// How hard the evidence is to forge.
    pub evidence: Evidence,
    /// Failure or success line.
    pub kind: Kind,
    /// The extension a registration line names (rules with `<EXT>`).
    pub extension: Option<Arc<str>>,
}

/// Lines read and matched by one source, for status and metrics.
#[derive(Debug, Default, Serialize)]
pub struct SourceStats {
    /// The file path or journal unit.
    pub name: String,
    /// Lines read.
    pub lines: AtomicU64,
    /// Lines that matched a rule.
    pub matches: AtomicU64,
    /// Lines dropped for exceeding 64 KiB.
    pub oversized: AtomicU64,
    /// Whether the follower thread is running.
    pub alive: AtomicBool,
    /// Unix seconds of the last read that returned a line (0: never).
    pub last_read: AtomicU64,
}

impl SourceStats {
    /// False once the follower thread has ended, so a source that stopped reading (inotify
    /// failure, engine gone, panic) does not look healthy merely because its counters stand.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// When the follower last read a line, so a quiet or stuck source can be told apart from
    /// a busy one; `None` until the first line.
    pub fn last_read(&self) -> Option<SystemTime> {
        match self.last_read.load(Ordering::Relaxed) {
            0 => None,
            secs => Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)),
        }
    }
}

/// Marks a source alive for as long as its thread body runs: dropping it on any return path
/// (or unwind) clears the flag, so no exit is forgotten.
struct AliveGuard<'a>(&'a SourceStats);

impl<'a> AliveGuard<'a> {
    fn new(stats: &'a SourceStats) -> AliveGuard<'a> {
        stats.alive.store(true, Ordering::Release);
        AliveGuard(stats)
    }
}

impl Drop for AliveGuard<'_> {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Release);
    }
}

/// Why sources could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A filter failed to compile.
    #[error("source {source_name}: {error}")]
    Pattern {
        /// Which source.
        source_name: String,
        /// What failed.
        error: PatternError,
    },
    /// A source names a filter that does not exist (the config check prevents this).
    #[error("source {0}: unknown filter `{1}`")]
    UnknownFilter(String, String),
}

/// How often a source re-checks its files without an inotify event.
const SAFETY_RECHECK: Duration = Duration::from_secs(5);

/// The running sources.
pub struct Sources {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    positions: Arc<Mutex<Positions>>,
    dirty: Arc<AtomicBool>,
    state_dir: PathBuf,
    stats: Vec<Arc<SourceStats>>,
    journals: Vec<Arc<journal::Child>>,
}

/// Shared plumbing handed to every source thread.
#[derive(Clone)]
struct Shared {
    stop: Arc<AtomicBool>,
    positions: Arc<Mutex<Positions>>,
    dirty: Arc<AtomicBool>,
    events: Sender<Event>,
}

impl Shared {
    /// Sleeps up to `duration`, returning early once the sources are stopping.
    fn sleep(&self, duration: Duration) {
        let deadline = std::time::Instant::now() + duration;
        while !self.stop.load(Ordering::Acquire) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    /// Matches a line and forwards a hit; false when the engine is gone.
    fn line(
        &self,
        index: usize,
        matcher: &Matcher,
        stats: &SourceStats,
        scratch: &mut Scratch,
        line: &[u8],
    ) -> bool {
        stats.lines.fetch_add(1, Ordering::Relaxed);
        // One clock read per line (vDSO), reused for the event's timestamp.
        let now = SystemTime::now();
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        stats.last_read.store(secs, Ordering::Relaxed);
        let Some(hit) = matcher.find_with(line, scratch) else {
            return true;
        };
        stats.matches.fetch_add(1, Ordering::Relaxed);
        let event = Event {
            ip: hit.ip,
            filter: hit.filter,
            rule: hit.rule,
            source: index,
            at: now,
            evidence: hit.evidence,
            kind: hit.kind,
            extension: hit.extension,
        };
        self.events.blocking_send(event).is_ok()
    }
}

/// Compiles the matcher for one source from its filter names.
pub fn matcher_for(
    config: &Config,
    source: &SourceConfig,
    name: &str,
) -> Result<Matcher, SourceError> {
    let mut specs = Vec::new();
    for filter in &source.filters {
        specs.push(
            config
                .filter_spec(filter)
                .ok_or_else(|| SourceError::UnknownFilter(name.into(), filter.clone()))?,
        );
    }
    Matcher::new(&specs).map_err(|error| SourceError::Pattern {
        source_name: name.into(),
        error,
    })
}

/// Display name of a source.
pub fn source_name(source: &SourceConfig) -> String {
    match (&source.path, &source.journal_unit) {
        (Some(path), _) => path.display().to_string(),
        (None, Some(unit)) => format!("journal:{unit}"),
        (None, None) => "(none)".into(),
    }
}

impl Sources {
    /// Starts a thread per `[[source]]`.
    pub fn start(config: &Config, events: Sender<Event>) -> Result<Sources, SourceError> {
        let state_dir = config.daemon.state_dir.clone();
        let shared = Shared {
            stop: Arc::new(AtomicBool::new(false)),
            positions: Arc::new(Mutex::new(Positions::load(&state_dir))),
            dirty: Arc::new(AtomicBool::new(false)),
            events,
        };
        let mut threads = Vec::new();
        let mut stats = Vec::new();
        // File sources report once they hold their start positions and watch their
        // directories, so that a daemon that says "ready" misses no line written after.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let mut files = 0;
        let mut journals = Vec::new();
        for (index, source) in config.source.iter().enumerate() {
            let name = source_name(source);
            let matcher = matcher_for(config, source, &name)?;
            let stat = Arc::new(SourceStats {
                name: name.clone(),
                ..SourceStats::default()
            });
            stats.push(stat.clone());
            let shared = shared.clone();
            let thread = if let Some(path) = source.path.clone() {
                files += 1;
                let start = if source.read_backlog {
                    Start::Beginning
                } else {
                    Start::End
                };
                let ready = ready_tx.clone();
                std::thread::Builder::new()
                    .name(format!("source-{index}"))
                    .spawn(move || {
                        follow_files(index, &path, start, &matcher, &stat, &shared, ready)
                    })
                    .expect("spawn source thread")
            } else {
                let child = Arc::new(journal::Child::default());
                journals.push(child.clone());
                let spec = journal::Spec {
                    unit: source.journal_unit.clone().unwrap_or_default(),
                    directory: source.journal_directory.clone(),
                    read_backlog: source.read_backlog,
                };
                std::thread::Builder::new()
                    .name(format!("source-{index}"))
                    .spawn(move || journal::follow(index, &spec, &matcher, &stat, &shared, &child))
                    .expect("spawn source thread")
            };
            tracing::info!(source = %name, filters = ?source.filters, "following");
            threads.push(thread);
        }
        for _ in 0..files {
            if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
                tracing::warn!("a log source is slow to start; continuing");
                break;
            }
        }
        Ok(Sources {
            stop: shared.stop,
            threads,
            positions: shared.positions,
            dirty: shared.dirty,
            state_dir,
            stats,
            journals,
        })
    }

    /// Per-source counters.
    pub fn stats(&self) -> &[Arc<SourceStats>] {
        &self.stats
    }

    /// Writes positions if they changed since the last save.
    pub fn save_positions(&self) {
        if self.dirty.swap(false, Ordering::AcqRel) {
            let positions = self
                .positions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Err(e) = positions.save(&self.state_dir) {
                tracing::error!(error = %e, "saving log positions failed");
                self.dirty.store(true, Ordering::Release);
            }
        }
    }

    /// Stops every source and saves positions.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        for child in &self.journals {
            child.kill();
        }
        for thread in std::mem::take(&mut self.threads) {
            let _ = thread.join();
        }
        self.save_positions();
    }
}

/// Splits a configured path into its directory and a file-name pattern (glob allowed in the
/// last component).
fn split_path(path: &Path) -> (PathBuf, Option<glob::Pattern>, PathBuf) {
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pattern = name
        .contains(['*', '?', '['])
        .then(|| glob::Pattern::new(&name).ok())
        .flatten();
    (dir, pattern, path.to_path_buf())
}

/// After a wake-up has been handled, how long the follower lets a writer's next lines gather
/// before it looks again: a steady writer then costs one wake-up and one read per pause
/// instead of per line, and a line written while the log was quiet is still read at once (it
/// waits at most this long only if it arrives right after another).
const COALESCE: Duration = Duration::from_micros(200);

/// The pause after a read that found several lines: the log is busy, and a longer pause
/// gathers more lines per wake-up (still well under a millisecond).
const COALESCE_BUSY: Duration = Duration::from_micros(500);

/// What a watched directory reports: content changes (`IN_MODIFY`) and everything that can
/// replace, remove or create a followed file, or the directory itself.
const WATCH_MASK: u32 = libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

/// Size of an `inotify_event` header (wd, mask, cookie, len).
const EVENT_HEADER: usize = 16;

/// The follower's own inotify instance, read on the follower's thread: no helper thread
/// woken per event and no channel hop, and a file's repeated `IN_MODIFY` events queued while
/// the follower is busy or coalescing are merged by the kernel into one.
struct Inotify {
    fd: std::os::fd::OwnedFd,
    buf: Vec<u8>,
}

impl Inotify {
    fn new() -> std::io::Result<Inotify> {
        use std::os::fd::FromRawFd as _;
        // SAFETY: plain syscall; the returned descriptor is owned below.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Inotify {
            // SAFETY: `fd` is a fresh descriptor nothing else owns.
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
            // Room for many events with names (NAME_MAX 255) per read.
            buf: vec![0; 16 * 1024],
        })
    }

    /// Watches directory `dir` (again: re-adding an existing watch is harmless).
    fn watch(&self, dir: &Path) -> std::io::Result<()> {
        use std::os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _};
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
        // SAFETY: valid descriptor and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), path.as_ptr(), WATCH_MASK) };
        if wd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` for events and consumes every queued one. `None`: nothing came;
    /// `Some(false)`: only file contents changed; `Some(true)`: something else changed (a
    /// file created, moved, deleted, a watch gone, the queue overflowed), so the files are
    /// looked for again. Events already queued (a busy log after the coalescing pause) are
    /// read without a `poll`.
    fn wait(&mut self, timeout: Duration) -> std::io::Result<Option<bool>> {
        use std::os::fd::AsRawFd as _;
        if let Some(structural) = self.read_events()? {
            return Ok(Some(structural));
        }
        let mut pollfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pollfd, 1, ms) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::Interrupted {
                Ok(None)
            } else {
                Err(e)
            };
        }
        if ready == 0 {
            return Ok(None);
        }
        self.read_events()
    }

    /// Consumes every queued event without waiting (see [`Inotify::wait`]).
    fn read_events(&mut self) -> std::io::Result<Option<bool>> {
        use std::os::fd::AsRawFd as _;
        let fd = self.fd.as_raw_fd();
        let mut structural = false;
        let mut any = false;
        loop {
            // SAFETY: reads into our own buffer of the given length.
            let n = unsafe { libc::read(fd, self.buf.as_mut_ptr().cast(), self.buf.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::Interrupted => continue,
                    std::io::ErrorKind::WouldBlock => break,
                    _ => return Err(e),
                }
            }
            let n = n as usize;
            if n == 0 {
                break;
            }
            any = true;
            let mut at = 0;
            while at + EVENT_HEADER <= n {
                let field = |i: usize| {
                    u32::from_ne_bytes(self.buf[at + i..at + i + 4].try_into().expect("4 bytes"))
                };
                if field(4) & !libc::IN_MODIFY != 0 {
                    structural = true;
                }
                at += EVENT_HEADER + field(12) as usize;
            }
            // A read that left room for another named event emptied the queue.
            if n + EVENT_HEADER + 256 <= self.buf.len() {
                break;
            }
        }
        Ok(any.then_some(structural))
    }
}

/// The thread body of a file source.
fn follow_files(
    index: usize,
    path: &Path,
    start: Start,
    matcher: &Matcher,
    stats: &SourceStats,
    shared: &Shared,
    ready: std::sync::mpsc::Sender<()>,
) {
    let _alive = AliveGuard::new(stats);
    let mut ready = Some(ready);
    let (dir, pattern, exact) = split_path(path);
    let mut inotify = match Inotify::new() {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(source = %path.display(), error = %e, "cannot create an inotify watcher; this source is not followed");
            return;
        }
    };
    let mut followers: BTreeMap<PathBuf, FileFollower> = BTreeMap::new();
    let mut scratch = Scratch::default();
    let mut first_scan = true;
    let mut alive = true;
    // Look for files (and watch their directories) at start, after anything but a content
    // change, and at every safety re-check; a content change only reads.
    let mut rescan = true;
    let mut woke = false;
    let mut recheck_due = std::time::Instant::now() + SAFETY_RECHECK;
    // Forwards lines until the engine is gone.
    macro_rules! emit {
        () => {
            &mut |line: &[u8]| {
                if alive && !shared.line(index, matcher, stats, &mut scratch, line) {
                    alive = false;
                }
            }
        };
    }
    while !shared.stop.load(Ordering::Acquire) {
        let lines_before = stats.lines.load(Ordering::Relaxed);
        if rescan {
            // (Re)discover files: the exact path, or every name matching the glob.
            let candidates: Vec<PathBuf> = match &pattern {
                None => vec![exact.clone()],
                Some(p) => std::fs::read_dir(&dir)
                    .map(|entries| {
                        entries
                            .flatten()
                            .map(|e| e.path())
                            .filter(|f| {
                                f.file_name()
                                    .is_some_and(|n| p.matches(&n.to_string_lossy()))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            for file in candidates {
                if followers.contains_key(&file) {
                    continue;
                }
                let saved = shared
                    .positions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .files
                    .get(&file)
                    .copied();
                // Files that appear after start are new: read them whole.
                let start = if first_scan { start } else { Start::Beginning };
                let follower = FileFollower::new(&file, saved, start, emit!());
                followers.insert(file, follower);
            }
            first_scan = false;
            // Watch the directory, and the real directory behind a symlinked file (again
            // each time: a directory removed and made anew needs a new watch).
            let mut dirs: HashSet<PathBuf> = HashSet::from([dir.clone()]);
            dirs.extend(followers.keys().filter_map(|f| {
                std::fs::canonicalize(f)
                    .ok()?
                    .parent()
                    .map(Path::to_path_buf)
            }));
            for d in dirs {
                let _ = inotify.watch(&d);
            }
        }
        for follower in followers.values_mut() {
            // After a content-only wake-up, new lines are all there is unless nothing came
            // (then the file may have been truncated: look at the path too).
            let read = if woke && !rescan {
                follower.read_appended(emit!())
            } else {
                Ok(0)
            };
            if let Err(e) = read.and_then(|n| match n {
                0 => follower.poll(emit!()),
                n => Ok(n),
            }) {
                tracing::warn!(file = %follower.path().display(), error = %e, "reading log failed");
            }
            if let Some(pos) = follower.position() {
                let mut positions = shared.positions.lock().unwrap_or_else(|p| p.into_inner());
                if positions.files.get(follower.path()) != Some(&pos) {
                    positions.files.insert(follower.path().to_path_buf(), pos);
                    shared.dirty.store(true, Ordering::Release);
                }
            }
        }
        let oversized = followers.values().map(FileFollower::oversized).sum();
        stats.oversized.store(oversized, Ordering::Relaxed);
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        if !alive {
            return;
        }
        if woke {
            // A busy log (more than one line in this read) waits longer for its next lines.
            let read = stats.lines.load(Ordering::Relaxed);
            let pause = if read - lines_before > 1 {
                COALESCE_BUSY
            } else {
                COALESCE
            };
            std::thread::sleep(pause);
        }
        // Sleep until inotify reports a change (or the safety re-check is due).
        woke = false;
        rescan = false;
        while !shared.stop.load(Ordering::Acquire) {
            let now = std::time::Instant::now();
            if now >= recheck_due {
                rescan = true;
                recheck_due = now + SAFETY_RECHECK;
                break;
            }
            match inotify.wait((recheck_due - now).min(Duration::from_secs(1))) {
                Ok(None) => {}
                Ok(Some(structural)) => {
                    woke = true;
                    rescan = structural;
                    break;
                }
                Err(e) => {
                    tracing::error!(source = %path.display(), error = %e, "reading inotify events failed; this source is not followed");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// Polls `check` for up to 10 s.
    fn eventually(mut check: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if check() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        check()
    }

    #[test]
    fn inotify_tells_content_changes_from_other_changes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("full");
        std::fs::write(&log, "").unwrap();
        let mut inotify = Inotify::new().unwrap();
        inotify.watch(dir.path()).unwrap();
        assert_eq!(inotify.wait(Duration::ZERO).unwrap(), None);
        // Many appends while nobody reads: one wake-up, a content change.
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        for _ in 0..1000 {
            f.write_all(b"a line\n").unwrap();
        }
        assert_eq!(inotify.wait(Duration::from_secs(5)).unwrap(), Some(false));
        assert_eq!(inotify.wait(Duration::ZERO).unwrap(), None);
        std::fs::rename(&log, dir.path().join("full.1")).unwrap();
        assert_eq!(inotify.wait(Duration::from_secs(5)).unwrap(), Some(true));
        std::fs::write(&log, "").unwrap();
        assert_eq!(inotify.wait(Duration::from_secs(5)).unwrap(), Some(true));
    }

    #[test]
    fn file_source_reports_alive_and_last_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("full");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::write(&log, "").unwrap();
        let text = format!(
            "[enforce]\ninterfaces = [\"eth0\"]\n\n[daemon]\nstate_dir = {state:?}\n\n\
             [[source]]\npath = {log:?}\nfilters = [\"asterisk\"]\n"
        );
        let config = Config::parse(&text, Path::new("/etc/pbxguard/test.toml")).unwrap();
        let (tx, _rx) = tokio::sync::mpsc::channel(16);
        let sources = Sources::start(&config, tx).unwrap();
        let stats = sources.stats()[0].clone();
        assert!(stats.is_alive());
        assert_eq!(stats.last_read(), None);

        let before = SystemTime::now() - Duration::from_secs(1);
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"an unremarkable line\n").unwrap();
        drop(f);
        assert!(eventually(|| stats.lines.load(Ordering::Relaxed) == 1));
        let read = stats.last_read().expect("a line was read");
        assert!(read >= before, "{read:?} < {before:?}");
        assert!(stats.is_alive());

        sources.stop();
        assert!(!stats.is_alive());
    }

    #[test]
    fn a_fifo_matching_a_glob_is_skipped_and_stop_returns() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        // Before, the follower blocked opening the FIFO and never read b.log, whatever the
        // order the directory was listed in.
        nix::unistd::mkfifo(
            &dir.path().join("a.log"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let log = dir.path().join("b.log");
        std::fs::write(&log, "").unwrap();
        let glob = dir.path().join("*.log");
        let text = format!(
            "[enforce]\ninterfaces = [\"eth0\"]\n\n[daemon]\nstate_dir = {state:?}\n\n\
             [[source]]\npath = {glob:?}\nfilters = [\"asterisk\"]\n"
        );
        let config = Config::parse(&text, Path::new("/etc/pbxguard/test.toml")).unwrap();
        let (tx, _rx) = tokio::sync::mpsc::channel(16);
        let (done_tx, done) = std::sync::mpsc::channel();
        let (stats_tx, stats_rx) = std::sync::mpsc::channel();
        // Start, read past the FIFO, stop: on a thread, so a follower blocked on the FIFO
        // fails the test instead of hanging it.
        std::thread::spawn(move || {
            let sources = Sources::start(&config, tx).unwrap();
            let stats = sources.stats()[0].clone();
            stats_tx.send(stats.clone()).unwrap();
            std::fs::OpenOptions::new()
                .append(true)
                .open(&log)
                .unwrap()
                .write_all(b"a line beside the FIFO\n")
                .unwrap();
            let read = eventually(|| stats.lines.load(Ordering::Relaxed) == 1);
            sources.stop();
            done_tx.send(read).unwrap();
        });
        let stats = stats_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("Sources::start returned");
        let read = done
            .recv_timeout(Duration::from_secs(60))
            .expect("Sources::stop returned");
        assert!(read, "the regular file beside the FIFO is followed");
        assert!(!stats.is_alive());
    }
}
