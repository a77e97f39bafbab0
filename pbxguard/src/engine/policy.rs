//! Thresholds and escalation: pure functions of the config, testable without root.

use std::time::{Duration, SystemTime};

use crate::{
    config::{Config, PolicyConfig, Thresholds},
    detect::Evidence,
    schedule::Schedule,
    store::BanRecord,
    units::{BanDuration, MAX_DURATION},
};

/// The thresholds in force for one failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effective {
    /// Failures that trigger a ban.
    pub maxretry: u32,
    /// Window they are counted in.
    pub findtime: Duration,
    /// First ban's length.
    pub bantime: BanDuration,
}

impl Effective {
    fn apply(&mut self, t: &Thresholds) {
        if let Some(m) = t.maxretry {
            self.maxretry = m;
        }
        if let Some(f) = t.findtime {
            self.findtime = f;
        }
        if let Some(b) = t.bantime {
            self.bantime = b;
        }
    }
}

/// What became of one failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// From an allowlisted, loopback or own address: never counted.
    Ignored,
    /// Spoofable evidence against a *known* address (one that authenticated recently):
    /// never counted, since one forged packet could have produced it.
    IgnoredSpoofable,
    /// A success line: the address is now known.
    Known,
    /// Counted, below the threshold.
    Counted {
        /// Failures within findtime.
        failures: u32,
        /// Threshold.
        maxretry: u32,
    },
    /// The source is already banned (a line logged before the ban took effect).
    AlreadyBanned,
    /// Banned now.
    Banned(BanRecord),
    /// The ban was due but the kernel refused it (map or set full); nothing recorded.
    NotEnforced(String),
    /// Observe mode: this ban would have been made.
    WouldBan(BanRecord),
}

/// Length of the `offense`-th ban (1-based): `bantime * factor^(offense-1)`, capped at
/// `bantime_max` (with `permanent`, at [`MAX_DURATION`]), permanent from `permanent_after`
/// on. Never shorter than `bantime`, never longer than [`MAX_DURATION`], whatever the inputs.
pub fn escalate(base: BanDuration, offense: u32, policy: &PolicyConfig) -> BanDuration {
    if policy.permanent_after > 0 && offense >= policy.permanent_after {
        return BanDuration::Permanent;
    }
    let BanDuration::For(base) = base else {
        return BanDuration::Permanent;
    };
    let base = base.min(MAX_DURATION);
    let factor = policy
        .bantime_factor
        .powi(offense.saturating_sub(1).min(64) as i32);
    // NaN, infinity or a product past the cap all end at the cap.
    let scaled = Duration::try_from_secs_f64(base.as_secs_f64() * factor)
        .unwrap_or(MAX_DURATION)
        .clamp(base, MAX_DURATION);
    match policy.bantime_max {
        BanDuration::Permanent => BanDuration::For(scaled),
        BanDuration::For(max) => BanDuration::For(scaled.min(max.max(base))),
    }
}

/// The off-hours schedule of `config` (validated with it).
pub fn offhours_schedule(config: &Config) -> Option<Schedule> {
    config
        .offhours
        .as_ref()
        .and_then(|o| Schedule::parse(&o.schedule).ok())
}

/// Whether `schedule` covers `now` (host local time).
pub fn offhours_active(schedule: Option<&Schedule>, now: SystemTime) -> bool {
    let local = chrono::DateTime::<chrono::Local>::from(now).naive_local();
    schedule.is_some_and(|s| s.contains(local))
}

/// Thresholds for a failure: policy (for the program's own filters, a default by
/// evidence), then the filter's, then the source's overrides; inside off-hours windows the
/// off-hours values win.
pub fn thresholds(
    config: &Config,
    filter: &str,
    evidence: Evidence,
    source: usize,
    offhours: bool,
) -> Effective {
    let p = &config.policy;
    let mut e = Effective {
        maxretry: p.maxretry,
        findtime: p.findtime,
        bantime: p.bantime,
    };
    // A scanner's User-Agent over an established TCP connection is conclusive: one bans.
    // Over UDP one forged datagram can carry it with any source address, and so can a
    // flood: those need repeated hits within findtime (the packets are dropped at once).
    match (filter, evidence) {
        ("sip-scanner", Evidence::Proven) => e.maxretry = 1,
        ("sip-scanner", Evidence::Spoofable) => e.maxretry = config.scanners.udp_hits,
        ("sip-flood", _) => e.maxretry = config.flood.failures_to_ban,
        _ => {}
    }
    if let Some(t) = p.filter.get(filter) {
        e.apply(t);
    }
    if let Some(s) = config.source.get(source) {
        e.apply(&s.thresholds());
    }
    if offhours && let Some(off) = &config.offhours {
        e.apply(&off.thresholds());
    }
    e
}

