use super::*;

/// A host with `files` (host path, contents), audited by this module only.
fn audit(files: &[(&str, &str)]) -> Vec<(String, String, Option<usize>)> {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let root = Root::new(dir.path());
    let mut findings = Vec::new();
    let pbxguard = PbxguardConfig::load(&root, &mut findings);
    assert_eq!(findings, Vec::new(), "the test's pbxguard.toml is valid");
    check(&root, &pbxguard)
        .into_iter()
        .map(|f| (f.id.to_string(), f.file.unwrap_or_default(), f.line))
        .collect()
}

fn finding(id: &str, file: &str, line: Option<usize>) -> (String, String, Option<usize>) {
    (id.into(), file.into(), line)
}

const CONFIG: &str = "/etc/pbxguard/pbxguard.toml";

fn pbxguard(sources: &str) -> String {
    format!("[enforce]\ninterfaces = [\"eth0\"]\n{sources}")
}

#[test]
fn the_marker_counts_only_inside_an_xlog_call() {
    let yes = |code: &str| has_marker(&strip_comments(code));
    assert!(yes(
        "xlog(\"L_NOTICE\", \"pbxguard: auth-failed src=$si user=$(fU{s.escape.common})\\n\");"
    ));
    assert!(yes("xnotice(\"pbxguard: block src=$si\\n\");"));
    assert!(yes("xlog(\"L_INFO\", \"sip://x # // pbxguard: y\");"));
    assert!(yes(
        "  xlog ( 'L_NOTICE' ,\n  \"pbxguard: auth-failed src=$si\\n\" );"
    ));
    // Commented out, in another function, or after the call's end.
    assert!(!yes(
        "# xlog(\"L_NOTICE\", \"pbxguard: auth-failed src=$si\\n\");"
    ));
    assert!(!yes(
        "// xlog(\"L_NOTICE\", \"pbxguard: auth-failed src=$si\\n\");"
    ));
    assert!(!yes(
        "/* xlog(\"L_NOTICE\",\n \"pbxguard: auth-failed src=$si\\n\"); */"
    ));
    assert!(!yes("sl_send_reply(\"403\", \"pbxguard: forbidden\");"));
    assert!(!yes(
        "xlog(\"L_NOTICE\", \"auth failed\"); sl_send_reply(\"403\", \"pbxguard: x\");"
    ));
    assert!(!yes("xlog(\"L_NOTICE\", \"pbxguard - auth failed\");"));
    // Comment stripping keeps line numbers and `#!` directives.
    let code = strip_comments("#!define WITH_AUTH\n/* a\nb */ x # c\n");
    assert_eq!(code.lines().count(), 3);
    assert!(code.starts_with("#!define WITH_AUTH\n"));
    assert_eq!(code.lines().nth(2).unwrap().trim(), "x");
}

#[test]
fn a_script_is_checked_with_its_includes() {
    let main = "#!KAMAILIO\n#!define WITH_AUTH\ninclude_file \"routes/auth.cfg\"\nimport_file \"missing.cfg\"\n";
    let auth = "route[AUTH] {\n\tif (!auth_check(\"$fd\", \"subscriber\", \"1\")) {\n\t\tauth_challenge(\"$fd\", \"0\");\n\t\texit;\n\t}\n}\n";
    assert_eq!(
        audit(&[
            ("/etc/kamailio/kamailio.cfg", main),
            ("/etc/kamailio/routes/auth.cfg", auth),
        ]),
        [finding(
            "logging.kamailio_script",
            "/etc/kamailio/routes/auth.cfg",
            Some(2)
        )]
    );
    let logged = auth.replace(
        "\t\tauth_challenge",
        "\t\txlog(\"L_NOTICE\", \"pbxguard: auth-failed src=$si\\n\");\n\t\tauth_challenge",
    );
    assert_eq!(
        audit(&[
            ("/etc/kamailio/kamailio.cfg", main),
            ("/etc/kamailio/routes/auth.cfg", &logged),
        ]),
        []
    );
    // The pre-issue-12 recipe (caller text after the address) is flagged where it is.
    let old_recipe = auth.replace(
        "\t\tauth_challenge",
        "\t\txlog(\"L_NOTICE\", \"pbxguard: auth-failed src=$si method=$rm user=$fU\\n\");\n\t\tauth_challenge",
    );
    assert_eq!(
        audit(&[
            ("/etc/kamailio/kamailio.cfg", main),
            ("/etc/kamailio/routes/auth.cfg", &old_recipe),
        ]),
        [finding(
            "logging.kamailio_script",
            "/etc/kamailio/routes/auth.cfg",
            Some(3)
        )]
    );
    // An include loop ends; no credential check: the finding is on the script itself.
    assert_eq!(
        audit(&[(
            "/etc/opensips/opensips.cfg",
            "include_file \"opensips.cfg\"\nroute { exit; }\n"
        )]),
        [finding(
            "logging.opensips_script",
            "/etc/opensips/opensips.cfg",
            None
        )]
    );
}

