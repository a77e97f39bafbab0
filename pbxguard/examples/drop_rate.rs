//! Benchmark (run by `cargo xtask bench`): packets/s the XDP backend and the nftables backend
//! drop from a banned source flooding with `trafgen`, with 1 and with 100,000 bans loaded, and
//! what adding 100,000 bans costs on each. Prints numbers; asserts nothing. Runs in a
//! namespace lab it creates and removes; needs root and Debian's `netsniff-ng` (trafgen).

use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

// The setup the enforcement benchmarks share.
#[path = "support/mod.rs"]
mod support;

use ipnet::IpNet;
use pbxguard::{
    config::Config,
    enforce::{Enforcer, xdp::XdpEnforcer},
};
use pbxguard_lab::{
    ATTACKER, Lab, PBX,
    bench_json::{record, record_all},
};

const FLOOD: Duration = Duration::from_secs(3);

/// Floods from the attacker for FLOOD; returns (dropped packets/s, busy cores).
fn flood(lab: &Lab, enforcer: &dyn Enforcer, conf: &Path) -> (f64, f64) {
    flood_counting(lab, enforcer, conf, "banned")
}

/// Like [`flood`], counting drops for `reason`.
fn flood_counting(lab: &Lab, enforcer: &dyn Enforcer, conf: &Path, reason: &str) -> (f64, f64) {
    let before = support::packets(enforcer, reason);
    let cpu = pbxguard_lab::busy_cpu_seconds();
    let started = Instant::now();
    support::trafgen(lab, conf, FLOOD, None);
    let wall = started.elapsed().as_secs_f64();
    let busy = (pbxguard_lab::busy_cpu_seconds() - cpu) / wall;
    std::thread::sleep(support::DRAIN);
    let dropped = support::packets(enforcer, reason) - before;
    (dropped as f64 / wall, busy)
}

fn main() -> anyhow::Result<()> {
    let lab = Lab::named("pbxg-drop");
    let mac = lab.inside_mac();
    let dir = tempfile::Builder::new()
        .prefix("pbxguard-drop-")
        .tempdir()?;
    let conf = support::frame_conf(dir.path(), "flood.cfg", &mac, ATTACKER, 5060);
    let config = support::lab_config(dir.path())?;
    // From here on this process (and every nft it runs) lives in the protected namespace.
    support::enter_inside(&lab)?;

    let attacker = IpNet::from(std::net::IpAddr::V4(ATTACKER));
    let others = support::other_bans(99_999);
    println!(
        "== drop rate: UDP flood from one banned source over a veth pair (trafgen, one sender core, {} s each)",
        FLOOD.as_secs()
    );
    println!(
        "{:<8} {:>8} {:>14} {:>11} {:>14} {:>16}",
        "backend", "bans", "dropped pkt/s", "busy cores", "pkt/s per core", "add 100,000 bans"
    );
    let mut results = Vec::new();
    for backend in support::BACKENDS {
        let mut enforcer = support::start(backend, &config)?;
        enforcer.ban(attacker, None)?;
        let (rate1, busy1) = flood(&lab, enforcer.as_ref(), &conf);
        let started = Instant::now();
        enforcer.ban_all(&others)?;
        let add = started.elapsed();
        let (rate2, busy2) = flood(&lab, enforcer.as_ref(), &conf);
        for (bans, rate, busy, add) in [(1, rate1, busy1, None), (100_000, rate2, busy2, Some(add))]
        {
            record_all(&[
                (&format!("drop_rate_pps.{backend}.{bans}"), rate),
                (
                    &format!("drop_rate_pps_per_core.{backend}.{bans}"),
                    rate / busy.max(0.01),
                ),
            ]);
            if let Some(add) = add {
                record(&format!("add_bans_s.{backend}.{bans}"), add.as_secs_f64());
            }
            let add = add
                .map(|d| format!("{:.2} s", d.as_secs_f64()))
                .unwrap_or_default();
            println!(
                "{backend:<8} {bans:>8} {rate:>14.0} {busy:>11.2} {:>14.0} {add:>16}",
                rate / busy.max(0.01)
            );
        }
        results.push((rate1 / busy1.max(0.01), rate2 / busy2.max(0.01)));
        enforcer.shutdown(true)?;
    }
    perimeter_rules(&lab, &config, dir.path(), &mac)?;
    feed_rows(&lab, &config, &conf)?;
    let _ = nix::mount::umount2(&dir.path().join("bpffs"), nix::mount::MntFlags::MNT_DETACH);
    println!(
        "XDP/nft per core: {:.1}x with 1 ban, {:.1}x with 100,000 bans",
        results[0].0 / results[1].0.max(1.0),
        results[0].1 / results[1].1.max(1.0)
    );
    Ok(())
}

