//! CrowdSec bouncer client: pbxguard polls a CrowdSec Local API (LAPI) for its decisions so
//! that bans decided by CrowdSec (its scenarios, `cscli decisions add`, community blocklists)
//! are enforced by pbxguard's XDP/nftables sets.
//!
//! The wire format is `GET /v1/decisions/stream?startup=true|false` with `X-Api-Key`, answered
//! with `{"new": [...], "deleted": [...]}` (see the captured bodies in the tests; LAPI 1.4
//! sends `null` for empty lists, newer versions may leave the keys out). `startup=true`
//! returns every active decision; `startup=false` what changed since this bouncer's previous
//! pull, which the LAPI remembers in its database (across LAPI restarts too).
//!
//! The parser is lenient per decision and strict per body: a decision we cannot use (a
//! `Country` or `AS` scope, a value that is not an address, a missing field) is counted in
//! [`Delta::skipped`] and the rest is still enforced; a body that is not a stream answer at
//! all is an error, so a wrong URL is not mistaken for "no decisions".

use std::{io::Read, net::IpAddr, str::FromStr, time::Duration};

use ipnet::IpNet;
use serde_json::Value;

/// The largest body [`fetch_stream`] reads: a startup pull with the community blocklists is
/// tens of thousands of decisions (a few MiB); anything near this is not a LAPI.
pub const MAX_BODY: u64 = 64 * 1024 * 1024;

/// Longest scenario text kept: it ends up in `bans list` and the journal, not a log dump.
const MAX_SCENARIO: usize = 120;
/// Longest `type` / `origin` kept (CrowdSec's are short words).
const MAX_WORD: usize = 64;
/// How much of an error body goes into [`CrowdsecError::Http`].
const MAX_ERROR_BODY: usize = 200;

/// One decision from the LAPI: what the engine needs to ban (or unban) a network and to say
/// in `bans list` where the ban came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The LAPI's decision id: a `deleted` entry names the same id as the `new` one it ends.
    pub id: i64,
    /// The address (`Ip` scope, a host network) or range (`Range` scope, truncated).
    pub net: IpNet,
    /// The remedy: `ban`, `captcha`, or something custom; only `ban` is for a firewall.
    pub kind: String,
    /// Time left; `None` when the LAPI says it is over (negative) or the text is unreadable.
    pub duration: Option<Duration>,
    /// Why CrowdSec decided it (`crowdsecurity/ssh-bf`, `manual 'ban' from 'NAME'`):
    /// control characters replaced, at most 120 characters.
    pub scenario: String,
    /// Who decided: `cscli`, `crowdsec`, `CAPI`, `lists`.
    pub origin: String,
}

/// What one stream call returned, ready for the engine to apply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Decisions to enforce (all active ones on a startup pull).
    pub new: Vec<Decision>,
    /// Decisions that ended (deleted or expired). The LAPI repeats them in several
    /// consecutive pulls, so applying one must be idempotent.
    pub deleted: Vec<Decision>,
    /// Decisions left out: a scope other than `Ip`/`Range`, or a value that could not be used.
    pub skipped: usize,
}

/// Why a stream call failed; each message says what the admin can do about it.
#[derive(Debug, thiserror::Error)]
pub enum CrowdsecError {
    /// The LAPI answered with an error status.
    #[error("the CrowdSec LAPI answered HTTP {status}: {}; its answer: {body:?}", http_hint(*.status))]
    Http {
        /// The HTTP status.
        status: u16,
        /// The first 200 characters of the body.
        body: String,
    },
    /// No answer: connection refused, timeout, DNS, bad URL.
    #[error(
        "cannot reach the CrowdSec LAPI: {0}; check that crowdsec runs and that the url matches its `api.server.listen_uri`"
    )]
    Transport(String),
    /// The body is not a decisions stream answer.
    #[error(
        "the CrowdSec LAPI's answer is not a decisions stream ({0}); check that the url points at the LAPI (e.g. http://127.0.0.1:8080/), not at another service"
    )]
    Json(String),
    /// The body is larger than [`MAX_BODY`].
    #[error(
        "the CrowdSec LAPI sent more than {} MiB; check that the url points at the LAPI, or reduce the blocklists it serves", MAX_BODY / 1024 / 1024
    )]
    TooLarge,
    /// The API key cannot be sent in a header.
    #[error(
        "the CrowdSec API key is empty or holds spaces or control characters: paste the key `cscli bouncers add pbxguard` printed"
    )]
    BadKey,
}

