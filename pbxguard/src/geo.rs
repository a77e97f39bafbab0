//! Geo rules: the countries a PBX never takes calls from, turned into CIDR sets for the
//! XDP program (or nftables).
//!
//! The MaxMind database (`.mmdb`, e.g. GeoLite2-Country from geoipupdate) is walked once
//! into networks; the ones to drop are aggregated into the fewest CIDRs and loaded into an
//! LPM map. The daemon reloads them when the file is replaced.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use maxminddb::{Reader, geoip2};
use serde::{Deserialize, Serialize};

/// `[geo]`
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GeoConfig {
    /// The country database (`/var/lib/GeoIP/GeoLite2-Country.mmdb`).
    pub database: Option<PathBuf>,
    /// Drop these countries (ISO 3166 codes: `["RU", "CN"]`).
    pub deny_countries: Vec<String>,
    /// Or: accept only these countries and drop every other (the allowlist still wins).
    pub allow_countries: Vec<String>,
    /// What happens to addresses the database does not know: `pass` (default) or `drop`.
    pub unknown: Unknown,
}

/// Verdict for addresses missing from the database.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Unknown {
    /// Passed.
    #[default]
    Pass,
    /// Dropped.
    Drop,
}

/// Why the geo rules could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The database could not be opened or read.
    #[error(
        "geo database {path}: {message}; install one (e.g. geoipupdate's GeoLite2-Country.mmdb) or fix [geo] database"
    )]
    Database {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl GeoConfig {
    /// Whether any geo rule is configured.
    pub fn active(&self) -> bool {
        self.database.is_some()
            && (!self.deny_countries.is_empty()
                || !self.allow_countries.is_empty()
                || self.unknown == Unknown::Drop)
    }

    /// Checks the keys that serde cannot; returns the key and the message.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.deny_countries.is_empty() && !self.allow_countries.is_empty() {
            return Err((
                "geo.allow_countries",
                "use either deny_countries or allow_countries, not both".into(),
            ));
        }
        for (key, list) in [
            ("geo.deny_countries", &self.deny_countries),
            ("geo.allow_countries", &self.allow_countries),
        ] {
            if let Some(bad) = list
                .iter()
                .find(|c| c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_uppercase()))
            {
                return Err((
                    key,
                    format!(
                        "`{bad}` is not an ISO 3166 country code (two capital letters, e.g. \"RU\")"
                    ),
                ));
            }
        }
        if self.database.is_none()
            && (!self.deny_countries.is_empty()
                || !self.allow_countries.is_empty()
                || self.unknown == Unknown::Drop)
        {
            return Err(("geo.database", "country rules need a database, e.g. database = \"/var/lib/GeoIP/GeoLite2-Country.mmdb\"".into()));
        }
        Ok(())
    }

    /// Whether traffic from `country` (None: not in the database) is dropped.
    pub fn drops(&self, country: Option<&str>) -> bool {
        match country {
            None => self.unknown == Unknown::Drop,
            Some(cc) if !self.allow_countries.is_empty() => {
                !self.allow_countries.iter().any(|a| a == cc)
            }
            Some(cc) => self.deny_countries.iter().any(|d| d == cc),
        }
    }
}

/// Identity of the database file (device, inode, size, mtime): changes when it is replaced.
pub type Stamp = (u64, u64, u64, i64);

/// The database file's current [`Stamp`], if there is one.
pub fn stamp(config: &GeoConfig) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(config.database.as_ref()?).ok()?;
    Some((meta.dev(), meta.ino(), meta.size(), meta.mtime()))
}

