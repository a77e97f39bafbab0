//! The perimeter rules' maps on the user side: trusted-only ports, SIP ports, the flood
//! limit, scanner signatures and geo blocks. Each setter replaces the rule set as a whole,
//! adding new entries before removing stale ones, so a change never opens a gap.

use std::collections::HashSet;

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapData, lpm_trie::Key},
};
use ipnet::IpNet;
use pbxguard_common::{
    FLAG_PORT_RULES, MAX_SIGNATURES, PortKey, ScannerPrefix, Settings, Signature, maps,
};

use super::{EnforceError, program::take};
use crate::config::Config;

/// One `[[protect]]` rule: these ports only from these networks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtectRule {
    /// Destination ports (with protocol).
    pub ports: Vec<PortKey>,
    /// Sources allowed to reach them.
    pub trusted: Vec<IpNet>,
}

/// Everything the perimeter rules need, as the daemon computes it from the config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Perimeter {
    /// Trusted-only ports.
    pub protect: Vec<ProtectRule>,
    /// Ports that carry SIP (flood limit and scanner check).
    pub sip_ports: Vec<PortKey>,
    /// Flood limit settings (the signature count is filled in from `signatures`).
    pub settings: Settings,
    /// Scanner User-Agent prefixes.
    pub signatures: Vec<String>,
}

impl Perimeter {
    /// Whether any rule judges packets by destination port: then packets whose ports
    /// cannot be found are dropped (`unclassified`) rather than passed unjudged.
    pub fn port_rules(&self) -> bool {
        self.protect.iter().any(|rule| !rule.ports.is_empty())
            || (!self.sip_ports.is_empty()
                && (self.settings.flood_rate > 0 || !self.signatures.is_empty()))
    }

    /// The rules `config` asks for.
    pub fn from_config(config: &Config) -> Perimeter {
        let key = |p: &crate::config::PortSpec| PortKey {
            port: p.port,
            proto: p.proto,
            pad: 0,
        };
        Perimeter {
            protect: config
                .protect
                .iter()
                .map(|rule| ProtectRule {
                    ports: rule.ports.iter().map(key).collect(),
                    trusted: rule.trusted.clone(),
                })
                .collect(),
            sip_ports: config.sip.ports.iter().map(key).collect(),
            settings: Settings {
                flood_rate: config.flood.packets_per_second,
                flood_burst: config.flood.burst,
                flood_event_every: config.flood.overruns_per_failure.max(1),
                signatures: 0,
            },
            signatures: config.scanners.user_agents.clone(),
        }
    }
}

/// The maps behind the perimeter rules.
pub struct PerimeterMaps {
    protected: HashMap<MapData, PortKey, u32>,
    trusted_v4: LpmTrie<MapData, [u8; 8], u32>,
    trusted_v6: LpmTrie<MapData, [u8; 20], u32>,
    sip_ports: HashMap<MapData, PortKey, u32>,
    settings: Array<MapData, Settings>,
    scanners: Array<MapData, Signature>,
    scanner_prefixes: HashMap<MapData, ScannerPrefix, u32>,
    flags: Array<MapData, u32>,
}

/// Which signatures (bit per index) may match a User-Agent, by its first two folded bytes.
pub fn scanner_prefixes(signatures: &[String]) -> std::collections::BTreeMap<ScannerPrefix, u32> {
    let mut prefixes = std::collections::BTreeMap::new();
    for (i, text) in signatures.iter().enumerate() {
        let bytes = text.as_bytes();
        let Some(&first) = bytes.first() else {
            continue;
        };
        let seconds: Vec<u8> = match bytes.get(1) {
            Some(&second) => vec![second | 0x20],
            // A one-byte signature: any second byte.
            None => (0..=u8::MAX).map(|b| b | 0x20).collect(),
        };
        for second in seconds {
            *prefixes.entry([first | 0x20, second]).or_insert(0) |= 1 << i;
        }
    }
    prefixes
}

/// LPM key of a trusted network for rule `rule`: rule id (big-endian) before the address.
enum TrustKey {
    V4(Key<[u8; 8]>),
    V6(Key<[u8; 20]>),
}

fn trust_key(rule: u32, net: &IpNet) -> TrustKey {
    let id = rule.to_be_bytes();
    match net {
        IpNet::V4(n) => {
            let mut data = [0u8; 8];
            data[..4].copy_from_slice(&id);
            data[4..].copy_from_slice(&n.network().octets());
            TrustKey::V4(Key::new(32 + u32::from(n.prefix_len()), data))
        }
        IpNet::V6(n) => {
            let mut data = [0u8; 20];
            data[..4].copy_from_slice(&id);
            data[4..].copy_from_slice(&n.network().octets());
            TrustKey::V6(Key::new(32 + u32::from(n.prefix_len()), data))
        }
    }
}

