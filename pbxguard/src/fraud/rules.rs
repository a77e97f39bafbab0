//! The fraud rules, evaluated per extension over its recent outbound calls. Windows are
//! measured in *call time* (the record's start), not wall-clock time, so replaying a CDR
//! file offline (`pbxguard test-cdr`) gives the same hits as following it live.
//!
//! Per extension the state holds the outbound calls of the last 24 hours, the countries
//! called (with when, for `new_country`) and when each rule last fired (a hit keeps the rule
//! quiet for `[fraud] quiet`). It is serialisable, so it survives restarts (`watch.rs`).

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::{
    cdr::CallRecord,
    numbers::{Class, Classified},
};
use crate::{config::FraudConfig, schedule::Schedule};

const HOUR: u64 = 3600;
const DAY: u64 = 86_400;
/// Calls remembered per extension (the oldest go first); a fraud night is far below it.
const MAX_CALLS: usize = 10_000;
/// Extensions remembered; the one silent longest goes first.
const MAX_EXTENSIONS: usize = 100_000;

/// A rate rule: name, the classes it counts, calls per hour, minutes per day.
type RateRule = (&'static str, &'static [Class], Option<u32>, Option<u32>);

/// One outbound call, as remembered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Start, Unix seconds.
    pub start: u64,
    /// End, Unix seconds.
    pub end: u64,
    /// Billed seconds.
    pub billsec: u64,
    /// Destination class.
    pub class: Class,
}

/// One extension's history.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtensionState {
    /// First call seen, Unix seconds.
    pub first_seen: u64,
    /// Latest call seen, Unix seconds.
    pub last_seen: u64,
    /// Outbound calls of the last day, oldest first.
    pub calls: VecDeque<Span>,
    /// Countries called, with the latest call (Unix seconds).
    pub countries: BTreeMap<String, u64>,
    /// When each rule last fired (Unix seconds of the call).
    pub fired: BTreeMap<String, u64>,
}

/// Everything the rules remember.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FraudState {
    /// By extension.
    pub extensions: BTreeMap<String, ExtensionState>,
}

/// A rule that fired.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hit {
    /// `high_risk_rate`, ... ([`crate::config::FRAUD_RULES`]).
    pub rule: &'static str,
    /// The extension that placed the call.
    pub extension: String,
    /// The number as dialled.
    pub destination: String,
    /// Destination country (ISO code).
    pub country: Option<String>,
    /// Destination class.
    pub class: Class,
    /// The call's start.
    #[serde(with = "crate::units::rfc3339")]
    pub time: SystemTime,
    /// What was counted against which limit, in words.
    pub detail: String,
    /// Whether `[fraud] ban` names this rule.
    pub ban: bool,
}

/// Where an extension stands against one limit, for `fraud status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Standing {
    /// The rule.
    pub rule: &'static str,
    /// Counted now (calls, minutes or cost).
    pub value: f64,
    /// The limit.
    pub limit: f64,
}

/// One extension in `fraud status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExtensionReport {
    /// The extension.
    pub extension: String,
    /// Outbound calls in the last hour, by class.
    pub calls_last_hour: BTreeMap<Class, u64>,
    /// Billed minutes in the last day, by class.
    pub minutes_last_day: BTreeMap<Class, u64>,
    /// The limit it is closest to (largest value / limit).
    pub closest: Option<Standing>,
    /// When the extension last called out.
    #[serde(with = "crate::units::rfc3339")]
    pub last_call: SystemTime,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Whether a class leaves the country.
fn abroad(class: Class) -> bool {
    matches!(
        class,
        Class::International | Class::HighRisk | Class::Premium
    )
}

/// The rules with their config and state.
pub struct Evaluator {
    config: FraudConfig,
    offhours: Option<Schedule>,
    state: FraudState,
}

impl Evaluator {
    /// Rules of `config`, with the `[offhours]` schedule for `offhours_international`.
    pub fn new(config: FraudConfig, offhours: Option<Schedule>, state: FraudState) -> Evaluator {
        Evaluator {
            config,
            offhours,
            state,
        }
    }

    /// The state, to be saved.
    pub fn state(&self) -> &FraudState {
        &self.state
    }

