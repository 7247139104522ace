//! The logic of the PAM module `pam_hpccert.so`: bearer-token authentication and the account
//! check, behind a [`PamHandle`] trait so that it is tested with a scripted fake handle.
//!
//! The cdylib (`pam_hpccert/`) is only the FFI edge: it implements [`PamHandle`] over libpam
//! and calls [`authenticate`] and [`account`]. Everything here is offline and read-only: it
//! reads the config file, the issuer key cache or configured JWKS files and the token map; it
//! opens no socket, starts no runtime and writes no file.
//!
//! # auth
//! 1. The module options are parsed ([`Options`]); an unknown option is refused.
//! 2. Identity variables this module exports are removed from the PAM environment, and the
//!    token remembered on the handle is forgotten, so only a success of this call leaves them.
//! 3. The config is loaded (unusable: `PAM_AUTHINFO_UNAVAIL`).
//! 4. The token comes from `PAM_AUTHTOK` (`use_first_pass`, or `try_first_pass` when it is a
//!    valid token) or from the conversation (echo off). Clients that cut an answer at 1023
//!    bytes (stock OpenSSH) send a long token in parts: an answer ending in `\` means more
//!    follows, and the module asks again with `Access token (part N): ` (the prompt with
//!    ` (part N)` before its colon); the parts are joined. This is the scheme of sshd-gsi.
//!    A token read from the conversation is stored as `PAM_AUTHTOK`, as pam_unix does with a
//!    password.
//! 5. The token is verified offline ([`crate::token::verify_token`] with a
//!    [`FileKeySource`]) and mapped ([`Mapper::decide_token`]) for PAM_USER; the module
//!    succeeds only when the decided account is PAM_USER. PAM_USER is never changed.
//! 6. On success it exports [`ENV_TOKEN_ISSUER`], [`ENV_TOKEN_SUBJECT`], [`ENV_IDENTITY`] and
//!    [`ENV_CREDENTIAL`] with `pam_putenv`, and remembers the token on the handle
//!    (`pam_set_data`, key [`DATA_TOKEN`]) for the account check.
//!
//! # Certificate chains (option `x509`)
//! A PAM application that verified possession of a certificate's key (sshd-gsi) hands the
//! chain over in [`ENV_X509_CHAIN`] (PEM, presented certificate first). With `x509`, `auth`
//! verifies it against the trust store and maps it with the grid-mapfile for PAM_USER
//! (no prompt), exports [`ENV_DN`], [`ENV_IDENTITY`] and [`ENV_CREDENTIAL`], and remembers the
//! chain (key [`DATA_CHAIN`]); `account` checks the remembered chain, or with `x509` the one
//! handed over, again with the current files. Without `x509` the variable is ignored.
//!
//! # account
//! The identity is the token this module verified on the same PAM handle (`pam_get_data`):
//! it is verified again and mapped again with the current files, so an identity removed from
//! the token map since `auth` loses the account. With no token from this module (another
//! module authenticated the user, or auth ran in another process) the result is `PAM_IGNORE`:
//! the module has nothing to say about that login. The identity variables in the PAM
//! environment are not trusted for this, since any module (or pam_env) can set them.
//!
//! # Return codes
//! Every failure is a typed [`PamError`] mapped exhaustively by [`PamError::code`]: a bad
//! option is `PAM_SERVICE_ERR`, an unusable config, token map or issuer key cache is
//! `PAM_AUTHINFO_UNAVAIL`, an unknown user is `PAM_USER_UNKNOWN` (`PAM_IGNORE` with
//! `ignore_unknown_user`), a failed conversation `PAM_CONV_ERR`, another libpam failure
//! `PAM_SYSTEM_ERR`, and every refusal `PAM_AUTH_ERR` in auth and `PAM_PERM_DENIED` in account.
//! Every refusal is logged (through `pam_syslog`: `pam_hpccert(SERVICE:auth): REASON`) with
//! its reason; the token itself is never logged, only its SHA-256 fingerprint.

pub use crate::token::entry::{Next, Secret, TokenEntry};
use std::ffi::CStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use thiserror::Error;

use crate::config::{Config, ConfigError};
use crate::host::reload::{Fingerprint, fingerprint};
use crate::identity::gridmap::GridMapfile;
use crate::identity::mapping::{Decision, Mapper, Refusal, TokenRules, UidLookup};
use crate::identity::restriction::{RestrictionError, Restrictions, Source};
use crate::identity::suspension::{SuspensionError, SuspensionList};
use crate::identity::tokenmap::TokenMapfile;
use crate::token::keys::FileKeySource;
use crate::token::{Capability, IssuerPolicy, TokenError, VerifiedToken, verify_token};
use crate::trust::store::TrustStore;
use crate::trust::x509::{PresentedChain, verify_chain};

/// The issuer (`iss`) of the token that authenticated.
pub const ENV_TOKEN_ISSUER: &str = "HPCCERT_TOKEN_ISSUER";
/// The subject (`sub`) of the token that authenticated.
pub const ENV_TOKEN_SUBJECT: &str = "HPCCERT_TOKEN_SUBJECT";
/// The identity in words: `SUBJECT (issuer ISSUER)`.
pub const ENV_IDENTITY: &str = "HPCCERT_IDENTITY";
/// The credential fingerprint: `SHA256:` and the hex SHA-256 of the token.
pub const ENV_CREDENTIAL: &str = "HPCCERT_CREDENTIAL";
/// The certificate DN (slash form) of the chain that authenticated.
pub const ENV_DN: &str = "HPCCERT_DN";
/// Set by the PAM application, not by this module: the X.509 chain (PEM, the presented
/// certificate first, as `grid-proxy-init` writes a proxy file) whose private key the
/// application proved the client holds. sshd-gsi sets it for its x509 logins. Read only with
/// the `x509` option.
pub const ENV_X509_CHAIN: &str = "HPCCERT_X509_CHAIN";
/// Every variable this module exports (and removes before it authenticates).
pub const EXPORTED_ENV: [&str; 5] = [
    ENV_TOKEN_ISSUER,
    ENV_TOKEN_SUBJECT,
    ENV_IDENTITY,
    ENV_CREDENTIAL,
    ENV_DN,
];
/// The `pam_set_data` key under which `auth` leaves the verified chain (PEM) for `account`.
pub const DATA_CHAIN: &str = "pam_hpccert_chain";
/// The `pam_set_data` key under which `auth` leaves the verified token for `account`.
pub const DATA_TOKEN: &str = "pam_hpccert_token";
/// The default first prompt.
pub const DEFAULT_PROMPT: &str = "Access token: ";

/// The Linux-PAM return codes this module returns (values of `<security/_pam_types.h>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum PamCode {
    Success = 0,
    ServiceErr = 3,
    SystemErr = 4,
    PermDenied = 6,
    AuthErr = 7,
    AuthinfoUnavail = 9,
    UserUnknown = 10,
    ConvErr = 19,
    Ignore = 25,
}

impl PamCode {
    /// The C value.
    pub fn raw(self) -> i32 {
        self as i32
    }
}

impl fmt::Display for PamCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Success => "PAM_SUCCESS",
            Self::ServiceErr => "PAM_SERVICE_ERR",
            Self::SystemErr => "PAM_SYSTEM_ERR",
            Self::PermDenied => "PAM_PERM_DENIED",
            Self::AuthErr => "PAM_AUTH_ERR",
            Self::AuthinfoUnavail => "PAM_AUTHINFO_UNAVAIL",
            Self::UserUnknown => "PAM_USER_UNKNOWN",
            Self::ConvErr => "PAM_CONV_ERR",
            Self::Ignore => "PAM_IGNORE",
        })
    }
}

/// Which PAM function is running (the same error maps to a different code in each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Auth,
    Account,
}

/// Syslog priorities used by the module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// The module cannot work (bad option, unusable config): `LOG_ERR`.
    Error,
    /// A refusal: `LOG_NOTICE` (what pam_unix uses for failed logins).
    Notice,
    /// A success: `LOG_INFO`.
    Info,
    /// Details, only with the `debug` option: `LOG_DEBUG`.
    Debug,
}

impl LogLevel {
    /// The syslog priority (`<syslog.h>`).
    pub fn syslog_priority(self) -> i32 {
        match self {
            Self::Error => 3,
            Self::Notice => 5,
            Self::Info => 6,
            Self::Debug => 7,
        }
    }
}

/// A libpam call that failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{call} failed: {reason}")]
pub struct HandleError {
    /// The libpam function (or `conversation`).
    pub call: &'static str,
    /// The code libpam returned, when it returned one.
    pub code: Option<i32>,
    pub reason: String,
}

impl HandleError {
    pub fn new(call: &'static str, code: Option<i32>, reason: impl Into<String>) -> Self {
        Self {
            call,
            code,
            reason: reason.into(),
        }
    }

    fn pam_code(&self) -> PamCode {
        if self.code == Some(PamCode::ConvErr.raw()) || self.call == "conversation" {
            PamCode::ConvErr
        } else {
            PamCode::SystemErr
        }
    }
}

