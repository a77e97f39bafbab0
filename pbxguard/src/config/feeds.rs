//! `[[blocklist]]` feeds and the `[crowdsec]` bouncer: other people's lists of attackers.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::units::duration_serde;

/// How a feed is written.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FeedFormat {
    /// One address or CIDR per line, `#` / `;` comments (FireHOL netsets, Spamhaus DROP).
    Plain,
    /// The APIBAN JSON API, paged by `ID` (VoIP honeypot data).
    Apiban,
}

/// One `[[blocklist]]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BlocklistConfig {
    /// Shown in `status`, metrics and `explain`: letters, digits, `-`, `_`.
    pub name: String,
    /// A local file, re-read when it is replaced.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// An HTTP(S) URL (for `apiban`: the API base, default `https://apiban.org/api`).
    #[serde(default)]
    pub url: Option<String>,
    /// `plain` or `apiban`.
    #[serde(default = "plain")]
    pub format: FeedFormat,
    /// APIBAN key.
    #[serde(default)]
    pub api_key: Option<String>,
    /// APIBAN key in a file (kept out of the config).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// How often a URL is fetched again (files are checked every few seconds).
    #[serde(default = "hourly", with = "duration_serde")]
    pub refresh: Duration,
    /// Give up on one download after this long.
    #[serde(default = "thirty_seconds", with = "duration_serde")]
    pub timeout: Duration,
    /// Larger downloads or files are refused (the last good content stays).
    #[serde(default = "max_bytes")]
    pub max_bytes: u64,
    /// IPv4 entries wider than this prefix are refused.
    #[serde(default = "min_prefix")]
    pub min_prefix: u8,
    /// IPv6 entries wider than this prefix are refused.
    #[serde(default = "min_prefix_v6")]
    pub min_prefix_v6: u8,
    /// APIBAN: how long an address stays listed after it was last reported.
    #[serde(default = "week", with = "duration_serde")]
    pub keep: Duration,
}

fn plain() -> FeedFormat {
    FeedFormat::Plain
}
fn hourly() -> Duration {
    Duration::from_secs(3600)
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn max_bytes() -> u64 {
    32 << 20
}
fn min_prefix() -> u8 {
    8
}
fn min_prefix_v6() -> u8 {
    16
}
fn week() -> Duration {
    Duration::from_secs(7 * 86400)
}

/// The APIBAN API when `url` is not given.
pub const APIBAN_URL: &str = "https://apiban.org/api";

impl BlocklistConfig {
    /// Where it comes from, for `status`.
    pub fn origin(&self) -> String {
        match (&self.path, &self.url, self.format) {
            (Some(path), _, _) => path.display().to_string(),
            (None, Some(url), _) => url.clone(),
            (None, None, FeedFormat::Apiban) => APIBAN_URL.into(),
            (None, None, FeedFormat::Plain) => String::new(),
        }
    }

    /// The APIBAN key: `api_key`, or the first line of `api_key_file`.
    pub fn key(&self) -> Result<Option<String>, String> {
        if let Some(key) = &self.api_key {
            return Ok(Some(key.clone()));
        }
        let Some(path) = &self.api_key_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("api_key_file {}: {e}", path.display()))?;
        Ok(text.lines().next().map(|l| l.trim().to_string()))
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err((
                "name",
                format!(
                    "`{}` is not a feed name: letters, digits, - and _",
                    self.name
                ),
            ));
        }
        match (&self.path, &self.url, self.format) {
            (Some(_), Some(_), _) => {
                return Err(("url", "give path or url, not both".into()));
            }
            (None, None, FeedFormat::Plain) => {
                return Err((
                    "url",
                    "give url = \"https://...\" or path = \"/var/lib/...\"".into(),
                ));
            }
            (_, Some(url), _) if !url.starts_with("http://") && !url.starts_with("https://") => {
                return Err(("url", format!("`{url}` is not an http(s) URL")));
            }
            _ => {}
        }
        if self.format == FeedFormat::Apiban {
            if self.path.is_some() {
                return Err(("path", "an apiban feed is fetched from its API: use url (or leave it out for apiban.org)".into()));
            }
            if self.api_key.is_none() && self.api_key_file.is_none() {
                return Err((
                    "api_key",
                    "apiban needs api_key or api_key_file (register at apiban.org)".into(),
                ));
            }
            if let Some(key) = &self.api_key
                && (key.is_empty()
                    || !key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            {
                return Err((
                    "api_key",
                    "an APIBAN key is letters, digits, - and _".into(),
                ));
            }
        }
        if self.refresh < Duration::from_secs(60) && self.url.is_some() {
            return Err((
                "refresh",
                "at least 1m: be kind to the feed's server".into(),
            ));
        }
        if self.min_prefix > 32 || self.min_prefix_v6 > 128 {
            return Err((
                "min_prefix",
                "at most 32 (IPv4) and 128 (min_prefix_v6)".into(),
            ));
        }
        if self.max_bytes == 0 {
            return Err(("max_bytes", "must be more than 0".into()));
        }
        Ok(())
    }
}

/// Checks every feed: the key (`blocklist[i].field`) and what to do.
pub(super) fn validate(feeds: &[BlocklistConfig]) -> Result<(), (String, String)> {
    if feeds.len() > pbxguard_common::MAX_FEEDS as usize {
        return Err((
            "blocklist".into(),
            format!("at most {} feeds", pbxguard_common::MAX_FEEDS),
        ));
    }
    for (i, feed) in feeds.iter().enumerate() {
        feed.validate()
            .map_err(|(k, m)| (format!("blocklist[{i}].{k}"), m))?;
        if feeds[..i].iter().any(|f| f.name == feed.name) {
            return Err((
                format!("blocklist[{i}].name"),
                format!("another feed is called `{}` already", feed.name),
            ));
        }
    }
    Ok(())
}

/// `[crowdsec]`: pbxguard as a CrowdSec bouncer.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CrowdsecConfig {
    /// The Local API, e.g. `http://127.0.0.1:8080/`.
    pub lapi_url: String,
    /// The bouncer key (`cscli bouncers add pbxguard`).
    #[serde(default)]
    pub api_key: Option<String>,
    /// The key in a file (kept out of the config).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// How often decisions are pulled.
    #[serde(default = "ten_seconds", with = "duration_serde")]
    pub poll: Duration,
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

impl CrowdsecConfig {
    /// The key: `api_key`, or the first line of `api_key_file`.
    pub fn key(&self) -> Result<String, String> {
        if let Some(key) = &self.api_key {
            return Ok(key.clone());
        }
        let path = self
            .api_key_file
            .as_ref()
            .ok_or("[crowdsec] needs api_key or api_key_file")?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("[crowdsec] api_key_file {}: {e}", path.display()))?;
        Ok(text.lines().next().unwrap_or("").trim().to_string())
    }

    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.lapi_url.starts_with("http://") && !self.lapi_url.starts_with("https://") {
            return Err((
                "crowdsec.lapi_url",
                format!(
                    "`{}` is not an http(s) URL (e.g. http://127.0.0.1:8080/)",
                    self.lapi_url
                ),
            ));
        }
        if self.api_key.is_none() == self.api_key_file.is_none() {
            return Err((
                "crowdsec.api_key",
                "give api_key or api_key_file (one of them): `cscli bouncers add pbxguard` prints a key".into(),
            ));
        }
        if self.poll < Duration::from_secs(1) {
            return Err(("crowdsec.poll", "at least 1s".into()));
        }
        Ok(())
    }
}
