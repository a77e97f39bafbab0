//! Reads `<HOST>` and `<EXT>` out of a line a rule is known to match, without a capturing
//! engine: the rule is cut at its placeholders into pieces (fixed text, `<HOST>`, fixed
//! text, ...), and each piece is a lazy DFA that lists every position where it can end.
//! Walking the pieces from the line's start gives every way the line splits; when there is
//! exactly one, its placeholder spans are the ones any capturing engine reports. When the
//! rule has a placeholder inside an alternative or repetition, or a line splits more than
//! one way, the caller falls back to the bounded backtracker.
//!
//! Why: on a busy PBX most matched lines are registrations (`Added contact`), and capturing
//! their groups with a backtracker cost several times the DFA pass that matched them.

use regex_automata::{
    Anchored, Input, MatchKind,
    hybrid::dfa::{Cache, DFA},
    nfa::thompson::{self, WhichCaptures},
};
use regex_syntax::hir::{Hir, HirKind};

/// A piece may end at no more places than this; more means "ambiguous here", so give up.
const MAX_ENDS: usize = 16;
/// DFA passes one line may take before giving up (a bound on the walk's branching).
const MAX_PASSES: u32 = 64;

/// Which group a placeholder piece is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Host,
    Ext,
}

/// The byte spans of `<HOST>` and `<EXT>` in a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spans {
    /// `<HOST>`, without brackets.
    pub host: (usize, usize),
    /// `<EXT>`, for rules that have one.
    pub ext: Option<(usize, usize)>,
}

/// What splitting a line found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The line splits exactly one way: the rule matches, with these spans.
    One(Spans),
    /// The line does not split at all: the rule does not match it.
    NoMatch,
    /// The line splits several ways, or the walk hit a bound: ask a capturing engine.
    Unsure,
}

/// A rule cut at its placeholders.
#[derive(Clone, Debug)]
pub struct Split {
    /// Fixed text, placeholder, fixed text[, placeholder, fixed text], in line order.
    pieces: Vec<DFA>,
    /// The group of each placeholder piece (the odd pieces).
    groups: Vec<Group>,
}

/// The lazy DFAs' state for one caller.
#[derive(Debug)]
pub struct SplitCache(Vec<Cache>);

/// Why a walk stopped without a unique split.
#[derive(Clone, Copy)]
struct GiveUp;

impl Split {
    /// Cuts a rule's anchored regex ([`super::pattern::parse`]) at its `host` and `ext`
    /// groups; `None` when a group is not part of the top-level sequence or a piece cannot
    /// be a lazy DFA.
    pub fn new(hir: &Hir, nfa_size_limit: usize) -> Option<Split> {
        let mut elements = Vec::new();
        flatten(hir, &mut elements);
        let mut pieces = Vec::new();
        let mut groups = Vec::new();
        let mut text = Vec::new();
        for element in elements {
            match element {
                Element::Group(group, sub) => {
                    pieces.push(std::mem::take(&mut text));
                    pieces.push(vec![sub]);
                    groups.push(group);
                }
                Element::Text(hir) => text.push(hir),
            }
        }
        pieces.push(text);
        let wanted = [Group::Host, Group::Ext]
            .into_iter()
            .filter(|g| has_group(hir, *g))
            .count();
        if groups.len() != wanted || !groups.contains(&Group::Host) {
            return None;
        }
        let pieces = pieces
            .into_iter()
            .map(|parts| dfa(&Hir::concat(parts), nfa_size_limit))
            .collect::<Option<Vec<_>>>()?;
        Some(Split { pieces, groups })
    }

    /// A cache for [`Split::spans`]; one per caller.
    pub fn create_cache(&self) -> SplitCache {
        SplitCache(self.pieces.iter().map(DFA::create_cache).collect())
    }

    /// Whether and how `line` splits at the rule's placeholders.
    pub fn split(&self, cache: &mut SplitCache, line: &[u8]) -> Outcome {
        let mut starts = [0usize; 6];
        let mut found = None;
        let mut passes = 0;
        let walked = self.walk(&mut cache.0, line, 0, &mut starts, &mut found, &mut passes);
        let (Ok(()), Some(starts)) = (walked, found) else {
            return match walked {
                Ok(()) => Outcome::NoMatch,
                Err(GiveUp) => Outcome::Unsure,
            };
        };
        let span = |group| {
            let piece = 2 * self.groups.iter().position(|g| *g == group)? + 1;
            Some((starts[piece], starts[piece + 1]))
        };
        match span(Group::Host) {
            Some(host) => Outcome::One(Spans {
                host,
                ext: span(Group::Ext),
            }),
            None => Outcome::Unsure,
        }
    }

