//! Geo rules: the countries a PBX never takes calls from, turned into CIDR sets for the
//! XDP program (or nftables).
//!
//! The MaxMind database (`.mmdb`: GeoLite2/GeoIP2 Country or City, from geoipupdate) is
//! walked once into networks; the ones to drop are aggregated into the fewest CIDRs and
//! loaded into an LPM map. The daemon reloads them when the file is replaced.

use std::{
    collections::{HashMap, hash_map::Entry},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use maxminddb::Reader;
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

/// The only fields read from a record. Country and City databases both have them; the
/// rest of a City record (names, subdivisions, location) is skipped.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow)]
    registered_country: Option<IsoCode<'a>>,
}

#[derive(Deserialize)]
struct IsoCode<'a> {
    iso_code: Option<&'a str>,
}

impl Record<'_> {
    /// Where the address is used, else where its network is registered (anycast, satellite).
    fn country(&self) -> Option<String> {
        self.country
            .as_ref()
            .and_then(|c| c.iso_code)
            .or_else(|| self.registered_country.as_ref().and_then(|c| c.iso_code))
            .map(str::to_string)
    }
}

fn database_error(path: &Path) -> impl Fn(String) -> GeoError + '_ {
    move |message| GeoError::Database {
        path: path.to_path_buf(),
        message,
    }
}

