//! Decisions: the one place where bans are made, lifted and expired.
//!
//! [`Engine`] is owned by exactly one thread, the engine loop ([`actor`]), which receives
//! failures and commands over channels and publishes a [`Snapshot`] after each; nothing
//! else touches the ledger, the tracker or the config in force (ARCHITECTURE.md). Every
//! ban goes through the guard (never ban the owner), then the [`Ledger`] (journal, then
//! kernel, or neither). What is pure (thresholds, escalation, the guard, the tracker) is
//! testable without root.

pub mod actor;
pub mod crowdsec;
pub mod explain;
pub mod feeds;
mod fraud;
pub mod known;
pub mod peer;
pub mod policy;
mod protect;
mod reload;
pub mod status;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Instant, SystemTime},
};

use ipnet::IpNet;

pub use self::{
    policy::{Effective, Outcome, escalate},
    reload::geo_networks,
    status::{Snapshot, SourceStatus, Status},
};
use crate::{
    config::{Config, Mode},
    detect::{
        Evidence,
        tracker::{Tracker, source_net},
    },
    enforce::{EnforceError, Enforcer, perimeter::Perimeter},
    guard::{Guard, Refusal},
    ledger::{Ledger, LedgerError, Reconciled},
    schedule::Schedule,
    source::{Event, SourceStats},
    store::{BanRecord, Store},
    units::BanDuration,
};

/// Why a decision could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The guard refused the ban.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The journal or the kernel refused; nothing changed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The backend could not apply a non-ban change.
    #[error(transparent)]
    Enforce(#[from] EnforceError),
    /// `bans del` on something that is not banned.
    #[error("{0} is not banned (see `pbxguard bans list`)")]
    NotBanned(IpNet),
    /// A reload was rejected before anything changed.
    #[error("{0}")]
    Invalid(String),
}

/// A request to ban, from the CLI.
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

/// The geo networks in force and the database file they came from.
#[derive(Default)]
struct GeoState {
    stamp: Option<crate::geo::Stamp>,
    nets: Arc<Vec<IpNet>>,
}

/// The decision maker (owned by the engine loop).
pub struct Engine {
    config: Arc<Config>,
    guard: Guard,
    ledger: Ledger,
    started: Instant,
    tracker: Tracker,
    offhours: Option<Schedule>,
    sources: Vec<Arc<SourceStats>>,
    ignored: u64,
    /// Spoofable evidence against known addresses, never counted.
    ignored_spoofable: u64,
    /// Addresses that authenticated successfully (`known.rs`).
    known: known::Known,
    would_ban: u64,
    not_enforced: u64,
    dropped_at_start: usize,
    backend_note: Option<String>,
    geo: GeoState,
    config_path: Option<PathBuf>,
    detection: crate::metrics::DetectionMetrics,
    alerts: Option<crate::alert::Alerts>,
    /// `bans list` as last published, rebuilt only when a ban changed.
    published_bans: Option<Arc<Vec<BanRecord>>>,
    /// Peers trusted from the PBX's own configs (never banned).
    pbx_trusted: Arc<Vec<crate::trust::Trusted>>,
    /// The cluster link as its task last reported it (`[cluster]`).
    cluster: Option<crate::cluster::ClusterStatus>,
    /// The fraud thread's last report (`[fraud]`).
    fraud: Option<Arc<crate::fraud::FraudReport>>,
    /// Blocklist feeds (`[[blocklist]]`).
    feeds: feeds::Feeds,
    /// The CrowdSec bouncer's state (`[crowdsec]`).
    crowdsec: Option<crowdsec::CrowdsecStatus>,
    /// Peers' bans in force per node, counted when `published_bans` is rebuilt.
    peer_bans: Arc<std::collections::BTreeMap<String, usize>>,
}

