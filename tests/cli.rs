//! The command line without a daemon: config checking and error messages.

mod testenv;

use std::process::Command;

use testenv::pbxguard_bin;

fn pbxguard(args: &[&str]) -> std::process::Output {
    Command::new(pbxguard_bin()).args(args).output().unwrap()
}

#[test]
fn check_config_accepts_the_shipped_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/pbxguard.toml");
    let out = pbxguard(&["check-config", "--config", example]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

#[test]
fn check_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[enforce]\ninterfaces = [\"eth0\"]\n\n[ban]\nmax_entries = -3\n",
    )
    .unwrap();
    let out = pbxguard(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("{}:5: key `ban.max_entries`:", path.display())),
        "{err}"
    );
}

#[test]
fn check_config_reports_a_missing_file() {
    let out = pbxguard(&["check-config", "--config", "/nonexistent/pbxguard.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/pbxguard.toml: cannot read")
    );
}

#[test]
fn no_daemon_is_one_line_and_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    for args in [
        &["status"][..],
        &["bans", "list"],
        &["stats", "--json"],
        &["bans", "add", "192.0.2.1"],
    ] {
        let mut full = vec!["--socket", socket.to_str().unwrap()];
        full.extend_from_slice(args);
        let out = pbxguard(&full);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("not running"), "{err}");
    }
}

#[test]
fn bad_ban_arguments_are_explained_without_a_daemon() {
    let out = pbxguard(&["--socket", "/nonexistent.sock", "bans", "add", "10.0.0.300"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an IP address or CIDR"));
    let out = pbxguard(&[
        "--socket",
        "/nonexistent.sock",
        "bans",
        "add",
        "10.0.0.3",
        "--for",
        "ages",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a duration"));
}

fn lab_files() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pbxguard.toml");
    std::fs::write(
        &config,
        "[enforce]\ninterfaces = [\"eth0\"]\n[[filter]]\nname = \"lab\"\n[[filter.rule]]\nname = \"bad\"\nregex = 'auth failed for .* from <HOST>'\n",
    )
    .unwrap();
    let log = dir.path().join("app.log");
    std::fs::write(
        &log,
        b"hello\nauth failed for bob from 192.0.2.7\nauth failed for from 10.0.0.1 from 2001:db8::5\n\xff\xfe junk\nauth failed for x from 192.0.2.7\n",
    )
    .unwrap();
    (dir, config.display().to_string(), log.display().to_string())
}

#[test]
fn test_log_prints_one_json_object_per_match() {
    let (_dir, config, log) = lab_files();
    let out = pbxguard(&[
        "test-log", "--config", &config, "--filter", "lab", &log, "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0],
        serde_json::json!({"line": 2, "ip": "192.0.2.7", "filter": "lab", "rule": "bad"})
    );
    assert_eq!(
        lines[1]["ip"], "2001:db8::5",
        "the address at the anchored end, not the one in the user name"
    );
    assert_eq!(lines[2]["line"], 5);
}

#[test]
fn test_log_summary_counts_rules_and_sources() {
    let (_dir, config, log) = lab_files();
    let out = pbxguard(&["test-log", "--config", &config, "--filter", "lab", &log]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("lines read:        5"), "{text}");
    assert!(text.contains("matched:           3"), "{text}");
    assert!(text.contains("distinct sources:  2"), "{text}");
    assert!(text.contains("lab/bad"), "{text}");
    let out = pbxguard(&["test-log", "--config", &config, "--filter", "nope", &log]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no filter called `nope`"));
}