/// Makes the hash map hold exactly `want`: every entry written, then every other key removed
/// (a packet meanwhile sees the old rules or the new ones, key by key).
fn replace_all<K, V>(
    map: &mut HashMap<MapData, K, V>,
    want: impl IntoIterator<Item = (K, V)>,
) -> Result<(), EnforceError>
where
    K: aya::Pod + Eq + std::hash::Hash,
    V: aya::Pod,
{
    let mut keys = HashSet::new();
    for (key, value) in want {
        map.insert(key, value, 0)?;
        keys.insert(key);
    }
    let stale: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !keys.contains(k))
        .collect();
    for key in stale {
        missing_ok(map.remove(&key))?;
    }
    Ok(())
}

fn missing_ok(result: Result<(), aya::maps::MapError>) -> Result<(), EnforceError> {
    match result {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(s))
            if s.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

impl PerimeterMaps {
    /// Takes the maps out of the loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<PerimeterMaps, EnforceError> {
        Ok(PerimeterMaps {
            protected: take(ebpf, maps::PROTECTED)?,
            trusted_v4: take(ebpf, maps::TRUSTED_V4)?,
            trusted_v6: take(ebpf, maps::TRUSTED_V6)?,
            sip_ports: take(ebpf, maps::SIP_PORTS)?,
            settings: take(ebpf, maps::SETTINGS)?,
            scanners: take(ebpf, maps::SCANNERS)?,
            scanner_prefixes: take(ebpf, maps::SCANNER_PREFIXES)?,
            flags: take(ebpf, maps::FLAGS)?,
        })
    }

    /// Makes the maps hold exactly `perimeter`.
    pub fn apply(&mut self, perimeter: &Perimeter) -> Result<(), EnforceError> {
        // The unclassified drop goes on before the first port rule and off after the last.
        let flags = if perimeter.port_rules() {
            FLAG_PORT_RULES
        } else {
            0
        };
        if flags != 0 {
            self.flags.set(0, flags, 0)?;
        }
        // Trusted networks first, then the ports that need them: a newly protected port
        // never drops its trusted sources for lack of an entry.
        let mut want_v4 = HashSet::new();
        let mut want_v6 = HashSet::new();
        for (rule, protect) in perimeter.protect.iter().enumerate() {
            for net in &protect.trusted {
                match trust_key(rule as u32, net) {
                    TrustKey::V4(key) => {
                        self.trusted_v4.insert(&key, 1, 0)?;
                        want_v4.insert((key.prefix_len(), key.data()));
                    }
                    TrustKey::V6(key) => {
                        self.trusted_v6.insert(&key, 1, 0)?;
                        want_v6.insert((key.prefix_len(), key.data()));
                    }
                }
            }
        }
        let mut ports = std::collections::HashMap::new();
        for (rule, protect) in perimeter.protect.iter().enumerate() {
            for port in &protect.ports {
                ports.entry(*port).or_insert(rule as u32);
            }
        }
        replace_all(&mut self.protected, ports)?;
        let stale: Vec<Key<[u8; 8]>> = self
            .trusted_v4
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want_v4.contains(&(k.prefix_len(), k.data())))
            .collect();
        for key in stale {
            missing_ok(self.trusted_v4.remove(&key))?;
        }
        let stale: Vec<Key<[u8; 20]>> = self
            .trusted_v6
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want_v6.contains(&(k.prefix_len(), k.data())))
            .collect();
        for key in stale {
            missing_ok(self.trusted_v6.remove(&key))?;
        }
        replace_all(
            &mut self.sip_ports,
            perimeter.sip_ports.iter().map(|port| (*port, 1)),
        )?;
        // Signatures, their prefixes, then the count that makes them live.
        let count = perimeter.signatures.len().min(MAX_SIGNATURES as usize);
        let signatures = &perimeter.signatures[..count];
        for (i, text) in signatures.iter().enumerate() {
            self.scanners
                .set(i as u32, Signature::new(text.as_bytes()), 0)?;
        }
        replace_all(&mut self.scanner_prefixes, scanner_prefixes(signatures))?;
        let settings = Settings {
            signatures: count as u32,
            ..perimeter.settings
        };
        self.settings.set(0, settings, 0)?;
        if flags == 0 {
            self.flags.set(0, flags, 0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_name_the_signatures_a_user_agent_may_start_like() {
        let signatures: Vec<String> = ["friendly-scanner", "SIPScan", "sipvicious", "x"]
            .map(String::from)
            .to_vec();
        let prefixes = scanner_prefixes(&signatures);
        assert_eq!(prefixes[b"fr"], 0b0001);
        // Folded as the program folds the User-Agent: `SIPScan` and `sipvicious` share one.
        assert_eq!(prefixes[b"si"], 0b0110);
        // A one-byte signature under every folded second byte.
        assert_eq!(prefixes[b"xy"], 0b1000);
        assert_eq!(prefixes[b"x "], 0b1000);
        assert_eq!(prefixes.keys().filter(|k| k[0] == b'x').count(), 128);
        assert!(
            !prefixes.contains_key(b"ye"),
            "Yealink starts like no signature"
        );
    }
}
