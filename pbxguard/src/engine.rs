//! Decisions: the one place where bans are made, lifted and expired.
//!
//! Every change goes through the guard (never ban the owner), then the durable store (on
//! disk before anyone is told), then the enforcer (packets dropped). On start the enforcer
//! is reconciled with the store, which restores every ban after a reboot.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant, SystemTime},
};

use ipnet::IpNet;
use serde::Serialize;

use crate::{
    config::{Config, Mode, Thresholds},
    detect::tracker::{Tracker, source_net},
    enforce::perimeter::Perimeter,
    enforce::{EnforceError, Enforcer, InterfaceStatus, ReasonStats},
    guard::{Guard, Refusal},
    schedule::Schedule,
    source::{Event, SourceStats},
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
    /// Why this backend is live when it is not XDP (fallback reason or configuration).
    pub backend_note: Option<String>,
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
    /// `enforce` or `observe` (dry run).
    pub mode: Mode,
    /// Whether the off-hours thresholds apply right now.
    pub offhours_active: bool,
    /// Sources with failures being counted.
    pub tracked_sources: usize,
    /// Failures from protected addresses that were ignored.
    pub ignored_failures: u64,
    /// Bans observe mode would have made.
    pub would_ban: u64,
    /// Networks loaded by the geo rules.
    pub geo_networks: usize,
    /// Lines read and matched per source.
    pub sources: Vec<SourceStatus>,
}

/// One source's counters in `status`.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// File path or journal unit.
    pub name: String,
    /// Lines read.
    pub lines: u64,
    /// Lines that matched a rule.
    pub matches: u64,
}

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
    /// Observe mode: this ban would have been made.
    WouldBan(BanRecord),
}

