use std::path::{Path, PathBuf};

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/pbxguard/test.toml"))
}

const MINIMAL: &str = "[enforce]\ninterfaces = [\"eth0\"]\n";

#[test]
fn minimal_config_gets_defaults() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.ban.max_entries, 1_000_000);
    assert_eq!(config.enforce.xdp_mode, XdpMode::Auto);
    assert_eq!(config.daemon.bpffs, PathBuf::from("/sys/fs/bpf/pbxguard"));
}

#[test]
fn shipped_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/pbxguard.toml");
    let config = Config::load(&path).unwrap();
    assert!(!config.enforce.interfaces.is_empty());
}

fn assert_error(text: &str, line: usize, key: &str, words: &str) {
    let err = parse(text).unwrap_err();
    let shown = err.to_string();
    assert_eq!(err.line, Some(line), "{shown}");
    assert_eq!(err.key.as_deref(), Some(key), "{shown}");
    assert!(shown.starts_with("/etc/pbxguard/test.toml:"), "{shown}");
    assert!(shown.contains(words), "{shown}");
}

#[test]
fn unknown_key_is_named() {
    assert_error(
        "[enforce]\ninterfaces = [\"eth0\"]\n\n[daemon]\nsockt = \"/run/x\"\n",
        5,
        "daemon.sockt",
        "unknown field `sockt`",
    );
}

#[test]
fn unknown_section_is_named() {
    assert_error(
        &format!("{MINIMAL}[bans]\nx = 1\n"),
        3,
        "bans",
        "unknown field `bans`",
    );
}

#[test]
fn wrong_type_is_named() {
    assert_error(
        &format!("{MINIMAL}[ban]\nmax_entries = \"lots\"\n"),
        4,
        "ban.max_entries",
        "invalid type",
    );
}

#[test]
fn bad_cidr_is_named() {
    assert_error(
        &format!("{MINIMAL}[allow]\nnetworks = [\"10.0.0.0/8\", \"10.1.2.300\"]\n"),
        4,
        "allow.networks",
        "`10.1.2.300` is not an IP address",
    );
}

#[test]
fn bad_duration_is_named() {
    assert_error(
        &format!("{MINIMAL}[ban]\ndefault_duration = \"a while\"\n"),
        4,
        "ban.default_duration",
        "is not a duration",
    );
}

#[test]
fn bad_mode_is_named() {
    assert_error(
        "[enforce]\ninterfaces = [\"eth0\"]\nxdp_mode = \"turbo\"\n",
        3,
        "enforce.xdp_mode",
        "turbo",
    );
}

#[test]
fn out_of_range_capacity_is_named() {
    assert_error(
        &format!("{MINIMAL}[ban]\nmax_entries = 0\n"),
        4,
        "ban.max_entries",
        "1 to",
    );
}

#[test]
fn missing_interfaces_is_explained() {
    let err = parse("[daemon]\nstate_dir = \"/var/lib/pbxguard\"\n").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("enforce.interfaces"));
    assert!(err.to_string().contains("interfaces = [\"eth0\"]"), "{err}");
}

#[test]
fn relative_path_is_named() {
    assert_error(
        &format!("{MINIMAL}[daemon]\n\nstate_dir = \"state\"\n"),
        5,
        "daemon.state_dir",
        "absolute path",
    );
}

#[test]
fn detection_config_parses() {
    let config = parse(&format!(
            "{MINIMAL}[policy]\nmaxretry = 3\nfindtime = \"5m\"\nbantime = \"1h\"\nmode = \"observe\"\n\
             [policy.filter.sshd]\nmaxretry = 6\n\
             [offhours]\nschedule = [\"Mon-Fri 18:00-08:00\", \"Sat-Sun\"]\nmaxretry = 1\n\
             [[source]]\npath = \"/var/log/asterisk/full\"\nfilters = [\"asterisk\", \"mine\"]\nmaxretry = 2\n\
             [[source]]\njournal_unit = \"ssh.service\"\nfilters = [\"sshd\"]\n\
             [[filter]]\nname = \"mine\"\n[[filter.rule]]\nname = \"bad\"\nregex = \"auth failed from <HOST>\"\n"
        ))
        .unwrap();
    assert_eq!(config.policy.maxretry, 3);
    assert_eq!(config.policy.mode, Mode::Observe);
    assert_eq!(config.policy.filter["sshd"].maxretry, Some(6));
    assert_eq!(config.offhours.unwrap().maxretry, Some(1));
    assert_eq!(config.source[0].thresholds().maxretry, Some(2));
    assert_eq!(config.filter[0].rules[0].name, "bad");
}

