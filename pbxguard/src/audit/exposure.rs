//! Exposure and pbxguard itself: which PBX, SSH and web ports listen on public addresses
//! with nothing in front of them, whether pbxguard runs, enforces and follows the PBX's
//! logs, and whether it is ready for toll fraud (off-hours profile, notifications).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Finding, Root, Severity, sip::Sip, ssh};
use crate::config::{Config, Mode};

/// pbxguard's own config on the audited host, if any.
pub struct PbxguardConfig {
    config: Option<Config>,
}

const CONFIG: &str = "/etc/pbxguard/pbxguard.toml";

impl PbxguardConfig {
    /// Reads `/etc/pbxguard/pbxguard.toml`; an invalid one is a finding (with its line).
    pub fn load(root: &Root, findings: &mut Vec<Finding>) -> PbxguardConfig {
        let config = match root.read(CONFIG) {
            Ok(Some(text)) => match Config::parse(&text, std::path::Path::new(CONFIG)) {
                Ok(config) => Some(config),
                Err(e) => {
                    findings.push(
                        Finding::new(
                            "pbxguard.invalid_config",
                            Severity::Critical,
                            format!(
                                "pbxguard's config is invalid, so pbxguard cannot start: {}",
                                e.message
                            ),
                            format!(
                                "fix it (`pbxguard check-config` names the key{})",
                                e.key.map(|k| format!(": {k}")).unwrap_or_default()
                            ),
                        )
                        .at(CONFIG, e.line),
                    );
                    None
                }
            },
            Ok(None) => None,
            Err(f) => {
                findings.push(f);
                None
            }
        };
        PbxguardConfig { config }
    }

    /// The parsed config, when the host has a valid one.
    pub fn config(&self) -> Option<&Config> {
        self.config.as_ref()
    }

    fn covers(&self, port: u16, proto: u8) -> bool {
        self.config.as_ref().is_some_and(|c| {
            c.protect
                .iter()
                .any(|p| p.ports.iter().any(|s| s.port == port && s.proto == proto))
                || (c.geo.active()
                    && (!c.geo.allow_countries.is_empty() || !c.geo.deny_countries.is_empty()))
        })
    }
}

/// A listening socket from /proc/net.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Bound address.
    pub addr: IpAddr,
    /// Port.
    pub port: u16,
    /// 6 or 17.
    pub proto: u8,
}

