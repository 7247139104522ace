//! The portal's pages over real HTTP, with a scripted OpenID provider in the same process:
//! the login (state, nonce, PKCE), the link, the CSRF and session checks, the admin pages,
//! and the attacks the issue names, each refused without changing anything.
//!
//! The provider here is scripted so that it can misbehave (a wrong nonce); the browser test
//! in tests/tests/portal_browser.rs uses the real `oidc-provider` and Chromium.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use mapping_portal::model::Approval;
use mapping_portal::store::Store;
use mapping_portal::web::oidc::{Oidc, OidcSettings};
use mapping_portal::web::{App, Proof, WebSettings};
use mapping_portal::{ExportToken, Portal, PortalSettings};
use serde_json::{Value, json};

const CLIENT: &str = "portal-client";
const SECRET: &str = "portal-client-secret";
/// A local account every Debian machine has, with a uid above 1000.
const ACCOUNT: &str = "nobody";

/// What the scripted provider does differently.
#[derive(Debug, Clone, Default)]
struct Misbehave {
    wrong_nonce: bool,
    /// Sign ID tokens with this JWS algorithm: RS256 (default), RS512 (as Globus Auth does) or
    /// HS256 (with the client secret, which the portal must never accept).
    alg: Option<&'static str>,
    /// Put an at_hash into the ID token: of the access token, or of another one.
    at_hash: Option<bool>,
}

#[derive(Debug, Default)]
struct OpState {
    issuer: String,
    /// The next login's subject.
    subject: String,
    misbehave: Misbehave,
    /// code -> (nonce, challenge, method, subject, used)
    codes: HashMap<String, (String, String, String, String, bool)>,
    /// Query parameters of each authorization request.
    authorize_requests: Vec<HashMap<String, String>>,
    next: u64,
}

struct Op {
    state: Mutex<OpState>,
    key: openssl::pkey::PKey<openssl::pkey::Private>,
}

type SharedOp = Arc<Op>;

fn b64(data: &[u8]) -> String {
    B64.encode(data)
}

fn digest(alg: &str) -> openssl::hash::MessageDigest {
    if alg.ends_with("512") {
        openssl::hash::MessageDigest::sha512()
    } else {
        openssl::hash::MessageDigest::sha256()
    }
}

impl Op {
    fn sign(&self, alg: &str, claims: &Value) -> String {
        let header = json!({"alg": alg, "typ": "JWT", "kid": "k1"});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = if alg == "HS256" {
            let key = openssl::pkey::PKey::hmac(SECRET.as_bytes()).unwrap();
            let mut signer = openssl::sign::Signer::new(digest(alg), &key).unwrap();
            signer.update(input.as_bytes()).unwrap();
            signer.sign_to_vec().unwrap()
        } else {
            let mut signer = openssl::sign::Signer::new(digest(alg), &self.key).unwrap();
            signer.update(input.as_bytes()).unwrap();
            signer.sign_to_vec().unwrap()
        };
        format!("{input}.{}", b64(&signature))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpState> {
        self.state.lock().unwrap()
    }
}

async fn discovery(State(op): State<SharedOp>) -> Json<Value> {
    let iss = op.lock().issuer.clone();
    Json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "userinfo_endpoint": format!("{iss}/userinfo"),
        "jwks_uri": format!("{iss}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "RS512"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "email", "profile", "org.cilogon.userinfo"],
    }))
}

async fn jwks(State(op): State<SharedOp>) -> Json<Value> {
    let rsa = op.key.rsa().unwrap();
    Json(json!({"keys": [{
        // no "alg": the key serves RS256 and RS512 (Globus Auth publishes its keys so)
        "kty": "RSA", "kid": "k1", "use": "sig",
        "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec()),
    }]}))
}

/// Logs the user in at once and sends the browser back with a code.
async fn authorize(
    State(op): State<SharedOp>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = op.lock();
    st.authorize_requests.push(q.clone());
    st.next += 1;
    let code = format!("code-{}", st.next);
    let subject = st.subject.clone();
    st.codes.insert(
        code.clone(),
        (
            q.get("nonce").cloned().unwrap_or_default(),
            q.get("code_challenge").cloned().unwrap_or_default(),
            q.get("code_challenge_method").cloned().unwrap_or_default(),
            subject,
            false,
        ),
    );
    let redirect = format!(
        "{}?code={code}&state={}",
        q["redirect_uri"],
        q.get("state").cloned().unwrap_or_default()
    );
    Redirect::to(&redirect).into_response()
}

fn grant_error(what: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "invalid_grant", "error_description": what})),
    )
        .into_response()
}

async fn token(
    State(op): State<SharedOp>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT}:{SECRET}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(basic.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let mut st = op.lock();
    let issuer = st.issuer.clone();
    let Misbehave {
        wrong_nonce,
        alg,
        at_hash,
    } = st.misbehave.clone();
    let alg = alg.unwrap_or("RS256");
    let Some(entry) = st
        .codes
        .get_mut(f.get("code").map(String::as_str).unwrap_or(""))
    else {
        return grant_error("unknown code");
    };
    if entry.4 {
        return grant_error("code already used");
    }
    entry.4 = true;
    // PKCE S256, as RFC 7636 section 4.6 checks it
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    if entry.2 != "S256" || b64(&openssl::sha::sha256(verifier.as_bytes())) != entry.1 {
        return grant_error("PKCE verification failed");
    }
    let nonce = if wrong_nonce {
        "not-the-nonce".to_string()
    } else {
        entry.0.clone()
    };
    let subject = entry.3.clone();
    drop(st);
    let now = hpccert_core::clock::unix_seconds(hpccert_core::clock::now());
    let access_token = format!("at-{subject}");
    let mut claims = json!({
        "iss": issuer, "sub": subject, "aud": CLIENT, "iat": now, "exp": now + 300,
        "nonce": nonce, "email": format!("{subject}@example.org"), "name": format!("Test {subject}"),
        "idp": "https://idp.example.org", "idp_name": "Example University",
        "eppn": format!("{subject}@example.org"),
        "cert_subject_dn": format!("/DC=org/DC=cilogon/C=US/O=Example University/CN=Test {subject} A1"),
    });
    if let Some(right) = at_hash {
        let hashed = if right {
            access_token.clone()
        } else {
            "at-someone-else".into()
        };
        let hash = openssl::hash::hash(digest(alg), hashed.as_bytes()).unwrap();
        claims["at_hash"] = json!(b64(&hash[..hash.len() / 2]));
    }
    let id_token = op.sign(alg, &claims);
    Json(json!({
        "access_token": access_token, "token_type": "Bearer", "expires_in": 300,
        "id_token": id_token,
    }))
    .into_response()
}

