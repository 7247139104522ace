//! The command line of hpccert, apart from `main` so that the man page and the shell
//! completions (`cargo xtask man`, `cargo xtask completions`) are generated from the same
//! definition: xtask includes this file. It depends only on clap and std.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "hpccert",
    version,
    about = "Log in to an HPC site through your institution and get a short-lived SSH certificate",
    long_about = "Log in to an HPC site through your institution and get a short-lived SSH certificate.\n\n\
        The first `hpccert login https://portal.example.org` remembers the site (in ~/.config/hpccert/config.toml) \
        and makes a key pair in ~/.ssh/hpccert/SITE; every login then gets a certificate for it from the site's \
        portal, valid for hours, and adds both to the ssh-agent for exactly that long. `hpccert ssh-config --install` \
        lets ssh, scp, sftp, rsync and VS Code use it, and renews it when it runs out.",
    after_help = "Examples:\n  hpccert login https://portal.example.org     first login (opens the browser, or shows a code)\n  \
        hpccert ssh-config --install                  then: ssh login.example.org\n  \
        hpccert check || hpccert login                in scripts\n  \
        hpccert login --client-credentials --client-id gw --client-secret-file ~/.gw-secret   a gateway\n  \
        hpccert login --x509                          with a grid proxy (grid-proxy-init)"
)]
pub struct Cli {
    /// Show each step.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in and get a certificate (SITE: the portal's URL the first time, then its name).
    Login(LoginArgs),
    /// What the site's certificate allows and until when.
    Status { site: Option<String> },
    /// Exit 0 when the certificate is valid for --min-valid more, 1 when it is expired or
    /// absent, 2 on an error; prints nothing.
    Check {
        site: Option<String>,
        /// How long it must still be valid (e.g. 10m, 1h, 90s).
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        min_valid: Duration,
    },
    /// Remove the site's key, certificate, agent entries and tokens.
    Logout { site: Option<String> },
    /// The OpenSSH client configuration for the site's login hosts (--install: into
    /// ~/.ssh/config, as a marked block).
    SshConfig {
        site: Option<String>,
        #[arg(long)]
        install: bool,
    },
    /// The current access token on stdout (--write: into the WLCG bearer token file).
    Token {
        site: Option<String>,
        #[arg(long)]
        write: bool,
    },
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    pub site: Option<String>,
    /// Log in on another device: show a URL, a code and a QR code (the default without a
    /// display, or over SSH).
    #[arg(long, conflicts_with_all = ["client_credentials", "x509"])]
    pub device: bool,
    /// Print the login URL instead of opening a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// A gateway or robot: the OAuth2 client credentials grant (with --client-id and a secret
    /// file or --private-key-jwt).
    #[arg(long, requires = "client_id", conflicts_with = "x509")]
    pub client_credentials: bool,
    #[arg(long, requires = "client_credentials")]
    pub client_id: Option<String>,
    /// The client secret, in a file only you can read.
    #[arg(long, conflicts_with = "private_key_jwt")]
    pub client_secret_file: Option<PathBuf>,
    /// Authenticate the client with an RFC 7523 assertion signed by this key (PEM, RSA or EC
    /// P-256, only you can read it).
    #[arg(long)]
    pub private_key_jwt: Option<PathBuf>,
    /// The key id (kid) of --private-key-jwt's key, when the provider needs it.
    #[arg(long, requires = "private_key_jwt")]
    pub key_id: Option<String>,
    /// Prove a grid certificate or proxy instead (FILE, else $X509_USER_PROXY, else
    /// /tmp/x509up_u$UID).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "")]
    pub x509: Option<PathBuf>,
    /// Ask for these accounts only (repeatable; default: what the site maps you to).
    #[arg(long = "principal", value_name = "ACCOUNT")]
    pub principals: Vec<String>,
    /// Keep the refresh token (0600) so that `hpccert token` can renew without a login.
    #[arg(long)]
    pub remember: bool,
    /// Do not add the key and certificate to the ssh-agent.
    #[arg(long)]
    pub no_agent: bool,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: a duration is a number and s, m, h or d (10m)"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    Ok(Duration::from_secs(n.saturating_mul(factor)))
}
