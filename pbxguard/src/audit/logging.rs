//! Where pbxguard is blind: the PBX never writes the lines pbxguard's filters read, or writes
//! them to a log pbxguard does not follow.
//!
//! - FreeSWITCH writes `SIP auth failure` lines only for sofia profiles whose
//!   `log-auth-failures` is true (the default is false, and the shipped `internal.xml` says
//!   false).
//! - Kamailio and OpenSIPS log failed digest authentication with its source address only
//!   through the `xlog` lines the README gives; they all carry the marker `pbxguard:`.
//! - Asterisk writes its security events (wrong passwords, unknown accounts, ACL rejects) only
//!   to a `logger.conf` channel with the `security` level, and pbxguard reads them only with a
//!   `[[source]]` on that channel using the `asterisk` filter.

use std::{collections::HashMap, path::Path, sync::LazyLock};

use regex::Regex;

use super::{Finding, Root, Severity, exposure::PbxguardConfig, ini, unreadable};

/// How deep includes are followed (loops stop here).
const MAX_INCLUDE_DEPTH: usize = 8;

/// The findings about what pbxguard cannot see.
pub fn check(root: &Root, pbxguard: &PbxguardConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    freeswitch_profiles(root, &mut out);
    for script in &SCRIPTS {
        script_lines(root, script, &mut out);
    }
    asterisk_security(root, pbxguard, &mut out);
    out
}

// ---------------------------------------------------------------- FreeSWITCH

const SIP_PROFILES: &str = "/etc/freeswitch/sip_profiles";
const VARS: &str = "/etc/freeswitch/vars.xml";

/// `<X-PRE-PROCESS cmd="set" data="name=value"/>` definitions of vars.xml (the last wins).
fn preprocessor_vars(root: &Root) -> HashMap<String, String> {
    let Ok(Some(text)) = root.read(VARS) else {
        return HashMap::new();
    };
    text.lines()
        .filter(|line| line.contains("cmd=\"set\""))
        .filter_map(|line| {
            let data = line.split("data=\"").nth(1)?.split('"').next()?;
            let (name, value) = data.split_once('=')?;
            Some((name.trim().to_string(), value.trim().to_string()))
        })
        .collect()
}

/// `value` with `$${name}` replaced from vars.xml where defined.
fn expand(value: &str, vars: &HashMap<String, String>) -> String {
    let mut out = value.to_string();
    for (name, v) in vars {
        out = out.replace(&format!("$${{{name}}}"), v);
    }
    out
}

/// FreeSWITCH's `switch_true`.
fn switch_true(value: &str) -> bool {
    let v = value.trim().to_ascii_lowercase();
    ["yes", "on", "true", "t", "enabled", "active", "allow"].contains(&v.as_str())
        || v.parse::<i64>().is_ok_and(|n| n != 0)
}

fn freeswitch_profiles(root: &Root, out: &mut Vec<Finding>) {
    let files = root.files(SIP_PROFILES, |name| name.ends_with(".xml"));
    if files.is_empty() {
        return;
    }
    let vars = preprocessor_vars(root);
    for path in files {
        let text = match root.read(&path) {
            Ok(Some(text)) => text,
            Ok(None) => continue,
            Err(f) => {
                out.push(f);
                continue;
            }
        };
        let doc = match roxmltree::Document::parse(&text) {
            Ok(doc) => doc,
            Err(e) => {
                out.push(unreadable(&path, &format!("invalid XML: {e}")));
                continue;
            }
        };
        for profile in doc.descendants().filter(|n| n.has_tag_name("profile")) {
            let name = profile.attribute("name").unwrap_or("?");
            let param = profile
                .children()
                .filter(|n| n.has_tag_name("settings"))
                .flat_map(|s| s.children())
                // The last one wins, as in sofia.
                .rfind(|n| {
                    n.has_tag_name("param") && n.attribute("name") == Some("log-auth-failures")
                });
            let value = param
                .and_then(|p| p.attribute("value"))
                .map(|v| expand(v, &vars));
            if value.as_deref().is_some_and(switch_true) {
                continue;
            }
            let why = match &value {
                Some(v) => format!("log-auth-failures is {v:?}"),
                None => "log-auth-failures is not set, and defaults to false".into(),
            };
            let line = doc.text_pos_at(param.unwrap_or(profile).range().start).row as usize;
            out.push(
                Finding::new(
                    "logging.freeswitch_auth_failures",
                    Severity::High,
                    format!(
                        "FreeSWITCH profile '{name}' does not log failed authentication ({why}): pbxguard cannot see password guessing on it"
                    ),
                    format!(
                        "set <param name=\"log-auth-failures\" value=\"true\"/> in the profile's <settings>, then run fs_cli -x reloadxml and fs_cli -x 'sofia profile {name} rescan'"
                    ),
                )
                .at(&path, Some(line)),
            );
        }
    }
}

