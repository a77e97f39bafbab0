//! The `fraud` thread: follows the `[[cdr]]` files (rotation-safe, like the log sources),
//! classifies each new call, runs the rules, and hands every hit to the engine
//! (`Command::Fraud`: notice, ban of the registered address). The rules' memory, the
//! counters and the file positions are saved together in `state_dir/fraud.json` (temp file,
//! fsync, rename), so after a restart no row is counted twice and none is missed.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::{
    CdrStatus, FraudReport,
    cdr::{CdrError, CdrSourceConfig, parse_row},
    numbers::{Class, DialPlan, classify},
    rules::{Evaluator, FraudState},
};
use crate::{
    config::Config,
    engine::actor::{Command, EngineHandle},
    source::{
        file::{FileFollower, Start},
        positions::FilePosition,
    },
};

/// File name inside the state directory.
pub const FRAUD_FILE: &str = "fraud.json";
/// How often the files are read.
const POLL: Duration = Duration::from_millis(250);
/// Extensions listed in `fraud status` (nearest a limit first).
const REPORTED: usize = 200;

/// What `fraud.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    state: FraudState,
    positions: BTreeMap<PathBuf, FilePosition>,
    calls: BTreeMap<Class, u64>,
    hits: BTreeMap<String, u64>,
}

fn load(path: &Path) -> Saved {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::error!(file = %path.display(), error = %e, "fraud state unreadable; starting afresh (call records are read from their end)");
            Saved::default()
        }),
        Err(_) => Saved::default(),
    }
}

/// Starts the thread when `[fraud]` has call records to follow.
pub fn spawn(
    config: &Config,
    engine: EngineHandle,
    stop: Arc<AtomicBool>,
) -> Option<JoinHandle<()>> {
    let fraud = config.fraud.clone()?;
    if config.cdr.is_empty() {
        tracing::warn!(
            "[fraud] is set but no [[cdr]] source: no call is watched (pbxguard audit reports this)"
        );
        return None;
    }
    let sources = config.cdr.clone();
    let plan = fraud.dial_plan();
    let offhours = crate::engine::policy::offhours_schedule(config);
    let path = config.daemon.state_dir.join(FRAUD_FILE);
    let thread = std::thread::Builder::new()
        .name("fraud".into())
        .spawn(move || {
            let saved = load(&path);
            let evaluator = Evaluator::new(fraud, offhours, saved.state);
            let mut watch = Watch {
                evaluator,
                plan,
                statuses: sources
                    .iter()
                    .map(|s| CdrStatus {
                        path: s.path.display().to_string(),
                        ..Default::default()
                    })
                    .collect(),
                calls: saved.calls,
                hits: saved.hits,
                engine,
                changed: true,
            };
            let mut followers: Vec<(CdrSourceConfig, FileFollower)> = Vec::new();
            for (index, source) in sources.into_iter().enumerate() {
                let mut rows = Vec::new();
                let follower = FileFollower::new(
                    &source.path,
                    saved.positions.get(&source.path).copied(),
                    Start::End,
                    &mut |line| rows.push(line.to_vec()),
                );
                watch.rows(index, &source, rows);
                tracing::info!(file = %source.path.display(), format = ?source.format, "following call records");
                followers.push((source, follower));
            }
            while !stop.load(Ordering::Acquire) {
                for (index, (source, follower)) in followers.iter_mut().enumerate() {
                    let mut rows = Vec::new();
                    if let Err(e) = follower.poll(&mut |line| rows.push(line.to_vec())) {
                        tracing::warn!(file = %source.path.display(), error = %e, "reading call records failed; retrying");
                    }
                    watch.rows(index, source, rows);
                }
                if watch.changed {
                    let positions = followers
                        .iter()
                        .filter_map(|(s, f)| Some((s.path.clone(), f.position()?)))
                        .collect();
                    watch.save(&path, positions);
                }
                std::thread::sleep(POLL);
            }
        })
        .expect("spawn fraud thread");
    Some(thread)
}

struct Watch {
    evaluator: Evaluator,
    plan: DialPlan,
    statuses: Vec<CdrStatus>,
    calls: BTreeMap<Class, u64>,
    hits: BTreeMap<String, u64>,
    engine: EngineHandle,
    changed: bool,
}

impl Watch {
    fn rows(&mut self, index: usize, source: &CdrSourceConfig, rows: Vec<Vec<u8>>) {
        for bytes in rows {
            let line = String::from_utf8_lossy(&bytes);
            let status = &mut self.statuses[index];
            status.last_read = Some(SystemTime::now());
            self.changed = true;
            let call = match parse_row(&line, source) {
                Ok(call) => call,
                Err(CdrError::Empty) => continue,
                Err(e) => {
                    status.malformed += 1;
                    tracing::warn!(file = %source.path.display(), error = %e, "call record skipped: it does not fit the configured format (check [[cdr]] format and columns)");
                    continue;
                }
            };
            status.rows += 1;
            let destination = classify(&call.destination, &self.plan);
            *self.calls.entry(destination.class).or_insert(0) += 1;
            for hit in self.evaluator.evaluate(&call, &destination) {
                *self.hits.entry(hit.rule.to_string()).or_insert(0) += 1;
                let rule = hit.rule;
                match self
                    .engine
                    .ask_blocking(|reply| Command::Fraud(Box::new(hit), reply))
                {
                    Ok(outcome) => tracing::debug!(rule, outcome = %outcome, "fraud hit handled"),
                    Err(e) => tracing::error!(rule, error = %e, "fraud hit not handled"),
                }
            }
        }
    }

    /// Saves the rules' memory with the positions, and reports to the engine.
    fn save(&mut self, path: &Path, positions: BTreeMap<PathBuf, FilePosition>) {
        let saved = Saved {
            state: self.evaluator.state().clone(),
            positions,
            calls: self.calls.clone(),
            hits: self.hits.clone(),
        };
        let written = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::store::journal::write_atomically(path, &bytes));
        if let Err(e) = written {
            tracing::error!(file = %path.display(), error = %e, "saving the fraud state failed; retrying (check free space in state_dir)");
            return;
        }
        let mut extensions = self.evaluator.report(SystemTime::now());
        extensions.truncate(REPORTED);
        let report = FraudReport {
            sources: self.statuses.clone(),
            calls: self.calls.clone(),
            hits: self.hits.clone(),
            extensions,
        };
        self.engine.try_send(Command::FraudReport(Arc::new(report)));
        self.changed = false;
    }
}
