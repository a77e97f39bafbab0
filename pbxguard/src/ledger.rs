//! The ledger: the one component that changes bans, keeping
//! **journal == enforced set (XDP maps or nft sets) == `bans list`** after every operation
//! and every fault (ARCHITECTURE.md, "The ledger invariant").
//!
//! - A ban is journaled (one write, one fsync per batch) before the kernel sees it; if the
//!   journal write fails, the kernel is not touched. The kernel answers per element; what it
//!   refused is put back in the journal as it was (one more write), so the journal records
//!   exactly what is enforced.
//! - An unban (or expiry) is lifted in the kernel first, then journaled; if the journal
//!   write fails, the kernel gets the bans back.
//! - On start the kernel is made to hold exactly the journal's bans; bans the kernel cannot
//!   take (a smaller map) are journaled as removed and reported.
//!
//! A `kill -9` between the two steps of any operation leaves a journal that the next start
//! reconciles the kernel to, so nothing acknowledged is lost and nothing unrecorded stays.

use std::{collections::BTreeSet, time::SystemTime};

use ipnet::IpNet;

use crate::{
    enforce::{EnforceError, Enforcer},
    store::{BanRecord, Damage, Offense, Store, StoreError},
};

/// Why a ledger operation did nothing (or, for unbans, not everything).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The journal could not be written: nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The kernel refused: nothing changed for the networks concerned.
    #[error(transparent)]
    Enforce(#[from] EnforceError),
}

/// What became of a batch of bans.
#[derive(Debug, Default)]
pub struct Applied {
    /// Journaled and enforced.
    pub banned: Vec<BanRecord>,
    /// Refused by the kernel (map or set full, nft error); journal and kernel unchanged
    /// for them.
    pub refused: Vec<(BanRecord, EnforceError)>,
}

/// What the start-up reconciliation did.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Bans from the journal now enforced.
    pub restored: usize,
    /// Kernel entries no journal ban accounts for, removed.
    pub stale_removed: usize,
    /// Journal bans the kernel refused (now journaled as removed), with why.
    pub dropped: Vec<(BanRecord, String)>,
}

/// Owner of the journal and the enforcer.
pub struct Ledger {
    store: Store,
    enforcer: Box<dyn Enforcer>,
}

impl Ledger {
    /// Makes the kernel hold exactly the journal's bans.
    pub fn open(
        mut store: Store,
        mut enforcer: Box<dyn Enforcer>,
    ) -> Result<(Ledger, Reconciled), LedgerError> {
        let journaled: BTreeSet<IpNet> = store.bans().map(|b| b.net).collect();
        let stale: Vec<IpNet> = enforcer
            .banned()?
            .into_iter()
            .filter(|net| !journaled.contains(net))
            .collect();
        first_error(enforcer.unban_many(&stale))?;
        let records: Vec<BanRecord> = store.bans().cloned().collect();
        let specs: Vec<_> = records.iter().map(|b| (b.net, b.expires)).collect();
        let results = enforcer.ban_many(&specs);
        let mut dropped = Vec::new();
        for (record, result) in records.into_iter().zip(results) {
            if let Err(e) = result {
                dropped.push((record, e.to_string()));
            }
        }
        if !dropped.is_empty() {
            let nets: Vec<IpNet> = dropped.iter().map(|(b, _)| b.net).collect();
            store.remove_many(&nets)?;
        }
        let reconciled = Reconciled {
            restored: store.len(),
            stale_removed: stale.len(),
            dropped,
        };
        Ok((Ledger { store, enforcer }, reconciled))
    }

    /// Journals then enforces `records` (each replacing any ban on its network); with
    /// `offense_at`, each counts as one more offense. `Err` means nothing changed.
    pub fn ban(
        &mut self,
        records: Vec<BanRecord>,
        offense_at: Option<SystemTime>,
    ) -> Result<Applied, LedgerError> {
        if records.is_empty() {
            return Ok(Applied::default());
        }
        let previous: Vec<Option<BanRecord>> = records
            .iter()
            .map(|r| self.store.get(&r.net).cloned())
            .collect();
        self.store.add_many(records.clone(), offense_at)?;
        fail::fail_point!("ledger-between-journal-and-kernel");
        let specs: Vec<_> = records.iter().map(|b| (b.net, b.expires)).collect();
        let results = self.enforcer.ban_many(&specs);
        let mut applied = Applied::default();
        let mut restore = Vec::new();
        for ((record, previous), result) in records.into_iter().zip(previous).zip(results) {
            match result {
                Ok(()) => applied.banned.push(record),
                Err(e) => {
                    restore.push((record.net, previous));
                    applied.refused.push((record, e));
                }
            }
        }
        if !restore.is_empty()
            && let Err(e) = self.store.restore(restore)
        {
            // Memory already follows the kernel; the journal is rewritten from it before
            // the next change (and reconciled at start if we die first).
            tracing::error!(error = %e, "journaling refused bans as removed failed; the journal will be rewritten");
        }
        Ok(applied)
    }