/// The longest findtime anywhere in the config: how long failures must be remembered.
pub fn longest_findtime(c: &Config) -> Duration {
    std::iter::once(c.policy.findtime)
        .chain(c.policy.filter.values().filter_map(|t| t.findtime))
        .chain(c.source.iter().filter_map(|s| s.findtime))
        .chain(c.offhours.iter().filter_map(|o| o.findtime))
        .max()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(extra: &str) -> Config {
        Config::parse(
            &format!("[enforce]\ninterfaces = [\"eth0\"]\n{extra}"),
            Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn escalation_multiplies_caps_and_turns_permanent() {
        let c = config(
            "[policy]\nbantime = \"10m\"\nbantime_factor = 2.0\nbantime_max = \"30m\"\npermanent_after = 4\n",
        );
        let base = c.policy.bantime;
        let mins = |d: BanDuration| match d {
            BanDuration::For(d) => d.as_secs() / 60,
            BanDuration::Permanent => u64::MAX,
        };
        assert_eq!(mins(escalate(base, 1, &c.policy)), 10);
        assert_eq!(mins(escalate(base, 2, &c.policy)), 20);
        assert_eq!(mins(escalate(base, 3, &c.policy)), 30);
        assert_eq!(escalate(base, 4, &c.policy), BanDuration::Permanent);
        // A huge offense count saturates instead of overflowing.
        assert_eq!(
            escalate(base, u32::MAX - 1, &c.policy),
            BanDuration::Permanent
        );
    }

    proptest::proptest! {
        /// Any accepted base and cap, any valid factor and any offense count: no panic, and
        /// the length stays between `bantime` and 100 years (where expiries, nft timeouts and
        /// the program's clock are all safe).
        #[test]
        fn escalation_stays_within_bounds(
            base in 1..=MAX_DURATION.as_secs(),
            max in proptest::option::of(1..=MAX_DURATION.as_secs()),
            factor in 1.0f64..=100.0,
            offense: u32,
        ) {
            let policy = PolicyConfig {
                bantime_factor: factor,
                bantime_max: max.map_or(BanDuration::Permanent, |m| {
                    BanDuration::For(Duration::from_secs(m))
                }),
                ..PolicyConfig::default()
            };
            let base = Duration::from_secs(base);
            match escalate(BanDuration::For(base), offense, &policy) {
                BanDuration::For(d) => {
                    proptest::prop_assert!(d >= base && d <= MAX_DURATION, "{d:?}");
                    let now = SystemTime::now();
                    proptest::prop_assert!(BanDuration::For(d).expiry_from(now).is_some());
                }
                BanDuration::Permanent => proptest::prop_assert!(false, "only permanent_after makes it permanent"),
            }
        }
    }

    #[test]
    fn program_detections_need_repeats_unless_proven() {
        use Evidence::{Proven, Spoofable};
        let c = config("[policy]\nmaxretry = 5\n");
        assert_eq!(thresholds(&c, "asterisk", Proven, 0, false).maxretry, 5);
        assert_eq!(thresholds(&c, "asterisk", Spoofable, 0, false).maxretry, 5);
        // A scanner over an established TCP connection bans at once, over UDP at the third.
        assert_eq!(thresholds(&c, "sip-scanner", Proven, 0, false).maxretry, 1);
        assert_eq!(
            thresholds(&c, "sip-scanner", Spoofable, 0, false).maxretry,
            3
        );
        assert_eq!(thresholds(&c, "sip-flood", Spoofable, 0, false).maxretry, 3);
        assert_eq!(thresholds(&c, "sip-flood", Proven, 0, false).maxretry, 3);
    }

    #[test]
    fn evidence_defaults_follow_their_keys_and_lose_to_overrides() {
        use Evidence::{Proven, Spoofable};
        let c = config(
            "[scanners]\nudp_hits = 7\n\n[flood]\nfailures_to_ban = 4\n\n[policy.filter.sip-flood]\nmaxretry = 2\n",
        );
        assert_eq!(
            thresholds(&c, "sip-scanner", Spoofable, 0, false).maxretry,
            7
        );
        assert_eq!(thresholds(&c, "sip-scanner", Proven, 0, false).maxretry, 1);
        // An explicit per-filter threshold is the admin's word and wins.
        assert_eq!(thresholds(&c, "sip-flood", Spoofable, 0, false).maxretry, 2);
        let c = config("[policy.filter.sip-scanner]\nmaxretry = 1\n");
        assert_eq!(
            thresholds(&c, "sip-scanner", Spoofable, 0, false).maxretry,
            1
        );
        assert!(
            Config::parse(
                "[enforce]\ninterfaces = [\"eth0\"]\n[scanners]\nudp_hits = 0\n",
                Path::new("t.toml")
            )
            .is_err()
        );
    }
}
