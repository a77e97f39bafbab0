//! The command line: argument definitions and dispatch. Each command is a thin client of
//! the control socket, except `run` (the daemon) and `check-config` (offline).

mod output;
pub mod test_cdr;
pub mod test_log;
mod top;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::{
    config::{self, Config},
    control::{self, ClientError, Request},
    daemon,
    units::{BanDuration, parse_net},
};

/// Exit codes scripts can rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Success = 0,
    /// The request failed (refused ban, bad argument, I/O error).
    Failure = 1,
    /// The config file is invalid.
    BadConfig = 2,
    /// No daemon listens on the control socket.
    NoDaemon = 3,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// pbxguard bans SIP brute force, extension scans and toll-fraud attempts at the XDP hook,
/// before the kernel's network stack or the PBX sees the packets.
#[derive(Debug, Parser)]
#[command(name = "pbxguard", version, propagate_version = true)]
pub struct Cli {
    /// Config file (TOML).
    #[arg(long, short, global = true, value_name = "PATH", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Control socket of the running daemon (default: [daemon] socket from the config).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (systemd runs this).
    Run {
        /// Detach the XDP program and stop enforcing on exit (default: keep enforcing).
        #[arg(long)]
        detach_on_exit: bool,
    },
    /// Show backend, interfaces and XDP mode, ban count and uptime.
    Status(JsonFlag),
    /// List, add and remove bans.
    #[command(subcommand)]
    Bans(BansCommand),
    /// Show packets and bytes per verdict reason.
    Stats(JsonFlag),
    /// Everything the daemon knows about an address: protections (allowlist, PBX config
    /// with file and line, host address), failures counted, bans covering it, offenses.
    Explain {
        /// The address, e.g. 203.0.113.5.
        ip: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate a config file; exits non-zero and names the file, line and key on error.
    CheckConfig,
    /// Make the running daemon re-read its config (like `systemctl reload pbxguard`); a bad
    /// config is rejected with its error and the running one stays.
    Reload,
    /// Check this host against the PBX hardening checklist (read-only): exposure,
    /// credentials, transport, SSH, platform, fraud readiness; most severe first.
    Audit {
        /// Audit a copy of a host's filesystem instead of `/`.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// Print JSON (an array of findings: id, severity, title, file, line, fix).
        #[arg(long)]
        json: bool,
    },
    /// Geo rules: look up an address's country and verdict.
    #[command(subcommand)]
    Geo(GeoCommand),
    /// Remove everything pbxguard put in the kernel: table inet pbxguard and the pinned XDP
    /// program, links and maps. Stop the daemon first. The ban journal is kept.
    UninstallRules,
    /// Write shell completions or the man page to stdout (used by packaging).
    #[command(hide = true)]
    Generate {
        /// `bash`, `zsh`, `fish` or `man`.
        what: String,
    },
    /// Toll fraud: per-extension counters and what is closest to a limit.
    #[command(subcommand)]
    Fraud(FraudCommand),
    /// Classify and evaluate a call-record (CDR) file offline with the config's [fraud] and
    /// [offhours] rules, as the daemon would following it.
    TestCdr {
        /// The CDR file (e.g. /var/log/asterisk/cdr-csv/Master.csv).
        file: PathBuf,
        /// asterisk-csv, asterisk-custom, freeswitch-csv, csv or jsonl (default: the
        /// [[cdr]] for this file in the config).
        #[arg(long, value_name = "FORMAT")]
        format: Option<String>,
        /// One JSON object per rule hit (JSON Lines): row, extension, rule, destination,
        /// country, class, time.
        #[arg(long)]
        json: bool,
    },
    /// Live view of the running daemon: attacks and drops per second, newest bans, top
    /// offending networks, log followers, cluster/feeds/CrowdSec state. Quit with q.
    Top,
    /// Run filters over a log file without a daemon (like fail2ban-regex).
    TestLog {
        /// The log file.
        file: PathBuf,
        /// Only this filter (repeatable); default: every built-in and configured filter.
        #[arg(long = "filter", value_name = "NAME")]
        filters: Vec<String>,
        /// One JSON object per matching line (JSON Lines): line, ip, filter, rule.
        #[arg(long)]
        json: bool,
    },
}

/// `--json` for machine-readable output.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `pbxguard fraud ...`
#[derive(Debug, Subcommand)]
pub enum FraudCommand {
    /// Per-extension counters (calls in the last hour, minutes in the last day, by class),
    /// the limit each is closest to, call-record files and rule hits.
    Status(JsonFlag),
}

/// `pbxguard geo ...`
#[derive(Debug, Subcommand)]
pub enum GeoCommand {
    /// Print the country of an address (from [geo] database) and whether [geo] drops it.
    Lookup {
        /// IPv4 or IPv6 address.
        ip: std::net::IpAddr,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `pbxguard bans ...`
#[derive(Debug, Subcommand)]
pub enum BansCommand {
    /// List active bans: net, reason, source, created, expires.
    List(JsonFlag),
    /// Ban addresses or CIDR networks (IPv4 or IPv6), all in one step.
    Add {
        /// Address or network, e.g. 198.51.100.7 or 2001:db8:bad::/48.
        net: String,
        /// More addresses or networks (e.g. a list migrated from fail2ban).
        more: Vec<String>,
        /// Also read addresses or networks from this file, one per line (`#` comments).
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
        /// How long: 90s, 10m, 1h, 7d or `permanent` (default: [ban] default_duration).
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        /// Why, shown in `bans list`.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Lift the ban on exactly this address or network.
    Del {
        /// Address or network as listed by `bans list`.
        net: String,
    },
}

/// Runs the parsed command line.
pub fn main(cli: Cli) -> Exit {
    match cli.command {
        Command::Run { detach_on_exit } => {
            match daemon::run(daemon::RunOptions {
                config: cli.config,
                detach_on_exit,
            }) {
                Ok(()) => Exit::Success,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("pbxguard: {e:#}");
                    if e.downcast_ref::<config::ConfigError>().is_some() {
                        Exit::BadConfig
                    } else {
                        Exit::Failure
                    }
                }
            }
        }
        // The same validation a start or reload runs, geo database walk included.
        Command::CheckConfig => match Config::load(&cli.config) {
            Ok(config) => match crate::engine::geo_networks(&config) {
                Ok(_) => {
                    println!("{}: OK", cli.config.display());
                    Exit::Success
                }
                Err(e) => {
                    eprintln!("{}: {e}", cli.config.display());
                    Exit::BadConfig
                }
            },
            Err(e) => {
                eprintln!("{e}");
                Exit::BadConfig
            }
        },
        Command::UninstallRules => uninstall_rules(&cli.config, cli.socket),
        Command::Audit { root, json } => {
            let findings = crate::audit::run(&crate::audit::Root::new(&root));
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&findings).expect("findings serialize")
                );
            } else {
                let colour = std::io::IsTerminal::is_terminal(&std::io::stdout());
                print!("{}", crate::audit::render(&findings, colour));
            }
            Exit::Success
        }
        Command::Generate { what } => generate(&what),
        Command::Reload => client(&cli.config, cli.socket, Request::Reload, |_| {
            "config reloaded\n".into()
        }),
        Command::Geo(GeoCommand::Lookup { ip, json }) => geo_lookup(&cli.config, ip, json),
        Command::TestLog {
            file,
            filters,
            json,
        } => {
            // A custom filter may live in the config; a missing default config is fine.
            let config = match Config::load(&cli.config) {
                Ok(config) => Some(config),
                // Only the default config may be absent (test-log also works without one).
                Err(_) if !cli.config.exists() && cli.config == Path::new(config::DEFAULT_PATH) => {
                    None
                }
                Err(e) => {
                    eprintln!("{e}");
                    return Exit::BadConfig;
                }
            };
            let specs = match test_log::select(config.as_ref(), &filters) {
                Ok(specs) => specs,
                Err(e) => {
                    eprintln!("pbxguard: {e}");
                    return Exit::Failure;
                }
            };
            offline_report(
                json,
                |out| test_log::run(&file, &specs, out),
                test_log::render,
            )
        }
        Command::Top => top::run(socket_path(&cli.config, cli.socket), &cli.config),
        Command::TestCdr { file, format, json } => test_cdr(&cli.config, &file, format, json),
        Command::Fraud(FraudCommand::Status(flag)) => {
            client(&cli.config, cli.socket, Request::FraudStatus, |data| {
                output::fraud_status(data, flag.json)
            })
        }
        Command::Status(flag) => client(&cli.config, cli.socket, Request::Status, |data| {
            output::status(data, flag.json)
        }),
        Command::Stats(flag) => client(&cli.config, cli.socket, Request::Stats, |data| {
            output::stats(data, flag.json)
        }),
        Command::Explain { ip, json } => {
            client(&cli.config, cli.socket, Request::Explain { ip }, |data| {
                output::explain(data, json)
            })
        }
        Command::Bans(BansCommand::List(flag)) => {
            client(&cli.config, cli.socket, Request::ListBans, |data| {
                output::bans(data, flag.json)
            })
        }
        Command::Bans(BansCommand::Add {
            net,
            mut more,
            from_file,
            duration,
            reason,
        }) => {
            if let Some(file) = from_file {
                match std::fs::read_to_string(&file) {
                    Ok(text) => more.extend(
                        text.lines()
                            .map(|l| l.split('#').next().unwrap_or("").trim())
                            .filter(|l| !l.is_empty())
                            .map(str::to_string),
                    ),
                    Err(e) => {
                        eprintln!("pbxguard: cannot read {}: {e}", file.display());
                        return Exit::Failure;
                    }
                }
            }
            // Catch typos before contacting the daemon, so they are reported even when it is down.
            let checked = std::iter::once(&net)
                .chain(&more)
                .try_for_each(|n| parse_net(n).map(drop))
                .and_then(|()| {
                    duration
                        .as_deref()
                        .map(str::parse::<BanDuration>)
                        .transpose()
                        .map(drop)
                });
            if let Err(e) = checked {
                eprintln!("pbxguard: {e}");
                return Exit::Failure;
            }
            let request = Request::AddBan {
                net,
                more,
                duration,
                reason,
            };
            client(&cli.config, cli.socket, request, output::ban_added)
        }
        Command::Bans(BansCommand::Del { net }) => {
            client(&cli.config, cli.socket, Request::DelBan { net }, |data| {
                output::ban_removed(data)
            })
        }
    }
}

