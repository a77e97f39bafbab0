//! Spoof-resistant evidence end to end (issue 13): real packets on the lab's veth and real
//! log lines, with the daemon in the PBX namespace. A stranger's scanner User-Agent over UDP
//! is dropped at once but banned only at the `udp_hits`-th hit; over an established TCP
//! connection it is banned at once; a phone a success line made known is never banned by
//! spoofable evidence naming it (forged scanner packets, `No matching peer found` lines),
//! also after a restart, but is banned by proven failures. Needs root.

mod testenv;

use std::{
    io::Write as _,
    net::{IpAddr, Ipv4Addr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use testenv::{
    ATTACKER, Daemon, INSIDE_IF, Lab, PBX, PHONE, append,
    frames::{Frame, mac, send_raw},
    received_from, sipp_registers,
};

/// A SIP OPTIONS request from `from` with this User-Agent.
fn options(from: Ipv4Addr, user_agent: &str, call: usize) -> String {
    format!(
        "OPTIONS sip:100@{PBX} SIP/2.0\r\nVia: SIP/2.0/UDP {from}:5070;branch=z9hG4bK-{call}\r\n\
         From: <sip:100@{from}>;tag={call}\r\nTo: <sip:100@{PBX}>\r\nCall-ID: {call}@{from}\r\n\
         CSeq: 1 OPTIONS\r\nUser-Agent: {user_agent}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Sends one SIP request over UDP from `from` (an outside address) to the PBX's 5060.
fn send_udp(lab: &Lab, from: Ipv4Addr, user_agent: &str, call: usize) {
    let payload = options(from, user_agent, call);
    lab.outside.enter(move || {
        let socket = UdpSocket::bind((from, 0)).unwrap();
        socket.send_to(payload.as_bytes(), (PBX, 5060)).unwrap();
    });
}

fn status_num(daemon: &Daemon, key: &str) -> u64 {
    daemon.json(&["status"])[key].as_u64().unwrap()
}

fn bans(daemon: &Daemon) -> Vec<serde_json::Value> {
    daemon.json(&["bans", "list"]).as_array().unwrap().clone()
}

/// chan_sip refusing one REGISTER: one forged datagram is enough (spoofable).
fn no_matching_peer(from: Ipv4Addr) -> String {
    format!(
        "[2026-11-26 11:03:53] NOTICE[1234] chan_sip.c: Registration from '<sip:999@{PBX}>' failed for '{from}:5060' - No matching peer found\n"
    )
}

/// A wrong password after a challenge (proven).
fn wrong_password(from: Ipv4Addr) -> String {
    format!(
        "[2026-11-26 11:03:53] NOTICE[1234] chan_sip.c: Registration from '<sip:100@{PBX}>' failed for '{from}:5060' - Wrong password\n"
    )
}

/// chan_sip's successful registration (a success line).
fn registered(from: Ipv4Addr) -> String {
    format!("[2026-11-26 11:03:53] VERBOSE[1234] chan_sip.c: Registered SIP '100' at {from}:5060\n")
}

#[test]
fn a_strangers_udp_scanner_is_dropped_at_once_and_banned_at_the_third_hit() {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, "xdp", "");
    let listener = lab.listen(IpAddr::V4(PBX), 5060);
    for hit in 1..=2u64 {
        send_udp(&lab, ATTACKER, "friendly-scanner", hit as usize);
        testenv::wait_until(&daemon, "the hit to be counted", || {
            daemon.log_text().matches("failure counted").count() as u64 == hit
        });
        assert_eq!(daemon.packets("sip_scanner"), hit);
        assert!(bans(&daemon).is_empty(), "banned before the third hit");
    }
    send_udp(&lab, ATTACKER, "friendly-scanner", 3);
    let ban = daemon.wait_for_ban(&format!("{ATTACKER}/32"));
    assert_eq!(ban["source"], "sip-scanner");
    assert_eq!(ban["evidence"], "spoofable");
    assert!(daemon.cli_ok(&["bans", "list"]).contains("spoofable"));
    // Every scanner datagram was dropped, from the first.
    let mut buf = [0u8; 2048];
    assert!(
        listener.recv_from(&mut buf).is_err(),
        "a scanner datagram got through"
    );
}

#[test]
fn a_scanner_over_an_established_tcp_connection_is_banned_at_once() {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, "xdp", "");
    let listener = lab
        .inside
        .enter(|| TcpListener::bind((PBX, 5060)).expect("bind TCP 5060"));
    let request = options(ATTACKER, "friendly-scanner", 1);
    lab.outside.enter(move || {
        let mut stream = TcpStream::connect_timeout(&(PBX, 5060).into(), Duration::from_secs(5))
            .expect("handshake with the PBX");
        stream.write_all(request.as_bytes()).unwrap();
        // Keep the connection open until the ban is in place.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(5));
            drop(stream);
        });
    });
    let ban = daemon.wait_for_ban(&format!("{ATTACKER}/32"));
    assert_eq!(ban["source"], "sip-scanner");
    assert_eq!(ban["rule"], "friendly-scanner");
    assert_eq!(ban["evidence"], "proven");
    assert!(daemon.packets("sip_scanner") >= 1);
    drop(listener);
}

