//! Keeps PBX-derived trust current: the config files are fingerprinted every few seconds
//! (an edit is picked up at once) and host names are resolved again every `refresh`.
//! Runs on its own thread: DNS may block, the engine loop must not.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use super::Discovered;
use crate::config::TrustConfig;

/// How often the files are checked for changes.
const CHECK: Duration = Duration::from_secs(2);

/// Files whose change means re-reading the PBX configs.
fn fingerprint(root: &Path) -> Vec<(PathBuf, SystemTime, u64)> {
    let mut out = Vec::new();
    let mut visit = |dir: PathBuf, keep: &dyn Fn(&str) -> bool, depth: usize| {
        let mut stack = vec![(dir, 0)];
        while let Some((dir, level)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() && level < depth {
                    stack.push((path, level + 1));
                } else if meta.is_file()
                    && path.file_name().and_then(|n| n.to_str()).is_some_and(keep)
                {
                    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    out.push((path, modified, meta.len()));
                }
            }
        }
    };
    visit(root.join("etc/asterisk"), &|n| n.ends_with(".conf"), 0);
    visit(
        root.join("etc/freeswitch/sip_profiles"),
        &|n| n.ends_with(".xml"),
        4,
    );
    for dir in ["etc/kamailio", "etc/opensips"] {
        visit(
            root.join(dir),
            &|n| n == "dispatcher.list" || n == "address",
            1,
        );
    }
    out.sort();
    out
}

/// Calls `changed` with the first discovery, then whenever the files change or names are
/// due for resolving again, until `changed` returns false.
pub fn spawn(
    config: TrustConfig,
    mut changed: impl FnMut(Discovered) -> bool + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("pbx-trust".into())
        .spawn(move || {
            let mut seen = None;
            let mut resolved = Instant::now();
            loop {
                let now = fingerprint(&config.root);
                if seen.as_ref() != Some(&now) || resolved.elapsed() >= config.refresh {
                    let found = super::discover(&config.root);
                    for problem in &found.problems {
                        tracing::warn!("PBX trust: {problem}");
                    }
                    if !changed(found) {
                        return;
                    }
                    seen = Some(now);
                    resolved = Instant::now();
                }
                std::thread::sleep(CHECK);
            }
        })
        .expect("spawn pbx-trust thread")
}
