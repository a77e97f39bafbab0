//! `opensips`: OpenSIPS flood blocking and authentication failures.
//!
//! Reads OpenSIPS's syslog output (`/var/log/syslog`, `/var/log/messages`, or the file an
//! rsyslog rule for its `log_facility` writes, e.g. `/var/log/opensips.log`) with the
//! traditional `Nov 26 11:03:53 host /usr/sbin/opensips[1234]: ` prefix (the host may be
//! missing) or the RFC 3339 one (`2026-11-26T11:03:53.123456+00:00 host opensips[1234]: `),
//! or the journal of `opensips.service` through `journalctl -o short*` (also when OpenSIPS
//! logs to stderr there: `opensips[1234]: Nov 26 11:03:53 [1234] NOTICE:...`). OpenSIPS 3.4+
//! puts the level in front of script and pike messages (`NOTICE:pbxguard: ...`), older
//! versions log them bare; both match. The syslog prefix is required: OpenSIPS dumps a SIP
//! message it cannot parse verbatim, so in a raw stderr file or `journalctl -o cat` a line
//! of it could pose as anything. OpenSIPS's `log_prefix` (3.3+) is fixed text, not caller
//! text; it may be empty or one word without spaces or colons (`sbc1:NOTICE:...`).
//!
//! OpenSIPS's auth modules log nothing about failed digest authentication, so the script has
//! to say it. Where `www_authorize()` (and likewise `proxy_authorize()`) is called in
//! `opensips.cfg`:
//!
//! ```text
//! if (!www_authorize("", "subscriber")) {
//!     $var(rc) = $rc;
//!     if ($var(rc) == -1 || $var(rc) == -2) {
//!         xlog("L_NOTICE", "pbxguard: auth-failed src=$si\n");
//!     }
//!     www_challenge("", "auth");
//!     exit;
//! }
//! xlog("L_INFO", "pbxguard: auth-ok src=$si\n");
//! ```
//!
//! `-1` is an unknown user and `-2` a wrong password; the first, credential-less request of
//! every normal registration (`-4`) is not a failure. The `auth-ok` line is never counted.
//! For anything else the script decides is hostile (a scanner's User-Agent, a dialed prefix
//! that smells of toll fraud...), log
//!
//! ```text
//! xlog("L_NOTICE", "pbxguard: block reason=scanner src=$si\n");
//! ```
//!
//! The lines are the same as for Kamailio: fixed text with the address last, so a caller
//! can neither move the address nor (with a long value) overflow xlog's buffer. Never put a
//! caller-controlled variable at the start of any other `xlog` message (before 3.4
//! OpenSIPS logs script messages bare) nor at its end.
//!
//! The pike module's own `PIKE - BLOCKing ip` warning is recognised, and so is the
//! `ALERT: pike blocking $rm from $fu (IP:$si:$sp)` line many scripts log when
//! `pike_check_req()` fails.

use crate::detect::FilterSpec;

/// Line prefix shared by every rule: the syslog / journal prefix with a program name that
/// contains `opensips` (`/usr/sbin/opensips[pid]: `), the `Nov 26 11:03:53 [1234] ` header
/// of stderr logging, a one-word `log_prefix` with its colon, and the `NOTICE:` level tag
/// of OpenSIPS 3.4+ (no space after it).
const PREFIX: &str = concat!(
    syslog_time!(),
    r" (?:\S+ )?[\w./-]*opensips[\w.-]*(?:\[\d+\])?: ",
    r"(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \[\d+\] )?",
    r"(?:[^\s:]+:)?",
    r"(?:(?:ALERT|CRITICAL|ERROR|WARNING|NOTICE|INFO|DBG):)?",
);

/// The rules: `(name, prefilter literal, regex)`. Each ends with the address and fixed
/// text the caller cannot write.
const RULES: &[(&str, &str, &str)] = &[
    // Nov 26 11:03:53 sip /usr/sbin/opensips[1234]: WARNING:PIKE - BLOCKing ip 203.0.113.5, node=0x7f7e073f7dd0
    (
        "pike_blocked",
        "PIKE - BLOCKing ip ",
        r"PIKE - BLOCKing ip <HOST>, node=(?:0x)?[0-9a-fA-F]+",
    ),
    // Nov 26 11:03:53 sip /usr/sbin/opensips[1234]: ALERT:ALERT: pike blocking INVITE from sip:100@example.com (IP:203.0.113.5:5060)
    // (the From URI is the caller's; the address is anchored at the end of the line)
    (
        "pike_alert",
        "ALERT: pike blocking ",
        r"ALERT: pike blocking .* \(IP:<HOST>:\d+\)",
    ),
    // Nov 26 11:03:53 sip /usr/sbin/opensips[1234]: NOTICE:pbxguard: auth-failed src=203.0.113.5
    (
        "auth_failed",
        "pbxguard: auth-failed src=",
        r"pbxguard: auth-failed src=<HOST>",
    ),
    // Nov 26 11:03:53 sip /usr/sbin/opensips[1234]: NOTICE:pbxguard: block reason=scanner src=203.0.113.5
    (
        "pbxguard_xlog",
        "pbxguard: block ",
        r"pbxguard: block (?:reason=\S+ )?src=<HOST>",
    ),
    // Nov 26 11:03:53 sip /usr/sbin/opensips[1234]: INFO:pbxguard: auth-ok src=198.51.100.7
    // The recipe logs it after a successful `auth_check` / `www_authorize` (a round trip):
    // a success rule, which makes the address known.
    (
        "auth_ok",
        "pbxguard: auth-ok src=",
        r"pbxguard: auth-ok src=<HOST>",
    ),
];

/// The built-in `opensips` filter: pike flood blocking and the `pbxguard:` lines the script
/// logs for failed authentication and other hostile requests.
pub fn filter() -> FilterSpec {
    FilterSpec::from_static("opensips", PREFIX, RULES)
        // Flood counts, malformed requests and scanner User-Agents come from single UDP
        // packets; `auth-failed` follows a challenge (proven).
        .spoofable(&["pike_blocked", "pike_alert", "pbxguard_xlog"])
        .success(&["auth_ok"])
}
