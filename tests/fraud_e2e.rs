//! Toll fraud end to end (issue 15): a compromised extension registers from the attacker's
//! address (a real PJSIP `Added contact` line in the followed log), then places bursts of
//! off-hours calls to high-risk destinations (Asterisk `cdr_csv` rows appended to a followed
//! Master.csv). The fraud rules alert through the command hook and ban the address the
//! extension registered from: the attacker's real packets are dropped afterwards, on both
//! backends, while the phone keeps working. An allowlisted phone on a compromised account
//! is alerted on, never banned; a normal business day fires nothing, live and offline
//! (`pbxguard test-cdr`). Needs root.

mod testenv;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
};

use chrono::{NaiveDateTime, TimeDelta};
use testenv::{ATTACKER, Daemon, Lab, N, PHONE, append, pbxguard_bin, v4};

/// One `cdr_csv` row (default 16 columns) for a call from `extension`'s PJSIP endpoint.
fn row(extension: &str, dst: &str, start: &str, billsec: i64) -> String {
    let start = NaiveDateTime::parse_from_str(start, "%Y-%m-%d %H:%M:%S").unwrap();
    let answer = start + TimeDelta::seconds(5);
    let end = answer + TimeDelta::seconds(billsec);
    let f = |t: NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S").to_string();
    format!(
        "\"\",\"{extension}\",\"{dst}\",\"from-internal\",\"\"\"Ext {extension}\"\" <{extension}>\",\"PJSIP/{extension}-0000{n:04x}\",\"PJSIP/trunk-0000{n:04x}\",\"Dial\",\"PJSIP/{dst}@trunk,300\",\"{}\",\"{}\",\"{}\",{},{billsec},\"ANSWERED\",\"DOCUMENTATION\"\n",
        f(start),
        f(answer),
        f(end),
        billsec + 5,
        n = start.and_utc().timestamp() % 65536,
    )
}

/// An office's Wednesday: domestic calls all day, a few to European neighbours, internal
/// calls; nothing a fraud rule should mind.
fn business_day() -> String {
    let mut rows = String::new();
    for hour in 8..17 {
        for (i, ext) in ["102", "103", "104"].iter().enumerate() {
            rows += &row(
                ext,
                &format!("030{}{:04}", 2000 + hour, i * 7),
                &format!("2026-11-25 {hour:02}:{:02}:00", 5 + i * 10),
                240,
            );
            rows += &row(
                ext,
                "105",
                &format!("2026-11-25 {hour:02}:{:02}:00", 40 + i),
                60,
            );
        }
    }
    rows += &row("102", "00442079460000", "2026-11-25 10:30:00", 900);
    rows += &row("103", "0033142685300", "2026-11-25 14:10:00", 600);
    rows += &row("104", "0043151234567", "2026-11-25 15:45:00", 300);
    rows
}

/// Saturday 02:00: `extension` calls Cuba and Somalia, a call a minute, 20 minutes each.
fn fraud_night(extension: &str, calls: usize) -> String {
    (0..calls)
        .map(|i| {
            let dst = if i % 2 == 0 {
                format!("00537{:07}", 1_234_500 + i)
            } else {
                format!("00252{:08}", 61_234_500 + i)
            };
            row(
                extension,
                &dst,
                &format!("2026-11-28 02:{:02}:00", 10 + i),
                1200,
            )
        })
        .collect()
}

/// PJSIP's registrar line: `extension` registered from `from`.
fn registered(extension: &str, from: Ipv4Addr) -> String {
    format!(
        "[2026-11-28 01:55:00] VERBOSE[2345] res_pjsip_registrar.c: Added contact 'sip:{extension}@{from}:5060;ob' to AOR '{extension}' with expiration of 3600 seconds\n"
    )
}

const FRAUD: &str = "[fraud]\nhome_country = \"DE\"\n\n\
    [offhours]\nschedule = [\"Mon-Fri 19:00-07:00\", \"Sat-Sun\"]\n";

