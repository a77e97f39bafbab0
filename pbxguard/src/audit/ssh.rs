//! sshd beside the PBX: port, password logins, root logins.

use super::{Finding, Root, Severity};

/// sshd's effective value of `keyword` (the first one wins, drop-ins are read first as
/// Debian's `Include` at the top does), with its file and line.
fn setting(files: &[(String, String)], keyword: &str) -> Option<(String, String, usize)> {
    files.iter().find_map(|(path, text)| {
        text.lines().enumerate().find_map(|(i, line)| {
            let line = line.split('#').next()?.trim();
            let (key, value) = line.split_once(char::is_whitespace)?;
            key.eq_ignore_ascii_case(keyword)
                .then(|| (value.trim().to_string(), path.clone(), i + 1))
        })
    })
}

/// The SSH findings.
pub fn check(root: &Root) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut files = Vec::new();
    for path in root
        .files("/etc/ssh/sshd_config.d", |n| n.ends_with(".conf"))
        .into_iter()
        .chain(["/etc/ssh/sshd_config".to_string()])
    {
        match root.read(&path) {
            Ok(Some(text)) => files.push((path, text)),
            Ok(None) => {}
            Err(f) => out.push(f),
        }
    }
    let Some(main) = files
        .iter()
        .find(|(p, _)| p == "/etc/ssh/sshd_config")
        .map(|(p, _)| p.clone())
    else {
        return out;
    };
    match setting(&files, "PasswordAuthentication") {
        Some((v, file, line)) if v.eq_ignore_ascii_case("yes") => out.push(
            Finding::new(
                "ssh.password_auth",
                Severity::High,
                "sshd accepts password logins",
                "set PasswordAuthentication no and log in with keys",
            )
            .at(&file, Some(line)),
        ),
        None => out.push(
            Finding::new(
                "ssh.password_auth",
                Severity::High,
                "sshd accepts password logins (the default)",
                "set PasswordAuthentication no and log in with keys",
            )
            .at(&main, None),
        ),
        _ => {}
    }
    if let Some((v, file, line)) = setting(&files, "PermitRootLogin")
        && v.eq_ignore_ascii_case("yes")
    {
        out.push(
            Finding::new(
                "ssh.root_login",
                Severity::High,
                "sshd lets root log in with a password",
                "set PermitRootLogin prohibit-password (or no)",
            )
            .at(&file, Some(line)),
        );
    }
    match setting(&files, "Port") {
        Some((v, file, line)) if v == "22" => out.push(
            Finding::new(
                "ssh.port_22",
                Severity::Low,
                "sshd listens on port 22, the first one scanners try",
                "move sshd to another port or protect 22/tcp with a [[protect]] rule",
            )
            .at(&file, Some(line)),
        ),
        None => out.push(
            Finding::new(
                "ssh.port_22",
                Severity::Low,
                "sshd listens on port 22 (the default), the first one scanners try",
                "move sshd to another port or protect 22/tcp with a [[protect]] rule",
            )
            .at(&main, None),
        ),
        _ => {}
    }
    out
}

/// sshd's port (22 unless configured).
pub fn port(root: &Root) -> u16 {
    let files: Vec<(String, String)> = root
        .files("/etc/ssh/sshd_config.d", |n| n.ends_with(".conf"))
        .into_iter()
        .chain(["/etc/ssh/sshd_config".to_string()])
        .filter_map(|p| root.read(&p).ok().flatten().map(|t| (p, t)))
        .collect();
    setting(&files, "Port")
        .and_then(|(v, _, _)| v.parse().ok())
        .unwrap_or(22)
}
