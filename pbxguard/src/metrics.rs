//! Prometheus metrics on `[metrics] listen` (e.g. `127.0.0.1:9771`): bans, verdicts, lines
//! and matches, and how fast a failure becomes a ban. Plain text exposition format over a
//! minimal HTTP/1.1 responder (GET /metrics); names follow Prometheus conventions.

use std::{collections::BTreeMap, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use crate::{
    enforce::Counters,
    engine::{Snapshot, actor::EngineHandle},
};

/// Upper bounds (seconds) of the time-to-ban histogram buckets.
pub const BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// A cumulative histogram in the Prometheus sense.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&mut self, value: Duration) {
        let secs = value.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if secs <= *bound {
                *count += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// Detection counters the engine keeps for metrics.
#[derive(Debug, Clone, Default)]
pub struct DetectionMetrics {
    /// Matches per (filter, rule).
    pub matches: BTreeMap<(String, String), u64>,
    /// From a failure line being read to its ban being enforced.
    pub time_to_ban: Histogram,
}

pub(crate) fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text, from the published snapshot and the kernel's counters.
pub fn render(snapshot: &Snapshot, counters: &dyn Counters) -> String {
    let mut out = String::new();
    let status = snapshot.status();
    let mut w = |text: String| out.push_str(&text);
    w(format!(
        "# HELP pbxguard_up Whether the daemon is running.\n# TYPE pbxguard_up gauge\npbxguard_up{{backend=\"{}\"}} 1\n",
        status.backend
    ));
    w(format!(
        "# HELP pbxguard_uptime_seconds Seconds since the daemon started.\n# TYPE pbxguard_uptime_seconds gauge\npbxguard_uptime_seconds {}\n",
        status.uptime_secs
    ));
    w(format!(
        "# HELP pbxguard_bans_active Bans in force.\n# TYPE pbxguard_bans_active gauge\npbxguard_bans_active {}\n",
        status.bans
    ));
    let mut by_source: BTreeMap<String, u64> = BTreeMap::new();
    for ban in snapshot.bans.iter() {
        *by_source.entry(ban.source.clone()).or_default() += 1;
    }
    w("# HELP pbxguard_bans_by_source Bans in force by what made them (manual or the filter).\n# TYPE pbxguard_bans_by_source gauge\n".into());
    for (source, count) in by_source {
        w(format!(
            "pbxguard_bans_by_source{{source=\"{}\"}} {count}\n",
            label(&source)
        ));
    }
    if let Ok(stats) = counters.read() {
        w("# HELP pbxguard_packets_total Packets by verdict reason.\n# TYPE pbxguard_packets_total counter\n".into());
        for r in &stats {
            w(format!(
                "pbxguard_packets_total{{reason=\"{}\",action=\"{}\"}} {}\n",
                r.reason, r.action, r.packets
            ));
        }
        w("# HELP pbxguard_bytes_total Bytes by verdict reason.\n# TYPE pbxguard_bytes_total counter\n".into());
        for r in &stats {
            w(format!(
                "pbxguard_bytes_total{{reason=\"{}\",action=\"{}\"}} {}\n",
                r.reason, r.action, r.bytes
            ));
        }
    }
    w("# HELP pbxguard_source_lines_total Log lines read per source.\n# TYPE pbxguard_source_lines_total counter\n".into());
    for s in &status.sources {
        w(format!(
            "pbxguard_source_lines_total{{source=\"{}\"}} {}\n",
            label(&s.name),
            s.lines
        ));
    }
    let detection = &snapshot.detection;
    w("# HELP pbxguard_matches_total Failures recognised per filter and rule.\n# TYPE pbxguard_matches_total counter\n".into());
    for ((filter, rule), count) in &detection.matches {
        w(format!(
            "pbxguard_matches_total{{filter=\"{}\",rule=\"{}\"}} {count}\n",
            label(filter),
            label(rule)
        ));
    }
    w(format!(
        "# HELP pbxguard_ignored_failures_total Failures from protected addresses, never counted.\n# TYPE pbxguard_ignored_failures_total counter\npbxguard_ignored_failures_total {}\n",
        status.ignored_failures
    ));
    w(format!(
        "# HELP pbxguard_ignored_spoofable_total Spoofable evidence against known addresses, never counted.\n# TYPE pbxguard_ignored_spoofable_total counter\npbxguard_ignored_spoofable_total {}\n",
        status.ignored_spoofable
    ));
    w(format!(
        "# HELP pbxguard_known_addresses Addresses known from success lines.\n# TYPE pbxguard_known_addresses gauge\npbxguard_known_addresses {}\n",
        status.known
    ));
    if !status.feeds.is_empty() {
        w("# HELP pbxguard_feed_entries Blocklist entries enforced, per feed.\n# TYPE pbxguard_feed_entries gauge\n".into());
        for feed in &status.feeds {
            w(format!(
                "pbxguard_feed_entries{{feed=\"{}\"}} {}\n",
                label(&feed.name),
                feed.entries
            ));
        }
        w("# HELP pbxguard_feed_refused Blocklist entries refused (protected, too wide), per feed.\n# TYPE pbxguard_feed_refused gauge\n".into());
        for feed in &status.feeds {
            w(format!(
                "pbxguard_feed_refused{{feed=\"{}\"}} {}\n",
                label(&feed.name),
                feed.refused
            ));
        }
        w("# HELP pbxguard_feed_refresh_ok Whether the last refresh of a feed succeeded.\n# TYPE pbxguard_feed_refresh_ok gauge\n".into());
        for feed in &status.feeds {
            w(format!(
                "pbxguard_feed_refresh_ok{{feed=\"{}\"}} {}\n",
                label(&feed.name),
                u8::from(feed.last_error.is_none())
            ));
        }
        if let Ok(dropped) = counters.feeds()
            && !dropped.is_empty()
        {
            w("# HELP pbxguard_feed_dropped_packets_total Packets dropped because a feed lists the source.\n# TYPE pbxguard_feed_dropped_packets_total counter\n".into());
            for (feed, (packets, _)) in status.feeds.iter().zip(dropped) {
                w(format!(
                    "pbxguard_feed_dropped_packets_total{{feed=\"{}\"}} {packets}\n",
                    label(&feed.name)
                ));
            }
        }
    }
    if let Some(fraud) = &snapshot.fraud {
        w("# HELP pbxguard_fraud_calls_total Calls read from the call records, by destination class.\n# TYPE pbxguard_fraud_calls_total counter\n".into());
        for (class, count) in &fraud.calls {
            w(format!(
                "pbxguard_fraud_calls_total{{class=\"{}\"}} {count}\n",
                class.as_str()
            ));
        }
        w("# HELP pbxguard_fraud_hits_total Toll-fraud rule hits, by rule.\n# TYPE pbxguard_fraud_hits_total counter\n".into());
        for (rule, count) in &fraud.hits {
            w(format!(
                "pbxguard_fraud_hits_total{{rule=\"{}\"}} {count}\n",
                label(rule)
            ));
        }
    }
    if let Some(cluster) = &status.cluster {
        w(crate::cluster::metrics(cluster));
    }
    w("# HELP pbxguard_time_to_ban_seconds From a failure being read to its ban being enforced.\n# TYPE pbxguard_time_to_ban_seconds histogram\n".into());
    let h = &detection.time_to_ban;
    for (bound, count) in BUCKETS.iter().zip(h.counts.iter()) {
        w(format!(
            "pbxguard_time_to_ban_seconds_bucket{{le=\"{bound}\"}} {count}\n"
        ));
    }
    w(format!(
        "pbxguard_time_to_ban_seconds_bucket{{le=\"+Inf\"}} {}\npbxguard_time_to_ban_seconds_sum {}\npbxguard_time_to_ban_seconds_count {}\n",
        h.count, h.sum, h.count
    ));
    out
}

/// Serves GET /metrics until the listener is dropped.
pub async fn serve(listener: TcpListener, engine: EngineHandle) {
    loop {
        let (mut stream, _) =
            crate::control::accept_with_backoff("metrics endpoint", || listener.accept()).await;
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let response = if request.starts_with("GET ") && (path == "/metrics" || path == "/") {
                let body = tokio::task::spawn_blocking(move || {
                    render(&engine.snapshot(), engine.counters().as_ref())
                })
                .await
                .unwrap_or_default();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
