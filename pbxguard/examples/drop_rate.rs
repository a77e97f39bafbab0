//! Benchmark (run by `cargo xtask bench`): packets/s the XDP backend and the nftables backend
//! drop from a banned source flooding with `trafgen`, with 1 and with 100,000 bans loaded, and
//! what adding 100,000 bans costs on each. Prints numbers; asserts nothing. Runs in a
//! namespace lab it creates and removes; needs root and Debian's `netsniff-ng` (trafgen).

use std::{
    net::Ipv4Addr,
    path::Path,
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use ipnet::IpNet;
use nix::sched::{CloneFlags, setns};
use pbxguard::{
    config::Config,
    enforce::{Enforcer, nft::NftEnforcer, xdp::XdpEnforcer},
};
use pbxguard_lab::{ATTACKER, INSIDE_IF, Lab, PBX};

const FLOOD: Duration = Duration::from_secs(3);

/// Busy (non-idle) CPU seconds of the whole machine so far.
fn busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: f64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0.0) + fields.get(4).copied().unwrap_or(0.0);
    (total - idle) / 100.0
}

fn banned_packets(enforcer: &dyn Enforcer) -> u64 {
    enforcer
        .stats()
        .unwrap()
        .iter()
        .find(|r| r.reason == "banned")
        .map_or(0, |r| r.packets)
}

/// Floods from the attacker for FLOOD; returns (dropped packets/s, busy cores).
fn flood(lab: &Lab, enforcer: &dyn Enforcer, conf: &Path) -> (f64, f64) {
    let before = banned_packets(enforcer);
    let cpu = busy_seconds();
    let started = Instant::now();
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.outside.name,
            "timeout",
            "--signal=INT",
        ])
        .arg(format!("{}", FLOOD.as_secs()))
        .args(["trafgen", "--dev", "wan0", "--cpus", "1", "-q", "--conf"])
        .arg(conf)
        .output()
        .expect("trafgen (apt-get install netsniff-ng)");
    let _ = status;
    let wall = started.elapsed().as_secs_f64();
    let busy = (busy_seconds() - cpu) / wall;
    // Let the last packets drain before reading the counter.
    std::thread::sleep(Duration::from_millis(200));
    let dropped = banned_packets(enforcer) - before;
    (dropped as f64 / wall, busy)
}

fn main() -> anyhow::Result<()> {
    let lab = Lab::named("pbxg-drop");
    let mac = {
        let out = Command::new("ip")
            .args(["-n", &lab.inside.name, "-j", "link", "show", INSIDE_IF])
            .output()?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        json[0]["address"].as_str().unwrap_or_default().to_string()
    };
    let dir = tempfile::Builder::new()
        .prefix("pbxguard-drop-")
        .tempdir()?;
    let conf = dir.path().join("flood.cfg");
    std::fs::write(
        &conf,
        format!(
            "{{ eth(da={mac}), ipv4(saddr={ATTACKER}, daddr={PBX}), udp(sp=40000, dp=5060), fill(0x41, 18) }}\n"
        ),
    )?;
    let config = Config::parse(
        &format!(
            "[daemon]\nbpffs = \"{}\"\n[enforce]\ninterfaces = [\"{INSIDE_IF}\"]\nxdp_mode = \"native\"\n",
            dir.path().join("bpffs").display()
        ),
        Path::new("bench.toml"),
    )?;
    // From here on this process (and every nft it runs) lives in the protected namespace.
    setns(
        std::fs::File::open(lab.inside.path())?,
        CloneFlags::CLONE_NEWNET,
    )?;

    let attacker = IpNet::from(std::net::IpAddr::V4(ATTACKER));
    let others: Vec<(IpNet, Option<SystemTime>)> = (1..100_000u32)
        .map(|i| {
            (
                IpNet::from(std::net::IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i))),
                None,
            )
        })
        .collect();
    println!(
        "== drop rate: UDP flood from one banned source over a veth pair (trafgen, one sender core, {} s each)",
        FLOOD.as_secs()
    );
    println!(
        "{:<8} {:>8} {:>14} {:>11} {:>14} {:>16}",
        "backend", "bans", "dropped pkt/s", "busy cores", "pkt/s per core", "add 100,000 bans"
    );
    let mut results = Vec::new();
    for backend in ["xdp", "nft"] {
        let mut enforcer: Box<dyn Enforcer> = match backend {
            "xdp" => Box::new(XdpEnforcer::start(&config)?),
            _ => Box::new(NftEnforcer::start(&config)?),
        };
        enforcer.ban(attacker, None)?;
        let (rate1, busy1) = flood(&lab, enforcer.as_ref(), &conf);
        let started = Instant::now();
        enforcer.ban_many(&others)?;
        let add = started.elapsed();
        let (rate2, busy2) = flood(&lab, enforcer.as_ref(), &conf);
        for (bans, rate, busy, add) in [(1, rate1, busy1, None), (100_000, rate2, busy2, Some(add))]
        {
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
    let _ = nix::mount::umount2(&dir.path().join("bpffs"), nix::mount::MntFlags::MNT_DETACH);
    println!(
        "XDP/nft per core: {:.1}x with 1 ban, {:.1}x with 100,000 bans",
        results[0].0 / results[1].0.max(1.0),
        results[0].1 / results[1].1.max(1.0)
    );
    Ok(())
}
