//! The platform: an operating system, PBX, PHP or MariaDB past its end of support gets no
//! security fixes (status as of late 2026).

use super::{Finding, Root, Severity};

/// End-of-life OS releases: (os-release ID, VERSION_ID prefix, name).
const EOL_OS: [(&str, &str, &str); 12] = [
    ("debian", "8", "Debian 8"),
    ("debian", "9", "Debian 9"),
    ("debian", "10", "Debian 10"),
    ("debian", "11", "Debian 11 (LTS ended August 2026)"),
    ("centos", "6", "CentOS 6"),
    ("centos", "7", "CentOS 7"),
    ("centos", "8", "CentOS 8"),
    ("sangoma", "7", "Sangoma Linux 7 (CentOS 7 based)"),
    ("rhel", "7", "RHEL 7"),
    ("ubuntu", "16.04", "Ubuntu 16.04"),
    ("ubuntu", "18.04", "Ubuntu 18.04"),
    ("ubuntu", "20.04", "Ubuntu 20.04"),
];

fn os_release_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim_matches('"'))
}

/// Leading numeric components of a Debian version (`1:16.28.0~dfsg-1` -> [16, 28, 0]).
fn numbers(version: &str) -> Vec<u32> {
    let upstream = version.split_once(':').map_or(version, |(_, v)| v);
    upstream
        .split(['.', '-', '~', '+'])
        .map_while(|p| p.parse().ok())
        .collect()
}

/// Why `package` at `version` is out of support, if it is.
fn eol_package(package: &str, version: &str) -> Option<String> {
    let n = numbers(version);
    let major = *n.first()?;
    let minor = n.get(1).copied().unwrap_or(0);
    if package == "asterisk" && major < 20 {
        return Some(format!(
            "Asterisk {major} is past its end of life (supported: 20, 22 and later)"
        ));
    }
    if package == "mariadb-server" && (major, minor) < (10, 11) {
        return Some(format!(
            "MariaDB {major}.{minor} is past its end of life (supported: 10.11 and later)"
        ));
    }
    if let Some(php) = package
        .strip_prefix("php")
        .filter(|p| p.chars().next().is_some_and(|c| c.is_ascii_digit()))
    {
        let n = numbers(php);
        if let (Some(&maj), Some(&min)) = (n.first(), n.get(1))
            && (maj, min) < (8, 2)
            && !php.contains('-')
        {
            return Some(format!(
                "PHP {maj}.{min} is past its end of life (supported: 8.2 and later)"
            ));
        }
    }
    None
}

/// The platform findings.
pub fn check(root: &Root) -> Vec<Finding> {
    let mut out = Vec::new();
    match root.read("/etc/os-release") {
        Ok(Some(text)) => {
            let id = os_release_field(&text, "ID").unwrap_or("");
            let version = os_release_field(&text, "VERSION_ID").unwrap_or("");
            if let Some((_, _, name)) = EOL_OS.iter().find(|(i, v, _)| {
                *i == id && (version == *v || version.starts_with(&format!("{v}.")))
            }) {
                out.push(
                    Finding::new(
                        "platform.eol_os",
                        Severity::High,
                        format!("{name} no longer gets security updates"),
                        "upgrade to a supported release (e.g. Debian 12, which FreePBX 17 runs on)",
                    )
                    .at("/etc/os-release", None),
                );
            }
        }
        Ok(None) => {}
        Err(f) => out.push(f),
    }
    match root.read("/var/lib/dpkg/status") {
        Ok(Some(text)) => {
            for block in text.split("\n\n") {
                let field = |k: &str| block.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
                let (Some(package), Some(version), Some(status)) =
                    (field("Package:"), field("Version:"), field("Status:"))
                else {
                    continue;
                };
                if !status.ends_with("installed") || status.contains("not-installed") {
                    continue;
                }
                if let Some(why) = eol_package(package, version) {
                    out.push(
                        Finding::new(
                            "platform.eol_software",
                            Severity::High,
                            format!("{why} ({package} {version})"),
                            format!("upgrade {package} to a supported release"),
                        )
                        .at("/var/lib/dpkg/status", None),
                    );
                }
            }
        }
        Ok(None) => {}
        Err(f) => out.push(f),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_support() {
        assert!(eol_package("asterisk", "1:16.28.0~dfsg-0+deb11u3").is_some());
        assert!(eol_package("asterisk", "1:20.5.0-1").is_none());
        assert!(eol_package("php7.4", "7.4.33-1+deb11u5").is_some());
        assert!(eol_package("php8.2", "8.2.20-1~deb12u1").is_none());
        assert!(eol_package("php8.2-cli", "8.2.20-1~deb12u1").is_none());
        assert!(eol_package("mariadb-server", "1:10.5.23-0+deb11u1").is_some());
        assert!(eol_package("mariadb-server", "1:10.11.6-0+deb12u1").is_none());
        assert!(eol_package("nginx", "1.22.1-9").is_none());
    }
}
