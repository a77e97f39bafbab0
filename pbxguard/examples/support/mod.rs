//! What the enforcement benchmarks (`drop_rate`, `cpu_per_packet`) share: a config for the
//! lab's inside interface, this process moved into that namespace, the backends, `trafgen`
//! runs from the outside namespace and the backends' counters. Not an example itself (no
//! `main.rs`); each benchmark includes it with `#[path]`.
#![allow(dead_code)] // each benchmark uses a different part

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use nix::sched::{CloneFlags, setns};
use pbxguard::{
    config::Config,
    enforce::{Enforcer, nft::NftEnforcer, xdp::XdpEnforcer},
};
use pbxguard_lab::{INSIDE_IF, Lab, PBX};

/// Both backends, in the order the benchmarks print them.
pub const BACKENDS: [&str; 2] = ["xdp", "nft"];

/// A config enforcing on the lab's inside interface with native XDP, its bpffs under `dir`.
pub fn lab_config(dir: &Path) -> anyhow::Result<Config> {
    Ok(Config::parse(
        &format!(
            "[daemon]\nbpffs = \"{}\"\n[enforce]\ninterfaces = [\"{INSIDE_IF}\"]\nxdp_mode = \"native\"\n",
            dir.join("bpffs").display()
        ),
        Path::new("bench.toml"),
    )?)
}

/// Moves this process, and every `nft` it runs from now on, into the lab's protected
/// namespace.
pub fn enter_inside(lab: &Lab) -> anyhow::Result<()> {
    setns(
        std::fs::File::open(lab.inside.path())?,
        CloneFlags::CLONE_NEWNET,
    )?;
    Ok(())
}

/// The backend `name` (`xdp` or `nft`) started on `config`.
pub fn start(name: &str, config: &Config) -> anyhow::Result<Box<dyn Enforcer>> {
    Ok(match name {
        "xdp" => Box::new(XdpEnforcer::start(config)?),
        _ => Box::new(NftEnforcer::start(config)?),
    })
}

/// `count` permanent single-address bans in 100.64.0.0/10 (never the lab's addresses).
pub fn other_bans(count: u32) -> Vec<(IpNet, Option<SystemTime>)> {
    (1..=count)
        .map(|i| {
            (
                IpNet::from(std::net::IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i))),
                None,
            )
        })
        .collect()
}

/// Packets the backend counted under verdict `reason` (0 if it cannot say).
pub fn packets(enforcer: &dyn Enforcer, reason: &str) -> u64 {
    enforcer
        .stats()
        .map(|s| {
            s.iter()
                .find(|r| r.reason == reason)
                .map_or(0, |r| r.packets)
        })
        .unwrap_or(0)
}

/// A trafgen config file in `dir`: one UDP frame from `source` to the PBX's `port` with 18
/// bytes of payload, addressed to the inside interface's `mac`.
pub fn frame_conf(dir: &Path, name: &str, mac: &str, source: Ipv4Addr, port: u16) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "{{ eth(da={mac}), ipv4(saddr={source}, daddr={PBX}), udp(sp=40000, dp={port}), fill(0x41, 18) }}\n"
        ),
    )
    .expect("trafgen config");
    path
}

/// How long the last packets of a run take to drain before counters are read.
pub const DRAIN: Duration = Duration::from_millis(200);

/// Runs `trafgen` with `conf` from the outside namespace for `time` on one core, as fast as
/// it can or at `rate` packets/s.
pub fn trafgen(lab: &Lab, conf: &Path, time: Duration, rate: Option<u64>) {
    let mut command = Command::new("ip");
    command
        .args([
            "netns",
            "exec",
            &lab.outside.name,
            "timeout",
            "--signal=INT",
        ])
        .arg(time.as_secs().to_string())
        .args(["trafgen", "--dev", "wan0", "--cpus", "1", "-q"]);
    if let Some(rate) = rate {
        command.arg("--rate").arg(format!("{rate}pps"));
    }
    command
        .arg("--conf")
        .arg(conf)
        .output()
        .expect("trafgen (apt-get install netsniff-ng)");
}
