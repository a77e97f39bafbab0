//! `pbxguard top`: a live view of the running daemon for an admin on SSH during an attack.
//!
//! Everything comes from the control socket (`status`, `stats`, `bans list`), read once a
//! second on a thread of its own so the screen keeps answering keys while the daemon is slow
//! or gone; rates are deltas between consecutive reads. Per-filter match counters live only
//! in the metrics, so with `[metrics] listen` set they are scraped from there too. Plain ANSI
//! through crossterm, no mouse: it works in any SSH session.

use std::{
    collections::{BTreeMap, HashMap},
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::mpsc::{self, Receiver, Sender},
    time::{Duration, Instant, SystemTime},
};

use ipnet::IpNet;
use ratatui::{
    Frame,
    crossterm::{
        cursor,
        event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
        execute,
    },
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Cell, Paragraph, Row, Table, Wrap},
};
use serde_json::Value;

use super::{Exit, output::clean};
use crate::{
    config::Config,
    control::{self, Request},
};

/// How often the daemon is read.
const REFRESH: Duration = Duration::from_secs(1);
/// Above this many bans the list (a JSON array of every ban) is re-read only when the ban
/// count changes or every [`SLOW_BANS`]: a million bans are hundreds of MB per read.
const MANY_BANS: u64 = 20_000;
/// See [`MANY_BANS`].
const SLOW_BANS: Duration = Duration::from_secs(10);
/// How long a metrics scrape may take before the per-filter panel falls back to sources.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(500);

/// Runs the live view until `q`, Esc or Ctrl-C; the terminal is restored on every exit,
/// panics included (ratatui's hook).
pub(super) fn run(socket: PathBuf, config: &Path) -> Exit {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        eprintln!("pbxguard: top needs a terminal; use `pbxguard status` in scripts");
        return Exit::Failure;
    }
    // Optional: without a readable config the attack panel shows sources, not filters.
    let metrics = Config::load(config).ok().and_then(|c| c.metrics.listen);
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("top-reader".into())
        .spawn(move || read_loop(&socket, metrics, &tx))
        .expect("spawn the reader thread");
    let mut terminal = match ratatui::try_init() {
        Ok(terminal) => terminal,
        Err(e) => {
            ratatui::restore();
            eprintln!("pbxguard: cannot set up the terminal: {e}");
            return Exit::Failure;
        }
    };
    let result = ui_loop(&mut terminal, &rx);
    ratatui::restore();
    let _ = execute!(std::io::stdout(), cursor::Show);
    match result {
        Ok(()) => Exit::Success,
        Err(e) => {
            eprintln!("pbxguard: terminal: {e}");
            Exit::Failure
        }
    }
}

/// Draws and answers keys until the admin quits.
fn ui_loop(terminal: &mut ratatui::DefaultTerminal, rx: &Receiver<Reading>) -> std::io::Result<()> {
    let mut view = View::default();
    loop {
        while let Ok(reading) = rx.try_recv() {
            view.update(reading);
        }
        terminal.draw(|frame| view.draw(frame))?;
        if event::poll(Duration::from_millis(200))?
            && let Event::Key(key) = event::read()?
            && key.kind != KeyEventKind::Release
        {
            let ctrl_c = key.modifiers.contains(KeyModifiers::CONTROL)
                && matches!(key.code, KeyCode::Char('c' | 'C'));
            if ctrl_c || matches!(key.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc) {
                return Ok(());
            }
        }
    }
}

/// One round of reads from the daemon.
struct Reading {
    at: Instant,
    result: Result<Data, String>,
}

/// What one round read.
struct Data {
    status: Value,
    stats: Value,
    /// `None`: not re-read this round (see [`MANY_BANS`]).
    bans: Option<Value>,
    /// Matches per (filter, rule) from the metrics, when they are served and reachable.
    matches: Option<BTreeMap<(String, String), u64>>,
}

