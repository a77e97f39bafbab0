//! `kamailio`: Kamailio flood blocking and authentication failures.
//!
//! Reads Kamailio's syslog output (`/var/log/syslog`, `/var/log/messages`, or the file an
//! rsyslog rule for its `log_facility` writes, e.g. `/var/log/kamailio.log`) with the
//! traditional `Nov 26 11:03:53 host /usr/sbin/kamailio[1234]: ` prefix or the RFC 3339 one
//! (`2026-11-26T11:03:53.123456+00:00 host kamailio[1234]: `), or the journal of
//! `kamailio.service` through `journalctl -o short*` (also when Kamailio logs to stderr
//! there: `kamailio[1234]:  5(1234) NOTICE: ...`). The syslog prefix is required: in a raw
//! stderr file or `journalctl -o cat` a line carries no proof that Kamailio wrote it, and
//! a dumped SIP message could put a whole fake line there. A custom `log_prefix` must be
//! left empty (it comes between the level and the message).
//!
//! Kamailio's auth modules log nothing about failed digest authentication, so the script has
//! to say it. Add this line to the authentication route of `kamailio.cfg` (stock config:
//! `route[AUTH]`), where `auth_check()` fails:
//!
//! ```text
//! if (!auth_check("$fd", "subscriber", "1")) {
//!     $var(rc) = $rc;
//!     if ($var(rc) == -2 || $var(rc) == -3) {
//!         xlog("L_NOTICE", "pbxguard: auth-failed src=$si method=$rm user=$fU\n");
//!     }
//!     auth_challenge("$fd", "0");
//!     exit;
//! }
//! ```
//!
//! `-2` is a wrong password and `-3` an unknown user; the first, credential-less request of
//! every normal registration (`-5`) is not a failure. For anything else the script decides is
//! hostile (a scanner's User-Agent, a dialed prefix that smells of toll fraud...), log
//!
//! ```text
//! xlog("L_NOTICE", "pbxguard: block src=$si reason=scanner\n");
//! ```
//!
//! The address comes right after fixed text and before any field the caller chooses; keep it
//! that way. Only `$si`, `$rm` and `$fU` (which the SIP parser keeps free of line breaks) or
//! fixed words belong in these lines, and never put a caller-controlled variable at the
//! start of any other `xlog` message.
//!
//! With `WITH_ANTIFLOOD`, the stock config's pike blocking is recognised twice: the pike
//! module's own warning and the script's `xalert("ALERT: pike blocking ...")`. Its
//! `Malformed SIP request from $si:$sp` (failed `sanity_check`) counts too: scanners and
//! fuzzers send those, a phone does not.

use crate::detect::FilterSpec;

/// Line prefix shared by every rule: the syslog / journal prefix with a program name that
/// contains `kamailio` (`/usr/sbin/kamailio[pid]: `), the `5(1234) ` process tag of stderr
/// logging, and the log level (`ALERT: `, `ERROR: `, `WARNING: `, `NOTICE: `...).
const PREFIX: &str = concat!(
    syslog_time!(),
    r" (?:\S+ )?[\w./-]*kamailio[\w.-]*(?:\[\d+\])?: ",
    r"(?: ?\d+\(\d+\) )?",
    r"[A-Z]+: ",
);

/// The rules: `(name, prefilter literal, regex)`.
const RULES: &[(&str, &str, &str)] = &[
    // Nov 26 11:03:53 sip /usr/sbin/kamailio[1234]: WARNING: pike [pike_funcs.c:151]: pike_check_req(): PIKE - BLOCKing ip 203.0.113.5, node=0x7f7e073f7dd0
    (
        "pike_blocked",
        "PIKE - BLOCKing ip ",
        r"pike(?: \[pike_funcs\.c:\d+\])?: (?:\w+\(\): )?PIKE - BLOCKing ip <HOST>, node=(?:0x)?[0-9a-fA-F]+",
    ),
    // Nov 26 11:03:53 sip /usr/sbin/kamailio[1234]: ALERT: <script>: ALERT: pike blocking REGISTER from sip:100@example.com (IP:203.0.113.5:5060)
    // (the From URI is the caller's; the address is anchored at the end of the line)
    (
        "pike_alert",
        "ALERT: pike blocking ",
        r"<script>: ALERT: pike blocking .* \(IP:<HOST>:\d+\)",
    ),
    // Nov 26 11:03:53 sip /usr/sbin/kamailio[1234]: ERROR: <script>: Malformed SIP request from 203.0.113.5:5060
    (
        "malformed_request",
        "Malformed SIP request from ",
        r"<script>: Malformed SIP request from <HOST>:\d+",
    ),
    // Nov 26 11:03:53 sip /usr/sbin/kamailio[1234]: NOTICE: <script>: pbxguard: auth-failed src=203.0.113.5 method=REGISTER user=100
    (
        "auth_failed",
        "pbxguard: auth-failed src=",
        r"<script>: pbxguard: auth-failed src=<HOST>(?: .*)?",
    ),
    // Nov 26 11:03:53 sip /usr/sbin/kamailio[1234]: NOTICE: <script>: pbxguard: block src=203.0.113.5 reason=scanner
    (
        "pbxguard_xlog",
        "pbxguard: block src=",
        r"<script>: pbxguard: block src=<HOST>(?: .*)?",
    ),
];

/// The built-in `kamailio` filter: pike flood blocking, malformed requests, and the
/// `pbxguard:` lines the script logs for failed authentication and other hostile requests.
pub fn filter() -> FilterSpec {
    FilterSpec::from_static("kamailio", PREFIX, RULES)
}
