//! The command line of mapping-portal, apart from `main` so that the man page and the shell
//! completions (`cargo xtask man`, `cargo xtask completions`) come from the same definition:
//! xtask includes this file. It depends only on clap.

use std::path::PathBuf;

use clap::Parser;

/// The portal's own config file (it holds secrets: the OIDC client secret, export tokens).
pub const DEFAULT_CONFIG: &str = "/etc/hpccert/portal.toml";

/// The hpccert mapping portal: researchers log in with their institution (OpenID Connect:
/// CILogon, Globus Auth, Keycloak), prove that they own a local account (PAM, or the site's
/// single sign-on proxy) and link their token identity and certificate DN to it; admins
/// approve, suspend and read the audit log. Login nodes fetch the result as one export bundle
/// (`GET /export/v1/bundle`, installed by `gridmap-tool sync`).
///
/// Reads the `[portal]` section of its config file (`version = 1` and `[portal]`; see the
/// commented /etc/hpccert/portal.toml): the database (SQLite by default, or a postgres:// URL),
/// the listening address, the public URL, the OpenID provider (`[portal.oidc]`), how accounts
/// are proved, the admins, TLS, and the export tokens. SIGTERM stops gracefully.
#[derive(Debug, Parser)]
#[command(name = "mapping-portal", version)]
pub struct Cli {
    /// The config file.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG, conflicts_with = "dev")]
    pub config: PathBuf,
    /// Development mode, on a loopback address only: an SQLite database, the export and a
    /// generated export token in a temporary (or the --state-dir) directory; a built-in dev
    /// OpenID provider (dev researchers picked on a page; ID and access tokens, JWKS, and a dev
    /// CA with a certificate for each researcher), unless HPCCERT_PORTAL_ISSUER,
    /// HPCCERT_PORTAL_CLIENT_ID (and HPCCERT_PORTAL_CLIENT_SECRET) name a provider; the
    /// account proof accepts only the current user's account with a generated dev password (no
    /// PAM). Prints where everything is.
    #[arg(long)]
    pub dev: bool,
    /// Keep --dev's state here (database, export, token, dev provider's keys and
    /// certificates) instead of a temporary directory removed at exit.
    #[arg(long, value_name = "DIR", requires = "dev")]
    pub state_dir: Option<PathBuf>,
    /// Listen here instead of `[portal] listen` (in --dev: a free port on 127.0.0.1).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
}