/// The reader thread: reads every [`REFRESH`] and stops when the screen is gone.
fn read_loop(socket: &Path, metrics: Option<SocketAddr>, tx: &Sender<Reading>) {
    let mut last_count = None;
    let mut bans_read = None::<Instant>;
    loop {
        let started = Instant::now();
        let result = (|| -> Result<Data, String> {
            let status = control::request(socket, &Request::Status).map_err(|e| e.to_string())?;
            let stats = control::request(socket, &Request::Stats).map_err(|e| e.to_string())?;
            let count = status["bans"].as_u64();
            let due = match bans_read {
                None => true,
                Some(at) => {
                    last_count != count
                        || count.unwrap_or(0) <= MANY_BANS
                        || at.elapsed() >= SLOW_BANS
                }
            };
            let bans = if due {
                let list =
                    control::request(socket, &Request::ListBans).map_err(|e| e.to_string())?;
                last_count = count;
                bans_read = Some(Instant::now());
                Some(list)
            } else {
                None
            };
            Ok(Data {
                status,
                stats,
                bans,
                matches: metrics.and_then(scrape_matches),
            })
        })();
        if tx
            .send(Reading {
                at: Instant::now(),
                result,
            })
            .is_err()
        {
            return;
        }
        std::thread::sleep(REFRESH.saturating_sub(started.elapsed()));
    }
}

/// `pbxguard_matches_total` from the metrics endpoint, per (filter, rule).
fn scrape_matches(addr: SocketAddr) -> Option<BTreeMap<(String, String), u64>> {
    let mut stream = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT)).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("pbxguard_matches_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let labels = parse_labels(labels);
        let value = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        out.insert((get("filter"), get("rule")), value);
    }
    Some(out)
}

