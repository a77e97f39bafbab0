//! Community intelligence end to end (issue 16): blocklist feeds served by a real HTTP
//! server in the PBX's test namespace (FireHOL-style netset with an ETag, a 50 MB body, a
//! download cut short, an error status) and a file feed (Spamhaus DROP style) replaced on
//! disk; and a real CrowdSec LAPI from Debian's package with `cscli` decisions. Real packets
//! on the lab's veth decide, on both backends. Needs root, and crowdsec (cargo xtask setup).

mod testenv;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use pbxguard_lab::{
    crowdsec::Lapi,
    http::{HttpServer, Reply},
};
use testenv::{ATTACKER, Daemon, Lab, N, PBX, PHONE};

/// Listed only by the file feed.
const LISTED: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 99);
/// Listed only by the APIBAN feed.
const APIBANNED: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 98);

fn feed(daemon: &Daemon, name: &str) -> serde_json::Value {
    daemon.json(&["status"])["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no feed {name}"))
}

fn delivered(lab: &Lab, sources: &[Ipv4Addr]) -> Vec<usize> {
    let sources: Vec<IpAddr> = sources.iter().map(|s| IpAddr::V4(*s)).collect();
    lab.deliveries(&sources, IpAddr::V4(PBX), N)
}

const NETSET: &str = "#\n# firehol_level1 (test copy)\n# Maintainer: FireHOL\n#\n\
    10.77.0.66\n198.51.100.0/24\n0.0.0.0/0\n10.77.0.0/24\n\
    not an address\n999.1.1.1\n1.2.3.4/33\n\n";