/// What the module needs from libpam. The cdylib implements it over a real `pam_handle_t`;
/// tests use a scripted fake.
pub trait PamHandle {
    /// PAM_USER (`pam_get_user`, which may ask the application for it).
    fn user(&mut self) -> Result<String, HandleError>;
    /// PAM_AUTHTOK, when an earlier module set it.
    fn authtok(&self) -> Result<Option<Secret>, HandleError>;
    /// Set PAM_AUTHTOK (libpam keeps a copy).
    fn set_authtok(&mut self, token: &Secret) -> Result<(), HandleError>;
    /// Ask with echo off (`PAM_PROMPT_ECHO_OFF`); `None` when the application gave no answer.
    fn prompt_secret(&mut self, prompt: &str) -> Result<Option<Secret>, HandleError>;
    /// A PAM environment variable (`pam_getenv`).
    fn getenv(&self, name: &str) -> Option<String>;
    /// Set (`NAME=value`) or remove (`NAME`) a PAM environment variable (`pam_putenv`).
    fn putenv(&mut self, name: &str, value: Option<&str>) -> Result<(), HandleError>;
    /// This module's data on the handle (`pam_get_data`).
    fn data(&self, key: &str) -> Option<Secret>;
    /// Store (or with `None` clear) this module's data on the handle (`pam_set_data`); it is
    /// wiped when the handle ends.
    fn set_data(&mut self, key: &str, value: Option<&Secret>) -> Result<(), HandleError>;
    /// Log one line (`pam_syslog`, which adds `pam_hpccert(SERVICE:TYPE): `).
    fn syslog(&mut self, level: LogLevel, message: &str);
    /// The trust store this module kept on the handle earlier in the transaction.
    fn kept_trust(&self) -> Option<Arc<KeptTrust>> {
        None
    }
    /// Keep a trust store on the handle until the transaction ends (`pam_set_data`; freed
    /// by `pam_end`). Not keeping it only costs a second load.
    fn keep_trust(&mut self, _trust: Arc<KeptTrust>) -> Result<(), HandleError> {
        Ok(())
    }
    /// Free the kept trust store now (after the account check: a session may hold the handle
    /// until logout).
    fn forget_trust(&mut self) {}
    /// PAM_RHOST, the remote host the application names (sshd sets the client's address).
    fn rhost(&self) -> Option<String> {
        None
    }
}

/// Where the login comes from, for the restrictions' `from=`: PAM_RHOST when it is an
/// address; a host name or none is an unknown source, which a `from=` rule refuses.
fn source_of(h: &dyn PamHandle) -> Source {
    h.rhost()
        .and_then(|r| {
            r.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .ok()
        })
        .map_or(Source::Unknown, Source::Known)
}

/// The decision, when the module can honour all its restrictions: `from=` was checked by the
/// engine; a forced command, no-pty, no-forwarding or a session limit is the SSH server's.
fn enforceable(decision: Decision) -> Result<Decision, PamError> {
    let r = decision.restrictions();
    if r.command.is_none() && !r.no_pty && !r.no_forwarding && r.max_sessions.is_none() {
        return Ok(decision);
    }
    let mut only = r.clone();
    only.from.clear();
    Err(PamError::Unenforceable {
        identity: decision.identity().to_string(),
        what: only.describe(),
    })
}

/// A trust store kept on a PAM handle for one transaction (auth, then account), with the
/// fingerprint of its source when it was loaded.
pub struct KeptTrust {
    source: PathBuf,
    print: Fingerprint,
    store: Arc<TrustStore>,
}

impl fmt::Debug for KeptTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeptTrust")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The trust store at `source` for this transaction: the one kept on the handle while the
/// source is unchanged (auth and account of one login load it once), else loaded now and
/// kept. A source that changed is loaded again, and one that no longer loads refuses.
fn transaction_trust(
    h: &mut dyn PamHandle,
    options: &Options,
    source: &Path,
) -> Result<Arc<TrustStore>, PamError> {
    // taken before the load: a change during the load makes the next check load again
    let print = fingerprint(source);
    if let Some(kept) = h.kept_trust()
        && kept.source == source
        && kept.print == print
    {
        debug(
            h,
            options,
            "trust store: the one loaded earlier in this transaction (unchanged)",
        );
        return Ok(Arc::clone(&kept.store));
    }
    let store = Arc::new(
        TrustStore::load(source)
            .map_err(|e| PamError::TrustStore(format!("{}: {e}", source.display())))?,
    );
    let kept = KeptTrust {
        source: source.to_path_buf(),
        print,
        store: Arc::clone(&store),
    };
    if let Err(e) = h.keep_trust(Arc::new(kept)) {
        debug(
            h,
            options,
            &format!("the trust store is not kept for this transaction: {e}"),
        );
    }
    Ok(store)
}

/// What the module sees of the system: the time and the account database. Parameters, so
/// that tests fix them.
#[derive(Debug, Clone, Copy)]
pub struct SystemView {
    pub now: SystemTime,
    pub uid_of: UidLookup,
}

impl SystemView {
    /// The real clock and the system's account database (NSS).
    pub fn current() -> Self {
        Self {
            now: crate::clock::now(),
            uid_of: crate::identity::mapping::system_uid,
        }
    }
}

/// Where the token may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirstPass {
    /// Always ask through the conversation.
    #[default]
    Ask,
    /// Use PAM_AUTHTOK when it is a valid token, else ask.
    Try,
    /// Use PAM_AUTHTOK only; refuse when it is not set.
    Use,
}

/// The module options of a PAM stack line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `config=PATH` (default `/etc/hpccert/hpccert.toml`).
    pub config: PathBuf,
    /// `debug`: log every step of the decision.
    pub debug: bool,
    /// `prompt=TEXT` (default `Access token: `; for spaces use PAM's `[prompt=Token: ]`).
    pub prompt: String,
    /// `use_first_pass` / `try_first_pass`.
    pub first_pass: FirstPass,
    /// `ignore_unknown_user`: PAM_IGNORE instead of PAM_USER_UNKNOWN for a user the system
    /// does not know, without asking for a token.
    pub ignore_unknown_user: bool,
    /// `require_scope=SCOPE` (repeatable): scopes this service requires in addition to each
    /// issuer's `required_scopes`.
    pub required_scopes: Vec<Capability>,
    /// `x509`: trust a certificate chain the application hands over in [`ENV_X509_CHAIN`]
    /// (verified against the trust store, CRLs and the grid-mapfile here, never taken as
    /// proven by its presence alone).
    pub x509: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            config: PathBuf::from(crate::config::DEFAULT_PATH),
            debug: false,
            prompt: DEFAULT_PROMPT.to_string(),
            first_pass: FirstPass::Ask,
            ignore_unknown_user: false,
            required_scopes: Vec::new(),
            x509: false,
        }
    }
}

impl Options {
    /// Parse the arguments of the stack line; anything not understood is an error.
    pub fn parse(args: &[&CStr]) -> Result<Self, PamError> {
        let mut o = Self::default();
        let mut seen_config = false;
        let mut seen_prompt = false;
        let bad = |option: &str, reason: &str| PamError::BadOption {
            option: option.to_string(),
            reason: reason.to_string(),
        };
        for raw in args {
            let arg = raw.to_str().map_err(|_| {
                bad(
                    &String::from_utf8_lossy(raw.to_bytes()),
                    "the option is not UTF-8",
                )
            })?;
            let (name, value) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (arg, None),
            };
            match (name, value) {
                ("config", Some(v)) => {
                    if seen_config {
                        return Err(bad(arg, "config= is given twice"));
                    }
                    if !Path::new(v).is_absolute() {
                        return Err(bad(arg, "the config path must be absolute"));
                    }
                    seen_config = true;
                    o.config = PathBuf::from(v);
                }
                ("prompt", Some(v)) => {
                    if seen_prompt {
                        return Err(bad(arg, "prompt= is given twice"));
                    }
                    if v.trim().is_empty() {
                        return Err(bad(arg, "the prompt is empty"));
                    }
                    seen_prompt = true;
                    o.prompt = v.to_string();
                }
                ("require_scope", Some(v)) => {
                    if v.is_empty() || v.contains(char::is_whitespace) {
                        return Err(bad(arg, "give one scope per require_scope="));
                    }
                    o.required_scopes.push(Capability::parse(v));
                }
                ("debug", None) => o.debug = true,
                ("ignore_unknown_user", None) => o.ignore_unknown_user = true,
                ("x509", None) => o.x509 = true,
                ("use_first_pass" | "try_first_pass", None) => {
                    let wanted = if name == "use_first_pass" {
                        FirstPass::Use
                    } else {
                        FirstPass::Try
                    };
                    if o.first_pass != FirstPass::Ask && o.first_pass != wanted {
                        return Err(bad(
                            arg,
                            "use_first_pass and try_first_pass exclude each other",
                        ));
                    }
                    o.first_pass = wanted;
                }
                ("config" | "prompt" | "require_scope", None) => {
                    return Err(bad(arg, "needs a value (NAME=VALUE)"));
                }
                (
                    "debug" | "ignore_unknown_user" | "use_first_pass" | "try_first_pass" | "x509",
                    Some(_),
                ) => {
                    return Err(bad(arg, "takes no value"));
                }
                _ => return Err(PamError::UnknownOption(arg.to_string())),
            }
        }
        Ok(o)
    }

    /// The prompt for part `n` (2, 3, ...): the first prompt with ` (part N)` before its
    /// colon (`Access token: ` becomes `Access token (part 2): `).
    pub fn part_prompt(&self, n: usize) -> String {
        let base = self.prompt.trim_end();
        let base = base.strip_suffix(':').unwrap_or(base).trim_end();
        format!("{base} (part {n}): ")
    }
}

