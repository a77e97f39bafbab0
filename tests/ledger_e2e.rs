//! The ledger under load and faults, on both backends: bursts restored in full after
//! SIGTERM and kill -9, a full disk, a full map or set, overlapping bans in every order,
//! a reload failing in its last step, mass expiry while `status` answers, and a panicking
//! worker. Every test ends with journal == kernel == `bans list` (checked by the fixture).
//! Needs root.

#[macro_use]
mod testenv;

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::{Duration, Instant},
};

use testenv::*;

/// `n` attackers in 10.80.0.0/16 (never the lab's addresses).
fn attacker(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 80, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn failure(from: Ipv4Addr) -> String {
    format!(
        "[2026-11-26 11:03:53] NOTICE[1234] chan_sip.c: Registration from '\"100\" <sip:100@10.77.0.1>' failed for '{from}:5060' - Wrong password\n"
    )
}

/// A daemon following one Asterisk log, `maxretry` failures to a ban.
fn detecting(lab: &Lab, backend: &str, extra: &str) -> (Daemon, std::path::PathBuf) {
    let mut daemon = Daemon::configure(
        lab,
        backend,
        &format!(
            "[policy]\nmaxretry = 3\nfindtime = \"10m\"\nbantime = \"1h\"\n\n[[source]]\npath = \"LOG\"\nfilters = [\"asterisk\"]\n{extra}"
        ),
    );
    let log = daemon.log_file("full");
    daemon.launch(&[]);
    (daemon, log)
}

/// 3 failures from each of `n` attackers, interleaved as a real burst would be.
fn burst(log: &Path, n: usize) {
    let mut text = String::new();
    for _ in 0..3 {
        for i in 0..n {
            text.push_str(&failure(attacker(i)));
        }
    }
    append(log, &text);
}

fn listed(daemon: &Daemon) -> BTreeSet<String> {
    daemon
        .json(&["bans", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["net"].as_str().unwrap().to_string())
        .collect()
}

fn wait_for_count(daemon: &Daemon, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while listed(daemon).len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} bans\n{}",
            listed(daemon).len(),
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn burst_of_2000_is_restored_in_full_after_sigterm(backend: &str) {
    let lab = Lab::new();
    let (mut daemon, log) = detecting(&lab, backend, "");
    burst(&log, 2000);
    wait_for_count(&daemon, 2000);
    daemon.check_ledger();
    // The follower that read the burst shows as alive, with its last read time.
    let source = &daemon.json(&["status"])["sources"][0];
    assert_eq!(source["alive"], true, "{source}");
    assert!(source["last_read"].is_string(), "{source}");
    assert_eq!(source["lines"], 6000);
    let before = listed(&daemon);
    daemon.terminate();
    let journal = pbxguard::store::journal::read(&daemon.journal()).unwrap();
    assert_eq!(journal.bans.len(), 2000, "journal after SIGTERM");
    daemon.launch(&[]);
    assert_eq!(listed(&daemon), before);
    daemon.check_ledger();
}

fn acknowledged_bans_survive_kill9_mid_burst(backend: &str) {
    let lab = Lab::new();
    let (mut daemon, log) = detecting(&lab, backend, "");
    burst(&log, 3000);
    // Kill while the burst is still being worked through.
    wait_for_count(&daemon, 300);
    let acknowledged = listed(&daemon);
    daemon.kill9();
    daemon.launch(&[]);
    let after = listed(&daemon);
    let lost: Vec<_> = acknowledged.difference(&after).collect();
    assert!(lost.is_empty(), "acknowledged bans lost: {lost:?}");
    // Positions were saved at most a second before the kill: the rest of the burst is
    // read again and banned, with nothing counted twice into a wrong state.
    wait_for_count(&daemon, 3000);
    daemon.check_ledger();
}

fn a_full_map_refuses_the_rest_and_records_exactly_what_is_enforced(backend: &str) {
    let lab = Lab::new();
    let (mut daemon, log) = detecting(&lab, backend, "\n[ban]\nmax_entries = 64\n");
    burst(&log, 100);
    wait_for_count(&daemon, 64);
    // The rest were refused, counted and reported; nothing half-applied.
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.json(&["status"])["not_enforced"].as_u64().unwrap() < 36 {
        assert!(Instant::now() < deadline, "{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(listed(&daemon).len(), 64);
    daemon.check_ledger();
    // A manual ban on a full map says so and changes nothing.
    let out = daemon.cli_inside(&["bans", "add", "10.81.0.1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("full") && err.contains("max_entries"), "{err}");
    daemon.check_ledger();
    // Lifting one makes room for one.
    daemon.cli_ok(&["bans", "del", &format!("{}/32", attacker(0))]);
    daemon.cli_ok(&["bans", "add", "10.81.0.1"]);
    assert_eq!(listed(&daemon).len(), 64);
    daemon.check_ledger();
    daemon.terminate();
    daemon.launch(&[]);
    assert_eq!(listed(&daemon).len(), 64);
}

/// Sends from `src` (added to the attacker side) and says whether it arrived.
fn arrives(lab: &Lab, src: Ipv4Addr) -> bool {
    lab.deliveries(&[IpAddr::V4(src)], IpAddr::V4(PBX), 5)[0] > 0
}

fn overlapping_bans_behave_like_one_lookup_in_every_order(backend: &str) {
    let lab = Lab::new();
    let inner = Ipv4Addr::new(10, 77, 0, 66); // ATTACKER, inside 10.77.0.64/26
    let outer_only = Ipv4Addr::new(10, 77, 0, 70);
    lab.add_outside_address(outer_only);
    let daemon = Daemon::start(&lab, backend, "");
    assert!(arrives(&lab, inner) && arrives(&lab, outer_only));
    // Host first, then the covering network; the host's ban ends first.
    daemon.cli_ok(&["bans", "add", "10.77.0.66", "--for", "2s"]);
    daemon.cli_ok(&["bans", "add", "10.77.0.64/26", "--for", "5s"]);
    daemon.check_ledger();
    assert!(!arrives(&lab, inner) && !arrives(&lab, outer_only));
    std::thread::sleep(Duration::from_millis(2500));
    // The expired host ban must not shadow the live network ban.
    assert!(!arrives(&lab, inner), "expired /32 shadowed the live /26");
    assert!(!arrives(&lab, outer_only));
    std::thread::sleep(Duration::from_millis(3500));
    assert!(arrives(&lab, inner) && arrives(&lab, outer_only));
    daemon.check_ledger();

    // Network first, then the host inside it; the network's ban ends first.
    daemon.cli_ok(&["bans", "add", "10.77.0.64/26", "--for", "2s"]);
    daemon.cli_ok(&["bans", "add", "10.77.0.66", "--for", "5s"]);
    daemon.check_ledger();
    assert!(!arrives(&lab, inner) && !arrives(&lab, outer_only));
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !arrives(&lab, inner),
        "the host's own ban ended with the network's"
    );
    assert!(arrives(&lab, outer_only));
    std::thread::sleep(Duration::from_millis(3500));
    assert!(arrives(&lab, inner));

    // A network inside a network, and unbans in either order.
    daemon.cli_ok(&["bans", "add", "10.77.0.64/26"]);
    daemon.cli_ok(&["bans", "add", "10.77.0.64/27"]);
    daemon.cli_ok(&["bans", "add", "10.77.0.66"]);
    daemon.check_ledger();
    daemon.cli_ok(&["bans", "del", "10.77.0.64/27"]);
    assert!(!arrives(&lab, inner) && !arrives(&lab, outer_only));
    daemon.cli_ok(&["bans", "del", "10.77.0.64/26"]);
    assert!(!arrives(&lab, inner) && arrives(&lab, outer_only));
    daemon.cli_ok(&["bans", "del", "10.77.0.66"]);
    assert!(arrives(&lab, inner));
    daemon.check_ledger();
}

#[cfg(feature = "failpoints")]
fn a_reload_failing_in_its_last_step_leaves_the_running_config(backend: &str) {
    let lab = Lab::new();
    let mut daemon = Daemon::configure(&lab, backend, "");
    daemon
        .env
        .push(("FAILPOINTS".into(), "reload-geo=return".into()));
    daemon.launch(&[]);
    daemon.cli_ok(&["bans", "add", &ATTACKER.to_string()]);
    assert!(!arrives(&lab, ATTACKER));
    // The new config allowlists the attacker and turns on geo rules; the geo step fails.
    let mmdb = daemon.dir.path().join("geo.mmdb");
    write_mmdb(&mmdb, &[("198.18.0.0/15", "ZZ")]);
    let text = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(
        &daemon.config,
        format!(
            "{text}\n[allow]\nnetworks = [\"{ATTACKER}\"]\n\n[geo]\ndatabase = \"{}\"\ndeny_countries = [\"ZZ\"]\n",
            mmdb.display()
        ),
    )
    .unwrap();
    let out = daemon.cli_inside(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("running config stays"), "{err}");
    // The allowlist step had been applied; it was undone.
    assert!(
        !arrives(&lab, ATTACKER),
        "the half-applied allowlist lets the attacker through"
    );
    let status = daemon.json(&["status"]);
    assert_eq!(status["allowlisted"], 0);
    assert_eq!(status["geo_networks"], 0);
    daemon.check_ledger();
}

#[test]
fn fifty_thousand_simultaneous_expiries_keep_status_answering() {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, "xdp", "");
    let nets: Vec<String> = (0..50_000u32)
        .map(|i| Ipv4Addr::from(0x0b00_0000 + i).to_string())
        .collect();
    let file = daemon.dir.path().join("nets.txt");
    std::fs::write(&file, nets.join("\n")).unwrap();
    daemon.cli_ok(&[
        "bans",
        "add",
        "11.255.255.1",
        "--from-file",
        file.to_str().unwrap(),
        "--for",
        "20s",
    ]);
    assert_eq!(daemon.json(&["status"])["bans"], 50_001);
    daemon.check_ledger();
    // Poll status while all of them expire together.
    let mut worst = Duration::ZERO;
    let mut polls = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let start = Instant::now();
        let bans = daemon.json(&["status"])["bans"].as_u64().unwrap();
        worst = worst.max(start.elapsed());
        polls += 1;
        if bans == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "50,001 simultaneous expiries: worst `status` latency {worst:?} over {polls} polls (CLI process start included)"
    );
    assert!(
        pbxguard::store::journal::read(&daemon.journal())
            .unwrap()
            .bans
            .is_empty()
    );
    daemon.check_ledger();
}

/// The host's addresses are cached and refreshed on netlink address changes: an address
/// added while the daemon runs is protected at once, and one removed is no longer.
#[test]
fn an_address_added_to_the_host_is_protected_at_once() {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, "xdp", "");
    let new = "10.77.0.99";
    let ip = |args: &[&str]| {
        let status = std::process::Command::new("ip")
            .args(["-n", &lab.inside.name])
            .args(args)
            .status()
            .unwrap();
        assert!(status.success());
    };
    ip(&["addr", "add", &format!("{new}/24"), "dev", INSIDE_IF]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let addresses = daemon.json(&["status"])["host_addresses"].to_string();
        if addresses.contains(new) {
            break;
        }
        assert!(Instant::now() < deadline, "{addresses}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = daemon.cli(&["bans", "add", new]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("an address of this host"), "{err}");
    ip(&["addr", "del", &format!("{new}/24"), "dev", INSIDE_IF]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.json(&["status"])["host_addresses"]
        .to_string()
        .contains(new)
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.cli_ok(&["bans", "add", new]);
}

#[test]
fn a_full_disk_refuses_the_ban_and_the_next_one_after_space_is_freed_is_kept() {
    let lab = Lab::new();
    let mut daemon = Daemon::configure(&lab, "xdp", "");
    let state = daemon.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=256k",
            "pbxguard-test",
            state.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(state.clone());
    daemon.launch(&[]);
    daemon.cli_ok(&["bans", "add", "10.90.0.1"]);
    // Fill the disk to the last byte.
    let filler = state.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=4k"])
        .stderr(std::process::Stdio::null())
        .status();
    let out = daemon.cli_inside(&["bans", "add", "10.90.0.2", "--reason", &"x".repeat(20_000)]);
    assert!(
        !out.status.success(),
        "a ban on a full disk was acknowledged"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("disk") && err.contains("No space left"),
        "{err}"
    );
    assert!(!listed(&daemon).contains("10.90.0.2/32"));
    daemon.check_ledger();
    std::fs::remove_file(&filler).unwrap();
    daemon.cli_ok(&["bans", "add", "10.90.0.3"]);
    daemon.check_ledger();
    daemon.kill9();
    let journal = pbxguard::store::journal::read(&daemon.journal()).unwrap();
    assert!(journal.damage.is_empty(), "{:?}", journal.damage);
    let nets: BTreeSet<String> = journal.bans.keys().map(|n| n.to_string()).collect();
    assert_eq!(
        nets,
        BTreeSet::from(["10.90.0.1/32".to_string(), "10.90.0.3/32".to_string()])
    );
    daemon.launch(&[]);
    assert_eq!(
        listed(&daemon),
        BTreeSet::from(["10.90.0.1/32".to_string(), "10.90.0.3/32".to_string()])
    );
    // The ledger check (in the fixture's drop) reads the journal: before the unmount.
    drop(daemon);
}

#[cfg(feature = "failpoints")]
#[test]
fn a_panicking_worker_ends_the_daemon_and_a_restart_restores_the_bans() {
    let lab = Lab::new();
    let mut daemon = Daemon::configure(
        &lab,
        "xdp",
        "[policy]\nmaxretry = 1\n\n[[source]]\npath = \"LOG\"\nfilters = [\"asterisk\"]\n",
    );
    let log = daemon.log_file("full");
    // The engine loop panics on its second burst of failures.
    daemon.env.push((
        "FAILPOINTS".into(),
        "engine-failures=1*off->panic(injected)".into(),
    ));
    daemon.launch(&[]);
    append(&log, &failure(attacker(1)));
    daemon.wait_for_ban(&format!("{}/32", attacker(1)));
    append(&log, &failure(attacker(2)));
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(70), "{}", daemon.log_text());
    assert!(daemon.log_text().contains("panicked"));
    daemon.env.clear();
    daemon.launch(&[]);
    assert!(listed(&daemon).contains(&format!("{}/32", attacker(1))));
    daemon.check_ledger();
}

/// A crash after the journal write and before the kernel write: the ban was not
/// acknowledged, and the next start enforces what the journal holds.
#[cfg(feature = "failpoints")]
fn a_crash_between_journal_and_kernel_is_reconciled_on_start(backend: &str) {
    let lab = Lab::new();
    let mut daemon = Daemon::configure(&lab, backend, "");
    daemon.env.push((
        "FAILPOINTS".into(),
        "ledger-between-journal-and-kernel=1*off->panic(crash)".into(),
    ));
    daemon.launch(&[]);
    daemon.cli_ok(&["bans", "add", "10.90.0.1"]);
    let out = daemon.cli_inside(&["bans", "add", &ATTACKER.to_string()]);
    assert!(
        !out.status.success(),
        "acknowledged although the daemon died"
    );
    assert_eq!(daemon.wait_exit().code(), Some(70));
    assert!(arrives(&lab, ATTACKER), "the kernel step never ran");
    daemon.env.clear();
    daemon.launch(&[]);
    let bans = listed(&daemon);
    assert!(bans.contains("10.90.0.1/32") && bans.contains(&format!("{ATTACKER}/32")));
    assert!(!arrives(&lab, ATTACKER));
    daemon.check_ledger();
}

both_backends!(
    burst_of_2000_is_restored_in_full_after_sigterm,
    acknowledged_bans_survive_kill9_mid_burst,
    a_full_map_refuses_the_rest_and_records_exactly_what_is_enforced,
    overlapping_bans_behave_like_one_lookup_in_every_order,
    peers_from_the_pbx_config_are_never_banned,
);

/// Fault injection needs the `failpoints` feature (`cargo xtask test` turns it on).
#[cfg(feature = "failpoints")]
mod faults {
    both_backends!(
        a_reload_failing_in_its_last_step_leaves_the_running_config,
        a_crash_between_journal_and_kernel_is_reconciled_on_start,
    );
    use super::{
        a_crash_between_journal_and_kernel_is_reconciled_on_start,
        a_reload_failing_in_its_last_step_leaves_the_running_config,
    };
}

/// Peers named in the PBX's own config are never banned, are listed with file and line,
/// pass the perimeter rules except the flood limit, and follow edits of the file.
fn peers_from_the_pbx_config_are_never_banned(backend: &str) {
    let lab = Lab::new();
    let root = tempfile::tempdir().unwrap();
    let asterisk = root.path().join("etc/asterisk");
    std::fs::create_dir_all(&asterisk).unwrap();
    let pjsip = asterisk.join("pjsip.conf");
    std::fs::write(
        &pjsip,
        format!("[trunk]\ntype=identify\nendpoint=trunk\nmatch={PHONE}\n"),
    )
    .unwrap();
    let mut daemon = Daemon::configure(
        &lab,
        backend,
        &format!(
            "[policy]\nmaxretry = 1\n\n[trust]\nroot = \"{}\"\n\n\
             [flood]\npackets_per_second = 5\nburst = 5\n\n\
             [[protect]]\nports = [\"5080/udp\"]\ntrusted = [\"{ATTACKER}\"]\n\n\
             [[source]]\npath = \"LOG\"\nfilters = [\"asterisk\"]\n",
            root.path().display()
        ),
    );
    let log = daemon.log_file("full");
    daemon.launch(&[]);
    let trusted = |daemon: &Daemon| daemon.json(&["status"])["pbx_trusted"].clone();
    let deadline = Instant::now() + Duration::from_secs(15);
    while trusted(&daemon).as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let entry = &trusted(&daemon)[0];
    assert_eq!(entry["net"], format!("{PHONE}/32"));
    assert_eq!(entry["line"], 4);
    assert_eq!(entry["origin"], "pjsip identify match");
    assert!(
        entry["file"]
            .as_str()
            .unwrap()
            .ends_with("etc/asterisk/pjsip.conf")
    );
    // The protected port does not list the trunk, but the trunk passes it.
    let to_5080 = |from: Ipv4Addr| {
        let listener = lab.listen(IpAddr::V4(PBX), 5080);
        lab.send(IpAddr::V4(from), IpAddr::V4(PBX), 5080, 3);
        received_from(&listener, &[IpAddr::V4(from)])[0]
    };
    assert_eq!(
        to_5080(PHONE),
        3,
        "the PBX-trusted peer passes the perimeter"
    );
    assert!(daemon.packets("pbx_trusted") >= 3);
    if backend == "xdp" {
        // Forged scanner requests with the trunk's address pass to the PBX and ban nothing.
        let listener = lab.listen(IpAddr::V4(PBX), 5060);
        for call in 0..5 {
            let payload = format!(
                "OPTIONS sip:100@{PBX} SIP/2.0\r\nCall-ID: {call}@x\r\nUser-Agent: friendly-scanner\r\n\r\n"
            );
            lab.outside.enter(move || {
                let socket = std::net::UdpSocket::bind((PHONE, 0)).unwrap();
                socket.send_to(payload.as_bytes(), (PBX, 5060)).unwrap();
            });
        }
        assert_eq!(received_from(&listener, &[IpAddr::V4(PHONE)]), [5]);
        assert!(!listed(&daemon).contains(&format!("{PHONE}/32")));
    }
    // A flood from it is still dropped.
    let listener = lab.listen(IpAddr::V4(PBX), 5060);
    lab.send(IpAddr::V4(PHONE), IpAddr::V4(PBX), 5060, 100);
    let got = received_from(&listener, &[IpAddr::V4(PHONE)])[0];
    assert!(
        got < 100,
        "the flood limit still applies: {got} of 100 arrived"
    );
    assert!(daemon.packets("sip_flood") > 0);
    // A forged failure line naming the trunk does not ban it; a manual ban is refused.
    append(&log, &failure(PHONE));
    append(&log, &failure(attacker(5)));
    daemon.wait_for_ban(&format!("{}/32", attacker(5)));
    assert!(!listed(&daemon).contains(&format!("{PHONE}/32")));
    let out = daemon.cli_inside(&["bans", "add", &PHONE.to_string()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pjsip.conf:4") && err.contains("[trust]"),
        "{err}"
    );
    // `explain` says why, with file and line; and what banned the attacker.
    let why = daemon.json(&["explain", &PHONE.to_string()]);
    assert_eq!(why["pbx_trusted"][0]["line"], 4, "{why}");
    assert!(
        why["never_banned"]
            .as_str()
            .unwrap()
            .contains("pjsip.conf:4"),
        "{why}"
    );
    assert!(why["bans"].as_array().unwrap().is_empty());
    let text = daemon.cli_ok(&["explain", &attacker(5).to_string()]);
    assert!(
        text.contains("banned by") && text.contains("asterisk"),
        "{text}"
    );
    // The trunk is removed from the PBX config: it is an ordinary address again.
    std::fs::write(&pjsip, "[trunk]\ntype=identify\nendpoint=trunk\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !trusted(&daemon).as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        to_5080(PHONE),
        0,
        "no longer trusted: the protected port drops it"
    );
    daemon.cli_ok(&["bans", "add", &PHONE.to_string()]);
}