/// A real database's worth of geo networks: the GeoLite2-City that `cargo xtask setup`
/// installs (pbxguard_lab::geolite2) with `allow_countries = ["US"]`, i.e. every other
/// country dropped; without it (with a note saying so) 300,000 IPv4 /24s and 100,000 IPv6
/// /48s, about the size of a whole database.
fn full_geo_set() -> anyhow::Result<(Vec<IpNet>, String)> {
    let db = Path::new(pbxguard_lab::geolite2::CITY_DB);
    if db.is_file() {
        let config = pbxguard::geo::GeoConfig {
            database: Some(db.into()),
            allow_countries: vec!["US".into()],
            ..Default::default()
        };
        let started = Instant::now();
        let nets = pbxguard::geo::blocked_networks(&config)?;
        return Ok((
            nets,
            format!(
                "GeoLite2-City 2018, allow_countries = [\"US\"], walked in {:.2} s",
                started.elapsed().as_secs_f64()
            ),
        ));
    }
    println!(
        "note: {} is missing (cargo xtask setup installs it); using synthetic geo networks",
        db.display()
    );
    let mut nets: Vec<IpNet> = (0..300_000u32)
        .map(|i| {
            IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x2000_0000 + (i << 8)), 24).unwrap())
        })
        .collect();
    nets.extend((0..100_000u128).map(|i| {
        IpNet::V6(
            ipnet::Ipv6Net::new(
                std::net::Ipv6Addr::from((0x2a00u128 << 112) + (i << 80)),
                48,
            )
            .unwrap(),
        )
    }));
    Ok((
        nets,
        "synthetic: 300,000 IPv4 /24 + 100,000 IPv6 /48".into(),
    ))
}

/// Kernel memory of the loaded maps whose names start with `prefix` (from fdinfo).
fn map_memory(prefix: &str) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/fdinfo")
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let (Some(id), Some(memlock)) = (field("map_id:"), field("memlock:")) else {
            continue;
        };
        if let Ok(info) = aya::maps::MapInfo::from_id(id as u32)
            && info.name_as_str().is_some_and(|n| n.starts_with(prefix))
        {
            total += memlock;
        }
    }
    total
}

fn sip_scan_conf(mac: &str) -> String {
    let payload = "OPTIONS sip:100@10.77.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.77.0.66:5060;branch=z9hG4bK-1\r\n\
                   From: <sip:100@10.77.0.66>;tag=1\r\nTo: <sip:100@10.77.0.1>\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\n\
                   User-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n";
    let bytes: Vec<String> = payload.bytes().map(|b| format!("0x{b:02x}")).collect();
    format!(
        "{{ eth(da={mac}), ipv4(saddr={ATTACKER}, daddr={PBX}), udp(sp=40000, dp=5060), {} }}\n",
        bytes.join(", ")
    )
}

