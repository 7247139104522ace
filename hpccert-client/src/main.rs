//! hpccert: from an institutional login to `ssh login.site`. Logs in through the site's
//! identity provider (browser with a loopback redirect, device code, client credentials or a
//! grid proxy), gets a short-lived OpenSSH certificate from the site's portal, puts key and
//! certificate in the ssh-agent for as long as the certificate lasts, writes the ssh config,
//! and hands out the access token for jobs.
#![forbid(unsafe_code)]

mod ca;
mod cli;
mod files;
mod keys;
mod oidc;
mod site;
mod sshconfig;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser as _;

use crate::cli::{Cli, Command, LoginArgs};
use crate::site::{ClientConfig, Dirs, Discovery, SiteEntry};

fn now_unix() -> u64 {
    u64::try_from(hpccert_core::token::unix_seconds(hpccert_core::clock::now())).unwrap_or(0)
}

fn when(unix: u64) -> String {
    hpccert_core::trust::x509::format_unix(i64::try_from(unix).unwrap_or(i64::MAX))
}

fn left(seconds: u64) -> String {
    match seconds {
        0 => "expired".into(),
        s if s < 120 => format!("{s} s left"),
        s if s < 7200 => format!("{} min left", s / 60),
        s => format!("{} h {} min left", s / 3600, (s % 3600) / 60),
    }
}

struct Ui {
    verbose: bool,
}

impl Ui {
    fn step(&self, what: &str) {
        if self.verbose {
            eprintln!("hpccert: {what}");
        }
    }
    fn say(&self, what: &str) {
        eprintln!("{what}");
    }
}

fn http() -> Result<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("hpccert/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("the HTTP client")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ui = Ui {
        verbose: cli.verbose,
    };
    if let Command::Check { site, min_valid } = &cli.command {
        return match check(site.as_deref(), *min_valid) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                if ui.verbose {
                    eprintln!("hpccert: {e:#}");
                }
                ExitCode::from(2)
            }
        };
    }
    let result = match cli.command {
        Command::Login(args) => login(&ui, &args),
        Command::Status { site } => status(site.as_deref()),
        Command::Logout { site } => logout(&ui, site.as_deref()),
        Command::SshConfig { site, install } => ssh_config(&ui, site.as_deref(), install),
        Command::Token { site, write } => token(&ui, site.as_deref(), write),
        Command::Check { .. } => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hpccert: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// No browser can be opened here: a remote session, or no display (Linux and the BSDs).
fn headless() -> bool {
    if std::env::var_os("SSH_CONNECTION").is_some() || std::env::var_os("SSH_TTY").is_some() {
        return true;
    }
    if std::env::var_os("BROWSER").is_some() {
        return false;
    }
    cfg!(all(unix, not(target_os = "macos")))
        && std::env::var_os("DISPLAY").is_none()
        && std::env::var_os("WAYLAND_DISPLAY").is_none()
}

/// Open `url` in the user's browser (`$BROWSER`, else the desktop's opener).
fn open_browser(url: &str) -> Result<()> {
    let program = std::env::var("BROWSER").ok().and_then(|b| {
        b.split(':')
            .map(str::trim)
            .find(|s| !s.is_empty())
            .map(str::to_string)
    });
    let program = program.unwrap_or_else(|| {
        if cfg!(target_os = "macos") {
            "open".into()
        } else if cfg!(windows) {
            "explorer".into()
        } else {
            "xdg-open".into()
        }
    });
    let status = std::process::Command::new(&program)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("cannot run {program} to open the browser"))?;
    if !status.success() {
        bail!("{program} could not open the browser");
    }
    Ok(())
}

fn show_device_code(uri: &str, code: &str, complete: Option<&str>) {
    eprintln!("To log in, open {uri} on any device and enter the code: {code}");
    if let Some(full) = complete {
        eprintln!("(or open {full}, or scan:)");
        if let Ok(qr) = qrcode::QrCode::new(full.as_bytes()) {
            let text = qr
                .render::<qrcode::render::unicode::Dense1x2>()
                .quiet_zone(true)
                .build();
            eprintln!("{text}");
        }
    }
}

