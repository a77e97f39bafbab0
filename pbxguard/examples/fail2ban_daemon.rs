//! Benchmark (run by `cargo xtask bench`): pbxguard and Debian's `fail2ban-server` side by
//! side, each the real daemon in the same kind of namespace lab. Prints numbers; asserts
//! nothing. Needs root and Debian's `fail2ban` (with `python3-pyinotify`; `cargo xtask bench`
//! installs both).
//!
//! 1. Time to ban: the same chan_sip "Wrong password" line for N distinct sources, appended
//!    one at a time, from the write to the source being dropped: for pbxguard the entry in
//!    the pinned XDP ban map (`BAN_EXACT_V4`), for fail2ban the address in its nftables
//!    set `addr-set-asterisk-udp` (stock `asterisk` jail, `nftables-multiport`, `blocktype =
//!    drop`), polled with `nft list set` inside the lab (a few ms per look, so fail2ban's
//!    figures are rounded up by up to that much).
//! 2. Following cost: CPU seconds (utime + stime + children, `/proc/PID/stat`) each daemon
//!    alone spends while benign Asterisk lines are appended at a steady rate, one `write()`
//!    per line, until it has gone quiet again.
//!
//! Usage: fail2ban_daemon PBXGUARD_BINARY [BANS] [LINES] [LINES_PER_SECOND] [--pbxguard-only]
//! (`--help` lists them)
//! (`--pbxguard-only`: skip fail2ban, to compare pbxguard builds quickly).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aya::maps::{HashMap, LpmTrie, Map, MapData, lpm_trie::Key};
use pbxguard_common::BanEntry;
use pbxguard_lab::{INSIDE_IF, Lab};

/// The fail2ban backend of the time-to-ban run (the one that reacts to appends, as
/// pbxguard does); the following cost is measured with `polling` too.
const F2B_BACKEND: &str = "pyinotify";

