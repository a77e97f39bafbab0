//! Geo rules against databases built by the test (MaxMind::DB::Writer), and against the real
//! GeoLite2-City database (July 2018) that `cargo xtask setup` installs from PyPI.

mod testenv;

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use aya::programs::{TestRun as _, TestRunOptions};
use pbxguard::{
    enforce::program::{LoadOptions, XdpProgram},
    geo::{GeoConfig, Unknown, blocked_networks, lookup},
};
use testenv::{
    ATTACKER, Daemon, Lab, PBX, PHONE, frames::Frame, geolite2, pbxguard_bin, write_mmdb,
};

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

/// The pbxguard_lab::geolite2 database, or a failure that says how to get it.
fn real_database() -> &'static Path {
    let db = Path::new(geolite2::CITY_DB);
    assert!(
        db.is_file(),
        "{} is missing: run `cargo xtask setup` (it installs PyPI maxminddb-geolite2 {} there)",
        db.display(),
        geolite2::PACKAGE_VERSION
    );
    db
}

/// Walks the database with the Python `maxminddb` package (a separate reader and
/// `ipaddress.collapse_addresses` for the aggregation) and prints the aggregated networks
/// whose country (`country.iso_code`, else `registered_country.iso_code`, as pbxguard reads
/// it) is one of argv[2:]. The tree walk uses the pure-Python reader's node access (pinned
/// `maxminddb`); each distinct record is decoded once by the C reader, which is much faster
/// than decoding all 3.4 million networks.
const PYTHON_DENY_WALK: &str = r#"
import ipaddress, sys, maxminddb
path, deny = sys.argv[1], set(sys.argv[2:])
tree = maxminddb.open_database(path, maxminddb.MODE_MMAP)
records = maxminddb.open_database(path)
assert tree.metadata().ip_version == 6
nodes, ipv4_start = tree.metadata().node_count, tree._ipv4_start
countries, v4, v6 = {}, [], []
stack = [(0, 0, 0)]
while stack:
    node, depth, bits = stack.pop()
    if bits != 0 and node == ipv4_start:
        continue  # ::ffff:0:0/96, 2001::/32 and 2002::/16 alias the IPv4 tree
    if node < nodes:
        stack.append((tree._read_node(node, 1), depth + 1, bits << 1 | 1))
        stack.append((tree._read_node(node, 0), depth + 1, bits << 1))
        continue
    if node == nodes:
        continue  # no data
    addr = bits << (128 - depth)
    v4_net = depth >= 96 and addr >> 32 == 0
    if node not in countries:
        ip = ipaddress.IPv4Address(addr) if v4_net else ipaddress.IPv6Address(addr)
        r = records.get(ip) or {}
        countries[node] = (r.get("country") or {}).get("iso_code") or (
            r.get("registered_country") or {}).get("iso_code")
    if countries[node] in deny:
        if v4_net:
            v4.append(ipaddress.IPv4Network((addr, depth - 96)))
        else:
            v6.append(ipaddress.IPv6Network((addr, depth)))
for net in [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]:
    print(net)
"#;