fn login(ui: &Ui, args: &LoginArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let dirs = Dirs::from_env()?;
    let mut config = ClientConfig::load(&dirs.config_file())?;
    let (name, portal) = config.resolve(args.site.as_deref())?;
    let portal = portal.ok_or_else(|| {
        anyhow!("the site {name} has no portal URL in the config: log in with the portal's URL")
    })?;
    let http = http()?;
    ui.step(&format!("discovery: {portal}/.well-known/hpccert"));
    let site = site::discover(&http, &portal)?;
    files::write_private(
        &dirs.discovery(&name),
        serde_json::to_string_pretty(&site)?.as_bytes(),
    )?;
    config.site.insert(
        name.clone(),
        SiteEntry {
            portal: portal.clone(),
        },
    );
    if config.default.is_none() {
        config.default = Some(name.clone());
    }
    config.save(&dirs.config_file())?;

    let x509_file;
    let tokens;
    let proof = if let Some(given) = &args.x509 {
        let given = (!given.as_os_str().is_empty()).then_some(given.as_path());
        x509_file = ca::find_proxy(given)?;
        ui.step(&format!("X.509 proof with {}", x509_file.display()));
        ca::Proof::X509(&x509_file)
    } else {
        let issuer = site.oidc.issuer.clone().ok_or_else(|| {
            anyhow!("the site's portal names no identity provider: ask the site (its /.well-known/hpccert has no oidc.issuer)")
        })?;
        ui.step(&format!("identity provider: {issuer}"));
        let provider = oidc::discover(&http, &issuer)?;
        let mut scopes = site.oidc.scopes.clone();
        if scopes.is_empty() {
            scopes.push("openid".into());
        }
        let got = if args.client_credentials {
            let client_id = args.client_id.clone().unwrap_or_default();
            let auth = match (&args.client_secret_file, &args.private_key_jwt) {
                (Some(f), None) => {
                    oidc::ClientAuth::Secret(files::read_secret(f, "the client secret")?)
                }
                (None, Some(f)) => oidc::ClientAuth::PrivateKeyJwt {
                    pem: files::read_secret(f, "the private_key_jwt key")?,
                    kid: args.key_id.clone(),
                },
                _ => bail!(
                    "--client-credentials needs --client-secret-file FILE or --private-key-jwt KEYFILE"
                ),
            };
            let client = oidc::Client {
                client_id,
                scopes: scopes
                    .into_iter()
                    .filter(|s| s != "openid" && s != "offline_access")
                    .collect(),
                audience: site.oidc.audience.clone(),
            };
            ui.step("client credentials");
            oidc::client_credentials(&http, &provider, &client, &auth)?
        } else {
            let client_id = site.oidc.client_id.clone().ok_or_else(|| {
                anyhow!("the site's portal names no public client for hpccert (oidc.client_id): ask the site")
            })?;
            if args.remember && !scopes.iter().any(|s| s == "offline_access") {
                scopes.push("offline_access".into());
            }
            let client = oidc::Client {
                client_id,
                scopes,
                audience: site.oidc.audience.clone(),
            };
            if args.device || (headless() && !args.no_browser) {
                ui.step("device authorization grant");
                oidc::device_flow(&http, &provider, &client, &show_device_code, &|m| ui.say(m))?
            } else {
                ui.step("authorization code flow with a loopback redirect");
                let no_browser = args.no_browser;
                let open = |url: &str| -> Result<()> {
                    if no_browser {
                        eprintln!(
                            "Open this URL in a browser on this computer to log in:\n  {url}"
                        );
                        return Ok(());
                    }
                    ui.say("Opening the browser to log in...");
                    open_browser(url).or_else(|e| {
                        eprintln!("({e}) Open this URL in a browser on this computer:\n  {url}");
                        Ok(())
                    })
                };
                oidc::code_flow(&http, &provider, &client, &open, &|m| ui.say(m))?
            }
        };
        files::write_private(&dirs.access_token(&name), got.access_token.as_bytes())?;
        match (&got.refresh_token, args.remember) {
            (Some(r), true) => files::write_private(&dirs.refresh_token(&name), r.as_bytes())?,
            _ => {
                files::remove(&dirs.refresh_token(&name))?;
            }
        }
        tokens = got;
        ca::Proof::Token(&tokens.access_token)
    };

    let key = dirs.key(&name);
    let public = keys::ensure_key(&key, &dirs.public_key(&name), &format!("hpccert {name}"))?;
    ui.step(&format!(
        "certificate for {}",
        dirs.public_key(&name).display()
    ));
    let issued = ca::request(&http, &site, &public, &args.principals, &proof)?;
    files::write_mode(
        &dirs.certificate(&name),
        format!("{}\n", issued.certificate.trim()).as_bytes(),
        0o644,
    )?;
    let remaining = issued.valid_before.saturating_sub(now_unix());
    let agent = if args.no_agent {
        "not added to the agent (--no-agent)".to_string()
    } else if keys::agent_running() {
        keys::add_to_agent(&key, remaining)?;
        format!(
            "in the ssh-agent for {}",
            left(remaining).trim_end_matches(" left")
        )
    } else {
        "no ssh-agent is running: ssh uses the files".to_string()
    };
    ui.step(&format!("done in {} ms", started.elapsed().as_millis()));
    println!(
        "Logged in to {} as {}: account{} {} until {} ({agent}).",
        site.site,
        issued.identity.as_deref().unwrap_or("?"),
        if issued.principals.len() == 1 {
            ""
        } else {
            "s"
        },
        issued.principals.join(", "),
        when(issued.valid_before)
    );
    if !dirs.home.join(".ssh/config").is_file()
        || !std::fs::read_to_string(dirs.home.join(".ssh/config"))
            .unwrap_or_default()
            .contains(&format!("# BEGIN hpccert {name} "))
    {
        eprintln!(
            "Next: hpccert ssh-config --install (then ssh {})",
            site.hosts().first().map_or("LOGIN-HOST", |h| h.0.as_str())
        );
    }
    Ok(())
}

