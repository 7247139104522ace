//! The development identity provider of `mapping-portal --dev`: a small OpenID provider inside
//! the portal, so that the portal (and the whole loop: log in, link, sync, SSH in) can be tried
//! without bringing one. **For development only**: it is mounted only by `--dev`, which serves
//! on a loopback address only; no configuration file can enable it; every page says so.
//!
//! What it does, as CILogon does for the real portal:
//! - a fixed set of dev researchers ([`RESEARCHERS`]) with CILogon-like claims (`sub` as
//!   CILogon writes it, `eppn`, `idp`, `idp_name`, `cert_subject_dn`); one of them is the
//!   portal's admin;
//! - discovery (`/dev-idp/.well-known/openid-configuration`) and the JWKS (`/dev-idp/jwks`);
//! - the authorization code flow with PKCE S256 only (`/dev-idp/authorize`: "log in" is
//!   picking a researcher on a page; `/dev-idp/token`), for the registered client and redirect
//!   URIs only, codes single-use and short-lived;
//! - RS256-signed ID tokens (issuer, audience = the client, nonce, expiry) and WLCG access
//!   tokens for [`DEV_AUDIENCE`] (the audience of `sshd-gsi --dev`), which sshd-gsi accepts
//!   with this provider's JWKS;
//! - `/dev-idp/access-token/LOGIN`: a fresh access token of a researcher as text, what a
//!   gateway or `htgettoken` would hold (the demo logs in to SSH with it);
//! - a dev CA that issued each researcher a certificate for their `cert_subject_dn` (as
//!   CILogon's retired CA did), in the state directory with the CA in IGTF layout.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine;
use hpccert_core::dev::pki::{self, CertSpec};
use hpccert_core::dev::token::{self as devtoken, DevKey};
use hpccert_core::token::{JwsAlgorithm, unix_seconds};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::session::random_text;

/// Where the provider lives under the portal's URL.
pub const PATH: &str = "/dev-idp";
/// The portal's client at this provider (public: PKCE, no secret).
pub const CLIENT_ID: &str = "hpccert-dev-portal";
/// The audience of the access tokens: the one `sshd-gsi --dev` and the demo accept.
pub const DEV_AUDIENCE: &str = "https://login.hpccert-dev.example";
/// The signing key's id.
const KID: &str = "dev-idp-rs256-1";
/// How long a code may wait for its exchange.
const CODE_TTL: Duration = Duration::from_secs(60);
/// How long ID and access tokens are valid.
const TOKEN_TTL_SECS: i64 = 3600;
/// The DN prefix of the dev researchers' certificates and of the dev CA.
const DN_BASE: &str = "/DC=org/DC=hpccert-dev/C=US/O=Dev University";
/// What the access tokens allow (WLCG scopes, as a gateway's token would carry).
const ACCESS_SCOPES: &str =
    "openid compute.create compute.read compute.cancel storage.read:/ storage.modify:/";

/// A dev researcher.
#[derive(Debug, Clone, Copy)]
pub struct Researcher {
    /// The name picked on the login page and used in `/dev-idp/access-token/LOGIN`.
    pub login: &'static str,
    pub name: &'static str,
    /// As CILogon writes subjects.
    pub subject: &'static str,
    /// Whether the dev portal makes them an admin.
    pub admin: bool,
}

impl Researcher {
    pub fn eppn(&self) -> String {
        format!("{}@dev-university.example", self.login)
    }

    /// The DN of their (dev) certificate, also the ID token's `cert_subject_dn`.
    pub fn cert_dn(&self) -> String {
        let number = self.subject.rsplit('/').next().unwrap_or("0");
        format!("{DN_BASE}/CN={} A{number}", self.name)
    }
}

/// The dev researchers.
pub const RESEARCHERS: [Researcher; 3] = [
    Researcher {
        login: "ada",
        name: "Ada Lovelace",
        subject: "http://cilogon.org/serverD/users/1001",
        admin: false,
    },
    Researcher {
        login: "grace",
        name: "Grace Hopper",
        subject: "http://cilogon.org/serverD/users/1002",
        admin: false,
    },
    Researcher {
        login: "admin",
        name: "Dev Admin",
        subject: "http://cilogon.org/serverD/users/1000",
        admin: true,
    },
];