impl Engine {
    /// Applies the allowlist and perimeter, and makes the enforcer hold exactly the
    /// journal's bans.
    pub fn start(
        config: Config,
        store: Store,
        enforcer: Box<dyn Enforcer>,
    ) -> Result<Engine, EngineError> {
        let known = known::Known::load(store.dir(), SystemTime::now());
        let (mut ledger, reconciled) = Ledger::open(store, enforcer)?;
        let Reconciled {
            restored,
            stale_removed,
            dropped,
        } = reconciled;
        tracing::info!(
            restored,
            stale_removed,
            "ban state reconciled with the journal"
        );
        for (ban, why) in &dropped {
            tracing::error!(net = %ban.net, error = %why, "a journaled ban could not be restored and was removed");
        }
        ledger
            .enforcer_mut()
            .set_allowlist(&config.allow.networks)?;
        ledger
            .enforcer_mut()
            .set_perimeter(&Perimeter::from_config(&config))?;
        let feeds = feeds::Feeds::new(config.blocklist.clone());
        let crowdsec = config.crowdsec.as_ref().map(|c| crowdsec::CrowdsecStatus {
            lapi_url: c.lapi_url.clone(),
            ..Default::default()
        });
        let mut engine = Engine {
            guard: Guard::new(&config.allow.networks, crate::guard::host_addresses()),
            offhours: policy::offhours_schedule(&config),
            config: Arc::new(config),
            ledger,
            started: Instant::now(),
            tracker: Tracker::default(),
            sources: Vec::new(),
            ignored: 0,
            ignored_spoofable: 0,
            known,
            would_ban: 0,
            not_enforced: 0,
            dropped_at_start: dropped.len(),
            backend_note: None,
            geo: GeoState::default(),
            config_path: None,
            detection: Default::default(),
            alerts: None,
            published_bans: None,
            pbx_trusted: Arc::default(),
            cluster: None,
            fraud: None,
            feeds,
            crowdsec,
            peer_bans: Arc::default(),
        };
        // A database that cannot be read at start is logged; geo rules are then empty.
        match reload::geo_networks(&engine.config) {
            Ok((nets, stamp)) => engine.apply_geo(nets, stamp)?,
            Err(e) => tracing::error!(error = %e, "geo rules not loaded"),
        }
        Ok(engine)
    }

    fn apply_geo(
        &mut self,
        nets: Vec<IpNet>,
        stamp: Option<crate::geo::Stamp>,
    ) -> Result<(), EngineError> {
        self.ledger.enforcer_mut().set_geo(&nets)?;
        if self.config.geo.active() {
            tracing::info!(networks = nets.len(), "geo rules loaded");
        }
        self.geo = GeoState {
            stamp,
            nets: Arc::new(nets),
        };
        Ok(())
    }

    /// Reloads the geo rules when the database file was replaced (geoipupdate writes a new
    /// file); cheap when nothing changed. An unreadable database keeps the rules loaded.
    pub fn refresh_geo(&mut self) -> Result<(), EngineError> {
        if crate::geo::stamp(&self.config.geo) == self.geo.stamp {
            return Ok(());
        }
        tracing::info!("geo database changed; reloading");
        match reload::geo_networks(&self.config) {
            Ok((nets, stamp)) => self.apply_geo(nets, stamp),
            Err(e) => {
                tracing::error!(error = %e, "geo rules not updated");
                self.geo.stamp = crate::geo::stamp(&self.config.geo);
                Ok(())
            }
        }
    }