// ---------------------------------------------------------------- Kamailio / OpenSIPS

/// A SIP proxy whose routing script must log pbxguard's lines.
struct Script {
    id: &'static str,
    program: &'static str,
    path: &'static str,
    service: &'static str,
}

const SCRIPTS: [Script; 2] = [
    Script {
        id: "logging.kamailio_script",
        program: "Kamailio",
        path: "/etc/kamailio/kamailio.cfg",
        service: "kamailio",
    },
    Script {
        id: "logging.opensips_script",
        program: "OpenSIPS",
        path: "/etc/opensips/opensips.cfg",
        service: "opensips",
    },
];

/// The marker every README line carries, whatever else it says.
const MARKER: &str = "pbxguard:";

/// The xlog module's logging functions (Kamailio has the short forms, OpenSIPS `xlog`).
static XLOG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u)\b(?:xlog[lm]?|xdbg|xinfo|xnotice|xwarn|xerr|xbug|xcrit|xalert)\s*\(")
        .unwrap()
});

/// Where a script checks credentials: the place the README's line belongs.
static AUTH_CALL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?-u)\b(?:auth_check|www_authorize|proxy_authorize|pv_www_authorize|pv_proxy_authorize|www_authenticate|proxy_authenticate)\s*\(").unwrap()
});

/// `include_file "x"` / `import_file "x"`, also as `#!` / `!!` directives.
static INCLUDE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?m)^[ \t]*(?:#!|!!)?(?:include|import)_file[ \t]+["']([^"'\n]+)["']"#).unwrap()
});