fn researcher(login: &str) -> Option<&'static Researcher> {
    RESEARCHERS.iter().find(|r| r.login == login)
}

/// A code given out and not yet exchanged.
#[derive(Debug)]
struct Grant {
    login: &'static str,
    redirect_uri: String,
    nonce: Option<String>,
    challenge: String,
    at: Instant,
}

/// The provider.
pub struct DevIdp {
    issuer: String,
    redirect_uris: Vec<String>,
    key: DevKey,
    files: DevIdpFiles,
    codes: Mutex<HashMap<String, Grant>>,
}

impl std::fmt::Debug for DevIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIdp")
            .field("issuer", &self.issuer)
            .field("redirect_uris", &self.redirect_uris)
            .finish_non_exhaustive()
    }
}

/// The files the provider keeps in its directory.
#[derive(Debug, Clone)]
pub struct DevIdpFiles {
    /// Its JWKS, for sshd-gsi's `[[issuer]] jwks_file` (the keys offline).
    pub jwks: PathBuf,
    /// The dev CA in IGTF layout, for `[trust] ca_dir`.
    pub ca_dir: PathBuf,
    /// `LOGIN.pem` and `LOGIN.key` of each researcher.
    pub certificates: PathBuf,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    std::fs::write(path, data).map_err(io(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))
}

impl DevIdp {
    /// The provider at `portal_url` + [`PATH`], its key and dev CA kept in `dir` (made once,
    /// reused at the next start with the same directory).
    pub fn open(portal_url: &str, dir: &Path, now: std::time::SystemTime) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        let key_file = dir.join("signing.key");
        let key = if key_file.exists() {
            let pem = std::fs::read(&key_file).map_err(io(&key_file))?;
            DevKey::from_pem(KID, JwsAlgorithm::RS256, &pem)
                .map_err(|e| format!("{}: {e}", key_file.display()))?
        } else {
            let k = DevKey::generate(KID, JwsAlgorithm::RS256).map_err(|e| e.to_string())?;
            write_private(&key_file, &k.private_pem().map_err(|e| e.to_string())?)?;
            k
        };
        let files = DevIdpFiles {
            jwks: dir.join("jwks.json"),
            ca_dir: dir.join("certificates"),
            certificates: dir.join("researchers"),
        };
        let jwks = devtoken::jwks(&[&key]).map_err(|e| e.to_string())?;
        std::fs::write(&files.jwks, jwks.to_string()).map_err(io(&files.jwks))?;
        if !files.ca_dir.exists() {
            make_certificates(&files, now)?;
        }
        let base = portal_url.trim_end_matches('/');
        Ok(Self {
            issuer: format!("{base}{PATH}"),
            redirect_uris: vec![format!("{base}/login/callback")],
            key,
            files,
            codes: Mutex::new(HashMap::new()),
        })
    }

    /// The issuer URL (the portal's `[portal.oidc] issuer` in --dev).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn files(&self) -> &DevIdpFiles {
        &self.files
    }

    /// A fresh access token of a researcher (WLCG profile, for [`DEV_AUDIENCE`]).
    pub fn access_token(&self, who: &Researcher, now: i64) -> Result<String, String> {
        let claims = json!({
            "iss": self.issuer, "sub": who.subject, "aud": DEV_AUDIENCE,
            "iat": now, "nbf": now, "exp": now + TOKEN_TTL_SECS,
            "jti": random_text(12), "wlcg.ver": "1.0", "scope": ACCESS_SCOPES,
            "client_id": CLIENT_ID,
            "eppn": who.eppn(), "cert_subject_dn": who.cert_dn(),
        });
        self.key.mint(&claims).map_err(|e| e.to_string())
    }

    fn id_token(&self, who: &Researcher, nonce: Option<&str>, now: i64) -> Result<String, String> {
        let mut claims = json!({
            "iss": self.issuer, "sub": who.subject, "aud": CLIENT_ID,
            "iat": now, "exp": now + TOKEN_TTL_SECS, "auth_time": now,
            "name": who.name, "email": who.eppn(), "eppn": who.eppn(),
            "idp": "https://idp.dev-university.example/idp/shibboleth",
            "idp_name": "Dev University (hpccert dev identity provider)",
            "cert_subject_dn": who.cert_dn(),
        });
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        self.key
            .mint_raw(&json!({"alg": "RS256", "kid": KID, "typ": "JWT"}), &claims)
            .map_err(|e| e.to_string())
    }

    fn metadata(&self) -> Value {
        let i = &self.issuer;
        json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "jwks_uri": format!("{i}/jwks"),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["openid", "email", "profile", "org.cilogon.userinfo"],
            "claims_supported": ["sub", "iss", "name", "email", "eppn", "idp", "idp_name", "cert_subject_dn"],
        })
    }
}