fn drop_list(extra: &str) -> String {
    format!(
        "; Spamhaus DROP List 2026/11/30 - (c) 2026 The Spamhaus Project\n\
         ; Last-Modified: Mon, 30 Nov 2026 11:22:33 GMT\n\
         {LISTED}/32 ; SBL000001\n{extra}"
    )
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn feeds_are_dropped_refreshed_without_gaps_and_kept_when_downloads_fail(backend: &str) {
    let lab = Lab::new();
    lab.add_outside_address(LISTED);
    let server = HttpServer::start(&lab.inside, IpAddr::V4(PBX));
    server.set(
        "/firehol.netset",
        Reply::Body {
            body: NETSET.into(),
            etag: Some("\"v1\"".into()),
        },
    );
    server.set("/big.netset", Reply::Big { size: 50 << 20 });
    server.set(
        "/cut.netset",
        Reply::Truncated {
            body: b"192.0.2.1\n192.0.2.2\n".to_vec(),
            claimed: 4096,
        },
    );
    // APIBAN: two pages from ID 100, then "no new bans" (HTTP 400, as the real API answers).
    server.set(
        "/api/testkey/banned/100",
        Reply::Body {
            body: br#"{"ipaddress":["10.77.0.98","not-an-ip"],"ID":"1700000001"}"#.to_vec(),
            etag: None,
        },
    );
    server.set(
        "/api/testkey/banned/1700000001",
        Reply::Body {
            body: br#"{"ipaddress":["0.0.0.0/0","203.0.113.9"],"ID":"1700000002"}"#.to_vec(),
            etag: None,
        },
    );
    server.set(
        "/api/testkey/banned/1700000002",
        Reply::Status(
            400,
            br#"{"ipaddress":["no new bans"],"ID":"none"}"#.to_vec(),
        ),
    );
    lab.add_outside_address(APIBANNED);
    let mut daemon = Daemon::configure(&lab, backend, "");
    let drop_file = daemon.dir.path().join("drop.txt");
    std::fs::write(&drop_file, drop_list("")).unwrap();
    let config = std::fs::read_to_string(&daemon.config).unwrap()
        + &format!(
            "[[blocklist]]\nname = \"firehol\"\nurl = \"{}\"\n\n\
             [[blocklist]]\nname = \"spamhaus\"\npath = \"{}\"\n\n\
             [[blocklist]]\nname = \"big\"\nurl = \"{}\"\n\n\
             [[blocklist]]\nname = \"cut\"\nurl = \"{}\"\n\n\
             [[blocklist]]\nname = \"apiban\"\nformat = \"apiban\"\nurl = \"{}\"\napi_key = \"testkey\"\n",
            server.url("/firehol.netset"),
            drop_file.display(),
            server.url("/big.netset"),
            server.url("/cut.netset"),
            server.url("/api"),
        );
    std::fs::write(&daemon.config, config).unwrap();
    daemon.launch(&[]);

    testenv::wait_until(&daemon, "the feeds loaded", || {
        feed(&daemon, "firehol")["entries"] == 2 && feed(&daemon, "spamhaus")["entries"] == 1
    });
    let firehol = feed(&daemon, "firehol");
    // 0.0.0.0/0 (wider than /8) and 10.77.0.0/24 (holds this host's address) are refused.
    assert_eq!(firehol["refused"], 2, "{firehol}");
    assert_eq!(firehol["garbage"], 3, "{firehol}");
    let examples = firehol["refused_examples"].to_string();
    assert!(
        examples.contains("0.0.0.0/0") && examples.contains("10.77.0.0/24"),
        "{examples}"
    );
    testenv::wait_until(&daemon, "the big and the cut download refused", || {
        feed(&daemon, "big")["last_error"].is_string()
            && feed(&daemon, "cut")["last_error"].is_string()
    });
    assert!(
        feed(&daemon, "big")["last_error"]
            .as_str()
            .unwrap()
            .contains("max_bytes")
    );
    assert!(
        feed(&daemon, "cut")["last_error"]
            .as_str()
            .unwrap()
            .contains("cut short")
    );
    assert_eq!(
        feed(&daemon, "cut")["entries"],
        0,
        "nothing from a cut download"
    );

    testenv::wait_until(&daemon, "the APIBAN pages", || {
        feed(&daemon, "apiban")["entries"] == 2
    });
    let apiban = feed(&daemon, "apiban");
    assert_eq!(apiban["refused"], 1, "0.0.0.0/0 from APIBAN: {apiban}");
    assert!(apiban["last_error"].is_null(), "{apiban}");
    assert_eq!(
        delivered(&lab, &[ATTACKER, PHONE, LISTED, APIBANNED]),
        [0, N, 0, 0],
        "listed sources dropped, the phone passes"
    );
    assert!(daemon.packets("blocklisted") > 0);
    assert_eq!(
        daemon.json(&["bans", "list"]),
        serde_json::json!([]),
        "feeds are not bans"
    );
    let explained = daemon.json(&["explain", &ATTACKER.to_string()]);
    assert_eq!(
        explained["feeds"],
        serde_json::json!(["firehol"]),
        "{explained}"
    );

    // Swaps without a gap: LISTED keeps sending while its feed is rewritten five times.
    let listener = lab.listen(IpAddr::V4(PBX), 5099);
    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let sending = sending.clone();
        let outside = lab.outside.path();
        std::thread::spawn(move || {
            let file = std::fs::File::open(outside).unwrap();
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let socket = UdpSocket::bind((LISTED, 0)).unwrap();
            let mut sent = 0;
            while sending.load(Ordering::Acquire) && sent < 20_000 {
                let _ = socket.send_to(b"during swap", SocketAddr::from((PBX, 5099)));
                sent += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
            sent
        })
    };
    for round in 0..5 {
        let extra = format!("192.0.2.{round}/32 ; SBL10{round}\n203.0.113.{round}\n");
        write_atomically(&drop_file, &drop_list(&extra));
        testenv::wait_until(&daemon, "the file feed re-read", || {
            feed(&daemon, "spamhaus")["entries"] == 3
                && daemon.json(&["explain", &format!("192.0.2.{round}")])["feeds"]
                    == serde_json::json!(["spamhaus"])
        });
    }
    sending.store(false, Ordering::Release);
    let sent = sender.join().unwrap();
    assert!(sent > 100, "the sender ran ({sent} datagrams)");
    let got = testenv::received_from(&listener, &[IpAddr::V4(LISTED)]);
    assert_eq!(got, [0], "a listed source got through during a swap");
    drop(listener);

    // A refresh that removes LISTED lets it through.
    write_atomically(
        &drop_file,
        "; Spamhaus DROP List, now without it\n192.0.2.77/32 ; SBL9\n",
    );
    testenv::wait_until(&daemon, "LISTED removed", || {
        daemon.json(&["explain", &LISTED.to_string()])["feeds"] == serde_json::json!([])
    });
    assert_eq!(delivered(&lab, &[LISTED, ATTACKER]), [N, 0]);

    // The server breaks; a restart enforces the last good content (saved in state_dir) and
    // says why it is not fresh. Before that, an unchanged feed costs a 304.
    daemon.terminate();
    daemon.launch(&[]);
    testenv::wait_until(&daemon, "the 304", || {
        server.requests().iter().any(|(path, status, etag)| {
            path == "/firehol.netset" && *status == 304 && etag.as_deref() == Some("\"v1\"")
        })
    });
    // The saved content is applied by the engine in its own time (an nft transaction).
    testenv::wait_until(&daemon, "the saved content enforced", || {
        feed(&daemon, "firehol")["entries"] == 2
    });
    server.set(
        "/firehol.netset",
        Reply::Status(503, b"maintenance".to_vec()),
    );
    daemon.terminate();
    daemon.launch(&[]);
    testenv::wait_until(&daemon, "the failed refresh", || {
        feed(&daemon, "firehol")["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503"))
    });
    let firehol = feed(&daemon, "firehol");
    assert_eq!(
        firehol["entries"], 2,
        "the last good content stays: {firehol}"
    );
    assert_eq!(firehol["content_from"], "saved");
    assert_eq!(delivered(&lab, &[ATTACKER, PHONE]), [0, N]);
    let text = daemon.cli_ok(&["status"]);
    assert!(
        text.contains("feed firehol: 2 entries") && text.contains("REFRESH FAILED"),
        "{text}"
    );
}

