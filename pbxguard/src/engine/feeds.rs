//! Blocklist feeds in the engine: each feed's last good content (as parsed, unscreened) is
//! kept; what is enforced is that content screened by this node's guard (host addresses,
//! allowlist, PBX peers) and minimum prefixes, merged into one map of network -> feed bits
//! (`Enforcer::set_blocklist`, swapped without a gap). Screening runs again whenever the
//! guard changes, so an address allowlisted later stops being dropped at once.

use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use ipnet::IpNet;
use serde::Serialize;

use super::Engine;
use crate::config::BlocklistConfig;

/// What the feed thread learned about one feed.
#[derive(Debug, Clone)]
pub enum FeedNews {
    /// New content (downloaded, read, or restored from `state_dir` at start).
    Content {
        /// Every network it lists.
        nets: Vec<IpNet>,
        /// Lines that were not addresses.
        garbage: usize,
        /// Where it came from: `download`, `file`, `saved` (restored at start).
        how: &'static str,
    },
    /// Checked: nothing new (HTTP 304, file unchanged).
    Unchanged,
    /// The refresh failed; the last good content stays.
    Failed(String),
}

/// One feed in `status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FeedStatus {
    /// The feed's name.
    pub name: String,
    /// URL or path.
    pub origin: String,
    /// Entries enforced.
    pub entries: usize,
    /// Entries refused (host, allowlist, PBX peer, wider than the minimum prefix).
    pub refused: usize,
    /// Up to five refused entries with why.
    pub refused_examples: Vec<String>,
    /// Lines of the last content that were not addresses.
    pub garbage: usize,
    /// When content last arrived or was confirmed unchanged.
    #[serde(with = "crate::units::rfc3339::option")]
    pub last_refresh: Option<SystemTime>,
    /// Where the content in force came from (`download`, `file`, `saved`).
    pub content_from: Option<&'static str>,
    /// Why the last refresh failed (the last good content stays in force).
    pub last_error: Option<String>,
}

/// The feeds' content and state (owned by the engine).
#[derive(Default)]
pub struct Feeds {
    configs: Vec<BlocklistConfig>,
    raw: BTreeMap<String, Vec<IpNet>>,
    status: BTreeMap<String, FeedStatus>,
    /// What is enforced: network -> bit mask of feeds (bit = position in the config).
    enforced: Arc<BTreeMap<IpNet, u64>>,
}

impl Feeds {
    /// The configured feeds, none loaded yet.
    pub fn new(configs: Vec<BlocklistConfig>) -> Feeds {
        let status = configs
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    FeedStatus {
                        name: c.name.clone(),
                        origin: c.origin(),
                        ..Default::default()
                    },
                )
            })
            .collect();
        Feeds {
            configs,
            status,
            ..Default::default()
        }
    }

    /// Every feed's status, in config order.
    pub fn status(&self) -> Vec<FeedStatus> {
        self.configs
            .iter()
            .filter_map(|c| self.status.get(&c.name).cloned())
            .collect()
    }

    /// The feeds that list `ip`.
    pub fn listing(&self, ip: std::net::IpAddr) -> Vec<String> {
        let mut mask = 0u64;
        for (net, bits) in self.enforced.iter() {
            if net.contains(&ip) {
                mask |= bits;
            }
        }
        self.configs
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, c)| c.name.clone())
            .collect()
    }

    /// Feed names in bit order (for per-feed counters).
    pub fn names(&self) -> Vec<String> {
        self.configs.iter().map(|c| c.name.clone()).collect()
    }
}

impl Engine {
    /// Takes news about one feed and, when its content changed, swaps what is enforced.
    pub fn on_feed(&mut self, name: &str, news: FeedNews, now: SystemTime) {
        let Some(status) = self.feeds.status.get_mut(name) else {
            return;
        };
        match news {
            FeedNews::Content { nets, garbage, how } => {
                status.garbage = garbage;
                status.last_refresh = Some(now);
                status.last_error = None;
                status.content_from = Some(how);
                tracing::info!(
                    feed = name,
                    entries = nets.len(),
                    garbage,
                    from = how,
                    "blocklist feed content"
                );
                self.feeds.raw.insert(name.to_string(), nets);
                self.apply_feeds();
            }
            FeedNews::Unchanged => {
                status.last_refresh = Some(now);
                status.last_error = None;
            }
            FeedNews::Failed(error) => {
                tracing::warn!(feed = name, error = %error, "blocklist feed not refreshed; its last good content stays in force");
                status.last_error = Some(error);
            }
        }
    }

    /// Screens every feed's content and swaps the kernel's blocklist to the result. Runs
    /// after new content and after the guard changed.
    pub(super) fn apply_feeds(&mut self) {
        let mut want: BTreeMap<IpNet, u64> = BTreeMap::new();
        let configs = self.feeds.configs.clone();
        let mut counts = Vec::new();
        for (bit, config) in configs.iter().enumerate() {
            let Some(nets) = self.feeds.raw.get(&config.name) else {
                counts.push((config.name.clone(), 0, 0, Vec::new()));
                continue;
            };
            let (mut entries, mut refused, mut examples) = (0, 0, Vec::new());
            for net in nets {
                let (widest, family) = match net {
                    IpNet::V4(_) => (config.min_prefix, "min_prefix"),
                    IpNet::V6(_) => (config.min_prefix_v6, "min_prefix_v6"),
                };
                let why = if net.prefix_len() < widest {
                    Some(format!("wider than /{widest} ({family})"))
                } else {
                    self.guard.check(net).err().map(|r| r.why)
                };
                match why {
                    Some(why) => {
                        refused += 1;
                        if examples.len() < 5 {
                            examples.push(format!("{net}: {why}"));
                        }
                    }
                    None => {
                        entries += 1;
                        *want.entry(*net).or_insert(0) |= 1 << bit;
                    }
                }
            }
            counts.push((config.name.clone(), entries, refused, examples));
        }
        if *self.feeds.enforced == want {
            self.set_feed_counts(counts);
            return;
        }
        match self.ledger.enforcer_mut().set_blocklist(&want) {
            Ok(()) => {
                self.feeds.enforced = Arc::new(want);
                self.set_feed_counts(counts);
            }
            Err(e) => {
                tracing::error!(error = %e, "the blocklist could not be swapped; the previous content stays in force");
                for status in self.feeds.status.values_mut() {
                    status.last_error = Some(format!("not enforced: {e}"));
                }
            }
        }
    }

    fn set_feed_counts(&mut self, counts: Vec<(String, usize, usize, Vec<String>)>) {
        for (name, entries, refused, examples) in counts {
            if let Some(status) = self.feeds.status.get_mut(&name) {
                if refused > status.refused {
                    tracing::warn!(feed = %name, refused, examples = ?examples, "blocklist entries refused");
                }
                status.entries = entries;
                status.refused = refused;
                status.refused_examples = examples;
            }
        }
    }
}
