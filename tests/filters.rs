//! Golden files for the built-in filters: `tests/filters/<filter>.txt`.
//!
//! Format (sshguard-style, so adding a log format is adding two lines):
//!
//! ```text
//! # comment
//! <a log line exactly as the program writes it>
//! => 203.0.113.5 rule_name        # this address, by this (failure) rule
//! <a success line>
//! => 203.0.113.5 success:rule_name  # this address, by this success rule
//! <another line>
//! => nothing                      # must not match
//! ```
//!
//! A line may contain `{EVIL}` where the attacker controls the text (user name, From,
//! User-Agent...). Such a template is checked with a benign value, with a list of hostile
//! values (addresses, quotes, copies of the rule's own wording) and with random strings:
//! the expected address, and only it, must come out every time.

use std::{collections::HashMap, net::IpAddr, path::PathBuf, sync::LazyLock};

use pbxguard::detect::{Kind, Matcher, filters};
use proptest::prelude::*;

struct Case {
    file: String,
    number: usize,
    line: String,
    expect: Option<(IpAddr, String, Kind)>,
}

fn cases(filter: &str) -> Vec<Case> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/filters")
        .join(format!("{filter}.txt"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        if raw.trim().is_empty() || raw.starts_with('#') {
            continue;
        }
        if let Some(expect) = raw.strip_prefix("=> ") {
            let (line_no, line) = pending
                .take()
                .unwrap_or_else(|| panic!("{filter}.txt:{number}: `=>` without a log line"));
            let expect = expect.split('#').next().unwrap().trim();
            let expect = if expect == "nothing" {
                None
            } else {
                let (ip, rule) = expect.split_once(' ').unwrap_or_else(|| {
                    panic!("{filter}.txt:{number}: expected `=> IP RULE` or `=> nothing`")
                });
                let rule = rule.trim();
                let (rule, kind) = match rule.strip_prefix("success:") {
                    Some(rule) => (rule, Kind::Success),
                    None => (rule, Kind::Failure),
                };
                Some((
                    ip.parse()
                        .unwrap_or_else(|_| panic!("{filter}.txt:{number}: bad IP {ip}")),
                    rule.to_string(),
                    kind,
                ))
            };
            out.push(Case {
                file: format!("{filter}.txt"),
                number: line_no,
                line,
                expect,
            });
        } else {
            assert!(
                pending.is_none(),
                "{filter}.txt:{number}: previous line has no `=>` expectation"
            );
            pending = Some((number, raw.to_string()));
        }
    }
    assert!(
        pending.is_none(),
        "{filter}.txt: last line has no `=>` expectation"
    );
    out
}

fn matcher(filter: &str) -> Matcher {
    Matcher::new(&[filters::named(filter).expect("built-in filter")])
        .expect("built-in rules compile")
}

fn check(m: &Matcher, case: &Case, line: &str) {
    let got = m
        .find(line.as_bytes())
        .map(|hit| (hit.ip, hit.rule.to_string(), hit.kind));
    assert_eq!(got, case.expect, "{}:{}: {line}", case.file, case.number);
}

/// Hostile stand-ins for attacker-controlled text.
const EVIL: &[&str] = &[
    "6.6.6.6",
    "192.0.2.250:5060",
    "' failed for '6.6.6.6:5060' - Wrong password",
    "\" <sip:100@6.6.6.6>' failed for '6.6.6.6:5060' - No matching peer found",
    "from 6.6.6.6 port 22 ssh2",
    "[2001:db8::666]:5060",
    "invalid user root from 6.6.6.6",
    "'\"\\`$(reboot)",
    "\u{7f}\u{1}\u{1b}[31m6.6.6.6\u{1b}[0m",
    "Failed password for root from 6.6.6.6 port 22 ssh2",
    "auth failure for 6.6.6.6",
    " 6.6.6.6 ",
];

