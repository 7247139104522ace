//! mapping-portal: the pages where users link their identities to local accounts, and the
//! export bundle that login nodes install (`EXPORT.md`).
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use cli::Cli as Args;
use hpccert_core::clock;
use std::path::PathBuf;
use std::sync::Arc;

use hpccert_core::config::{
    Config, PortalAdmin, PortalApproval, PortalConfig, PortalOidcConfig, PortalProof, TrustConfig,
};
use hpccert_core::identity::dn::DistinguishedName;
use mapping_portal::model::Approval;
use mapping_portal::store::Store;
use mapping_portal::web::devidp::{self, DevIdp};
use mapping_portal::web::oidc::{Oidc, OidcSettings};
use mapping_portal::web::{App, DevAccount, Proof, WebSettings};
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

/// Everything the portal needs from its config (or from --dev).
struct Setup {
    database: String,
    listen: String,
    url: Option<String>,
    tokens: Vec<String>,
    export_dir: Option<PathBuf>,
    tls: Option<(PathBuf, PathBuf)>,
    web: PortalConfig,
    /// `[trust]`, for `[portal] certificate_dns`.
    trust: TrustConfig,
    /// `[mapping] nss_min_id`: no exported account or group below it.
    nss_min_id: u32,
    /// `--dev`: its state directory and what it embeds.
    dev: Option<DevState>,
    /// The whole config file (`[[issuer]]`, `[tokens]` for the SSH CA's token checks).
    config: Config,
}

/// What `--dev` keeps in its state directory.
struct DevState {
    dir: PathBuf,
    /// The file holding the export token (0600), for `gridmap-tool sync --token-file`.
    export_token_file: PathBuf,
    /// The embedded dev identity provider, unless the environment names a provider.
    embedded_idp: bool,
    accounts: Vec<DevAccount>,
}

/// A secret of `len` hex digits (at most 64) kept in `path` (0600): read when it exists,
/// else made and written.
fn kept_secret(path: &std::path::Path, len: usize) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(text) = std::fs::read_to_string(path) {
        let text = text.trim().to_string();
        if !text.is_empty() {
            return Ok(text);
        }
    }
    let secret: String = random_token()?.chars().take(len).collect();
    std::fs::write(path, format!("{secret}\n")).with_context(|| path.display().to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| path.display().to_string())?;
    Ok(secret)
}

/// The account running the portal: the dev account of `--dev`.
fn current_account() -> anyhow::Result<String> {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => Ok(user.name),
        Ok(None) => bail!("the current user (uid {uid}) has no account name"),
        Err(e) => bail!("looking up the current user (uid {uid}): {e}"),
    }
}

/// `[portal] export_client_dns`, parsed.
fn client_dns(web: &PortalConfig) -> anyhow::Result<Vec<DistinguishedName>> {
    if web.export_client_ca.is_some() == web.export_client_dns.is_empty() {
        bail!("[portal] export_client_ca and export_client_dns go together");
    }
    if web.export_client_ca.is_some() && web.tls_certificate.is_none() {
        bail!("[portal] export_client_ca needs tls_certificate and tls_key (mutual TLS)");
    }
    web.export_client_dns
        .iter()
        .map(|dn| {
            DistinguishedName::parse(dn)
                .with_context(|| format!("[portal] export_client_dns: {dn:?}"))
        })
        .collect()
}

fn dev_oidc_from_env() -> Option<PortalOidcConfig> {
    let issuer = std::env::var("HPCCERT_PORTAL_ISSUER").ok()?;
    let client_id = std::env::var("HPCCERT_PORTAL_CLIENT_ID").ok()?;
    Some(PortalOidcConfig {
        issuer,
        client_id,
        client_secret: std::env::var("HPCCERT_PORTAL_CLIENT_SECRET").ok(),
        client_secret_file: None,
        scopes: ["openid", "email", "profile", "org.cilogon.userinfo"]
            .map(String::from)
            .to_vec(),
    })
}