/// The dev CA and a certificate for each researcher.
fn make_certificates(files: &DevIdpFiles, now: std::time::SystemTime) -> Result<(), String> {
    let rsa = pki::KeyKind::Rsa(2048);
    let ca = pki::self_signed_ca(&CertSpec {
        key: rsa,
        ..CertSpec::ca(
            "/DC=org/DC=hpccert-dev/CN=hpccert Dev Identity Provider CA",
            now,
            3650,
        )?
    })?;
    std::fs::create_dir_all(&files.certificates).map_err(io(&files.certificates))?;
    for who in &RESEARCHERS {
        let cred = pki::issue(
            &ca,
            &CertSpec {
                key: rsa,
                ..CertSpec::user(&who.cert_dn(), now, 365)?
            },
        )?;
        let pem = files.certificates.join(format!("{}.pem", who.login));
        std::fs::write(&pem, cred.cert_pem().map_err(|e| e.to_string())?).map_err(io(&pem))?;
        write_private(
            &files.certificates.join(format!("{}.key", who.login)),
            &cred.key_pem_traditional().map_err(|e| e.to_string())?,
        )?;
    }
    // last: its presence says the directory is complete
    pki::install_ca(
        &files.ca_dir,
        &ca.cert,
        None,
        Some(&format!("TO Issuer SELF PERMIT Subject \"{DN_BASE}/.*\"\n")),
    )
}

/// The provider's routes, under [`PATH`].
pub fn router(idp: Arc<DevIdp>) -> Router {
    Router::new()
        .route(
            &format!("{PATH}/.well-known/openid-configuration"),
            get(discovery),
        )
        .route(&format!("{PATH}/jwks"), get(jwks))
        .route(&format!("{PATH}/authorize"), get(authorize).post(pick))
        .route(&format!("{PATH}/token"), axum::routing::post(token))
        .route(&format!("{PATH}/access-token/{{login}}"), get(access_token))
        .with_state(idp)
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
        body.to_string(),
    )
        .into_response()
}

/// An OAuth error (RFC 6749 section 5.2), logged.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    tracing::warn!("dev identity provider: refused: {error}: {description}");
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn page(status: StatusCode, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · hpccert dev identity provider" }
                link rel="stylesheet" href="/static/portal.css";
            }
            body {
                p.devmode role="note" {
                    strong { "Development identity provider." }
                    " Part of mapping-portal --dev, on loopback only: anyone here can be anyone. "
                    "Never use it for a real site."
                }
                main #main { (body) }
            }
        }
    };
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'",
                ),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        markup.into_string(),
    )
        .into_response()
}

async fn discovery(State(idp): State<Arc<DevIdp>>) -> Response {
    json_response(StatusCode::OK, &idp.metadata())
}

async fn jwks(State(idp): State<Arc<DevIdp>>) -> Response {
    match devtoken::jwks(&[&idp.key]) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &e.to_string(),
        ),
    }
}

