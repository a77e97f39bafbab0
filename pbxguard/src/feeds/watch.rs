//! The `feeds` thread: refreshes every `[[blocklist]]` on its schedule (URLs every
//! `refresh`, with the last validators so an unchanged feed costs a 304; files when they are
//! replaced; APIBAN page by page from the last `ID`) and sends the engine each feed's news.
//! The last good content of each feed is saved under `state_dir/feeds/` (atomic write) and
//! sent first at start, so a feed is enforced at once, and a failed download changes nothing.

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{
    FeedError,
    fetch::{Fetched, Validators, fetch_url, read_file},
    parse::{apiban_url, parse_apiban, parse_plain},
};
use crate::{
    config::{APIBAN_URL, BlocklistConfig, Config, FeedFormat},
    engine::{
        actor::{Command, EngineHandle},
        feeds::FeedNews,
    },
};

/// How often a file feed is checked for replacement.
const FILE_CHECK: Duration = Duration::from_secs(2);
/// Most APIBAN pages fetched in one refresh (250 addresses each).
const APIBAN_PAGES: usize = 200;

/// What is saved per feed.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    validators: Validators,
    /// The last good content.
    nets: Vec<String>,
    /// APIBAN: the next page's ID.
    #[serde(default)]
    apiban_id: Option<String>,
    /// APIBAN: when each address was last reported (Unix seconds).
    #[serde(default)]
    apiban_seen: BTreeMap<String, u64>,
}

struct Feed {
    config: BlocklistConfig,
    file: PathBuf,
    saved: Saved,
    due: Instant,
    /// A file feed's identity and size/mtime when last read.
    stamp: Option<(u64, u64, i64, u64)>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn to_nets(texts: &[String]) -> Vec<IpNet> {
    texts.iter().filter_map(|t| t.parse().ok()).collect()
}

impl Feed {
    fn save(&self) {
        let written = serde_json::to_vec(&self.saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::store::journal::write_atomically(&self.file, &bytes));
        if let Err(e) = written {
            tracing::error!(feed = %self.config.name, error = %e, "saving the feed's content failed (check free space in state_dir)");
        }
    }

    /// One refresh: `None` when there is nothing to report (a file not replaced).
    fn refresh(&mut self) -> Option<FeedNews> {
        let result = match (&self.config.path, self.config.format) {
            (Some(path), _) => self.refresh_file(&path.clone()),
            (None, FeedFormat::Plain) => self.refresh_url(),
            (None, FeedFormat::Apiban) => self.refresh_apiban(),
        };
        match result {
            Ok(news) => news,
            Err(e) => Some(FeedNews::Failed(e.to_string())),
        }
    }

    fn content(&mut self, nets: Vec<IpNet>, garbage: usize, how: &'static str) -> FeedNews {
        self.saved.nets = nets.iter().map(ToString::to_string).collect();
        self.save();
        FeedNews::Content { nets, garbage, how }
    }

