//! Geo rules against databases built by the test (MaxMind::DB::Writer), and against a real
//! GeoLite2-Country database when one is installed.

mod testenv;

use std::{
    net::IpAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use pbxguard::geo::{GeoConfig, Unknown, blocked_networks, lookup};
use testenv::{ATTACKER, Daemon, Lab, PBX, PHONE, pbxguard_bin, write_mmdb};

const NETWORKS: [(&str, &str); 4] = [
    ("198.51.100.0/24", "RU"),
    ("203.0.113.0/24", "DE"),
    ("192.0.2.0/25", "US"),
    ("2001:db8:bad::/48", "CN"),
];

fn config(db: &Path) -> GeoConfig {
    GeoConfig {
        database: Some(db.to_path_buf()),
        ..Default::default()
    }
}

fn strings(nets: Vec<ipnet::IpNet>) -> Vec<String> {
    nets.iter().map(|n| n.to_string()).collect()
}

#[test]
fn deny_countries_become_their_networks() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("test.mmdb");
    write_mmdb(&db, &NETWORKS);
    let deny = GeoConfig {
        deny_countries: vec!["RU".into(), "CN".into()],
        ..config(&db)
    };
    assert_eq!(
        strings(blocked_networks(&deny).unwrap()),
        ["198.51.100.0/24", "2001:db8:bad::/48"]
    );
    let allow = GeoConfig {
        allow_countries: vec!["DE".into()],
        ..config(&db)
    };
    assert_eq!(
        strings(blocked_networks(&allow).unwrap()),
        ["192.0.2.0/25", "198.51.100.0/24", "2001:db8:bad::/48"]
    );
    let unknown = GeoConfig {
        unknown: Unknown::Drop,
        ..config(&db)
    };
    let blocked = blocked_networks(&unknown).unwrap();
    let covers = |ip: &str| {
        blocked
            .iter()
            .any(|n| n.contains(&ip.parse::<IpAddr>().unwrap()))
    };
    assert!(
        covers("100.64.0.1") && covers("2a00::1"),
        "addresses not in the database"
    );
    assert!(
        !covers("203.0.113.9") && !covers("198.51.100.1"),
        "known ones are judged by country only"
    );
    assert_eq!(
        lookup(&deny, "198.51.100.7".parse().unwrap()).unwrap(),
        (Some("RU".into()), true)
    );
    assert_eq!(
        lookup(&deny, "203.0.113.7".parse().unwrap()).unwrap(),
        (Some("DE".into()), false)
    );
    assert_eq!(
        lookup(&deny, "100.64.0.1".parse().unwrap()).unwrap(),
        (None, false)
    );
}

#[test]
fn a_missing_database_is_explained() {
    let err = blocked_networks(&GeoConfig {
        deny_countries: vec!["RU".into()],
        ..config(Path::new("/nonexistent.mmdb"))
    })
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent.mmdb"), "{err}");
}

#[test]
fn geo_lookup_cli_prints_country_and_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("test.mmdb");
    write_mmdb(&db, &NETWORKS);
    let cfg = dir.path().join("pbxguard.toml");
    std::fs::write(&cfg, format!("[enforce]\ninterfaces = [\"eth0\"]\n[geo]\ndatabase = \"{}\"\ndeny_countries = [\"RU\"]\n", db.display())).unwrap();
    let out = Command::new(pbxguard_bin())
        .args(["geo", "lookup", "198.51.100.7", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "198.51.100.7: country RU, verdict drop"
    );
    let out = Command::new(pbxguard_bin())
        .args(["geo", "lookup", "2001:db8:1::1", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"ip": "2001:db8:1::1", "country": null, "verdict": "pass"})
    );
}

#[test]
fn the_daemon_drops_denied_countries_and_reloads_a_replaced_database_xdp() {
    daemon_geo("xdp");
}

#[test]
fn the_daemon_drops_denied_countries_and_reloads_a_replaced_database_nft() {
    daemon_geo("nft");
}

fn daemon_geo(backend: &str) {
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("country.mmdb");
    write_mmdb(
        &db,
        &[
            (&format!("{ATTACKER}/32"), "RU"),
            (&format!("{PHONE}/32"), "DE"),
        ],
    );
    let daemon = Daemon::start(
        &lab,
        backend,
        &format!(
            "[geo]\ndatabase = \"{}\"\ndeny_countries = [\"RU\"]\n",
            db.display()
        ),
    );
    let sources = [IpAddr::V4(ATTACKER), IpAddr::V4(PHONE)];
    assert_eq!(lab.deliveries(&sources, IpAddr::V4(PBX), 10), [0, 10]);
    assert_eq!(daemon.packets("geo_blocked"), 10);
    assert_eq!(daemon.json(&["status"])["geo_networks"], 1);
    // geoipupdate replaces the file: the attacker's address moved to Germany.
    write_mmdb(
        &db,
        &[
            (&format!("{ATTACKER}/32"), "DE"),
            (&format!("{PHONE}/32"), "DE"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.json(&["status"])["geo_networks"] != 0 {
        assert!(Instant::now() < deadline, "{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(lab.deliveries(&sources, IpAddr::V4(PBX), 10), [10, 10]);
}

/// With a real GeoLite2-Country database installed, a whole country loads as a few
/// thousand aggregated networks.
#[test]
fn a_real_geolite2_database_when_installed() {
    let Some(db) = [
        "/var/lib/GeoIP/GeoLite2-Country.mmdb",
        "/usr/share/GeoIP/GeoLite2-Country.mmdb",
    ]
    .iter()
    .map(Path::new)
    .find(|p| p.exists()) else {
        eprintln!("no GeoLite2-Country.mmdb installed; skipping the real-database check");
        return;
    };
    let nets = blocked_networks(&GeoConfig {
        deny_countries: vec!["CN".into()],
        ..config(db)
    })
    .unwrap();
    assert!(nets.len() > 100, "{}", nets.len());
    assert_eq!(
        lookup(&config(db), "8.8.8.8".parse().unwrap())
            .unwrap()
            .0
            .as_deref(),
        Some("US")
    );
}