/// `pbxguard test-cdr`.
fn test_cdr(config_path: &Path, file: &Path, format: Option<String>, json: bool) -> Exit {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return Exit::BadConfig;
        }
    };
    let format = match format
        .map(|f| serde_json::from_value(Value::String(f.clone())).map_err(|_| f))
        .transpose()
    {
        Ok(format) => format,
        Err(f) => {
            eprintln!(
                "pbxguard: `{f}` is not a CDR format: asterisk-csv, asterisk-custom, freeswitch-csv, csv or jsonl"
            );
            return Exit::Failure;
        }
    };
    let source = match test_cdr::source_for(&config, file, format) {
        Ok(source) => source,
        Err(e) => {
            eprintln!("pbxguard: {e}");
            return Exit::Failure;
        }
    };
    offline_report(
        json,
        |out| test_cdr::run(&config, &source, file, out),
        test_cdr::render,
    )
}

/// Runs an offline check (`test-log`, `test-cdr`): with `json` each hit is written as a JSON
/// line while it runs; otherwise the summary is printed at the end.
fn offline_report<S, E: std::fmt::Display>(
    json: bool,
    run: impl FnOnce(Option<&mut dyn std::io::Write>) -> Result<S, E>,
    render: impl Fn(&S) -> String,
) -> Exit {
    let stdout = std::io::stdout();
    let mut lock = std::io::BufWriter::new(stdout.lock());
    let out: Option<&mut dyn std::io::Write> = if json { Some(&mut lock) } else { None };
    match run(out) {
        Ok(summary) => {
            drop(lock);
            if !json {
                print!("{}", render(&summary));
            }
            Exit::Success
        }
        Err(e) => {
            eprintln!("pbxguard: {e}");
            Exit::Failure
        }
    }
}

