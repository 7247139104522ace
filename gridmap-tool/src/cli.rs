//! Command-line definitions (the dispatch is in `dispatch`). Only clap and hpccert-core: xtask
//! includes this file to generate the man pages and shell completions.

// The help texts below name config sections as TOML writes them (`[trust] ca_dir`); clap shows
// them verbatim in --help and the man pages, so they are not intra-doc links.
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hpccert_core::trust::x509::CrlPolicy;

/// Manage and explain hpccert's grid-mapfile, trust store and login decisions.
///
/// Exit codes: 0 success (accepted, clean), 1 refused or findings, 2 usage, configuration or
/// input error.
#[derive(Debug, Parser)]
#[command(name = "gridmap-tool", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// Log debug details to stderr (or set HPCCERT_LOG=debug).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Where configuration comes from; flags override the config file.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Config file [default: /etc/hpccert/hpccert.toml, built-in defaults if it does not exist].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Trust directory (IGTF layout) or PEM bundle; overrides [trust] ca_dir.
    #[arg(long, global = true, value_name = "DIR")]
    pub ca_dir: Option<PathBuf>,
    /// grid-mapfile; overrides [mapping] grid_mapfile.
    #[arg(long, global = true, value_name = "FILE")]
    pub gridmap: Option<PathBuf>,
    /// Revocation checking; overrides [trust] crl.
    #[arg(long, global = true, value_enum)]
    pub crl: Option<CrlArg>,
    /// Accept Globus limited proxies; overrides [trust] allow_limited_proxies.
    #[arg(long, global = true)]
    pub allow_limited_proxies: bool,
    /// Validate at this time instead of now (RFC 3339, e.g. 2026-01-31T12:00:00Z).
    #[arg(long, global = true, value_name = "RFC3339")]
    pub at: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CrlArg {
    Require,
    IfPresent,
    Ignore,
}

