//! `pbxguard test-cdr`: classifies and evaluates a call-record file offline with the
//! config's `[fraud]` and `[offhours]`, like `test-log` does for logs. Windows are measured
//! in call time, so the hits are the ones the daemon would report following the file.

use std::{io::Write, path::Path, time::SystemTime};

use serde::Serialize;

use crate::{
    config::Config,
    fraud::{
        cdr::{CdrError, CdrFormat, CdrSourceConfig, parse_row},
        numbers::{Class, classify},
        rules::{Evaluator, FraudState},
    },
};

/// One rule hit, as `--json` prints it (JSON Lines).
#[derive(Debug, Serialize)]
pub struct HitLine {
    /// 1-based row of the file.
    pub row: usize,
    /// The extension that placed the call.
    pub extension: String,
    /// The rule.
    pub rule: &'static str,
    /// The number as dialled.
    pub destination: String,
    /// Destination country (ISO code).
    pub country: Option<String>,
    /// `domestic`, `international`, `high_risk`, `premium`.
    pub class: Class,
    /// The call's start.
    #[serde(with = "crate::units::rfc3339")]
    pub time: SystemTime,
    /// What was counted against which limit.
    pub detail: String,
    /// Whether the daemon would also ban the registered address.
    pub ban: bool,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Summary {
    /// Rows read as calls.
    pub rows: usize,
    /// Rows that did not fit the format, with their number and why (first 20).
    pub malformed: Vec<(usize, String)>,
    /// Rows that did not fit, in all.
    pub malformed_count: usize,
    /// Calls by class.
    pub calls: std::collections::BTreeMap<Class, usize>,
    /// Every hit.
    pub hits: Vec<HitLine>,
}

/// The source settings to read `file` with: `--format`, else the `[[cdr]]` naming this
/// file, else the only `[[cdr]]`.
pub fn source_for(
    config: &Config,
    file: &Path,
    format: Option<CdrFormat>,
) -> Result<CdrSourceConfig, String> {
    let configured = config
        .cdr
        .iter()
        .find(|c| c.path == file)
        .or_else(|| (config.cdr.len() == 1).then(|| &config.cdr[0]));
    match (format, configured) {
        (Some(format), Some(c)) if c.format == format => Ok(c.clone()),
        (Some(format), _) => Ok(CdrSourceConfig {
            path: file.to_path_buf(),
            format,
            columns: Vec::new(),
            fields: Default::default(),
            utc: false,
        }),
        (None, Some(c)) => Ok(c.clone()),
        (None, None) => Err(
            "which format is it? give --format asterisk-csv|freeswitch-csv|... or a [[cdr]] in the config"
                .into(),
        ),
    }
}

/// Reads `file` and evaluates every row; with `json`, writes each hit as a JSON line.
pub fn run(
    config: &Config,
    source: &CdrSourceConfig,
    file: &Path,
    mut json: Option<&mut dyn Write>,
) -> Result<Summary, String> {
    let fraud = config
        .fraud
        .clone()
        .ok_or("the config has no [fraud] section: add one with home_country")?;
    let text = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let plan = fraud.dial_plan();
    let mut evaluator = Evaluator::new(
        fraud,
        crate::engine::policy::offhours_schedule(config),
        FraudState::default(),
    );
    let mut summary = Summary::default();
    for (index, line) in text.split(|&b| b == b'\n').enumerate() {
        let row = index + 1;
        let line = String::from_utf8_lossy(line);
        let call = match parse_row(&line, source) {
            Ok(call) => call,
            Err(CdrError::Empty) => continue,
            Err(e) => {
                summary.malformed_count += 1;
                if summary.malformed.len() < 20 {
                    summary.malformed.push((row, e.to_string()));
                }
                continue;
            }
        };
        summary.rows += 1;
        let destination = classify(&call.destination, &plan);
        *summary.calls.entry(destination.class).or_insert(0) += 1;
        for hit in evaluator.evaluate(&call, &destination) {
            let line = HitLine {
                row,
                extension: hit.extension,
                rule: hit.rule,
                destination: hit.destination,
                country: hit.country,
                class: hit.class,
                time: hit.time,
                detail: hit.detail,
                ban: hit.ban,
            };
            if let Some(out) = json.as_deref_mut() {
                serde_json::to_writer(&mut *out, &line).map_err(|e| e.to_string())?;
                writeln!(out).map_err(|e| e.to_string())?;
            }
            summary.hits.push(line);
        }
    }
    Ok(summary)
}

/// The human-readable report.
pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    for hit in &summary.hits {
        out.push_str(&format!(
            "row {}: {} on extension {}: dialled {} ({}, {}) at {}: {}{}\n",
            hit.row,
            hit.rule,
            super::output::clean(&hit.extension),
            super::output::clean(&hit.destination),
            hit.country.as_deref().unwrap_or("?"),
            hit.class.as_str(),
            crate::units::rfc3339::format(hit.time),
            hit.detail,
            if hit.ban {
                " -> would ban the registered address"
            } else {
                ""
            }
        ));
    }
    let calls: Vec<String> = summary
        .calls
        .iter()
        .map(|(class, n)| format!("{} {n}", class.as_str()))
        .collect();
    out.push_str(&format!(
        "{} calls ({}); {} rule hits; {} rows did not fit the format\n",
        summary.rows,
        if calls.is_empty() {
            "none".into()
        } else {
            calls.join(", ")
        },
        summary.hits.len(),
        summary.malformed_count
    ));
    for (row, why) in &summary.malformed {
        out.push_str(&format!("  row {row}: {why}\n"));
    }
    out
}