fn crowdsec_decisions_are_enforced_lifted_and_survive_lapi_restarts(backend: &str) {
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let mut lapi = Lapi::start(
        &lab.inside,
        &dir.path().join("crowdsec"),
        Ipv4Addr::LOCALHOST,
        8080,
    );
    let key = lapi.add_bouncer("pbxguard");
    let mut daemon = Daemon::configure(&lab, backend, "");
    let config = std::fs::read_to_string(&daemon.config).unwrap()
        + &format!(
            "[crowdsec]\nlapi_url = \"{}\"\napi_key = \"{key}\"\npoll = \"1s\"\n",
            lapi.url()
        );
    std::fs::write(&daemon.config, config).unwrap();
    daemon.launch(&[]);
    assert_eq!(testenv::v4(&lab), [N, N]);

    lapi.cscli(&[
        "decisions",
        "add",
        "-i",
        &ATTACKER.to_string(),
        "-d",
        "1h",
        "-R",
        "sip brute force",
    ]);
    let ban = daemon.wait_for_ban(&format!("{ATTACKER}/32"));
    assert_eq!(ban["source"], "crowdsec");
    assert_eq!(testenv::v4(&lab), [0, N]);
    // This host's own address is never banned, whatever CrowdSec decides.
    lapi.cscli(&["decisions", "add", "-i", &PBX.to_string(), "-d", "1h"]);
    lapi.cscli(&["decisions", "add", "-r", "198.51.100.0/24", "-d", "2h"]);
    daemon.wait_for_ban("198.51.100.0/24");
    testenv::wait_until(&daemon, "the refusal counted", || {
        daemon.json(&["status"])["crowdsec"]["refused"].as_u64() >= Some(1)
    });
    assert!(
        daemon
            .json(&["bans", "list"])
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["net"] != format!("{PBX}/32"))
    );

    lapi.cscli(&["decisions", "delete", "-i", &ATTACKER.to_string()]);
    testenv::wait_until(&daemon, "the attacker lifted", || {
        daemon
            .json(&["bans", "list"])
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["net"] != format!("{ATTACKER}/32"))
    });
    assert_eq!(testenv::v4(&lab), [N, N]);

    // The LAPI goes away: nothing enforced is lost, status says so; it comes back: resync.
    lapi.stop();
    testenv::wait_until(&daemon, "the outage noticed", || {
        daemon.json(&["status"])["crowdsec"]["connected"] == false
    });
    daemon.wait_for_ban("198.51.100.0/24");
    let text = daemon.cli_ok(&["status"]);
    assert!(text.contains("NOT REACHABLE"), "{text}");
    lapi.restart();
    lapi.cscli(&["decisions", "add", "-i", &PHONE.to_string(), "-d", "1h"]);
    daemon.wait_for_ban(&format!("{PHONE}/32"));
    daemon.wait_for_ban("198.51.100.0/24");
    assert_eq!(testenv::v4(&lab), [N, 0]);
    // A restart of pbxguard keeps them too (journal) and the startup pull agrees.
    daemon.terminate();
    daemon.launch(&[]);
    testenv::wait_until(&daemon, "the startup pull", || {
        daemon.json(&["status"])["crowdsec"]["connected"] == true
    });
    let nets: Vec<String> = daemon
        .json(&["bans", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["net"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(nets, [format!("{PHONE}/32"), "198.51.100.0/24".to_string()]);
}

both_backends!(
    feeds_are_dropped_refreshed_without_gaps_and_kept_when_downloads_fail,
    crowdsec_decisions_are_enforced_lifted_and_survive_lapi_restarts
);
