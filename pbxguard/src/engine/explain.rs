//! `pbxguard explain IP`: everything the daemon knows about one address, in one place, so
//! an admin asking "why was this phone banned?" or "why is this trunk never banned?" gets
//! the answer without reading logs: protections (allowlist, PBX config with file and line,
//! the host's own addresses), failures being counted, bans covering it and its offenses.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::Engine;
use crate::{
    detect::tracker::source_net,
    store::{BanRecord, Offense},
    trust::Trusted,
};

/// The answer to `pbxguard explain IP`.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The address asked about.
    pub ip: IpAddr,
    /// Why it can never be banned (allowlist, loopback, host address, PBX peer), if so.
    pub never_banned: Option<String>,
    /// `[allow] networks` entries containing it.
    pub allowlisted: Vec<String>,
    /// PBX config entries naming it, with file and line.
    pub pbx_trusted: Vec<Trusted>,
    /// The network failures are counted for (the address, or its IPv6 prefix).
    pub tracked_as: String,
    /// Failures counted within the longest findtime.
    pub failures: u32,
    /// Known since a successful authentication (spoofable evidence never counts against it).
    pub known: Option<super::known::KnownEntry>,
    /// Bans covering it (the address itself or a wider network), narrowest last.
    pub bans: Vec<BanRecord>,
    /// Past detected offenses of the tracked network (escalation).
    pub offense: Option<Offense>,
    /// Whether it falls in a geo-blocked network.
    pub geo_blocked: bool,
    /// Blocklist feeds that list it (and whose entry is enforced).
    pub feeds: Vec<String>,
}

impl Engine {
    /// What the daemon knows about `ip`.
    pub fn explain(&self, ip: IpAddr) -> Explanation {
        let single = IpNet::from(ip);
        let tracked = source_net(ip, self.config.policy.ipv6_prefix);
        let mut bans: Vec<BanRecord> = self
            .ledger
            .bans()
            .filter(|b| b.net.contains(&ip))
            .cloned()
            .collect();
        bans.sort_by_key(|b| b.net.prefix_len());
        Explanation {
            ip,
            never_banned: self.guard.check(&single).err().map(|r| r.why),
            allowlisted: self
                .config
                .allow
                .networks
                .iter()
                .filter(|n| n.contains(&ip))
                .map(ToString::to_string)
                .collect(),
            pbx_trusted: self
                .pbx_trusted
                .iter()
                .filter(|t| t.net.contains(&ip))
                .cloned()
                .collect(),
            known: self.known(ip, std::time::SystemTime::now()).cloned(),
            tracked_as: tracked.to_string(),
            feeds: self.feeds.listing(ip),
            failures: self.tracker.count(&tracked),
            offense: self.ledger.offense(&tracked),
            bans,
            geo_blocked: self.geo.nets.iter().any(|n| n.contains(&ip)),
        }
    }
}