    /// Counts `call` and returns the rules it makes fire.
    pub fn evaluate(&mut self, call: &CallRecord, dest: &Classified) -> Vec<Hit> {
        if dest.class == Class::Internal {
            return Vec::new();
        }
        let start = secs(call.start);
        let span = Span {
            start,
            end: secs(call.end).max(start),
            billsec: call.billsec,
            class: dest.class,
        };
        self.make_room(&call.extension);
        let limits = self.config.limits_for(&call.extension);
        let state = self
            .state
            .extensions
            .entry(call.extension.clone())
            .or_insert_with(|| ExtensionState {
                first_seen: start,
                ..Default::default()
            });
        state.first_seen = state.first_seen.min(start);
        state.last_seen = state.last_seen.max(start);
        state
            .calls
            .retain(|c| c.start + DAY > start && c.start <= start + DAY);
        state.calls.push_back(span);
        while state.calls.len() > MAX_CALLS {
            state.calls.pop_front();
        }
        let mut found: Vec<(&'static str, String)> = Vec::new();
        if limits.exempt == Some(true) {
            return Vec::new();
        }

        if self.config.offhours_international
            && abroad(dest.class)
            && crate::engine::policy::offhours_active(self.offhours.as_ref(), call.start)
        {
            found.push((
                "offhours_international",
                format!(
                    "{} call inside the [offhours] schedule",
                    dest.class.as_str()
                ),
            ));
        }
        let hour: Vec<&Span> = state
            .calls
            .iter()
            .filter(|c| c.start + HOUR > start && c.start <= start)
            .collect();
        let day_minutes = |classes: &[Class]| -> u64 {
            state
                .calls
                .iter()
                .filter(|c| classes.contains(&c.class))
                .map(|c| c.billsec)
                .sum::<u64>()
                / 60
        };
        let rates: [RateRule; 3] = [
            (
                "international_rate",
                &[Class::International, Class::HighRisk],
                limits.international_per_hour,
                limits.international_minutes_per_day,
            ),
            (
                "high_risk_rate",
                &[Class::HighRisk],
                limits.high_risk_per_hour,
                limits.high_risk_minutes_per_day,
            ),
            (
                "premium_rate",
                &[Class::Premium],
                limits.premium_per_hour,
                limits.premium_minutes_per_day,
            ),
        ];
        for (rule, classes, per_hour, minutes_per_day) in rates {
            if !classes.contains(&dest.class) {
                continue;
            }
            let calls = hour.iter().filter(|c| classes.contains(&c.class)).count() as u64;
            let minutes = day_minutes(classes);
            if let Some(limit) = per_hour.filter(|&l| calls > u64::from(l)) {
                found.push((
                    rule,
                    format!("{calls} calls in the last hour (limit {limit})"),
                ));
            } else if let Some(limit) = minutes_per_day.filter(|&l| minutes > u64::from(l)) {
                found.push((
                    rule,
                    format!("{minutes} minutes in the last day (limit {limit})"),
                ));
            }
        }
        if let Some(limit) = limits.concurrent_calls {
            let concurrent = state
                .calls
                .iter()
                .filter(|c| c.start <= start && c.end > start)
                .count() as u64
                + u64::from(span.end == span.start);
            if concurrent > u64::from(limit) {
                found.push((
                    "concurrent_calls",
                    format!("{concurrent} outbound calls at once (limit {limit})"),
                ));
            }
        }
        if let (Some(limit), false) = (limits.cost_per_hour, self.config.rates.is_empty()) {
            let cost: f64 = hour
                .iter()
                .map(|c| {
                    c.billsec as f64 / 60.0
                        * self.config.rates.get(&c.class).copied().unwrap_or(0.0)
                })
                .sum();
            if cost > limit {
                found.push((
                    "cost_rate",
                    format!("estimated cost {cost:.2} in the last hour (limit {limit:.2})"),
                ));
            }
        }
        if let Some(country) = dest.country.filter(|_| abroad(dest.class)) {
            let window = u64::from(self.config.new_country_days) * DAY;
            let previous = state.countries.insert(country.to_string(), start);
            let seen_long_enough = start.saturating_sub(state.first_seen) >= window;
            if self.config.new_country
                && seen_long_enough
                && previous.is_none_or(|last| last + window <= start)
            {
                found.push((
                    "new_country",
                    format!(
                        "first call to {country} in {} days",
                        self.config.new_country_days
                    ),
                ));
            }
        }

        let quiet = self.config.quiet.as_secs();
        let mut hits = Vec::new();
        for (rule, detail) in found {
            if state
                .fired
                .get(rule)
                .is_some_and(|&last| last + quiet > start && last <= start)
            {
                continue;
            }
            state.fired.insert(rule.to_string(), start);
            hits.push(Hit {
                rule,
                extension: call.extension.clone(),
                destination: dest.dialled.clone(),
                country: dest.country.map(str::to_string),
                class: dest.class,
                time: call.start,
                detail,
                ban: self.config.ban.iter().any(|b| b == rule),
            });
        }
        hits
    }

    /// Forgets the extension silent longest when a new one would exceed the cap.
    fn make_room(&mut self, extension: &str) {
        let extensions = &mut self.state.extensions;
        if extensions.len() < MAX_EXTENSIONS || extensions.contains_key(extension) {
            return;
        }
        if let Some(oldest) = extensions
            .iter()
            .min_by_key(|(_, s)| s.last_seen)
            .map(|(e, _)| e.clone())
        {
            extensions.remove(&oldest);
        }
    }

    /// Every extension's counters as of `now`, those nearest a limit first.
    pub fn report(&self, now: SystemTime) -> Vec<ExtensionReport> {
        let now = secs(now);
        let mut reports: Vec<ExtensionReport> = self
            .state
            .extensions
            .iter()
            .map(|(extension, state)| self.report_one(extension, state, now))
            .collect();
        let ratio = |r: &ExtensionReport| r.closest.as_ref().map_or(0.0, |s| s.value / s.limit);
        reports.sort_by(|a, b| ratio(b).total_cmp(&ratio(a)));
        reports
    }

    fn report_one(&self, extension: &str, state: &ExtensionState, now: u64) -> ExtensionReport {
        let limits = self.config.limits_for(extension);
        let mut calls_last_hour = BTreeMap::new();
        let mut minutes_last_day = BTreeMap::new();
        for call in &state.calls {
            if call.start + HOUR > now {
                *calls_last_hour.entry(call.class).or_insert(0) += 1;
            }
            if call.start + DAY > now {
                *minutes_last_day.entry(call.class).or_insert(0) += call.billsec;
            }
        }
        for minutes in minutes_last_day.values_mut() {
            *minutes /= 60;
        }
        let count = |map: &BTreeMap<Class, u64>, classes: &[Class]| -> f64 {
            classes.iter().filter_map(|c| map.get(c)).sum::<u64>() as f64
        };
        let international = [Class::International, Class::HighRisk];
        let candidates = [
            (
                "international_rate",
                count(&calls_last_hour, &international),
                limits.international_per_hour,
            ),
            (
                "international_rate",
                count(&minutes_last_day, &international),
                limits.international_minutes_per_day,
            ),
            (
                "high_risk_rate",
                count(&calls_last_hour, &[Class::HighRisk]),
                limits.high_risk_per_hour,
            ),
            (
                "high_risk_rate",
                count(&minutes_last_day, &[Class::HighRisk]),
                limits.high_risk_minutes_per_day,
            ),
            (
                "premium_rate",
                count(&calls_last_hour, &[Class::Premium]),
                limits.premium_per_hour,
            ),
            (
                "premium_rate",
                count(&minutes_last_day, &[Class::Premium]),
                limits.premium_minutes_per_day,
            ),
        ];
        let closest = candidates
            .into_iter()
            .filter_map(|(rule, value, limit)| {
                let limit = f64::from(limit?.max(1));
                Some(Standing { rule, value, limit })
            })
            .max_by(|a, b| (a.value / a.limit).total_cmp(&(b.value / b.limit)));
        ExtensionReport {
            extension: extension.to_string(),
            calls_last_hour,
            minutes_last_day,
            closest,
            last_call: time(state.last_seen),
        }
    }
}
