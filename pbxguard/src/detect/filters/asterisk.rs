//! `asterisk`: Asterisk authentication failures, scans and rejected calls (Asterisk 1.4 to 22,
//! chan_sip, chan_pjsip, chan_iax2, AMI and the security event log).
//!
//! Reads `/var/log/asterisk/full`, `/var/log/asterisk/messages` and `/var/log/asterisk/security`
//! (any `logger.conf` file channel with `notice`, `warning` or `security`), with Asterisk's
//! `[2019-11-05 08:46:22]`, `[2019-11-05 08:46:22.123]` or `[Nov  5 08:46:22]` date, then
//! `LEVEL[thread]`, an optional `[C-0000000a]` call id and the source location in any of the
//! logger's shapes: `chan_sip.c: ` (default file format), `chan_sip.c:28003
//! handle_request_register: ` (console and `plain` formatter) or `chan_sip.c:28003 in
//! handle_request_register: ` (syslog channel). Lines that went through syslog keep their
//! `Nov  5 08:46:22 host asterisk[1234]: ` prefix (also OpenWrt's `Sat Jul  9 12:06:57 2022
//! daemon.info asterisk[2721]: `); journal entries may be the bare `NOTICE[566]: ...` message.
//! FreePBX's dialplan warning about unknown SIP peers (`Ext. s: "Rejecting unknown SIP
//! connection from ..."`) is covered too; the FreePBX admin GUI has its own `freepbx` filter.
//!
//! Every rule is tied to the source file that writes its message (the FreePBX one to its
//! `Ext. <exten>` dialplan location), so no other module's line can stand in for it. A client
//! controls several parts of these lines: the SIP `To`/`From` header text, user and peer names,
//! the dialled extension, the PJSIP `Call-ID`, the IAX2 and AMI user names, and the digest
//! values in security events. Where such text comes before the address, the rule puts a greedy
//! `.*` there and pins the address to the fixed wording that runs to the end of the line, so the
//! last occurrence, the one Asterisk wrote, wins. Where it comes after the address, the address
//! is pinned to fixed text right after the source file. Two formats have client text on both
//! sides, where neither end alone can be trusted:
//!
//! - `pjsip_distributor.c` writes the `From` before and the `Call-ID` after the address, both
//!   free text. The `From` is pjsip's own rendering, `"display" <uri>` or `<uri>`, whose URI
//!   holds no space, quote or angle bracket (pjsip escapes them), so the rule reads it by that
//!   grammar and fixes the address from the left; the `Call-ID` may then be anything. A display
//!   name holding `<`, a bare `"` or a trailing `\` leaves the split ambiguous, and such a line
//!   is not matched (the same request still yields an `InvalidAccountID` or
//!   `ChallengeResponseFailed` security event).
//! - `ChallengeResponseFailed` from AMI carries the client's raw `Key:` after the address;
//!   for `Service="AMI"` every field before the address is Asterisk's own (configured user
//!   name, `0x...` session pointer), so the address is pinned from the left there, and from
//!   the right for the SIP and PJSIP services, whose digest values cannot hold `="`.
//!
//! Successful registrations and authentications are success rules (they make the address
//! *known*); the address of a success line is pinned the same way. Not matched:
//! `Registration from ... - RTP initialization failed` / `Device not configured to use this transport type` / `Unknown failure` (the server's or
//! the admin's problem, not a guess), and every line whose address comes from a SIP header
//! (`Failed to authenticate device "x" <sip:100@1.2.3.4>`, `Sending fake auth rejection for
//! device 100<sip:100@1.2.3.4>`): those addresses are whatever the client wrote.
//!
//! One failed attempt often yields two lines (a `Registration from ...` or `Request ... failed`
//! notice plus a security event); thresholds should count with that in mind. Asterisk logs the
//! dialled extension URI-decoded, so a `%0a` in it starts a new log line the client wrote in
//! full; no line filter can tell such a forged line from a real one.

use crate::detect::FilterSpec;

/// A date inside Asterisk's own brackets: `2019-11-05 08:46:22`, `2019-11-05 08:46:22.123`
/// (`dateformat=%F %T.%3q`) or the classic `%b %e %T`, `Nov  5 08:46:22`.
macro_rules! asterisk_time {
    () => {
        r"(?:\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d|[A-Z][a-z]{2} {1,2}\d{1,2} \d\d:\d\d:\d\d)(?:[.,]\d{1,9})?"
    };
}