async fn userinfo(headers: HeaderMap) -> Response {
    let Some(sub) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer at-"))
    else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    Json(json!({"sub": sub, "email": format!("{sub}@example.org")})).into_response()
}

async fn start_op() -> (SharedOp, String) {
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let op = Arc::new(Op {
        state: Mutex::new(OpState::default()),
        key,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    op.lock().issuer = issuer.clone();
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .route("/userinfo", get(userinfo))
        .with_state(Arc::clone(&op));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (op, issuer)
}

struct Setup {
    op: SharedOp,
    issuer: String,
    base: String,
    portal: Arc<Portal>,
    _db: tempfile::TempDir,
}

/// The portal with the scripted provider; accounts proved by the `REMOTE_USER` header (the
/// test is the trusted proxy). `admin` is the admin's subject.
async fn setup(approval: Approval) -> Setup {
    setup_with(approval, None).await
}

/// [`setup`], with `[portal] certificate_dns` on for this trust configuration.
async fn setup_with(
    approval: Approval,
    certificate_dns: Option<hpccert_core::config::TrustConfig>,
) -> Setup {
    let header = Proof::Header {
        name: axum::http::HeaderName::from_static("remote_user"),
    };
    setup_proved_by(approval, certificate_dns, header).await
}

/// [`setup_with`], accounts proved by `proof`.
async fn setup_proved_by(
    approval: Approval,
    certificate_dns: Option<hpccert_core::config::TrustConfig>,
    proof: Proof,
) -> Setup {
    let (op, issuer) = start_op().await;
    let db = tempfile::tempdir().unwrap();
    let store = Store::open(&common::sqlite_url(db.path()), common::at(0))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let portal = Portal::start(
        store,
        PortalSettings {
            ssh_ca_keys: Default::default(),
            url: base.clone(),
            export_tokens: vec![ExportToken::new(common::TOKEN).unwrap()],
            export_client_dns: vec![],
            export_dir: None,
        },
    )
    .await
    .unwrap();
    let oidc = Oidc::new(OidcSettings {
        issuer: issuer.clone(),
        client_id: CLIENT.into(),
        client_secret: Some(SECRET.into()),
        scopes: vec![
            "openid".into(),
            "email".into(),
            "profile".into(),
            "org.cilogon.userinfo".into(),
        ],
        redirect_uri: format!("{base}/login/callback"),
    })
    .unwrap();
    let app = App::new(
        Arc::clone(&portal),
        Some(oidc),
        WebSettings {
            url: base.clone(),
            trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
            approval,
            proof,
            min_uid: 1000,
            admins: vec![(issuer.clone(), "admin".into())],
            certificate_dns,
            dev: false,
        },
    );
    let router = mapping_portal::http::app_router(Arc::clone(&portal), Some(app));
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    Setup {
        op,
        issuer,
        base,
        portal,
        _db: db,
    }
}

/// A browser: one cookie, no automatic redirects.
struct Client {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
    headers: reqwest::header::HeaderMap,
}

impl Client {
    fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_string(),
            cookie: None,
        }
    }

    async fn send(&mut self, mut req: reqwest::RequestBuilder) -> Page {
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await.unwrap();
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap().to_string();
            self.cookie = if v.contains("Max-Age=0") {
                None
            } else {
                Some(pair)
            };
        }
        Page {
            status: resp.status(),
            location: resp
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string()),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        }
    }

    async fn get(&mut self, url: &str) -> Page {
        let url = if url.starts_with("http") {
            url.to_string()
        } else {
            format!("{}{url}", self.base)
        };
        let req = self.http.get(url);
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("origin", &self.base)
            .header("remote_user", ACCOUNT)
            .form(form);
        self.send(req).await
    }

    /// GET /login, through the provider, to the callback URL (not yet visited).
    async fn start_login(&mut self) -> String {
        let login = self.get("/login").await;
        assert_eq!(login.status, StatusCode::SEE_OTHER, "{}", login.body);
        let authorize = login.location.unwrap();
        // the provider answers with a redirect to the callback
        let resp = self.http.get(&authorize).send().await.unwrap();
        assert!(resp.status().is_redirection());
        resp.headers()["location"].to_str().unwrap().to_string()
    }

    async fn login(&mut self) -> Page {
        let callback = self.start_login().await;
        let page = self.get(&callback).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        assert_eq!(page.location.as_deref(), Some("/"));
        self.get("/").await
    }

    async fn csrf(&mut self) -> String {
        let home = self.get("/").await;
        let at = home
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a CSRF field")
            + 19;
        home.body[at..].split('"').next().unwrap().to_string()
    }
}