#[test]
fn freeswitch_profiles_need_log_auth_failures_true() {
    let profile = |name: &str, settings: &str| {
        format!(
            "<include>\n<profile name=\"{name}\">\n  <gateways/>\n  <settings>\n{settings}  </settings>\n</profile>\n</include>\n"
        )
    };
    let vars = "<include>\n  <X-PRE-PROCESS cmd=\"set\" data=\"log_auth=yes\"/>\n  <X-PRE-PROCESS cmd=\"set\" data=\"off=0\"/>\n</include>\n";
    let found = audit(&[
        ("/etc/freeswitch/vars.xml", vars),
        (
            "/etc/freeswitch/sip_profiles/a.xml",
            &profile(
                "a",
                "    <param name=\"log-auth-failures\" value=\"$${log_auth}\"/>\n",
            ),
        ),
        (
            "/etc/freeswitch/sip_profiles/b.xml",
            &profile(
                "b",
                "    <param name=\"log-auth-failures\" value=\"$${off}\"/>\n",
            ),
        ),
        (
            "/etc/freeswitch/sip_profiles/c.xml",
            &profile(
                "c",
                "    <!-- <param name=\"log-auth-failures\" value=\"true\"/> -->\n",
            ),
        ),
        (
            "/etc/freeswitch/sip_profiles/d.xml",
            &profile("d", "    <param name=\"log-auth-failures\" value=\"1\"/>\n"),
        ),
        (
            "/etc/freeswitch/sip_profiles/e.xml",
            &profile(
                "e",
                "    <param name=\"log-auth-failures\" value=\"$${undefined}\"/>\n",
            ),
        ),
        // Gateways are not profiles.
        (
            "/etc/freeswitch/sip_profiles/external/gw.xml",
            "<include><gateway name=\"x\"/></include>",
        ),
    ]);
    assert_eq!(
        found,
        [
            finding(
                "logging.freeswitch_auth_failures",
                "/etc/freeswitch/sip_profiles/b.xml",
                Some(5)
            ),
            finding(
                "logging.freeswitch_auth_failures",
                "/etc/freeswitch/sip_profiles/c.xml",
                Some(2)
            ),
            finding(
                "logging.freeswitch_auth_failures",
                "/etc/freeswitch/sip_profiles/e.xml",
                Some(5)
            ),
        ]
    );
    for (value, on) in [
        ("true", true),
        ("On", true),
        ("t", true),
        ("-1", true),
        ("false", false),
        ("0", false),
        ("", false),
    ] {
        assert_eq!(switch_true(value), on, "{value:?}");
    }
}

#[test]
fn asterisk_needs_a_security_channel_that_pbxguard_follows() {
    let security_source = |path: &str| {
        pbxguard(&format!(
            "[[source]]\npath = \"{path}\"\nfilters = [\"asterisk\"]\n"
        ))
    };
    let logger =
        "[general]\n\n[logfiles]\nmessages => notice,warning,error\nsecurity => security\n";
    let host = |logger: &str, config: &str| {
        vec![
            ("/etc/asterisk/logger.conf".to_string(), logger.to_string()),
            (CONFIG.to_string(), config.to_string()),
        ]
    };
    let run = |files: Vec<(String, String)>| {
        audit(
            &files
                .iter()
                .map(|(p, t)| (p.as_str(), t.as_str()))
                .collect::<Vec<_>>(),
        )
    };
    let not_followed = [finding("logging.asterisk_security_source", CONFIG, None)];
    // Followed exactly, by a glob, or not at all.
    assert_eq!(
        run(host(logger, &security_source("/var/log/asterisk/security"))),
        []
    );
    assert_eq!(
        run(host(logger, &security_source("/var/log/asterisk/secur*"))),
        []
    );
    assert_eq!(
        run(host(logger, &security_source("/var/log/asterisk/full"))),
        not_followed
    );
    assert_eq!(
        run(host(
            logger,
            &pbxguard("[[source]]\npath = \"/var/log/asterisk/security\"\nfilters = [\"sshd\"]\n")
        )),
        not_followed
    );
    // `*`, a formatter, an include, and astlogdir.
    assert_eq!(
        run(host(
            "[logfiles]\nfull => [plain]notice,warning,security\n",
            &security_source("/var/log/asterisk/full")
        )),
        []
    );
    assert_eq!(
        run(host(
            "[logfiles]\nfull => *\n",
            &security_source("/var/log/asterisk/full")
        )),
        []
    );
    let mut files = host(
        "[logfiles]\n#include logger_logfiles_custom.conf\n",
        &security_source("/srv/astlog/sec"),
    );
    files.push((
        "/etc/asterisk/logger_logfiles_custom.conf".into(),
        "sec => security\n".into(),
    ));
    files.push((
        "/etc/asterisk/asterisk.conf".into(),
        "[directories](!)\nastlogdir => /srv/astlog\n".into(),
    ));
    assert_eq!(run(files), []);
    // Syslog: the journal or the syslog file.
    let syslog = "[logfiles]\nsyslog.local0 => security\n";
    assert_eq!(
        run(host(
            syslog,
            &pbxguard(
                "[[source]]\njournal_unit = \"asterisk.service\"\nfilters = [\"asterisk\"]\n"
            )
        )),
        []
    );
    assert_eq!(run(host(syslog, &security_source("/var/log/syslog"))), []);
    assert_eq!(
        run(host(syslog, &security_source("/var/log/asterisk/full"))),
        not_followed
    );
    // No security channel (the console cannot be followed; a commented one does not count).
    let none = |line| {
        [finding(
            "logging.asterisk_security_log",
            "/etc/asterisk/logger.conf",
            line,
        )]
    };
    assert_eq!(
        run(host(
            "[general]\n[logfiles]\nconsole => security\n;security => security\n",
            &security_source("/var/log/asterisk/security")
        )),
        none(Some(2))
    );
    assert_eq!(
        audit(&[
            ("/etc/asterisk/pjsip.conf", "[global]\n"),
            (CONFIG, &pbxguard(""))
        ]),
        none(None)
    );
    // Without pbxguard's config, pbxguard.not_configured covers the source.
    assert_eq!(audit(&[("/etc/asterisk/logger.conf", logger)]), []);
    // No Asterisk at all.
    assert_eq!(audit(&[(CONFIG, &pbxguard(""))]), []);
}
