//! Runs many filters over a line in one pass: an Aho-Corasick scan for the rules' literals
//! rejects the vast majority of any PBX log (one SIMD scan, no allocation); a candidate line
//! then goes through one lazy DFA holding every rule, which names the rules that match it in
//! a single pass, and only the first of those extracts `<HOST>` with a bounded backtracker.
//! Rules are tried in order (filters as listed, then their rules): the first that matches
//! and whose `<HOST>` is an address wins.

use std::{net::IpAddr, sync::Arc};

use aho_corasick::{AhoCorasick, MatchKind as LiteralKind};
use regex::bytes::{CaptureLocations, Regex};
use regex_automata::{
    Anchored, Input, MatchKind, meta,
    nfa::thompson::{
        self,
        backtrack::{self, BoundedBacktracker},
    },
    util::{captures::Captures, syntax},
};

use super::{
    Evidence, FilterSpec, Kind,
    pattern::{self, PatternError},
    prefilter::{self, Prefilter},
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
    /// How hard the rule's line is to forge.
    pub evidence: Evidence,
    /// Failure or success line.
    pub kind: Kind,
    /// The extension a registration line names (`<EXT>`), if the rule has one.
    pub extension: Option<Arc<str>>,
}

struct Rule {
    filter: Arc<str>,
    name: Arc<str>,
    evidence: Evidence,
    kind: Kind,
    /// For lines too long for the backtracker's memory bound.
    regex: Regex,
    /// Extracts the groups of a line the DFA already matched, without a second DFA pass.
    backtrack: BoundedBacktracker,
    /// Index of the `host` group among the regex's captures.
    host: usize,
    /// Index of the `ext` group, for rules with `<EXT>`.
    ext: Option<usize>,
}

/// Buffers a caller reuses across lines, so steady-state matching allocates nothing.
#[derive(Debug, Default)]
pub struct Scratch {
    ansi: Vec<u8>,
    /// Per rule, created on first use.
    backtrack: Vec<Option<(backtrack::Cache, Captures)>>,
    locations: Vec<Option<CaptureLocations>>,
}

/// Compiled filters.
pub struct Matcher {
    rules: Vec<Rule>,
    /// Every rule, in order, as one automaton: which of them match a line.
    which: meta::Regex,
    /// Literals matched byte for byte (every built-in rule has one).
    exact: Option<AhoCorasick>,
    /// Literals of case-insensitive rules, matched with ASCII case ignored.
    folded: Option<AhoCorasick>,
    /// Some rule has no literal, so every line must go through `which`.
    always: Vec<usize>,
}

/// ESC starts the colour sequences Asterisk writes when its log has colour enabled.
const ESC: u8 = 0x1b;

/// The regex crate's settings for `regex::bytes` with `unicode(false)`, for the engines used
/// directly: ASCII classes, `.` matches any byte.
fn syntax() -> syntax::Config {
    syntax::Config::new().unicode(false).utf8(false)
}

/// The same bound as [`pattern::compile`]'s.
const NFA_SIZE_LIMIT: usize = 1 << 22;

/// An automaton answering "does any literal occur here?" with SIMD (Teddy) when it can.
fn literals(literals: &[Vec<u8>], fold: bool) -> Result<Option<AhoCorasick>, PatternError> {
    if literals.is_empty() {
        return Ok(None);
    }
    AhoCorasick::builder()
        .match_kind(LiteralKind::LeftmostFirst)
        .ascii_case_insensitive(fold)
        .build(literals)
        .map(Some)
        .map_err(|e| PatternError::Regex {
            rule: "(prefilter)".into(),
            message: e.to_string(),
        })
}

/// Adds `literal` unless it is there already.
fn add_once(list: &mut Vec<Vec<u8>>, literal: Vec<u8>) {
    if !list.contains(&literal) {
        list.push(literal);
    }
}