fn setup(args: &Args, dev_dir: &mut Option<tempfile::TempDir>) -> anyhow::Result<Setup> {
    if args.dev {
        let dir = match &args.state_dir {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| d.display().to_string())?;
                d.clone()
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("mapping-portal-dev.")
                    .tempdir()
                    .context("temporary directory")?;
                let path = t.path().to_path_buf();
                *dev_dir = Some(t);
                path
            }
        };
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| dir.display().to_string())?;
        }
        let database = format!("sqlite://{}?mode=rwc", dir.join("portal.db").display());
        let export_dir = dir.join("export");
        std::fs::create_dir_all(&export_dir).context("export directory")?;
        let export_token_file = dir.join("export-token");
        let token = kept_secret(&export_token_file, 64)?;
        let listen = args.listen.clone().unwrap_or_else(|| "127.0.0.1:0".into());
        // the defaults of an empty [portal] section; the provider from the environment, or
        // the embedded dev provider (set up once the address is known)
        let mut web: PortalConfig = toml::from_str("").context("default [portal]")?;
        web.oidc = dev_oidc_from_env();
        if let (Some(oidc), Ok(subject)) =
            (&web.oidc, std::env::var("HPCCERT_PORTAL_ADMIN_SUBJECT"))
        {
            web.admins.push(PortalAdmin {
                issuer: oidc.issuer.clone(),
                subject,
            });
        }
        // the dev SSH CA (made once in the state directory): certificates for dev tokens
        let ca_key = dir.join("ssh-ca-key");
        if !ca_key.exists() {
            hpccert_core::trust::sshca::generate_ca_key(&ca_key, "hpccert dev SSH CA")
                .context("the dev SSH CA key")?;
        }
        web.ssh_ca = Some(
            toml::from_str(&format!(
                "key_file = {:?}\nsite_name = \"hpccert dev site\"\nclient_id = {:?}\naudience = {:?}\n",
                ca_key.display().to_string(),
                devidp::CLIENT_ID,
                devidp::DEV_AUDIENCE
            ))
            .context("the dev [portal.ssh_ca]")?,
        );
        let account = current_account()?;
        // short enough to type
        let password = kept_secret(&dir.join("dev-account-password"), 12)?;
        let dev = DevState {
            dir,
            export_token_file,
            embedded_idp: web.oidc.is_none(),
            accounts: vec![DevAccount {
                name: account,
                password,
            }],
        };
        return Ok(Setup {
            database,
            listen,
            url: None,
            tokens: vec![token],
            export_dir: Some(export_dir),
            tls: None,
            web,
            trust: TrustConfig::default(),
            nss_min_id: hpccert_core::host::nsscache::DEFAULT_MIN_ID,
            dev: Some(dev),
            config: Config::parse("version = 1\n", std::path::Path::new("--dev"))
                .context("the built-in dev configuration")?,
        });
    }
    let config = Config::load(&args.config)?;
    let Some(portal) = config.portal.clone() else {
        bail!("{}: no [portal] section", args.config.display());
    };
    let tls = match (&portal.tls_certificate, &portal.tls_key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => bail!(
            "{}: [portal] tls_certificate and tls_key go together",
            args.config.display()
        ),
    };
    Ok(Setup {
        database: portal
            .database
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE.into()),
        listen: args.listen.clone().unwrap_or_else(|| portal.listen.clone()),
        url: portal.url.clone(),
        tokens: portal.export_tokens.clone(),
        export_dir: portal.export_dir.clone(),
        tls,
        web: portal,
        trust: config.trust.clone(),
        nss_min_id: config.mapping.nss_min_id,
        dev: None,
        config,
    })
}

