//! Notifications on ban, unban and backend fallback: a webhook (JSON POST with timeout,
//! retries and a rate limit, so a scan does not become 10,000 requests) and an optional
//! command hook. They run on their own thread behind a bounded queue: a slow or dead
//! receiver never delays enforcement.

use std::{
    process::{Command, Stdio},
    sync::mpsc::{Receiver, SyncSender, TrySendError},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::units::{duration_serde, rfc3339};

/// The events `[notify] events` may name.
pub const EVENTS: [&str; 4] = ["ban", "unban", "fallback", "fraud"];

/// Most extra attempts per webhook delivery: with [`MAX_BACKOFF`] one dead receiver holds
/// the notification thread for a few minutes at worst.
pub const MAX_RETRIES: u32 = 10;

/// Longest wait between two webhook attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The wait before retry `attempt` (0-based): 0.5 s doubling up to [`MAX_BACKOFF`].
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500)
        .checked_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
        .map_or(MAX_BACKOFF, |d| d.min(MAX_BACKOFF))
}

/// `[notify]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// URL receiving a JSON POST per event (http or https).
    pub webhook: Option<String>,
    /// Program run per event, with `PBXGUARD_EVENT`, `PBXGUARD_NET`, `PBXGUARD_REASON`,
    /// `PBXGUARD_SOURCE`, `PBXGUARD_EXPIRES` in its environment.
    pub command: Option<String>,
    /// Which events: any of [`EVENTS`].
    pub events: Vec<String>,
    /// Give up on one delivery after this long.
    #[serde(with = "duration_serde")]
    pub timeout: Duration,
    /// Extra attempts after a failed delivery (with [`backoff`]), at most [`MAX_RETRIES`].
    pub retries: u32,
    /// At most this many notifications per minute; the rest are summed up in one
    /// `suppressed` notification.
    pub max_per_minute: u32,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            webhook: None,
            command: None,
            events: vec![
                "ban".into(),
                "unban".into(),
                "fallback".into(),
                "fraud".into(),
            ],
            timeout: Duration::from_secs(5),
            retries: 2,
            max_per_minute: 30,
        }
    }
}

/// One thing worth telling the admin about.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Notice {
    /// `ban`, `unban`, `fallback` or `suppressed`.
    pub event: String,
    /// The network, for ban and unban.
    pub net: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// `manual` or the filter.
    pub source: Option<String>,
    /// When the ban ends (`None`: permanent or not a ban).
    #[serde(with = "rfc3339::option")]
    pub expires: Option<SystemTime>,
    /// When it happened.
    #[serde(with = "rfc3339")]
    pub time: SystemTime,
    /// For `suppressed`: how many notifications the rate limit swallowed.
    pub count: Option<u64>,
    /// For `fraud`: which rule, extension, number dialled and country.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub fraud: Option<FraudDetail>,
}

/// What a `fraud` notice adds: who called where, and which rule fired.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FraudDetail {
    /// The rule (`high_risk_rate`, ...).
    pub rule: String,
    /// The extension that placed the call.
    pub extension: String,
    /// The number as dialled.
    pub destination: String,
    /// Destination country (ISO code), when known.
    pub country: Option<String>,
    /// `international`, `high_risk`, `premium`, `domestic`.
    pub class: String,
}

impl Notice {
    /// A notice of `event` about `net`.
    pub fn new(
        event: &str,
        net: Option<String>,
        reason: Option<String>,
        source: Option<String>,
        expires: Option<SystemTime>,
    ) -> Notice {
        Notice {
            event: event.into(),
            net,
            reason,
            source,
            expires,
            time: SystemTime::now(),
            count: None,
            fraud: None,
        }
    }
}

/// The sending side, held by the engine.
#[derive(Clone, Debug)]
pub struct Alerts {
    queue: SyncSender<Notice>,
    events: Vec<String>,
}

