//! `/etc/hpccert/hpccert.toml`: one versioned config file for every component.
//!
//! Unknown keys are errors, and every error names the file, the line and the key. Each
//! component reads its own section; sections for components not built yet are refused
//! rather than ignored, so a typo never silently disables a check.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::identity::pool::{DEFAULT_GRIDMAPDIR, PoolConfig, Pools};
use crate::token::{Capability, IssuerPolicy, JwsAlgorithm, Profile};
use crate::trust::store::Purpose;
use crate::trust::x509::{CrlPolicy, NamespaceEnforcement, VerifyOptions};

/// The default location of the config file.
pub const DEFAULT_PATH: &str = "/etc/hpccert/hpccert.toml";
/// The config format version this build reads.
pub const VERSION: u32 = 1;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Format version; must be 1.
    pub version: u32,
    #[serde(default)]
    pub trust: TrustConfig,
    #[serde(default)]
    pub mapping: MappingConfig,
    #[serde(default)]
    pub tokens: TokensConfig,
    #[serde(default)]
    pub sshd: SshdConfig,
    /// `[[issuer]]` tables: the trusted token issuers.
    #[serde(default, rename = "issuer", skip_serializing_if = "Vec::is_empty")]
    pub issuers: Vec<IssuerConfig>,
    /// `[[pool]]` tables: pools of accounts leased to identities (`.name` in the grid-mapfile).
    #[serde(default, rename = "pool", skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolConfig>,
    /// `[portal]`: the mapping portal's own settings (read only by `mapping-portal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<PortalConfig>,
}

fn default_portal_listen() -> String {
    "127.0.0.1:8443".into()
}

/// `[portal]`: the mapping portal (its database, its listener, its identity provider, how
/// accounts are proved, its admins, who may fetch its export).
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {
    /// `sqlite://PATH?mode=rwc` or `postgres://...` [default: an SQLite file the portal names].
    pub database: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8443].
    #[serde(default = "default_portal_listen")]
    pub listen: String,
    /// The portal's public URL (the OIDC redirect URI is URL/login/callback; named in the
    /// export bundle). `https://` makes the cookies Secure and sends HSTS.
    pub url: Option<String>,
    /// Where the portal also installs its export for its own node (optional).
    pub export_dir: Option<PathBuf>,
    /// Bearer secrets that may fetch `/export/v1/bundle` (never printed by `Debug`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_tokens: Vec<String>,
    /// Login nodes may also fetch the export with a client certificate (mutual TLS, with
    /// `tls_certificate`): one issued by a CA of this PEM file ...
    pub export_client_ca: Option<PathBuf>,
    /// ... whose subject is one of these DNs (slash or RFC 4514 form).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_client_dns: Vec<String>,
    /// Serve HTTPS with this certificate chain (PEM) and `tls_key`; plain HTTP without them
    /// (behind a TLS reverse proxy).
    pub tls_certificate: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Reverse proxies whose `X-Forwarded-For` is believed (the client address in logs, the
    /// audit log and rate limits) and whose `remote_user_header` is believed (`proof =
    /// "header"`). Empty: no forwarded header is believed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Whether a new link takes effect at once or waits for an admin.
    #[serde(default)]
    pub approval: PortalApproval,
    /// How a user proves they own a local account.
    #[serde(default)]
    pub proof: PortalProof,
    /// The PAM service of `proof = "pam"` [default: mapping-portal].
    #[serde(default = "default_portal_pam_service")]
    pub pam_service: String,
    /// The header carrying the account name of `proof = "header"` [default: REMOTE_USER].
    #[serde(default = "default_portal_remote_user_header")]
    pub remote_user_header: String,
    /// Accounts with a lower uid can never be linked [default: 1000].
    #[serde(default = "default_portal_min_uid")]
    pub min_uid: u32,
    /// Users may also link a certificate DN their identity provider did not assert (an older
    /// CILogon DN, an IGTF CA's), proved by signing a challenge with the certificate's key
    /// (or a proxy's); the chain is checked against `[trust]` as a login's is [default: false].
    #[serde(default)]
    pub certificate_dns: bool,
    /// Token identities (as the identity provider names them) that may use the admin pages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admins: Vec<PortalAdmin>,
    /// `[portal.oidc]`: the identity provider users log in with (none: no one can log in).
    pub oidc: Option<PortalOidcConfig>,
    /// `[portal.ssh_ca]`: the site's SSH user CA (`POST /ssh/v1/certificate`).
    pub ssh_ca: Option<PortalSshCaConfig>,
}

/// `[portal.ssh_ca]`: short-lived OpenSSH user certificates for the accounts a credential maps
/// to (see `hpccert_core::trust::sshca`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortalSshCaConfig {
    /// The Ed25519 CA private key (OpenSSH format, mode 0600, owned by the portal's user).
    pub key_file: PathBuf,
    /// The next CA key for a rollover: published with the current one, not used to sign.
    pub next_key_file: Option<PathBuf>,
    /// Longest validity of a certificate, in seconds (never past the credential's own expiry).
    #[serde(default = "default_ssh_ca_max_validity")]
    pub max_validity: u64,
    /// User key types: `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ecdsa-sha2-nistp384`, `rsa`
    /// (3072 bits or more) or `rsa-BITS`.
    #[serde(default = "default_ssh_ca_key_types")]
    pub key_types: Vec<String>,
    #[serde(default = "yes")]
    pub permit_pty: bool,
    #[serde(default = "yes")]
    pub permit_agent_forwarding: bool,
    #[serde(default = "yes")]
    pub permit_port_forwarding: bool,
    #[serde(default)]
    pub permit_x11_forwarding: bool,
    #[serde(default)]
    pub permit_user_rc: bool,
    /// Certificate requests per identity per hour.
    #[serde(default = "default_ssh_ca_per_identity")]
    pub per_identity_per_hour: usize,
    /// Certificate requests per source address per hour.
    #[serde(default = "default_ssh_ca_per_source")]
    pub per_source_per_hour: usize,
    /// For `/.well-known/hpccert`: the site's name, the public OIDC client the `hpccert`
    /// client uses, its scopes and the audience of its tokens, and the login hosts
    /// (`host:port`).
    pub site_name: Option<String>,
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub login_hosts: Vec<String>,
}

fn yes() -> bool {
    true
}
fn default_ssh_ca_max_validity() -> u64 {
    12 * 3600
}
fn default_ssh_ca_key_types() -> Vec<String> {
    [
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "rsa",
    ]
    .map(String::from)
    .to_vec()
}
fn default_ssh_ca_per_identity() -> usize {
    30
}
fn default_ssh_ca_per_source() -> usize {
    120
}

