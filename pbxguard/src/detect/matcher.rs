//! Runs many filters over a line: an Aho-Corasick scan for the rules' literals rejects the
//! vast majority of any PBX log (one SIMD scan, no allocation) and names the rules whose
//! literals a line holds. When those are few, each is tried in order: splitting the line at
//! the rule's placeholders ([`super::split`]) decides the match and reads `<HOST>`/`<EXT>`
//! in one pass. Otherwise one lazy DFA holding every rule names the first rule that
//! matches. Rules are tried in order (filters as listed, then their rules): the first that
//! matches and whose `<HOST>` is an address wins.

use std::{net::IpAddr, sync::Arc};

use aho_corasick::{AhoCorasick, MatchKind as LiteralKind};
use regex_automata::{
    Anchored, Input, MatchKind, PatternID, meta,
    nfa::thompson::{
        self,
        backtrack::{self, BoundedBacktracker},
        pikevm::{self, PikeVM},
    },
    util::captures::Captures,
};

use super::{
    Evidence, FilterSpec, Kind,
    pattern::{self, PatternError},
    prefilter::{self, Prefilter},
    split::{Outcome, Spans, Split, SplitCache},
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
    pikevm: PikeVM,
    /// Reads the groups of a line the DFA already matched, when the rule's placeholders are
    /// in its top-level sequence and the line splits one way (most lines of most rules).
    split: Option<Split>,
    /// Extracts the groups otherwise, without a second DFA pass.
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
    /// The rules whose literals a line holds.
    candidates: Vec<usize>,
    groups: GroupScratch,
}

/// What reading a rule's groups reuses, per rule, created on first use.
#[derive(Debug, Default)]
struct GroupScratch {
    split: Vec<Option<SplitCache>>,
    backtrack: Vec<Option<(backtrack::Cache, Captures)>>,
    pikevm: Vec<Option<(pikevm::Cache, Captures)>>,
}

/// Compiled filters.
pub struct Matcher {
    rules: Vec<Rule>,
    /// Every rule, in order, as one automaton: which of them match a line.
    which: meta::Regex,
    /// Literals matched byte for byte (every built-in rule has one).
    exact: Option<Literals>,
    /// Literals of case-insensitive rules, matched with ASCII case ignored.
    folded: Option<Literals>,
    /// Some rule has no literal, so every line must go through `which`.
    always: Vec<usize>,
}

/// Up to this many candidate rules are tried one by one rather than through `which`.
const FEW_CANDIDATES: usize = 3;

/// Literal hits looked at per line while listing the candidate rules; a line with more (a
/// literal repeated by an attacker) goes through `which`, whose cost does not grow with them.
const MAX_LITERAL_HITS: usize = 64;

/// ESC starts the colour sequences Asterisk writes when its log has colour enabled.
const ESC: u8 = 0x1b;

/// Bounds the memory one rule's automaton may take.
const NFA_SIZE_LIMIT: usize = 1 << 22;

/// A rule's error from regex-automata.
fn rule_error(rule: &str, error: impl std::fmt::Display) -> PatternError {
    PatternError::Regex {
        rule: rule.into(),
        message: error.to_string(),
    }
}

/// The rules' prefilter literals in one automaton, searched with SIMD (Teddy) when it can,
/// and which rules each literal lets through.
struct Literals {
    automaton: AhoCorasick,
    /// Per literal, the rules owning it or a literal that may start at the same place (one
    /// a prefix of the other): a leftmost-first search reports only one of those.
    owners: Vec<Vec<usize>>,
}

impl Literals {
    /// `list` holds each literal once, with the rules owning it.
    fn new(list: Vec<(Vec<u8>, Vec<usize>)>, fold: bool) -> Result<Option<Literals>, PatternError> {
        if list.is_empty() {
            return Ok(None);
        }
        // Compared as the automaton compares them.
        let keys: Vec<Vec<u8>> = list
            .iter()
            .map(|(l, _)| {
                if fold {
                    l.to_ascii_lowercase()
                } else {
                    l.clone()
                }
            })
            .collect();
        let owners = keys
            .iter()
            .map(|a| {
                let mut owners: Vec<usize> = keys
                    .iter()
                    .zip(&list)
                    .filter(|(b, _)| a.starts_with(b) || b.starts_with(a))
                    .flat_map(|(_, (_, rules))| rules.iter().copied())
                    .collect();
                owners.sort_unstable();
                owners.dedup();
                owners
            })
            .collect();
        let automaton = AhoCorasick::builder()
            .match_kind(LiteralKind::LeftmostFirst)
            .ascii_case_insensitive(fold)
            .build(list.iter().map(|(literal, _)| literal))
            .map_err(|e| rule_error("(prefilter)", e))?;
        Ok(Some(Literals { automaton, owners }))
    }

