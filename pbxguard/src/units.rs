//! Parsers for the values admins type: networks (`203.0.113.5`, `2001:db8::/48`) and ban
//! durations (`90s`, `10m`, `7d`, `permanent`). Shared by the config file and the CLI so both
//! accept exactly the same spellings.

use std::{fmt, net::IpAddr, str::FromStr, time::Duration};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a network or duration was rejected; the message says what is accepted instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    /// Neither an address nor a CIDR.
    #[error(
        "`{0}` is not an IP address or CIDR network (expected e.g. 203.0.113.5, 198.51.100.0/24 or 2001:db8::/64)"
    )]
    Net(String),
    /// Not a duration humantime understands.
    #[error("`{0}` is not a duration (expected e.g. 90s, 10m, 1h, 7d, `1h 30m`, or `permanent`)")]
    Duration(String),
    /// A ban length of zero: once read as "permanent", which nobody expects from a `0`.
    #[error("`{0}` is a ban of no length: for a ban that never ends write `permanent`")]
    ZeroBan(String),
    /// A zero window or timeout, which would make the key do nothing.
    #[error("`{0}` is zero: give a length, e.g. 10m")]
    Zero(String),
    /// Longer than [`MAX_DURATION`]: the kernel's clocks and the timestamps cannot hold it.
    #[error(
        "`{0}` is longer than 100 years, the longest duration pbxguard accepts: give at most 100y (a ban that never ends is `permanent`)"
    )]
    TooLong(String),
}

/// The longest duration any key or `--for` accepts: 100 years (humantime's years of 365.25
/// days). Every expiry stays far below what `SystemTime`, RFC 3339 text (year 9999),
/// nftables timeouts and the XDP program's boot-time nanoseconds (about 584 years) can hold.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// Parses a non-zero duration of at most [`MAX_DURATION`] (`90s`, `10m`, `1h 30m`, `7d`).
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let text = text.trim();
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err(UnitError::Zero(text.to_string())),
        Ok(d) if d > MAX_DURATION => Err(UnitError::TooLong(text.to_string())),
        Ok(d) => Ok(d),
        Err(humantime::DurationError::NumberOverflow) => Err(UnitError::TooLong(text.to_string())),
        Err(_) => Err(UnitError::Duration(text.to_string())),
    }
}

/// Ban reasons as stored: control characters (and the bidi overrides that reorder a
/// terminal line) become U+FFFD, so a reason typed by an admin or built from a rule name
/// cannot forge lines or escape sequences in `bans list`, the log or a notification.
pub fn sanitize_reason(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

/// Parses an address (as a host network: /32 or /128) or a CIDR network.
///
/// Host bits below the prefix are cleared (`198.51.100.7/24` becomes `198.51.100.0/24`) so
/// that one network always has one spelling in the store and the maps.
pub fn parse_net(text: &str) -> Result<IpNet, UnitError> {
    let text = text.trim();
    if let Ok(net) = IpNet::from_str(text) {
        return Ok(net.trunc());
    }
    IpAddr::from_str(text)
        .map(IpNet::from)
        .map_err(|_| UnitError::Net(text.to_string()))
}

/// How long a ban lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanDuration {
    /// Until someone removes it.
    Permanent,
    /// For this long after it is created.
    For(Duration),
}

impl BanDuration {
    /// When a ban of this length made at `now` ends; `None` is permanent. Lengths are
    /// capped at [`MAX_DURATION`], and a time past what the clock can represent is treated
    /// as permanent rather than wrapping.
    pub fn expiry_from(self, now: std::time::SystemTime) -> Option<std::time::SystemTime> {
        match self {
            BanDuration::Permanent => None,
            BanDuration::For(d) => now.checked_add(d.min(MAX_DURATION)),
        }
    }
}

impl FromStr for BanDuration {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "permanent" | "forever" => Ok(BanDuration::Permanent),
            text => match parse_duration(text) {
                Ok(d) => Ok(BanDuration::For(d)),
                Err(UnitError::Zero(text)) => Err(UnitError::ZeroBan(text)),
                Err(e) => Err(e),
            },
        }
    }
}

