//! OAuth2 JWT access tokens, validated offline with cached issuer keys.
//!
//! [`verify_token`] checks, in this order: size and structure; the header policy of
//! [`jws`] (no `none`, no HMAC, no `crit`, no header-embedded keys); the issuer (`iss` must
//! equal a configured issuer exactly); the algorithm allow-list of that issuer; the signature
//! with the issuer's cached keys; then the claims: `exp` (required), `nbf`, `iat` with a small
//! leeway at an injected time, the token lifetime, `aud` against the issuer's audiences,
//! `typ`, and the profile (generic OIDC access token, SciToken 1.0/2.0, WLCG 1.0). The result
//! is a [`VerifiedToken`], which only this module constructs.

pub mod entry;
pub mod jws;
pub mod keys;
pub mod scope;

#[cfg(feature = "fetch")]
pub mod fetch;

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

pub use jws::{JwsAlgorithm, KeySet};
pub use scope::Capability;

/// Largest token accepted by default (real access tokens are 1-4 KB).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The WLCG "any audience" value.
pub const WLCG_ANY_AUDIENCE: &str = "https://wlcg.cern.ch/jwt/v1/any";

/// Why a token was refused. The `Display` text is the reason logged; it never contains the
/// token itself.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("token too large ({len} bytes, limit {max})")]
    TooLarge { len: usize, max: usize },
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("alg none refused")]
    AlgNone,
    #[error("HMAC algorithm {0} refused (issuers sign with public keys)")]
    HmacRefused(String),
    #[error("unsupported algorithm {0}")]
    UnsupportedAlgorithm(String),
    #[error("algorithm {0} not allowed for this issuer")]
    AlgorithmNotAllowed(String),
    #[error("critical header parameter(s) not understood: {}", .0.join(", "))]
    CriticalHeader(Vec<String>),
    #[error("header-embedded key ({0}) is never trusted")]
    EmbeddedKey(String),
    #[error("unusable key id {0}")]
    BadKid(String),
    #[error("unknown key id {0:?} for this issuer")]
    UnknownKid(String),
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("unknown issuer {0:?}")]
    UnknownIssuer(String),
    #[error("no keys for issuer {issuer}: {reason}")]
    NoKeys { issuer: String, reason: String },
    #[error("issuer keys for {issuer} are stale (last refreshed {age} s ago, limit {limit} s)")]
    StaleKeys {
        issuer: String,
        age: i64,
        limit: i64,
    },
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    #[error("claim {claim} is not {expected}")]
    BadClaim {
        claim: &'static str,
        expected: &'static str,
    },
    #[error("token expired at {} (now {}, leeway {leeway} s)", crate::trust::x509::format_unix(*.exp), crate::trust::x509::format_unix(*.now))]
    Expired { exp: i64, now: i64, leeway: i64 },
    #[error("token not valid before {} (now {}, leeway {leeway} s)", crate::trust::x509::format_unix(*.nbf), crate::trust::x509::format_unix(*.now))]
    NotYetValid { nbf: i64, now: i64, leeway: i64 },
    #[error("token issued in the future (iat {}, now {})", crate::trust::x509::format_unix(*.iat), crate::trust::x509::format_unix(*.now))]
    IssuedInFuture { iat: i64, now: i64 },
    #[error("token lifetime {lifetime} s exceeds the issuer's limit of {limit} s")]
    LifetimeTooLong { lifetime: i64, limit: i64 },
    #[error("wrong audience: token is for {found}, accepted: {accepted}")]
    WrongAudience { found: String, accepted: String },
    #[error("token type {0:?} not accepted")]
    WrongType(String),
    #[error("profile {profile}: {reason}")]
    Profile { profile: Profile, reason: String },
}

/// The kind of token an issuer mints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// A generic OIDC/OAuth2 JWT access token (CILogon, Keycloak, RFC 9068).
    #[default]
    Oidc,
    /// SciTokens 1.0 (no `ver`) or 2.0 (`ver: scitoken:2.0`, `aud` required).
    Scitoken,
    /// WLCG common JWT profile 1.0 (`wlcg.ver: "1.0"`).
    Wlcg,
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Oidc => "oidc",
            Self::Scitoken => "scitoken",
            Self::Wlcg => "wlcg",
        })
    }
}

/// What one trusted issuer's tokens must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerPolicy {
    /// Exact `iss` value.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one.
    pub audiences: Vec<String>,
    /// Accept the WLCG "any" audience.
    pub accept_any_audience: bool,
    pub algorithms: Vec<JwsAlgorithm>,
    pub profile: Profile,
    /// Clock skew allowed on `exp`, `nbf`, `iat` (seconds).
    pub leeway: i64,
    /// Longest accepted lifetime (`exp - iat`), seconds.
    pub max_lifetime: Option<i64>,
    /// Require `typ: at+jwt` (RFC 9068) instead of also accepting `JWT` or no `typ`.
    pub require_at_jwt: bool,
    /// Keys older than this (since their last successful refresh) are not used; seconds.
    pub max_key_age: i64,
}