impl From<CrlArg> for CrlPolicy {
    fn from(a: CrlArg) -> Self {
        match a {
            CrlArg::Require => CrlPolicy::Require,
            CrlArg::IfPresent => CrlPolicy::IfPresent,
            CrlArg::Ignore => CrlPolicy::Ignore,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DnForm {
    /// RFC 4514: CN=x,O=y,DC=org
    Rfc4514,
    /// OpenSSL/Globus slash form: /DC=org/O=y/CN=x
    Openssl,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and lint a grid-mapfile: syntax errors, duplicate DNs, unknown accounts, DNs outside
    /// every trusted CA's namespace. Exit 0 clean, 1 findings, 2 unreadable.
    Check {
        /// The file [default: the configured grid-mapfile].
        file: Option<PathBuf>,
    },
    /// Run the real decision engine and print the decision with every reason.
    /// Exit 0 accepted, 1 refused, 2 usage or configuration error.
    #[command(group = clap::ArgGroup::new("what").required(true).args(["cert", "dn", "token"]))]
    Explain {
        /// Certificate chain in PEM: the presented certificate (EEC or proxy) first.
        #[arg(long, value_name = "CHAIN.pem")]
        cert: Option<PathBuf>,
        /// A DN (either form): mapping only, no credential is checked.
        #[arg(long, value_name = "DN")]
        dn: Option<String>,
        /// A JWT access token in FILE (`-` reads stdin), verified with the cached issuer keys.
        #[arg(long, value_name = "FILE")]
        token: Option<PathBuf>,
        /// Ad-hoc issuer for --token instead of the configured [[issuer]] tables.
        #[arg(long, value_name = "URL", requires = "token")]
        issuer: Option<String>,
        /// Audience the ad-hoc issuer's tokens must name (repeatable).
        #[arg(long, value_name = "AUD", requires = "issuer")]
        audience: Vec<String>,
        /// JWKS file of the ad-hoc issuer (else its keys come from the key cache).
        #[arg(long, value_name = "FILE", requires = "issuer")]
        jwks: Option<PathBuf>,
        /// Token map; overrides [mapping] token_mapfile.
        #[arg(long, value_name = "FILE", requires = "token")]
        token_mapfile: Option<PathBuf>,
        /// Scope a login needs (repeatable); overrides the issuers' required_scopes.
        #[arg(long, value_name = "SCOPE", requires = "token")]
        require_scope: Vec<String>,
        /// The requested login name [default: the first mapped account].
        #[arg(long, value_name = "LOGIN")]
        user: Option<String>,
        /// The client's address, checked against the restrictions' from= (without it they are
        /// shown, not checked).
        #[arg(long, value_name = "ADDR")]
        from: Option<std::net::IpAddr>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Map DN to ACCOUNT (added to the DN's line if it has one). Keeps comments and order;
    /// locks and replaces the file atomically.
    Add {
        /// The DN, slash or RFC 4514 form.
        dn: String,
        /// Account, or several separated by commas; `.pool` for a pool.
        account: String,
    },
    /// Remove ACCOUNT from DN's mapping, or the whole mapping when no account is given.
    Remove { dn: String, account: Option<String> },
    /// List the effective mappings.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Issuer signing keys: fetch them into the cache, or show what is cached.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The token map (issuer, subject) -> accounts.
    Tokenmap {
        #[command(subcommand)]
        command: TokenmapCommand,
    },
    /// Pool account leases in the gridmapdir ([[pool]] tables, [mapping] gridmapdir).
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// Add an identity or account to the suspension list ([mapping] suspended_file): its
    /// logins are refused, whatever maps it. Locks and replaces the file atomically.
    Suspend {
        #[command(flatten)]
        who: Suspendable,
    },
    /// Remove an entry from the suspension list. Exit 1 when it was not there.
    Unsuspend {
        #[command(flatten)]
        who: Suspendable,
    },
    /// Install the mapping portal's export bundle (mapping-portal/EXPORT.md): suspension list,
    /// token map, grid-mapfile (after the static one) and NSS cache, each replaced atomically,
    /// then the state (.portal-sync.json: ETag, serial). Everything is checked first; a
    /// refusal exits 2 and changes nothing. Exit 0 installed or unchanged. For a timer.
    Sync(SyncArgs),
    /// Convert a DN between RFC 4514 and the OpenSSL/Globus slash form.
    ConvertDn {
        dn: String,
        #[arg(long, value_enum)]
        to: DnForm,
    },
    /// A local demo on a generated dev PKI: a CA, a user certificate and proxies, a trust
    /// directory and grid-mapfile, and the engine's decisions on them.
    Demo {
        /// Keep the demo files here instead of a temporary directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// Who is suspended: exactly one of these.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Suspendable {
    /// A certificate identity (slash or RFC 4514 form).
    #[arg(long, value_name = "DN")]
    pub dn: Option<String>,
    /// A token identity: its issuer and subject.
    #[arg(long, num_args = 2, value_names = ["ISSUER", "SUBJECT"])]
    pub token: Vec<String>,
    /// A local or pool account.
    #[arg(long, value_name = "NAME")]
    pub account: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Every pool account: free, or leased to whom and when last used.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Release one lease: by account, or by identity. Exit 1 when there was none.
    #[command(group = clap::ArgGroup::new("whose").required(true).args(["account", "dn", "token", "key"]))]
    Release {
        /// The leased account (e.g. atlas007).
        account: Option<String>,
        /// The identity's DN.
        #[arg(long, value_name = "DN")]
        dn: Option<String>,
        /// A token identity: its issuer and subject.
        #[arg(long, num_args = 2, value_names = ["ISSUER", "SUBJECT"])]
        token: Vec<String>,
        /// The lease file's name in the gridmapdir (as `pool list` shows it).
        #[arg(long, value_name = "FILE_NAME")]
        key: Option<String>,
    },
    /// Release every lease not used for longer than --older-than (s, m, h, d, w). For a timer.
    Expire {
        #[arg(long, value_name = "AGE", default_value = "30d")]
        older_than: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Fetch the keys of every configured issuer (discovery or jwks_uri) and replace its
    /// cache file atomically; a failing issuer keeps its last good keys. For a systemd timer.
    /// Exit 0 all refreshed, 1 any failed.
    Refresh {
        /// Only this issuer.
        #[arg(long, value_name = "URL")]
        issuer: Option<String>,
    },
    /// List issuers, key ids, algorithms and the age of the cached keys.
    /// Exit 1 when a configured issuer has no usable or only stale keys.
    Show {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenmapCommand {
    /// Parse and lint a token map: syntax errors, duplicate rules, unknown accounts,
    /// unconfigured issuers. Exit 0 clean, 1 findings, 2 unreadable.
    Check {
        /// The file [default: the configured token_mapfile].
        file: Option<PathBuf>,
    },
    /// Convert an HTCondor mapfile's SCITOKENS lines to token map lines (on stdout; what
    /// cannot be converted is listed on stderr and makes the exit status 1).
    ImportCondor { file: PathBuf },
}

/// The options of `sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The bundle's URL (a URL without a path gets /export/v1/bundle). https, or plain
    /// http to a loopback address only.
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// File holding the bearer token (mode 0600 or stricter).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Authenticate with this client certificate (PEM; mutual TLS, the portal's
    /// export_client_ca and export_client_dns) instead of or besides a token.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's key (PEM, mode 0600 or stricter).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Trust the portal's server certificate from these CAs (PEM) besides the built-in
    /// web roots (a site CA).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// The site's own grid-mapfile lines, installed before the portal's (they win).
    #[arg(long, value_name = "FILE")]
    pub static_gridmap: Option<PathBuf>,
    /// The node's own suspensions, installed with the portal's (a suspension made only in
    /// the installed list is lost at the next sync; keep local ones here).
    #[arg(long, value_name = "FILE")]
    pub static_suspended: Option<PathBuf>,
    /// Install everything under DIR (grid-mapfile, token-mapfile, suspended, nss/) instead
    /// of the configured paths.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Connect and read timeout.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
}