/// A source for ban `i`; 198.18.0.0/15 is reserved for benchmarks.
fn source(i: usize) -> [u8; 4] {
    [198, 18 + (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

/// Asterisk's timestamp now: fail2ban ignores lines older than `findtime`.
fn stamp() -> String {
    chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The chan_sip failure line both daemons' `asterisk` filters match.
fn attack_line(ip: [u8; 4]) -> String {
    format!(
        "[{}] NOTICE[1234] chan_sip.c: Registration from '\"100\" <sip:100@192.0.2.1>' failed for '{}.{}.{}.{}:5060' - Wrong password\n",
        stamp(),
        ip[0],
        ip[1],
        ip[2],
        ip[3]
    )
}

/// CPU seconds of process `pid` and its waited-for children (utime, stime, cutime, cstime).
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may hold spaces, in parentheses.
    let rest = &stat[stat.rfind(')').ok_or_else(|| anyhow::anyhow!("bad stat"))? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime is field 14 of stat(5), i.e. index 11 after the state (field 3).
    let ticks: u64 = fields[11..15]
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<_, _>>()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / hz)
}

/// Appends `lines` benign Asterisk lines at `rate` lines/s, one `write()` each, then waits
/// until `pid` has used under 10 ms of CPU in a second; returns the CPU seconds used from the
/// first line on.
fn follow_cost(log: &Path, pid: u32, lines: usize, rate: u64) -> anyhow::Result<f64> {
    // Accurate pacing sleeps (the default 50 µs slack would bunch the writes).
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1) };
    let mut file = std::fs::OpenOptions::new().append(true).open(log)?;
    let before = cpu_seconds(pid)?;
    let started = Instant::now();
    let mut ts = stamp();
    for i in 0..lines {
        let due = started + Duration::from_nanos(i as u64 * 1_000_000_000 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if i % 1000 == 0 {
            ts = stamp();
        }
        let line = format!(
            "[{ts}] VERBOSE[{}][C-{:08x}] pbx.c:     -- Executing [{}@from-internal:1] Dial(\"PJSIP/2{:02}-{:08x}\", \"PJSIP/{},30,tT\") in new stack\n",
            2000 + i % 97,
            i / 7,
            100 + i % 50,
            i % 100,
            i,
            100 + i % 50
        );
        file.write_all(line.as_bytes())?;
    }
    let written = started.elapsed();
    anyhow::ensure!(
        written.as_secs_f64() < lines as f64 / rate as f64 * 1.1 + 1.0,
        "the writer fell behind: {lines} lines took {written:?}"
    );
    let mut last = cpu_seconds(pid)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = cpu_seconds(pid)?;
        if now - last < 0.01 || Instant::now() > deadline {
            return Ok(now - before);
        }
        last = now;
    }
}

/// Waits for `cond` up to `limit`, checking every `every`.
fn wait_for(
    limit: Duration,
    every: Duration,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while !cond() {
        anyhow::ensure!(started.elapsed() < limit, "timed out after {limit:?}");
        std::thread::sleep(every);
    }
    Ok(started.elapsed())
}

/// A daemon process that is stopped (SIGTERM, then SIGKILL after 10 s) and reaped when
/// dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// pbxguard: time to ban over `bans` sources, then the cost of following `lines` lines.
fn pbxguard(
    lab: &Lab,
    dir: &Path,
    binary: &str,
    bans: usize,
    lines: usize,
    rate: u64,
) -> anyhow::Result<(Vec<Duration>, f64)> {
    let log = dir.join("pbxguard.log");
    std::fs::write(&log, "")?;
    let bpffs = dir.join("bpffs");
    let sock = dir.join("sock");
    let config = dir.join("pbxguard.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nsocket = \"{}\"\nstate_dir = \"{}\"\nbpffs = \"{}\"\n[enforce]\ninterfaces = [\"{INSIDE_IF}\"]\n\
             [policy]\nmaxretry = 1\n[[source]]\npath = \"{}\"\nfilters = [\"asterisk\"]\n",
            sock.display(),
            dir.join("state").display(),
            bpffs.display(),
            log.display()
        ),
    )?;
    let daemon = Running(
        Command::new("nsenter")
            .arg(format!("--net={}", lab.inside.path().display()))
            .arg(binary)
            .args(["run", "--config"])
            .arg(&config)
            .env("PBXGUARD_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?,
    );
    let result = (|| {
        wait_for(Duration::from_secs(30), Duration::from_millis(20), || {
            sock.exists()
        })?;
        // A single address is banned in the exact-match hash map the program checks first;
        // daemons older than that map put it in the LPM trie.
        let maps = bpffs.join("maps");
        let exact = maps.join(pbxguard_common::maps::BAN_EXACT_V4);
        let banned: Box<dyn Fn([u8; 4]) -> bool> = if exact.exists() {
            let map: HashMap<_, [u8; 4], BanEntry> =
                HashMap::try_from(Map::HashMap(MapData::from_pin(&exact)?))?;
            Box::new(move |ip| map.get(&ip, 0).is_ok())
        } else {
            let pin = maps.join(pbxguard_common::maps::BAN_V4);
            let trie: LpmTrie<_, [u8; 4], BanEntry> =
                LpmTrie::try_from(Map::LpmTrie(MapData::from_pin(&pin)?))?;
            Box::new(move |ip| trie.get(&Key::new(32, ip), 0).is_ok())
        };
        let mut file = std::fs::OpenOptions::new().append(true).open(&log)?;
        let mut samples = Vec::with_capacity(bans);
        for i in 0..bans {
            let ip = source(i);
            let line = attack_line(ip);
            let started = Instant::now();
            file.write_all(line.as_bytes())?;
            while !banned(ip) {
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(10),
                    "pbxguard: ban {i} never reached the map"
                );
                std::thread::sleep(Duration::from_micros(20));
            }
            samples.push(started.elapsed());
        }
        let cpu = follow_cost(&log, daemon.0.id(), lines, rate)?;
        Ok((samples, cpu))
    })();
    drop(daemon);
    let _ = nix::mount::umount2(&bpffs, nix::mount::MntFlags::MNT_DETACH);
    result
}