fn http_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => {
            "the LAPI refused the API key: create one with `cscli bouncers add pbxguard` and put it in pbxguard's config"
        }
        404 => {
            "there is no /v1/decisions/stream at this url: give the LAPI's base url (e.g. http://127.0.0.1:8080/)"
        }
        500..=599 => "the LAPI failed: see crowdsec's log (`journalctl -u crowdsec`)",
        _ => "unexpected answer: check that the url points at the CrowdSec LAPI",
    }
}

/// Parses a `/v1/decisions/stream` body, so the engine gets typed networks and durations and
/// never sees the LAPI's JSON. LAPI 1.4 sends `null` for empty lists, repeats deleted
/// decisions in `deleted`, and gives `duration` as a Go duration string ("3h59m58.885s",
/// "-2.5s"); `scope` is "Ip" or "Range" (case-insensitive), `value` the address or CIDR,
/// `type` the kind. Unusable decisions are counted in [`Delta::skipped`]; a body that is not
/// a JSON object with list (or null/absent) `new` and `deleted` is an error.
pub fn parse_stream(body: &[u8]) -> Result<Delta, CrowdsecError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| CrowdsecError::Json(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(CrowdsecError::Json(format!(
            "expected an object with `new` and `deleted`, got {}",
            kind_of(&value)
        )));
    };
    let mut delta = Delta::default();
    for (key, out) in [("new", &mut delta.new), ("deleted", &mut delta.deleted)] {
        match map.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    match decision(item) {
                        Some(d) => out.push(d),
                        None => delta.skipped += 1,
                    }
                }
            }
            Some(other) => {
                return Err(CrowdsecError::Json(format!(
                    "`{key}` should be a list, got {}",
                    kind_of(other)
                )));
            }
        }
    }
    Ok(delta)
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// One decision, or `None` when it is not one we can enforce.
fn decision(item: &Value) -> Option<Decision> {
    let obj = item.as_object()?;
    let text = |key: &str| obj.get(key).and_then(Value::as_str);
    let id = obj.get("id")?.as_i64()?;
    let value = text("value")?.trim();
    let net = match text("scope")?.trim().to_ascii_lowercase().as_str() {
        // An `Ip` decision must be one address: a CIDR there is not what the scope says.
        "ip" => IpNet::from(IpAddr::from_str(value).ok()?),
        "range" => crate::units::parse_net(value).ok()?,
        _ => return None,
    };
    let kind = sanitise(text("type")?, MAX_WORD);
    if kind.is_empty() {
        return None;
    }
    Some(Decision {
        id,
        net,
        kind,
        duration: text("duration").and_then(parse_go_duration),
        scenario: sanitise(text("scenario").unwrap_or_default(), MAX_SCENARIO),
        origin: sanitise(text("origin").unwrap_or_default(), MAX_WORD),
    })
}

