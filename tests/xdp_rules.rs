//! The perimeter rules in the XDP program, run by the kernel on crafted frames
//! (BPF_PROG_TEST_RUN): geo blocks, trusted-only ports, the SIP flood limit and scanner
//! User-Agents. Needs root; touches no interface.

mod testenv;

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun as _, TestRunOptions};
use pbxguard::{
    enforce::{
        perimeter::{Perimeter, ProtectRule},
        program::{LoadOptions, XdpProgram},
    },
    units::parse_net,
};
use pbxguard_common::{DetectionEvent, EVENT_FLOOD, EVENT_SCANNER, PortKey, Settings};
use testenv::frames::{Frame, sip_request};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const PBX: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OFFICE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const PBX6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const STRANGER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 7);

fn program() -> XdpProgram {
    XdpProgram::load(&LoadOptions {
        pin_dir: None,
        max_bans: 1024,
    })
    .expect("program loads (run as root)")
}

fn run(p: &mut XdpProgram, frame: &[u8]) -> u32 {
    p.xdp()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        })
        .expect("test run")
        .return_value
}

fn count(p: &XdpProgram, reason: &str) -> u64 {
    p.counters()
        .unwrap()
        .iter()
        .find(|r| r.reason == reason)
        .unwrap()
        .packets
}

fn udp(port: u16) -> PortKey {
    PortKey {
        port,
        proto: 17,
        pad: 0,
    }
}

fn tcp(port: u16) -> PortKey {
    PortKey {
        port,
        proto: 6,
        pad: 0,
    }
}

const SCANNERS: [&str; 4] = [
    "friendly-scanner",
    "sipvicious",
    "VaxSIPUserAgent",
    "sipcli",
];

fn perimeter() -> Perimeter {
    Perimeter {
        protect: vec![ProtectRule {
            ports: vec![udp(5080), tcp(22)],
            trusted: vec![
                parse_net("192.0.2.0/24").unwrap(),
                parse_net("2001:db8:1::/48").unwrap(),
            ],
        }],
        sip_ports: vec![udp(5060), tcp(5060)],
        settings: Settings {
            flood_rate: 0,
            flood_burst: 0,
            flood_event_every: 1,
            signatures: 0,
        },
        signatures: SCANNERS.iter().map(|s| s.to_string()).collect(),
    }
}

fn events(p: &mut XdpProgram) -> Vec<DetectionEvent> {
    let mut ring = p.take_events().unwrap();
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), std::mem::size_of::<DetectionEvent>());
        // SAFETY: the program writes whole DetectionEvents.
        out.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const DetectionEvent) });
    }
    out
}

#[test]
fn protected_ports_only_answer_trusted_sources() {
    let mut p = program();
    p.set_perimeter(&perimeter()).unwrap();
    let f = |src| Frame::ethernet().udp4(src, PBX, 5080, b"REGISTER");
    assert_eq!(run(&mut p, &f(STRANGER)), XDP_DROP);
    assert_eq!(run(&mut p, &f(OFFICE)), XDP_PASS);
    assert_eq!(
        run(&mut p, &Frame::ethernet().tcp4(STRANGER, PBX, 22)),
        XDP_DROP
    );
    assert_eq!(
        run(&mut p, &Frame::ethernet().tcp4(OFFICE, PBX, 22)),
        XDP_PASS
    );
    // Other ports and protocols are not affected.
    assert_eq!(
        run(&mut p, &Frame::ethernet().udp4(STRANGER, PBX, 5081, b"x")),
        XDP_PASS
    );
    assert_eq!(
        run(&mut p, &Frame::ethernet().tcp4(STRANGER, PBX, 5080)),
        XDP_PASS
    );
    // IPv6, and through VLAN tags.
    let v6 = |src| Frame::ethernet().udp6(src, PBX6, 5080, &[], b"x");
    assert_eq!(run(&mut p, &v6(STRANGER6)), XDP_DROP);
    assert_eq!(
        run(&mut p, &v6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 9))),
        XDP_PASS
    );
    assert_eq!(
        run(
            &mut p,
            &Frame::ethernet()
                .vlan(0x8100, 7)
                .udp4(STRANGER, PBX, 5080, b"x")
        ),
        XDP_DROP
    );
    assert_eq!(count(&p, "protected_port"), 4);
}