fn parse_addr(hex: &str) -> Option<IpAddr> {
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(hex, 16).ok()?.swap_bytes(),
        ))),
        32 => {
            let mut bytes = [0u8; 16];
            for word in 0..4 {
                let w = u32::from_str_radix(&hex[word * 8..word * 8 + 8], 16)
                    .ok()?
                    .swap_bytes();
                bytes[word * 4..word * 4 + 4].copy_from_slice(&w.to_be_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Listening TCP and bound UDP sockets from `/proc/net/{tcp,tcp6,udp,udp6}` under the root.
pub fn listeners(root: &Root) -> Vec<Listener> {
    let mut out = Vec::new();
    for (file, proto, state) in [
        ("tcp", 6, "0A"),
        ("tcp6", 6, "0A"),
        ("udp", 17, "07"),
        ("udp6", 17, "07"),
    ] {
        let Ok(Some(text)) = root.read(&format!("/proc/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 4 || fields[3] != state {
                continue;
            }
            let Some((addr, port)) = fields[1].split_once(':') else {
                continue;
            };
            if let (Some(addr), Ok(port)) = (parse_addr(addr), u16::from_str_radix(port, 16)) {
                out.push(Listener { addr, port, proto });
            }
        }
    }
    out
}

fn public(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            a.is_unspecified() || !(a.is_loopback() || a.is_private() || a.is_link_local())
        }
        IpAddr::V6(a) => {
            a.is_unspecified()
                || !(a.is_loopback() || a.is_unique_local() || a.is_unicast_link_local())
        }
    }
}

/// The exposure findings.
pub fn check(root: &Root, pbxguard: &PbxguardConfig, sip: &Sip) -> Vec<Finding> {
    let mut out = Vec::new();
    let freeswitch = root.path("/etc/freeswitch").exists();
    match &pbxguard.config {
        None => out.push(
            Finding::new(
                "pbxguard.not_configured",
                Severity::Critical,
                "pbxguard is not configured on this host: nothing bans attackers",
                "install pbxguard, set [enforce] interfaces and [[source]] in /etc/pbxguard/pbxguard.toml and start it",
            )
            .at(CONFIG, None),
        ),
        Some(config) => {
            let socket = config.daemon.socket.display().to_string();
            let running = if root.is_live() {
                std::os::unix::net::UnixStream::connect(&config.daemon.socket).is_ok()
            } else {
                root.path(&socket).exists()
            };
            if !running {
                out.push(Finding::new(
                    "pbxguard.not_running",
                    Severity::High,
                    format!("pbxguard is not running (no daemon on {socket})"),
                    "systemctl enable --now pbxguard",
                ));
            }
            if config.policy.mode == Mode::Observe {
                out.push(
                    Finding::new(
                        "pbxguard.observe_mode",
                        Severity::High,
                        "pbxguard is in observe mode: it logs attacks but bans nobody",
                        "set [policy] mode = \"enforce\" once the logs show no false positives",
                    )
                    .at(CONFIG, None),
                );
            }
            let pbx_filters = ["asterisk", "freepbx", "freeswitch", "kamailio", "opensips"];
            let follows = config.source.iter().any(|s| s.filters.iter().any(|f| pbx_filters.contains(&f.as_str())));
            if (sip.present() || freeswitch) && !follows {
                out.push(
                    Finding::new(
                        "pbxguard.no_log_filter",
                        Severity::High,
                        "pbxguard follows none of the PBX's logs: brute force and scans go unbanned",
                        "add a [[source]], e.g. path = \"/var/log/asterisk/full\", filters = [\"asterisk\"]",
                    )
                    .at(CONFIG, None),
                );
            }
        }
    }
    // Ports listening on public addresses with nothing in front of them.
    let ssh_port = ssh::port(root);
    let interesting = |l: &Listener| -> Option<(&'static str, Severity)> {
        match (l.port, l.proto) {
            (5060, _) | (5061, 6) => Some(("SIP", Severity::High)),
            (4569, 17) => Some(("IAX2", Severity::High)),
            (p, 6) if p == ssh_port => Some(("SSH", Severity::High)),
            (80, 6) | (443, 6) => Some(("web GUI", Severity::Medium)),
            _ => None,
        }
    };
    let mut seen = Vec::new();
    for l in listeners(root) {
        let Some((what, severity)) = interesting(&l) else {
            continue;
        };
        if !public(&l.addr) || pbxguard.covers(l.port, l.proto) || seen.contains(&(l.port, l.proto))
        {
            continue;
        }
        seen.push((l.port, l.proto));
        out.push(
            Finding::new(
                "exposure.open_port",
                severity,
                format!("{what} port {}/{} is open to the internet on {} with no protect or geo rule", l.port, if l.proto == 6 { "tcp" } else { "udp" }, l.addr),
                format!(
                    "add [[protect]] ports = [\"{}/{}\"] trusted = [your trunk and office networks], or a [geo] rule, to pbxguard's config",
                    l.port,
                    if l.proto == 6 { "tcp" } else { "udp" }
                ),
            )
            .at(&format!("/proc/net/{}", if l.proto == 6 { "tcp" } else { "udp" }), None),
        );
    }
    // Default SIP ports, unprotected.
    for (port, file, line) in sip.ports() {
        if (port == 5060 || port == 5061) && !pbxguard.covers(port, 17) && !pbxguard.covers(port, 6)
        {
            out.push(
                Finding::new(
                    "transport.default_port",
                    Severity::Low,
                    format!("SIP uses the default port {port}, the one every scanner tries"),
                    format!("move SIP to another port, or protect {port} with a [[protect]] rule for your trunks and phones"),
                )
                .at(&file, Some(line)),
            );
        }
    }
    out
}

/// Toll-fraud readiness: call records watched (or at least stricter nights and weekends),
/// and someone told about bans.
pub fn fraud_readiness(pbxguard: &PbxguardConfig, root: &super::Root) -> Vec<Finding> {
    let Some(config) = &pbxguard.config else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if config.fraud.is_none() || config.cdr.is_empty() {
        out.push(
            Finding::new(
                "fraud.no_cdr",
                Severity::Medium,
                "no call records are watched: a guessed extension password becomes toll fraud that shows only on the bill",
                "add [fraud] home_country = \"XX\" and [[cdr]] path = \"/var/log/asterisk/cdr-csv/Master.csv\" format = \"asterisk-csv\" (README, \"Toll fraud\")",
            )
            .at(CONFIG, None),
        );
    }
    for cdr in &config.cdr {
        if !root.path(&cdr.path.to_string_lossy()).is_file() {
            out.push(
                Finding::new(
                    "fraud.cdr_missing",
                    Severity::Medium,
                    format!(
                        "the call records {} do not exist: the fraud rules see no call",
                        cdr.path.display()
                    ),
                    "enable the PBX's CDR module (Asterisk cdr_csv: `module load cdr_csv.so`; FreeSWITCH mod_cdr_csv) or fix [[cdr]] path",
                )
                .at(CONFIG, None),
            );
        }
    }
    // The fraud rules watch the calls themselves; without them, stricter nights are the
    // least one can do.
    if config.offhours.is_none() && config.fraud.is_none() {
        out.push(
            Finding::new(
                "fraud.no_offhours",
                Severity::Medium,
                "no off-hours profile: toll fraud peaks at night and at weekends, when nobody watches",
                "add [offhours] schedule = [\"Mon-Fri 19:00-07:00\", \"Sat-Sun\"] with stricter maxretry and bantime",
            )
            .at(CONFIG, None),
        );
    }
    if config.notify.webhook.is_none() && config.notify.command.is_none() {
        out.push(
            Finding::new(
                "fraud.no_notification",
                Severity::Medium,
                "nobody is told about bans: an attack in progress goes unnoticed",
                "set [notify] webhook = \"https://...\" (or command = ...) in pbxguard's config",
            )
            .at(CONFIG, None),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses() {
        assert_eq!(parse_addr("00000000"), Some("0.0.0.0".parse().unwrap()));
        assert_eq!(parse_addr("0100007F"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            parse_addr("00000000000000000000000001000000"),
            Some("::1".parse().unwrap())
        );
        assert!(public(&"0.0.0.0".parse().unwrap()) && public(&"203.0.113.5".parse().unwrap()));
        assert!(!public(&"192.168.1.10".parse().unwrap()) && !public(&"::1".parse().unwrap()));
    }
}
