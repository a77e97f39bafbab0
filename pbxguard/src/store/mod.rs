//! Durable ban state: an append-only journal of JSON lines under `state_dir`.
//!
//! Every ban and unban is written and fsynced before the caller is answered, so a `kill -9`
//! or a power cut loses nothing that was acknowledged. On open the journal is replayed,
//! expired bans are dropped and the file is rewritten compactly (temp file, fsync, rename,
//! fsync of the directory). A damaged line is reported with its number, the rest is kept,
//! and the damaged file is preserved beside the new one for inspection.

pub mod journal;

use std::{
    collections::BTreeMap,
    fs, io,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use self::journal::{Entry, JournalFile};
pub use self::journal::{JOURNAL, Replayed};
use crate::units::{net_serde, rfc3339};

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
    /// How hard the evidence that banned it was to forge (`None` for manual bans and bans
    /// journaled before pbxguard recorded it).
    #[serde(default)]
    pub evidence: Option<crate::detect::Evidence>,
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
///
/// Memory changes only after the journal write it depends on succeeded, and compaction
/// runs only after memory holds the whole change: what the journal says is what memory
/// says, after every call and every failure.
pub struct Store {
    dir: PathBuf,
    journal: JournalFile,
    bans: BTreeMap<IpNet, BanRecord>,
    offenses: BTreeMap<IpNet, Offense>,
    damage: Vec<Damage>,
    damaged_copy: Option<PathBuf>,
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
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
        let Replayed {
            bans,
            offenses,
            damage,
        } = journal::read(&path)?;
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
        let journal = journal::rewrite(dir, &bans, &offenses)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            journal,
            bans,
            offenses,
            damage,
            damaged_copy,
        })
    }

    /// The state directory it lives in (other small state files go next to the journal).
    pub fn dir(&self) -> &Path {
        &self.dir
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

    /// Whether the journal on disk lags memory (a failed write could not be cut off);
    /// the next write rewrites it whole.
    pub fn is_stale(&self) -> bool {
        self.journal.stale
    }

    /// Records a ban (replacing any on the same network); durable when this returns.
    pub fn add(&mut self, record: BanRecord) -> Result<(), StoreError> {
        self.add_many(vec![record], None)
    }

    /// Records several bans, and with `offense_at` one more offense for each, in one write
    /// and one fsync: a burst of detections costs one disk flush, not one per ban. On error
    /// nothing was recorded.
    pub fn add_many(
        &mut self,
        records: Vec<BanRecord>,
        offense_at: Option<SystemTime>,
    ) -> Result<(), StoreError> {
        let mut entries = Vec::with_capacity(records.len() * 2);
        let mut offenses = Vec::new();
        for record in &records {
            if let Some(now) = offense_at {
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
        self.write(&entries)?;
        self.offenses.extend(offenses);
        for record in records {
            self.bans.insert(record.net, record);
        }
        self.compact_if_mostly_history()
    }

    /// Puts networks back as they were before a change the kernel refused: the previous
    /// ban where there was one, none otherwise. One write, one fsync.
    pub fn restore(&mut self, previous: Vec<(IpNet, Option<BanRecord>)>) -> Result<(), StoreError> {
        let entries: Vec<Entry> = previous
            .iter()
            .map(|(net, old)| match old {
                Some(record) => Entry::Add(record.clone()),
                None => Entry::Del { net: *net },
            })
            .collect();
        let written = self.write(&entries);
        // Memory follows the kernel either way; a failed write leaves the journal stale,
        // to be rewritten from memory before the next change.
        if written.is_err() {
            self.journal.stale = true;
        }
        for (net, old) in previous {
            match old {
                Some(record) => self.bans.insert(net, record),
                None => self.bans.remove(&net),
            };
        }
        written?;
        self.compact_if_mostly_history()
    }

    /// Records an unban; durable when this returns. Returns the removed ban.
    pub fn remove(&mut self, net: &IpNet) -> Result<Option<BanRecord>, StoreError> {
        Ok(self.remove_many(std::slice::from_ref(net))?.pop())
    }

    /// Records several unbans in one write and one fsync; returns the bans removed (nets
    /// that were not banned are skipped). On error nothing was removed.
    pub fn remove_many(&mut self, nets: &[IpNet]) -> Result<Vec<BanRecord>, StoreError> {
        let present: Vec<IpNet> = nets
            .iter()
            .filter(|n| self.bans.contains_key(n))
            .copied()
            .collect();
        if present.is_empty() {
            return Ok(Vec::new());
        }
        let entries: Vec<Entry> = present.iter().map(|net| Entry::Del { net: *net }).collect();
        self.write(&entries)?;
        let removed = present
            .iter()
            .filter_map(|net| self.bans.remove(net))
            .collect();
        self.compact_if_mostly_history()?;
        Ok(removed)
    }

    /// The bans that ended at or before `now` (still held until removed).
    pub fn expired(&self, now: SystemTime) -> Vec<IpNet> {
        self.bans
            .values()
            .filter(|b| b.is_expired(now))
            .map(|b| b.net)
            .collect()
    }

    /// Drops bans that ended before `now` in one write; returns them so enforcers can
    /// forget them too.
    pub fn remove_expired(&mut self, now: SystemTime) -> Result<Vec<BanRecord>, StoreError> {
        let expired = self.expired(now);
        self.remove_many(&expired)
    }

    /// Past offenses of `net`.
    pub fn offense(&self, net: &IpNet) -> Option<Offense> {
        self.offenses.get(net).copied()
    }

    /// Counts one more offense for `net` at `now` (durable); returns the new count.
    pub fn record_offense(&mut self, net: IpNet, now: SystemTime) -> Result<u32, StoreError> {
        let count = self.offenses.get(&net).map_or(0, |o| o.count) + 1;
        let offense = Offense { count, last: now };
        self.write(&[Entry::Offense { net, offense }])?;
        self.offenses.insert(net, offense);
        self.compact_if_mostly_history()?;
        Ok(count)
    }

    /// Forgets offenses whose last ban was before `before`, in one write; returns how many.
    pub fn forget_offenses(&mut self, before: SystemTime) -> Result<usize, StoreError> {
        let stale: Vec<IpNet> = self
            .offenses
            .iter()
            .filter(|(_, o)| o.last < before)
            .map(|(n, _)| *n)
            .collect();
        if stale.is_empty() {
            return Ok(0);
        }
        let entries: Vec<Entry> = stale
            .iter()
            .map(|net| Entry::Forget { net: *net })
            .collect();
        self.write(&entries)?;
        for net in &stale {
            self.offenses.remove(net);
        }
        self.compact_if_mostly_history()?;
        Ok(stale.len())
    }

    /// Appends, first rewriting a stale journal from memory.
    fn write(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        if self.journal.stale {
            self.journal = journal::rewrite(&self.dir, &self.bans, &self.offenses)?;
        }
        self.journal.append(entries)
    }

    /// Keeps replay time bounded: once the journal is mostly history, rewrite it from
    /// memory (which already holds the latest change). The change itself is already
    /// durable, so a failed rewrite is not the caller's failure: the journal is marked
    /// stale and rewritten before the next append.
    fn compact_if_mostly_history(&mut self) -> Result<(), StoreError> {
        let live = self.bans.len() + self.offenses.len();
        if self.journal.lines > 1024 && self.journal.lines > 4 * live {
            match journal::rewrite(&self.dir, &self.bans, &self.offenses) {
                Ok(file) => self.journal = file,
                Err(e) => {
                    tracing::warn!(error = %e, "compacting the ban journal failed; retrying before the next write");
                    self.journal.stale = true;
                }
            }
        }
        Ok(())
    }
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
            evidence: None,
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

    /// Regression: compaction used to rewrite the journal from memory before a batch was
    /// added to it, dropping the batch (2,000 detections, 530 left in the journal).
    #[test]
    fn a_batch_that_triggers_compaction_is_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), now()).unwrap();
        let net = parse_net("192.0.2.1").unwrap();
        for _ in 0..600 {
            store.add(ban("192.0.2.1", None)).unwrap();
            store.remove(&net).unwrap();
        }
        let batch: Vec<BanRecord> = (0..2000u32)
            .map(|i| ban(&std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string(), None))
            .collect();
        store.add_many(batch, Some(now())).unwrap();
        assert_eq!(store.len(), 2000);
        drop(store);
        let store = Store::open(dir.path(), now()).unwrap();
        assert_eq!(store.len(), 2000);
        assert_eq!(
            store
                .offense(&parse_net("10.0.7.207").unwrap())
                .unwrap()
                .count,
            1
        );
    }

    /// A write that fails half-way (ENOSPC on a small tmpfs) leaves no fragment for the
    /// next entry to be glued to. Needs root (mount).
    #[test]
    fn a_torn_write_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "pbxguard-unit"])
            .arg(dir.path())
            .status();
        if !mounted.is_ok_and(|s| s.success()) {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let result = std::panic::catch_unwind(|| {
            let mut store = Store::open(dir.path(), now()).unwrap();
            store.add(ban("192.0.2.1", None)).unwrap();
            let mut big = ban("192.0.2.2", None);
            big.reason = "x".repeat(128 * 1024);
            let err = store.add(big).unwrap_err();
            assert!(err.to_string().contains("No space left"), "{err}");
            assert!(store.get(&parse_net("192.0.2.2").unwrap()).is_none());
            store.add(ban("192.0.2.3", None)).unwrap();
            drop(store);
            let replayed = journal::read(&dir.path().join(JOURNAL)).unwrap();
            assert!(replayed.damage.is_empty(), "{:?}", replayed.damage);
            let nets: Vec<String> = replayed.bans.keys().map(|n| n.to_string()).collect();
            assert_eq!(nets, ["192.0.2.1/32", "192.0.2.3/32"]);
        });
        let _ = nix::mount::umount2(dir.path(), nix::mount::MntFlags::MNT_DETACH);
        result.unwrap();
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