/// Why the module did not succeed. [`PamError::code`] maps each to a PAM code.
#[derive(Debug, Error)]
pub enum PamError {
    #[error(
        "unknown option {0:?} (known: config=, debug, prompt=, use_first_pass, try_first_pass, ignore_unknown_user, require_scope=, x509)"
    )]
    UnknownOption(String),
    #[error("option {option:?}: {reason}")]
    BadOption { option: String, reason: String },
    #[error("configuration unusable: {0}")]
    Config(#[from] ConfigError),
    #[error("{0}: no [[issuer]] is configured, so no token can be checked")]
    NoIssuers(PathBuf),
    #[error("token map unusable: {0}")]
    TokenMap(String),
    #[error(transparent)]
    Handle(#[from] HandleError),
    #[error("user {0:?} is not known to the system")]
    UnknownUser(String),
    #[error("no token: {0}")]
    NoToken(&'static str),
    #[error("token refused: longer than {max} bytes (or too many parts)")]
    TokenTooLong { max: usize },
    #[error("token refused: {0}")]
    Token(TokenError),
    #[error("{}", describe_refusal(identity, subject, refusal))]
    Mapping {
        identity: String,
        subject: String,
        refusal: Box<Refusal>,
    },
    #[error("{identity}: the decision names account {decided}, not PAM_USER {user}")]
    AccountMismatch {
        identity: String,
        decided: String,
        user: String,
    },
    #[error("{identity}: the identity holds control characters and cannot be exported")]
    Unexportable { identity: String },
    #[error(
        "{identity}: its restrictions ({what}) are the SSH server's to enforce, which a PAM module cannot: refused (log in through sshd-gsi, or restrict only from= here)"
    )]
    Unenforceable { identity: String, what: String },
    #[error("trust store unusable: {0}")]
    TrustStore(String),
    #[error("grid-mapfile unusable: {0}")]
    GridMap(String),
    #[error("certificate chain refused: {0}")]
    Chain(String),
}

/// A mapping refusal names the identity once (some refusals already do).
fn describe_refusal(identity: &str, subject: &str, refusal: &Refusal) -> String {
    let text = refusal.to_string();
    if text.contains(subject) {
        text
    } else {
        format!("{identity}: {text}")
    }
}

impl PamError {
    /// The PAM code for this error in `phase`.
    pub fn code(&self, phase: Phase, options: &Options) -> PamCode {
        let refused = match phase {
            Phase::Auth => PamCode::AuthErr,
            Phase::Account => PamCode::PermDenied,
        };
        match self {
            Self::UnknownOption(_) | Self::BadOption { .. } => PamCode::ServiceErr,
            Self::Config(_)
            | Self::NoIssuers(_)
            | Self::TokenMap(_)
            | Self::TrustStore(_)
            | Self::GridMap(_) => PamCode::AuthinfoUnavail,
            Self::Handle(e) => e.pam_code(),
            Self::UnknownUser(_) => {
                if options.ignore_unknown_user {
                    PamCode::Ignore
                } else {
                    PamCode::UserUnknown
                }
            }
            // the key cache is missing or too old: the module cannot check, which is not the
            // user's fault (an administrator runs `gridmap-tool keys refresh`)
            Self::Token(TokenError::NoKeys { .. } | TokenError::StaleKeys { .. }) => {
                PamCode::AuthinfoUnavail
            }
            Self::NoToken(_)
            | Self::TokenTooLong { .. }
            | Self::Token(_)
            | Self::Mapping { .. }
            | Self::AccountMismatch { .. }
            | Self::Unenforceable { .. }
            | Self::Unexportable { .. }
            | Self::Chain(_) => refused,
        }
    }

    fn level(&self) -> LogLevel {
        match self {
            Self::UnknownOption(_)
            | Self::BadOption { .. }
            | Self::Config(_)
            | Self::NoIssuers(_)
            | Self::TokenMap(_)
            | Self::TrustStore(_)
            | Self::GridMap(_)
            | Self::Handle(_)
            | Self::Token(TokenError::NoKeys { .. } | TokenError::StaleKeys { .. }) => {
                LogLevel::Error
            }
            Self::UnknownUser(_)
            | Self::NoToken(_)
            | Self::TokenTooLong { .. }
            | Self::Token(_)
            | Self::Mapping { .. }
            | Self::AccountMismatch { .. }
            | Self::Unenforceable { .. }
            | Self::Unexportable { .. }
            | Self::Chain(_) => LogLevel::Notice,
        }
    }
}

/// The loaded configuration: what a token must look like and how it maps.
#[derive(Debug)]
struct Checker {
    max_token_bytes: usize,
    policies: Vec<IssuerPolicy>,
    rules: Vec<TokenRules>,
    token_map: Option<TokenMapfile>,
    keys: FileKeySource,
    /// An unusable list refuses every identity (as at every other front end).
    suspensions: Result<SuspensionList, SuspensionError>,
    restrictions: Result<Restrictions, RestrictionError>,
}

impl Checker {
    fn load(options: &Options) -> Result<Self, PamError> {
        let config = Config::load(&options.config)?;
        if config.issuers.is_empty() {
            return Err(PamError::NoIssuers(options.config.clone()));
        }
        let token_map = match &config.mapping.token_mapfile {
            Some(path) => Some(TokenMapfile::load(path).map_err(|errs| {
                let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
                PamError::TokenMap(lines.join("; "))
            })?),
            None => None,
        };
        let keys = config.file_key_source();
        let rules = TokenRules::of_config(&config)
            .into_iter()
            .map(|mut r| {
                for s in &options.required_scopes {
                    if !r.required_scopes.contains(s) {
                        r.required_scopes.push(s.clone());
                    }
                }
                r
            })
            .collect();
        Ok(Self {
            max_token_bytes: config.tokens.max_token_bytes,
            policies: config.issuer_policies(),
            rules,
            token_map,
            keys,
            suspensions: SuspensionList::load(&config.mapping.suspended_file),
            restrictions: Restrictions::load(&config.mapping.restrictions_file),
        })
    }

    fn verify(&self, token: &Secret, now: SystemTime) -> Result<VerifiedToken, PamError> {
        let text = token
            .as_str()
            .ok_or(PamError::NoToken("the answer is not UTF-8 text"))?;
        verify_token(
            text.trim(),
            &self.policies,
            &self.keys,
            self.max_token_bytes,
            now,
        )
        .map_err(PamError::Token)
    }

    fn decide(
        &self,
        verified: &VerifiedToken,
        (user, source): (&str, Source),
        uid_of: UidLookup,
    ) -> Result<Decision, PamError> {
        let identity = || format!("{} (issuer {})", verified.subject(), verified.issuer());
        let empty = GridMapfile::default();
        let decision = Mapper::new(&empty)
            .with_suspensions(&self.suspensions)
            .with_restrictions(&self.restrictions, source)
            .with_tokens(self.token_map.as_ref(), &self.rules)
            .with_uid_lookup(uid_of)
            .decide_token(verified, Some(user))
            .map_err(|refusal| PamError::Mapping {
                identity: identity(),
                subject: verified.subject().to_string(),
                refusal: Box::new(refusal),
            })?;
        for_pam_user(enforceable(decision)?, user, identity)
    }
}

/// The decision, when it names PAM_USER: an invariant of deciding with a requested account,
/// checked again because PAM_USER is what the application will log the user in as.
fn for_pam_user(
    decision: Decision,
    user: &str,
    identity: impl FnOnce() -> String,
) -> Result<Decision, PamError> {
    if decision.account().as_str() == user {
        Ok(decision)
    } else {
        Err(PamError::AccountMismatch {
            identity: identity(),
            decided: decision.account().to_string(),
            user: user.to_string(),
        })
    }
}

/// A certificate chain handed over by the application, verified and mapped exactly as
/// sshd-gsi and `gridmap-tool explain --cert` do: trust store with its CRLs, namespaces and
/// signing policies, then the grid-mapfile for PAM_USER.
fn decide_chain(
    h: &mut dyn PamHandle,
    options: &Options,
    pem: &str,
    user: &str,
    system: &SystemView,
) -> Result<Decision, PamError> {
    let config = Config::load(&options.config)?;
    let trust = transaction_trust(h, options, &config.trust.source())?;
    let gridmap = GridMapfile::load(&config.mapping.grid_mapfile).map_err(|e| {
        PamError::GridMap(format!("{}: {e}", config.mapping.grid_mapfile.display()))
    })?;
    let chain = PresentedChain::from_pem(pem.as_bytes())
        .map_err(|e| PamError::Chain(format!("{ENV_X509_CHAIN}: {e}")))?;
    let verified = verify_chain(&trust, &chain, &config.trust.verify_options(), system.now)
        .map_err(|e| PamError::Chain(e.to_string()))?;
    let identity = verified.identity().to_slash();
    let suspensions = SuspensionList::load(&config.mapping.suspended_file);
    let restrictions = Restrictions::load(&config.mapping.restrictions_file);
    let decision = Mapper::new(&gridmap)
        .with_suspensions(&suspensions)
        .with_restrictions(&restrictions, source_of(h))
        .with_uid_lookup(system.uid_of)
        .decide(&verified, Some(user))
        .map_err(|refusal| PamError::Mapping {
            identity: identity.clone(),
            subject: identity.clone(),
            refusal: Box::new(refusal),
        })?;
    for_pam_user(enforceable(decision)?, user, || identity)
}

/// `auth` with a handed-over chain (option `x509`): no prompt; export and remember.
fn auth_chain(
    h: &mut dyn PamHandle,
    options: &Options,
    user: &str,
    pem: &str,
    system: &SystemView,
) -> Result<PamCode, PamError> {
    if (system.uid_of)(user).is_none() {
        return Err(PamError::UnknownUser(user.to_string()));
    }
    let decision = decide_chain(h, options, pem, user, system)?;
    for reason in decision.reasons() {
        debug(h, options, reason);
    }
    let identity = decision.identity().to_string();
    let dn = match decision.identity() {
        crate::identity::Identity::Certificate(dn) => dn.to_slash(),
        other => other.to_string(),
    };
    let exports = [
        (ENV_DN, dn.as_str()),
        (ENV_IDENTITY, identity.as_str()),
        (ENV_CREDENTIAL, decision.credential()),
    ];
    if exports.iter().any(|(_, v)| v.chars().any(char::is_control)) {
        return Err(PamError::Unexportable { identity });
    }
    for (name, value) in exports {
        h.putenv(name, Some(value))?;
    }
    h.set_data(DATA_CHAIN, Some(&Secret::from(pem)))?;
    log(
        h,
        LogLevel::Info,
        &format!(
            "accepted certificate {identity} credential {} (proxy depth {}) for user {user}",
            decision.credential(),
            decision.proxy_depth()
        ),
    );
    Ok(PamCode::Success)
}

