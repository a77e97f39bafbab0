//! Nested bans, computed once for both backends.
//!
//! Bans may nest: a host inside a banned /24, a /25 inside a /16. An address is dropped
//! until the *latest* expiry among the bans that cover it, whatever order they were added
//! or end in. The XDP program finds only the longest matching prefix, and nftables interval
//! sets refuse overlapping elements, so the daemon computes what the kernel must hold:
//!
//! - for an LPM trie, each entry carries its *effective* expiry, the latest of its own and
//!   of every ban covering it, so an expired narrower entry never shadows a live wider one;
//! - for an interval set, the covered address space is cut into disjoint ranges, each with
//!   the latest expiry of the bans covering it.
//!
//! Either way the kernel enforces the right thing on its own clock, with the daemon dead.

use std::{collections::BTreeMap, net::IpAddr, time::SystemTime};

use ipnet::IpNet;

/// When a ban ends; `None` is permanent.
pub type Expiry = Option<SystemTime>;

/// The later of two expiries (permanent is latest).
pub fn later(a: Expiry, b: Expiry) -> Expiry {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    }
}

/// Address family of a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4; addresses are the low 32 bits.
    V4,
    /// IPv6.
    V6,
}

/// A closed range of addresses of one family, `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Range {
    /// Family.
    pub family: Family,
    /// First address.
    pub first: u128,
    /// Last address.
    pub last: u128,
}

impl Range {
    /// The addresses of `net`.
    pub fn of(net: &IpNet) -> Range {
        match net {
            IpNet::V4(n) => Range {
                family: Family::V4,
                first: u32::from(n.network()).into(),
                last: u32::from(n.broadcast()).into(),
            },
            IpNet::V6(n) => Range {
                family: Family::V6,
                first: u128::from(n.network()),
                last: u128::from(n.broadcast()),
            },
        }
    }

    /// An address of this range's family.
    pub fn addr(&self, value: u128) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4((value as u32).into()),
            Family::V6 => IpAddr::V6(value.into()),
        }
    }

    /// Whether `other` lies inside this range.
    pub fn covers(&self, other: &Range) -> bool {
        self.family == other.family && self.first <= other.first && other.last <= self.last
    }
}

/// The bans a backend holds, with their own expiries.
#[derive(Clone, Debug, Default)]
pub struct BanTable {
    bans: BTreeMap<IpNet, Expiry>,
    /// Prefix lengths in use per family (bans usually have one or two), so finding the
    /// bans covering a network costs a few lookups, not 129.
    prefixes: BTreeMap<(Family, u8), usize>,
}

fn family(net: &IpNet) -> Family {
    match net {
        IpNet::V4(_) => Family::V4,
        IpNet::V6(_) => Family::V6,
    }
}

impl BanTable {
    /// Adds or replaces the ban on `net`; returns the expiry it replaced.
    pub fn insert(&mut self, net: IpNet, expires: Expiry) -> Option<Expiry> {
        let old = self.bans.insert(net, expires);
        if old.is_none() {
            *self
                .prefixes
                .entry((family(&net), net.prefix_len()))
                .or_default() += 1;
        }
        old
    }