/// A syslog / `journalctl -o short*` / OpenWrt `logread` time: `Nov  5 08:46:22`,
/// `Sat Jul  9 12:06:57 2022`, `2019-11-05T08:46:22.123456+00:00`.
macro_rules! syslog_time {
    () => {
        r"(?:(?:[A-Z][a-z]{2} )?[A-Z][a-z]{2} {1,2}\d{1,2} \d\d:\d\d:\d\d(?:\.\d{1,9})?(?: \d{4})?|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?)"
    };
}

/// The source location after the prefix, for a given source file regex: `file.c: ` in log
/// files, `file.c:28003 func: ` on the console and with the `plain` formatter, `file.c:28003
/// in func: ` through syslog.
macro_rules! src {
    ($file:literal) => {
        concat!($file, r":(?:\d+ (?:in )?\w+:)? ")
    };
}

/// Line prefix shared by every rule: an optional syslog prefix (`Nov  5 08:46:22 pbx
/// asterisk[1234]: `, the syslog channel or a captured console), an optional Asterisk date
/// in brackets (absent in journal messages of the syslog channel), then the level, the thread
/// id and an optional call id: `NOTICE[1234]`, `NOTICE[1234][C-0000000a]:`, `SECURITY[99] `.
const PREFIX: &str = concat!(
    r"(?:",
    syslog_time!(),
    r" [\w.-]+ asterisk(?:\[\d+\])?: )?",
    r"(?:\[",
    asterisk_time!(),
    r"\] )?",
    r"(?:NOTICE|WARNING|SECURITY|ERROR|VERBOSE|DEBUG|DTMF) ?\[\d+\](?:\[C-[0-9a-f]{1,16}\])?:? ",
);