/// Length of the `offense`-th ban (1-based): `bantime * factor^(offense-1)`, capped at
/// `bantime_max`, permanent from `permanent_after` on.
pub fn escalate(
    base: BanDuration,
    offense: u32,
    policy: &crate::config::PolicyConfig,
) -> BanDuration {
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

/// The decision maker.
pub struct Engine {
    config: Config,
    guard: Guard,
    store: Store,
    enforcer: Box<dyn Enforcer>,
    started: Instant,
    tracker: Tracker,
    offhours: Option<Schedule>,
    sources: Vec<Arc<SourceStats>>,
    ignored: u64,
    would_ban: u64,
    backend_note: Option<String>,
    geo_stamp: Option<crate::geo::Stamp>,
    geo_networks: usize,
    config_path: Option<std::path::PathBuf>,
    detection: crate::metrics::DetectionMetrics,
    alerts: Option<crate::alert::Alerts>,
}

fn offhours_schedule(config: &Config) -> Option<Schedule> {
    // Validated with the config; an invalid schedule cannot reach here.
    config
        .offhours
        .as_ref()
        .and_then(|o| Schedule::parse(&o.schedule).ok())
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
            offhours: offhours_schedule(&config),
            config,
            store,
            enforcer,
            started: Instant::now(),
            tracker: Tracker::default(),
            sources: Vec::new(),
            ignored: 0,
            would_ban: 0,
            backend_note: None,
            geo_stamp: None,
            geo_networks: 0,
            config_path: None,
            detection: Default::default(),
            alerts: None,
        };
        engine
            .enforcer
            .set_allowlist(&engine.config.allow.networks)?;
        engine.reconcile()?;
        engine
            .enforcer
            .set_perimeter(&Perimeter::from_config(&engine.config))?;
        engine.apply_geo()?;
        Ok(engine)
    }

    /// Recomputes the geo-blocked networks from the database and loads them. A database
    /// that cannot be read keeps the networks already loaded (and is logged).
    pub fn apply_geo(&mut self) -> Result<(), EngineError> {
        self.geo_stamp = crate::geo::stamp(&self.config.geo);
        match crate::geo::blocked_networks(&self.config.geo) {
            Ok(nets) => {
                if self.config.geo.active() {
                    tracing::info!(networks = nets.len(), "geo rules loaded");
                }
                self.geo_networks = nets.len();
                self.enforcer.set_geo(&nets)?;
            }
            Err(e) => tracing::error!(error = %e, "geo rules not updated"),
        }
        Ok(())
    }

    /// Reloads the geo rules when the database file was replaced (geoipupdate writes a new
    /// file); cheap when nothing changed.
    pub fn refresh_geo(&mut self) -> Result<(), EngineError> {
        if crate::geo::stamp(&self.config.geo) != self.geo_stamp {
            tracing::info!("geo database changed; reloading");
            self.apply_geo()?;
        }
        Ok(())
    }

    /// Removes backend bans the store does not know and (re)writes every stored ban.
    fn reconcile(&mut self) -> Result<(), EngineError> {
        let stale: Vec<IpNet> = self
            .enforcer
            .banned()?
            .into_iter()
            .filter(|net| self.store.get(net).is_none())
            .collect();
        self.enforcer.unban_many(&stale)?;
        let bans: Vec<(IpNet, Option<SystemTime>)> =
            self.store.bans().map(|b| (b.net, b.expires)).collect();
        self.enforcer.ban_many(&bans)?;
        tracing::info!(
            restored = bans.len(),
            stale_removed = stale.len(),
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
            rule: None,
            failures: None,
            offense: None,
        };
        self.commit(record)
    }

    /// Records and enforces a ban; the store is rolled back if the backend refuses.
    fn commit(&mut self, record: BanRecord) -> Result<BanRecord, EngineError> {
        self.store.add(record.clone())?;
        if let Err(e) = self.enforcer.ban(record.net, record.expires) {
            // Keep store and backend in agreement: what is not enforced is not recorded.
            self.store.remove(&record.net)?;
            return Err(e.into());
        }
        tracing::info!(net = %record.net, source = %record.source, reason = %record.reason,
            expires = ?record.expires.map(crate::units::rfc3339::format), "banned");
        self.alert_ban("ban", &record);
        Ok(record)
    }

    /// The backend's detection events, for the daemon's reader (taken once).
    pub fn take_events(&mut self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        self.enforcer.take_events()
    }

    /// The backend, for inspection (tests, status).
    pub fn enforcer(&self) -> &dyn Enforcer {
        self.enforcer.as_ref()
    }

    /// Records why the live backend was chosen, for `status`.
    pub fn set_backend_note(&mut self, note: Option<String>) {
        self.backend_note = note;
    }

    /// The config in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Shows per-source counters in `status`.
    pub fn attach_sources(&mut self, sources: Vec<Arc<SourceStats>>) {
        self.sources = sources;
    }

    /// Whether the off-hours profile applies at `now` (host local time).
    pub fn offhours_active(&self, now: SystemTime) -> bool {
        let local = chrono::DateTime::<chrono::Local>::from(now).naive_local();
        self.offhours.as_ref().is_some_and(|s| s.contains(local))
    }

    /// Thresholds for a failure: policy, then the filter's, then the source's overrides;
    /// inside off-hours windows the off-hours values win.
    pub fn thresholds(&self, filter: &str, source: usize, now: SystemTime) -> Effective {
        let p = &self.config.policy;
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
        if let Some(s) = self.config.source.get(source) {
            e.apply(&s.thresholds());
        }
        if self.offhours_active(now)
            && let Some(off) = &self.config.offhours
        {
            e.apply(&off.thresholds());
        }
        e
    }

    /// Counts one detected failure and bans its source when it crosses the threshold.
    pub fn on_failure(&mut self, event: &Event, now: SystemTime) -> Result<Outcome, EngineError> {
        let mut outcomes = self.on_failures(std::slice::from_ref(event), now)?;
        Ok(outcomes.pop().expect("one outcome per event"))
    }

    /// Handles a burst of failures: every ban they cause is written to the journal with one
    /// fsync and applied to the backend in one batch.
    pub fn on_failures(
        &mut self,
        events: &[Event],
        now: SystemTime,
    ) -> Result<Vec<Outcome>, EngineError> {
        let mut outcomes = Vec::with_capacity(events.len());
        let mut pending: Vec<BanRecord> = Vec::new();
        for event in events {
            *self
                .detection
                .matches
                .entry((event.filter.to_string(), event.rule.to_string()))
                .or_default() += 1;
            let outcome = self.decide(event, now, &pending);
            if let Outcome::Banned(record) = &outcome {
                pending.push(record.clone());
            }
            outcomes.push(outcome);
        }
        if pending.is_empty() {
            return Ok(outcomes);
        }
        self.store.add_detected(pending.clone(), Some(now))?;
        let bans: Vec<(IpNet, Option<SystemTime>)> =
            pending.iter().map(|b| (b.net, b.expires)).collect();
        if let Err(e) = self.enforcer.ban_many(&bans) {
            // What is not enforced is not recorded.
            for record in &pending {
                self.store.remove(&record.net)?;
            }
            return Err(e.into());
        }
        let enforced = SystemTime::now();
        for (event, outcome) in events.iter().zip(&outcomes) {
            if matches!(outcome, Outcome::Banned(_)) {
                self.detection
                    .time_to_ban
                    .observe(enforced.duration_since(event.at).unwrap_or_default());
            }
        }
        for record in &pending {
            self.alert_ban("ban", record);
            tracing::info!(net = %record.net, source = %record.source, rule = ?record.rule, failures = ?record.failures,
                offense = ?record.offense, expires = ?record.expires.map(crate::units::rfc3339::format), "banned");
        }
        Ok(outcomes)
    }

    /// What one failure leads to; bans are returned, not yet committed.
    fn decide(&mut self, event: &Event, now: SystemTime, pending: &[BanRecord]) -> Outcome {
        let single = IpNet::from(event.ip);
        if let Err(refusal) = self.guard.check(&single) {
            self.ignored += 1;
            tracing::info!(ip = %event.ip, filter = %event.filter, rule = %event.rule, why = %refusal.why, "failure from a protected address ignored");
            return Outcome::Ignored;
        }
        // IPv6 is tracked per prefix, unless that prefix would cover something protected.
        let mut net = source_net(event.ip, self.config.policy.ipv6_prefix);
        if net != single && self.guard.check(&net).is_err() {
            net = single;
        }
        if self.store.get(&net).is_some_and(|b| !b.is_expired(now))
            || pending.iter().any(|b| b.net == net)
        {
            return Outcome::AlreadyBanned;
        }
        let t = self.thresholds(&event.filter, event.source, now);
        let failures = self.tracker.record(net, now, t.findtime);
        if failures < t.maxretry {
            tracing::debug!(net = %net, failures, maxretry = t.maxretry, rule = %event.rule, "failure counted");
            return Outcome::Counted {
                failures,
                maxretry: t.maxretry,
            };
        }
        self.tracker.clear(&net);
        let offense = self.store.offense(&net).map_or(0, |o| o.count) + 1;
        let duration = escalate(t.bantime, offense, &self.config.policy);
        let record = BanRecord {
            net,
            reason: format!(
                "{failures} failures in {} ({})",
                humantime::format_duration(t.findtime),
                event.rule
            ),
            source: event.filter.to_string(),
            created: now,
            expires: match duration {
                BanDuration::Permanent => None,
                BanDuration::For(d) => Some(now + d),
            },
            rule: Some(event.rule.to_string()),
            failures: Some(failures),
            offense: Some(offense),
        };
        if self.config.policy.mode == Mode::Observe {
            self.would_ban += 1;
            tracing::warn!(net = %net, filter = %event.filter, rule = %event.rule, failures, duration = %duration,
                "observe mode: would ban (nothing was banned)");
            return Outcome::WouldBan(record);
        }
        Outcome::Banned(record)
    }

    /// Lifts the ban on exactly `net`.
    pub fn unban(&mut self, net: IpNet) -> Result<BanRecord, EngineError> {
        let record = self
            .store
            .remove(&net)?
            .ok_or(EngineError::NotBanned(net))?;
        self.enforcer.unban(net)?;
        tracing::info!(net = %net, "unbanned");
        self.alert_ban("unban", &record);
        Ok(record)
    }

    /// Forgets bans that have ended (the XDP program already stopped dropping them).
    pub fn expire(&mut self, now: SystemTime) -> Result<usize, EngineError> {
        let longest = self.longest_findtime();
        self.tracker.prune(now, longest);
        if let Some(before) = now.checked_sub(self.config.policy.forget_after) {
            self.store.forget_offenses(before)?;
        }
        let expired = self.store.remove_expired(now)?;
        self.enforcer
            .unban_many(&expired.iter().map(|b| b.net).collect::<Vec<_>>())?;
        for ban in &expired {
            tracing::info!(net = %ban.net, "ban expired");
            self.alert_ban("unban", ban);
        }
        Ok(expired.len())
    }

    fn longest_findtime(&self) -> Duration {
        let c = &self.config;
        std::iter::once(c.policy.findtime)
            .chain(c.policy.filter.values().filter_map(|t| t.findtime))
            .chain(c.source.iter().filter_map(|s| s.findtime))
            .chain(c.offhours.iter().filter_map(|o| o.findtime))
            .max()
            .unwrap_or_default()
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
            backend_note: self.backend_note.clone(),
            interfaces: self.enforcer.interfaces(),
            bans: self.store.len(),
            allowlisted: self.config.allow.networks.len(),
            uptime_secs: self.started.elapsed().as_secs(),
            store_damage: self.store.damage().to_vec(),
            mode: self.config.policy.mode,
            offhours_active: self.offhours_active(SystemTime::now()),
            tracked_sources: self.tracker.len(),
            ignored_failures: self.ignored,
            would_ban: self.would_ban,
            geo_networks: self.geo_networks,
            sources: self
                .sources
                .iter()
                .map(|s| SourceStatus {
                    name: s.name.clone(),
                    lines: s.lines.load(Ordering::Relaxed),
                    matches: s.matches.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }

    /// Verdict counters from the backend.
    pub fn stats(&self) -> Result<Vec<ReasonStats>, EngineError> {
        Ok(self.enforcer.stats()?)
    }

    /// Where ban, unban and fallback notices go.
    pub fn set_alerts(&mut self, alerts: Option<crate::alert::Alerts>) {
        self.alerts = alerts;
    }

    /// Queues a notice (never blocks).
    pub fn alert(&self, notice: crate::alert::Notice) {
        if let Some(alerts) = &self.alerts {
            alerts.send(notice);
        }
    }

    fn alert_ban(&self, event: &str, record: &BanRecord) {
        self.alert(crate::alert::Notice::new(
            event,
            Some(record.net.to_string()),
            Some(record.reason.clone()),
            Some(record.source.clone()),
            record.expires,
        ));
    }

    /// Counters for the metrics endpoint.
    pub fn detection_metrics(&self) -> crate::metrics::DetectionMetrics {
        self.detection.clone()
    }

    /// Remembers the config file, so `pbxguard reload` can re-read it.
    pub fn set_config_path(&mut self, path: std::path::PathBuf) {
        self.config_path = Some(path);
    }

    /// Re-reads the config file and applies it; a bad file is rejected with its error (file,
    /// line, key) and the running config stays.
    pub fn reload_file(&mut self) -> Result<(), String> {
        let path = self.config_path.clone().ok_or("no config file to reload")?;
        let config = Config::load(&path)
            .map_err(|e| format!("config rejected, the running config stays: {e}"))?;
        self.reload(config)
            .map_err(|e| format!("config reload failed, the running config stays: {e}"))?;
        tracing::info!(config = %path.display(), "config reloaded");
        Ok(())
    }

    /// Applies a new, already validated config: allowlist and ban defaults change at once;
    /// interfaces, paths and map sizes need a restart and are reported as such.
    pub fn reload(&mut self, config: Config) -> Result<(), EngineError> {
        if config.enforce != self.config.enforce
            || config.daemon != self.config.daemon
            || config.metrics != self.config.metrics
            || config.notify != self.config.notify
            || config.ban.max_entries != self.config.ban.max_entries
        {
            tracing::warn!(
                "[daemon], [enforce], [metrics], [notify] and [ban] max_entries changes take effect at the next restart"
            );
        }
        self.enforcer.set_allowlist(&config.allow.networks)?;
        self.enforcer
            .set_perimeter(&Perimeter::from_config(&config))?;
        self.guard = Guard::new(&config.allow.networks);
        self.offhours = offhours_schedule(&config);
        self.config.allow = config.allow;
        self.config.ban.default_duration = config.ban.default_duration;
        self.config.policy = config.policy;
        self.config.offhours = config.offhours;
        self.config.sip = config.sip;
        self.config.flood = config.flood;
        self.config.scanners = config.scanners;
        self.config.protect = config.protect;
        self.config.source = config.source;
        self.config.filter = config.filter;
        let geo_changed = self.config.geo != config.geo;
        self.config.geo = config.geo;
        if geo_changed {
            self.apply_geo()?;
        }
        Ok(())
    }

    /// Stops: keeps enforcing unless `detach`.
    pub fn shutdown(&mut self, detach: bool) -> Result<(), EngineError> {
        Ok(self.enforcer.shutdown(detach)?)
    }
}
