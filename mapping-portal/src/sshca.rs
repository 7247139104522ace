//! The site's SSH user CA (`[portal.ssh_ca]`): `POST /ssh/v1/certificate` turns a credential
//! into a short-lived OpenSSH user certificate for the accounts the mapping engine allows, and
//! `GET /.well-known/hpccert` tells clients how to log in.
//!
//! The decision is the one a login node makes: the token is verified offline with the cached
//! issuer keys (`[[issuer]]`, audience included), then mapped by hpccert-core's engine over
//! the portal's own current export (token map, suspension list: the files every node
//! installs), so a suspended identity or account, an unlinked identity or an account the
//! identity may not use is refused with the engine's reason. Every issuance is recorded
//! (serial, identity, accounts, key fingerprint, validity, source, proof) with an audit row;
//! every refusal is logged and audited, and nothing is recorded as issued. Requests are
//! rate-limited per identity and per source address.
//!
//! A gateway that still holds a grid credential proves it instead of sending a token: it asks
//! `POST /ssh/v1/challenge` for a one-time challenge (`{"challenge": TEXT, "expires": T}`,
//! good for one answer within 5 minutes, kept in this process's memory), signs the text with
//! the key of its certificate or RFC 3820 proxy (`openssl dgst -sha256 -sign`) and sends
//! `"x509": {"certificates": PEM, "challenge": TEXT, "signature": BASE64}` with the request.
//! The chain is verified as a login's is (`[trust]`: CAs, CRLs, namespaces, proxies) and its
//! DN mapped through the grid-mapfile of the portal's export; the certificate never outlives
//! the chain.
//!
//! Request: `Authorization: Bearer TOKEN` (or the `x509` member), JSON `{"public_key":
//! "ssh-ed25519 AAAA...", "principals": ["jdoe"]}` (principals optional: the account the
//! engine picks). Response 200:
//! `{"certificate": "...-cert-v01@openssh.com ...", "serial": N, "principals": [...],
//! "key_id": "...", "valid_after": T, "valid_before": T, "identity": "..."}`; refusals:
//! 400 (request), 401 (credential), 403 (mapping), 429 (rate), 503 (CA unusable), each with
//! `{"error": CODE, "reason": TEXT}`.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hpccert_core::config::{Config, PortalSshCaConfig, TrustConfig};
use hpccert_core::identity::gridmap::GridMapfile;
use hpccert_core::identity::mapping::{Decision, Mapper, TokenRules};
use hpccert_core::identity::suspension::{SuspensionError, SuspensionList};
use hpccert_core::identity::tokenmap::TokenMapfile;
use hpccert_core::token::keys::FileKeySource;
use hpccert_core::token::{IssuerPolicy, VerifiedToken, unix_seconds, verify_token};
use hpccert_core::trust::sshca::{self, CertRequest, SshCa};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Portal;
use crate::model::{CertificateProof, IdentityKey, IssuedCertificate};

/// The window of the rate limits.
const WINDOW: Duration = Duration::from_secs(3600);
/// Keys the rate limiters track before they forget the idle ones.
const MAX_KEYS: usize = 100_000;
/// Largest request body (a public key and a few principals, or with an X.509 proof a chain
/// of a few certificates).
pub const MAX_REQUEST_BYTES: usize = 160 * 1024;
/// How long an X.509 challenge can be answered.
pub const CHALLENGE_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Challenges waiting for an answer at most (each source is rate-limited as well).
const MAX_CHALLENGES: usize = 10_000;

/// Sliding-window counters.
#[derive(Debug, Default)]
struct Limiter(Mutex<HashMap<String, VecDeque<Instant>>>);

impl Limiter {
    /// Count one request under `key`; false when `limit` were counted in the window already.
    fn admit(&self, key: &str, limit: usize, now: Instant) -> bool {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // many distinct sources must not grow the table without end: past a size, forget
        // the keys whose window has passed
        if map.len() >= MAX_KEYS {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        }
        let q = map.entry(key.to_string()).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            q.pop_front();
        }
        if q.len() >= limit {
            return false;
        }
        q.push_back(now);
        true
    }
}

/// X.509 challenges waiting for their answer, and when each was made.
#[derive(Debug, Default)]
struct Challenges(Mutex<HashMap<String, Instant>>);

