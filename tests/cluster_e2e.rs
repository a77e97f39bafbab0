//! A fleet that learns together (issue 14), end to end: a real `nats-server` with JetStream
//! in a hub namespace, and pbxguard daemons in their own labs (PBX namespace + outside
//! namespace with the attacker and the phone), each linked to the hub. Bans travel as real
//! JetStream messages; the peers' verdicts are checked with real packets on each lab's
//! `pbx0`. Every daemon ends with the ledger check (journal == kernel == `bans list`).
//! Needs root and `nats-server` (cargo xtask setup installs it).

mod testenv;

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::Duration,
};

use pbxguard_lab::fleet::{Hub, NATS_PORT, NatsServer};
use testenv::{ATTACKER, Daemon, Lab, N, PBX, PHONE, append, v4};

/// chan_sip's wrong-password line (proven evidence).
fn wrong_password(from: Ipv4Addr) -> String {
    format!(
        "[2026-11-26 11:03:53] NOTICE[1234] chan_sip.c: Registration from '<sip:100@{PBX}>' failed for '{from}:5060' - Wrong password\n"
    )
}

/// One PBX of the fleet: its daemon and its lab (dropped in that order: the daemon's
/// ledger check runs inside the lab's namespace).
struct Node {
    daemon: Daemon,
    lab: Lab,
    log: std::path::PathBuf,
}

/// Configures and starts node `name` on `backend`, linked to the hub's NATS server.
fn node(hub: &Hub, name: &str, backend: &str, extra: &str) -> Node {
    let (lab, mut daemon, log) = configure(hub, name, backend, extra);
    daemon.launch(&[]);
    Node { lab, daemon, log }
}

fn configure(
    hub: &Hub,
    name: &str,
    backend: &str,
    extra: &str,
) -> (Lab, Daemon, std::path::PathBuf) {
    let lab = Lab::new();
    let server = hub.connect(&lab);
    let daemon = Daemon::configure(
        &lab,
        backend,
        &format!(
            "[policy]\nmaxretry = 3\n\n[[source]]\npath = \"LOG\"\nfilters = [\"asterisk\"]\n\n\
             [cluster]\nservers = [\"nats://{server}:{NATS_PORT}\"]\nnode = \"{name}\"\n{extra}\n"
        ),
    );
    let log = daemon.log_file("full");
    (lab, daemon, log)
}

fn nats(hub: &Hub, dir: &Path) -> NatsServer {
    NatsServer::start(hub, &dir.join("nats"))
}