/// One file of the published export bundle.
fn export_file(portal: &Portal, name: &str) -> String {
    let bundle: Value = serde_json::from_slice(&portal.current().body).unwrap();
    bundle["files"][name].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_user_logs_in_links_sees_and_removes_the_link() {
    let s = setup(Approval::Immediate).await;
    s.op.lock().subject = "alice".into();
    let mut alice = Client::new(&s.base);
    let welcome = alice.get("/").await;
    assert!(welcome.body.contains("Log in with your institution"));
    // accounts are proved by the sign-on header here: no password is asked for
    assert!(welcome.body.contains("the site's sign-on names it"));
    let csp = welcome.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(welcome.headers["x-frame-options"], "DENY");

    // the authorization request: code flow, S256 PKCE, a state and a nonce
    let login = alice.get("/login").await;
    let cookie = login.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let pre_login_cookie = alice.cookie.clone();
    let resp = alice
        .http
        .get(login.location.unwrap())
        .send()
        .await
        .unwrap();
    let callback = resp.headers()["location"].to_str().unwrap().to_string();
    {
        let st = s.op.lock();
        let q = st.authorize_requests.last().unwrap();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"].len(), 43);
        assert!(q["state"].len() >= 16 && q["nonce"].len() >= 16);
        assert_eq!(q["redirect_uri"], format!("{}/login/callback", s.base));
        assert!(
            q["scope"].contains("org.cilogon.userinfo"),
            "{}",
            q["scope"]
        );
    }
    let page = alice.get(&callback).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    // the session id changed at login
    assert_ne!(alice.cookie, pre_login_cookie);
    let home = alice.get("/").await;
    assert!(home.body.contains("Test alice"), "{}", home.body);
    assert!(
        home.body
            .contains("/DC=org/DC=cilogon/C=US/O=Example University/CN=Test alice A1")
    );
    assert!(home.body.contains("No account is linked"));

    let csrf = alice.csrf().await;
    let linked = alice
        .post("/link", &[("csrf", &csrf), ("account", ACCOUNT)])
        .await;
    assert_eq!(linked.status, StatusCode::SEE_OTHER, "{}", linked.body);
    let home = alice.get("/").await;
    assert!(
        home.body.contains(&format!("Linked to {ACCOUNT}")),
        "{}",
        home.body
    );
    assert_eq!(
        export_file(&s.portal, "token-mapfile"),
        format!("\"{}\" \"alice\" {ACCOUNT}\n", s.issuer)
    );
    assert_eq!(
        export_file(&s.portal, "grid-mapfile"),
        format!("\"/DC=org/DC=cilogon/C=US/O=Example University/CN=Test alice A1\" {ACCOUNT}\n")
    );

    // removing the token identity's link
    let gone = alice
        .post(
            "/unlink",
            &[
                ("csrf", &csrf),
                ("kind", "token"),
                ("subject", "alice"),
                ("account", ACCOUNT),
            ],
        )
        .await;
    assert_eq!(gone.status, StatusCode::SEE_OTHER, "{}", gone.body);
    let links = s.portal.store().links(None).await.unwrap();
    assert_eq!(links.len(), 1, "only the DN's link is left: {links:?}");
    assert!(links[0].identity.subject().contains("CN=Test alice A1"));

    // log out: the session is gone
    let out = alice.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(alice.cookie.is_none());
    let after = alice.get("/").await;
    assert!(after.body.contains("Log in with your institution"));
}

#[tokio::test]
async fn tampered_state_replayed_code_and_foreign_callbacks_are_refused() {
    let s = setup(Approval::Immediate).await;
    s.op.lock().subject = "alice".into();
    let mut alice = Client::new(&s.base);

    // tampered state
    let callback = alice.start_login().await;
    let tampered = callback.replace("state=", "state=x");
    let page = alice.get(&tampered).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.body.contains("not started in this browser"),
        "{}",
        page.body
    );
    assert!(!alice.get("/").await.body.contains("Your identity"));

    // an authorization response naming another issuer (RFC 9207: a mix-up)
    let callback = alice.start_login().await;
    let page = alice
        .get(&format!("{callback}&iss=https%3A%2F%2Fevil.example"))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.body.contains("another identity provider"),
        "{}",
        page.body
    );

    // a callback in another browser (a login not started there: no PKCE verifier, no nonce)
    let callback = alice.start_login().await;
    let mut mallory = Client::new(&s.base);
    let page = mallory.get(&callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(!mallory.get("/").await.body.contains("Your identity"));

    // the real callback works once; replayed (with the new session, or the old cookie) it fails
    let pre = alice.cookie.clone();
    let page = alice.get(&callback).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let replay = alice.get(&callback).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    let mut old = Client::new(&s.base);
    old.cookie = pre;
    let replay = old.get(&callback).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert!(!old.get("/").await.body.contains("Your identity"));
}

#[tokio::test]
async fn a_wrong_nonce_is_refused() {
    let s = setup(Approval::Immediate).await;
    {
        let mut st = s.op.lock();
        st.subject = "alice".into();
        st.misbehave.wrong_nonce = true;
    }
    let mut alice = Client::new(&s.base);
    let callback = alice.start_login().await;
    let page = alice.get(&callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.to_lowercase().contains("nonce"), "{}", page.body);
    assert!(!alice.get("/").await.body.contains("Your identity"));
}

#[tokio::test]
async fn id_token_algorithms_and_at_hash() {
    let s = setup(Approval::Immediate).await;
    let set = |alg: &'static str, at_hash: Option<bool>| {
        let mut st = s.op.lock();
        st.subject = "alice".into();
        st.misbehave.alg = Some(alg);
        st.misbehave.at_hash = at_hash;
    };
    // RS512 (Globus Auth) with a matching at_hash: accepted
    set("RS512", Some(true));
    let mut alice = Client::new(&s.base);
    assert!(alice.login().await.body.contains("Your identity"));
    // an at_hash of another access token: refused
    set("RS256", Some(false));
    let mut other = Client::new(&s.base);
    let callback = other.start_login().await;
    let page = other.get(&callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("at_hash"), "{}", page.body);
    // HMAC with the client secret (anyone holding the secret could mint it): refused
    set("HS256", None);
    let mut other = Client::new(&s.base);
    let callback = other.start_login().await;
    let page = other.get(&callback).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("HS256"), "{}", page.body);
    assert!(!other.get("/").await.body.contains("Your identity"));
}

