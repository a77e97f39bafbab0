//! The nftables backend: the same bans and allowlist where the XDP program cannot load.
//!
//! pbxguard owns exactly one table, `inet pbxguard`, and touches nothing else. Its chain
//! hooks prerouting at raw priority (before conntrack), on the configured interfaces only:
//! allowlist first, then bans. Ban sets carry per-element timeouts, so bans end on time
//! without the daemon. Every change is one atomic `nft -j -f -` batch.

use std::{
    collections::HashSet,
    time::{Duration, SystemTime},
};

use ipnet::IpNet;
use pbxguard_common::Reason;
use serde_json::{Value, json};

use super::{EnforceError, Enforcer, InterfaceStatus, ReasonStats};
use crate::config::Config;

/// The table pbxguard owns.
pub const TABLE: &str = "pbxguard";
const FAMILY: &str = "inet";
const CHAIN: &str = "prerouting";
/// Elements per batch: bounded so one `nft` run stays well inside netlink limits.
const BATCH: usize = 5000;

/// Named counters, one per verdict nftables can tell apart.
const COUNTERS: [(Reason, &str); 6] = [
    (Reason::Passed, "passed"),
    (Reason::Allowlisted, "allowlisted"),
    (Reason::Banned, "banned"),
    (Reason::GeoBlocked, "geo_blocked"),
    (Reason::ProtectedPort, "protected_port"),
    (Reason::Flood, "sip_flood"),
];

/// Enforces with nftables.
pub struct NftEnforcer {
    interfaces: Vec<String>,
    /// Ban elements we put in the sets (so a replacement deletes before it adds).
    present: HashSet<IpNet>,
    /// Trusted-only port rules in force (their sets are `trust<i>_4` / `trust<i>_6`).
    protect: Vec<super::perimeter::ProtectRule>,
    /// SIP ports and flood settings in force (per-source meters `flood4_*` / `flood6_*`).
    flood: Option<(Vec<pbxguard_common::PortKey>, pbxguard_common::Settings)>,
}

fn nft_error(e: impl std::fmt::Display) -> EnforceError {
    EnforceError::Nft(e.to_string())
}

/// Runs one atomic batch.
fn apply(commands: Vec<Value>) -> Result<(), EnforceError> {
    if commands.is_empty() {
        return Ok(());
    }
    let payload = json!({ "nftables": commands }).to_string();
    tracing::trace!(%payload, "nft batch");
    nftables::helper::apply_ruleset_raw(
        &payload,
        nftables::helper::DEFAULT_NFT,
        nftables::helper::DEFAULT_ARGS,
    )
    .map(drop)
    .map_err(nft_error)
}

/// `nft -j list ...` as JSON objects.
fn list(args: &[&str]) -> Result<Vec<Value>, EnforceError> {
    let raw = nftables::helper::get_current_ruleset_raw(nftables::helper::DEFAULT_NFT, args)
        .map_err(nft_error)?;
    let value: Value = serde_json::from_str(&raw).map_err(nft_error)?;
    Ok(value["nftables"].as_array().cloned().unwrap_or_default())
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

/// Parses an element back from `nft -j list` output.
fn parse_element(value: &Value) -> Option<IpNet> {
    match value {
        Value::String(addr) => addr.parse::<std::net::IpAddr>().ok().map(IpNet::from),
        Value::Object(map) => {
            if let Some(prefix) = map.get("prefix") {
                let addr: std::net::IpAddr = prefix["addr"].as_str()?.parse().ok()?;
                IpNet::new(addr, prefix["len"].as_u64()? as u8).ok()
            } else {
                parse_element(&map.get("elem")?["val"])
            }
        }
        _ => None,
    }
}

fn timeout(expires: Option<SystemTime>) -> Option<u64> {
    expires.map(|t| {
        let left = t
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        // Whole seconds, rounded up: a ban never ends early.
        (left.as_millis().div_ceil(1000) as u64).max(1)
    })
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
        commands.extend(interval_set("geo4", "ipv4_addr"));
        commands.extend(interval_set("geo6", "ipv6_addr"));
        let mut hooked = json!({"family": FAMILY, "table": TABLE, "name": CHAIN});
        hooked["type"] = json!("filter");
        hooked["hook"] = json!("prerouting");
        hooked["prio"] = json!(-300);
        hooked["policy"] = json!("accept");
        commands.push(json!({"add": {"chain": hooked}}));
        apply(commands)?;
        let mut enforcer = NftEnforcer {
            interfaces,
            present: HashSet::new(),
            protect: Vec::new(),
            flood: None,
        };
        apply(enforcer.chain_rules())?;
        enforcer.present = enforcer
            .set_elements("ban4")?
            .into_iter()
            .chain(enforcer.set_elements("ban6")?)
            .collect();
        tracing::info!(table = "inet pbxguard", interfaces = ?enforcer.interfaces, bans = enforcer.present.len(), "nftables rules in place");
        Ok(enforcer)
    }

    /// The chain's rules, replacing the old ones (flush first): allowlist, bans, geo,
    /// trusted-only ports, then the `passed` counter.
    fn chain_rules(&self) -> Vec<Value> {
        let iif = json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": {"set": self.interfaces}}});
        let saddr = |proto: &str, op: &str, set: &str| json!({"match": {"op": op, "left": {"payload": {"protocol": proto, "field": "saddr"}}, "right": format!("@{set}")}});
        let rule = |expr: Vec<Value>| json!({"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": CHAIN, "expr": expr}}});
        let mut commands =
            vec![json!({"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": CHAIN}}})];
        for (proto, kind, counter, verdict) in [
            ("ip", "allow4", "allowlisted", "accept"),
            ("ip6", "allow6", "allowlisted", "accept"),
            ("ip", "ban4", "banned", "drop"),
            ("ip6", "ban6", "banned", "drop"),
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

    fn set_elements(&self, set: &str) -> Result<Vec<IpNet>, EnforceError> {
        let objects = list(&["list", "set", FAMILY, TABLE, set])?;
        Ok(objects
            .iter()
            .filter_map(|o| o["set"]["elem"].as_array())
            .flatten()
            .filter_map(parse_element)
            .collect())
    }

    /// Commands for a group of bans: one delete (for replacements, so the new expiry wins)
    /// and one add per set, however many elements.
    fn ban_commands(&self, bans: &[(IpNet, Option<SystemTime>)]) -> Vec<Value> {
        let mut commands = Vec::new();
        for kind in ["ban4", "ban6"] {
            let ours = || {
                bans.iter()
                    .filter(move |(net, _)| set_name(net, "ban") == kind)
            };
            let replaced: Vec<Value> = ours()
                .filter(|(net, _)| self.present.contains(net))
                .map(|(net, _)| element_value(net))
                .collect();
            if !replaced.is_empty() {
                commands.push(json!({"delete": {"element": element(kind, replaced)}}));
            }
            let added: Vec<Value> = ours()
                .map(|(net, expires)| match timeout(*expires) {
                    Some(secs) => json!({"elem": {"val": element_value(net), "timeout": secs}}),
                    None => element_value(net),
                })
                .collect();
            if !added.is_empty() {
                commands.push(json!({"add": {"element": element(kind, added)}}));
            }
        }
        commands
    }
}