impl Challenges {
    /// Keep `text` for one answer; refused when [`MAX_CHALLENGES`] wait and are not expired.
    fn make(&self, text: &str, now: Instant) -> Result<(), String> {
        let mut waiting = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if waiting.len() >= MAX_CHALLENGES {
            waiting.retain(|_, made| now.duration_since(*made) <= CHALLENGE_LIFETIME);
        }
        if waiting.len() >= MAX_CHALLENGES {
            return Err(format!(
                "{MAX_CHALLENGES} challenges are waiting for an answer"
            ));
        }
        waiting.insert(text.to_string(), now);
        Ok(())
    }

    /// Take `text` out: true when it was made here, was not answered before and is not older
    /// than [`CHALLENGE_LIFETIME`]. Any answer uses it up.
    fn take(&self, text: &str, now: Instant) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(text)
            .is_some_and(|made| now.duration_since(made) <= CHALLENGE_LIFETIME)
    }
}

/// The CA service.
pub struct CertificateAuthority {
    ca: SshCa,
    settings: PortalSshCaConfig,
    issuers: Vec<IssuerPolicy>,
    rules: Vec<TokenRules>,
    keys: FileKeySource,
    max_token_bytes: usize,
    portal: Arc<Portal>,
    /// The portal's public URL (for discovery).
    url: String,
    /// The OIDC issuer users log in with (for discovery).
    oidc_issuer: Option<String>,
    per_identity: Limiter,
    per_source: Limiter,
    /// The mapping sources parsed from the portal's export, kept while its serial stands.
    sources: Mutex<Option<(i64, Arc<Sources>)>>,
    /// What X.509 proofs are verified against.
    trust: TrustConfig,
    /// The site's restrictions per identity, carried into certificates.
    restrictions_file: std::path::PathBuf,
    /// X.509 challenges not answered yet.
    challenges: Challenges,
}

/// What a decision reads of the portal's current export: its grid-mapfile, token map and
/// suspension list (an unusable list refuses everyone, as on a node).
struct Sources {
    grid_mapfile: GridMapfile,
    token_map: TokenMapfile,
    suspensions: Result<SuspensionList, SuspensionError>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// Why a request is refused: the HTTP status, a code and the reason (logged and returned).
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    code: &'static str,
    reason: String,
}

impl Refused {
    fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            code,
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateRequest {
    public_key: String,
    #[serde(default)]
    principals: Vec<String>,
    /// The X.509 proof, for a request without a bearer token.
    #[serde(default)]
    x509: Option<X509Proof>,
}

/// A challenge signed with the key of an X.509 certificate or proxy.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct X509Proof {
    /// PEM: the certificate (or proxy) whose key signed, then the rest of its chain.
    certificates: String,
    /// The text `POST /ssh/v1/challenge` gave.
    challenge: String,
    /// Base64 of the SHA-256 signature of the text (`openssl dgst -sha256 -sign KEY`).
    signature: String,
}

impl std::fmt::Debug for X509Proof {
    // what a proof carries is never logged
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("X509Proof { .. }")
    }
}

impl CertificateAuthority {
    /// Load the CA keys of `[portal.ssh_ca]`: a key others can read, or one that does not
    /// load, refuses the start (nothing is ever signed with it).
    pub fn load_ca(settings: &PortalSshCaConfig) -> Result<SshCa, String> {
        let policy = settings.policy()?;
        SshCa::load(
            &settings.key_file,
            settings.next_key_file.as_deref(),
            policy,
        )
        .map_err(|e| format!("[portal.ssh_ca]: {e}"))
    }

    /// The CA service over a loaded CA; tokens are checked with the config's `[[issuer]]`
    /// tables.
    pub fn new(
        ca: SshCa,
        settings: &PortalSshCaConfig,
        config: &Config,
        portal: Arc<Portal>,
        url: &str,
        oidc_issuer: Option<String>,
    ) -> Result<Self, String> {
        if config.issuers.is_empty() {
            tracing::warn!(
                "[portal.ssh_ca]: no [[issuer]] is configured: every bearer token is refused"
            );
        }
        Ok(Self {
            ca,
            settings: settings.clone(),
            issuers: config.issuer_policies(),
            rules: hpccert_core::identity::mapping::TokenRules::of_config(config),
            keys: config.file_key_source(),
            max_token_bytes: config.tokens.max_token_bytes,
            portal,
            url: url.trim_end_matches('/').to_string(),
            oidc_issuer,
            per_identity: Limiter::default(),
            per_source: Limiter::default(),
            sources: Mutex::new(None),
            trust: config.trust.clone(),
            restrictions_file: config.mapping.restrictions_file.clone(),
            challenges: Challenges::default(),
        })
    }

