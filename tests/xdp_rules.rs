//! The perimeter rules in the XDP program, run by the kernel on crafted frames
//! (BPF_PROG_TEST_RUN): geo blocks, trusted-only ports, the SIP flood limit, scanner
//! User-Agents, packets whose ports cannot be reached, and the program without the scanner
//! rule for older kernels. Needs root; touches no interface.

mod testenv;

use std::net::{Ipv4Addr, Ipv6Addr};

use pbxguard::{
    enforce::{
        perimeter::{Perimeter, ProtectRule},
        program::XdpProgram,
    },
    units::parse_net,
};
use pbxguard_common::{
    BanEntry, DetectionEvent, EVENT_FLOOD, EVENT_SCANNER, MAX_V6_EXT_HEADERS, PROGRAM_NAME,
    PROGRAM_NAME_BASIC, PortKey, SCAN_WINDOW, Settings,
};
use testenv::{
    frames::{Ext, Frame, ext_chains, sip_request, udp6_datagram},
    xdp::{count, load, program, run},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const PBX: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OFFICE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
const STRANGER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const PBX6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const STRANGER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 7);
/// Inside the protect rule's trusted 2001:db8:1::/48.
const TRUSTED6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 9);
/// Allowlisted in the tests that need one.
const ALLOWED6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa11, 0, 0, 0, 0, 1);

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

