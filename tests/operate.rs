//! Operating the daemon: systemd readiness and watchdog notifications (to a NOTIFY_SOCKET
//! the test listens on), live reload with good and bad configs, and the unit file itself.

mod testenv;

use std::{os::unix::net::UnixDatagram, process::Command, time::Duration};

use testenv::{ATTACKER, Daemon, Lab, N, PHONE, pbxguard_bin, v4};

/// The next notification, without the newline that ends its last state (sd-notify ends
/// every state with one).
fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    let text = String::from_utf8_lossy(&buf[..n]);
    text.strip_suffix('\n')
        .unwrap_or_else(|| panic!("every state ends its line: {text:?}"))
        .to_string()
}

#[test]
fn ready_only_when_enforcing_then_watchdog_reload_and_stop() {
    let lab = Lab::new();
    let mut daemon = Daemon::start(&lab, "xdp", "");
    daemon.cli_ok(&["bans", "add", &ATTACKER.to_string()]);
    daemon.terminate();
    // Simulate a reboot: nothing enforced until the daemon is ready again.
    daemon.reboot_state();
    let socket_path = daemon.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    daemon.env = vec![
        ("NOTIFY_SOCKET".into(), socket_path.display().to_string()),
        ("WATCHDOG_USEC".into(), "400000".into()),
    ];
    daemon.launch(&[]);
    let ready = next(&socket);
    assert!(ready.starts_with("READY=1"), "{ready}");
    assert!(ready.contains("STATUS=enforcing with xdp"), "{ready}");
    assert_eq!(
        v4(&lab),
        [0, N],
        "when READY=1 arrives the ban is already enforced"
    );
    assert_eq!(next(&socket), "WATCHDOG=1");
    assert_eq!(next(&socket), "WATCHDOG=1");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m == "READY=1") {
        seen.push(next(&socket));
    }
    assert!(
        seen.iter()
            .any(|m| m.starts_with("RELOADING=1\nMONOTONIC_USEC=")),
        "{seen:?}"
    );
    daemon.terminate();
    let mut last = next(&socket);
    while last == "WATCHDOG=1" {
        last = next(&socket);
    }
    assert_eq!(last, "STOPPING=1");
}

#[test]
fn reload_applies_a_good_config_and_rejects_a_bad_one() {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, "xdp", "");
    daemon.cli_ok(&["bans", "add", &ATTACKER.to_string(), "--for", "permanent"]);
    let config = std::fs::read_to_string(&daemon.config).unwrap();

    // Good: the phone becomes allowlisted, so it can no longer be banned.
    std::fs::write(
        &daemon.config,
        format!("{config}\n[allow]\nnetworks = [\"{PHONE}\"]\n"),
    )
    .unwrap();
    assert_eq!(daemon.cli_ok(&["reload"]), "config reloaded\n");
    assert_eq!(daemon.json(&["status"])["allowlisted"], 1);
    let refused = daemon.cli(&["bans", "add", &PHONE.to_string()]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("allowlisted network"));

    // Bad: rejected with its file, line and key; the running config and bans stay.
    std::fs::write(
        &daemon.config,
        format!("{config}\n[allow]\nnetworks = [\"{PHONE}\"]\n[ban]\nmax_entries = \"many\"\n"),
    )
    .unwrap();
    let out = daemon.cli(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("running config stays") && err.contains("key `ban.max_entries`"),
        "{err}"
    );
    assert!(err.contains(&daemon.config.display().to_string()), "{err}");
    assert_eq!(daemon.json(&["status"])["allowlisted"], 1);
    assert_eq!(
        daemon.json(&["bans", "list"])[0]["net"],
        format!("{ATTACKER}/32")
    );
    assert_eq!(v4(&lab), [0, N], "enforcement never stopped");
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/pbxguard.service"
    ))
    .unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    // Point it at the binary under test, which exists here.
    let path = dir.path().join("pbxguard.service");
    std::fs::write(&path, unit.replace("/usr/sbin/pbxguard", pbxguard_bin())).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("pbxguard.service:"),
        "warnings about the unit: {text}"
    );
}

fn scrape(lab: &Lab, port: u16) -> String {
    lab.inside.enter(move || {
        use std::io::{Read as _, Write as _};
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    })
}

fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_are_scraped_over_http_and_follow_real_traffic() {
    let lab = Lab::new();
    let mut daemon = Daemon::configure(
        &lab,
        "xdp",
        "[metrics]\nlisten = \"127.0.0.1:9771\"\n[policy]\nmaxretry = 2\n[[source]]\npath = \"LOG\"\nfilters = [\"sshd\"]\n",
    );
    let log = daemon.log_file("auth.log");
    daemon.launch(&[]);

    daemon.cli_ok(&["bans", "add", "198.51.100.7"]);
    let line = format!(
        "Nov 26 11:03:53 pbx sshd[42]: Failed password for root from {ATTACKER} port 4242 ssh2\n"
    );
    std::fs::write(&log, line.repeat(2)).unwrap();
    daemon.wait_for_ban(&format!("{ATTACKER}/32"));
    assert_eq!(v4(&lab), [0, N]);

    let metrics = scrape(&lab, 9771);
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    assert_eq!(value(&metrics, "pbxguard_bans_active"), 2.0);
    assert_eq!(
        value(&metrics, "pbxguard_bans_by_source{source=\"manual\"}"),
        1.0
    );
    assert_eq!(
        value(&metrics, "pbxguard_bans_by_source{source=\"sshd\"}"),
        1.0
    );
    assert!(
        value(
            &metrics,
            "pbxguard_packets_total{reason=\"banned\",action=\"drop\"}"
        ) >= N as f64
    );
    assert!(
        value(
            &metrics,
            "pbxguard_bytes_total{reason=\"banned\",action=\"drop\"}"
        ) > 0.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!(
                "pbxguard_source_lines_total{{source=\"{}\"}}",
                log.display()
            )
        ),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            "pbxguard_matches_total{filter=\"sshd\",rule=\"failed_password\"}"
        ),
        2.0
    );
    assert_eq!(value(&metrics, "pbxguard_time_to_ban_seconds_count"), 1.0);
    assert_eq!(
        value(&metrics, "pbxguard_time_to_ban_seconds_bucket{le=\"+Inf\"}"),
        1.0
    );
    assert!(metrics.contains("# TYPE pbxguard_time_to_ban_seconds histogram"));
}

