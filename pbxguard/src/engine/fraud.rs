//! What a toll-fraud hit does (`fraud/`): always a `fraud` notice (webhook, command hook)
//! with the extension, number, country and rule; for the rules `[fraud] ban` names, a ban of
//! the single address the extension last registered from (`known.rs` registrations), unless
//! that address is protected (allowlist, PBX peer, host): then the notice says so and
//! nothing is banned. Observe mode (`[policy]` or `[fraud] mode`) never bans.

use std::time::SystemTime;

use ipnet::IpNet;

use super::Engine;
use crate::{
    alert::{FraudDetail, Notice},
    config::Mode,
    detect::Evidence,
    fraud::rules::Hit,
    store::BanRecord,
};

impl Engine {
    /// Acts on a hit; returns what was done, in words (for the log and `test-cdr`-like
    /// output of the fraud thread).
    pub fn on_fraud(&mut self, hit: &Hit, now: SystemTime) -> String {
        let observe = self.config.policy.mode == Mode::Observe
            || self
                .config
                .fraud
                .as_ref()
                .is_some_and(|f| f.mode == Some(Mode::Observe));
        let registered = self.known.registration(&hit.extension, now).map(|r| r.ip);
        let mut net = None;
        let outcome = match registered {
            _ if !hit.ban => "alert only ([fraud] ban does not name this rule)".to_string(),
            None => format!(
                "not banned: no registration of extension {} seen (PJSIP `Added contact`, chan_sip `Registered SIP` lines)",
                hit.extension
            ),
            Some(ip) if observe => {
                self.would_ban += 1;
                format!("observe mode: would ban {ip}")
            }
            Some(ip) => self.ban_fraud_source(hit, IpNet::from(ip), now, &mut net),
        };
        tracing::warn!(rule = hit.rule, extension = %hit.extension, destination = %hit.destination,
            country = ?hit.country, class = hit.class.as_str(), detail = %hit.detail, outcome = %outcome, "toll fraud suspected");
        let mut notice = Notice::new(
            "fraud",
            net.or(registered.map(|ip| IpNet::from(ip).to_string())),
            Some(format!(
                "toll fraud suspected: {} on extension {} ({}); dialled {} ({}, {}); {outcome}",
                hit.rule,
                hit.extension,
                hit.detail,
                hit.destination,
                hit.country.as_deref().unwrap_or("unknown country"),
                hit.class.as_str()
            )),
            Some("fraud".into()),
            None,
        );
        notice.fraud = Some(FraudDetail {
            rule: hit.rule.into(),
            extension: hit.extension.clone(),
            destination: hit.destination.clone(),
            country: hit.country.clone(),
            class: hit.class.as_str().into(),
        });
        self.alert(notice);
        outcome
    }

    fn ban_fraud_source(
        &mut self,
        hit: &Hit,
        net: IpNet,
        now: SystemTime,
        banned: &mut Option<String>,
    ) -> String {
        if let Err(refusal) = self.guard.check(&net) {
            return format!("not banned: {net} is protected: {}", refusal.why);
        }
        if self.ledger.get(&net).is_some_and(|b| !b.is_expired(now)) {
            return format!("{net} is already banned");
        }
        let ban_for = self
            .config
            .fraud
            .as_ref()
            .map(|f| f.ban_for)
            .unwrap_or(self.config.ban.default_duration);
        let record = BanRecord {
            net,
            reason: crate::units::sanitize_reason(&format!(
                "toll fraud: {} on extension {} ({})",
                hit.rule, hit.extension, hit.detail
            )),
            source: "fraud".into(),
            created: now,
            expires: ban_for.expiry_from(now),
            rule: Some(hit.rule.into()),
            failures: None,
            offense: None,
            evidence: Some(Evidence::Proven),
        };
        match self.ledger.ban(vec![record], Some(now)) {
            Ok(applied) if !applied.banned.is_empty() => {
                self.published_bans = None;
                *banned = Some(net.to_string());
                tracing::info!(net = %net, source = "fraud", rule = hit.rule, "banned");
                format!(
                    "banned {net} (where extension {} registered from)",
                    hit.extension
                )
            }
            Ok(applied) => {
                self.not_enforced += 1;
                let why = applied
                    .refused
                    .first()
                    .map_or_else(String::new, |(_, e)| e.to_string());
                format!("not banned: the kernel refused {net}: {why}")
            }
            Err(e) => format!("not banned: {e}"),
        }
    }
}
