//! `pbxguard test-log`: runs filters over a log file without a daemon, like `fail2ban-regex`,
//! so an admin can see what would be detected before enabling a source.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::{Read as _, Write as _},
    path::Path,
    sync::Arc,
    time::Instant,
};

use crate::{
    config::Config,
    detect::{FilterSpec, Matcher, Scratch, filters},
    source::lines::LineSplitter,
};

/// Counts of one run.
#[derive(Debug, Default)]
pub struct Summary {
    /// Lines read.
    pub lines: u64,
    /// Lines that matched.
    pub matched: u64,
    /// Of those, failure lines (what fail2ban counts); the rest are success lines.
    pub failures: u64,
    /// Matches per (filter, rule).
    pub by_rule: BTreeMap<(String, String), u64>,
    /// Distinct source addresses.
    pub sources: usize,
    /// Seconds spent reading and matching.
    pub seconds: f64,
}

/// The filters to run: the named ones (built-in or from the config), or every built-in
/// filter (opt-in ones included: this only reports, it bans nothing) and every configured
/// one when none is named.
pub fn select(config: Option<&Config>, names: &[String]) -> Result<Vec<FilterSpec>, String> {
    let own = config.map(|c| c.filter.as_slice()).unwrap_or_default();
    if names.is_empty() {
        let mut all = filters::builtin();
        all.extend(own.iter().cloned());
        return Ok(all);
    }
    names
        .iter()
        .map(|name| {
            own.iter()
                .find(|f| f.name == *name)
                .cloned()
                .or_else(|| filters::named(name))
                .ok_or_else(|| {
                    format!(
                        "no filter called `{name}`; known: {}",
                        filters::known_names(own.iter().map(|f| f.name.as_str()))
                    )
                })
        })
        .collect()
}

/// Per-line work of [`run`].
struct Collector<'a> {
    matcher: Matcher,
    scratch: Scratch,
    summary: Summary,
    sources: HashSet<std::net::IpAddr>,
    /// Matches per (filter, rule), keyed by the matcher's own names (no copy per line).
    by_rule: HashMap<(Arc<str>, Arc<str>), u64>,
    json_out: Option<&'a mut dyn std::io::Write>,
    failure: Option<String>,
}

impl Collector<'_> {
    fn line(&mut self, number: u64, line: &[u8]) {
        let Some(hit) = self.matcher.find_with(line, &mut self.scratch) else {
            return;
        };
        self.summary.matched += 1;
        if hit.kind == crate::detect::Kind::Failure {
            self.summary.failures += 1;
        }
        self.sources.insert(hit.ip);
        *self
            .by_rule
            .entry((hit.filter.clone(), hit.rule.clone()))
            .or_default() += 1;
        if let Some(out) = self.json_out.as_mut() {
            let object = serde_json::json!({
                "line": number,
                "ip": hit.ip.to_string(),
                "filter": &*hit.filter,
                "rule": &*hit.rule,
            });
            if let Err(e) = writeln!(out, "{object}") {
                self.failure.get_or_insert(e.to_string());
            }
        }
    }
}

/// Runs `filters` over `file`; with `json_out`, writes one JSON object per matching line.
pub fn run(
    file: &Path,
    filters: &[FilterSpec],
    json_out: Option<&mut dyn std::io::Write>,
) -> Result<Summary, String> {
    let matcher = Matcher::new(filters).map_err(|e| e.to_string())?;
    let mut handle = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut collector = Collector {
        matcher,
        scratch: Scratch::default(),
        summary: Summary::default(),
        sources: HashSet::new(),
        by_rule: HashMap::new(),
        json_out,
        failure: None,
    };
    // Big reads split in place by the splitter the daemon uses (lines over 64 KiB are
    // dropped whole but keep their numbers).
    let mut buf = vec![0u8; 1 << 20];
    let mut splitter = LineSplitter::default();
    let started = Instant::now();
    loop {
        let n = match handle.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        splitter.feed_numbered(&buf[..n], &mut |number, line| collector.line(number, line));
        if let Some(e) = collector.failure.take() {
            return Err(e);
        }
    }
    splitter.finish(&mut |number, line| collector.line(number, line));
    if let Some(e) = collector.failure.take() {
        return Err(e);
    }
    let mut summary = collector.summary;
    summary.lines = splitter.completed();
    summary.seconds = started.elapsed().as_secs_f64();
    summary.sources = collector.sources.len();
    summary.by_rule = collector
        .by_rule
        .into_iter()
        .map(|((filter, rule), count)| ((filter.to_string(), rule.to_string()), count))
        .collect();
    Ok(summary)
}

/// The human summary.
pub fn render(summary: &Summary) -> String {
    let rate = if summary.seconds > 0.0 {
        summary.lines as f64 / summary.seconds
    } else {
        0.0
    };
    let mut out = format!(
        "lines read:        {}\nmatched:           {}\nfailures:          {} (the rest are success lines)\ndistinct sources:  {}\nspeed:             {:.0} lines/s ({:.3} s)\n",
        summary.lines, summary.matched, summary.failures, summary.sources, rate, summary.seconds
    );
    if !summary.by_rule.is_empty() {
        let width = summary
            .by_rule
            .keys()
            .map(|(f, r)| f.len() + r.len() + 1)
            .max()
            .unwrap_or(0)
            .max(11);
        out.push_str(&format!("\n{:<width$}  MATCHES\n", "FILTER/RULE"));
        for ((filter, rule), count) in &summary.by_rule {
            out.push_str(&format!(
                "{:<width$}  {count}\n",
                format!("{filter}/{rule}")
            ));
        }
    }
    out
}
