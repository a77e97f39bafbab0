//! `sshd`: OpenSSH (7.x to 10.x) authentication failures, and the opt-in `sshd-aggressive`:
//! pre-authentication noise.
//!
//! Reads `/var/log/auth.log` (Debian, Ubuntu) or `/var/log/secure` (RHEL), with the
//! traditional `Nov 26 11:03:53 host sshd[1234]: ` prefix, the RFC 3339 one
//! (`2026-11-26T11:03:53.123456+00:00 host sshd[1234]: `) or RFC 5424
//! (`<38>1 2026-11-26T11:03:53.123456+00:00 host sshd 1234 - - `), and the journal of
//! `ssh.service` / `sshd.service` through `journalctl -o short`, `-o short-iso`,
//! `-o short-precise` (same shapes) or `-o cat` (the bare message). The program may be
//! `sshd`, `sshd-session` (OpenSSH 9.8+) or `sshd-auth` (OpenSSH 10+). Messages may carry
//! OpenSSH's `error: ` or `fatal: ` level tag and a Solaris `[ID 800047 auth.info] ` tag.
//!
//! `sshd` counts what fail2ban's sshd filter counts in its normal mode: failed passwords,
//! keyboard-interactive and hostbased logins, PAM failures, invalid, refused and
//! not-allowed users, `MaxAuthTries` exhausted, JSch's `Auth fail` disconnect, and OpenSSH's
//! own penalties for failed authentication. Successful logins, `Postponed`/`Partial`
//! authentication, sessions and post-authentication disconnects never match.
//!
//! **`Failed publickey` never counts.** A client offers its keys one by one, and a user whose
//! agent holds five keys fails four before the right one (at `LogLevel INFO` OpenSSH logs
//! them once half of `MaxAuthTries` have failed). fail2ban (`publickey = nofail`) remembers such a line per
//! connection and counts it only together with a real failure of the same connection. The
//! matcher sees one line at a time, so it cannot join lines; instead it ignores publickey
//! lines, and the connection's real failures count on their own lines: a password or PAM
//! failure, `Invalid user` (once per connection, for an invalid user's keys too), and
//! `maximum authentication attempts exceeded` when the keys run out the connection's tries.
//! For the same reason the `Disconnecting ...: Too many authentication failures` line that
//! always follows that last one is not counted again.
//!
//! **`sshd-aggressive`** (opt-in, used beside `sshd`: `filters = ["sshd", "sshd-aggressive"]`)
//! counts what scanners, but also health checks, old clients and the admin's own monitoring
//! produce before any authentication: no or a bad identification string, failed key exchange
//! negotiation, `LoginGraceTime` timeouts, connections closed or reset before authentication
//! (`[preauth]`), and OpenSSH's penalties for them. Its rules never match a line `sshd`
//! matches, so naming both counts each line once; give it its own threshold
//! (`[policy.filter.sshd-aggressive]`). OpenSSH 8.2 to 9.9 log a connection closed before the
//! banner as `Connection closed by <ip> port <n>` without `[preauth]`, which a finished
//! session writes too, so those are not counted.
//!
//! One failed password is often logged twice (`Failed password for invalid user` after
//! `Invalid user`, `error: PAM: ...` beside `Failed keyboard-interactive/pam`); thresholds
//! should count with that in mind.
//!
//! The user name, the client's disconnect message, its algorithm offer and a hostbased
//! client's user and host are the attacker's text (OpenSSH only escapes control characters).
//! Where the user name comes before the address and nothing of the client's follows, the rule
//! anchors `from <ip> port <n> ssh2` to the end of the line so the last, real, address wins;
//! where the attacker's text comes after the address, the address follows fixed text at the
//! start of the message. `Failed hostbased` has the client's text on both sides: it is only
//! matched when the word `from` occurs once after `for`, so the address cannot be ambiguous.

use crate::detect::FilterSpec;

/// A run of words (space-separated) none of which is `from`, possibly empty: text in which
/// no ` from <address>` can start.
macro_rules! no_from {
    () => {
        r" *(?:(?:[^ f][^ ]*|f(?:[^ r][^ ]*)?|fr(?:[^ o][^ ]*)?|fro(?:[^ m][^ ]*)?|from[^ ]+)(?: +(?:[^ f][^ ]*|f(?:[^ r][^ ]*)?|fr(?:[^ o][^ ]*)?|fro(?:[^ m][^ ]*)?|from[^ ]+))*)?"
    };
}

