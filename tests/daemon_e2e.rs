//! The daemon end to end, in network namespaces this test creates: real XDP on a veth,
//! real UDP packets, the real CLI. Needs root.

#[macro_use]
mod testenv;

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use testenv::{ATTACKER, ATTACKER6, Daemon, Lab, N, PBX, PBX6, PHONE, PHONE6, append, v4};

fn ban_drops_only_the_banned_source_and_del_restores_it(backend: &str) {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, backend, "");
    assert!(lab.enforcing(backend));
    assert_eq!(v4(&lab), [N, N], "before any ban both sources arrive");

    let out = daemon.cli_ok(&[
        "bans",
        "add",
        &ATTACKER.to_string(),
        "--reason",
        "brute force",
    ]);
    assert!(out.contains(&format!("banned {ATTACKER}/32")), "{out}");
    assert_eq!(v4(&lab), [0, N], "banned source dropped, phone untouched");
    assert!(daemon.packets("banned") >= N as u64, "counters say why");

    daemon.cli_ok(&["bans", "del", &ATTACKER.to_string()]);
    assert_eq!(v4(&lab), [N, N], "unban restores traffic");
    let out = daemon.cli(&["bans", "del", &ATTACKER.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not banned"));
}

fn ipv6_and_cidr_bans_drop(backend: &str) {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, backend, "");
    let sources = [IpAddr::V6(ATTACKER6), IpAddr::V6(PHONE6)];
    assert_eq!(lab.deliveries(&sources, IpAddr::V6(PBX6), N), [N, N]);
    daemon.cli_ok(&["bans", "add", &format!("{ATTACKER6}/127")]);
    assert_eq!(lab.deliveries(&sources, IpAddr::V6(PBX6), N), [0, N]);
    let list = daemon.json(&["bans", "list"]);
    assert_eq!(list[0]["net"], "fd00:77::66/127");
}

fn bans_list_json_is_the_documented_contract(backend: &str) {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, backend, "");
    daemon.cli_ok(&[
        "bans",
        "add",
        "198.51.100.7",
        "--for",
        "10m",
        "--reason",
        "scan",
    ]);
    daemon.cli_ok(&["bans", "add", "203.0.113.0/24", "--for", "permanent"]);
    let list = daemon.json(&["bans", "list"]);
    let bans = list.as_array().unwrap();
    assert_eq!(bans.len(), 2);
    let timed = bans.iter().find(|b| b["net"] == "198.51.100.7/32").unwrap();
    assert_eq!(timed["reason"], "scan");
    assert_eq!(timed["source"], "manual");
    let created = humantime::parse_rfc3339(timed["created"].as_str().unwrap()).unwrap();
    let expires = humantime::parse_rfc3339(timed["expires"].as_str().unwrap()).unwrap();
    assert_eq!(
        expires.duration_since(created).unwrap(),
        Duration::from_secs(600)
    );
    let permanent = bans.iter().find(|b| b["net"] == "203.0.113.0/24").unwrap();
    assert!(permanent["expires"].is_null());

    let table = daemon.cli_ok(&["bans", "list"]);
    assert!(table.starts_with("NET"), "{table}");
    assert!(table.contains("FAILURES"), "{table}");
    assert!(table.contains("permanent"), "{table}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&daemon.socket).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "control socket is root-only");
    let status = daemon.json(&["status"]);
    assert_eq!(status["backend"], backend);
    assert_eq!(status["bans"], 2);
    assert_eq!(status["interfaces"][0]["name"], testenv::INSIDE_IF);
    let mode = status["interfaces"][0]["mode"].as_str().unwrap();
    assert!(["native", "generic", "nftables"].contains(&mode), "{mode}");
}