    /// Removes the ban on exactly `net`; returns its expiry if there was one.
    pub fn remove(&mut self, net: &IpNet) -> Option<Expiry> {
        let old = self.bans.remove(net)?;
        let key = (family(net), net.prefix_len());
        if let Some(count) = self.prefixes.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.prefixes.remove(&key);
            }
        }
        Some(old)
    }

    /// The ban on exactly `net`.
    pub fn get(&self, net: &IpNet) -> Option<Expiry> {
        self.bans.get(net).copied()
    }

    /// Number of bans.
    pub fn len(&self) -> usize {
        self.bans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bans.is_empty()
    }

    /// Every ban and its own expiry.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, Expiry)> + '_ {
        self.bans.iter().map(|(n, e)| (*n, *e))
    }

    /// The expiry an LPM entry for `net` must carry: the latest of its own and of every
    /// ban covering it. `None` inside the option means permanent; the outer `None` means
    /// `net` is not banned at all.
    pub fn effective(&self, net: &IpNet) -> Option<Expiry> {
        let own = self.get(net)?;
        let fam = family(net);
        let mut expiry = own;
        for (&(f, len), _) in self.prefixes.range((fam, 0)..(fam, net.prefix_len())) {
            debug_assert_eq!(f, fam);
            let wider = net.supernet_of(len);
            if let Some(e) = self.get(&wider) {
                expiry = later(expiry, e);
            }
        }
        Some(expiry)
    }

    /// Bans strictly inside `net` (their effective expiry depends on it).
    pub fn nested(&self, net: &IpNet) -> Vec<IpNet> {
        let (low, high) = match net {
            IpNet::V4(n) => (
                IpNet::V4(ipnet::Ipv4Net::new(n.network(), 0).expect("valid")),
                IpNet::V4(ipnet::Ipv4Net::new(n.broadcast(), 32).expect("valid")),
            ),
            IpNet::V6(n) => (
                IpNet::V6(ipnet::Ipv6Net::new(n.network(), 0).expect("valid")),
                IpNet::V6(ipnet::Ipv6Net::new(n.broadcast(), 128).expect("valid")),
            ),
        };
        self.bans
            .range(low..=high)
            .map(|(n, _)| *n)
            .filter(|n| n != net && net.contains(n))
            .collect()
    }

    /// The covered address space as disjoint ranges, each with the latest expiry of the
    /// bans covering it: what an interval set must hold.
    pub fn ranges(&self) -> BTreeMap<Range, Expiry> {
        let mut nodes: Vec<(Range, Expiry)> = self
            .bans
            .iter()
            .map(|(net, e)| (Range::of(net), *e))
            .collect();
        // Pre-order of the nesting tree: by start, wider first.
        nodes.sort_by(|(a, _), (b, _)| {
            (a.family, a.first, std::cmp::Reverse(a.last)).cmp(&(
                b.family,
                b.first,
                std::cmp::Reverse(b.last),
            ))
        });
        let mut out = BTreeMap::new();
        // Open bans: their range, effective expiry and the first address not yet emitted.
        let mut stack: Vec<(Range, Expiry, Option<u128>)> = Vec::new();
        let emit =
            |out: &mut BTreeMap<Range, Expiry>, r: &Range, from: Option<u128>, to: u128, e| {
                if let Some(first) = from
                    && first <= to
                {
                    out.insert(
                        Range {
                            family: r.family,
                            first,
                            last: to,
                        },
                        e,
                    );
                }
            };
        for (range, own) in nodes {
            while let Some((top, e, cursor)) = stack.last().copied() {
                if top.covers(&range) {
                    break;
                }
                emit(&mut out, &top, cursor, top.last, e);
                stack.pop();
            }
            let effective = match stack.last_mut() {
                Some((parent, e, cursor)) => {
                    if range.first > 0 {
                        emit(&mut out, parent, *cursor, range.first - 1, *e);
                    }
                    *cursor = range.last.checked_add(1);
                    later(*e, own)
                }
                None => own,
            };
            stack.push((range, effective, Some(range.first)));
        }
        while let Some((top, e, cursor)) = stack.pop() {
            emit(&mut out, &top, cursor, top.last, e);
        }
        out
    }
}

trait Supernet {
    fn supernet_of(&self, len: u8) -> IpNet;
}

