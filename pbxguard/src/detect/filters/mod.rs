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

/// Names of the built-in filters, as used in `[[source]] filters`.
pub const NAMES: [&str; 6] = [
    "asterisk",
    "freepbx",
    "freeswitch",
    "kamailio",
    "opensips",
    "sshd",
];

/// Every built-in filter.
pub fn builtin() -> Vec<FilterSpec> {
    NAMES.iter().filter_map(|name| named(name)).collect()
}

/// The built-in filter called `name`.
pub fn named(name: &str) -> Option<FilterSpec> {
    Some(match name {
        "asterisk" => asterisk::filter(),
        "freepbx" => freepbx::filter(),
        "freeswitch" => freeswitch::filter(),
        "freeswitch-challenge" => freeswitch::challenge_filter(),
        "kamailio" => kamailio::filter(),
        "opensips" => opensips::filter(),
        "sshd" => sshd::filter(),
        _ => return None,
    })
}
