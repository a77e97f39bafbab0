//! Follows one log file across every rotation seen in real use.
//!
//! The follower keeps the file open and remembers (device, inode, offset). On each poll it
//! first drains the open file (so lines written just before a rename are not lost), then
//! looks at the path again: a different inode means the file was rotated (rename + create,
//! or delete + recreate) and the new file is read from its start; a size below the offset
//! means it was truncated in place (copytruncate) and is read again from its start.

use std::{
    fs::File,
    io::{self, Read as _, Seek as _, SeekFrom},
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use super::{lines::LineSplitter, positions::FilePosition};

const CHUNK: usize = 64 * 1024;

/// Where to start in a file seen for the first time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// At its end: only new lines count.
    End,
    /// At its beginning: its backlog counts too.
    Beginning,
}

/// A followed file.
pub struct FileFollower {
    path: PathBuf,
    open: Option<(File, FilePosition)>,
    splitter: LineSplitter,
    buf: Vec<u8>,
    /// The non-regular file last warned about at this path, so the warning is given once.
    skipped: Option<(u64, u64)>,
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// What a path is, for the warning about a file that is not followed.
fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading only if it is a regular file. Opening never blocks (a FIFO
/// would wait for a writer) and the check is made on the opened file, so a path swapped
/// meanwhile is not followed either. `Err(meta)` is what the path is instead.
fn open_regular(path: &Path) -> io::Result<Result<File, std::fs::Metadata>> {
    // Look first, so a device is not even opened (opening some has side effects).
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Ok(Err(meta));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    Ok(if meta.is_file() { Ok(file) } else { Err(meta) })
}

impl FileFollower {
    /// Starts following `path`. With a saved position for the same file the follower
    /// resumes there; if the file was rotated meanwhile, the rotated file is found by its
    /// inode in the same directory and its unread tail is read first (through `on_line`).
    pub fn new(
        path: &Path,
        saved: Option<FilePosition>,
        start: Start,
        on_line: &mut dyn FnMut(&[u8]),
    ) -> FileFollower {
        let mut follower = FileFollower {
            path: path.to_path_buf(),
            open: None,
            splitter: LineSplitter::default(),
            buf: vec![0; CHUNK],
            skipped: None,
        };
        let current = std::fs::metadata(path).ok();
        match (saved, current) {
            (Some(pos), Some(meta)) if identity(&meta) == (pos.dev, pos.inode) => {
                let offset = if meta.len() < pos.offset {
                    0
                } else {
                    pos.offset
                };
                follower.open_at(offset);
            }
            (Some(pos), current) => {
                if let Some(rotated) = find_by_inode(path, pos) {
                    tracing::info!(file = %rotated.display(), "reading the rest of a log rotated while pbxguard was down");
                    follower.drain_other(&rotated, pos.offset, on_line);
                }
                // The current file appeared after our last read: all of it is new.
                if current.is_some() {
                    follower.open_at(0);
                }
            }
            (None, Some(meta)) => {
                follower.open_at(if start == Start::End { meta.len() } else { 0 })
            }
            (None, None) => {}
        }
        follower
    }

    /// The file's path as configured.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current position, to be saved.
    pub fn position(&self) -> Option<FilePosition> {
        self.open.as_ref().map(|(_, pos)| *pos)
    }

    /// Lines dropped for being too long so far.
    pub fn oversized(&self) -> u64 {
        self.splitter.oversized()
    }

    fn open_at(&mut self, offset: u64) {
        let mut file = match open_regular(&self.path) {
            Ok(Ok(file)) => file,
            Ok(Err(meta)) => {
                // Not followed; a regular file at this path later is.
                self.open = None;
                if self.skipped != Some(identity(&meta)) {
                    self.skipped = Some(identity(&meta));
                    tracing::warn!(
                        file = %self.path.display(),
                        "not following this path: it is {}; a source reads regular log files only",
                        kind(&meta)
                    );
                }
                return;
            }
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot open log");
                return;
            }
        };
        let position = file.metadata().and_then(|meta| {
            file.seek(SeekFrom::Start(offset))?;
            Ok(FilePosition {
                dev: meta.dev(),
                inode: meta.ino(),
                offset,
            })
        });
        match position {
            Ok(pos) => {
                self.open = Some((file, pos));
                self.splitter.reset();
                self.skipped = None;
            }
            Err(e) => tracing::warn!(file = %self.path.display(), error = %e, "cannot open log"),
        }
    }

    /// Reads `path` from `offset` to its end, without adopting it.
    fn drain_other(&mut self, path: &Path, offset: u64, on_line: &mut dyn FnMut(&[u8])) {
        if let Ok(Ok(mut file)) = open_regular(path)
            && file.seek(SeekFrom::Start(offset)).is_ok()
        {
            let mut splitter = LineSplitter::default();
            let mut ignored = 0;
            let _ = read_to_end(
                &mut file,
                &mut self.buf,
                &mut splitter,
                &mut ignored,
                on_line,
            );
        }
    }

    /// Reads what was appended to the open file, without looking at the path: the cheap
    /// read after an inotify event that only reported new content. Returns bytes read; 0
    /// says nothing was appended, and [`FileFollower::poll`] should look for a rotation or
    /// truncation.
    pub fn read_appended(&mut self, on_line: &mut dyn FnMut(&[u8])) -> io::Result<u64> {
        match self.open.as_mut() {
            Some((file, pos)) => read_to_end(
                file,
                &mut self.buf,
                &mut self.splitter,
                &mut pos.offset,
                on_line,
            ),
            None => Ok(0),
        }
    }

    /// Reads everything new, following rotation and truncation. Returns bytes read.
    pub fn poll(&mut self, on_line: &mut dyn FnMut(&[u8])) -> io::Result<u64> {
        let mut total = 0;
        // 1. Drain what we have open, even if it was renamed away meanwhile.
        if let Some((file, pos)) = self.open.as_mut() {
            total += read_to_end(
                file,
                &mut self.buf,
                &mut self.splitter,
                &mut pos.offset,
                on_line,
            )?;
        }
        // 2. Has the path been replaced or truncated?
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(total),
            Err(e) => return Err(e),
        };
        let replaced = self
            .open
            .as_ref()
            .is_none_or(|(_, pos)| identity(&meta) != (pos.dev, pos.inode));
        if replaced {
            if self.open.is_some() {
                tracing::info!(file = %self.path.display(), "log rotated; following the new file from its start");
            }
            self.open_at(0);
        } else if let Some((file, pos)) = self.open.as_mut()
            && meta.len() < pos.offset
        {
            tracing::info!(file = %self.path.display(), "log truncated; reading it again from its start");
            file.seek(SeekFrom::Start(0))?;
            pos.offset = 0;
            self.splitter.reset();
        } else {
            return Ok(total);
        }
        if let Some((file, pos)) = self.open.as_mut() {
            total += read_to_end(
                file,
                &mut self.buf,
                &mut self.splitter,
                &mut pos.offset,
                on_line,
            )?;
        }
        Ok(total)
    }
}