    pub fn ca(&self) -> &SshCa {
        &self.ca
    }

    /// The discovery document (`/.well-known/hpccert`).
    pub fn discovery(&self) -> Value {
        let keys: Vec<String> = self
            .ca
            .public_keys()
            .into_iter()
            .filter_map(|k| k.to_openssh().ok())
            .collect();
        json!({
            "hpccert": 1,
            "site": self.settings.site_name.clone().unwrap_or_else(|| self.url.clone()),
            "portal": self.url,
            "certificate_endpoint": format!("{}/ssh/v1/certificate", self.url),
            "challenge_endpoint": format!("{}/ssh/v1/challenge", self.url),
            "link_url": format!("{}/", self.url),
            "oidc": {
                "issuer": self.oidc_issuer,
                "client_id": self.settings.client_id,
                "scopes": self.settings.scopes,
                "audience": self.settings.audience,
            },
            "ssh_ca_keys": keys,
            "login_hosts": self.settings.login_hosts,
            "max_validity": self.settings.max_validity,
            "key_types": self.settings.key_types,
        })
    }

    /// Verify, map, sign, record: the whole decision for one token request.
    async fn issue_for_token(
        &self,
        token: &str,
        request: &CertificateRequest,
        source: IpAddr,
        now: SystemTime,
    ) -> Result<Value, Refused> {
        let verified = verify_token(token, &self.issuers, &self.keys, self.max_token_bytes, now)
            .map_err(|e| Refused::new(StatusCode::UNAUTHORIZED, "invalid_token", e.to_string()))?;
        let identity = IdentityKey::token(verified.issuer(), verified.subject())
            .map_err(|e| Refused::new(StatusCode::UNAUTHORIZED, "invalid_token", e.to_string()))?;
        self.admit_identity(&identity)?;
        let public_key = self.user_key(&request.public_key)?;
        let decisions = self.decide(&verified, &request.principals).await?;
        let principals: Vec<String> = decisions.iter().map(|d| d.account().to_string()).collect();
        let subject_name = decisions
            .first()
            .map_or_else(|| identity.to_string(), |d| d.identity().to_string());
        self.issue_answer(
            Signing {
                identity: &identity,
                subject_name: &subject_name,
                public_key: &public_key,
                principals: &principals,
                credential_expires: unix_time(verified.expires_at()),
                source,
                proof: CertificateProof::Token,
                now,
            },
            "invalid_token",
            json!({"identity": decisions.first().map(|d| d.identity().to_string())}),
        )
        .await
    }

    /// Sign and record for an API request: the answer's JSON (with `extra`'s members), or the
    /// refusal (`refused_as`: the error code of a credential that ends too soon).
    async fn issue_answer(
        &self,
        signing: Signing<'_>,
        refused_as: &'static str,
        extra: Value,
    ) -> Result<Value, Refused> {
        let principals = signing.principals.to_vec();
        let (issued, text, serial, key_id) =
            self.sign_and_record(signing).await.map_err(|e| match e {
                SignError::CredentialExpired(m) => {
                    Refused::new(StatusCode::UNAUTHORIZED, refused_as, m)
                }
                SignError::Unavailable(m) => {
                    Refused::new(StatusCode::SERVICE_UNAVAILABLE, "ca_unavailable", m)
                }
                SignError::Restricted(m) => Refused::new(StatusCode::FORBIDDEN, "not_allowed", m),
            })?;
        let mut answer = json!({
            "certificate": text,
            "serial": serial,
            "principals": principals,
            "key_id": key_id,
            "valid_after": issued.valid_after,
            "valid_before": issued.valid_before,
        });
        if let (Some(a), Value::Object(more)) = (answer.as_object_mut(), extra) {
            a.extend(more);
        }
        Ok(answer)
    }