#[test]
fn unknown_filter_in_a_source_is_named() {
    assert_error(
        &format!(
            "{MINIMAL}\n[[source]]\npath = \"/var/log/a\"\nfilters = [\"asterisk\"]\n\n[[source]]\npath = \"/var/log/b\"\nfilters = [\"astrisk\"]\n"
        ),
        10,
        "source[1].filters",
        "no filter called `astrisk`",
    );
}

#[test]
fn bad_custom_rule_is_named() {
    assert_error(
        &format!(
            "{MINIMAL}[[filter]]\nname = \"mine\"\n[[filter.rule]]\nname = \"x\"\nregex = \"no host here\"\n"
        ),
        7,
        "filter[0].rule[0].regex",
        "exactly one <HOST>",
    );
}

#[test]
fn bad_schedule_is_named() {
    assert_error(
        &format!("{MINIMAL}[offhours]\nschedule = [\"weekends\"]\n"),
        4,
        "offhours.schedule",
        "Mon-Fri 18:00-08:00",
    );
}

#[test]
fn unknown_key_in_a_source_is_named() {
    assert_error(
        &format!("{MINIMAL}[[source]]\npath = \"/var/log/a\"\nfilter = [\"asterisk\"]\n"),
        5,
        "source[0].filter",
        "unknown field `filter`",
    );
}

#[test]
fn syntax_error_has_a_line() {
    let err = parse("[enforce]\ninterfaces = [\"eth0\"\n").unwrap_err();
    assert!(err.line.is_some(), "{err}");
}

/// `[enforce]` plus `section` with `key` set to a list of `items`, one per line.
fn with_list(section: &str, key: &str, items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.map(|i| format!("  \"{i}\",\n")).collect();
    format!("{MINIMAL}{section}\n{key} = [\n{}]\n", items.concat())
}

/// `n` distinct UDP ports from 10000 on.
fn ports(n: usize) -> impl Iterator<Item = String> {
    (0..n).map(|i| format!("{}/udp", 10_000 + i))
}

/// `n` distinct IPv4 host addresses in 10.0.0.0/8.
fn hosts_v4(n: usize) -> impl Iterator<Item = String> {
    (0..n as u32).map(|i| std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string())
}

#[test]
fn sip_ports_at_capacity_are_accepted() {
    let max = pbxguard_common::MAX_SIP_PORTS as usize;
    let config = parse(&with_list("[sip]", "ports", ports(max))).unwrap();
    assert_eq!(config.sip.ports.len(), max);
}

#[test]
fn too_many_sip_ports_are_named() {
    // MINIMAL is two lines, then `[sip]`, then `ports = [`.
    assert_error(
        &with_list("[sip]", "ports", ports(101)),
        4,
        "sip.ports",
        "101 distinct ports, but the XDP program holds at most 64",
    );
}

#[test]
fn repeated_sip_ports_count_once() {
    let max = pbxguard_common::MAX_SIP_PORTS as usize;
    parse(&with_list("[sip]", "ports", ports(max).chain(ports(max)))).unwrap();
}

fn protect_rule(ports: impl Iterator<Item = String>, trusted: &[&str]) -> String {
    let ports: Vec<String> = ports.map(|p| format!("\"{p}\"")).collect();
    let trusted: Vec<String> = trusted.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "[[protect]]\nports = [{}]\ntrusted = [{}]\n",
        ports.join(", "),
        trusted.join(", ")
    )
}

#[test]
fn protect_rules_at_capacity_are_accepted() {
    let max = pbxguard_common::MAX_PROTECT_RULES as usize;
    let rules: String = (0..max)
        .map(|i| protect_rule(ports(1).map(|_| format!("{}/tcp", 1 + i)), &["192.0.2.1"]))
        .collect();
    let config = parse(&format!("{MINIMAL}{rules}")).unwrap();
    assert_eq!(config.protect.len(), max);
}

#[test]
fn too_many_protect_rules_are_named() {
    let max = pbxguard_common::MAX_PROTECT_RULES as usize;
    let rules: String = (0..=max)
        .map(|i| protect_rule(ports(1).map(|_| format!("{}/tcp", 1 + i)), &["192.0.2.1"]))
        .collect();
    assert_error(
        &format!("{MINIMAL}{rules}"),
        3,
        "protect",
        "257 [[protect]] rules, but the XDP program holds at most 256",
    );
}