    /// Tries every end of piece `piece` starting at `starts[piece]`; records a complete
    /// split in `found`, and gives up on a second one.
    fn walk(
        &self,
        caches: &mut [Cache],
        line: &[u8],
        piece: usize,
        starts: &mut [usize; 6],
        found: &mut Option<[usize; 6]>,
        passes: &mut u32,
    ) -> Result<(), GiveUp> {
        *passes += 1;
        if *passes > MAX_PASSES {
            return Err(GiveUp);
        }
        let (ends, count) = ends(&self.pieces[piece], &mut caches[piece], line, starts[piece])?;
        for &end in &ends[..count] {
            if piece + 1 == self.pieces.len() {
                if end == line.len() {
                    if found.is_some() {
                        return Err(GiveUp);
                    }
                    starts[piece + 1] = end;
                    *found = Some(*starts);
                }
            } else {
                starts[piece + 1] = end;
                self.walk(caches, line, piece + 1, starts, found, passes)?;
            }
        }
        Ok(())
    }
}

/// Every position where `dfa`, started at `at`, ends a match.
fn ends(
    dfa: &DFA,
    cache: &mut Cache,
    line: &[u8],
    at: usize,
) -> Result<([usize; MAX_ENDS], usize), GiveUp> {
    let mut ends = [0; MAX_ENDS];
    let mut count = 0;
    let mut push = |end| {
        if count == MAX_ENDS {
            return Err(GiveUp);
        }
        ends[count] = end;
        count += 1;
        Ok(())
    };
    let input = Input::new(line).range(at..).anchored(Anchored::Yes);
    let mut sid = dfa.start_state_forward(cache, &input).map_err(|_| GiveUp)?;
    for (i, &byte) in line[at..].iter().enumerate() {
        sid = dfa.next_state(cache, sid, byte).map_err(|_| GiveUp)?;
        if sid.is_tagged() {
            // Matches show one byte late: this one ended before `byte`.
            if sid.is_match() {
                push(at + i)?;
            }
            if sid.is_dead() {
                return Ok((ends, count));
            }
            if sid.is_quit() {
                return Err(GiveUp);
            }
        }
    }
    sid = dfa.next_eoi_state(cache, sid).map_err(|_| GiveUp)?;
    if sid.is_match() {
        push(line.len())?;
    }
    Ok((ends, count))
}

/// One element of the rule's top-level sequence.
enum Element {
    /// A placeholder group, with what it matches.
    Group(Group, Hir),
    /// Anything else.
    Text(Hir),
}

/// The top-level sequence, looking through concatenations and other capture groups.
fn flatten(hir: &Hir, out: &mut Vec<Element>) {
    match hir.kind() {
        HirKind::Concat(subs) => subs.iter().for_each(|s| flatten(s, out)),
        HirKind::Capture(c) => match group_of(c.name.as_deref()) {
            Some(group) => out.push(Element::Group(group, (*c.sub).clone())),
            None => flatten(&c.sub, out),
        },
        _ => out.push(Element::Text(hir.clone())),
    }
}

fn group_of(name: Option<&str>) -> Option<Group> {
    match name {
        Some("host") => Some(Group::Host),
        Some("ext") => Some(Group::Ext),
        _ => None,
    }
}

/// Whether the group occurs anywhere in `hir`.
fn has_group(hir: &Hir, group: Group) -> bool {
    match hir.kind() {
        HirKind::Capture(c) => {
            group_of(c.name.as_deref()) == Some(group) || has_group(&c.sub, group)
        }
        HirKind::Concat(subs) | HirKind::Alternation(subs) => {
            subs.iter().any(|s| has_group(s, group))
        }
        HirKind::Repetition(r) => has_group(&r.sub, group),
        _ => false,
    }
}