    /// Count a request of `identity`; refused past `per_identity_per_hour`.
    fn admit_identity(&self, identity: &IdentityKey) -> Result<(), Refused> {
        if self.per_identity.admit(
            &identity.to_string(),
            self.settings.per_identity_per_hour,
            Instant::now(),
        ) {
            return Ok(());
        }
        Err(Refused::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "more than {} certificate requests for {identity} in an hour",
                self.settings.per_identity_per_hour
            ),
        ))
    }

    /// The user's public key, if the CA's policy takes its type.
    fn user_key(&self, text: &str) -> Result<sshca::PublicKey, Refused> {
        let public_key = sshca::parse_user_key(text)
            .map_err(|e| Refused::new(StatusCode::BAD_REQUEST, "bad_key", e.to_string()))?;
        sshca::check_user_key(&public_key, &self.ca.policy().key_types)
            .map_err(|e| Refused::new(StatusCode::BAD_REQUEST, "bad_key", e.to_string()))?;
        Ok(public_key)
    }

    /// The engine's decision for each requested principal (or the one it picks), over the
    /// portal's current export.
    async fn decide(
        &self,
        verified: &VerifiedToken,
        requested: &[String],
    ) -> Result<Vec<Decision>, Refused> {
        let sources = self
            .sources()
            .await
            .map_err(|e| Refused::new(StatusCode::SERVICE_UNAVAILABLE, "ca_unavailable", e))?;
        let (token_map, suspensions) = (&sources.token_map, &sources.suspensions);
        let empty = GridMapfile::default();
        let mapper = Mapper::new(&empty)
            .with_suspensions(suspensions)
            .with_tokens(Some(token_map), &self.rules);
        decide_each(requested, |p| mapper.decide_token(verified, p))
    }
}

impl CertificateAuthority {
    /// A one-time challenge for an X.509 proof: its text names this CA and a random nonce.
    fn challenge(&self, now: Instant) -> Result<(String, u64), Refused> {
        let mut nonce = [0u8; 24];
        openssl::rand::rand_bytes(&mut nonce).map_err(|e| {
            Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ca_unavailable",
                format!("random challenge: {e}"),
            )
        })?;
        let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let text = format!("hpccert-ssh-ca {} challenge {nonce}", self.url);
        self.challenges
            .make(&text, now)
            .map_err(|e| Refused::new(StatusCode::SERVICE_UNAVAILABLE, "ca_unavailable", e))?;
        let expires = hpccert_core::clock::now() + CHALLENGE_LIFETIME;
        Ok((text, u64::try_from(unix_seconds(expires)).unwrap_or(0)))
    }

    /// Verify, map, sign, record for an X.509 proof (a certificate or an RFC 3820 proxy
    /// that signed a challenge of this CA).
    async fn issue_for_x509(
        &self,
        proof: &X509Proof,
        request: &CertificateRequest,
        source: IpAddr,
        now: SystemTime,
    ) -> Result<Value, Refused> {
        let invalid =
            |reason: String| Refused::new(StatusCode::UNAUTHORIZED, "invalid_proof", reason);
        if !self.challenges.take(&proof.challenge, Instant::now()) {
            return Err(invalid(
                "the challenge was not made here, was answered already or is older than 5 minutes: ask POST /ssh/v1/challenge for a new one".into(),
            ));
        }
        let verified = crate::possession::verify(
            &self.trust,
            &proof.challenge,
            &proof.certificates,
            &proof.signature,
            now,
        )
        .map_err(|e| match e {
            crate::possession::PossessionError::Trust(m) => Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ca_unavailable",
                format!("the trust store cannot be loaded: {m}"),
            ),
            other => invalid(other.to_string()),
        })?;
        let dn = verified.identity().to_slash();
        let identity = IdentityKey::dn(&dn).map_err(|e| invalid(e.to_string()))?;
        self.admit_identity(&identity)?;
        let public_key = self.user_key(&request.public_key)?;
        let sources = self
            .sources()
            .await
            .map_err(|e| Refused::new(StatusCode::SERVICE_UNAVAILABLE, "ca_unavailable", e))?;
        let mapper = Mapper::new(&sources.grid_mapfile).with_suspensions(&sources.suspensions);
        let decisions = decide_each(&request.principals, |p| mapper.decide(&verified, p))?;
        let principals: Vec<String> = decisions.iter().map(|d| d.account().to_string()).collect();
        self.issue_answer(
            Signing {
                identity: &identity,
                subject_name: &dn,
                public_key: &public_key,
                principals: &principals,
                credential_expires: unix_time(verified.not_after()),
                source,
                proof: CertificateProof::X509,
                now,
            },
            "invalid_proof",
            json!({"identity": dn, "proxy_depth": verified.proxy_depth()}),
        )
        .await
    }
}

