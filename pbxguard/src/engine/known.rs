//! Addresses that authenticated successfully ("known"): spoofable evidence never counts
//! against them, so one forged UDP packet cannot get a working phone or trunk banned.
//!
//! Kept in `state_dir/known.json` (a JSON array), rewritten whole (temp file, fsync, rename,
//! directory fsync) by the engine's 1 s sweep when it changed, so a restart keeps them.

use std::{
    collections::HashMap,
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::{Engine, Outcome};
use crate::{
    detect::{Evidence, Kind},
    source::Event,
    units::rfc3339,
};

/// File name inside the state directory.
pub const KNOWN_FILE: &str = "known.json";
/// Where each extension last registered from (success lines with `<EXT>`), beside it.
pub const REGISTRATIONS_FILE: &str = "registrations.json";

/// Most addresses remembered; past it the one expiring first is forgotten. Success lines
/// need a real login, so a real PBX stays far below this.
pub const MAX_KNOWN: usize = 100_000;

/// A renewal that moves the expiry less than this is not worth a rewrite of the file.
const RENEW_SLACK: Duration = Duration::from_secs(3600);

/// One known address, as shown in `status --json` and kept in the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownEntry {
    /// The single address that authenticated (never a prefix).
    pub ip: IpAddr,
    /// First success line of this spell.
    #[serde(with = "rfc3339")]
    pub since: SystemTime,
    /// Known until then, unless another success line renews it.
    #[serde(with = "rfc3339")]
    pub until: SystemTime,
    /// Filter and rule of the latest success line (`asterisk`, `pjsip_added_contact`).
    pub filter: String,
    /// Rule name.
    pub rule: String,
}

/// The address an extension last registered from: the fraud rules ban it when the
/// extension's calls look like toll fraud.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The extension (PJSIP AOR, chan_sip peer).
    pub extension: String,
    /// Where it registered from.
    pub ip: IpAddr,
    /// When the registration line was read.
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    /// Forgotten after this, unless it registers again.
    #[serde(with = "rfc3339")]
    pub until: SystemTime,
}

/// The known addresses and registrations (owned by the engine).
#[derive(Debug, Default)]
pub struct Known {
    path: Option<PathBuf>,
    entries: HashMap<IpAddr, KnownEntry>,
    dirty: bool,
    registrations: HashMap<String, Registration>,
    registrations_dirty: bool,
}

fn read_list<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, String> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}

impl Known {
    /// Reads `dir/known.json`; a missing file is an empty set, an unreadable one is logged
    /// (and then replaced on the next change) rather than stopping the daemon.
    pub fn load(dir: &Path, now: SystemTime) -> Known {
        let path = dir.join(KNOWN_FILE);
        let mut known = Known {
            path: Some(path.clone()),
            ..Known::default()
        };
        match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Vec<KnownEntry>>(&bytes) {
                Ok(list) => {
                    known.entries = list
                        .into_iter()
                        .filter(|e| e.until > now)
                        .map(|e| (e.ip, e))
                        .collect();
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e,
                        "known addresses unreadable; starting with none (the file is rewritten on the next success line)");
                    known.dirty = true;
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "known addresses unreadable; starting with none")
            }
        }
        match read_list::<Registration>(&dir.join(REGISTRATIONS_FILE)) {
            Ok(list) => {
                known.registrations = list
                    .into_iter()
                    .filter(|r| r.until > now)
                    .map(|r| (r.extension.clone(), r))
                    .collect();
            }
            Err(e) => {
                tracing::error!(error = %e, "registrations unreadable; starting with none");
                known.registrations_dirty = true;
            }
        }
        known
    }

    /// Records that `extension` registered from `ip` (kept as long as a known address).
    pub fn register(&mut self, extension: &str, ip: IpAddr, now: SystemTime, keep: Duration) {
        if keep.is_zero() {
            return;
        }
        let previous = self.registrations.get(extension);
        if previous.is_none_or(|r| r.ip != ip || now + keep > r.until + RENEW_SLACK) {
            self.registrations_dirty = true;
        }
        if previous.is_none()
            && self.registrations.len() >= MAX_KNOWN
            && let Some(first) = self
                .registrations
                .values()
                .min_by_key(|r| r.until)
                .map(|r| r.extension.clone())
        {
            self.registrations.remove(&first);
        }
        self.registrations.insert(
            extension.to_string(),
            Registration {
                extension: extension.to_string(),
                ip,
                at: now,
                until: now + keep,
            },
        );
    }

    /// Where `extension` last registered from, if that is still remembered at `now`.
    pub fn registration(&self, extension: &str, now: SystemTime) -> Option<&Registration> {
        self.registrations.get(extension).filter(|r| r.until > now)
    }

    /// How many extensions have a remembered registration.
    pub fn registrations(&self) -> usize {
        self.registrations.len()
    }

    /// Records a success line for `ip`: known until `now + known_for`.
    pub fn learn(
        &mut self,
        ip: IpAddr,
        filter: &str,
        rule: &str,
        now: SystemTime,
        known_for: Duration,
    ) {
        if known_for.is_zero() {
            return;
        }
        let until = now + known_for;
        match self.entries.get_mut(&ip) {
            Some(e) if e.until > now => {
                if until > e.until + RENEW_SLACK {
                    self.dirty = true;
                }
                e.until = e.until.max(until);
                e.filter = filter.into();
                e.rule = rule.into();
            }
            _ => {
                if self.entries.len() >= MAX_KNOWN
                    && let Some(first) = self.entries.values().min_by_key(|e| e.until).map(|e| e.ip)
                {
                    self.entries.remove(&first);
                }
                self.entries.insert(
                    ip,
                    KnownEntry {
                        ip,
                        since: now,
                        until,
                        filter: filter.into(),
                        rule: rule.into(),
                    },
                );
                self.dirty = true;
            }
        }
    }

    /// The entry for `ip` if it is known at `now`.
    pub fn get(&self, ip: IpAddr, now: SystemTime) -> Option<&KnownEntry> {
        self.entries.get(&ip).filter(|e| e.until > now)
    }

    /// Whether any address known at `now` lies inside `net`.
    pub fn any_within(&self, net: &ipnet::IpNet, now: SystemTime) -> bool {
        self.entries
            .values()
            .any(|e| e.until > now && net.contains(&e.ip))
    }

    /// How many addresses are known (expired ones until the next [`Known::sweep`]).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, in address order.
    pub fn list(&self) -> Vec<KnownEntry> {
        let mut list: Vec<KnownEntry> = self.entries.values().cloned().collect();
        list.sort_by_key(|e| e.ip);
        list
    }

    /// Forgets expired entries and writes the file if anything changed since the last write.
    /// A failed write is retried on the next sweep.
    pub fn sweep(&mut self, now: SystemTime) -> std::io::Result<()> {
        self.sweep_registrations(now)?;
        let before = self.entries.len();
        self.entries.retain(|_, e| e.until > now);
        self.dirty |= self.entries.len() != before;
        if !self.dirty {
            return Ok(());
        }
        if let Some(path) = &self.path {
            crate::store::journal::write_atomically(path, &serde_json::to_vec(&self.list())?)?;
        }
        self.dirty = false;
        Ok(())
    }

    /// Writes `registrations.json` when it changed (forgetting expired entries first).
    fn sweep_registrations(&mut self, now: SystemTime) -> std::io::Result<()> {
        let before = self.registrations.len();
        self.registrations.retain(|_, r| r.until > now);
        self.registrations_dirty |= self.registrations.len() != before;
        if !self.registrations_dirty {
            return Ok(());
        }
        if let Some(path) = &self.path {
            let mut list: Vec<&Registration> = self.registrations.values().collect();
            list.sort_by(|a, b| a.extension.cmp(&b.extension));
            let path = path.with_file_name(REGISTRATIONS_FILE);
            crate::store::journal::write_atomically(&path, &serde_json::to_vec(&list)?)?;
        }
        self.registrations_dirty = false;
        Ok(())
    }
}