/// A daemon following `full` (Asterisk log) and `Master.csv`, with a command hook writing
/// every notice to `hook.out`; returns it with the log, CDR and hook output paths.
fn start(lab: &Lab, backend: &str, extra: &str) -> (Daemon, PathBuf, PathBuf, PathBuf) {
    let mut daemon = Daemon::configure(lab, backend, "");
    let dir = daemon.dir.path().to_path_buf();
    let (log, cdr, out, hook) = (
        dir.join("full"),
        dir.join("Master.csv"),
        dir.join("hook.out"),
        dir.join("hook.sh"),
    );
    std::fs::write(&log, "").unwrap();
    std::fs::write(&cdr, "").unwrap();
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$PBXGUARD_EVENT|$PBXGUARD_NET|$PBXGUARD_RULE|$PBXGUARD_EXTENSION|$PBXGUARD_DESTINATION|$PBXGUARD_COUNTRY|$PBXGUARD_REASON\" >> {}\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = std::fs::read_to_string(&daemon.config).unwrap()
        + &format!(
            "[[source]]\npath = \"{}\"\nfilters = [\"asterisk\"]\n\n\
             [[cdr]]\npath = \"{}\"\nformat = \"asterisk-csv\"\n\n\
             [notify]\ncommand = \"{}\"\n\n{FRAUD}\n{extra}\n",
            log.display(),
            cdr.display(),
            hook.display()
        );
    std::fs::write(&daemon.config, config).unwrap();
    daemon.launch(&[]);
    (daemon, log, cdr, out)
}

fn fraud_status(daemon: &Daemon) -> serde_json::Value {
    daemon.json(&["fraud", "status"])
}

fn a_fraud_night_bans_where_the_extension_registered_from(backend: &str) {
    let lab = Lab::new();
    let allow = format!("[allow]\nnetworks = [\"{PHONE}\"]\n");
    let (mut daemon, log, cdr, hook) = start(&lab, backend, &allow);
    // 101 is compromised (the attacker registered it); 102 is the allowlisted office phone.
    append(&log, &registered("101", ATTACKER));
    append(&log, &registered("102", PHONE));
    testenv::wait_until(&daemon, "two registrations", || {
        daemon.json(&["status"])["registrations"] == 2
    });

    // A normal business day: calls are classified, nothing fires.
    let day = business_day();
    let day_rows = day.lines().count() as u64;
    append(&cdr, &day);
    testenv::wait_until(&daemon, "the business day read", || {
        fraud_status(&daemon)["sources"][0]["rows"] == day_rows
    });
    let status = fraud_status(&daemon);
    assert_eq!(status["hits"], serde_json::json!({}), "{status}");
    assert!(
        status["calls"]["domestic"].as_u64().unwrap() >= 27,
        "{status}"
    );
    assert_eq!(status["calls"]["international"], 3, "{status}");
    assert!(!hook.exists(), "no notice on a business day");
    assert_eq!(v4(&lab), [N, N]);

    // The fraud night.
    append(&cdr, &fraud_night("101", 8));
    let ban = daemon.wait_for_ban(&format!("{ATTACKER}/32"));
    assert_eq!(ban["source"], "fraud");
    assert_eq!(ban["rule"], "offhours_international");
    assert!(
        ban["reason"].as_str().unwrap().contains("extension 101"),
        "{ban}"
    );
    assert_eq!(
        v4(&lab),
        [0, N],
        "the attacker is dropped, the phone passes"
    );
    testenv::wait_until(&daemon, "the high-risk burst counted", || {
        fraud_status(&daemon)["hits"]["high_risk_rate"] == 1
    });
    // Notices run on the notification thread: wait for the hook's lines.
    let hook_has = |wanted: &dyn Fn(&str) -> bool| {
        std::fs::read_to_string(&hook)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("fraud|") && wanted(l))
    };
    testenv::wait_until(&daemon, "the off-hours notice for 101", || {
        hook_has(&|l: &str| {
            l.starts_with(&format!(
                "fraud|{ATTACKER}/32|offhours_international|101|00537"
            )) && l.contains("|CU|")
        })
    });
    testenv::wait_until(&daemon, "the high-risk notice for 101", || {
        hook_has(&|l: &str| l.contains("|high_risk_rate|101|"))
    });

    // The allowlisted phone's account places an off-hours call to Cuba: alert, no ban.
    append(&cdr, &fraud_night("102", 1));
    testenv::wait_until(&daemon, "the phone's hit", || {
        std::fs::read_to_string(&hook)
            .unwrap()
            .lines()
            .any(|l| l.contains("|offhours_international|102|"))
    });
    let hooks = std::fs::read_to_string(&hook).unwrap();
    let line = hooks
        .lines()
        .find(|l| l.contains("|offhours_international|102|"))
        .unwrap();
    assert!(
        line.contains("not banned") && line.contains("allowlist"),
        "{line}"
    );
    let bans = daemon.json(&["bans", "list"]);
    assert_eq!(bans.as_array().unwrap().len(), 1, "{bans}");
    assert_eq!(v4(&lab), [0, N]);

    // State survives a restart: counters, registrations and the positions (no row twice).
    let hits_before = fraud_status(&daemon)["hits"].clone();
    daemon.terminate();
    daemon.launch(&[]);
    testenv::wait_until(&daemon, "the fraud report after restart", || {
        daemon.cli(&["fraud", "status", "--json"]).status.success()
    });
    let status = fraud_status(&daemon);
    assert_eq!(status["hits"], hits_before, "{status}");
    assert!(
        status["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["extension"] == "101"),
        "{status}"
    );
    assert_eq!(daemon.json(&["status"])["registrations"], 2);
    let text = daemon.cli_ok(&["fraud", "status"]);
    assert!(text.contains("extension 101"), "{text}");
}