/// A private fail2ban configuration: Debian's files, no Debian jail.d defaults, the stock
/// `asterisk` jail on `log` with `backend`, in-memory database, drop instead of reject.
fn fail2ban_config(dir: &Path, log: &Path, backend: &str) -> anyhow::Result<PathBuf> {
    let conf = dir.join(format!("fail2ban-{backend}"));
    let status = Command::new("cp")
        .arg("-a")
        .arg("/etc/fail2ban")
        .arg(&conf)
        .status()?;
    anyhow::ensure!(status.success(), "copying /etc/fail2ban failed");
    for sub in ["jail.d", "fail2ban.d"] {
        let sub = conf.join(sub);
        let _ = std::fs::remove_dir_all(&sub);
        std::fs::create_dir(&sub)?;
    }
    std::fs::write(
        conf.join("fail2ban.local"),
        "[Definition]\nloglevel = WARNING\nallowipv6 = auto\ndbfile = :memory:\n",
    )?;
    std::fs::write(
        conf.join("action.d/nftables-common.local"),
        "[Init]\nblocktype = drop\n",
    )?;
    std::fs::write(
        conf.join("jail.local"),
        format!(
            "[DEFAULT]\nbanaction = nftables-multiport\nbanaction_allports = nftables-allports\n\n\
             [asterisk]\nenabled = true\nbackend = {backend}\nlogpath = {}\n\
             maxretry = 1\nfindtime = 10m\nbantime = 1h\n",
            log.display()
        ),
    )?;
    Ok(conf)
}

