//! Operating the daemon: systemd readiness and watchdog notifications (to a NOTIFY_SOCKET
//! the test listens on), live reload with good and bad configs, and the unit file itself.

mod testenv;

use std::{os::unix::net::UnixDatagram, process::Command, time::Duration};

use testenv::{ATTACKER, Daemon, Lab, N, PHONE, pbxguard_bin, v4};

fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_only_when_enforcing_then_watchdog_reload_and_stop() {
    let lab = Lab::new();
    let mut daemon = Daemon::start(&lab, "xdp", "");
    daemon.cli_ok(&["bans", "add", &ATTACKER.to_string()]);
    daemon.terminate();
    // Simulate a reboot: nothing enforced until the daemon is ready again.
    daemon.reboot_state();
    let socket_path = daemon.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    daemon.env = vec![
        ("NOTIFY_SOCKET".into(), socket_path.display().to_string()),
        ("WATCHDOG_USEC".into(), "400000".into()),
    ];
    daemon.launch(&[]);
    let ready = next(&socket);
    assert!(ready.starts_with("READY=1"), "{ready}");
    assert!(ready.contains("STATUS=enforcing with xdp"), "{ready}");
    assert_eq!(
        v4(&lab),
        [0, N],
        "when READY=1 arrives the ban is already enforced"
    );
    assert_eq!(next(&socket), "WATCHDOG=1");
    assert_eq!(next(&socket), "WATCHDOG=1");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m == "READY=1") {
        seen.push(next(&socket));
    }
    assert!(
        seen.iter()
            .any(|m| m.starts_with("RELOADING=1\nMONOTONIC_USEC=")),
        "{seen:?}"
    );
    daemon.terminate();
    let mut last = next(&socket);
    while last == "WATCHDOG=1" {
        last = next(&socket);
    }
    assert_eq!(last, "STOPPING=1");
}

#[test]
fn reload_applies_a_good_config_and_rejects_a_bad_one() {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, "xdp", "");
    daemon.cli_ok(&["bans", "add", &ATTACKER.to_string(), "--for", "permanent"]);
    let config = std::fs::read_to_string(&daemon.config).unwrap();

    // Good: the phone becomes allowlisted, so it can no longer be banned.
    std::fs::write(
        &daemon.config,
        format!("{config}\n[allow]\nnetworks = [\"{PHONE}\"]\n"),
    )
    .unwrap();
    assert_eq!(daemon.cli_ok(&["reload"]), "config reloaded\n");
    assert_eq!(daemon.json(&["status"])["allowlisted"], 1);
    let refused = daemon.cli(&["bans", "add", &PHONE.to_string()]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("allowlisted network"));

    // Bad: rejected with its file, line and key; the running config and bans stay.
    std::fs::write(
        &daemon.config,
        format!("{config}\n[allow]\nnetworks = [\"{PHONE}\"]\n[ban]\nmax_entries = \"many\"\n"),
    )
    .unwrap();
    let out = daemon.cli(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("running config stays") && err.contains("key `ban.max_entries`"),
        "{err}"
    );
    assert!(err.contains(&daemon.config.display().to_string()), "{err}");
    assert_eq!(daemon.json(&["status"])["allowlisted"], 1);
    assert_eq!(
        daemon.json(&["bans", "list"])[0]["net"],
        format!("{ATTACKER}/32")
    );
    assert_eq!(v4(&lab), [0, N], "enforcement never stopped");
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/pbxguard.service"
    ))
    .unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    // Point it at the binary under test, which exists here.
    let path = dir.path().join("pbxguard.service");
    std::fs::write(&path, unit.replace("/usr/sbin/pbxguard", pbxguard_bin())).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("pbxguard.service:"),
        "warnings about the unit: {text}"
    );
}
