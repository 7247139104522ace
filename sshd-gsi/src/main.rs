//! sshd-gsi: the SSH server on port 2222 for certificate- and token-based logins.
//!
//! `main` parses the command line and hands over: [`server`] listens, [`session`] is the
//! russh handler of one connection, [`auth`] asks hpccert-core, [`spawn`] starts processes
//! as the mapped account (the only module that changes privileges), [`dev`] is `--dev`.

mod audit;
mod auth;
mod cli;
mod confine;
mod dev;
mod limits;
mod loginrec;
mod metrics;
mod pam;
#[allow(dead_code)] // HANDOVER_PREFIX is the helper's
mod pam_proto;
mod server;
mod session;
mod sessionfile;
mod spawn;
mod x509auth;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cli::Cli;
use hpccert_core::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HPCCERT_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if cli.debug {
                    "debug"
                } else {
                    "info,russh=warn"
                })
            }),
        )
        .with_target(false)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sshd-gsi: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    let mut dev_config: Option<PathBuf> = None;
    let mut config = if cli.dev {
        let listen = cli
            .listen
            .first()
            .cloned()
            .unwrap_or_else(|| "127.0.0.1:2222".to_string());
        let state = cli.state_dir.clone().unwrap_or_else(dev::default_state_dir);
        let setup = dev::prepare(&state, &listen)?;
        eprintln!("{}", dev::instructions(&setup, &listen));
        dev_config = Some(setup.config_path.clone());
        setup.config
    } else {
        Config::load(&cli.config).map_err(|e| e.to_string())?
    };
    if !cli.listen.is_empty() {
        config.sshd.listen = cli.listen.clone();
    }
    if cli.check_config {
        server::prepare(config.clone())?;
        print!("{}", toml_text(&config)?);
        return Ok(ExitCode::SUCCESS);
    }
    let live = server::prepare(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    // SIGHUP reads the same file again, with the same command-line overrides
    let path = dev_config.unwrap_or(cli.config.clone());
    let listen = cli.listen.clone();
    let source: server::ConfigSource = Box::new(move || {
        let mut c = Config::load(&path).map_err(|e| e.to_string())?;
        if !listen.is_empty() {
            c.sshd.listen = listen.clone();
        }
        Ok(c)
    });
    runtime.block_on(server::serve(live, source))?;
    drop(runtime);
    Ok(ExitCode::SUCCESS)
}

fn toml_text(config: &Config) -> Result<String, String> {
    toml::to_string_pretty(config).map_err(|e| format!("cannot print the configuration: {e}"))
}
