//! Human and JSON renderings of daemon answers. Tables follow what admins know from
//! `cscli decisions list` and `fail2ban-client status`.

use std::time::{Duration, SystemTime};

use serde_json::Value;

fn json(data: &Value) -> String {
    format!(
        "{}\n",
        serde_json::to_string_pretty(data).expect("values serialize")
    )
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
    out
}

/// One table row per element of a JSON array.
fn rows(data: &Value, row: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    data.as_array().into_iter().flatten().map(row).collect()
}

/// Replaces control characters so hostile text (reasons come from logs) cannot rewrite
/// the admin's terminal.
pub(super) fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn remaining(expires: &str) -> String {
    match humantime::parse_rfc3339_weak(expires) {
        Ok(t) => match t.duration_since(SystemTime::now()) {
            Ok(left) => format!(
                "{expires} (in {})",
                humantime::format_duration(Duration::from_secs(left.as_secs()))
            ),
            Err(_) => format!("{expires} (ended)"),
        },
        Err(_) => expires.to_string(),
    }
}

/// `pbxguard status`
pub fn status(data: &Value, as_json: bool) -> String {
    if as_json {
        return json(data);
    }
    let uptime = humantime::format_duration(Duration::from_secs(num(data, "uptime_secs")));
    let mut out = format!(
        "pbxguard {}: running, backend {}, up {uptime}\n",
        text(data, "version"),
        text(data, "backend")
    );
    let interfaces: Vec<String> = data["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let pinned = if i["pinned"].as_bool() == Some(true) {
                ", pinned"
            } else {
                ""
            };
            format!("{} ({}{pinned})", text(i, "name"), text(i, "mode"))
        })
        .collect();
    if let Some(note) = data["backend_note"].as_str() {
        out.push_str(&format!("backend note: {}\n", clean(note)));
    }
    out.push_str(&format!("interfaces: {}\n", interfaces.join(", ")));
    for off in data["rules_off"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "rule off: {}: {}\n",
            clean(text(off, "rule")),
            clean(text(off, "reason"))
        ));
    }
    out.push_str(&format!(
        "bans: {} active\nallowlist: {} networks\n",
        num(data, "bans"),
        num(data, "allowlisted")
    ));
    out.push_str(&format!(
        "known from success lines: {} (spoofable evidence against them ignored: {})\n",
        num(data, "known"),
        num(data, "ignored_spoofable")
    ));
    if let Some(peers) = data["pbx_trusted"].as_array().filter(|p| !p.is_empty()) {
        out.push_str(&format!(
            "trusted from the PBX configs: {} (never banned; `status --json` names file and line)\n",
            peers.len()
        ));
    }
    let mode = text(data, "mode");
    if mode == "observe" {
        out.push_str(&format!(
            "mode: observe (dry run: nothing is banned automatically; {} bans would have been made)\n",
            num(data, "would_ban")
        ));
    } else {
        out.push_str("mode: enforce\n");
    }
    if data["offhours_active"].as_bool() == Some(true) {
        out.push_str("off-hours profile: active\n");
    }
    for source in data["sources"].as_array().into_iter().flatten() {
        let state = if source["alive"].as_bool() == Some(false) {
            "FOLLOWER STOPPED (restart pbxguard; see its log)".to_string()
        } else {
            match source["last_read"].as_str() {
                Some(at) => format!("following, last line read {at}"),
                None => "following, nothing read yet".into(),
            }
        };
        out.push_str(&format!(
            "source {}: {state}; {} lines, {} matches\n",
            clean(text(source, "name")),
            num(source, "lines"),
            num(source, "matches")
        ));
    }
    for feed in data["feeds"].as_array().into_iter().flatten() {
        let refreshed = feed["last_refresh"].as_str().unwrap_or("never");
        out.push_str(&format!(
            "feed {}: {} entries, {} refused, last refresh {refreshed}{}\n",
            clean(text(feed, "name")),
            num(feed, "entries"),
            num(feed, "refused"),
            match feed["last_error"].as_str() {
                Some(e) => format!(
                    "; REFRESH FAILED: {} (the last good content stays)",
                    clean(e)
                ),
                None => String::new(),
            }
        ));
    }
    if let Some(cs) = data["crowdsec"].as_object() {
        let cs = Value::Object(cs.clone());
        out.push_str(&format!(
            "crowdsec {}: {}; {} bans in force, {} applied, {} lifted, {} refused\n",
            clean(text(&cs, "lapi_url")),
            if cs["connected"].as_bool() == Some(true) {
                "pulling".to_string()
            } else {
                format!(
                    "NOT REACHABLE ({}; enforced decisions stay)",
                    clean(cs["last_error"].as_str().unwrap_or("not pulled yet"))
                )
            },
            num(&cs, "bans"),
            num(&cs, "applied"),
            num(&cs, "lifted"),
            num(&cs, "refused")
        ));
    }
    if let Some(cluster) = data["cluster"].as_object() {
        out.push_str(&cluster_status(&Value::Object(cluster.clone())));
    }
    if data["journal_stale"].as_bool() == Some(true) {
        out.push_str("warning: the ban journal could not be written (disk full?); bans in force are kept in memory and the journal is rewritten on the next change: free disk space in the state directory\n");
    }
    if num(data, "not_enforced") > 0 {
        out.push_str(&format!(
            "warning: {} bans were due but refused by the kernel (map full?): raise [ban] max_entries\n",
            num(data, "not_enforced")
        ));
    }
    for damage in data["store_damage"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "warning: ban journal line {} was damaged and skipped: {}\n",
            num(damage, "line"),
            text(damage, "problem")
        ));
    }
    out
}