/// `pam_sm_authenticate`.
pub fn authenticate(handle: &mut dyn PamHandle, args: &[&CStr], system: &SystemView) -> PamCode {
    run(handle, args, Phase::Auth, |h, o, user| {
        auth_inner(h, o, user, system)
    })
}

/// `pam_sm_acct_mgmt`.
pub fn account(handle: &mut dyn PamHandle, args: &[&CStr], system: &SystemView) -> PamCode {
    run(handle, args, Phase::Account, |h, o, user| {
        account_inner(h, o, user, system)
    })
}

/// `pam_sm_setcred`: the module establishes no credentials. It succeeds (as pam_unix does),
/// so that `pam_setcred` passes in a stack whose other modules all return `PAM_IGNORE`;
/// setcred grants nothing. An unusable option line is still refused.
pub fn setcred(handle: &mut dyn PamHandle, args: &[&CStr]) -> PamCode {
    match Options::parse(args) {
        Ok(_) => PamCode::Success,
        Err(e) => {
            log(handle, e.level(), &format!("refusing: {e}"));
            e.code(Phase::Auth, &Options::default())
        }
    }
}

/// Parse the options, (in auth) forget any earlier identity, read PAM_USER, run `inner`, and
/// log a failure with its reason.
fn run(
    handle: &mut dyn PamHandle,
    args: &[&CStr],
    phase: Phase,
    inner: impl FnOnce(&mut dyn PamHandle, &Options, &str) -> Result<PamCode, PamError>,
) -> PamCode {
    let options = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => {
            log(handle, e.level(), &format!("refusing: {e}"));
            return e.code(phase, &Options::default());
        }
    };
    let mut user = None;
    let result = (|| {
        if phase == Phase::Auth {
            forget_identity(handle)?;
        }
        let name = handle.user()?;
        user = Some(name.clone());
        inner(handle, &options, &name)
    })();
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = e.code(phase, &options);
            let level = if code == PamCode::Ignore {
                LogLevel::Debug
            } else {
                e.level()
            };
            if level != LogLevel::Debug || options.debug {
                let who = user.as_deref().unwrap_or("(unknown)");
                log(handle, level, &format!("user {who}: {e} ({code})"));
            }
            code
        }
    }
}

/// Only a success of this auth call may leave an identity behind: remove what an earlier
/// call (or anyone else) left in the PAM environment and on the handle.
fn forget_identity(h: &mut dyn PamHandle) -> Result<(), PamError> {
    for name in EXPORTED_ENV {
        if h.getenv(name).is_some() {
            h.putenv(name, None)?;
        }
    }
    if h.data(DATA_TOKEN).is_some() {
        h.set_data(DATA_TOKEN, None)?;
    }
    if h.data(DATA_CHAIN).is_some() {
        h.set_data(DATA_CHAIN, None)?;
    }
    Ok(())
}

/// Log one line. Control characters (a newline in a token's `iss`, in a login name) are
/// escaped, so that no value can forge a log line.
fn log(handle: &mut dyn PamHandle, level: LogLevel, message: &str) {
    let mut line = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    handle.syslog(level, &line);
}

fn debug(handle: &mut dyn PamHandle, options: &Options, message: &str) {
    if options.debug {
        log(handle, LogLevel::Debug, message);
    }
}

fn auth_inner(
    h: &mut dyn PamHandle,
    options: &Options,
    user: &str,
    system: &SystemView,
) -> Result<PamCode, PamError> {
    if options.x509
        && let Some(pem) = h.getenv(ENV_X509_CHAIN)
    {
        return auth_chain(h, options, user, &pem, system);
    }
    let checker = Checker::load(options)?;
    let known = (system.uid_of)(user).is_some();
    if !known && options.ignore_unknown_user {
        return Err(PamError::UnknownUser(user.to_string()));
    }
    let (token, verified) = match options.first_pass {
        FirstPass::Use => {
            let token = h.authtok()?.ok_or(PamError::NoToken(
                "use_first_pass, and no earlier module set PAM_AUTHTOK",
            ))?;
            let verified = checker.verify(&token, system.now);
            (token, verified)
        }
        FirstPass::Try => {
            let earlier = match h.authtok()? {
                Some(t) => match checker.verify(&t, system.now) {
                    Ok(v) => Some((t, Ok(v))),
                    Err(e) => {
                        debug(
                            h,
                            options,
                            &format!(
                                "try_first_pass: PAM_AUTHTOK is not a usable token ({e}); asking"
                            ),
                        );
                        None
                    }
                },
                None => None,
            };
            match earlier {
                Some(pair) => pair,
                None => {
                    let token = ask_token(h, options, checker.max_token_bytes)?;
                    let verified = checker.verify(&token, system.now);
                    (token, verified)
                }
            }
        }
        FirstPass::Ask => {
            let token = ask_token(h, options, checker.max_token_bytes)?;
            let verified = checker.verify(&token, system.now);
            (token, verified)
        }
    };
    // asked even for an unknown user, so that the prompt does not tell which accounts exist
    if !known {
        return Err(PamError::UnknownUser(user.to_string()));
    }
    let verified = verified?;
    debug(h, options, &verified.summary());
    let decision = checker.decide(&verified, (user, source_of(h)), system.uid_of)?;
    for reason in decision.reasons() {
        debug(h, options, reason);
    }
    let identity = decision.identity().to_string();
    let exports = [
        (ENV_TOKEN_ISSUER, verified.issuer()),
        (ENV_TOKEN_SUBJECT, verified.subject()),
        (ENV_IDENTITY, identity.as_str()),
        (ENV_CREDENTIAL, decision.credential()),
    ];
    if exports.iter().any(|(_, v)| v.chars().any(char::is_control)) {
        return Err(PamError::Unexportable { identity });
    }
    for (name, value) in exports {
        h.putenv(name, Some(value))?;
    }
    h.set_data(DATA_TOKEN, Some(&token))?;
    log(
        h,
        LogLevel::Info,
        &format!(
            "accepted {identity} credential {} for user {user}",
            decision.credential()
        ),
    );
    Ok(PamCode::Success)
}

/// Ask for the token through the conversation, joining parts.
fn ask_token(
    h: &mut dyn PamHandle,
    options: &Options,
    max_bytes: usize,
) -> Result<Secret, PamError> {
    let mut entry = TokenEntry::default();
    let mut prompt = options.prompt.clone();
    let token = loop {
        let answer = h
            .prompt_secret(&prompt)?
            .ok_or(PamError::NoToken("the application gave no answer"))?;
        let text = answer
            .as_str()
            .ok_or(PamError::NoToken("the answer is not UTF-8 text"))?;
        match entry.answer(text, max_bytes) {
            Next::Ask(n) => prompt = options.part_prompt(n),
            Next::Done(token) => break token,
            Next::TooLong => return Err(PamError::TokenTooLong { max: max_bytes }),
        }
    };
    if token.is_empty() {
        return Err(PamError::NoToken("empty answer"));
    }
    // as pam_unix does with a password: later modules with use_first_pass may use it
    h.set_authtok(&token)?;
    Ok(token)
}