/// The country of `ip` and whether the geo rules drop it.
pub fn lookup(config: &GeoConfig, ip: IpAddr) -> Result<(Option<String>, bool), GeoError> {
    let Some(path) = &config.database else {
        return Ok((None, false));
    };
    let err = database_error(path);
    let reader = Reader::open_readfile(path).map_err(|e| err(e.to_string()))?;
    let record: Option<Record> = reader.lookup(ip).map_err(|e| err(e.to_string()))?;
    let country = record.as_ref().and_then(Record::country);
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
///
/// A City database has millions of networks but far fewer distinct records, so the search
/// tree is walked here (`tree::walk`) and each record is decoded once, not once per network.
pub fn blocked_networks(config: &GeoConfig) -> Result<Vec<IpNet>, GeoError> {
    let Some(path) = &config.database else {
        return Ok(Vec::new());
    };
    if !config.active() {
        return Ok(Vec::new());
    }
    let err = database_error(path);
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let reader = Reader::from_source(bytes.as_slice()).map_err(|e| err(e.to_string()))?;
    let mut countries: HashMap<usize, Option<String>> = HashMap::new();
    let mut blocked = Vec::new();
    let mut known = Vec::new();
    let keep_known = config.unknown == Unknown::Drop;
    let mut failure = None;
    tree::walk(&bytes, &reader.metadata, |net, record| {
        let Some(net) = normalize(net) else {
            return true;
        };
        let country = match countries.entry(record) {
            Entry::Occupied(cached) => cached.into_mut(),
            // Any address of the network leads to this record.
            Entry::Vacant(slot) => match reader.lookup::<Record>(net.network()) {
                Ok(found) => slot.insert(found.as_ref().and_then(Record::country)),
                Err(e) => {
                    failure = Some(e.to_string());
                    return false;
                }
            },
        };
        if config.drops(country.as_deref()) {
            blocked.push(net);
        }
        if keep_known {
            known.push(net);
        }
        true
    })
    .map_err(&err)?;
    if let Some(message) = failure {
        return Err(err(message));
    }
    if keep_known {
        blocked.extend(complement(&IpNet::aggregate(&known)));
    }
    Ok(IpNet::aggregate(&blocked))
}

/// The MaxMind DB search tree (<https://maxmind.github.io/MaxMind-DB/>), walked without
/// decoding records.
mod tree {
    use maxminddb::Metadata;

    /// Calls `visit(network, record)` for every network with data, in address order;
    /// `record` identifies the data (equal for networks sharing it). The aliases of the IPv4
    /// subtree in an IPv6 tree (`::ffff:0:0/96`, `2001::/32`, `2002::/16`) are skipped, as
    /// the maxminddb crate's `within` does. Stops early when `visit` returns false.
    pub fn walk(
        bytes: &[u8],
        meta: &Metadata,
        mut visit: impl FnMut(ipnetwork::IpNetwork, usize) -> bool,
    ) -> Result<(), String> {
        let nodes = meta.node_count as usize;
        let node_bytes = match meta.record_size {
            24 | 28 | 32 => usize::from(meta.record_size) / 4,
            other => return Err(format!("unsupported record size {other}")),
        };
        let tree = nodes
            .checked_mul(node_bytes)
            .and_then(|len| bytes.get(..len))
            .ok_or("the search tree is longer than the file")?;
        let read = |node: usize, right: bool| -> usize {
            let b = &tree[node * node_bytes..(node + 1) * node_bytes];
            let be = |s: &[u8]| s.iter().fold(0usize, |acc, &x| acc << 8 | usize::from(x));
            match (node_bytes, right) {
                (6, false) => be(&b[0..3]),
                (6, true) => be(&b[3..6]),
                (7, false) => usize::from(b[3] & 0xf0) << 20 | be(&b[0..3]),
                (7, true) => usize::from(b[3] & 0x0f) << 24 | be(&b[4..7]),
                (_, false) => be(&b[0..4]),
                (_, true) => be(&b[4..8]),
            }
        };
        let bits: u8 = if meta.ip_version == 6 { 128 } else { 32 };
        // The node the IPv4 subtree hangs from in an IPv6 tree (`::/96`).
        let mut ipv4_start = 0;
        if bits == 128 {
            for _ in 0..96 {
                if ipv4_start >= nodes {
                    break;
                }
                ipv4_start = read(ipv4_start, false);
            }
        }
        // (node, address so far, prefix length); left (0) is visited before right (1).
        let mut stack: Vec<(usize, u128, u8)> = vec![(0, 0, 0)];
        while let Some((node, address, depth)) = stack.pop() {
            if node == ipv4_start && ipv4_start != 0 && address > u128::from(u32::MAX) {
                continue;
            }
            if node > nodes {
                let net = if bits == 128 {
                    ipnetwork::Ipv6Network::new(address.into(), depth).map(Into::into)
                } else {
                    ipnetwork::Ipv4Network::new((address as u32).into(), depth).map(Into::into)
                };
                if !visit(net.map_err(|e| e.to_string())?, node) {
                    return Ok(());
                }
            } else if node < nodes {
                if depth >= bits {
                    return Err("the search tree is deeper than an address".into());
                }
                let one = address | 1u128 << (bits - 1 - depth);
                stack.push((read(node, true), one, depth + 1));
                stack.push((read(node, false), address, depth + 1));
            }
        }
        Ok(())
    }
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

    /// A two-node IPv4 tree in each record size: 0.0.0.0/2 empty, 64.0.0.0/2 -> record B,
    /// 128.0.0.0/1 -> record A.
    #[test]
    fn the_tree_walk_reads_every_record_size() {
        let nodes = 2usize;
        let (a, b, empty) = (nodes + 16, nodes + 20, nodes);
        for size in [24u16, 28, 32] {
            let node = |left: usize, right: usize| -> Vec<u8> {
                match size {
                    24 => [&left.to_be_bytes()[5..], &right.to_be_bytes()[5..]].concat(),
                    28 => {
                        let (l, r) = (left.to_be_bytes(), right.to_be_bytes());
                        let middle = (l[4] & 0x0f) << 4 | (r[4] & 0x0f);
                        [&l[5..], &[middle], &r[5..]].concat()
                    }
                    _ => [&left.to_be_bytes()[4..], &right.to_be_bytes()[4..]].concat(),
                }
            };
            // Values above 2^24 exercise the 28- and 32-bit high bits.
            let big = if size == 24 { 0 } else { 1 << 24 };
            let bytes = [node(1, a + big), node(empty, b + big)].concat();
            let meta = maxminddb::Metadata {
                binary_format_major_version: 2,
                binary_format_minor_version: 0,
                build_epoch: 0,
                database_type: "test".into(),
                description: Default::default(),
                ip_version: 4,
                languages: Vec::new(),
                node_count: nodes as u32,
                record_size: size,
            };
            let mut seen = Vec::new();
            tree::walk(&bytes, &meta, |net, record| {
                seen.push((net.to_string(), record));
                true
            })
            .unwrap();
            assert_eq!(
                seen,
                [
                    ("64.0.0.0/2".to_string(), b + big),
                    ("128.0.0.0/1".to_string(), a + big)
                ],
                "record size {size}"
            );
        }
        let truncated = maxminddb::Metadata {
            binary_format_major_version: 2,
            binary_format_minor_version: 0,
            build_epoch: 0,
            database_type: "test".into(),
            description: Default::default(),
            ip_version: 6,
            languages: Vec::new(),
            node_count: 1000,
            record_size: 28,
        };
        assert!(tree::walk(&[0; 70], &truncated, |_, _| true).is_err());
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