/// Unix seconds as a time (`None` before 1970).
fn unix_time(seconds: i64) -> Option<SystemTime> {
    u64::try_from(seconds)
        .ok()
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
}

/// The engine's decision for each requested principal (or the one it picks when none is).
fn decide_each(
    requested: &[String],
    decide: impl Fn(Option<&str>) -> Result<Decision, hpccert_core::identity::mapping::Refusal>,
) -> Result<Vec<Decision>, Refused> {
    let refused = |e: hpccert_core::identity::mapping::Refusal| {
        Refused::new(StatusCode::FORBIDDEN, "not_allowed", e.to_string())
    };
    if requested.is_empty() {
        return Ok(vec![decide(None).map_err(refused)?]);
    }
    if requested.len() > 32 {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "at most 32 principals",
        ));
    }
    requested
        .iter()
        .map(|p| decide(Some(p)).map_err(refused))
        .collect()
}

/// What a certificate issued to a browser session carries back to the page.
#[derive(Debug)]
pub struct SessionCertificate {
    /// The certificate in OpenSSH's one-line form (`*-cert.pub`).
    pub certificate: String,
    pub serial: u64,
    pub principals: Vec<String>,
    pub valid_before: u64,
}

impl CertificateAuthority {
    /// A certificate for the portal's own logged-in user (the session is the proof): the
    /// accounts the portal's current token map gives their token identity, without the
    /// suspended ones (a suspended identity gets nothing); `requested` narrows them. Pool
    /// accounts are left out (they are leased at a node's login, not here). Recorded and
    /// audited as the token requests are; the reason of a refusal is for the page.
    pub async fn issue_for_session(
        &self,
        issuer: &str,
        subject: &str,
        public_key: &str,
        requested: &[String],
        source: IpAddr,
        now: SystemTime,
    ) -> Result<SessionCertificate, String> {
        let identity = IdentityKey::token(issuer, subject).map_err(|e| e.to_string())?;
        if !self.per_identity.admit(
            &identity.to_string(),
            self.settings.per_identity_per_hour,
            Instant::now(),
        ) {
            return Err(format!(
                "more than {} certificate requests for your identity in an hour: try later",
                self.settings.per_identity_per_hour
            ));
        }
        let key = sshca::parse_user_key(public_key).map_err(|e| e.to_string())?;
        sshca::check_user_key(&key, &self.ca.policy().key_types).map_err(|e| e.to_string())?;
        let sources = self.sources().await?;
        let token_map = &sources.token_map;
        let suspensions = sources.suspensions.as_ref().map_err(|e| {
            format!("the portal cannot tell who is suspended, so nothing is issued: {e}")
        })?;
        let token_identity = hpccert_core::identity::Identity::Token {
            issuer: issuer.to_string(),
            subject: subject.to_string(),
        };
        if let Some(entry) = suspensions.identity(&token_identity) {
            return Err(format!(
                "your identity is suspended ({})",
                suspensions.locate(entry)
            ));
        }
        let rule = token_map.lookup(issuer, subject).ok_or_else(|| {
            "no account is linked to your identity yet: link one on the start page".to_string()
        })?;
        let allowed: Vec<String> = rule
            .accounts
            .iter()
            .filter_map(|a| match a {
                hpccert_core::identity::gridmap::MappedAccount::Local(name) => Some(name),
                hpccert_core::identity::gridmap::MappedAccount::Pool(_) => None,
            })
            .filter(|a| suspensions.account(a).is_none())
            .map(ToString::to_string)
            .collect();
        let principals: Vec<String> = if requested.is_empty() {
            allowed.clone()
        } else if let Some(bad) = requested.iter().find(|r| !allowed.contains(r)) {
            return Err(format!(
                "account {bad} is not one of yours (allowed: {})",
                allowed.join(", ")
            ));
        } else {
            requested.to_vec()
        };
        if principals.is_empty() {
            return Err("none of your linked accounts may be used (suspended)".into());
        }
        let subject_name = format!("{identity} (portal session)");
        let (issued, certificate, serial, _) = self
            .sign_and_record(Signing {
                identity: &identity,
                subject_name: &subject_name,
                public_key: &key,
                principals: &principals,
                credential_expires: None,
                source,
                proof: CertificateProof::PortalSession,
                now,
            })
            .await
            .map_err(|e| match e {
                SignError::CredentialExpired(m)
                | SignError::Unavailable(m)
                | SignError::Restricted(m) => m,
            })?;
        Ok(SessionCertificate {
            certificate,
            serial,
            principals,
            valid_before: issued.valid_before,
        })
    }
}