/// The site, its saved discovery document, and the files.
fn known_site(site: Option<&str>) -> Result<(Dirs, String, Option<Discovery>)> {
    let dirs = Dirs::from_env()?;
    let config = ClientConfig::load(&dirs.config_file())?;
    let (name, _) = config.resolve(site)?;
    let discovery = std::fs::read_to_string(dirs.discovery(&name))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    Ok((dirs, name, discovery))
}

fn check(site: Option<&str>, min_valid: Duration) -> Result<bool> {
    let (dirs, name, _) = known_site(site)?;
    Ok(match keys::CertInfo::read(&dirs.certificate(&name))? {
        Some(c) => {
            c.remaining(now_unix()) >= min_valid.as_secs().max(1) && dirs.key(&name).is_file()
        }
        None => false,
    })
}

fn status(site: Option<&str>) -> Result<()> {
    let (dirs, name, discovery) = known_site(site)?;
    println!(
        "site:        {name}{}",
        discovery
            .as_ref()
            .map(|d| format!(" ({}, {})", d.site, d.portal))
            .unwrap_or_default()
    );
    println!("key:         {}", dirs.key(&name).display());
    match keys::CertInfo::read(&dirs.certificate(&name))? {
        Some(c) => {
            let remaining = c.remaining(now_unix());
            println!(
                "certificate: serial {} for {}",
                c.serial,
                c.principals.join(", ")
            );
            println!("key id:      {}", c.key_id);
            println!(
                "valid until: {} ({})",
                when(c.valid_before),
                left(remaining)
            );
        }
        None => println!("certificate: none (hpccert login {name})"),
    }
    println!(
        "agent:       {}",
        if keys::agent_running() {
            "running"
        } else {
            "not running (SSH_AUTH_SOCK is not set)"
        }
    );
    Ok(())
}

