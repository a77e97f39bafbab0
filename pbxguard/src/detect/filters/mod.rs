//! Built-in filters, one module per program whose logs pbxguard reads.
//!
//! Each module documents its rules with an example line each; `tests/filters/<name>.txt`
//! holds real-format lines with the expected address and rule (golden file), and every
//! rule must appear there at least once.

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