#[test]
fn protected_ports_at_capacity_are_accepted() {
    let max = pbxguard_common::MAX_PROTECTED_PORTS as usize;
    // Repeating a port within its own rule takes no further entry.
    let text = format!(
        "{MINIMAL}{}{}",
        protect_rule(ports(max - 1).chain(ports(1)), &["192.0.2.1"]),
        protect_rule(ports(1).map(|_| "22/tcp".to_string()), &["192.0.2.2"])
    );
    parse(&text).unwrap();
}

#[test]
fn a_port_in_two_protect_rules_is_named() {
    // XDP enforced the first rule naming a port, nftables every rule: refused instead.
    let text = format!(
        "{MINIMAL}{}{}",
        protect_rule(
            ["5060/udp", "22/tcp"].map(String::from).into_iter(),
            &["192.0.2.1"]
        ),
        protect_rule(
            ["5061/tcp", "5060/UDP"].map(String::from).into_iter(),
            &["192.0.2.2"]
        )
    );
    assert_error(
        &text,
        7,
        "protect[1].ports",
        "`5060/udp` is already protected by [[protect]] rule 1 (protect[0])",
    );
}

#[test]
fn too_many_protected_ports_are_named() {
    let max = pbxguard_common::MAX_PROTECTED_PORTS as usize;
    let text = format!(
        "{MINIMAL}{}{}",
        protect_rule(ports(max), &["192.0.2.1"]),
        protect_rule(ports(1).map(|_| "22/tcp".to_string()), &["192.0.2.2"])
    );
    assert_error(
        &text,
        7,
        "protect[1].ports",
        "more than 2048 distinct protected ports",
    );
}

#[test]
fn too_many_trusted_networks_are_named() {
    let max = pbxguard_common::MAX_TRUSTED as usize;
    let many: Vec<String> = hosts_v4(max).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    // The second rule trusts an address the first one already does: a separate entry, one
    // too many. IPv6 has its own map and is not counted against IPv4.
    let text = format!(
        "{MINIMAL}{}{}{}",
        protect_rule(ports(1), &many),
        protect_rule(ports(1).map(|_| "22/tcp".to_string()), &["2001:db8::1"]),
        protect_rule(
            ports(1).map(|_| "23/tcp".to_string()),
            &["2001:db8::2", "10.0.0.0"]
        ),
    );
    assert_error(
        &text,
        11,
        "protect[2].trusted",
        "more than 65536 trusted IPv4 networks",
    );
}

#[test]
fn allowlist_at_capacity_is_accepted() {
    let max = pbxguard_common::DEFAULT_MAX_ALLOW as usize;
    let v6 = ["2001:db8::/32".to_string()];
    let text = with_list("[allow]", "networks", hosts_v4(max).chain(v6));
    assert_eq!(parse(&text).unwrap().allow.networks.len(), max + 1);
}

#[test]
fn too_big_allowlist_is_named() {
    let max = pbxguard_common::DEFAULT_MAX_ALLOW as usize;
    assert_error(
        &with_list("[allow]", "networks", hosts_v4(max + 1)),
        4,
        "allow.networks",
        "more than 65536 distinct IPv4 networks",
    );
}

#[test]
fn too_many_scanner_signatures_are_named() {
    let names = (0..=pbxguard_common::MAX_SIGNATURES).map(|i| format!("scanner-{i}"));
    assert_error(
        &with_list("[scanners]", "user_agents", names),
        4,
        "scanners.user_agents",
        "at most 32 entries",
    );
}

#[test]
fn unknown_notify_event_is_named() {
    assert_error(
        &format!(
            "{MINIMAL}[notify]\nwebhook = \"http://127.0.0.1:9/\"\nevents = [\"ban\", \"bans\"]\n"
        ),
        5,
        "notify.events",
        "`bans` is not an event: use any of \"ban\", \"unban\", \"fallback\"",
    );
}

#[test]
fn too_many_webhook_retries_are_named() {
    assert_error(
        &format!("{MINIMAL}[notify]\nretries = 70\n"),
        4,
        "notify.retries",
        "70 is too many: use 0 to 10",
    );
}

