//! Asterisk's peers: PJSIP identify/aor/registration sections and chan_sip fixed hosts,
//! following `#include` / `#tryinclude` (FreePBX splits pjsip.conf into many files).

use std::path::{Path, PathBuf};

use super::{Peer, TrustEntry, parse_peer, uri_host};
use crate::audit::ini;

/// How deep `#include`s are followed (Asterisk's own limit is similar; loops stop here).
const MAX_INCLUDE_DEPTH: usize = 8;

/// Sections of `file` and every file it includes, each with the file it is in.
fn sections_with_includes(dir: &Path, file: &Path, depth: usize) -> Vec<(PathBuf, ini::Section)> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, ini::Section)> = ini::parse(&text)
        .into_iter()
        .map(|s| (file.to_path_buf(), s))
        .collect();
    if depth >= MAX_INCLUDE_DEPTH {
        return out;
    }
    for line in text.lines() {
        let line = line.trim();
        let Some(target) = line
            .strip_prefix("#include")
            .or_else(|| line.strip_prefix("#tryinclude"))
        else {
            continue;
        };
        let target = target.trim().trim_matches(['"', '<', '>']);
        if target.is_empty() {
            continue;
        }
        let pattern = if Path::new(target).is_absolute() {
            // Absolute includes stay inside the configured root's etc/asterisk.
            dir.join(Path::new(target).file_name().unwrap_or_default())
        } else {
            dir.join(target)
        };
        let Some(pattern) = pattern.to_str() else {
            continue;
        };
        for included in glob::glob(pattern).into_iter().flatten().flatten() {
            if included != file {
                out.extend(sections_with_includes(dir, &included, depth + 1));
            }
        }
    }
    out
}

fn entry(peer: Peer, file: &Path, line: usize, origin: &'static str) -> TrustEntry {
    TrustEntry {
        peer,
        file: file.to_path_buf(),
        line,
        origin,
    }
}

/// PJSIP: `type=identify` `match=` (comma-separated addresses, networks, names),
/// `type=aor` static `contact=` hosts, `type=registration` `server_uri=` hosts.
pub fn pjsip(dir: &Path) -> Vec<TrustEntry> {
    let mut out = Vec::new();
    for (file, section) in sections_with_includes(dir, &dir.join("pjsip.conf"), 0) {
        let kind = section.get("type").map(|e| e.value.to_ascii_lowercase());
        for e in &section.entries {
            match (kind.as_deref(), e.key.as_str()) {
                (Some("identify"), "match") => {
                    for item in e.value.split(',') {
                        if let Some(peer) = parse_peer(item) {
                            out.push(entry(peer, &file, e.line, "pjsip identify match"));
                        }
                    }
                }
                (Some("aor"), "contact") => {
                    for item in e.value.split(',') {
                        if let Some(peer) = uri_host(item) {
                            out.push(entry(peer, &file, e.line, "pjsip aor contact"));
                        }
                    }
                }
                (Some("registration"), "server_uri") => {
                    if let Some(peer) = uri_host(&e.value) {
                        out.push(entry(peer, &file, e.line, "pjsip registration server_uri"));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// chan_sip: every peer section with a fixed `host=` (the general section is skipped).
pub fn chan_sip(dir: &Path) -> Vec<TrustEntry> {
    sections_with_includes(dir, &dir.join("sip.conf"), 0)
        .into_iter()
        .filter(|(_, s)| !s.name.eq_ignore_ascii_case("general"))
        .filter_map(|(file, s)| {
            let host = s.get("host")?;
            let peer = parse_peer(&host.value)?;
            Some(entry(peer, &file, host.line, "chan_sip peer host"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn found(entries: &[TrustEntry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| {
                let peer = match &e.peer {
                    Peer::Net(n) => n.to_string(),
                    Peer::Name(n) => n.clone(),
                };
                format!(
                    "{peer} {}:{} {}",
                    e.file.file_name().unwrap().to_string_lossy(),
                    e.line,
                    e.origin
                )
            })
            .collect()
    }

    #[test]
    fn pjsip_identify_aor_and_registration_through_includes() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "pjsip.conf",
            "[global]\ntype=global\n#include pjsip.*.conf\n#tryinclude missing.conf\n",
        );
        write(
            dir.path(),
            "pjsip.identify.conf",
            "[trunk](!)\ntype=identify\n\n[trunk-id]\ntype=identify\nendpoint=trunk\n\
             match=203.0.113.5, sip.provider.example ,198.51.100.0/24,0.0.0.0/0\n\
             match=\"evil host\" ; a comment 192.0.2.1\n",
        );
        write(
            dir.path(),
            "pjsip.aor.conf",
            "[trunk]\ntype=aor\ncontact=sip:trunk@[2001:db8::5]:5060;transport=udp\n\n\
             [100]\ntype=aor\nmax_contacts=1\n",
        );
        write(
            dir.path(),
            "pjsip.registration.conf",
            "[reg]\ntype=registration\nserver_uri=sip:sip.provider.example\nclient_uri=sip:me@192.0.2.77\n",
        );
        // An include loop stops at the depth limit instead of hanging.
        write(dir.path(), "pjsip.loop.conf", "#include pjsip.loop.conf\n");
        let mut got = found(&pjsip(dir.path()));
        got.sort();
        assert_eq!(
            got,
            [
                "0.0.0.0/0 pjsip.identify.conf:7 pjsip identify match",
                "198.51.100.0/24 pjsip.identify.conf:7 pjsip identify match",
                "2001:db8::5/128 pjsip.aor.conf:3 pjsip aor contact",
                "203.0.113.5/32 pjsip.identify.conf:7 pjsip identify match",
                "sip.provider.example pjsip.identify.conf:7 pjsip identify match",
                "sip.provider.example pjsip.registration.conf:3 pjsip registration server_uri",
            ]
        );
    }

    #[test]
    fn chan_sip_fixed_hosts_only() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "sip.conf",
            "[general]\nhost=192.0.2.200\n\n[trunk]\ntype=peer\nhost=203.0.113.50\n\n\
             [phone]\ntype=friend\nhost=dynamic\n\n[provider]\nhost=sip.provider.example:5060\n\n\
             [weird]\nhost=1.2.3.4 from 5.6.7.8\n",
        );
        assert_eq!(
            found(&chan_sip(dir.path())),
            [
                "203.0.113.50/32 sip.conf:6 chan_sip peer host",
                "sip.provider.example sip.conf:13 chan_sip peer host",
            ]
        );
    }
}
