//! Built-in filters, one module per program whose logs pbxguard reads.
//!
//! Each module documents its rules with an example line each; `tests/filters/<name>.txt`
//! holds real-format lines with the expected address and rule (golden file), and every
//! rule must appear there at least once.

/// Timestamp of a syslog or `journalctl -o short*` line: traditional `Nov 26 11:03:53`
/// (optionally with fractions) or RFC 3339. Defined before the modules so each can use it;
/// `asterisk` keeps its own, wider variant.
macro_rules! syslog_time {
    () => {
        r"(?:[A-Z][a-z]{2} {1,2}\d{1,2} \d\d:\d\d:\d\d(?:\.\d{1,9})?|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?)"
    };
}

mod asterisk;
mod freepbx;
mod freeswitch;
mod kamailio;
mod opensips;
mod sshd;

use super::FilterSpec;

/// One built-in filter.
#[derive(Clone, Copy, Debug)]
pub struct Builtin {
    /// Name used in `[[source]] filters`, `[policy.filter.NAME]` and `test-log --filter`.
    pub name: &'static str,
    /// Opt-in filters also count legitimate traffic or noise, so they need a deliberate
    /// threshold; they are valid everywhere a name is, and listed apart in messages.
    pub opt_in: bool,
    /// Builds the filter's rules.
    pub spec: fn() -> FilterSpec,
}

impl Builtin {
    const fn new(name: &'static str, spec: fn() -> FilterSpec) -> Builtin {
        Builtin {
            name,
            opt_in: false,
            spec,
        }
    }

    const fn opt_in(name: &'static str, spec: fn() -> FilterSpec) -> Builtin {
        Builtin {
            name,
            opt_in: true,
            spec,
        }
    }
}

/// Every built-in filter: the one list that config validation, the sources and `test-log`
/// read, so a filter added here (one line) is usable everywhere at once.
pub const ALL: &[Builtin] = &[
    Builtin::new("asterisk", asterisk::filter),
    Builtin::new("freepbx", freepbx::filter),
    Builtin::new("freeswitch", freeswitch::filter),
    Builtin::opt_in("freeswitch-challenge", freeswitch::challenge_filter),
    Builtin::new("kamailio", kamailio::filter),
    Builtin::new("opensips", opensips::filter),
    Builtin::new("sshd", sshd::filter),
    Builtin::opt_in("sshd-aggressive", sshd::aggressive_filter),
];

/// Names of every built-in filter, opt-in ones included.
pub fn names() -> impl Iterator<Item = &'static str> {
    ALL.iter().map(|b| b.name)
}

/// Every built-in filter, opt-in ones included.
pub fn builtin() -> Vec<FilterSpec> {
    ALL.iter().map(|b| (b.spec)()).collect()
}

/// The built-in filter called `name`.
pub fn named(name: &str) -> Option<FilterSpec> {
    ALL.iter().find(|b| b.name == name).map(|b| (b.spec)())
}

/// The names an admin can use, for "no filter called ..." messages: built-in, opt-in
/// built-in, then the config's own `[[filter]]`s.
pub fn known_names<'a>(own: impl IntoIterator<Item = &'a str>) -> String {
    let list = |opt_in: bool| {
        ALL.iter()
            .filter(|b| b.opt_in == opt_in)
            .map(|b| b.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!("{}; opt-in: {}", list(false), list(true));
    let own: Vec<&str> = own.into_iter().collect();
    if !own.is_empty() {
        text.push_str(&format!("; yours: {}", own.join(", ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_builds_the_filter_it_names() {
        for b in ALL {
            assert_eq!((b.spec)().name, b.name);
            assert_eq!(ALL.iter().filter(|o| o.name == b.name).count(), 1);
        }
        assert!(named("freeswitch-challenge").is_some());
        assert!(names().any(|n| n == "freeswitch-challenge"));
    }
}
