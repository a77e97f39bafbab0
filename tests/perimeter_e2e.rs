//! The perimeter rules end to end with the daemon on a veth in namespaces this test creates:
//! SIPVicious's `svmap` is dropped and banned (at its third probe), a flood above the limit is dropped and
//! banned, a protected port only answers its trusted source, even behind IPv6 extension
//! header chains and in fragments. Needs root.

mod testenv;

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use pbxguard_common::MAX_V6_EXT_HEADERS;
use testenv::{
    ATTACKER, ATTACKER6, Daemon, INSIDE_IF, Lab, PBX, PBX6, PHONE, PHONE6,
    frames::{Ext, Frame, ext_chains, mac, send_raw, udp6_datagram},
    received_from, sipp_registers,
};

/// One SIPVicious `svmap` scan of the PBX from the attacker (bounded by `timeout`).
fn svmap(lab: &Lab) -> std::process::Output {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.outside.name,
            "timeout",
            "60",
            "svmap",
            "-t",
            "0.5",
        ])
        .arg(PBX.to_string())
        .output()
        .expect("svmap (Debian package sipvicious; cargo xtask setup installs it)")
}

#[test]
fn svmap_is_dropped_from_its_first_packet_and_banned() {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, "xdp", "");
    // A scanner's UDP probe could carry a forged source address, so a ban takes
    // `[scanners] udp_hits` (3) of them; every probe is dropped from the first.
    for _ in 0..3 {
        let out = svmap(&lab);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("5060"), "svmap must find nothing: {text}");
    }
    assert!(
        daemon.packets("sip_scanner") >= 1,
        "{}",
        daemon.cli_ok(&["stats"])
    );
    let ban = daemon.wait_for_ban(&format!("{ATTACKER}/32"));
    assert_eq!(ban["source"], "sip-scanner");
    assert_eq!(ban["rule"], "friendly-scanner");
    assert_eq!(
        daemon.json(&["status"])["rules_off"],
        serde_json::json!([]),
        "every rule on with this kernel"
    );
    // A well-behaved client on the same SIP port is untouched.
    assert_eq!(
        lab.deliveries(&[IpAddr::V4(PHONE)], IpAddr::V4(PBX), 10),
        [10]
    );
}

#[test]
fn nftables_drops_a_sip_flood_above_the_limit() {
    let lab = Lab::new();
    let daemon = Daemon::start(
        &lab,
        "nft",
        "[flood]\npackets_per_second = 20\nburst = 50\n",
    );
    let listener = lab.listen(IpAddr::V4(PBX), 5060);
    lab.send(IpAddr::V4(ATTACKER), IpAddr::V4(PBX), 5060, 600);
    let received = received_from(&listener, &[IpAddr::V4(ATTACKER)])[0];
    assert!(
        (50..200).contains(&received),
        "the burst passes, the rest is dropped: {received}"
    );
    assert_eq!(daemon.packets("sip_flood") + received as u64, 600);
    let off = &daemon.json(&["status"])["rules_off"];
    assert_eq!(off[0]["rule"], "sip_scanner", "{off}");
    // Other sources have their own meter.
    assert_eq!(
        lab.deliveries(&[IpAddr::V4(PHONE)], IpAddr::V4(PBX), 10),
        [10]
    );
}

#[test]
fn a_sip_flood_above_the_limit_is_dropped_and_banned() {
    let lab = Lab::new();
    let daemon = Daemon::start(
        &lab,
        "xdp",
        "[flood]\npackets_per_second = 20\nburst = 50\noverruns_per_failure = 100\n",
    );
    let listener = lab.listen(IpAddr::V4(PBX), 5060);
    lab.send(IpAddr::V4(ATTACKER), IpAddr::V4(PBX), 5060, 600);
    let received = received_from(&listener, &[IpAddr::V4(ATTACKER)])[0];
    assert!(
        (50..600).contains(&received),
        "the burst passes, the rest is dropped: {received}"
    );
    // The first 100 over-limit packets are dropped as a flood and make one failure; the ban
    // that follows drops the rest earlier, as a ban.
    assert!(
        daemon.packets("sip_flood") >= 100,
        "{}",
        daemon.cli_ok(&["stats"])
    );
    assert_eq!(
        daemon.packets("sip_flood") + daemon.packets("banned") + received as u64,
        600
    );
    let ban = daemon.wait_for_ban(&format!("{ATTACKER}/32"));
    assert_eq!(ban["source"], "sip-flood");
}

#[test]
fn a_protected_port_answers_only_its_trusted_sources_xdp() {
    protected_port("xdp");
}

#[test]
fn a_protected_port_answers_only_its_trusted_sources_nft() {
    protected_port("nft");
}