/// Control characters become spaces, then at most `max` characters are kept: the text ends
/// up in one-line logs, the journal and `bans list`.
fn sanitise(text: &str, max: usize) -> String {
    text.trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

/// Parses a Go duration string (`time.Duration.String()`: "3h59m58.885374621s", "1.5ms",
/// "4h", "0s"), which is how the LAPI says how long a decision has left. Negative (the
/// decision is over), empty, malformed or longer than Go's own limit (~292 years) -> `None`.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let rest = match text.as_bytes().first()? {
        b'-' => return None,
        b'+' => &text[1..],
        _ => text,
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    let mut s = rest;
    while !s.is_empty() {
        // The number: digits, optionally a fraction.
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after) = s.split_at(int_len);
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(tail) => {
                let n = tail.bytes().take_while(u8::is_ascii_digit).count();
                tail.split_at(n)
            }
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return None;
        }
        // The unit: everything up to the next digit or dot.
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, tail) = after.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let mut int: u128 = 0;
        for d in int_digits.bytes() {
            int = int.checked_mul(10)?.checked_add(u128::from(d - b'0'))?;
            if int > u128::from(u64::MAX) {
                return None;
            }
        }
        // Go ignores fraction digits beyond what can matter; 18 is below a nanosecond of an hour.
        let (mut frac, mut scale): (u128, u128) = (0, 1);
        for d in frac_digits.bytes().take(18) {
            frac = frac * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        total = total
            .checked_add(int.checked_mul(unit_ns)?)?
            .checked_add(frac * unit_ns / scale)?;
        if total > i64::MAX as u128 {
            return None;
        }
        s = tail;
    }
    let nanos = u64::try_from(total).ok()?;
    Some(Duration::from_nanos(nanos))
}

/// One stream call, so the engine's poller is a loop around this: `GET
/// LAPI/v1/decisions/stream?startup=...` with the bouncer key, a total `timeout`, at most
/// [`MAX_BODY`] of body, `User-Agent: pbxguard-bouncer/<version>`, and no redirects (the key
/// must not follow one to another host). Blocking: call it off the engine thread.
pub fn fetch_stream(
    lapi_url: &str,
    api_key: &str,
    startup: bool,
    timeout: Duration,
) -> Result<Delta, CrowdsecError> {
    let key = api_key.trim();
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CrowdsecError::BadKey);
    }
    let url = format!(
        "{}/v1/decisions/stream?startup={startup}",
        lapi_url.trim().trim_end_matches('/')
    );
    let agent = ureq::AgentBuilder::new()
        .timeout(timeout)
        .redirects(0)
        .user_agent(concat!("pbxguard-bouncer/", env!("CARGO_PKG_VERSION")))
        .build();
    let response = match agent.get(&url).set("X-Api-Key", key).call() {
        Ok(response) => response,
        Err(ureq::Error::Status(status, response)) => {
            return Err(http_error(status, response));
        }
        Err(ureq::Error::Transport(t)) => return Err(CrowdsecError::Transport(t.to_string())),
    };
    if response.status() != 200 {
        // A 1xx/2xx/3xx other than 200 (e.g. a redirect we do not follow).
        return Err(http_error(response.status(), response));
    }
    let body = read_limited(response.into_reader(), MAX_BODY)?;
    let delta = parse_stream(&body)?;
    tracing::debug!(
        startup,
        new = delta.new.len(),
        deleted = delta.deleted.len(),
        skipped = delta.skipped,
        "crowdsec stream pulled"
    );
    Ok(delta)
}

fn http_error(status: u16, response: ureq::Response) -> CrowdsecError {
    // The start is enough for the message; the rest is not read.
    let mut body = Vec::new();
    let _ = response.into_reader().take(4096).read_to_end(&mut body);
    CrowdsecError::Http {
        status,
        body: sanitise(&String::from_utf8_lossy(&body), MAX_ERROR_BODY),
    }
}

