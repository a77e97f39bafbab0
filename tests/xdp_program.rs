//! The XDP program run by the kernel on crafted frames (BPF_PROG_TEST_RUN): real verifier,
//! real maps, real verdicts. Needs root (CAP_BPF); touches no interface.

mod testenv;

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, SystemTime},
};

use pbxguard::{
    enforce::{
        clock,
        program::{LoadOptions, XdpProgram},
    },
    units::parse_net,
};
use pbxguard_common::BanEntry;
use testenv::{
    frames::Frame,
    xdp::{count, program, run},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const ATTACKER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const PHONE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 8);
const PBX: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const ATTACKER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 7);
const PBX6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);

fn ban(program: &mut XdpProgram, net: &str) {
    program
        .insert_ban(parse_net(net).unwrap(), BanEntry { expires_boot_ns: 0 })
        .unwrap();
}

fn sip4(src: Ipv4Addr) -> Vec<u8> {
    Frame::ethernet().udp4(src, PBX, 5060, b"REGISTER sip:pbx SIP/2.0\r\n\r\n")
}

#[test]
fn banned_v4_source_is_dropped_and_others_pass() {
    let mut p = program();
    ban(&mut p, "198.51.100.7");
    assert_eq!(run(&mut p, &sip4(ATTACKER)), XDP_DROP);
    assert_eq!(run(&mut p, &sip4(PHONE)), XDP_PASS);
    assert_eq!(count(&p, "banned"), 1);
    assert_eq!(count(&p, "passed"), 1);
}

#[test]
fn cidr_ban_covers_the_network() {
    let mut p = program();
    ban(&mut p, "198.51.100.0/24");
    assert_eq!(run(&mut p, &sip4(ATTACKER)), XDP_DROP);
    assert_eq!(run(&mut p, &sip4(PHONE)), XDP_DROP);
    assert_eq!(run(&mut p, &sip4(Ipv4Addr::new(198, 51, 101, 1))), XDP_PASS);
}

#[test]
fn banned_v6_source_is_dropped() {
    let mut p = program();
    ban(&mut p, "2001:db8:bad::/48");
    let frame = Frame::ethernet().udp6(ATTACKER6, PBX6, 5060, &[], b"OPTIONS");
    assert_eq!(run(&mut p, &frame), XDP_DROP);
    let other = Frame::ethernet().udp6(
        Ipv6Addr::new(0x2001, 0xdb8, 0xcafe, 0, 0, 0, 0, 1),
        PBX6,
        5060,
        &[],
        b"x",
    );
    assert_eq!(run(&mut p, &other), XDP_PASS);
}

#[test]
fn v6_with_extension_headers_is_still_matched() {
    let mut p = program();
    ban(&mut p, "2001:db8:bad::7");
    for chain in [&[0u8][..], &[0, 60], &[43, 44], &[0, 43, 60, 44]] {
        let frame = Frame::ethernet().udp6(ATTACKER6, PBX6, 5060, chain, b"INVITE");
        assert_eq!(run(&mut p, &frame), XDP_DROP, "chain {chain:?}");
    }
}

#[test]
fn vlan_and_qinq_frames_are_parsed() {
    let mut p = program();
    ban(&mut p, "198.51.100.7");
    let single = Frame::ethernet()
        .vlan(0x8100, 42)
        .udp4(ATTACKER, PBX, 5060, b"x");
    let qinq = Frame::ethernet()
        .vlan(0x88a8, 100)
        .vlan(0x8100, 42)
        .udp4(ATTACKER, PBX, 5060, b"x");
    assert_eq!(run(&mut p, &single), XDP_DROP);
    assert_eq!(run(&mut p, &qinq), XDP_DROP);
    let qinq_phone = Frame::ethernet()
        .vlan(0x88a8, 100)
        .vlan(0x8100, 42)
        .udp4(PHONE, PBX, 5060, b"x");
    assert_eq!(run(&mut p, &qinq_phone), XDP_PASS);
}

#[test]
fn three_vlan_tags_are_not_understood_and_pass() {
    let mut p = program();
    ban(&mut p, "198.51.100.7");
    let frame = Frame::ethernet()
        .vlan(0x88a8, 1)
        .vlan(0x8100, 2)
        .vlan(0x8100, 3)
        .udp4(ATTACKER, PBX, 5060, b"x");
    assert_eq!(run(&mut p, &frame), XDP_PASS);
    assert_eq!(count(&p, "unparsed"), 1);
}

#[test]
fn truncated_and_garbage_frames_pass() {
    let mut p = program();
    ban(&mut p, "0.0.0.0/0");
    ban(&mut p, "::/0");
    let full = sip4(ATTACKER);
    // Every prefix too short to hold the source address (14 + 16 bytes) passes.
    for len in [14, 15, 20, 29] {
        assert_eq!(run(&mut p, &full[..len]), XDP_PASS, "truncated to {len}");
    }
    // Long enough for the source address, but header length below 20: not IPv4 we trust.
    let mut bad_ihl = full.clone();
    bad_ihl[14] = 0x44;
    assert_eq!(run(&mut p, &bad_ihl), XDP_PASS);
    // Wrong IP version inside an IPv4 ethertype.
    let mut bad_version = full.clone();
    bad_version[14] = 0x65;
    assert_eq!(run(&mut p, &bad_version), XDP_PASS);
    // ARP and random ethertypes.
    let mut arp = full.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(run(&mut p, &arp), XDP_PASS);
    let garbage: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
    assert_eq!(run(&mut p, &garbage), XDP_PASS);
    let v6 = Frame::ethernet().udp6(ATTACKER6, PBX6, 5060, &[], b"x");
    assert_eq!(run(&mut p, &v6[..14 + 20]), XDP_PASS);
    assert_eq!(count(&p, "banned"), 0);
    assert!(count(&p, "unparsed") >= 8);
}