both_backends!(a_fraud_night_bans_where_the_extension_registered_from);

fn test_cdr(config: &Path, file: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(pbxguard_bin())
        .args(["test-cdr", "--json", "--config"])
        .arg(config)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Offline, the same verdicts: a business day has no hit; the fraud night's hits name the
/// row, extension, rule, destination as dialled, country, class and time.
#[test]
fn test_cdr_finds_the_fraud_night_and_nothing_in_a_business_day() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pbxguard.toml");
    std::fs::write(
        &config,
        format!(
            "[enforce]\ninterfaces = [\"eth0\"]\n\n[[cdr]]\npath = \"/var/log/asterisk/cdr-csv/Master.csv\"\nformat = \"asterisk-csv\"\n\n{FRAUD}"
        ),
    )
    .unwrap();
    let day = dir.path().join("day.csv");
    std::fs::write(&day, business_day()).unwrap();
    assert_eq!(test_cdr(&config, &day), Vec::<serde_json::Value>::new());
    let night = dir.path().join("night.csv");
    std::fs::write(&night, business_day() + &fraud_night("101", 8)).unwrap();
    let hits = test_cdr(&config, &night);
    let first_night_row = business_day().lines().count() + 1;
    let rules: Vec<(u64, &str)> = hits
        .iter()
        .map(|h| (h["row"].as_u64().unwrap(), h["rule"].as_str().unwrap()))
        .collect();
    let row = first_night_row as u64;
    assert_eq!(
        rules,
        [
            (row, "offhours_international"),
            (row + 3, "high_risk_rate"),
            (row + 4, "concurrent_calls"),
        ],
        "{hits:?}"
    );
    let first = &hits[0];
    assert_eq!(first["extension"], "101");
    assert_eq!(first["destination"], "005371234500");
    assert_eq!(first["country"], "CU");
    assert_eq!(first["class"], "high_risk");
    assert!(first["time"].as_str().unwrap().starts_with("2026-11-28T"));
}