/// Label pairs of one exposition line (`a="x",b="y\"z"`), escapes undone.
fn parse_labels(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() || chars.next() != Some('"') {
            return out;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(name.trim_start_matches(',').trim().to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

/// One ban as the panels need it.
struct Ban {
    net: IpNet,
    source: String,
    rule: String,
    reason: String,
    created: SystemTime,
    expires: Option<SystemTime>,
}

/// Counters of the previous read, for rates.
#[derive(Default)]
struct Previous {
    at: Option<Instant>,
    drops: BTreeMap<String, u64>,
    passed: u64,
    sources: BTreeMap<String, (u64, u64)>,
    matches: Option<BTreeMap<(String, String), u64>>,
}

/// What is on screen: the last good data, its rates, and the last error.
#[derive(Default)]
struct View {
    status: Option<Value>,
    last_ok: Option<Instant>,
    error: Option<String>,
    previous: Previous,
    /// (reason, packets/s, total packets), fastest first.
    drops: Vec<(String, f64, u64)>,
    passed_rate: f64,
    /// Per source: (lines/s, matches/s).
    source_rates: BTreeMap<String, (f64, f64)>,
    /// Per filter: (matches/s, total, busiest rule), when the metrics are read.
    filters: Option<Vec<(String, f64, u64, String)>>,
    /// Newest first, at most [`NEWEST`].
    newest: Vec<Ban>,
    /// (network, bans in it), most first.
    networks: Vec<(IpNet, usize)>,
    total_bans: usize,
}

/// Bans kept for the newest-bans panel (more than any screen is tall).
const NEWEST: usize = 200;

impl View {
    fn update(&mut self, reading: Reading) {
        let data = match reading.result {
            Ok(data) => data,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        self.error = None;
        self.last_ok = Some(reading.at);
        let elapsed = self
            .previous
            .at
            .map(|at| reading.at.duration_since(at).as_secs_f64())
            .filter(|s| *s > 0.0);
        let rate = |new: u64, old: Option<u64>| match (elapsed, old) {
            // A smaller counter is a restarted daemon: no rate until the next read.
            (Some(secs), Some(old)) if new >= old => (new - old) as f64 / secs,
            _ => 0.0,
        };

        let mut drops = BTreeMap::new();
        let mut passed = 0;
        for row in data.stats.as_array().into_iter().flatten() {
            let packets = row["packets"].as_u64().unwrap_or(0);
            if row["action"] == "drop" {
                drops.insert(row["reason"].as_str().unwrap_or("?").to_string(), packets);
            } else {
                passed += packets;
            }
        }
        self.drops = drops
            .iter()
            .map(|(reason, n)| {
                let old = self.previous.drops.get(reason).copied();
                (reason.clone(), rate(*n, old), *n)
            })
            .collect();
        self.drops
            .sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.cmp(&a.2)));
        let old_passed = self.previous.at.map(|_| self.previous.passed);
        self.passed_rate = rate(passed, old_passed);

        let mut sources = BTreeMap::new();
        for s in data.status["sources"].as_array().into_iter().flatten() {
            let name = s["name"].as_str().unwrap_or("?").to_string();
            let counts = (
                s["lines"].as_u64().unwrap_or(0),
                s["matches"].as_u64().unwrap_or(0),
            );
            sources.insert(name, counts);
        }
        self.source_rates = sources
            .iter()
            .map(|(name, (lines, matches))| {
                let old = self.previous.sources.get(name);
                (
                    name.clone(),
                    (
                        rate(*lines, old.map(|o| o.0)),
                        rate(*matches, old.map(|o| o.1)),
                    ),
                )
            })
            .collect();

        self.filters = data.matches.as_ref().map(|matches| {
            let old = self.previous.matches.as_ref();
            let mut per_filter: BTreeMap<&str, (f64, u64, (f64, &str))> = BTreeMap::new();
            for ((filter, rule), n) in matches {
                let r = rate(
                    *n,
                    old.and_then(|o| o.get(&(filter.clone(), rule.clone())))
                        .copied(),
                );
                let entry = per_filter.entry(filter).or_insert((0.0, 0, (-1.0, "")));
                entry.0 += r;
                entry.1 += n;
                if r > entry.2.0 {
                    entry.2 = (r, rule);
                }
            }
            let mut rows: Vec<_> = per_filter
                .into_iter()
                .map(|(f, (r, n, (_, rule)))| (f.to_string(), r, n, rule.to_string()))
                .collect();
            rows.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.2.cmp(&a.2)));
            rows
        });

        if let Some(list) = &data.bans {
            self.set_bans(list);
        }
        self.previous = Previous {
            at: Some(reading.at),
            drops,
            passed,
            sources,
            matches: data.matches,
        };
        self.status = Some(data.status);
    }

    fn set_bans(&mut self, list: &Value) {
        let time = |v: &Value| {
            v.as_str()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        };
        let mut bans: Vec<Ban> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| {
                Some(Ban {
                    net: b["net"].as_str()?.parse().ok()?,
                    source: clean(b["source"].as_str().unwrap_or("")),
                    rule: b["rule"].as_str().map(clean).unwrap_or_else(|| "-".into()),
                    reason: clean(b["reason"].as_str().unwrap_or("")),
                    created: time(&b["created"]).unwrap_or(SystemTime::UNIX_EPOCH),
                    expires: time(&b["expires"]),
                })
            })
            .collect();
        self.total_bans = bans.len();
        let mut counts: HashMap<IpNet, usize> = HashMap::new();
        for ban in &bans {
            *counts.entry(offender_network(ban.net)).or_default() += 1;
        }
        let mut networks: Vec<_> = counts.into_iter().collect();
        networks.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        networks.truncate(NEWEST);
        self.networks = networks;
        if bans.len() > NEWEST {
            bans.select_nth_unstable_by(NEWEST, |a, b| b.created.cmp(&a.created));
            bans.truncate(NEWEST);
        }
        bans.sort_by(|a, b| b.created.cmp(&a.created).then(a.net.cmp(&b.net)));
        self.newest = bans;
    }

    fn draw(&self, frame: &mut Frame) {
        let [header, top, middle, bottom, footer] = Layout::vertical([
            Constraint::Length(5),
            Constraint::Percentage(30),
            Constraint::Percentage(40),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        self.draw_header(frame, header);
        let [attacks, drops] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(top);
        self.draw_attacks(frame, attacks);
        self.draw_drops(frame, drops);
        self.draw_bans(frame, middle);
        let [networks, sources] =
            Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)])
                .areas(bottom);
        self.draw_networks(frame, networks);
        self.draw_sources(frame, sources);
        let age = self
            .last_ok
            .map(|at| format!("read {}s ago", at.elapsed().as_secs()))
            .unwrap_or_else(|| "not read yet".into());
        frame.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled(" q", bold()),
                Span::raw(" quit  "),
                Span::raw(age),
                Span::raw("  · countries: bans carry none; see `pbxguard geo lookup IP`"),
            ]))
            .style(Style::new().add_modifier(Modifier::DIM)),
            footer,
        );
    }

    fn draw_header(&self, frame: &mut Frame, area: Rect) {
        let mut lines = Vec::new();
        match &self.status {
            Some(s) => {
                let uptime = humantime::format_duration(Duration::from_secs(
                    s["uptime_secs"].as_u64().unwrap_or(0),
                ));
                let mode = s["mode"].as_str().unwrap_or("?");
                lines.push(Line::from(vec![
                    Span::styled(format!("pbxguard {}", text(s, "version")), bold()),
                    Span::raw(format!(
                        "  backend {}  up {uptime}  bans {}  mode {}  known {}  allowlist {}",
                        text(s, "backend"),
                        num(s, "bans"),
                        mode,
                        num(s, "known"),
                        num(s, "allowlisted")
                    )),
                ]));
                lines.push(Line::from(extras(s)));
                if self.error.is_none() {
                    lines.push(warnings(s));
                }
            }
            None => lines.push(Line::styled("pbxguard: waiting for the daemon", bold())),
        }
        // The last good numbers stay on screen; the error says they are stale.
        if let Some(e) = &self.error {
            lines.push(Line::styled(
                format!("retrying every second: {}", clean(e)),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ));
        }
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: true })
                .block(Block::bordered().title(" pbxguard top ")),
            area,
        );
    }

    fn draw_attacks(&self, frame: &mut Frame, area: Rect) {
        let (title, first, rows): (&str, &str, Vec<Row>) = match &self.filters {
            Some(filters) => (
                " attacks/s by filter ",
                "FILTER",
                filters
                    .iter()
                    .map(|(f, r, n, rule)| {
                        Row::new(vec![
                            Cell::from(clean(f)),
                            Cell::from(format!("{r:.1}")),
                            Cell::from(n.to_string()),
                            Cell::from(clean(rule)),
                        ])
                    })
                    .collect(),
            ),
            // Per-filter counters are only in the metrics; the sources count matches too.
            None => (
                " attacks/s by source ([metrics] listen gives filters) ",
                "SOURCE",
                self.source_rates
                    .iter()
                    .map(|(name, (_, matches))| {
                        Row::new(vec![
                            Cell::from(clean(short(name))),
                            Cell::from(format!("{matches:.1}")),
                            Cell::from(
                                self.previous
                                    .sources
                                    .get(name)
                                    .map(|c| c.1.to_string())
                                    .unwrap_or_default(),
                            ),
                            Cell::from(""),
                        ])
                    })
                    .collect(),
            ),
        };
        let table = Table::new(
            rows,
            [
                Constraint::Fill(2),
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Fill(2),
            ],
        )
        .header(header_row(&[first, "/S", "TOTAL", "BUSIEST RULE"]))
        .block(Block::bordered().title(title));
        frame.render_widget(table, area);
    }

    fn draw_drops(&self, frame: &mut Frame, area: Rect) {
        let mut rows: Vec<Row> = self
            .drops
            .iter()
            .map(|(reason, r, n)| {
                Row::new(vec![
                    Cell::from(reason.clone()),
                    Cell::from(format!("{r:.1}")),
                    Cell::from(n.to_string()),
                ])
            })
            .collect();
        rows.push(
            Row::new(vec![
                Cell::from("(passed, all reasons)"),
                Cell::from(format!("{:.1}", self.passed_rate)),
                Cell::from(self.previous.passed.to_string()),
            ])
            .style(Style::new().add_modifier(Modifier::DIM)),
        );
        let table = Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Length(10),
                Constraint::Length(12),
            ],
        )
        .header(header_row(&["VERDICT", "PKT/S", "TOTAL"]))
        .block(Block::bordered().title(" drops/s by verdict "));
        frame.render_widget(table, area);
    }

    fn draw_bans(&self, frame: &mut Frame, area: Rect) {
        let now = SystemTime::now();
        let rows: Vec<Row> = self
            .newest
            .iter()
            .map(|b| {
                Row::new(vec![
                    Cell::from(b.net.to_string()),
                    Cell::from(b.source.clone()),
                    Cell::from(b.rule.clone()),
                    Cell::from(ago(now, b.created)),
                    Cell::from(match b.expires {
                        None => "permanent".to_string(),
                        Some(t) => match t.duration_since(now) {
                            Ok(left) => format!("in {}", human(left)),
                            Err(_) => "ended".into(),
                        },
                    }),
                    Cell::from(b.reason.clone()),
                ])
            })
            .collect();
        let title = format!(" newest bans ({} active) ", self.total_bans);
        let table = Table::new(
            rows,
            [
                Constraint::Length(24),
                Constraint::Length(14),
                Constraint::Length(18),
                Constraint::Length(10),
                Constraint::Length(14),
                Constraint::Fill(1),
            ],
        )
        .header(header_row(&[
            "NET", "SOURCE", "RULE", "CREATED", "EXPIRES", "REASON",
        ]))
        .block(Block::bordered().title(title));
        frame.render_widget(table, area);
    }

    fn draw_networks(&self, frame: &mut Frame, area: Rect) {
        let rows: Vec<Row> = self
            .networks
            .iter()
            .map(|(net, n)| Row::new(vec![Cell::from(net.to_string()), Cell::from(n.to_string())]))
            .collect();
        let table = Table::new(rows, [Constraint::Fill(1), Constraint::Length(6)])
            .header(header_row(&["NETWORK (/24, /48)", "BANS"]))
            .block(Block::bordered().title(" top offending networks "));
        frame.render_widget(table, area);
    }

    fn draw_sources(&self, frame: &mut Frame, area: Rect) {
        let sources = self
            .status
            .as_ref()
            .and_then(|s| s["sources"].as_array().cloned())
            .unwrap_or_default();
        let rows: Vec<Row> = sources
            .iter()
            .map(|s| {
                let name = s["name"].as_str().unwrap_or("?");
                let (state, style) = if s["alive"].as_bool() == Some(false) {
                    (
                        "STOPPED",
                        Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                    )
                } else {
                    ("following", Style::new())
                };
                let last = s["last_read"]
                    .as_str()
                    .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                    .map(|t| ago(SystemTime::now(), t))
                    .unwrap_or_else(|| "never".into());
                let (lines, matches) = self.source_rates.get(name).copied().unwrap_or_default();
                Row::new(vec![
                    Cell::from(clean(short(name))),
                    Cell::from(state).style(style),
                    Cell::from(last),
                    Cell::from(format!("{lines:.1}")),
                    Cell::from(format!("{matches:.1}")),
                ])
            })
            .collect();
        let table = Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Length(8),
                Constraint::Length(9),
            ],
        )
        .header(header_row(&[
            "SOURCE",
            "FOLLOWER",
            "LAST READ",
            "LINES/S",
            "MATCH/S",
        ]))
        .block(Block::bordered().title(" log sources "));
        frame.render_widget(table, area);
    }
}