    /// Adds to `out` the rules owning a literal in `line`, stopping once it holds `enough`;
    /// `false` when it stopped early because the line repeats literals over and over (an
    /// attacker's line): then `out` may lack some.
    fn owners_in(&self, line: &[u8], out: &mut Vec<usize>, enough: usize) -> bool {
        let mut at = 0;
        for _ in 0..MAX_LITERAL_HITS {
            if out.len() >= enough {
                return true;
            }
            let Some(found) = self
                .automaton
                .find(aho_corasick::Input::new(line).range(at..))
            else {
                return true;
            };
            for &rule in &self.owners[found.pattern().as_usize()] {
                if !out.contains(&rule) {
                    out.push(rule);
                }
            }
            at = found.start() + 1;
        }
        false
    }
}

/// Adds `literal` of rule `rule` to `list`.
fn add_literal(list: &mut Vec<(Vec<u8>, Vec<usize>)>, literal: Vec<u8>, rule: usize) {
    match list.iter_mut().find(|(l, _)| *l == literal) {
        Some((_, rules)) => rules.push(rule),
        None => list.push((literal, vec![rule])),
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
                // Parsed once; every engine below is built from the same tree.
                let hir = pattern::parse(&spec.name, &filter.prefix, &spec.regex)?;
                let index = rules.len();
                let nfa = thompson::Compiler::new()
                    .configure(thompson::Config::new().nfa_size_limit(Some(NFA_SIZE_LIMIT)))
                    .build_from_hir(&hir)
                    .map_err(|e| rule_error(&spec.name, e))?;
                let groups = nfa.group_info();
                let host = groups
                    .to_index(PatternID::ZERO, "host")
                    .expect("parse adds a host group");
                let ext = groups.to_index(PatternID::ZERO, "ext");
                let backtrack = BoundedBacktracker::builder()
                    .build_from_nfa(nfa.clone())
                    .map_err(|e| rule_error(&spec.name, e))?;
                let pikevm = PikeVM::builder()
                    .build_from_nfa(nfa)
                    .map_err(|e| rule_error(&spec.name, e))?;
                match prefilter::derive(&spec.name, &hir, spec.literal.as_deref())? {
                    Prefilter::Exact(list) => list
                        .into_iter()
                        .for_each(|l| add_literal(&mut exact, l, index)),
                    Prefilter::Folded(list) => list
                        .into_iter()
                        .for_each(|l| add_literal(&mut folded, l, index)),
                    Prefilter::Always => always.push(index),
                }
                rules.push(Rule {
                    filter: filter_name.clone(),
                    name: spec.name.as_str().into(),
                    evidence: spec.evidence,
                    kind: spec.kind,
                    pikevm,
                    split: Split::new(&hir, NFA_SIZE_LIMIT),
                    backtrack,
                    host,
                    ext,
                });
                patterns.push(hir);
            }
        }
        let which = meta::Regex::builder()
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
            .build_many_from_hir(&patterns)
            .map_err(|e| rule_error("(all rules)", e))?;
        Ok(Matcher {
            rules,
            which,
            exact: Literals::new(exact, false)?,
            folded: Literals::new(folded, true)?,
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
            candidates,
            groups,
        } = scratch;
        let line = if memchr::memchr(ESC, line).is_some() {
            strip_ansi(line, ansi);
            ansi.as_slice()
        } else {
            line
        };
        if self.always.is_empty() {
            // Only a rule owning a literal in the line can match it. When those are few,
            // trying each in order decides (a rule that does not match usually fails within
            // a few bytes of its literal); otherwise one pass of `which` picks the first
            // matching rule.
            candidates.clear();
            let listed = self.candidates(line, candidates, FEW_CANDIDATES + 1);
            if listed && candidates.len() <= FEW_CANDIDATES {
                candidates.sort_unstable();
                return candidates
                    .iter()
                    .find_map(|&rule| self.capture(rule, line, groups));
            }
        }
        self.first_match(line, groups)
    }

    /// The first rule in order that matches `line` with an address, by `which`.
    fn first_match(&self, line: &[u8], groups: &mut GroupScratch) -> Option<Match> {
        let first = self
            .which
            .search(&Input::new(line).anchored(Anchored::Yes))?
            .pattern()
            .as_usize();
        self.capture(first, line, groups).or_else(|| {
            // The first rule's `<HOST>` is no address (`999.1.1.1`): a later rule may still
            // match the line with one.
            (first + 1..self.rules.len()).find_map(|index| self.capture(index, line, groups))
        })
    }

    /// Adds to `out` the rules owning a literal in `line`, up to `enough` of them; `false`
    /// when the line holds too many literal hits to list them all.
    fn candidates(&self, line: &[u8], out: &mut Vec<usize>, enough: usize) -> bool {
        [&self.exact, &self.folded]
            .into_iter()
            .flatten()
            .all(|literals| literals.owners_in(line, out, enough))
    }

    /// [`Matcher::find_with`] with a throw-away scratch buffer.
    pub fn find(&self, line: &[u8]) -> Option<Match> {
        self.find_with(line, &mut Scratch::default())
    }

    /// The match of rule `index` in `line`, if it matches with an address.
    fn capture(&self, index: usize, line: &[u8], groups: &mut GroupScratch) -> Option<Match> {
        let rule = &self.rules[index];
        let Spans { host, ext } = self.spans(index, line, groups)?;
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

    /// Where `<HOST>` and `<EXT>` sit in `line`, which rule `index` is known to match: by
    /// splitting the line at the rule's placeholders when it splits one way, otherwise by
    /// the backtracker (or the Pike VM, for lines beyond its memory bound). `None` when the
    /// rule does not match after all.
    fn spans(&self, index: usize, line: &[u8], groups: &mut GroupScratch) -> Option<Spans> {
        let rule = &self.rules[index];
        if let Some(split) = &rule.split {
            let cache = per_rule(&mut groups.split, index, || split.create_cache());
            match split.split(cache, line) {
                Outcome::One(spans) => return Some(spans),
                Outcome::NoMatch => return None,
                Outcome::Unsure => {}
            }
        }
        let input = Input::new(line).anchored(Anchored::Yes);
        let caps = if line.len() <= rule.backtrack.max_haystack_len() {
            let (cache, caps) = per_rule(&mut groups.backtrack, index, || {
                (
                    rule.backtrack.create_cache(),
                    rule.backtrack.create_captures(),
                )
            });
            rule.backtrack.try_search(cache, &input, caps).ok()?;
            caps
        } else {
            let (cache, caps) = per_rule(&mut groups.pikevm, index, || {
                (rule.pikevm.create_cache(), rule.pikevm.create_captures())
            });
            rule.pikevm.search(cache, &input, caps);
            caps
        };
        rule.spans_of(caps)
    }
}