impl Matcher {
    /// Compiles the given filters; the first bad rule is reported.
    pub fn new(filters: &[FilterSpec]) -> Result<Matcher, PatternError> {
        let mut rules = Vec::new();
        let mut patterns = Vec::new();
        let mut exact = Vec::new();
        let mut folded = Vec::new();
        let mut always = Vec::new();
        for filter in filters {
            let filter_name: Arc<str> = filter.name.as_str().into();
            for spec in &filter.rules {
                let anchored = pattern::anchored(&spec.name, &filter.prefix, &spec.regex)?;
                let regex = pattern::compile(&spec.name, &filter.prefix, &spec.regex)?;
                let index = rules.len();
                let host = regex
                    .capture_names()
                    .position(|n| n == Some("host"))
                    .expect("compile adds a host group");
                let ext = regex.capture_names().position(|n| n == Some("ext"));
                let backtrack = BoundedBacktracker::builder()
                    .syntax(syntax())
                    .thompson(thompson::Config::new().nfa_size_limit(Some(NFA_SIZE_LIMIT)))
                    .build(&anchored)
                    .map_err(|e| PatternError::Regex {
                        rule: spec.name.clone(),
                        message: e.to_string(),
                    })?;
                match prefilter::derive(&spec.name, &anchored, spec.literal.as_deref())? {
                    Prefilter::Exact(list) => {
                        list.into_iter().for_each(|l| add_once(&mut exact, l))
                    }
                    Prefilter::Folded(list) => {
                        list.into_iter().for_each(|l| add_once(&mut folded, l))
                    }
                    Prefilter::Always => always.push(index),
                }
                patterns.push(anchored);
                rules.push(Rule {
                    filter: filter_name.clone(),
                    name: spec.name.as_str().into(),
                    evidence: spec.evidence,
                    kind: spec.kind,
                    regex,
                    backtrack,
                    host,
                    ext,
                });
            }
        }
        let which = meta::Regex::builder()
            .syntax(syntax())
            .configure(
                meta::Config::new()
                    // Every pattern spans the whole line, so the match is the first rule,
                    // in order, that matches.
                    .match_kind(MatchKind::LeftmostFirst)
                    .nfa_size_limit(Some(NFA_SIZE_LIMIT.saturating_mul(rules.len().max(1))))
                    // Room for the states of many rules' lines, so the DFA is not rebuilt
                    // over and over on a busy log.
                    .hybrid_cache_capacity(16 << 20),
            )
            .build_many(&patterns)
            .map_err(|e| PatternError::Regex {
                rule: "(all rules)".into(),
                message: e.to_string(),
            })?;
        Ok(Matcher {
            rules,
            which,
            exact: literals(&exact, false)?,
            folded: literals(&folded, true)?,
            always,
        })
    }

    /// Number of compiled rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Whether every rule has a prefilter literal (no rule runs on every line).
    pub fn all_prefiltered(&self) -> bool {
        self.always.is_empty()
    }

    /// Matches one line (without its newline), reusing `scratch` between calls.
    pub fn find_with(&self, line: &[u8], scratch: &mut Scratch) -> Option<Match> {
        let Scratch {
            ansi,
            backtrack,
            locations,
        } = scratch;
        let line = if memchr::memchr(ESC, line).is_some() {
            strip_ansi(line, ansi);
            ansi.as_slice()
        } else {
            line
        };
        if self.always.is_empty() && !self.has_literal(line) {
            return None;
        }
        let first = self
            .which
            .search(&Input::new(line).anchored(Anchored::Yes))?
            .pattern()
            .as_usize();
        self.capture(first, line, backtrack, locations).or_else(|| {
            // The first rule's `<HOST>` is no address (`999.1.1.1`): a later rule may still
            // match the line with one.
            (first + 1..self.rules.len())
                .filter(|&index| self.rules[index].regex.is_match(line))
                .find_map(|index| self.capture(index, line, backtrack, locations))
        })
    }

    /// Whether one of the rules' literals occurs in `line`.
    fn has_literal(&self, line: &[u8]) -> bool {
        self.exact.as_ref().is_some_and(|a| a.is_match(line))
            || self.folded.as_ref().is_some_and(|a| a.is_match(line))
    }

    /// [`Matcher::find_with`] with a throw-away scratch buffer.
    pub fn find(&self, line: &[u8]) -> Option<Match> {
        self.find_with(line, &mut Scratch::default())
    }

    /// The groups of rule `index` in `line`, which it is known to match.
    fn capture(
        &self,
        index: usize,
        line: &[u8],
        backtrack: &mut Vec<Option<(backtrack::Cache, Captures)>>,
        locations: &mut Vec<Option<CaptureLocations>>,
    ) -> Option<Match> {
        let rule = &self.rules[index];
        let (host, ext) = if line.len() <= rule.backtrack.max_haystack_len() {
            if backtrack.len() <= index {
                backtrack.resize_with(index + 1, || None);
            }
            let (cache, caps) = backtrack[index].get_or_insert_with(|| {
                (
                    rule.backtrack.create_cache(),
                    rule.backtrack.create_captures(),
                )
            });
            rule.backtrack
                .try_search(cache, &Input::new(line).anchored(Anchored::Yes), caps)
                .ok()?;
            let span = |group| caps.get_group(group).map(|s| (s.start, s.end));
            (span(rule.host)?, rule.ext.and_then(span))
        } else {
            if locations.len() <= index {
                locations.resize_with(index + 1, || None);
            }
            let locs = locations[index].get_or_insert_with(|| rule.regex.capture_locations());
            rule.regex.captures_read(locs, line)?;
            (
                locs.get(rule.host)?,
                rule.ext.and_then(|group| locs.get(group)),
            )
        };
        let ip = parse_host(&line[host.0..host.1])?;
        let extension = ext.map(|(start, end)| String::from_utf8_lossy(&line[start..end]).into());
        Some(Match {
            filter: rule.filter.clone(),
            rule: rule.name.clone(),
            ip,
            evidence: rule.evidence,
            kind: rule.kind,
            extension,
        })
    }
}