/// Line prefix shared by every rule: an optional syslog / journal prefix (time, optional host,
/// `sshd[pid]: `, or RFC 5424's `<pri>1 time host sshd pid msgid sd `), so that
/// `journalctl -o cat` lines match too, then optional Solaris and OpenSSH level tags. The
/// message itself always starts right after it.
const PREFIX: &str = concat!(
    r"(?:",
    syslog_time!(),
    r" (?:\S+ )?sshd(?:-session|-auth)?(?:\[\d+\])?: ",
    r"|(?:<\d{1,3}>)?1 (?:",
    syslog_time!(),
    r"|-) \S+ sshd(?:-session|-auth)? (?:\d+|-) \S+ (?:-|(?:\[(?:[^\]\\]|\\.)*\])+) (?:\xEF\xBB\xBF)?",
    r")?",
    r"(?:\[ID \d+ [a-z0-9]+\.[a-z]+\] )?",
    r"(?:(?:error|fatal): )?",
);

/// The `sshd` rules: `(name, prefilter literal, regex)`.
const RULES: &[(&str, &str, &str)] = &[
    // Invalid user admin from 203.0.113.5 port 4242
    (
        "invalid_user",
        "Invalid user ",
        r"Invalid user .* from <HOST>(?: port \d+)?",
    ),
    // Failed password for invalid user admin from 203.0.113.5 port 4242 ssh2
    (
        "failed_password",
        "Failed password for ",
        r"Failed password for .* from <HOST>(?: port \d+)?(?: ssh[12])?",
    ),
    // Failed keyboard-interactive/pam for root from 203.0.113.5 port 4242 ssh2
    (
        "failed_keyboard_interactive",
        "Failed keyboard-interactive",
        r"Failed keyboard-interactive(?:/\w+)? for .* from <HOST>(?: port \d+)?(?: ssh[12])?",
    ),
    // Failed hostbased for alice from 203.0.113.5 port 4242 ssh2: ED25519 SHA256:0Jqk..., client user "alice", client host "ws1"
    (
        "failed_hostbased",
        "Failed hostbased for ",
        concat!(
            r"Failed hostbased for ",
            no_from!(),
            r" +from <HOST> port \d+ ssh2(?:: ",
            no_from!(),
            r")?"
        ),
    ),
    // ROOT LOGIN REFUSED FROM 203.0.113.5 port 4242 (root's credentials were right, but
    // PermitRootLogin forbids the method)
    (
        "root_login_refused",
        "ROOT LOGIN REFUSED FROM ",
        r"ROOT LOGIN REFUSED FROM <HOST>(?: port \d+)?(?: \[preauth\])?",
    ),
    // Received disconnect from 203.0.113.5 port 4242:3: com.jcraft.jsch.JSchException: Auth fail [preauth]
    // Only reason 3 with JSch's "Auth fail"; other client disconnects are `sshd-aggressive`'s.
    (
        "received_disconnect",
        "Received disconnect from ",
        r"Received disconnect from <HOST>(?: port \d+)?: ?3: .*Auth fail(?: \[preauth\])?",
    ),
    // error: maximum authentication attempts exceeded for root from 203.0.113.5 port 4242 ssh2 [preauth]
    (
        "max_auth_attempts",
        "maximum authentication attempts exceeded for ",
        r"maximum authentication attempts exceeded for .* from <HOST> port \d+ ssh2(?: \[preauth\])?",
    ),
    // error: PAM: Authentication failure for root from 203.0.113.5
    (
        "pam_failure",
        "PAM: ",
        r"PAM: (?:[Aa]uthentication (?:failure|error)|User not known to the underlying authentication module) for .* from <HOST>(?: \[preauth\])?",
    ),
    // User root from 203.0.113.5 not allowed because not listed in AllowUsers
    // (the user exists, so its name has no spaces)
    (
        "user_not_allowed",
        " not allowed because ",
        r"User \S+ from <HOST> not allowed because (?:not listed in AllowUsers|listed in DenyUsers|not in any group|a group is listed in DenyGroups|none of user's groups are listed in AllowGroups)(?: \[preauth\])?",
    ),
    // drop connection #3 from [203.0.113.5]:4242 on [192.0.2.1]:22 penalty: failed authentication
    // (OpenSSH 9.8+ PerSourcePenalties for failures; MaxStartups drops are load, not this
    // source's fault, and the penalties for mere connections are `sshd-aggressive`'s)
    (
        "penalty_drop",
        "drop connection #",
        r"drop connection #\d+ from \[<HOST>\]:\d+ on \[[0-9A-Fa-f:.%\w-]+\]:\d+ penalty: (?:failed authentication|attempted authentication by invalid user|caused crash)",
    ),
];