#[tokio::test]
async fn forms_without_the_right_csrf_token_or_origin_change_nothing() {
    let s = setup(Approval::Immediate).await;
    s.op.lock().subject = "alice".into();
    let mut alice = Client::new(&s.base);
    alice.login().await;
    let csrf = alice.csrf().await;
    let before = s.portal.current().serial;

    let missing = alice.post("/link", &[("account", ACCOUNT)]).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    let wrong = alice
        .post("/link", &[("csrf", "AAAA"), ("account", ACCOUNT)])
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let almost = format!("{}x", &csrf[..csrf.len() - 1]);
    let wrong = alice
        .post("/link", &[("csrf", &almost), ("account", ACCOUNT)])
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    // the right token from another site's page
    let req = alice
        .http
        .post(format!("{}/link", s.base))
        .header("origin", "https://evil.example")
        .header("remote_user", ACCOUNT)
        .form(&[("csrf", csrf.as_str()), ("account", ACCOUNT)]);
    let foreign = alice.send(req).await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    assert_eq!(s.portal.current().serial, before, "nothing changed");
    assert!(s.portal.store().links(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn another_users_session_cannot_touch_a_link() {
    let s = setup(Approval::Immediate).await;
    s.op.lock().subject = "alice".into();
    let mut alice = Client::new(&s.base);
    alice.login().await;
    let alice_csrf = alice.csrf().await;
    assert_eq!(
        alice
            .post("/link", &[("csrf", &alice_csrf), ("account", ACCOUNT)])
            .await
            .status,
        StatusCode::SEE_OTHER
    );

    s.op.lock().subject = "bob".into();
    let mut bob = Client::new(&s.base);
    bob.login().await;
    let bob_csrf = bob.csrf().await;
    assert!(!bob.get("/").await.body.contains("Test alice"));
    // bob's own session cannot remove alice's link, even naming it: the identity must be
    // one of the session's
    let page = bob
        .post(
            "/unlink",
            &[
                ("csrf", &bob_csrf),
                ("kind", "token"),
                ("subject", "alice"),
                ("account", ACCOUNT),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    // bob's cookie with alice's CSRF token
    let page = bob
        .post(
            "/unlink",
            &[
                ("csrf", &alice_csrf),
                ("kind", "token"),
                ("subject", "alice"),
                ("account", ACCOUNT),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // alice's token without a session cookie
    let mut anonymous = Client::new(&s.base);
    let page = anonymous
        .post(
            "/unlink",
            &[
                ("csrf", &alice_csrf),
                ("kind", "token"),
                ("subject", "alice"),
                ("account", ACCOUNT),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(
        s.portal.store().links(None).await.unwrap().len(),
        2,
        "alice's token and DN links stay"
    );
    // bob is no admin
    assert_eq!(bob.get("/admin").await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_admin_approves_suspends_and_reads_the_audit_log() {
    let s = setup(Approval::AwaitAdmin).await;
    s.op.lock().subject = "alice".into();
    let mut alice = Client::new(&s.base);
    alice.login().await;
    let csrf = alice.csrf().await;
    alice
        .post("/link", &[("csrf", &csrf), ("account", ACCOUNT)])
        .await;
    let home = alice.get("/").await;
    assert!(home.body.contains("awaiting approval"), "{}", home.body);
    assert_eq!(
        export_file(&s.portal, "grid-mapfile"),
        "",
        "pending links are not exported"
    );
    assert_eq!(export_file(&s.portal, "token-mapfile"), "");

    s.op.lock().subject = "admin".into();
    let mut admin = Client::new(&s.base);
    admin.login().await;
    let page = admin.get("/admin").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Approve"));
    let csrf = admin.csrf().await;
    let ok = admin
        .post(
            "/admin/approve",
            &[
                ("csrf", &csrf),
                ("kind", "token"),
                ("issuer", &s.issuer),
                ("subject", "alice"),
                ("account", ACCOUNT),
            ],
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    let ok = admin
        .post(
            "/admin/suspend",
            &[
                ("csrf", &csrf),
                ("target", "identity"),
                ("kind", "token"),
                ("issuer", &s.issuer),
                ("subject", "alice"),
                ("reason", "compromised laptop"),
            ],
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(
        export_file(&s.portal, "token-mapfile"),
        format!("\"{}\" \"alice\" {ACCOUNT}\n", s.issuer)
    );
    let suspended = export_file(&s.portal, "suspended");
    assert!(
        suspended.contains(&format!("\"{}\" \"alice\"", s.issuer)),
        "{suspended}"
    );
    let suspensions = s.portal.store().suspensions().await.unwrap();
    assert_eq!(suspensions.len(), 1);
    assert!(alice.get("/").await.body.contains("Suspended"));
    let audit = admin.get("/admin/audit").await;
    assert!(
        audit.body.contains("suspend")
            && audit.body.contains("approve")
            && audit.body.contains("127.0.0.1"),
        "{}",
        audit.body
    );
    // a search finds the link, a search for nothing finds none
    assert!(
        admin
            .get("/admin?q=alice")
            .await
            .body
            .contains("Test alice")
    );
    assert!(
        !admin
            .get("/admin?q=zzz-nothing")
            .await
            .body
            .contains("Test alice")
    );
    let ok = admin
        .post(
            "/admin/unsuspend",
            &[
                ("csrf", &csrf),
                ("target", "identity"),
                ("kind", "token"),
                ("issuer", &s.issuer),
                ("subject", "alice"),
            ],
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert!(s.portal.store().suspensions().await.unwrap().is_empty());
}

#[tokio::test]
async fn escaping_and_unknown_pages() {
    let s = setup(Approval::Immediate).await;
    s.op.lock().subject = "<script>alert(1)</script>".into();
    let mut eve = Client::new(&s.base);
    let home = eve.login().await;
    assert!(!home.body.contains("<script>alert(1)"), "{}", home.body);
    assert!(home.body.contains("&lt;script&gt;"));
    let missing = eve.get("/nothing-here").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

/// A client identity for reqwest (certificate and key, PEM).
fn identity(c: &hpccert_core::dev::pki::Credential) -> reqwest::Identity {
    let mut pem = c.cert_pem().unwrap();
    pem.extend(c.key_pem().unwrap());
    reqwest::Identity::from_pem(&pem).unwrap()
}

/// HTTPS: Secure `__Host-` cookies and HSTS for the pages; the export also by mutual TLS, for
/// a client certificate of `export_client_ca` whose subject is in `export_client_dns`.
#[tokio::test]
async fn https_with_secure_host_cookies_and_hsts() {
    use hpccert_core::dev::pki::{self, CertSpec};
    let now = hpccert_core::clock::now();
    let ca = pki::self_signed_ca(&CertSpec::ca("/DC=org/DC=example/CN=Nodes CA", now, 1).unwrap())
        .unwrap();
    let node = pki::issue(
        &ca,
        &CertSpec::user("/DC=org/DC=example/CN=node1.example.org", now, 1).unwrap(),
    )
    .unwrap();
    let stranger = pki::issue(
        &ca,
        &CertSpec::user("/DC=org/DC=example/CN=laptop.example.org", now, 1).unwrap(),
    )
    .unwrap();
    let other_ca =
        pki::self_signed_ca(&CertSpec::ca("/DC=org/DC=example/CN=Other CA", now, 1).unwrap())
            .unwrap();
    let forged = pki::issue(
        &other_ca,
        &CertSpec::user("/DC=org/DC=example/CN=node1.example.org", now, 1).unwrap(),
    )
    .unwrap();
    let (op, issuer) = start_op().await;
    op.lock().subject = "alice".into();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::server_certificate();
    std::fs::write(dir.path().join("tls.crt"), &cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), &key).unwrap();
    std::fs::write(dir.path().join("nodes-ca.pem"), ca.cert_pem().unwrap()).unwrap();
    let tls = mapping_portal::http::tls_config(
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
        Some(&dir.path().join("nodes-ca.pem")),
    )
    .unwrap();
    let store = Store::open(&common::sqlite_url(dir.path()), common::at(0))
        .await
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let portal = Portal::start(
        store,
        PortalSettings {
            ssh_ca_keys: Default::default(),
            url: base.clone(),
            export_tokens: vec![],
            export_client_dns: vec![node.subject()],
            export_dir: None,
        },
    )
    .await
    .unwrap();
    let oidc = Oidc::new(OidcSettings {
        issuer: issuer.clone(),
        client_id: CLIENT.into(),
        client_secret: Some(SECRET.into()),
        scopes: vec!["openid".into()],
        redirect_uri: format!("{base}/login/callback"),
    })
    .unwrap();
    let app = App::new(
        Arc::clone(&portal),
        Some(oidc),
        WebSettings {
            url: base.clone(),
            trusted_proxies: vec![],
            approval: Approval::Immediate,
            proof: Proof::Pam {
                service: "mapping-portal".into(),
            },
            min_uid: 1000,
            admins: vec![],
            certificate_dns: None,
            dev: false,
        },
    );
    let router = mapping_portal::http::app_router(Arc::clone(&portal), Some(app));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mapping_portal::http::serve_tls(
        listener,
        tls,
        router,
        async {
            let _ = stopped.await;
        },
    ));

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
        .build()
        .unwrap();
    let home = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(home.status(), StatusCode::OK);
    assert_eq!(
        home.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    let login = http.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("__Host-hpccert-portal="), "{cookie}");
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly") && cookie.contains("Path=/"),
        "{cookie}"
    );
    // the export: no credential, 401; the node's certificate, 200 with the bundle
    let export = format!("{base}/export/v1/bundle");
    assert_eq!(
        http.get(&export).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let with = |id: &hpccert_core::dev::pki::Credential| {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
            .identity(identity(id))
            .build()
            .unwrap()
    };
    let resp = with(&node).get(&export).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("etag"));
    let bundle: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(bundle["format"], "hpccert-export");
    // a certificate of the same CA with a subject not in export_client_dns: 401
    let resp = with(&stranger).get(&export).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // the node's subject from another CA: the handshake fails
    assert!(with(&forged).get(&export).send().await.is_err());
    // plain HTTP on the TLS port is not served
    let plain = reqwest::Client::new()
        .get(base.replace("https://", "http://") + "/healthz")
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// The text of the `<code>` in the first `<pre>` after `marker`, unescaped (what a user
/// copies from the page).
fn code_after(body: &str, marker: &str) -> String {
    let at = body
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in {body}"));
    let text = &body[at..];
    let text = &text[text.find("<pre").unwrap()..];
    let text = &text[text.find("<code>").unwrap() + 6..text.find("</code>").unwrap()];
    text.replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The challenge on the page.
fn pre_text(body: &str, id: &str) -> String {
    code_after(body, &format!("<pre id=\"{id}\">"))
}

/// The commands of the page's "~/.globus" box, as the user copies them.
fn globus_commands(body: &str) -> String {
    code_after(body, "~/.globus</code>, run:")
}

async fn post_dn(c: &mut Client, form: Vec<(String, String)>) -> Page {
    let req = c
        .http
        .post(format!("{}/dn", c.base))
        .header("origin", &c.base)
        .form(&form);
    c.send(req).await
}

fn sign(key: &openssl::pkey::PKey<openssl::pkey::Private>, text: &str) -> String {
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key).unwrap();
    base64::engine::general_purpose::STANDARD
        .encode(signer.sign_oneshot_to_vec(text.as_bytes()).unwrap())
}

/// `[portal] certificate_dns`: a DN the provider did not assert is proved by signing the
/// page's challenge (with the real `openssl` command line the page shows), then linked and
/// unlinked like the provider's DN; a forged chain, a wrong text, a pasted key, someone
/// else's certificate with one's own signature, another session's challenge, a replayed
/// answer and a proxy are refused; with the option off there is no such form.
#[tokio::test]
async fn a_certificate_dn_is_proved_by_a_signed_challenge() {
    use hpccert_core::config::TrustConfig;
    use hpccert_core::dev::pki::{self, CertSpec, ProxySpec};
    const OLD_DN: &str = "/DC=org/DC=example/O=Old Grid/CN=Alice Old";
    let now = hpccert_core::clock::now();
    let ca = pki::self_signed_ca(&CertSpec::ca("/DC=org/DC=example/CN=Grid CA", now, 1).unwrap())
        .unwrap();
    let user = pki::issue(&ca, &CertSpec::user(OLD_DN, now, 1).unwrap()).unwrap();
    let proxy = pki::issue_proxy(&user, &ProxySpec::new("12345", now, 1)).unwrap();
    let rogue_ca =
        pki::self_signed_ca(&CertSpec::ca("/DC=org/DC=example/CN=Grid CA", now, 1).unwrap())
            .unwrap();
    let forged = pki::issue(&rogue_ca, &CertSpec::user(OLD_DN, now, 1).unwrap()).unwrap();
    let trust_dir = tempfile::tempdir().unwrap();
    pki::install_ca(trust_dir.path(), &ca.cert, None, None).unwrap();
    let trust = TrustConfig {
        ca_dir: Some(trust_dir.path().to_path_buf()),
        ..TrustConfig::default()
    };
    let pem = |c: &pki::Credential| String::from_utf8(c.cert_pem().unwrap()).unwrap();

    let s = setup_with(Approval::Immediate, Some(trust)).await;
    s.op.lock().subject = "alice".into();
    let mut alice = Client::new(&s.base);
    let home = alice.login().await;
    assert!(home.body.contains("Add a certificate DN"), "{}", home.body);
    assert!(
        home.body.contains("for one answer until <time datetime=\""),
        "the page says until when: {}",
        home.body
    );
    let challenge = pre_text(&home.body, "dn-challenge");
    assert!(
        challenge.starts_with(&format!("hpccert-portal {} ", s.base))
            && challenge.contains("for alice at "),
        "{challenge}"
    );
    assert_eq!(
        pre_text(&alice.get("/").await.body, "dn-challenge"),
        challenge,
        "kept until used"
    );
    let csrf = alice.csrf().await;
    let prove = |signature: String, certificates: String| {
        vec![
            ("csrf".to_string(), csrf.clone()),
            ("signature".to_string(), signature),
            ("certificates".to_string(), certificates),
        ]
    };
    let dn_links = |links: &[mapping_portal::model::Link]| {
        links
            .iter()
            .filter(|l| l.identity.subject() == OLD_DN)
            .count()
    };

    // a certificate with the same DN from a CA the portal does not trust
    let page = post_dn(
        &mut alice,
        prove(sign(&forged.key, &challenge), pem(&forged)),
    )
    .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(page.body.contains("chain is refused"), "{}", page.body);
    // every answer uses the challenge up
    let challenge2 = pre_text(&alice.get("/").await.body, "dn-challenge");
    assert_ne!(challenge2, challenge);
    let page = post_dn(&mut alice, prove(sign(&user.key, &challenge), pem(&user))).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(
        page.body.contains("does not match"),
        "the old challenge: {}",
        page.body
    );
    // a key in the paste
    let challenge3 = pre_text(&alice.get("/").await.body, "dn-challenge");
    let with_key = pem(&user) + &String::from_utf8(user.key_pem().unwrap()).unwrap();
    let page = post_dn(&mut alice, prove(sign(&user.key, &challenge3), with_key)).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("private key"), "{}", page.body);
    assert!(
        !alice
            .get("/")
            .await
            .body
            .contains(&format!("<code>{OLD_DN}</code>"))
    );

    // the victim's public certificate with a signature made by another key
    let challenge3 = pre_text(&alice.get("/").await.body, "dn-challenge");
    let page = post_dn(
        &mut alice,
        prove(sign(&forged.key, &challenge3), pem(&user)),
    )
    .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("does not match"), "{}", page.body);

    // alice's challenge, rightly signed, answered in another session (bob's)
    let body = alice.get("/").await.body;
    let challenge4 = pre_text(&body, "dn-challenge");
    s.op.lock().subject = "bob".into();
    let mut bob = Client::new(&s.base);
    let bob_challenge = pre_text(&bob.login().await.body, "dn-challenge");
    assert!(bob_challenge.contains("for bob at "), "{bob_challenge}");
    let bob_csrf = bob.csrf().await;
    let form = vec![
        ("csrf".to_string(), bob_csrf.clone()),
        ("signature".to_string(), sign(&user.key, &challenge4)),
        ("certificates".to_string(), pem(&user)),
    ];
    let page = post_dn(&mut bob, form).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("does not match"), "{}", page.body);

    // the page's own commands, run by the real openssl with ~/.globus in a temporary home
    // (alice's challenge is still hers to answer)
    let commands = globus_commands(&body);
    let mut lines = commands.lines();
    let (sign_cmd, cat_cmd) = (lines.next().unwrap(), lines.next().unwrap());
    assert!(sign_cmd.contains(&challenge4), "{sign_cmd}");
    let home_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(home_dir.path().join(".globus")).unwrap();
    std::fs::write(home_dir.path().join(".globus/usercert.pem"), pem(&user)).unwrap();
    std::fs::write(
        home_dir.path().join(".globus/userkey.pem"),
        user.key_pem().unwrap(),
    )
    .unwrap();
    let run = |cmd: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env("HOME", home_dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let signature = run(sign_cmd);
    let certificates = run(cat_cmd);
    let page = post_dn(&mut alice, prove(signature.clone(), certificates.clone())).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let home = alice.get("/").await;
    assert!(
        home.body
            .contains(&format!("You proved the certificate DN {OLD_DN}")),
        "{}",
        home.body
    );
    assert!(home.body.contains(&format!("<code>{OLD_DN}</code>")));
    // the same answer again: its challenge is gone
    assert_eq!(
        post_dn(&mut alice, prove(signature, certificates))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        dn_links(&s.portal.store().links(None).await.unwrap()),
        0,
        "proved, not linked yet"
    );

    // linked with the account, like the provider's identities
    let linked = alice
        .post("/link", &[("csrf", &csrf), ("account", ACCOUNT)])
        .await;
    assert_eq!(linked.status, StatusCode::SEE_OTHER, "{}", linked.body);
    let gridmap = export_file(&s.portal, "grid-mapfile");
    assert!(
        gridmap.contains(&format!("\"{OLD_DN}\" {ACCOUNT}\n")),
        "{gridmap}"
    );
    assert!(gridmap.contains("CN=Test alice A1"), "{gridmap}");

    // someone else (an admin) links the same DN to another account
    use mapping_portal::model::{Account, Actor, Change, IdentityKey};
    let jdoe = hpccert_core::identity::gridmap::AccountName::parse("jdoe").unwrap();
    let admin = Actor::new("admin");
    let when = hpccert_core::clock::now();
    s.portal
        .change(
            &admin,
            &Change::CreateAccount(Account {
                name: jdoe.clone(),
                uid: 60001,
                gid: 60001,
                gecos: "J. Doe (portal)".into(),
                home: "/home/jdoe".into(),
                shell: "/bin/bash".into(),
            }),
            when,
        )
        .await
        .unwrap();
    s.portal
        .change(
            &admin,
            &Change::Link {
                identity: IdentityKey::dn(OLD_DN).unwrap(),
                profile: Default::default(),
                account: jdoe.clone(),
                approval: Approval::Immediate,
            },
            when,
        )
        .await
        .unwrap();

    // a later login sees its own link and may remove it, though the DN is not proved again;
    // the admin's link of the same DN it neither sees nor removes
    let out = alice.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    s.op.lock().subject = "alice".into();
    let home = alice.login().await;
    assert!(
        home.body
            .contains(&format!("name=\"subject\" value=\"{OLD_DN}\"")),
        "{}",
        home.body
    );
    assert!(
        !home
            .body
            .contains(&format!("<dd><code>{OLD_DN}</code></dd>")),
        "not one of this session's identities: {}",
        home.body
    );
    assert!(!home.body.contains("jdoe"), "{}", home.body);
    let csrf = alice.csrf().await;
    let theirs = alice
        .post(
            "/unlink",
            &[
                ("csrf", &csrf),
                ("kind", "dn"),
                ("subject", OLD_DN),
                ("account", "jdoe"),
            ],
        )
        .await;
    assert_eq!(theirs.status, StatusCode::BAD_REQUEST, "{}", theirs.body);
    let old_dn_line = |gridmap: &str| {
        gridmap
            .lines()
            .find(|l| l.contains(OLD_DN))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        old_dn_line(&export_file(&s.portal, "grid-mapfile")).contains("jdoe"),
        "the admin's link stays"
    );

    // and unlinked by itself: the provider's DN stays
    let gone = alice
        .post(
            "/unlink",
            &[
                ("csrf", &csrf),
                ("kind", "dn"),
                ("subject", OLD_DN),
                ("account", ACCOUNT),
            ],
        )
        .await;
    assert_eq!(gone.status, StatusCode::SEE_OTHER, "{}", gone.body);
    let gridmap = export_file(&s.portal, "grid-mapfile");
    assert!(!old_dn_line(&gridmap).contains(ACCOUNT), "{gridmap}");
    assert!(old_dn_line(&gridmap).contains("jdoe"), "{gridmap}");
    assert!(gridmap.contains("CN=Test alice A1"), "{gridmap}");
    // linking again links the session's identities only: not the DN proved long ago
    let again = alice
        .post("/link", &[("csrf", &csrf), ("account", ACCOUNT)])
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
    let gridmap = export_file(&s.portal, "grid-mapfile");
    assert!(!old_dn_line(&gridmap).contains(ACCOUNT), "{gridmap}");

    // a proxy is refused although it verifies: it is delegated, and may be held by services
    let challenge = pre_text(&bob.get("/").await.body, "dn-challenge");
    let form = vec![
        ("csrf".to_string(), bob_csrf),
        ("signature".to_string(), sign(&proxy.key, &challenge)),
        ("certificates".to_string(), pem(&proxy) + &pem(&user)),
    ];
    let page = post_dn(&mut bob, form).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(page.body.contains("proxy certificate"), "{}", page.body);
    assert!(
        !bob.get("/")
            .await
            .body
            .contains(&format!("<code>{OLD_DN}</code>"))
    );

    // with [portal] certificate_dns off: no form, and the endpoint refuses
    let off = setup(Approval::Immediate).await;
    off.op.lock().subject = "carol".into();
    let mut carol = Client::new(&off.base);
    let home = carol.login().await;
    assert!(!home.body.contains("Add a certificate DN"));
    let carol_csrf = carol.csrf().await;
    let req = carol
        .http
        .post(format!("{}/dn", off.base))
        .header("origin", &off.base)
        .form(&[
            ("csrf", carol_csrf.as_str()),
            ("signature", "AAAA"),
            ("certificates", pem(&user).as_str()),
        ]);
    assert_eq!(carol.send(req).await.status, StatusCode::NOT_FOUND);
}

/// Set in the child process that runs one test under pam_wrapper: its PAM service directory.
const PAM_CHILD: &str = "HPCCERT_PORTAL_PAM_CHILD";
/// `ACCOUNT`'s password in the PAM services of [`under_pam_wrapper`].
const PASSWORD: &str = "correct horse";
/// A name no host has.
const UNKNOWN: &str = "no-such-user-hpccert";

fn pam_wrapper() -> Option<std::path::PathBuf> {
    let found = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ]
    .iter()
    .map(|d| std::path::Path::new(d).join("libpam_wrapper.so"))
    .find(|p| p.is_file());
    if found.is_none() {
        let required = std::env::var("HPCCERT_E2E_REQUIRED").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "libpam_wrapper.so not found (Debian package libpam-wrapper), and HPCCERT_E2E_REQUIRED=1"
        );
        eprintln!("SKIPPED: libpam_wrapper.so not found (Debian package libpam-wrapper)");
    }
    found
}

/// Whether this process is the child that runs `test` against the real libpam under
/// pam_wrapper, with two services: `mapping-portal` (pam_matrix: `ACCOUNT`'s password is
/// `PASSWORD`) and `mapping-portal-switch` (the same, then pam_set_items.so, which sets
/// PAM_USER to root as a module mapping login names would). In the parent this runs the child
/// (one at a time: pam_wrapper's private copies of the service directory may collide between
/// processes starting together), asserts that its test passed and returns false; without
/// libpam-wrapper it skips (a failure under `HPCCERT_E2E_REQUIRED=1`) and returns false.
fn under_pam_wrapper(test: &str) -> bool {
    if std::env::var_os(PAM_CHILD).is_some() {
        return true;
    }
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let Some(wrapper) = pam_wrapper() else {
        return false;
    };
    let modules = wrapper.parent().unwrap().join("pam_wrapper");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (service, extra) in [
        ("mapping-portal", String::new()),
        (
            "mapping-portal-switch",
            format!(
                "auth required {}\n",
                modules.join("pam_set_items.so").display()
            ),
        ),
    ] {
        let mut passdb = format!("{ACCOUNT}:{PASSWORD}:{service}\n");
        if !extra.is_empty() {
            // root is in the switch service's database too, so that its account stack lets
            // the switched user in: only the PAM_USER check stands between it and a link
            passdb.push_str(&format!("root:{PASSWORD}:{service}\n"));
        }
        std::fs::write(d.join(format!("passdb-{service}")), passdb).unwrap();
        let m = format!(
            "{} passdb={}/passdb-{service}",
            modules.join("pam_matrix.so").display(),
            d.display()
        );
        std::fs::write(
            d.join(service),
            format!("auth required {m}\naccount required {m}\n{extra}"),
        )
        .unwrap();
    }
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(PAM_CHILD, d)
        .env("LD_PRELOAD", &wrapper)
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", d)
        .env("PAM_USER", "root")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{test} under pam_wrapper: {all}");
    assert!(
        all.contains("1 passed"),
        "{test}: the child ran no test: {all}"
    );
    false
}

/// The portal proving accounts through the PAM service `service` (see [`under_pam_wrapper`]).
async fn setup_pam(service: &str) -> Setup {
    setup_proved_by(
        Approval::Immediate,
        None,
        Proof::Pam {
            service: service.into(),
        },
    )
    .await
}

/// A logged-in user `subject` and its CSRF token.
async fn logged_in(s: &Setup, subject: &str) -> (Client, String) {
    s.op.lock().subject = subject.into();
    let mut c = Client::new(&s.base);
    c.login().await;
    let csrf = c.csrf().await;
    (c, csrf)
}

async fn link_with(c: &mut Client, csrf: &str, account: &str, password: &str) -> Page {
    c.post(
        "/link",
        &[("csrf", csrf), ("account", account), ("password", password)],
    )
    .await
}

/// No such account, a system account and a wrong password: the same page, the same status;
/// the right password links (the PAM stack is real).
#[tokio::test]
async fn unknown_system_and_wrong_password_accounts_get_one_answer() {
    if !under_pam_wrapper("unknown_system_and_wrong_password_accounts_get_one_answer") {
        return;
    }
    let s = setup_pam("mapping-portal").await;
    let (mut alice, csrf) = logged_in(&s, "alice").await;
    let mut pages = Vec::new();
    for (account, password) in [(UNKNOWN, PASSWORD), ("root", PASSWORD), (ACCOUNT, "wrong")] {
        pages.push(link_with(&mut alice, &csrf, account, password).await);
    }
    for (p, what) in pages
        .iter()
        .zip(["no such account", "system account", "wrong password"])
    {
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{what}: {}", p.body);
        assert!(
            p.body.contains(mapping_portal::web::proof::NOT_PROVED),
            "{what}: {}",
            p.body
        );
        assert_eq!(p.body, pages[0].body, "{what} differs from no such account");
    }
    assert!(s.portal.store().links(None).await.unwrap().is_empty());
    let linked = link_with(&mut alice, &csrf, ACCOUNT, PASSWORD).await;
    assert_eq!(linked.status, StatusCode::SEE_OTHER, "{}", linked.body);
    assert!(!s.portal.store().links(None).await.unwrap().is_empty());
}

/// One identity guessing an account's password is limited; another identity may still prove
/// (and link) the same account.
#[tokio::test]
async fn one_identitys_failed_attempts_do_not_lock_another_out() {
    if !under_pam_wrapper("one_identitys_failed_attempts_do_not_lock_another_out") {
        return;
    }
    let s = setup_pam("mapping-portal").await;
    let (mut mallory, m_csrf) = logged_in(&s, "mallory").await;
    for attempt in 1..=5 {
        let p = link_with(&mut mallory, &m_csrf, ACCOUNT, "guess").await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "attempt {attempt}");
    }
    // mallory is stopped, even with the right password
    let p = link_with(&mut mallory, &m_csrf, ACCOUNT, PASSWORD).await;
    assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS, "{}", p.body);
    assert!(p.body.contains("too many failed attempts"), "{}", p.body);
    // the account's owner is not
    let (mut alice, a_csrf) = logged_in(&s, "alice").await;
    let p = link_with(&mut alice, &a_csrf, ACCOUNT, PASSWORD).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let links = s.portal.store().links(None).await.unwrap();
    assert!(
        links.iter().all(|l| l.identity.subject().contains("alice")) && !links.is_empty(),
        "{links:?}"
    );
}

/// The limit counts before the account is looked up: unknown and system accounts cost an
/// attempt as a wrong password does.
#[tokio::test]
async fn the_limit_counts_before_the_account_is_looked_up() {
    if !under_pam_wrapper("the_limit_counts_before_the_account_is_looked_up") {
        return;
    }
    let s = setup_pam("mapping-portal").await;
    let (mut alice, csrf) = logged_in(&s, "alice").await;
    for attempt in 1..=5 {
        let p = link_with(&mut alice, &csrf, UNKNOWN, PASSWORD).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "attempt {attempt}");
    }
    let p = link_with(&mut alice, &csrf, UNKNOWN, PASSWORD).await;
    assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS, "{}", p.body);
    // five more at a system account reach the identity's limit: the real account is refused
    // before PAM is asked, whatever the password
    for attempt in 1..=5 {
        let p = link_with(&mut alice, &csrf, "root", PASSWORD).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "root, attempt {attempt}");
    }
    let p = link_with(&mut alice, &csrf, ACCOUNT, PASSWORD).await;
    assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS, "{}", p.body);
    assert!(s.portal.store().links(None).await.unwrap().is_empty());
}

/// A PAM module that makes the user someone else (here root) after the password was right:
/// the account is not proved.
#[tokio::test]
async fn a_pam_module_that_changes_the_user_proves_nothing() {
    if !under_pam_wrapper("a_pam_module_that_changes_the_user_proves_nothing") {
        return;
    }
    let s = setup_pam("mapping-portal-switch").await;
    let (mut alice, csrf) = logged_in(&s, "alice").await;
    let p = link_with(&mut alice, &csrf, ACCOUNT, PASSWORD).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    assert!(
        p.body.contains(mapping_portal::web::proof::NOT_PROVED),
        "{}",
        p.body
    );
    assert!(s.portal.store().links(None).await.unwrap().is_empty());
    // and the check itself says why (for the log)
    let account = hpccert_core::identity::gridmap::AccountName::parse(ACCOUNT).unwrap();
    let e = mapping_portal::web::proof::pam_check(
        "mapping-portal-switch",
        &account,
        zeroize::Zeroizing::new(PASSWORD.into()),
        "127.0.0.1",
    )
    .unwrap_err();
    assert_eq!(
        e,
        mapping_portal::web::proof::ProofError::Refused(ACCOUNT.into())
    );
}
