//! mapping-portal: serves the export bundle that login nodes install (`EXPORT.md`).
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use cli::Cli as Args;
use hpccert_core::clock;
use hpccert_core::config::Config;
use mapping_portal::store::Store;
use mapping_portal::{ExportToken, Portal, PortalSettings};

/// The default SQLite database when `[portal] database` is not set.
const DEFAULT_DATABASE: &str = "sqlite:///var/lib/hpccert-portal/portal.db?mode=rwc";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mapping-portal: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mapping-portal: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    openssl::rand::rand_bytes(&mut bytes).context("random export token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

async fn run(args: Args) -> anyhow::Result<()> {
    // kept until the end in --dev: the database lives there
    let mut _dev_dir = None;
    let (database, listen, url, tokens, export_dir) = if args.dev {
        let dir = tempfile::Builder::new()
            .prefix("mapping-portal-dev.")
            .tempdir()
            .context("temporary directory")?;
        let database = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("portal.db").display()
        );
        let export_dir = dir.path().join("export");
        std::fs::create_dir(&export_dir).context("export directory")?;
        let token = random_token()?;
        let listen = args.listen.clone().unwrap_or_else(|| "127.0.0.1:0".into());
        _dev_dir = Some(dir);
        (database, listen, None, vec![token], Some(export_dir))
    } else {
        let config = Config::load(&args.config)?;
        let Some(portal) = config.portal else {
            bail!("{}: no [portal] section", args.config.display());
        };
        (
            portal.database.unwrap_or_else(|| DEFAULT_DATABASE.into()),
            args.listen.clone().unwrap_or(portal.listen),
            portal.url,
            portal.export_tokens,
            portal.export_dir,
        )
    };
    let export_tokens = tokens
        .iter()
        .map(|t| ExportToken::new(t))
        .collect::<Result<Vec<_>, _>>()
        .context("[portal] export_tokens")?;
    if export_tokens.is_empty() {
        tracing::warn!("no [portal] export_tokens: every request for the export is refused");
    }

    let store = Store::open(&database, clock::now())
        .await
        .context("opening the database")?;
    tracing::info!(backend = ?store.backend(), "database ready");
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let local = listener.local_addr().context("local address")?;
    let url = url.unwrap_or_else(|| format!("http://{local}"));
    let portal = Portal::start(
        store.clone(),
        PortalSettings {
            url: url.clone(),
            export_tokens: export_tokens.clone(),
            export_dir: export_dir.clone(),
        },
    )
    .await
    .context("publishing the export")?;
    tracing::info!(%local, serial = portal.current().serial, "listening");
    if args.dev {
        let token = export_tokens
            .first()
            .map(ExportToken::expose)
            .unwrap_or_default();
        println!("mapping-portal --dev: database {database}");
        if let Some(dir) = &export_dir {
            println!("  export installed in {}", dir.display());
        }
        println!(
            "  export: curl -H 'Authorization: Bearer {token}' http://{local}/export/v1/bundle"
        );
        println!("  health: curl http://{local}/healthz");
    }
    let shutdown = async {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                // no SIGTERM handler: SIGINT still stops gracefully
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
        tracing::info!("stopping");
    };
    mapping_portal::http::serve(listener, portal, shutdown)
        .await
        .context("serving")?;
    store.close().await;
    Ok(())
}
