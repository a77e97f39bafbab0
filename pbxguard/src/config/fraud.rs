//! `[fraud]` and `[[cdr]]`: toll-fraud rules over the PBX's call records.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    fraud::numbers::{Class, DialPlan},
    units::{BanDuration, duration_serde},
};

/// Per-extension overrides (`[fraud.extension."101"]`); unset keys follow `[fraud]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FraudLimits {
    /// Calls to international (or worse) destinations per rolling hour.
    pub international_per_hour: Option<u32>,
    /// Minutes to international (or worse) destinations per rolling day.
    pub international_minutes_per_day: Option<u32>,
    /// Calls to high-risk destinations per rolling hour.
    pub high_risk_per_hour: Option<u32>,
    /// Minutes to high-risk destinations per rolling day.
    pub high_risk_minutes_per_day: Option<u32>,
    /// Calls to premium-rate numbers per rolling hour.
    pub premium_per_hour: Option<u32>,
    /// Minutes to premium-rate numbers per rolling day.
    pub premium_minutes_per_day: Option<u32>,
    /// Outbound calls of one extension at the same time.
    pub concurrent_calls: Option<u32>,
    /// Estimated cost per rolling hour (with `[fraud.rates]`).
    pub cost_per_hour: Option<f64>,
    /// No rule applies to this extension (a call centre's trunk-facing account, say).
    pub exempt: Option<bool>,
}

impl FraudLimits {
    /// The defaults: an office PBX's normal day stays well below them, a fraud night (tens
    /// of calls an hour to high-risk numbers) does not.
    pub fn builtin() -> FraudLimits {
        FraudLimits {
            international_per_hour: Some(20),
            international_minutes_per_day: Some(600),
            high_risk_per_hour: Some(3),
            high_risk_minutes_per_day: Some(60),
            premium_per_hour: Some(3),
            premium_minutes_per_day: Some(60),
            concurrent_calls: Some(4),
            cost_per_hour: None,
            exempt: Some(false),
        }
    }

    /// These limits, with `under`'s where these are unset.
    fn over(&self, under: &FraudLimits) -> FraudLimits {
        FraudLimits {
            international_per_hour: self.international_per_hour.or(under.international_per_hour),
            international_minutes_per_day: self
                .international_minutes_per_day
                .or(under.international_minutes_per_day),
            high_risk_per_hour: self.high_risk_per_hour.or(under.high_risk_per_hour),
            high_risk_minutes_per_day: self
                .high_risk_minutes_per_day
                .or(under.high_risk_minutes_per_day),
            premium_per_hour: self.premium_per_hour.or(under.premium_per_hour),
            premium_minutes_per_day: self
                .premium_minutes_per_day
                .or(under.premium_minutes_per_day),
            concurrent_calls: self.concurrent_calls.or(under.concurrent_calls),
            cost_per_hour: self.cost_per_hour.or(under.cost_per_hour),
            exempt: self.exempt.or(under.exempt),
        }
    }
}

/// `[fraud]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FraudConfig {
    /// ISO 3166-1 alpha-2 code of the PBX's country (`DE`): what is domestic.
    pub home_country: String,
    /// Outbound-route digits removed first (`["9"]`).
    pub strip_prefixes: Vec<String>,
    /// International access prefixes; empty: the home country's usual (`00`, NANP `011`).
    pub international_prefix: Vec<String>,
    /// Trunk prefix; unset: the home country's usual (`0`, NANP `1`).
    pub national_prefix: Option<String>,
    /// Premium-rate prefixes of national numbers (`["900"]`); empty: a built-in default.
    pub premium_prefixes: Vec<String>,
    /// More high-risk destinations (`"CU"`, `"+881"`).
    pub high_risk: Vec<String>,
    /// Destinations taken off the built-in high-risk list.
    pub not_high_risk: Vec<String>,
    /// Shorter numbers without a prefix are internal (extensions, feature codes).
    pub internal_max_digits: usize,
    /// The limits for every extension (`[fraud.limits]`); unset keys keep the built-in
    /// defaults ([`FraudLimits::builtin`]).
    pub limits: FraudLimits,
    /// Any international, high-risk or premium call inside `[offhours]` is a hit.
    pub offhours_international: bool,
    /// A call to a country the extension has not called for `new_country_days` is a hit
    /// (after the extension has been seen for that long).
    pub new_country: bool,
    /// See `new_country`.
    pub new_country_days: u32,
    /// Rules whose hit also bans the address the extension registered from; the others
    /// alert only.
    pub ban: Vec<String>,
    /// How long such a ban lasts.
    pub ban_for: BanDuration,
    /// After a hit, the same rule stays quiet for this extension this long.
    #[serde(with = "duration_serde")]
    pub quiet: Duration,
    /// `observe`: alert only, never ban (as `[policy] mode = "observe"` does for all).
    pub mode: Option<crate::config::Mode>,
    /// Estimated cost per minute by class (`international = 0.2`), for `cost_rate`.
    pub rates: BTreeMap<Class, f64>,
    /// Overrides per extension.
    pub extension: BTreeMap<String, FraudLimits>,
}

