//! The XDP program's rare-path diagnostics (`pbxguard-ebpf/src/diag.rs`): `aya-log` records
//! in the program's `AYA_LOGS` ring buffer, read on their own thread (`xdp-log`) into the
//! `log` crate, whose records the daemon's tracing subscriber takes in (tracing-subscriber's
//! `tracing-log` feature installs the `LogTracer` in `main.rs`), filtered like any line.
//!
//! The program only writes what the daemon would record: [`level`] asks the tracing filter
//! in force at load which levels it keeps for [`TARGET`], and the loader bakes that into the
//! program's read-only `AYA_LOG_LEVEL`, so a disabled note is dead code to the verifier.

use std::{io::PipeWriter, os::fd::AsFd as _, thread::JoinHandle};

use aya::Ebpf;
use aya_log::EbpfLogger;
use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
};

/// The target of the program's records (the same string as `pbxguard-ebpf`'s
/// `diag::TARGET`): `PBXGUARD_LOG=info,pbxguard::xdp=debug` shows them.
pub const TARGET: &str = "pbxguard::xdp";

/// The most detailed level the current tracing filter records for [`TARGET`], as the
/// `AYA_LOG_LEVEL` value the program compares its records against (0: none).
pub(super) fn level() -> u8 {
    use tracing::{Level, enabled};
    let level = if enabled!(target: TARGET, Level::TRACE) {
        aya_log::Level::Trace
    } else if enabled!(target: TARGET, Level::DEBUG) {
        aya_log::Level::Debug
    } else if enabled!(target: TARGET, Level::INFO) {
        aya_log::Level::Info
    } else if enabled!(target: TARGET, Level::WARN) {
        aya_log::Level::Warn
    } else if enabled!(target: TARGET, Level::ERROR) {
        aya_log::Level::Error
    } else {
        return 0;
    };
    level.into()
}

/// The `xdp-log` thread: waits on the program's log ring and hands each record to `log`.
/// Dropping it wakes the thread, which reads what is left and ends.
pub(super) struct LogReader {
    wake: Option<PipeWriter>,
    thread: Option<JoinHandle<()>>,
}

impl LogReader {
    /// Starts reading the loaded program's `AYA_LOGS` ring. Never fails the load: without
    /// the map (an object built without aya-log) or a thread, the notes are just not
    /// logged, and a warning says so.
    pub(super) fn start(ebpf: &mut Ebpf) -> Option<LogReader> {
        match Self::try_start(ebpf) {
            Ok(reader) => Some(reader),
            Err(why) => {
                tracing::warn!(
                    reason = %why,
                    "the XDP program's diagnostics ({TARGET}) will not be logged; enforcement is unaffected"
                );
                None
            }
        }
    }

    fn try_start(ebpf: &mut Ebpf) -> Result<LogReader, String> {
        let mut logger = EbpfLogger::init(ebpf).map_err(|e| e.to_string())?;
        let (stop, wake) =
            std::io::pipe().map_err(|e| format!("cannot make its wake-up pipe: {e}"))?;
        let thread = std::thread::Builder::new()
            .name("xdp-log".into())
            .spawn(move || {
                loop {
                    // The ring's fd is readable while it holds a record, the pipe once its
                    // writer is dropped.
                    let mut fds = [
                        PollFd::new(logger.as_fd(), PollFlags::POLLIN),
                        PollFd::new(stop.as_fd(), PollFlags::POLLIN),
                    ];
                    let stopping = match poll(&mut fds, PollTimeout::NONE) {
                        Ok(_) => fds[1].any().unwrap_or(true),
                        Err(Errno::EINTR) => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "xdp-log: cannot wait for the XDP program's diagnostics; no more are logged");
                            true
                        }
                    };
                    logger.flush();
                    if stopping {
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start its thread: {e}"))?;
        Ok(LogReader {
            wake: Some(wake),
            thread: Some(thread),
        })
    }
}

impl Drop for LogReader {
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
