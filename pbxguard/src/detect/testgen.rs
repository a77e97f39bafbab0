//! Generators for the detection property tests: lines the built-in rules match, and random
//! user rules with lines they match.

use std::sync::LazyLock;

use proptest::prelude::*;
use regex_syntax::hir::{Capture, Hir, HirKind, Repetition};

use super::{FilterSpec, Matcher, RuleSpec, filters, pattern};

/// Lines the anchored regex of `prefix` + `rule` matches (anchors dropped: every
/// generated line is matched whole).
pub(crate) fn lines_of(prefix: &str, rule: &str) -> BoxedStrategy<Vec<u8>> {
    let hir = pattern::parse("r", prefix, rule).unwrap();
    proptest::string::bytes_regex_parsed(&without_looks(&hir))
        .unwrap()
        .boxed()
}

fn without_looks(hir: &Hir) -> Hir {
    match hir.kind() {
        HirKind::Look(_) => Hir::empty(),
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(without_looks).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.iter().map(without_looks).collect()),
        HirKind::Repetition(rep) => Hir::repetition(Repetition {
            sub: Box::new(without_looks(&rep.sub)),
            ..rep.clone()
        }),
        HirKind::Capture(cap) => Hir::capture(Capture {
            sub: Box::new(without_looks(&cap.sub)),
            ..cap.clone()
        }),
        _ => hir.clone(),
    }
}

/// Every built-in filter in one matcher, as a source naming them all has.
pub(crate) static BUILTIN: LazyLock<(Matcher, Vec<(String, String)>)> = LazyLock::new(|| {
    let specs = filters::builtin();
    let rules = specs
        .iter()
        .flat_map(|f| f.rules.iter().map(|r| (f.prefix.clone(), r.regex.clone())))
        .collect();
    (Matcher::new(&specs).unwrap(), rules)
});

/// A line matched by one of the built-in rules, with the rule's index.
pub(crate) fn builtin_lines() -> impl Strategy<Value = (usize, Vec<u8>)> {
    let arms: Vec<_> = BUILTIN
        .1
        .iter()
        .enumerate()
        .map(|(i, (prefix, rule))| lines_of(prefix, rule).prop_map(move |l| (i, l)))
        .collect();
    proptest::strategy::Union::new(arms)
}

/// One piece of a random user rule: text with (?i), escapes, classes, groups.
fn piece() -> impl Strategy<Value = String> {
    let word = "[a-zA-Z]{1,8}";
    prop_oneof![
        word.prop_map(|w| w),
        Just(" ".to_string()),
        word.prop_map(|w| format!("(?i:{w})")),
        word.prop_map(|w| format!("(?-i:{w})")),
        Just("(?i)".to_string()),
        Just("(?-i)".to_string()),
        prop::sample::select(vec![
            r"\x20", r"\.", r"\[", r"\]", r"\(", r"\)", r"\x3a", r"\t", r"\-", r"\*", r"\\",
            r"\x41", r"\'",
        ])
        .prop_map(str::to_string),
        prop::sample::select(vec![
            "[a-z]+",
            r"\d{1,3}",
            "[^ ]*",
            r"\S+",
            "[Aa]",
            "[0-9a-f]{2,4}",
            ".*",
            ".+?",
            r"\w",
            "[xX][yY]",
        ])
        .prop_map(str::to_string),
        word.prop_map(|w| format!("(?:{w} )?")),
        (word, word).prop_map(|(a, b)| format!("(?:{a}|{b})")),
        (word, word).prop_map(|(a, b)| format!("(?i:{a}|{b})")),
        word.prop_map(|w| format!("({w})")),
    ]
}

/// A random `[[filter]]` prefix and rule (one `<HOST>`, sometimes an `<EXT>`), and a line
/// its regex matches.
pub(crate) fn user_lines() -> impl Strategy<Value = (String, String, Vec<u8>)> {
    (
        proptest::collection::vec(piece(), 0..4),
        proptest::collection::vec(piece(), 0..8),
        any::<prop::sample::Index>(),
        proptest::option::of(any::<prop::sample::Index>()),
    )
        .prop_flat_map(|(prefix, mut rule, at, ext)| {
            rule.insert(at.index(rule.len() + 1), "<HOST>".into());
            if let Some(ext) = ext {
                rule.insert(ext.index(rule.len() + 1), "<EXT>".into());
            }
            let (prefix, rule) = (prefix.concat(), rule.concat());
            let lines = lines_of(&prefix, &rule);
            (Just(prefix), Just(rule), lines)
        })
}

/// A matcher of one `[[filter]]` with one rule, as the user rules above need.
pub(crate) fn user_matcher(prefix: &str, rule: &str) -> Result<Matcher, TestCaseError> {
    Matcher::new(&[FilterSpec {
        name: "mine".into(),
        prefix: prefix.into(),
        rules: vec![RuleSpec {
            name: "r".into(),
            regex: rule.into(),
            literal: None,
            evidence: Default::default(),
            kind: Default::default(),
        }],
    }])
    .map_err(|e| TestCaseError::fail(format!("{prefix:?} {rule:?}: {e}")))
}

/// `line` cut short at `at`, or with the byte there changed to `byte`: a line that a rule
/// almost matches.
pub(crate) fn near_miss(
    mut line: Vec<u8>,
    at: prop::sample::Index,
    byte: u8,
    cut: bool,
) -> Vec<u8> {
    let at = at.index(line.len() + 1);
    if cut {
        line.truncate(at);
    } else if at < line.len() {
        line[at] = byte;
    }
    line
}
