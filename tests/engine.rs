//! The decision engine with the real XDP maps (program loaded, not attached): thresholds,
//! windows, escalation, IPv6 prefixes, the allowlist, observe mode and off-hours. Needs root.

use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, SystemTime},
};

use pbxguard::{
    config::Config,
    detect::{Evidence, Kind},
    enforce::program::{LoadOptions, XdpProgram},
    engine::{Engine, Outcome},
    source::Event,
    store::Store,
    units::parse_net,
};

const BASE: &str = "[enforce]\ninterfaces = [\"eth0\"]\n";

struct Fixture {
    engine: Engine,
    state: tempfile::TempDir,
    config: Config,
}

fn engine(extra: &str) -> Fixture {
    let state = tempfile::tempdir().unwrap();
    let config = Config::parse(&format!("{BASE}{extra}"), Path::new("test.toml")).unwrap();
    let program = XdpProgram::load(&LoadOptions {
        pin_dir: None,
        max_bans: 4096,
        ..Default::default()
    })
    .expect("load (run as root)");
    let store = Store::open(state.path(), SystemTime::now()).unwrap();
    Fixture {
        engine: Engine::start(config.clone(), store, Box::new(program)).unwrap(),
        state,
        config,
    }
}

impl Fixture {
    /// Restarts on the same state directory, as after a daemon restart.
    fn restart(self) -> Fixture {
        let Fixture {
            engine,
            state,
            config,
        } = self;
        drop(engine);
        let program = XdpProgram::load(&LoadOptions {
            pin_dir: None,
            max_bans: 4096,
            ..Default::default()
        })
        .unwrap();
        let store = Store::open(state.path(), SystemTime::now()).unwrap();
        Fixture {
            engine: Engine::start(config.clone(), store, Box::new(program)).unwrap(),
            state,
            config,
        }
    }

    fn fail(&mut self, ip: &str, at: SystemTime) -> Outcome {
        let event = Event {
            ip: ip.parse().unwrap(),
            filter: "asterisk".into(),
            rule: "wrong_password".into(),
            source: 0,
            at,
            evidence: pbxguard::detect::Evidence::Proven,
            kind: pbxguard::detect::Kind::Failure,
            extension: None,
        };
        self.engine.on_failure(&event, at).unwrap()
    }

    /// One event of any filter, evidence and kind.
    fn event(&mut self, ip: &str, filter: &str, evidence: Evidence, kind: Kind) -> Outcome {
        let at = t0();
        let event = Event {
            ip: ip.parse().unwrap(),
            filter: filter.into(),
            rule: "r".into(),
            source: 0,
            at,
            evidence,
            kind,
            extension: None,
        };
        self.engine.on_failure(&event, at).unwrap()
    }

    fn in_map(&self, net: &str) -> bool {
        self.engine
            .enforcer()
            .banned()
            .unwrap()
            .contains(&parse_net(net).unwrap())
    }
}