fn protected_port(backend: &str) {
    let lab = Lab::new();
    let daemon = Daemon::start(
        &lab,
        backend,
        &format!("[[protect]]\nports = [\"5080/udp\"]\ntrusted = [\"{PHONE}\"]\n"),
    );
    let sources = [IpAddr::V4(ATTACKER), IpAddr::V4(PHONE)];
    let listener = lab.listen(IpAddr::V4(PBX), 5080);
    for &from in &sources {
        lab.send(from, IpAddr::V4(PBX), 5080, 10);
    }
    assert_eq!(received_from(&listener, &sources), [0, 10]);
    assert_eq!(daemon.packets("protected_port"), 10);
    // Other ports are not protected.
    assert_eq!(lab.deliveries(&sources, IpAddr::V4(PBX), 10), [10, 10]);
}

#[test]
fn a_trusted_phone_registering_with_sipp_passes_while_svmap_is_dropped() {
    let lab = Lab::new();
    let daemon = Daemon::start(
        &lab,
        "xdp",
        &format!("[[protect]]\nports = [\"5060/udp\"]\ntrusted = [\"{PHONE}\"]\n"),
    );
    let listener = lab.listen(IpAddr::V4(PBX), 5060);
    sipp_registers(&lab, daemon.dir.path(), PHONE, 5);
    assert!(svmap(&lab).status.success());
    let (mut phone, mut attacker) = (0, 0);
    let mut buf = [0u8; 2048];
    while let Ok((n, peer)) = listener.recv_from(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]);
        if peer.ip() == IpAddr::V4(PHONE) && text.starts_with("REGISTER") {
            phone += 1;
        } else if peer.ip() == IpAddr::V4(ATTACKER) {
            attacker += 1;
        }
    }
    assert_eq!(
        (phone, attacker),
        (5, 0),
        "all REGISTERs from the trusted phone, nothing from the scanner"
    );
    assert!(daemon.packets("protected_port") >= 1);
    let bans = daemon.json(&["bans", "list"]);
    assert!(
        bans.as_array()
            .unwrap()
            .iter()
            .all(|b| b["net"] != format!("{PHONE}/32")),
        "{bans}"
    );
}

