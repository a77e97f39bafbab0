//! Benchmark (run by `cargo xtask bench`): CPU time per packet of the XDP and the nftables
//! path for the same rule sets, at one fixed rate.
//!
//! Method: `trafgen` sends RATE packets/s for a fixed time over the lab's veth pair (one
//! sender core); the receive path runs on the same machine, so the machine's busy CPU time
//! (all cores, `/proc/stat`, user + system + softirq + irq) divided by the packets the
//! backend counted is the cost per packet *including the generator's share*, which is the
//! same for both backends at the same rate: the difference between the rows is the
//! difference between the paths. Cases: a banned source (dropped) with 1 and 100,000 bans,
//! and an unmatched source (passed up the stack to a closed port). Prints numbers; asserts
//! nothing. Needs root and Debian's `netsniff-ng` (trafgen).

use std::{
    net::Ipv4Addr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use nix::sched::{CloneFlags, setns};
use pbxguard::{
    config::Config,
    enforce::{Enforcer, nft::NftEnforcer, xdp::XdpEnforcer},
};
use pbxguard_lab::{ATTACKER, INSIDE_IF, Lab, PBX, PHONE};

/// Packets per second sent in every case.
const RATE: u64 = 100_000;
/// How long each case sends.
const SEND: Duration = Duration::from_secs(4);

fn counted(enforcer: &dyn Enforcer, reason: &str) -> u64 {
    enforcer
        .stats()
        .map(|s| {
            s.iter()
                .find(|r| r.reason == reason)
                .map_or(0, |r| r.packets)
        })
        .unwrap_or(0)
}

/// Sends at RATE for SEND from `conf`; (CPU ns per packet counted under `reason`, packets).
fn cost(lab: &Lab, enforcer: &dyn Enforcer, conf: &Path, reason: &str) -> (f64, u64) {
    let before = counted(enforcer, reason);
    let cpu = pbxguard_lab::busy_cpu_seconds();
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.outside.name,
            "timeout",
            "--signal=INT",
        ])
        .arg(SEND.as_secs().to_string())
        .args(["trafgen", "--dev", "wan0", "--cpus", "1", "-q", "--rate"])
        .arg(format!("{RATE}pps"))
        .arg("--conf")
        .arg(conf)
        .output()
        .expect("trafgen (apt-get install netsniff-ng)");
    std::thread::sleep(Duration::from_millis(200));
    let busy = pbxguard_lab::busy_cpu_seconds() - cpu;
    let packets = counted(enforcer, reason) - before;
    (busy * 1e9 / packets.max(1) as f64, packets)
}

fn frame_conf(dir: &Path, name: &str, mac: &str, source: Ipv4Addr) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "{{ eth(da={mac}), ipv4(saddr={source}, daddr={PBX}), udp(sp=40000, dp=9), fill(0x41, 18) }}\n"
        ),
    )
    .expect("trafgen config");
    path
}

fn main() -> anyhow::Result<()> {
    let lab = Lab::named("pbxg-cpp");
    let mac = lab.inside_mac();
    let dir = tempfile::Builder::new().prefix("pbxguard-cpp-").tempdir()?;
    let banned = frame_conf(dir.path(), "banned.cfg", &mac, ATTACKER);
    let unmatched = frame_conf(dir.path(), "unmatched.cfg", &mac, PHONE);
    let config = Config::parse(
        &format!(
            "[daemon]\nbpffs = \"{}\"\n[enforce]\ninterfaces = [\"{INSIDE_IF}\"]\nxdp_mode = \"native\"\n",
            dir.path().join("bpffs").display()
        ),
        Path::new("bench.toml"),
    )?;
    setns(
        std::fs::File::open(lab.inside.path())?,
        CloneFlags::CLONE_NEWNET,
    )?;
    let others: Vec<(IpNet, Option<std::time::SystemTime>)> = (1..100_000u32)
        .map(|i| {
            (
                IpNet::from(std::net::IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i))),
                None,
            )
        })
        .collect();
    println!(
        "== CPU per packet at {RATE} packets/s (machine busy time / packets counted, generator included; {} s per case)",
        SEND.as_secs()
    );
    println!(
        "{:<8} {:>8} {:>16} {:>18}",
        "backend", "bans", "banned ns/pkt", "unmatched ns/pkt"
    );
    let started = Instant::now();
    for backend in ["xdp", "nft"] {
        let mut enforcer: Box<dyn Enforcer> = match backend {
            "xdp" => Box::new(XdpEnforcer::start(&config)?),
            _ => Box::new(NftEnforcer::start(&config)?),
        };
        enforcer.ban(IpNet::from(std::net::IpAddr::V4(ATTACKER)), None)?;
        for bans in [1usize, 100_000] {
            if bans > 1 {
                enforcer.ban_all(&others)?;
            }
            let (dropped, n) = cost(&lab, enforcer.as_ref(), &banned, "banned");
            let (passed, m) = cost(&lab, enforcer.as_ref(), &unmatched, "passed");
            println!(
                "{backend:<8} {bans:>8} {dropped:>16.0} {passed:>18.0}   ({n} and {m} packets)"
            );
            pbxguard_lab::bench_json::record_all(&[
                (
                    &format!("cpu_ns_per_packet.{backend}.banned.{bans}"),
                    dropped,
                ),
                (
                    &format!("cpu_ns_per_packet.{backend}.unmatched.{bans}"),
                    passed,
                ),
            ]);
        }
        enforcer.shutdown(true)?;
    }
    let _ = nix::mount::umount2(&dir.path().join("bpffs"), nix::mount::MntFlags::MNT_DETACH);
    println!("(measured in {:.0} s)", started.elapsed().as_secs_f64());
    Ok(())
}