fn t0() -> SystemTime {
    SystemTime::now()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn bans_at_maxretry_within_findtime() {
    let mut f = engine("[policy]\nmaxretry = 3\nfindtime = \"1m\"\nbantime = \"10m\"\n");
    let t = t0();
    assert_eq!(
        f.fail("198.51.100.7", t),
        Outcome::Counted {
            failures: 1,
            maxretry: 3
        }
    );
    assert_eq!(
        f.fail("198.51.100.7", t + secs(1)),
        Outcome::Counted {
            failures: 2,
            maxretry: 3
        }
    );
    let Outcome::Banned(ban) = f.fail("198.51.100.7", t + secs(2)) else {
        panic!("not banned")
    };
    assert_eq!(ban.net.to_string(), "198.51.100.7/32");
    assert_eq!(
        (ban.source.as_str(), ban.rule.as_deref(), ban.failures),
        ("asterisk", Some("wrong_password"), Some(3))
    );
    assert_eq!(
        ban.expires.unwrap().duration_since(ban.created).unwrap(),
        secs(600)
    );
    assert!(f.in_map("198.51.100.7"));
    assert_eq!(f.fail("198.51.100.7", t + secs(3)), Outcome::AlreadyBanned);
}

#[test]
fn failures_outside_findtime_do_not_add_up() {
    let mut f = engine("[policy]\nmaxretry = 3\nfindtime = \"1m\"\n");
    let t = t0();
    for i in 0..6 {
        let outcome = f.fail("198.51.100.7", t + secs(i * 40));
        assert!(
            matches!(
                outcome,
                Outcome::Counted {
                    failures: 1 | 2,
                    ..
                }
            ),
            "{i}: {outcome:?}"
        );
    }
    assert!(!f.in_map("198.51.100.7"));
}

#[test]
fn repeat_offenders_get_longer_bans_across_restarts() {
    let mut f = engine(
        "[policy]\nmaxretry = 1\nbantime = \"10m\"\nbantime_factor = 3.0\nbantime_max = \"1h\"\npermanent_after = 4\n",
    );
    let t = t0();
    let length = |o: Outcome| match o {
        Outcome::Banned(b) => b.expires.map(|e| e.duration_since(b.created).unwrap()),
        other => panic!("{other:?}"),
    };
    assert_eq!(length(f.fail("203.0.113.9", t)), Some(secs(600)));
    f.engine.unban(parse_net("203.0.113.9").unwrap()).unwrap();
    let mut f = f.restart();
    assert_eq!(
        length(f.fail("203.0.113.9", t)),
        Some(secs(1800)),
        "second offense, remembered across restart"
    );
    f.engine.unban(parse_net("203.0.113.9").unwrap()).unwrap();
    assert_eq!(
        length(f.fail("203.0.113.9", t)),
        Some(secs(3600)),
        "capped at bantime_max"
    );
    f.engine.unban(parse_net("203.0.113.9").unwrap()).unwrap();
    assert_eq!(
        length(f.fail("203.0.113.9", t)),
        None,
        "permanent from the fourth offense"
    );
}

#[test]
fn ipv6_is_tracked_and_banned_per_prefix() {
    let mut f = engine("[policy]\nmaxretry = 2\nipv6_prefix = 64\n");
    let t = t0();
    f.fail("2001:db8:bad:1::1", t);
    let Outcome::Banned(ban) = f.fail("2001:db8:bad:1:ffff::2", t) else {
        panic!("two addresses of one /64 add up")
    };
    assert_eq!(ban.net.to_string(), "2001:db8:bad:1::/64");
    assert!(f.in_map("2001:db8:bad:1::/64"));
    assert!(matches!(
        f.fail("2001:db8:bad:2::1", t),
        Outcome::Counted { failures: 1, .. }
    ));
}

#[test]
fn allowlisted_loopback_and_own_addresses_are_ignored() {
    let mut f = engine("[policy]\nmaxretry = 1\n[allow]\nnetworks = [\"192.0.2.0/24\"]\n");
    let t = t0();
    assert_eq!(f.fail("192.0.2.55", t), Outcome::Ignored);
    assert_eq!(f.fail("127.0.0.1", t), Outcome::Ignored);
    assert_eq!(f.fail("::1", t), Outcome::Ignored);
    let own = pbxguard::guard::host_addresses()
        .into_iter()
        .map(|h| h.addr)
        .find(|a: &IpAddr| !a.is_loopback());
    if let Some(own) = own {
        assert_eq!(f.fail(&own.to_string(), t), Outcome::Ignored);
    }
    assert!(f.engine.bans().is_empty());
    assert!(f.engine.enforcer().banned().unwrap().is_empty());
    assert_eq!(
        f.engine.status().ignored_failures,
        if own.is_some() { 4 } else { 3 }
    );
}

#[test]
fn observe_mode_bans_nothing() {
    let mut f = engine("[policy]\nmaxretry = 2\nmode = \"observe\"\n");
    let t = t0();
    f.fail("198.51.100.7", t);
    assert!(matches!(f.fail("198.51.100.7", t), Outcome::WouldBan(_)));
    assert!(f.engine.bans().is_empty());
    assert!(!f.in_map("198.51.100.7"));
    assert_eq!(f.engine.status().would_ban, 1);
}

#[test]
fn offhours_thresholds_apply_inside_the_schedule() {
    // "daily" covers every minute, so the stricter threshold is always in force here.
    let mut f = engine(
        "[policy]\nmaxretry = 5\n[offhours]\nschedule = [\"daily\"]\nmaxretry = 1\nbantime = \"1d\"\n",
    );
    let t = t0();
    assert!(f.engine.offhours_active(t));
    let Outcome::Banned(ban) = f.fail("198.51.100.7", t) else {
        panic!("off-hours maxretry = 1")
    };
    assert_eq!(
        ban.expires.unwrap().duration_since(ban.created).unwrap(),
        secs(86400)
    );
}

#[test]
fn per_filter_and_per_source_overrides() {
    let f = engine(
        "[policy]\nmaxretry = 5\nfindtime = \"10m\"\n[policy.filter.asterisk]\nmaxretry = 3\n\
         [[source]]\npath = \"/var/log/asterisk/full\"\nfilters = [\"asterisk\"]\nfindtime = \"1h\"\n",
    );
    let t = f
        .engine
        .thresholds("asterisk", pbxguard::detect::Evidence::Proven, 0, t0());
    assert_eq!((t.maxretry, t.findtime), (3, secs(3600)));
    let t = f
        .engine
        .thresholds("sshd", pbxguard::detect::Evidence::Proven, 7, t0());
    assert_eq!((t.maxretry, t.findtime), (5, secs(600)));
}

/// Control characters in a reason (an admin's `--reason`, a rule name in a detected ban's
/// reason) could forge lines or escape sequences in `bans list`, the log and notifications:
/// they are stored as U+FFFD, in memory and in the journal.
#[test]
fn reasons_are_stored_without_control_characters() {
    let mut f = engine("[policy]\nmaxretry = 1\n");
    let manual = f
        .engine
        .ban(
            pbxguard::engine::BanRequest {
                net: parse_net("198.51.100.7").unwrap(),
                duration: None,
                reason: Some("spam\nbanned 10.0.0.1\x1b[0m\u{202e}".into()),
                source: "manual".into(),
            },
            t0(),
        )
        .unwrap();
    assert_eq!(
        manual.reason,
        "spam\u{fffd}banned 10.0.0.1\u{fffd}[0m\u{fffd}"
    );
    let event = Event {
        ip: "203.0.113.9".parse().unwrap(),
        filter: "asterisk".into(),
        rule: "forged\r\nrule\x07".into(),
        source: 0,
        at: t0(),
        evidence: pbxguard::detect::Evidence::Proven,
        kind: pbxguard::detect::Kind::Failure,
        extension: None,
    };
    let Outcome::Banned(detected) = f.engine.on_failure(&event, t0()).unwrap() else {
        panic!("not banned")
    };
    assert!(
        detected
            .reason
            .ends_with("(forged\u{fffd}\u{fffd}rule\u{fffd})"),
        "{}",
        detected.reason
    );
    let journal = pbxguard::store::journal::read(&f.state.path().join("bans.journal")).unwrap();
    for ban in journal.bans.values() {
        assert!(!ban.reason.contains(char::is_control), "{:?}", ban.reason);
    }
    assert_eq!(journal.bans.len(), 2);
}

#[test]
fn udp_scanner_hits_ban_at_the_third_tcp_at_once() {
    let mut f = engine("");
    let stranger = "203.0.113.40";
    for hit in 1..=2 {
        assert_eq!(
            f.event(stranger, "sip-scanner", Evidence::Spoofable, Kind::Failure),
            Outcome::Counted {
                failures: hit,
                maxretry: 3
            }
        );
        assert!(!f.in_map("203.0.113.40/32"));
    }
    let Outcome::Banned(ban) = f.event(stranger, "sip-scanner", Evidence::Spoofable, Kind::Failure)
    else {
        panic!("not banned at the third UDP hit")
    };
    assert_eq!(ban.evidence, Some(Evidence::Spoofable));
    assert!(f.in_map("203.0.113.40/32"));
    let Outcome::Banned(ban) = f.event(
        "203.0.113.41",
        "sip-scanner",
        Evidence::Proven,
        Kind::Failure,
    ) else {
        panic!("a scanner over TCP is banned at once")
    };
    assert_eq!(ban.evidence, Some(Evidence::Proven));
    // Floods need [flood] failures_to_ban (3) events whatever the protocol.
    for _ in 0..2 {
        assert!(matches!(
            f.event("203.0.113.42", "sip-flood", Evidence::Proven, Kind::Failure),
            Outcome::Counted { .. }
        ));
    }
    assert!(matches!(
        f.event(
            "203.0.113.42",
            "sip-flood",
            Evidence::Spoofable,
            Kind::Failure
        ),
        Outcome::Banned(_)
    ));
}

#[test]
fn a_known_phone_survives_spoofable_evidence_but_not_proven_failures_and_restarts() {
    let mut f = engine("[policy]\nmaxretry = 2\n");
    let phone = "198.51.100.30";
    assert_eq!(
        f.event(phone, "asterisk", Evidence::Proven, Kind::Success),
        Outcome::Known
    );
    for _ in 0..10 {
        assert_eq!(
            f.event(phone, "sip-scanner", Evidence::Spoofable, Kind::Failure),
            Outcome::IgnoredSpoofable
        );
        assert_eq!(
            f.event(phone, "asterisk", Evidence::Spoofable, Kind::Failure),
            Outcome::IgnoredSpoofable
        );
    }
    assert!(!f.in_map("198.51.100.30/32"));
    let status = f.engine.status();
    assert_eq!((status.known, status.ignored_spoofable), (1, 20));
    // The sweep saves it; a restart still knows the phone.
    f.engine.expire(t0()).unwrap();
    let mut f = f.restart();
    assert!(f.engine.known(phone.parse().unwrap(), t0()).is_some());
    assert_eq!(
        f.event(phone, "sip-flood", Evidence::Spoofable, Kind::Failure),
        Outcome::IgnoredSpoofable
    );
    // Proven failures (a wrong password after a challenge) count as for anyone.
    assert!(matches!(
        f.event(phone, "asterisk", Evidence::Proven, Kind::Failure),
        Outcome::Counted { failures: 1, .. }
    ));
    assert!(matches!(
        f.event(phone, "asterisk", Evidence::Proven, Kind::Failure),
        Outcome::Banned(_)
    ));
    assert!(f.in_map("198.51.100.30/32"));
}

#[test]
fn spoofable_evidence_from_a_known_phones_v6_neighbour_bans_only_that_address() {
    let mut f = engine("[policy]\nmaxretry = 1\n");
    f.event(
        "2001:db8:5::10",
        "asterisk",
        Evidence::Proven,
        Kind::Success,
    );
    let Outcome::Banned(ban) = f.event(
        "2001:db8:5::66",
        "asterisk",
        Evidence::Spoofable,
        Kind::Failure,
    ) else {
        panic!("the neighbour is a stranger")
    };
    assert_eq!(ban.net, parse_net("2001:db8:5::66/128").unwrap());
    assert!(!f.in_map("2001:db8:5::/64"));
}
