//! `cargo xtask deb`: the Debian package, and the install / upgrade / purge check that
//! `cargo xtask test` runs on this machine.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};

use crate::{release_bin, root};

fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Builds the package (revision `revision`) and returns its path.
pub fn build(revision: &str) -> anyhow::Result<PathBuf> {
    // Completions and the man page come from the binary's own argument definitions.
    let package = target().join("package");
    std::fs::create_dir_all(&package)?;
    for (what, file) in [
        ("bash", "pbxguard.bash"),
        ("zsh", "_pbxguard"),
        ("fish", "pbxguard.fish"),
        ("man", "pbxguard.8"),
    ] {
        let out = Command::new(release_bin())
            .args(["generate", what])
            .output()
            .context("generating completions")?;
        ensure!(out.status.success(), "pbxguard generate {what} failed");
        std::fs::write(package.join(file), out.stdout)?;
    }
    let out = Command::new("cargo")
        .current_dir(root())
        .args([
            "deb",
            "-p",
            "pbxguard",
            "--no-build",
            "--deb-revision",
            revision,
            "--output",
        ])
        .arg(&package)
        .output()
        .context("running cargo deb (cargo xtask setup installs cargo-deb)")?;
    ensure!(
        out.status.success(),
        "cargo deb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    ensure!(
        Path::new(&path).exists(),
        "cargo deb printed no package path: {path}"
    );
    Ok(PathBuf::from(path))
}

fn dpkg(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("dpkg")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()?;
    if !out.status.success() {
        bail!("dpkg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

const CONFIG: &str = "/etc/pbxguard/pbxguard.toml";
const FILES: [&str; 7] = [
    "/usr/sbin/pbxguard",
    CONFIG,
    "/usr/lib/systemd/system/pbxguard.service",
    "/usr/share/bash-completion/completions/pbxguard",
    "/usr/share/zsh/vendor-completions/_pbxguard",
    "/usr/share/man/man8/pbxguard.8.gz",
    "/usr/share/doc/pbxguard/README.md",
];

/// Installs, upgrades and purges the package on this machine, checking contents, that the
/// conffile keeps the admin's edit, and that purge leaves nothing behind.
pub fn check() -> anyhow::Result<()> {
    let first = build("1")?;
    let second = build("2")?;
    let _ = dpkg(&["--purge", "pbxguard"]);
    dpkg(&["-i", first.to_str().unwrap()])?;
    for file in FILES {
        ensure!(Path::new(file).exists(), "{file} missing after install");
    }
    let listed = dpkg(&["-L", "pbxguard"])?;
    ensure!(listed.contains("/usr/sbin/pbxguard"), "dpkg -L: {listed}");
    let conffiles = dpkg(&["-s", "pbxguard"])?;
    ensure!(
        conffiles.contains(CONFIG),
        "pbxguard.toml is not a conffile: {conffiles}"
    );
    let out = Command::new("/usr/sbin/pbxguard")
        .args(["check-config", "--config", CONFIG])
        .output()?;
    ensure!(
        out.status.success(),
        "the installed config does not validate: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The admin edits the config; the upgrade keeps the edit.
    let edited = format!(
        "{}\n# edited by the admin\n",
        std::fs::read_to_string(CONFIG)?
    );
    std::fs::write(CONFIG, &edited)?;
    dpkg(&["--force-confold", "-i", second.to_str().unwrap()])?;
    ensure!(
        std::fs::read_to_string(CONFIG)? == edited,
        "the upgrade overwrote the admin's config"
    );
    let version = dpkg(&["-s", "pbxguard"])?;
    ensure!(
        version.contains("Version: 0.1.0-2"),
        "not upgraded: {version}"
    );

    dpkg(&["--purge", "pbxguard"])?;
    for file in FILES {
        ensure!(!Path::new(file).exists(), "{file} left after purge");
    }
    ensure!(
        !Path::new("/etc/pbxguard").exists(),
        "/etc/pbxguard left after purge"
    );
    println!(
        "deb: installed, upgraded (config kept) and purged {}",
        second.display()
    );
    Ok(())
}