/// Starts `fail2ban-server` in the lab's inside namespace (its nft rules live there) and
/// waits until its jail answers; returns the process and the server's pid.
fn start_fail2ban(
    lab: &Lab,
    dir: &Path,
    log: &Path,
    backend: &str,
) -> anyhow::Result<(Running, u32)> {
    let conf = fail2ban_config(dir, log, backend)?;
    let sock = dir.join(format!("f2b-{backend}.sock"));
    let pidfile = dir.join(format!("f2b-{backend}.pid"));
    let server = Running(
        Command::new("nsenter")
            .arg(format!("--net={}", lab.inside.path().display()))
            .arg("fail2ban-server")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&sock)
            .arg("-p")
            .arg(&pidfile)
            .arg(format!(
                "--logtarget={}",
                dir.join(format!("f2b-{backend}.log")).display()
            ))
            .args(["-f", "-x"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let up = wait_for(Duration::from_secs(60), Duration::from_millis(100), || {
        Command::new("fail2ban-client")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&sock)
            .args(["status", "asterisk"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    up.map_err(|e| anyhow::anyhow!("fail2ban-server ({backend}) did not start: {e}"))?;
    let pid: u32 = std::fs::read_to_string(&pidfile)?.trim().parse()?;
    Ok((server, pid))
}

/// The addresses in fail2ban's UDP set inside the lab (none before its first ban).
fn fail2ban_banned(lab: &Lab) -> Vec<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", lab.inside.path().display()))
        .args([
            "nft",
            "list",
            "set",
            "inet",
            "f2b-table",
            "addr-set-asterisk-udp",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|t| t.matches('.').count() == 3)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// fail2ban with `backend`: time to ban over `bans` sources (none if 0), then the cost of
/// following `lines` lines.
fn fail2ban(
    lab: &Lab,
    dir: &Path,
    backend: &str,
    bans: usize,
    lines: usize,
    rate: u64,
) -> anyhow::Result<(Vec<Duration>, f64)> {
    let log = dir.join(format!("fail2ban-{backend}.log"));
    std::fs::write(&log, "")?;
    let (server, pid) = start_fail2ban(lab, dir, &log, backend)?;
    let mut file = std::fs::OpenOptions::new().append(true).open(&log)?;
    let mut samples = Vec::with_capacity(bans);
    for i in 0..bans {
        let ip = source(i);
        let addr = format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]);
        let line = attack_line(ip);
        let started = Instant::now();
        file.write_all(line.as_bytes())?;
        wait_for(Duration::from_secs(30), Duration::ZERO, || {
            fail2ban_banned(lab).contains(&addr)
        })
        .map_err(|e| anyhow::anyhow!("fail2ban: ban {i} never reached nftables: {e}"))?;
        samples.push(started.elapsed());
    }
    let cpu = follow_cost(&log, pid, lines, rate)?;
    // SIGTERM: it stops its jail and removes its nftables table.
    drop(server);
    Ok((samples, cpu))
}

/// pbxguard and fail2ban-server side by side.
#[derive(clap::Parser)]
struct Args {
    /// The pbxguard binary to run as the daemon.
    binary: String,
    /// How many bans to time.
    #[arg(default_value_t = 200)]
    bans: usize,
    /// How many benign lines to follow.
    #[arg(default_value_t = 200_000)]
    lines: usize,
    /// Lines written per second.
    #[arg(default_value_t = 20_000)]
    rate: u64,
    /// Skip fail2ban, to compare pbxguard builds quickly.
    #[arg(long)]
    pbxguard_only: bool,
}

fn main() -> anyhow::Result<()> {
    let Args {
        binary,
        bans,
        lines,
        rate,
        pbxguard_only,
    } = clap::Parser::parse();

    let lab = Lab::named("pbxg-f2b");
    let dir = tempfile::Builder::new().prefix("pbxguard-f2b-").tempdir()?;
    let (pbx_samples, pbx_cpu) = pbxguard(&lab, dir.path(), &binary, bans, lines, rate)?;
    if pbxguard_only {
        let (p50, p99, max) = pbxguard_lab::percentiles_ms(pbx_samples);
        println!(
            "time to ban ({bans} bans, line appended -> dropped): pbxguard p50 {p50:.2} ms p99 {p99:.2} ms max {max:.2} ms"
        );
        println!("following {lines} lines at {rate} lines/s: pbxguard {pbx_cpu:.2} CPU-s");
        return Ok(());
    }
    let (f2b_samples, f2b_cpu) = fail2ban(&lab, dir.path(), F2B_BACKEND, bans, lines, rate)?;
    let (_, f2b_polling_cpu) = fail2ban(&lab, dir.path(), "polling", 0, lines, rate)?;

    let (p50, p99, _) = pbxguard_lab::percentiles_ms(pbx_samples);
    let (f50, f99, _) = pbxguard_lab::percentiles_ms(f2b_samples);
    println!(
        "time to ban ({bans} bans, line appended -> dropped): pbxguard p50 {p50:.2} ms p99 {p99:.2} ms; \
         fail2ban p50 {f50:.1} ms p99 {f99:.1} ms (backend {F2B_BACKEND})"
    );
    println!(
        "  dropped = pbxguard: entry in the pinned XDP ban map; fail2ban: address in nft set \
         inet f2b-table addr-set-asterisk-udp (polled with `nft list set`, a few ms per look)"
    );
    println!(
        "following {lines} lines at {rate} lines/s: pbxguard {pbx_cpu:.2} CPU-s, fail2ban {f2b_cpu:.2} CPU-s (backend {F2B_BACKEND}), \
         fail2ban {f2b_polling_cpu:.2} CPU-s (backend polling)"
    );
    println!(
        "  method: one write() per line from the bench process, each daemon alone; \
         utime+stime+cutime+cstime from /proc/PID/stat, from the first line until the daemon \
         used < 10 ms in a second"
    );
    pbxguard_lab::bench_json::record_all(&[
        ("time_to_ban_ms.pbxguard.p50", p50),
        ("time_to_ban_ms.pbxguard.p99", p99),
        ("time_to_ban_ms.fail2ban.p50", f50),
        ("time_to_ban_ms.fail2ban.p99", f99),
        ("follow_cpu_s.pbxguard", pbx_cpu),
        ("follow_cpu_s.fail2ban", f2b_cpu),
    ]);
    Ok(())
}