    /// Bans networks (each replacing an existing ban on it); durable and enforced on
    /// return. All are checked by the guard first: one refusal refuses the request.
    pub fn ban_many(
        &mut self,
        requests: Vec<BanRequest>,
        now: SystemTime,
    ) -> Result<Vec<BanRecord>, EngineError> {
        let mut records = Vec::with_capacity(requests.len());
        for request in requests {
            self.guard.check(&request.net)?;
            let duration = request.duration.unwrap_or(self.config.ban.default_duration);
            records.push(BanRecord {
                net: request.net,
                reason: request.reason.map_or_else(
                    || "banned by the administrator".into(),
                    |r| crate::units::sanitize_reason(&r),
                ),
                source: request.source,
                created: now,
                expires: duration.expiry_from(now),
                rule: None,
                failures: None,
                offense: None,
                evidence: None,
            });
        }
        let applied = self.ledger.ban(records, None)?;
        self.published_bans = None;
        for record in &applied.banned {
            tracing::info!(net = %record.net, source = %record.source, reason = %record.reason,
                expires = ?record.expires.map(crate::units::rfc3339::format), "banned");
            self.alert_ban("ban", record);
        }
        let banned = applied.banned.len();
        let refused = applied.refused.len();
        if let Some((record, e)) = applied.refused.into_iter().next() {
            self.not_enforced += refused as u64;
            tracing::error!(net = %record.net, error = %e, "ban refused by the kernel; nothing recorded");
            if banned == 0 && refused == 1 {
                return Err(LedgerError::Enforce(e).into());
            }
            return Err(EngineError::Invalid(format!(
                "{banned} banned, {refused} refused by the kernel (first: {}: {e})",
                record.net
            )));
        }
        Ok(applied.banned)
    }

    /// Bans one network.
    pub fn ban(&mut self, request: BanRequest, now: SystemTime) -> Result<BanRecord, EngineError> {
        let mut banned = self.ban_many(vec![request], now)?;
        Ok(banned.pop().expect("one ban per request"))
    }

    /// The backend, for inspection (tests, status).
    pub fn enforcer(&self) -> &dyn Enforcer {
        self.ledger.enforcer()
    }

    /// The backend's detection events, for the daemon's reader (taken once).
    pub fn take_events(&mut self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        self.ledger.enforcer_mut().take_events()
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
        policy::offhours_active(self.offhours.as_ref(), now)
    }

    /// Thresholds for a failure from `filter` with `evidence` on source `source` at `now`.
    pub fn thresholds(
        &self,
        filter: &str,
        evidence: Evidence,
        source: usize,
        now: SystemTime,
    ) -> Effective {
        let offhours = policy::offhours_active(self.offhours.as_ref(), now);
        policy::thresholds(&self.config, filter, evidence, source, offhours)
    }

    /// The address's entry if a success line made it known and that has not run out.
    pub fn known(&self, ip: std::net::IpAddr, now: SystemTime) -> Option<&known::KnownEntry> {
        self.known.get(ip, now)
    }

    /// Counts one detected failure and bans its source when it crosses the threshold.
    pub fn on_failure(&mut self, event: &Event, now: SystemTime) -> Result<Outcome, EngineError> {
        let mut outcomes = self.on_failures(std::slice::from_ref(event), now)?;
        Ok(outcomes.pop().expect("one outcome per event"))
    }