/// The authorization request's parameters (query of GET, hidden fields of the POST).
#[derive(Debug, Deserialize)]
struct AuthorizeParams {
    #[serde(default)]
    response_type: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    code_challenge: String,
    #[serde(default)]
    code_challenge_method: String,
    #[serde(default)]
    scope: String,
    /// The researcher picked (POST only).
    #[serde(default)]
    login: String,
}

impl AuthorizeParams {
    /// What is wrong with the request, if anything (shown on the page: the redirect URI is not
    /// trusted before it is checked).
    fn problem(&self, idp: &DevIdp) -> Option<String> {
        if self.client_id != CLIENT_ID {
            return Some(format!(
                "unknown client_id {:?} (the dev provider knows only {CLIENT_ID})",
                self.client_id
            ));
        }
        if !idp.redirect_uris.contains(&self.redirect_uri) {
            return Some(format!(
                "redirect_uri {:?} is not registered (registered: {})",
                self.redirect_uri,
                idp.redirect_uris.join(", ")
            ));
        }
        if self.response_type != "code" {
            return Some(format!(
                "response_type {:?}: only the code flow (\"code\")",
                self.response_type
            ));
        }
        if self.code_challenge_method != "S256" || self.code_challenge.len() < 43 {
            return Some(
                "PKCE with S256 is required (code_challenge, code_challenge_method=S256)".into(),
            );
        }
        if !self.scope.split(' ').any(|s| s == "openid") {
            return Some("the scope must include openid".into());
        }
        None
    }
}

