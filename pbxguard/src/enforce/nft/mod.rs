//! The nftables backend: the same bans and allowlist where the XDP program cannot load.
//!
//! pbxguard owns exactly one table, `inet pbxguard`, and touches nothing else. Its chain
//! hooks prerouting at raw priority (before conntrack), on the configured interfaces only:
//! allowlist first, then bans, geo and the port rules. Ban sets carry per-element timeouts,
//! so bans end on time without the daemon; nested bans are cut into disjoint ranges
//! ([`bans`]). Every change is one atomic `nft -j -f -` batch.

mod bans;
pub mod run;

use std::sync::Arc;

use ipnet::IpNet;
use pbxguard_common::Reason;
use serde_json::{Value, json};

pub use self::bans::{Held, parse_held};
use self::run::{apply, list};
use super::{
    Counters, EnforceError, Enforcer, InterfaceStatus, ReasonStats,
    overlap::{BanTable, Expiry},
};
use crate::config::Config;

/// The table pbxguard owns.
pub const TABLE: &str = "pbxguard";
const FAMILY: &str = "inet";
const CHAIN: &str = "prerouting";
/// Regular chain that drops what the port rules cannot judge (see [`unclassified_rules`]).
const UNCLASSIFIED: &str = "unclassified";
/// Chain for peers the PBX's configs name: the flood limit, then accept.
const PBX: &str = "pbx";
/// Elements per batch: bounded so one `nft` run stays well inside netlink limits.
const BATCH: usize = 5000;

/// Named counters, one per verdict nftables can tell apart.
const COUNTERS: [(Reason, &str); 9] = [
    (Reason::Passed, "passed"),
    (Reason::Allowlisted, "allowlisted"),
    (Reason::Banned, "banned"),
    (Reason::GeoBlocked, "geo_blocked"),
    (Reason::ProtectedPort, "protected_port"),
    (Reason::Flood, "sip_flood"),
    (Reason::Unclassified, "unclassified"),
    (Reason::PbxTrusted, "pbx_trusted"),
    (Reason::Blocklisted, "blocklisted"),
];

/// Enforces with nftables.
pub struct NftEnforcer {
    interfaces: Vec<String>,
    /// The bans with their own expiries.
    table: BanTable,
    /// What the ban sets hold (so a change is a diff).
    held: Held,
    /// Size of each ban set (`[ban] max_entries`).
    capacity: u32,
    /// Trusted-only port rules in force (their sets are `trust<i>_4` / `trust<i>_6`).
    protect: Vec<super::perimeter::ProtectRule>,
    /// SIP ports and flood settings in force (per-source meters `flood4_*` / `flood6_*`).
    flood: Option<(Vec<pbxguard_common::PortKey>, pbxguard_common::Settings)>,
}

/// Whether our table exists.
pub fn table_exists() -> bool {
    list(&["list", "tables", FAMILY])
        .map(|objects| objects.iter().any(|o| o["table"]["name"] == TABLE))
        .unwrap_or(false)
}

/// Deletes our table (and nothing else); true if there was one.
pub fn remove_table() -> Result<bool, EnforceError> {
    if !table_exists() {
        return Ok(false);
    }
    apply(vec![
        json!({"delete": {"table": {"family": FAMILY, "name": TABLE}}}),
    ])?;
    Ok(true)
}

fn set_name(net: &IpNet, kind: &str) -> String {
    match net {
        IpNet::V4(_) => format!("{kind}4"),
        IpNet::V6(_) => format!("{kind}6"),
    }
}