/// `pbxguard generate`: completions and man page from the argument definitions.
fn generate(what: &str) -> Exit {
    use clap::CommandFactory as _;
    let mut command = Cli::command();
    let mut out = std::io::stdout();
    let shell = match what {
        "bash" => clap_complete::Shell::Bash,
        "zsh" => clap_complete::Shell::Zsh,
        "fish" => clap_complete::Shell::Fish,
        "man" => {
            return match clap_mangen::Man::new(command).section("8").render(&mut out) {
                Ok(()) => Exit::Success,
                Err(e) => {
                    eprintln!("pbxguard: {e}");
                    Exit::Failure
                }
            };
        }
        other => {
            eprintln!("pbxguard: cannot generate `{other}`; use bash, zsh, fish or man");
            return Exit::Failure;
        }
    };
    clap_complete::generate(shell, &mut command, "pbxguard", &mut out);
    Exit::Success
}

/// `pbxguard geo lookup`.
fn geo_lookup(config_path: &Path, ip: std::net::IpAddr, json: bool) -> Exit {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return Exit::BadConfig;
        }
    };
    if config.geo.database.is_none() {
        eprintln!(
            "pbxguard: no [geo] database in {}; set [geo] database = \"/path/to/GeoLite2-Country.mmdb\"",
            config_path.display()
        );
        return Exit::Failure;
    }
    match crate::geo::lookup(&config.geo, ip) {
        Ok((country, drops)) => {
            let verdict = if drops { "drop" } else { "pass" };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ip": ip.to_string(), "country": country, "verdict": verdict})
                );
            } else {
                println!(
                    "{ip}: country {}, verdict {verdict}",
                    country.as_deref().unwrap_or("unknown")
                );
            }
            Exit::Success
        }
        Err(e) => {
            eprintln!("pbxguard: {e}");
            Exit::Failure
        }
    }
}