impl Enforcer for NftEnforcer {
    fn backend(&self) -> &'static str {
        "nft"
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

    fn ban(&mut self, net: IpNet, expires: Option<SystemTime>) -> Result<(), EnforceError> {
        apply(self.ban_commands(&[(net, expires)]))?;
        self.present.insert(net);
        Ok(())
    }

    fn unban(&mut self, net: IpNet) -> Result<(), EnforceError> {
        self.unban_many(&[net])
    }

    fn ban_many(&mut self, bans: &[(IpNet, Option<SystemTime>)]) -> Result<(), EnforceError> {
        for chunk in bans.chunks(BATCH) {
            match apply(self.ban_commands(chunk)) {
                Ok(()) => self.present.extend(chunk.iter().map(|(net, _)| *net)),
                Err(batch_error) => {
                    // One bad element (e.g. a ban nested in another: nft interval sets refuse
                    // overlaps) must not cost the others: apply them one by one.
                    tracing::warn!(error = %batch_error, "nft batch refused; applying its bans one by one");
                    for (net, expires) in chunk {
                        if let Err(e) = self.ban(*net, *expires) {
                            tracing::error!(net = %net, error = %e, "nftables refused this ban");
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn unban_many(&mut self, nets: &[IpNet]) -> Result<(), EnforceError> {
        let known: Vec<IpNet> = nets
            .iter()
            .copied()
            .filter(|n| self.present.contains(n))
            .collect();
        for chunk in known.chunks(BATCH) {
            let mut commands = Vec::new();
            for kind in ["ban4", "ban6"] {
                let elems: Vec<Value> = chunk
                    .iter()
                    .filter(|n| set_name(n, "ban") == kind)
                    .map(element_value)
                    .collect();
                if !elems.is_empty() {
                    commands.push(json!({"delete": {"element": element(kind, elems)}}));
                }
            }
            if let Err(e) = apply(commands) {
                // An element that already timed out is gone: delete the rest one by one.
                tracing::debug!(error = %e, "nft unban batch refused; retrying one by one");
                for net in chunk {
                    let _ = apply(vec![
                        json!({"delete": {"element": element(&set_name(net, "ban"), vec![element_value(net)])}}),
                    ]);
                }
            }
            for net in chunk {
                self.present.remove(net);
            }
        }
        Ok(())
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
        Ok(self
            .set_elements("ban4")?
            .into_iter()
            .chain(self.set_elements("ban6")?)
            .collect())
    }

    fn stats(&self) -> Result<Vec<ReasonStats>, EnforceError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::parse_net;

    #[test]
    fn elements_round_trip_through_nft_json() {
        for text in [
            "198.51.100.7",
            "198.51.100.0/24",
            "2001:db8::1",
            "2001:db8::/48",
        ] {
            let net = parse_net(text).unwrap();
            assert_eq!(parse_element(&element_value(&net)), Some(net));
            let timed = json!({"elem": {"val": element_value(&net), "timeout": 60, "expires": 59}});
            assert_eq!(parse_element(&timed), Some(net));
        }
    }

    #[test]
    fn timeouts_round_up_and_permanent_has_none() {
        assert_eq!(timeout(None), None);
        assert_eq!(timeout(Some(SystemTime::UNIX_EPOCH)), Some(1));
        let t = timeout(Some(SystemTime::now() + Duration::from_millis(90_500))).unwrap();
        assert!((90..=91).contains(&t), "{t}");
    }
}