/// A lazy DFA reporting every match end (not just the leftmost-first one).
fn dfa(hir: &Hir, nfa_size_limit: usize) -> Option<DFA> {
    let nfa = thompson::Compiler::new()
        .configure(
            thompson::Config::new()
                .which_captures(WhichCaptures::None)
                .nfa_size_limit(Some(nfa_size_limit)),
        )
        .build_from_hir(hir)
        .ok()?;
    DFA::builder()
        .configure(DFA::config().match_kind(MatchKind::All))
        .build_from_nfa(nfa)
        .ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::detect::{
        pattern,
        testgen::{BUILTIN, builtin_lines, near_miss, user_lines, user_matcher},
    };

    fn split(rule: &str) -> Option<Split> {
        Split::new(&pattern::parse("r", "", rule).unwrap(), 1 << 22)
    }

    fn spans(rule: &str, line: &str) -> Option<Spans> {
        let split = split(rule).unwrap();
        match split.split(&mut split.create_cache(), line.as_bytes()) {
            Outcome::One(spans) => Some(spans),
            _ => None,
        }
    }

    #[test]
    fn reads_host_and_ext_at_their_place() {
        let line = "Added contact 'sip:100@198.51.100.130:5060;ob' to AOR '100' with expiration of 60 seconds";
        let rule = r"Added contact 'sips?:[^@\s]*@<HOST>(?::\d+)?(?:;\S*)?' to AOR '<EXT>' with expiration of \d+ seconds";
        let got = spans(rule, line).unwrap();
        assert_eq!(&line[got.host.0..got.host.1], "198.51.100.130");
        let ext = got.ext.unwrap();
        assert_eq!(&line[ext.0..ext.1], "100");
        let got = spans("from <HOST>:5060", "from [2001:db8::1]:5060").unwrap();
        assert_eq!(got.host, (6, 17));
        assert_eq!(got.ext, None);
    }

    #[test]
    fn gives_up_when_a_line_splits_two_ways() {
        // `<EXT>` may end after any of `a`, `ab`, `abc`: the backtracker decides.
        let two_ways = split(r"u=<EXT>.* from <HOST>").unwrap();
        assert_eq!(
            two_ways.split(&mut two_ways.create_cache(), b"u=abc from 192.0.2.1"),
            Outcome::Unsure
        );
        assert_eq!(
            two_ways.split(&mut two_ways.create_cache(), b"u=abc to 192.0.2.1"),
            Outcome::NoMatch
        );
        assert!(spans(r"u=<EXT> from <HOST>", "u=abc from 192.0.2.1").is_some());
    }

    #[test]
    fn placeholders_inside_alternatives_are_not_cut() {
        assert!(split("(?:one|two <HOST>)").is_none());
        assert!(split("(?:<HOST> )+x").is_none());
        assert!(split("one (<HOST>) two").is_some());
    }

    /// Splitting is what makes matched lines cheap, so every built-in rule must allow it.
    #[test]
    fn every_builtin_rule_splits() {
        let m = &BUILTIN.0;
        for index in 0..m.rule_count() {
            assert!(m.splits(index), "{:?} is not split", BUILTIN.1[index]);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// On built-in rules' lines, a split finds what the backtracker finds.
        #[test]
        fn splitting_agrees_with_the_backtracker_on_builtin_rules((index, line) in builtin_lines()) {
            let m = &BUILTIN.0;
            prop_assume!(m.regex_matches(index, &line));
            let (split, backtrack) = m.spans_both(index, &line);
            prop_assert!(backtrack.is_some());
            agree(split, backtrack, &line)?;
        }

        /// On lines near those (cut short, or one byte changed), a split still agrees: "no
        /// match" only when the rule really does not match, the same spans when it does.
        #[test]
        fn splitting_agrees_on_near_misses(
            (index, line) in builtin_lines(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<bool>(),
        ) {
            let m = &BUILTIN.0;
            let line = near_miss(line, at, byte, cut);
            let (split, backtrack) = m.spans_both(index, &line);
            agree(split, backtrack, &line)?;
        }

        /// The same for random user rules, with and without `<EXT>`.
        #[test]
        fn splitting_agrees_with_the_backtracker_on_user_rules((prefix, rule, line) in user_lines()) {
            let m = user_matcher(&prefix, &rule)?;
            prop_assume!(m.regex_matches(0, &line));
            let (split, backtrack) = m.spans_both(0, &line);
            prop_assert!(backtrack.is_some());
            agree(split, backtrack, &line).map_err(|e| TestCaseError::fail(format!("{prefix:?} + {rule:?}: {e}")))?;
        }
    }

    /// A split's outcome is what the backtracker says, or "unsure".
    fn agree(
        split: Option<Outcome>,
        backtrack: Option<Spans>,
        line: &[u8],
    ) -> Result<(), TestCaseError> {
        let line = String::from_utf8_lossy(line);
        match split {
            Some(Outcome::One(spans)) => prop_assert_eq!(Some(spans), backtrack, "{:?}", line),
            Some(Outcome::NoMatch) => prop_assert_eq!(None, backtrack, "{:?}", line),
            Some(Outcome::Unsure) | None => {}
        }
        Ok(())
    }
}
