//! Turns a feed's bytes into networks: plain lists (FireHOL netsets, Spamhaus DROP/EDROP,
//! one address per line) and APIBAN's JSON pages. Nothing here decides whether a network
//! may be blocked (`0.0.0.0/0` parses fine); screening happens after parsing.

use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;

use super::FeedError;
use crate::units::parse_net;

/// How many unreadable lines a [`Parsed`] keeps for the operator to look at; the rest are
/// only counted, so a feed that turned into HTML cannot fill memory with samples.
pub const GARBAGE_KEPT: usize = 20;

/// The longest garbage sample, in characters: enough to recognise the line, short enough
/// for a log line or `status`.
pub const GARBAGE_CHARS: usize = 80;

/// What a feed's text yields.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The networks, sorted and without duplicates.
    pub nets: Vec<IpNet>,
    /// Unreadable lines: (1-based line, first 80 chars sanitised), at most 20 kept.
    pub garbage: Vec<(usize, String)>,
    /// How many lines were unreadable in all (kept or not).
    pub garbage_count: usize,
}

/// Parses a plain list: one IP or CIDR per line; `#` and `;` start comments (whole-line or
/// trailing, as FireHOL netsets and Spamhaus DROP/EDROP write them:
/// `1.10.16.0/20 ; SBL256894`); blank lines are skipped; CRLF and a UTF-8 BOM are tolerated;
/// a line that is not an address/CIDR (after removing the comment and trimming) is garbage;
/// IPv4-mapped IPv6 becomes IPv4; host bits are cleared; duplicates are removed (sorted
/// output). Never fails: a feed with some bad lines still yields its good ones, and the
/// caller decides from `garbage_count` whether the feed as a whole is believable.
pub fn parse_plain(bytes: &[u8]) -> Parsed {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut out = Parsed::default();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let content = match raw.iter().position(|&b| b == b'#' || b == b';') {
            Some(at) => &raw[..at],
            None => raw,
        };
        let content = content.trim_ascii();
        if content.is_empty() {
            continue;
        }
        match std::str::from_utf8(content).ok().and_then(net_of) {
            Some(net) => out.nets.push(net),
            None => {
                out.garbage_count += 1;
                if out.garbage.len() < GARBAGE_KEPT {
                    out.garbage.push((index + 1, sanitise(content)));
                }
            }
        }
    }
    out.nets.sort_unstable();
    out.nets.dedup();
    out
}

/// One page of the APIBAN API (`GET {base}/{key}/banned/{id}`), which answers
/// `{"ipaddress":["1.2.3.4",...],"ID":"1234567"}` and, when there is nothing newer,
/// `{"ipaddress":["no new bans"],"ID":"none"}` (with HTTP 400).
#[derive(Debug, PartialEq, Eq)]
pub struct ApibanPage {
    /// The page's networks, sorted and without duplicates.
    pub nets: Vec<IpNet>,
    /// The ID to ask for next; `None` when the ID is "none" (nothing newer: stop paging).
    pub next: Option<String>,
    /// Entries of `ipaddress` that are not addresses (the "no new bans" marker is not one).
    pub garbage_count: usize,
}

/// The body as APIBAN writes it. `ipaddress` is a list of strings on success, but a bare
/// string on some errors (`"rate limit exceeded"`); `ID` is a string (numbers accepted).
#[derive(Deserialize)]
struct ApibanBody {
    #[serde(default)]
    ipaddress: Option<serde_json::Value>,
    #[serde(rename = "ID", default)]
    id: Option<serde_json::Value>,
}

/// Markers APIBAN puts in `ipaddress` instead of addresses.
const APIBAN_MARKERS: [&str; 2] = ["no new bans", "not blocked"];

/// The longest ID accepted from APIBAN (they are decimal timestamps, about 10 digits).
const APIBAN_ID_MAX: usize = 64;

