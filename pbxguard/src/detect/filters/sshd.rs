//! `sshd`: OpenSSH (7.x to 10.x) authentication failures and pre-authentication abuse.
//!
//! Reads `/var/log/auth.log` (Debian, Ubuntu) or `/var/log/secure` (RHEL), with the
//! traditional `Nov 26 11:03:53 host sshd[1234]: ` prefix or the RFC 3339 one
//! (`2026-11-26T11:03:53.123456+00:00 host sshd[1234]: `), and the journal of `ssh.service` /
//! `sshd.service` through `journalctl -o short`, `-o short-iso`, `-o short-precise` (same
//! shapes) or `-o cat` (the bare message). The program may be `sshd`, `sshd-session`
//! (OpenSSH 9.8+) or `sshd-auth` (OpenSSH 10+). Messages may carry OpenSSH's `error: ` or
//! `fatal: ` level tag and a Solaris `[ID 800047 auth.info] ` tag.
//!
//! Successful logins (`Accepted password`, `Accepted publickey`), `Postponed`/`Partial`
//! authentication, sessions and post-authentication disconnects never match. Neither do the
//! weakest signals, which health checks and port scanners of the admin's own monitoring also
//! produce: `Connection closed by <ip> port <n> [preauth]` without a user, `Did not receive
//! identification string`, `Timeout before authentication`.
//!
//! One failed password is often logged twice (`Failed password for invalid user` after
//! `Invalid user`, `error: PAM: ...` beside `Failed keyboard-interactive/pam`); thresholds
//! should count with that in mind.
//!
//! The user name, the client's disconnect message and its algorithm offer are the attacker's
//! text (OpenSSH only escapes control characters). Where the user name comes before the
//! address, the rule anchors `from <ip> port <n> ssh2` to the end of the line so the last,
//! real, address wins; where the attacker's text comes after the address, the address follows
//! fixed text at the start of the message.

use crate::detect::FilterSpec;

/// Line prefix shared by every rule: an optional syslog / journal prefix (time, optional host,
/// `sshd[pid]: `), so that `journalctl -o cat` lines match too, then optional Solaris and
/// OpenSSH level tags. The message itself always starts right after it.
const PREFIX: &str = concat!(
    r"(?:",
    syslog_time!(),
    r" (?:\S+ )?sshd(?:-session|-auth)?(?:\[\d+\])?: )?",
    r"(?:\[ID \d+ [a-z0-9]+\.[a-z]+\] )?",
    r"(?:(?:error|fatal): )?",
);

/// The rules: `(name, prefilter literal, regex)`.
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
    // Failed publickey for root from 203.0.113.5 port 4242 ssh2: ED25519 SHA256:0Jqkk1mkN2...
    // After the address only sshd's own key type and fingerprint may follow. A certificate
    // adds its key ID, the client's text, after the address: such lines are not matched, as
    // the ID could carry a whole fake `from <ip> port <n> ssh2: <key>` tail.
    (
        "failed_publickey",
        "Failed publickey for ",
        r"Failed publickey for .* from <HOST> port \d+ ssh2(?:: [A-Za-z0-9-]+ \S+(?:, signature count = \d+)?)?",
    ),
    // Connection closed by invalid user admin 203.0.113.5 port 4242 [preauth]
    // Disconnected from authenticating user root 203.0.113.5 port 4242 [preauth]
    (
        "preauth_disconnect",
        "[preauth]",
        r"(?:Connection (?:closed|reset) by|Disconnected from) (?:invalid|authenticating) user .* <HOST> port \d+ \[preauth\]",
    ),
    // Received disconnect from 203.0.113.5 port 4242:11: Bye Bye [preauth]
    // Only before authentication, and only "by application" (11), "no more authentication
    // methods" (14) and JSch's "Auth fail" (3); a user's normal logout has no [preauth].
    (
        "received_disconnect",
        "Received disconnect from ",
        r"Received disconnect from <HOST>(?: port \d+)?: ?(?:3|11|14): .* \[preauth\]",
    ),
    // error: maximum authentication attempts exceeded for root from 203.0.113.5 port 4242 ssh2 [preauth]
    (
        "max_auth_attempts",
        "maximum authentication attempts exceeded for ",
        r"maximum authentication attempts exceeded for .* from <HOST> port \d+ ssh2(?: \[preauth\])?",
    ),
    // Disconnecting invalid user admin 203.0.113.5 port 4242: Too many authentication failures [preauth]
    (
        "too_many_failures",
        ": Too many authentication failures",
        r"Disconnecting (?:(?:invalid|authenticating) user .* )?<HOST> port \d+: Too many authentication failures(?: \[preauth\])?",
    ),
    // Unable to negotiate with 203.0.113.5 port 4242: no matching key exchange method found. Their offer: diffie-hellman-group1-sha1 [preauth]
    (
        "kex_failure",
        "Unable to negotiate with ",
        r"Unable to negotiate with <HOST>(?: port \d+)?: no matching .*",
    ),
    // banner exchange: Connection from 203.0.113.5 port 4242: invalid format
    (
        "bad_banner",
        "banner exchange: Connection from ",
        r"banner exchange: Connection from <HOST> port \d+: invalid format(?: \[preauth\])?",
    ),
    // Bad protocol version identification 'GET / HTTP/1.1' from 203.0.113.5 port 4242 (OpenSSH < 8)
    (
        "bad_protocol_version",
        "Bad protocol version identification '",
        r"Bad protocol version identification '.*' from <HOST>(?: port \d+)?(?: \[preauth\])?",
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
        r"User \S+ from <HOST> not allowed because (?:not listed in AllowUsers|listed in DenyUsers|not in any group|a group is listed in DenyGroups|none of user's groups are listed in AllowGroups)",
    ),
    // drop connection #3 from [203.0.113.5]:4242 on [192.0.2.1]:22 penalty: failed authentication
    // (OpenSSH 9.8+ PerSourcePenalties; MaxStartups drops are load, not this source's fault)
    (
        "penalty_drop",
        "drop connection #",
        r"drop connection #\d+ from \[<HOST>\]:\d+ on \[[0-9A-Fa-f:.%\w-]+\]:\d+ penalty: [A-Za-z ]+",
    ),
];

/// The built-in `sshd` filter: failed passwords, keys and keyboard-interactive logins,
/// invalid or refused users, brute force limits, pre-authentication disconnects, key exchange
/// and banner failures, and OpenSSH's own source penalties.
pub fn filter() -> FilterSpec {
    FilterSpec::from_static("sshd", PREFIX, RULES)
}
