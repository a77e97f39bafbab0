//! Backend selection and nftables specifics, in namespaces this test creates: fallback
//! without BPF capabilities, other tables left alone, bursts in few batches, uninstall.

mod testenv;

use std::time::{Duration, Instant};

use testenv::{ATTACKER, Daemon, Lab, N, v4};

#[test]
fn auto_falls_back_to_nftables_without_bpf_capabilities() {
    let lab = Lab::new();
    let mut daemon = Daemon::configure(&lab, "auto", "");
    daemon.wrapper = ["capsh", "--drop=cap_bpf,cap_sys_admin,cap_perfmon"]
        .map(String::from)
        .to_vec();
    daemon.launch(&[]);
    let status = daemon.json(&["status"]);
    assert_eq!(status["backend"], "nft", "{status}");
    let note = status["backend_note"].as_str().unwrap();
    assert!(note.contains("XDP could not load or attach"), "{note}");
    assert!(
        daemon
            .cli_ok(&["status"])
            .contains("backend note: XDP could not")
    );
    assert!(!lab.xdp_attached());
    daemon.cli_ok(&["bans", "add", &ATTACKER.to_string()]);
    assert_eq!(v4(&lab), [0, N], "nftables enforces the ban");
    assert!(daemon.packets("banned") >= N as u64);
}

#[test]
fn auto_uses_xdp_when_it_can() {
    let lab = Lab::new();
    let daemon = Daemon::start(&lab, "auto", "");
    let status = daemon.json(&["status"]);
    assert_eq!(status["backend"], "xdp");
    assert!(status["backend_note"].is_null());
    assert!(!lab.nft_table("pbxguard"));
}

const FOREIGN: &str = "table inet admin {
    set keep {
        type ipv4_addr
        elements = { 192.0.2.1 }
    }
    chain input {
        type filter hook input priority filter; policy accept;
        ip saddr 192.0.2.99 accept
    }
}
table ip nat {
    chain post {
        type nat hook postrouting priority srcnat; policy accept;
    }
}
";

fn foreign(lab: &Lab) -> String {
    lab.nft(&["list", "table", "inet", "admin"]) + &lab.nft(&["list", "table", "ip", "nat"])
}

