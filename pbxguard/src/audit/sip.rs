//! Asterisk SIP configuration: credentials, guests, anonymous callers, TLS and SRTP, in
//! `pjsip.conf` / `pjsip_*.conf` / `pjsip.*.conf` (FreePBX generates those) and `sip*.conf`.

use super::{Finding, Root, Severity, ini};

/// Passwords attackers try first (from brute-force logs and hardening guides).
const COMMON: [&str; 16] = [
    "1234",
    "12345",
    "123456",
    "1234567",
    "12345678",
    "123456789",
    "password",
    "secret",
    "admin",
    "pass",
    "qwerty",
    "asterisk",
    "freepbx",
    "voip",
    "sip",
    "test",
];

/// One parsed file.
pub struct ConfFile {
    /// Host path.
    pub path: String,
    /// Its sections.
    pub sections: Vec<ini::Section>,
}

/// Everything read from /etc/asterisk.
#[derive(Default)]
pub struct Sip {
    /// pjsip configuration files.
    pub pjsip: Vec<ConfFile>,
    /// chan_sip configuration files.
    pub chan_sip: Vec<ConfFile>,
    /// Dialplan files.
    pub dialplan: Vec<ConfFile>,
}

/// Why a secret is weak, if it is.
pub fn weakness(secret: &str, user: &str) -> Option<&'static str> {
    if secret.is_empty() {
        Some("empty")
    } else if COMMON.iter().any(|c| c.eq_ignore_ascii_case(secret)) {
        Some("a common password")
    } else if secret == user {
        Some("equal to the user name")
    } else if secret.chars().all(|c| c.is_ascii_digit()) {
        Some("digits only")
    } else if secret.len() < 12 {
        Some("shorter than 12 characters")
    } else {
        None
    }
}

impl Sip {
    /// Reads every Asterisk file the checks need; unreadable ones become findings.
    pub fn load(root: &Root, findings: &mut Vec<Finding>) -> Sip {
        let mut sip = Sip::default();
        let load = |names: Vec<String>, findings: &mut Vec<Finding>| {
            names
                .into_iter()
                .filter_map(|path| match root.read(&path) {
                    Ok(Some(text)) => Some(ConfFile {
                        sections: ini::parse(&text),
                        path,
                    }),
                    Ok(None) => None,
                    Err(f) => {
                        findings.push(f);
                        None
                    }
                })
                .collect::<Vec<_>>()
        };
        let dir = "/etc/asterisk";
        sip.pjsip = load(
            root.files(dir, |n| n.starts_with("pjsip") && n.ends_with(".conf")),
            findings,
        );
        sip.chan_sip = load(
            root.files(dir, |n| n.starts_with("sip") && n.ends_with(".conf")),
            findings,
        );
        sip.dialplan = load(
            root.files(dir, |n| n.starts_with("extensions") && n.ends_with(".conf")),
            findings,
        );
        sip
    }

    /// Whether Asterisk is configured at all on this host.
    pub fn present(&self) -> bool {
        !self.pjsip.is_empty() || !self.chan_sip.is_empty()
    }

    fn pjsip_sections(&self) -> impl Iterator<Item = (&str, &ini::Section)> {
        self.pjsip
            .iter()
            .flat_map(|f| f.sections.iter().map(move |s| (f.path.as_str(), s)))
    }

    fn general(&self) -> Option<(&str, &ini::Section)> {
        self.chan_sip.iter().find_map(|f| {
            f.sections
                .iter()
                .find(|s| s.name == "general")
                .map(|s| (f.path.as_str(), s))
        })
    }

    /// The ports SIP listens on (UDP/TCP), from transports and `bindport`.
    pub fn ports(&self) -> Vec<(u16, String, usize)> {
        let mut out = Vec::new();
        for (file, s) in self.pjsip_sections() {
            if s.get("type").is_some_and(|t| t.value == "transport")
                && let Some(bind) = s.get("bind")
            {
                let tls = s.get("protocol").is_some_and(|p| p.value == "tls");
                let port = bind
                    .value
                    .rsplit_once(':')
                    .and_then(|(_, p)| p.parse().ok())
                    .unwrap_or(if tls { 5061 } else { 5060 });
                out.push((port, file.to_string(), bind.line));
            }
        }
        if let Some((file, general)) = self.general() {
            let port = general
                .get("bindport")
                .and_then(|p| p.value.parse().ok())
                .unwrap_or(5060);
            out.push((
                port,
                file.to_string(),
                general.get("bindport").map_or(general.line, |e| e.line),
            ));
        }
        out
    }

    /// Whether `context` can reach outbound routes (FreePBX's from-internal always can).
    fn outbound_capable(&self, context: &str, depth: usize) -> bool {
        if context == "from-internal" || depth > 8 {
            return context == "from-internal";
        }
        self.dialplan
            .iter()
            .flat_map(|f| f.sections.iter())
            .filter(|s| s.name == context)
            .any(|s| {
                s.entries.iter().any(|e| {
                    (e.key == "exten"
                        && e.value.starts_with("_")
                        && e.value.to_ascii_lowercase().contains("dial("))
                        || (e.key == "include" && self.outbound_capable(e.value.trim(), depth + 1))
                })
            })
    }

