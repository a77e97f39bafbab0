//! Prometheus metrics on `[metrics] listen` (e.g. `127.0.0.1:9771`): bans, verdicts, lines
//! and matches, and how fast a failure becomes a ban.
//!
//! The text is OpenMetrics, written by `prometheus-client` (the Prometheus project's Rust
//! client): label escaping, counters' `_total`, histogram buckets and `# EOF` come from the
//! reference encoder instead of hand-made strings. Each scrape copies what it shows out of
//! the engine's published snapshot into one [`Collector`], so the engine keeps plain
//! numbers ([`DetectionMetrics`]) that are cheap to clone into every snapshot, and nothing
//! is registered or shared between threads.
//!
//! It is served by hyper's HTTP/1.1 server on the main tokio runtime (GET and HEAD on
//! `/metrics` and `/`, keep-alive, 404 and 405), with limits so that neither a scraper nor a
//! scanner can hold the endpoint: request heads of at most 8 KiB and 32 headers, a head
//! within 5 s (which also closes a keep-alive connection idle for 5 s), 60 s per connection
//! and at most 64 connections at once.

use std::{collections::BTreeMap, convert::Infallible, fmt, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric as _, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use tokio::{net::TcpListener, sync::Semaphore};

use crate::{
    cluster::ClusterStatus,
    enforce::{Counters, ReasonStats},
    engine::{Snapshot, actor::EngineHandle},
    fraud::FraudReport,
};

/// Upper bounds (seconds) of the time-to-ban histogram buckets.
pub const BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// The `Content-Type` of the exposition: OpenMetrics text, which Prometheus asks for first.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A time-to-ban histogram as plain numbers. The engine copies it into every snapshot;
/// prometheus-client's `Histogram` sits behind an `Arc` and a lock, so a published snapshot
/// would keep changing with it.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is above every bound (`+Inf`).
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&mut self, value: Duration) {
        let secs = value.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += secs;
        self.count += 1;
    }

    /// (upper bound, observations in that bucket), the form prometheus-client encodes.
    fn buckets(&self) -> Vec<(f64, u64)> {
        BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts)
            .collect()
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

/// Escapes a label value for hand-written exposition lines (`cluster::metrics`);
/// prometheus-client escapes its own.
pub(crate) fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One blocklist feed's numbers.
#[derive(Debug, Default)]
struct Feed {
    name: String,
    entries: usize,
    refused: usize,
    refresh_ok: bool,
    /// Packets dropped because the feed lists the source; `None` where the backend cannot
    /// tell feeds apart.
    dropped: Option<u64>,
}

/// What one scrape shows, copied out of the snapshot and the kernel's counters (a
/// [`Collector`] must own its data).
#[derive(Debug, Default)]
struct Scrape {
    backend: &'static str,
    uptime_secs: u64,
    bans: usize,
    bans_by_source: BTreeMap<String, u64>,
    /// `None` when the counters could not be read: the families are left out.
    verdicts: Option<Vec<ReasonStats>>,
    source_lines: Vec<(String, u64)>,
    detection: DetectionMetrics,
    ignored_failures: u64,
    ignored_spoofable: u64,
    known: usize,
    feeds: Vec<Feed>,
    fraud: Option<Arc<FraudReport>>,
    cluster: Option<ClusterStatus>,
}

impl Scrape {
    fn new(snapshot: &Snapshot, counters: &dyn Counters) -> Scrape {
        let status = snapshot.status();
        let mut bans_by_source: BTreeMap<String, u64> = BTreeMap::new();
        for ban in snapshot.bans.iter() {
            *bans_by_source.entry(ban.source.clone()).or_default() += 1;
        }
        let dropped = if status.feeds.is_empty() {
            Vec::new()
        } else {
            counters.feeds().unwrap_or_default()
        };
        let feeds = status
            .feeds
            .iter()
            .enumerate()
            .map(|(i, feed)| Feed {
                name: feed.name.clone(),
                entries: feed.entries,
                refused: feed.refused,
                refresh_ok: feed.last_error.is_none(),
                dropped: dropped.get(i).map(|(packets, _)| *packets),
            })
            .collect();
        Scrape {
            backend: status.backend,
            uptime_secs: status.uptime_secs,
            bans: status.bans,
            bans_by_source,
            verdicts: counters.read().ok(),
            source_lines: status
                .sources
                .into_iter()
                .map(|s| (s.name, s.lines))
                .collect(),
            detection: snapshot.detection.clone(),
            ignored_failures: status.ignored_failures,
            ignored_spoofable: status.ignored_spoofable,
            known: status.known,
            feeds,
            fraud: snapshot.fraud.clone(),
            cluster: status.cluster,
        }
    }
}