impl Supernet for IpNet {
    /// The network of length `len` containing this one.
    fn supernet_of(&self, len: u8) -> IpNet {
        match self {
            IpNet::V4(n) => IpNet::V4(
                ipnet::Ipv4Net::new(n.network(), len)
                    .expect("shorter prefix")
                    .trunc(),
            ),
            IpNet::V6(n) => IpNet::V6(
                ipnet::Ipv6Net::new(n.network(), len)
                    .expect("shorter prefix")
                    .trunc(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;
    use crate::units::parse_net;

    fn at(s: u64) -> Expiry {
        Some(UNIX_EPOCH + Duration::from_secs(s))
    }

    fn net(s: &str) -> IpNet {
        parse_net(s).unwrap()
    }

    #[test]
    fn narrower_entries_carry_the_wider_expiry() {
        let mut t = BanTable::default();
        t.insert(net("10.0.0.0/24"), at(100));
        t.insert(net("10.0.0.3"), at(10));
        t.insert(net("10.0.0.0/25"), None);
        assert_eq!(t.effective(&net("10.0.0.3")), Some(None));
        assert_eq!(t.effective(&net("10.0.0.0/24")), Some(at(100)));
        assert_eq!(t.nested(&net("10.0.0.0/24")).len(), 2);
        t.remove(&net("10.0.0.0/25"));
        assert_eq!(t.effective(&net("10.0.0.3")), Some(at(100)));
        assert_eq!(t.effective(&net("10.0.0.4")), None);
    }

    #[test]
    fn ranges_cut_holes_for_nested_bans() {
        let mut t = BanTable::default();
        t.insert(net("10.0.0.0/25"), at(100));
        t.insert(net("10.0.0.3"), at(500));
        let r: Vec<_> = t
            .ranges()
            .into_iter()
            .map(|(r, e)| (r.addr(r.first).to_string(), r.addr(r.last).to_string(), e))
            .collect();
        assert_eq!(
            r,
            [
                ("10.0.0.0".into(), "10.0.0.2".into(), at(100)),
                ("10.0.0.3".into(), "10.0.0.3".into(), at(500)),
                ("10.0.0.4".into(), "10.0.0.127".into(), at(100)),
            ]
        );
    }

    /// The latest expiry among the bans covering `addr`, by brute force.
    fn expected(bans: &[(IpNet, Expiry)], addr: IpAddr) -> Option<Expiry> {
        bans.iter()
            .filter(|(n, _)| n.contains(&addr))
            .map(|(_, e)| *e)
            .reduce(later)
    }

    fn arb_ban() -> impl Strategy<Value = (IpNet, Expiry)> {
        (0u32..64, 26u8..=32, proptest::option::of(1u64..5)).prop_map(|(host, len, e)| {
            let addr = std::net::Ipv4Addr::from(0x0a00_0000 | host);
            (
                IpNet::V4(ipnet::Ipv4Net::new(addr, len).unwrap().trunc()),
                e.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            )
        })
    }

    proptest! {
        /// Both representations agree with the brute-force rule for every address.
        #[test]
        fn lpm_and_ranges_match_the_rule(bans in proptest::collection::vec(arb_ban(), 0..12)) {
            let mut t = BanTable::default();
            let mut live: BTreeMap<IpNet, Expiry> = BTreeMap::new();
            for (n, e) in &bans {
                t.insert(*n, *e);
                live.insert(*n, *e);
            }
            let live: Vec<_> = live.into_iter().collect();
            let ranges = t.ranges();
            for host in 0u32..72 {
                let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 | host));
                let want = expected(&live, addr);
                // LPM: the longest covering entry's effective expiry.
                let lpm = live
                    .iter()
                    .filter(|(n, _)| n.contains(&addr))
                    .max_by_key(|(n, _)| n.prefix_len())
                    .and_then(|(n, _)| t.effective(n));
                prop_assert_eq!(lpm, want);
                let v = u128::from(u32::from(match addr { IpAddr::V4(a) => a, _ => unreachable!() }));
                let hits: Vec<_> = ranges.iter().filter(|(r, _)| r.first <= v && v <= r.last).collect();
                prop_assert!(hits.len() <= 1, "ranges overlap: {:?}", hits);
                prop_assert_eq!(hits.first().map(|(_, e)| **e), want);
            }
        }
    }
}
