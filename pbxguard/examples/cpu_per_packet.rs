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
    path::Path,
    time::{Duration, Instant},
};

// The setup the enforcement benchmarks share.
#[path = "support/mod.rs"]
mod support;

use ipnet::IpNet;
use pbxguard::enforce::Enforcer;
use pbxguard_lab::{ATTACKER, Lab, PHONE};

/// Packets per second sent in every case.
const RATE: u64 = 100_000;
/// How long each case sends.
const SEND: Duration = Duration::from_secs(4);

/// Sends at RATE for SEND from `conf`; (CPU ns per packet counted under `reason`, packets).
fn cost(lab: &Lab, enforcer: &dyn Enforcer, conf: &Path, reason: &str) -> (f64, u64) {
    let before = support::packets(enforcer, reason);
    let cpu = pbxguard_lab::busy_cpu_seconds();
    support::trafgen(lab, conf, SEND, Some(RATE));
    std::thread::sleep(support::DRAIN);
    let busy = pbxguard_lab::busy_cpu_seconds() - cpu;
    let packets = support::packets(enforcer, reason) - before;
    (busy * 1e9 / packets.max(1) as f64, packets)
}

fn main() -> anyhow::Result<()> {
    let lab = Lab::named("pbxg-cpp");
    let mac = lab.inside_mac();
    let dir = tempfile::Builder::new().prefix("pbxguard-cpp-").tempdir()?;
    let banned = support::frame_conf(dir.path(), "banned.cfg", &mac, ATTACKER, 9);
    let unmatched = support::frame_conf(dir.path(), "unmatched.cfg", &mac, PHONE, 9);
    let config = support::lab_config(dir.path())?;
    support::enter_inside(&lab)?;
    let others = support::other_bans(99_999);
    println!(
        "== CPU per packet at {RATE} packets/s (machine busy time / packets counted, generator included; {} s per case)",
        SEND.as_secs()
    );
    println!(
        "{:<8} {:>8} {:>16} {:>18}",
        "backend", "bans", "banned ns/pkt", "unmatched ns/pkt"
    );
    let started = Instant::now();
    for backend in support::BACKENDS {
        let mut enforcer = support::start(backend, &config)?;
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