impl Rule {
    /// The placeholder spans in a search's captures; `None` when it did not match.
    fn spans_of(&self, caps: &Captures) -> Option<Spans> {
        let span = |group| caps.get_group(group).map(|s| (s.start, s.end));
        Some(Spans {
            host: span(self.host)?,
            ext: self.ext.and_then(span),
        })
    }
}

/// Rule `index`'s entry in a per-rule scratch list, created on first use.
fn per_rule<T>(list: &mut Vec<Option<T>>, index: usize, new: impl FnOnce() -> T) -> &mut T {
    if list.len() <= index {
        list.resize_with(index + 1, || None);
    }
    list[index].get_or_insert_with(new)
}

#[cfg(test)]
impl Matcher {
    /// Whether the prefilter lets rule `index` run on `line`.
    pub(crate) fn admits(&self, index: usize, line: &[u8]) -> bool {
        let mut candidates = Vec::new();
        let listed = self.candidates(line, &mut candidates, usize::MAX);
        !listed || self.always.contains(&index) || candidates.contains(&index)
    }

    /// [`Matcher::find`] the slow way: `which` for every line the prefilter lets through.
    pub(crate) fn find_by_which(&self, line: &[u8]) -> Option<Match> {
        let mut candidates = Vec::new();
        self.candidates(line, &mut candidates, 1);
        if self.always.is_empty() && candidates.is_empty() {
            return None;
        }
        self.first_match(line, &mut GroupScratch::default())
    }

    /// Rule `index`'s spans in `line` read by splitting, and by the backtracker.
    pub(crate) fn spans_both(&self, index: usize, line: &[u8]) -> (Option<Outcome>, Option<Spans>) {
        let rule = &self.rules[index];
        let split = rule
            .split
            .as_ref()
            .map(|split| split.split(&mut split.create_cache(), line));
        let mut cache = rule.backtrack.create_cache();
        let mut caps = rule.backtrack.create_captures();
        rule.backtrack
            .try_search(
                &mut cache,
                &Input::new(line).anchored(Anchored::Yes),
                &mut caps,
            )
            .unwrap();
        (split, rule.spans_of(&caps))
    }

