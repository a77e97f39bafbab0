//! Durable ban state: an append-only journal of JSON lines under `state_dir`.
//!
//! Every ban and unban is written and fsynced before the caller is answered, so a `kill -9`
//! or a power cut loses nothing that was acknowledged. On open the journal is replayed,
//! expired bans are dropped and the file is rewritten compactly (temp file, fsync, rename,
//! fsync of the directory). A damaged line is reported with its number, the rest is kept,
//! and the damaged file is preserved beside the new one for inspection.

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::units::{net_serde, rfc3339};

/// Journal file name inside `state_dir`.
pub const JOURNAL: &str = "bans.journal";

/// One ban, as shown by `pbxguard bans list --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    /// The banned network (`203.0.113.5/32`).
    #[serde(with = "net_serde")]
    pub net: IpNet,
    /// Why, in words an admin understands.
    pub reason: String,
    /// `manual` or the name of the filter that triggered it.
    pub source: String,
    /// When the ban was made.
    #[serde(with = "rfc3339")]
    pub created: SystemTime,
    /// When it ends; `None` is permanent.
    #[serde(with = "rfc3339::option")]
    pub expires: Option<SystemTime>,
    /// The filter rule that triggered it (`None` for manual bans).
    #[serde(default)]
    pub rule: Option<String>,
    /// Failures counted within `findtime` when it was banned.
    #[serde(default)]
    pub failures: Option<u32>,
    /// How many times this network has been banned by detection (escalation step).
    #[serde(default)]
    pub offense: Option<u32>,
}

/// A network's history of detected offenses, for escalating ban lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offense {
    /// Bans so far.
    pub count: u32,
    /// When the last one happened.
    #[serde(with = "rfc3339")]
    pub last: SystemTime,
}

impl BanRecord {
    /// Whether the ban no longer applies at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|t| t <= now)
    }
}

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Entry {
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

/// Failures of the store; each says which file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory or journal could not be created, read or written.
    #[error(
        "ban store {path}: {source}; check that the directory exists, is writable by pbxguard and the disk is not full"
    )]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// A journal line that could not be read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Damage {
    /// 1-based line number in the journal.
    pub line: usize,
    /// What was wrong with it.
    pub problem: String,
}