/// The rules, by the names used in logs, alerts, metrics and `test-cdr`.
pub const FRAUD_RULES: [&str; 7] = [
    "offhours_international",
    "international_rate",
    "high_risk_rate",
    "premium_rate",
    "concurrent_calls",
    "new_country",
    "cost_rate",
];

impl Default for FraudConfig {
    fn default() -> Self {
        let plan = DialPlan::default();
        Self {
            home_country: plan.home_country,
            strip_prefixes: plan.strip_prefixes,
            international_prefix: plan.international_prefix,
            national_prefix: plan.national_prefix,
            premium_prefixes: plan.premium_prefixes,
            high_risk: plan.high_risk,
            not_high_risk: plan.not_high_risk,
            internal_max_digits: plan.internal_max_digits,
            limits: FraudLimits::default(),
            offhours_international: true,
            new_country: true,
            new_country_days: 30,
            ban: vec![
                "offhours_international".into(),
                "high_risk_rate".into(),
                "premium_rate".into(),
                "cost_rate".into(),
            ],
            ban_for: BanDuration::For(Duration::from_secs(7 * 86400)),
            quiet: Duration::from_secs(3600),
            mode: None,
            rates: BTreeMap::new(),
            extension: BTreeMap::new(),
        }
    }
}

impl FraudConfig {
    /// The numbering part, for classification.
    pub fn dial_plan(&self) -> DialPlan {
        DialPlan {
            home_country: self.home_country.clone(),
            strip_prefixes: self.strip_prefixes.clone(),
            international_prefix: self.international_prefix.clone(),
            national_prefix: self.national_prefix.clone(),
            premium_prefixes: self.premium_prefixes.clone(),
            high_risk: self.high_risk.clone(),
            not_high_risk: self.not_high_risk.clone(),
            internal_max_digits: self.internal_max_digits,
        }
    }

    /// The limits for `extension`: its overrides, then `[fraud.limits]`, then the built-in.
    pub fn limits_for(&self, extension: &str) -> FraudLimits {
        let base = self.limits.over(&FraudLimits::builtin());
        match self.extension.get(extension) {
            Some(own) => own.over(&base),
            None => base,
        }
    }

    /// Checks serde cannot express: the key and what to do.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        self.dial_plan()
            .validate()
            .map_err(|(k, m)| (k.to_string(), m))?;
        if self.home_country.is_empty() {
            return Err((
                "fraud.home_country".into(),
                "set the PBX's country (ISO code, e.g. \"DE\"): it decides what is domestic".into(),
            ));
        }
        for rule in &self.ban {
            if !FRAUD_RULES.contains(&rule.as_str()) {
                return Err((
                    "fraud.ban".into(),
                    format!(
                        "`{rule}` is not a fraud rule: use any of {}",
                        FRAUD_RULES.join(", ")
                    ),
                ));
            }
        }
        if self.new_country_days == 0 {
            return Err(("fraud.new_country_days".into(), "must be at least 1".into()));
        }
        for (class, rate) in &self.rates {
            if !rate.is_finite() || *rate < 0.0 {
                return Err((
                    format!("fraud.rates.{}", class.as_str()),
                    "a cost per minute, 0 or more".into(),
                ));
            }
        }
        for (name, limits) in std::iter::once((".limits".to_string(), &self.limits)).chain(
            self.extension
                .iter()
                .map(|(e, l)| (format!(".extension.{e}"), l)),
        ) {
            if limits
                .cost_per_hour
                .is_some_and(|c| !c.is_finite() || c <= 0.0)
            {
                return Err((
                    format!("fraud{name}.cost_per_hour"),
                    "a positive amount (with [fraud.rates])".into(),
                ));
            }
        }
        Ok(())
    }
}
