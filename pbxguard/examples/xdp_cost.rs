//! Benchmark (run by `cargo xtask bench`): what one packet costs in the XDP program itself,
//! measured by the kernel with `BPF_PROG_TEST_RUN` (no NIC, no traffic generator).
//!
//! - hot: one frame repeated 1,000,000 times in the kernel (`repeat`); the kernel reports
//!   the mean run time. This is the cached path: the same source, the same map slots.
//! - cold: 100,000 distinct sources drawn at random from the banned set, one run each; the
//!   kernel reports each run's time (syscall entry and exit are outside it), so map lookups
//!   miss the caches as a real flood from many sources would make them.
//!
//! The program runs with the default config's perimeter (SIP ports, the default scanner
//! User-Agents, a flood limit set too high to fire so its bucket is still updated) and one
//! `[[protect]]` rule (AMI, 5038/tcp, from 192.0.2.0/24). Cases: banned v4/v6 source,
//! unmatched SIP request (flood bucket and scanner search run), unmatched non-SIP packet, at
//! 1, 10,000, 100,000 and 1,000,000 bans; allowlisted, geo-blocked (a 300,000-network
//! synthetic country set), protected port, scanner User-Agent at 1 ban, and the unmatched
//! SIP request in parts (rule lookups only, plus the flood bucket, plus the scanner search)
//! at 1 ban. For scale: cold
//! banned sources at 1,000,000 *CIDR* (/31) bans, which live in the LPM trie, and the
//! machine's latency of one dependent load that misses the caches (a pointer chase over
//! 256 MiB, and over 4 to 64 MiB to show where the caches end), the floor under any lookup
//! in a table too big for them. Prints numbers; asserts nothing. Needs root.
//!
//! Usage: xdp_cost

use std::net::{Ipv4Addr, Ipv6Addr};

// The frame builders the XDP tests use.
#[path = "../../tests/testenv/frames.rs"]
#[allow(dead_code)]
mod frames;

use aya::programs::{TestRun as _, TestRunOptions};
use frames::Frame;
use ipnet::IpNet;
use pbxguard::{
    config::Config,
    enforce::{
        perimeter::{Perimeter, ProtectRule},
        program::{LoadOptions, XdpProgram},
    },
    units::parse_net,
};
use pbxguard_common::{BanEntry, PortKey};

const PBX: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PBX6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const SCANNER: &[u8] = b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1\r\n\
From: <sip:100@198.51.100.7>;tag=1\r\nTo: <sip:100@192.0.2.1>\r\nCall-ID: 1@x\r\nCSeq: 1 OPTIONS\r\n\
User-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n";
const SIP: &[u8] = b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1\r\n\
From: <sip:100@198.51.100.7>;tag=1\r\nTo: <sip:100@192.0.2.1>\r\nCall-ID: 1@x\r\nCSeq: 1 OPTIONS\r\n\
User-Agent: Yealink SIP-T46S 66.86.0.15\r\nContent-Length: 0\r\n\r\n";

/// A small xorshift: the same random sources in every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A UDP/IPv4 frame from `src` to the PBX's `port`.
fn udp4(src: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    Frame::ethernet().udp4(src, PBX, port, payload)
}

/// A UDP/IPv6 frame from `src` to the PBX's `port`.
fn udp6(src: Ipv6Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    Frame::ethernet().udp6(src, PBX6, port, &[], payload)
}

/// The default config's perimeter with the flood limit out of reach (its bucket is still
/// kept per source), plus AMI for 192.0.2.0/24 only.
fn perimeter() -> anyhow::Result<Perimeter> {
    let mut perimeter = Perimeter::from_config(&Config::default());
    perimeter.settings.flood_rate = u32::MAX / 2;
    perimeter.settings.flood_burst = u32::MAX / 2;
    perimeter.protect.push(ProtectRule {
        ports: vec![PortKey {
            port: 5038,
            proto: 6,
            pad: 0,
        }],
        trusted: vec![parse_net("192.0.2.0/24")?],
    });
    Ok(perimeter)
}

/// The program loaded, unpinned, with room for `max_bans` and the bench's perimeter.
fn loaded(max_bans: u32, perimeter: &Perimeter) -> anyhow::Result<XdpProgram> {
    let mut program = XdpProgram::load(&LoadOptions {
        pin_dir: None,
        max_bans,
        ..Default::default()
    })?;
    program.set_perimeter(perimeter)?;
    Ok(program)
}

/// ns per dependent load over `bytes` of memory visited in a random cycle (one cache line
/// per step), so every load waits for the previous one: what a lookup that misses every
/// cache pays per memory access on this machine.
fn dependent_load_ns(bytes: usize) -> f64 {
    const LINE: usize = 64 / std::mem::size_of::<usize>();
    let lines = bytes / 64;
    let mut order: Vec<usize> = (0..lines).collect();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for i in (1..lines).rev() {
        order.swap(i, rng.next() as usize % (i + 1));
    }
    let mut next = vec![0usize; lines * LINE];
    for w in order.windows(2) {
        next[w[0] * LINE] = w[1] * LINE;
    }
    next[order[lines - 1] * LINE] = order[0] * LINE;
    let steps = 5_000_000;
    let mut at = order[0] * LINE;
    let started = std::time::Instant::now();
    for _ in 0..steps {
        at = next[at];
    }
    std::hint::black_box(at);
    started.elapsed().as_nanos() as f64 / steps as f64
}