/// Parses one APIBAN page. Errors: not JSON, `ipaddress` a bare string (APIBAN's way of
/// reporting e.g. "rate limit exceeded"), `ID` missing, empty, "unauthorized" or not a
/// URL-safe token (it goes into the next URL). Entries that are not addresses are counted.
pub fn parse_apiban(bytes: &[u8]) -> Result<ApibanPage, FeedError> {
    let body: ApibanBody = serde_json::from_slice(bytes).map_err(|e| {
        FeedError::Format(format!(
            "the APIBAN answer is not the expected JSON ({e}): {}",
            sanitise(bytes)
        ))
    })?;
    let mut page = ApibanPage {
        nets: Vec::new(),
        next: None,
        garbage_count: 0,
    };
    match body.ipaddress {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Array(entries)) => {
            for entry in entries {
                match entry.as_str().map(str::trim) {
                    Some(text) if APIBAN_MARKERS.contains(&text) => {}
                    Some(text) => match net_of(text) {
                        Some(net) => page.nets.push(net),
                        None => page.garbage_count += 1,
                    },
                    None => page.garbage_count += 1,
                }
            }
        }
        Some(serde_json::Value::String(message)) => {
            return Err(FeedError::Format(format!(
                "APIBAN answered \"{}\"",
                sanitise(message.as_bytes())
            )));
        }
        Some(_) => {
            return Err(FeedError::Format(
                "the APIBAN answer's \"ipaddress\" is neither a list nor a message".into(),
            ));
        }
    }
    let id = match body.id {
        Some(serde_json::Value::String(id)) => id,
        Some(serde_json::Value::Number(id)) => id.to_string(),
        _ => String::new(),
    };
    match id.as_str() {
        "none" => {}
        "" => {
            return Err(FeedError::Format(
                "the APIBAN answer has no \"ID\" to continue from".into(),
            ));
        }
        "unauthorized" => {
            return Err(FeedError::Format(
                "APIBAN refused the key (\"ID\": \"unauthorized\"); check `key`".into(),
            ));
        }
        id if id.len() > APIBAN_ID_MAX || !url_safe(id) => {
            return Err(FeedError::Format(format!(
                "the APIBAN answer's \"ID\" is not a plain token: {}",
                sanitise(id.as_bytes())
            )));
        }
        _ => page.next = Some(id),
    }
    page.nets.sort_unstable();
    page.nets.dedup();
    Ok(page)
}

/// The URL of the page after `id` ("100" for the first call), `base` like
/// "https://apiban.org/api" (a trailing `/` is allowed). The key must be URL-safe (see
/// [`url_safe`]); the caller rejects other keys when it reads the config.
pub fn apiban_url(base: &str, key: &str, id: &str) -> String {
    format!("{}/{key}/banned/{id}", base.trim_end_matches('/'))
}

