//! A lab network for tests, the demo and benchmarks: an `outside` namespace (attacker and
//! phone) and an `inside` one (the PBX) joined by a veth pair, with static neighbours so no
//! ARP/ND race decides whether the first packets arrive. Everything is removed on drop;
//! nothing touches the host's own namespace.
//!
//! Failures to build the lab panic with the command that failed: the lab is only used where
//! a panic is the right report (tests, demo, bench).

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use nix::sched::{CloneFlags, setns};

pub mod bench_json;
pub mod crowdsec;
pub mod fleet;
pub mod geolite2;
pub mod http;

pub(crate) static NEXT: AtomicU32 = AtomicU32::new(0);

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// A network namespace created for one test.
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    pub(crate) fn create(name: String) -> Netns {
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
        enter_path(self.path(), f)
    }
}

/// Runs `f` on a thread that has entered the network namespace at `path`.
pub(crate) fn enter_path<T: Send + 'static>(
    path: PathBuf,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        let file = File::open(&path).expect("open netns");
        setns(file, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
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

/// A permanent neighbour entry: no ARP/ND race decides whether the first datagrams arrive.
fn static_neighbour(ns: &Netns, dev: &str, addr: &str, lladdr: &str) {
    ip(&[
        "-n",
        &ns.name,
        "neigh",
        "replace",
        addr,
        "lladdr",
        lladdr,
        "dev",
        dev,
        "nud",
        "permanent",
    ]);
}

impl Lab {
    /// Creates both namespaces and the veth pair with addresses.
    #[allow(clippy::new_without_default)] // creating namespaces is not a default value
    pub fn new() -> Lab {
        Lab::named("pbxg")
    }

    /// Like [`Lab::new`], with namespace names starting with `prefix` (e.g. for the demo).
    pub fn named(prefix: &str) -> Lab {
        let id = format!(
            "{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let outside = Netns::create(format!("{prefix}-{id}-out"));
        let inside = Netns::create(format!("{prefix}-{id}-in"));
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
            static_neighbour(&inside, INSIDE_IF, &addr, &out_mac);
        }
        Lab { outside, inside }
    }

    /// Gives the outside namespace one more IPv4 address to send from (e.g. a second host
    /// inside a banned network), with a static neighbour entry on the PBX side.
    pub fn add_outside_address(&self, addr: Ipv4Addr) {
        ip(&[
            "-n",
            &self.outside.name,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "wan0",
        ]);
        let out_mac = mac(&self.outside, "wan0");
        static_neighbour(&self.inside, INSIDE_IF, &addr.to_string(), &out_mac);
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

    /// Whether `backend` (`xdp` or `nft`) has its enforcement in place inside.
    pub fn enforcing(&self, backend: &str) -> bool {
        match backend {
            "nft" => self.nft_table("pbxguard"),
            _ => self.xdp_attached(),
        }
    }

    /// Waits (bounded) until `backend` no longer enforces; true once it stopped.
    pub fn stops_enforcing(&self, backend: &str) -> bool {
        match backend {
            "nft" => !self.nft_table("pbxguard"),
            _ => self.xdp_detaches(),
        }
    }

    /// Whether table `inet NAME` exists inside.
    pub fn nft_table(&self, name: &str) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.inside.name,
                "nft",
                "list",
                "table",
                "inet",
                name,
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Runs `nft ARGS` inside and returns its stdout.
    pub fn nft(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.inside.name, "nft"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The MAC address of the PBX side of the veth (for raw frames a generator sends).
    pub fn inside_mac(&self) -> String {
        mac(&self.inside, INSIDE_IF)
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

/// p50, p99 and the maximum of benchmark samples, in milliseconds (for the benchmarks'
/// one-line reports).
pub fn percentiles_ms(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(*samples.last().expect("samples")),
    )
}

/// Busy CPU seconds of the whole machine so far (`/proc/stat`, everything but idle and
/// iowait): benchmarks take the difference around a run.
pub fn busy_cpu_seconds() -> f64 {
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