fn ban_survives_kill9_and_restart(backend: &str) {
    let lab = Lab::new();
    let mut daemon = Daemon::start(&lab, backend, "");
    daemon.cli_ok(&["bans", "add", &ATTACKER.to_string(), "--for", "1h"]);
    let before = daemon.json(&["bans", "list"]);

    daemon.kill9();
    assert!(
        lab.enforcing(backend),
        "pinned link keeps the program attached"
    );
    assert_eq!(
        v4(&lab),
        [0, N],
        "the ban still drops with no daemon running"
    );
    let out = daemon.cli(&["status"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not running"), "{err}");

    daemon.launch(&[]);
    assert_eq!(
        daemon.json(&["bans", "list"]),
        before,
        "bans list intact after restart"
    );
    assert_eq!(v4(&lab), [0, N]);
    if backend == "xdp" {
        assert!(
            daemon
                .log_text()
                .contains("swapped new program into pinned link")
        );
    }
}

fn reboot_restores_bans_from_the_store(backend: &str) {
    let lab = Lab::new();
    let mut daemon = Daemon::start(&lab, backend, "");
    daemon.cli_ok(&["bans", "add", &ATTACKER.to_string()]);
    daemon.cli_ok(&["bans", "add", "2001:db8:bad::/48", "--for", "permanent"]);
    daemon.reboot();
    assert!(
        lab.stops_enforcing(backend),
        "with bpffs gone nothing is attached, as after a reboot"
    );
    assert_eq!(v4(&lab), [N, N]);

    daemon.launch(&[]);
    assert_eq!(v4(&lab), [0, N], "the ban is enforced again");
    let list = daemon.json(&["bans", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
}

fn sigterm_keeps_enforcing_unless_asked_to_detach(backend: &str) {
    let lab = Lab::new();
    let mut daemon = Daemon::start(&lab, backend, "");
    daemon.cli_ok(&["bans", "add", &ATTACKER.to_string()]);
    daemon.terminate();
    assert!(!daemon.socket.exists(), "socket removed on clean exit");
    assert_eq!(v4(&lab), [0, N], "still enforced after a clean stop");

    daemon.launch(&["--detach-on-exit"]);
    daemon.terminate();
    assert!(lab.stops_enforcing(backend), "detached on request");
    assert_eq!(v4(&lab), [N, N]);
}

fn expired_ban_ends_and_is_forgotten(backend: &str) {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, backend, "");
    daemon.cli_ok(&["bans", "add", &ATTACKER.to_string(), "--for", "2s"]);
    assert_eq!(v4(&lab), [0, N]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !daemon
        .json(&["bans", "list"])
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "ban never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(v4(&lab), [N, N]);
}

fn owner_and_allowlist_are_never_banned(backend: &str) {
    let lab = Lab::new();
    let daemon = Daemon::start(
        &lab,
        backend,
        &format!("[allow]\nnetworks = [\"{PHONE}\"]\n"),
    );
    for (net, why) in [
        (PHONE.to_string(), "allowlisted network"),
        (PBX.to_string(), "an address of this host"),
        ("10.77.0.0/16".to_string(), "an address of this host"),
        ("127.0.0.1".to_string(), "loopback"),
    ] {
        let out = daemon.cli(&["bans", "add", &net]);
        assert_eq!(out.status.code(), Some(1), "{net}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("refusing to ban") && err.contains(why),
            "{net}: {err}"
        );
    }
    assert!(
        daemon
            .json(&["bans", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );

    // An allowlisted phone inside a banned network keeps working.
    daemon.cli_ok(&["bans", "add", "10.77.0.64/26"]);
    assert_eq!(v4(&lab), [0, N]);
    assert!(daemon.packets("allowlisted") >= N as u64);
}

fn damaged_journal_is_reported_and_the_rest_restored(backend: &str) {
    let lab = Lab::new();
    let mut daemon = Daemon::start(&lab, backend, "");
    daemon.cli_ok(&["bans", "add", &ATTACKER.to_string()]);
    daemon.cli_ok(&["bans", "add", "198.51.100.9"]);
    daemon.kill9();
    // A torn write: the last entry is cut in half.
    let journal = daemon.journal();
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes.truncate(bytes.len() - 15);
    std::fs::write(&journal, bytes).unwrap();

    daemon.launch(&[]);
    let status = daemon.json(&["status"]);
    assert_eq!(status["store_damage"][0]["line"], 2, "{status}");
    assert!(daemon.cli_ok(&["status"]).contains("damaged"));
    assert_eq!(status["bans"], 1);
    assert_eq!(v4(&lab), [0, N], "the readable ban is enforced");
}

fn second_daemon_on_the_same_socket_is_refused(backend: &str) {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, backend, "");
    let out = std::process::Command::new(testenv::pbxguard_bin())
        .args(["run", "--config"])
        .arg(&daemon.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
    assert!(
        daemon.cli(&["status"]).status.success(),
        "the first daemon is unharmed"
    );
}

/// A detection setup: the built-in `asterisk` filter on a followed log, maxretry = 3.
fn detecting(lab: &Lab, backend: &str) -> (Daemon, std::path::PathBuf) {
    let mut daemon = Daemon::configure(
        lab,
        backend,
        &format!(
            "[allow]\nnetworks = [\"{PHONE}\"]\n\n[policy]\nmaxretry = 3\nfindtime = \"10m\"\nbantime = \"1h\"\n\n\
             [[source]]\npath = \"LOG\"\nfilters = [\"asterisk\"]\n"
        ),
    );
    let log = daemon.log_file("full");
    daemon.launch(&[]);
    (daemon, log)
}

fn failure(from: &str, user: &str) -> String {
    format!(
        "[2026-11-26 11:03:53] NOTICE[1234] chan_sip.c: Registration from '\"{user}\" <sip:{user}@10.77.0.1>' failed for '{from}:5060' - Wrong password\n"
    )
}

fn failures_in_a_followed_log_ban_the_source_and_never_the_allowlist(backend: &str) {
    let lab = Lab::new();
    let (daemon, log) = detecting(&lab, backend);
    assert_eq!(v4(&lab), [N, N]);
    // The attacker puts the phone's address in its user name; the phone itself also fails.
    for _ in 0..3 {
        append(
            &log,
            &failure(
                &ATTACKER.to_string(),
                &format!("' failed for '{PHONE}:5060' - Wrong password"),
            ),
        );
    }
    for _ in 0..5 {
        append(&log, &failure(&PHONE.to_string(), "100"));
    }
    let ban = daemon.wait_for_ban(&format!("{ATTACKER}/32"));
    assert_eq!(ban["source"], "asterisk");
    assert_eq!(ban["rule"], "sip_register_failed");
    assert_eq!(ban["failures"], 3);
    assert_eq!(
        v4(&lab),
        [0, N],
        "attacker dropped, allowlisted phone untouched"
    );
    let status = daemon.json(&["status"]);
    assert_eq!(status["bans"], 1, "only the attacker is banned: {status}");
    assert!(
        status["ignored_failures"].as_u64().unwrap() >= 5,
        "{status}"
    );
    assert_eq!(status["sources"][0]["matches"], 8);
}

fn failures_written_while_down_are_read_on_start(backend: &str) {
    let lab = Lab::new();
    let (mut daemon, log) = detecting(&lab, backend);
    append(&log, &failure(&ATTACKER.to_string(), "100"));
    // Let the daemon read (and remember) the first line before stopping it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.json(&["status"])["sources"][0]["matches"] != 1 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.terminate();
    append(&log, &failure(&ATTACKER.to_string(), "101"));
    append(&log, &failure(&ATTACKER.to_string(), "102"));
    daemon.launch(&[]);
    // The two lines written while down are read on start (failure counts live in memory,
    // so with one more line they reach maxretry = 3); the line read before is not re-read.
    append(&log, &failure(&ATTACKER.to_string(), "103"));
    daemon.wait_for_ban(&format!("{ATTACKER}/32"));
    assert_eq!(
        daemon.json(&["status"])["sources"][0]["matches"],
        3,
        "the line before the restart is not read twice"
    );
}

fn journal_unit_failures_ban_and_resume_after_restart(backend: &str) {
    let lab = Lab::new();
    let journal = tempfile::tempdir().unwrap();
    let fail = format!("Failed password for invalid user admin from {ATTACKER} port 4242 ssh2");
    testenv::journal_append(journal.path(), "ssh.service", &[&fail, &fail, &fail]);
    let mut daemon = Daemon::start(
        &lab,
        backend,
        &format!(
            "[policy]\nmaxretry = 2\n\n[[source]]\njournal_unit = \"ssh.service\"\njournal_directory = \"{}\"\nfilters = [\"sshd\"]\n",
            journal.path().display()
        ),
    );
    // History from before the first start is not read (only new entries count).
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        daemon
            .json(&["bans", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    testenv::journal_append(journal.path(), "ssh.service", &[&fail]);
    testenv::journal_append(journal.path(), "other.service", &[&fail, &fail]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.json(&["status"])["sources"][0]["matches"] != 1 {
        assert!(Instant::now() < deadline, "{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Entries written while the daemon is down are read after the saved cursor (failure
    // counts are in memory, so both of these are needed for maxretry = 2).
    daemon.terminate();
    testenv::journal_append(journal.path(), "ssh.service", &[&fail, &fail]);
    daemon.launch(&[]);
    daemon.wait_for_ban(&format!("{ATTACKER}/32"));
    assert_eq!(
        daemon.json(&["status"])["sources"][0]["matches"],
        2,
        "nothing read twice"
    );
    assert_eq!(v4(&lab), [0, N]);
}

both_backends!(
    ban_drops_only_the_banned_source_and_del_restores_it,
    ipv6_and_cidr_bans_drop,
    bans_list_json_is_the_documented_contract,
    ban_survives_kill9_and_restart,
    reboot_restores_bans_from_the_store,
    sigterm_keeps_enforcing_unless_asked_to_detach,
    expired_ban_ends_and_is_forgotten,
    owner_and_allowlist_are_never_banned,
    damaged_journal_is_reported_and_the_rest_restored,
    second_daemon_on_the_same_socket_is_refused,
    failures_in_a_followed_log_ban_the_source_and_never_the_allowlist,
    failures_written_while_down_are_read_on_start,
    journal_unit_failures_ban_and_resume_after_restart,
);

/// A journal MESSAGE gets the cap of a file line: a failure padded past journalctl's 4 KiB
/// JSON limit still counts, one over 64 KiB is dropped and counted, and what follows is read.
#[test]
fn journal_messages_are_capped_like_file_lines() {
    let journal = tempfile::tempdir().unwrap();
    let fail = |user: &str, ip: &str| {
        format!("Failed password for invalid user {user} from {ip} port 4242 ssh2")
    };
    let long = "x".repeat(5_000);
    let oversized = "y".repeat(pbxguard::source::lines::MAX_LINE);
    testenv::journal_append(
        journal.path(),
        "ssh.service",
        &[
            &fail("admin", "192.0.2.1"),
            &fail(&long, "192.0.2.2"),
            &fail(&oversized, "192.0.2.3"),
            &fail("root", "192.0.2.4"),
        ],
    );
    let text = format!(
        "[enforce]\ninterfaces = [\"eth0\"]\n\n[daemon]\nstate_dir = {:?}\n\n\
         [[source]]\njournal_unit = \"ssh.service\"\njournal_directory = {:?}\nread_backlog = true\nfilters = [\"sshd\"]\n",
        journal.path().join("state"),
        journal.path(),
    );
    std::fs::create_dir(journal.path().join("state")).unwrap();
    let config =
        pbxguard::config::Config::parse(&text, std::path::Path::new("/etc/pbxguard/t.toml"))
            .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let sources = pbxguard::source::Sources::start(&config, tx).unwrap();
    let stats = sources.stats()[0].clone();
    let mut ips = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ips.len() < 3 && Instant::now() < deadline {
        match rx.try_recv() {
            Ok(event) => ips.push(event.ip.to_string()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    assert_eq!(ips, ["192.0.2.1", "192.0.2.2", "192.0.2.4"]);
    assert_eq!(
        stats.oversized.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(stats.lines.load(std::sync::atomic::Ordering::Relaxed), 3);
    // Stop ends journalctl and the thread (bounded: a hang fails the test).
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        sources.stop();
        done_tx.send(()).unwrap();
    });
    done.recv_timeout(Duration::from_secs(60))
        .expect("Sources::stop returned");
    assert!(!stats.is_alive());
}