fn ban_of(daemon: &Daemon, net: &str) -> Option<serde_json::Value> {
    daemon
        .json(&["bans", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["net"] == net)
        .cloned()
}

fn wait_for_peer_ban(daemon: &Daemon, net: &str, from: &str, limit: Duration) {
    testenv::wait_until_within(daemon, &format!("{net} from {from}"), limit, || {
        ban_of(daemon, net).is_some_and(|b| b["source"] == format!("peer:{from}"))
    });
}

fn wait_unbanned(daemon: &Daemon, net: &str) {
    testenv::wait_until_within(
        daemon,
        &format!("{net} lifted"),
        Duration::from_secs(30),
        || ban_of(daemon, net).is_none(),
    );
}

fn cluster(daemon: &Daemon) -> serde_json::Value {
    daemon.json(&["status"])["cluster"].clone()
}

fn attacker() -> String {
    format!("{ATTACKER}/32")
}

/// A detection on A is dropped by B (XDP) and C (nftables) with real packets, shown as
/// `peer:pbx-a` and counted in `status`; A's unban lifts it everywhere.
#[test]
fn a_ban_detected_on_one_node_is_dropped_by_the_others_and_lifted_everywhere() {
    let hub = Hub::new();
    let dir = tempfile::tempdir().unwrap();
    let _nats = nats(&hub, dir.path());
    let a = node(&hub, "pbx-a", "xdp", "");
    let b = node(&hub, "pbx-b", "xdp", "");
    let c = node(&hub, "pbx-c", "nft", "");
    for n in [&b, &c] {
        assert_eq!(v4(&n.lab), [N, N], "both get through before any ban");
    }
    for _ in 0..3 {
        append(&a.log, &wrong_password(ATTACKER));
    }
    let ban = a.daemon.wait_for_ban(&attacker());
    assert_eq!(ban["source"], "asterisk");
    for n in [&b, &c] {
        wait_for_peer_ban(&n.daemon, &attacker(), "pbx-a", Duration::from_secs(30));
        let peer = ban_of(&n.daemon, &attacker()).unwrap();
        assert_eq!(peer["expires"], ban["expires"], "the peer's expiry is kept");
        assert_eq!(peer["evidence"], "proven");
        assert_eq!(
            v4(&n.lab),
            [0, N],
            "the attacker is dropped, the phone passes"
        );
        let status = cluster(&n.daemon);
        assert_eq!(status["connected"], true, "{status}");
        assert_eq!(status["peers"]["pbx-a"]["bans"], 1, "{status}");
        let text = n.daemon.cli_ok(&["status"]);
        assert!(
            text.contains("cluster peer pbx-a: 1 bans in force here"),
            "{text}"
        );
    }
    assert!(cluster(&a.daemon)["published"].as_u64().unwrap() >= 1);

    a.daemon.cli_ok(&["bans", "del", &ATTACKER.to_string()]);
    for n in [&b, &c] {
        wait_unbanned(&n.daemon, &attacker());
        assert_eq!(v4(&n.lab), [N, N], "lifted everywhere");
    }
}

/// A node that joins later replays every active ban (and none that ended); a ban that
/// expires is lifted on every node on time, without any message.
#[test]
fn a_node_joining_later_gets_every_active_ban_and_expiry_needs_no_message() {
    let hub = Hub::new();
    let dir = tempfile::tempdir().unwrap();
    let _nats = nats(&hub, dir.path());
    let a = node(&hub, "pbx-a", "xdp", "publish = [\"detected\", \"manual\"]");
    a.daemon.cli_ok(&[
        "bans",
        "add",
        "198.51.100.0/24",
        "203.0.113.7",
        "--for",
        "1h",
    ]);
    a.daemon
        .cli_ok(&["bans", "add", "2001:db8:77::/48", "--for", "1h"]);
    a.daemon
        .cli_ok(&["bans", "add", "192.0.2.99", "--for", "2s"]);
    a.daemon
        .cli_ok(&["bans", "add", "192.0.2.50", "--for", "12s"]);
    testenv::wait_until_within(
        &a.daemon,
        "5 bans published",
        Duration::from_secs(30),
        || cluster(&a.daemon)["published"] == 5,
    );
    std::thread::sleep(Duration::from_secs(3)); // 192.0.2.99 ends before B exists
    let b = node(&hub, "pbx-b", "xdp", "");
    for net in [
        "198.51.100.0/24",
        "203.0.113.7/32",
        "2001:db8:77::/48",
        "192.0.2.50/32",
    ] {
        wait_for_peer_ban(&b.daemon, net, "pbx-a", Duration::from_secs(30));
    }
    assert!(
        ban_of(&b.daemon, "192.0.2.99/32").is_none(),
        "an ended ban is not replayed"
    );
    // 192.0.2.50 ends on both nodes on time; A publishes nothing for it.
    wait_unbanned(&b.daemon, "192.0.2.50/32");
    wait_unbanned(&a.daemon, "192.0.2.50/32");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        cluster(&a.daemon)["published"],
        5,
        "no message for expiries"
    );
    assert_eq!(
        b.daemon.json(&["bans", "list"]).as_array().unwrap().len(),
        3
    );
}

/// NATS killed, bans made on A (one before and one after A restarts, so only the journal
/// holds them), NATS restarted: B and C receive both. Local protection never waited.
#[test]
fn bans_made_while_nats_is_down_reach_every_peer_when_it_returns() {
    let hub = Hub::new();
    let dir = tempfile::tempdir().unwrap();
    let mut server = nats(&hub, dir.path());
    let mut a = node(&hub, "pbx-a", "xdp", "publish = [\"detected\", \"manual\"]");
    let b = node(&hub, "pbx-b", "xdp", "");
    let c = node(&hub, "pbx-c", "nft", "");
    for n in [&a, &b, &c] {
        testenv::wait_until_within(&n.daemon, "connected", Duration::from_secs(30), || {
            cluster(&n.daemon)["connected"] == true
        });
    }
    server.kill();
    testenv::wait_until_within(&a.daemon, "A to notice", Duration::from_secs(60), || {
        cluster(&a.daemon)["connected"] == false
    });
    for _ in 0..3 {
        append(&a.log, &wrong_password(ATTACKER));
    }
    a.daemon.wait_for_ban(&attacker());
    assert_eq!(
        v4(&a.lab),
        [0, N],
        "local protection does not wait for NATS"
    );
    // A restart while NATS is still down: no memory queue survives it, the journal does.
    a.daemon.terminate();
    a.daemon.launch(&[]);
    a.daemon
        .cli_ok(&["bans", "add", "198.51.100.9", "--for", "1h"]);
    let text = a.daemon.cli_ok(&["status"]);
    assert!(text.contains("NOT CONNECTED"), "{text}");
    server.restart();
    for n in [&b, &c] {
        wait_for_peer_ban(&n.daemon, &attacker(), "pbx-a", Duration::from_secs(90));
        wait_for_peer_ban(
            &n.daemon,
            "198.51.100.9/32",
            "pbx-a",
            Duration::from_secs(30),
        );
        assert_eq!(v4(&n.lab), [0, N]);
    }
}