/// Writes metric families through prometheus-client's encoder.
struct Families<'a>(DescriptorEncoder<'a>);

impl Families<'_> {
    fn gauge(&mut self, name: &str, help: &str, value: impl EncodeGaugeValue) -> fmt::Result {
        ConstGauge::new(value).encode(self.0.encode_descriptor(
            name,
            help,
            None,
            MetricType::Gauge,
        )?)
    }

    /// A counter registered under its base name: the encoder adds `_total`.
    fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        ConstCounter::new(value).encode(self.0.encode_descriptor(
            name,
            help,
            None,
            MetricType::Counter,
        )?)
    }

    /// A gauge family with one label.
    fn gauges<'v, V: EncodeGaugeValue>(
        &mut self,
        name: &str,
        help: &str,
        key: &str,
        rows: impl IntoIterator<Item = (&'v str, V)>,
    ) -> fmt::Result {
        let mut family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (value, number) in rows {
            ConstGauge::new(number).encode(family.encode_family(&[(key, value)])?)?;
        }
        Ok(())
    }

    /// A counter family; each row has its label pairs.
    fn counters<'v, const N: usize>(
        &mut self,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = ([(&'v str, &'v str); N], u64)>,
    ) -> fmt::Result {
        let mut family = self
            .0
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, number) in rows {
            ConstCounter::new(number).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl Collector for Scrape {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let mut f = Families(encoder);
        f.gauges(
            "pbxguard_up",
            "Whether the daemon is running.",
            "backend",
            [(self.backend, 1)],
        )?;
        f.gauge(
            "pbxguard_uptime_seconds",
            "Seconds since the daemon started.",
            self.uptime_secs,
        )?;
        f.gauge("pbxguard_bans_active", "Bans in force.", self.bans)?;
        f.gauges(
            "pbxguard_bans_by_source",
            "Bans in force by what made them (manual or the filter).",
            "source",
            self.bans_by_source.iter().map(|(s, n)| (s.as_str(), *n)),
        )?;
        if let Some(verdicts) = &self.verdicts {
            let rows = |bytes: bool| {
                verdicts.iter().map(move |r| {
                    (
                        [("reason", r.reason), ("action", r.action)],
                        if bytes { r.bytes } else { r.packets },
                    )
                })
            };
            f.counters(
                "pbxguard_packets",
                "Packets by verdict reason.",
                rows(false),
            )?;
            f.counters("pbxguard_bytes", "Bytes by verdict reason.", rows(true))?;
        }
        f.counters(
            "pbxguard_source_lines",
            "Log lines read per source.",
            self.source_lines
                .iter()
                .map(|(s, n)| ([("source", s.as_str())], *n)),
        )?;
        f.counters(
            "pbxguard_matches",
            "Failures recognised per filter and rule.",
            self.detection
                .matches
                .iter()
                .map(|((filter, rule), n)| ([("filter", filter.as_str()), ("rule", rule)], *n)),
        )?;
        f.counter(
            "pbxguard_ignored_failures",
            "Failures from protected addresses, never counted.",
            self.ignored_failures,
        )?;
        f.counter(
            "pbxguard_ignored_spoofable",
            "Spoofable evidence against known addresses, never counted.",
            self.ignored_spoofable,
        )?;
        f.gauge(
            "pbxguard_known_addresses",
            "Addresses known from success lines.",
            self.known,
        )?;
        if !self.feeds.is_empty() {
            f.gauges(
                "pbxguard_feed_entries",
                "Blocklist entries enforced, per feed.",
                "feed",
                self.feeds.iter().map(|x| (x.name.as_str(), x.entries)),
            )?;
            f.gauges(
                "pbxguard_feed_refused",
                "Blocklist entries refused (protected, too wide), per feed.",
                "feed",
                self.feeds.iter().map(|x| (x.name.as_str(), x.refused)),
            )?;
            f.gauges(
                "pbxguard_feed_refresh_ok",
                "Whether the last refresh of a feed succeeded.",
                "feed",
                self.feeds
                    .iter()
                    .map(|x| (x.name.as_str(), u32::from(x.refresh_ok))),
            )?;
            if self.feeds.iter().any(|x| x.dropped.is_some()) {
                f.counters(
                    "pbxguard_feed_dropped_packets",
                    "Packets dropped because a feed lists the source.",
                    self.feeds
                        .iter()
                        .filter_map(|x| Some(([("feed", x.name.as_str())], x.dropped?))),
                )?;
            }
        }
        if let Some(fraud) = &self.fraud {
            f.counters(
                "pbxguard_fraud_calls",
                "Calls read from the call records, by destination class.",
                fraud
                    .calls
                    .iter()
                    .map(|(class, n)| ([("class", class.as_str())], *n)),
            )?;
            f.counters(
                "pbxguard_fraud_hits",
                "Toll-fraud rule hits, by rule.",
                fraud
                    .hits
                    .iter()
                    .map(|(rule, n)| ([("rule", rule.as_str())], *n)),
            )?;
        }
        if let Some(cluster) = &self.cluster {
            // The same families as `crate::cluster::metrics`.
            f.gauge(
                "pbxguard_cluster_connected",
                "Whether the NATS link is up.",
                u32::from(cluster.connected),
            )?;
            f.gauge(
                "pbxguard_cluster_last_sequence",
                "The last stream sequence consumed.",
                cluster.last_sequence,
            )?;
            f.counter(
                "pbxguard_cluster_published",
                "Bans and unbans this node published.",
                cluster.published,
            )?;
            f.counter(
                "pbxguard_cluster_received",
                "Peers' messages received.",
                cluster.received,
            )?;
            f.counter(
                "pbxguard_cluster_applied",
                "Peers' bans applied here.",
                cluster.applied,
            )?;
            f.counter(
                "pbxguard_cluster_refused",
                "Peers' bans refused here.",
                cluster.refused,
            )?;
            f.counter(
                "pbxguard_cluster_malformed",
                "Messages that could not be read.",
                cluster.malformed,
            )?;
            f.gauges(
                "pbxguard_cluster_peer_bans",
                "Peers' bans in force here, per node.",
                "node",
                cluster
                    .peers
                    .iter()
                    .map(|(node, peer)| (node.as_str(), peer.bans)),
            )?;
        }
        let h = &self.detection.time_to_ban;
        f.0.encode_descriptor(
            "pbxguard_time_to_ban_seconds",
            "From a failure being read to its ban being enforced.",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets(), None)
    }
}