/// Reads at most `limit` bytes; more is [`CrowdsecError::TooLarge`] (never buffered).
fn read_limited(reader: impl Read, limit: u64) -> Result<Vec<u8>, CrowdsecError> {
    let mut body = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|e| CrowdsecError::Transport(format!("reading the answer: {e}")))?;
    if body.len() as u64 > limit {
        return Err(CrowdsecError::TooLarge);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader, Write},
        net::TcpListener,
    };

    use proptest::prelude::*;

    use super::*;

    fn net(text: &str) -> IpNet {
        crate::units::parse_net(text).unwrap()
    }

    /// Captured from crowdsec 1.4.6 (Debian 12) after `cscli decisions add -i 192.0.2.7 -d 1h`
    /// and `cscli decisions add -r 198.51.100.0/24`: `startup=true`.
    const STARTUP: &str = r#"{"deleted":null,"new":[{"duration":"59m59.695374621s","id":1,"origin":"cscli","scenario":"manual 'ban' from 'lab'","scope":"Ip","type":"ban","value":"192.0.2.7"},{"duration":"3h59m59.695371623s","id":2,"origin":"cscli","scenario":"manual 'ban' from 'lab'","scope":"Range","type":"ban","value":"198.51.100.0/24"}]}"#;
    /// The next `startup=false` pull after `cscli decisions delete -i 192.0.2.7`.
    const DELETED: &str = r#"{"deleted":[{"duration":"-9.067438ms","id":1,"origin":"cscli","scenario":"manual 'ban' from 'lab'","scope":"Ip","type":"ban","value":"192.0.2.7"}],"new":null}"#;
    /// A pull with a repeated deletion and a new IPv6 captcha of 2 s.
    const MIXED: &str = r#"{"deleted":[{"duration":"-211.473606ms","id":1,"origin":"cscli","scenario":"manual 'ban' from 'lab'","scope":"Ip","type":"ban","value":"192.0.2.7"}],"new":[{"duration":"1.49465s","id":3,"origin":"cscli","scenario":"manual 'captcha' from 'lab'","scope":"Ip","type":"captcha","value":"2001:db8::5"}]}"#;
    /// `startup=true&scopes=ip,range,country`: a Country decision next to the Range.
    const COUNTRY: &str = r#"{"deleted":[{"duration":"-8.817885012s","id":1,"origin":"cscli","scenario":"manual 'ban' from 'lab'","scope":"Ip","type":"ban","value":"192.0.2.7"},{"duration":"-7.111896832s","id":3,"origin":"cscli","scenario":"manual 'captcha' from 'lab'","scope":"Ip","type":"captcha","value":"2001:db8::5"}],"new":[{"duration":"3h59m48.888290675s","id":2,"origin":"cscli","scenario":"manual 'ban' from 'lab'","scope":"Range","type":"ban","value":"198.51.100.0/24"},{"duration":"3h59m53.888288775s","id":4,"origin":"cscli","scenario":"manual 'ban' from 'lab'","scope":"Country","type":"ban","value":"FR"}]}"#;
    /// Nothing changed.
    const EMPTY: &str = r#"{"deleted":null,"new":null}"#;

    fn ns(h: u64, m: u64, s: u64, nanos: u64) -> Option<Duration> {
        Some(Duration::from_secs(h * 3600 + m * 60 + s) + Duration::from_nanos(nanos))
    }

    #[test]
    fn real_startup_body() {
        let delta = parse_stream(STARTUP.as_bytes()).unwrap();
        assert_eq!(
            delta,
            Delta {
                new: vec![
                    Decision {
                        id: 1,
                        net: net("192.0.2.7"),
                        kind: "ban".into(),
                        duration: ns(0, 59, 59, 695_374_621),
                        scenario: "manual 'ban' from 'lab'".into(),
                        origin: "cscli".into(),
                    },
                    Decision {
                        id: 2,
                        net: net("198.51.100.0/24"),
                        kind: "ban".into(),
                        duration: ns(3, 59, 59, 695_371_623),
                        scenario: "manual 'ban' from 'lab'".into(),
                        origin: "cscli".into(),
                    },
                ],
                deleted: vec![],
                skipped: 0,
            }
        );
    }

    #[test]
    fn real_delta_bodies() {
        let delta = parse_stream(DELETED.as_bytes()).unwrap();
        assert!(delta.new.is_empty());
        assert_eq!(delta.deleted.len(), 1);
        assert_eq!(delta.deleted[0].id, 1);
        assert_eq!(delta.deleted[0].net, net("192.0.2.7/32"));
        assert_eq!(delta.deleted[0].duration, None, "negative: over");

        let delta = parse_stream(MIXED.as_bytes()).unwrap();
        assert_eq!(delta.deleted[0].id, 1);
        assert_eq!(delta.new[0].net, net("2001:db8::5/128"));
        assert_eq!(delta.new[0].kind, "captcha");
        assert_eq!(
            delta.new[0].duration,
            Some(Duration::from_nanos(1_494_650_000))
        );

        let delta = parse_stream(COUNTRY.as_bytes()).unwrap();
        assert_eq!(delta.new.len(), 1);
        assert_eq!(delta.new[0].id, 2);
        assert_eq!(delta.deleted.len(), 2);
        assert_eq!(delta.skipped, 1, "the Country decision");

        assert_eq!(parse_stream(EMPTY.as_bytes()).unwrap(), Delta::default());
        // Newer LAPIs leave empty lists out (`omitempty`).
        assert_eq!(parse_stream(b"{}").unwrap(), Delta::default());
        assert_eq!(
            parse_stream(br#"{"new":[],"deleted":[]}"#).unwrap(),
            Delta::default()
        );
    }

    #[test]
    fn scope_is_case_insensitive_and_range_truncated() {
        let body = br#"{"new":[
            {"id":7,"scope":"ip","value":" 203.0.113.9 ","type":"ban","duration":"4h","scenario":"s","origin":"crowdsec"},
            {"id":8,"scope":"RANGE","value":"2001:db8:1:2::/48","type":"ban","duration":"59m","origin":"lists"},
            {"id":9,"scope":"Range","value":"203.0.113.77","type":"ban","duration":"1s"}
        ]}"#;
        let delta = parse_stream(body).unwrap();
        assert_eq!(delta.skipped, 0);
        assert_eq!(delta.new[0].net, net("203.0.113.9"));
        assert_eq!(delta.new[0].duration, Some(Duration::from_secs(4 * 3600)));
        assert_eq!(delta.new[1].net, net("2001:db8:1::/48"));
        assert_eq!(delta.new[1].duration, Some(Duration::from_secs(59 * 60)));
        assert_eq!(delta.new[1].scenario, "", "missing scenario is empty");
        assert_eq!(delta.new[2].net, net("203.0.113.77/32"));
    }

    #[test]
    fn hostile_decisions_are_skipped() {
        let body = br#"{"new":[
            {"id":1,"scope":"Ip","value":"192.0.2.1/24","type":"ban"},
            {"id":2,"scope":"Ip","value":"not an ip","type":"ban"},
            {"id":3,"scope":"Range","value":"10.0.0.0/33","type":"ban"},
            {"id":4,"scope":"AS","value":"64496","type":"ban"},
            {"id":5,"scope":"Ip","value":"192.0.2.5"},
            {"id":6,"scope":"Ip","value":"192.0.2.6","type":""},
            {"id":"7","scope":"Ip","value":"192.0.2.7","type":"ban"},
            {"id":1e400,"scope":"Ip","value":"192.0.2.8","type":"ban"},
            {"id":99999999999999999999999,"scope":"Ip","value":"192.0.2.9","type":"ban"},
            {"id":10.5,"scope":"Ip","value":"192.0.2.10","type":"ban"},
            {"scope":"Ip","value":"192.0.2.11","type":"ban"},
            {"id":12,"scope":5,"value":"192.0.2.12","type":"ban"},
            {"id":13,"scope":"Ip","value":["192.0.2.13"],"type":"ban"},
            {"id":14,"scope":"Ip","value":"192.0.2.14","type":{"x":1}},
            null, 5, "ban", [],
            {"id":20,"scope":"Ip","value":"192.0.2.20","type":"ban","duration":12,"scenario":null,"origin":7}
        ]}"#;
        // 1e400 is out of f64 range: serde_json rejects the whole body, which is fine too.
        let body = String::from_utf8_lossy(body).replace("1e400", "1e300");
        let delta = parse_stream(body.as_bytes()).unwrap();
        assert_eq!(delta.new.len(), 1, "{delta:?}");
        assert_eq!(delta.new[0].id, 20);
        assert_eq!(delta.new[0].duration, None);
        assert_eq!(delta.new[0].origin, "");
        assert_eq!(delta.skipped, 18);
        assert!(parse_stream(br#"{"new":[{"id":1e400}]}"#).is_err());
    }

    #[test]
    fn hostile_bodies_are_errors() {
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"\"new\"",
            b"42",
            br#"{"new":5}"#,
            br#"{"new":{"id":1}}"#,
            br#"{"deleted":"x"}"#,
            b"<html>404 page not found</html>",
            br#"{"new":[{"id":1,"#,
            b"\xff\xfe{}",
        ] {
            let err = parse_stream(body).unwrap_err();
            assert!(matches!(err, CrowdsecError::Json(_)), "{body:?}: {err}");
        }
        // Deep nesting hits serde_json's recursion limit instead of the stack.
        let deep = format!("{{\"new\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_stream(deep.as_bytes()).is_err());
    }

    #[test]
    fn scenario_is_sanitised() {
        let long = "x".repeat(500);
        let body = format!(
            r#"{{"new":[{{"id":1,"scope":"Ip","value":"192.0.2.1","type":"ban\n","scenario":"a\u001b[31m\nb","origin":"{long}"}},
            {{"id":2,"scope":"Ip","value":"192.0.2.2","type":"ban","scenario":"{long}é"}}]}}"#
        );
        let delta = parse_stream(body.as_bytes()).unwrap();
        assert_eq!(delta.new[0].kind, "ban");
        assert_eq!(delta.new[0].scenario, "a [31m b");
        assert_eq!(delta.new[0].origin.chars().count(), MAX_WORD);
        assert_eq!(delta.new[1].scenario.chars().count(), MAX_SCENARIO);
    }

    #[test]
    fn go_durations() {
        let d = parse_go_duration;
        assert_eq!(d("3h59m58.885s"), ns(3, 59, 58, 885_000_000));
        assert_eq!(d("3h59m59.695374621s"), ns(3, 59, 59, 695_374_621));
        assert_eq!(d("1.5ms"), Some(Duration::from_micros(1500)));
        assert_eq!(d("4h"), Some(Duration::from_secs(4 * 3600)));
        assert_eq!(d("59m"), Some(Duration::from_secs(59 * 60)));
        assert_eq!(d("0s"), Some(Duration::ZERO));
        assert_eq!(d("0"), Some(Duration::ZERO));
        assert_eq!(d("+5s"), Some(Duration::from_secs(5)));
        assert_eq!(
            d("1h1h"),
            Some(Duration::from_secs(7200)),
            "Go sums repeats"
        );
        assert_eq!(d(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(d("5.s"), Some(Duration::from_secs(5)));
        assert_eq!(d("10us"), Some(Duration::from_micros(10)));
        assert_eq!(d("10µs"), Some(Duration::from_micros(10)));
        assert_eq!(d("10μs"), Some(Duration::from_micros(10)));
        assert_eq!(d("7ns"), Some(Duration::from_nanos(7)));
        assert_eq!(
            d("2562047h47m16.854775807s"),
            Some(Duration::from_nanos(i64::MAX as u64))
        );
        for bad in [
            "-2.5s",
            "-9.067438ms",
            "-0s",
            "",
            "-",
            "+",
            "s",
            "5",
            "5d",
            "5 s",
            "1h 2m",
            ".s",
            "1..5s",
            "2562047h47m16.854775808s",
            "99999999999999999999999999999h",
            "1e3s",
            "NaN",
        ] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn parse_stream_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_stream(&body);
        }

        #[test]
        fn parse_stream_never_panics_on_near_json(
            scope in "(?i)ip|range|country|",
            value in "[0-9a-f:./ ]{0,24}",
            duration in "-?[0-9.]{0,6}(h|m|s|ms|us|µs|ns|x)?[0-9.]{0,4}",
            id in any::<i64>(),
        ) {
            let body = serde_json::json!({"new": [{
                "id": id, "scope": scope, "value": value, "type": "ban", "duration": duration,
            }], "deleted": null});
            let delta = parse_stream(body.to_string().as_bytes()).unwrap();
            prop_assert_eq!(delta.new.len() + delta.skipped, 1);
        }

        #[test]
        fn go_duration_round_trip(secs in 0u64..(100 * 365 * 86400), nanos in 0u32..1_000_000_000) {
            // Go's own formatting: hours, minutes, seconds with the fraction.
            let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
            let text = if nanos == 0 {
                format!("{h}h{m}m{s}s")
            } else {
                format!("{h}h{m}m{s}.{}s", format!("{nanos:09}").trim_end_matches('0'))
            };
            prop_assert_eq!(parse_go_duration(&text), Some(Duration::new(secs, nanos)));
            let negative = format!("-{text}");
            prop_assert_eq!(parse_go_duration(&negative), None);
        }

        #[test]
        fn go_duration_never_panics(text in "\\PC{0,40}") {
            let _ = parse_go_duration(&text);
        }
    }

    /// A one-shot HTTP server: answers one request with `status` and `body`, and hands back
    /// the request head it got.
    fn serve_once(
        status: &'static str,
        body: Vec<u8>,
    ) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
            head
        });
        (url, handle)
    }

    #[test]
    fn fetch_sends_key_and_agent() {
        let (url, server) = serve_once("200 OK", STARTUP.as_bytes().to_vec());
        let delta = fetch_stream(&url, "k3y\n", true, Duration::from_secs(5)).unwrap();
        assert_eq!(delta.new.len(), 2);
        let head = server.join().unwrap().to_ascii_lowercase();
        assert!(
            head.starts_with("get /v1/decisions/stream?startup=true http/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nx-api-key: k3y\r\n"), "{head}");
        assert!(head.contains("\r\nuser-agent: pbxguard-bouncer/"), "{head}");

        let (url, server) = serve_once("200 OK", EMPTY.as_bytes().to_vec());
        let url = url.trim_end_matches('/').to_string();
        assert_eq!(
            fetch_stream(&url, "k", false, Duration::from_secs(5)).unwrap(),
            Delta::default()
        );
        assert!(
            server
                .join()
                .unwrap()
                .starts_with("GET /v1/decisions/stream?startup=false ")
        );
    }

    #[test]
    fn fetch_errors_tell_what_to_do() {
        let (url, server) = serve_once(
            "403 Forbidden",
            br#"{"message":"access forbidden"}"#.to_vec(),
        );
        let err = fetch_stream(&url, "bad", true, Duration::from_secs(5)).unwrap_err();
        server.join().unwrap();
        assert!(
            matches!(err, CrowdsecError::Http { status: 403, .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("cscli bouncers add pbxguard"), "{text}");
        assert!(text.contains("access forbidden"), "{text}");

        let (url, server) = serve_once("500 Oops", "x".repeat(10_000).into_bytes());
        let err = fetch_stream(&url, "k", true, Duration::from_secs(5)).unwrap_err();
        server.join().unwrap();
        let CrowdsecError::Http { status: 500, body } = err else {
            panic!("{err:?}")
        };
        assert_eq!(body.len(), MAX_ERROR_BODY);

        let (url, server) = serve_once("302 Found", Vec::new());
        let err = fetch_stream(&url, "k", true, Duration::from_secs(5)).unwrap_err();
        server.join().unwrap();
        assert!(
            matches!(err, CrowdsecError::Http { status: 302, .. }),
            "{err:?}"
        );

        let (url, server) = serve_once("200 OK", b"<html>".to_vec());
        let err = fetch_stream(&url, "k", true, Duration::from_secs(5)).unwrap_err();
        server.join().unwrap();
        assert!(matches!(err, CrowdsecError::Json(_)), "{err:?}");

        // Nobody listening.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = fetch_stream(
            &format!("http://127.0.0.1:{port}/"),
            "k",
            true,
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(matches!(err, CrowdsecError::Transport(_)), "{err:?}");
        assert!(err.to_string().contains("listen_uri"));

        for key in ["", "  ", "a b", "a\u{7f}"] {
            assert!(matches!(
                fetch_stream("http://127.0.0.1:1/", key, true, Duration::from_secs(1)),
                Err(CrowdsecError::BadKey)
            ));
        }
    }

    #[test]
    fn body_limit() {
        assert_eq!(read_limited(&b"12345"[..], 5).unwrap(), b"12345");
        assert!(matches!(
            read_limited(&b"123456"[..], 5),
            Err(CrowdsecError::TooLarge)
        ));
        assert!(CrowdsecError::TooLarge.to_string().contains("64 MiB"));
    }
}
