//! Test fixtures: network namespaces joined by a veth pair, and a pbxguard daemon running
//! on the inside one. Everything a test creates is removed when the fixture drops; no test
//! touches the host's own namespace, interfaces or /sys/fs/bpf.
#![allow(dead_code)] // each test binary uses a different part

pub mod frames;

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use nix::sched::{CloneFlags, setns};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The pbxguard binary under test.
pub fn pbxguard_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pbxguard")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// A network namespace created for one test.
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    fn create(name: String) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// Path for setns/nsenter.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `f` on a thread that has entered this namespace; sockets it creates stay here.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        std::thread::spawn(move || {
            let file = File::open(&path).expect("open netns");
            setns(file, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Two namespaces: `outside` (attacker, phone) and `inside` (the PBX, where pbxguard runs).
pub struct Lab {
    /// Where the traffic comes from.
    pub outside: Netns,
    /// The protected host.
    pub inside: Netns,
}

/// Name of the protected interface inside.
pub const INSIDE_IF: &str = "pbx0";
/// The PBX.
pub const PBX: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// A source the tests ban.
pub const ATTACKER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 66);
/// A source that must keep working.
pub const PHONE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 20);
/// IPv6 equivalents.
pub const PBX6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
/// IPv6 attacker.
pub const ATTACKER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x66);
/// IPv6 phone.
pub const PHONE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x20);

impl Lab {
    /// Creates both namespaces and the veth pair with addresses.
    pub fn new() -> Lab {
        let id = format!(
            "{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let outside = Netns::create(format!("pbxg-{id}-out"));
        let inside = Netns::create(format!("pbxg-{id}-in"));
        ip(&[
            "link",
            "add",
            "name",
            "wan0",
            "netns",
            &outside.name,
            "type",
            "veth",
            "peer",
            "name",
            INSIDE_IF,
            "netns",
            &inside.name,
        ]);
        for (ns, dev, addrs) in [
            (
                &outside,
                "wan0",
                vec![
                    format!("{ATTACKER}/24"),
                    format!("{PHONE}/24"),
                    format!("{ATTACKER6}/64"),
                    format!("{PHONE6}/64"),
                ],
            ),
            (
                &inside,
                INSIDE_IF,
                vec![format!("{PBX}/24"), format!("{PBX6}/64")],
            ),
        ] {
            for addr in addrs {
                let mut args = vec!["-n", &ns.name, "addr", "add", &addr, "dev", dev];
                if addr.contains(':') {
                    args.push("nodad");
                }
                ip(&args);
            }
            ip(&["-n", &ns.name, "link", "set", dev, "up"]);
        }
        // Static neighbours: no ARP/ND race decides whether the first datagrams arrive.
        let out_mac = mac(&outside, "wan0");
        let in_mac = mac(&inside, INSIDE_IF);
        for addr in [PBX.to_string(), PBX6.to_string()] {
            ip(&[
                "-n",
                &outside.name,
                "neigh",
                "replace",
                &addr,
                "lladdr",
                &in_mac,
                "dev",
                "wan0",
                "nud",
                "permanent",
            ]);
        }
        for addr in [
            ATTACKER.to_string(),
            PHONE.to_string(),
            ATTACKER6.to_string(),
            PHONE6.to_string(),
        ] {
            ip(&[
                "-n",
                &inside.name,
                "neigh",
                "replace",
                &addr,
                "lladdr",
                &out_mac,
                "dev",
                INSIDE_IF,
                "nud",
                "permanent",
            ]);
        }
        Lab { outside, inside }
    }

    /// A UDP socket bound on the PBX side.
    pub fn listen(&self, addr: IpAddr, port: u16) -> UdpSocket {
        self.inside.enter(move || {
            let socket = UdpSocket::bind(SocketAddr::new(addr, port)).expect("bind listener");
            socket
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            socket
        })
    }

    /// Sends `count` datagrams from `from` (an outside address) to `to:port`.
    pub fn send(&self, from: IpAddr, to: IpAddr, port: u16, count: usize) {
        self.outside.enter(move || {
            let socket = UdpSocket::bind(SocketAddr::new(from, 0)).expect("bind sender");
            for i in 0..count {
                socket
                    .send_to(format!("probe {i}").as_bytes(), SocketAddr::new(to, port))
                    .expect("send");
            }
        })
    }

    /// Sends `count` datagrams from each source and returns how many arrived from each.
    pub fn deliveries(&self, sources: &[IpAddr], to: IpAddr, count: usize) -> Vec<usize> {
        let listener = self.listen(to, 0);
        let port = listener.local_addr().unwrap().port();
        for &from in sources {
            self.send(from, to, port, count);
        }
        let mut got = vec![0; sources.len()];
        let mut buf = [0u8; 64];
        // Bounded: at most sources * count datagrams, and the read timeout ends the wait.
        for _ in 0..sources.len() * count {
            match listener.recv_from(&mut buf) {
                Ok((_, peer)) => {
                    if let Some(i) = sources.iter().position(|s| *s == peer.ip()) {
                        got[i] += 1;
                    }
                }
                Err(_) => break,
            }
        }
        got
    }

    /// Waits (bounded) for the kernel to release the XDP link; true once nothing is attached.
    pub fn xdp_detaches(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.xdp_attached() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// Whether an XDP program is attached to the protected interface.
    pub fn xdp_attached(&self) -> bool {
        let out = Command::new("ip")
            .args(["-n", &self.inside.name, "link", "show", INSIDE_IF])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    }
}

fn mac(ns: &Netns, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-j", "link", "show", "dev", dev])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j link");
    json[0]["address"]
        .as_str()
        .expect("mac address")
        .to_string()
}

/// A pbxguard daemon running in the lab's inside namespace, with its own state, socket and
/// bpffs mount under a temporary directory.
pub struct Daemon {
    child: Option<Child>,
    /// Temporary root for state, socket, bpffs and config.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// The bpffs pin directory.
    pub bpffs: PathBuf,
    netns: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Writes a config (base keys plus `extra` TOML lines appended) without starting.
    pub fn configure(lab: &Lab, extra: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("pbxguard-test-")
            .tempdir()
            .unwrap();
        let socket = dir.path().join("pbxguard.sock");
        let bpffs = dir.path().join("bpffs");
        let config = dir.path().join("pbxguard.toml");
        let text = format!(
            "[daemon]\nsocket = \"{}\"\nstate_dir = \"{}\"\nbpffs = \"{}\"\n\n[enforce]\ninterfaces = [\"{INSIDE_IF}\"]\n\n{extra}\n",
            socket.display(),
            dir.path().join("state").display(),
            bpffs.display(),
        );
        std::fs::write(&config, text).unwrap();
        Daemon {
            child: None,
            log: dir.path().join("daemon.log"),
            dir,
            config,
            socket,
            bpffs,
            netns: lab.inside.path(),
        }
    }