/// A set element: an address, or a prefix.
fn element_value(net: &IpNet) -> Value {
    if net.prefix_len() == net.max_prefix_len() {
        json!(net.addr().to_string())
    } else {
        json!({"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}})
    }
}

fn element(set: &str, elems: Vec<Value>) -> Value {
    json!({"family": FAMILY, "table": TABLE, "name": set, "elem": elems})
}

/// For each transport protocol present in `ports`: its name and a match on those ports.
fn dport_matches(ports: &[pbxguard_common::PortKey]) -> Vec<(&'static str, Value)> {
    [("udp", 17u8), ("tcp", 6u8)]
        .into_iter()
        .filter_map(|(l4, number)| {
            let ports: Vec<u16> = ports.iter().filter(|p| p.proto == number).map(|p| p.port).collect();
            (!ports.is_empty()).then(|| {
                (l4, json!({"match": {"op": "==", "left": {"payload": {"protocol": l4, "field": "dport"}}, "right": {"set": ports}}}))
            })
        })
        .collect()
}

/// The rules of the [`UNCLASSIFIED`] chain, jumped to while port rules exist. nftables
/// finds the transport header through an extension header chain of any length
/// (`ipv6_find_hdr`), so it has no walking limit; what it cannot judge by port is an IP
/// packet whose TCP/UDP ports lie beyond its end (a header chain or transport header cut
/// short, including a first fragment) or whose headers nftables could not parse. Those are
/// dropped and counted `unclassified`, as on XDP. Protocols without ports and later
/// fragments (delivered only with their first fragment, which is judged) return.
fn unclassified_rules() -> Vec<Value> {
    let rule = |expr: Vec<Value>| json!({"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": UNCLASSIFIED, "expr": expr}}});
    let ret = json!({"return": null});
    vec![
        json!({"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": UNCLASSIFIED}}}),
        // An unparsed header chain leaves l4proto unset: this match fails and the packet goes on.
        rule(vec![
            json!({"match": {"op": "!=", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "udp"]}}}),
            ret.clone(),
        ]),
        rule(vec![
            json!({"match": {"op": "!=", "left": {"&": [{"payload": {"protocol": "ip", "field": "frag-off"}}, 0x1fff]}, "right": 0}}),
            ret.clone(),
        ]),
        rule(vec![
            json!({"match": {"op": "!=", "left": {"exthdr": {"name": "frag", "field": "frag-off"}}, "right": 0}}),
            ret.clone(),
        ]),
        // Fails when the ports lie beyond the packet.
        rule(vec![
            json!({"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": {"range": [0, 65535]}}}),
            ret,
        ]),
        rule(vec![
            json!({"counter": "unclassified"}),
            json!({"drop": null}),
        ]),
    ]
}

/// Commands creating (if missing) and emptying an auto-merging interval set.
fn interval_set(name: &str, kind: &str) -> Vec<Value> {
    let set = json!({"family": FAMILY, "table": TABLE, "name": name, "type": kind, "flags": ["interval"], "auto-merge": true});
    vec![json!({"add": {"set": set}})]
}

/// Commands filling set `name` with exactly `nets` of its family.
fn fill_set(name: &str, nets: &[IpNet], family: &str) -> Vec<Value> {
    let mut commands =
        vec![json!({"flush": {"set": {"family": FAMILY, "table": TABLE, "name": name}}})];
    let elems: Vec<Value> = nets
        .iter()
        .filter(|n| set_name(n, "") == family)
        .map(element_value)
        .collect();
    for chunk in elems.chunks(BATCH) {
        commands.push(json!({"add": {"element": element(name, chunk.to_vec())}}));
    }
    commands
}