impl PortalSshCaConfig {
    /// The policy the CA enforces.
    pub fn policy(&self) -> Result<crate::trust::sshca::CaPolicy, String> {
        if self.max_validity == 0 {
            return Err("[portal.ssh_ca] max_validity must be above 0 seconds".into());
        }
        let key_types = self
            .key_types
            .iter()
            .map(|t| {
                crate::trust::sshca::UserKeyType::parse(t)
                    .map_err(|e| format!("[portal.ssh_ca] key_types: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if key_types.is_empty() {
            return Err("[portal.ssh_ca] key_types is empty: no key could be certified".into());
        }
        Ok(crate::trust::sshca::CaPolicy {
            max_validity: std::time::Duration::from_secs(self.max_validity),
            key_types,
            extensions: crate::trust::sshca::Extensions {
                pty: self.permit_pty,
                agent_forwarding: self.permit_agent_forwarding,
                port_forwarding: self.permit_port_forwarding,
                x11_forwarding: self.permit_x11_forwarding,
                user_rc: self.permit_user_rc,
            },
        })
    }
}

/// `[portal] approval`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortalApproval {
    #[default]
    Immediate,
    Admin,
}

/// `[portal] proof`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortalProof {
    /// The account's password, checked by the PAM service `pam_service`.
    #[default]
    Pam,
    /// The site's single sign-on proxy names the account in `remote_user_header`.
    Header,
}

/// One `[portal] admins` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortalAdmin {
    pub issuer: String,
    pub subject: String,
}

/// `[portal.oidc]`.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortalOidcConfig {
    /// The issuer (discovery at ISSUER/.well-known/openid-configuration) [CILogon:
    /// `https://cilogon.org`].
    pub issuer: String,
    pub client_id: String,
    /// The client secret, inline (never printed by `Debug`) ...
    pub client_secret: Option<String>,
    /// ... or in a file of its own (one line).
    pub client_secret_file: Option<PathBuf>,
    /// [default: openid email profile org.cilogon.userinfo]
    #[serde(default = "default_portal_scopes")]
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for PortalOidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalOidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<secret>"),
            )
            .field("client_secret_file", &self.client_secret_file)
            .field("scopes", &self.scopes)
            .finish()
    }
}

fn default_portal_pam_service() -> String {
    "mapping-portal".into()
}
fn default_portal_remote_user_header() -> String {
    "REMOTE_USER".into()
}
fn default_portal_min_uid() -> u32 {
    1000
}
fn default_portal_scopes() -> Vec<String> {
    ["openid", "email", "profile", "org.cilogon.userinfo"]
        .map(String::from)
        .to_vec()
}

impl std::fmt::Debug for PortalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalConfig")
            .field("database", &self.database.as_deref().map(redact_password))
            .field("listen", &self.listen)
            .field("url", &self.url)
            .field("export_dir", &self.export_dir)
            .field(
                "export_tokens",
                &format_args!("<{} secrets>", self.export_tokens.len()),
            )
            .field("export_client_ca", &self.export_client_ca)
            .field("export_client_dns", &self.export_client_dns)
            .field("tls_certificate", &self.tls_certificate)
            .field("tls_key", &self.tls_key)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("approval", &self.approval)
            .field("proof", &self.proof)
            .field("pam_service", &self.pam_service)
            .field("remote_user_header", &self.remote_user_header)
            .field("min_uid", &self.min_uid)
            .field("certificate_dns", &self.certificate_dns)
            .field("admins", &self.admins)
            .field("oidc", &self.oidc)
            .field("ssh_ca", &self.ssh_ca)
            .finish()
    }
}

/// `scheme://user:SECRET@host/...` with the password replaced, for logs and debug output.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!(
                "{scheme}://{user}:<redacted>@{host}{}",
                &rest[authority_end..]
            )
        }
        _ => url.to_string(),
    }
}

/// An authentication method sshd-gsi can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SshMethod {
    /// RFC 6187 X.509 certificates (and RFC 3820 proxies) in publickey authentication.
    X509,
    /// A bearer token answered to keyboard-interactive prompts.
    KeyboardInteractive,
    /// A bearer token given as the password (for clients that only do passwords).
    Password,
    /// OpenSSH user certificates signed by a key in `trusted_user_ca_keys`.
    OpensshCert,
}

/// The RFC 6187 algorithms offered by default (no SHA-1).
pub const DEFAULT_X509_ALGORITHMS: &[&str] = &[
    "x509v3-rsa2048-sha256",
    "x509v3-ecdsa-sha2-nistp256",
    "x509v3-ecdsa-sha2-nistp384",
    "x509v3-ecdsa-sha2-nistp521",
    "x509v3-ssh-ed25519",
];

/// Every RFC 6187 algorithm sshd-gsi implements; `x509v3-ssh-rsa` and `x509v3-sign-rsa` sign
/// with SHA-1 and are offered only when listed in `x509_algorithms`.
pub const KNOWN_X509_ALGORITHMS: &[&str] = &[
    "x509v3-rsa2048-sha256",
    "x509v3-ecdsa-sha2-nistp256",
    "x509v3-ecdsa-sha2-nistp384",
    "x509v3-ecdsa-sha2-nistp521",
    "x509v3-ssh-ed25519",
    "x509v3-ssh-rsa",
    "x509v3-sign-rsa",
];

/// Key exchange algorithms sshd-gsi implements (all without SHA-1).
pub const KNOWN_KEX: &[&str] = &[
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
];

/// Offered by default: the post-quantum hybrid first, curve25519 for clients without it
/// (OpenSSH before 9.9, paramiko).
pub const DEFAULT_KEX: &[&str] = KNOWN_KEX;

/// Longest accepted `[sshd] credential_cache_ttl`, seconds.
pub const MAX_CREDENTIAL_CACHE_TTL: u64 = 86_400;
/// Largest accepted `[sshd] credential_cache_size`.
pub const MAX_CREDENTIAL_CACHE_SIZE: usize = 1 << 20;

