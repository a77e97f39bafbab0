//! The literals a rule's prefilter looks for, derived from the parsed regex so that a line
//! the regex matches always contains one of them: a rule is only skipped when that is certain.
//!
//! The regex is the one every engine of the matcher is built from (bytes, no Unicode). Each
//! element of its top-level concatenation must match, so the prefix literals of the rest of
//! the regex from any element on (regex-syntax's `Extractor`) form a sound set: every match
//! contains one of them. The best finite set of long literals wins. ASCII case-insensitive
//! parts (`(?i)`, `[Aa]`) are folded to lower case first and such literals are searched with
//! ASCII case ignored; without any usable literal the rule runs on every line.

use regex_syntax::hir::{Capture, Class, ClassBytes, Hir, HirKind, Repetition, literal::Extractor};

use super::pattern::PatternError;

/// Shorter literals would make most lines candidates anyway.
const MIN_LEN: usize = 3;
/// More literals than this for one rule would slow the scan for every rule.
const MAX_COUNT: usize = 16;

/// How a rule is prefiltered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prefilter {
    /// Run the rule on lines holding one of these bytes strings.
    Exact(Vec<Vec<u8>>),
    /// Run the rule on lines holding one of these, ASCII case ignored.
    Folded(Vec<Vec<u8>>),
    /// No sound literal: run the rule on every line.
    Always,
}

/// The prefilter of the rule `rule_name` whose anchored regex ([`super::pattern::parse`]) is
/// `hir`, using `given` (a rule's `literal`) when it is sound and refusing it when it is not.
pub fn derive(rule_name: &str, hir: &Hir, given: Option<&str>) -> Result<Prefilter, PatternError> {
    let exact = candidates(hir);
    let mut changed = false;
    let folded = fold(hir, &mut changed);
    let folded = if changed {
        candidates(&folded)
    } else {
        Vec::new()
    };
    if let Some(literal) = given.filter(|l| !l.is_empty()) {
        let lit = literal.as_bytes();
        if exact
            .iter()
            .any(|set| set.iter().all(|l| contains(l, lit, false)))
        {
            return Ok(Prefilter::Exact(vec![lit.to_vec()]));
        }
        let lower = lit.to_ascii_lowercase();
        if folded
            .iter()
            .any(|set| set.iter().all(|l| contains(l, &lower, true)))
        {
            return Ok(Prefilter::Folded(vec![lower]));
        }
        return Err(PatternError::Literal {
            rule: rule_name.into(),
            literal: literal.into(),
        });
    }
    let best_exact = best(exact);
    let best_folded = best(folded);
    Ok(match (best_exact, best_folded) {
        (Some(e), Some(f)) if score(&f) > score(&e) => Prefilter::Folded(f),
        (Some(e), _) => Prefilter::Exact(e),
        (None, Some(f)) => Prefilter::Folded(f),
        (None, None) => Prefilter::Always,
    })
}

/// Every sound literal set: for each element of the top-level concatenation, the minimal
/// finite prefix literals of the regex from that element on.
fn candidates(hir: &Hir) -> Vec<Vec<Vec<u8>>> {
    let mut parts = Vec::new();
    flatten(hir, &mut parts);
    let extractor = Extractor::new();
    let mut out = Vec::new();
    for i in 0..parts.len() {
        if matches!(parts[i].kind(), HirKind::Look(_) | HirKind::Empty) {
            continue;
        }
        // A literal element is itself in every match.
        if let HirKind::Literal(literal) = parts[i].kind() {
            out.push(vec![literal.0.to_vec()]);
        }
        let seq = extractor.extract(&Hir::concat(parts[i..].to_vec()));
        let Some(literals) = seq.literals() else {
            continue;
        };
        let mut set: Vec<Vec<u8>> = literals.iter().map(|l| l.as_bytes().to_vec()).collect();
        // A line holding a longer literal holds the shorter one it contains too.
        set.sort_by_key(Vec::len);
        set.dedup();
        let mut minimal: Vec<Vec<u8>> = Vec::new();
        for l in set {
            if !minimal.iter().any(|m| contains(&l, m, false)) {
                minimal.push(l);
            }
        }
        if !minimal.is_empty() {
            out.push(minimal);
        }
    }
    out
}

/// The elements every match passes through in order: the top-level concatenation, looking
/// through capture groups.
fn flatten(hir: &Hir, out: &mut Vec<Hir>) {
    match hir.kind() {
        HirKind::Concat(subs) => subs.iter().for_each(|s| flatten(s, out)),
        HirKind::Capture(c) => flatten(&c.sub, out),
        _ => out.push(hir.clone()),
    }
}