/// The exposition text, from the published snapshot and the kernel's counters.
pub fn render(snapshot: &Snapshot, counters: &dyn Counters) -> String {
    encode(Scrape::new(snapshot, counters))
}

fn encode(scrape: Scrape) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    // Writing to a String fails only if a metric's encoder does, which ours never do.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "encoding the metrics failed");
    }
    out
}

/// Connections served at once; one more is closed as soon as it is accepted.
const MAX_CONNECTIONS: usize = 64;
/// A request's head must arrive within this; an idle keep-alive connection is closed after it.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head (request line and headers); a scrape sends a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// The most headers a request may have.
const MAX_HEADERS: usize = 32;
/// After this a connection is closed once its current response is out...
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);
/// ...or dropped if that response is not taken within this.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Makes the exposition text (on a blocking thread: the nft backend runs `nft`).
type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves the metrics until the task is aborted.
pub async fn serve(listener: TcpListener, engine: EngineHandle) {
    serve_with(
        listener,
        Arc::new(move || render(&engine.snapshot(), engine.counters().as_ref())),
    )
    .await;
}

/// The HTTP server around any exposition (tests give their own).
async fn serve_with(listener: TcpListener, render: Render) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_header_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    loop {
        let (stream, peer) =
            crate::control::accept_with_backoff("metrics endpoint", || listener.accept()).await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics endpoint busy; connection closed");
            continue;
        };
        let render = render.clone();
        let service = service_fn(move |request| respond(request, render.clone()));
        let connection = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                () = tokio::time::sleep(MAX_CONNECTION_AGE) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
        });
    }
}

