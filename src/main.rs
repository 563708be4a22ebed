//! The `nexus` binary: the command line, and the only place errors become `anyhow`.
//!
//! `nexus daemon` runs the daemon (see `nexus::daemon`), `nexus gate` a gate (see
//! `nexus::gate`); every other command but `init`, `token` and `swarm-key` is a client of the
//! daemon's gRPC API. This file only parses and reports the
//! final error; `cli` owns the commands.

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Args::parse();
    match cli::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
