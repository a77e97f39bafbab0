//! Test fixtures: network namespaces joined by a veth pair, and a pbxguard daemon running
//! on the inside one. Everything a test creates is removed when the fixture drops; no test
//! touches the host's own namespace, interfaces or /sys/fs/bpf.
#![allow(dead_code)] // each test binary uses a different part

pub mod frames;
pub mod xdp;

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

pub use pbxguard_lab::*;

/// Runs each named test body (a `fn(backend: &str)`) once per backend, as `xdp::NAME`
/// and `nft::NAME`: the same body, the same assertions.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod xdp {
            $(#[test]
            fn $name() {
                super::$name("xdp")
            })*
        }
        mod nft {
            $(#[test]
            fn $name() {
                super::$name("nft")
            })*
        }
    };
}

/// A phone's REGISTER, sent by sipp (send-only: the listener on the PBX side counts them).
pub const SIPP_REGISTER: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register">
  <send>
    <![CDATA[
      REGISTER sip:[remote_ip] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:100@[remote_ip]>;tag=[call_number]
      To: <sip:100@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:100@[local_ip]:[local_port]>
      User-Agent: Yealink SIP-T46S 66.86.0.15
      Expires: 60
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#;

/// `count` REGISTERs from `from` to the PBX's 5060/udp with sipp (Debian's sip-tester), as a
/// real phone sends them; fails the test if sipp fails. `dir` holds the scenario file.
pub fn sipp_registers(lab: &Lab, dir: &Path, from: std::net::Ipv4Addr, count: usize) {
    let scenario = dir.join("register.xml");
    std::fs::write(&scenario, SIPP_REGISTER).unwrap();
    let sipp = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.outside.name,
            "timeout",
            "30",
            "sipp",
            "-sf",
        ])
        .arg(&scenario)
        .args([
            "-m",
            &count.to_string(),
            "-r",
            "10",
            "-i",
            &from.to_string(),
        ])
        .args(["-p", "5070", "-nostdin", "-timeout", "10s"])
        .arg(format!("{PBX}:5060"))
        .output()
        .expect("sipp (Debian package sip-tester; cargo xtask setup installs it)");
    assert!(
        sipp.status.success(),
        "sipp: {}",
        String::from_utf8_lossy(&sipp.stderr)
    );
}

/// Waits (bounded, 30 s) until `done` holds; on time-out fails with the daemon's status and
/// log.
pub fn wait_until(daemon: &Daemon, what: &str, done: impl FnMut() -> bool) {
    wait_until_within(daemon, what, Duration::from_secs(30), done)
}

