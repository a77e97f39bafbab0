//! The perimeter rules end to end with the daemon on a veth in namespaces this test creates:
//! SIPVicious's `svmap` is dropped and banned, a flood above the limit is dropped and
//! banned, a protected port only answers its trusted source. Needs root.

mod testenv;

use std::{
    net::IpAddr,
    process::Command,
    time::{Duration, Instant},
};

use testenv::{ATTACKER, Daemon, Lab, PBX, PHONE, received_from};

#[test]
fn svmap_is_dropped_from_its_first_packet_and_banned() {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, "xdp", "");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.outside.name,
            "timeout",
            "60",
            "svmap",
            "-t",
            "0.5",
            &PBX.to_string(),
        ])
        .output()
        .expect("svmap (Debian package sipvicious; cargo xtask setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("5060"), "svmap must find nothing: {text}");
    assert!(
        daemon.packets("sip_scanner") >= 1,
        "{}",
        daemon.cli_ok(&["stats"])
    );
    let ban = daemon.wait_for_ban(&format!("{ATTACKER}/32"));
    assert_eq!(ban["source"], "sip-scanner");
    assert_eq!(ban["rule"], "friendly-scanner");
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

const REGISTER: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register">
  <send>
    <![CDATA[
      REGISTER sip:[remote_ip] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:100@[remote_ip]>;tag=[call_number]
      To: <sip:100@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:100@[local_ip]:[local_port]>
      User-Agent: Yealink SIP-T46S 66.86.0.15
      Expires: 60
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#;

#[test]
fn a_trusted_phone_registering_with_sipp_passes_while_svmap_is_dropped() {
    let lab = Lab::new();
    let daemon = Daemon::start(
        &lab,
        "xdp",
        &format!("[[protect]]\nports = [\"5060/udp\"]\ntrusted = [\"{PHONE}\"]\n"),
    );
    let listener = lab.listen(IpAddr::V4(PBX), 5060);
    let scenario = daemon.dir.path().join("register.xml");
    std::fs::write(&scenario, REGISTER).unwrap();
    let sipp = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.outside.name,
            "timeout",
            "30",
            "sipp",
            "-sf",
        ])
        .arg(&scenario)
        .args([
            "-m",
            "5",
            "-r",
            "10",
            "-i",
            &PHONE.to_string(),
            "-p",
            "5070",
            "-nostdin",
            "-timeout",
            "10s",
        ])
        .arg(format!("{PBX}:5060"))
        .output()
        .expect("sipp (Debian package sip-tester; cargo xtask setup installs it)");
    assert!(
        sipp.status.success(),
        "sipp: {}",
        String::from_utf8_lossy(&sipp.stderr)
    );
    let svmap = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.outside.name,
            "timeout",
            "60",
            "svmap",
            "-t",
            "0.5",
            &PBX.to_string(),
        ])
        .output()
        .unwrap();
    assert!(svmap.status.success());
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
    send_sip_options(&lab, "friendly-scanner");
    let ban = daemon.wait_for_ban(&format!("{ATTACKER}/32"));
    assert_eq!(ban["source"], "sip-scanner");
    assert_eq!(ban["rule"], "friendly-scanner");
}
