//! Benchmark (run by `cargo xtask bench`): how fast bans travel between nodes over NATS
//! JetStream (`[cluster]`). A real `nats-server` in a hub namespace and real daemons in
//! their own labs:
//!
//! - propagation: a ban made on A (control socket, as `pbxguard bans add` does) until the
//!   entry is in B's XDP map, p50/p99 over BANS bans, one at a time;
//! - replay: REPLAY bans already on the stream (published by a node `seed`), from starting
//!   a new daemon until all of them are enforced on it.
//!
//! Prints numbers; asserts nothing. Needs root and nats-server.
//!
//! Usage: cluster_propagation PBXGUARD_BINARY [BANS] [REPLAY]

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use pbxguard::{
    cluster::wire::{Wire, subject},
    control::{Request, request},
    store::BanRecord,
};
use pbxguard_common::BanEntry;
use pbxguard_lab::{
    INSIDE_IF, Lab,
    fleet::{Hub, NATS_PORT, NatsServer},
};

/// A daemon in a lab's PBX namespace.
struct Node {
    child: Child,
    dir: tempfile::TempDir,
    _lab: Lab,
}

impl Node {
    fn start(binary: &str, hub: &Hub, name: &str, extra: &str) -> anyhow::Result<Node> {
        let lab = Lab::named("pbxg-bench");
        let server = hub.connect(&lab);
        let dir = tempfile::Builder::new()
            .prefix("pbxguard-bench-")
            .tempdir()?;
        let config = dir.path().join("pbxguard.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\nsocket = \"{}\"\nstate_dir = \"{}\"\nbpffs = \"{}\"\n[enforce]\ninterfaces = [\"{INSIDE_IF}\"]\n\
                 [ban]\nmax_entries = 200000\n\
                 [cluster]\nservers = [\"nats://{server}:{NATS_PORT}\"]\nnode = \"{name}\"\n{extra}\n",
                dir.path().join("sock").display(),
                dir.path().join("state").display(),
                dir.path().join("bpffs").display(),
            ),
        )?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", lab.inside.path().display()))
            .arg(binary)
            .args(["run", "--config"])
            .arg(&config)
            .env("PBXGUARD_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?;
        let node = Node {
            child,
            dir,
            _lab: lab,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while request(&node.socket(), &Request::Status).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "daemon {name} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(node)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn status(&self) -> anyhow::Result<serde_json::Value> {
        Ok(request(&self.socket(), &Request::Status)?)
    }

    fn wait_connected(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.status()?["cluster"]["connected"] != true {
            anyhow::ensure!(Instant::now() < deadline, "never connected to NATS");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn ban_map(&self) -> anyhow::Result<aya::maps::HashMap<aya::maps::MapData, [u8; 4], BanEntry>> {
        Ok(pbxguard::enforce::program::pinned_exact_v4(
            &self.dir.path().join("bpffs"),
        )?)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = nix::mount::umount2(
            &self.dir.path().join("bpffs"),
            nix::mount::MntFlags::MNT_DETACH,
        );
    }
}

/// 198.18.0.0/15 is reserved for benchmarks.
fn bench_address(i: usize) -> [u8; 4] {
    [198, 18 + (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

fn propagation(binary: &str, hub: &Hub, bans: usize) -> anyhow::Result<()> {
    let a = Node::start(
        binary,
        hub,
        "bench-a",
        "publish = [\"detected\", \"manual\"]",
    )?;
    let b = Node::start(binary, hub, "bench-b", "")?;
    a.wait_connected()?;
    b.wait_connected()?;
    let trie = b.ban_map()?;
    let mut samples = Vec::with_capacity(bans);
    for i in 0..bans {
        let ip = bench_address(i);
        let started = Instant::now();
        request(
            &a.socket(),
            &Request::AddBan {
                net: Ipv4Addr::from(ip).to_string(),
                more: Vec::new(),
                duration: Some("1h".into()),
                reason: None,
            },
        )?;
        while trie.get(&ip, 0).is_err() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "ban {i} never reached B's map"
            );
            std::thread::sleep(Duration::from_micros(50));
        }
        samples.push(started.elapsed());
    }
    let (p50, p99, max) = pbxguard_lab::percentiles_ms(samples);
    println!(
        "propagation ({bans} bans, bans add on A -> entry in B's XDP map): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
    );
    pbxguard_lab::bench_json::record_all(&[
        ("cluster.propagation_ms.p50", p50),
        ("cluster.propagation_ms.p99", p99),
        ("cluster.propagation_ms.max", max),
    ]);
    Ok(())
}

/// Publishes `count` bans as node `seed`, the way a node would.
fn seed(hub: &Hub, count: usize) -> anyhow::Result<()> {
    let ns = hub.ns.path();
    let seeded = std::thread::spawn(move || -> anyhow::Result<()> {
        let file = std::fs::File::open(ns)?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let client = async_nats::connect(format!("127.0.0.1:{NATS_PORT}")).await?;
            let js = async_nats::jetstream::new(client);
            let now = SystemTime::now();
            for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
                let mut acks = Vec::with_capacity(chunk.len());
                for &i in chunk {
                    let ip = bench_address(100_000 + i);
                    let record = BanRecord {
                        net: std::net::IpAddr::from(ip).into(),
                        reason: "seeded".into(),
                        source: "asterisk".into(),
                        created: now,
                        expires: Some(now + Duration::from_secs(3600)),
                        rule: Some("sip_register_failed".into()),
                        failures: Some(5),
                        offense: Some(1),
                        evidence: Some(pbxguard::detect::Evidence::Proven),
                    };
                    let wire = Wire::ban("seed", &record);
                    acks.push(
                        js.publish(subject("seed", &wire.net), wire.to_payload().into())
                            .await?,
                    );
                }
                for ack in acks {
                    ack.await?;
                }
            }
            anyhow::Ok(())
        })
    });
    seeded.join().expect("seeding thread")
}

fn replay(binary: &str, hub: &Hub, count: usize) -> anyhow::Result<()> {
    seed(hub, count)?;
    let started = Instant::now();
    let c = Node::start(binary, hub, "bench-c", "")?;
    let ready = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while c.status()?["bans"].as_u64() < Some(count as u64) {
        anyhow::ensure!(Instant::now() < deadline, "replay did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let all = started.elapsed();
    println!(
        "replay on join ({count} bans on the stream): daemon ready after {:.2} s, all enforced after {:.2} s ({:.0} bans/s)",
        ready.as_secs_f64(),
        all.as_secs_f64(),
        count as f64 / all.as_secs_f64()
    );
    pbxguard_lab::bench_json::record_all(&[
        ("cluster.replay_s", all.as_secs_f64()),
        ("cluster.replay_ready_s", ready.as_secs_f64()),
        ("cluster.replay_bans", count as f64),
    ]);
    Ok(())
}

/// Ban propagation between two nodes, and replay on join.
#[derive(clap::Parser)]
struct Args {
    /// The pbxguard binary to run as the daemons.
    binary: String,
    /// How many bans to time from node A to node B.
    #[arg(default_value_t = 1000)]
    bans: usize,
    /// How many bans a joining node replays from the stream.
    #[arg(default_value_t = 100_000)]
    replayed: usize,
}

fn main() -> anyhow::Result<()> {
    let Args {
        binary,
        bans,
        replayed,
    } = clap::Parser::parse();
    let hub = Hub::new();
    let store = tempfile::Builder::new()
        .prefix("pbxguard-bench-nats-")
        .tempdir()?;
    let _nats = NatsServer::start(&hub, &store.path().join("store"));
    propagation(&binary, &hub, bans)?;
    replay(&binary, &hub, replayed)?;
    Ok(())
}