/// Publishes raw messages to the hub's NATS, as a compromised or broken peer would.
fn publish_raw(hub: &Hub, messages: Vec<(String, Vec<u8>)>) {
    hub.ns.enter(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let client = async_nats::connect(format!("127.0.0.1:{NATS_PORT}"))
                .await
                .unwrap();
            let js = async_nats::jetstream::new(client);
            for (subject, payload) in messages {
                js.publish(subject, payload.into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        })
    })
}

fn raw_ban(node: &str, net: &str, subject_net: &str) -> (String, Vec<u8>) {
    let payload = format!(
        r#"{{"v":1,"op":"ban","node":"{node}","net":"{net}","at":"2026-11-26T11:00:00Z","expires":null,"reason":"forged","filter":"asterisk"}}"#
    );
    (
        format!("pbxguard.bans.{node}.{}", subject_net.replace('.', "-")),
        payload.into_bytes(),
    )
}

/// A peer publishing `0.0.0.0/0`, an address allowlisted on B, a subject that does not match
/// its payload or garbage: refused on B (counted, logged), nothing else disturbed; a peer's
/// unban lifts only that peer's ban, never B's own.
#[test]
fn hostile_or_broken_peers_are_refused_and_disturb_nothing() {
    let hub = Hub::new();
    let dir = tempfile::tempdir().unwrap();
    let _nats = nats(&hub, dir.path());
    let a = node(&hub, "pbx-a", "xdp", "publish = [\"detected\", \"manual\"]");
    let b_extra = format!("\n[allow]\nnetworks = [\"{PHONE}\"]\n");
    let (lab_b, mut daemon_b, log_b) = configure(&hub, "pbx-b", "xdp", "");
    std::fs::write(
        &daemon_b.config,
        std::fs::read_to_string(&daemon_b.config).unwrap() + &b_extra,
    )
    .unwrap();
    daemon_b.launch(&[]);
    let b = Node {
        lab: lab_b,
        daemon: daemon_b,
        log: log_b,
    };
    let c = node(&hub, "pbx-c", "xdp", "accept_from = [\"pbx-a\"]");
    // B's own ban on 192.0.2.30 stands whatever a peer says of that network.
    b.daemon
        .cli_ok(&["bans", "add", "192.0.2.30", "--for", "1h"]);

    publish_raw(
        &hub,
        vec![
            raw_ban("evil", "0.0.0.0/0", "0.0.0.0/0"),
            raw_ban("evil", "::/0", "::/0"),
            raw_ban("evil", "192.0.2.40/32", "192.0.2.41/32"), // subject mismatch
            (
                "pbxguard.bans.evil.1-2-3-4/32".into(),
                b"\xff garbage".to_vec(),
            ),
            raw_ban("evil", &format!("{PBX}/32"), &format!("{PBX}/32")), // B's own address
        ],
    );
    // A's manual bans: the phone (allowlisted on B), then an ordinary address, then B's own.
    a.daemon
        .cli_ok(&["bans", "add", &PHONE.to_string(), "--for", "1h"]);
    a.daemon
        .cli_ok(&["bans", "add", "192.0.2.30", "--for", "2h"]);
    a.daemon
        .cli_ok(&["bans", "add", "192.0.2.20", "--for", "1h"]);
    wait_for_peer_ban(&b.daemon, "192.0.2.20/32", "pbx-a", Duration::from_secs(30));
    wait_for_peer_ban(
        &c.daemon,
        &format!("{PHONE}/32"),
        "pbx-a",
        Duration::from_secs(30),
    );
    wait_for_peer_ban(&c.daemon, "192.0.2.20/32", "pbx-a", Duration::from_secs(30));

    // The link reports its counts after each batch, just after the engine applied it.
    // 0.0.0.0/0, ::/0, B's address, the allowlisted phone.
    testenv::wait_until(&b.daemon, "B's counts", || {
        let status = cluster(&b.daemon);
        status["malformed"] == 2 && status["refused"] == 4
    });
    let status = cluster(&b.daemon);
    assert_eq!(status["peers"]["evil"]["refused"], 3, "{status}");
    let listed: Vec<String> = b
        .daemon
        .json(&["bans", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            format!(
                "{} {}",
                b["net"].as_str().unwrap(),
                b["source"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        listed,
        ["192.0.2.20/32 peer:pbx-a", "192.0.2.30/32 manual"],
        "only the ordinary ban was applied; B's own ban stands"
    );
    assert_eq!(v4(&b.lab)[1], N, "the allowlisted phone passes on B");
    let log = b.daemon.log_text();
    assert!(log.contains("peer's ban refused"), "{log}");
    assert!(log.contains("malformed cluster message dropped"), "{log}");
    // C accepts only pbx-a: evil's bans are refused there too.
    testenv::wait_until(&c.daemon, "C's refusals", || {
        cluster(&c.daemon)["peers"]["evil"]["refused"] == 3
    });
    assert!(ban_of(&c.daemon, "0.0.0.0/0").is_none());

    // A lifts its bans: B's own ban on 192.0.2.30 stays, the peer ban goes.
    a.daemon.cli_ok(&["bans", "del", "192.0.2.30"]);
    a.daemon.cli_ok(&["bans", "del", "192.0.2.20"]);
    wait_unbanned(&b.daemon, "192.0.2.20/32");
    wait_unbanned(&c.daemon, "192.0.2.30/32");
    assert_eq!(
        ban_of(&b.daemon, "192.0.2.30/32").unwrap()["source"],
        "manual"
    );
    let _ = IpAddr::V4(PBX);
}

/// A CA and a server certificate for the hub's addresses (`openssl`), in `dir`.
fn certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=nats",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName = IP:10.99.1.1, IP:10.99.2.1, IP:10.99.3.1, IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// User and password over TLS verified with the admin's CA: bans travel; a node with a
/// wrong password says so in `status` and keeps protecting its own PBX.
#[test]
fn credentials_and_tls_are_used_and_a_refused_login_leaves_local_protection_alone() {
    let hub = Hub::new();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let _nats = NatsServer::start_with(
        &hub,
        &dir.path().join("nats"),
        &[
            "--user",
            "fleet",
            "--pass",
            "s3cret",
            "--tls",
            "--tlscert",
            cert.to_str().unwrap(),
            "--tlskey",
            key.to_str().unwrap(),
        ],
    );
    let login = |password: &str| {
        format!(
            "user = \"fleet\"\npassword = \"{password}\"\ntls_ca = \"{}\"\n",
            ca.display()
        )
    };
    let a = node(&hub, "pbx-a", "xdp", &login("s3cret"));
    let b = node(&hub, "pbx-b", "xdp", &login("wrong"));
    let c = node(&hub, "pbx-c", "xdp", &login("s3cret"));
    for _ in 0..3 {
        append(&a.log, &wrong_password(ATTACKER));
    }
    wait_for_peer_ban(&c.daemon, &attacker(), "pbx-a", Duration::from_secs(30));
    assert_eq!(v4(&c.lab), [0, N]);
    testenv::wait_until_within(
        &b.daemon,
        "B's refused login in status",
        Duration::from_secs(30),
        || {
            cluster(&b.daemon)["last_error"]
                .as_str()
                .is_some_and(|e| e.to_lowercase().contains("authorization"))
        },
    );
    assert_eq!(cluster(&b.daemon)["connected"], false);
    assert!(ban_of(&b.daemon, &attacker()).is_none());
    // B's own detection still bans and drops.
    for _ in 0..3 {
        append(&b.log, &wrong_password(ATTACKER));
    }
    b.daemon.wait_for_ban(&attacker());
    assert_eq!(v4(&b.lab), [0, N]);
}