/// The open store: the live bans in memory, the journal on disk.
pub struct Store {
    dir: PathBuf,
    journal: File,
    bans: BTreeMap<IpNet, BanRecord>,
    offenses: BTreeMap<IpNet, Offense>,
    lines: usize,
    damage: Vec<Damage>,
    damaged_copy: Option<PathBuf>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, replays and compacts the journal.
    pub fn open(dir: &Path, now: SystemTime) -> Result<Store, StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        let path = dir.join(JOURNAL);
        let (bans, offenses, damage) = match fs::read(&path) {
            Ok(bytes) => replay(&bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                (BTreeMap::new(), BTreeMap::new(), Vec::new())
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut damaged_copy = None;
        if !damage.is_empty() {
            let since = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            let copy = dir.join(format!("{JOURNAL}.damaged-{since}"));
            fs::copy(&path, &copy).map_err(io_err(&copy))?;
            damaged_copy = Some(copy);
        }
        let bans: BTreeMap<_, _> = bans
            .into_iter()
            .filter(|(_, b)| !b.is_expired(now))
            .collect();
        let (journal, lines) = rewrite(dir, &bans, &offenses)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            journal,
            bans,
            offenses,
            lines,
            damage,
            damaged_copy,
        })
    }

    /// Lines that could not be read when the store was opened (empty when healthy).
    pub fn damage(&self) -> &[Damage] {
        &self.damage
    }

    /// Where the damaged journal was copied to, if it was damaged.
    pub fn damaged_copy(&self) -> Option<&Path> {
        self.damaged_copy.as_deref()
    }

    /// Every ban in the store, expired ones included until [`Store::remove_expired`] runs.
    pub fn bans(&self) -> impl Iterator<Item = &BanRecord> {
        self.bans.values()
    }

    /// The ban on exactly `net`, if any.
    pub fn get(&self, net: &IpNet) -> Option<&BanRecord> {
        self.bans.get(net)
    }

    /// Number of bans held.
    pub fn len(&self) -> usize {
        self.bans.len()
    }

    /// Whether there are no bans.
    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }

    /// Records a ban (replacing any on the same network); durable when this returns.
    pub fn add(&mut self, record: BanRecord) -> Result<(), StoreError> {
        self.add_detected(vec![record], None)
    }

    /// Records several bans, and with `now` one more offense for each, in one write and one
    /// fsync: a burst of detections costs one disk flush, not one per ban.
    pub fn add_detected(
        &mut self,
        records: Vec<BanRecord>,
        now: Option<SystemTime>,
    ) -> Result<(), StoreError> {
        let mut entries = Vec::with_capacity(records.len() * 2);
        let mut offenses = Vec::new();
        for record in &records {
            if let Some(now) = now {
                let count = self.offenses.get(&record.net).map_or(0, |o| o.count) + 1;
                let offense = Offense { count, last: now };
                entries.push(Entry::Offense {
                    net: record.net,
                    offense,
                });
                offenses.push((record.net, offense));
            }
            entries.push(Entry::Add(record.clone()));
        }
        self.append_all(&entries)?;
        self.offenses.extend(offenses);
        for record in records {
            self.bans.insert(record.net, record);
        }
        Ok(())
    }

    /// Records an unban; durable when this returns. Returns the removed ban.
    pub fn remove(&mut self, net: &IpNet) -> Result<Option<BanRecord>, StoreError> {
        if !self.bans.contains_key(net) {
            return Ok(None);
        }
        self.append(&Entry::Del { net: *net })?;
        Ok(self.bans.remove(net))
    }

    /// Drops bans that ended before `now`; returns them so enforcers can forget them too.
    pub fn remove_expired(&mut self, now: SystemTime) -> Result<Vec<BanRecord>, StoreError> {
        let expired: Vec<IpNet> = self
            .bans
            .values()
            .filter(|b| b.is_expired(now))
            .map(|b| b.net)
            .collect();
        let mut removed = Vec::with_capacity(expired.len());
        for net in expired {
            if let Some(ban) = self.remove(&net)? {
                removed.push(ban);
            }
        }
        Ok(removed)
    }

    /// Past offenses of `net`.
    pub fn offense(&self, net: &IpNet) -> Option<Offense> {
        self.offenses.get(net).copied()
    }

    /// Counts one more offense for `net` at `now` (durable); returns the new count.
    pub fn record_offense(&mut self, net: IpNet, now: SystemTime) -> Result<u32, StoreError> {
        let count = self.offenses.get(&net).map_or(0, |o| o.count) + 1;
        let offense = Offense { count, last: now };
        self.append(&Entry::Offense { net, offense })?;
        self.offenses.insert(net, offense);
        Ok(count)
    }

    /// Forgets offenses whose last ban was before `before`; returns how many.
    pub fn forget_offenses(&mut self, before: SystemTime) -> Result<usize, StoreError> {
        let stale: Vec<IpNet> = self
            .offenses
            .iter()
            .filter(|(_, o)| o.last < before)
            .map(|(n, _)| *n)
            .collect();
        for net in &stale {
            self.append(&Entry::Forget { net: *net })?;
            self.offenses.remove(net);
        }
        Ok(stale.len())
    }

    fn append(&mut self, entry: &Entry) -> Result<(), StoreError> {
        self.append_all(std::slice::from_ref(entry))
    }

    fn append_all(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut buf, entry).expect("ban records always serialize");
            buf.push(b'\n');
        }
        let path = self.dir.join(JOURNAL);
        self.journal.write_all(&buf).map_err(io_err(&path))?;
        self.journal.sync_data().map_err(io_err(&path))?;
        self.lines += entries.len();
        // Keep replay time bounded: once the journal is mostly history, rewrite it.
        if self.lines > 1024 && self.lines > 4 * (self.bans.len() + self.offenses.len()) {
            let (journal, lines) = rewrite(&self.dir, &self.bans, &self.offenses)?;
            self.journal = journal;
            self.lines = lines;
        }
        Ok(())
    }
}

type Replayed = (
    BTreeMap<IpNet, BanRecord>,
    BTreeMap<IpNet, Offense>,
    Vec<Damage>,
);

