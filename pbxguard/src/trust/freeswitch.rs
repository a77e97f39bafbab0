//! FreeSWITCH's peers: the `proxy` and `realm` params of sofia gateways
//! (`<gateway name="..."><param name="proxy" value="..."/></gateway>`) in the sip profiles.

use std::path::Path;

use super::{TrustEntry, parse_peer};

/// Gateways in every `*.xml` under `dir` (recursively, as profiles include their gateway
/// directories).
pub fn gateways(dir: &Path) -> Vec<TrustEntry> {
    let mut files = Vec::new();
    collect_xml(dir, &mut files, 0);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        // FreeSWITCH's X-PRE-PROCESS lines are XML processing instructions; roxmltree
        // accepts them. A file that is not XML is skipped.
        let Ok(doc) = roxmltree::Document::parse(&text) else {
            tracing::warn!(file = %file.display(), "not readable as XML; its gateways are not trusted");
            continue;
        };
        for gateway in doc.descendants().filter(|n| n.has_tag_name("gateway")) {
            for param in gateway.children().filter(|n| n.has_tag_name("param")) {
                let origin = match param.attribute("name") {
                    Some("proxy") => "sofia gateway proxy",
                    Some("realm") => "sofia gateway realm",
                    Some("outbound-proxy") => "sofia gateway outbound-proxy",
                    _ => continue,
                };
                let Some(peer) = param.attribute("value").and_then(parse_peer) else {
                    continue;
                };
                out.push(TrustEntry {
                    peer,
                    file: file.clone(),
                    line: doc.text_pos_at(param.range().start).row as usize,
                    origin,
                });
            }
        }
    }
    out
}

fn collect_xml(dir: &Path, out: &mut Vec<std::path::PathBuf>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() && depth < 4 {
            collect_xml(&path, out, depth + 1);
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "xml") {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::Peer;

    #[test]
    fn gateway_proxy_and_realm() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("external")).unwrap();
        std::fs::write(
            dir.path().join("external/provider.xml"),
            r#"<include>
  <!-- <gateway name="old"><param name="proxy" value="192.0.2.1"/></gateway> -->
  <gateway name="provider">
    <param name="username" value="203.0.113.99"/>
    <param name="proxy" value="sip.provider.example:5060"/>
    <param name="realm" value="203.0.113.7"/>
    <param name="register" value="true"/>
  </gateway>
  <gateway name="evil &quot;x&quot;">
    <param name="proxy" value="1.2.3.4 5.6.7.8"/>
  </gateway>
</include>
"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("broken.xml"), "<include><gateway").unwrap();
        let got: Vec<(String, usize, &str)> = gateways(dir.path())
            .into_iter()
            .map(|e| {
                let peer = match e.peer {
                    Peer::Net(n) => n.to_string(),
                    Peer::Name(n) => n,
                };
                (peer, e.line, e.origin)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("sip.provider.example".to_string(), 5, "sofia gateway proxy"),
                ("203.0.113.7/32".to_string(), 6, "sofia gateway realm"),
            ]
        );
    }
}
