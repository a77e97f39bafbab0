//! Runs many filters over a line in one pass: an Aho-Corasick scan for the rules' literals,
//! then only the candidate rules' anchored regexes. A line with none of the literals (the
//! vast majority of any PBX log) costs one SIMD scan and no allocation.

use std::{net::IpAddr, sync::Arc};

use aho_corasick::{AhoCorasick, MatchKind};
use regex::bytes::{CaptureLocations, Regex};

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
    regex: Regex,
    /// Index of the `host` group among the regex's captures.
    host: usize,
    /// Index of the `ext` group, for rules with `<EXT>`.
    ext: Option<usize>,
}

/// Buffers a caller reuses across lines, so steady-state matching allocates nothing.
#[derive(Debug, Default)]
pub struct Scratch {
    ansi: Vec<u8>,
    locations: Vec<Option<CaptureLocations>>,
}

/// One set of prefilter literals and the rules each one admits.
struct Literals {
    /// Leftmost-first automaton: answers "any literal here?" with SIMD (Teddy) when exact.
    quick: AhoCorasick,
    /// Standard automaton: lists every (overlapping) literal of a candidate line.
    all: AhoCorasick,
    /// For each pattern, the rules that need it.
    rules: Vec<Vec<usize>>,
}

impl Literals {
    fn build(
        literals: &[Vec<u8>],
        rules: Vec<Vec<usize>>,
        fold: bool,
    ) -> Result<Literals, PatternError> {
        let build = |kind| {
            AhoCorasick::builder()
                .match_kind(kind)
                .ascii_case_insensitive(fold)
                .build(literals)
                .map_err(|e| PatternError::Regex {
                    rule: "(prefilter)".into(),
                    message: e.to_string(),
                })
        };
        Ok(Literals {
            quick: build(MatchKind::LeftmostFirst)?,
            all: build(MatchKind::Standard)?,
            rules,
        })
    }

    /// Calls `visit` with every rule admitted by a literal in `line`, until it returns a hit.
    fn visit<T>(&self, line: &[u8], visit: &mut impl FnMut(usize) -> Option<T>) -> Option<T> {
        // Most lines hold none of the literals: answer that with the SIMD (Teddy) search,
        // which overlapping iteration cannot use, and walk overlaps only on candidates.
        if !self.quick.is_match(line) {
            return None;
        }
        self.all
            .find_overlapping_iter(line)
            .flat_map(|hit| &self.rules[hit.pattern().as_usize()])
            .find_map(|&index| visit(index))
    }
}

/// Literals being collected, each with the rules that need it.
#[derive(Default)]
struct Collect {
    literals: Vec<Vec<u8>>,
    rules: Vec<Vec<usize>>,
}

impl Collect {
    fn add(&mut self, literal: Vec<u8>, rule: usize) {
        match self.literals.iter().position(|l| *l == literal) {
            Some(at) => self.rules[at].push(rule),
            None => {
                self.literals.push(literal);
                self.rules.push(vec![rule]);
            }
        }
    }
}

/// Compiled filters.
pub struct Matcher {
    rules: Vec<Rule>,
    /// Literals matched byte for byte (every built-in rule has one).
    exact: Literals,
    /// Literals of case-insensitive rules, matched with ASCII case ignored.
    folded: Option<Literals>,
    /// Rules with no literal: tried on every line.
    always: Vec<usize>,
}

/// ESC starts the colour sequences Asterisk writes when its log has colour enabled.
const ESC: u8 = 0x1b;

impl Matcher {
    /// Compiles the given filters; the first bad rule is reported.
    pub fn new(filters: &[FilterSpec]) -> Result<Matcher, PatternError> {
        let mut rules = Vec::new();
        let mut exact = Collect::default();
        let mut folded = Collect::default();
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
                rules.push(Rule {
                    filter: filter_name.clone(),
                    name: spec.name.as_str().into(),
                    evidence: spec.evidence,
                    kind: spec.kind,
                    regex,
                    host,
                    ext,
                });
                match prefilter::derive(&spec.name, &anchored, spec.literal.as_deref())? {
                    Prefilter::Exact(literals) => {
                        literals.into_iter().for_each(|l| exact.add(l, index))
                    }
                    Prefilter::Folded(literals) => {
                        literals.into_iter().for_each(|l| folded.add(l, index))
                    }
                    Prefilter::Always => always.push(index),
                }
            }
        }
        Ok(Matcher {
            rules,
            exact: Literals::build(&exact.literals, exact.rules, false)?,
            folded: if folded.literals.is_empty() {
                None
            } else {
                Some(Literals::build(&folded.literals, folded.rules, true)?)
            },
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
        let Scratch { ansi, locations } = scratch;
        let line = if memchr::memchr(ESC, line).is_some() {
            strip_ansi(line, ansi);
            ansi.as_slice()
        } else {
            line
        };
        self.candidates(line, |index| self.try_rule(index, line, locations))
    }

    /// Calls `visit` with each rule the prefilter admits for `line` (once each), until it
    /// returns something.
    fn candidates<T>(&self, line: &[u8], mut visit: impl FnMut(usize) -> Option<T>) -> Option<T> {
        // At most a handful of literals occur in one line; a small bitmap dedupes rules.
        let mut tried = [0u64; 4];
        let mut once = |index: usize| -> Option<T> {
            if index < 256 {
                let (word, bit) = (index / 64, 1u64 << (index % 64));
                if tried[word] & bit != 0 {
                    return None;
                }
                tried[word] |= bit;
            }
            visit(index)
        };
        self.exact
            .visit(line, &mut once)
            .or_else(|| self.folded.as_ref()?.visit(line, &mut once))
            .or_else(|| self.always.iter().find_map(|&index| once(index)))
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
        let extension = rule
            .ext
            .and_then(|group| locs.get(group))
            .map(|(start, end)| String::from_utf8_lossy(&line[start..end]).into());
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
        self.candidates(line, |i| (i == index).then_some(()))
            .is_some()
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

    #[test]
    fn colour_escapes_are_ignored() {
        let m = Matcher::new(&[filter("a", &[("one", "login failed for <HOST>")])]).unwrap();
        let line = b"\x1b[1;31mlogin failed\x1b[0m for \x1b[1;37m192.0.2.7\x1b[0m";
        assert_eq!(m.find(line).unwrap().ip.to_string(), "192.0.2.7");
    }
}
