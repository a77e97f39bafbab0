//! Runs many filters over a line in one pass: an Aho-Corasick scan for the rules' literals,
//! then only the candidate rules' anchored regexes. A line with none of the literals (the
//! vast majority of any PBX log) costs one SIMD scan and no allocation.

use std::{net::IpAddr, sync::Arc};

use aho_corasick::{AhoCorasick, MatchKind};
use regex::bytes::{CaptureLocations, Regex};

use super::{
    FilterSpec,
    pattern::{self, PatternError},
};

/// A line that matched: which filter and rule, and the source address at the rule's
/// `<HOST>` position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    /// Filter name (`asterisk`).
    pub filter: Arc<str>,
    /// Rule name within the filter.
    pub rule: Arc<str>,
    /// The source address (IPv4-mapped IPv6 is returned as IPv4).
    pub ip: IpAddr,
}

struct Rule {
    filter: Arc<str>,
    name: Arc<str>,
    regex: Regex,
    /// Index of the `host` group among the regex's captures.
    host: usize,
}

/// Buffers a caller reuses across lines, so steady-state matching allocates nothing.
#[derive(Debug, Default)]
pub struct Scratch {
    ansi: Vec<u8>,
    locations: Vec<Option<CaptureLocations>>,
}

/// Compiled filters.
pub struct Matcher {
    rules: Vec<Rule>,
    /// Leftmost-first automaton: answers "any literal here?" with SIMD (Teddy).
    quick: AhoCorasick,
    /// Standard automaton: lists every (overlapping) literal of a candidate line.
    prefilter: AhoCorasick,
    /// For each prefilter pattern, the rules that need it.
    by_literal: Vec<Vec<usize>>,
    /// Rules with no literal: tried on every line.
    always: Vec<usize>,
}

/// ESC starts the colour sequences Asterisk writes when its log has colour enabled.
const ESC: u8 = 0x1b;

impl Matcher {
    /// Compiles the given filters; the first bad rule is reported.
    pub fn new(filters: &[FilterSpec]) -> Result<Matcher, PatternError> {
        let mut rules = Vec::new();
        let mut literals: Vec<String> = Vec::new();
        let mut by_literal: Vec<Vec<usize>> = Vec::new();
        let mut always = Vec::new();
        for filter in filters {
            let filter_name: Arc<str> = filter.name.as_str().into();
            for spec in &filter.rules {
                let regex = pattern::compile(&spec.name, &filter.prefix, &spec.regex)?;
                let index = rules.len();
                let host = regex
                    .capture_names()
                    .position(|n| n == Some("host"))
                    .expect("compile adds a host group");
                rules.push(Rule {
                    filter: filter_name.clone(),
                    name: spec.name.as_str().into(),
                    regex,
                    host,
                });
                let literal = spec
                    .literal
                    .clone()
                    .unwrap_or_else(|| pattern::derive_literal(&spec.regex));
                if literal.is_empty() {
                    always.push(index);
                } else if let Some(at) = literals.iter().position(|l| *l == literal) {
                    by_literal[at].push(index);
                } else {
                    literals.push(literal);
                    by_literal.push(vec![index]);
                }
            }
        }
        let build = |kind| {
            AhoCorasick::builder()
                .match_kind(kind)
                .build(&literals)
                .map_err(|e| PatternError::Regex {
                    rule: "(prefilter)".into(),
                    message: e.to_string(),
                })
        };
        Ok(Matcher {
            rules,
            quick: build(MatchKind::LeftmostFirst)?,
            prefilter: build(MatchKind::Standard)?,
            by_literal,
            always,
        })
    }

    /// Number of compiled rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Matches one line (without its newline), reusing `scratch` between calls.
    pub fn find_with(&self, line: &[u8], scratch: &mut Scratch) -> Option<Match> {
        let Scratch { ansi, locations } = scratch;
        let line = if memchr::memchr(ESC, line).is_some() {
            strip_ansi(line, ansi);
            ansi.as_slice()
        } else {
            line
        };
        // At most a handful of literals occur in one line; a small bitmap dedupes rules.
        let mut tried = [0u64; 4];
        let mut try_rule = |index: usize| -> Option<Match> {
            if index < 256 {
                let (word, bit) = (index / 64, 1u64 << (index % 64));
                if tried[word] & bit != 0 {
                    return None;
                }
                tried[word] |= bit;
            }
            self.try_rule(index, line, locations)
        };
        // Most lines hold none of the literals: answer that with the SIMD (Teddy) search,
        // which overlapping iteration cannot use, and walk overlaps only on candidates.
        let candidates = if self.quick.is_match(line) {
            Some(self.prefilter.find_overlapping_iter(line))
        } else {
            None
        };
        for hit in candidates.into_iter().flatten() {
            for &index in &self.by_literal[hit.pattern().as_usize()] {
                if let Some(m) = try_rule(index) {
                    return Some(m);
                }
            }
        }
        self.always.iter().find_map(|&index| try_rule(index))
    }