/// The `[cluster]` lines of `status`.
fn cluster_status(c: &Value) -> String {
    let link = if c["connected"].as_bool() == Some(true) {
        format!("connected to {}", clean(text(c, "server")))
    } else {
        format!(
            "NOT CONNECTED to {} ({}; local protection is unaffected, retrying)",
            clean(text(c, "server")),
            clean(c["last_error"].as_str().unwrap_or("connecting"))
        )
    };
    let mut out = format!(
        "cluster: node {}, stream {}, {link}; last sequence {}\ncluster: published {}, received {}, applied {}, refused {}, malformed {}\n",
        clean(text(c, "node")),
        clean(text(c, "stream")),
        num(c, "last_sequence"),
        num(c, "published"),
        num(c, "received"),
        num(c, "applied"),
        num(c, "refused"),
        num(c, "malformed"),
    );
    for (node, peer) in c["peers"].as_object().into_iter().flatten() {
        out.push_str(&format!(
            "cluster peer {}: {} bans in force here, {} received, {} refused\n",
            clean(node),
            num(peer, "bans"),
            num(peer, "received"),
            num(peer, "refused")
        ));
    }
    out
}

/// `pbxguard fraud status`
pub fn fraud_status(data: &Value, as_json: bool) -> String {
    if as_json {
        return json(data);
    }
    let mut out = String::new();
    for source in data["sources"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "call records {}: {} calls, {} rows skipped, last read {}\n",
            clean(text(source, "path")),
            num(source, "rows"),
            num(source, "malformed"),
            source["last_read"].as_str().unwrap_or("never")
        ));
    }
    let join = |v: &Value| -> String {
        let parts: Vec<String> = v
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, n)| format!("{} {}", clean(k), n.as_u64().unwrap_or(0)))
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    };
    out.push_str(&format!("calls by class: {}\n", join(&data["calls"])));
    out.push_str(&format!("rule hits: {}\n", join(&data["hits"])));
    for ext in data["extensions"].as_array().into_iter().flatten() {
        let closest = &ext["closest"];
        let standing = if closest.is_object() {
            format!(
                "closest to {}: {} of {}",
                clean(text(closest, "rule")),
                closest["value"].as_f64().unwrap_or(0.0),
                closest["limit"].as_f64().unwrap_or(0.0)
            )
        } else {
            "no limit near".into()
        };
        out.push_str(&format!(
            "extension {}: last hour {}; last day minutes {}; {standing}\n",
            clean(text(ext, "extension")),
            join(&ext["calls_last_hour"]),
            join(&ext["minutes_last_day"]),
        ));
    }
    out
}