    /// Configures and starts, waiting until the control socket answers.
    pub fn start(lab: &Lab, extra: &str) -> Daemon {
        let mut daemon = Daemon::configure(lab, extra);
        daemon.launch(&[]);
        daemon
    }

    /// Starts the daemon process (network namespace only, so bpffs pins stay visible).
    pub fn launch(&mut self, args: &[&str]) {
        assert!(self.child.is_none(), "already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .arg(pbxguard_bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .args(args)
            .env("PBXGUARD_LOG", "debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.cli(&["status"]).status.success() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited with {status}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "daemon not ready:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(pbxguard_bin())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs the CLI and returns stdout, failing the test on a non-zero exit.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "pbxguard {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Parsed `--json` output of a command.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.push("--json");
        serde_json::from_str(&self.cli_ok(&args)).unwrap()
    }

    /// Packets counted for a verdict reason.
    pub fn packets(&self, reason: &str) -> u64 {
        self.json(&["stats"])
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["reason"] == reason)
            .and_then(|r| r["packets"].as_u64())
            .unwrap()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "daemon exit {status}:\n{}",
            self.log_text()
        );
    }

    /// Simulates a reboot: the daemon dies and bpffs (pins, maps, links) is gone.
    pub fn reboot(&mut self) {
        self.kill9();
        unmount(&self.bpffs);
    }

    /// The ban journal file.
    pub fn journal(&self) -> PathBuf {
        self.dir.path().join("state").join("bans.journal")
    }
}

fn unmount(path: &Path) {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        unmount(&self.bpffs);
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log_text());
        }
    }
}
