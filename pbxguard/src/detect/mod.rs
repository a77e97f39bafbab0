//! Detection: recognising attack lines in PBX and sshd logs.
//!
//! A [`FilterSpec`] is a named set of rules, each one regex for one log line format with a
//! `<HOST>` placeholder where the attacker's address sits. Built-in filters live in
//! [`filters`]; admins add their own in TOML. The [`Matcher`] compiles them all into a
//! literal prefilter plus per-rule anchored regexes.

pub mod filters;
pub mod matcher;
pub mod pattern;
pub mod tracker;

use serde::{Deserialize, Serialize};

pub use matcher::{Match, Matcher, Scratch};

/// One line format that means "this source failed".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Stable name shown in `bans list`, metrics and `test-log` (`wrong_password`).
    pub name: String,
    /// Regex (Rust syntax, matched against bytes, ASCII classes) with exactly one `<HOST>`.
    /// It is anchored at both ends; the filter's prefix is put in front of it.
    pub regex: String,
    /// A literal every matching line contains; lines without it skip the regex entirely.
    /// Derived from the regex when absent.
    #[serde(default)]
    pub literal: Option<String>,
}

/// A named set of rules for one program's log format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Filter name used in `[[source]] filters` and shown as the ban's source (`asterisk`).
    pub name: String,
    /// Regex for the line prefix common to every rule (timestamp, host, process), without `^`.
    #[serde(default)]
    pub prefix: String,
    /// The rules.
    #[serde(rename = "rule")]
    pub rules: Vec<RuleSpec>,
}

impl FilterSpec {
    /// Builds a spec from static rule tables (used by the built-in filters).
    pub fn from_static(name: &str, prefix: &str, rules: &[(&str, &str, &str)]) -> FilterSpec {
        FilterSpec {
            name: name.to_string(),
            prefix: prefix.to_string(),
            rules: rules
                .iter()
                .map(|(rule, literal, regex)| RuleSpec {
                    name: rule.to_string(),
                    regex: regex.to_string(),
                    literal: (!literal.is_empty()).then(|| literal.to_string()),
                })
                .collect(),
        }
    }
}
