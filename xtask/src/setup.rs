//! Idempotent machine setup: each step checks first and only installs what is missing.

use std::process::Command;

use anyhow::{Context as _, bail};

/// Debian packages the daemon, its tests and the demo use (`systemd-journal-remote` writes
/// the journal files the journal-source tests follow; `sipvicious` is the scanner the
/// perimeter tests must stop and `sip-tester` (sipp) the phone they must let through;
/// `libmaxmind-db-writer-perl` builds the geo tests' databases).
const APT_PACKAGES: &[&str] = &[
    "iproute2",
    "util-linux",
    "nftables",
    "xdp-tools",
    "ca-certificates",
    "systemd-journal-remote",
    "sipvicious",
    "libmaxmind-db-writer-perl",
    "sip-tester",
];
/// The bpf-linker release verified against the pinned nightly (ARCHITECTURE.md, "Crate layout").
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Runs every step.
pub fn run() -> anyhow::Result<()> {
    apt()?;
    nightly()?;
    bpf_linker()?;
    cargo_deb()?;
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn apt() -> anyhow::Result<()> {
    install_missing(APT_PACKAGES)
}

fn install_missing(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|pkg| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!(
            "missing Debian packages {missing:?}: run as root, or `apt-get install {}`",
            missing.join(" ")
        );
    }
    eprintln!("setup: installing {}", missing.join(" "));
    check(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    check(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// What the benchmarks compare against (not needed to build or test).
pub fn bench_peers() -> anyhow::Result<()> {
    install_missing(&["fail2ban", "netsniff-ng"])
}

fn nightly() -> anyhow::Result<()> {
    if output(Command::new("rustc").args(["+nightly", "-vV"])).is_none() {
        eprintln!("setup: installing the nightly toolchain");
        check(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("setup: adding rust-src to nightly");
        check(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

/// The Debian packaging tool `cargo xtask deb` and the package test use.
fn cargo_deb() -> anyhow::Result<()> {
    if output(Command::new("cargo").args(["deb", "--version"])).is_some() {
        return Ok(());
    }
    eprintln!("setup: installing cargo-deb");
    check(Command::new("cargo").args(["install", "cargo-deb", "--version", "3.8.0", "--locked"]))
}

fn bpf_linker() -> anyhow::Result<()> {
    if let Some(version) = output(Command::new("bpf-linker").arg("--version"))
        && version.contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("rustc +nightly --print sysroot")?
        .trim()
        .to_string();
    let verbose =
        output(Command::new("rustc").args(["+nightly", "-vV"])).context("rustc +nightly -vV")?;
    let major = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("nightly rustc does not report its LLVM version")?
        .to_string();
    // bpf-linker links against the nightly toolchain's own libLLVM (no system LLVM needed).
    let lib = std::path::Path::new(&sysroot).join("lib");
    let prefix = format!("libLLVM.so.{major}.");
    let libllvm = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with(&prefix) && name.contains("-rust-"))
        .with_context(|| {
            format!(
                "no {prefix}*-rust-* in {}; is the nightly toolchain complete?",
                lib.display()
            )
        })?;
    let link = lib.join("libLLVM.so");
    if link.symlink_metadata().is_err() {
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("symlinking {}", link.display()))?;
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {major}");
    check(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &sysroot),
    )
}