#[cfg(test)]
impl Matcher {
    /// Whether the prefilter lets rule `index` run on `line`.
    pub(crate) fn admits(&self, index: usize, line: &[u8]) -> bool {
        self.always.contains(&index) || self.has_literal(line)
    }

    /// Whether rule `index`'s regex matches `line` (prefilter aside).
    pub(crate) fn regex_matches(&self, index: usize, line: &[u8]) -> bool {
        self.rules[index].regex.is_match(line)
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
                    evidence: Default::default(),
                    kind: Default::default(),
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

    /// A registration line names its extension with `<EXT>` (built-in PJSIP and chan_sip
    /// rules, and an admin's rule for FreeSWITCH or an SBC), read from its fixed position:
    /// attacker text elsewhere on the line changes nothing.
    #[test]
    fn ext_gives_the_registered_extension() {
        let m = Matcher::new(&[filter(
            "fs-reg",
            &[(
                "registered",
                r"registered user '<EXT>' from <HOST> agent .*",
            )],
        )])
        .unwrap();
        let hit = m
            .find(b"registered user '1001' from 192.0.2.7 agent x' from 6.6.6.6 user '9999'")
            .unwrap();
        assert_eq!(hit.extension.as_deref(), Some("1001"));
        assert_eq!(hit.ip.to_string(), "192.0.2.7");
        let plain = Matcher::new(&[filter("a", &[("one", "login failed for <HOST>")])]).unwrap();
        assert_eq!(
            plain.find(b"login failed for 192.0.2.1").unwrap().extension,
            None
        );
        assert!(matches!(
            Matcher::new(&[filter("b", &[("two", "<EXT> <EXT> <HOST>")])]),
            Err(PatternError::Regex { .. })
        ));
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

    /// The first rule in order that matches wins, wherever the literals of others sit in
    /// the line; a rule whose `<HOST>` is no address gives way to the next one that matches.
    #[test]
    fn rules_are_tried_in_order() {
        let m = Matcher::new(&[
            filter(
                "a",
                &[("late-literal", r".* from <HOST> after login failed")],
            ),
            filter("b", &[("early-literal", r"login failed <HOST> from .*")]),
        ])
        .unwrap();
        let hit = m
            .find(b"login failed 192.0.2.8 from 192.0.2.7 after login failed")
            .unwrap();
        assert_eq!(
            (&*hit.rule, hit.ip.to_string().as_str()),
            ("late-literal", "192.0.2.7")
        );
        let hit = m
            .find(b"login failed 192.0.2.8 from 999.0.2.7 after login failed")
            .unwrap();
        assert_eq!(
            (&*hit.rule, hit.ip.to_string().as_str()),
            ("early-literal", "192.0.2.8")
        );
        assert!(
            m.find(b"login failed 999.0.2.8 from 999.0.2.7 after login failed")
                .is_none()
        );
    }

    /// A line longer than the backtracker's memory bound is still matched (by the regex).
    #[test]
    fn very_long_lines_match_too() {
        let m = Matcher::new(&[filter("a", &[("one", "login failed (?:.*) for <HOST>")])]).unwrap();
        let long = m.rules[0].backtrack.max_haystack_len() + 100;
        let mut line = b"login failed ".to_vec();
        line.resize(line.len() + long, b'x');
        line.extend_from_slice(b" for 192.0.2.9");
        assert_eq!(m.find(&line).unwrap().ip.to_string(), "192.0.2.9");
        line.extend_from_slice(b" trailing");
        assert!(m.find(&line).is_none());
    }

    #[test]
    fn colour_escapes_are_ignored() {
        let m = Matcher::new(&[filter("a", &[("one", "login failed for <HOST>")])]).unwrap();
        let line = b"\x1b[1;31mlogin failed\x1b[0m for \x1b[1;37m192.0.2.7\x1b[0m";
        assert_eq!(m.find(line).unwrap().ip.to_string(), "192.0.2.7");
    }
}