impl fmt::Display for BanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BanDuration::Permanent => f.write_str("permanent"),
            BanDuration::For(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

impl Serialize for BanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde adapter: plain durations (`10m`, `1h 30m`) for keys that cannot be permanent.
pub mod duration_serde {
    use super::*;

    /// Serializes as humantime text.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    /// Accepts what [`parse_duration`] accepts.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }

    /// The same for an optional duration.
    pub mod option {
        use super::*;

        /// Serializes `None` as absent.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.collect_str(&humantime::format_duration(*d)),
                None => s.serialize_none(),
            }
        }

        /// Accepts what [`parse_duration`] accepts.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

/// Serde adapter: networks as the strings [`parse_net`] accepts.
pub mod net_serde {
    use super::*;

    /// Serializes as CIDR text.
    pub fn serialize<S: Serializer>(net: &IpNet, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(net)
    }

    /// Accepts an address or a CIDR.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        let text = String::deserialize(d)?;
        parse_net(&text).map_err(serde::de::Error::custom)
    }

    /// The same for a list of networks.
    pub mod vec {
        use super::*;

        /// Serializes as a list of CIDR strings.
        pub fn serialize<S: Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(nets.iter().map(|n| n.to_string()))
        }

        /// Accepts a list of addresses or CIDRs.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
            Vec::<String>::deserialize(d)?
                .iter()
                .map(|t| parse_net(t).map_err(serde::de::Error::custom))
                .collect()
        }
    }
}

/// Serde adapter: timestamps as RFC 3339 (UTC, seconds), `null` for "never".
pub mod rfc3339 {
    use std::time::SystemTime;

    use super::*;

    /// Formats as `2026-11-26T11:03:53Z`. humantime panics before 1970 and fails after
    /// 9999, so a time outside is shown at that end rather than taking the daemon down.
    pub fn format(t: SystemTime) -> String {
        const LAST: Duration = Duration::from_secs(253_402_300_799);
        let t = t.clamp(SystemTime::UNIX_EPOCH, SystemTime::UNIX_EPOCH + LAST);
        humantime::format_rfc3339_seconds(t).to_string()
    }

