//! FreeSWITCH directory users: weak passwords, and the shipped `default_password=1234`.

use super::{Finding, Root, Severity, sip::weakness, unreadable};

/// The `default_password` set in vars.xml, with its line.
fn default_password(root: &Root) -> Result<Option<(String, usize)>, Finding> {
    let path = "/etc/freeswitch/vars.xml";
    let Some(text) = root.read(path)? else {
        return Ok(None);
    };
    Ok(text.lines().enumerate().find_map(|(i, line)| {
        let data = line.split("data=\"").nth(1)?.split('"').next()?;
        let value = data.strip_prefix("default_password=")?;
        Some((value.to_string(), i + 1))
    }))
}

/// The FreeSWITCH findings.
pub fn check(root: &Root) -> Vec<Finding> {
    let mut out = Vec::new();
    let default = match default_password(root) {
        Ok(d) => d,
        Err(f) => {
            out.push(f);
            None
        }
    };
    if let Some((value, line)) = &default
        && let Some(why) = weakness(value, "")
    {
        out.push(
            Finding::new(
                "freeswitch.default_password",
                Severity::Critical,
                format!("FreeSWITCH default_password is weak ({why}); every user without its own password uses it"),
                "change default_password in vars.xml to a long random string and give every user its own password",
            )
            .at("/etc/freeswitch/vars.xml", Some(*line)),
        );
    }
    let xml = |name: &str| name.ends_with(".xml");
    for path in root.files_recursive("/etc/freeswitch/directory", &xml) {
        let text = match root.read(&path) {
            Ok(Some(t)) => t,
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
        for user in doc.descendants().filter(|n| n.has_tag_name("user")) {
            let id = user.attribute("id").unwrap_or("");
            for param in user
                .descendants()
                .filter(|n| n.has_tag_name("param") && n.attribute("name") == Some("password"))
            {
                let value = param.attribute("value").unwrap_or("");
                let line = doc.text_pos_at(param.range().start).row as usize;
                // $${default_password} is reported once, above.
                if value.contains("default_password") {
                    continue;
                }
                if let Some(why) = weakness(value, id) {
                    out.push(
                        Finding::new(
                            "freeswitch.weak_password",
                            Severity::Critical,
                            format!("FreeSWITCH user {id} has a weak password ({why})"),
                            "set a random password of at least 16 characters in the user's directory entry",
                        )
                        .at(&path, Some(line)),
                    );
                }
            }
        }
    }
    out
}
