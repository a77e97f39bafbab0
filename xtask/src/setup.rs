//! Idempotent machine setup: each step checks first and only installs what is missing.

use std::process::Command;

use anyhow::{Context as _, bail};

/// Debian packages the daemon, its tests and the demo use (`systemd-journal-remote` writes
/// the journal files the journal-source tests follow; `sipvicious` is the scanner the
/// perimeter tests must stop and `sip-tester` (sipp) the phone they must let through;
/// `libmaxmind-db-writer-perl` builds the geo tests' databases; `kamailio` and `rsyslog` are
/// the real PBX and syslog of `tests/kamailio_e2e.rs`; `nats-server` is the JetStream of
/// `tests/cluster_e2e.rs` and the cluster benchmark; `fonts-dejavu-core` holds the font the
/// benchmark charts of `cargo xtask bench --plots` are drawn with).
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
    "kamailio",
    "rsyslog",
    "nats-server",
    "fonts-dejavu-core",
];
/// The bpf-linker release verified against the pinned nightly (ARCHITECTURE.md, "Crate layout").
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Runs every step.
pub fn run() -> anyhow::Result<()> {
    apt()?;
    crowdsec()?;
    nightly()?;
    bpf_linker()?;
    cargo_deb()?;
    geolite2()?;
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

/// Debian's `kamailio` package enables and starts `kamailio.service`, a SIP proxy on every
/// address; the tests run their own inside a namespace, so when setup itself installs the
/// package it stops and disables that unit again (a Kamailio installed before is left alone).
fn apt() -> anyhow::Result<()> {
    let had_kamailio = installed("kamailio");
    install_missing(APT_PACKAGES)?;
    if !had_kamailio && std::path::Path::new("/run/systemd/system").exists() {
        check(Command::new("systemctl").args(["disable", "--now", "kamailio.service"]))?;
    }
    Ok(())
}

/// Where Debian's `crowdsec` postinst looks before registering with CrowdSec's Central API.
const CROWDSEC_CAPI: &str = "/etc/crowdsec/online_api_credentials.yaml";

/// Debian's `crowdsec` (1.4.6 on bookworm): the real Local API the bouncer tests run in a
/// namespace of their own (`pbxguard_lab::crowdsec::Lapi`, private config and database).
/// Not in [`APT_PACKAGES`] because its postinst registers with the online Central API, which
/// fails (and fails the install) offline, unless `online_api_credentials.yaml` already holds
/// a comment (README.Debian): so the opt-out is written first when the file is missing or
/// empty (an empty one means "register"); a file with content is left alone. The package also
/// enables and starts `crowdsec.service` (an agent reading the host's logs and a LAPI on
/// 127.0.0.1:8080); when setup itself installs it on a systemd host, that unit is stopped
/// and disabled again. Without systemd nothing is started.
fn crowdsec() -> anyhow::Result<()> {
    if installed("crowdsec") && std::path::Path::new("/usr/bin/cscli").exists() {
        return Ok(());
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!("crowdsec is missing: run `cargo xtask setup` as root");
    }
    let capi = std::path::Path::new(CROWDSEC_CAPI);
    let has_content = std::fs::metadata(capi).is_ok_and(|m| m.len() > 0);
    if !has_content {
        std::fs::create_dir_all("/etc/crowdsec").context("creating /etc/crowdsec")?;
        std::fs::write(
            capi,
            "# no thanks: no Central API registration (pbxguard test machine, see README.Debian)\n",
        )
        .with_context(|| format!("writing {CROWDSEC_CAPI}"))?;
    }
    install_missing(&["crowdsec"])?;
    if std::path::Path::new("/run/systemd/system").exists() {
        check(Command::new("systemctl").args(["disable", "--now", "crowdsec.service"]))?;
    }
    if output(Command::new("cscli").arg("version")).is_none() {
        bail!("crowdsec installed but `cscli version` fails");
    }
    Ok(())
}

fn installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|s| s.contains("install ok installed"))
}

fn install_missing(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|pkg| !installed(pkg))
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

/// What the benchmarks compare against (not needed to build or test); `python3-pyinotify`
/// is only recommended by `fail2ban`, and `fail2ban_daemon` runs its pyinotify backend.
pub fn bench_peers() -> anyhow::Result<()> {
    install_missing(&["fail2ban", "python3-pyinotify", "netsniff-ng"])
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

/// The real GeoLite2-City database (PyPI `maxminddb-geolite2`, pinned) and the Python
/// `maxminddb` reader, pip-installed into a directory of their own, for the geo test and the
/// bench (`pbxguard_lab::geolite2`).
fn geolite2() -> anyhow::Result<()> {
    use pbxguard_lab::geolite2::{CITY_DB, PACKAGE_VERSION, PYTHON_DIR, READER_VERSION};
    let dir = std::path::Path::new(PYTHON_DIR);
    let present = [
        format!("maxminddb_geolite2-{PACKAGE_VERSION}.dist-info"),
        format!("maxminddb-{READER_VERSION}.dist-info"),
    ]
    .iter()
    .all(|info| dir.join(info).is_dir());
    if present && std::path::Path::new(CITY_DB).is_file() {
        return Ok(());
    }
    if output(Command::new("python3").args(["-m", "pip", "--version"])).is_none() {
        install_missing(&["python3-pip"])?;
    }
    eprintln!("setup: installing maxminddb-geolite2 {PACKAGE_VERSION} into {PYTHON_DIR}");
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating {PYTHON_DIR} (run cargo xtask setup as root)"))?;
    // --target installs outside every Python environment (and so past Debian's
    // externally-managed marker); --upgrade replaces an older copy there.
    check(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--root-user-action=ignore", "--upgrade", "--target"])
            .arg(dir)
            .arg(format!("maxminddb-geolite2=={PACKAGE_VERSION}"))
            .arg(format!("maxminddb=={READER_VERSION}")),
    )?;
    let db = output(
        Command::new("python3")
            .args([
                "-c",
                "import _maxminddb_geolite2 as g; print(g.geolite2_database())",
            ])
            .env("PYTHONPATH", dir),
    )
    .context("maxminddb-geolite2 installed but its database path cannot be imported")?;
    let db = std::path::PathBuf::from(db.trim());
    if !db.is_file() {
        bail!(
            "maxminddb-geolite2 names {} but it is missing",
            db.display()
        );
    }
    let link = std::path::Path::new(CITY_DB);
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&db, link)
        .with_context(|| format!("symlinking {} to {}", link.display(), db.display()))
}