    /// Lifts the bans on exactly `nets` (those not banned are skipped): kernel first, then
    /// the journal. Returns the bans lifted; `Err` means nothing changed.
    pub fn unban(&mut self, nets: &[IpNet]) -> Result<Vec<BanRecord>, LedgerError> {
        let present: Vec<BanRecord> = nets
            .iter()
            .filter_map(|n| self.store.get(n).cloned())
            .collect();
        if present.is_empty() {
            return Ok(Vec::new());
        }
        let targets: Vec<IpNet> = present.iter().map(|b| b.net).collect();
        let results = self.enforcer.unban_many(&targets);
        let mut lifted = Vec::new();
        let mut first = None;
        for (record, result) in present.into_iter().zip(results) {
            match result {
                Ok(()) => lifted.push(record),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        let nets: Vec<IpNet> = lifted.iter().map(|b| b.net).collect();
        if let Err(e) = self.store.remove_many(&nets) {
            // The journal still has them: so must the kernel.
            let specs: Vec<_> = lifted.iter().map(|b| (b.net, b.expires)).collect();
            for (record, result) in lifted.iter().zip(self.enforcer.ban_many(&specs)) {
                if let Err(again) = result {
                    tracing::error!(net = %record.net, error = %again, "could not re-apply a ban after a failed journal write");
                }
            }
            return Err(e.into());
        }
        match first {
            Some(e) if lifted.is_empty() => Err(e.into()),
            Some(e) => {
                tracing::error!(error = %e, "some bans could not be lifted; they stay in force and listed");
                Ok(lifted)
            }
            None => Ok(lifted),
        }
    }

    /// Forgets bans that ended at or before `now`: one kernel batch, one journal write.
    pub fn expire(&mut self, now: SystemTime) -> Result<Vec<BanRecord>, LedgerError> {
        let expired = self.store.expired(now);
        self.unban(&expired)
    }

    /// Forgets offense history older than `before` (one journal write).
    pub fn forget_offenses(&mut self, before: SystemTime) -> Result<usize, LedgerError> {
        Ok(self.store.forget_offenses(before)?)
    }

    /// Every ban, in network order.
    pub fn bans(&self) -> impl Iterator<Item = &BanRecord> {
        self.store.bans()
    }

    /// The ban on exactly `net`.
    pub fn get(&self, net: &IpNet) -> Option<&BanRecord> {
        self.store.get(net)
    }

    /// Number of bans.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether there are no bans.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Past offenses of `net`.
    pub fn offense(&self, net: &IpNet) -> Option<Offense> {
        self.store.offense(net)
    }

    /// Journal lines that could not be read at start.
    pub fn damage(&self) -> &[Damage] {
        self.store.damage()
    }

    /// Whether the journal file lags memory after a failed write (rewritten on the next
    /// change).
    pub fn journal_stale(&self) -> bool {
        self.store.is_stale()
    }

    /// The enforcer, for what is not a ban (allowlist, perimeter, geo, counters).
    pub fn enforcer(&self) -> &dyn Enforcer {
        self.enforcer.as_ref()
    }

    /// The enforcer, for what is not a ban.
    pub fn enforcer_mut(&mut self) -> &mut dyn Enforcer {
        self.enforcer.as_mut()
    }

    /// Compares the journal's bans with what the enforcer holds; the mismatch, if any.
    pub fn check(&self) -> Result<(), String> {
        let journal: BTreeSet<IpNet> = self.store.bans().map(|b| b.net).collect();
        let kernel: BTreeSet<IpNet> = self
            .enforcer
            .banned()
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect();
        if journal == kernel {
            return Ok(());
        }
        Err(format!(
            "journal only: {:?}; kernel only: {:?}",
            journal.difference(&kernel).take(10).collect::<Vec<_>>(),
            kernel.difference(&journal).take(10).collect::<Vec<_>>()
        ))
    }
}

fn first_error(results: Vec<Result<(), EnforceError>>) -> Result<(), EnforceError> {
    results.into_iter().collect()
}
