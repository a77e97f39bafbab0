//! Follows a systemd journal unit (Debian 12's sshd logs only there) through
//! `journalctl --follow --output=json`, resuming after the last cursor it handled.
//!
//! Messages get the cap of file lines: up to [`MAX_LINE`] they are matched (journalctl's
//! `--all`, or it would turn every MESSAGE over 4 KiB into `null`, an easy way to hide a
//! failure behind a long user name), longer ones are dropped and counted as oversized.

use std::{
    io::Read as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Mutex, atomic::Ordering},
    time::Duration,
};

use serde_json::Value;

use super::{
    AliveGuard, Shared, SourceStats,
    lines::{LineSplitter, MAX_LINE},
};
use crate::detect::{Matcher, Scratch};

/// Longest JSON line read: a [`MAX_LINE`] message escaped (`\u00XX` is 6 bytes for 1) plus
/// the cursor and timestamps. A longer line holds a longer message.
const MAX_JSON: usize = 6 * MAX_LINE + 4096;

/// What to follow.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The unit (`ssh.service`).
    pub unit: String,
    /// A journal directory instead of the system journal.
    pub directory: Option<PathBuf>,
    /// On first start, read the unit's whole journal instead of only new entries.
    pub read_backlog: bool,
}

impl Spec {
    /// Key of this journal's cursor in the positions file.
    pub fn key(&self) -> String {
        match &self.directory {
            Some(dir) => format!("{}@{}", self.unit, dir.display()),
            None => self.unit.clone(),
        }
    }

    /// The journalctl command line resuming after `cursor`.
    pub fn command(&self, cursor: Option<&str>) -> Command {
        let mut cmd = Command::new("journalctl");
        cmd.args([
            "--follow",
            "--output=json",
            // Only MESSAGE (plus the cursor and timestamps), in full.
            "--output-fields=MESSAGE",
            "--all",
            "--no-pager",
            "--quiet",
            "--unit",
        ])
        .arg(&self.unit);
        if let Some(dir) = &self.directory {
            cmd.arg("--directory").arg(dir);
        }
        match cursor {
            Some(cursor) => {
                cmd.arg("--after-cursor").arg(cursor);
            }
            None if self.read_backlog => {
                cmd.arg("--no-tail");
            }
            None => {
                cmd.arg("--lines=0");
            }
        }
        cmd
    }
}

/// The running journalctl, so the daemon can stop it.
#[derive(Debug, Default)]
pub struct Child {
    pid: Mutex<Option<u32>>,
}

impl Child {
    /// Terminates the running journalctl, if any.
    pub fn kill(&self) {
        if let Some(pid) = *self.pid.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// The text of a journal entry's MESSAGE (a string, or an array of bytes when not UTF-8).
pub fn message(entry: &Value) -> Option<Vec<u8>> {
    match entry.get("MESSAGE")? {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Array(bytes) => bytes
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect(),
        _ => None,
    }
}

/// The thread body of a journal source: runs journalctl, restarting it if it exits.
pub(super) fn follow(
    index: usize,
    spec: &Spec,
    matcher: &Matcher,
    stats: &SourceStats,
    shared: &Shared,
    child: &Child,
) {
    let _alive = AliveGuard::new(stats);
    let key = spec.key();
    let mut scratch = Scratch::default();
    let mut buf = vec![0u8; 64 * 1024];
    while !shared.stop.load(Ordering::Acquire) {
        let cursor = shared
            .positions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .journals
            .get(&key)
            .cloned();
        let mut cmd = spec.command(cursor.as_deref());
        let mut process = match cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(unit = %spec.unit, error = %e, "cannot run journalctl; is systemd installed?");
                shared.sleep(Duration::from_secs(5));
                continue;
            }
        };
        *child.pid.lock().unwrap_or_else(|p| p.into_inner()) = Some(process.id());
        // A stop that came before the pid was stored found nothing to kill: kill it here,
        // or the read below would wait for the next journal entry forever.
        if shared.stop.load(Ordering::Acquire) {
            let _ = process.kill();
        }
        let mut stdout = process.stdout.take().expect("piped");
        let mut splitter = LineSplitter::with_max(MAX_JSON);
        let mut engine_gone = false;
        // False when the engine is gone.
        let mut entry = |line: &[u8]| -> bool {
            let Ok(entry) = serde_json::from_slice::<Value>(line) else {
                return true;
            };
            match message(&entry) {
                Some(text) if text.len() > MAX_LINE => {
                    stats.oversized.fetch_add(1, Ordering::Relaxed);
                }
                Some(text) if !shared.line(index, matcher, stats, &mut scratch, &text) => {
                    return false;
                }
                _ => {}
            }
            if let Some(cursor) = entry.get("__CURSOR").and_then(Value::as_str) {
                shared
                    .positions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .journals
                    .insert(key.clone(), cursor.to_string());
                shared.dirty.store(true, Ordering::Release);
            }
            true
        };
        loop {
            let n = match stdout.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let before = splitter.oversized();
            splitter.feed(&buf[..n], &mut |line| {
                engine_gone = engine_gone || !entry(line);
            });
            stats
                .oversized
                .fetch_add(splitter.oversized() - before, Ordering::Relaxed);
            if engine_gone {
                break;
            }
        }
        // Forget the pid before reaping, so a stop never signals a recycled one.
        *child.pid.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let _ = process.kill();
        let _ = process.wait();
        if engine_gone {
            return;
        }
        if !shared.stop.load(Ordering::Acquire) {
            tracing::warn!(unit = %spec.unit, "journalctl exited; restarting in 2s");
            shared.sleep(Duration::from_secs(2));
        }
    }
}