/// A webhook receiver on loopback inside the namespace; returns the JSON bodies received
/// within `wait`.
fn webhook_server(lab: &Lab, port: u16) -> std::sync::mpsc::Receiver<serde_json::Value> {
    let listener = lab
        .inside
        .enter(move || std::net::TcpListener::bind(("127.0.0.1", port)).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::{BufRead as _, BufReader, Read as _, Write as _};
        for stream in listener.incoming().take(100) {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let _ = stream.write_all(
                b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            if tx.send(serde_json::from_slice(&body).unwrap()).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn webhooks_and_command_hooks_tell_about_bans_within_a_rate_limit() {
    let lab = Lab::new();
    let hooks = webhook_server(&lab, 8099);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hook.out");
    let script = dir.path().join("hook.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$PBXGUARD_EVENT $PBXGUARD_NET $PBXGUARD_SOURCE\" >> {}\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let daemon = Daemon::start(
        &lab,
        "xdp",
        &format!(
            "[notify]\nwebhook = \"http://127.0.0.1:8099/pbxguard\"\ncommand = \"{}\"\nmax_per_minute = 3\n",
            script.display()
        ),
    );
    daemon.cli_ok(&["bans", "add", "198.51.100.7", "--reason", "toll fraud"]);
    let first = hooks
        .recv_timeout(Duration::from_secs(20))
        .expect("a webhook");
    assert_eq!(first["event"], "ban");
    assert_eq!(first["net"], "198.51.100.7/32");
    assert_eq!(first["reason"], "toll fraud");
    assert_eq!(first["source"], "manual");
    assert!(first["expires"].is_string());
    daemon.cli_ok(&["bans", "del", "198.51.100.7"]);
    assert_eq!(
        hooks.recv_timeout(Duration::from_secs(20)).unwrap()["event"],
        "unban"
    );
    // A scan's worth of bans: the rate limit (3 a minute) lets one more through.
    for i in 10..40 {
        daemon.cli_ok(&["bans", "add", &format!("198.51.100.{i}")]);
    }
    assert_eq!(
        hooks.recv_timeout(Duration::from_secs(20)).unwrap()["net"],
        "198.51.100.10/32"
    );
    assert!(
        hooks.recv_timeout(Duration::from_secs(2)).is_err(),
        "rate limited"
    );
    let lines = std::fs::read_to_string(&out).unwrap();
    assert!(
        lines.starts_with("ban 198.51.100.7/32 manual\nunban 198.51.100.7/32 manual\n"),
        "{lines}"
    );
}

#[test]
fn a_dead_webhook_never_blocks_enforcement() {
    let lab = Lab::new();
    // Nothing listens on this port; every delivery fails after retries.
    let daemon = Daemon::start(
        &lab,
        "xdp",
        "[notify]\nwebhook = \"http://127.0.0.1:9/nothing\"\nretries = 3\n",
    );
    for i in 0..20 {
        daemon.cli_ok(&["bans", "add", &format!("198.51.100.{i}")]);
    }
    daemon.cli_ok(&["bans", "add", &ATTACKER.to_string()]);
    assert_eq!(v4(&lab), [0, N]);
    assert_eq!(daemon.json(&["status"])["bans"], 21);
}

#[test]
fn a_fallback_to_nftables_is_notified() {
    let lab = Lab::new();
    let hooks = webhook_server(&lab, 8098);
    let mut daemon = Daemon::configure(
        &lab,
        "auto",
        "[notify]\nwebhook = \"http://127.0.0.1:8098/pbxguard\"\n",
    );
    daemon.wrapper = ["capsh", "--drop=cap_bpf,cap_sys_admin,cap_perfmon"]
        .map(String::from)
        .to_vec();
    daemon.launch(&[]);
    let notice = hooks
        .recv_timeout(Duration::from_secs(20))
        .expect("a webhook");
    assert_eq!(notice["event"], "fallback");
    assert!(
        notice["reason"]
            .as_str()
            .unwrap()
            .contains("XDP could not load or attach"),
        "{notice}"
    );
}

#[test]
fn reload_swaps_log_sources_and_thresholds() {
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let (old_log, new_log) = (dir.path().join("old.log"), dir.path().join("auth.log"));
    std::fs::write(&old_log, "").unwrap();
    std::fs::write(&new_log, "").unwrap();
    let source = |log: &std::path::Path, maxretry: u32| {
        format!(
            "[policy]\nmaxretry = {maxretry}\n[[source]]\npath = \"{}\"\nfilters = [\"sshd\"]\n",
            log.display()
        )
    };
    let daemon = Daemon::start(&lab, "xdp", &source(&old_log, 5));
    let base = std::fs::read_to_string(&daemon.config)
        .unwrap()
        .replace(&source(&old_log, 5), "");
    std::fs::write(&daemon.config, format!("{base}{}", source(&new_log, 1))).unwrap();
    daemon.cli_ok(&["reload"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while daemon.json(&["status"])["sources"][0]["name"] != new_log.display().to_string() {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let line = format!(
        "Nov 26 11:03:53 pbx sshd[42]: Failed password for root from {ATTACKER} port 4242 ssh2\n"
    );
    std::fs::write(&new_log, line).unwrap();
    let ban = daemon.wait_for_ban(&format!("{ATTACKER}/32"));
    assert_eq!(ban["failures"], 1, "the new maxretry applies");
}

/// Ban lengths at the edges, through the daemon: 100 years, the longest accepted, is held
/// by the kernel (nftables refuses timeouts past about 584 years of milliseconds; the XDP
/// expiry is u64 boot-time nanoseconds), for `bans add` and for a detected ban whose
/// escalation is capped there. Zero and overlong lengths sent straight to the socket are
/// refused by the daemon with the reason (once "internal error" or a panic), nothing is
/// banned, and the daemon keeps running.
fn durations_at_the_edges(backend: &str) {
    use pbxguard::control::{Request, request};

    let lab = Lab::new();
    let mut daemon = Daemon::configure(
        &lab,
        backend,
        "[policy]\nmaxretry = 1\nbantime = \"100y\"\nbantime_factor = 100.0\n\
         [[source]]\npath = \"LOG\"\nfilters = [\"sshd\"]\n",
    );
    let log = daemon.log_file("auth.log");
    daemon.launch(&[]);
    let century = pbxguard::units::MAX_DURATION.as_secs();
    let length = |ban: &serde_json::Value| {
        let at = |key: &str| humantime::parse_rfc3339(ban[key].as_str().unwrap()).unwrap();
        at("expires")
            .duration_since(at("created"))
            .unwrap()
            .as_secs()
    };
    daemon.cli_ok(&["bans", "add", &ATTACKER.to_string(), "--for", "100y"]);
    assert_eq!(
        length(&daemon.wait_for_ban(&format!("{ATTACKER}/32"))),
        century
    );
    assert_eq!(v4(&lab), [0, N], "a 100-year ban is enforced");
    std::fs::write(
        &log,
        "Nov 26 11:03:53 pbx sshd[42]: Invalid user admin from 198.51.100.77 port 4242\n",
    )
    .unwrap();
    assert_eq!(length(&daemon.wait_for_ban("198.51.100.77/32")), century);
    for (bad, words) in [
        ("0", "`permanent`"),
        ("0s", "`permanent`"),
        ("7974y", "longer than 100 years"),
        ("580000000000y", "longer than 100 years"),
    ] {
        let refused = request(
            &daemon.socket,
            &Request::AddBan {
                net: PHONE.to_string(),
                more: Vec::new(),
                duration: Some(bad.into()),
                reason: None,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(refused.contains(words), "{bad}: {refused}");
    }
    let listed = daemon.json(&["bans", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(daemon.running());
    assert_eq!(v4(&lab), [0, N], "the phone was never banned");
}

both_backends!(durations_at_the_edges);