/// A TCP segment with a scanner's request but no handshake behind it (a forged source) is
/// dropped and proves nothing: it neither bans nor counts as a TCP hit.
#[test]
fn a_forged_tcp_segment_without_a_connection_is_dropped_but_never_bans() {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, "xdp", "");
    let listener = lab
        .inside
        .enter(|| TcpListener::bind((PBX, 5060)).expect("bind TCP 5060"));
    let link = Frame::between(mac(&lab.outside, "wan0"), mac(&lab.inside, INSIDE_IF));
    let frames = (0..5u32)
        .map(|i| {
            let mut tcp = Vec::new();
            tcp.extend_from_slice(&40001u16.to_be_bytes());
            tcp.extend_from_slice(&5060u16.to_be_bytes());
            tcp.extend_from_slice(&(1000 + i).to_be_bytes()); // sequence
            tcp.extend_from_slice(&1u32.to_be_bytes()); // acknowledgement
            tcp.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]); // PSH|ACK
            tcp.extend_from_slice(options(ATTACKER, "friendly-scanner", 1).as_bytes());
            link.clone().ipv4(ATTACKER, PBX, 6, 0x4000, &tcp)
        })
        .collect();
    send_raw(&lab.outside, "wan0", frames);
    testenv::wait_until(&daemon, "the forged segments to be dropped", || {
        daemon.packets("sip_scanner") == 5
    });
    // Ring events keep their order: once this UDP hit is counted, any event of the forged
    // segments would have been handled before it.
    send_udp(&lab, ATTACKER, "friendly-scanner", 9);
    testenv::wait_until(&daemon, "the UDP hit to be counted", || {
        daemon.log_text().contains("failure counted")
    });
    assert_eq!(daemon.log_text().matches("failure counted").count(), 1);
    assert!(bans(&daemon).is_empty(), "{:?}", bans(&daemon));
    drop(listener);
}

/// A phone known from a success line survives spoofable evidence naming it, before and after
/// a restart, while its own traffic keeps arriving; proven failures still ban it, and a
/// stranger is banned by the same spoofable lines.
fn a_known_phone_is_only_banned_by_proven_failures(backend: &str) {
    let lab = Lab::new();
    let mut daemon = Daemon::configure(
        &lab,
        backend,
        "[policy]\nmaxretry = 3\n\n[flood]\npackets_per_second = 50\nburst = 50\n\n\
         [[source]]\npath = \"LOG\"\nfilters = [\"asterisk\"]\n",
    );
    let log = daemon.log_file("full");
    daemon.launch(&[]);
    append(&log, &registered(PHONE));
    testenv::wait_until(&daemon, "the phone to be known", || {
        status_num(&daemon, "known") == 1
    });
    let mut ignored = 0;
    for round in 0..2 {
        for _ in 0..5 {
            append(&log, &no_matching_peer(PHONE));
        }
        ignored += 5;
        if backend == "xdp" {
            // Forged scanner datagrams with the phone's address: dropped, never a ban.
            for call in 0..5 {
                send_udp(&lab, PHONE, "friendly-scanner", 100 * round + call);
            }
            ignored += 5;
        }
        testenv::wait_until(&daemon, "spoofable evidence to be ignored", || {
            status_num(&daemon, "ignored_spoofable") == ignored
        });
        assert!(bans(&daemon).is_empty(), "{:?}", bans(&daemon));
        // The phone's own registrations (sipp, as a real phone sends them) still arrive.
        let listener = lab.listen(IpAddr::V4(PBX), 5060);
        sipp_registers(&lab, daemon.dir.path(), PHONE, 5);
        assert_eq!(received_from(&listener, &[IpAddr::V4(PHONE)]), [5]);
        drop(listener);
        if round == 0 {
            // Known survives a restart (state_dir/known.json).
            testenv::wait_until(&daemon, "known.json", || {
                daemon.dir.path().join("state/known.json").exists()
            });
            daemon.terminate();
            daemon.launch(&[]);
            assert_eq!(status_num(&daemon, "known"), 1);
            ignored = 0;
        }
    }
    if backend == "xdp" {
        // A forged flood with the phone's address: over-limit packets are dropped, the
        // flood events are spoofable evidence, and the known phone is not banned.
        let before = status_num(&daemon, "ignored_spoofable");
        lab.send(IpAddr::V4(PHONE), IpAddr::V4(PBX), 5060, 600);
        testenv::wait_until(&daemon, "the forged flood to be ignored", || {
            status_num(&daemon, "ignored_spoofable") > before
        });
        assert!(daemon.packets("sip_flood") > 0);
        assert!(bans(&daemon).is_empty(), "{:?}", bans(&daemon));
        let listener = lab.listen(IpAddr::V4(PBX), 5060);
        sipp_registers(&lab, daemon.dir.path(), PHONE, 3);
        assert_eq!(received_from(&listener, &[IpAddr::V4(PHONE)]), [3]);
    }
    // The same spoofable lines ban a stranger.
    for _ in 0..3 {
        append(&log, &no_matching_peer(ATTACKER));
    }
    let ban = daemon.wait_for_ban(&format!("{ATTACKER}/32"));
    assert_eq!(ban["evidence"], "spoofable");
    // Proven failures count against the known phone as against anyone.
    for _ in 0..3 {
        append(&log, &wrong_password(PHONE));
    }
    let ban = daemon.wait_for_ban(&format!("{PHONE}/32"));
    assert_eq!(ban["rule"], "sip_register_failed");
    assert_eq!(ban["evidence"], "proven");
}

both_backends!(a_known_phone_is_only_banned_by_proven_failures);