fn account_inner(
    h: &mut dyn PamHandle,
    options: &Options,
    user: &str,
    system: &SystemView,
) -> Result<PamCode, PamError> {
    // a chain this module verified in auth, or one the application hands over (option x509)
    let chain = h
        .data(DATA_CHAIN)
        .and_then(|s| s.as_str().map(str::to_string));
    let chain = chain.or_else(|| options.x509.then(|| h.getenv(ENV_X509_CHAIN)).flatten());
    if let Some(pem) = chain {
        if (system.uid_of)(user).is_none() {
            return Err(PamError::UnknownUser(user.to_string()));
        }
        let decided = decide_chain(h, options, &pem, user, system);
        // the last check of the transaction that needs it
        h.forget_trust();
        let decision = decided?;
        debug(
            h,
            options,
            &format!(
                "account {user} allowed for certificate {} (credential {})",
                decision.identity(),
                decision.credential()
            ),
        );
        return Ok(PamCode::Success);
    }
    let Some(token) = h.data(DATA_TOKEN) else {
        if h.getenv(ENV_TOKEN_ISSUER).is_some() {
            log(
                h,
                LogLevel::Notice,
                &format!(
                    "user {user}: {ENV_TOKEN_ISSUER} is set but this module verified no token on this handle: the variable is not trusted (PAM_IGNORE)"
                ),
            );
        } else {
            debug(
                h,
                options,
                &format!(
                    "user {user}: no token was verified by this module on this handle (PAM_IGNORE)"
                ),
            );
        }
        return Ok(PamCode::Ignore);
    };
    let checker = Checker::load(options)?;
    if (system.uid_of)(user).is_none() {
        return Err(PamError::UnknownUser(user.to_string()));
    }
    let verified = checker.verify(&token, system.now)?;
    let decision = checker.decide(&verified, (user, source_of(h)), system.uid_of)?;
    debug(
        h,
        options,
        &format!(
            "account {user} allowed for {} (credential {})",
            decision.identity(),
            decision.credential()
        ),
    );
    Ok(PamCode::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::token::{DevKey, jwks};
    use crate::token::JwsAlgorithm;
    use serde_json::{Value, json};
    use std::collections::{BTreeMap, HashMap, VecDeque};
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, UNIX_EPOCH};

    const ISS: &str = "https://issuer.test";
    const AUD: &str = "https://login.test";
    const NOW: u64 = 1_700_000_000;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn uid_of(name: &str) -> Option<u32> {
        match name {
            "alice" => Some(1001),
            "bob" => Some(1002),
            _ => None,
        }
    }

    fn system() -> SystemView {
        SystemView { now: now(), uid_of }
    }

    /// A scripted PAM handle: the conversation is a script of (expected prompt, answer) that
    /// must be used up exactly (checked on drop); the rest is plain state.
    #[derive(Debug, Default)]
    struct Fake {
        user: String,
        authtok: Option<String>,
        script: VecDeque<(String, Result<Option<String>, HandleError>)>,
        env: BTreeMap<String, String>,
        data: HashMap<String, Secret>,
        logs: Vec<(LogLevel, String)>,
        fail_putenv: bool,
        trust: Option<Arc<KeptTrust>>,
    }

    impl Fake {
        fn new(user: &str) -> Self {
            let mut f = Self::default();
            f.user = user.into();
            f
        }
        fn expect(mut self, prompt: &str, answer: &str) -> Self {
            self.script
                .push_back((prompt.into(), Ok(Some(answer.to_string()))));
            self
        }
        fn expect_reply(
            mut self,
            prompt: &str,
            reply: Result<Option<String>, HandleError>,
        ) -> Self {
            self.script.push_back((prompt.into(), reply));
            self
        }
        fn log_text(&self) -> String {
            self.logs
                .iter()
                .map(|(l, m)| format!("{l:?}: {m}\n"))
                .collect()
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                assert!(
                    self.script.is_empty(),
                    "conversation script not used up: {:?}",
                    self.script
                );
            }
        }
    }

    impl PamHandle for Fake {
        fn user(&mut self) -> Result<String, HandleError> {
            Ok(self.user.clone())
        }
        fn authtok(&self) -> Result<Option<Secret>, HandleError> {
            Ok(self.authtok.as_deref().map(Secret::from))
        }
        fn set_authtok(&mut self, token: &Secret) -> Result<(), HandleError> {
            self.authtok = token.as_str().map(str::to_string);
            Ok(())
        }
        fn prompt_secret(&mut self, prompt: &str) -> Result<Option<Secret>, HandleError> {
            let Some((expected, reply)) = self.script.pop_front() else {
                panic!("unexpected prompt {prompt:?}");
            };
            assert_eq!(prompt, expected, "prompt");
            reply.map(|a| a.as_deref().map(Secret::from))
        }
        fn getenv(&self, name: &str) -> Option<String> {
            self.env.get(name).cloned()
        }
        fn putenv(&mut self, name: &str, value: Option<&str>) -> Result<(), HandleError> {
            if self.fail_putenv {
                return Err(HandleError::new("pam_putenv", Some(5), "buffer error"));
            }
            match value {
                Some(v) => self.env.insert(name.into(), v.into()),
                None => self.env.remove(name),
            };
            Ok(())
        }
        fn data(&self, key: &str) -> Option<Secret> {
            self.data.get(key).cloned()
        }
        fn set_data(&mut self, key: &str, value: Option<&Secret>) -> Result<(), HandleError> {
            match value {
                Some(v) => self.data.insert(key.into(), v.clone()),
                None => self.data.remove(key),
            };
            Ok(())
        }
        fn syslog(&mut self, level: LogLevel, message: &str) {
            self.logs.push((level, message.to_string()));
        }
        fn kept_trust(&self) -> Option<Arc<KeptTrust>> {
            self.trust.clone()
        }
        fn keep_trust(&mut self, trust: Arc<KeptTrust>) -> Result<(), HandleError> {
            self.trust = Some(trust);
            Ok(())
        }
        fn forget_trust(&mut self) {
            self.trust = None;
        }
    }

    /// A config directory with one issuer (keys in a JWKS file) and a token map.
    struct Site {
        dir: tempfile::TempDir,
        key: DevKey,
    }

    impl Site {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let key = DevKey::generate("k1", JwsAlgorithm::ES256).unwrap();
            let site = Self { dir, key };
            site.write(
                "jwks.json",
                &serde_json::to_string(&jwks(&[&site.key]).unwrap()).unwrap(),
            );
            site.write("token-map", &format!("\"{ISS}\" \"sub-alice\" alice\n"));
            let d = site.dir.path().display();
            site.write(
                "hpccert.toml",
                &format!(
                    "version = 1\n[tokens]\nkey_cache_dir = \"{d}/keys\"\n[mapping]\ntoken_mapfile = \"{d}/token-map\"\n\
                     [[issuer]]\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\nalgorithms = [\"ES256\"]\njwks_file = \"{d}/jwks.json\"\n"
                ),
            );
            site
        }
        fn write(&self, name: &str, text: &str) {
            let p = self.dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        fn config_arg(&self) -> std::ffi::CString {
            std::ffi::CString::new(format!(
                "config={}",
                self.dir.path().join("hpccert.toml").display()
            ))
            .unwrap()
        }
        fn claims(&self, sub: &str) -> Value {
            json!({"iss": ISS, "sub": sub, "aud": AUD, "iat": NOW - 10, "exp": NOW + 600, "scope": "openid compute.create"})
        }
        fn token(&self, sub: &str) -> String {
            self.key.mint(&self.claims(sub)).unwrap()
        }
        fn token_with(&self, change: impl FnOnce(&mut Value)) -> String {
            let mut c = self.claims("sub-alice");
            change(&mut c);
            self.key.mint(&c).unwrap()
        }
        fn auth(&self, h: &mut Fake, extra: &[&CStr]) -> PamCode {
            let config = self.config_arg();
            let mut args: Vec<&CStr> = vec![config.as_c_str()];
            args.extend_from_slice(extra);
            authenticate(h, &args, &system())
        }
        fn acct(&self, h: &mut Fake) -> PamCode {
            let config = self.config_arg();
            account(h, &[config.as_c_str()], &system())
        }
    }

    /// A trust directory (a CA and its CRL revoking one user), a grid-mapfile mapping the
    /// good and the revoked DN to alice, and chains (PEM, the presented certificate first):
    /// good, an RFC 3820 proxy of good, revoked, expired, from an untrusted CA, unmapped.
    struct CertSite {
        dir: tempfile::TempDir,
        chains: BTreeMap<&'static str, String>,
    }

    impl CertSite {
        fn new() -> Self {
            use crate::dev::pki::{self, CertSpec, ProxySpec};
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let day = Duration::from_secs(86400);
            let ca =
                pki::self_signed_ca(&CertSpec::ca("/DC=test/CN=PAM Test CA", now(), 365).unwrap())
                    .unwrap();
            let user = |cn: &str| {
                pki::issue(
                    &ca,
                    &CertSpec::user(&format!("/DC=test/CN={cn}"), now(), 30).unwrap(),
                )
                .unwrap()
            };
            let good = user("Good");
            let revoked = user("Revoked");
            let unmapped = user("Unmapped");
            let mut expired_spec = CertSpec::user("/DC=test/CN=Good", now() - day * 60, 1).unwrap();
            expired_spec.not_before = now() - day * 60;
            let expired = pki::issue(&ca, &expired_spec).unwrap();
            let other_ca =
                pki::self_signed_ca(&CertSpec::ca("/DC=test/CN=Untrusted CA", now(), 365).unwrap())
                    .unwrap();
            let untrusted = pki::issue(
                &other_ca,
                &CertSpec::user("/DC=test/CN=Good", now(), 30).unwrap(),
            )
            .unwrap();
            let proxy = pki::issue_proxy(&good, &ProxySpec::new("12345", now(), 12)).unwrap();
            let crl = pki::crl(
                &ca,
                &[(&revoked.cert, now() - day)],
                now() - day,
                now() + day * 7,
                1,
            )
            .unwrap();
            pki::install_ca(&d.join("certificates"), &ca.cert, Some(&crl), None).unwrap();
            std::fs::write(
                d.join("grid-mapfile"),
                "\"/DC=test/CN=Good\" alice\n\"/DC=test/CN=Revoked\" alice\n",
            )
            .unwrap();
            std::fs::write(
                d.join("hpccert.toml"),
                format!(
                    "version = 1\n[trust]\nca_dir = \"{0}/certificates\"\nnamespaces = \"ignore\"\n[mapping]\ngrid_mapfile = \"{0}/grid-mapfile\"\n",
                    d.display()
                ),
            )
            .unwrap();
            let pem = |creds: &[&crate::dev::pki::Credential]| -> String {
                creds
                    .iter()
                    .map(|c| String::from_utf8(c.cert_pem().unwrap()).unwrap())
                    .collect()
            };
            let chains = BTreeMap::from([
                ("good", pem(&[&good])),
                ("proxy", pem(&[&proxy, &good])),
                ("revoked", pem(&[&revoked])),
                ("expired", pem(&[&expired])),
                ("untrusted", pem(&[&untrusted])),
                ("unmapped", pem(&[&unmapped])),
                (
                    "garbage",
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
                ),
            ]);
            Self { dir, chains }
        }

        fn handle(&self, user: &str, chain: &str) -> Fake {
            let mut h = Fake::new(user);
            h.env
                .insert(ENV_X509_CHAIN.into(), self.chains[chain].clone());
            h
        }

        fn args(&self, x509: bool) -> Vec<std::ffi::CString> {
            let mut a = vec![
                std::ffi::CString::new(format!(
                    "config={}",
                    self.dir.path().join("hpccert.toml").display()
                ))
                .unwrap(),
            ];
            if x509 {
                a.push(c"x509".into());
            }
            a
        }

        fn auth(&self, h: &mut Fake) -> PamCode {
            let args = self.args(true);
            let refs: Vec<&CStr> = args.iter().map(|a| a.as_c_str()).collect();
            authenticate(h, &refs, &system())
        }

        fn acct(&self, h: &mut Fake, x509: bool) -> PamCode {
            let args = self.args(x509);
            let refs: Vec<&CStr> = args.iter().map(|a| a.as_c_str()).collect();
            account(h, &refs, &system())
        }
    }

    #[test]
    fn auth_and_account_share_one_trust_store_until_it_changes() {
        let site = CertSite::new();
        let mut h = site.handle("alice", "good");
        assert_eq!(site.auth(&mut h), PamCode::Success, "{}", h.log_text());
        assert!(h.trust.is_some(), "auth keeps the store on the handle");
        let args = site.args(false);
        let debug = [args[0].as_c_str(), c"debug"];
        assert_eq!(account(&mut h, &debug, &system()), PamCode::Success);
        assert!(
            h.log_text()
                .contains("trust store: the one loaded earlier in this transaction"),
            "account used the store auth loaded: {}",
            h.log_text()
        );
        assert!(h.trust.is_none(), "and freed it");
        // the directory changes between auth and account (fetch-crl): loaded again
        let certs = site.dir.path().join("certificates");
        let crl = std::fs::read_dir(&certs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "r0"))
            .unwrap();
        let crl_text = std::fs::read(&crl).unwrap();
        let mut h = site.handle("alice", "revoked");
        assert_ne!(site.auth(&mut h), PamCode::Success, "the CRL revokes it");
        std::fs::remove_file(&crl).unwrap();
        assert_eq!(
            site.auth(&mut h),
            PamCode::Success,
            "no CRL now (crl = if-present): {}",
            h.log_text()
        );
        std::fs::write(&crl, crl_text).unwrap();
        assert_ne!(
            site.acct(&mut h, false),
            PamCode::Success,
            "the CRL is back before account: {}",
            h.log_text()
        );
    }

    #[test]
    fn handed_over_chains_are_verified_and_mapped() {
        let site = CertSite::new();
        for chain in ["good", "proxy"] {
            let mut h = site.handle("alice", chain);
            assert_eq!(
                site.auth(&mut h),
                PamCode::Success,
                "{chain}: {}",
                h.log_text()
            );
            assert_eq!(h.env[ENV_DN], "/DC=test/CN=Good");
            assert!(h.env[ENV_CREDENTIAL].starts_with("SHA256:"));
            assert!(h.data.contains_key(DATA_CHAIN));
            // account re-checks the chain this module verified, even without the option
            assert_eq!(
                site.acct(&mut h, false),
                PamCode::Success,
                "{}",
                h.log_text()
            );
            assert!(
                h.log_text()
                    .contains("accepted certificate /DC=test/CN=Good"),
                "{}",
                h.log_text()
            );
        }
        // for another user: not mapped to bob
        let mut h = site.handle("bob", "good");
        assert_eq!(site.auth(&mut h), PamCode::AuthErr);
        assert!(!h.env.contains_key(ENV_DN));
        let refusals = [
            ("revoked", "revoked"),
            ("expired", "expired"),
            ("untrusted", "issuer"),
            ("unmapped", "/DC=test/CN=Unmapped"),
            ("garbage", ENV_X509_CHAIN),
        ];
        for (chain, reason) in refusals {
            let mut h = site.handle("alice", chain);
            assert_eq!(
                site.auth(&mut h),
                PamCode::AuthErr,
                "{chain}: {}",
                h.log_text()
            );
            assert!(
                h.log_text().to_lowercase().contains(&reason.to_lowercase()),
                "{chain}: the log names why ({reason}): {}",
                h.log_text()
            );
            assert!(
                !h.env.contains_key(ENV_DN) && !h.data.contains_key(DATA_CHAIN),
                "{chain}"
            );
            // and account refuses the handed-over chain too
            let mut h = site.handle("alice", chain);
            assert_eq!(
                site.acct(&mut h, true),
                PamCode::PermDenied,
                "{chain}: {}",
                h.log_text()
            );
        }
    }

    #[test]
    fn suspended_identities_and_accounts_are_refused() {
        // tokens: the suspension list named in [mapping] (default path otherwise)
        let site = Site::new();
        let d = site.dir.path().display().to_string();
        let config = std::fs::read_to_string(site.dir.path().join("hpccert.toml")).unwrap();
        site.write(
            "hpccert.toml",
            &config.replace(
                "[mapping]\n",
                &format!("[mapping]\nsuspended_file = \"{d}/suspended\"\n"),
            ),
        );
        let token = site.token("sub-alice");
        let mut h = Fake::new("alice").expect(DEFAULT_PROMPT, &token);
        assert_eq!(site.auth(&mut h, &[]), PamCode::Success, "{}", h.log_text());
        site.write(
            "suspended",
            &format!("token \"{ISS}\" \"sub-alice\"  # ticket 1\n"),
        );
        let mut h = Fake::new("alice").expect(DEFAULT_PROMPT, &token);
        assert_eq!(site.auth(&mut h, &[]), PamCode::AuthErr);
        assert!(h.log_text().contains("suspended"), "{}", h.log_text());
        assert!(!h.env.contains_key(ENV_TOKEN_SUBJECT));
        // a token verified in auth, suspended before account: account refuses
        site.write("suspended", "# nobody\n");
        let mut h = Fake::new("alice").expect(DEFAULT_PROMPT, &token);
        assert_eq!(site.auth(&mut h, &[]), PamCode::Success);
        site.write("suspended", "account alice\n");
        assert_eq!(site.acct(&mut h), PamCode::PermDenied);
        assert!(h.log_text().contains("suspended"), "{}", h.log_text());
        // a broken list refuses everyone (never read as empty)
        site.write("suspended", "dn not-quoted\n");
        let mut h = Fake::new("alice").expect(DEFAULT_PROMPT, &token);
        assert_eq!(site.auth(&mut h, &[]), PamCode::AuthErr);
        assert!(
            h.log_text().contains("every login is refused"),
            "{}",
            h.log_text()
        );

        // chains: the DN suspended
        let certs = CertSite::new();
        let toml = certs.dir.path().join("hpccert.toml");
        let text = std::fs::read_to_string(&toml).unwrap();
        let list = certs.dir.path().join("suspended");
        std::fs::write(
            &toml,
            text.replace(
                "[mapping]\n",
                &format!("[mapping]\nsuspended_file = \"{}\"\n", list.display()),
            ),
        )
        .unwrap();
        std::fs::write(&list, "dn \"/DC=test/CN=Good\"\n").unwrap();
        for chain in ["good", "proxy"] {
            let mut h = certs.handle("alice", chain);
            assert_eq!(certs.auth(&mut h), PamCode::AuthErr, "{chain}");
            assert!(h.log_text().contains("suspended"), "{}", h.log_text());
            let mut h = certs.handle("alice", chain);
            assert_eq!(certs.acct(&mut h, true), PamCode::PermDenied, "{chain}");
        }
    }

    #[test]
    fn a_handed_over_chain_needs_the_x509_option() {
        let site = CertSite::new();
        // account without the option: the variable alone proves nothing (PAM_IGNORE)
        let mut h = site.handle("alice", "good");
        assert_eq!(
            site.acct(&mut h, false),
            PamCode::Ignore,
            "{}",
            h.log_text()
        );
        // with it, the same chain passes the account check for the handed-over identity
        let mut h = site.handle("alice", "good");
        assert_eq!(
            site.acct(&mut h, true),
            PamCode::Success,
            "{}",
            h.log_text()
        );
        // an unusable trust store is "cannot check", not a refusal of the user
        std::fs::remove_dir_all(site.dir.path().join("certificates")).unwrap();
        let mut h = site.handle("alice", "good");
        assert_eq!(
            site.auth(&mut h),
            PamCode::AuthinfoUnavail,
            "{}",
            h.log_text()
        );
    }

    #[test]
    fn prompts_verifies_maps_and_exports() {
        let site = Site::new();
        let token = site.token("sub-alice");
        let mut h = Fake::new("alice").expect("Access token: ", &token);
        assert_eq!(site.auth(&mut h, &[]), PamCode::Success, "{}", h.log_text());
        assert_eq!(h.env[ENV_TOKEN_ISSUER], ISS);
        assert_eq!(h.env[ENV_TOKEN_SUBJECT], "sub-alice");
        assert_eq!(h.env[ENV_IDENTITY], format!("sub-alice (issuer {ISS})"));
        assert!(h.env[ENV_CREDENTIAL].starts_with("SHA256:"));
        assert_eq!(h.authtok.as_deref(), Some(token.as_str()));
        assert_eq!(h.data[DATA_TOKEN].as_str(), Some(token.as_str()));
        assert_eq!(h.user, "alice", "PAM_USER is never changed");
        let logs = h.log_text();
        assert!(logs.contains("Info: accepted sub-alice"), "{logs}");
        assert!(!logs.contains(&token), "the token is never logged");
        // and the account check with the same handle
        assert_eq!(site.acct(&mut h), PamCode::Success, "{}", h.log_text());
    }

    #[test]
    fn long_tokens_arrive_in_parts() {
        let site = Site::new();
        let token = site.token_with(|c| c["pad"] = json!("x".repeat(2500)));
        assert!(token.len() > 3000);
        let (a, rest) = token.split_at(1000);
        let (b, c) = rest.split_at(1000);
        let mut h = Fake::new("alice")
            .expect("Access token: ", &format!("{a}\\"))
            .expect("Access token (part 2): ", &format!("{b}\\\n"))
            .expect("Access token (part 3): ", c);
        assert_eq!(site.auth(&mut h, &[]), PamCode::Success, "{}", h.log_text());
        assert_eq!(h.authtok.as_deref(), Some(token.as_str()));

        // a custom prompt keeps its words in the part prompts
        let mut h = Fake::new("alice")
            .expect("Token: ", &format!("{a}\\"))
            .expect("Token (part 2): ", &format!("{b}{c}"));
        assert_eq!(
            site.auth(&mut h, &[c"prompt=Token: "]),
            PamCode::Success,
            "{}",
            h.log_text()
        );
    }

    #[test]
    fn entry_is_bounded() {
        let mut e = TokenEntry::default();
        assert_eq!(e.answer("aaa\\", 100), Next::Ask(2));
        assert_eq!(e.answer(" bbb \\\r\n", 100), Next::Ask(3));
        assert_eq!(e.answer("ccc", 100), Next::Done(Secret::from("aaabbbccc")));
        assert_eq!(e.answer("x.y.z", 100), Next::Done(Secret::from("x.y.z")));
        let mut e = TokenEntry::default();
        assert_eq!(e.answer(&"a".repeat(101), 100), Next::TooLong);
        // many tiny parts: at most max/64 + 2 of them
        let mut e = TokenEntry::default();
        let mut last = Next::Ask(0);
        for _ in 0..10 {
            last = e.answer("a\\", 256);
            if last == Next::TooLong {
                break;
            }
        }
        assert_eq!(last, Next::TooLong);

        let site = Site::new();
        let chunk = format!("{}\\", "a".repeat(1000));
        let mut h = Fake::new("alice").expect("Access token: ", &chunk);
        for n in 2..=16 {
            h = h.expect(&format!("Access token (part {n}): "), &chunk);
        }
        h = h.expect("Access token (part 17): ", &chunk);
        assert_eq!(site.auth(&mut h, &[]), PamCode::AuthErr);
        assert!(
            h.log_text().contains("longer than 16384 bytes"),
            "{}",
            h.log_text()
        );
    }

    #[test]
    fn use_first_pass_and_try_first_pass() {
        let site = Site::new();
        let token = site.token("sub-alice");
        // use_first_pass: no prompt at all
        let mut h = Fake::new("alice");
        h.authtok = Some(token.clone());
        assert_eq!(site.auth(&mut h, &[c"use_first_pass"]), PamCode::Success);
        let mut h = Fake::new("alice");
        assert_eq!(site.auth(&mut h, &[c"use_first_pass"]), PamCode::AuthErr);
        assert!(h.log_text().contains("no earlier module set PAM_AUTHTOK"));
        let mut h = Fake::new("alice");
        h.authtok = Some("a password".into());
        assert_eq!(site.auth(&mut h, &[c"use_first_pass"]), PamCode::AuthErr);
        assert!(h.log_text().contains("malformed"), "{}", h.log_text());
        // try_first_pass: a valid token is used, anything else leads to the prompt
        let mut h = Fake::new("alice");
        h.authtok = Some(token.clone());
        assert_eq!(site.auth(&mut h, &[c"try_first_pass"]), PamCode::Success);
        let mut h = Fake::new("alice").expect("Access token: ", &token);
        h.authtok = Some("a password".into());
        assert_eq!(
            site.auth(&mut h, &[c"try_first_pass", c"debug"]),
            PamCode::Success
        );
        assert!(
            h.log_text()
                .contains("try_first_pass: PAM_AUTHTOK is not a usable token")
        );
        assert!(!h.log_text().contains("a password"));
        let mut h = Fake::new("alice").expect("Access token: ", &token);
        assert_eq!(site.auth(&mut h, &[c"try_first_pass"]), PamCode::Success);
        // a valid token of another identity is not replaced by a prompt
        let mut h = Fake::new("alice");
        h.authtok = Some(site.token("sub-mallory"));
        assert_eq!(site.auth(&mut h, &[c"try_first_pass"]), PamCode::AuthErr);
    }

    #[test]
    fn options() {
        let o = Options::parse(&[
            c"config=/etc/x.toml",
            c"debug",
            c"prompt=Bearer token: ",
            c"try_first_pass",
            c"ignore_unknown_user",
            c"require_scope=compute.create",
            c"require_scope=storage.read:/home",
        ])
        .unwrap();
        assert_eq!(o.config, PathBuf::from("/etc/x.toml"));
        assert!(o.debug && o.ignore_unknown_user);
        assert_eq!(o.first_pass, FirstPass::Try);
        assert_eq!(o.prompt, "Bearer token: ");
        assert_eq!(o.part_prompt(2), "Bearer token (part 2): ");
        assert_eq!(
            o.required_scopes,
            vec![
                Capability::ComputeCreate,
                Capability::StorageRead("/home".into())
            ]
        );
        assert_eq!(Options::parse(&[]).unwrap(), Options::default());
        assert_eq!(Options::default().part_prompt(3), "Access token (part 3): ");
        for bad in [
            &[c"nullok"][..],
            &[c"config"],
            &[c"config=relative.toml"],
            &[c"config=/a", c"config=/b"],
            &[c"debug=1"],
            &[c"prompt="],
            &[c"require_scope="],
            &[c"require_scope=a b"],
            &[c"use_first_pass", c"try_first_pass"],
            &[c"\xff"],
        ] {
            let e = Options::parse(bad).unwrap_err();
            assert_eq!(
                e.code(Phase::Auth, &Options::default()),
                PamCode::ServiceErr
            );
        }
    }

    #[test]
    fn unknown_options_are_logged_and_refused_without_asking() {
        let site = Site::new();
        let mut h = Fake::new("alice");
        assert_eq!(site.auth(&mut h, &[c"no_warn"]), PamCode::ServiceErr);
        assert!(
            h.log_text()
                .contains("Error: refusing: unknown option \"no_warn\"")
        );
        let mut h = Fake::new("alice");
        assert_eq!(
            account(&mut h, &[c"try_first_pass=yes"], &system()),
            PamCode::ServiceErr
        );
        let mut h = Fake::new("alice");
        assert_eq!(setcred(&mut h, &[c"bogus"]), PamCode::ServiceErr);
        assert_eq!(setcred(&mut h, &[c"debug"]), PamCode::Success);
    }

    #[test]
    fn refusals_map_to_codes_and_log_the_reason() {
        let site = Site::new();
        let cases: Vec<(&str, String, PamCode, &str)> = vec![
            (
                "bob",
                site.token("sub-alice"),
                PamCode::AuthErr,
                "account bob is not mapped",
            ),
            (
                "alice",
                site.token("sub-mallory"),
                PamCode::AuthErr,
                "not mapped",
            ),
            (
                "alice",
                site.token_with(|c| c["exp"] = json!(NOW - 3600)),
                PamCode::AuthErr,
                "token expired",
            ),
            (
                "alice",
                site.token_with(|c| c["aud"] = json!("https://other.test")),
                PamCode::AuthErr,
                "wrong audience",
            ),
            (
                "alice",
                site.token_with(|c| c["iss"] = json!("https://evil.test")),
                PamCode::AuthErr,
                "unknown issuer",
            ),
            ("alice", "garbage".into(), PamCode::AuthErr, "malformed"),
            ("alice", "".into(), PamCode::AuthErr, "empty answer"),
            (
                "alice",
                DevKey::generate("k1", JwsAlgorithm::ES256)
                    .unwrap()
                    .mint(&site.claims("sub-alice"))
                    .unwrap(),
                PamCode::AuthErr,
                "bad signature",
            ),
            (
                "nosuchuser",
                site.token("sub-alice"),
                PamCode::UserUnknown,
                "not known to the system",
            ),
        ];
        for (user, answer, code, reason) in cases {
            let mut h = Fake::new(user).expect("Access token: ", &answer);
            h.env.insert(ENV_IDENTITY.into(), "left over".into());
            assert_eq!(
                site.auth(&mut h, &[]),
                code,
                "{user} {reason}: {}",
                h.log_text()
            );
            let logs = h.log_text();
            assert!(logs.contains(reason), "{reason}: {logs}");
            assert!(logs.contains(&format!("user {user}: ")), "{logs}");
            assert!(
                answer.len() < 10 || !logs.contains(&answer),
                "token logged: {logs}"
            );
            assert!(h.env.is_empty(), "nothing exported on refusal: {:?}", h.env);
            assert!(h.data.is_empty());
        }
    }

    #[test]
    fn conversation_failures() {
        let site = Site::new();
        let mut h = Fake::new("alice").expect_reply("Access token: ", Ok(None));
        assert_eq!(site.auth(&mut h, &[]), PamCode::AuthErr);
        assert!(h.log_text().contains("gave no answer"));
        let mut h = Fake::new("alice").expect_reply(
            "Access token: ",
            Err(HandleError::new("conversation", Some(19), "closed")),
        );
        assert_eq!(site.auth(&mut h, &[]), PamCode::ConvErr);
        assert!(h.log_text().contains("conversation failed: closed"));
        // a failing libpam call is a system error, never a success
        let mut h = Fake::new("alice").expect("Access token: ", &site.token("sub-alice"));
        h.fail_putenv = true;
        assert_eq!(site.auth(&mut h, &[]), PamCode::SystemErr);
        assert!(h.log_text().contains("pam_putenv failed"));
    }

    #[test]
    fn unknown_users() {
        let site = Site::new();
        // asked anyway: the prompt does not reveal which accounts exist
        let mut h = Fake::new("nosuchuser").expect("Access token: ", "whatever");
        assert_eq!(site.auth(&mut h, &[]), PamCode::UserUnknown);
        // ignore_unknown_user: left to the next module, without a prompt
        let mut h = Fake::new("nosuchuser");
        assert_eq!(
            site.auth(&mut h, &[c"ignore_unknown_user"]),
            PamCode::Ignore
        );
        assert!(h.logs.is_empty(), "{}", h.log_text());
    }

    #[test]
    fn unusable_configuration_is_authinfo_unavail_without_asking() {
        let site = Site::new();
        let mut h = Fake::new("alice");
        let code = authenticate(&mut h, &[c"config=/nonexistent/hpccert.toml"], &system());
        assert_eq!(code, PamCode::AuthinfoUnavail);
        assert!(
            h.log_text()
                .contains("Error: user alice: configuration unusable: /nonexistent/hpccert.toml")
        );

        site.write("hpccert.toml", "version = 1\n[tokens]\nbogus = 1\n");
        let mut h = Fake::new("alice");
        assert_eq!(site.auth(&mut h, &[]), PamCode::AuthinfoUnavail);
        assert!(h.log_text().contains("bogus"));

        site.write("hpccert.toml", "version = 1\n");
        let mut h = Fake::new("alice");
        assert_eq!(site.auth(&mut h, &[]), PamCode::AuthinfoUnavail);
        assert!(h.log_text().contains("no [[issuer]] is configured"));

        let site = Site::new();
        site.write("token-map", "\"unterminated\n");
        let mut h = Fake::new("alice");
        assert_eq!(site.auth(&mut h, &[]), PamCode::AuthinfoUnavail);
        assert!(
            h.log_text().contains("token map unusable"),
            "{}",
            h.log_text()
        );

        // keys that cannot be read: the module cannot check (not the user's fault)
        let site = Site::new();
        std::fs::remove_file(site.dir.path().join("jwks.json")).unwrap();
        let mut h = Fake::new("alice").expect("Access token: ", &site.token("sub-alice"));
        assert_eq!(site.auth(&mut h, &[]), PamCode::AuthinfoUnavail);
        assert!(
            h.log_text().contains("no keys for issuer"),
            "{}",
            h.log_text()
        );
    }

    #[test]
    fn require_scope_adds_to_the_issuer_rules() {
        let site = Site::new();
        let token = site.token("sub-alice"); // scope "openid compute.create"
        let mut h = Fake::new("alice").expect("Access token: ", &token);
        assert_eq!(
            site.auth(&mut h, &[c"require_scope=compute.create"]),
            PamCode::Success
        );
        let mut h = Fake::new("alice").expect("Access token: ", &token);
        assert_eq!(
            site.auth(&mut h, &[c"require_scope=storage.read:/data"]),
            PamCode::AuthErr
        );
        assert!(
            h.log_text()
                .contains("lacks required scope storage.read:/data")
        );
    }

    #[test]
    fn account_rechecks_with_the_current_files() {
        let site = Site::new();
        let token = site.token("sub-alice");
        let mut h = Fake::new("alice").expect("Access token: ", &token);
        assert_eq!(site.auth(&mut h, &[]), PamCode::Success);
        assert_eq!(site.acct(&mut h), PamCode::Success);
        // the token map loses the rule: the account check refuses
        site.write("token-map", "# emptied\n");
        assert_eq!(site.acct(&mut h), PamCode::PermDenied);
        let logs = h.log_text();
        assert!(
            logs.contains(
                "Notice: user alice: token of https://issuer.test subject sub-alice is not mapped"
            ),
            "{logs}"
        );
        // PAM_USER changed since auth: refused for the new user
        site.write("token-map", &format!("\"{ISS}\" \"sub-alice\" alice\n"));
        h.user = "bob".into();
        assert_eq!(site.acct(&mut h), PamCode::PermDenied);
        h.user = "alice".into();
        assert_eq!(site.acct(&mut h), PamCode::Success);
        // a new auth that fails forgets the earlier identity
        let mut h2 = Fake::new("alice").expect("Access token: ", "garbage");
        h2.data = h.data.clone();
        h2.env = h.env.clone();
        assert_eq!(site.auth(&mut h2, &[]), PamCode::AuthErr);
        assert!(h2.data.is_empty() && h2.env.is_empty());
        assert_eq!(site.acct(&mut h2), PamCode::Ignore);
    }

    #[test]
    fn account_without_an_identity_from_this_module_is_ignored() {
        let site = Site::new();
        let mut h = Fake::new("alice");
        assert_eq!(site.acct(&mut h), PamCode::Ignore);
        assert!(h.logs.is_empty());
        // variables in the environment alone prove nothing
        h.env.insert(ENV_TOKEN_ISSUER.into(), ISS.into());
        assert_eq!(site.acct(&mut h), PamCode::Ignore);
        assert!(h.log_text().contains("not trusted"));
        // unknown user with a token
        let mut h = Fake::new("nosuchuser");
        h.data.insert(
            DATA_TOKEN.into(),
            Secret::from(site.token("sub-alice").as_str()),
        );
        assert_eq!(site.acct(&mut h), PamCode::UserUnknown);
    }

    #[test]
    fn every_error_has_a_code_in_each_phase() {
        let plain = Options::default();
        let ignoring = Options {
            ignore_unknown_user: true,
            ..Options::default()
        };
        let mapping = || PamError::Mapping {
            identity: "s (issuer i)".into(),
            subject: "s".into(),
            refusal: Box::new(Refusal::MissingScope {
                required: "x".into(),
                held: "no scopes".into(),
            }),
        };
        let cases: Vec<(PamError, PamCode, PamCode)> = vec![
            (
                PamError::UnknownOption("x".into()),
                PamCode::ServiceErr,
                PamCode::ServiceErr,
            ),
            (
                PamError::BadOption {
                    option: "x".into(),
                    reason: "y".into(),
                },
                PamCode::ServiceErr,
                PamCode::ServiceErr,
            ),
            (
                PamError::Config(ConfigError::Invalid {
                    path: "/x".into(),
                    message: "m".into(),
                }),
                PamCode::AuthinfoUnavail,
                PamCode::AuthinfoUnavail,
            ),
            (
                PamError::NoIssuers("/x".into()),
                PamCode::AuthinfoUnavail,
                PamCode::AuthinfoUnavail,
            ),
            (
                PamError::TokenMap("m".into()),
                PamCode::AuthinfoUnavail,
                PamCode::AuthinfoUnavail,
            ),
            (
                PamError::Handle(HandleError::new("pam_get_user", Some(4), "x")),
                PamCode::SystemErr,
                PamCode::SystemErr,
            ),
            (
                PamError::Handle(HandleError::new("conversation", None, "x")),
                PamCode::ConvErr,
                PamCode::ConvErr,
            ),
            (
                PamError::UnknownUser("u".into()),
                PamCode::UserUnknown,
                PamCode::UserUnknown,
            ),
            (
                PamError::NoToken("x"),
                PamCode::AuthErr,
                PamCode::PermDenied,
            ),
            (
                PamError::TokenTooLong { max: 1 },
                PamCode::AuthErr,
                PamCode::PermDenied,
            ),
            (
                PamError::Token(TokenError::AlgNone),
                PamCode::AuthErr,
                PamCode::PermDenied,
            ),
            (
                PamError::Token(TokenError::NoKeys {
                    issuer: "i".into(),
                    reason: "r".into(),
                }),
                PamCode::AuthinfoUnavail,
                PamCode::AuthinfoUnavail,
            ),
            (
                PamError::Token(TokenError::StaleKeys {
                    issuer: "i".into(),
                    age: 2,
                    limit: 1,
                }),
                PamCode::AuthinfoUnavail,
                PamCode::AuthinfoUnavail,
            ),
            (mapping(), PamCode::AuthErr, PamCode::PermDenied),
            (
                PamError::AccountMismatch {
                    identity: "s".into(),
                    decided: "a".into(),
                    user: "b".into(),
                },
                PamCode::AuthErr,
                PamCode::PermDenied,
            ),
            (
                PamError::Unexportable {
                    identity: "s".into(),
                },
                PamCode::AuthErr,
                PamCode::PermDenied,
            ),
        ];
        for (e, auth, acct) in cases {
            assert_eq!(e.code(Phase::Auth, &plain), auth, "{e}");
            assert_eq!(e.code(Phase::Account, &plain), acct, "{e}");
            assert_ne!(e.code(Phase::Auth, &plain), PamCode::Success);
        }
        assert_eq!(
            PamError::UnknownUser("u".into()).code(Phase::Auth, &ignoring),
            PamCode::Ignore
        );
        assert_eq!(PamCode::AuthErr.raw(), 7);
        assert_eq!(PamCode::Ignore.to_string(), "PAM_IGNORE");
    }

    #[test]
    fn identities_with_control_characters_are_not_exported() {
        let site = Site::new();
        site.write("token-map", &format!("\"{ISS}\" /(?s).*/ alice\n"));
        let token = site.token("evil\nHPCCERT_IDENTITY=root");
        let mut h = Fake::new("alice").expect("Access token: ", &token);
        assert_eq!(site.auth(&mut h, &[]), PamCode::AuthErr);
        assert!(h.env.is_empty());
        assert!(h.log_text().contains("control characters"));
    }

    #[test]
    fn log_lines_cannot_be_forged() {
        let site = Site::new();
        let token = site.token_with(|c| c["iss"] = json!("https://x\nfake: accepted"));
        let mut h = Fake::new("alice\nroot").expect("Access token: ", &token);
        assert_eq!(site.auth(&mut h, &[]), PamCode::UserUnknown);
        assert_eq!(h.logs.len(), 1);
        assert!(!h.logs[0].1.contains('\n'), "{}", h.logs[0].1);
        assert!(
            h.logs[0].1.contains("user alice\\nroot:"),
            "{}",
            h.logs[0].1
        );
        let mut h = Fake::new("alice").expect("Access token: ", &token);
        assert_eq!(site.auth(&mut h, &[]), PamCode::AuthErr);
        assert!(
            h.logs[0]
                .1
                .contains("unknown issuer \"https://x\\nfake: accepted\""),
            "{}",
            h.logs[0].1
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::from("eyJhbGciOi");
        assert_eq!(format!("{s:?}"), "<secret>");
        let e = TokenEntry::default();
        assert!(!format!("{e:?}").contains("eyJ"));
    }
}