/// `[sshd]`: the SSH server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshdConfig {
    /// Addresses to listen on.
    pub listen: Vec<String>,
    /// Host private keys (OpenSSH format).
    pub host_keys: Vec<PathBuf>,
    /// Methods offered, exactly; an empty list offers none.
    pub methods: Vec<SshMethod>,
    /// RFC 6187 algorithms offered for `x509`.
    pub x509_algorithms: Vec<String>,
    /// The program run for `subsystem sftp`, as the user.
    pub sftp_server: PathBuf,
    /// Environment variables a client may set (`*` at the end matches a prefix).
    pub accept_env: Vec<String>,
    /// Files of SSH CA public keys whose user certificates `openssh-cert` accepts.
    pub trusted_user_ca_keys: Vec<PathBuf>,
    /// An OpenSSH KRL (`ssh-keygen -k`, or the portal's), as sshd's `RevokedKeys`: with
    /// `openssh-cert` enabled, every OpenSSH certificate is checked against it (its serial and
    /// key id for its CA or any CA, its key, its CA's key) and the file is read again within
    /// seconds of a change. While it is missing or does not parse, every `openssh-cert` login
    /// is refused, as sshd refuses every key then. None (the default): no revocation list.
    pub revoked_keys: Option<PathBuf>,
    /// A file sent to clients before authentication.
    pub banner: Option<PathBuf>,
    /// The audit stream: JSON lines of every decision and session (none by default).
    pub audit_log: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (a local address; none by default).
    pub metrics_listen: Option<String>,
    /// Seconds a client has to authenticate.
    pub login_grace_time: u64,
    /// Authentication attempts per connection.
    pub max_auth_tries: usize,
    /// Key exchange algorithms offered, most preferred first.
    pub kex_algorithms: Vec<String>,
    /// Unauthenticated connections, as sshd's MaxStartups `start:rate:full`.
    pub max_startups: String,
    /// Unauthenticated connections from one address (0: no limit).
    pub per_source_max_startups: usize,
    /// Run the PAM account stack at every login and the session stack around every session
    /// process, as sshd's `UsePAM yes` (needs root; `--dev` turns it off).
    pub use_pam: bool,
    /// The PAM service name (`/etc/pam.d/NAME`).
    pub pam_service: String,
    /// The PAM helper program, started once as the PAM broker (default:
    /// `sshd-gsi-pam-helper` beside `sshd-gsi`, else `/usr/libexec/hpccert/`).
    pub pam_helper: Option<PathBuf>,
    /// Session channels (shell, exec, subsystem) open at once on one connection, as sshd's
    /// `MaxSessions` (default 10; 0 refuses every session, as sshd's `MaxSessions 0`).
    pub max_sessions: usize,
    /// After a token login, hand the token to the session: a file only the account can read,
    /// named by `BEARER_TOKEN_FILE`, removed when the login's last session ends [default: true].
    pub session_token: bool,
    /// Where the session token and proxy files are made (one private directory per login)
    /// [default: /run/hpccert/session-tokens].
    pub session_token_dir: PathBuf,
    /// Seconds a verified chain or token (and the decision made from it) is reused when the
    /// same credential logs in again, at most: never past the credential's own end, the next
    /// update of a CRL its verification read, or a change of any file the decision read
    /// (0: every login verifies afresh) [default: 300].
    pub credential_cache_ttl: u64,
    /// Verified credentials remembered at most; the least recently used goes first
    /// (0: none) [default: 1024].
    pub credential_cache_size: usize,
    /// After an X.509 login, take a proxy the client hands over in the `env` request
    /// `X509_USER_PROXY_PEM` (certificate, private key, chain) when it is the login's own
    /// proxy or a proxy of the login's certificate, and hand it to the session: a file only the
    /// account can read, named by `X509_USER_PROXY`, removed when the login's last session
    /// using it ends [default: false].
    pub x509_proxy_handover: bool,
}

/// The `env` request in which a client hands over its proxy (`[sshd] x509_proxy_handover`):
/// never a session variable, never logged.
pub const X509_PROXY_HANDOVER_ENV: &str = "X509_USER_PROXY_PEM";

/// Environment variables no client may set, whatever `[sshd] accept_env` says: the identity
/// the server hands the session (`HPCCERT_*`, `SSH_*`, the account's own), the dynamic loader's
/// and libc's (`LD_*`, `GCONV_PATH`, ...), shells' startup hooks (`ENV`, `BASH_ENV`, `IFS`) and
/// the credentials' locations (`X509_*`, `BEARER_TOKEN*`, `KRB5CCNAME`).
pub const PROTECTED_ENV_PREFIXES: &[&str] = &[
    "HPCCERT_",
    "LD_",
    "SSH_",
    "X509_",
    "BEARER_TOKEN",
    "MALLOC_",
    "GLIBC_",
];
/// Names no client may set (see [`PROTECTED_ENV_PREFIXES`]).
pub const PROTECTED_ENV_NAMES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "MAIL",
    "TERM",
    "IFS",
    "ENV",
    "BASH_ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "KRB5CCNAME",
    // also below X509_, named here so that it stays protected if that prefix ever goes: the
    // handed proxy's private key (`[sshd] x509_proxy_handover`)
    X509_PROXY_HANDOVER_ENV,
    "GCONV_PATH",
    "GETCONF_DIR",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TMPDIR",
    "TZDIR",
    "XDG_RUNTIME_DIR",
];