/// Whether `text` needs no percent-encoding in a URL path segment: `[A-Za-z0-9_-]+`. APIBAN
/// keys and IDs are such tokens; anything else is refused rather than escaped.
pub fn url_safe(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// One address or network, host bits cleared, IPv4-mapped IPv6 as IPv4 (so it lands in the
/// IPv4 map and matches IPv4 packets).
fn net_of(text: &str) -> Option<IpNet> {
    let net = parse_net(text).ok()?;
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
    {
        let net = Ipv4Net::new(v4, v6.prefix_len() - 96).ok()?;
        return Some(IpNet::V4(net.trunc()));
    }
    Some(net)
}

/// A printable sample of untrusted text: ASCII printable characters kept, everything else
/// (control characters, escapes, non-ASCII) shown as `?`, at most [`GARBAGE_CHARS`]
/// characters (longer text ends in `...`). Safe for logs and terminals.
fn sanitise(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4 * GARBAGE_CHARS)]);
    let mut out: String = text
        .chars()
        .take(GARBAGE_CHARS + 1)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect();
    if out.len() > GARBAGE_CHARS || bytes.len() > 4 * GARBAGE_CHARS {
        out.truncate(GARBAGE_CHARS - 3);
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn firehol_netset_with_header_comments() {
        let text = b"\
#
# firehol_level1
# ipv4 hash:net ipset
#
# Source URL: https://iplists.firehol.org/?ipset=firehol_level1
#
# This File Date  : Mon Dec  1 16:00:00 UTC 2025
#
0.0.0.0/8
1.10.16.0/20
1.19.0.0/16
5.134.128.0/19
223.254.0.0/16
";
        let parsed = parse_plain(text);
        assert_eq!(
            parsed.nets,
            nets(&[
                "0.0.0.0/8",
                "1.10.16.0/20",
                "1.19.0.0/16",
                "5.134.128.0/19",
                "223.254.0.0/16"
            ])
        );
        assert_eq!(parsed.garbage_count, 0);
    }

    #[test]
    fn spamhaus_drop_with_trailing_sbl_comments_and_crlf() {
        let text = b"; Spamhaus DROP List 2025/12/01 - (c) 2025 The Spamhaus Project SLU\r\n\
; https://www.spamhaus.org/drop/drop.txt\r\n\
; Last-Modified: Mon, 01 Dec 2025 12:00:00 GMT\r\n\
; Expires: Tue, 02 Dec 2025 13:00:00 GMT\r\n\
1.10.16.0/20 ; SBL256894\r\n\
1.19.0.0/16 ; SBL434604\r\n\
2a06:e480::/29 ; SBL301771\r\n\
\r\n";
        let parsed = parse_plain(text);
        assert_eq!(
            parsed.nets,
            nets(&["1.10.16.0/20", "1.19.0.0/16", "2a06:e480::/29"])
        );
        assert!(parsed.garbage.is_empty());
    }

    #[test]
    fn plain_addresses_ipv6_mapped_host_bits_and_duplicates() {
        let text = b"203.0.113.7\n\t2001:db8::1 # scanner\n::ffff:198.51.100.9\n\
::ffff:198.51.100.0/120\n10.1.2.3/8\n203.0.113.7\n  203.0.113.7/32  \n2001:db8::5/32\n";
        let parsed = parse_plain(text);
        assert_eq!(
            parsed.nets,
            nets(&[
                "10.0.0.0/8",
                "198.51.100.0/24",
                "198.51.100.9/32",
                "203.0.113.7/32",
                "2001:db8::/32",
                "2001:db8::1/128",
            ])
        );
        assert_eq!(parsed.garbage_count, 0);
    }

    #[test]
    fn garbage_is_counted_sampled_and_sanitised() {
        let mut text = Vec::new();
        text.extend_from_slice(b"0.0.0.0/0\n999.1.1.1\n1.2.3.4/33\n");
        text.extend_from_slice(b"\x00\xff\x1b[31mjunk\x07\n");
        text.extend_from_slice(&[b'7'; 10 * 1024]);
        text.extend_from_slice(b"\n<html><body>Not found</body></html>\n1.2.3\n01.2.3.4\n");
        text.extend_from_slice(b"1.2.3.4 5.6.7.8\n198.51.100.1\n");
        let parsed = parse_plain(&text);
        // 0.0.0.0/0 is a network: screening, not parsing, refuses it.
        assert_eq!(parsed.nets, nets(&["0.0.0.0/0", "198.51.100.1/32"]));
        assert_eq!(parsed.garbage_count, 8);
        let lines: Vec<usize> = parsed.garbage.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(parsed.garbage[0].1, "999.1.1.1");
        assert_eq!(parsed.garbage[1].1, "1.2.3.4/33");
        assert_eq!(parsed.garbage[2].1, "???[31mjunk?");
        assert_eq!(parsed.garbage[3].1, format!("{}...", "7".repeat(77)));
        assert_eq!(parsed.garbage[4].1, "<html><body>Not found</body></html>");
        for (_, sample) in &parsed.garbage {
            assert!(sample.chars().count() <= GARBAGE_CHARS);
        }
    }

    #[test]
    fn at_most_twenty_garbage_samples_but_all_counted() {
        let text = "bogus\n".repeat(1000);
        let parsed = parse_plain(text.as_bytes());
        assert_eq!(parsed.garbage_count, 1000);
        assert_eq!(parsed.garbage.len(), GARBAGE_KEPT);
        assert_eq!(parsed.garbage[19], (20, "bogus".to_string()));
    }

    #[test]
    fn empty_comment_only_and_bom() {
        assert_eq!(parse_plain(b""), Parsed::default());
        assert_eq!(parse_plain(b"# nothing\n;\n\n   \r\n"), Parsed::default());
        assert_eq!(
            parse_plain(b"\xEF\xBB\xBF192.0.2.1\n").nets,
            nets(&["192.0.2.1/32"])
        );
    }

    #[test]
    fn apiban_page_with_bans() {
        let body = br#"{"ipaddress":["1.2.3.251","1.2.3.252","2001:db8::7","1.2.3.251","bogus"],"ID":"1234567890"}"#;
        assert_eq!(
            parse_apiban(body),
            Ok(ApibanPage {
                nets: nets(&["1.2.3.251/32", "1.2.3.252/32", "2001:db8::7/128"]),
                next: Some("1234567890".into()),
                garbage_count: 1,
            })
        );
        // Numbers are accepted as IDs; unknown fields are ignored.
        let page = parse_apiban(br#"{"ipaddress":[],"ID":1700000000,"extra":1}"#).unwrap();
        assert_eq!(page.next.as_deref(), Some("1700000000"));
    }

    #[test]
    fn apiban_no_new_bans_ends_paging() {
        for body in [
            &br#"{"ipaddress":["no new bans"],"ID":"none"}"#[..],
            br#"{"ipaddress":["no new bans"], "ID":"none"}"#,
            br#"{"ID": "none"}"#,
        ] {
            assert_eq!(
                parse_apiban(body),
                Ok(ApibanPage {
                    nets: vec![],
                    next: None,
                    garbage_count: 0
                })
            );
        }
    }

    #[test]
    fn apiban_errors() {
        let format = |body: &[u8]| match parse_apiban(body) {
            Err(FeedError::Format(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(
            format(br#"{"ipaddress":"rate limit exceeded","ID":"none"}"#)
                .contains("rate limit exceeded")
        );
        assert!(format(br#"{"ID":"unauthorized"}"#).contains("unauthorized"));
        assert!(format(br#"{}"#).contains("no \"ID\""));
        assert!(format(br#"{"ipaddress":["1.2.3.4"],"ID":""}"#).contains("no \"ID\""));
        assert!(format(br#"{"ipaddress":["1.2.3.4"],"ID":"../x?y"}"#).contains("not a plain"));
        assert!(format(br#"{"ipaddress":{"a":1},"ID":"1"}"#).contains("neither"));
        assert!(format(b"").contains("not the expected JSON"));
        let html = format(b"<html>\x1b[2J502 Bad Gateway</html>");
        assert!(html.contains("<html>?[2J502 Bad Gateway</html>"), "{html}");
    }

    #[test]
    fn apiban_urls() {
        assert_eq!(
            apiban_url("https://apiban.org/api", "abc123", "100"),
            "https://apiban.org/api/abc123/banned/100"
        );
        assert_eq!(
            apiban_url("https://apiban.org/api/", "abc123", "1700000000"),
            "https://apiban.org/api/abc123/banned/1700000000"
        );
        assert!(url_safe("A-z_09"));
        assert!(!url_safe(""));
        assert!(!url_safe("a/b"));
        assert!(!url_safe("a%2f"));
    }

    proptest! {
        #[test]
        fn parse_plain_never_panics_and_samples_are_short(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048)
        ) {
            let parsed = parse_plain(&bytes);
            prop_assert!(parsed.garbage.len() <= GARBAGE_KEPT);
            prop_assert!(parsed.garbage_count >= parsed.garbage.len());
            for (line, sample) in &parsed.garbage {
                prop_assert!(*line >= 1);
                prop_assert!(sample.chars().count() <= GARBAGE_CHARS);
                prop_assert!(sample.len() <= GARBAGE_CHARS);
            }
            prop_assert!(parsed.nets.windows(2).all(|w| w[0] < w[1]));
        }

        #[test]
        fn parse_plain_text_lines(
            lines in proptest::collection::vec("[0-9a-f:./#; \\t\\r]{0,60}", 0..50)
        ) {
            let parsed = parse_plain(lines.join("\n").as_bytes());
            for (_, sample) in &parsed.garbage {
                prop_assert!(sample.len() <= GARBAGE_CHARS);
            }
        }

        #[test]
        fn parse_apiban_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_apiban(&bytes);
        }
    }
}
