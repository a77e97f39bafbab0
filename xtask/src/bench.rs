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
//! 4. pbxguard and `fail2ban-server` side by side: time to ban and the CPU cost of following
//!    a busy log (the `fail2ban_daemon` example).
//! 5. What one packet costs in the XDP program (`xdp_cost`), and ban propagation and replay
//!    in a NATS JetStream cluster (`cluster_propagation`).
//!
//! With `--json FILE` every figure is also merged into FILE (see `pbxguard_lab::bench_json`;
//! the examples find it in `PBXGUARD_BENCH_JSON`), and with `--plots DIR` charts of it are
//! drawn afterwards (`plots.rs`; docs/benchmarks.md lists the keys).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};
use pbxguard_lab::bench_json;

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

/// Every benchmark in turn with the release `pbxguard` binary. `json`: keep the figures in
/// that file (replaced); `plots`: draw charts of them into that directory afterwards (from
/// `json`, or from a file in the work directory when no `json` was given).
pub fn run(pbxguard: &Path, json: Option<&Path>, plots: Option<&Path>) -> anyhow::Result<()> {
    let work = std::env::temp_dir().join("pbxguard-bench");
    std::fs::create_dir_all(&work)?;
    let json = match (json, plots) {
        (Some(path), _) => Some(std::path::absolute(path)?),
        (None, Some(_)) => Some(work.join("bench.json")),
        (None, None) => None,
    };
    if let Some(path) = &json {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", path.display()));
            }
            _ => {}
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
    }
    let json = json.as_deref();
    matcher(pbxguard, &work, json)?;
    println!();
    example(&["xdp_cost"], json)?;
    println!("\n== time to ban");
    let bin = pbxguard.display().to_string();
    example(&["time_to_ban", "--", &bin], json)?;
    println!("\n== pbxguard and fail2ban-server side by side");
    example(&["fail2ban_daemon", "--", &bin], json)?;
    println!();
    example(&["drop_rate"], json)?;
    println!();
    example(&["cpu_per_packet"], json)?;
    println!("\n== cluster (NATS JetStream)");
    example(&["cluster_propagation", "--", &bin], json)?;
    if let Some(path) = json {
        println!("\nfigures: {}", path.display());
        if let Some(dir) = plots {
            for png in crate::plots::render(path, dir)? {
                println!("plot: {}", png.display());
            }
        }
    }
    Ok(())
}

/// Runs one of pbxguard's examples (the benchmarks) in release mode, telling it where to
/// record its figures when there is a JSON file.
fn example(args: &[&str], json: Option<&Path>) -> anyhow::Result<()> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["run", "--release", "-q", "-p", "pbxguard", "--example"])
        .args(args);
    match json {
        Some(path) => cmd.env(bench_json::ENV, path),
        None => cmd.env_remove(bench_json::ENV),
    };
    crate::run(&mut cmd)
}

/// The count after `word` in `pbxguard test-log`'s `matched:           50025` line.
fn count_after(output: &str, word: &str) -> Option<f64> {
    let line = output.lines().find(|l| l.starts_with(word))?;
    line[word.len()..].split_whitespace().next()?.parse().ok()
}

/// The count before ` matched` in fail2ban-regex's
/// `Lines: 1000000 lines, 0 ignored, 50025 matched, 949975 missed` line.
fn count_before_matched(line: &str) -> Option<f64> {
    line.split(',')
        .find_map(|part| part.trim().strip_suffix(" matched"))?
        .trim()
        .parse()
        .ok()
}

/// Matcher throughput, pbxguard against fail2ban-regex on the same file; the figures go to
/// `json` too when given (`matcher.*`).
pub fn matcher(pbxguard: &Path, work: &Path, json: Option<&Path>) -> anyhow::Result<()> {
    let record = |entries: &[(&str, f64)]| -> anyhow::Result<()> {
        if let Some(path) = json {
            bench_json::record_to(path, entries)
                .with_context(|| format!("recording in {}", path.display()))?;
        }
        Ok(())
    };
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
    record(&[
        ("matcher.lines", LINES as f64),
        ("matcher.attack_lines", attacks as f64),
        ("matcher.pbxguard_lines_per_s", LINES as f64 / ours),
        (
            "matcher.pbxguard_matched",
            count_after(&output, "failures:").unwrap_or(f64::NAN),
        ),
    ])?;
    let matched = output
        .lines()
        .find(|l| l.starts_with("failures:"))
        .unwrap_or("failures: ?")
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
    record(&[
        ("matcher.fail2ban_regex_lines_per_s", LINES as f64 / theirs),
        (
            "matcher.fail2ban_matched",
            count_before_matched(&matched).unwrap_or(f64::NAN),
        ),
    ])?;
    println!("ratio:              {:>12.1}x faster", theirs / ours);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_counts_are_read_from_both_tools() {
        let ours = "lines read:        1000000\nmatched:           50025\ndistinct sources:  9\n";
        assert_eq!(count_after(ours, "matched:"), Some(50025.0));
        let theirs = "Lines: 1000000 lines, 0 ignored, 50025 matched, 949975 missed";
        assert_eq!(count_before_matched(theirs), Some(50025.0));
        assert_eq!(count_before_matched("Lines: ?"), None);
    }
}
