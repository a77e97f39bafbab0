//! `freeswitch`: FreeSWITCH mod_sofia registration and call authentication failures.
//!
//! Reads FreeSWITCH's own log, `/var/log/freeswitch/freeswitch.log` (mod_logfile, with or
//! without the session UUID in front), or the same lines through syslog (mod_syslog) or the
//! journal of `freeswitch.service` (`journalctl -o short*` or `-o cat`). Every line carries
//! FreeSWITCH's timestamp, `2026-11-26 11:03:53.123456`, optionally followed by the idle CPU
//! percentage of FreeSWITCH 1.10+ (`97.53%`), then `[WARNING] sofia_reg.c:<line>`; the
//! `[WARN] [SOFIA] [sofia_reg.c:<line>]` variant of some builds is accepted too.
//!
//! The `SIP auth failure` / `SIP auth challenge` lines are only written by profiles with
//! `<param name="log-auth-failures" value="true"/>` in their sofia profile settings.
//!
//! FreeSWITCH writes `SIP auth challenge` for every first, credential-less REGISTER or INVITE
//! too (the normal digest handshake), so a rule on it counts legitimate phones as well. It is
//! therefore a separate, opt-in filter, `freeswitch-challenge`: use it with a threshold well
//! above one re-registration interval's worth of challenges per address
//! (`[policy.filter.freeswitch-challenge] maxretry = 30`), or not at all.
//!
//! The user and domain in `[user@domain]` come from the attacker's request (its To URI,
//! which sofia-sip has already parsed, so they hold no spaces or line breaks); the source
//! address is the last thing on the line, so each rule anchors `from ip <ip>` to the end of
//! the line and the real address wins.
//!
//! `Can't find user [1000@example.com] from 192.0.2.7` (directory lookup failed) is
//! deliberately not matched. Its user and domain are the `username` and `realm` of the
//! Authorization header, quoted strings that may contain a folded line break which
//! FreeSWITCH writes out as is: `username="x] from 6.6.6.6<LF> y"` ends the log line with an
//! address of the attacker's choice. The same request is logged as a `SIP auth failure`
//! line as well (with `log-auth-failures`), which is safe.
//!
//! FreeSWITCH writes no success line that names the source address (the `Register:` block
//! of `sofia profile NAME debug` is multi-line and names only the Contact), so this filter
//! has no success rule: a FreeSWITCH phone becomes known only through the PBX-config trust
//! or another success line (e.g. a Kamailio/OpenSIPS front end).
//!
//! Do not watch a log that holds SIP traces (`sofia global siptrace on`, `sofia tracelevel`):
//! they copy received packets line by line, and a packet's line can imitate any log line.

use crate::detect::FilterSpec;

/// Line prefix shared by every rule: an optional syslog / journal prefix (`... freeswitch[pid]: `),
/// an optional session UUID (mod_logfile), FreeSWITCH's timestamp with the optional idle CPU
/// percentage, the `[WARNING]` level and the `sofia_reg.c:<line>` location (with the function
/// name when FreeSWITCH is built with `SWITCH_FUNC_IN_LOG`).
const PREFIX: &str = concat!(
    r"(?:",
    syslog_time!(),
    r" (?:\S+ )?[\w./-]*freeswitch[\w.-]*(?:\[\d+\])?: )?",
    r"(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12} )?",
    r"(?:\d{4}-)?\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,6})? (?:\d{1,3}\.\d\d% )?",
    r"\[WARN(?:ING)?\] (?:\[SOFIA\] )?(?:sofia_reg\.c:\d+|\[sofia_reg\.c:\d+\])(?: \w+\(\))? ",
);

/// The rules: `(name, prefilter literal, regex)`.
const RULES: &[(&str, &str, &str)] = &[
    // 2026-11-26 11:03:53.123456 [WARNING] sofia_reg.c:2852 SIP auth failure (REGISTER) on sofia profile 'internal' for [100@example.com] from ip 203.0.113.5
    (
        "sofia_auth_failure",
        "SIP auth failure (",
        r"SIP auth failure \((?:REGISTER|INVITE)\) on sofia profile '[^']+' for \[.*\] from ip <HOST>",
    ),
];

/// The opt-in challenge rule (see the module doc: it also counts legitimate phones).
const CHALLENGE_RULES: &[(&str, &str, &str)] = &[
    // 2026-11-26 11:03:53.123456 [WARNING] sofia_reg.c:1842 SIP auth challenge (INVITE) on sofia profile 'external' for [0046812345678@192.0.2.1] from ip 203.0.113.5
    (
        "sofia_auth_challenge",
        "SIP auth challenge (",
        r"SIP auth challenge \((?:REGISTER|INVITE)\) on sofia profile '[^']+' for \[.*\] from ip <HOST>",
    ),
];

/// The built-in `freeswitch` filter: sofia digest authentication failures.
pub fn filter() -> FilterSpec {
    FilterSpec::from_static("freeswitch", PREFIX, RULES)
}

/// The opt-in `freeswitch-challenge` filter: sofia digest challenges (counts phones too).
pub fn challenge_filter() -> FilterSpec {
    FilterSpec::from_static("freeswitch-challenge", PREFIX, CHALLENGE_RULES)
        // One credential-less request, forged source included, yields a challenge.
        .spoofable(&["sofia_auth_challenge"])
}