/// The `sshd-aggressive` rules: `(name, prefilter literal, regex)`.
const AGGRESSIVE_RULES: &[(&str, &str, &str)] = &[
    // Did not receive identification string from 203.0.113.5 port 4242 (OpenSSH < 8.2)
    (
        "no_identification",
        "Did not receive identification string from ",
        r"Did not receive identification string from <HOST>(?: port \d+)?(?: \[preauth\])?",
    ),
    // Bad protocol version identification 'GET / HTTP/1.1' from 203.0.113.5 port 4242 (OpenSSH < 8.2)
    (
        "bad_protocol_version",
        "Bad protocol version identification '",
        r"Bad protocol version identification '.*' from <HOST>(?: port \d+)?(?: \[preauth\])?",
    ),
    // banner exchange: Connection from 203.0.113.5 port 4242: invalid format
    // (the reason is OpenSSH's error text, not the client's)
    (
        "bad_banner",
        "banner exchange: Connection from ",
        r"banner exchange: Connection from <HOST> port \d+: [A-Za-z ]+(?: \[preauth\])?",
    ),
    // Unable to negotiate with 203.0.113.5 port 4242: no matching key exchange method found. Their offer: diffie-hellman-group1-sha1 [preauth]
    (
        "kex_failure",
        "Unable to negotiate with ",
        r"Unable to negotiate with <HOST>(?: port \d+)?: no matching .*",
    ),
    // fatal: Timeout before authentication for 203.0.113.5 port 4242 (OpenSSH < 9.8)
    // Timeout before authentication for connection from 203.0.113.5 to 192.0.2.1, pid = 4242
    (
        "preauth_timeout",
        "Timeout before authentication for ",
        r"Timeout before authentication for (?:connection from )?<HOST>(?: port \d+|(?: to [0-9A-Fa-f:.%\w-]+)?, pid = \d+(?: \([a-z ]+\))?)",
    ),
    // Connection closed by authenticating user root 203.0.113.5 port 4242 [preauth]
    // Connection closed by 203.0.113.5 port 4242 [preauth]
    // Disconnected from invalid user admin 203.0.113.5 port 4242 [preauth]
    (
        "preauth_disconnect",
        " [preauth]",
        r"(?:Connection (?:closed|reset) by|Disconnected from) (?:(?:invalid|authenticating) user .* )?<HOST> port \d+ \[preauth\]",
    ),
    // drop connection #3 from [203.0.113.5]:4242 on [192.0.2.1]:22 penalty: connections without attempting authentication
    (
        "penalty_noauth",
        "drop connection #",
        r"drop connection #\d+ from \[<HOST>\]:\d+ on \[[0-9A-Fa-f:.%\w-]+\]:\d+ penalty: (?:connections without attempting authentication|exceeded LoginGraceTime|connection prohibited by RefuseConnection)",
    ),
];

/// The built-in `sshd` filter: failed passwords, keyboard-interactive and hostbased logins,
/// PAM failures, invalid, refused or not-allowed users, exhausted tries and OpenSSH's own
/// failure penalties (never a failed public key on its own).
pub fn filter() -> FilterSpec {
    FilterSpec::from_static("sshd", PREFIX, RULES).and_success(SUCCESS_RULES)
}

/// Success rules of `sshd` (kind `success`: the address becomes known). Every sshd line
/// follows a TCP handshake, so all sshd rules are proven evidence.
const SUCCESS_RULES: &[(&str, &str, &str)] = &[
    // Accepted publickey for alice from 198.51.100.9 port 52100 ssh2: ED25519 SHA256:0Jqkk1mkN2Z1uCzCyNzXK0pJ1u6M3wJ5lZ0Vb6mP1vQ
    // The account name is a real user's (no spaces); the key type and fingerprint are sshd's,
    // so nothing after the address is the client's. Hostbased
    // logins are left out: the client's user and host follow the address.
    (
        "accepted",
        "Accepted ",
        concat!(
            r"Accepted (?:password|publickey|keyboard-interactive(?:/pam)?|gssapi-with-mic|gssapi-keyex) ",
            r"for \S+ from <HOST> port \d+ ssh2",
            r"(?:: [\w-]+ (?:SHA256:[A-Za-z0-9+/]+|[0-9a-f]{2}(?::[0-9a-f]{2}){15}))?",
        ),
    ),
];

/// The opt-in `sshd-aggressive` filter: pre-authentication noise (banner, key exchange,
/// timeouts, `[preauth]` disconnects), to be named beside `sshd` with its own threshold.
pub fn aggressive_filter() -> FilterSpec {
    FilterSpec::from_static("sshd-aggressive", PREFIX, AGGRESSIVE_RULES)
}