/// `pbxguard bans list`
pub fn bans(data: &Value, as_json: bool) -> String {
    if as_json {
        return json(data);
    }
    let rows = rows(data, |b| {
        vec![
            text(b, "net").to_string(),
            clean(text(b, "source")),
            b["rule"].as_str().map(clean).unwrap_or_else(|| "-".into()),
            b["failures"]
                .as_u64()
                .map(|f| f.to_string())
                .unwrap_or_else(|| "-".into()),
            b["evidence"]
                .as_str()
                .map(clean)
                .unwrap_or_else(|| "-".into()),
            clean(text(b, "reason")),
            text(b, "created").to_string(),
            b["expires"]
                .as_str()
                .map(remaining)
                .unwrap_or_else(|| "permanent".into()),
        ]
    });
    if rows.is_empty() {
        return "no active bans\n".into();
    }
    table(
        &[
            "NET", "SOURCE", "RULE", "FAILURES", "EVIDENCE", "REASON", "CREATED", "EXPIRES",
        ],
        &rows,
    )
}

/// `pbxguard bans add`
pub fn ban_added(data: &Value) -> String {
    if let Some(many) = data.as_array() {
        return many.iter().map(ban_added).collect();
    }
    let until = data["expires"]
        .as_str()
        .map(remaining)
        .unwrap_or_else(|| "permanently".into());
    format!("banned {} until {until}\n", text(data, "net"))
        .replace("until permanently", "permanently")
}

/// `pbxguard bans del`
pub fn ban_removed(data: &Value) -> String {
    format!("unbanned {}\n", text(data, "net"))
}

/// `pbxguard stats`
pub fn stats(data: &Value, as_json: bool) -> String {
    if as_json {
        return json(data);
    }
    let rows = rows(data, |r| {
        vec![
            text(r, "reason").to_string(),
            text(r, "action").to_string(),
            num(r, "packets").to_string(),
            num(r, "bytes").to_string(),
        ]
    });
    table(&["REASON", "ACTION", "PACKETS", "BYTES"], &rows)
}

/// `pbxguard explain IP`
pub fn explain(data: &Value, as_json: bool) -> String {
    if as_json {
        return format!("{data:#}\n");
    }
    let mut out = format!("{}\n", text(data, "ip"));
    match data["never_banned"].as_str() {
        Some(why) => out.push_str(&format!("  never banned: {}\n", clean(why))),
        None => out.push_str("  may be banned (not allowlisted, not a PBX peer, not this host)\n"),
    }
    for peer in data["pbx_trusted"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  PBX peer: {} ({} at {}:{})\n",
            text(peer, "net"),
            text(peer, "origin"),
            clean(text(peer, "file")),
            num(peer, "line")
        ));
    }
    if let Some(known) = data["known"].as_object() {
        out.push_str(&format!(
            "  known since {} until {} (success line: {} {}); spoofable evidence never bans it\n",
            known.get("since").and_then(Value::as_str).unwrap_or("?"),
            known.get("until").and_then(Value::as_str).unwrap_or("?"),
            known.get("filter").and_then(Value::as_str).unwrap_or("?"),
            known.get("rule").and_then(Value::as_str).unwrap_or("?")
        ));
    }
    out.push_str(&format!(
        "  failures counted for {}: {}\n",
        text(data, "tracked_as"),
        num(data, "failures")
    ));
    if let Some(offense) = data["offense"].as_object() {
        out.push_str(&format!(
            "  offenses: {} (last {})\n",
            offense.get("count").and_then(Value::as_u64).unwrap_or(0),
            offense.get("last").and_then(Value::as_str).unwrap_or("?")
        ));
    }
    let bans = data["bans"].as_array().cloned().unwrap_or_default();
    if bans.is_empty() {
        out.push_str("  not banned\n");
    }
    for ban in &bans {
        let until = ban["expires"].as_str().unwrap_or("permanent");
        out.push_str(&format!(
            "  banned by {} until {until}: {} ({})\n",
            text(ban, "net"),
            clean(text(ban, "reason")),
            clean(text(ban, "source"))
        ));
    }
    if data["geo_blocked"].as_bool() == Some(true) {
        out.push_str("  in a geo-blocked network\n");
    }
    for feed in data["feeds"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  listed by blocklist feed {} (dropped)\n",
            clean(feed.as_str().unwrap_or(""))
        ));
    }
    out
}