fn prog_id(lab: &Lab) -> String {
    let out = Command::new("ip")
        .args(["-n", &lab.inside.name, "link", "show", testenv::INSIDE_IF])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split("prog/xdp id ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or("")
        .to_string()
}

#[test]
fn rules_change_on_reload_without_reloading_the_program_or_losing_bans() {
    let lab = Lab::new();
    let daemon = Daemon::start(
        &lab,
        "xdp",
        &format!("[[protect]]\nports = [\"5080/udp\"]\ntrusted = [\"{PHONE}\"]\n"),
    );
    daemon.cli_ok(&["bans", "add", "198.51.100.7", "--for", "permanent"]);
    let before = prog_id(&lab);
    let count = |lab: &Lab| {
        let sources = [IpAddr::V4(ATTACKER), IpAddr::V4(PHONE)];
        let listener = lab.listen(IpAddr::V4(PBX), 5080);
        for &from in &sources {
            lab.send(from, IpAddr::V4(PBX), 5080, 5);
        }
        received_from(&listener, &sources)
    };
    assert_eq!(count(&lab), [0, 5]);
    let text = std::fs::read_to_string(&daemon.config).unwrap().replace(
        &format!("trusted = [\"{PHONE}\"]"),
        &format!("trusted = [\"{ATTACKER}\"]"),
    );
    std::fs::write(&daemon.config, text).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log_text().contains("config reloaded") {
        assert!(Instant::now() < deadline, "{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count(&lab), [5, 0], "the new trusted source, and only it");
    assert_eq!(prog_id(&lab), before, "the program was not reloaded");
    assert_eq!(
        daemon.json(&["bans", "list"])[0]["net"],
        "198.51.100.7/32",
        "bans kept"
    );
}

/// Sends one SIP OPTIONS with `user_agent` from the attacker to the PBX's SIP port.
fn send_sip_options(lab: &Lab, user_agent: &str) {
    let payload = format!(
        "OPTIONS sip:100@{PBX} SIP/2.0\r\nVia: SIP/2.0/UDP {ATTACKER}:5070;branch=z9hG4bK-1\r\n\
         From: <sip:100@{ATTACKER}>;tag=1\r\nTo: <sip:100@{PBX}>\r\nCall-ID: 1@{ATTACKER}\r\n\
         CSeq: 1 OPTIONS\r\nUser-Agent: {user_agent}\r\nContent-Length: 0\r\n\r\n"
    );
    lab.outside.enter(move || {
        let socket = std::net::UdpSocket::bind((ATTACKER, 0)).unwrap();
        socket.send_to(payload.as_bytes(), (PBX, 5060)).unwrap();
    });
}

/// The scanner rule's name comes from the config in force: a reload that reorders
/// `[scanners] user_agents` names the next detection right.
#[test]
fn scanner_detections_are_named_from_the_reloaded_config() {
    let lab = Lab::new();
    let daemon = Daemon::start(
        &lab,
        "xdp",
        "[scanners]\nuser_agents = [\"other-tool\", \"friendly-scanner\"]\n",
    );
    let text = std::fs::read_to_string(&daemon.config)
        .unwrap()
        .replace("\"other-tool\", ", "");
    std::fs::write(&daemon.config, text).unwrap();
    daemon.cli_ok(&["reload"]);
    // Over UDP a ban takes `[scanners] udp_hits` (3) hits.
    for _ in 0..3 {
        send_sip_options(&lab, "friendly-scanner");
    }
    let ban = daemon.wait_for_ban(&format!("{ATTACKER}/32"));
    assert_eq!(ban["source"], "sip-scanner");
    assert_eq!(ban["rule"], "friendly-scanner");
    assert_eq!(
        daemon.json(&["status"])["rules_off"],
        serde_json::json!([]),
        "every rule on with this kernel"
    );
}

/// Trusted by the `[[protect]]` rule of the extension header tests (on the lab's link, not
/// configured on any interface: raw frames need no address to come from).
const TRUSTED6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x30);

/// A daemon protecting 5080/udp for [`TRUSTED6`], with [`PHONE6`] allowlisted.
fn protect_v6(lab: &Lab, backend: &str) -> Daemon {
    Daemon::start(
        lab,
        backend,
        &format!(
            "[allow]\nnetworks = [\"{PHONE6}\"]\n\n[[protect]]\nports = [\"5080/udp\"]\ntrusted = [\"{TRUSTED6}\"]\n"
        ),
    )
}

/// Puts `frames` on the lab link from the outside, as built.
fn put_on_the_wire(lab: &Lab, frames: impl FnOnce(Frame) -> Vec<Vec<u8>>) {
    let link = Frame::between(mac(&lab.outside, "wan0"), mac(&lab.inside, INSIDE_IF));
    send_raw(&lab.outside, "wan0", frames(link));
}

/// Payloads that reached `listener`, with their senders.
fn arrivals(listener: &UdpSocket) -> BTreeSet<(IpAddr, String)> {
    let mut got = BTreeSet::new();
    let mut buf = [0u8; 2048];
    while let Ok((n, peer)) = listener.recv_from(&mut buf) {
        got.insert((peer.ip(), String::from_utf8_lossy(&buf[..n]).into_owned()));
    }
    got
}

/// UDP to a protected port behind 0 to 10 extension headers (hop-by-hop first, then
/// destination options, routing and fragment headers), sent as raw frames. The kernel
/// delivers every one of them (the allowlisted source shows it); a source that is not
/// trusted gets none through. XDP judges the port behind up to `MAX_V6_EXT_HEADERS`
/// headers and drops longer chains as `unclassified` (trusted or not); nftables finds the
/// port behind any chain.
fn ipv6_extension_header_chains_never_reach_a_protected_port(backend: &str) {
    let lab = Lab::new();
    let daemon = protect_v6(&lab, backend);
    let listener = lab.listen(IpAddr::V6(PBX6), 5080);
    let chains = ext_chains();
    let sources = [ATTACKER6, TRUSTED6, PHONE6];
    put_on_the_wire(&lab, |link| {
        let mut frames = Vec::new();
        for src in sources {
            for chain in &chains {
                let payload = format!("{} headers", chain.len());
                let udp = udp6_datagram(src, PBX6, 5080, payload.as_bytes());
                frames.push(link.clone().ipv6(src, PBX6, chain, 17, &udp));
            }
        }
        frames
    });
    let got = arrivals(&listener);
    let from = |src: Ipv6Addr| -> Vec<usize> {
        (0..chains.len())
            .filter(|n| got.contains(&(IpAddr::V6(src), format!("{n} headers"))))
            .collect()
    };
    let all: Vec<usize> = (0..=10).collect();
    assert_eq!(from(PHONE6), all, "the kernel delivers every chain");
    assert_eq!(
        from(ATTACKER6),
        Vec::<usize>::new(),
        "nothing from a stranger"
    );
    let (trusted, judged): (Vec<usize>, u64) = match backend {
        "xdp" => ((0..=MAX_V6_EXT_HEADERS).collect(), 9),
        _ => (all, 11),
    };
    assert_eq!(from(TRUSTED6), trusted);
    assert_eq!(daemon.packets("protected_port"), judged);
    assert_eq!(
        daemon.packets("unclassified"),
        if backend == "xdp" { 4 } else { 0 },
        "chains of 9 and 10 from the stranger and the trusted source"
    );
}

/// A fragmented datagram reaches a protected port from its trusted source only: the first
/// fragment carries the port and is judged, the later one cannot be delivered alone. A
/// first fragment whose header chain runs past its end has no port to judge: dropped and
/// counted `unclassified` on both backends.
fn ipv6_fragments_reach_a_protected_port_only_from_trusted_sources(backend: &str) {
    let lab = Lab::new();
    let daemon = protect_v6(&lab, backend);
    let listener = lab.listen(IpAddr::V6(PBX6), 5080);
    let payload = |src: Ipv6Addr| format!("fragmented from {src} {}", "x".repeat(1200));
    put_on_the_wire(&lab, |link| {
        let mut frames = Vec::new();
        for src in [ATTACKER6, TRUSTED6] {
            frames.extend(link.clone().udp6_fragments(
                src,
                PBX6,
                5080,
                payload(src).as_bytes(),
                512,
            ));
        }
        let head = Ext::Fragment {
            offset: 0,
            more: true,
        };
        frames.push(link.ipv6(
            ATTACKER6,
            PBX6,
            &[head, Ext::CutDestOpts { units: 8 }],
            17,
            &[],
        ));
        frames
    });
    let got = arrivals(&listener);
    assert_eq!(
        got,
        BTreeSet::from([(IpAddr::V6(TRUSTED6), payload(TRUSTED6))]),
        "only the trusted source's datagram, reassembled"
    );
    assert_eq!(
        daemon.packets("protected_port"),
        1,
        "the stranger's first fragment"
    );
    assert_eq!(daemon.packets("unclassified"), 1, "the cut chain");
}

both_backends!(
    ipv6_extension_header_chains_never_reach_a_protected_port,
    ipv6_fragments_reach_a_protected_port_only_from_trusted_sources,
);

/// Sends one UDP datagram from `from` to `to` inside the lab's outside namespace.
fn send_one(lab: &Lab, from: IpAddr, to: SocketAddr, payload: Vec<u8>) {
    lab.outside.enter(move || {
        let socket = UdpSocket::bind(SocketAddr::new(from, 0)).unwrap();
        socket.send_to(&payload, to).unwrap();
    });
}

/// A kernel without `bpf_loop`/`bpf_xdp_load_bytes` (the probe's answer forced by a fail
/// point): the program loads without the scanner rule, XDP stays the backend and enforces
/// everything else, and `status` and the log say which rule is off and why.
#[cfg(feature = "failpoints")]
#[test]
fn without_the_scanner_helpers_xdp_keeps_every_other_rule() {
    let lab = Lab::new();
    let mut daemon = Daemon::configure(
        &lab,
        "auto",
        &format!("[[protect]]\nports = [\"5080/udp\"]\ntrusted = [\"{PHONE}\"]\n"),
    );
    daemon
        .env
        .push(("FAILPOINTS".into(), "xdp-scanner-helpers=return".into()));
    daemon.launch(&[]);
    let status = daemon.json(&["status"]);
    assert_eq!(status["backend"], "xdp", "{status}");
    let off = status["rules_off"].as_array().unwrap();
    assert_eq!(off.len(), 1, "{status}");
    assert_eq!(off[0]["rule"], "sip_scanner");
    let reason = off[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("bpf_loop (Linux 5.17)")
            && reason.contains("bpf_xdp_load_bytes (Linux 5.18)"),
        "{reason}"
    );
    assert!(
        daemon
            .cli_ok(&["status"])
            .contains("rule off: sip_scanner: the [scanners] User-Agent check is off"),
    );
    assert!(
        daemon
            .log_text()
            .contains("XDP program loaded without a rule"),
        "{}",
        daemon.log_text()
    );
    // The scanner's request reaches the PBX: the rule is really absent.
    let listener = lab.listen(IpAddr::V4(PBX), 5060);
    let request = testenv::frames::sip_request("User-Agent: friendly-scanner", 10);
    send_one(
        &lab,
        IpAddr::V4(ATTACKER),
        SocketAddr::new(IpAddr::V4(PBX), 5060),
        request,
    );
    assert_eq!(received_from(&listener, &[IpAddr::V4(ATTACKER)]), [1]);
    assert_eq!(daemon.packets("sip_scanner"), 0);
    // Protected ports and bans are enforced in XDP as ever.
    let sources = [IpAddr::V4(ATTACKER), IpAddr::V4(PHONE)];
    let listener = lab.listen(IpAddr::V4(PBX), 5080);
    for &from in &sources {
        lab.send(from, IpAddr::V4(PBX), 5080, 10);
    }
    assert_eq!(received_from(&listener, &sources), [0, 10]);
    assert_eq!(daemon.packets("protected_port"), 10);
    daemon.cli_ok(&["bans", "add", &ATTACKER.to_string(), "--for", "1h"]);
    assert_eq!(testenv::v4(&lab), [0, testenv::N]);
    assert_eq!(daemon.packets("banned"), testenv::N as u64);
}