/// The real database: countries of well-known addresses, the aggregated deny set against an
/// independent walk, and a full allow-one-country set in the real XDP geo maps.
#[test]
fn the_real_geolite2_city_database() {
    let db = real_database();
    let deny = ["CN", "RU"];
    // The independent walk takes tens of seconds; it runs while pbxguard walks.
    let python = Command::new("python3")
        .arg("-c")
        .arg(PYTHON_DENY_WALK)
        .arg(db)
        .args(deny)
        .env("PYTHONPATH", geolite2::PYTHON_DIR)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (cargo xtask setup installs the maxminddb reader)");

    // Country assignments of the 2018 data, checked with mmdblookup (Debian's mmdb-bin).
    for (ip, country) in [
        ("8.8.8.8", "US"),
        ("2001:4860::1", "US"),
        ("1.1.1.1", "AU"),
        ("217.0.0.1", "DE"),
        ("2003::1", "DE"),
        ("81.2.69.142", "GB"),
        ("77.88.55.77", "RU"),
        ("2a02:6b8::1", "RU"),
        ("114.114.114.114", "CN"),
        ("133.11.0.1", "JP"),
        ("200.160.0.1", "BR"),
    ] {
        let found = lookup(&config(db), ip.parse().unwrap()).unwrap().0;
        assert_eq!(found.as_deref(), Some(country), "{ip}");
    }
    assert_eq!(
        lookup(&config(db), "10.1.2.3".parse().unwrap()).unwrap().0,
        None,
        "private space is not in the database"
    );

    let deny_config = GeoConfig {
        deny_countries: deny.iter().map(|c| c.to_string()).collect(),
        ..config(db)
    };
    let started = Instant::now();
    let denied = blocked_networks(&deny_config).unwrap();
    let walk = started.elapsed();
    let (v4, v6) = families(&denied);
    println!(
        "deny {deny:?}: {} networks ({v4} IPv4, {v6} IPv6), database walked in {:.2} s",
        denied.len(),
        walk.as_secs_f64()
    );
    let covers = |ip: &str| {
        let ip: IpAddr = ip.parse().unwrap();
        denied.iter().any(|n| n.contains(&ip))
    };
    for ip in ["77.88.55.77", "2a02:6b8::1", "114.114.114.114"] {
        assert!(covers(ip), "{ip} is in a denied country");
    }
    for ip in ["8.8.8.8", "217.0.0.1", "2003::1", "133.11.0.1"] {
        assert!(!covers(ip), "{ip} is not");
    }
    let out = python.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python walk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected: Vec<ipnet::IpNet> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    expected.sort();
    let mut got = denied.clone();
    got.sort();
    assert_eq!(
        got.len(),
        expected.len(),
        "pbxguard and Python's maxminddb disagree on the aggregated {deny:?} networks"
    );
    assert_eq!(got, expected);

    // The largest kind of set a real config makes: accept one country, drop every other.
    let allow_us = GeoConfig {
        allow_countries: vec!["US".into()],
        ..config(db)
    };
    let started = Instant::now();
    let full = blocked_networks(&allow_us).unwrap();
    let walk = started.elapsed();
    let mut program = XdpProgram::load(&LoadOptions::default()).expect("XDP program loads (root)");
    let started = Instant::now();
    program.set_geo(&full).unwrap();
    let load = started.elapsed();
    let (v4, v6) = families(&full);
    let maps = geo_maps();
    let entries = |name: &str| maps.iter().find(|m| m.0 == name).map(|m| m.1);
    assert_eq!(
        (entries("GEO_V4"), entries("GEO_V6")),
        (Some(v4), Some(v6)),
        "every network is in the kernel's geo maps"
    );
    println!(
        "allow [\"US\"]: {} networks ({v4} IPv4, {v6} IPv6), walked in {:.2} s, loaded into \
         the XDP maps in {:.2} s, map memory {:.1} MiB (GEO_V4 + GEO_V6)",
        full.len(),
        walk.as_secs_f64(),
        load.as_secs_f64(),
        maps.iter().map(|m| m.2).sum::<u64>() as f64 / (1024.0 * 1024.0)
    );
    // And the program drops by them: Yandex (RU) is blocked, Google (US) passes.
    let verdict = |program: &mut XdpProgram, src: Ipv4Addr| {
        let frame = Frame::ethernet().udp4(src, Ipv4Addr::new(192, 0, 2, 1), 5060, b"OPTIONS");
        program
            .xdp()
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN")
            .return_value
    };
    assert_eq!(
        verdict(&mut program, Ipv4Addr::new(77, 88, 55, 77)),
        1,
        "XDP_DROP"
    );
    assert_eq!(
        verdict(&mut program, Ipv4Addr::new(8, 8, 8, 8)),
        2,
        "XDP_PASS"
    );
    let geo_blocked = program
        .counters()
        .unwrap()
        .into_iter()
        .find(|r| r.reason == "geo_blocked")
        .map(|r| r.packets);
    assert_eq!(geo_blocked, Some(1));
}

/// (IPv4, IPv6) counts.
fn families(nets: &[ipnet::IpNet]) -> (usize, usize) {
    let v4 = nets
        .iter()
        .filter(|n| matches!(n, ipnet::IpNet::V4(_)))
        .count();
    (v4, nets.len() - v4)
}

/// This process's `GEO_*` maps: (name, entries counted in the kernel, memlock bytes from
/// `/proc/self/fdinfo`).
fn geo_maps() -> Vec<(String, usize, u64)> {
    let mut seen = std::collections::HashSet::new();
    let mut maps = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo").unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let (Some(id), Some(memlock)) = (field("map_id:"), field("memlock:")) else {
            continue;
        };
        let Ok(info) = aya::maps::MapInfo::from_id(id as u32) else {
            continue;
        };
        let name = info.name_as_str().unwrap_or_default().to_string();
        if !name.starts_with("GEO_") || !seen.insert(id) {
            continue;
        }
        let map = aya::maps::Map::LpmTrie(aya::maps::MapData::from_id(id as u32).unwrap());
        let entries = if name == "GEO_V4" {
            aya::maps::LpmTrie::<_, [u8; 4], u32>::try_from(map)
                .unwrap()
                .keys()
                .count()
        } else {
            aya::maps::LpmTrie::<_, [u8; 16], u32>::try_from(map)
                .unwrap()
                .keys()
                .count()
        };
        maps.push((name, entries, memlock));
    }
    maps
}