#[test]
fn allowlist_wins_over_protected_ports_and_rules_change_at_runtime() {
    let mut p = program();
    p.set_perimeter(&perimeter()).unwrap();
    p.insert_allow(parse_net("198.51.100.7").unwrap()).unwrap();
    assert_eq!(
        run(&mut p, &Frame::ethernet().udp4(STRANGER, PBX, 5080, b"x")),
        XDP_PASS
    );
    p.remove_allow(parse_net("198.51.100.7").unwrap()).unwrap();
    assert_eq!(
        run(&mut p, &Frame::ethernet().udp4(STRANGER, PBX, 5080, b"x")),
        XDP_DROP
    );
    // Replacing the rules removes the old protection without reloading the program.
    p.set_perimeter(&Perimeter {
        protect: vec![],
        ..perimeter()
    })
    .unwrap();
    assert_eq!(
        run(&mut p, &Frame::ethernet().udp4(STRANGER, PBX, 5080, b"x")),
        XDP_PASS
    );
}

#[test]
fn geo_blocked_networks_drop() {
    let mut p = program();
    p.set_geo(&[
        parse_net("198.51.100.0/24").unwrap(),
        parse_net("2001:db8:bad::/48").unwrap(),
    ])
    .unwrap();
    assert_eq!(
        run(&mut p, &Frame::ethernet().udp4(STRANGER, PBX, 5060, b"x")),
        XDP_DROP
    );
    assert_eq!(
        run(
            &mut p,
            &Frame::ethernet().udp6(STRANGER6, PBX6, 5060, &[], b"x")
        ),
        XDP_DROP
    );
    assert_eq!(
        run(&mut p, &Frame::ethernet().udp4(OFFICE, PBX, 5060, b"x")),
        XDP_PASS
    );
    assert_eq!(count(&p, "geo_blocked"), 2);
    p.insert_allow(parse_net("198.51.100.7").unwrap()).unwrap();
    assert_eq!(
        run(&mut p, &Frame::ethernet().udp4(STRANGER, PBX, 5060, b"x")),
        XDP_PASS,
        "allowlist first"
    );
    p.set_geo(&[]).unwrap();
    assert_eq!(
        run(
            &mut p,
            &Frame::ethernet().udp6(STRANGER6, PBX6, 5060, &[], b"x")
        ),
        XDP_PASS
    );
}

#[test]
fn sip_flood_above_the_limit_is_dropped_and_reported() {
    let mut p = program();
    let settings = Settings {
        flood_rate: 1,
        flood_burst: 5,
        flood_event_every: 3,
        signatures: 0,
    };
    p.set_perimeter(&Perimeter {
        settings,
        ..perimeter()
    })
    .unwrap();
    let frame = Frame::ethernet().udp4(STRANGER, PBX, 5060, b"OPTIONS sip:x SIP/2.0\r\n\r\n");
    let verdicts: Vec<u32> = (0..11).map(|_| run(&mut p, &frame)).collect();
    assert_eq!(&verdicts[..5], &[XDP_PASS; 5], "the burst passes");
    assert_eq!(&verdicts[5..], &[XDP_DROP; 6], "then the limit drops");
    assert_eq!(count(&p, "sip_flood"), 6);
    // Another source has its own bucket; a non-SIP port has none.
    assert_eq!(
        run(&mut p, &Frame::ethernet().udp4(OFFICE, PBX, 5060, b"x")),
        XDP_PASS
    );
    for _ in 0..10 {
        assert_eq!(
            run(&mut p, &Frame::ethernet().udp4(STRANGER, PBX, 5062, b"x")),
            XDP_PASS
        );
    }
    let events = events(&mut p);
    assert_eq!(events.len(), 2, "one event every 3 overruns: {events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.kind == EVENT_FLOOD && e.family == 4 && e.addr[..4] == STRANGER.octets())
    );
}

