//! `kamailio`: Kamailio flood blocking and authentication failures.
//!
//! Reads Kamailio's syslog output (`/var/log/syslog`, `/var/log/messages`, or the file an
//! rsyslog rule for its `log_facility` writes, e.g. `/var/log/kamailio.log`) with the
//! traditional `Nov 26 11:03:53 host /usr/sbin/kamailio[1234]: ` prefix or the RFC 3339 one
//! (`2026-11-26T11:03:53.123456+00:00 host kamailio[1234]: `), or the journal of
//! `kamailio.service` through `journalctl -o short*` (also when Kamailio logs to stderr
//! there: `kamailio[1234]:  5(1234) NOTICE: ...`). The syslog prefix is required: in a raw
//! stderr file or `journalctl -o cat` a line carries no proof that Kamailio wrote it, and
//! a dumped SIP message could put a whole fake line there.
//!
//! `log_prefix` may be empty or in the braces of the stock config (Debian's and upstream's
//! `kamailio.cfg` set `log_prefix="{$mt $hdr(CSeq) $ci} "`). Kamailio puts it between the
//! level and the message, and the caller writes its CSeq and Call-ID: spaces, braces, a
//! copy of a whole pbxguard line, a NUL that ends the prefix early (Kamailio then prints
//! the message right after the cut). So every rule takes the address from the END of the
//! line, behind fixed text, and nothing the caller sends may follow it: the recipe lines
//! end with `src=$si` and hold no caller text at all (a long caller value could also
//! overflow xlog's 4 KiB buffer, and the line would never be written).
//!
//! Kamailio's auth modules log nothing about failed digest authentication, so the script has
//! to say it. In the authentication route of `kamailio.cfg` (stock config: `route[AUTH]`):
//!
//! ```text
//! if (!auth_check("$fd", "subscriber", "1")) {
//!     $var(rc) = $rc;
//!     if ($var(rc) == -2 || $var(rc) == -3) {
//!         xlog("L_NOTICE", "pbxguard: auth-failed src=$si\n");
//!     }
//!     auth_challenge("$fd", "0");
//!     exit;
//! }
//! xlog("L_INFO", "pbxguard: auth-ok src=$si\n");
//! ```
//!
//! `-2` is a wrong password and `-3` an unknown user; the first, credential-less request of
//! every normal registration (`-5`) is not a failure. The `auth-ok` line is never counted:
//! it leaves a record of the sources that know a password. For anything else the script
//! decides is hostile (a scanner's User-Agent, a dialed prefix that smells of toll
//! fraud...), log
//!
//! ```text
//! xlog("L_NOTICE", "pbxguard: block reason=scanner src=$si\n");
//! ```
//!
//! with one fixed word as the reason. Because the caller's text may come before the message,
//! no other script line may END with a caller-controlled value (`$fu`, `$ru`, `$ua`, a
//! header...): end it with fixed text or `$si`/`$sp`, as the stock lines do.
//!
//! With `WITH_ANTIFLOOD`, the stock config's pike blocking is recognised twice: the pike
//! module's own warning and the script's `xalert("ALERT: pike blocking ...")`. Its
//! `Malformed SIP request from $si:$sp` (failed `sanity_check`) counts too: scanners and
//! fuzzers send those, a phone does not.

use crate::detect::FilterSpec;

/// Line prefix shared by every rule: the syslog / journal prefix with a program name that
/// contains `kamailio` (`/usr/sbin/kamailio[pid]: `), the `5(1234) ` process tag of stderr
/// logging, the log level (`ALERT: `, `ERROR: `, `WARNING: `, `NOTICE: `...) and the
/// stock `log_prefix` (`{...} `: caller text, so anything may follow the brace, and a NUL
/// in the Call-ID cuts it short, closing brace included; rules anchor at the line's end).
const PREFIX: &str = concat!(
    syslog_time!(),
    r" (?:\S+ )?[\w./-]*kamailio[\w.-]*(?:\[\d+\])?: ",
    r"(?: ?\d+\(\d+\) )?",
    r"[A-Z]+: ",
    r"(?:\{.*)?",
);

/// The rules: `(name, prefilter literal, regex)`. Each ends with the address and fixed
/// text the caller cannot write (`$si`, `$sp`, a pointer).
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
    // 2026-11-26T11:03:53.123456+00:00 sip /usr/sbin/kamailio[1234]: NOTICE: {1 2 REGISTER 1-2@192.0.2.1} <script>: pbxguard: auth-failed src=203.0.113.5
    (
        "auth_failed",
        "pbxguard: auth-failed src=",
        r"<script>: pbxguard: auth-failed src=<HOST>",
    ),
    // Nov 26 11:03:53 sip /usr/sbin/kamailio[1234]: NOTICE: <script>: pbxguard: block reason=scanner src=203.0.113.5
    (
        "pbxguard_xlog",
        "pbxguard: block ",
        r"<script>: pbxguard: block (?:reason=\S+ )?src=<HOST>",
    ),
    // 2026-11-26T11:03:53.123456+00:00 sip /usr/sbin/kamailio[1234]: INFO: {1 2 REGISTER 1-2@192.0.2.1} <script>: pbxguard: auth-ok src=198.51.100.7
    // The recipe logs it after a successful `auth_check` / `www_authorize` (a round trip):
    // a success rule, which makes the address known.
    (
        "auth_ok",
        "pbxguard: auth-ok src=",
        r"<script>: pbxguard: auth-ok src=<HOST>",
    ),
];

/// The built-in `kamailio` filter: pike flood blocking, malformed requests, and the
/// `pbxguard:` lines the script logs for failed authentication and other hostile requests.
pub fn filter() -> FilterSpec {
    FilterSpec::from_static("kamailio", PREFIX, RULES)
        // Flood counts, malformed requests and scanner User-Agents come from single UDP
        // packets; `auth-failed` follows a challenge (proven).
        .spoofable(&[
            "pike_blocked",
            "pike_alert",
            "malformed_request",
            "pbxguard_xlog",
        ])
        .success(&["auth_ok"])
}
