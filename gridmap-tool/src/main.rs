//! gridmap-tool: the administrator's tool for hpccert mappings and trust.
#![forbid(unsafe_code)]

mod check;
mod cli;
mod demo;
mod dispatch;
mod edit;
mod explain;
mod outcome;
mod pool;
mod settings;
mod suspend;
mod sync;
mod tokens;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HPCCERT_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if cli.verbose { "debug" } else { "warn" })
            }),
        )
        .without_time()
        .init();
    match dispatch::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gridmap-tool: {e:#}");
            ExitCode::from(2)
        }
    }
}