#[test]
fn scanner_user_agents_are_dropped_in_any_case_and_position() {
    let mut p = program();
    p.set_perimeter(&perimeter()).unwrap();
    let send = |p: &mut XdpProgram, ua: &str, filler: usize| {
        run(
            p,
            &Frame::ethernet().udp4(STRANGER, PBX, 5060, &sip_request(ua, filler)),
        )
    };
    for ua in [
        "User-Agent: friendly-scanner",
        "User-Agent:friendly-scanner",
        "user-agent: Friendly-Scanner 1.0",
        "USER-AGENT:   sipvicious",
        "User-Agent: VaxSIPUserAgent/3.1",
        "User-Agent: sipcli/v1.8",
    ] {
        assert_eq!(send(&mut p, ua, 10), XDP_DROP, "{ua}");
    }
    assert_eq!(
        send(&mut p, "User-Agent: friendly-scanner", 300),
        XDP_DROP,
        "after long headers"
    );
    assert_eq!(count(&p, "sip_scanner"), 7);
    for ua in [
        "User-Agent: Yealink SIP-T46S 66.86.0.15",
        "User-Agent: Asterisk PBX 20.5",
        "User-Agent: friendly",
        "X-Agent: friendly-scanner",
    ] {
        assert_eq!(send(&mut p, ua, 10), XDP_PASS, "{ua}");
    }
    // Outside the scan window, on a non-SIP port, over TCP, or truncated: passed.
    assert_eq!(send(&mut p, "User-Agent: friendly-scanner", 900), XDP_PASS);
    let request = sip_request("User-Agent: friendly-scanner", 10);
    assert_eq!(
        run(
            &mut p,
            &Frame::ethernet().udp4(STRANGER, PBX, 5070, &request)
        ),
        XDP_PASS
    );
    assert_eq!(
        run(&mut p, &Frame::ethernet().tcp4(STRANGER, PBX, 5060)),
        XDP_PASS
    );
    let cut = request.iter().position(|&b| b == b'U').unwrap() + 14;
    assert_eq!(
        run(
            &mut p,
            &Frame::ethernet().udp4(STRANGER, PBX, 5060, &request[..cut])
        ),
        XDP_PASS
    );
    assert_eq!(
        run(
            &mut p,
            &Frame::ethernet().udp4(STRANGER, PBX, 5060, b"not sip at all")
        ),
        XDP_PASS
    );
    // IPv6 and VLAN-tagged requests too.
    assert_eq!(
        run(
            &mut p,
            &Frame::ethernet().udp6(STRANGER6, PBX6, 5060, &[], &request)
        ),
        XDP_DROP
    );
    assert_eq!(
        run(
            &mut p,
            &Frame::ethernet()
                .vlan(0x8100, 7)
                .udp4(STRANGER, PBX, 5060, &request)
        ),
        XDP_DROP
    );
    let events = events(&mut p);
    assert!(events.iter().all(|e| e.kind == EVENT_SCANNER));
    assert_eq!(events.len(), 9);
    assert_eq!(events.last().unwrap().family, 4);
}

#[test]
fn scanner_check_is_off_without_signatures() {
    let mut p = program();
    p.set_perimeter(&Perimeter {
        signatures: vec![],
        ..perimeter()
    })
    .unwrap();
    let request = sip_request("User-Agent: friendly-scanner", 10);
    assert_eq!(
        run(
            &mut p,
            &Frame::ethernet().udp4(STRANGER, PBX, 5060, &request)
        ),
        XDP_PASS
    );
}