impl CertificateAuthority {
    /// The current export's token map and suspension list, parsed once per export serial
    /// (the portal's published serial moves with every change).
    async fn sources(&self) -> Result<Arc<Sources>, String> {
        let serial = self.portal.current().serial;
        {
            let cached = self
                .sources
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((s, sources)) = cached.as_ref()
                && *s == serial
            {
                return Ok(Arc::clone(sources));
            }
        }
        let bundle = self
            .portal
            .store()
            .export()
            .await
            .map_err(|e| e.to_string())?;
        let token_map = TokenMapfile::parse(&bundle.files.token_mapfile).map_err(|e| {
            format!(
                "the portal's token map does not parse: {}",
                e.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
        let suspensions =
            SuspensionList::parse(&bundle.files.suspended).map_err(SuspensionError::Syntax);
        let grid_mapfile = GridMapfile::parse(&bundle.files.grid_mapfile).map_err(|e| {
            format!(
                "the portal's grid-mapfile does not parse: {}",
                e.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
        let sources = Arc::new(Sources {
            grid_mapfile,
            token_map,
            suspensions,
        });
        *self
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((bundle.serial, Arc::clone(&sources)));
        Ok(sources)
    }
}

/// One certificate to sign and record, whatever the proof.
struct Signing<'a> {
    identity: &'a IdentityKey,
    /// The identity as the key id names it.
    subject_name: &'a str,
    public_key: &'a sshca::PublicKey,
    principals: &'a [String],
    credential_expires: Option<SystemTime>,
    source: IpAddr,
    proof: CertificateProof,
    now: SystemTime,
}

/// Why signing and recording failed.
enum SignError {
    /// The credential ends before a certificate could start.
    CredentialExpired(String),
    /// The site's restrictions for the identity cannot be put into one certificate.
    Restricted(String),
    /// The CA or the database cannot do it now.
    Unavailable(String),
}

impl CertificateAuthority {
    /// What `[mapping] restrictions_file` holds a certificate of `identity` for `principals`
    /// to, as the nodes would at a login: a `from=` becomes `source-address`, a `command=`
    /// `force-command`, `no-pty` and `no-forwarding` leave those permissions out. Rules that
    /// one certificate cannot carry (different source lists or commands for the requested
    /// accounts) refuse: ask for one account at a time. An unusable file refuses.
    fn restrictions(
        &self,
        identity: &IdentityKey,
        principals: &[String],
    ) -> Result<hpccert_core::identity::restriction::Applied, SignError> {
        use hpccert_core::identity::Identity;
        use hpccert_core::identity::restriction::{Applied, Restrictions};
        let list = Restrictions::load(&self.restrictions_file).map_err(|e| {
            SignError::Unavailable(format!(
                "the restrictions cannot be read, so nothing is issued: {e}"
            ))
        })?;
        let who = match identity.kind() {
            crate::model::IdentityKind::Token => Identity::Token {
                issuer: identity.issuer().to_string(),
                subject: identity.subject().to_string(),
            },
            crate::model::IdentityKind::Dn => Identity::Certificate(
                hpccert_core::identity::dn::DistinguishedName::parse(identity.subject())
                    .map_err(|e| SignError::Unavailable(format!("{identity}: {e}")))?,
            ),
        };
        let mut merged: Option<Applied> = None;
        for p in principals {
            let account = hpccert_core::identity::gridmap::AccountName::parse(p)
                .map_err(|e| SignError::Restricted(format!("{p}: {e}")))?;
            let applied = list
                .applied(&who, &account)
                .map_err(SignError::Restricted)?;
            match &merged {
                None => merged = Some(applied),
                Some(m)
                    if m.from
                        .iter()
                        .map(|f| &f.1)
                        .eq(applied.from.iter().map(|f| &f.1))
                        && m.command == applied.command
                        && m.no_pty == applied.no_pty
                        && m.no_forwarding == applied.no_forwarding => {}
                Some(_) => {
                    return Err(SignError::Restricted(format!(
                        "the site restricts the accounts {} differently: ask for one account at a time",
                        principals.join(", ")
                    )));
                }
            }
        }
        let merged = merged.unwrap_or_default();
        if merged.from.len() > 1 {
            return Err(SignError::Restricted(format!(
                "{identity} is restricted to several source lists ({}): one certificate carries one source-address",
                merged.rules.join(", ")
            )));
        }
        Ok(merged)
    }

    /// Sign with a fresh serial, record it (before it is handed out: a certificate the
    /// database does not know could never be revoked), count and audit it. Returns the
    /// certificate, its OpenSSH text, its serial and its key id.
    async fn sign_and_record(
        &self,
        s: Signing<'_>,
    ) -> Result<(sshca::Issued, String, u64, String), SignError> {
        let unavailable = |e: String| SignError::Unavailable(e);
        let restricted = self.restrictions(s.identity, s.principals)?;
        let serial = fresh_serial().map_err(unavailable)?;
        let key_id = format!("{} serial {serial} via {}", s.subject_name, self.url);
        let issued = self
            .ca
            .issue(
                &CertRequest {
                    public_key: s.public_key,
                    principals: s.principals.to_vec(),
                    key_id: key_id.clone(),
                    serial,
                    credential_expires: s.credential_expires,
                    source_address: restricted.from.first().map(|(_, nets)| {
                        nets.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    }),
                    force_command: restricted.command.clone(),
                    no_pty: restricted.no_pty,
                    no_forwarding: restricted.no_forwarding,
                },
                s.now,
            )
            .map_err(|e| match e {
                sshca::SshCaError::CredentialExpired => SignError::CredentialExpired(e.to_string()),
                _ => SignError::Unavailable(e.to_string()),
            })?;
        let text = issued.openssh().map_err(|e| unavailable(e.to_string()))?;
        let record = IssuedCertificate {
            serial,
            identity: s.identity.clone(),
            accounts: s.principals.to_vec(),
            key_fingerprint: sshca::fingerprint(s.public_key),
            ca_fingerprint: sshca::fingerprint(self.ca.public_key()),
            key_id: key_id.clone(),
            valid_after: i64::try_from(issued.valid_after).unwrap_or(i64::MAX),
            valid_before: i64::try_from(issued.valid_before).unwrap_or(i64::MAX),
            source_addr: Some(s.source.to_string()),
            proof: s.proof,
            issued_at: unix_seconds(s.now),
            revoked_at: None,
            revoked_reason: None,
        };
        self.portal
            .store()
            .record_certificate(&record)
            .await
            .map_err(|e| unavailable(format!("the certificate could not be recorded: {e}")))?;
        crate::metrics_issued();
        tracing::info!(
            target: "audit",
            identity = %s.identity,
            accounts = %s.principals.join(","),
            serial,
            key = %record.key_fingerprint,
            valid_before = issued.valid_before,
            from = %s.source,
            proof = s.proof.as_str(),
            "SSH certificate issued"
        );
        Ok((issued, text, serial, key_id))
    }
}

/// A fresh random 64-bit serial (never 0).
fn fresh_serial() -> Result<u64, String> {
    loop {
        let mut b = [0u8; 8];
        openssl::rand::rand_bytes(&mut b).map_err(|e| format!("random serial: {e}"))?;
        let s = u64::from_be_bytes(b);
        if s != 0 {
            return Ok(s);
        }
    }
}

/// The CA's routes.
pub fn router(ca: Arc<CertificateAuthority>) -> Router {
    Router::new()
        .route("/ssh/v1/certificate", post(certificate))
        .route("/ssh/v1/challenge", post(challenge))
        .route("/.well-known/hpccert", get(discovery))
        .with_state(ca)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        format!("{body}\n"),
    )
        .into_response()
}

async fn discovery(State(ca): State<Arc<CertificateAuthority>>) -> Response {
    json_response(StatusCode::OK, &ca.discovery())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn certificate(
    State(ca): State<Arc<CertificateAuthority>>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let source = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip().to_canonical());
    let now = hpccert_core::clock::now();
    let result = async {
        if !ca.per_source.admit(
            &source.to_string(),
            ca.settings.per_source_per_hour,
            Instant::now(),
        ) {
            return Err(Refused::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "more than {} certificate requests from {source} in an hour",
                    ca.settings.per_source_per_hour
                ),
            ));
        }
        if body.len() > MAX_REQUEST_BYTES {
            return Err(Refused::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "bad_request",
                "the request is too large",
            ));
        }
        let request: CertificateRequest = serde_json::from_slice(&body).map_err(|e| {
            Refused::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the request is not the JSON this endpoint reads: {e}"),
            )
        })?;
        match (bearer(&headers), &request.x509) {
            (Some(token), None) => ca.issue_for_token(token, &request, source, now).await,
            (None, Some(proof)) => ca.issue_for_x509(proof, &request, source, now).await,
            (Some(_), Some(_)) => Err(Refused::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "two credentials: send a bearer token or an x509 proof, not both",
            )),
            (None, None) => Err(Refused::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "no credential: send Authorization: Bearer ACCESS_TOKEN (or an x509 proof)",
            )),
        }
    }
    .await;
    refusal_response(&ca, source, now, result).await
}

