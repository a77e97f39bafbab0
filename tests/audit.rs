//! `pbxguard audit --root` on fixture hosts: a careless one yields exactly the expected
//! findings, a hardened one none; malformed files are findings, never crashes.

mod testenv;

use std::process::Command;

use testenv::pbxguard_bin;

fn audit(host: &str) -> Vec<serde_json::Value> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/audit/").to_string() + host;
    let out = Command::new(pbxguard_bin())
        .args(["audit", "--json", "--root", &root])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

fn keys(findings: &[serde_json::Value]) -> Vec<String> {
    findings
        .iter()
        .map(|f| {
            format!(
                "{} {} {}",
                f["id"].as_str().unwrap(),
                f["file"].as_str().unwrap_or("-"),
                f["line"].as_u64().map_or("-".into(), |l| l.to_string())
            )
        })
        .collect()
}

#[test]
fn the_careless_host_yields_every_problem_with_its_fix() {
    let findings = audit("careless");
    let mut got = keys(&findings);
    got.sort();
    let mut want: Vec<&str> = vec![
        "audit.unreadable_file /etc/asterisk/pjsip_custom.conf -",
        "audit.unreadable_file /etc/freeswitch/directory/default/broken.xml -",
        "exposure.open_port /proc/net/tcp -",
        "exposure.open_port /proc/net/tcp -",
        "exposure.open_port /proc/net/udp -",
        "exposure.open_port /proc/net/udp -",
        "fraud.no_notification /etc/pbxguard/pbxguard.toml -",
        "fraud.no_cdr /etc/pbxguard/pbxguard.toml -",
        "logging.asterisk_security_log /etc/asterisk/logger.conf 4",
        "logging.freeswitch_auth_failures /etc/freeswitch/sip_profiles/external.xml 1",
        "logging.freeswitch_auth_failures /etc/freeswitch/sip_profiles/internal.xml 7",
        "logging.kamailio_script /etc/kamailio/kamailio.cfg 11",
        "logging.opensips_script /etc/opensips/opensips.cfg 5",
        "fraud.no_offhours /etc/pbxguard/pbxguard.toml -",
        "freeswitch.default_password /etc/freeswitch/vars.xml 2",
        "freeswitch.weak_password /etc/freeswitch/directory/default/1000.xml 4",
        "pbxguard.no_log_filter /etc/pbxguard/pbxguard.toml -",
        "pbxguard.not_running - -",
        "pbxguard.observe_mode /etc/pbxguard/pbxguard.toml -",
        "platform.eol_os /etc/os-release -",
        "platform.eol_software /var/lib/dpkg/status -",
        "platform.eol_software /var/lib/dpkg/status -",
        "platform.eol_software /var/lib/dpkg/status -",
        "sip.unauth_outbound /etc/asterisk/pjsip.conf 25",
        "sip.unauth_outbound /etc/asterisk/sip.conf 1",
        "sip.weak_secret /etc/asterisk/pjsip.conf 11",
        "sip.weak_secret /etc/asterisk/pjsip.conf 17",
        "sip.weak_secret /etc/asterisk/sip.conf 8",
        "ssh.password_auth /etc/ssh/sshd_config 4",
        "ssh.port_22 /etc/ssh/sshd_config 2",
        "ssh.root_login /etc/ssh/sshd_config 3",
        "transport.default_port /etc/asterisk/pjsip.conf 5",
        "transport.default_port /etc/asterisk/sip.conf 3",
        "transport.no_srtp /etc/asterisk/pjsip.conf -",
        "transport.no_tls /etc/asterisk/pjsip.conf -",
    ];
    want.sort();
    assert_eq!(got, want);
    // Most severe first, and every finding says what to do.
    let severities: Vec<&str> = findings
        .iter()
        .map(|f| f["severity"].as_str().unwrap())
        .collect();
    let rank = |s: &str| {
        ["critical", "high", "medium", "low"]
            .iter()
            .position(|x| *x == s)
            .unwrap()
    };
    assert!(
        severities.windows(2).all(|w| rank(w[0]) <= rank(w[1])),
        "{severities:?}"
    );
    assert!(
        findings
            .iter()
            .all(|f| !f["fix"].as_str().unwrap().is_empty())
    );
    // Where pbxguard is blind, each fix says what to change.
    let fix = |id: &str| -> Vec<&str> {
        findings
            .iter()
            .filter(|f| f["id"] == id)
            .map(|f| f["fix"].as_str().unwrap())
            .collect()
    };
    assert!(
        fix("logging.freeswitch_auth_failures")
            .iter()
            .all(|f| f.contains(r#"<param name="log-auth-failures" value="true"/>"#)),
        "{:?}",
        fix("logging.freeswitch_auth_failures")
    );
    for id in ["logging.kamailio_script", "logging.opensips_script"] {
        assert!(fix(id)[0].contains("pbxguard:"), "{:?}", fix(id));
    }
    assert!(
        fix("logging.asterisk_security_log")[0].contains("security => security"),
        "{:?}",
        fix("logging.asterisk_security_log")
    );
    let ports: Vec<&str> = findings
        .iter()
        .filter(|f| f["id"] == "exposure.open_port")
        .map(|f| f["title"].as_str().unwrap())
        .collect();
    for port in ["5060/udp", "4569/udp", "22/tcp", "80/tcp"] {
        assert!(
            ports.iter().any(|t| t.contains(port)),
            "{port} in {ports:?}"
        );
    }
    assert!(
        !ports.iter().any(|t| t.contains("3306")),
        "local-only services are not exposure"
    );
}

#[test]
fn the_hardened_host_yields_nothing() {
    assert_eq!(keys(&audit("hardened")), Vec::<String>::new());
}

#[test]
fn the_terminal_report_is_grouped_and_plain_when_piped() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/audit/careless");
    let out = Command::new(pbxguard_bin())
        .args(["audit", "--root", root])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("CRITICAL ("), "{text}");
    assert!(text.contains("\nHIGH (") && text.contains("\nMEDIUM (") && text.contains("\nLOW ("));
    assert!(text.contains("      fix: set allowguest=no"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes when not a terminal"
    );
}

#[test]
fn an_empty_root_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(pbxguard_bin())
        .args(["audit", "--json", "--root"])
        .arg(dir.path())
        .output()
        .unwrap();
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        keys(&findings),
        ["pbxguard.not_configured /etc/pbxguard/pbxguard.toml -"]
    );
}

/// With fraud rules configured, the off-hours finding gives way to the rules; a `[[cdr]]`
/// file that does not exist is reported.
#[test]
fn fraud_rules_replace_the_offhours_finding_and_a_missing_cdr_file_is_named() {
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/pbxguard");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("pbxguard.toml"),
        "[enforce]\ninterfaces = [\"eth0\"]\n\n[fraud]\nhome_country = \"DE\"\n\n\
         [[cdr]]\npath = \"/var/log/asterisk/cdr-csv/Master.csv\"\nformat = \"asterisk-csv\"\n",
    )
    .unwrap();
    let out = Command::new(pbxguard_bin())
        .args(["audit", "--json", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = findings.iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert!(!ids.contains(&"fraud.no_offhours"), "{ids:?}");
    assert!(!ids.contains(&"fraud.no_cdr"), "{ids:?}");
    let missing = findings
        .iter()
        .find(|f| f["id"] == "fraud.cdr_missing")
        .unwrap_or_else(|| panic!("{ids:?}"));
    assert!(
        missing["title"]
            .as_str()
            .unwrap()
            .contains("/var/log/asterisk/cdr-csv/Master.csv")
    );
}
