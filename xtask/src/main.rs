//! Project tasks: `cargo xtask <task>`. `setup` is idempotent and every task that needs the
//! toolchain calls it first, so a fresh Debian 12 machine needs only the two README commands.

mod bench;
mod deb;
mod demo;
mod install;
mod plots;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "pbxguard project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a fresh Debian 12 machine needs (apt packages, nightly rust-src, bpf-linker).
    Setup,
    /// Build the XDP program and the daemon (release).
    Build,
    /// Run pbxguard: the namespace demo, or the daemon on a config with --config.
    Run {
        /// Run the daemon in the foreground on this config instead of the demo.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// A self-contained demo in network namespaces it creates and removes.
    Demo,
    /// Formatting, clippy (host and eBPF) and every test, privileged ones included.
    Test,
    /// Formatting and clippy only.
    Lint,
    /// Benchmarks: programs that print numbers (matcher vs fail2ban-regex, time to ban,
    /// XDP and nftables drop rates), optionally kept as JSON and drawn as PNG charts.
    Bench {
        /// Also record every figure in this JSON file (replaced), as nested objects
        /// (docs/benchmarks.md lists the keys).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Draw PNG charts of the figures into this directory after the run.
        #[arg(long, value_name = "DIR")]
        plots: Option<PathBuf>,
        /// Run nothing: draw --plots from this JSON file of an earlier run.
        #[arg(long, value_name = "FILE", requires = "plots", conflicts_with = "json")]
        from: Option<PathBuf>,
    },
    /// Build the Debian package (binary, unit, conffile, completions, man page).
    Deb {
        /// Also install, upgrade and purge it on this machine, checking each step.
        #[arg(long)]
        check: bool,
    },
    /// Build and install the binary, systemd unit and example config (kept if present).
    Install {
        /// Install under this directory instead of / (for packaging).
        #[arg(long, default_value = "/")]
        destdir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Build => {
            setup::run()?;
            build()
        }
        Task::Run {
            config: Some(config),
        } => {
            setup::run()?;
            build()?;
            let status = Command::new(release_bin())
                .args(["run", "--config"])
                .arg(&config)
                .status()
                .context("starting pbxguard")?;
            if !status.success() {
                bail!("pbxguard exited with {status}");
            }
            Ok(())
        }
        Task::Run { config: None } | Task::Demo => {
            setup::run()?;
            build()?;
            demo::run(&release_bin())
        }
        Task::Test => {
            setup::run()?;
            lint()?;
            // Fault injection points on: the ledger's fault tests need them.
            cargo(&[
                "test",
                "--workspace",
                "--exclude",
                "pbxguard-ebpf",
                "--features",
                "pbxguard/failpoints",
            ])?;
            build()?;
            deb::check()
        }
        Task::Deb { check } => {
            setup::run()?;
            build()?;
            if check {
                return deb::check();
            }
            let path = deb::build("1")?;
            println!("{}", path.display());
            Ok(())
        }
        Task::Lint => {
            setup::run()?;
            lint()
        }
        Task::Bench {
            plots: out,
            from: Some(from),
            ..
        } => {
            let dir = out.context("--from needs --plots DIR")?;
            for png in plots::render(&from, &dir)? {
                println!("plot: {}", png.display());
            }
            Ok(())
        }
        Task::Bench {
            json,
            plots,
            from: None,
        } => {
            setup::run()?;
            setup::bench_peers()?;
            build()?;
            bench::run(&release_bin(), json.as_deref(), plots.as_deref())
        }
        Task::Install { destdir } => {
            setup::run()?;
            build()?;
            let done = install::install(&release_bin(), &root(), &destdir)?;
            for path in done.written {
                println!("installed {}", path.display());
            }
            for path in done.kept {
                println!("kept your {}", path.display());
            }
            println!(
                "next: edit /etc/pbxguard/pbxguard.toml, then `systemctl daemon-reload && systemctl enable --now pbxguard`"
            );
            Ok(())
        }
    }
}

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_path_buf()
}

fn release_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    target.join("release").join("pbxguard")
}

/// Runs a command in the workspace root, failing on a non-zero exit.
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    cmd.current_dir(root());
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new(env!("CARGO")).args(args))
}

fn build() -> anyhow::Result<()> {
    cargo(&["build", "--release", "-p", "pbxguard"])
}

fn lint() -> anyhow::Result<()> {
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        "pbxguard-ebpf",
        "--all-targets",
        "--features",
        "pbxguard/failpoints",
        "--",
        "-D",
        "warnings",
    ])?;
    // The XDP program is linted with the toolchain and target it is built with.
    run(Command::new("rustup").args([
        "run",
        "nightly",
        "cargo",
        "clippy",
        "-p",
        "pbxguard-ebpf",
        "--bins",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))
}
