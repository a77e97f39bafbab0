//! Toll fraud: call records (`cdr.rs`) are classified by destination (`numbers.rs`) and
//! evaluated against per-extension rules (`rules.rs`) by the `fraud` thread (`watch.rs`); a
//! hit alerts and can ban the address the extension registered from (`engine/fraud.rs`).

pub mod cdr;
pub mod numbers;
pub mod rules;
pub mod watch;

use std::{collections::BTreeMap, time::SystemTime};

use serde::Serialize;

use self::{numbers::Class, rules::ExtensionReport};

/// One `[[cdr]]` file in `fraud status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CdrStatus {
    /// The file.
    pub path: String,
    /// Rows read as calls.
    pub rows: u64,
    /// Rows that did not fit the format (skipped).
    pub malformed: u64,
    /// When a row was last read.
    #[serde(with = "crate::units::rfc3339::option")]
    pub last_read: Option<SystemTime>,
}

/// `pbxguard fraud status` and the fraud metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FraudReport {
    /// The call-record files.
    pub sources: Vec<CdrStatus>,
    /// Calls classified, by class.
    pub calls: BTreeMap<Class, u64>,
    /// Rule hits, by rule.
    pub hits: BTreeMap<String, u64>,
    /// Extensions, nearest a limit first.
    pub extensions: Vec<ExtensionReport>,
}
