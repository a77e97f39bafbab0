//! Turns a rule's text into an anchored regex with a validated `host` capture.
//!
//! `<HOST>` becomes a group that only matches IPv4 / IPv6 text; the address is then parsed
//! with the standard library, so a string like `999.1.1.1` never becomes a ban. Everything
//! before and after `<HOST>` in the rule is fixed text of the log format, and the whole rule
//! is anchored at both ends, so text an attacker controls (user names, From, User-Agent)
//! cannot move the match to an address of their choosing.

use regex_syntax::{ParserBuilder, hir::Hir};

/// The placeholder rules use for the source address.
pub const HOST: &str = "<HOST>";

/// The placeholder success rules use for the extension (PJSIP AOR, chan_sip peer) a
/// registration line names: the fraud rules ban the address an extension registered from.
pub const EXT: &str = "<EXT>";

/// What `<EXT>` expands to: a quoted name's contents, no quotes or whitespace.
const EXT_REGEX: &str = r#"(?P<ext>[^'"\s]{1,80})"#;

/// What `<HOST>` expands to: an IPv4 or IPv6 literal, optionally in brackets, with an
/// optional IPv6 zone. The brackets are outside the capture.
const HOST_REGEX: &str = r"\[?(?P<host>(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]{1,45}(?:%[A-Za-z0-9_.-]{1,16})?)\]?";

/// Why a rule cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    /// No or several `<HOST>`.
    #[error("rule `{rule}` must contain exactly one <HOST> (it has {count})")]
    HostCount {
        /// Rule name.
        rule: String,
        /// How many it has.
        count: usize,
    },
    /// The regex does not compile.
    #[error("rule `{rule}`: invalid regex: {message}")]
    Regex {
        /// Rule name.
        rule: String,
        /// The regex crate's explanation.
        message: String,
    },
    /// A rule's `literal` is not text that every matching line contains, so the prefilter
    /// would skip lines the regex matches.
    #[error(
        "rule `{rule}`: `literal = {literal:?}` is not in every line the regex matches \
         (check (?i), escapes and alternatives); remove `literal` and pbxguard derives one"
    )]
    Literal {
        /// Rule name.
        rule: String,
        /// The literal given.
        literal: String,
    },
}

/// The anchored regex text of `prefix` + `rule`: what [`compile`] builds and what the
/// prefilter derives its literals from.
pub fn anchored(rule_name: &str, prefix: &str, rule: &str) -> Result<String, PatternError> {
    let count = rule.matches(HOST).count() + prefix.matches(HOST).count();
    if count != 1 {
        return Err(PatternError::HostCount {
            rule: rule_name.into(),
            count,
        });
    }
    if rule.matches(EXT).count() + prefix.matches(EXT).count() > 1 {
        return Err(PatternError::Regex {
            rule: rule_name.into(),
            message: "at most one <EXT>".into(),
        });
    }
    let (prefix, rule) = match prefix.strip_prefix('^') {
        Some(prefix) => (prefix, rule),
        None if prefix.is_empty() => ("", rule.strip_prefix('^').unwrap_or(rule)),
        None => (prefix, rule),
    };
    let rule = rule.strip_suffix('$').unwrap_or(rule);
    // The rule in its own group: a top-level `|` in it must not split off the prefix.
    let body = format!("{prefix}(?:{rule})")
        .replace(HOST, HOST_REGEX)
        .replace(EXT, EXT_REGEX);
    // Trailing whitespace and a CR from CRLF logs are tolerated, nothing else.
    Ok(format!(r"^(?:{body})[ \t\r]*$"))
}

/// Parses `prefix` + `rule` into the anchored regex every engine of the matcher is built
/// from, once per rule. ASCII classes, and `.` matches any byte: invalid UTF-8 in a user name
/// must neither hide an attack line nor cost a decode.
pub fn parse(rule_name: &str, prefix: &str, rule: &str) -> Result<Hir, PatternError> {
    ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(&anchored(rule_name, prefix, rule)?)
        .map_err(|e| PatternError::Regex {
            rule: rule_name.into(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use regex::bytes::{Regex, RegexBuilder};

    use super::*;

    /// The rule as a `regex` (parsed by [`parse`] first, for its errors).
    fn compile(rule_name: &str, prefix: &str, rule: &str) -> Result<Regex, PatternError> {
        parse(rule_name, prefix, rule)?;
        Ok(RegexBuilder::new(&anchored(rule_name, prefix, rule)?)
            .unicode(false)
            .build()
            .unwrap())
    }

    fn host(re: &Regex, line: &str) -> Option<String> {
        re.captures(line.as_bytes())
            .map(|c| String::from_utf8_lossy(&c["host"]).into_owned())
    }

    #[test]
    fn host_must_appear_once() {
        assert!(matches!(
            compile("r", "", "no host"),
            Err(PatternError::HostCount { count: 0, .. })
        ));
        assert!(matches!(
            compile("r", "", "<HOST> <HOST>"),
            Err(PatternError::HostCount { count: 2, .. })
        ));
        assert!(matches!(
            compile("r", "", "(<HOST>"),
            Err(PatternError::Regex { .. })
        ));
    }

    #[test]
    fn rules_are_anchored_at_both_ends() {
        let re = compile("r", "", "auth failed for <HOST>").unwrap();
        assert_eq!(
            host(&re, "auth failed for 192.0.2.1").as_deref(),
            Some("192.0.2.1")
        );
        assert_eq!(
            host(&re, "auth failed for 192.0.2.1\r").as_deref(),
            Some("192.0.2.1")
        );
        assert_eq!(host(&re, "x auth failed for 192.0.2.1"), None);
        assert_eq!(host(&re, "auth failed for 192.0.2.1 x"), None);
    }

    #[test]
    fn host_matches_v4_v6_and_brackets() {
        let re = compile("r", "", "from <HOST>:5060").unwrap();
        assert_eq!(
            host(&re, "from [2001:db8::1]:5060").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            host(&re, "from 198.51.100.7:5060").as_deref(),
            Some("198.51.100.7")
        );
        let re = compile("r", "", "from <HOST>").unwrap();
        assert_eq!(
            host(&re, "from ::ffff:198.51.100.7").as_deref(),
            Some("::ffff:198.51.100.7")
        );
    }

    #[test]
    fn invalid_utf8_does_not_hide_a_line() {
        let re = compile("r", "", "user '.*' failed from <HOST>").unwrap();
        let line = b"user '\xff\xfe\x80' failed from 192.0.2.9";
        assert!(re.is_match(line));
    }

    #[test]
    fn the_prefix_applies_to_every_alternative() {
        let re = compile("r", "pbx: ", "one <HOST>|two <HOST>x").unwrap_err();
        assert!(matches!(re, PatternError::HostCount { count: 2, .. }));
        let re = compile("r", "pbx: ", "(?:one|two) <HOST>").unwrap();
        assert!(re.is_match(b"pbx: two 192.0.2.1"));
        let re = compile("r", "pbx: ", "one from <HOST>|two").unwrap();
        assert!(re.is_match(b"pbx: two"));
        assert!(
            !re.is_match(b"two"),
            "the prefix is required in every alternative"
        );
    }
}