    /// Handles a burst of failures: every ban they cause is journaled with one fsync and
    /// applied to the backend in one batch. `Err` (journal unwritable) means none of the
    /// bans was made; their sources start counting again from zero.
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
        let applied = self.ledger.ban(pending, Some(now))?;
        self.published_bans = None;
        let enforced = SystemTime::now();
        for (record, e) in &applied.refused {
            self.not_enforced += 1;
            tracing::error!(net = %record.net, error = %e, "ban due but refused by the kernel; nothing recorded");
            for outcome in outcomes.iter_mut() {
                if matches!(outcome, Outcome::Banned(b) if b.net == record.net) {
                    *outcome = Outcome::NotEnforced(e.to_string());
                }
            }
        }
        for (event, outcome) in events.iter().zip(&outcomes) {
            if matches!(outcome, Outcome::Banned(_)) {
                self.detection
                    .time_to_ban
                    .observe(enforced.duration_since(event.at).unwrap_or_default());
            }
        }
        for record in &applied.banned {
            self.alert_ban("ban", record);
            tracing::info!(net = %record.net, source = %record.source, rule = ?record.rule, failures = ?record.failures,
                evidence = record.evidence.map_or("-", Evidence::as_str), offense = ?record.offense, expires = ?record.expires.map(crate::units::rfc3339::format), "banned");
        }
        Ok(outcomes)
    }

    /// What one failure leads to; bans are returned, not yet committed.
    fn decide(&mut self, event: &Event, now: SystemTime, pending: &[BanRecord]) -> Outcome {
        let single = IpNet::from(event.ip);
        if let Some(outcome) = self.learn_success(event, now) {
            return outcome;
        }
        if let Err(refusal) = self.guard.check(&single) {
            self.ignored += 1;
            tracing::info!(ip = %event.ip, filter = %event.filter, rule = %event.rule, why = %refusal.why, "failure from a protected address ignored");
            return Outcome::Ignored;
        }
        if let Some(outcome) = self.screen_spoofable(event, now) {
            return outcome;
        }
        // IPv6 is tracked per prefix, unless that prefix would cover something protected
        // or, for spoofable evidence, a known address (a forged neighbour must not take the
        // known phone's prefix down with it).
        let mut net = source_net(event.ip, self.config.policy.ipv6_prefix);
        if net != single
            && (self.guard.check(&net).is_err()
                || (event.evidence == Evidence::Spoofable && self.known.any_within(&net, now)))
        {
            net = single;
        }
        if self.ledger.get(&net).is_some_and(|b| !b.is_expired(now))
            || pending.iter().any(|b| b.net == net)
        {
            return Outcome::AlreadyBanned;
        }
        let t = self.thresholds(&event.filter, event.evidence, event.source, now);
        let failures = self.tracker.record(net, now, t.findtime);
        if failures < t.maxretry {
            tracing::debug!(net = %net, failures, maxretry = t.maxretry, rule = %event.rule, "failure counted");
            return Outcome::Counted {
                failures,
                maxretry: t.maxretry,
            };
        }
        self.tracker.clear(&net);
        let offense = self.ledger.offense(&net).map_or(0, |o| o.count) + 1;
        let duration = escalate(t.bantime, offense, &self.config.policy);
        let record = BanRecord {
            net,
            reason: crate::units::sanitize_reason(&format!(
                "{failures} failures in {} ({})",
                humantime::format_duration(t.findtime),
                event.rule
            )),
            source: event.filter.to_string(),
            created: now,
            expires: duration.expiry_from(now),
            rule: Some(event.rule.to_string()),
            failures: Some(failures),
            offense: Some(offense),
            evidence: Some(event.evidence),
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
        let mut lifted = self.unban_many(&[net])?;
        lifted.pop().ok_or(EngineError::NotBanned(net))
    }

    /// Lifts the bans on exactly these networks; those not banned are skipped.
    pub fn unban_many(&mut self, nets: &[IpNet]) -> Result<Vec<BanRecord>, EngineError> {
        let lifted = self.ledger.unban(nets)?;
        self.published_bans = None;
        for record in &lifted {
            tracing::info!(net = %record.net, "unbanned");
            self.alert_ban("unban", record);
        }
        Ok(lifted)
    }

    /// Forgets bans that have ended (the kernel already stopped dropping them) and old
    /// failure counts and offenses: one kernel batch and one journal write per kind.
    pub fn expire(&mut self, now: SystemTime) -> Result<usize, EngineError> {
        self.tracker
            .prune(now, policy::longest_findtime(&self.config));
        if let Some(before) = now.checked_sub(self.config.policy.forget_after) {
            self.ledger.forget_offenses(before)?;
        }
        if let Err(e) = self.known.sweep(now) {
            tracing::error!(error = %e, "saving the known addresses failed; retrying next second (check free space in state_dir)");
        }
        let expired = self.ledger.expire(now)?;
        if !expired.is_empty() {
            self.published_bans = None;
            tracing::info!(count = expired.len(), "bans expired");
        }
        for ban in &expired {
            tracing::debug!(net = %ban.net, "ban expired");
            self.alert_ban("unban", ban);
        }
        Ok(expired.len())
    }

    /// Active bans, in network order.
    pub fn bans(&self) -> Vec<BanRecord> {
        self.ledger.bans().cloned().collect()
    }

    /// Compares the journal with what the kernel holds (see [`Ledger::check`]).
    pub fn check_ledger(&self) -> Result<(), String> {
        self.ledger.check()
    }

    /// The state to publish: status, bans (rebuilt only if they changed), metrics.
    pub fn snapshot(&mut self) -> Snapshot {
        if self.published_bans.is_none() {
            let bans: Vec<BanRecord> = self.ledger.bans().cloned().collect();
            let mut peers = std::collections::BTreeMap::new();
            for ban in bans.iter().filter(|b| peer::is_peer_ban(b)) {
                *peers
                    .entry(ban.source[crate::cluster::wire::PEER_SOURCE.len()..].to_string())
                    .or_insert(0) += 1;
            }
            self.peer_bans = Arc::new(peers);
            self.published_bans = Some(Arc::new(bans));
        }
        let bans = self.published_bans.clone().expect("just built");
        let enforcer = self.ledger.enforcer();
        let status = Status {
            version: env!("CARGO_PKG_VERSION"),
            backend: enforcer.backend(),
            backend_note: self.backend_note.clone(),
            interfaces: enforcer.interfaces(),
            rules_off: enforcer.rules_off(),
            bans: bans.len(),
            allowlisted: self.config.allow.networks.len(),
            host_addresses: self.guard.host_addresses().to_vec(),
            pbx_trusted: self.pbx_trusted.as_ref().clone(),
            uptime_secs: self.started.elapsed().as_secs(),
            store_damage: self.ledger.damage().to_vec(),
            journal_stale: self.ledger.journal_stale(),
            dropped_at_start: self.dropped_at_start,
            mode: self.config.policy.mode,
            offhours_active: policy::offhours_active(self.offhours.as_ref(), SystemTime::now()),
            tracked_sources: self.tracker.len(),
            ignored_failures: self.ignored,
            ignored_spoofable: self.ignored_spoofable,
            known: self.known.len(),
            registrations: self.known.registrations(),
            would_ban: self.would_ban,
            not_enforced: self.not_enforced,
            geo_networks: self.geo.nets.len(),
            sources: self.sources.iter().map(|s| SourceStatus::of(s)).collect(),
            feeds: self.feeds.status(),
            crowdsec: self.crowdsec.clone(),
            cluster: self.cluster.clone().map(|mut c| {
                for (node, count) in self.peer_bans.iter() {
                    c.peers.entry(node.clone()).or_default().bans = *count;
                }
                c
            }),
        };
        Snapshot {
            status,
            bans,
            detection: self.detection.clone(),
            config: self.config.clone(),
            heartbeat: Instant::now(),
            started: self.started,
            sources: self.sources.clone(),
            fraud: self.fraud.clone(),
        }
    }

    /// Status as of now.
    pub fn status(&mut self) -> Status {
        self.snapshot().status()
    }

    /// Records the fraud thread's report for `fraud status` and metrics.
    pub fn set_fraud_report(&mut self, report: Arc<crate::fraud::FraudReport>) {
        self.fraud = Some(report);
    }

    /// Records the cluster link's state for `status` and metrics.
    pub fn set_cluster_status(&mut self, status: crate::cluster::ClusterStatus) {
        self.cluster = Some(status);
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

    /// Remembers the config file, so `pbxguard reload` can re-read it.
    pub fn set_config_path(&mut self, path: PathBuf) {
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

    /// Stops: keeps enforcing unless `detach`.
    pub fn shutdown(&mut self, detach: bool) -> Result<(), EngineError> {
        Ok(self.ledger.enforcer_mut().shutdown(detach)?)
    }
}
