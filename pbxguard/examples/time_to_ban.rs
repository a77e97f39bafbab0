//! Benchmark (run by `cargo xtask bench`): time from a failure line appended to a followed
//! log to the ban being in the XDP map, p50/p99 over many bans. Prints numbers; asserts
//! nothing. Runs the real daemon in a throw-away namespace lab; needs root.
//!
//! Usage: time_to_ban PBXGUARD_BINARY [BANS]

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use pbxguard_lab::{INSIDE_IF, Lab};

/// Time to ban, line appended -> entry in the XDP map.
#[derive(clap::Parser)]
struct Args {
    /// The pbxguard binary to run as the daemon.
    binary: String,
    /// How many bans to time.
    #[arg(default_value_t = 1000)]
    bans: usize,
}

fn main() -> anyhow::Result<()> {
    let Args { binary, bans } = clap::Parser::parse();

    let lab = Lab::named("pbxg-bench");
    let dir = tempfile::Builder::new()
        .prefix("pbxguard-bench-")
        .tempdir()?;
    let log = dir.path().join("full");
    std::fs::write(&log, "")?;
    let bpffs = dir.path().join("bpffs");
    let config = dir.path().join("pbxguard.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nsocket = \"{}\"\nstate_dir = \"{}\"\nbpffs = \"{}\"\n[enforce]\ninterfaces = [\"{INSIDE_IF}\"]\n\
             [policy]\nmaxretry = 1\n[[source]]\npath = \"{}\"\nfilters = [\"asterisk\"]\n",
            dir.path().join("sock").display(),
            dir.path().join("state").display(),
            bpffs.display(),
            log.display()
        ),
    )?;
    let mut daemon = Command::new("nsenter")
        .arg(format!("--net={}", lab.inside.path().display()))
        .arg(&binary)
        .args(["run", "--config"])
        .arg(&config)
        .env("PBXGUARD_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;

    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.path().join("sock").exists() {
        anyhow::ensure!(Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let trie = pbxguard::enforce::program::pinned_exact_v4(&bpffs)?;
    let mut file = std::fs::OpenOptions::new().append(true).open(&log)?;
    let mut samples = Vec::with_capacity(bans);
    for i in 0..bans {
        // 198.18.0.0/15 is reserved for benchmarks.
        let ip = [198, 18 + (i >> 16) as u8, (i >> 8) as u8, i as u8];
        let line = format!(
            "[2026-11-26 11:03:53] NOTICE[1234] chan_sip.c: Registration from '\"100\" <sip:100@192.0.2.1>' failed for '{}.{}.{}.{}:5060' - Wrong password\n",
            ip[0], ip[1], ip[2], ip[3]
        );
        let started = Instant::now();
        file.write_all(line.as_bytes())?;
        while trie.get(&ip, 0).is_err() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "ban {i} never reached the map"
            );
            std::thread::sleep(Duration::from_micros(20));
        }
        samples.push(started.elapsed());
    }
    daemon.kill()?;
    daemon.wait()?;
    let _ = nix::mount::umount2(&bpffs, nix::mount::MntFlags::MNT_DETACH);
    let (p50, p99, max) = pbxguard_lab::percentiles_ms(samples);
    println!(
        "time to ban ({bans} bans, line appended -> entry in the XDP map): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
    );
    pbxguard_lab::bench_json::record_all(&[
        ("time_to_ban_ms.pbxguard_xdp_map.p50", p50),
        ("time_to_ban_ms.pbxguard_xdp_map.p99", p99),
        ("time_to_ban_ms.pbxguard_xdp_map.max", max),
        ("time_to_ban_ms.pbxguard_xdp_map.bans", bans as f64),
    ]);
    Ok(())
}