impl IssuerPolicy {
    /// A policy with the defaults: RS256/ES256, 60 s leeway, generic profile, 7 days key age.
    pub fn new(issuer: &str, audiences: &[&str]) -> Self {
        Self {
            issuer: issuer.to_string(),
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            accept_any_audience: false,
            algorithms: vec![JwsAlgorithm::RS256, JwsAlgorithm::ES256],
            profile: Profile::Oidc,
            leeway: 60,
            max_lifetime: None,
            require_at_jwt: false,
            max_key_age: 7 * 86400,
        }
    }
}

/// Keys of one issuer, with the time they were last fetched (None: configured statically).
#[derive(Debug, Clone)]
pub struct IssuerKeys {
    pub keys: Arc<KeySet>,
    pub fetched_at: Option<i64>,
}

/// Where issuer keys come from: the on-disk cache (PAM, tools) or a refreshing daemon cache.
pub trait KeySource {
    /// The current keys of `policy.issuer`.
    fn keys(&self, policy: &IssuerPolicy, now: i64) -> Result<IssuerKeys, TokenError>;
    /// A token named a key id we do not have: a daemon may refetch (rate-limited) and return
    /// the new keys; files-only sources return None.
    fn refresh_for_unknown_kid(&self, _policy: &IssuerPolicy, _now: i64) -> Option<IssuerKeys> {
        None
    }
}

/// Proof that a token was verified. Only [`verify_token`] constructs it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct VerifiedToken {
    issuer: String,
    subject: String,
    audience: String,
    expires_at: i64,
    issued_at: Option<i64>,
    profile: Profile,
    capabilities: Vec<Capability>,
    groups: Vec<String>,
    claims: Map<String, Value>,
    fingerprint: String,
    alg: JwsAlgorithm,
    kid: Option<String>,
}

impl VerifiedToken {
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    pub fn subject(&self) -> &str {
        &self.subject
    }
    /// The accepted audience the token named.
    pub fn audience(&self) -> &str {
        &self.audience
    }
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }
    pub fn issued_at(&self) -> Option<i64> {
        self.issued_at
    }
    pub fn profile(&self) -> Profile {
        self.profile
    }
    pub fn capabilities(&self) -> &[Capability] {
        &self.capabilities
    }
    /// Groups and entitlements: `wlcg.groups`, `groups`, `isMemberOf`, `eduperson_entitlement`.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }
    /// A string claim (for username rules).
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
    /// `SHA256:` and the hex SHA-256 of the token: identifies it in logs without revealing it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    pub fn alg(&self) -> JwsAlgorithm {
        self.alg
    }
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }
    /// One line for logs and explanations.
    pub fn summary(&self) -> String {
        format!(
            "token verified: issuer {} subject {} ({} {}, key {}, expires {})",
            self.issuer,
            self.subject,
            self.profile,
            self.alg,
            self.kid.as_deref().unwrap_or("-"),
            crate::trust::x509::format_unix(self.expires_at)
        )
    }
}

pub use crate::clock::unix_seconds;

fn numeric(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            })
            .map(Some)
            .ok_or(TokenError::BadClaim {
                claim: name,
                expected: "a NumericDate",
            }),
        Some(_) => Err(TokenError::BadClaim {
            claim: name,
            expected: "a number (NumericDate)",
        }),
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// The issuer named by a token, read before anything is verified (to pick its keys).
fn claimed_issuer(claims: &Map<String, Value>) -> Result<&str, TokenError> {
    match claims.get("iss") {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(TokenError::BadClaim {
            claim: "iss",
            expected: "a string",
        }),
        None => Err(TokenError::MissingClaim("iss")),
    }
}

/// Verify `token` against the configured issuers at time `now`.
pub fn verify_token(
    token: &str,
    issuers: &[IssuerPolicy],
    keys: &dyn KeySource,
    max_len: usize,
    now: SystemTime,
) -> Result<VerifiedToken, TokenError> {
    let now = unix_seconds(now);
    let jws = jws::parse_compact(token, max_len)?;
    let claims: Map<String, Value> = match serde_json::from_slice(&jws.payload) {
        Ok(Value::Object(m)) => m,
        _ => return Err(TokenError::Malformed("payload is not a JSON object".into())),
    };
    let iss = claimed_issuer(&claims)?;
    let policy = issuers
        .iter()
        .find(|p| p.issuer == iss)
        .ok_or_else(|| TokenError::UnknownIssuer(iss.to_string()))?;
    if !policy.algorithms.contains(&jws.alg) {
        return Err(TokenError::AlgorithmNotAllowed(jws.alg.to_string()));
    }
    let mut issuer_keys = keys.keys(policy, now)?;
    if let Some(fetched) = issuer_keys.fetched_at {
        let age = now - fetched;
        if age > policy.max_key_age {
            return Err(TokenError::StaleKeys {
                issuer: policy.issuer.clone(),
                age,
                limit: policy.max_key_age,
            });
        }
    }
    match jws.verify(&issuer_keys.keys, &policy.algorithms) {
        Err(TokenError::UnknownKid(kid)) => match keys.refresh_for_unknown_kid(policy, now) {
            Some(fresh) if fresh.keys.has_kid(&kid) => {
                issuer_keys = fresh;
                jws.verify(&issuer_keys.keys, &policy.algorithms)?;
            }
            _ => return Err(TokenError::UnknownKid(kid)),
        },
        other => other?,
    }
    validate_claims(&jws, claims, policy, now, token)
}