/// Reads to EOF, feeding lines; `offset` advances over complete lines only.
///
/// A read that does not fill the buffer has reached the end of a regular file, so a busy
/// log costs one `read` per wake-up, not a second one to see 0; what is appended after it
/// raises a new inotify event. The position is counted, not asked for with `lseek`.
fn read_to_end(
    file: &mut File,
    buf: &mut [u8],
    splitter: &mut LineSplitter,
    offset: &mut u64,
    on_line: &mut dyn FnMut(&[u8]),
) -> io::Result<u64> {
    let mut total = 0;
    // Where the file position is: the last complete line plus the partial one held back.
    let start = *offset + splitter.pending() as u64;
    loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        splitter.feed(&buf[..n], on_line);
        total += n as u64;
        if n < buf.len() {
            break;
        }
    }
    // Position after the last complete line: a restart re-reads a partial line whole.
    *offset = start + total - splitter.pending() as u64;
    Ok(total)
}

/// A file in `path`'s directory with the saved inode (logrotate's `full.1`, `full-20261126`).
fn find_by_inode(path: &Path, pos: FilePosition) -> Option<PathBuf> {
    let dir = path.parent()?;
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| {
                m.is_file() && identity(&m) == (pos.dev, pos.inode) && m.len() >= pos.offset
            })
        })
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    struct Log {
        dir: tempfile::TempDir,
    }

    impl Log {
        fn new() -> Log {
            Log {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
        fn append(&self, name: &str, text: &str) {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path(name))
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        }
    }

    fn poll(f: &mut FileFollower) -> Vec<String> {
        let mut out = Vec::new();
        f.poll(&mut |l| out.push(String::from_utf8_lossy(l).into_owned()))
            .unwrap();
        out
    }

    fn start(
        path: &Path,
        saved: Option<FilePosition>,
        start: Start,
    ) -> (FileFollower, Vec<String>) {
        let mut out = Vec::new();
        let f = FileFollower::new(path, saved, start, &mut |l| {
            out.push(String::from_utf8_lossy(l).into_owned())
        });
        (f, out)
    }

    #[test]
    fn new_file_starts_at_end_unless_backlog() {
        let log = Log::new();
        log.append("full", "old\n");
        let (mut f, _) = start(&log.path("full"), None, Start::End);
        log.append("full", "new\n");
        assert_eq!(poll(&mut f), ["new"]);
        let (mut f, _) = start(&log.path("full"), None, Start::Beginning);
        assert_eq!(poll(&mut f), ["old", "new"]);
    }

    #[test]
    fn rename_and_create_rotation() {
        let log = Log::new();
        log.append("full", "");
        let (mut f, _) = start(&log.path("full"), None, Start::End);
        log.append("full", "a\n");
        std::fs::rename(log.path("full"), log.path("full.1")).unwrap();
        log.append("full.1", "late write to the old file\n");
        log.append("full", "b\n");
        assert_eq!(poll(&mut f), ["a", "late write to the old file", "b"]);
        log.append("full", "c\n");
        assert_eq!(poll(&mut f), ["c"]);
    }

    #[test]
    fn copytruncate_rotation() {
        let log = Log::new();
        log.append("full", "");
        let (mut f, _) = start(&log.path("full"), None, Start::End);
        log.append("full", "a long first line\n");
        assert_eq!(poll(&mut f), ["a long first line"]);
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(log.path("full"))
            .unwrap();
        log.append("full", "b\n");
        assert_eq!(poll(&mut f), ["b"]);
    }

    #[test]
    fn delete_and_recreate_and_missing_at_start() {
        let log = Log::new();
        let (mut f, _) = start(&log.path("full"), None, Start::End);
        assert!(poll(&mut f).is_empty());
        log.append("full", "created later\n");
        assert_eq!(poll(&mut f), ["created later"]);
        std::fs::remove_file(log.path("full")).unwrap();
        assert!(poll(&mut f).is_empty());
        log.append("full", "recreated\n");
        assert_eq!(poll(&mut f), ["recreated"]);
    }

    #[test]
    fn symlinked_path() {
        let log = Log::new();
        log.append("real", "");
        std::os::unix::fs::symlink(log.path("real"), log.path("link")).unwrap();
        let (mut f, _) = start(&log.path("link"), None, Start::End);
        log.append("real", "via link\n");
        assert_eq!(poll(&mut f), ["via link"]);
    }

    #[test]
    fn partial_line_waits_and_restart_resumes() {
        let log = Log::new();
        log.append("full", "");
        let (mut f, _) = start(&log.path("full"), None, Start::End);
        log.append("full", "one\ntw");
        assert_eq!(poll(&mut f), ["one"]);
        let saved = f.position().unwrap();
        drop(f);
        // Written while "down".
        log.append("full", "o\nthree\n");
        let (mut f, caught_up) = start(&log.path("full"), Some(saved), Start::End);
        assert!(caught_up.is_empty());
        assert_eq!(poll(&mut f), ["two", "three"]);
    }

    #[test]
    fn rotation_while_down_reads_the_rotated_tail_first() {
        let log = Log::new();
        log.append("full", "");
        let (mut f, _) = start(&log.path("full"), None, Start::End);
        log.append("full", "seen\n");
        poll(&mut f);
        let saved = f.position().unwrap();
        drop(f);
        log.append("full", "missed before rotation\n");
        std::fs::rename(log.path("full"), log.path("full.1")).unwrap();
        log.append("full", "after rotation\n");
        let (mut f, caught_up) = start(&log.path("full"), Some(saved), Start::End);
        assert_eq!(caught_up, ["missed before rotation"]);
        assert_eq!(poll(&mut f), ["after rotation"]);
    }

    /// Runs `f` on a thread and fails if it has not returned within a minute (a follower
    /// that blocks would otherwise hang the test run instead of failing it).
    fn returns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()).unwrap());
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("blocked on a file that is not a regular file")
    }

    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn special_files_are_skipped_with_one_warning_each() {
        let log = Log::new();
        nix::unistd::mkfifo(
            &log.path("fifo.log"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        std::fs::create_dir(log.path("dir.log")).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(log.path("socket.log")).unwrap();
        let captured = Captured::default();
        let writer = captured.clone();
        let dir = log.path("");
        let lines = returns(move || {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                let mut lines = Vec::new();
                for (name, from) in [
                    ("fifo.log", Start::Beginning),
                    ("dir.log", Start::End),
                    ("socket.log", Start::Beginning),
                ] {
                    let (mut f, _) = start(&dir.join(name), None, from);
                    assert_eq!(f.position(), None, "{name}");
                    for _ in 0..3 {
                        lines.extend(poll(&mut f));
                    }
                    // A regular file in its place is followed, from its start.
                    if name == "fifo.log" {
                        std::fs::remove_file(dir.join(name)).unwrap();
                        std::fs::write(dir.join(name), "now a regular file\n").unwrap();
                        lines.extend(poll(&mut f));
                        assert!(f.position().is_some());
                    }
                }
                lines
            })
        });
        assert_eq!(lines, ["now a regular file"]);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        for (name, kind) in [
            ("fifo.log", "a FIFO"),
            ("dir.log", "a directory"),
            ("socket.log", "a socket"),
        ] {
            let warnings: Vec<&str> = text.lines().filter(|l| l.contains(name)).collect();
            assert_eq!(warnings.len(), 1, "{name}: {text}");
            assert!(warnings[0].contains(&format!("it is {kind}")), "{text}");
        }
    }

    #[test]
    fn counted_position_matches_the_file_over_many_chunks() {
        let log = Log::new();
        log.append("full", "");
        let (mut f, _) = start(&log.path("full"), None, Start::End);
        // Several full 64 KiB reads, then a short one ending in a partial line.
        let body: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        log.append("full", &body);
        log.append("full", "partial");
        assert_eq!(poll(&mut f).len(), 20_000);
        let len = std::fs::metadata(log.path("full")).unwrap().len();
        assert_eq!(f.position().unwrap().offset, len - "partial".len() as u64);
        log.append("full", " line\n");
        assert_eq!(poll(&mut f), ["partial line"]);
        assert_eq!(
            f.position().unwrap().offset,
            std::fs::metadata(log.path("full")).unwrap().len()
        );
    }

    #[test]
    fn invalid_utf8_is_passed_as_bytes() {
        let log = Log::new();
        log.append("full", "");
        let (mut f, _) = start(&log.path("full"), None, Start::End);
        std::fs::OpenOptions::new()
            .append(true)
            .open(log.path("full"))
            .unwrap()
            .write_all(b"bad \xff\xfe bytes\n")
            .unwrap();
        let mut got = Vec::new();
        f.poll(&mut |l| got.push(l.to_vec())).unwrap();
        assert_eq!(got, [b"bad \xff\xfe bytes".to_vec()]);
    }
}