/// What `--dev` prints: where everything is and how to use it.
fn dev_instructions(dev: &DevState, url: &str, idp: Option<&DevIdp>, setup: &Setup) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let d = dev.dir.display();
    let _ = writeln!(out, "mapping-portal --dev (development only): state in {d}");
    let _ = writeln!(out, "  pages:    {url}/");
    match idp {
        Some(idp) => {
            let _ = writeln!(
                out,
                "  login:    the dev identity provider {} (pick a dev researcher: {})",
                idp.issuer(),
                devidp::RESEARCHERS
                    .iter()
                    .map(|r| if r.admin {
                        format!("{} (admin)", r.login)
                    } else {
                        r.login.to_string()
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let f = idp.files();
            let _ = writeln!(
                out,
                "            its keys {}, its CA {}, the researchers' certificates in {}",
                f.jwks.display(),
                f.ca_dir.display(),
                f.certificates.display()
            );
            let _ = writeln!(
                out,
                "            an access token (audience {}): curl -s {}/access-token/ada",
                devidp::DEV_AUDIENCE,
                idp.issuer()
            );
        }
        None => {
            let issuer = setup.web.oidc.as_ref().map_or("", |o| o.issuer.as_str());
            let _ = writeln!(
                out,
                "  login:    the provider {issuer} (HPCCERT_PORTAL_ISSUER)"
            );
        }
    }
    for a in &dev.accounts {
        let _ = writeln!(
            out,
            "  account:  {} with the dev password {} (the account proof of --dev; no PAM)",
            a.name, a.password
        );
    }
    if setup.web.ssh_ca.is_some() && idp.is_some() {
        let _ = writeln!(
            out,
            "  SSH CA:   curl -H \"Authorization: Bearer $(curl -s {url}/dev-idp/access-token/ada)\" -d \"{{\\\"public_key\\\": \\\"$(cat ~/.ssh/id_ed25519.pub)\\\"}}\" {url}/ssh/v1/certificate"
        );
        let _ = writeln!(
            out,
            "            (site description: {url}/.well-known/hpccert)"
        );
    }
    if let Some(dir) = &setup.export_dir {
        let _ = writeln!(out, "  export:   installed in {}", dir.display());
    }
    let _ = writeln!(
        out,
        "  sync:     gridmap-tool sync --from {url}/export/v1/bundle --token-file {} --dir DIR",
        dev.export_token_file.display()
    );
    let _ = writeln!(out, "  health:   curl {url}/healthz");
    out
}

/// Whether `url` is https://, or http:// to a loopback address (tests, --dev).
fn secure_or_loopback(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn oidc_settings(oidc: &PortalOidcConfig, url: &str) -> anyhow::Result<OidcSettings> {
    if !secure_or_loopback(&oidc.issuer) {
        bail!(
            "[portal.oidc] issuer {} must be https:// (http:// only to a loopback address)",
            oidc.issuer
        );
    }
    let client_secret = match (&oidc.client_secret, &oidc.client_secret_file) {
        (Some(_), Some(_)) => {
            bail!("[portal.oidc] client_secret and client_secret_file are exclusive")
        }
        (Some(s), None) => Some(s.clone()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("[portal.oidc] client_secret_file {}", path.display()))?;
            let secret = text.trim().to_string();
            if secret.is_empty() {
                bail!(
                    "[portal.oidc] client_secret_file {} is empty",
                    path.display()
                );
            }
            Some(secret)
        }
        (None, None) => None,
    };
    Ok(OidcSettings {
        issuer: oidc.issuer.clone(),
        client_id: oidc.client_id.clone(),
        client_secret,
        scopes: oidc.scopes.clone(),
        redirect_uri: format!("{}/login/callback", url.trim_end_matches('/')),
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    // kept until the end in --dev: the database lives there
    let mut dev_dir = None;
    let setup = setup(&args, &mut dev_dir)?;
    let export_tokens = setup
        .tokens
        .iter()
        .map(|t| ExportToken::new(t))
        .collect::<Result<Vec<_>, _>>()
        .context("[portal] export_tokens")?;
    if export_tokens.is_empty() && setup.web.export_client_dns.is_empty() {
        tracing::warn!(
            "no [portal] export_tokens or export_client_dns: every request for the export is refused"
        );
    }
    let tls = match &setup.tls {
        Some((cert, key)) => Some(
            mapping_portal::http::tls_config(cert, key, setup.web.export_client_ca.as_deref())
                .with_context(|| {
                    format!(
                        "TLS certificate {} and key {}",
                        cert.display(),
                        key.display()
                    )
                })?,
        ),
        None => None,
    };

    let store = Store::open(&setup.database, clock::now())
        .await
        .context("opening the database")?
        .with_id_floor(hpccert_core::host::nsscache::IdFloor::new(setup.nss_min_id));
    tracing::info!(backend = ?store.backend(), "database ready");
    let listener = tokio::net::TcpListener::bind(&setup.listen)
        .await
        .with_context(|| format!("listening on {}", setup.listen))?;
    let local = listener.local_addr().context("local address")?;
    if setup.dev.is_some() && !local.ip().is_loopback() {
        bail!(
            "--dev serves on a loopback address only (its identity provider lets anyone be anyone), not {local}"
        );
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = setup
        .url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{local}"))
        .trim_end_matches('/')
        .to_string();
    // the SSH CA's keys before anything is served: the export publishes their public halves
    let ssh_ca_key = match &setup.web.ssh_ca {
        Some(settings) => Some(
            mapping_portal::sshca::CertificateAuthority::load_ca(settings)
                .map_err(|e| anyhow::anyhow!("the SSH CA cannot start: {e}"))?,
        ),
        None => None,
    };
    let portal = Portal::start(
        store.clone(),
        PortalSettings {
            ssh_ca_keys: ssh_ca_key
                .as_ref()
                .map(|k| k.public_set())
                .unwrap_or_default(),
            url: url.clone(),
            export_tokens: export_tokens.clone(),
            export_client_dns: client_dns(&setup.web)?,
            export_dir: setup.export_dir.clone(),
        },
    )
    .await
    .context("publishing the export")?;
    let mut web = setup.web.clone();
    let idp = match &setup.dev {
        Some(dev) if dev.embedded_idp => {
            let idp = DevIdp::open(&url, &dev.dir.join("dev-idp"), clock::now())
                .map_err(|e| anyhow::anyhow!("the dev identity provider: {e}"))?;
            web.oidc = Some(PortalOidcConfig {
                issuer: idp.issuer().to_string(),
                client_id: devidp::CLIENT_ID.to_string(),
                client_secret: None,
                client_secret_file: None,
                scopes: ["openid", "email", "profile", "org.cilogon.userinfo"]
                    .map(String::from)
                    .to_vec(),
            });
            for who in devidp::RESEARCHERS.iter().filter(|r| r.admin) {
                web.admins.push(PortalAdmin {
                    issuer: idp.issuer().to_string(),
                    subject: who.subject.to_string(),
                });
            }
            Some(Arc::new(idp))
        }
        _ => None,
    };
    let web = &web;
    let oidc = match &web.oidc {
        Some(o) => Some(Oidc::new(oidc_settings(o, &url)?).context("[portal.oidc]")?),
        None => {
            tracing::warn!("no [portal.oidc]: nobody can log in to the pages (the export works)");
            None
        }
    };
    let proof = match (&setup.dev, web.proof) {
        (Some(dev), _) => Proof::Dev {
            accounts: dev.accounts.clone(),
        },
        (None, PortalProof::Pam) => Proof::Pam {
            service: web.pam_service.clone(),
        },
        (None, PortalProof::Header) => {
            if web.trusted_proxies.is_empty() {
                bail!(
                    "[portal] proof = \"header\" needs trusted_proxies (the sign-on proxy's addresses)"
                );
            }
            Proof::Header {
                name: axum::http::HeaderName::from_bytes(
                    web.remote_user_header.to_ascii_lowercase().as_bytes(),
                )
                .with_context(|| {
                    format!("[portal] remote_user_header {:?}", web.remote_user_header)
                })?,
            }
        }
    };
    if web.certificate_dns {
        // checked at each proof (the trust directory changes under the portal); said now
        let source = setup.trust.source();
        match hpccert_core::trust::store::TrustStore::load_cached(&source) {
            Ok(t) => {
                tracing::info!(trust = %source.display(), cas = t.anchors().len(), "certificate DNs may be proved")
            }
            Err(e) => {
                tracing::warn!(trust = %source.display(), "certificate DNs may be proved, but the trust store does not load now: {e}")
            }
        }
    }
    // --dev with the embedded provider: its tokens are the ones the dev SSH CA takes
    let config = match (&setup.dev, &idp) {
        (Some(dev), Some(idp)) => Config::parse(
            &format!(
                "version = 1\n[tokens]\nkey_cache_dir = {:?}\n[[issuer]]\nissuer = {:?}\naudiences = [{:?}]\nalgorithms = [\"RS256\"]\nprofile = \"wlcg\"\njwks_file = {:?}\n",
                dev.dir.join("keys").display().to_string(),
                idp.issuer(),
                devidp::DEV_AUDIENCE,
                idp.files().jwks.display().to_string(),
            ),
            std::path::Path::new("--dev"),
        )
        .context("the dev configuration")?,
        _ => setup.config.clone(),
    };
    let ssh_ca = match (&web.ssh_ca, ssh_ca_key) {
        (Some(settings), Some(key)) => {
            let ca = mapping_portal::sshca::CertificateAuthority::new(
                key,
                settings,
                &config,
                Arc::clone(&portal),
                &url,
                web.oidc.as_ref().map(|o| o.issuer.clone()),
            )
            // a CA key others can read, or one that does not load: nothing is ever signed
            .map_err(|e| anyhow::anyhow!("the SSH CA cannot start: {e}"))?;
            tracing::info!(ca = %hpccert_core::trust::sshca::fingerprint(ca.ca().public_key()), "SSH CA ready");
            Some(Arc::new(ca))
        }
        _ => None,
    };
    let app = App::with_ssh_ca(
        Arc::clone(&portal),
        oidc,
        WebSettings {
            url: url.clone(),
            trusted_proxies: web.trusted_proxies.clone(),
            approval: match web.approval {
                PortalApproval::Immediate => Approval::Immediate,
                PortalApproval::Admin => Approval::AwaitAdmin,
            },
            proof,
            min_uid: web.min_uid,
            admins: web
                .admins
                .iter()
                .map(|a| (a.issuer.clone(), a.subject.clone()))
                .collect(),
            certificate_dns: web.certificate_dns.then(|| setup.trust.clone()),
            dev: setup.dev.is_some(),
        },
        ssh_ca.clone(),
    );
    tracing::info!(%local, %url, serial = portal.current().serial, "listening");
    if let Some(dev) = &setup.dev {
        print!("{}", dev_instructions(dev, &url, idp.as_deref(), &setup));
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
        hpccert_core::host::notify::stopping();
    };
    let mut router = mapping_portal::http::app_router(Arc::clone(&portal), Some(app));
    if let Some(ca) = ssh_ca {
        router = router.merge(mapping_portal::sshca::router(ca));
    }
    if let Some(idp) = idp {
        router = router.merge(devidp::router(idp));
    }
    hpccert_core::host::notify::ready();
    match tls {
        Some(tls) => {
            let listener = listener.into_std().context("listener")?;
            mapping_portal::http::serve_tls(listener, tls, router, shutdown).await
        }
        None => mapping_portal::http::serve(listener, router, shutdown).await,
    }
    .context("serving")?;
    store.close().await;
    Ok(())
}
