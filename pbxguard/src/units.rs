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
    /// When a ban of this length made at `now` ends; `None` is permanent. A length past
    /// what the clock can represent is treated as permanent rather than wrapping.
    pub fn expiry_from(self, now: std::time::SystemTime) -> Option<std::time::SystemTime> {
        match self {
            BanDuration::Permanent => None,
            BanDuration::For(d) => now.checked_add(d),
        }
    }
}

impl FromStr for BanDuration {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        match text {
            "permanent" | "forever" | "0" => return Ok(BanDuration::Permanent),
            _ => {}
        }
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => Ok(BanDuration::Permanent),
            Ok(d) => Ok(BanDuration::For(d)),
            Err(_) => Err(UnitError::Duration(text.to_string())),
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

    /// Accepts what humantime accepts.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map_err(|_| serde::de::Error::custom(UnitError::Duration(text.clone())))
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

        /// Accepts what humantime accepts.
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

    /// Formats as `2026-11-26T11:03:53Z`.
    pub fn format(t: SystemTime) -> String {
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
    use std::net::{Ipv4Addr, Ipv6Addr};

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
        fn durations_round_trip(secs in 1u64..10_000_000_000) {
            let d = BanDuration::For(Duration::from_secs(secs));
            prop_assert_eq!(d.to_string().parse::<BanDuration>().unwrap(), d);
        }

        #[test]
        fn duration_parser_never_panics(text in "\\PC{0,30}") {
            let _ = text.parse::<BanDuration>();
        }
    }
}