    /// [`Matcher::find_with`] with a throw-away scratch buffer.
    pub fn find(&self, line: &[u8]) -> Option<Match> {
        self.find_with(line, &mut Scratch::default())
    }

    fn try_rule(
        &self,
        index: usize,
        line: &[u8],
        locations: &mut Vec<Option<CaptureLocations>>,
    ) -> Option<Match> {
        let rule = &self.rules[index];
        if locations.len() <= index {
            locations.resize_with(index + 1, || None);
        }
        let locs = locations[index].get_or_insert_with(|| rule.regex.capture_locations());
        rule.regex.captures_read(locs, line)?;
        let (start, end) = locs.get(rule.host)?;
        let ip = parse_host(&line[start..end])?;
        Some(Match {
            filter: rule.filter.clone(),
            rule: rule.name.clone(),
            ip,
        })
    }
}

/// Parses the `<HOST>` capture; text that is not an address yields nothing.
fn parse_host(bytes: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(bytes).ok()?;
    let text = text.split('%').next()?;
    let ip: IpAddr = text.parse().ok()?;
    Some(ip.to_canonical())
}

/// Copies `line` into `out` without ANSI CSI sequences (`ESC [ ... letter`).
fn strip_ansi(line: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < line.len() {
        if line[i] == ESC && line.get(i + 1) == Some(&b'[') {
            i += 2;
            while i < line.len() && !line[i].is_ascii_alphabetic() {
                i += 1;
            }
            i += 1;
        } else {
            out.push(line[i]);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::RuleSpec;

    fn filter(name: &str, rules: &[(&str, &str)]) -> FilterSpec {
        FilterSpec {
            name: name.into(),
            prefix: String::new(),
            rules: rules
                .iter()
                .map(|(n, r)| RuleSpec {
                    name: n.to_string(),
                    regex: r.to_string(),
                    literal: None,
                })
                .collect(),
        }
    }

    #[test]
    fn finds_the_rule_and_the_address() {
        let m = Matcher::new(&[
            filter(
                "a",
                &[
                    ("one", "login failed for <HOST>"),
                    ("two", r"bad password from <HOST> port \d+"),
                ],
            ),
            filter("b", &[("three", r"\d+ <HOST>")]),
        ])
        .unwrap();
        let hit = m.find(b"bad password from 2001:db8::9 port 22").unwrap();
        assert_eq!(
            (&*hit.filter, &*hit.rule, hit.ip.to_string().as_str()),
            ("a", "two", "2001:db8::9")
        );
        let hit = m.find(b"12 192.0.2.4").unwrap();
        assert_eq!(&*hit.rule, "three");
        assert!(m.find(b"nothing here").is_none());
    }

    #[test]
    fn invalid_addresses_are_not_matches() {
        let m = Matcher::new(&[filter("a", &[("one", "login failed for <HOST>")])]).unwrap();
        assert!(m.find(b"login failed for 999.1.1.1").is_none());
        assert!(m.find(b"login failed for ::::").is_none());
        assert_eq!(
            m.find(b"login failed for ::ffff:192.0.2.7")
                .unwrap()
                .ip
                .to_string(),
            "192.0.2.7"
        );
        assert_eq!(
            m.find(b"login failed for fe80::1%eth0")
                .unwrap()
                .ip
                .to_string(),
            "fe80::1"
        );
    }

    #[test]
    fn colour_escapes_are_ignored() {
        let m = Matcher::new(&[filter("a", &[("one", "login failed for <HOST>")])]).unwrap();
        let line = b"\x1b[1;31mlogin failed\x1b[0m for \x1b[1;37m192.0.2.7\x1b[0m";
        assert_eq!(m.find(line).unwrap().ip.to_string(), "192.0.2.7");
    }
}
