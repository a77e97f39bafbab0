//! Atomic reload: everything is computed and validated first (the config file is already
//! validated, map capacities included, by `Config::load`; the geo database is walked and
//! its size checked here), then the kernel-side steps are applied in order, and a failure
//! in any step puts the earlier steps back: the running config changes as a whole or not
//! at all.

use ipnet::IpNet;

use super::{Engine, EngineError, policy};
use crate::{
    config::Config,
    enforce::{EnforceError, Enforcer, perimeter::Perimeter},
};

/// The geo networks `config` asks for and the database stamp they came from; an error
/// names the database and what to do. `check-config`, start and reload all use it.
pub fn geo_networks(config: &Config) -> Result<(Vec<IpNet>, Option<crate::geo::Stamp>), String> {
    let stamp = crate::geo::stamp(&config.geo);
    let nets = crate::geo::blocked_networks(&config.geo).map_err(|e| e.to_string())?;
    for (family, count) in [
        ("IPv4", nets.iter().filter(|n| n.addr().is_ipv4()).count()),
        ("IPv6", nets.iter().filter(|n| n.addr().is_ipv6()).count()),
    ] {
        if count > pbxguard_common::MAX_GEO as usize {
            return Err(format!(
                "[geo]: the rules give {count} {family} networks, more than the geo map holds ({}); block fewer countries or use allow_countries",
                pbxguard_common::MAX_GEO
            ));
        }
    }
    Ok((nets, stamp))
}

fn step_allowlist(enforcer: &mut dyn Enforcer, nets: &[IpNet]) -> Result<(), EnforceError> {
    fail::fail_point!("reload-allowlist", |_| Err(EnforceError::Nft(
        "injected failure (reload-allowlist)".into()
    )));
    enforcer.set_allowlist(nets)
}

fn step_perimeter(enforcer: &mut dyn Enforcer, perimeter: &Perimeter) -> Result<(), EnforceError> {
    fail::fail_point!("reload-perimeter", |_| Err(EnforceError::Nft(
        "injected failure (reload-perimeter)".into()
    )));
    enforcer.set_perimeter(perimeter)
}

fn step_geo(enforcer: &mut dyn Enforcer, nets: &[IpNet]) -> Result<(), EnforceError> {
    fail::fail_point!("reload-geo", |_| Err(EnforceError::Nft(
        "injected failure (reload-geo)".into()
    )));
    enforcer.set_geo(nets)
}

impl Engine {
    /// Applies a new, validated config as one step: allowlist, perimeter rules and geo in
    /// the kernel, then thresholds, sources and filters in memory. If a kernel step fails,
    /// the steps before it are undone and the running config stays. `[daemon]`,
    /// `[enforce]`, `[metrics]`, `[notify]`, `[trust]`, `[cluster]`, `[fraud]`, `[[cdr]]`, `[[blocklist]]`, `[crowdsec]` and map
    /// sizes need a restart.
    pub fn reload(&mut self, config: Config) -> Result<(), EngineError> {
        let old = self.config.clone();
        if config.enforce != old.enforce
            || config.daemon != old.daemon
            || config.metrics != old.metrics
            || config.notify != old.notify
            || config.ban.max_entries != old.ban.max_entries
            || config.trust != old.trust
            || config.cluster != old.cluster
            || config.fraud != old.fraud
            || config.cdr != old.cdr
            || config.blocklist != old.blocklist
            || config.crowdsec != old.crowdsec
        {
            tracing::warn!(
                "[daemon], [enforce], [metrics], [notify], [trust], [cluster], [fraud], [[cdr]], [[blocklist]], [crowdsec] and [ban] max_entries changes take effect at the next restart"
            );
        }
        // Everything computed before anything changes.
        let geo = if config.geo != old.geo {
            Some(geo_networks(&config).map_err(EngineError::Invalid)?)
        } else {
            None
        };
        let perimeter = Perimeter::from_config(&config);
        let old_perimeter = Perimeter::from_config(&old);
        let old_geo = self.geo.nets.clone();
        let enforcer = self.ledger.enforcer_mut();

        // The kernel steps, each undone if a later one fails.
        let undo = |enforcer: &mut dyn Enforcer, steps: usize| {
            let mut result = Ok(());
            if steps >= 3 {
                result = result.and(enforcer.set_geo(&old_geo));
            }
            if steps >= 2 {
                result = result.and(enforcer.set_perimeter(&old_perimeter));
            }
            if steps >= 1 {
                result = result.and(enforcer.set_allowlist(&old.allow.networks));
            }
            if let Err(e) = result {
                tracing::error!(error = %e, "undoing a failed reload failed; restart pbxguard to re-apply the running config");
            }
        };
        if let Err(e) = step_allowlist(enforcer, &config.allow.networks) {
            undo(enforcer, 1);
            return Err(e.into());
        }
        if let Err(e) = step_perimeter(enforcer, &perimeter) {
            undo(enforcer, 2);
            return Err(e.into());
        }
        if let Some((nets, _)) = &geo
            && let Err(e) = step_geo(enforcer, nets)
        {
            undo(enforcer, 3);
            return Err(e.into());
        }

        // Committed: the in-memory side follows.
        if let Some((nets, stamp)) = geo {
            self.geo = super::GeoState {
                stamp,
                nets: std::sync::Arc::new(nets),
            };
        }
        self.guard.set_allowlist(&config.allow.networks);
        self.apply_feeds();
        self.offhours = policy::offhours_schedule(&config);
        let mut next = (*old).clone();
        next.allow = config.allow;
        next.ban.default_duration = config.ban.default_duration;
        next.policy = config.policy;
        next.offhours = config.offhours;
        next.sip = config.sip;
        next.flood = config.flood;
        next.scanners = config.scanners;
        next.protect = config.protect;
        next.source = config.source;
        next.filter = config.filter;
        next.geo = config.geo;
        self.config = std::sync::Arc::new(next);
        Ok(())
    }
}
