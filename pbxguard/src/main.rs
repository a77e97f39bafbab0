//! Entry point: parse arguments, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser as _;
use pbxguard::cli::{self, Cli};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr (journald under systemd); command output goes to stdout. `init` also
    // installs tracing-log's LogTracer: `log` records (the XDP program's diagnostics, target
    // `pbxguard::xdp`, via aya-log) pass the same filter.
    tracing_subscriber::fmt()
        .with_env_filter(
            // The NATS client reports every reconnect attempt itself; pbxguard logs the link's
            // state once (`cluster`), so the client's own lines start at warnings.
            EnvFilter::try_from_env("PBXGUARD_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Fault injection for the ledger's fault tests: only in builds with the `failpoints`
    // feature (`cargo xtask test`), driven by FAILPOINTS; a no-op otherwise.
    let scenario = fail::FailScenario::setup();
    let exit = cli::main(cli);
    scenario.teardown();
    exit.into()
}