#[test]
fn truncated_transport_header_still_drops_a_banned_source() {
    // The ban is on the source address; a missing UDP header must not let it through.
    let mut p = program();
    ban(&mut p, "198.51.100.7");
    let full = sip4(ATTACKER);
    assert_eq!(run(&mut p, &full[..14 + 20 + 3]), XDP_DROP);
}

#[test]
fn allowlisted_inside_banned_network_passes() {
    let mut p = program();
    ban(&mut p, "198.51.100.0/24");
    p.insert_allow(parse_net("198.51.100.8").unwrap()).unwrap();
    assert_eq!(run(&mut p, &sip4(PHONE)), XDP_PASS);
    assert_eq!(run(&mut p, &sip4(ATTACKER)), XDP_DROP);
    assert_eq!(count(&p, "allowlisted"), 1);
    p.insert_allow(parse_net("2001:db8:bad::7").unwrap())
        .unwrap();
    ban(&mut p, "2001:db8:bad::/48");
    assert_eq!(
        run(
            &mut p,
            &Frame::ethernet().udp6(ATTACKER6, PBX6, 5060, &[], b"x")
        ),
        XDP_PASS
    );
}

#[test]
fn expired_ban_passes_without_the_daemon() {
    let mut p = program();
    let net = parse_net("198.51.100.7").unwrap();
    let past = BanEntry {
        expires_boot_ns: clock::boot_ns() - 1,
    };
    p.insert_ban(net, past).unwrap();
    assert_eq!(run(&mut p, &sip4(ATTACKER)), XDP_PASS);
    assert_eq!(count(&p, "ban_expired"), 1);

    let soon = clock::expiry_to_boot_ns(Some(SystemTime::now() + Duration::from_millis(300)));
    p.insert_ban(
        net,
        BanEntry {
            expires_boot_ns: soon,
        },
    )
    .unwrap();
    assert_eq!(run(&mut p, &sip4(ATTACKER)), XDP_DROP);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        run(&mut p, &sip4(ATTACKER)),
        XDP_PASS,
        "ban ended on time in the kernel"
    );
}

#[test]
fn unban_restores_traffic_and_bytes_are_counted() {
    let mut p = program();
    ban(&mut p, "198.51.100.7");
    let frame = sip4(ATTACKER);
    assert_eq!(run(&mut p, &frame), XDP_DROP);
    p.remove_ban(parse_net("198.51.100.7").unwrap()).unwrap();
    assert_eq!(run(&mut p, &frame), XDP_PASS);
    let stats = p.counters().unwrap();
    let banned = stats.iter().find(|r| r.reason == "banned").unwrap();
    assert_eq!((banned.packets, banned.bytes), (1, frame.len() as u64));
    assert_eq!(banned.action, "drop");
}

#[test]
fn ban_map_capacity_comes_from_options() {
    let mut p = XdpProgram::load(&LoadOptions {
        pin_dir: None,
        max_bans: 4,
        ..Default::default()
    })
    .unwrap();
    for i in 0..4 {
        p.insert_ban(
            parse_net(&format!("203.0.113.{i}")).unwrap(),
            BanEntry { expires_boot_ns: 0 },
        )
        .unwrap();
    }
    let err = p
        .insert_ban(
            parse_net("203.0.113.99").unwrap(),
            BanEntry { expires_boot_ns: 0 },
        )
        .unwrap_err();
    assert!(err.to_string().contains("max_entries"), "{err}");
}

/// Single-address bans live in the exact hash maps; one pinned in the LPM trie by a daemon
/// from before them is moved there at load, still dropping, and then lifts normally.
#[test]
fn single_address_bans_pinned_in_the_trie_are_moved_to_the_exact_maps() {
    let dir = tempfile::tempdir().unwrap();
    nix::mount::mount(
        Some("bpf"),
        dir.path(),
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount a bpffs for the pins");
    let options = LoadOptions {
        pin_dir: Some(dir.path().to_path_buf()),
        max_bans: 1024,
        ..Default::default()
    };
    let p = XdpProgram::load(&options).unwrap();
    drop(p);
    // As an older daemon left it: the /32 in the trie.
    let pin = pbxguard::enforce::program::map_pin_path(dir.path(), pbxguard_common::maps::BAN_V4);
    let mut trie: aya::maps::LpmTrie<_, [u8; 4], BanEntry> = aya::maps::LpmTrie::try_from(
        aya::maps::Map::LpmTrie(aya::maps::MapData::from_pin(&pin).unwrap()),
    )
    .unwrap();
    let key = aya::maps::lpm_trie::Key::new(32, ATTACKER.octets());
    trie.insert(&key, BanEntry { expires_boot_ns: 0 }, 0)
        .unwrap();
    let mut p = XdpProgram::load(&options).unwrap();
    assert!(trie.get(&key, 0).is_err(), "moved out of the trie");
    let frame = Frame::ethernet().udp4(ATTACKER, PBX, 5060, b"OPTIONS");
    assert_eq!(
        run(&mut p, &frame),
        XDP_DROP,
        "still banned, from the exact map"
    );
    let bans: Vec<String> = p
        .bans()
        .unwrap()
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(bans, [format!("{ATTACKER}/32")]);
    p.remove_ban(parse_net(&ATTACKER.to_string()).unwrap())
        .unwrap();
    assert_eq!(run(&mut p, &frame), XDP_PASS);
    let _ = nix::mount::umount2(dir.path(), nix::mount::MntFlags::MNT_DETACH);
}