#[test]
fn other_tables_are_untouched_by_start_reload_bursts_and_uninstall() {
    let lab = Lab::new();
    let rules = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(rules.path(), FOREIGN).unwrap();
    lab.nft(&["-f", rules.path().to_str().unwrap()]);
    let before = foreign(&lab);

    let mut daemon = Daemon::start(&lab, "nft", "");
    for i in 0..50 {
        daemon.cli_ok(&["bans", "add", &format!("198.51.100.{i}")]);
    }
    let pid = daemon.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(daemon.log_text().contains("config reloaded"));
    assert_eq!(foreign(&lab), before);

    let out = daemon.cli_inside(&[
        "uninstall-rules",
        "--config",
        daemon.config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "refused while the daemon runs");
    daemon.terminate();
    assert!(lab.nft_table("pbxguard"), "a clean stop keeps enforcing");
    let out = daemon.cli_inside(&[
        "uninstall-rules",
        "--config",
        daemon.config.to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("removed nftables table inet pbxguard"),
        "{out}"
    );
    assert!(!lab.nft_table("pbxguard"));
    assert_eq!(foreign(&lab), before, "other tables unchanged");
}

#[test]
fn uninstall_rules_detaches_pinned_xdp() {
    let lab = Lab::new();
    let mut daemon = Daemon::start(&lab, "xdp", "");
    daemon.cli_ok(&["bans", "add", &ATTACKER.to_string()]);
    daemon.kill9();
    assert_eq!(v4(&lab), [0, N]);
    let out = daemon.cli_inside(&[
        "uninstall-rules",
        "--config",
        daemon.config.to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("removed pinned XDP program"), "{out}");
    assert!(lab.xdp_detaches());
    assert_eq!(v4(&lab), [N, N]);
    // The journal is kept: the next start enforces the ban again.
    daemon.launch(&[]);
    assert_eq!(v4(&lab), [0, N]);
}

#[test]
fn switching_backends_leaves_only_the_live_one() {
    let lab = Lab::new();
    let mut daemon = Daemon::start(&lab, "xdp", "");
    daemon.cli_ok(&["bans", "add", &ATTACKER.to_string()]);
    daemon.terminate();
    let text = std::fs::read_to_string(&daemon.config)
        .unwrap()
        .replace("backend = \"xdp\"", "backend = \"nft\"");
    std::fs::write(&daemon.config, text).unwrap();
    daemon.launch(&[]);
    assert!(
        lab.xdp_detaches(),
        "the XDP pins of the earlier run are gone"
    );
    assert!(lab.nft_table("pbxguard"));
    assert_eq!(v4(&lab), [0, N], "the ban moved over from the journal");
}

#[test]
fn a_burst_of_10000_bans_takes_a_handful_of_nft_runs() {
    let lab = Lab::new();
    // A counting `nft` in front of the real one.
    let wrapper = tempfile::tempdir().unwrap();
    let calls = wrapper.path().join("calls");
    let script = wrapper.path().join("nft");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho x >> {}\nexec /usr/sbin/nft \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let mut daemon = Daemon::configure(
        &lab,
        "nft",
        "[policy]\nmaxretry = 1\n[[source]]\npath = \"LOG\"\nfilters = [\"sshd\"]\n",
    );
    let log = daemon.log_file("auth.log");
    daemon.path_prefix = Some(wrapper.path().to_path_buf());
    daemon.launch(&[]);
    let _ = std::fs::remove_file(&calls);

    let mut lines = String::new();
    for i in 0..10_000u32 {
        let ip = format!("198.18.{}.{}", i / 250, i % 250 + 1);
        lines.push_str(&format!(
            "Nov 26 11:03:53 pbx sshd[42]: Invalid user admin from {ip} port 4242\n"
        ));
    }
    std::fs::write(&log, lines).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while daemon.json(&["status"])["bans"] != 10_000 {
        assert!(
            Instant::now() < deadline,
            "bans: {}",
            daemon.json(&["status"])["bans"]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let runs = std::fs::read_to_string(&calls)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(runs <= 50, "10,000 bans took {runs} nft runs");
    let elements = lab.nft(&["-j", "list", "set", "inet", "pbxguard", "ban4"]);
    assert_eq!(elements.matches("198.18.").count(), 10_000);
}

#[test]
fn nft_start_reconciles_the_table_with_the_journal() {
    let lab = Lab::new();
    let mut daemon = Daemon::start(&lab, "nft", "");
    daemon.cli_ok(&["bans", "add", &ATTACKER.to_string()]);
    daemon.terminate();
    // Someone edits our sets while pbxguard is stopped: a stray ban and a missing one.
    lab.nft(&[
        "add",
        "element",
        "inet",
        "pbxguard",
        "ban4",
        "{ 203.0.113.99 }",
    ]);
    lab.nft(&[
        "delete",
        "element",
        "inet",
        "pbxguard",
        "ban4",
        &format!("{{ {ATTACKER} }}"),
    ]);
    daemon.launch(&[]);
    let set = lab.nft(&["list", "set", "inet", "pbxguard", "ban4"]);
    assert!(
        !set.contains("203.0.113.99"),
        "stale element removed: {set}"
    );
    assert!(
        set.contains(&ATTACKER.to_string()),
        "missing element restored: {set}"
    );
    assert_eq!(v4(&lab), [0, N]);
}

/// Lines of this process's mountinfo about /sys/fs/bpf: what the test must leave as found.
fn host_bpffs_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| m.starts_with("/sys/fs/bpf"))
        })
        .map(String::from)
        .collect()
}

/// With the default `bpffs = "/sys/fs/bpf/pbxguard"` on a host with nothing mounted on
/// /sys/fs/bpf (containers, hosts without systemd), the pin directory cannot be created in
/// sysfs: the daemon mounts bpffs on /sys/fs/bpf itself, as systemd does, and comes up on
/// XDP. The daemon runs in a private mount namespace where /sys/fs/bpf is unmounted first;
/// the host's /sys/fs/bpf is never touched.
#[test]
fn xdp_mounts_bpffs_on_sys_fs_bpf_when_nothing_is_there() {
    let host_before = host_bpffs_mounts();
    let lab = Lab::new();
    let mut daemon = Daemon::configure(&lab, "xdp", "");
    // The default pin directory: drop the fixture's own `bpffs =` line.
    let config: String = std::fs::read_to_string(&daemon.config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("bpffs ="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&daemon.config, config).unwrap();
    // `sh -c SCRIPT sh -- -c RUN`: unmount everything stacked on /sys/fs/bpf (a statfs
    // there then says sysfs), drop the `--` and run the daemon's command.
    let script = "while mountpoint -q /sys/fs/bpf; do umount -l /sys/fs/bpf || exit 97; done; \
                  [ \"$(stat -f -c %T /sys/fs/bpf)\" = sysfs ] || exit 98; shift; exec sh \"$@\"";
    daemon.wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ]
    .map(String::from)
    .to_vec();
    daemon.launch(&[]);
    let status = daemon.json(&["status"]);
    assert_eq!(status["backend"], "xdp", "{status}");
    assert!(status["backend_note"].is_null(), "{status}");
    assert!(lab.xdp_attached());
    // Seen from inside the daemon's mount namespace (not ours: else we would look at the
    // host's /sys/fs/bpf).
    let root = std::path::PathBuf::from(format!("/proc/{}/root", daemon.pid()));
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    assert_ne!(ns(&daemon.pid().to_string()), ns("self"));
    assert!(pbxguard::enforce::bpffs::is_bpffs(&root.join("sys/fs/bpf")));
    let pins = root.join("sys/fs/bpf/pbxguard");
    let pinned: Vec<String> = std::fs::read_dir(&pins)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(pinned.len() >= 2, "pins: {pinned:?}");
    assert!(
        daemon
            .log_text()
            .lines()
            .any(|l| l.contains("mounted bpffs") && l.ends_with("dir=/sys/fs/bpf")),
        "{}",
        daemon.log_text()
    );
    // Bans land in the maps pinned there (the ledger check at the end reads them too).
    daemon.bpffs = pins;
    daemon.cli_ok(&["bans", "add", &ATTACKER.to_string()]);
    assert_eq!(v4(&lab), [0, N]);
    daemon.check_ledger();
    assert_eq!(
        host_bpffs_mounts(),
        host_before,
        "the host's /sys/fs/bpf changed"
    );
}
