//! The `nexus` binary: the command line, and the only place errors become `anyhow`.
//!
//! Until the daemon and its gRPC API exist, the commands drive the node runtime directly on
//! the local Docker host: create a private network, list what nexus runs (rebuilt from Docker
//! labels), stop, start, remove, show stats, follow events. It parses and validates input,
//! prints tables or `--json`, and must not hold any logic the runtime or (later) the
//! orchestrator owns.

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