/// Mean ns per run of `frame` repeated a million times in the kernel.
fn hot(program: &mut XdpProgram, frame: &[u8]) -> f64 {
    let result = program
        .xdp()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: 1_000_000,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    result.duration.as_nanos() as f64
}

/// Mean ns per run over distinct frames, one run each.
fn cold(program: &mut XdpProgram, frames: &[Vec<u8>]) -> f64 {
    let mut total = 0u128;
    for frame in frames {
        let result = program
            .xdp()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        total += result.duration.as_nanos();
    }
    total as f64 / frames.len() as f64
}

fn v4_source(rng: &mut Rng) -> Ipv4Addr {
    // 100.64.0.0/10, never the PBX.
    Ipv4Addr::from(0x6440_0000 | (rng.next() as u32 & 0x003f_ffff))
}

fn v6_source(rng: &mut Rng) -> Ipv6Addr {
    Ipv6Addr::from(
        0x2001_0db8_0bad_0000_0000_0000_0000_0000u128 | (rng.next() as u128 & 0xffff_ffff_ffff),
    )
}

fn main() -> anyhow::Result<()> {
    let counts = [1usize, 10_000, 100_000, 1_000_000];
    let perimeter = perimeter()?;
    let mut program = loaded(1_100_000, &perimeter)?;
    let permanent = BanEntry { expires_boot_ns: 0 };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut banned4: Vec<Ipv4Addr> = Vec::new();
    let mut banned6: Vec<Ipv6Addr> = Vec::new();
    let stranger = Ipv4Addr::new(198, 51, 100, 200);
    println!(
        "== XDP program cost per packet (BPF_PROG_TEST_RUN; hot: one frame x 1,000,000; cold: 100,000 distinct banned sources, one run each)"
    );
    println!(
        "{:>9} {:>12} {:>12} {:>12} {:>12} {:>14} {:>14}",
        "bans",
        "banned v4",
        "banned v6",
        "no match",
        "SIP no match",
        "cold banned v4",
        "cold banned v6"
    );
    let mut json = Vec::new();
    for &count in &counts {
        while banned4.len() < count {
            let ip = v4_source(&mut rng);
            program.insert_ban(IpNet::from(std::net::IpAddr::V4(ip)), permanent)?;
            banned4.push(ip);
            let ip6 = v6_source(&mut rng);
            program.insert_ban(IpNet::from(std::net::IpAddr::V6(ip6)), permanent)?;
            banned6.push(ip6);
        }
        let banned_v4 = hot(&mut program, &udp4(banned4[0], 5060, SIP));
        let banned_v6 = hot(&mut program, &udp6(banned6[0], 5060, SIP));
        let no_match = hot(&mut program, &udp4(stranger, 9999, b"hello"));
        let sip = hot(&mut program, &udp4(stranger, 5060, SIP));
        let picks = |rng: &mut Rng, n: usize| -> Vec<usize> {
            (0..100_000).map(|_| rng.next() as usize % n).collect()
        };
        let frames4: Vec<Vec<u8>> = picks(&mut rng, banned4.len())
            .into_iter()
            .map(|i| udp4(banned4[i], 5060, b"x"))
            .collect();
        let frames6: Vec<Vec<u8>> = picks(&mut rng, banned6.len())
            .into_iter()
            .map(|i| udp6(banned6[i], 5060, b"x"))
            .collect();
        let cold4 = cold(&mut program, &frames4);
        let cold6 = cold(&mut program, &frames6);
        println!(
            "{count:>9} {banned_v4:>9.0} ns {banned_v6:>9.0} ns {no_match:>9.0} ns {sip:>9.0} ns {cold4:>11.0} ns {cold6:>11.0} ns"
        );
        let key = |case: &str| format!("xdp_ns_per_packet.{case}.{count}");
        let cold_key = |case: &str| format!("xdp_ns_per_packet_cold.{case}.{count}");
        pbxguard_lab::bench_json::record_all(&[
            (&key("banned_v4"), banned_v4),
            (&key("banned_v6"), banned_v6),
            (&key("no_match"), no_match),
            (&key("sip_no_match"), sip),
            (&cold_key("banned_v4"), cold4),
            (&cold_key("banned_v6"), cold6),
        ]);
        json.push((count, banned_v4, banned_v6, no_match, sip, cold4, cold6));
    }
    let first = json.first().expect("rows");
    let last = json.last().expect("rows");
    println!(
        "cold banned v4 at 1,000,000 bans / at 1 ban: {:.2}x; SIP no match / banned v4 (1 ban): {:.2}x",
        last.5 / first.5.max(1.0),
        first.4 / first.1.max(1.0)
    );

    // The other verdicts at one ban.
    drop(program);
    let mut program = loaded(1024, &perimeter)?;
    let protected = hot(&mut program, &Frame::ethernet().tcp4(stranger, PBX, 5038));
    // One run per frame, as a scanner's packet is dropped once and its source then banned
    // (a repeated one would also meet the flood bucket it filled).
    let scanner_frames: Vec<Vec<u8>> = (0..10_000u32)
        .map(|i| udp4(Ipv4Addr::from(0x6440_0000 + i), 5060, SCANNER))
        .collect();
    let scanner = cold(&mut program, &scanner_frames);
    // Where the unmatched SIP request's cost goes: the same packet with the scanner check
    // off, with the flood limit off, and with both off (only the lookups every packet meets).
    let sip = udp4(stranger, 5060, SIP);
    let mut parts = Vec::new();
    for (flood, scanner_check) in [(true, false), (false, true), (false, false)] {
        let mut part = perimeter.clone();
        if !flood {
            part.settings.flood_rate = 0;
        }
        if !scanner_check {
            part.signatures.clear();
        }
        program.set_perimeter(&part)?;
        parts.push(hot(&mut program, &sip));
    }
    program.set_perimeter(&perimeter)?;
    let (flood_only, scanner_only, rules_only) = (parts[0], parts[1], parts[2]);
    let allowed = Ipv4Addr::new(203, 0, 113, 5);
    program.insert_allow(parse_net("203.0.113.0/24")?)?;
    let allowlisted = hot(&mut program, &udp4(allowed, 5060, SIP));
    let geo: Vec<IpNet> = (0..300_000u32)
        .map(|i| {
            IpNet::new(
                std::net::IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i << 8))),
                24,
            )
            .expect("valid")
        })
        .collect();
    program.set_geo(&geo)?;
    let geo_blocked = hot(&mut program, &udp4(Ipv4Addr::new(10, 1, 2, 3), 5060, SIP));
    println!(
        "allowlisted: {allowlisted:.0} ns; geo-blocked with 300,000 /24s loaded: {geo_blocked:.0} ns; \
         protected port (AMI from a stranger): {protected:.0} ns; scanner User-Agent (10,000 sources, one run each): {scanner:.0} ns"
    );
    println!(
        "SIP no match, in parts: rule lookups only {rules_only:.0} ns; with the flood bucket {flood_only:.0} ns; \
         with the scanner search {scanner_only:.0} ns"
    );
    pbxguard_lab::bench_json::record_all(&[
        ("xdp_ns_per_packet.sip_rules_only.1", rules_only),
        ("xdp_ns_per_packet.sip_flood_only.1", flood_only),
        ("xdp_ns_per_packet.sip_scanner_only.1", scanner_only),
        ("xdp_ns_per_packet.allowlisted.1", allowlisted),
        ("xdp_ns_per_packet.geo_blocked.1", geo_blocked),
        ("xdp_ns_per_packet.protected_port.1", protected),
        ("xdp_ns_per_packet_cold.scanner.1", scanner),
    ]);
    drop(program);

    // For scale: the same cold run against 1,000,000 CIDR bans (the LPM trie), and the
    // memory latency under both.
    let mut program = loaded(1_100_000, &perimeter)?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut cidrs = Vec::with_capacity(1_000_000);
    while cidrs.len() < 1_000_000 {
        let ip = Ipv4Addr::from(u32::from(v4_source(&mut rng)) & !1);
        program.insert_ban(IpNet::new(std::net::IpAddr::V4(ip), 31)?, permanent)?;
        cidrs.push(ip);
    }
    let frames: Vec<Vec<u8>> = (0..100_000)
        .map(|_| udp4(cidrs[rng.next() as usize % cidrs.len()], 5060, b"x"))
        .collect();
    let cold_lpm = cold(&mut program, &frames);
    let latency = dependent_load_ns(256 << 20);
    println!(
        "cold banned v4 at 1,000,000 /31 bans (LPM trie): {cold_lpm:.0} ns; one dependent load missing the caches: {latency:.0} ns"
    );
    pbxguard_lab::bench_json::record_all(&[
        ("xdp_ns_per_packet_cold.banned_v4_lpm.1000000", cold_lpm),
        ("memory_latency_ns", latency),
    ]);
    // Where the caches end: the same chase over smaller working sets. A million exact bans
    // take at least 8 MiB (a 4-byte key and a 4-byte expiry each) in any table.
    let mut by_size = Vec::new();
    for mib in [4usize, 8, 16, 64] {
        let ns = dependent_load_ns(mib << 20);
        by_size.push(format!("{mib} MiB {ns:.0} ns"));
        pbxguard_lab::bench_json::record_all(&[(&format!("memory_latency_ns_at_mib.{mib}"), ns)]);
    }
    println!("dependent load by working set: {}", by_size.join(", "));
    Ok(())
}
