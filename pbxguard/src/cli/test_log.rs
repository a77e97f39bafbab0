//! `pbxguard test-log`: runs filters over a log file without a daemon, like `fail2ban-regex`,
//! so an admin can see what would be detected before enabling a source.

use std::{
    collections::{BTreeMap, HashSet},
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    time::Instant,
};

use crate::{
    config::Config,
    detect::{FilterSpec, Matcher, filters},
};

/// Counts of one run.
#[derive(Debug, Default)]
pub struct Summary {
    /// Lines read.
    pub lines: u64,
    /// Lines that matched.
    pub matched: u64,
    /// Matches per (filter, rule).
    pub by_rule: BTreeMap<(String, String), u64>,
    /// Distinct source addresses.
    pub sources: usize,
    /// Seconds spent reading and matching.
    pub seconds: f64,
}

/// The filters to run: the named ones (built-in or from the config), or every built-in and
/// configured filter when none is named.
pub fn select(config: Option<&Config>, names: &[String]) -> Result<Vec<FilterSpec>, String> {
    let lookup = |name: &str| {
        config
            .and_then(|c| c.filter_spec(name))
            .or_else(|| filters::named(name))
    };
    if names.is_empty() {
        let mut all = filters::builtin();
        all.extend(config.map(|c| c.filter.clone()).unwrap_or_default());
        return Ok(all);
    }
    names
        .iter()
        .map(|name| {
            lookup(name).ok_or_else(|| {
                let mut known: Vec<String> = filters::NAMES.iter().map(|s| s.to_string()).collect();
                known.extend(
                    config
                        .map(|c| c.filter.iter().map(|f| f.name.clone()).collect::<Vec<_>>())
                        .unwrap_or_default(),
                );
                format!("no filter called `{name}`; known: {}", known.join(", "))
            })
        })
        .collect()
}

/// Runs `filters` over `file`; with `json_out`, writes one JSON object per matching line.
pub fn run(
    file: &Path,
    filters: &[FilterSpec],
    mut json_out: Option<&mut dyn std::io::Write>,
) -> Result<Summary, String> {
    let matcher = Matcher::new(filters).map_err(|e| e.to_string())?;
    let handle = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, handle);
    let mut line = Vec::with_capacity(4096);
    let mut scratch = Vec::new();
    let mut summary = Summary::default();
    let mut sources = HashSet::new();
    let started = Instant::now();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        if n == 0 {
            break;
        }
        summary.lines += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if line.len() > crate::source::lines::MAX_LINE {
            continue;
        }
        if let Some(hit) = matcher.find_with(&line, &mut scratch) {
            summary.matched += 1;
            sources.insert(hit.ip);
            *summary
                .by_rule
                .entry((hit.filter.to_string(), hit.rule.to_string()))
                .or_default() += 1;
            if let Some(out) = json_out.as_mut() {
                let object = serde_json::json!({
                    "line": summary.lines,
                    "ip": hit.ip.to_string(),
                    "filter": &*hit.filter,
                    "rule": &*hit.rule,
                });
                writeln!(out, "{object}").map_err(|e| e.to_string())?;
            }
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    summary.sources = sources.len();
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
        "lines read:        {}\nmatched:           {}\ndistinct sources:  {}\nspeed:             {:.0} lines/s ({:.3} s)\n",
        summary.lines, summary.matched, summary.sources, rate, summary.seconds
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