impl Alerts {
    /// Queues a notice if its event is wanted; never blocks (a full queue drops it).
    pub fn send(&self, notice: Notice) {
        if !self.events.contains(&notice.event) {
            return;
        }
        match self.queue.try_send(notice) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!("notification queue full; dropping a notification")
            }
        }
    }
}

/// Starts the sender thread if a webhook or command is configured.
pub fn start(config: &NotifyConfig) -> Option<(Alerts, JoinHandle<()>)> {
    if config.webhook.is_none() && config.command.is_none() {
        return None;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1024);
    let settings = config.clone();
    let thread = std::thread::Builder::new()
        .name("notify".into())
        .spawn(move || run(rx, &settings))
        .expect("spawn notify thread");
    Some((
        Alerts {
            queue: tx,
            events: config.events.clone(),
        },
        thread,
    ))
}

fn run(rx: Receiver<Notice>, config: &NotifyConfig) {
    let agent = ureq::AgentBuilder::new().timeout(config.timeout).build();
    let mut window = Instant::now();
    let mut sent = 0u32;
    let mut suppressed = 0u64;
    loop {
        // Wake at least every few seconds to flush a pending `suppressed` summary.
        let notice = match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(n) => Some(n),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if window.elapsed() >= Duration::from_secs(60) {
            window = Instant::now();
            sent = 0;
            if suppressed > 0 {
                let summary = Notice {
                    count: Some(suppressed),
                    ..Notice::new("suppressed", None, None, None, None)
                };
                deliver(&agent, config, &summary);
                sent += 1;
                suppressed = 0;
            }
        }
        let Some(notice) = notice else { continue };
        if sent >= config.max_per_minute {
            suppressed += 1;
            continue;
        }
        sent += 1;
        deliver(&agent, config, &notice);
    }
}

fn deliver(agent: &ureq::Agent, config: &NotifyConfig, notice: &Notice) {
    if let Some(url) = &config.webhook {
        let body = json!(notice);
        for attempt in 0..=config.retries {
            match agent.post(url).send_json(body.clone()) {
                Ok(_) => break,
                Err(e) if attempt == config.retries => {
                    tracing::warn!(url, error = %e, "webhook failed; giving up on this notification")
                }
                Err(_) => std::thread::sleep(backoff(attempt)),
            }
        }
    }
    if let Some(command) = &config.command {
        let env = [
            ("PBXGUARD_EVENT", Some(notice.event.clone())),
            ("PBXGUARD_NET", notice.net.clone()),
            ("PBXGUARD_REASON", notice.reason.clone()),
            ("PBXGUARD_SOURCE", notice.source.clone()),
            ("PBXGUARD_EXPIRES", notice.expires.map(rfc3339::format)),
            (
                "PBXGUARD_RULE",
                notice.fraud.as_ref().map(|f| f.rule.clone()),
            ),
            (
                "PBXGUARD_EXTENSION",
                notice.fraud.as_ref().map(|f| f.extension.clone()),
            ),
            (
                "PBXGUARD_DESTINATION",
                notice.fraud.as_ref().map(|f| f.destination.clone()),
            ),
            (
                "PBXGUARD_COUNTRY",
                notice.fraud.as_ref().and_then(|f| f.country.clone()),
            ),
        ];
        let mut cmd = Command::new(command);
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        for (key, value) in env {
            cmd.env(key, value.unwrap_or_default());
        }
        match cmd.spawn() {
            Ok(mut child) => {
                let deadline = Instant::now() + config.timeout;
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) => break,
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        _ => {
                            let _ = child.kill();
                            let _ = child.wait();
                            tracing::warn!(command, "notification command timed out; killed");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(command, error = %e, "notification command could not run"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_stays_at_the_cap() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(5), Duration::from_secs(16));
        // Doubling 500 ms 70 times overflowed Duration (a panic in the notify thread).
        for attempt in [6, 31, 32, 33, 64, 70, u32::MAX] {
            assert_eq!(backoff(attempt), MAX_BACKOFF, "{attempt}");
        }
        for attempt in 0..100 {
            assert!(backoff(attempt) <= backoff(attempt + 1));
        }
    }
}