fn open(path: &Path) -> Result<Reader<Vec<u8>>, GeoError> {
    Reader::open_readfile(path).map_err(|e| GeoError::Database {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn country_of<'a>(record: &geoip2::Country<'a>) -> Option<&'a str> {
    record
        .country
        .as_ref()
        .and_then(|c| c.iso_code)
        .or_else(|| record.registered_country.as_ref().and_then(|c| c.iso_code))
}

/// The country of `ip` and whether the geo rules drop it.
pub fn lookup(config: &GeoConfig, ip: IpAddr) -> Result<(Option<String>, bool), GeoError> {
    let Some(path) = &config.database else {
        return Ok((None, false));
    };
    let reader = open(path)?;
    let record: Option<geoip2::Country> = reader.lookup(ip).map_err(|e| GeoError::Database {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let country = record.as_ref().and_then(country_of).map(str::to_string);
    let drops = config.drops(country.as_deref());
    Ok((country, drops))
}

/// IPv4 networks sit at `::/96` in an IPv6 database; `::ffff:0:0/96` and `2002::/16` are
/// aliases of the same subtree and are skipped.
fn normalize(net: ipnetwork::IpNetwork) -> Option<IpNet> {
    match net {
        ipnetwork::IpNetwork::V4(n) => Ipv4Net::new(n.ip(), n.prefix()).ok().map(IpNet::V4),
        ipnetwork::IpNetwork::V6(n) => {
            let bits = u128::from(n.ip());
            let prefix = n.prefix();
            if prefix >= 96 && bits >> 32 == 0 {
                return Ipv4Net::new(Ipv4Addr::from(bits as u32), prefix - 96)
                    .ok()
                    .map(IpNet::V4);
            }
            let alias_mapped = prefix >= 96 && bits >> 32 == 0xffff;
            let alias_6to4 = prefix >= 16 && bits >> 112 == 0x2002;
            if alias_mapped || alias_6to4 || (prefix < 96 && bits == 0) {
                return None;
            }
            Ipv6Net::new(n.ip(), prefix).ok().map(IpNet::V6)
        }
    }
}

/// Every network the geo rules drop, aggregated.
pub fn blocked_networks(config: &GeoConfig) -> Result<Vec<IpNet>, GeoError> {
    let Some(path) = &config.database else {
        return Ok(Vec::new());
    };
    if !config.active() {
        return Ok(Vec::new());
    }
    let reader = open(path)?;
    let err = |e: maxminddb::MaxMindDbError| GeoError::Database {
        path: path.clone(),
        message: e.to_string(),
    };
    let roots: Vec<ipnetwork::IpNetwork> = if reader.metadata.ip_version == 6 {
        vec!["::/0".parse().expect("constant")]
    } else {
        vec!["0.0.0.0/0".parse().expect("constant")]
    };
    let mut blocked = Vec::new();
    let mut known = Vec::new();
    for root in roots {
        for item in reader.within::<geoip2::Country>(root).map_err(err)? {
            let item = item.map_err(err)?;
            let Some(net) = normalize(item.ip_net) else {
                continue;
            };
            if config.drops(country_of(&item.info)) {
                blocked.push(net);
            }
            known.push(net);
        }
    }
    if config.unknown == Unknown::Drop {
        blocked.extend(complement(&IpNet::aggregate(&known)));
    }
    Ok(IpNet::aggregate(&blocked))
}

/// Every address not in `nets` (aggregated, sorted), as CIDRs, for both families;
/// loopback, private, link-local and multicast space is never included.
fn complement(nets: &[IpNet]) -> Vec<IpNet> {
    let mut out = Vec::new();
    let mut next4: u64 = 0;
    let mut next6: u128 = 0;
    let mut v6_done = false;
    let fill4 = |out: &mut Vec<IpNet>, from: u64, to: u64| {
        if from < to {
            out.extend(
                ipnet::Ipv4Subnets::new(
                    Ipv4Addr::from(from as u32),
                    Ipv4Addr::from((to - 1) as u32),
                    0,
                )
                .map(IpNet::V4),
            );
        }
    };
    for net in nets {
        match net {
            IpNet::V4(n) => {
                let start = u32::from(n.network()) as u64;
                fill4(&mut out, next4, start);
                next4 = u32::from(n.broadcast()) as u64 + 1;
            }
            IpNet::V6(n) => {
                let start = u128::from(n.network());
                if start > next6 {
                    out.extend(
                        ipnet::Ipv6Subnets::new(
                            Ipv6Addr::from(next6),
                            Ipv6Addr::from(start - 1),
                            0,
                        )
                        .map(IpNet::V6),
                    );
                }
                match u128::from(n.broadcast()).checked_add(1) {
                    Some(n) => next6 = n,
                    None => v6_done = true,
                }
            }
        }
    }
    fill4(&mut out, next4, 1 << 32);
    if !v6_done {
        out.extend(
            ipnet::Ipv6Subnets::new(Ipv6Addr::from(next6), Ipv6Addr::from(u128::MAX), 0)
                .map(IpNet::V6),
        );
    }
    let never: Vec<IpNet> = [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/3",
        "::/8",
        "fe80::/10",
        "fc00::/7",
        "ff00::/8",
    ]
    .iter()
    .map(|n| n.parse().expect("constant"))
    .collect();
    out.into_iter()
        .flat_map(|net| subtract(net, &never))
        .filter(|net| !never.iter().any(|n| n.contains(net)))
        .collect()
}

/// `net` without the parts covered by `holes` (holes smaller than `net` split it).
fn subtract(net: IpNet, holes: &[IpNet]) -> Vec<IpNet> {
    if holes.iter().any(|h| h.contains(&net)) {
        return Vec::new();
    }
    if !holes.iter().any(|h| net.contains(h)) {
        return vec![net];
    }
    match net.subnets(net.prefix_len() + 1) {
        Ok(halves) => halves.flat_map(|half| subtract(half, holes)).collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_and_allow_decide_by_country() {
        let deny = GeoConfig {
            database: Some("x".into()),
            deny_countries: vec!["RU".into()],
            ..Default::default()
        };
        assert!(deny.drops(Some("RU")));
        assert!(!deny.drops(Some("DE")));
        assert!(!deny.drops(None));
        let allow = GeoConfig {
            database: Some("x".into()),
            allow_countries: vec!["DE".into()],
            unknown: Unknown::Drop,
            ..Default::default()
        };
        assert!(allow.drops(Some("RU")));
        assert!(!allow.drops(Some("DE")));
        assert!(allow.drops(None));
    }

    #[test]
    fn bad_country_codes_and_conflicts_are_explained() {
        let bad = GeoConfig {
            database: Some("x".into()),
            deny_countries: vec!["Russia".into()],
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().1.contains("ISO 3166"));
        let both = GeoConfig {
            database: Some("x".into()),
            deny_countries: vec!["RU".into()],
            allow_countries: vec!["DE".into()],
            ..Default::default()
        };
        assert_eq!(both.validate().unwrap_err().0, "geo.allow_countries");
        let no_db = GeoConfig {
            deny_countries: vec!["RU".into()],
            ..Default::default()
        };
        assert_eq!(no_db.validate().unwrap_err().0, "geo.database");
    }

    #[test]
    fn ipv4_in_an_ipv6_tree_is_mapped_and_aliases_are_skipped() {
        let v4: ipnetwork::IpNetwork = "::c633:6400/120".parse().unwrap();
        assert_eq!(normalize(v4).unwrap().to_string(), "198.51.100.0/24");
        assert!(normalize("::ffff:c633:6400/120".parse().unwrap()).is_none());
        assert!(normalize("2002:c633:6400::/40".parse().unwrap()).is_none());
        assert_eq!(
            normalize("2001:db8::/32".parse().unwrap())
                .unwrap()
                .to_string(),
            "2001:db8::/32"
        );
    }

    #[test]
    fn complement_covers_the_rest_but_never_private_space() {
        let known: Vec<IpNet> = vec!["0.0.0.0/1".parse().unwrap(), "::/1".parse().unwrap()];
        let rest = complement(&known);
        let has = |ip: &str| {
            rest.iter()
                .any(|n| n.contains(&ip.parse::<IpAddr>().unwrap()))
        };
        assert!(has("203.0.113.1"));
        assert!(!has("8.8.8.8"), "known");
        assert!(
            !has("192.168.1.1") && !has("224.0.0.1") && !has("fe80::1"),
            "never private or multicast"
        );
        assert!(has("8000::1"));
    }
}
