//! The decision engine with the real XDP maps (program loaded, not attached): thresholds,
//! windows, escalation, IPv6 prefixes, the allowlist, observe mode and off-hours. Needs root.

use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, SystemTime},
};

use pbxguard::{
    config::Config,
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
    let t = f.engine.thresholds("asterisk", 0, t0());
    assert_eq!((t.maxretry, t.findtime), (3, secs(3600)));
    let t = f.engine.thresholds("sshd", 7, t0());
    assert_eq!((t.maxretry, t.findtime), (5, secs(600)));
}
