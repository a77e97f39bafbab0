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
    // `--for 0` once meant permanent; past 100 years it failed inside the daemon.
    for (length, words) in [
        ("0", "for a ban that never ends write `permanent`"),
        ("0s", "for a ban that never ends write `permanent`"),
        ("7974y", "longer than 100 years"),
        ("580000000000y", "longer than 100 years"),
    ] {
        let out = pbxguard(&[
            "--socket",
            "/nonexistent.sock",
            "bans",
            "add",
            "10.0.0.3",
            "--for",
            length,
        ]);
        assert_eq!(out.status.code(), Some(1), "{length}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(words), "{length}: {err}");
    }
}

#[test]
fn check_config_names_an_overlong_bantime() {
    // It once passed check-config and then panicked the detector at the first ban.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pbxguard.toml");
    std::fs::write(
        &path,
        "[enforce]\ninterfaces = [\"eth0\"]\n\n[policy]\nbantime = \"10000y\"\n",
    )
    .unwrap();
    let out = pbxguard(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:5: key `policy.bantime`", path.display()))
            && err.contains("longer than 100 years"),
        "{err}"
    );
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

#[test]
fn check_config_accepts_an_opt_in_filter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pbxguard.toml");
    std::fs::write(
        &path,
        "[enforce]\ninterfaces = [\"eth0\"]\n\n[policy.filter.freeswitch-challenge]\nmaxretry = 30\n\n\
         [[source]]\npath = \"/var/log/freeswitch/freeswitch.log\"\nfilters = [\"freeswitch\", \"freeswitch-challenge\"]\n",
    )
    .unwrap();
    let out = pbxguard(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An unknown name lists the opt-in filters too.
    std::fs::write(
        &path,
        "[enforce]\ninterfaces = [\"eth0\"]\n\n[[source]]\npath = \"/var/log/x.log\"\nfilters = [\"freeswitch-chalenge\"]\n",
    )
    .unwrap();
    let out = pbxguard(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no filter called `freeswitch-chalenge`"),
        "{err}"
    );
    assert!(err.contains("opt-in: freeswitch-challenge"), "{err}");
}

#[test]
fn test_log_without_filter_runs_opt_in_filters() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("freeswitch.log");
    std::fs::write(
        &log,
        "2013-12-31 17:39:54.767815 [WARNING] sofia_reg.c:1533 SIP auth challenge (INVITE) on sofia profile 'internal' for [011448708752617@192.168.2.51] from ip 81.94.202.251\n",
    )
    .unwrap();
    let config = dir.path().join("pbxguard.toml");
    std::fs::write(&config, "[enforce]\ninterfaces = [\"eth0\"]\n").unwrap();
    let out = pbxguard(&[
        "test-log",
        "--config",
        config.to_str().unwrap(),
        log.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hit: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        hit,
        serde_json::json!({"line": 1, "ip": "81.94.202.251", "filter": "freeswitch-challenge", "rule": "sofia_auth_challenge"})
    );
}

#[test]
fn custom_rules_see_every_line_their_regex_matches() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pbxguard.toml");
    let filter = |rules: &str| {
        format!("[enforce]\ninterfaces = [\"eth0\"]\n[[filter]]\nname = \"mine\"\n{rules}")
    };
    std::fs::write(
        &config,
        filter(
            "[[filter.rule]]\nname = \"nocase\"\nregex = '(?i)auth failed from <HOST>'\n\
             [[filter.rule]]\nname = \"escaped\"\nregex = 'user\\x20rejected from <HOST>'\n",
        ),
    )
    .unwrap();
    let log = dir.path().join("app.log");
    std::fs::write(
        &log,
        "AUTH FAILED from 192.0.2.1\nAuth Failed from 192.0.2.2\nuser rejected from 192.0.2.3\n",
    )
    .unwrap();
    let out = pbxguard(&[
        "test-log",
        "--config",
        config.to_str().unwrap(),
        "--filter",
        "mine",
        log.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["rule"].to_string())
        .collect();
    assert_eq!(rules, ["\"nocase\"", "\"nocase\"", "\"escaped\""]);

    // A literal that some matching lines lack would hide them: refused.
    std::fs::write(
        &config,
        filter(
            "[[filter.rule]]\nname = \"r\"\nregex = '(?:auth|login) failed from <HOST>'\nliteral = \"auth failed\"\n",
        ),
    )
    .unwrap();
    let out = pbxguard(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("filter[0].rule[0]") && err.contains("remove `literal`"),
        "{err}"
    );
}