async fn authorize(State(idp): State<Arc<DevIdp>>, Query(p): Query<AuthorizeParams>) -> Response {
    if let Some(problem) = p.problem(&idp) {
        tracing::warn!("dev identity provider: authorization request refused: {problem}");
        return page(
            StatusCode::BAD_REQUEST,
            "Request refused",
            html! { h1 { "Request refused" } p.error { (problem) } },
        );
    }
    let hidden = |name: &'static str, value: &str| {
        html! { input type="hidden" name=(name) value=(value); }
    };
    page(
        StatusCode::OK,
        "Log in",
        html! {
            h1 { "Log in as a dev researcher" }
            p {
                "A real site sends you to your institution here (CILogon). The dev provider "
                "asks no password: pick who you are."
            }
            ul.researchers {
                @for who in &RESEARCHERS {
                    li {
                        form method="post" action=(format!("{PATH}/authorize")) {
                            (hidden("response_type", &p.response_type))
                            (hidden("client_id", &p.client_id))
                            (hidden("redirect_uri", &p.redirect_uri))
                            (hidden("state", p.state.as_deref().unwrap_or("")))
                            (hidden("nonce", p.nonce.as_deref().unwrap_or("")))
                            (hidden("code_challenge", &p.code_challenge))
                            (hidden("code_challenge_method", &p.code_challenge_method))
                            (hidden("scope", &p.scope))
                            (hidden("login", who.login))
                            button type="submit" id=(format!("login-{}", who.login)) {
                                "Log in as " (who.name)
                            }
                            " " small {
                                code { (who.eppn()) }
                                @if who.admin { " (portal admin)" }
                                br; "certificate DN " code { (who.cert_dn()) }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A researcher was picked: a code for the client, back to its redirect URI.
async fn pick(State(idp): State<Arc<DevIdp>>, Form(p): Form<AuthorizeParams>) -> Response {
    if let Some(problem) = p.problem(&idp) {
        tracing::warn!("dev identity provider: authorization refused: {problem}");
        return page(
            StatusCode::BAD_REQUEST,
            "Request refused",
            html! { h1 { "Request refused" } p.error { (problem) } },
        );
    }
    let Some(who) = researcher(&p.login) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Request refused",
            html! { h1 { "Request refused" } p.error { "No such dev researcher." } },
        );
    };
    let code = random_text(24);
    if code.is_empty() {
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "no random code",
        );
    }
    let now = Instant::now();
    {
        let Ok(mut codes) = idp.codes.lock() else {
            return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "lock");
        };
        codes.retain(|_, g| now.duration_since(g.at) < CODE_TTL);
        codes.insert(
            code.clone(),
            Grant {
                login: who.login,
                redirect_uri: p.redirect_uri.clone(),
                nonce: p.nonce.clone().filter(|n| !n.is_empty()),
                challenge: p.code_challenge.clone(),
                at: now,
            },
        );
    }
    tracing::info!(login = who.login, "dev identity provider: logged in");
    let mut target = url_with_query(&p.redirect_uri, "code", &code);
    if let Some(state) = p.state.as_deref().filter(|s| !s.is_empty()) {
        target = url_with_query(&target, "state", state);
    }
    Redirect::to(&target).into_response()
}

fn url_with_query(url: &str, name: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    let encoded: String = value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("{url}{sep}{name}={encoded}")
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    code_verifier: String,
    #[serde(default)]
    client_id: Option<String>,
}

/// The client named by HTTP Basic authentication, if any.
fn basic_client(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, _) = text.split_once(':')?;
    Some(id.to_string())
}

async fn token(
    State(idp): State<Arc<DevIdp>>,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> Response {
    if f.grant_type != "authorization_code" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only authorization_code",
        );
    }
    let client = f.client_id.clone().or_else(|| basic_client(&headers));
    if client.as_deref() != Some(CLIENT_ID) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client");
    }
    let grant = match idp.codes.lock() {
        // single use: taken out whether or not the rest is right
        Ok(mut codes) => codes.remove(&f.code),
        Err(_) => return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "lock"),
    };
    let Some(grant) = grant.filter(|g| g.at.elapsed() < CODE_TTL) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown, used or expired code",
        );
    };
    if grant.redirect_uri != f.redirect_uri {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri differs from the authorization request's",
        );
    }
    let computed = devtoken::b64(&openssl::sha::sha256(f.code_verifier.as_bytes()));
    if f.code_verifier.len() < 43 || computed != grant.challenge {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "PKCE code_verifier does not match the code_challenge",
        );
    }
    let Some(who) = researcher(grant.login) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "no such researcher",
        );
    };
    let now = unix_seconds(hpccert_core::clock::now());
    let tokens = idp
        .id_token(who, grant.nonce.as_deref(), now)
        .and_then(|id| Ok((id, idp.access_token(who, now)?)));
    match tokens {
        Ok((id_token, access_token)) => json_response(
            StatusCode::OK,
            &json!({
                "access_token": access_token, "token_type": "Bearer",
                "expires_in": TOKEN_TTL_SECS, "id_token": id_token, "scope": ACCESS_SCOPES,
            }),
        ),
        Err(e) => oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &e),
    }
}

/// A fresh access token of a researcher, as text (what a gateway holds for its user).
async fn access_token(State(idp): State<Arc<DevIdp>>, UrlPath(login): UrlPath<String>) -> Response {
    let Some(who) = researcher(&login) else {
        return (StatusCode::NOT_FOUND, "no such dev researcher\n").into_response();
    };
    match idp.access_token(who, unix_seconds(hpccert_core::clock::now())) {
        Ok(t) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("text/plain")),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            format!("{t}\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            url_with_query("http://127.0.0.1:1/cb", "state", "a b&c=d"),
            "http://127.0.0.1:1/cb?state=a%20b%26c%3Dd"
        );
        assert_eq!(
            url_with_query("http://127.0.0.1:1/cb?code=x", "state", "s"),
            "http://127.0.0.1:1/cb?code=x&state=s"
        );
    }

    #[test]
    fn researchers_have_distinct_subjects_and_dns() {
        let mut subjects: Vec<_> = RESEARCHERS.iter().map(|r| r.subject).collect();
        subjects.dedup();
        assert_eq!(subjects.len(), RESEARCHERS.len());
        assert_eq!(
            RESEARCHERS[0].cert_dn(),
            "/DC=org/DC=hpccert-dev/C=US/O=Dev University/CN=Ada Lovelace A1001"
        );
        assert!(RESEARCHERS.iter().filter(|r| r.admin).count() == 1);
    }
}