/// Whether a client may never set `name` (see [`PROTECTED_ENV_PREFIXES`]).
pub fn env_protected(name: &str) -> bool {
    PROTECTED_ENV_NAMES.contains(&name)
        || PROTECTED_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A protected name (or prefix, ending in `*`) that the `accept_env` pattern would admit.
pub fn pattern_admits_protected(pattern: &str) -> Option<String> {
    match pattern.strip_suffix('*') {
        // a prefix pattern admits a protected name or prefix that starts with it, and every
        // name of a protected prefix it starts with
        Some(prefix) => PROTECTED_ENV_NAMES
            .iter()
            .find(|n| n.starts_with(prefix))
            .map(|n| (*n).to_string())
            .or_else(|| {
                PROTECTED_ENV_PREFIXES
                    .iter()
                    .find(|p| p.starts_with(prefix) || prefix.starts_with(*p))
                    .map(|p| format!("{p}*"))
            }),
        None => env_protected(pattern).then(|| pattern.to_string()),
    }
}

impl Default for SshdConfig {
    fn default() -> Self {
        Self {
            listen: vec!["0.0.0.0:2222".into(), "[::]:2222".into()],
            host_keys: vec![PathBuf::from("/etc/hpccert/ssh_host_ed25519_key")],
            methods: vec![SshMethod::X509, SshMethod::KeyboardInteractive],
            x509_algorithms: DEFAULT_X509_ALGORITHMS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            sftp_server: PathBuf::from("/usr/lib/openssh/sftp-server"),
            accept_env: vec!["LANG".into(), "LC_*".into()],
            trusted_user_ca_keys: Vec::new(),
            revoked_keys: None,
            banner: None,
            audit_log: None,
            metrics_listen: None,
            login_grace_time: 120,
            max_auth_tries: 6,
            kex_algorithms: DEFAULT_KEX.iter().map(|s| s.to_string()).collect(),
            max_startups: "10:30:100".into(),
            per_source_max_startups: 10,
            use_pam: true,
            pam_service: "sshd-gsi".into(),
            pam_helper: None,
            max_sessions: 10,
            session_token: true,
            session_token_dir: PathBuf::from("/run/hpccert/session-tokens"),
            credential_cache_ttl: 300,
            credential_cache_size: 1024,
            x509_proxy_handover: false,
        }
    }
}

impl SshdConfig {
    fn check(&self) -> Result<(), String> {
        for pattern in &self.accept_env {
            if let Some(name) = pattern_admits_protected(pattern) {
                return Err(format!(
                    "[sshd] accept_env: {pattern:?} would let clients set {name}, which only the server sets (identity, loader and shell variables are never taken from a client)"
                ));
            }
        }
        for a in &self.x509_algorithms {
            if !KNOWN_X509_ALGORITHMS.contains(&a.as_str()) {
                return Err(format!(
                    "[sshd] x509_algorithms: unknown algorithm {a:?} (known: {})",
                    KNOWN_X509_ALGORITHMS.join(", ")
                ));
            }
        }
        if let Some(m) = &self.metrics_listen
            && m.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(format!(
                "[sshd] metrics_listen: {m:?} is not an address:port"
            ));
        }
        if self.kex_algorithms.is_empty() {
            return Err("[sshd] kex_algorithms is empty".into());
        }
        for k in &self.kex_algorithms {
            if !KNOWN_KEX.contains(&k.as_str()) {
                return Err(format!(
                    "[sshd] kex_algorithms: unknown algorithm {k:?} (known: {})",
                    KNOWN_KEX.join(", ")
                ));
            }
        }
        for l in &self.listen {
            if l.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!("[sshd] listen: {l:?} is not an address:port"));
            }
        }
        if self.methods.contains(&SshMethod::OpensshCert) && self.trusted_user_ca_keys.is_empty() {
            return Err(
                "[sshd] methods has \"openssh-cert\" but trusted_user_ca_keys is empty".into(),
            );
        }
        if self.max_auth_tries == 0 {
            return Err("[sshd] max_auth_tries must be at least 1".into());
        }
        if self.credential_cache_ttl > MAX_CREDENTIAL_CACHE_TTL {
            return Err(format!(
                "[sshd] credential_cache_ttl: {} s is more than a day ({MAX_CREDENTIAL_CACHE_TTL} s): a reused decision would outlive what no file change announces (an account's removal, issuer keys' age)",
                self.credential_cache_ttl
            ));
        }
        if self.credential_cache_size > MAX_CREDENTIAL_CACHE_SIZE {
            return Err(format!(
                "[sshd] credential_cache_size: {} is more than {MAX_CREDENTIAL_CACHE_SIZE}",
                self.credential_cache_size
            ));
        }
        if self.pam_service.is_empty()
            || !self
                .pam_service
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            || self.pam_service.starts_with('.')
        {
            return Err(format!(
                "[sshd] pam_service: {:?} is not a PAM service name (letters, digits, '.', '_', '-')",
                self.pam_service
            ));
        }
        Ok(())
    }
}

/// `[tokens]`: settings shared by every issuer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// The issuer key cache (one file per issuer, written by `gridmap-tool keys refresh`).
    pub key_cache_dir: PathBuf,
    /// Longest token accepted, bytes.
    pub max_token_bytes: usize,
    /// Daemons refetch cached keys older than this, seconds.
    pub refresh_after: i64,
    /// After a failed fetch, daemons leave that issuer alone for this long, seconds.
    pub negative_ttl: i64,
    /// At most one refetch per issuer for an unknown key id in this interval, seconds.
    pub min_refetch_interval: i64,
    /// Timeout of one HTTP request for issuer metadata or keys, seconds.
    pub fetch_timeout: u64,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            key_cache_dir: PathBuf::from(crate::token::keys::DEFAULT_CACHE_DIR),
            max_token_bytes: crate::token::DEFAULT_MAX_TOKEN_BYTES,
            refresh_after: 3600,
            negative_ttl: 60,
            min_refetch_interval: 60,
            fetch_timeout: 10,
        }
    }
}

fn default_algorithms() -> Vec<JwsAlgorithm> {
    vec![JwsAlgorithm::RS256, JwsAlgorithm::ES256]
}
fn default_leeway() -> i64 {
    60
}
fn default_max_key_age() -> i64 {
    7 * 86400
}
fn default_min_uid() -> u32 {
    1000
}

/// One `[[issuer]]` table: a trusted token issuer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` value (e.g. `https://cilogon.org`).
    pub issuer: String,
    /// Accepted `aud` values: a token must name one of them.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Accept the WLCG "any" audience (`https://wlcg.cern.ch/jwt/v1/any`).
    #[serde(default)]
    pub accept_any_audience: bool,
    /// Signature algorithms accepted from this issuer.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<JwsAlgorithm>,
    /// `oidc` (generic access token), `scitoken` or `wlcg`.
    #[serde(default)]
    pub profile: Profile,
    /// Keys from this JWKS URL instead of discovery (`ISSUER/.well-known/openid-configuration`).
    pub jwks_uri: Option<String>,
    /// Keys from this local JWKS file (no fetching; never stale).
    pub jwks_file: Option<PathBuf>,
    /// Clock skew allowed on exp/nbf/iat, seconds (at most 300).
    #[serde(default = "default_leeway")]
    pub leeway: i64,
    /// Longest token lifetime accepted (exp - iat), seconds.
    pub max_lifetime: Option<i64>,
    /// Keys not refreshed for this long are not used, seconds.
    #[serde(default = "default_max_key_age")]
    pub max_key_age: i64,
    /// Require `typ: at+jwt` (RFC 9068).
    #[serde(default)]
    pub require_at_jwt: bool,
    /// A claim naming the account when the token map has no rule (e.g. "preferred_username").
    pub username_claim: Option<String>,
    /// Domains whose `user@domain` claim values map to `user`.
    #[serde(default)]
    pub username_domains: Vec<String>,
    /// Scopes a token needs to log in [default: "compute.create" for scitoken and wlcg, none
    /// for oidc].
    pub required_scopes: Option<Vec<String>>,
    /// At least one of these groups is needed, when given.
    #[serde(default)]
    pub required_groups: Vec<String>,
    /// Claim-derived accounts below this uid are refused.
    #[serde(default = "default_min_uid")]
    pub min_uid: u32,
    /// What a session of this issuer's tokens may do: `scopes` (commands need compute.create
    /// or compute.modify, sftp stays below the storage.* paths; a token without such scopes
    /// may do everything) or `all` [default: scopes].
    #[serde(default)]
    pub session_rights: SessionRightsRule,
}