impl NftEnforcer {
    /// Creates (or refreshes) the table, sets, counters and chain in one batch, keeping the
    /// set contents, and learns which bans it already holds.
    pub fn start(config: &Config) -> Result<NftEnforcer, EnforceError> {
        let interfaces = config.enforce.interfaces.clone();
        let table = json!({"family": FAMILY, "name": TABLE});
        let mut commands = vec![json!({"add": {"table": table}})];
        for (name, kind, timeout) in [
            ("allow4", "ipv4_addr", false),
            ("allow6", "ipv6_addr", false),
            ("ban4", "ipv4_addr", true),
            ("ban6", "ipv6_addr", true),
        ] {
            let mut set = json!({"family": FAMILY, "table": TABLE, "name": name, "type": kind});
            if timeout {
                set["flags"] = json!(["interval", "timeout"]);
                set["size"] = json!(config.ban.max_entries);
            } else {
                set["flags"] = json!(["interval"]);
                set["auto-merge"] = json!(true);
            }
            commands.push(json!({"add": {"set": set}}));
        }
        for (_, name) in COUNTERS {
            commands.push(
                json!({"add": {"counter": {"family": FAMILY, "table": TABLE, "name": name}}}),
            );
        }
        commands.extend(interval_set("pbx4", "ipv4_addr"));
        commands.extend(interval_set("pbx6", "ipv6_addr"));
        commands.push(json!({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": PBX}}}));
        commands.extend(interval_set("geo4", "ipv4_addr"));
        commands.extend(interval_set("geo6", "ipv6_addr"));
        commands.extend(interval_set("block4", "ipv4_addr"));
        commands.extend(interval_set("block6", "ipv6_addr"));
        let mut hooked = json!({"family": FAMILY, "table": TABLE, "name": CHAIN});
        hooked["type"] = json!("filter");
        hooked["hook"] = json!("prerouting");
        hooked["prio"] = json!(-300);
        hooked["policy"] = json!("accept");
        commands.push(json!({"add": {"chain": hooked}}));
        commands.push(
            json!({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": UNCLASSIFIED}}}),
        );
        apply(commands)?;
        let enforcer = NftEnforcer {
            interfaces,
            table: BanTable::default(),
            held: bans::read_held()?,
            capacity: config.ban.max_entries,
            protect: Vec::new(),
            flood: None,
        };
        apply(enforcer.chain_rules())?;
        tracing::info!(table = "inet pbxguard", interfaces = ?enforcer.interfaces, elements = enforcer.held.len(), "nftables rules in place");
        Ok(enforcer)
    }

    /// The chain's rules, replacing the old ones (flush first): allowlist, bans, geo, the
    /// jump to [`UNCLASSIFIED`] while port rules exist, trusted-only ports, the flood limit,
    /// then the `passed` counter.
    fn chain_rules(&self) -> Vec<Value> {
        let iif = json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": {"set": self.interfaces}}});
        let saddr = |proto: &str, op: &str, set: &str| json!({"match": {"op": op, "left": {"payload": {"protocol": proto, "field": "saddr"}}, "right": format!("@{set}")}});
        let rule = |expr: Vec<Value>| json!({"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": CHAIN, "expr": expr}}});
        let mut commands =
            vec![json!({"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": CHAIN}}})];
        for (proto, kind, counter, verdict) in [
            ("ip", "allow4", "allowlisted", "accept"),
            ("ip6", "allow6", "allowlisted", "accept"),
        ] {
            commands.push(rule(vec![
                iif.clone(),
                saddr(proto, "==", kind),
                json!({"counter": counter}),
                json!({verdict: null}),
            ]));
        }
        // PBX-trusted peers: only the flood limit applies (chain `pbx` ends in accept).
        for (proto, set) in [("ip", "pbx4"), ("ip6", "pbx6")] {
            commands.push(rule(vec![
                iif.clone(),
                saddr(proto, "==", set),
                json!({"jump": {"target": PBX}}),
            ]));
        }
        commands.extend(self.pbx_rules());
        for (proto, kind, counter, verdict) in [
            ("ip", "ban4", "banned", "drop"),
            ("ip6", "ban6", "banned", "drop"),
            ("ip", "block4", "blocklisted", "drop"),
            ("ip6", "block6", "blocklisted", "drop"),
            ("ip", "geo4", "geo_blocked", "drop"),
            ("ip6", "geo6", "geo_blocked", "drop"),
        ] {
            commands.push(rule(vec![
                iif.clone(),
                saddr(proto, "==", kind),
                json!({"counter": counter}),
                json!({verdict: null}),
            ]));
        }
        commands.extend(unclassified_rules());
        let port_rules = self.protect.iter().any(|p| !p.ports.is_empty()) || self.flood.is_some();
        if port_rules {
            commands.push(rule(vec![
                iif.clone(),
                json!({"jump": {"target": UNCLASSIFIED}}),
            ]));
        }
        for (i, protect) in self.protect.iter().enumerate() {
            for (_, dport) in dport_matches(&protect.ports) {
                for (proto, family) in [("ip", 4), ("ip6", 6)] {
                    commands.push(rule(vec![
                        iif.clone(),
                        dport.clone(),
                        saddr(proto, "!=", &format!("trust{i}_{family}")),
                        json!({"counter": "protected_port"}),
                        json!({"drop": null}),
                    ]));
                }
            }
        }
        if let Some((ports, settings)) = &self.flood {
            for (l4, dport) in dport_matches(ports) {
                for (proto, meter) in [
                    ("ip", format!("flood4_{l4}")),
                    ("ip6", format!("flood6_{l4}")),
                ] {
                    let limit = json!({"limit": {"rate": settings.flood_rate, "burst": settings.flood_burst, "per": "second", "inv": true}});
                    commands.push(rule(vec![
                        iif.clone(),
                        dport.clone(),
                        json!({"meter": {"name": meter, "key": {"payload": {"protocol": proto, "field": "saddr"}}, "stmt": limit}}),
                        json!({"counter": "sip_flood"}),
                        json!({"drop": null}),
                    ]));
                }
            }
        }
        commands.push(rule(vec![iif, json!({"counter": "passed"})]));
        commands
    }

    /// The [`PBX`] chain: the flood limit (own meters), then the `pbx_trusted` counter and
    /// accept.
    fn pbx_rules(&self) -> Vec<Value> {
        let rule = |expr: Vec<Value>| json!({"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": PBX, "expr": expr}}});
        let mut commands =
            vec![json!({"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": PBX}}})];
        if let Some((ports, settings)) = &self.flood {
            for (l4, dport) in dport_matches(ports) {
                for (proto, meter) in [("ip", format!("pbx4_{l4}")), ("ip6", format!("pbx6_{l4}"))]
                {
                    let limit = json!({"limit": {"rate": settings.flood_rate, "burst": settings.flood_burst, "per": "second", "inv": true}});
                    commands.push(rule(vec![
                        dport.clone(),
                        json!({"meter": {"name": meter, "key": {"payload": {"protocol": proto, "field": "saddr"}}, "stmt": limit}}),
                        json!({"counter": "sip_flood"}),
                        json!({"drop": null}),
                    ]));
                }
            }
        }
        commands.push(rule(vec![
            json!({"counter": "pbx_trusted"}),
            json!({"accept": null}),
        ]));
        commands
    }

    /// Makes the ban sets match the table; when nft refuses because an element it was to
    /// delete already timed out, re-reads the sets and tries once more.
    fn sync_bans(&mut self) -> Result<(), EnforceError> {
        match bans::sync(&self.table, &mut self.held) {
            Err(e) if run::is_missing_element(&e) => {
                self.held = bans::read_held()?;
                bans::sync(&self.table, &mut self.held)
            }
            other => other,
        }
    }

    /// Tries `bans` as one change; on refusal, halves until each refused ban is known.
    fn ban_bisect(&mut self, bans: &[(IpNet, Expiry)]) -> Vec<Result<(), EnforceError>> {
        let old: Vec<Option<Expiry>> = bans
            .iter()
            .map(|(net, expires)| self.table.insert(*net, *expires))
            .collect();
        let error = match self.sync_bans() {
            Ok(()) => return bans.iter().map(|_| Ok(())).collect(),
            Err(e) => e,
        };
        for ((net, _), old) in bans.iter().zip(old).rev() {
            match old {
                Some(old) => self.table.insert(*net, old),
                None => self.table.remove(net),
            };
        }
        if bans.len() == 1 {
            let error = if run::is_full(&error) {
                EnforceError::Full {
                    map: if bans[0].0.addr().is_ipv4() {
                        "nftables ban4"
                    } else {
                        "nftables ban6"
                    },
                    capacity: self.capacity,
                }
            } else {
                error
            };
            // Bring the sets back in line with the table before answering.
            if let Err(e) = self.sync_bans() {
                tracing::error!(error = %e, "nftables ban sets could not be restored");
            }
            return vec![Err(error)];
        }
        let (first, second) = bans.split_at(bans.len() / 2);
        let mut results = self.ban_bisect(first);
        results.extend(self.ban_bisect(second));
        results
    }
}