fn logout(ui: &Ui, site: Option<&str>) -> Result<()> {
    let (dirs, name, _) = known_site(site)?;
    if keys::agent_running() && dirs.key(&name).is_file() {
        match keys::remove_from_agent(&dirs.key(&name)) {
            Ok(()) => ui.say("removed from the ssh-agent"),
            Err(e) => ui.step(&format!("agent: {e}")),
        }
    }
    for f in [
        dirs.certificate(&name),
        dirs.key(&name),
        dirs.public_key(&name),
        dirs.access_token(&name),
        dirs.refresh_token(&name),
    ] {
        if files::remove(&f)? {
            ui.say(&format!("removed {}", f.display()));
        }
    }
    println!("Logged out of {name}.");
    Ok(())
}

fn ssh_config(ui: &Ui, site: Option<&str>, install: bool) -> Result<()> {
    let (dirs, name, discovery) = known_site(site)?;
    let discovery =
        discovery.ok_or_else(|| anyhow!("log in to {name} first (hpccert login {name})"))?;
    let hosts = discovery.hosts();
    if hosts.is_empty() {
        bail!("the site lists no login hosts in its discovery document");
    }
    let program = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "hpccert".into());
    let program = if program.contains(' ') {
        format!("'{program}'")
    } else {
        program
    };
    let block = sshconfig::render(
        &name,
        &hosts,
        &dirs.key(&name),
        &dirs.certificate(&name),
        &program,
    );
    if !install {
        print!("{block}");
        return Ok(());
    }
    let path = dirs.home.join(".ssh").join("config");
    if sshconfig::install(&path, &name, &block)? {
        ui.say(&format!(
            "wrote the {name} block into {} (the old file is {}.hpccert-backup)",
            path.display(),
            path.display()
        ));
    } else {
        ui.say(&format!(
            "{} already holds the {name} block",
            path.display()
        ));
    }
    Ok(())
}

/// The WLCG bearer token discovery location a tool reads.
fn bearer_token_file() -> PathBuf {
    if let Some(f) = std::env::var_os("BEARER_TOKEN_FILE") {
        return PathBuf::from(f);
    }
    #[cfg(unix)]
    let uid = nix::unistd::getuid().as_raw();
    #[cfg(not(unix))]
    let uid = 0;
    match std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
    {
        Some(d) => d.join(format!("bt_u{uid}")),
        None => std::env::temp_dir().join(format!("bt_u{uid}")),
    }
}

fn token(ui: &Ui, site: Option<&str>, write: bool) -> Result<()> {
    let (dirs, name, discovery) = known_site(site)?;
    let current = std::fs::read_to_string(dirs.access_token(&name))
        .ok()
        .filter(|t| {
            oidc::jwt_claims(t)
                .ok()
                .and_then(|c| c["exp"].as_u64())
                .is_some_and(|exp| exp > now_unix() + 30)
        });
    let token = match current {
        Some(t) => t,
        None => {
            let refresh = std::fs::read_to_string(dirs.refresh_token(&name)).map_err(|_| {
                anyhow!("no current access token for {name}: hpccert login {name} (with --remember to renew without a login)")
            })?;
            let d = discovery.ok_or_else(|| anyhow!("log in to {name} first"))?;
            let issuer = d
                .oidc
                .issuer
                .clone()
                .ok_or_else(|| anyhow!("the site names no identity provider"))?;
            let http = http()?;
            let provider = oidc::discover(&http, &issuer)?;
            let client = oidc::Client {
                client_id: d.oidc.client_id.clone().unwrap_or_default(),
                scopes: d.oidc.scopes.clone(),
                audience: d.oidc.audience.clone(),
            };
            ui.step("refreshing the access token");
            let t = oidc::refresh(&http, &provider, &client, refresh.trim())?;
            files::write_private(&dirs.access_token(&name), t.access_token.as_bytes())?;
            if let Some(r) = &t.refresh_token {
                files::write_private(&dirs.refresh_token(&name), r.as_bytes())?;
            }
            t.access_token
        }
    };
    if write {
        let path = bearer_token_file();
        files::write_private(&path, token.as_bytes())?;
        ui.say(&format!("wrote {}", path.display()));
    } else {
        println!("{}", token.trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use crate::cli::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