/// `[[issuer]] session_rights`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionRightsRule {
    /// From the token's scopes.
    #[default]
    Scopes,
    /// Everything, whatever the scopes.
    All,
}

impl IssuerConfig {
    /// An issuer with every default (for ad-hoc checks).
    pub fn new(issuer: &str, audiences: &[String]) -> Self {
        Self {
            issuer: issuer.to_string(),
            audiences: audiences.to_vec(),
            accept_any_audience: false,
            algorithms: default_algorithms(),
            profile: Profile::default(),
            jwks_uri: None,
            jwks_file: None,
            leeway: default_leeway(),
            max_lifetime: None,
            max_key_age: default_max_key_age(),
            require_at_jwt: false,
            username_claim: None,
            username_domains: Vec::new(),
            required_scopes: None,
            required_groups: Vec::new(),
            min_uid: default_min_uid(),
            session_rights: SessionRightsRule::Scopes,
        }
    }

    /// What a token of this issuer must look like.
    pub fn policy(&self) -> IssuerPolicy {
        IssuerPolicy {
            issuer: self.issuer.clone(),
            audiences: self.audiences.clone(),
            accept_any_audience: self.accept_any_audience,
            algorithms: self.algorithms.clone(),
            profile: self.profile,
            leeway: self.leeway,
            max_lifetime: self.max_lifetime,
            require_at_jwt: self.require_at_jwt,
            max_key_age: self.max_key_age,
        }
    }

    /// The scopes a login needs.
    pub fn login_scopes(&self) -> Vec<Capability> {
        match &self.required_scopes {
            Some(list) => list.iter().map(|s| Capability::parse(s)).collect(),
            None => match self.profile {
                Profile::Oidc => Vec::new(),
                Profile::Scitoken | Profile::Wlcg => vec![Capability::ComputeCreate],
            },
        }
    }