impl Enforcer for NftEnforcer {
    fn backend(&self) -> &'static str {
        "nft"
    }

    fn rules_off(&self) -> Vec<super::RuleOff> {
        vec![super::RuleOff {
            rule: Reason::Scanner.name(),
            reason: "the [scanners] User-Agent check is off: nftables cannot search a SIP header; it needs the XDP backend".into(),
        }]
    }

    fn interfaces(&self) -> Vec<InterfaceStatus> {
        self.interfaces
            .iter()
            .map(|name| InterfaceStatus {
                name: name.clone(),
                mode: "nftables".into(),
                pinned: false,
            })
            .collect()
    }

    fn set_allowlist(&mut self, nets: &[IpNet]) -> Result<(), EnforceError> {
        let mut commands = Vec::new();
        for set in ["allow4", "allow6"] {
            commands
                .push(json!({"flush": {"set": {"family": FAMILY, "table": TABLE, "name": set}}}));
            let elems: Vec<Value> = nets
                .iter()
                .filter(|n| set_name(n, "allow") == set)
                .map(element_value)
                .collect();
            if !elems.is_empty() {
                commands.push(json!({"add": {"element": element(set, elems)}}));
            }
        }
        // Flush and refill in one transaction: no moment without the allowlist.
        apply(commands)
    }

    fn ban_many(&mut self, bans: &[(IpNet, Expiry)]) -> Vec<Result<(), EnforceError>> {
        if bans.is_empty() {
            return Vec::new();
        }
        self.ban_bisect(bans)
    }

    fn unban_many(&mut self, nets: &[IpNet]) -> Vec<Result<(), EnforceError>> {
        let old: Vec<Option<Expiry>> = nets.iter().map(|n| self.table.remove(n)).collect();
        match self.sync_bans() {
            Ok(()) => nets.iter().map(|_| Ok(())).collect(),
            Err(e) => {
                for (net, old) in nets.iter().zip(old).rev() {
                    if let Some(old) = old {
                        self.table.insert(*net, old);
                    }
                }
                let message = match &e {
                    EnforceError::Nft(m) => m.clone(),
                    other => other.to_string(),
                };
                nets.iter()
                    .map(|_| Err(EnforceError::Nft(message.clone())))
                    .collect()
            }
        }
    }

    fn set_pbx_trusted(&mut self, nets: &[IpNet]) -> Result<(), EnforceError> {
        let mut commands = fill_set("pbx4", nets, "4");
        commands.extend(fill_set("pbx6", nets, "6"));
        apply(commands)
    }

    /// One transaction (flush and refill both sets): nftables applies it atomically, so a
    /// refresh has no window in which a listed source passes.
    fn set_blocklist(
        &mut self,
        want: &std::collections::BTreeMap<IpNet, u64>,
    ) -> Result<(), EnforceError> {
        let nets: Vec<IpNet> = want.keys().copied().collect();
        let mut commands = fill_set("block4", &nets, "4");
        commands.extend(fill_set("block6", &nets, "6"));
        apply(commands)
    }

    fn set_geo(&mut self, nets: &[IpNet]) -> Result<(), EnforceError> {
        let mut commands = fill_set("geo4", nets, "4");
        commands.extend(fill_set("geo6", nets, "6"));
        apply(commands)
    }

    fn set_perimeter(
        &mut self,
        perimeter: &super::perimeter::Perimeter,
    ) -> Result<(), EnforceError> {
        // Trust sets of rules that no longer exist, including ones left by an earlier run.
        let stale: Vec<String> = list(&["list", "sets", "table", FAMILY, TABLE])?
            .iter()
            .filter_map(|o| o["set"]["name"].as_str())
            .filter(|name| {
                name.strip_prefix("trust")
                    .and_then(|rest| rest.split('_').next())
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| i >= perimeter.protect.len())
            })
            .map(str::to_string)
            .collect();
        let mut commands = Vec::new();
        for (i, protect) in perimeter.protect.iter().enumerate() {
            for (family, kind) in [("4", "ipv4_addr"), ("6", "ipv6_addr")] {
                let name = format!("trust{i}_{family}");
                commands.extend(interval_set(&name, kind));
                commands.extend(fill_set(&name, &protect.trusted, family));
            }
        }
        self.protect = perimeter.protect.clone();
        self.flood = (perimeter.settings.flood_rate > 0)
            .then(|| (perimeter.sip_ports.clone(), perimeter.settings));
        commands.extend(self.chain_rules());
        // They go last, once no rule refers to them.
        for name in stale {
            commands
                .push(json!({"delete": {"set": {"family": FAMILY, "table": TABLE, "name": name}}}));
        }
        apply(commands)?;
        if perimeter.settings.flood_rate > 0 || !perimeter.signatures.is_empty() {
            tracing::info!(
                "nftables enforces [[protect]] and [geo]; [flood] and [scanners] need the XDP backend"
            );
        }
        Ok(())
    }

    fn banned(&self) -> Result<Vec<IpNet>, EnforceError> {
        Ok(self.table.iter().map(|(net, _)| net).collect())
    }

    fn counters(&self) -> Arc<dyn Counters> {
        Arc::new(NftCounters)
    }

    fn shutdown(&mut self, detach: bool) -> Result<(), EnforceError> {
        if detach {
            tracing::info!("removing table inet pbxguard");
            remove_table()?;
        } else {
            tracing::info!("exiting; table inet pbxguard stays and bans stay enforced");
        }
        Ok(())
    }
}

/// The named counters, read with `nft list counters`.
struct NftCounters;

impl Counters for NftCounters {
    fn read(&self) -> Result<Vec<ReasonStats>, EnforceError> {
        let objects = list(&["list", "counters", "table", FAMILY, TABLE])?;
        let counter = |name: &str| {
            objects
                .iter()
                .map(|o| &o["counter"])
                .find(|c| c["name"] == name)
                .map(|c| {
                    (
                        c["packets"].as_u64().unwrap_or(0),
                        c["bytes"].as_u64().unwrap_or(0),
                    )
                })
                .unwrap_or((0, 0))
        };
        Ok(Reason::ALL
            .iter()
            .map(|reason| {
                let (packets, bytes) = COUNTERS
                    .iter()
                    .find(|(r, _)| r == reason)
                    .map(|(_, name)| counter(name))
                    .unwrap_or((0, 0));
                ReasonStats::new(*reason, packets, bytes)
            })
            .collect())
    }
}