/// The rules: `(name, prefilter literal, regex)`.
const RULES: &[(&str, &str, &str)] = &[
    // [2019-11-05 08:46:22] NOTICE[1638] chan_sip.c: Registration from '"100" <sip:100@pbx.example.com>' failed for '203.0.113.5:5060' - Wrong password
    // The text between the first quotes is the client's whole `To` header.
    // Wrong password and a mismatched auth name come only after a challenge (round trip).
    (
        "sip_register_failed",
        "Registration from '",
        concat!(
            src!(r"chan_sip\.c"),
            r"Registration from '.*' failed for '<HOST>(?::\d+)?' - ",
            r"(?:Wrong password|Username/auth name mismatch)",
        ),
    ),
    // [2019-11-05 08:46:22] NOTICE[1638] chan_sip.c: Registration from '"100" <sip:100@pbx.example.com>' failed for '203.0.113.5:5060' - No matching peer found
    // The other reasons: one REGISTER, forged source address included, is enough (spoofable).
    (
        "sip_register_rejected",
        "Registration from '",
        concat!(
            src!(r"chan_sip\.c"),
            r"Registration from '.*' failed for '<HOST>(?::\d+)?' - ",
            r"(?:No matching peer found|Not a local (?:SIP )?domain",
            r"|Device does not match ACL|Peer is not supposed to register|ACL error \(permit/deny\))",
        ),
    ),
    // [2016-01-28 10:22:27] NOTICE[3477][C-000003bb] chan_sip.c: Call from '' (203.0.113.5:5060) to extension '0972598285108' rejected because extension not found in context 'default'.
    // The name is the matched peer's (configured, or empty for guests); the extension after
    // the address is the client's.
    (
        "sip_extension_not_found",
        "rejected because extension not found in context",
        concat!(
            src!(r"chan_sip\.c"),
            r"Call from '[^']*' \(<HOST>:\d+\) to extension '.*' rejected because extension not found in context '[^']*'\.",
        ),
    ),
    // [2015-03-16 18:46:34] NOTICE[3453] chan_sip.c: hacking attempt detected '203.0.113.5'
    // (patched chan_sip builds)
    (
        "hacking_attempt",
        "hacking attempt detected '",
        concat!(src!(r"chan_sip\.c"), r"hacking attempt detected '<HOST>'"),
    ),
    // [2019-11-05 08:46:22] NOTICE[1638] chan_iax2.c: Host 203.0.113.5 failed MD5 authentication for 'trunk' (2d4a1b... != 8e3f2c...)
    // Also `Host 203.0.113.5:4569 failed to authenticate as alice` and `Host 203.0.113.5
    // denied access to register peer 'trunk'`. The address follows `Host ` right after the
    // source file; the user name and hashes after it are the client's. (`Host <name> failed
    // RSA authentication` names a configured peer, not an address, and ends in `'`.)
    (
        "iax2_auth_failed",
        "chan_iax2.c:",
        concat!(
            src!(r"chan_iax2\.c"),
            r"Host <HOST>(?::\d+)? (?:failed MD5 authentication for '.*' \(.*\)",
            r"|failed to authenticate as .*|denied access to register peer '.*')",
        ),
    ),
    // [2019-11-05 08:46:22] NOTICE[1638] chan_iax2.c: No registration for peer 'guest' (from 203.0.113.5)
    // Also `Peer 'trunk' is not dynamic (from 203.0.113.5)`.
    (
        "iax2_unknown_peer",
        "chan_iax2.c:",
        concat!(
            src!(r"chan_iax2\.c"),
            r"(?:No registration for peer '.*'|Peer '.*' is not dynamic) \(from <HOST>\)",
        ),
    ),
    // [2019-11-05 08:46:22] NOTICE[19388] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '"100" <sip:100@pbx.example.com>' failed for '203.0.113.5:5060' (callid: 3a1b2c3d) - No matching endpoint found
    // Asterisk 13.10+ writes the method; 12 and earlier 13 wrote `Request from '...'`; `after 5
    // tries in 2.500 ms` may follow. Reasons: No matching endpoint found, Not match Endpoint
    // ACL, Not match Endpoint Contact ACL, Failed to authenticate, Error to authenticate.
    // The From is read by pjsip's grammar (see the module doc), the Call-ID may be anything.
    (
        "pjsip_request_failed",
        "pjsip_distributor.c:",
        concat!(
            src!(r"(?:res_pjsip/)?pjsip_distributor\.c"),
            r#"Request (?:'[^ ]*' )?from '(?:"(?:[^"\\<]|\\[^<])*" )?<[^ "<>]*>' failed for '<HOST>:\d+' \(callid: .*\) - "#,
            r"(?:No matching endpoint found|Not match Endpoint (?:Contact )?ACL|(?:Failed|Error) to authenticate)",
            r"(?: after \d+ tries in \d+(?:\.\d+)? ms)?",
        ),
    ),
    // [2021-06-12 15:13:54] NOTICE[3980] res_pjsip_session.c:  anonymous: Call (UDP:203.0.113.5:5060) to extension '0046812345' rejected because extension not found in context 'from-external'.
    // Asterisk 16+ (`<endpoint or channel>: Call (...)`); 12 to 15 wrote `Call from
    // 'anonymous' (UDP:203.0.113.5:5060) ...`. The endpoint and context are configuration;
    // the extension after the address is the client's.
    (
        "pjsip_extension_not_found",
        "rejected because extension not found in context",
        concat!(
            src!(r"res_pjsip_session\.c"),
            r" ?(?:Call from '[^']*' |[^ ]+: Call )\(\w+:<HOST>:\d+\) to extension '.*' rejected because extension not found in context '[^']*'\.",
        ),
    ),
    // [2013-11-11 14:33:38] WARNING[6756][C-0000001d] Ext. s: "Rejecting unknown SIP connection from 203.0.113.5"
    // FreePBX's `from-sip-external` dialplan (`Log()` puts `Ext. <exten>:<priority> @
    // <context>` where the source file goes); PJSIP channels add the port.
    (
        "unknown_sip_connection",
        "Rejecting unknown SIP connection from ",
        r#"Ext\. [^ :]+(?::\d+ (?:in )?@ [\w.-]+)?: "Rejecting unknown SIP connection from <HOST>(?::\d+)?""#,
    ),
    // [2016-05-06 07:08:09] NOTICE[6772] manager.c: 203.0.113.5 failed to authenticate as 'admin'
    // Also `tried to authenticate with nonexistent user 'x'` and `failed to pass IP ACL as 'x'`
    // (AMI, TCP 5038 and HTTP); the user name after the address is the client's.
    (
        "manager_auth_failed",
        "manager.c:",
        concat!(
            src!(r"manager\.c"),
            r"<HOST> (?:failed to authenticate as|tried to authenticate with nonexistent user|failed to pass IP ACL as) '.*'",
        ),
    ),
    // [2014-01-10 16:39:06] SECURITY[1503] res_security_log.c: SecurityEvent="FailedACL",EventTV="1389368346-880526",Severity="Error",Service="SIP",EventVersion="1",AccountID="100",SessionID="0x7ff408103b18",LocalAddress="IPV4/UDP/192.0.2.1/5060",RemoteAddress="IPV4/UDP/203.0.113.5/5066",ACLName="domain_must_match"
    // Field order is fixed: the required fields, then Module, ACLName, SessionTV, all
    // Asterisk's own after the address; AccountID and SessionID (a PJSIP Call-ID) before it
    // are the client's.
    (
        "security_failed_acl",
        r#"SecurityEvent="FailedACL""#,
        concat!(
            src!(r"res_security_log\.c"),
            r#"SecurityEvent="FailedACL",EventTV="[^"]*",Severity="\w*",Service="\w*",EventVersion="\d+","#,
            r#"AccountID=".*",SessionID=".*",LocalAddress="IPV[46]/(?:\w+/)?[^"/]*/\d+","#,
            r#"RemoteAddress="IPV[46]/(?:\w+/)?<HOST>/\d+""#,
            r#"(?:,Module="[^"]*")?(?:,ACLName="[^"]*")?(?:,SessionTV="[^"]*")?"#,
        ),
    ),
    // [2013-05-13 07:10:53] SECURITY[1204] res_security_log.c: SecurityEvent="InvalidAccountID",EventTV="2019-11-05T08:46:22.123+0100",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="100",SessionID="a84c1f0d-55e6@192.0.2.77",LocalAddress="IPV4/UDP/192.0.2.1/5060",RemoteAddress="IPV4/UDP/203.0.113.5/5070"
    (
        "security_invalid_account",
        r#"SecurityEvent="InvalidAccountID""#,
        concat!(
            src!(r"res_security_log\.c"),
            r#"SecurityEvent="InvalidAccountID",EventTV="[^"]*",Severity="\w*",Service="\w*",EventVersion="\d+","#,
            r#"AccountID=".*",SessionID=".*",LocalAddress="IPV[46]/(?:\w+/)?[^"/]*/\d+","#,
            r#"RemoteAddress="IPV[46]/(?:\w+/)?<HOST>/\d+""#,
            r#"(?:,Module="[^"]*")?(?:,SessionTV="[^"]*")?"#,
        ),
    ),
    // [2019-09-20 19:12:43] SECURITY[1724] res_security_log.c: SecurityEvent="ChallengeResponseFailed",EventTV="2019-09-20T19:12:43.659-0500",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="<unknown>",SessionID="3686a690-f8ccac10",LocalAddress="IPV4/UDP/192.0.2.1/5060",RemoteAddress="IPV4/UDP/203.0.113.5/30245",Challenge="1569024763/510a7e1e",Response="8e181448",ExpectedResponse=""
    // Challenge and Response come after the address and are the client's: for SIP and PJSIP
    // they are parsed digest values that cannot hold `="`, so no copy of the address fields
    // fits in them; AMI logs its raw `Key:` header there, so for AMI the address is pinned
    // from the left, where every field is Asterisk's own.
    (
        "security_challenge_failed",
        r#"SecurityEvent="ChallengeResponseFailed""#,
        concat!(
            src!(r"res_security_log\.c"),
            r#"SecurityEvent="ChallengeResponseFailed",EventTV="[^"]*",Severity="\w*",Service="(?:"#,
            r#"AMI",EventVersion="\d+",AccountID="[^"]*",SessionID="0x[0-9a-f]+"#,
            r#"|\w*",EventVersion="\d+",AccountID=".*",SessionID=".*"#,
            r#")",LocalAddress="IPV[46]/(?:\w+/)?[^"/]*/\d+",RemoteAddress="IPV[46]/(?:\w+/)?<HOST>/\d+","#,
            r#"Challenge=".*",Response=".*",ExpectedResponse="[^"]*"(?:,Module="[^"]*")?(?:,SessionTV="[^"]*")?"#,
        ),
    ),
    // [2013-07-06 09:09:25] SECURITY[3308] res_security_log.c: SecurityEvent="InvalidPassword",EventTV="1373098165-824497",Severity="Error",Service="SIP",EventVersion="2",AccountID="100",SessionID="0x88aab6c",LocalAddress="IPV4/UDP/192.0.2.1/5060",RemoteAddress="IPV4/UDP/203.0.113.5/5084",Challenge="41d26de5",ReceivedChallenge="41d26de5",ReceivedHash="7a6a3a2e95a05260aee612896e1b4a39"
    // ReceivedChallenge and ReceivedHash are the client's digest values as chan_sip splits
    // them (a quoted value holds no `"`, a bare one no `,`), so they cannot hold `",`.
    (
        "security_invalid_password",
        r#"SecurityEvent="InvalidPassword""#,
        concat!(
            src!(r"res_security_log\.c"),
            r#"SecurityEvent="InvalidPassword",EventTV="[^"]*",Severity="\w*",Service="\w*",EventVersion="\d+","#,
            r#"AccountID=".*",SessionID=".*",LocalAddress="IPV[46]/(?:\w+/)?[^"/]*/\d+","#,
            r#"RemoteAddress="IPV[46]/(?:\w+/)?<HOST>/\d+""#,
            r#"(?:,Module="[^"]*")?(?:,SessionTV="[^"]*")?(?:,Challenge="[^"]*")?"#,
            r#"(?:,ReceivedChallenge=".*")?(?:,ReceivedHash=".*")?"#,
        ),
    ),
    // Success lines (kind `success`): they make the address *known* for `known_for`.
    // [2019-09-27 06:20:59] SECURITY[26964] res_security_log.c: SecurityEvent="SuccessfulAuth",EventTV="2019-09-27T06:20:59.498+0200",Severity="Informational",Service="PJSIP",EventVersion="1",AccountID="100",SessionID="1927066504",LocalAddress="IPV4/UDP/192.0.2.1/5060",RemoteAddress="IPV4/UDP/192.0.2.108/53571",UsingPassword="1"
    // Only with a password (`UsingPassword="1"`): an endpoint matched by address alone is
    // "authenticated" by one forged packet. AccountID and SessionID are the client's; the
    // fields after the address are Asterisk's, so the last RemoteAddress is the real one.
    (
        "security_successful_auth",
        r#"SecurityEvent="SuccessfulAuth""#,
        concat!(
            src!(r"res_security_log\.c"),
            r#"SecurityEvent="SuccessfulAuth",EventTV="[^"]*",Severity="\w*",Service="\w*",EventVersion="\d+","#,
            r#"AccountID=".*",SessionID=".*",LocalAddress="IPV[46]/(?:\w+/)?[^"/]*/\d+","#,
            r#"RemoteAddress="IPV[46]/(?:\w+/)?<HOST>/\d+""#,
            r#"(?:,Module="[^"]*")?(?:,SessionTV="[^"]*")?,UsingPassword="1""#,
        ),
    ),
    // [2019-11-05 08:46:22] VERBOSE[1234] chan_sip.c: Registered SIP '100' at 198.51.100.120:5060
    // (older builds: `    -- Registered SIP ...`). The peer name is configuration; chan_sip
    // writes the address the registration came from (with `nat=force_rport`, the default).
    (
        "sip_registered",
        "Registered SIP '",
        concat!(
            src!(r"chan_sip\.c"),
            r" *(?:-- )?Registered SIP '<EXT>' at <HOST>(?::\d+)?",
        ),
    ),
    // [2023-05-02 10:11:12] VERBOSE[2345] res_pjsip_registrar.c: Added contact 'sip:100@198.51.100.130:5060;ob' to AOR '100' with expiration of 3600 seconds
    // The contact URI is the client's, but it holds no space and its user part no `@`
    // (pjsip escapes both), so the host after the first `@` is what the phone wrote; with `rewrite_contact=yes`
    // (usual behind NAT) it is the address the REGISTER came from. The AOR is configuration.
    (
        "pjsip_added_contact",
        "Added contact '",
        concat!(
            src!(r"res_pjsip_registrar\.c"),
            r" *(?:-- )?Added contact 'sips?:[^@\s]*@<HOST>(?::\d+)?(?:;\S*)?' to AOR '<EXT>' with expiration of \d+ seconds",
        ),
    ),
];

/// The built-in `asterisk` filter: chan_sip, PJSIP, IAX2 and AMI authentication failures,
/// unknown-peer scans and calls to non-existent extensions, and the security event log.
pub fn filter() -> FilterSpec {
    FilterSpec::from_static("asterisk", PREFIX, RULES)
        // One unauthenticated UDP request (or a line forged through a URL-decoded
        // extension) makes these; AMI, the GUI and digest failures after a challenge need a
        // round trip and stay proven.
        .spoofable(&[
            "sip_register_rejected",
            "sip_extension_not_found",
            "hacking_attempt",
            "iax2_auth_failed",
            "iax2_unknown_peer",
            "pjsip_request_failed",
            "pjsip_extension_not_found",
            "unknown_sip_connection",
            "security_failed_acl",
            "security_invalid_account",
        ])
        .success(&[
            "security_successful_auth",
            "sip_registered",
            "pjsip_added_contact",
        ])
}