    fn check(&self) -> Result<(), String> {
        let name = &self.issuer;
        if name.is_empty() {
            return Err("[[issuer]] issuer is empty".into());
        }
        if self.audiences.is_empty() && !self.accept_any_audience {
            return Err(format!(
                "[[issuer]] {name}: audiences is empty (a token must be for this service)"
            ));
        }
        if self.algorithms.is_empty() {
            return Err(format!("[[issuer]] {name}: algorithms is empty"));
        }
        if self.jwks_uri.is_some() && self.jwks_file.is_some() {
            return Err(format!(
                "[[issuer]] {name}: jwks_uri and jwks_file are exclusive"
            ));
        }
        if !(0..=300).contains(&self.leeway) {
            return Err(format!(
                "[[issuer]] {name}: leeway must be 0 to 300 seconds"
            ));
        }
        if self.max_key_age <= 0 || self.max_lifetime.is_some_and(|l| l <= 0) {
            return Err(format!(
                "[[issuer]] {name}: max_key_age and max_lifetime must be positive"
            ));
        }
        if let Some(scopes) = &self.required_scopes {
            for s in scopes {
                if s.is_empty() || s.contains(char::is_whitespace) {
                    return Err(format!(
                        "[[issuer]] {name}: required_scopes entry {s:?} is not one scope"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `[trust]`: where CAs come from and how chains are checked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// IGTF trust directory (`<hash>.0`, `<hash>.r0`, `<hash>.namespaces`, ...).
    pub ca_dir: Option<PathBuf>,
    /// A PEM bundle of CA certificates, instead of `ca_dir`.
    pub ca_bundle: Option<PathBuf>,
    /// `require`, `if-present` or `ignore`.
    pub crl: CrlPolicy,
    /// `require`, `if-present` or `ignore`.
    pub namespaces: NamespaceEnforcement,
    /// Accept Globus limited proxies.
    pub allow_limited_proxies: bool,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            ca_dir: None,
            ca_bundle: None,
            crl: CrlPolicy::IfPresent,
            namespaces: NamespaceEnforcement::IfPresent,
            allow_limited_proxies: false,
        }
    }
}

impl TrustConfig {
    /// The trust source: `ca_bundle` if given, else `ca_dir`, else the IGTF default.
    pub fn source(&self) -> PathBuf {
        self.ca_bundle
            .clone()
            .or_else(|| self.ca_dir.clone())
            .unwrap_or_else(|| PathBuf::from("/etc/grid-security/certificates"))
    }

    pub fn verify_options(&self) -> VerifyOptions {
        VerifyOptions {
            crl: self.crl,
            namespaces: self.namespaces,
            allow_limited_proxies: self.allow_limited_proxies,
            purpose: Purpose::ClientAuth,
            ..VerifyOptions::default()
        }
    }
}

/// `[mapping]`: identity to account.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MappingConfig {
    pub grid_mapfile: PathBuf,
    /// Token identities (issuer, subject) -> accounts; optional.
    pub token_mapfile: Option<PathBuf>,
    /// Pool account leases (Globus/LCMAPS gridmapdir layout).
    pub gridmapdir: PathBuf,
    /// Suspended identities and accounts; a missing file suspends nobody.
    pub suspended_file: PathBuf,
    /// Restrictions per identity (source networks, forced command, no PTY, session limit);
    /// a missing file restricts nobody, a broken one refuses every login.
    pub restrictions_file: PathBuf,
    /// The NSS cache (`passwd`, `group`) written for pool accounts, read by nss_hpccert.
    pub nss_cache_dir: PathBuf,
    /// The lowest uid and gid the NSS cache gives an account or group: pools below it are
    /// refused here, and every writer of the cache (the pools, `gridmap-tool sync`, the portal)
    /// refuses entries below it and groups named after a system group
    /// ([`crate::host::nsscache::IdFloor`]) [default: 1000].
    pub nss_min_id: u32,
}

impl Default for MappingConfig {
    fn default() -> Self {
        Self {
            grid_mapfile: PathBuf::from("/etc/grid-security/grid-mapfile"),
            token_mapfile: None,
            gridmapdir: PathBuf::from(DEFAULT_GRIDMAPDIR),
            suspended_file: PathBuf::from(crate::identity::suspension::DEFAULT_PATH),
            restrictions_file: PathBuf::from(crate::identity::restriction::DEFAULT_PATH),
            nss_cache_dir: PathBuf::from(crate::host::nsscache::DEFAULT_DIR),
            nss_min_id: crate::host::nsscache::DEFAULT_MIN_ID,
        }
    }
}

impl MappingConfig {
    /// What the NSS cache's writers refuse (`nss_min_id`, the host's group database).
    pub fn id_floor(&self) -> crate::host::nsscache::IdFloor {
        crate::host::nsscache::IdFloor::new(self.nss_min_id)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            version: VERSION,
            trust: TrustConfig::default(),
            mapping: MappingConfig::default(),
            tokens: TokensConfig::default(),
            sshd: SshdConfig::default(),
            issuers: Vec::new(),
            pools: Vec::new(),
            portal: None,
        }
    }
}

impl Config {
    /// The issuer keys every offline reader uses: the key cache, plus the JWKS files of the
    /// issuers that name one.
    pub fn file_key_source(&self) -> crate::token::keys::FileKeySource {
        self.issuers.iter().fold(
            crate::token::keys::FileKeySource::new(&self.tokens.key_cache_dir),
            |src, i| match &i.jwks_file {
                Some(f) => src.with_jwks_file(&i.issuer, f),
                None => src,
            },
        )
    }

    /// What each trusted issuer's tokens must look like.
    pub fn issuer_policies(&self) -> Vec<IssuerPolicy> {
        self.issuers.iter().map(IssuerConfig::policy).collect()
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse `text`; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let config: Config =
            toml::from_str(text).map_err(|e| invalid(describe_toml_error(text, &e)))?;
        if config.version != VERSION {
            return Err(invalid(format!(
                "version = {} is not supported (this build reads version = {VERSION})",
                config.version
            )));
        }
        if config.trust.ca_dir.is_some() && config.trust.ca_bundle.is_some() {
            return Err(invalid(
                "[trust] ca_dir and ca_bundle are exclusive: give one".into(),
            ));
        }
        config.sshd.check().map_err(|message| {
            // name the line of the key the message is about, when it can be found
            let key = message
                .strip_prefix("[sshd] ")
                .and_then(|m| m.split(':').next())
                .unwrap_or("");
            let line = (!key.is_empty())
                .then(|| {
                    text.lines()
                        .position(|l| l.trim_start().starts_with(key))
                        .map(|n| format!("line {}: ", n + 1))
                })
                .flatten()
                .unwrap_or_default();
            invalid(format!("{line}{message}"))
        })?;
        if let Some(ca) = config.portal.as_ref().and_then(|p| p.ssh_ca.as_ref()) {
            ca.policy().map_err(invalid)?;
        }
        for (i, issuer) in config.issuers.iter().enumerate() {
            issuer.check().map_err(invalid)?;
            if config.issuers[..i]
                .iter()
                .any(|o| o.issuer == issuer.issuer)
            {
                return Err(invalid(format!(
                    "[[issuer]] {} is configured twice",
                    issuer.issuer
                )));
            }
        }
        if let Err((i, message)) = Pools::from_config(&config.pools) {
            let line = nth_table_line(text, "[[pool]]", i)
                .map(|l| format!("line {l}: "))
                .unwrap_or_default();
            return Err(invalid(format!("{line}[[pool]] {message}")));
        }
        let floor = config.mapping.nss_min_id;
        if floor == 0 {
            return Err(invalid(format!(
                "{}[mapping] nss_min_id = 0: it must be at least 1 (uid and gid 0 are root's)",
                key_line(text, "[mapping]", 0, "nss_min_id")
            )));
        }
        for (i, pool) in config.pools.iter().enumerate() {
            // a pool in the system range would give leased identities a daemon's uid or a
            // group like wheel: refused here, so that the pool code never writes it
            let last = pool.first_uid.saturating_add(pool.count.saturating_sub(1));
            let (key, message) = if pool.first_uid < floor {
                (
                    "first_uid",
                    format!(
                        "first_uid = {}: uids {}-{last} reach below [mapping] nss_min_id = {floor} (the system's ids)",
                        pool.first_uid, pool.first_uid
                    ),
                )
            } else if pool.gid < floor {
                (
                    "gid",
                    format!(
                        "gid = {} is below [mapping] nss_min_id = {floor} (the system's groups)",
                        pool.gid
                    ),
                )
            } else {
                continue;
            };
            return Err(invalid(format!(
                "{}[[pool]] {}: {message}",
                key_line(text, "[[pool]]", i, key),
                pool.name
            )));
        }
        Ok(config)
    }
}

/// The line (1-based) of the `index`-th (0-based) `header` table in `text`.
fn nth_table_line(text: &str, header: &str, index: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with(header))
        .nth(index)
        .map(|(n, _)| n + 1)
}

/// `line N: ` of `key` in the `index`-th `header` table of `text` (the table's own line when
/// the key is not written there, nothing when neither is found).
fn key_line(text: &str, header: &str, index: usize, key: &str) -> String {
    let Some(table) = nth_table_line(text, header, index) else {
        return String::new();
    };
    let at = text
        .lines()
        .enumerate()
        .skip(table)
        .take_while(|(_, l)| !l.trim_start().starts_with('['))
        .find(|(_, l)| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(table, |(n, _)| n + 1);
    format!("line {at}: ")
}

fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let snippet = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}: {message} (in `{snippet}`)")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn accept_env_patterns_that_admit_identity_or_loader_variables_are_refused_with_the_line() {
        for (pattern, names) in [
            ("*", "PATH"),
            ("HPCCERT_*", "HPCCERT_*"),
            ("HPCCERT_IDENTITY", "HPCCERT_IDENTITY"),
            ("LD_PRELOAD", "LD_PRELOAD"),
            ("L*", "LOGNAME"),
            ("LD*", "LD_*"),
            ("PATH", "PATH"),
            ("SSH_ORIGINAL_COMMAND", "SSH_ORIGINAL_COMMAND"),
            ("BASH_ENV", "BASH_ENV"),
            ("X509_USER_PROXY_PEM", "X509_USER_PROXY_PEM"),
        ] {
            let text = format!(
                "version = 1\n[sshd]\nlisten = [\"127.0.0.1:2222\"]\naccept_env = [\"LANG\", \"{pattern}\"]\n"
            );
            let e = Config::parse(&text, Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("line 4: [sshd] accept_env"), "{pattern}: {e}");
            assert!(e.contains(&format!("{pattern:?}")), "{pattern}: {e}");
            assert!(e.contains(names), "{pattern}: {e}");
        }
        // the shipped default and ordinary locale and editor variables are fine
        for ok in ["LANG", "LC_*", "EDITOR", "COLORTERM", "GIT_*"] {
            let text = format!("version = 1\n[sshd]\naccept_env = [\"{ok}\"]\n");
            assert!(Config::parse(&text, Path::new("t.toml")).is_ok(), "{ok}");
        }
        assert!(env_protected("HPCCERT_DN"));
        assert!(env_protected("LD_LIBRARY_PATH"));
        assert!(env_protected(X509_PROXY_HANDOVER_ENV));
        assert!(!env_protected("LANG"));
    }

    #[test]
    fn credential_cache_defaults_and_bounds() {
        let c = Config::parse("version = 1\n", Path::new("t.toml")).unwrap();
        assert_eq!(
            (c.sshd.credential_cache_ttl, c.sshd.credential_cache_size),
            (300, 1024)
        );
        let c = Config::parse(
            "version = 1\n[sshd]\ncredential_cache_ttl = 0\ncredential_cache_size = 10\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(
            (c.sshd.credential_cache_ttl, c.sshd.credential_cache_size),
            (0, 10)
        );
        let e = Config::parse(
            "version = 1\n[sshd]\ncredential_cache_ttl = 86401\n",
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("credential_cache_ttl"), "{e}");
    }

    #[test]
    fn max_sessions_defaults_to_sshds_ten() {
        let c = Config::parse("version = 1\n", Path::new("t.toml")).unwrap();
        assert_eq!(c.sshd.max_sessions, 10);
        let c = Config::parse(
            "version = 1\n[sshd]\nmax_sessions = 2\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.sshd.max_sessions, 2);
    }

    #[test]
    fn revoked_keys_is_an_optional_path() {
        let c = Config::parse("version = 1\n", Path::new("t.toml")).unwrap();
        assert_eq!(c.sshd.revoked_keys, None);
        let c = Config::parse(
            "version = 1\n[sshd]\nrevoked_keys = \"/etc/hpccert/ssh-revoked.krl\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(
            c.sshd.revoked_keys.as_deref(),
            Some(Path::new("/etc/hpccert/ssh-revoked.krl"))
        );
    }

    #[test]
    fn database_passwords_are_redacted_in_debug_output() {
        assert_eq!(
            redact_password("postgres://portal:s3cret@db.example.org:5432/portal"),
            "postgres://portal:<redacted>@db.example.org:5432/portal"
        );
        assert_eq!(
            redact_password("postgres://portal@db/portal"),
            "postgres://portal@db/portal"
        );
        assert_eq!(
            redact_password("sqlite:///var/lib/hpccert/portal.db?mode=rwc"),
            "sqlite:///var/lib/hpccert/portal.db?mode=rwc"
        );
    }
    use super::*;

    #[test]
    fn parses_the_portal_section_and_hides_its_secrets() {
        let c = Config::parse(
            "version = 1\n[portal]\ndatabase = \"sqlite:///var/lib/p.db?mode=rwc\"\nexport_tokens = [\"s3cret-s3cret\"]\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let p = c.portal.clone().unwrap();
        assert_eq!(p.listen, "127.0.0.1:8443");
        assert_eq!(p.export_tokens, vec!["s3cret-s3cret".to_string()]);
        assert!(!format!("{c:?}").contains("s3cret"));
        let e = Config::parse(
            "version = 1\n[portal]\nlisten_on = \"x\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("listen_on"), "{e}");
    }

    #[test]
    fn parses_the_portal_web_settings() {
        let c = Config::parse(
            r#"version = 1
[portal]
url = "https://portal.example.org"
trusted_proxies = ["127.0.0.1", "::1"]
approval = "admin"
proof = "header"
certificate_dns = true
admins = [{ issuer = "https://cilogon.org", subject = "http://cilogon.org/serverA/users/1" }]
[portal.oidc]
issuer = "https://cilogon.org"
client_id = "cilogon:/client_id/abc"
client_secret = "oidc-s3cret"
"#,
            Path::new("t.toml"),
        )
        .unwrap();
        let p = c.portal.clone().unwrap();
        assert_eq!(p.approval, PortalApproval::Admin);
        assert_eq!(p.proof, PortalProof::Header);
        assert_eq!(p.pam_service, "mapping-portal");
        assert_eq!(p.remote_user_header, "REMOTE_USER");
        assert_eq!(p.min_uid, 1000);
        assert!(p.certificate_dns);
        assert_eq!(p.trusted_proxies.len(), 2);
        assert_eq!(p.admins[0].subject, "http://cilogon.org/serverA/users/1");
        let oidc = p.oidc.unwrap();
        assert_eq!(
            oidc.scopes,
            ["openid", "email", "profile", "org.cilogon.userinfo"]
        );
        assert!(!format!("{c:?}").contains("oidc-s3cret"));
        let e = Config::parse(
            "version = 1\n[portal]\nproof = \"kerberos\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("proof"), "{e}");
    }

    #[test]
    fn parses_a_full_file() {
        let c = Config::parse(
            "version = 1\n[trust]\nca_dir = \"/x\"\ncrl = \"require\"\nnamespaces = \"ignore\"\nallow_limited_proxies = true\n[mapping]\ngrid_mapfile = \"/g\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.trust.crl, CrlPolicy::Require);
        assert_eq!(c.trust.namespaces, NamespaceEnforcement::Ignore);
        assert!(c.trust.allow_limited_proxies);
        assert_eq!(c.trust.source(), PathBuf::from("/x"));
        assert_eq!(c.mapping.grid_mapfile, PathBuf::from("/g"));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = Config::parse(
            "version = 1\n[trust]\ncrl = \"sometimes\"\n",
            Path::new("/etc/h.toml"),
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("/etc/h.toml: line 3:"), "{s}");
        assert!(s.contains("require") && s.contains("crl"), "{s}");

        let s = Config::parse(
            "version = 1\n[trust]\nca_dri = \"/x\"\n",
            Path::new("h.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(s.contains("line 3") && s.contains("ca_dri"), "{s}");

        let s = Config::parse("version = 2\n", Path::new("h.toml"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("version = 2 is not supported"), "{s}");

        let s = Config::parse("[trust]\n", Path::new("h.toml"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("version"), "{s}");

        let s = Config::parse("version = 1\n[sshd]\nport = 2\n", Path::new("h.toml"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("line 3") && s.contains("port"), "{s}");
        let s = Config::parse(
            "version = 1\n[sshd]\nx509_algorithms = [\"x509v3-dsa\"]\n",
            Path::new("h.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(s.contains("unknown algorithm \"x509v3-dsa\""), "{s}");
        let s = Config::parse(
            "version = 1\n[sshd]\nmethods = [\"hostbased\"]\n",
            Path::new("h.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(s.contains("hostbased"), "{s}");
    }

    #[test]
    fn parses_issuers() {
        let c = Config::parse(
            "version = 1\n[tokens]\nkey_cache_dir = \"/k\"\n[mapping]\ntoken_mapfile = \"/t\"\n\
             [[issuer]]\nissuer = \"https://cilogon.org\"\naudiences = [\"https://login.example.org\"]\n\
             username_claim = \"eppn\"\nusername_domains = [\"example.edu\"]\n\
             [[issuer]]\nissuer = \"https://wlcg.example\"\nprofile = \"wlcg\"\naccept_any_audience = true\n\
             algorithms = [\"ES256\", \"EdDSA\"]\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.tokens.key_cache_dir, PathBuf::from("/k"));
        assert_eq!(c.mapping.token_mapfile, Some(PathBuf::from("/t")));
        assert_eq!(c.issuers.len(), 2);
        assert!(c.issuers[0].login_scopes().is_empty());
        assert_eq!(c.issuers[1].login_scopes(), vec![Capability::ComputeCreate]);
        assert_eq!(
            c.issuers[1].policy().algorithms,
            vec![JwsAlgorithm::ES256, JwsAlgorithm::EdDSA]
        );
        assert_eq!(
            crate::identity::mapping::TokenRules::of_issuer(&c.issuers[0]).username_domains,
            vec!["example.edu".to_string()]
        );
    }

    #[test]
    fn bad_issuers_are_named() {
        let bad = |body: &str| {
            Config::parse(
                &format!("version = 1\n[[issuer]]\n{body}"),
                Path::new("h.toml"),
            )
            .unwrap_err()
            .to_string()
        };
        assert!(bad("issuer = \"https://i\"\n").contains("https://i: audiences is empty"));
        let s = bad("issuer = \"https://i\"\naudiences = [\"a\"]\nalgorithms = [\"HS256\"]\n");
        assert!(s.contains("line 5") && s.contains("HS256"), "{s}");
        let s = bad("issuer = \"https://i\"\naudiences = [\"a\"]\naudience = \"b\"\n");
        assert!(s.contains("audience"), "{s}");
        let s = bad(
            "issuer = \"https://i\"\naudiences = [\"a\"]\n[[issuer]]\nissuer = \"https://i\"\naudiences = [\"a\"]\n",
        );
        assert!(s.contains("configured twice"), "{s}");
        let s = bad("issuer = \"https://i\"\naudiences = [\"a\"]\nleeway = 3600\n");
        assert!(s.contains("leeway"), "{s}");
    }

    #[test]
    fn pools_parse_and_bad_pools_name_line_and_field() {
        let c = Config::parse(
            "version = 1\n[mapping]\ngridmapdir = \"/g\"\nsuspended_file = \"/s\"\n\
             [[pool]]\nname = \"atlas\"\ncount = 40\nfirst_uid = 20000\ngid = 20000\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.pools[0].home, "/home/{account}");
        assert_eq!(c.mapping.gridmapdir, PathBuf::from("/g"));
        assert_eq!(c.mapping.suspended_file, PathBuf::from("/s"));
        assert!(
            crate::identity::gridmapdir::Gridmapdir::from_config(&c)
                .unwrap()
                .is_some()
        );
        assert!(
            crate::identity::gridmapdir::Gridmapdir::from_config(&Config::default())
                .unwrap()
                .is_none()
        );
        let bad = |body: &str| {
            Config::parse(&format!("version = 1\n{body}"), Path::new("h.toml"))
                .unwrap_err()
                .to_string()
        };
        let p = "[[pool]]\nname = \"atlas\"\ncount = 40\nfirst_uid = 20000\ngid = 20000\n";
        let s = bad(&format!(
            "{p}[[pool]]\nname = \"cms\"\ncount = 0\nfirst_uid = 30000\ngid = 30000\n"
        ));
        assert_eq!(s, "h.toml: line 7: [[pool]] cms: count must be at least 1");
        let s = bad(&format!(
            "{p}[[pool]]\nname = \"cms\"\ncount = 5\nfirst_uid = 20039\ngid = 30000\n"
        ));
        assert!(
            s.contains("line 7") && s.contains("first_uid: uids 20039-20043 overlap pool atlas"),
            "{s}"
        );
        let s = bad("[[pool]]\nname = \"atlas\"\ncount = 4\n");
        assert!(s.contains("first_uid"), "{s}");
        let s = bad(
            "[[pool]]\nname = \"atlas\"\ncount = 4\nfirst_uid = 1\ngid = 1\nhomedir = \"/x\"\n",
        );
        assert!(s.contains("line 7") && s.contains("homedir"), "{s}");
    }

    #[test]
    fn pools_and_the_floor_below_the_system_range_are_refused_with_line_and_key() {
        let bad = |body: &str| {
            Config::parse(&format!("version = 1\n{body}"), Path::new("h.toml"))
                .unwrap_err()
                .to_string()
        };
        // uids from 100: below the default floor 1000
        let s = bad("[[pool]]\nname = \"atlas\"\ncount = 40\nfirst_uid = 100\ngid = 20000\n");
        assert_eq!(
            s,
            "h.toml: line 5: [[pool]] atlas: first_uid = 100: uids 100-139 reach below [mapping] nss_min_id = 1000 (the system's ids)"
        );
        // the second pool's group is wheel's gid
        let s = bad(
            "[[pool]]\nname = \"atlas\"\ncount = 4\nfirst_uid = 20000\ngid = 20000\n\
             [[pool]]\nname = \"cms\"\ngid = 10\ncount = 4\nfirst_uid = 30000\n",
        );
        assert_eq!(
            s,
            "h.toml: line 9: [[pool]] cms: gid = 10 is below [mapping] nss_min_id = 1000 (the system's groups)"
        );
        // the floor is configurable
        let c = Config::parse(
            "version = 1\n[mapping]\nnss_min_id = 500\n\
             [[pool]]\nname = \"atlas\"\ncount = 4\nfirst_uid = 600\ngid = 600\n",
            Path::new("h.toml"),
        )
        .unwrap();
        assert_eq!(c.mapping.nss_min_id, 500);
        assert_eq!(c.mapping.id_floor().min_id(), 500);
        assert_eq!(Config::default().mapping.nss_min_id, 1000);
        let s = bad(
            "[mapping]\nnss_min_id = 20001\n[[pool]]\nname = \"atlas\"\ncount = 4\nfirst_uid = 20000\ngid = 30000\n",
        );
        assert!(
            s.contains("line 7: [[pool]] atlas: first_uid = 20000"),
            "{s}"
        );
        let s = bad("[mapping]\nnss_min_id = 0\n");
        assert!(s.contains("line 3: [mapping] nss_min_id = 0"), "{s}");
    }

    #[test]
    fn shipped_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/hpccert.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(
            c,
            Config::default(),
            "the shipped file documents the defaults"
        );
    }
}
