//! Thresholds and escalation: pure functions of the config, testable without root.

use std::time::{Duration, SystemTime};

use crate::{
    config::{Config, PolicyConfig, Thresholds},
    schedule::Schedule,
    store::BanRecord,
    units::BanDuration,
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
/// `bantime_max`, permanent from `permanent_after` on.
pub fn escalate(base: BanDuration, offense: u32, policy: &PolicyConfig) -> BanDuration {
    if policy.permanent_after > 0 && offense >= policy.permanent_after {
        return BanDuration::Permanent;
    }
    let BanDuration::For(base) = base else {
        return BanDuration::Permanent;
    };
    let factor = policy
        .bantime_factor
        .powi(offense.saturating_sub(1).min(64) as i32);
    let secs = (base.as_secs_f64() * factor).min(u64::MAX as f64 / 4.0);
    let scaled = Duration::from_secs_f64(secs);
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

/// Thresholds for a failure: policy, then the filter's, then the source's overrides;
/// inside off-hours windows the off-hours values win.
pub fn thresholds(config: &Config, filter: &str, source: usize, offhours: bool) -> Effective {
    let p = &config.policy;
    let mut e = Effective {
        maxretry: p.maxretry,
        findtime: p.findtime,
        bantime: p.bantime,
    };
    // The program's own detections are already conclusive (a scanner's User-Agent, or
    // hundreds of over-limit packets): one is enough unless the admin says otherwise.
    if crate::config::XDP_FILTERS.contains(&filter) {
        e.maxretry = 1;
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

    #[test]
    fn program_detections_ban_at_once_unless_overridden() {
        let c = config("[policy]\nmaxretry = 5\n\n[policy.filter.sip-flood]\nmaxretry = 3\n");
        assert_eq!(thresholds(&c, "asterisk", 0, false).maxretry, 5);
        assert_eq!(thresholds(&c, "sip-scanner", 0, false).maxretry, 1);
        assert_eq!(thresholds(&c, "sip-flood", 0, false).maxretry, 3);
    }
}
