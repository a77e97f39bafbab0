//! Whether the XDP maps can hold what the config asks for.
//!
//! The maps have a fixed size compiled into the program; a config that overfills one fails
//! only when the daemon fills it, with the kernel's bare E2BIG ("Argument list too long") and
//! no key. Counting here, the way the daemon fills the maps (distinct keys), lets
//! `check-config`, start and reload reject it with the key, its line and the limit instead.

use std::collections::{HashMap, HashSet};

use ipnet::IpNet;
use pbxguard_common::{
    DEFAULT_MAX_ALLOW, MAX_PROTECT_RULES, MAX_PROTECTED_PORTS, MAX_SIP_PORTS, MAX_TRUSTED,
};

use super::{Config, PortSpec};

/// Distinct map keys per address family: each family has its own map of the full size.
#[derive(Default)]
struct PerFamily {
    v4: HashSet<(usize, IpNet)>,
    v6: HashSet<(usize, IpNet)>,
}

impl PerFamily {
    /// Adds `net` keyed by `owner` (the rule index, or 0 where there are no rules); returns
    /// the family's name once its distinct count exceeds `limit`.
    fn add(&mut self, owner: usize, net: IpNet, limit: u32) -> Option<&'static str> {
        let (family, set) = match net {
            IpNet::V4(_) => ("IPv4", &mut self.v4),
            IpNet::V6(_) => ("IPv6", &mut self.v6),
        };
        set.insert((owner, net));
        (set.len() > limit as usize).then_some(family)
    }
}

impl Config {
    /// Rejects a config that would overfill one of the XDP program's maps.
    pub(super) fn validate_capacity(&self) -> Result<(), (String, String)> {
        let sip_ports: HashSet<_> = self.sip.ports.iter().collect();
        if sip_ports.len() > MAX_SIP_PORTS as usize {
            return Err((
                "sip.ports".into(),
                format!(
                    "{} distinct ports, but the XDP program holds at most {MAX_SIP_PORTS} SIP \
                     ports: list only the ports your PBX listens on for SIP (usually 5060/udp, \
                     5060/tcp and 5061/tcp)",
                    sip_ports.len()
                ),
            ));
        }
        if self.protect.len() > MAX_PROTECT_RULES as usize {
            return Err((
                "protect".into(),
                format!(
                    "{} [[protect]] rules, but the XDP program holds at most \
                     {MAX_PROTECT_RULES}: merge rules that trust the same networks into one",
                    self.protect.len()
                ),
            ));
        }
        // A port in two rules would mean "the first rule's networks" to XDP (one map entry
        // per port) and "networks trusted by every rule" to nftables, so it is refused.
        let mut ports: HashMap<&PortSpec, usize> = HashMap::new();
        for (i, rule) in self.protect.iter().enumerate() {
            for port in &rule.ports {
                match ports.get(port) {
                    Some(&first) if first != i => {
                        return Err((
                            format!("protect[{i}].ports"),
                            format!(
                                "`{port}` is already protected by [[protect]] rule {} \
                                 (protect[{first}]): a port belongs to one rule; list every \
                                 network trusted on it in that rule's `trusted`",
                                first + 1
                            ),
                        ));
                    }
                    _ => {
                        ports.insert(port, i);
                    }
                }
            }
            if ports.len() > MAX_PROTECTED_PORTS as usize {
                return Err((
                    format!("protect[{i}].ports"),
                    format!(
                        "more than {MAX_PROTECTED_PORTS} distinct protected ports over all \
                         [[protect]] rules up to this one, the most the XDP program holds: \
                         protect fewer ports"
                    ),
                ));
            }
        }
        // The daemon keys trusted networks by rule, so one network in two rules takes two
        // entries.
        let mut trusted = PerFamily::default();
        for (i, rule) in self.protect.iter().enumerate() {
            for net in &rule.trusted {
                if let Some(family) = trusted.add(i, *net, MAX_TRUSTED) {
                    return Err((
                        format!("protect[{i}].trusted"),
                        format!(
                            "more than {MAX_TRUSTED} trusted {family} networks over all \
                             [[protect]] rules up to this one (each rule counts its own), the \
                             most the XDP program holds per address family: aggregate them \
                             into wider prefixes or merge rules"
                        ),
                    ));
                }
            }
        }
        let mut allow = PerFamily::default();
        for net in &self.allow.networks {
            if let Some(family) = allow.add(0, *net, DEFAULT_MAX_ALLOW) {
                return Err((
                    "allow.networks".into(),
                    format!(
                        "more than {DEFAULT_MAX_ALLOW} distinct {family} networks, the most the \
                         XDP allowlist holds per address family: aggregate them into wider \
                         prefixes (one /24 instead of 256 addresses)"
                    ),
                ));
            }
        }
        Ok(())
    }
}