    /// The SIP findings.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        // Weak credentials.
        for (file, s) in self.pjsip_sections() {
            if s.get("type").is_some_and(|t| t.value == "auth")
                && let Some(password) = s.get("password")
            {
                let user = s
                    .get("username")
                    .map_or(s.name.as_str(), |u| u.value.as_str());
                if let Some(why) = weakness(&password.value, user) {
                    out.push(
                        Finding::new(
                            "sip.weak_secret",
                            Severity::Critical,
                            format!("PJSIP auth [{}] has a weak password ({why})", s.name),
                            "set a random password of at least 16 characters (letters and digits) and update the phone",
                        )
                        .at(file, Some(password.line)),
                    );
                }
            }
        }
        for file in &self.chan_sip {
            for s in file.sections.iter().filter(|s| s.name != "general") {
                if let Some(secret) = s.get("secret") {
                    let user = s
                        .get("username")
                        .map_or(s.name.as_str(), |u| u.value.as_str());
                    if let Some(why) = weakness(&secret.value, user) {
                        out.push(
                            Finding::new(
                                "sip.weak_secret",
                                Severity::Critical,
                                format!("SIP peer [{}] has a weak secret ({why})", s.name),
                                "set a random secret of at least 16 characters (letters and digits) and update the phone",
                            )
                            .at(&file.path, Some(secret.line)),
                        );
                    }
                }
            }
        }
        // Guests and anonymous callers, and where they can dial.
        if let Some((file, general)) = self.general() {
            let guest = general.get("allowguest");
            if guest.is_none_or(|g| g.value.eq_ignore_ascii_case("yes")) {
                let context = general
                    .get("context")
                    .map_or("default", |c| c.value.as_str());
                let (severity, id, reach) = if self.outbound_capable(context, 0) {
                    (
                        Severity::Critical,
                        "sip.unauth_outbound",
                        " and its context reaches outbound routes",
                    )
                } else {
                    (Severity::High, "sip.allowguest", "")
                };
                out.push(
                    Finding::new(
                        id,
                        severity,
                        format!("chan_sip accepts unauthenticated calls (allowguest=yes{}){reach}", if guest.is_none() { " by default" } else { "" }),
                        "set allowguest=no in [general] of sip.conf (FreePBX: Settings > Asterisk SIP Settings > Allow Anonymous Inbound SIP Calls = No)",
                    )
                    .at(file, Some(guest.map_or(general.line, |g| g.line))),
                );
            }
        }
        for (file, s) in self.pjsip_sections() {
            if s.name == "anonymous" && s.get("type").is_some_and(|t| t.value == "endpoint") {
                let context = s.get("context").map_or("default", |c| c.value.as_str());
                let outbound = self.outbound_capable(context, 0);
                out.push(
                    Finding::new(
                        if outbound { "sip.unauth_outbound" } else { "sip.anonymous_endpoint" },
                        if outbound { Severity::Critical } else { Severity::High },
                        format!(
                            "PJSIP accepts anonymous callers (endpoint [anonymous], context {context}){}",
                            if outbound { " that reach outbound routes" } else { "" }
                        ),
                        "remove the [anonymous] endpoint, or give it a context that only reaches your inbound routes",
                    )
                    .at(file, Some(s.line)),
                );
            }
        }
        if !self.present() {
            return out;
        }
        // Transport security, shown against the main SIP file.
        let file = self
            .pjsip
            .first()
            .or(self.chan_sip.first())
            .map(|f| f.path.clone())
            .unwrap_or_default();
        let tls = self
            .pjsip_sections()
            .any(|(_, s)| s.get("protocol").is_some_and(|p| p.value == "tls"))
            || self
                .general()
                .is_some_and(|(_, g)| g.get("tlsenable").is_some_and(|t| t.value == "yes"));
        if !tls {
            out.push(
                Finding::new(
                    "transport.no_tls",
                    Severity::Medium,
                    "no SIP over TLS transport: signalling and credentials travel in clear text",
                    "add a transport with protocol=tls (port 5061, a certificate) and move phones and trunks to it",
                )
                .at(&file, None),
            );
        }
        let srtp = self.pjsip_sections().any(|(_, s)| {
            s.get("media_encryption")
                .is_some_and(|m| m.value == "sdes" || m.value == "dtls")
        }) || self
            .chan_sip
            .iter()
            .flat_map(|f| &f.sections)
            .any(|s| s.get("encryption").is_some_and(|e| e.value == "yes"));
        if !srtp {
            out.push(
                Finding::new(
                    "transport.no_srtp",
                    Severity::Medium,
                    "no endpoint uses SRTP: calls can be recorded by anyone on the path",
                    "set media_encryption=sdes (with TLS) or dtls on the endpoints",
                )
                .at(&file, None),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_secrets() {
        assert_eq!(weakness("1234", "100"), Some("a common password"));
        assert_eq!(weakness("100", "100"), Some("equal to the user name"));
        assert_eq!(weakness("98765432109", "100"), Some("digits only"));
        assert_eq!(weakness("Ab3dE", "100"), Some("shorter than 12 characters"));
        assert_eq!(weakness("x7Gq2LmZ9pT4vW8k", "100"), None);
    }
}
