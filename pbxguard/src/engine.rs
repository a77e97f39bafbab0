//! Decisions: the one place where bans are made, lifted and expired.
//!
//! Every change goes through the guard (never ban the owner), then the durable store (on
//! disk before anyone is told), then the enforcer (packets dropped). On start the enforcer
//! is reconciled with the store, which restores every ban after a reboot.

use std::time::{Instant, SystemTime};

use ipnet::IpNet;
use serde::Serialize;

use crate::{
    config::Config,
    enforce::{EnforceError, Enforcer, InterfaceStatus, ReasonStats},
    guard::{Guard, Refusal},
    store::{BanRecord, Damage, Store, StoreError},
    units::BanDuration,
};

/// Why a decision could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The guard refused the ban.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store could not record it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The backend could not apply it.
    #[error(transparent)]
    Enforce(#[from] EnforceError),
    /// `bans del` on something that is not banned.
    #[error("{0} is not banned (see `pbxguard bans list`)")]
    NotBanned(IpNet),
}

/// A request to ban, from the CLI or (later) a filter.
#[derive(Debug, Clone)]
pub struct BanRequest {
    /// What to ban.
    pub net: IpNet,
    /// How long; `None` means the configured default.
    pub duration: Option<BanDuration>,
    /// Why; `None` gives a generic reason.
    pub reason: Option<String>,
    /// `manual` or the filter's name.
    pub source: String,
}

/// Snapshot for `pbxguard status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// pbxguard version.
    pub version: &'static str,
    /// Live backend (`xdp`).
    pub backend: &'static str,
    /// Protected interfaces and how.
    pub interfaces: Vec<InterfaceStatus>,
    /// Active bans.
    pub bans: usize,
    /// Allowlisted networks.
    pub allowlisted: usize,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Damaged journal lines found at start (empty when healthy).
    pub store_damage: Vec<Damage>,
}

/// The decision maker.
pub struct Engine {
    config: Config,
    guard: Guard,
    store: Store,
    enforcer: Box<dyn Enforcer>,
    started: Instant,
}

impl Engine {
    /// Applies the allowlist and makes the enforcer hold exactly the store's bans.
    pub fn start(
        config: Config,
        store: Store,
        enforcer: Box<dyn Enforcer>,
    ) -> Result<Engine, EngineError> {
        let mut engine = Engine {
            guard: Guard::new(&config.allow.networks),
            config,
            store,
            enforcer,
            started: Instant::now(),
        };
        engine
            .enforcer
            .set_allowlist(&engine.config.allow.networks)?;
        engine.reconcile()?;
        Ok(engine)
    }

    /// Removes backend bans the store does not know and (re)writes every stored ban.
    fn reconcile(&mut self) -> Result<(), EngineError> {
        let mut stale = 0;
        for net in self.enforcer.banned()? {
            if self.store.get(&net).is_none() {
                self.enforcer.unban(net)?;
                stale += 1;
            }
        }
        let bans: Vec<(IpNet, Option<SystemTime>)> =
            self.store.bans().map(|b| (b.net, b.expires)).collect();
        for (net, expires) in &bans {
            self.enforcer.ban(*net, *expires)?;
        }
        tracing::info!(
            restored = bans.len(),
            stale_removed = stale,
            "ban state reconciled with the store"
        );
        Ok(())
    }

    /// Bans a network (replacing an existing ban on it); durable and enforced on return.
    pub fn ban(&mut self, request: BanRequest, now: SystemTime) -> Result<BanRecord, EngineError> {
        self.guard.check(&request.net)?;
        let duration = request.duration.unwrap_or(self.config.ban.default_duration);
        let record = BanRecord {
            net: request.net,
            reason: request
                .reason
                .unwrap_or_else(|| "banned by the administrator".into()),
            source: request.source,
            created: now,
            expires: match duration {
                BanDuration::Permanent => None,
                BanDuration::For(d) => Some(now + d),
            },
        };
        self.store.add(record.clone())?;
        if let Err(e) = self.enforcer.ban(record.net, record.expires) {
            // Keep store and backend in agreement: what is not enforced is not recorded.
            self.store.remove(&record.net)?;
            return Err(e.into());
        }
        tracing::info!(net = %record.net, source = %record.source, reason = %record.reason,
            expires = ?record.expires.map(crate::units::rfc3339::format), "banned");
        Ok(record)
    }

    /// Lifts the ban on exactly `net`.
    pub fn unban(&mut self, net: IpNet) -> Result<BanRecord, EngineError> {
        let record = self
            .store
            .remove(&net)?
            .ok_or(EngineError::NotBanned(net))?;
        self.enforcer.unban(net)?;
        tracing::info!(net = %net, "unbanned");
        Ok(record)
    }

    /// Forgets bans that have ended (the XDP program already stopped dropping them).
    pub fn expire(&mut self, now: SystemTime) -> Result<usize, EngineError> {
        let expired = self.store.remove_expired(now)?;
        for ban in &expired {
            self.enforcer.unban(ban.net)?;
            tracing::info!(net = %ban.net, "ban expired");
        }
        Ok(expired.len())
    }

    /// Active bans, oldest network order.
    pub fn bans(&self) -> Vec<BanRecord> {
        self.store.bans().cloned().collect()
    }

    /// Status snapshot.
    pub fn status(&self) -> Status {
        Status {
            version: env!("CARGO_PKG_VERSION"),
            backend: self.enforcer.backend(),
            interfaces: self.enforcer.interfaces(),
            bans: self.store.len(),
            allowlisted: self.config.allow.networks.len(),
            uptime_secs: self.started.elapsed().as_secs(),
            store_damage: self.store.damage().to_vec(),
        }
    }

    /// Verdict counters from the backend.
    pub fn stats(&self) -> Result<Vec<ReasonStats>, EngineError> {
        Ok(self.enforcer.stats()?)
    }

    /// Applies a new, already validated config: allowlist and ban defaults change at once;
    /// interfaces, paths and map sizes need a restart and are reported as such.
    pub fn reload(&mut self, config: Config) -> Result<(), EngineError> {
        if config.enforce != self.config.enforce
            || config.daemon != self.config.daemon
            || config.ban.max_entries != self.config.ban.max_entries
        {
            tracing::warn!(
                "[daemon], [enforce] and [ban] max_entries changes take effect at the next restart"
            );
        }
        self.enforcer.set_allowlist(&config.allow.networks)?;
        self.guard = Guard::new(&config.allow.networks);
        self.config.allow = config.allow;
        self.config.ban.default_duration = config.ban.default_duration;
        Ok(())
    }

    /// Stops: keeps enforcing unless `detach`.
    pub fn shutdown(&mut self, detach: bool) -> Result<(), EngineError> {
        Ok(self.enforcer.shutdown(detach)?)
    }
}