fn check_all(filter: &str) {
    let m = matcher(filter);
    let all = cases(filter);
    assert!(!all.is_empty(), "{filter}.txt has no cases");
    for case in &all {
        if case.line.contains("{EVIL}") {
            check(&m, case, &case.line.replace("{EVIL}", "alice"));
            for evil in EVIL {
                check(&m, case, &case.line.replace("{EVIL}", evil));
            }
        } else {
            check(&m, case, &case.line);
        }
    }
    // Every rule has at least one golden line.
    let spec = filters::named(filter).unwrap();
    for rule in &spec.rules {
        assert!(
            all.iter().any(|c| c
                .expect
                .as_ref()
                .is_some_and(|(_, r, k)| { *r == rule.name && *k == rule.kind })),
            "rule `{}` of `{filter}` has no golden line in tests/filters/{filter}.txt",
            rule.name
        );
    }
}

#[test]
fn asterisk() {
    check_all("asterisk");
}

#[test]
fn freepbx() {
    check_all("freepbx");
}

#[test]
fn freeswitch() {
    check_all("freeswitch");
}

#[test]
fn freeswitch_challenge() {
    check_all("freeswitch-challenge");
}

#[test]
fn kamailio() {
    check_all("kamailio");
}

#[test]
fn opensips() {
    check_all("opensips");
}

#[test]
fn sshd() {
    check_all("sshd");
}

#[test]
fn sshd_aggressive() {
    check_all("sshd-aggressive");
}

/// Every `{EVIL}` template with an expected address, by filter (built once).
static TEMPLATES: LazyLock<Vec<(String, Case)>> = LazyLock::new(|| {
    filters::names()
        .flat_map(|f| cases(f).into_iter().map(move |c| (f.to_string(), c)))
        .filter(|(_, c)| c.line.contains("{EVIL}") && c.expect.is_some())
        .collect()
});

static MATCHERS: LazyLock<HashMap<String, Matcher>> = LazyLock::new(|| {
    filters::names()
        .map(|f| (f.to_string(), matcher(f)))
        .collect()
});

static ALL: LazyLock<Matcher> = LazyLock::new(|| Matcher::new(&filters::builtin()).unwrap());

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Random attacker text in every template never changes the address that comes out.
    #[test]
    fn attacker_text_never_moves_the_address(evil in "[ -~]{0,80}", pick in any::<prop::sample::Index>()) {
        prop_assume!(!TEMPLATES.is_empty());
        let (filter, case) = &TEMPLATES[pick.index(TEMPLATES.len())];
        let line = case.line.replace("{EVIL}", &evil);
        let got = MATCHERS[filter].find(line.as_bytes()).map(|hit| (hit.ip, hit.rule.to_string(), hit.kind));
        prop_assert_eq!(got, case.expect.clone(), "{}:{}: {}", case.file, case.number, line);
    }

    /// Arbitrary bytes never panic any filter, and a match's address always occurs in the line.
    #[test]
    fn random_lines_never_panic(line in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Some(hit) = ALL.find(&line)
            && hit.ip.is_ipv4()
        {
            // IPv6 text may be written uncompressed; dotted IPv4 always appears as is.
            prop_assert!(String::from_utf8_lossy(&line).contains(&hit.ip.to_string()));
        }
    }
}

/// The README documents every built-in filter rule (so docs cannot fall behind the code).
#[test]
fn every_rule_is_documented_in_the_readme() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    for spec in filters::builtin() {
        assert!(
            readme.contains(&format!("**`{}`**", spec.name)),
            "README lacks filter `{}`",
            spec.name
        );
        for rule in &spec.rules {
            assert!(
                readme.contains(&format!("`{}`", rule.name)),
                "README lacks rule `{}` of `{}`",
                rule.name,
                spec.name
            );
            // The filter reference table states each rule's evidence (or `success`).
            let class = match rule.kind {
                Kind::Success => "success",
                Kind::Failure => rule.evidence.as_str(),
            };
            assert!(
                readme
                    .lines()
                    .any(|l| l.starts_with(&format!("| `{}`", rule.name))
                        && l.contains(&format!(" | {class} | "))),
                "README's table row for rule `{}` of `{}` must say `{class}`",
                rule.name,
                spec.name
            );
        }
    }
}