/// The network an offender is counted under: its /24 (IPv4) or /48 (IPv6), or the ban
/// itself when it is wider.
fn offender_network(net: IpNet) -> IpNet {
    let prefix = match net {
        IpNet::V4(_) => 24,
        IpNet::V6(_) => 48,
    };
    if net.prefix_len() <= prefix {
        net
    } else {
        IpNet::new(net.addr(), prefix)
            .map(|n| n.trunc())
            .unwrap_or(net)
    }
}

/// Cluster, feeds and CrowdSec, as far as they are configured.
fn extras(s: &Value) -> Vec<Span<'static>> {
    let red = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
    let mut spans = Vec::new();
    match s["cluster"].as_object() {
        Some(c) if c.get("connected").and_then(Value::as_bool) == Some(true) => {
            spans.push(Span::raw(format!(
                "cluster: {} connected to {}",
                clean(c.get("node").and_then(Value::as_str).unwrap_or("")),
                clean(c.get("server").and_then(Value::as_str).unwrap_or(""))
            )));
        }
        Some(c) => spans.push(Span::styled(
            format!(
                "cluster: NOT CONNECTED ({})",
                clean(
                    c.get("last_error")
                        .and_then(Value::as_str)
                        .unwrap_or("connecting")
                )
            ),
            red,
        )),
        None => spans.push(Span::raw("cluster: off")),
    }
    let feeds = s["feeds"].as_array().cloned().unwrap_or_default();
    if feeds.is_empty() {
        spans.push(Span::raw("  feeds: none"));
    } else {
        let entries: u64 = feeds.iter().map(|f| num(f, "entries")).sum();
        let failing = feeds.iter().filter(|f| f["last_error"].is_string()).count();
        spans.push(Span::raw(format!(
            "  feeds: {} ({entries} entries)",
            feeds.len()
        )));
        if failing > 0 {
            spans.push(Span::styled(format!(", {failing} FAILING"), red));
        }
    }
    match s["crowdsec"].as_object() {
        Some(cs) if cs.get("connected").and_then(Value::as_bool) == Some(true) => {
            spans.push(Span::raw(format!(
                "  crowdsec: pulling, {} bans",
                cs.get("bans").and_then(Value::as_u64).unwrap_or(0)
            )))
        }
        Some(_) => spans.push(Span::styled("  crowdsec: NOT REACHABLE", red)),
        None => spans.push(Span::raw("  crowdsec: off")),
    }
    spans
}

