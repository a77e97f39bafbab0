//! `cargo xtask demo`: pbxguard protecting a PBX in two throw-away network namespaces.
//!
//! An attacker and a phone send SIP-port datagrams to the PBX; the admin bans the attacker
//! from the CLI; the XDP program drops its packets; the daemon is killed with -9 and the ban
//! still holds; a restart finds every ban. Everything is removed at the end.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use std::io::Write as _;

use anyhow::{Context as _, bail};
use pbxguard_lab::{ATTACKER, INSIDE_IF, Lab, PBX, PHONE};

const PACKETS: usize = 10;

struct Demo<'a> {
    bin: &'a Path,
    lab: Lab,
    dir: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    daemon: Option<Child>,
}

impl Demo<'_> {
    fn start_daemon(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.lab.inside.path().display()))
            .arg(self.bin)
            .args(["run", "--config"])
            .arg(&self.config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the daemon with nsenter")?;
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.cli_quiet(&["status"]) {
            if Instant::now() > deadline {
                bail!(
                    "daemon did not come up; its log:\n{}",
                    std::fs::read_to_string(self.dir.join("daemon.log"))?
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn cli_quiet(&self, args: &[&str]) -> bool {
        Command::new(self.bin)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn cli(&self, args: &[&str]) -> anyhow::Result<()> {
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("\"{a}\"")
                } else {
                    a.to_string()
                }
            })
            .collect();
        println!("\n$ pbxguard {}", shown.join(" "));
        Command::new(self.bin)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .status()?;
        Ok(())
    }

    fn traffic(&self, when: &str) {
        let got = self.lab.deliveries(
            &[IpAddr::V4(ATTACKER), IpAddr::V4(PHONE)],
            IpAddr::V4(PBX),
            PACKETS,
        );
        println!(
            "\n[{when}] {PACKETS} datagrams each to {PBX}: attacker {ATTACKER} -> {} arrived, phone {PHONE} -> {} arrived",
            got[0], got[1]
        );
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Demo<'_> {
    fn drop(&mut self) {
        self.kill9();
        let _ = nix::mount::umount2(&self.dir.join("bpffs"), nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the attacker is in `bans list`.
fn banned(demo: &Demo) -> anyhow::Result<bool> {
    let out = Command::new(demo.bin)
        .arg("--socket")
        .arg(&demo.socket)
        .args(["bans", "list", "--json"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).contains(&format!("\"{ATTACKER}/32\"")))
}

/// Runs the demo with the given pbxguard binary.
pub fn run(bin: &Path) -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the demo creates network namespaces and attaches XDP: run it as root");
    }
    let dir = std::env::temp_dir().join(format!("pbxguard-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("pbxguard.toml");
    let socket = dir.join("pbxguard.sock");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nsocket = \"{}\"\nstate_dir = \"{}\"\nbpffs = \"{}\"\n\n[enforce]\ninterfaces = [\"{INSIDE_IF}\"]\n\n[allow]\nnetworks = [\"{PHONE}\"]\n\n[policy]\nmaxretry = 3\n\n[[source]]\npath = \"{}\"\nfilters = [\"asterisk\"]\n",
            socket.display(),
            dir.join("state").display(),
            dir.join("bpffs").display(),
            dir.join("full").display()
        ),
    )?;
    println!(
        "pbxguard demo: namespaces `outside` (attacker {ATTACKER}, phone {PHONE}) and `inside` (PBX {PBX}, interface {INSIDE_IF})"
    );
    let mut demo = Demo {
        bin,
        lab: Lab::named("pbxg-demo"),
        dir,
        config,
        socket,
        daemon: None,
    };
    demo.start_daemon()?;
    demo.cli(&["status"])?;
    demo.traffic("no bans");
    demo.cli(&[
        "bans",
        "add",
        &ATTACKER.to_string(),
        "--for",
        "1h",
        "--reason",
        "SIP brute force (demo)",
    ])?;
    demo.traffic("attacker banned");
    demo.cli(&["bans", "list"])?;
    demo.cli(&["stats"])?;
    println!("\n$ pbxguard bans add {PHONE}   # the phone is allowlisted: refused");
    Command::new(bin)
        .arg("--socket")
        .arg(&demo.socket)
        .args(["bans", "add", &PHONE.to_string()])
        .status()?;
    println!("\n[kill -9 the daemon]");
    demo.kill9();
    demo.traffic("daemon dead, ban pinned in the kernel");
    println!("\n[restart the daemon]");
    demo.start_daemon()?;
    demo.cli(&["bans", "list"])?;
    demo.cli(&["bans", "del", &ATTACKER.to_string()])?;
    demo.traffic("attacker unbanned");
    // Detection: Asterisk logs three failed registrations; the third bans the attacker.
    let log = demo.dir.join("full");
    println!(
        "\n[Asterisk logs 3 failed registrations from {ATTACKER} in {}]",
        log.display()
    );
    let mut lines = String::new();
    for ext in 100..103 {
        lines.push_str(&format!(
            "[2026-11-26 11:03:53] NOTICE[1234] chan_sip.c: Registration from '\"{ext}\" <sip:{ext}@{PBX}>' failed for '{ATTACKER}:5060' - Wrong password\n"
        ));
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&log)?
        .write_all(lines.as_bytes())?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !banned(&demo)? {
        if Instant::now() > deadline {
            bail!("the attacker was not banned from the log");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    demo.cli(&["bans", "list"])?;
    demo.traffic("banned from the log");
    println!("\ndemo done; namespaces, pins and state are removed.");
    Ok(())
}