    /// Whether rule `index` is read by splitting (its placeholders are top-level).
    pub(crate) fn splits(&self, index: usize) -> bool {
        self.rules[index].split.is_some()
    }

    /// Whether rule `index`'s regex matches `line` (prefilter aside).
    pub(crate) fn regex_matches(&self, index: usize, line: &[u8]) -> bool {
        let pikevm = &self.rules[index].pikevm;
        pikevm.is_match(
            &mut pikevm.create_cache(),
            Input::new(line).anchored(Anchored::Yes),
        )
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

    /// The rule and address `m` finds in `line`, as plain strings for the assertions.
    fn hit(m: &Matcher, line: &[u8]) -> Option<(String, String)> {
        m.find(line)
            .map(|hit| (hit.rule.to_string(), hit.ip.to_string()))
    }

    fn pair(rule: &str, ip: &str) -> Option<(String, String)> {
        Some((rule.into(), ip.into()))
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
        assert_eq!(
            hit(
                &m,
                b"login failed 192.0.2.8 from 192.0.2.7 after login failed"
            ),
            pair("late-literal", "192.0.2.7")
        );
        assert_eq!(
            hit(
                &m,
                b"login failed 192.0.2.8 from 999.0.2.7 after login failed"
            ),
            pair("early-literal", "192.0.2.8")
        );
        assert!(
            m.find(b"login failed 999.0.2.8 from 999.0.2.7 after login failed")
                .is_none()
        );
    }

    /// A line holding the literals of more than [`FEW_CANDIDATES`] rules goes through the
    /// DFA of every rule: the same order, and the same fallback to a later rule.
    #[test]
    fn many_candidates_are_decided_in_order_too() {
        let m = Matcher::new(&[filter(
            "a",
            &[
                ("one", r"alpha .* from <HOST>"),
                ("two", r"beta .* from <HOST>"),
                ("three", r"gamma .* from <HOST>"),
                ("four", r".*delta.* at <HOST>.*"),
                ("five", r".*epsilon.* on <HOST>"),
            ],
        )])
        .unwrap();
        assert_eq!(
            hit(
                &m,
                b"zeta alpha beta gamma delta epsilon at 192.0.2.5 on 192.0.2.6"
            ),
            pair("four", "192.0.2.5")
        );
        assert_eq!(
            hit(
                &m,
                b"zeta alpha beta gamma delta epsilon at 999.0.2.5 on 192.0.2.6"
            ),
            pair("five", "192.0.2.6")
        );
        assert!(
            m.find(b"zeta alpha beta gamma delta epsilon at 999.0.2.5 on 999.0.2.6")
                .is_none()
        );
    }

    /// A line repeating a literal more often than the candidate listing looks (an attacker
    /// can write one) is still decided, by the DFA of every rule.
    #[test]
    fn lines_repeating_a_literal_are_still_decided() {
        let m = Matcher::new(&[filter(
            "a",
            &[
                ("one", r"(?:login failed from )+<HOST>"),
                ("two", r"x <HOST>"),
            ],
        )])
        .unwrap();
        let mut line = b"login failed from ".repeat(MAX_LITERAL_HITS * 2);
        line.extend_from_slice(b"192.0.2.3");
        assert_eq!(hit(&m, &line), pair("one", "192.0.2.3"));
        line.extend_from_slice(b" and more");
        assert!(m.find(&line).is_none());
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

    use proptest::prelude::*;

    use crate::detect::testgen::{BUILTIN, builtin_lines, near_miss};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// Deciding a line by its few candidate rules finds what `which` finds, on the
        /// built-in rules' lines and on lines near them (cut short, one byte changed, or two
        /// rules' lines joined).
        #[test]
        fn few_candidates_decide_as_which_does(
            (_, line) in builtin_lines(),
            (_, other) in builtin_lines(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            how in 0..4u8,
        ) {
            let m = &BUILTIN.0;
            let line = match how {
                0 => line,
                1 | 2 => near_miss(line, at, byte, how == 1),
                _ => [line, other].concat(),
            };
            prop_assert_eq!(m.find(&line), m.find_by_which(&line), "{:?}", String::from_utf8_lossy(&line));
        }
    }

    #[test]
    fn colour_escapes_are_ignored() {
        let m = Matcher::new(&[filter("a", &[("one", "login failed for <HOST>")])]).unwrap();
        let line = b"\x1b[1;31mlogin failed\x1b[0m for \x1b[1;37m192.0.2.7\x1b[0m";
        assert_eq!(m.find(line).unwrap().ip.to_string(), "192.0.2.7");
    }
}
