//! Kamailio's and OpenSIPS's peers: `dispatcher.list` destinations
//! (`setid destination [flags [priority [attrs]]]`) and the permissions module's db_text
//! `address` table (`id:grp:ip_addr:mask:port:tag`).

use std::path::Path;

use ipnet::IpNet;

use super::{Peer, TrustEntry, parse_peer, uri_host};

/// Destinations of `dispatcher.list`.
pub fn dispatcher(file: &Path) -> Vec<TrustEntry> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let mut fields = line.split_whitespace();
            fields.next()?.parse::<u32>().ok()?;
            let destination = fields.next()?;
            Some(TrustEntry {
                peer: uri_host(destination)?,
                file: file.to_path_buf(),
                line: i + 1,
                origin: "dispatcher destination",
            })
        })
        .collect()
}

/// Rows of the db_text `address` table: the `ip_addr` and `mask` columns, found by the
/// header line's column names.
pub fn address_table(file: &Path) -> Vec<TrustEntry> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    let mut lines = text.lines().enumerate();
    let Some((_, header)) = lines.next() else {
        return Vec::new();
    };
    let columns: Vec<String> = header
        .split(' ')
        .map(|c| c.split('(').next().unwrap_or("").to_string())
        .collect();
    let (Some(ip_col), mask_col) = (
        columns.iter().position(|c| c == "ip_addr"),
        columns.iter().position(|c| c == "mask"),
    ) else {
        return Vec::new();
    };
    lines
        .filter_map(|(i, row)| {
            // db_text escapes ':' inside values as '\:'; addresses never contain it except
            // IPv6, which db_text writes escaped.
            let fields: Vec<String> = split_dbtext(row);
            let ip = fields.get(ip_col)?;
            let mask: u8 = mask_col
                .and_then(|c| fields.get(c))
                .and_then(|m| m.parse().ok())
                .unwrap_or(if ip.contains(':') { 128 } else { 32 });
            let peer = match ip.parse::<std::net::IpAddr>() {
                Ok(addr) => Peer::Net(IpNet::new(addr, mask).ok()?.trunc()),
                Err(_) => parse_peer(ip)?,
            };
            Some(TrustEntry {
                peer,
                file: file.to_path_buf(),
                line: i + 1,
                origin: "permissions address",
            })
        })
        .collect()
}

fn split_dbtext(row: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = row.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    out.last_mut().expect("non-empty").push(next);
                }
            }
            ':' => out.push(String::new()),
            c => out.last_mut().expect("non-empty").push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(entries: Vec<TrustEntry>) -> Vec<(String, usize)> {
        entries
            .into_iter()
            .map(|e| {
                let peer = match e.peer {
                    Peer::Net(n) => n.to_string(),
                    Peer::Name(n) => n,
                };
                (peer, e.line)
            })
            .collect()
    }

    #[test]
    fn dispatcher_destinations() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dispatcher.list");
        std::fs::write(
            &file,
            "# setid destination flags priority attrs\n1 sip:203.0.113.10:5060 0 0 duid=a;note=sip:6.6.6.6\n\
             1 sip:gw.provider.example;transport=tcp\nx sip:192.0.2.1\n2 sip:[2001:db8::10]:5060\n2\n",
        )
        .unwrap();
        assert_eq!(
            peers(dispatcher(&file)),
            [
                ("203.0.113.10/32".to_string(), 2),
                ("gw.provider.example".to_string(), 3),
                ("2001:db8::10/128".to_string(), 5),
            ]
        );
    }

    #[test]
    fn dbtext_address_rows() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("address");
        std::fs::write(
            &file,
            "id(int,auto) grp(int) ip_addr(string) mask(int) port(int) tag(string,null)\n\
             1:1:203.0.113.0:24:0:trunk\n2:1:2001\\:db8\\:\\:20:128:0:\n3:1:not an ip:32:0:\n",
        )
        .unwrap();
        assert_eq!(
            peers(address_table(&file)),
            [
                ("203.0.113.0/24".to_string(), 2),
                ("2001:db8::20/128".to_string(), 3),
            ]
        );
    }
}