/// Replays journal bytes; damaged lines are skipped and reported.
fn replay(bytes: &[u8]) -> Replayed {
    let mut bans = BTreeMap::new();
    let mut offenses = BTreeMap::new();
    let mut damage = Vec::new();
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
                bans.insert(record.net, record);
            }
            Ok(Entry::Del { net }) => {
                bans.remove(&net);
            }
            Ok(Entry::Offense { net, offense }) => {
                offenses.insert(net, offense);
            }
            Ok(Entry::Forget { net }) => {
                offenses.remove(&net);
            }
            Err(e) => {
                let truncated = index + 1 == count && !ends_clean;
                damage.push(Damage {
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
    (bans, offenses, damage)
}

/// Atomically replaces the journal with one `add` line per ban; returns it open for append.
fn rewrite(
    dir: &Path,
    bans: &BTreeMap<IpNet, BanRecord>,
    offenses: &BTreeMap<IpNet, Offense>,
) -> Result<(File, usize), StoreError> {
    let path = dir.join(JOURNAL);
    let tmp = dir.join(format!("{JOURNAL}.tmp"));
    let mut buf = Vec::new();
    for record in bans.values() {
        serde_json::to_writer(&mut buf, &Entry::Add(record.clone()))
            .expect("ban records always serialize");
        buf.push(b'\n');
    }
    for (net, offense) in offenses {
        serde_json::to_writer(
            &mut buf,
            &Entry::Offense {
                net: *net,
                offense: *offense,
            },
        )
        .expect("offenses always serialize");
        buf.push(b'\n');
    }
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        file.write_all(&buf).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    let journal = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    Ok((journal, bans.len() + offenses.len()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::units::parse_net;

    fn ban(net: &str, expires: Option<SystemTime>) -> BanRecord {
        BanRecord {
            net: parse_net(net).unwrap(),
            reason: "test".into(),
            source: "manual".into(),
            created: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            expires,
            rule: None,
            failures: None,
            offense: None,
        }
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn bans_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), now()).unwrap();
        store.add(ban("198.51.100.7", None)).unwrap();
        store
            .add(ban("2001:db8::/64", Some(now() + Duration::from_secs(60))))
            .unwrap();
        store.add(ban("203.0.113.9", None)).unwrap();
        store.remove(&parse_net("203.0.113.9").unwrap()).unwrap();
        drop(store);
        let store = Store::open(dir.path(), now()).unwrap();
        let nets: Vec<String> = store.bans().map(|b| b.net.to_string()).collect();
        assert_eq!(nets, ["198.51.100.7/32", "2001:db8::/64"]);
        assert!(store.damage().is_empty());
    }

    #[test]
    fn appended_lines_are_on_disk_without_close() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), now()).unwrap();
        store.add(ban("198.51.100.7", None)).unwrap();
        // Read while the store is still open, as a crash would leave it.
        let text = fs::read_to_string(dir.path().join(JOURNAL)).unwrap();
        assert!(text.contains("198.51.100.7/32"), "{text}");
        std::mem::forget(store);
    }

    #[test]
    fn expired_bans_are_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), now()).unwrap();
        store
            .add(ban("198.51.100.7", Some(now() + Duration::from_secs(10))))
            .unwrap();
        drop(store);
        let store = Store::open(dir.path(), now() + Duration::from_secs(11)).unwrap();
        assert!(store.is_empty());
    }

    #[test]
    fn truncated_last_line_is_reported_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), now()).unwrap();
        store.add(ban("198.51.100.7", None)).unwrap();
        store.add(ban("198.51.100.8", None)).unwrap();
        drop(store);
        let path = dir.path().join(JOURNAL);
        let mut bytes = fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 20);
        fs::write(&path, &bytes).unwrap();

        let store = Store::open(dir.path(), now()).unwrap();
        let nets: Vec<String> = store.bans().map(|b| b.net.to_string()).collect();
        assert_eq!(nets, ["198.51.100.7/32"]);
        assert_eq!(store.damage().len(), 1);
        assert_eq!(store.damage()[0].line, 2);
        assert!(store.damage()[0].problem.contains("truncated"));
        let copy = store.damaged_copy().unwrap();
        assert_eq!(
            fs::read(copy).unwrap(),
            bytes,
            "damaged file is preserved as it was"
        );
        drop(store);
        // The rewrite healed the journal.
        assert!(Store::open(dir.path(), now()).unwrap().damage().is_empty());
    }

    #[test]
    fn garbage_in_the_middle_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL);
        let good = |net: &str| {
            let mut l = serde_json::to_string(&Entry::Add(ban(net, None))).unwrap();
            l.push('\n');
            l
        };
        let text = format!(
            "{}\u{0}\u{ff}garbage\n{}",
            good("192.0.2.1"),
            good("192.0.2.2")
        );
        fs::write(&path, text).unwrap();
        let store = Store::open(dir.path(), now()).unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(store.damage()[0].line, 2);
        assert!(store.damage()[0].problem.contains("unreadable"));
    }

    #[test]
    fn offenses_survive_reopen_and_can_be_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let net = parse_net("192.0.2.1").unwrap();
        let mut store = Store::open(dir.path(), now()).unwrap();
        assert_eq!(store.record_offense(net, now()).unwrap(), 1);
        assert_eq!(
            store
                .record_offense(net, now() + Duration::from_secs(5))
                .unwrap(),
            2
        );
        drop(store);
        let mut store = Store::open(dir.path(), now()).unwrap();
        assert_eq!(store.offense(&net).unwrap().count, 2);
        assert_eq!(
            store
                .forget_offenses(now() + Duration::from_secs(6))
                .unwrap(),
            1
        );
        drop(store);
        assert!(
            Store::open(dir.path(), now())
                .unwrap()
                .offense(&net)
                .is_none()
        );
    }

    #[test]
    fn long_histories_are_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), now()).unwrap();
        let net = parse_net("192.0.2.1").unwrap();
        for _ in 0..2000 {
            store.add(ban("192.0.2.1", None)).unwrap();
            store.remove(&net).unwrap();
        }
        store.add(ban("192.0.2.1", None)).unwrap();
        let lines = fs::read_to_string(dir.path().join(JOURNAL))
            .unwrap()
            .lines()
            .count();
        assert!(lines < 1100, "journal has {lines} lines");
        drop(store);
        assert_eq!(Store::open(dir.path(), now()).unwrap().len(), 1);
    }
}