/// Every duration key, each with zero, with more than 100 years, and with a number too big
/// for any clock: refused with file, line and key, never accepted (10000y once passed
/// check-config and then panicked the detector).
#[test]
fn zero_and_overlong_durations_are_named_for_every_key() {
    let keys = [
        ("[policy]", "findtime", "policy.findtime", false),
        ("[policy]", "bantime", "policy.bantime", true),
        ("[policy]", "bantime_max", "policy.bantime_max", true),
        ("[policy]", "forget_after", "policy.forget_after", false),
        (
            "[policy.filter.sshd]",
            "findtime",
            "policy.filter.sshd.findtime",
            false,
        ),
        (
            "[policy.filter.sshd]",
            "bantime",
            "policy.filter.sshd.bantime",
            true,
        ),
        ("[ban]", "default_duration", "ban.default_duration", true),
        ("[notify]", "timeout", "notify.timeout", false),
        (
            "[offhours]\nschedule = [\"Sat-Sun\"]",
            "findtime",
            "offhours.findtime",
            false,
        ),
        (
            "[offhours]\nschedule = [\"Sat-Sun\"]",
            "bantime",
            "offhours.bantime",
            true,
        ),
        (
            "[[source]]\npath = \"/var/log/auth.log\"\nfilters = [\"sshd\"]",
            "findtime",
            "source[0].findtime",
            false,
        ),
        (
            "[[source]]\npath = \"/var/log/auth.log\"\nfilters = [\"sshd\"]",
            "bantime",
            "source[0].bantime",
            true,
        ),
    ];
    for (section, key, path, ban) in keys {
        let line = 3 + section.lines().count();
        let zero_hint = if ban {
            "write `permanent`"
        } else {
            "give a length"
        };
        for (value, words) in [
            ("0", zero_hint),
            ("0s", zero_hint),
            ("10000y", "longer than 100 years"),
            ("101y", "longer than 100 years"),
            ("580000000000y", "longer than 100 years"),
            ("99999999999999999999999s", "longer than 100 years"),
        ] {
            assert_error(
                &format!("{MINIMAL}{section}\n{key} = \"{value}\"\n"),
                line,
                path,
                words,
            );
        }
        // The bound itself is accepted.
        parse(&format!("{MINIMAL}{section}\n{key} = \"100y\"\n")).unwrap();
    }
}

#[test]
fn cluster_defaults_share_detected_bans_and_accept_everyone() {
    let config = parse(&format!(
        "{MINIMAL}[cluster]\nservers = [\"nats://10.0.0.5:4222\"]\n"
    ))
    .unwrap();
    let cluster = config.cluster.unwrap();
    assert_eq!(cluster.stream, "PBXGUARD_BANS");
    assert_eq!(cluster.publish, [Share::Detected]);
    assert!(cluster.apply && cluster.accepts("any-node"));
    assert!(
        valid_node_name(&cluster.node_name()),
        "{}",
        cluster.node_name()
    );
}

#[test]
fn cluster_mistakes_are_named() {
    let cases = [
        ("servers = []\n", "cluster.servers", "no NATS server"),
        (
            "servers = [\"nats://a:4222/x\"]\n",
            "cluster.servers",
            "not a NATS URL",
        ),
        (
            "servers = [\"nats://a:4222\"]\nnode = \"pbx.east\"\n",
            "cluster.node",
            "not a node name",
        ),
        (
            "servers = [\"nats://a:4222\"]\naccept_from = [\"a b\"]\n",
            "cluster.accept_from",
            "not a node name",
        ),
        (
            "servers = [\"nats://a:4222\"]\ntoken = \"t\"\ncreds = \"/x.creds\"\n",
            "cluster.token",
            "one way to log in",
        ),
        (
            "servers = [\"nats://a:4222\"]\nuser = \"u\"\n",
            "cluster.password",
            "go together",
        ),
        (
            "servers = [\"nats://a:4222\"]\npublish = [\"everything\"]\n",
            "cluster.publish[0]",
            "unknown variant",
        ),
        (
            "servers = [\"nats://a:4222\"]\nreplicas = 7\n",
            "cluster.replicas",
            "1 to 5",
        ),
    ];
    for (body, key, words) in cases {
        let text = format!("{MINIMAL}[cluster]\n{body}");
        let err = parse(&text).unwrap_err();
        let shown = err.to_string();
        assert_eq!(err.key.as_deref(), Some(key), "{shown}");
        assert!(err.line.is_some_and(|l| l >= 3), "{shown}");
        assert!(shown.contains(words), "{shown}");
    }
}