/// The program looks only at signatures starting like the User-Agent (its first two bytes,
/// any case): ones sharing a start are all compared, a one-byte signature meets every
/// User-Agent starting with it, and a new set replaces the old one entirely.
#[test]
fn scanner_signatures_sharing_a_start_or_replaced_at_runtime() {
    let mut p = program();
    let send = |p: &mut XdpProgram, ua: &str| {
        run(
            p,
            &Frame::ethernet().udp4(STRANGER, PBX, 5060, &sip_request(ua, 10)),
        )
    };
    let with = |signatures: &[&str]| Perimeter {
        signatures: signatures.iter().map(|s| s.to_string()).collect(),
        ..perimeter()
    };
    p.set_perimeter(&with(&["sipcli", "SIPScan", "sipvicious"]))
        .unwrap();
    for ua in ["sipcli/1", "sipscan", "SIPVicious 0.3"] {
        assert_eq!(send(&mut p, &format!("User-Agent: {ua}")), XDP_DROP, "{ua}");
    }
    for ua in ["sipgate phone", "Siemens", "friendly-scanner"] {
        assert_eq!(send(&mut p, &format!("User-Agent: {ua}")), XDP_PASS, "{ua}");
    }
    p.set_perimeter(&with(&["friendly-scanner", "Z"])).unwrap();
    for ua in ["friendly-scanner", "zoiper", "Z"] {
        assert_eq!(send(&mut p, &format!("User-Agent: {ua}")), XDP_DROP, "{ua}");
    }
    for ua in ["sipcli/1", "SIPVicious 0.3", "Yealink"] {
        assert_eq!(send(&mut p, &format!("User-Agent: {ua}")), XDP_PASS, "{ua}");
    }
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

/// A UDP/IPv6 datagram to `port` behind `chain`.
fn udp6_behind(chain: &[Ext], src: Ipv6Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    Frame::ethernet().ipv6(
        src,
        PBX6,
        chain,
        17,
        &udp6_datagram(src, PBX6, port, payload),
    )
}

#[test]
fn extension_header_chains_of_any_length_never_pass_a_protected_port() {
    let mut p = program();
    p.set_perimeter(&perimeter()).unwrap();
    p.insert_allow(parse_net(&ALLOWED6.to_string()).unwrap())
        .unwrap();
    let mut chains = ext_chains();
    // AH too, and every walked kind in RFC 8200 order.
    chains.extend((1..=10).map(|n| vec![Ext::Auth; n]));
    chains.push(
        [0u8, 60, 43, 44, 51, 60]
            .iter()
            .map(|&k| Ext::from_kind(k))
            .collect(),
    );
    let (mut judged, mut unclassified) = (0, 0);
    for chain in &chains {
        let walked = chain.len() <= MAX_V6_EXT_HEADERS;
        let send = |p: &mut XdpProgram, src| run(p, &udp6_behind(chain, src, 5080, b"x"));
        assert_eq!(send(&mut p, STRANGER6), XDP_DROP, "stranger, {chain:?}");
        assert_eq!(send(&mut p, ALLOWED6), XDP_PASS, "allowlisted, {chain:?}");
        // A trusted source passes where the program reaches the port; beyond its walk it
        // is not allowlisted, so it is dropped like anyone else.
        let trusted = if walked { XDP_PASS } else { XDP_DROP };
        assert_eq!(send(&mut p, TRUSTED6), trusted, "trusted, {chain:?}");
        if walked {
            judged += 1;
        } else {
            unclassified += 2;
        }
    }
    assert_eq!(count(&p, "protected_port"), judged);
    assert_eq!(count(&p, "unclassified"), unclassified);
    assert_eq!(count(&p, "allowlisted"), chains.len() as u64);
    assert_eq!(unclassified, 2 * 4, "chains of 9 and 10 of both kinds");
}

#[test]
fn sip_rules_reach_the_payload_behind_the_longest_walked_chain() {
    let mut p = program();
    p.set_perimeter(&perimeter()).unwrap();
    let longest = &ext_chains()[MAX_V6_EXT_HEADERS];
    let request = sip_request("User-Agent: friendly-scanner", 10);
    assert_eq!(
        run(&mut p, &udp6_behind(longest, STRANGER6, 5060, &request)),
        XDP_DROP
    );
    assert_eq!(count(&p, "sip_scanner"), 1);
    let harmless = sip_request("User-Agent: Yealink SIP-T46S", 10);
    assert_eq!(
        run(&mut p, &udp6_behind(longest, STRANGER6, 5060, &harmless)),
        XDP_PASS
    );
    // One header more and the SIP port is out of reach: dropped, not passed unjudged.
    let longer = &ext_chains()[MAX_V6_EXT_HEADERS + 1];
    assert_eq!(
        run(&mut p, &udp6_behind(longer, STRANGER6, 5060, &harmless)),
        XDP_DROP
    );
    assert_eq!(count(&p, "unclassified"), 1);
}

#[test]
fn unreachable_ports_pass_only_while_no_rule_judges_ports() {
    let mut p = program();
    let none = Perimeter {
        protect: vec![],
        signatures: vec![],
        ..perimeter()
    };
    let longest = ext_chains().pop().unwrap();
    let frame = udp6_behind(&longest, STRANGER6, 5060, b"x");
    // Nothing configured yet (a fresh program), then SIP ports without flood or scanner
    // rules: no rule looks at ports, so there is nothing to slip past.
    assert_eq!(run(&mut p, &frame), XDP_PASS);
    p.set_perimeter(&none).unwrap();
    assert_eq!(run(&mut p, &frame), XDP_PASS);
    assert_eq!(count(&p, "passed"), 2);
    // Each kind of port rule turns the drop on, and removing it turns it off again.
    let flood = Perimeter {
        settings: Settings {
            flood_rate: 100,
            flood_burst: 100,
            ..none.settings
        },
        ..none.clone()
    };
    let scanners = Perimeter {
        signatures: vec!["sipvicious".into()],
        ..none.clone()
    };
    let protect = Perimeter {
        protect: perimeter().protect,
        ..none.clone()
    };
    for rules in [&flood, &scanners, &protect] {
        p.set_perimeter(rules).unwrap();
        assert_eq!(run(&mut p, &frame), XDP_DROP, "{rules:?}");
        p.set_perimeter(&none).unwrap();
        assert_eq!(run(&mut p, &frame), XDP_PASS, "{rules:?}");
    }
    assert_eq!(count(&p, "unclassified"), 3);
}

#[test]
fn fragments_and_cut_headers_are_judged_by_the_first_fragment() {
    let mut p = program();
    p.set_perimeter(&perimeter()).unwrap();
    let payload = vec![b'a'; 1200];
    // IPv6: the first fragment carries the ports and is judged by them; a later one cannot
    // be delivered without it.
    let [first, rest] = Frame::ethernet().udp6_fragments(STRANGER6, PBX6, 5080, &payload, 512);
    assert_eq!(run(&mut p, &first), XDP_DROP);
    assert_eq!(run(&mut p, &rest), XDP_PASS);
    let [first, rest] = Frame::ethernet().udp6_fragments(TRUSTED6, PBX6, 5080, &payload, 512);
    assert_eq!(run(&mut p, &first), XDP_PASS);
    assert_eq!(run(&mut p, &rest), XDP_PASS);
    assert_eq!(count(&p, "protected_port"), 1);
    // A first fragment whose header chain runs past its end has no ports to judge.
    let head = Ext::Fragment {
        offset: 0,
        more: true,
    };
    let cut = Frame::ethernet().ipv6(
        STRANGER6,
        PBX6,
        &[head, Ext::CutDestOpts { units: 8 }],
        17,
        &[],
    );
    assert_eq!(run(&mut p, &cut), XDP_DROP);
    // So is a UDP header cut after two bytes, on either family.
    let whole = udp6_behind(&[], STRANGER6, 5080, b"x");
    assert_eq!(run(&mut p, &whole[..14 + 40 + 2]), XDP_DROP);
    let whole = Frame::ethernet().udp4(STRANGER, PBX, 5080, b"x");
    assert_eq!(run(&mut p, &whole[..14 + 20 + 2]), XDP_DROP);
    assert_eq!(count(&p, "unclassified"), 3);
    // IPv4 fragments: the first judged by its ports, a later one passed.
    let udp = &Frame::ethernet().udp4(STRANGER, PBX, 5080, &payload)[14 + 20..];
    let first = Frame::ethernet().ipv4(STRANGER, PBX, 17, 0x2000, &udp[..512]);
    let later = Frame::ethernet().ipv4(STRANGER, PBX, 17, 512 / 8, &udp[512..]);
    assert_eq!(run(&mut p, &first), XDP_DROP);
    assert_eq!(run(&mut p, &later), XDP_PASS);
    assert_eq!(count(&p, "protected_port"), 2);
    // Protocols without ports pass, behind the longest walked chain too: ICMPv6 (neighbour
    // discovery), "no next header", ICMP.
    let longest = &ext_chains()[MAX_V6_EXT_HEADERS];
    let echo = [128u8, 0, 0, 0, 0, 1, 0, 1];
    for frame in [
        Frame::ethernet().ipv6(STRANGER6, PBX6, &[], 58, &echo),
        Frame::ethernet().ipv6(STRANGER6, PBX6, longest, 58, &echo),
        Frame::ethernet().ipv6(STRANGER6, PBX6, &[Ext::DestOpts], 59, &[]),
        Frame::ethernet().ipv4(STRANGER, PBX, 1, 0, &[8, 0, 0, 0, 0, 1, 0, 1]),
    ] {
        assert_eq!(run(&mut p, &frame), XDP_PASS);
    }
    assert_eq!(count(&p, "unclassified"), 3);
}

/// The header search steps over the payload a word at a time: a scanner's User-Agent line is
/// found at every byte offset up to the end of the 512-byte window and not after it, behind
/// header lines short enough to put several newlines in one word, and behind a look-alike
/// header name; a friendly User-Agent at the same offsets passes.
#[test]
fn the_user_agent_is_found_at_every_offset_of_the_window() {
    let mut p = program();
    p.set_perimeter(&perimeter()).unwrap();
    let mut drops = 0;
    for filler in 0..480 {
        for (ua, scanner) in [
            ("User-Agent: friendly-scanner", true),
            ("User-Agent: Yealink SIP-T46S", false),
        ] {
            let mut payload = sip_request(ua, filler);
            // Short lines and a look-alike before the real header.
            let at = payload.windows(6).position(|w| w == b"\nFrom:").unwrap() + 1;
            payload.splice(
                at..at,
                b"a:1\r\nb:\r\nUser-Agenx: sipvicious\r\n".iter().copied(),
            );
            let newline = payload
                .windows(11)
                .position(|w| w.eq_ignore_ascii_case(b"\nUser-Agent"))
                .unwrap();
            let expected = if scanner && newline < SCAN_WINDOW {
                drops += 1;
                XDP_DROP
            } else {
                XDP_PASS
            };
            let verdict = run(
                &mut p,
                &Frame::ethernet().udp4(STRANGER, PBX, 5060, &payload),
            );
            assert_eq!(
                verdict, expected,
                "{ua} with its line at payload byte {newline}"
            );
        }
    }
    assert!(
        drops > 300 && drops < 480,
        "the sweep crosses the window's end: {drops}"
    );
    assert_eq!(count(&p, "sip_scanner"), drops);
}

#[test]
fn the_full_program_loads_where_the_kernel_has_the_scanner_helpers() {
    let p = program();
    assert_eq!(p.name(), PROGRAM_NAME);
    assert_eq!(p.rules_off(), vec![]);
}

#[test]
fn without_the_scanner_helpers_every_other_rule_still_drops() {
    let request = Frame::ethernet().udp4(
        STRANGER,
        PBX,
        5060,
        &sip_request("User-Agent: friendly-scanner", 10),
    );
    // The same frame, the full program: dropped.
    let mut full = program();
    full.set_perimeter(&perimeter()).unwrap();
    assert_eq!(run(&mut full, &request), XDP_DROP);

    let mut p = load(true);
    assert_eq!(p.name(), PROGRAM_NAME_BASIC);
    let off = p.rules_off();
    assert_eq!(off.len(), 1);
    assert_eq!(off[0].rule, "sip_scanner");
    assert!(off[0].reason.contains("[scanners]"), "{}", off[0].reason);
    p.set_perimeter(&Perimeter {
        settings: Settings {
            flood_rate: 1,
            flood_burst: 3,
            flood_event_every: 1,
            signatures: 0,
        },
        ..perimeter()
    })
    .unwrap();
    assert_eq!(run(&mut p, &request), XDP_PASS, "no scanner rule");
    assert_eq!(count(&p, "sip_scanner"), 0);
    // Protected ports, the flood limit, unreachable ports, bans and geo all still drop.
    assert_eq!(
        run(&mut p, &Frame::ethernet().udp4(STRANGER, PBX, 5080, b"x")),
        XDP_DROP
    );
    assert_eq!(count(&p, "protected_port"), 1);
    let verdicts: Vec<u32> = (0..4).map(|_| run(&mut p, &request)).collect();
    assert_eq!(verdicts, [XDP_PASS, XDP_PASS, XDP_DROP, XDP_DROP]);
    assert_eq!(count(&p, "sip_flood"), 2);
    assert_eq!(
        events(&mut p).len(),
        2,
        "flood events still reach the daemon"
    );
    let longer = &ext_chains()[MAX_V6_EXT_HEADERS + 1];
    assert_eq!(
        run(&mut p, &udp6_behind(longer, STRANGER6, 5060, b"x")),
        XDP_DROP
    );
    assert_eq!(count(&p, "unclassified"), 1);
    p.insert_ban(
        parse_net("198.51.100.0/24").unwrap(),
        BanEntry { expires_boot_ns: 0 },
    )
    .unwrap();
    assert_eq!(
        run(&mut p, &Frame::ethernet().udp4(STRANGER, PBX, 5070, b"x")),
        XDP_DROP
    );
    assert_eq!(count(&p, "banned"), 1);
    p.set_geo(&[parse_net("2001:db8:bad::/48").unwrap()])
        .unwrap();
    assert_eq!(
        run(&mut p, &udp6_behind(&[], STRANGER6, 5070, b"x")),
        XDP_DROP
    );
    assert_eq!(count(&p, "geo_blocked"), 1);
}
