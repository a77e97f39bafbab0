//! Detection: recognising attack lines in PBX and sshd logs.
//!
//! A [`FilterSpec`] is a named set of rules, each one regex for one log line format with a
//! `<HOST>` placeholder where the attacker's address sits. Built-in filters live in
//! [`filters`]; admins add their own in TOML. The [`Matcher`] compiles them all into a
//! literal prefilter plus per-rule anchored regexes.

pub mod filters;
pub mod matcher;
pub mod pattern;
pub mod prefilter;
pub mod split;
#[cfg(test)]
mod testgen;
pub mod tracker;

use serde::{Deserialize, Serialize};

pub use matcher::{Match, Matcher, Scratch};

/// How hard a detection is to forge: it decides whether it may count against a *known*
/// source (one that authenticated successfully) and how many hits a stranger needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Evidence {
    /// Needs a round trip from the real address (digest auth after a challenge, anything over
    /// an established TCP connection, sshd): counts against everyone.
    Proven,
    /// One forged UDP packet can produce it (scanner User-Agent or flood over UDP, a log line
    /// caused by one unauthenticated request): never counts against a known source. The
    /// default for `[[filter]]` rules that do not say.
    #[default]
    Spoofable,
}

impl Evidence {
    /// The lowercase name used in the config, `bans list` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::Proven => "proven",
            Evidence::Spoofable => "spoofable",
        }
    }
}

/// Whether a rule's line means the source failed or authenticated successfully.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Counts towards a ban.
    #[default]
    Failure,
    /// Marks the address *known* for `[policy] known_for`: spoofable evidence no longer
    /// counts against it.
    Success,
}

/// One line format that means "this source failed" (or, with `kind = "success"`, that it
/// authenticated).
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
    /// How hard the line is to forge; `spoofable` when absent.
    #[serde(default)]
    pub evidence: Evidence,
    /// `failure` (default) or `success`.
    #[serde(default)]
    pub kind: Kind,
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
                    evidence: Evidence::Proven,
                    kind: Kind::Failure,
                })
                .collect(),
        }
    }

    /// Declares the named rules spoofable (built-in rules start as proven). Panics on a name
    /// the filter lacks, so a renamed rule cannot silently become proven.
    pub fn spoofable(mut self, names: &[&str]) -> FilterSpec {
        for name in names {
            self.rule_mut(name).evidence = Evidence::Spoofable;
        }
        self
    }

    /// Appends success rules (proven: each follows a real login) from a static table.
    pub fn and_success(mut self, rules: &[(&str, &str, &str)]) -> FilterSpec {
        let extra = FilterSpec::from_static(&self.name, &self.prefix, rules);
        self.rules.extend(extra.rules.into_iter().map(|r| RuleSpec {
            kind: Kind::Success,
            ..r
        }));
        self
    }

    /// Declares the named rules success lines.
    pub fn success(mut self, names: &[&str]) -> FilterSpec {
        for name in names {
            self.rule_mut(name).kind = Kind::Success;
        }
        self
    }

    fn rule_mut(&mut self, name: &str) -> &mut RuleSpec {
        let filter = self.name.clone();
        self.rules
            .iter_mut()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("filter {filter} has no rule {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_rules_are_spoofable_failures_unless_they_say_otherwise() {
        let spec: FilterSpec = toml::from_str(
            "name = \"mine\"\n[[rule]]\nname = \"a\"\nregex = 'x <HOST>'\n\
             [[rule]]\nname = \"b\"\nregex = 'ok <HOST>'\nevidence = \"proven\"\nkind = \"success\"\n",
        )
        .unwrap();
        assert_eq!(
            (spec.rules[0].evidence, spec.rules[0].kind),
            (Evidence::Spoofable, Kind::Failure)
        );
        assert_eq!(
            (spec.rules[1].evidence, spec.rules[1].kind),
            (Evidence::Proven, Kind::Success)
        );
        let m = Matcher::new(&[spec]).unwrap();
        let hit = m.find(b"ok 192.0.2.9").unwrap();
        assert_eq!((hit.evidence, hit.kind), (Evidence::Proven, Kind::Success));
        assert!(
            toml::from_str::<FilterSpec>(
                "name = \"m\"\n[[rule]]\nname = \"a\"\nregex = 'x <HOST>'\nevidence = \"sure\"\n"
            )
            .is_err()
        );
    }

    #[test]
    #[should_panic(expected = "has no rule")]
    fn declaring_a_missing_rule_is_a_bug_caught_at_once() {
        FilterSpec::from_static("f", "", &[("a", "", "x <HOST>")]).spoofable(&["b"]);
    }
}