/// The usable set with the best [`score`].
fn best(sets: Vec<Vec<Vec<u8>>>) -> Option<Vec<Vec<u8>>> {
    sets.into_iter()
        .filter(|set| set.len() <= MAX_COUNT && set.iter().all(|l| l.len() >= MIN_LEN))
        .max_by_key(|set| score(set))
}

/// Longer literals are rarer in a log, and every extra literal costs about a byte of that
/// (`\d` in front of a literal is not worth ten of them); beyond 32 bytes length no longer
/// matters. Ties go to the fewest literals.
fn score(set: &[Vec<u8>]) -> (isize, std::cmp::Reverse<usize>) {
    let shortest = set.iter().map(Vec::len).min().unwrap_or(0).min(32);
    (
        shortest as isize - set.len() as isize,
        std::cmp::Reverse(set.len()),
    )
}

/// `hir` with every ASCII case pair class (`[Aa]`, what `(?i)a` becomes) replaced by the
/// lower-case letter; `changed` tells whether there was one.
fn fold(hir: &Hir, changed: &mut bool) -> Hir {
    match hir.kind() {
        HirKind::Class(Class::Bytes(class)) => match case_pair(class) {
            Some(lower) => {
                *changed = true;
                Hir::literal([lower])
            }
            None => hir.clone(),
        },
        HirKind::Literal(lit) => Hir::literal(lit.0.to_ascii_lowercase()),
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(|s| fold(s, changed)).collect()),
        HirKind::Alternation(subs) => {
            Hir::alternation(subs.iter().map(|s| fold(s, changed)).collect())
        }
        HirKind::Repetition(rep) => Hir::repetition(Repetition {
            sub: Box::new(fold(&rep.sub, changed)),
            ..rep.clone()
        }),
        HirKind::Capture(cap) => Hir::capture(Capture {
            sub: Box::new(fold(&cap.sub, changed)),
            ..cap.clone()
        }),
        _ => hir.clone(),
    }
}

/// The lower-case letter of a class that is exactly one ASCII letter in both cases.
fn case_pair(class: &ClassBytes) -> Option<u8> {
    let bytes: Vec<u8> = class
        .iter()
        .flat_map(|r| r.start()..=r.end())
        .take(3)
        .collect();
    match bytes[..] {
        [upper, lower] if upper.is_ascii_uppercase() && lower == upper.to_ascii_lowercase() => {
            Some(lower)
        }
        _ => None,
    }
}