    fn refresh_file(&mut self, path: &Path) -> Result<Option<FeedNews>, FeedError> {
        let meta = std::fs::metadata(path).map_err(|e| FeedError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let stamp = Some((meta.dev(), meta.ino(), meta.mtime(), meta.size()));
        if stamp == self.stamp {
            return Ok(None);
        }
        let bytes = read_file(path, self.config.max_bytes)?;
        self.stamp = stamp;
        let parsed = parse_plain(&bytes);
        Ok(Some(self.content(
            parsed.nets,
            parsed.garbage_count,
            "file",
        )))
    }

    fn refresh_url(&mut self) -> Result<Option<FeedNews>, FeedError> {
        let url = self.config.url.clone().unwrap_or_default();
        match fetch_url(
            &url,
            &self.saved.validators,
            self.config.timeout,
            self.config.max_bytes,
            false,
        )? {
            Fetched::NotModified => Ok(Some(FeedNews::Unchanged)),
            Fetched::Fresh { body, validators } => {
                let parsed = parse_plain(&body);
                if parsed.nets.is_empty() && parsed.garbage_count > 0 {
                    return Err(FeedError::Format(format!(
                        "no address in the download, {} unreadable lines (an error page?)",
                        parsed.garbage_count
                    )));
                }
                self.saved.validators = validators;
                Ok(Some(self.content(
                    parsed.nets,
                    parsed.garbage_count,
                    "download",
                )))
            }
        }
    }

    fn refresh_apiban(&mut self) -> Result<Option<FeedNews>, FeedError> {
        let key = self
            .config
            .key()
            .map_err(FeedError::Format)?
            .ok_or_else(|| FeedError::Format("no APIBAN key".into()))?;
        let base = self.config.url.clone().unwrap_or_else(|| APIBAN_URL.into());
        let now = now_secs();
        let mut id = self.saved.apiban_id.clone().unwrap_or_else(|| "100".into());
        let mut garbage = 0;
        let mut changed = false;
        for _ in 0..APIBAN_PAGES {
            let fetched = fetch_url(
                &apiban_url(&base, &key, &id),
                &Validators::default(),
                self.config.timeout,
                self.config.max_bytes,
                true,
            )?;
            let Fetched::Fresh { body, .. } = fetched else {
                break;
            };
            let page = parse_apiban(&body)?;
            garbage += page.garbage_count;
            for net in page.nets {
                self.saved.apiban_seen.insert(net.to_string(), now);
                changed = true;
            }
            match page.next {
                Some(next) if next != id => id = next,
                _ => break,
            }
        }
        self.saved.apiban_id = Some(id);
        let keep = self.config.keep.as_secs();
        let before = self.saved.apiban_seen.len();
        self.saved.apiban_seen.retain(|_, seen| *seen + keep > now);
        changed |= self.saved.apiban_seen.len() != before;
        if !changed {
            self.save();
            return Ok(Some(FeedNews::Unchanged));
        }
        let nets: Vec<IpNet> = to_nets(&self.saved.apiban_seen.keys().cloned().collect::<Vec<_>>());
        Ok(Some(self.content(nets, garbage, "download")))
    }
}

/// Starts the thread when feeds are configured.
pub fn spawn(
    config: &Config,
    engine: EngineHandle,
    stop: Arc<AtomicBool>,
) -> Option<JoinHandle<()>> {
    if config.blocklist.is_empty() {
        return None;
    }
    let dir = config.daemon.state_dir.join("feeds");
    let configs = config.blocklist.clone();
    let thread = std::thread::Builder::new()
        .name("feeds".into())
        .spawn(move || {
            if let Err(e) = std::fs::create_dir_all(&dir) {
                tracing::error!(dir = %dir.display(), error = %e, "cannot create the feeds' state directory; their content is not saved");
            }
            let mut feeds: Vec<Feed> = configs
                .into_iter()
                .map(|config| {
                    let file = dir.join(format!("{}.json", config.name));
                    let saved: Saved = std::fs::read(&file)
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok())
                        .unwrap_or_default();
                    Feed {
                        config,
                        file,
                        saved,
                        due: Instant::now(),
                        stamp: None,
                    }
                })
                .collect();
            // The last good content first: enforced before any download.
            for feed in &feeds {
                if !feed.saved.nets.is_empty() {
                    let news = FeedNews::Content {
                        nets: to_nets(&feed.saved.nets),
                        garbage: 0,
                        how: "saved",
                    };
                    engine.send_blocking(Command::Feed(feed.config.name.clone(), news));
                }
            }
            while !stop.load(Ordering::Acquire) {
                for feed in feeds.iter_mut() {
                    if Instant::now() < feed.due {
                        continue;
                    }
                    let news = feed.refresh();
                    feed.due = Instant::now()
                        + match (&feed.config.path, &news) {
                            (Some(_), _) => FILE_CHECK,
                            // A failed download is retried sooner, never hammered.
                            (None, Some(FeedNews::Failed(_))) => {
                                feed.config.refresh.min(Duration::from_secs(300))
                            }
                            (None, _) => feed.config.refresh,
                        };
                    if let Some(news) = news
                        && !engine.send_blocking(Command::Feed(feed.config.name.clone(), news))
                    {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
        .expect("spawn feeds thread");
    Some(thread)
}
