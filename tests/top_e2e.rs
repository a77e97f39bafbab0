//! `pbxguard top` in a pseudo-terminal against a running daemon (a ban made while it runs
//! shows up, `q` quits cleanly, a missing daemon is an on-screen error), and the Grafana
//! dashboard in `contrib/grafana/` against a live `/metrics`: every metric it queries exists.

mod testenv;

use std::{
    collections::BTreeSet,
    fs::File,
    io::{Read as _, Write as _},
    os::fd::{FromRawFd as _, OwnedFd},
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use testenv::{Daemon, Lab, pbxguard_bin};

const ROWS: u16 = 40;
const COLS: u16 = 120;
/// Longest wait for anything the test expects to see (polling; no speed is asserted).
const PATIENCE: Duration = Duration::from_secs(30);

/// `pbxguard top` running in a pseudo-terminal of [`ROWS`] x [`COLS`], with everything it
/// wrote collected by a reader thread.
struct Top {
    child: Option<Child>,
    master: File,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Top {
    fn start(socket: &std::path::Path) -> Top {
        let (mut master, mut slave) = (-1, -1);
        let size = libc::winsize {
            ws_row: ROWS,
            ws_col: COLS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: out-pointers to locals; no name buffer, default termios.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty returned two fresh descriptors we now own.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut command = Command::new(pbxguard_bin());
        command
            .arg("--socket")
            .arg(socket)
            .arg("top")
            .env("TERM", "xterm")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // A session of its own with the pty as controlling terminal, as sshd does.
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("spawn pbxguard top");
        drop(slave);
        let master = File::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            // EIO once the last slave descriptor is closed (top has exited).
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Top {
            child: Some(child),
            master,
            output,
        }
    }

    /// The screen as a terminal of this size shows it now.
    fn screen(&self) -> String {
        let mut parser = vt100::Parser::new(ROWS.try_into().unwrap(), COLS.try_into().unwrap(), 0);
        parser.process(&self.output.lock().unwrap());
        parser.screen().contents()
    }

    /// Everything written, escape sequences removed (a second view, independent of how
    /// well the virtual screen follows the escapes).
    fn plain(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(&self.output.lock().unwrap()))
    }

    /// Waits until `text` is on the screen; panics with the screen after [`PATIENCE`].
    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if self.screen().contains(text) || self.plain().contains(text) {
                return;
            }
            if Instant::now() > deadline {
                panic!("`{text}` never appeared; screen:\n{}", self.screen());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `keys`, then waits (bounded) for the process to exit; its exit status.
    fn quit_with(&mut self, keys: &[u8]) -> std::process::ExitStatus {
        self.master.write_all(keys).unwrap();
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "top did not exit after {keys:?}; screen:\n{}",
                    self.screen()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Top {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Removes CSI (`ESC [ ... final`) and OSC / other two-byte escapes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn top_shows_a_new_ban_and_quits_on_q() {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, "xdp", "");
    let mut top = Top::start(&daemon.socket);
    // The header is drawn from the daemon's status: top is connected.
    top.wait_for("backend xdp");
    top.wait_for("newest bans (0 active)");
    daemon.cli_ok(&["bans", "add", "198.51.100.7", "--reason", "top test"]);
    top.wait_for("198.51.100.7/32");
    top.wait_for("newest bans (1 active)");
    // Grouped under its /24 among the offending networks.
    top.wait_for("198.51.100.0/24");
    let status = top.quit_with(b"q");
    assert!(status.success(), "top exited with {status}");
    // The terminal is given back: alternate screen left, cursor shown.
    let raw = String::from_utf8_lossy(&top.output.lock().unwrap()).into_owned();
    let left = raw.rfind("\x1b[?1049l").expect("alternate screen left");
    assert!(
        raw[..left].contains("\x1b[?1049h"),
        "alternate screen entered"
    );
    assert!(raw.contains("\x1b[?25h"), "cursor shown again");
}

#[test]
fn top_shows_an_unreachable_daemon_and_keeps_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let mut top = Top::start(&socket);
    top.wait_for("pbxguard daemon is not running");
    top.wait_for("retrying every second");
    // Still running after a few more rounds of failed reads.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        top.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "top gave up:\n{}",
        top.screen()
    );
    // Ctrl-C quits too (raw mode: it arrives as a key, not a signal).
    let status = top.quit_with(b"\x03");
    assert!(status.success(), "top exited with {status}");
}

/// The metric names a Grafana dashboard queries: every `expr` of its panels and every
/// templating query.
fn queried_metrics(dashboard: &serde_json::Value) -> BTreeSet<String> {
    fn walk(v: &serde_json::Value, found: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", serde_json::Value::String(q)) => found.push(q.clone()),
                        ("query" | "definition", serde_json::Value::String(q)) => {
                            found.push(q.clone())
                        }
                        ("query", serde_json::Value::Object(q)) => {
                            if let Some(q) = q.get("query").and_then(|q| q.as_str()) {
                                found.push(q.to_string());
                            }
                        }
                        _ => walk(value, found),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, found)),
            _ => {}
        }
    }
    let mut queries = Vec::new();
    walk(dashboard, &mut queries);
    let name = regex::Regex::new(r"pbxguard_[a-z_]+").unwrap();
    queries
        .iter()
        .flat_map(|q| name.find_iter(q).map(|m| m.as_str().to_string()))
        .collect()
}