/// XDP drop rates: bans only, a full geo set, and every perimeter rule loaded.
fn perimeter_rules(lab: &Lab, config: &Config, dir: &Path, mac: &str) -> anyhow::Result<()> {
    let banned = dir.join("flood.cfg");
    let scan = dir.join("scan.cfg");
    std::fs::write(&scan, sip_scan_conf(mac))?;
    let mut xdp = XdpEnforcer::start(config)?;
    let attacker = IpNet::from(std::net::IpAddr::V4(ATTACKER));
    let (geo, origin) = full_geo_set()?;
    println!("\n== XDP perimeter rules (geo set: {origin})");
    println!(
        "{:<40} {:>14} {:>11} {:>14}",
        "case", "dropped pkt/s", "busy cores", "pkt/s per core"
    );
    // `key` names the row in the JSON (see `cargo xtask bench --json`).
    let row = |name: &str, key: &str, (rate, busy): (f64, f64)| {
        record_all(&[
            (&format!("perimeter_pps.{key}"), rate),
            (
                &format!("perimeter_pps_per_core.{key}"),
                rate / busy.max(0.01),
            ),
        ]);
        println!(
            "{name:<40} {rate:>14.0} {busy:>11.2} {:>14.0}",
            rate / busy.max(0.01)
        );
    };
    xdp.ban(attacker, None)?;
    row(
        "banned source, no other rules",
        "banned",
        flood_counting(lab, &xdp, &banned, "banned"),
    );
    xdp.unban(attacker)?;
    let started = Instant::now();
    let mut with_attacker = geo.clone();
    with_attacker.push(attacker);
    xdp.set_geo(&with_attacker)?;
    let load = started.elapsed();
    row(
        "geo-blocked source, full geo set",
        "geo_blocked",
        flood_counting(lab, &xdp, &banned, "geo_blocked"),
    );
    xdp.set_geo(&geo)?;
    let mut perimeter = pbxguard::enforce::perimeter::Perimeter::from_config(config);
    perimeter.protect = vec![pbxguard::enforce::perimeter::ProtectRule {
        ports: vec![pbxguard_common::PortKey {
            port: 5080,
            proto: 17,
            pad: 0,
        }],
        trusted: vec!["192.0.2.0/24".parse()?],
    }];
    perimeter.settings.flood_rate = 1_000_000;
    perimeter.settings.flood_burst = 1_000_000;
    xdp.set_perimeter(&perimeter)?;
    row(
        "scanner User-Agent, every rule loaded",
        "sip_scanner",
        flood_counting(lab, &xdp, &scan, "sip_scanner"),
    );
    println!(
        "geo set: {} networks loaded in {:.2} s, map memory {:.1} MiB (GEO_V4 + GEO_V6)",
        geo.len(),
        load.as_secs_f64(),
        map_memory("GEO_") as f64 / (1024.0 * 1024.0)
    );
    record_all(&[
        ("geo_set.networks", geo.len() as f64),
        ("geo_set.load_s", load.as_secs_f64()),
        (
            "geo_set.map_mib",
            map_memory("GEO_") as f64 / (1024.0 * 1024.0),
        ),
    ]);
    xdp.shutdown(true)?;
    Ok(())
}

/// A 100,000-entry blocklist feed (the attacker among them) on both backends: the time to
/// swap it in, the drop rate with it loaded, and (XDP) the maps' memory.
fn feed_rows(lab: &Lab, config: &Config, conf: &Path) -> anyhow::Result<()> {
    let mut want: std::collections::BTreeMap<IpNet, u64> = support::other_bans(99_999)
        .into_iter()
        .map(|(net, _)| (net, 1))
        .collect();
    want.insert(IpNet::from(std::net::IpAddr::V4(ATTACKER)), 1);
    println!("\n== blocklist feed: 100,000 entries, UDP flood from a listed source");
    println!(
        "{:<8} {:>14} {:>11} {:>14} {:>12} {:>12}",
        "backend", "dropped pkt/s", "busy cores", "pkt/s per core", "load", "map memory"
    );
    for backend in support::BACKENDS {
        let mut enforcer = support::start(backend, config)?;
        let started = Instant::now();
        enforcer.set_blocklist(&want)?;
        let load = started.elapsed();
        let (rate, busy) = flood_counting(lab, enforcer.as_ref(), conf, "blocklisted");
        record_all(&[
            (&format!("feed.{backend}.load_s"), load.as_secs_f64()),
            (&format!("feed.{backend}.pps"), rate),
            (
                &format!("feed.{backend}.pps_per_core"),
                rate / busy.max(0.01),
            ),
        ]);
        if backend == "xdp" {
            record(
                "feed.xdp.map_mib",
                map_memory("BLOCK_") as f64 / (1024.0 * 1024.0),
            );
        }
        let memory = if backend == "xdp" {
            format!("{:.1} MiB", map_memory("BLOCK_") as f64 / (1024.0 * 1024.0))
        } else {
            "-".into()
        };
        println!(
            "{backend:<8} {rate:>14.0} {busy:>11.2} {:>14.0} {:>10.2} s {memory:>12}",
            rate / busy.max(0.01),
            load.as_secs_f64()
        );
        enforcer.shutdown(true)?;
    }
    Ok(())
}
