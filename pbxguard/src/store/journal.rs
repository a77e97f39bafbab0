//! The journal file itself: JSON lines, appended and fsynced, replayed on open, rewritten
//! atomically when compacted. A failed append is cut back off the file, so a torn fragment
//! (ENOSPC, EIO) is never glued to the next entry; if even that fails, the file is marked
//! stale and rewritten whole before the next append.

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{BanRecord, Damage, Offense, StoreError, io_err};
use crate::units::net_serde;

/// Journal file name inside `state_dir`.
pub const JOURNAL: &str = "bans.journal";

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(super) enum Entry {
    Add(BanRecord),
    Del {
        #[serde(with = "net_serde")]
        net: IpNet,
    },
    Offense {
        #[serde(with = "net_serde")]
        net: IpNet,
        #[serde(flatten)]
        offense: Offense,
    },
    Forget {
        #[serde(with = "net_serde")]
        net: IpNet,
    },
}

/// What a journal replays to.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The bans, by network (expired ones included).
    pub bans: BTreeMap<IpNet, BanRecord>,
    /// Offense history, by network.
    pub offenses: BTreeMap<IpNet, Offense>,
    /// Lines that could not be read.
    pub damage: Vec<Damage>,
}

/// Reads and replays a journal without changing it (for inspection and the ledger checks
/// in tests); a missing file is an empty journal.
pub fn read(path: &Path) -> Result<Replayed, StoreError> {
    match fs::read(path) {
        Ok(bytes) => Ok(replay(&bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Replayed::default()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Replays journal bytes; damaged lines are skipped and reported.
pub(super) fn replay(bytes: &[u8]) -> Replayed {
    let mut out = Replayed::default();
    let ends_clean = bytes.last().is_none_or(|&b| b == b'\n');
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if ends_clean {
        lines.pop(); // the empty piece after the final newline
    }
    let count = lines.len();
    for (index, line) in lines.into_iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Entry>(line) {
            Ok(Entry::Add(record)) => {
                out.bans.insert(record.net, record);
            }
            Ok(Entry::Del { net }) => {
                out.bans.remove(&net);
            }
            Ok(Entry::Offense { net, offense }) => {
                out.offenses.insert(net, offense);
            }
            Ok(Entry::Forget { net }) => {
                out.offenses.remove(&net);
            }
            Err(e) => {
                let truncated = index + 1 == count && !ends_clean;
                out.damage.push(Damage {
                    line: index + 1,
                    problem: if truncated {
                        format!("truncated last entry (the write was interrupted): {e}")
                    } else {
                        format!("unreadable entry: {e}")
                    },
                });
            }
        }
    }
    out
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut buf = Vec::new();
    for entry in entries {
        serde_json::to_writer(&mut buf, entry).expect("journal entries always serialize");
        buf.push(b'\n');
    }
    buf
}

/// The open journal file.
pub(super) struct JournalFile {
    dir: PathBuf,
    file: File,
    /// Bytes known good (every entry whole and fsynced).
    len: u64,
    /// Entries in the file, for the compaction decision.
    pub lines: usize,
    /// The file may hold a torn tail that could not be cut off: rewrite before appending.
    pub stale: bool,
}

impl JournalFile {
    fn path(&self) -> PathBuf {
        self.dir.join(JOURNAL)
    }

    /// Appends entries with one write and one fsync; on failure the file is cut back to
    /// where it was, so the journal holds either all of them or none.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        let path = self.path();
        let buf = encode(entries);
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(source) = written {
            // Cut the fragment off; if that fails too, rewrite before the next append.
            let cut = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_data());
            if cut.is_err() {
                self.stale = true;
            }
            return Err(StoreError::Io { path, source });
        }
        self.len += buf.len() as u64;
        self.lines += entries.len();
        Ok(())
    }
}

/// Replaces `path` with `bytes` so that it holds the old content or the new, never a mix:
/// temp file beside it (mode 0600), fsync, rename, fsync of the directory. A half-written
/// temp file is removed, so it does not use up the space the live file needs.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Atomically replaces the journal with `bans` and `offenses` (temp file, fsync, rename,
/// fsync of the directory); returns it open for appending.
pub(super) fn rewrite(
    dir: &Path,
    bans: &BTreeMap<IpNet, BanRecord>,
    offenses: &BTreeMap<IpNet, Offense>,
) -> Result<JournalFile, StoreError> {
    let path = dir.join(JOURNAL);
    let mut entries: Vec<Entry> = bans.values().cloned().map(Entry::Add).collect();
    entries.extend(offenses.iter().map(|(net, offense)| Entry::Offense {
        net: *net,
        offense: *offense,
    }));
    let buf = encode(&entries);
    write_atomically(&path, &buf).map_err(io_err(&path))?;
    let file = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    Ok(JournalFile {
        dir: dir.to_path_buf(),
        file,
        len: buf.len() as u64,
        lines: entries.len(),
        stale: false,
    })
}
