//! `cargo xtask bench`: programs that print numbers, never pass/fail.
//!
//! 1. Matcher throughput: a 1,000,000-line Asterisk `full` log (5 % attack lines) through
//!    `pbxguard test-log --filter asterisk` and, in the same run, through `fail2ban-regex`
//!    with fail2ban's own `asterisk.conf`.
//! 2. Time to ban: from a failure line appended to a followed log to the ban being in the
//!    XDP map, p50/p99 over 1,000 bans (the `time_to_ban` example, in a namespace lab).
//! 3. Drop rate of the XDP and nftables backends under a trafgen flood, with 1 and 100,000
//!    bans, and the cost of adding 100,000 bans; then the XDP perimeter rules with a real geo
//!    set from the GeoLite2-City that `setup` installs (the `drop_rate` example).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

/// Lines in the generated log.
pub const LINES: usize = 1_000_000;

/// Tiny deterministic PRNG (xorshift64*), so every run benchmarks the same file.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes a realistic Asterisk `full` log: 95 % ordinary call and registration traffic,
/// 5 % brute force, scans and dial attempts in the formats Asterisk 13-20 write.
pub fn generate_asterisk_log(path: &Path, lines: usize) -> anyhow::Result<u64> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut attacks = 0;
    for i in 0..lines {
        let (h, m, s) = ((i / 3600) % 24, (i / 60) % 60, i % 60);
        let ts = format!("[2026-11-26 {h:02}:{m:02}:{s:02}]");
        let pid = 2000 + rng.below(50);
        let call = rng.below(0xffff);
        let ext = 100 + rng.below(60);
        let attacker = format!("203.0.{}.{}", rng.below(256), 1 + rng.below(254));
        if rng.below(100) < 5 {
            attacks += 1;
            match rng.below(4) {
                0 => writeln!(
                    out,
                    "{ts} NOTICE[{pid}] chan_sip.c: Registration from '\"{ext}\" <sip:{ext}@192.0.2.1>' failed for '{attacker}:5060' - Wrong password"
                )?,
                1 => writeln!(
                    out,
                    "{ts} NOTICE[{pid}] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '<sip:{ext}@192.0.2.1>' failed for '{attacker}:5060' (callid: {call:x}-{pid}) - No matching endpoint found"
                )?,
                2 => writeln!(
                    out,
                    "{ts} NOTICE[{pid}][C-{call:08x}] chan_sip.c: Call from '' ({attacker}:5060) to extension '00972{ext}5551234' rejected because extension not found in context 'default'."
                )?,
                _ => writeln!(
                    out,
                    "{ts} NOTICE[{pid}] chan_sip.c: Registration from '\"{ext}\" <sip:{ext}@192.0.2.1>' failed for '{attacker}:5060' - No matching peer found"
                )?,
            }
        } else {
            match rng.below(6) {
                0 => writeln!(
                    out,
                    "{ts} VERBOSE[{pid}][C-{call:08x}] pbx.c:     -- Executing [{ext}@from-internal:1] Dial(\"PJSIP/{ext}-{call:08x}\", \"PJSIP/{},30,tT\") in new stack",
                    ext + 1
                )?,
                1 => writeln!(
                    out,
                    "{ts} VERBOSE[{pid}] res_pjsip_registrar.c: Added contact 'sip:{ext}@192.168.1.{}:5060;ob' to AOR '{ext}' with expiration of 60 seconds",
                    rng.below(250)
                )?,
                2 => writeln!(
                    out,
                    "{ts} VERBOSE[{pid}][C-{call:08x}] app_dial.c:     -- PJSIP/{ext}-{call:08x} is ringing"
                )?,
                3 => writeln!(
                    out,
                    "{ts} VERBOSE[{pid}][C-{call:08x}] bridge_channel.c:     -- Channel PJSIP/{ext}-{call:08x} joined 'simple_bridge' basic-bridge <{call:x}>"
                )?,
                4 => writeln!(
                    out,
                    "{ts} DEBUG[{pid}][C-{call:08x}] res_rtp_asterisk.c: Setting RTP source address to 192.168.1.{}:{}",
                    rng.below(250),
                    10000 + rng.below(10000)
                )?,
                _ => writeln!(
                    out,
                    "{ts} VERBOSE[{pid}] res_pjsip/pjsip_configuration.c: Endpoint {ext} is now Reachable"
                )?,
            }
        }
    }
    out.flush()?;
    Ok(attacks)
}

fn timed(cmd: &mut Command) -> anyhow::Result<(f64, String)> {
    let started = Instant::now();
    let out = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((
        seconds,
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// Matcher throughput, pbxguard against fail2ban-regex on the same file.
pub fn matcher(pbxguard: &Path, work: &Path) -> anyhow::Result<()> {
    let log = work.join("asterisk-full.log");
    let attacks = generate_asterisk_log(&log, LINES)?;
    println!(
        "== matcher throughput: {LINES} Asterisk lines, {attacks} attack lines ({:.1} %)",
        attacks as f64 * 100.0 / LINES as f64
    );
    // pbxguard is single-threaded here: one core. Median of three runs (a run is short, so
    // one scheduler hiccup would otherwise decide the figure).
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(timed(
            Command::new(pbxguard)
                .args(["test-log", "--filter", "asterisk"])
                .arg(&log),
        )?);
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (ours, output) = runs.swap_remove(1);
    let matched = output
        .lines()
        .find(|l| l.starts_with("matched:"))
        .unwrap_or("matched: ?")
        .to_string();
    println!(
        "pbxguard test-log:  {:>12.0} lines/s  ({ours:.2} s, {matched})",
        LINES as f64 / ours
    );
    let filter = PathBuf::from("/etc/fail2ban/filter.d/asterisk.conf");
    if !filter.exists() {
        println!("fail2ban-regex:     not installed (apt-get install fail2ban) - no comparison");
        return Ok(());
    }
    let (theirs, output) = timed(Command::new("fail2ban-regex").arg(&log).arg(&filter))?;
    let matched = output
        .lines()
        .find(|l| l.starts_with("Lines:"))
        .unwrap_or("Lines: ?")
        .trim()
        .to_string();
    println!(
        "fail2ban-regex:     {:>12.0} lines/s  ({theirs:.2} s, {matched})",
        LINES as f64 / theirs
    );
    println!("ratio:              {:>12.1}x faster", theirs / ours);
    Ok(())
}