/// GET or HEAD on `/metrics` (or `/`): the exposition; other paths 404, other methods 405.
async fn respond(
    request: Request<Incoming>,
    render: Render,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, text: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    if !matches!(request.uri().path(), "/metrics" | "/") {
        return Ok(reply(StatusCode::NOT_FOUND, "not found: try /metrics\n"));
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    // HEAD gets the same headers (Content-Length included); hyper leaves out the body.
    let Ok(text) = tokio::task::spawn_blocking(move || render()).await else {
        return Ok(reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be rendered\n",
        ));
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
        net::TcpStream,
    };

    use super::*;
    use crate::cluster::PeerStatus;

    fn scrape() -> Scrape {
        let mut detection = DetectionMetrics::default();
        detection
            .matches
            .insert(("sshd".into(), "failed_password".into()), 2);
        detection.time_to_ban.observe(Duration::from_micros(300));
        detection.time_to_ban.observe(Duration::from_millis(7));
        detection.time_to_ban.observe(Duration::from_secs(3));
        let mut cluster = ClusterStatus {
            connected: true,
            last_sequence: 42,
            published: 3,
            refused: 2,
            ..Default::default()
        };
        cluster.peers.insert(
            "pbx-b".into(),
            PeerStatus {
                bans: 7,
                ..Default::default()
            },
        );
        Scrape {
            backend: "xdp",
            uptime_secs: 12,
            bans: 2,
            bans_by_source: [("manual".into(), 1), ("sshd".into(), 1)].into(),
            verdicts: Some(vec![ReasonStats {
                reason: "banned",
                action: "drop",
                packets: 5,
                bytes: 300,
            }]),
            source_lines: vec![("/var/log/a \"b\"\\c".into(), 9)],
            detection,
            ignored_failures: 4,
            ignored_spoofable: 1,
            known: 3,
            feeds: vec![Feed {
                name: "spamhaus".into(),
                entries: 10,
                refused: 1,
                refresh_ok: true,
                dropped: Some(6),
            }],
            fraud: Some(Arc::new(FraudReport {
                hits: [("burst".to_string(), 1)].into(),
                ..Default::default()
            })),
            cluster: Some(cluster),
        }
    }

    #[test]
    fn every_family_keeps_its_name_type_and_labels() {
        let text = encode(scrape());
        for line in [
            "# TYPE pbxguard_up gauge",
            "pbxguard_up{backend=\"xdp\"} 1",
            "pbxguard_uptime_seconds 12",
            "pbxguard_bans_active 2",
            "pbxguard_bans_by_source{source=\"manual\"} 1",
            "pbxguard_bans_by_source{source=\"sshd\"} 1",
            "# TYPE pbxguard_packets counter",
            "pbxguard_packets_total{reason=\"banned\",action=\"drop\"} 5",
            "pbxguard_bytes_total{reason=\"banned\",action=\"drop\"} 300",
            "pbxguard_source_lines_total{source=\"/var/log/a \\\"b\\\"\\\\c\"} 9",
            "pbxguard_matches_total{filter=\"sshd\",rule=\"failed_password\"} 2",
            "pbxguard_ignored_failures_total 4",
            "pbxguard_ignored_spoofable_total 1",
            "pbxguard_known_addresses 3",
            "pbxguard_feed_entries{feed=\"spamhaus\"} 10",
            "pbxguard_feed_refused{feed=\"spamhaus\"} 1",
            "pbxguard_feed_refresh_ok{feed=\"spamhaus\"} 1",
            "pbxguard_feed_dropped_packets_total{feed=\"spamhaus\"} 6",
            "pbxguard_fraud_hits_total{rule=\"burst\"} 1",
            "# TYPE pbxguard_fraud_calls counter",
            "# HELP pbxguard_time_to_ban_seconds From a failure being read to its ban being enforced.",
            "# TYPE pbxguard_time_to_ban_seconds histogram",
            "pbxguard_time_to_ban_seconds_bucket{le=\"0.0005\"} 1",
            "pbxguard_time_to_ban_seconds_bucket{le=\"0.005\"} 1",
            "pbxguard_time_to_ban_seconds_bucket{le=\"0.01\"} 2",
            "pbxguard_time_to_ban_seconds_bucket{le=\"1.0\"} 2",
            "pbxguard_time_to_ban_seconds_bucket{le=\"+Inf\"} 3",
            "pbxguard_time_to_ban_seconds_count 3",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        let buckets = text
            .lines()
            .filter(|l| l.starts_with("pbxguard_time_to_ban_seconds_bucket"))
            .count();
        assert_eq!(buckets, BUCKETS.len() + 1);
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("pbxguard_time_to_ban_seconds_sum "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 3.0073).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn cluster_families_match_the_cluster_modules_own() {
        let text = encode(scrape());
        let cluster = crate::cluster::metrics(scrape().cluster.as_ref().unwrap());
        for line in cluster.lines().filter(|l| !l.starts_with('#')) {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        for kind in [
            "# TYPE pbxguard_cluster_connected gauge",
            "# TYPE pbxguard_cluster_published counter",
            "# TYPE pbxguard_cluster_peer_bans gauge",
        ] {
            assert!(text.lines().any(|l| l == kind), "{kind} missing:\n{text}");
        }
    }

    #[test]
    fn optional_families_are_left_out_without_their_source() {
        let text = encode(Scrape::default());
        for absent in [
            "pbxguard_packets",
            "pbxguard_feed_",
            "pbxguard_fraud_",
            "pbxguard_cluster_",
        ] {
            assert!(!text.contains(absent), "{absent} in:\n{text}");
        }
        assert!(text.contains("pbxguard_time_to_ban_seconds_count 0\n"));
    }

    /// One response: status line, headers (lower-cased names) and body.
    struct Answer {
        status: u16,
        headers: BTreeMap<String, String>,
        body: String,
    }

    async fn answer(reader: &mut BufReader<TcpStream>, head: bool) -> Answer {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let status = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("status line {line:?}"))
            .parse()
            .unwrap();
        let mut headers = BTreeMap::new();
        loop {
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            let Some((name, value)) = line.trim_end().split_once(':') else {
                break;
            };
            headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
        }
        let length: usize = headers["content-length"].parse().unwrap();
        let mut body = vec![0; if head { 0 } else { length }];
        reader.read_exact(&mut body).await.unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8(body).unwrap(),
        }
    }

    async fn server() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_with(listener, Arc::new(|| encode(scrape()))));
        addr
    }

    #[tokio::test]
    async fn get_head_404_and_405_on_one_keep_alive_connection() {
        let addr = server().await;
        let mut conn = BufReader::new(TcpStream::connect(addr).await.unwrap());
        let mut ask = async |request: &str, head: bool| {
            conn.get_mut().write_all(request.as_bytes()).await.unwrap();
            answer(&mut conn, head).await
        };

        let get = ask("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", false).await;
        assert_eq!(get.status, 200);
        assert_eq!(get.headers["content-type"], CONTENT_TYPE);
        assert!(
            get.body.contains("\npbxguard_bans_active 2\n"),
            "{}",
            get.body
        );
        assert!(get.body.ends_with("# EOF\n"));

        let head = ask("HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", true).await;
        assert_eq!(head.status, 200);
        assert_eq!(head.headers["content-length"], get.body.len().to_string());
        assert_eq!(head.headers["content-type"], CONTENT_TYPE);

        // A second GET right after the HEAD: no body was sent for the HEAD.
        let again = ask("GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", false).await;
        assert_eq!(again.status, 200);
        assert!(again.body.contains("pbxguard_up{backend=\"xdp\"} 1"));

        assert_eq!(
            ask("GET /other HTTP/1.1\r\nHost: x\r\n\r\n", false)
                .await
                .status,
            404
        );
        let post = ask(
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
            false,
        )
        .await;
        assert_eq!(post.status, 405);
        assert_eq!(post.headers["allow"], "GET, HEAD");
        let last = ask(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            false,
        )
        .await;
        assert_eq!(last.status, 200);
        let mut rest = String::new();
        conn.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "", "closed after Connection: close");
    }

    #[tokio::test]
    async fn idle_slow_and_oversized_clients_are_cut_off() {
        let addr = server().await;
        // HTTP/1.0 (as `pbxguard top` asks): the answer, then the server closes.
        let mut old = TcpStream::connect(addr).await.unwrap();
        old.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(2), old.read_to_string(&mut text))
            .await
            .expect("closed after an HTTP/1.0 answer")
            .unwrap();
        assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
        assert!(
            text.contains("pbxguard_matches_total{filter=\"sshd\",rule=\"failed_password\"} 2")
        );

        // A head of more than 8 KiB is refused.
        let mut big = BufReader::new(TcpStream::connect(addr).await.unwrap());
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        big.get_mut().write_all(request.as_bytes()).await.unwrap();
        let mut line = String::new();
        big.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("HTTP/1.1 431"), "{line}");

        // An HTTP/1.1 client that reads to the end (tests/operate.rs does) gets its answer and
        // then the close of an idle keep-alive connection; so does one that never sends a head.
        let started = tokio::time::Instant::now();
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let mut silent = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        tokio::time::timeout(HEAD_TIMEOUT * 2, idle.read_to_string(&mut text))
            .await
            .expect("an idle keep-alive connection is closed")
            .unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        let mut nothing = Vec::new();
        tokio::time::timeout(HEAD_TIMEOUT * 2, silent.read_to_end(&mut nothing))
            .await
            .expect("a silent connection is closed")
            .ok();
        assert!(started.elapsed() >= HEAD_TIMEOUT - Duration::from_millis(100));
    }
}
