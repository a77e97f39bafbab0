//! `pbxguard audit`: the PBX hardening checklist, checked on the host (read-only).
//!
//! Each check is a small function over a [`Root`] (the host's `/`, or a directory given with
//! `--root` for offline inspection) that returns findings with a severity, the evidence (file
//! and line) and the fix. A file that cannot be read or parsed is itself a finding, never a
//! crash.

mod exposure;
mod freeswitch;
pub(crate) mod ini;
mod logging;
mod platform;
mod sip;
mod ssh;

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Serialize;

/// How urgent a finding is; findings are reported most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Fix now: toll fraud or takeover is likely.
    Critical,
    /// Fix soon.
    High,
    /// Worth fixing.
    Medium,
    /// Good practice.
    Low,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Critical => "CRITICAL",
            Severity::High => "HIGH",
            Severity::Medium => "MEDIUM",
            Severity::Low => "LOW",
        })
    }
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable check id (`ssh.password_auth`), for scripts.
    pub id: &'static str,
    /// How urgent.
    pub severity: Severity,
    /// What is wrong, in one line.
    pub title: String,
    /// The file it was found in (relative to the root).
    pub file: Option<String>,
    /// The line in that file.
    pub line: Option<usize>,
    /// What to do about it.
    pub fix: String,
}

impl Finding {
    /// A finding with no file evidence.
    pub fn new(
        id: &'static str,
        severity: Severity,
        title: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            id,
            severity,
            title: title.into(),
            file: None,
            line: None,
            fix: fix.into(),
        }
    }

    /// Adds the file and line where it was found.
    pub fn at(mut self, file: &str, line: Option<usize>) -> Finding {
        self.file = Some(file.to_string());
        self.line = line;
        self
    }
}

/// The filesystem the audit reads: `/` or an offline copy of a host.
#[derive(Clone, Debug)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// A root at `dir`.
    pub fn new(dir: &Path) -> Root {
        Root {
            dir: dir.to_path_buf(),
        }
    }

    /// Whether this is the live host (so sockets may be probed).
    pub fn is_live(&self) -> bool {
        self.dir == Path::new("/")
    }

    /// Absolute path of `path` (given as on the host, e.g. `/etc/ssh/sshd_config`).
    pub fn path(&self, path: &str) -> PathBuf {
        self.dir.join(path.trim_start_matches('/'))
    }

    /// Reads a text file: `Ok(None)` if absent, `Err(finding)` if present but unreadable.
    pub fn read(&self, path: &str) -> Result<Option<String>, Finding> {
        match std::fs::read(self.path(path)) {
            Ok(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| unreadable(path, "it is not UTF-8 text")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(unreadable(path, &e.to_string())),
        }
    }

    /// Files in directory `dir` (host path) whose names satisfy `keep`, sorted.
    pub fn files(&self, dir: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.path(dir))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| keep(name))
            .map(|name| format!("{}/{name}", dir.trim_end_matches('/')))
            .collect();
        out.sort();
        out
    }

    /// Like [`Root::files`], through subdirectories too.
    pub fn files_recursive(&self, dir: &str, keep: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut out = self.files(dir, keep);
        let mut subdirs: Vec<String> = std::fs::read_dir(self.path(dir))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|name| format!("{}/{name}", dir.trim_end_matches('/')))
            .collect();
        subdirs.sort();
        for sub in subdirs {
            out.extend(self.files_recursive(&sub, keep));
        }
        out
    }
}

/// A file that exists but could not be read or parsed.
pub fn unreadable(path: &str, why: &str) -> Finding {
    Finding::new(
        "audit.unreadable_file",
        Severity::Medium,
        format!("{path} could not be checked: {why}"),
        "fix or remove the file so that it parses; the audit could not check what it configures",
    )
    .at(path, None)
}

/// Runs every check; findings most severe first.
pub fn run(root: &Root) -> Vec<Finding> {
    let mut findings = Vec::new();
    let pbxguard = exposure::PbxguardConfig::load(root, &mut findings);
    let sip = sip::Sip::load(root, &mut findings);
    findings.extend(exposure::check(root, &pbxguard, &sip));
    findings.extend(sip.findings());
    findings.extend(freeswitch::check(root));
    findings.extend(logging::check(root, &pbxguard));
    findings.extend(ssh::check(root));
    findings.extend(platform::check(root));
    findings.extend(exposure::fraud_readiness(&pbxguard, root));
    findings.sort_by(|a, b| {
        a.severity
            .cmp(&b.severity)
            .then(a.id.cmp(b.id))
            .then(a.file.cmp(&b.file))
            .then(a.line.cmp(&b.line))
    });
    findings
}

/// The terminal report, grouped by severity; coloured when `colour`.
pub fn render(findings: &[Finding], colour: bool) -> String {
    if findings.is_empty() {
        return "no findings: every check passed\n".into();
    }
    let paint = |severity: Severity, text: &str| {
        if !colour {
            return text.to_string();
        }
        let code = match severity {
            Severity::Critical => "1;31",
            Severity::High => "31",
            Severity::Medium => "33",
            Severity::Low => "36",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    };
    let mut out = String::new();
    let mut current = None;
    for f in findings {
        if current != Some(f.severity) {
            current = Some(f.severity);
            let count = findings.iter().filter(|x| x.severity == f.severity).count();
            out.push_str(&format!(
                "\n{} ({count})\n",
                paint(f.severity, &f.severity.to_string())
            ));
        }
        out.push_str(&format!("  [{}] {}\n", f.id, f.title));
        if let Some(file) = &f.file {
            match f.line {
                Some(line) => out.push_str(&format!("      at {file}:{line}\n")),
                None => out.push_str(&format!("      at {file}\n")),
            }
        }
        out.push_str(&format!("      fix: {}\n", f.fix));
    }
    out.trim_start().to_string()
}
