//! Semantic checks serde cannot express: each returns the offending key path and a message
//! that says what to do; [`Config::parse`] turns them into a [`super::ConfigError`] with a line.

use super::{Config, MAX_BAN_ENTRIES, XDP_FILTERS};
use crate::{
    detect::{FilterSpec, Matcher, filters},
    schedule::Schedule,
};

impl Config {
    /// Semantic checks serde cannot express; returns the offending key and the message.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        self.validate_basics()
            .map_err(|(k, m)| (k.to_string(), m))?;
        self.validate_fraud()?;
        super::feeds::validate(&self.blocklist)?;
        if let Some(crowdsec) = &self.crowdsec {
            crowdsec.validate().map_err(|(k, m)| (k.to_string(), m))?;
        }
        self.validate_detection()
    }

    /// Checks of `[geo]`, `[scanners]`, `[flood]` and `[[protect]]`, including whether the
    /// XDP maps can hold them.
    fn validate_perimeter(&self) -> Result<(), (String, String)> {
        self.geo.validate().map_err(|(k, m)| (k.to_string(), m))?;
        if self.scanners.user_agents.len() > pbxguard_common::MAX_SIGNATURES as usize {
            return Err((
                "scanners.user_agents".into(),
                format!("at most {} entries", pbxguard_common::MAX_SIGNATURES),
            ));
        }
        for ua in &self.scanners.user_agents {
            if ua.is_empty() || ua.len() > pbxguard_common::SIGNATURE_LEN || !ua.is_ascii() {
                return Err((
                    "scanners.user_agents".into(),
                    format!(
                        "`{ua}`: a signature is 1 to {} ASCII bytes (a User-Agent prefix)",
                        pbxguard_common::SIGNATURE_LEN
                    ),
                ));
            }
        }
        if self.scanners.udp_hits == 0 {
            return Err(("scanners.udp_hits".into(), "must be at least 1".into()));
        }
        if self.flood.failures_to_ban == 0 {
            return Err(("flood.failures_to_ban".into(), "must be at least 1".into()));
        }
        if self.flood.packets_per_second > 0 && self.flood.burst == 0 {
            return Err((
                "flood.burst".into(),
                "must be at least 1 when packets_per_second is set".into(),
            ));
        }
        self.validate_capacity()?;
        for (i, rule) in self.protect.iter().enumerate() {
            if rule.ports.is_empty() {
                return Err((
                    format!("protect[{i}].ports"),
                    "name the ports to protect, e.g. ports = [\"5060/udp\"]".into(),
                ));
            }
            if rule.trusted.is_empty() {
                return Err((
                    format!("protect[{i}].trusted"),
                    "no trusted sources: everyone would be dropped; list your trunk provider and office networks"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// Checks of `[fraud]` and `[[cdr]]`.
    fn validate_fraud(&self) -> Result<(), (String, String)> {
        if let Some(fraud) = &self.fraud {
            fraud.validate()?;
        }
        if !self.cdr.is_empty() && self.fraud.is_none() {
            return Err((
                "cdr".into(),
                "call records are followed for the [fraud] rules: add [fraud] with home_country"
                    .into(),
            ));
        }
        for (i, cdr) in self.cdr.iter().enumerate() {
            cdr.validate()
                .map_err(|(k, m)| (format!("cdr[{i}].{k}"), m))?;
        }
        Ok(())
    }

    /// Checks of `[policy]`, `[offhours]`, `[[filter]]` and `[[source]]`.
    fn validate_detection(&self) -> Result<(), (String, String)> {
        self.validate_perimeter()?;
        let p = &self.policy;
        if p.maxretry == 0 {
            return Err(("policy.maxretry".into(), "must be at least 1".into()));
        }
        if !(1.0..=100.0).contains(&p.bantime_factor) {
            return Err((
                "policy.bantime_factor".into(),
                format!(
                    "{} is out of range: use 1.0 (no escalation) to 100",
                    p.bantime_factor
                ),
            ));
        }
        if !(1..=128).contains(&p.ipv6_prefix) {
            return Err((
                "policy.ipv6_prefix".into(),
                format!(
                    "{} is not a prefix length: use 1 to 128 (default 64)",
                    p.ipv6_prefix
                ),
            ));
        }
        for (name, t) in &p.filter {
            if !self.filter_names().contains(name) && !XDP_FILTERS.contains(&name.as_str()) {
                return Err((
                    format!("policy.filter.{name}"),
                    format!(
                        "no filter called `{name}`; known: {}; XDP: {}",
                        self.known_filters(),
                        XDP_FILTERS.join(", ")
                    ),
                ));
            }
            if t.maxretry == Some(0) {
                return Err((
                    format!("policy.filter.{name}.maxretry"),
                    "must be at least 1".into(),
                ));
            }
        }
        if let Some(off) = &self.offhours {
            if off.schedule.is_empty() {
                return Err((
                    "offhours.schedule".into(),
                    "no windows: give e.g. schedule = [\"Mon-Fri 18:00-08:00\", \"Sat-Sun\"]"
                        .into(),
                ));
            }
            Schedule::parse(&off.schedule)
                .map_err(|e| ("offhours.schedule".to_string(), e.to_string()))?;
        }
        for (i, f) in self.filter.iter().enumerate() {
            let key = format!("filter[{i}]");
            if f.name.is_empty()
                || !f
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err((
                    format!("{key}.name"),
                    format!(
                        "`{}` is not a valid filter name (letters, digits, - and _)",
                        f.name
                    ),
                ));
            }
            if filters::names().any(|n| n == f.name)
                || self.filter[..i].iter().any(|o| o.name == f.name)
            {
                return Err((
                    format!("{key}.name"),
                    format!(
                        "a filter called `{}` already exists; pick another name",
                        f.name
                    ),
                ));
            }
            if f.rules.is_empty() {
                return Err((
                    format!("{key}.rule"),
                    "a filter needs at least one [[filter.rule]]".into(),
                ));
            }
            for (j, rule) in f.rules.iter().enumerate() {
                Matcher::new(&[FilterSpec {
                    rules: vec![rule.clone()],
                    ..f.clone()
                }])
                .map_err(|e| (format!("{key}.rule[{j}].regex"), e.to_string()))?;
            }
        }
        let known = self.filter_names();
        for (i, s) in self.source.iter().enumerate() {
            let key = format!("source[{i}]");
            match (&s.path, &s.journal_unit) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => return Err((key, "give exactly one of `path` or `journal_unit`".into())),
            }
            if let Some(path) = &s.path
                && !path.is_absolute()
            {
                return Err((
                    format!("{key}.path"),
                    format!("`{}` must be an absolute path", path.display()),
                ));
            }
            if s.filters.is_empty() {
                return Err((
                    format!("{key}.filters"),
                    format!("no filters: name at least one of {}", self.known_filters()),
                ));
            }
            for name in &s.filters {
                if !known.contains(name) {
                    return Err((
                        format!("{key}.filters"),
                        format!("no filter called `{name}`; known: {}", self.known_filters()),
                    ));
                }
            }
            if s.maxretry == Some(0) {
                return Err((format!("{key}.maxretry"), "must be at least 1".into()));
            }
        }
        Ok(())
    }

    /// Checks of `[enforce]`, `[ban]`, `[notify]` and `[daemon]`.
    fn validate_basics(&self) -> Result<(), (&'static str, String)> {
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        if self.enforce.interfaces.is_empty() {
            return Err((
                "enforce.interfaces",
                "no interface to protect: list the internet-facing interfaces, e.g. interfaces = [\"eth0\"]".into(),
            ));
        }
        for name in &self.enforce.interfaces {
            if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ']) {
                return Err((
                    "enforce.interfaces",
                    format!("`{name}` is not a valid interface name (see `ip link`)"),
                ));
            }
        }
        if self.ban.max_entries == 0 || self.ban.max_entries > MAX_BAN_ENTRIES {
            return Err((
                "ban.max_entries",
                format!(
                    "{} is out of range: use 1 to {MAX_BAN_ENTRIES} (default {})",
                    self.ban.max_entries,
                    pbxguard_common::DEFAULT_MAX_BANS
                ),
            ));
        }
        for event in &self.notify.events {
            if !crate::alert::EVENTS.contains(&event.as_str()) {
                return Err((
                    "notify.events",
                    format!(
                        "`{event}` is not an event: use any of \"{}\"",
                        crate::alert::EVENTS.join("\", \"")
                    ),
                ));
            }
        }
        if self.notify.retries > crate::alert::MAX_RETRIES {
            return Err((
                "notify.retries",
                format!(
                    "{} is too many: use 0 to {} (each waits longer, up to {} s)",
                    self.notify.retries,
                    crate::alert::MAX_RETRIES,
                    crate::alert::MAX_BACKOFF.as_secs()
                ),
            ));
        }
        for (key, path) in [
            ("daemon.socket", &self.daemon.socket),
            ("daemon.state_dir", &self.daemon.state_dir),
            ("daemon.bpffs", &self.daemon.bpffs),
        ] {
            if !path.is_absolute() {
                return Err((
                    key,
                    format!("`{}` must be an absolute path", path.display()),
                ));
            }
        }
        Ok(())
    }
}