/// What needs the admin: a stale journal, refused bans, stopped followers.
fn warnings(s: &Value) -> Line<'static> {
    let mut parts = Vec::new();
    if s["journal_stale"].as_bool() == Some(true) {
        parts.push("JOURNAL STALE (disk full?)".to_string());
    }
    if num(s, "not_enforced") > 0 {
        parts.push(format!(
            "{} bans refused by the kernel (raise [ban] max_entries)",
            num(s, "not_enforced")
        ));
    }
    let stopped = s["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["alive"].as_bool() == Some(false))
        .count();
    if stopped > 0 {
        parts.push(format!("{stopped} FOLLOWER(S) STOPPED"));
    }
    if s["mode"] == "observe" {
        parts.push(format!(
            "observe mode: {} bans would have been made",
            num(s, "would_ban")
        ));
    }
    if parts.is_empty() {
        Line::styled("no warnings", Style::new().fg(Color::Green))
    } else {
        Line::styled(
            parts.join("; "),
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        )
    }
}

fn header_row(names: &[&str]) -> Row<'static> {
    Row::new(names.iter().map(|n| n.to_string())).style(bold())
}

fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

fn text(v: &Value, key: &str) -> String {
    clean(v[key].as_str().unwrap_or(""))
}

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// The last path components of a long source name: the file name is what tells them apart.
fn short(name: &str) -> &str {
    const MAX: usize = 40;
    if name.len() <= MAX {
        return name;
    }
    let mut start = name.len() - MAX;
    while !name.is_char_boundary(start) {
        start += 1;
    }
    &name[start..]
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs()))
        .to_string()
        .split(' ')
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn ago(now: SystemTime, then: SystemTime) -> String {
    match now.duration_since(then) {
        Ok(d) if d.as_secs() == 0 => "now".into(),
        Ok(d) => format!("{} ago", human(d)),
        Err(_) => "now".into(),
    }
}