/// `pbxguard uninstall-rules`.
fn uninstall_rules(config_path: &Path, socket: Option<PathBuf>) -> Exit {
    let config = Config::load(config_path).ok();
    let socket = socket_path(config_path, socket);
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        eprintln!(
            "pbxguard: the daemon is running ({}); stop it first (systemctl stop pbxguard)",
            socket.display()
        );
        return Exit::Failure;
    }
    let bpffs = config
        .map(|c| c.daemon.bpffs)
        .unwrap_or_else(|| config::DaemonConfig::default().bpffs);
    if crate::enforce::xdp::remove_pins(&bpffs) {
        println!(
            "removed pinned XDP program, links and maps under {}",
            bpffs.display()
        );
    }
    match crate::enforce::nft::remove_table() {
        Ok(true) => println!("removed nftables table inet pbxguard"),
        Ok(false) => {}
        Err(e) => {
            eprintln!("pbxguard: {e}");
            return Exit::Failure;
        }
    }
    println!("nothing of pbxguard is enforcing now; bans remain in the journal for the next start");
    Exit::Success
}

/// The socket to talk to: `--socket`, else the config's, else the default.
fn socket_path(config: &Path, flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| Config::load(config).ok().map(|c| c.daemon.socket))
        .unwrap_or_else(|| config::DaemonConfig::default().socket)
}

fn client(
    config: &Path,
    socket: Option<PathBuf>,
    request: Request,
    show: impl FnOnce(&Value) -> String,
) -> Exit {
    let socket = socket_path(config, socket);
    match control::request(&socket, &request) {
        Ok(data) => {
            print!("{}", show(&data));
            Exit::Success
        }
        Err(e) => {
            eprintln!("pbxguard: {e}");
            match e {
                ClientError::NoDaemon { .. } => Exit::NoDaemon,
                _ => Exit::Failure,
            }
        }
    }
}