impl Engine {
    /// A success line makes its address known: `Some(Known)`; a failure goes on.
    pub(super) fn learn_success(&mut self, event: &Event, now: SystemTime) -> Option<Outcome> {
        if event.kind != Kind::Success {
            return None;
        }
        let known_for = self.config.policy.known_for;
        self.known
            .learn(event.ip, &event.filter, &event.rule, now, known_for);
        if let Some(extension) = &event.extension {
            self.known.register(extension, event.ip, now, known_for);
            tracing::debug!(extension = %extension, ip = %event.ip, "registration: extension located");
        }
        tracing::debug!(ip = %event.ip, filter = %event.filter, rule = %event.rule, "success line: address known");
        Some(Outcome::Known)
    }

    /// Spoofable evidence against a known address is never counted.
    pub(super) fn screen_spoofable(&mut self, event: &Event, now: SystemTime) -> Option<Outcome> {
        if event.evidence != Evidence::Spoofable || self.known.get(event.ip, now).is_none() {
            return None;
        }
        self.ignored_spoofable += 1;
        tracing::info!(ip = %event.ip, filter = %event.filter, rule = %event.rule,
            "spoofable evidence against a known address ignored (one forged packet could have produced it)");
        Some(Outcome::IgnoredSpoofable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn known_survives_a_reload_from_disk_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let ip: IpAddr = "198.51.100.20".parse().unwrap();
        let week = Duration::from_secs(7 * 86400);
        let mut known = Known::load(dir.path(), t(0));
        known.learn(ip, "asterisk", "pjsip_added_contact", t(0), week);
        known.sweep(t(1)).unwrap();
        let again = Known::load(dir.path(), t(2));
        let entry = again.get(ip, t(2)).expect("still known after a reload");
        assert_eq!((entry.since, entry.until), (t(0), t(0) + week));
        assert!(again.get(ip, t(0) + week).is_none());
        // Expired entries are not loaded, and a sweep drops them from the file.
        assert!(Known::load(dir.path(), t(0) + week).is_empty());
    }

    #[test]
    fn zero_known_for_learns_nothing_and_damage_is_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KNOWN_FILE), b"{not json").unwrap();
        let mut known = Known::load(dir.path(), t(0));
        assert!(known.is_empty());
        known.learn("192.0.2.1".parse().unwrap(), "f", "r", t(0), Duration::ZERO);
        assert!(known.is_empty());
        // The damaged file is replaced by a readable one.
        known.sweep(t(0)).unwrap();
        assert!(Known::load(dir.path(), t(0)).is_empty());
        let text = fs::read_to_string(dir.path().join(KNOWN_FILE)).unwrap();
        assert_eq!(text, "[]");
    }
}