/// `POST /ssh/v1/challenge`: a one-time challenge for an X.509 proof (counted against the
/// source's rate limit, as certificate requests are).
async fn challenge(
    State(ca): State<Arc<CertificateAuthority>>,
    extensions: axum::http::Extensions,
) -> Response {
    let source = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip().to_canonical());
    let now = hpccert_core::clock::now();
    let result = if ca.per_source.admit(
        &source.to_string(),
        ca.settings.per_source_per_hour,
        Instant::now(),
    ) {
        ca.challenge(Instant::now())
            .map(|(text, expires)| json!({"challenge": text, "expires": expires}))
    } else {
        Err(Refused::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "more than {} certificate requests from {source} in an hour",
                ca.settings.per_source_per_hour
            ),
        ))
    };
    refusal_response(&ca, source, now, result).await
}

/// The response to a CA request: the body, or the refusal (logged, counted, audited).
async fn refusal_response(
    ca: &CertificateAuthority,
    source: IpAddr,
    now: SystemTime,
    result: Result<Value, Refused>,
) -> Response {
    match result {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(r) => {
            crate::metrics_refused(r.code);
            tracing::warn!(target: "audit", from = %source, code = r.code, "SSH certificate refused: {}", r.reason);
            if let Err(e) = ca
                .portal
                .store()
                .audit_event(
                    unix_seconds(now),
                    "ssh-ca",
                    "refuse-ssh-certificate",
                    r.code,
                    Some(&source.to_string()),
                    &r.reason,
                )
                .await
            {
                tracing::error!("the refusal could not be audited: {e}");
            }
            let mut response =
                json_response(r.status, &json!({"error": r.code, "reason": r.reason}));
            if r.status == StatusCode::UNAUTHORIZED && r.code == "invalid_token" {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn the_limiter_counts_per_key_within_the_window() {
        let l = Limiter::default();
        let t0 = Instant::now();
        assert!(l.admit("a", 2, t0) && l.admit("a", 2, t0));
        assert!(!l.admit("a", 2, t0));
        assert!(l.admit("b", 2, t0));
        // after the window, "a" may again
        assert!(l.admit("a", 2, t0 + WINDOW));
    }

    #[test]
    fn a_challenge_is_good_for_one_answer_within_its_lifetime() {
        let c = Challenges::default();
        let t0 = Instant::now();
        c.make("one", t0).unwrap();
        c.make("old", t0).unwrap();
        assert!(!c.take("never made", t0), "made elsewhere");
        assert!(
            c.take("one", t0 + CHALLENGE_LIFETIME),
            "within its lifetime"
        );
        assert!(!c.take("one", t0), "answered already");
        assert!(
            !c.take("old", t0 + CHALLENGE_LIFETIME + Duration::from_secs(1)),
            "too old"
        );
        assert!(!c.take("old", t0), "an old one is used up too");
    }

    #[test]
    fn waiting_challenges_are_bounded_and_expired_ones_make_room() {
        let c = Challenges::default();
        let t0 = Instant::now();
        for i in 0..MAX_CHALLENGES {
            c.make(&i.to_string(), t0).unwrap();
        }
        assert!(c.make("one more", t0).is_err(), "full");
        // once they have expired, they are forgotten for new ones
        let later = t0 + CHALLENGE_LIFETIME + Duration::from_secs(1);
        c.make("one more", later).unwrap();
        assert!(c.take("one more", later));
    }
}