/// The series names an exposition makes queryable: sample names, plus what each `# TYPE`
/// implies (Prometheus text or OpenMetrics: a counter `x` is queried as `x_total`, a
/// histogram `h` as `h_bucket`, `h_sum`, `h_count`), whether or not a series has a sample
/// yet (a labelled family with no children still declares itself).
fn exposed_metrics(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.insert(name.to_string());
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["_sum", "_count"],
                _ => &[],
            };
            for suffix in suffixes {
                if !name.ends_with(suffix) {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        } else if line.starts_with("pbxguard_") {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

fn scrape(lab: &Lab, port: u16) -> Option<String> {
    lab.inside.enter(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text)
    })
}

#[test]
fn every_metric_the_grafana_dashboard_queries_is_exported() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../contrib/grafana/pbxguard.json"
        ))
        .unwrap(),
    )
    .expect("the dashboard is JSON");
    let wanted = queried_metrics(&dashboard);
    for family in [
        "pbxguard_packets_total",
        "pbxguard_time_to_ban_seconds_bucket",
        "pbxguard_cluster_connected",
        "pbxguard_fraud_hits_total",
        "pbxguard_feed_entries",
    ] {
        assert!(
            wanted.contains(family),
            "the dashboard never queries {family}"
        );
    }

    let lab = Lab::new();
    let mut daemon = Daemon::configure(&lab, "xdp", "");
    let dir = daemon.dir.path().to_path_buf();
    let (log, cdr, blocklist) = (
        dir.join("auth.log"),
        dir.join("Master.csv"),
        dir.join("blocklist.txt"),
    );
    std::fs::write(&log, "").unwrap();
    std::fs::write(&cdr, "").unwrap();
    std::fs::write(&blocklist, "203.0.113.0/24\n").unwrap();
    // Every optional section whose metrics the dashboard shows; the NATS server is
    // unreachable on purpose (the cluster metrics render while it retries).
    let config = std::fs::read_to_string(&daemon.config).unwrap()
        + &format!(
            "[metrics]\nlisten = \"127.0.0.1:9781\"\n\n\
             [[source]]\npath = \"{}\"\nfilters = [\"sshd\"]\n\n\
             [fraud]\nhome_country = \"DE\"\n\n\
             [[cdr]]\npath = \"{}\"\nformat = \"asterisk-csv\"\n\n\
             [[blocklist]]\nname = \"local\"\npath = \"{}\"\n\n\
             [cluster]\nservers = [\"nats://127.0.0.1:1\"]\n",
            log.display(),
            cdr.display(),
            blocklist.display()
        );
    std::fs::write(&daemon.config, config).unwrap();
    daemon.launch(&[]);
    daemon.cli_ok(&["bans", "add", "198.51.100.7"]);

    // Feeds, fraud and cluster report to the engine on their own threads: poll until every
    // family is there (bounded), then name what is missing.
    let deadline = Instant::now() + PATIENCE;
    let (missing, text) = loop {
        let text = scrape(&lab, 9781).unwrap_or_default();
        let exposed = exposed_metrics(&text);
        let missing: Vec<String> = wanted.difference(&exposed).cloned().collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (missing, text);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not export: {missing:?}\n{text}"
    );
}