    /// Serializes one timestamp.
    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*t))
    }

    /// Parses one timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
    }

    /// The same for an optional timestamp.
    pub mod option {
        use super::*;

        /// Serializes `None` as `null`.
        pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&format(*t)),
                None => s.serialize_none(),
            }
        }

        /// Parses `null` as `None`.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, Ipv6Addr},
        time::SystemTime,
    };

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn address_becomes_host_network() {
        assert_eq!(
            parse_net("198.51.100.7").unwrap().to_string(),
            "198.51.100.7/32"
        );
        assert_eq!(
            parse_net("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(parse_net(" 10.0.0.0/8 ").unwrap().to_string(), "10.0.0.0/8");
    }

    #[test]
    fn host_bits_are_cleared() {
        assert_eq!(
            parse_net("198.51.100.7/24").unwrap().to_string(),
            "198.51.100.0/24"
        );
        assert_eq!(
            parse_net("2001:db8::77/64").unwrap().to_string(),
            "2001:db8::/64"
        );
    }

    #[test]
    fn bad_networks_are_rejected_with_examples() {
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4/33",
            "::1/129",
            "example.com",
            "1.2.3.4/",
            "1.2.3.4 5",
        ] {
            let err = parse_net(bad).unwrap_err();
            assert!(err.to_string().contains("203.0.113.5"), "{err}");
        }
    }

    #[test]
    fn durations() {
        let secs = |s: &str| match s.parse::<BanDuration>().unwrap() {
            BanDuration::For(d) => d.as_secs(),
            BanDuration::Permanent => 0,
        };
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("10m"), 600);
        assert_eq!(secs("1h"), 3600);
        assert_eq!(secs("7d"), 7 * 86400);
        assert_eq!(secs("1h 30m"), 5400);
        assert_eq!(
            "permanent".parse::<BanDuration>().unwrap(),
            BanDuration::Permanent
        );
        assert!("soon".parse::<BanDuration>().is_err());
        assert!("-5m".parse::<BanDuration>().is_err());
        assert!("10x".parse::<BanDuration>().is_err());
        assert_eq!(secs("100y"), MAX_DURATION.as_secs());
    }

    #[test]
    fn zero_is_an_error_that_points_to_permanent() {
        for zero in ["0", "0s", " 0m ", "0ns", "0.0s", "0h 0m"] {
            let err = zero.parse::<BanDuration>().unwrap_err();
            assert_eq!(err, UnitError::ZeroBan(zero.trim().to_string()));
            assert!(err.to_string().contains("`permanent`"), "{err}");
            assert_eq!(
                parse_duration(zero),
                Err(UnitError::Zero(zero.trim().to_string()))
            );
        }
    }

    #[test]
    fn longer_than_a_century_is_an_error() {
        // 10000y passed check-config and then panicked the detector (RFC 3339 stops at
        // year 9999); 7974y and 580000000000y failed `bans add` with internal errors.
        for long in [
            "101y",
            "7974y",
            "10000y",
            "580000000000y",
            "99999999999999999999y",
            "18446744073709551615s",
            "18446744073709551616s",
            "100y 1s",
        ] {
            let err = long.parse::<BanDuration>().unwrap_err();
            assert_eq!(err, UnitError::TooLong(long.to_string()), "{long}");
            assert!(err.to_string().contains("100y"), "{err}");
            assert_eq!(
                parse_duration(long),
                Err(UnitError::TooLong(long.to_string()))
            );
        }
    }

    #[test]
    fn timestamps_outside_rfc3339_are_clamped_not_panics() {
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(rfc3339::format(far), "9999-12-31T23:59:59Z");
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(rfc3339::format(before), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn reasons_lose_control_characters() {
        assert_eq!(
            sanitize_reason("brute\nforce\r\x1b[31m\u{202e}evil\u{7f} ünïcode\t!"),
            "brute\u{fffd}force\u{fffd}\u{fffd}[31m\u{fffd}evil\u{fffd} ünïcode\u{fffd}!"
        );
        assert_eq!(sanitize_reason("SIP brute force"), "SIP brute force");
    }

    proptest! {
        #[test]
        fn any_v4_cidr_round_trips(addr: u32, len in 0u8..=32) {
            let net = ipnet::Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc();
            prop_assert_eq!(parse_net(&net.to_string()).unwrap(), IpNet::V4(net));
        }

        #[test]
        fn any_v6_cidr_round_trips(addr: u128, len in 0u8..=128) {
            let net = ipnet::Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap().trunc();
            prop_assert_eq!(parse_net(&net.to_string()).unwrap(), IpNet::V6(net));
        }

        #[test]
        fn parsed_networks_never_have_host_bits(text in "\\PC{0,40}") {
            if let Ok(net) = parse_net(&text) {
                prop_assert_eq!(net, net.trunc());
            }
        }

        #[test]
        fn net_parser_never_panics(text in "[0-9a-fA-F:./ ]{0,45}") {
            let _ = parse_net(&text);
        }

        #[test]
        fn durations_round_trip(secs in 1..=MAX_DURATION.as_secs()) {
            let d = BanDuration::For(Duration::from_secs(secs));
            prop_assert_eq!(d.to_string().parse::<BanDuration>().unwrap(), d);
        }

        /// The whole u64 range of seconds, written either way: accepted exactly when
        /// 1 s..=100 y, and every accepted length gives an expiry that can be written down.
        #[test]
        fn every_second_count_is_accepted_or_refused_cleanly(
            secs in prop_oneof![any::<u64>(), 0..=MAX_DURATION.as_secs() + 10],
            humane: bool,
        ) {
            let d = Duration::from_secs(secs);
            let text = if humane {
                humantime::format_duration(d).to_string()
            } else {
                format!("{secs}s")
            };
            match text.parse::<BanDuration>() {
                Ok(BanDuration::For(parsed)) => {
                    prop_assert!(secs >= 1 && secs <= MAX_DURATION.as_secs());
                    prop_assert_eq!(parsed, d);
                    let expiry = BanDuration::For(parsed).expiry_from(SystemTime::now());
                    prop_assert!(expiry.is_some());
                    prop_assert!(rfc3339::format(expiry.unwrap()).starts_with(|c: char| c.is_ascii_digit()));
                }
                Ok(BanDuration::Permanent) => prop_assert!(false, "{text} read as permanent"),
                Err(UnitError::ZeroBan(_)) => prop_assert_eq!(secs, 0),
                Err(UnitError::TooLong(_)) => prop_assert!(secs > MAX_DURATION.as_secs()),
                Err(e) => prop_assert!(false, "{text}: {e}"),
            }
        }

        #[test]
        fn duration_parser_never_panics(text in "\\PC{0,30}") {
            let _ = text.parse::<BanDuration>();
        }

        /// Odd spellings: digits with any units, fractions, spaces and huge numbers.
        #[test]
        fn accepted_durations_are_never_zero_or_past_a_century(
            text in "[0-9]{1,25}(\\.[0-9]{0,12})?[ ]?(ns|us|ms|s|m|h|d|w|M|y|years?|months?)?( [0-9]{1,22}[smhdwy])*",
        ) {
            for parsed in [
                parse_duration(&text).ok(),
                match text.parse::<BanDuration>() {
                    Ok(BanDuration::For(d)) => Some(d),
                    Ok(BanDuration::Permanent) => return Err(TestCaseError::fail("permanent")),
                    Err(_) => None,
                },
            ]
            .into_iter()
            .flatten()
            {
                prop_assert!(!parsed.is_zero() && parsed <= MAX_DURATION, "{text}: {parsed:?}");
                prop_assert!(BanDuration::For(parsed).expiry_from(SystemTime::now()).is_some());
            }
        }
    }
}
