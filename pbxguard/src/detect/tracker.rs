//! Counts failures per source within a sliding window (fail2ban's `findtime`).

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use ipnet::{IpNet, Ipv6Net};

/// Most sources tracked at once; beyond this the stalest are forgotten first, so a spray
/// from millions of addresses cannot exhaust memory.
pub const MAX_TRACKED: usize = 1_000_000;

/// The network a failure is counted (and banned) under: /32 for IPv4, the configured
/// prefix for IPv6 (an attacker usually holds a whole /64).
pub fn source_net(ip: IpAddr, ipv6_prefix: u8) -> IpNet {
    match ip {
        IpAddr::V4(v4) => IpNet::from(IpAddr::V4(v4)),
        IpAddr::V6(v6) => IpNet::V6(
            Ipv6Net::new(v6, ipv6_prefix.min(128))
                .expect("prefix clamped")
                .trunc(),
        ),
    }
}

/// Failure times per source network.
#[derive(Debug, Default)]
pub struct Tracker {
    failures: HashMap<IpNet, Vec<SystemTime>>,
}

impl Tracker {
    /// Records a failure at `now` and returns how many fall within `findtime`.
    pub fn record(&mut self, net: IpNet, now: SystemTime, findtime: Duration) -> u32 {
        if self.failures.len() >= MAX_TRACKED && !self.failures.contains_key(&net) {
            self.prune(now, findtime);
            if self.failures.len() >= MAX_TRACKED {
                tracing::warn!(
                    tracked = self.failures.len(),
                    "failure tracker full; forgetting the stalest sources"
                );
                self.evict_stalest(MAX_TRACKED / 10);
            }
        }
        let times = self.failures.entry(net).or_default();
        let since = now.checked_sub(findtime).unwrap_or(SystemTime::UNIX_EPOCH);
        times.retain(|t| *t > since);
        times.push(now);
        times.len() as u32
    }

    /// Forgets a source (after it was banned).
    pub fn clear(&mut self, net: &IpNet) {
        self.failures.remove(net);
    }

    /// Failures currently counted for `net`.
    pub fn count(&self, net: &IpNet) -> u32 {
        self.failures.get(net).map_or(0, |t| t.len() as u32)
    }

    /// Drops sources with no failure within `findtime`.
    pub fn prune(&mut self, now: SystemTime, findtime: Duration) {
        let since = now.checked_sub(findtime).unwrap_or(SystemTime::UNIX_EPOCH);
        self.failures
            .retain(|_, times| times.last().is_some_and(|t| *t > since));
    }

    fn evict_stalest(&mut self, count: usize) {
        let mut by_age: Vec<(SystemTime, IpNet)> = self
            .failures
            .iter()
            .filter_map(|(net, t)| t.last().map(|last| (*last, *net)))
            .collect();
        by_age.sort();
        for (_, net) in by_age.into_iter().take(count) {
            self.failures.remove(&net);
        }
    }

    /// Number of sources tracked.
    pub fn len(&self) -> usize {
        self.failures.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_within_the_window_only() {
        let mut t = Tracker::default();
        let net = source_net("192.0.2.1".parse().unwrap(), 64);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let window = Duration::from_secs(60);
        assert_eq!(t.record(net, t0, window), 1);
        assert_eq!(t.record(net, t0 + Duration::from_secs(30), window), 2);
        assert_eq!(t.record(net, t0 + Duration::from_secs(61), window), 2);
        assert_eq!(t.record(net, t0 + Duration::from_secs(200), window), 1);
        t.prune(t0 + Duration::from_secs(300), window);
        assert!(t.is_empty());
    }

    #[test]
    fn ipv6_sources_share_their_prefix() {
        let a = source_net("2001:db8:1:2:aaaa::1".parse().unwrap(), 64);
        let b = source_net("2001:db8:1:2:bbbb::9".parse().unwrap(), 64);
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            source_net("2001:db8::1".parse().unwrap(), 128).to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(
            source_net("198.51.100.7".parse().unwrap(), 64).to_string(),
            "198.51.100.7/32"
        );
    }
}