/// `text` with comments (`# ...` except `#!` directives, `// ...`, `/* ... */`) blanked out,
/// strings kept, and every newline in place so line numbers still hold.
fn strip_comments(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    while i < bytes.len() {
        let rest = &text[i..];
        let c = rest.chars().next().unwrap_or(' ');
        if c == '"' || c == '\'' {
            // A string, to its unescaped closing quote.
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != c as u8 {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(bytes.len());
            out.push_str(&text[i..end]);
            i = end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(text.len(), |k| i + k + 2);
            text[i..end].chars().for_each(|c| blank(&mut out, c));
            i = end;
        } else if rest.starts_with("//") || (c == '#' && !rest.starts_with("#!")) {
            let end = rest.find('\n').map_or(text.len(), |k| i + k);
            text[i..end].chars().for_each(|c| blank(&mut out, c));
            i = end;
        } else {
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The arguments of every xlog call in `code` (comments stripped), with their offsets.
fn xlog_args(code: &str) -> impl Iterator<Item = (usize, &str)> {
    XLOG.find_iter(code).map(|m| {
        // The call's arguments: to the parenthesis closing it, strings skipped.
        let mut depth = 1usize;
        let mut quote = None;
        let mut escaped = false;
        let args = &code[m.end()..];
        let end = args
            .char_indices()
            .find(|&(_, c)| {
                match quote {
                    Some(_) if escaped => escaped = false,
                    Some(_) if c == '\\' => escaped = true,
                    Some(q) if c == q => quote = None,
                    Some(_) => {}
                    None if c == '"' || c == '\'' => quote = Some(c),
                    None if c == '(' => depth += 1,
                    None if c == ')' => depth -= 1,
                    None => {}
                }
                depth == 0
            })
            .map_or(args.len(), |(k, _)| k);
        (m.start(), &args[..end])
    })
}

/// Whether `code` has an xlog call whose arguments hold the marker.
fn has_marker(code: &str) -> bool {
    xlog_args(code).any(|(_, args)| args.contains(MARKER))
}

/// Whether one xlog call's arguments are the README's failure line, which ends with the
/// source address so nothing a caller writes can come after it. Older recipes put
/// `method=$rm user=$fU` there; the filter no longer reads them (a caller could shape the
/// tail).
fn is_current_recipe(args: &str) -> bool {
    args.contains("pbxguard: auth-failed src=$si\\n\"")
        || args.contains("pbxguard: auth-failed src=$si\"")
}

/// Whether `code` logs the README's failure line.
fn has_current_recipe(code: &str) -> bool {
    xlog_args(code).any(|(_, args)| is_current_recipe(args))
}

/// Where an older recipe's failure line is (byte offset in `code`), if any.
fn old_recipe_at(code: &str) -> Option<usize> {
    xlog_args(code)
        .find(|(_, args)| args.contains("pbxguard: auth-failed") && !is_current_recipe(args))
        .map(|(at, _)| at)
}

/// The script at `path` and every file it includes, comments stripped.
fn load_script(
    root: &Root,
    path: &str,
    depth: usize,
    files: &mut Vec<(String, String)>,
) -> Result<(), Finding> {
    if files.iter().any(|(p, _)| p == path) {
        return Ok(());
    }
    let Some(text) = root.read(path)? else {
        return Ok(());
    };
    let code = strip_comments(&text);
    let includes: Vec<String> = INCLUDE
        .captures_iter(&code)
        .map(|c| c[1].to_string())
        .collect();
    files.push((path.to_string(), code));
    if depth >= MAX_INCLUDE_DEPTH {
        return Ok(());
    }
    let dir = Path::new(path).parent().unwrap_or(Path::new("/"));
    for include in includes {
        let target = dir.join(&include).to_string_lossy().into_owned();
        load_script(root, &target, depth + 1, files)?;
    }
    Ok(())
}

fn script_lines(root: &Root, script: &Script, out: &mut Vec<Finding>) {
    let mut files = Vec::new();
    if let Err(f) = load_script(root, script.path, 0, &mut files) {
        out.push(f);
        return;
    }
    if files.is_empty() || files.iter().any(|(_, code)| has_current_recipe(code)) {
        return;
    }
    // A failure line from an older recipe: logged, but not in a form pbxguard reads.
    if let Some((file, line)) = files.iter().find_map(|(path, code)| {
        let at = old_recipe_at(code)?;
        Some((path.as_str(), code[..at].matches('\n').count() + 1))
    }) {
        out.push(
            Finding::new(
                script.id,
                Severity::High,
                format!(
                    "{}'s script logs failed authentication with an older pbxguard line that the filter no longer reads (the source address must come last)",
                    script.program
                ),
                format!(
                    "replace it with the README's xlog(\"L_NOTICE\", \"{MARKER} auth-failed src=$si\\n\") (section kamailio / opensips), then restart {}",
                    script.service
                ),
            )
            .at(file, Some(line)),
        );
        return;
    }
    if files.iter().any(|(_, code)| has_marker(code)) {
        return;
    }
    // Point at the first credential check, where the line belongs.
    let (file, line) = files
        .iter()
        .find_map(|(path, code)| {
            let at = AUTH_CALL.find(code)?.start();
            Some((path.as_str(), Some(code[..at].matches('\n').count() + 1)))
        })
        .unwrap_or((script.path, None));
    out.push(
        Finding::new(
            script.id,
            Severity::High,
            format!(
                "{}'s script logs no `{MARKER}` line: pbxguard cannot see failed authentication through it",
                script.program
            ),
            format!(
                "add the README's xlog(\"L_NOTICE\", \"{MARKER} ...\") lines (section kamailio / opensips) where authentication fails, then restart {}",
                script.service
            ),
        )
        .at(file, line),
    );
}

// ---------------------------------------------------------------- Asterisk

const LOGGER: &str = "/etc/asterisk/logger.conf";
const ASTERISK_CONF: &str = "/etc/asterisk/asterisk.conf";

/// Where a `logger.conf` channel with the `security` level writes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Channel {
    /// A file (absolute path on the host).
    File(String),
    /// `syslog.<facility>`.
    Syslog,
    /// The Asterisk console: nothing pbxguard can read.
    Console,
}

/// Asterisk's log directory (`astlogdir` in asterisk.conf).
fn log_dir(root: &Root) -> String {
    let text = root.read(ASTERISK_CONF).ok().flatten().unwrap_or_default();
    ini::parse(&text)
        .iter()
        .filter(|s| s.name == "directories")
        .find_map(|s| s.get("astlogdir").map(|e| e.value.clone()))
        .unwrap_or_else(|| "/var/log/asterisk".into())
}

/// The security channels of `path` and its includes; returns the section it ends in and
/// the line of its `[logfiles]` header, if any.
fn security_channels(
    root: &Root,
    path: &str,
    log_dir: &str,
    section: &mut String,
    depth: usize,
    channels: &mut Vec<Channel>,
) -> Result<Option<usize>, Finding> {
    let Some(text) = root.read(path)? else {
        return Ok(None);
    };
    let mut header = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split(';').next().unwrap_or("").trim();
        if let Some(rest) = line.strip_prefix('[') {
            *section = rest.split(']').next().unwrap_or("").trim().to_string();
            if section == "logfiles" && header.is_none() {
                header = Some(index + 1);
            }
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("#include")
            .or_else(|| line.strip_prefix("#tryinclude"))
        {
            let name = rest.trim().trim_matches(['"', '<', '>']);
            if depth < MAX_INCLUDE_DEPTH && !name.is_empty() {
                let target = if name.starts_with('/') {
                    name.to_string()
                } else {
                    format!("/etc/asterisk/{name}")
                };
                security_channels(root, &target, log_dir, section, depth + 1, channels)?;
            }
            continue;
        }
        if section != "logfiles" {
            continue;
        }
        let Some((name, levels)) = line.split_once('=') else {
            continue;
        };
        // `full => [plain]notice,warning,security`: the formatter is not a level.
        let levels = levels.trim_start_matches('>').trim();
        let levels = match levels.strip_prefix('[') {
            Some(rest) => rest.split_once(']').map_or("", |(_, l)| l),
            None => levels,
        };
        if !levels
            .split(',')
            .any(|l| matches!(l.trim().to_ascii_lowercase().as_str(), "security" | "*"))
        {
            continue;
        }
        let name = name.trim();
        channels.push(if name.eq_ignore_ascii_case("console") {
            Channel::Console
        } else if name.starts_with("syslog") {
            Channel::Syslog
        } else if name.starts_with('/') {
            Channel::File(name.to_string())
        } else {
            Channel::File(format!("{}/{name}", log_dir.trim_end_matches('/')))
        });
    }
    Ok(header)
}

/// Whether a `[[source]]` path (a file, or a glob in its last component) reads `file`.
fn path_reads(source: &Path, file: &str) -> bool {
    let file = Path::new(file);
    if source == file {
        return true;
    }
    let (Some(dir), Some(name)) = (source.parent(), source.file_name()) else {
        return false;
    };
    dir == file.parent().unwrap_or(Path::new("/"))
        && glob::Pattern::new(&name.to_string_lossy()).is_ok_and(|p| {
            file.file_name()
                .is_some_and(|n| p.matches(&n.to_string_lossy()))
        })
}

fn asterisk_security(root: &Root, pbxguard: &PbxguardConfig, out: &mut Vec<Finding>) {
    if !root.path("/etc/asterisk").is_dir() {
        return;
    }
    let mut channels = Vec::new();
    let header = match security_channels(
        root,
        LOGGER,
        &log_dir(root),
        &mut String::new(),
        0,
        &mut channels,
    ) {
        Ok(header) => header,
        Err(f) => {
            out.push(f);
            return;
        }
    };
    let readable: Vec<&Channel> = channels
        .iter()
        .filter(|c| **c != Channel::Console)
        .collect();
    if readable.is_empty() {
        out.push(
            Finding::new(
                "logging.asterisk_security_log",
                Severity::Medium,
                "Asterisk writes no security log: pbxguard misses its security events (failed passwords, unknown accounts, ACL rejects)",
                "add `security => security` under [logfiles] in logger.conf, run asterisk -rx 'logger reload', and follow /var/log/asterisk/security with a [[source]] using the asterisk filter",
            )
            .at(LOGGER, header),
        );
        return;
    }
    // Without a config, pbxguard.not_configured already says everything.
    let Some(config) = pbxguard.config() else {
        return;
    };
    let followed = config
        .source
        .iter()
        .filter(|s| s.filters.iter().any(|f| f == "asterisk"))
        .any(|s| {
            readable.iter().any(|channel| match channel {
                Channel::File(file) => s.path.as_deref().is_some_and(|p| path_reads(p, file)),
                Channel::Syslog => {
                    s.journal_unit.is_some()
                        || s.path.as_deref().is_some_and(|p| {
                            path_reads(p, "/var/log/syslog") || path_reads(p, "/var/log/messages")
                        })
                }
                Channel::Console => false,
            })
        });
    if followed {
        return;
    }
    let fix = match readable.iter().find_map(|c| match c {
        Channel::File(file) => Some(file.as_str()),
        _ => None,
    }) {
        Some(file) => format!(
            "add [[source]] path = \"{file}\" filters = [\"asterisk\"] to /etc/pbxguard/pbxguard.toml"
        ),
        None => "add a [[source]] with filters = [\"asterisk\"] on the syslog file or journal that Asterisk's security channel writes to".into(),
    };
    out.push(
        Finding::new(
            "logging.asterisk_security_source",
            Severity::Medium,
            "pbxguard does not follow Asterisk's security log with the asterisk filter: its security events go unbanned",
            fix,
        )
        .at("/etc/pbxguard/pbxguard.toml", None),
    );
}

#[cfg(test)]
mod tests;