/// Whether `needle` occurs in `haystack` (ASCII case ignored with `fold`).
fn contains(haystack: &[u8], needle: &[u8], fold: bool) -> bool {
    needle.is_empty()
        || haystack.windows(needle.len()).any(|w| {
            if fold {
                w.eq_ignore_ascii_case(needle)
            } else {
                w == needle
            }
        })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::detect::{
        FilterSpec, Matcher, RuleSpec, filters, pattern,
        testgen::{BUILTIN, builtin_lines, user_lines, user_matcher},
    };

    fn of(prefix: &str, rule: &str, given: Option<&str>) -> Result<Prefilter, PatternError> {
        derive("r", &pattern::parse("r", prefix, rule).unwrap(), given)
    }

    fn exact(literals: &[&str]) -> Prefilter {
        Prefilter::Exact(literals.iter().map(|l| l.as_bytes().to_vec()).collect())
    }

    fn folded(literals: &[&str]) -> Prefilter {
        Prefilter::Folded(literals.iter().map(|l| l.as_bytes().to_vec()).collect())
    }

    fn user_rule(prefix: &str, regex: &str, literal: Option<&str>) -> Matcher {
        Matcher::new(&[FilterSpec {
            name: "mine".into(),
            prefix: prefix.into(),
            rules: vec![RuleSpec {
                name: "r".into(),
                regex: regex.into(),
                literal: literal.map(Into::into),
                evidence: Default::default(),
                kind: Default::default(),
            }],
        }])
        .unwrap()
    }

    #[test]
    fn literals_come_from_the_parsed_regex() {
        assert_eq!(
            of("", "auth failed for <HOST>", None),
            Ok(exact(&["auth failed for "]))
        );
        assert_eq!(
            of("", r"user\x20rejected from <HOST>", None),
            Ok(exact(&["user rejected from "]))
        );
        assert_eq!(
            of("", "(?i)auth failed from <HOST>", None),
            Ok(folded(&["auth failed from "]))
        );
        assert_eq!(
            of("", "(?i:AUTH) failed from <HOST>", None),
            Ok(folded(&["auth failed from "]))
        );
        assert_eq!(
            of("", "(?i:AUTH) failed from the remote peer at <HOST>", None),
            Ok(exact(&[" failed from the remote peer at "])),
            "exact wins when it is long enough"
        );
        assert_eq!(
            of("", "(?:denied|rejected) call from <HOST>", None),
            Ok(exact(&["denied call from ", "rejected call from "]))
        );
        assert_eq!(
            of(
                "",
                r"Failed password for (?:invalid user )?.* from <HOST>",
                None
            ),
            Ok(exact(&["Failed password for "]))
        );
        // The prefix's fixed text counts too.
        assert_eq!(
            of(r"\S+ sbc\[\d+\]: ", r"\d+ <HOST>", None),
            Ok(exact(&[" sbc["]))
        );
        assert_eq!(of("", r"\d+ <HOST>", None), Ok(Prefilter::Always));
        assert_eq!(of("", "one <HOST>|two", None), Ok(exact(&["two", "one "])));
        assert_eq!(of("", "(?:one|two|) <HOST>", None), Ok(Prefilter::Always));
    }

    #[test]
    fn a_given_literal_is_used_only_when_sound() {
        assert_eq!(
            of(
                "",
                "auth failed for user .* from <HOST>",
                Some("failed for user")
            ),
            Ok(exact(&["failed for user"]))
        );
        assert_eq!(
            of("", "(?i)auth failed from <HOST>", Some("AUTH failed")),
            Ok(folded(&["auth failed"]))
        );
        for (rule, literal) in [
            (r"user\x20rejected from <HOST>", r"user\x20rejected"),
            ("(?:denied|rejected) call from <HOST>", "denied"),
            ("auth failed for <HOST>", "Auth failed"),
            ("auth (?:failed )?for <HOST>", "auth failed"),
        ] {
            assert_eq!(
                of("", rule, Some(literal)),
                Err(PatternError::Literal {
                    rule: "r".into(),
                    literal: literal.into()
                }),
                "{rule}"
            );
        }
    }

    #[test]
    fn user_rules_match_what_their_regex_matches() {
        let m = user_rule("", "(?i)auth failed from <HOST>", None);
        assert_eq!(
            m.find(b"AUTH FAILED from 192.0.2.1")
                .unwrap()
                .ip
                .to_string(),
            "192.0.2.1"
        );
        let m = user_rule("", r"user\x20rejected from <HOST>", None);
        assert_eq!(
            m.find(b"user rejected from 192.0.2.2")
                .unwrap()
                .ip
                .to_string(),
            "192.0.2.2"
        );
        let m = user_rule("(?i)pbx: ", "Login Failed from <HOST>", None);
        assert!(m.find(b"PBX: login failed from 192.0.2.3").is_some());
        assert!(m.find(b"PBX: nothing from 192.0.2.3").is_none());
    }

    #[test]
    fn every_builtin_rule_has_a_literal() {
        for spec in filters::builtin() {
            let m = Matcher::new(std::slice::from_ref(&spec)).unwrap();
            assert!(
                m.all_prefiltered(),
                "a rule of `{}` runs on every line",
                spec.name
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// The prefilter lets every built-in rule see every line its regex matches.
        #[test]
        fn the_prefilter_never_hides_a_builtin_match((index, line) in builtin_lines()) {
            let m = &BUILTIN.0;
            // A look-around other than the anchors (`\b`) could make a generated line miss.
            prop_assume!(m.regex_matches(index, &line));
            prop_assert!(
                m.admits(index, &line),
                "rule {:?} not admitted for {:?}", BUILTIN.1[index], String::from_utf8_lossy(&line)
            );
        }

        /// The same for random user rules.
        #[test]
        fn the_prefilter_never_hides_a_user_rule_match((prefix, rule, line) in user_lines()) {
            let alone = user_matcher(&prefix, &rule)?;
            prop_assert!(alone.regex_matches(0, &line), "generator: {:?}", String::from_utf8_lossy(&line));
            prop_assert!(
                alone.admits(0, &line),
                "{prefix:?} + {rule:?} not admitted for {:?}", String::from_utf8_lossy(&line)
            );
        }
    }
}