/// [`wait_until`] with its own bound (a NATS restart's backoff, say).
pub fn wait_until_within(
    daemon: &Daemon,
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {}\n{}",
            String::from_utf8_lossy(&daemon.cli(&["status", "--json"]).stdout),
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Appends `text` to a followed log, as the PBX would write it.
pub fn append(log: &Path, text: &str) {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// Datagrams each source sends in a delivery check.
pub const N: usize = 20;

/// Sends `N` datagrams from the attacker and from the phone to the PBX; how many arrived
/// from each.
pub fn v4(lab: &Lab) -> Vec<usize> {
    lab.deliveries(
        &[std::net::IpAddr::V4(ATTACKER), std::net::IpAddr::V4(PHONE)],
        std::net::IpAddr::V4(PBX),
        N,
    )
}

/// Counts datagrams arriving on `listener`, by which of `sources` sent them (bounded by
/// the listener's read timeout).
pub fn received_from(listener: &std::net::UdpSocket, sources: &[std::net::IpAddr]) -> Vec<usize> {
    let mut got = vec![0; sources.len()];
    let mut buf = [0u8; 2048];
    while let Ok((_, peer)) = listener.recv_from(&mut buf) {
        if let Some(i) = sources.iter().position(|s| *s == peer.ip()) {
            got[i] += 1;
        }
    }
    got
}

/// The pbxguard binary under test.
pub fn pbxguard_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pbxguard")
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
    netns_name: String,
    log: PathBuf,
    /// A command the daemon runs under (e.g. `capsh --drop=...`).
    pub wrapper: Vec<String>,
    /// A directory put first on the daemon's PATH (e.g. a counting `nft` wrapper).
    pub path_prefix: Option<PathBuf>,
    /// Extra environment for the daemon (e.g. `NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
}

impl Daemon {
    /// Writes a config for `backend` (`xdp`, `nft` or `auto`), plus `extra` TOML lines,
    /// without starting.
    pub fn configure(lab: &Lab, backend: &str, extra: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("pbxguard-test-")
            .tempdir()
            .unwrap();
        let socket = dir.path().join("pbxguard.sock");
        let bpffs = dir.path().join("bpffs");
        let config = dir.path().join("pbxguard.toml");
        let text = format!(
            "[daemon]\nsocket = \"{}\"\nstate_dir = \"{}\"\nbpffs = \"{}\"\n\n[enforce]\nbackend = \"{backend}\"\ninterfaces = [\"{INSIDE_IF}\"]\n\n{extra}\n",
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
            netns_name: lab.inside.name.clone(),
            wrapper: Vec::new(),
            path_prefix: None,
            env: Vec::new(),
        }
    }

    /// Configures and starts, waiting until the control socket answers.
    pub fn start(lab: &Lab, backend: &str, extra: &str) -> Daemon {
        let mut daemon = Daemon::configure(lab, backend, extra);
        daemon.launch(&[]);
        daemon
    }

    /// Creates an empty log `name` in the daemon's directory and puts its path where the
    /// config says `LOG`; returns the path.
    pub fn log_file(&self, name: &str) -> PathBuf {
        let log = self.dir.path().join(name);
        std::fs::write(&log, "").unwrap();
        let text = std::fs::read_to_string(&self.config)
            .unwrap()
            .replace("LOG", log.to_str().unwrap());
        std::fs::write(&self.config, text).unwrap();
        log
    }

    /// Starts the daemon process (network namespace only, so bpffs pins stay visible).
    pub fn launch(&mut self, args: &[&str]) {
        assert!(self.child.is_none(), "already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new("nsenter");
        command.arg(format!("--net={}", self.netns.display()));
        let run = format!(
            "exec {} run --config {} {}",
            pbxguard_bin(),
            self.config.display(),
            args.join(" ")
        );
        if self.wrapper.is_empty() {
            command
                .arg(pbxguard_bin())
                .args(["run", "--config"])
                .arg(&self.config)
                .args(args);
        } else {
            command.args(&self.wrapper).args(["--", "-c", &run]);
        }
        if let Some(prefix) = &self.path_prefix {
            let path = std::env::var("PATH").unwrap_or_default();
            command.env("PATH", format!("{}:{path}", prefix.display()));
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = command
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

    /// Runs the CLI inside the daemon's network namespace (for commands that change
    /// nftables, which must never touch the host's own namespace).
    pub fn cli_inside(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.netns.display()))
            .arg(pbxguard_bin())
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

    /// Waits (bounded) until `net` is in `bans list`; returns its JSON.
    pub fn wait_for_ban(&self, net: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list = self.json(&["bans", "list"]);
            if let Some(ban) = list.as_array().unwrap().iter().find(|b| b["net"] == net) {
                return ban.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{net} never banned; bans: {list}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
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

    /// The state a reboot leaves for a stopped daemon: no pins, no nftables table (the
    /// journal stays).
    pub fn reboot_state(&mut self) {
        unmount(&self.bpffs);
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns_name,
                "nft",
                "delete",
                "table",
                "inet",
                "pbxguard",
            ])
            .output();
    }

    /// Simulates a reboot: the daemon dies and bpffs (pins, maps, links) is gone.
    pub fn reboot(&mut self) {
        self.kill9();
        self.reboot_state();
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
        // Every daemon test ends with the ledger invariant checked.
        if !std::thread::panicking() && self.running() {
            self.check_ledger();
        }
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

/// Appends entries for `unit` to a journal file in `dir` (via systemd-journal-remote), as
/// journald would write them.
pub fn journal_append(dir: &Path, unit: &str, messages: &[&str]) {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let mut export = String::new();
    for message in messages {
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros();
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={now}\n__MONOTONIC_TIMESTAMP={seq}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n\
             _SYSTEMD_UNIT={unit}\nSYSLOG_IDENTIFIER=sshd\n_HOSTNAME=pbx\nMESSAGE={message}\n\n"
        ));
    }
    let input = dir.join(format!(
        "batch-{}.export",
        SEQ.load(std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&input, export).unwrap();
    let status = Command::new("/lib/systemd/systemd-journal-remote")
        .arg(format!("--output={}", dir.join("remote.journal").display()))
        .arg(&input)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("systemd-journal-remote (cargo xtask setup installs it)");
    assert!(status.success());
    std::fs::remove_file(input).unwrap();
}

/// Writes a MaxMind country database with `networks` (CIDR, ISO code) to `path`, using
/// Debian's MaxMind::DB::Writer (package libmaxmind-db-writer-perl; setup installs it).
pub fn write_mmdb(path: &Path, networks: &[(&str, &str)]) {
    let mut script = String::from(
        "use MaxMind::DB::Writer::Tree;\n\
         my %types = (country => 'map', iso_code => 'utf8_string', names => 'map', en => 'utf8_string');\n\
         my $tree = MaxMind::DB::Writer::Tree->new(ip_version => 6, record_size => 24,\n\
           database_type => 'GeoLite2-Country', languages => ['en'], description => { en => 'pbxguard test' },\n\
           alias_ipv6_to_ipv4 => 1, remove_reserved_networks => 0, map_key_type_callback => sub { $types{ $_[0] } });\n",
    );
    for (net, cc) in networks {
        script.push_str(&format!("$tree->insert_network('{net}', {{ country => {{ iso_code => '{cc}', names => {{ en => '{cc}' }} }} }});\n"));
    }
    // Write beside and rename, as geoipupdate does.
    let tmp = path.with_extension("tmp");
    script.push_str(&format!(
        "open my $fh, '>:raw', '{}' or die; $tree->write_tree($fh); close $fh;\n",
        tmp.display()
    ));
    let out = Command::new("perl")
        .arg("-e")
        .arg(&script)
        .output()
        .expect("perl");
    assert!(
        out.status.success(),
        "mmdb writer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, path).unwrap();
}

/// Networks whose ban ends within this margin of a check are left out of it: the sweep
/// (every second) and nftables' own timeouts may be mid-way.
const EXPIRY_MARGIN: Duration = Duration::from_secs(3);

impl Daemon {
    /// The ledger invariant: journal == kernel (XDP maps or nft sets) == `bans list`.
    /// Retries briefly while an expiry sweep may be in flight; panics with the difference.
    pub fn check_ledger(&self) {
        let mut last = String::new();
        for _ in 0..20 {
            match self.ledger_difference() {
                None => return,
                Some(difference) => last = difference,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("ledger invariant broken: {last}\n{}", self.log_text());
    }

    /// What differs between journal, kernel and `bans list`, if anything.
    pub fn ledger_difference(&self) -> Option<String> {
        use std::collections::BTreeSet;

        use pbxguard::enforce::overlap::{BanTable, Range};
        let now = std::time::SystemTime::now();
        let settled = |expires: Option<std::time::SystemTime>| {
            expires.is_none_or(|t| t > now + EXPIRY_MARGIN)
        };
        let replayed = pbxguard::store::journal::read(&self.journal()).unwrap();
        let journal: Vec<_> = replayed
            .bans
            .values()
            .filter(|b| !b.is_expired(now))
            .collect();
        let unsettled: BTreeSet<ipnet::IpNet> = journal
            .iter()
            .filter(|b| !settled(b.expires))
            .map(|b| b.net)
            .collect();
        let journal_nets: BTreeSet<ipnet::IpNet> = journal
            .iter()
            .map(|b| b.net)
            .filter(|n| !unsettled.contains(n))
            .collect();
        let listed: BTreeSet<ipnet::IpNet> = self
            .json(&["bans", "list"])
            .as_array()
            .unwrap()
            .iter()
            .map(|b| pbxguard::units::parse_net(b["net"].as_str().unwrap()).unwrap())
            .filter(|n| !unsettled.contains(n))
            .filter(|n| {
                // Listed but already ended: the sweep has not run yet.
                replayed.bans.get(n).is_none_or(|b| !b.is_expired(now))
            })
            .collect();
        if listed != journal_nets {
            return Some(format!(
                "bans list vs journal: list only {:?}, journal only {:?}",
                listed.difference(&journal_nets).collect::<Vec<_>>(),
                journal_nets.difference(&listed).collect::<Vec<_>>()
            ));
        }
        let backend = self.json(&["status"])["backend"]
            .as_str()
            .unwrap()
            .to_string();
        if backend == "xdp" {
            let kernel: BTreeSet<ipnet::IpNet> =
                pbxguard::enforce::program::pinned_bans(&self.bpffs)
                    .unwrap()
                    .into_iter()
                    .map(|(n, _)| n)
                    .filter(|n| !unsettled.contains(n))
                    .filter(|n| replayed.bans.get(n).is_none_or(|b| !b.is_expired(now)))
                    .collect();
            if kernel != journal_nets {
                return Some(format!(
                    "XDP maps vs journal: maps only {:?}, journal only {:?}",
                    kernel.difference(&journal_nets).collect::<Vec<_>>(),
                    journal_nets.difference(&kernel).collect::<Vec<_>>()
                ));
            }
        } else if unsettled.is_empty() {
            // nft holds disjoint ranges; they must be exactly what the journal's bans give.
            let mut table = BanTable::default();
            for b in &journal {
                table.insert(b.net, b.expires);
            }
            let want: BTreeSet<Range> = table.ranges().into_keys().collect();
            let mut held = BTreeSet::new();
            for set in ["ban4", "ban6"] {
                let out = Command::new("nsenter")
                    .arg(format!("--net={}", self.netns.display()))
                    .args(["nft", "-j", "list", "set", "inet", "pbxguard", set])
                    .output()
                    .unwrap();
                let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                for elem in value["nftables"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|o| o["set"]["elem"].as_array())
                    .flatten()
                {
                    held.insert(pbxguard::enforce::nft::parse_held(elem).unwrap().0);
                }
            }
            if held != want {
                return Some(format!(
                    "nft sets vs journal: sets only {:?}, journal only {:?}",
                    held.difference(&want).collect::<Vec<_>>(),
                    want.difference(&held).collect::<Vec<_>>()
                ));
            }
        }
        None
    }

    /// Whether the daemon process is still running (it may have exited on its own).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Waits for the daemon to exit on its own; its exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("daemon did not exit:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
