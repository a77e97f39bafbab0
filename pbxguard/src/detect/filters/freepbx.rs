//! `freepbx`: failed logins to the FreePBX web interfaces (Administrator GUI and User Control
//! Panel), from `/var/log/asterisk/freepbx_security.log`.
//!
//! FreePBX writes `Authentication failure for <user> from <REMOTE_ADDR>` there. Current
//! releases log through Monolog with the line format `[%datetime%] [%channel%.%level_name%]:
//! %message% %context% %extra%`, so the line ends in ` [] []`:
//! `[2019-11-05 08:46:22] [freepbx_security.NOTICE]: Authentication failure for admin from
//! 203.0.113.5 [] []`; older releases wrote `[2019-11-05 08:46:22] Authentication failure for
//! admin from 203.0.113.5`. With `AMPSYSLOGLEVEL` set to a syslog level the same
//! text goes through syslog under the `freepbx_security` tag.
//!
//! The user name is whatever the client typed and comes before the address, so the rule takes
//! it as a greedy `.*` and pins the address to the end of the line: the last `from <ip>` is the
//! one FreePBX wrote. The address is PHP's `REMOTE_ADDR`, the TCP peer (or the proxy, behind a
//! reverse proxy; the client's `X-Forwarded-For` only ever appears in the separate `Possible
//! proxy detected` line, which is not matched). Successful logins are not matched either.
//!
//! The older, pre-Monolog writer kept line breaks in the user name, so a client could forge a
//! whole extra line there; Monolog replaces them with spaces.

use crate::detect::FilterSpec;

/// Line prefix shared by every rule: an optional syslog prefix (`Nov  5 08:46:22 pbx
/// freepbx_security[1234]: `, RFC 3339 time allowed), FreePBX's `[2019-11-05 08:46:22] ` and,
/// with Monolog, `[freepbx_security.NOTICE]: `.
const PREFIX: &str = concat!(
    r"(?:(?:[A-Z][a-z]{2} {1,2}\d{1,2} \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?)",
    r" [\w.-]+ freepbx_security(?:\[\d+\])?: )?",
    r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] ",
    r"(?:\[freepbx_security\.[A-Z]+\]: )?",
);

/// The rules: `(name, prefilter literal, regex)`.
const RULES: &[(&str, &str, &str)] = &[
    // [2019-11-05 08:46:22] [freepbx_security.NOTICE]: Authentication failure for admin from 203.0.113.5 [] []
    (
        "gui_login_failed",
        "Authentication failure for ",
        r"Authentication failure for .* from <HOST>(?: \[\] \[\])?",
    ),
];

/// The built-in `freepbx` filter: failed logins to the FreePBX Administrator GUI and UCP.
pub fn filter() -> FilterSpec {
    FilterSpec::from_static("freepbx", PREFIX, RULES)
}