fn validate_claims(
    jws: &jws::CompactJws<'_>,
    claims: Map<String, Value>,
    policy: &IssuerPolicy,
    now: i64,
    token: &str,
) -> Result<VerifiedToken, TokenError> {
    let leeway = policy.leeway;
    // typ (RFC 9068 access tokens are at+jwt; many issuers still say JWT or nothing)
    if let Some(typ) = &jws.typ {
        let t = typ.to_ascii_lowercase();
        let at_jwt = t == "at+jwt" || t == "application/at+jwt";
        if !(at_jwt || (!policy.require_at_jwt && t == "jwt")) {
            return Err(TokenError::WrongType(typ.clone()));
        }
    } else if policy.require_at_jwt {
        return Err(TokenError::WrongType(String::new()));
    }
    let exp = numeric(&claims, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
    let nbf = numeric(&claims, "nbf")?;
    let iat = numeric(&claims, "iat")?;
    if exp <= now - leeway {
        return Err(TokenError::Expired { exp, now, leeway });
    }
    if let Some(nbf) = nbf
        && nbf > now + leeway
    {
        return Err(TokenError::NotYetValid { nbf, now, leeway });
    }
    if let Some(iat) = iat
        && iat > now + leeway
    {
        return Err(TokenError::IssuedInFuture { iat, now });
    }
    if let Some(limit) = policy.max_lifetime {
        let start = iat.or(nbf).unwrap_or(now);
        let lifetime = exp - start;
        if lifetime > limit {
            return Err(TokenError::LifetimeTooLong { lifetime, limit });
        }
    }
    let subject = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => {
            return Err(TokenError::BadClaim {
                claim: "sub",
                expected: "a non-empty string",
            });
        }
        None => return Err(TokenError::MissingClaim("sub")),
    };
    let auds = match claims.get("aud") {
        None => return Err(TokenError::MissingClaim("aud")),
        Some(Value::String(_)) | Some(Value::Array(_)) => strings(claims.get("aud")),
        Some(_) => {
            return Err(TokenError::BadClaim {
                claim: "aud",
                expected: "a string or list of strings",
            });
        }
    };
    let audience = auds
        .iter()
        .find(|a| policy.audiences.contains(a))
        .or_else(|| {
            auds.iter()
                .find(|a| policy.accept_any_audience && a.as_str() == WLCG_ANY_AUDIENCE)
        })
        .cloned()
        .ok_or_else(|| TokenError::WrongAudience {
            found: if auds.is_empty() {
                "nobody".into()
            } else {
                auds.join(", ")
            },
            accepted: policy.audiences.join(", "),
        })?;
    let scope = match claims.get("scope") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        // some issuers (Keycloak "scp", Azure) use a list
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        Some(_) => {
            return Err(TokenError::BadClaim {
                claim: "scope",
                expected: "a string",
            });
        }
    };
    let capabilities = Capability::parse_list(&scope);
    let profile_err = |reason: &str| TokenError::Profile {
        profile: policy.profile,
        reason: reason.to_string(),
    };
    match policy.profile {
        Profile::Oidc => {}
        Profile::Scitoken => match claims.get("ver").and_then(Value::as_str) {
            None | Some("scitoken:2.0") | Some("scitokens:2.0") => {
                if scope.is_empty() {
                    return Err(profile_err(
                        "a SciToken carries its authorisation in scope, which is empty",
                    ));
                }
            }
            Some(other) => return Err(profile_err(&format!("unsupported ver {other:?}"))),
        },
        Profile::Wlcg => {
            if claims.get("wlcg.ver").and_then(Value::as_str) != Some("1.0") {
                return Err(profile_err("wlcg.ver must be \"1.0\""));
            }
            if scope.is_empty() && !claims.contains_key("wlcg.groups") {
                return Err(profile_err("neither scope nor wlcg.groups present"));
            }
        }
    }
    let mut groups = Vec::new();
    for claim in [
        "wlcg.groups",
        "groups",
        "isMemberOf",
        "eduperson_entitlement",
    ] {
        groups.extend(strings(claims.get(claim)));
    }
    let digest = openssl::sha::sha256(token.trim().as_bytes());
    let fingerprint = format!(
        "SHA256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    Ok(VerifiedToken {
        issuer: policy.issuer.clone(),
        subject,
        audience,
        expires_at: exp,
        issued_at: iat,
        profile: policy.profile,
        capabilities,
        groups,
        claims,
        fingerprint,
        alg: jws.alg,
        kid: jws.kid.clone(),
    })
}
