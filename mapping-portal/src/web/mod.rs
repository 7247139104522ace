//! The portal's web pages: log in with the identity provider, prove a local account, link,
//! see and remove links; admins list, search, approve, suspend and read the audit log.
//!
//! Security: server-side sessions behind an HttpOnly, SameSite=Lax cookie (Secure and
//! `__Host-` on HTTPS) whose id changes at login; a per-session CSRF token in every form,
//! compared in constant time, and `Origin` / `Sec-Fetch-Site` checked on every POST; a strict
//! Content-Security-Policy (no script, no inline style, no framing); no redirect to any URL
//! taken from a request; forwarded headers believed only from `trusted_proxies`. Every
//! refusal is logged with its reason; passwords and tokens never are.

// The checks return the refusal page itself (once per request, never stored): boxing it
// would only add an allocation.
#![allow(clippy::result_large_err)]

pub mod devidp;
pub mod dnproof;
pub mod oidc;
pub mod pages;
pub mod proof;
pub mod session;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, Form, FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::Portal;
use crate::model::{
    Actor, Approval, Change, IdentityKey, IdentityProfile, Link, StoreError, SuspensionTarget,
};
use hpccert_core::clock;
use hpccert_core::config::TrustConfig;
use hpccert_core::identity::gridmap::AccountName;
use oidc::Oidc;
use pages::Frame;
use proof::{ProofError, RateLimiter};
use session::{Session, Sessions, User};

/// How a local account is proved.
#[derive(Debug, Clone)]
pub enum Proof {
    Pam {
        service: String,
    },
    Header {
        name: HeaderName,
    },
    /// `--dev` only: the dev accounts and their passwords (no PAM), stated on the page. The
    /// accounts need not exist on this host and may be below `min_uid` (the demo links the
    /// account running it).
    Dev {
        accounts: Vec<DevAccount>,
    },
}

/// A dev account of [`Proof::Dev`].
#[derive(Debug, Clone)]
pub struct DevAccount {
    pub name: String,
    pub password: String,
}

/// The web side's settings.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// The public URL (scheme, host, port), without a trailing slash.
    pub url: String,
    pub trusted_proxies: Vec<IpAddr>,
    pub approval: Approval,
    pub proof: Proof,
    pub min_uid: u32,
    /// `(issuer, subject)` of the admins.
    pub admins: Vec<(String, String)>,
    /// Users may prove a certificate DN by signing a challenge, its chain checked against
    /// this trust configuration (`[portal] certificate_dns`); `None`: they may not.
    pub certificate_dns: Option<TrustConfig>,
    /// `--dev`: every page says so.
    pub dev: bool,
}

impl WebSettings {
    fn secure(&self) -> bool {
        self.url.starts_with("https://")
    }

    fn cookie_name(&self) -> &'static str {
        if self.secure() {
            "__Host-hpccert-portal"
        } else {
            "hpccert-portal"
        }
    }

    /// `scheme://host[:port]` of the public URL (what browsers send as `Origin`).
    fn origin(&self) -> &str {
        let after_scheme = self.url.find("://").map_or(0, |i| i + 3);
        match self.url[after_scheme..].find('/') {
            Some(i) => &self.url[..after_scheme + i],
            None => &self.url,
        }
    }
}

#[derive(Debug)]
pub struct App {
    portal: Arc<Portal>,
    oidc: Option<Oidc>,
    settings: WebSettings,
    sessions: Sessions,
    limiter: RateLimiter,
    /// The SSH CA (`[portal.ssh_ca]`): the "SSH certificate" page.
    ssh_ca: Option<Arc<crate::sshca::CertificateAuthority>>,
}

impl App {
    pub fn new(portal: Arc<Portal>, oidc: Option<Oidc>, settings: WebSettings) -> Arc<Self> {
        Self::with_ssh_ca(portal, oidc, settings, None)
    }

    /// The pages, with the "SSH certificate" page when the portal is an SSH CA.
    pub fn with_ssh_ca(
        portal: Arc<Portal>,
        oidc: Option<Oidc>,
        settings: WebSettings,
        ssh_ca: Option<Arc<crate::sshca::CertificateAuthority>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            portal,
            oidc,
            settings,
            sessions: Sessions::default(),
            limiter: RateLimiter::default(),
            ssh_ca,
        })
    }
}

/// The pages' routes (the export's are in [`crate::http`]).
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login))
        .route("/login/callback", get(callback))
        .route("/logout", post(logout))
        .route("/link", post(link))
        .route("/unlink", post(unlink))
        .route("/dn", post(prove_dn))
        .route("/ssh", get(ssh_page).post(ssh_certificate))
        .route("/admin", get(admin))
        .route("/admin/audit", get(audit))
        .route("/admin/approve", post(approve))
        .route("/admin/suspend", post(suspend))
        .route("/admin/unsuspend", post(unsuspend))
        .route("/admin/revoke-certificate", post(revoke_certificate))
        .route("/static/portal.css", get(stylesheet))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            security_headers,
        ))
        .with_state(app)
}

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // same-origin, not no-referrer: under no-referrer browsers send `Origin: null` with this
    // portal's own forms, which the CSRF check refuses; other sites still get no referrer
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if app.settings.secure() {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// What a handler knows about the request.
struct Ctx {
    /// The portal runs in `--dev`.
    dev: bool,
    /// The portal is an SSH CA (the nav links its page).
    ssh_ca: bool,
    client: IpAddr,
    session_id: Option<String>,
    session: Option<Session>,
}

impl Ctx {
    fn user(&self) -> Option<&User> {
        self.session.as_ref().and_then(|s| s.user.as_ref())
    }

    fn frame(&self) -> Frame<'_> {
        let user = self.user();
        Frame {
            dev: self.dev,
            ssh_ca: self.ssh_ca,
            user,
            csrf: user.and(self.session.as_ref().map(|s| s.csrf.as_str())),
            flash: self.session.as_ref().and_then(|s| s.flash.as_deref()),
        }
    }

    fn actor(&self) -> Actor {
        let name = self
            .user()
            .map_or_else(|| "anonymous".to_string(), User::actor_name);
        Actor {
            name,
            from_addr: Some(self.client.to_string()),
        }
    }
}

/// What every page reads of a request: the context, the TCP peer, the headers.
struct Visit {
    ctx: Ctx,
    peer: IpAddr,
    headers: HeaderMap,
}

impl FromRequestParts<Arc<App>> for Visit {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        // served without connection info (never by `http::serve`): no trusted peer
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        Ok(Self {
            ctx: context(app, peer, &parts.headers),
            peer,
            headers: parts.headers.clone(),
        })
    }
}

/// A form with a CSRF token.
trait WithCsrf {
    fn csrf(&self) -> &str;
}

/// A form POST that passed the CSRF checks ([`check_post`]); the refusal page otherwise.
struct Posted<T> {
    visit: Visit,
    form: T,
}

impl<T: DeserializeOwned + WithCsrf + Send> FromRequest<Arc<App>> for Posted<T> {
    type Rejection = Response;

    async fn from_request(request: Request, app: &Arc<App>) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let Ok(visit) = Visit::from_request_parts(&mut parts, app).await;
        let method = parts.method.clone();
        let form = match Form::<T>::from_request(Request::from_parts(parts, body), app).await {
            Ok(Form(form)) => form,
            Err(e) => {
                tracing::warn!(client = %visit.ctx.client, "form refused: {e}");
                return Err(error_page(
                    &visit.ctx,
                    StatusCode::BAD_REQUEST,
                    "Form refused",
                    "The form could not be read.",
                ));
            }
        };
        check_post(app, &visit.ctx, &visit.headers, &method, form.csrf())?;
        Ok(Self { visit, form })
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
/// address of `X-Forwarded-For` that is not a trusted proxy.
fn client_addr(settings: &WebSettings, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !settings.trusted_proxies.contains(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|a| !settings.trusted_proxies.contains(a))
        .unwrap_or(peer)
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn context(app: &App, peer: IpAddr, headers: &HeaderMap) -> Ctx {
    let client = client_addr(&app.settings, peer, headers);
    let session_id = cookie_value(headers, app.settings.cookie_name());
    let now = Instant::now();
    let session = session_id
        .as_deref()
        .and_then(|id| app.sessions.get(id, now));
    // the flash message is shown once
    if let (Some(id), Some(s)) = (&session_id, &session)
        && s.flash.is_some()
    {
        app.sessions.update(id, now, |s| s.flash = None);
    }
    Ctx {
        dev: app.settings.dev,
        ssh_ca: app.ssh_ca.is_some(),
        client,
        session_id: session.as_ref().and(session_id),
        session,
    }
}

fn set_cookie(app: &App, id: &str) -> HeaderValue {
    let secure = if app.settings.secure() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Lax{secure}",
        app.settings.cookie_name()
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn clear_cookie(app: &App) -> HeaderValue {
    let secure = if app.settings.secure() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}",
        app.settings.cookie_name()
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn html(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        markup.into_string(),
    )
        .into_response()
}

fn error_page(ctx: &Ctx, status: StatusCode, title: &str, message: &str) -> Response {
    html(status, pages::error(title, message, &ctx.frame()))
}

/// 303 to a path of this portal (never to a URL from the request).
fn see_other(path: &'static str) -> Response {
    Redirect::to(path).into_response()
}

/// Set a flash message and go back to `path`.
fn done(app: &App, ctx: &Ctx, path: &'static str, message: String) -> Response {
    if let Some(id) = &ctx.session_id {
        app.sessions
            .update(id, Instant::now(), |s| s.flash = Some(message));
    }
    see_other(path)
}

/// The CSRF checks of a POST: the browser's `Sec-Fetch-Site` and `Origin` (when sent) name
/// this portal, there is a live session, and the form's token is the session's.
fn check_post(
    app: &App,
    ctx: &Ctx,
    headers: &HeaderMap,
    method: &Method,
    token: &str,
) -> Result<(), Response> {
    let refuse = |reason: &str| {
        tracing::warn!(client = %ctx.client, "form refused: {reason}");
        Err(error_page(
            ctx,
            StatusCode::FORBIDDEN,
            "Form refused",
            "This form did not come from this portal's page, or the page is too old. Reload the page and try again.",
        ))
    };
    if method != Method::POST {
        return refuse("not a POST");
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site == "cross-site"
    {
        return refuse("Sec-Fetch-Site: cross-site");
    }
    if let Some(origin) = headers.get(header::ORIGIN)
        && origin.as_bytes() != app.settings.origin().as_bytes()
    {
        {
            return refuse(&format!(
                "Origin {:?} is not {}",
                String::from_utf8_lossy(origin.as_bytes()),
                app.settings.origin()
            ));
        }
    }
    let Some(session) = &ctx.session else {
        return refuse("no live session (CSRF token cannot match)");
    };
    if token.is_empty() {
        return refuse("CSRF token missing");
    }
    if token.len() != session.csrf.len()
        || !openssl::memcmp::eq(token.as_bytes(), session.csrf.as_bytes())
    {
        return refuse("CSRF token wrong");
    }
    Ok(())
}

/// The logged-in user of a POST, or the refusal.
fn require_user(ctx: &Ctx) -> Result<&User, Response> {
    ctx.user().ok_or_else(|| {
        tracing::warn!(client = %ctx.client, "refused: not logged in");
        error_page(ctx, StatusCode::FORBIDDEN, "Not logged in", "Log in first.")
    })
}

fn require_admin(ctx: &Ctx) -> Result<&User, Response> {
    let user = require_user(ctx)?;
    if !user.admin {
        tracing::warn!(client = %ctx.client, issuer = %user.issuer, subject = %user.subject, "refused: not an admin");
        return Err(error_page(
            ctx,
            StatusCode::FORBIDDEN,
            "Admins only",
            "Your identity is not one of this portal's admins.",
        ));
    }
    Ok(user)
}

fn store_failure(ctx: &Ctx, e: &StoreError) -> Response {
    tracing::error!(client = %ctx.client, "store: {e}");
    error_page(
        ctx,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The portal could not read or change its database. Nothing was changed; try again later.",
    )
}

/// The identities of a login: the token identity, and the certificate DN when the provider
/// asserted a usable one. Computed once, at login.
fn login_identities(identity: &oidc::LoginIdentity) -> Vec<IdentityKey> {
    let mut out = Vec::new();
    if let Ok(k) = IdentityKey::token(&identity.issuer, &identity.subject) {
        out.push(k);
    }
    if let Some(dn) = &identity.cert_dn {
        match IdentityKey::dn(dn) {
            Ok(k) => out.push(k),
            Err(e) => {
                tracing::warn!(subject = %identity.subject, "the identity provider's cert_subject_dn is not usable: {e}")
            }
        }
    }
    out
}

async fn home(State(app): State<Arc<App>>, Visit { ctx, peer, headers }: Visit) -> Response {
    let (Some(user), Some(session)) = (ctx.user(), ctx.session.as_ref()) else {
        return html(
            StatusCode::OK,
            pages::welcome(
                app.oidc.is_some(),
                matches!(app.settings.proof, Proof::Header { .. }),
                &ctx.frame(),
            ),
        );
    };
    let identities: Vec<&IdentityKey> = user.identities.iter().chain(user.earlier_dns()).collect();
    let links = match visible_links(&app, user).await {
        Ok(l) => l,
        Err(e) => return store_failure(&ctx, &e),
    };
    let accounts: Vec<&str> = links.iter().map(|l| l.account.as_str()).collect();
    let suspended = match app.portal.store().suspensions().await {
        Ok(all) => all
            .into_iter()
            .filter(|s| match &s.target {
                SuspensionTarget::Identity(k) => identities.contains(&k),
                SuspensionTarget::Account(a) => accounts.contains(&a.as_str()),
            })
            .collect::<Vec<_>>(),
        Err(e) => return store_failure(&ctx, &e),
    };
    let proof_by_header = match &app.settings.proof {
        Proof::Pam { .. } | Proof::Dev { .. } => None,
        Proof::Header { name } => Some(header_account(&app, peer, &headers, name)),
    };
    let dev_accounts = match &app.settings.proof {
        Proof::Dev { accounts } => Some(accounts.as_slice()),
        Proof::Pam { .. } | Proof::Header { .. } => None,
    };
    let dn_challenge = match (&app.settings.certificate_dns, &ctx.session_id) {
        (Some(_), Some(id)) => app.sessions.dn_challenge(id, Instant::now(), || {
            // an empty nonce (the random source failed) makes no challenge: a text without
            // one would be the same for every session of this user
            let nonce = session::random_text(24);
            (!nonce.is_empty()).then(|| {
                dnproof::Challenge::new(
                    app.settings.origin(),
                    &user.issuer,
                    &user.subject,
                    &nonce,
                    Instant::now(),
                )
            })
        }),
        _ => None,
    };
    let view = pages::HomeView {
        user,
        csrf: &session.csrf,
        links: &links,
        suspended: &suspended,
        proof_by_header,
        approval_needed: app.settings.approval == Approval::AwaitAdmin,
        dn_challenge: dn_challenge.as_ref(),
        dev_accounts,
    };
    html(StatusCode::OK, pages::home(&view, &ctx.frame()))
}

/// The links a login sees: every link of its identities, and of the DNs it knows only from
/// earlier sessions the links it made itself.
async fn visible_links(app: &App, user: &User) -> Result<Vec<Link>, StoreError> {
    let store = app.portal.store();
    let mut links = Vec::new();
    for identity in &user.identities {
        links.append(&mut store.links_of(identity).await?);
    }
    let me = user.actor_name();
    for dn in user.earlier_dns() {
        links.append(&mut store.links_made_by(dn, &me).await?);
    }
    Ok(links)
}

/// The account the site's sign-on proxy names, believed only from a trusted proxy.
fn header_account(
    app: &App,
    peer: IpAddr,
    headers: &HeaderMap,
    name: &HeaderName,
) -> Option<String> {
    if !app.settings.trusted_proxies.contains(&peer) {
        return None;
    }
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
}

async fn login(State(app): State<Arc<App>>, Visit { ctx, .. }: Visit) -> Response {
    let Some(oidc) = &app.oidc else {
        return error_page(
            &ctx,
            StatusCode::SERVICE_UNAVAILABLE,
            "Login not configured",
            "This portal has no identity provider configured ([portal.oidc]).",
        );
    };
    let started = match oidc.start().await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(client = %ctx.client, "login cannot start: {e}");
            return error_page(
                &ctx,
                StatusCode::BAD_GATEWAY,
                "Login unavailable",
                &e.to_string(),
            );
        }
    };
    let now = Instant::now();
    // the pending login lives in the browser's session (a new one when it has none)
    let (id, fresh) = match &ctx.session_id {
        Some(id) => (id.clone(), false),
        None => match app.sessions.create(now) {
            Some((id, _)) => (id, true),
            None => {
                return error_page(
                    &ctx,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Login unavailable",
                    "No session could be made.",
                );
            }
        },
    };
    if !app
        .sessions
        .add_pending(&id, now, started.state, started.pending)
    {
        return error_page(
            &ctx,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Login unavailable",
            "The session ended; try again.",
        );
    }
    let mut response = Redirect::to(&started.url).into_response();
    if fresh {
        response
            .headers_mut()
            .insert(header::SET_COOKIE, set_cookie(&app, &id));
    }
    response
}

#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    /// RFC 9207: the issuer of the authorization response, when the provider names it.
    iss: Option<String>,
}

async fn callback(
    State(app): State<Arc<App>>,
    Visit { ctx, .. }: Visit,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let refuse = |reason: String, shown: &str| {
        tracing::warn!(client = %ctx.client, "login refused: {reason}");
        error_page(&ctx, StatusCode::BAD_REQUEST, "Login failed", shown)
    };
    let Some(oidc) = &app.oidc else {
        return refuse(
            "no identity provider configured".into(),
            "Login is not configured.",
        );
    };
    let Some(state) = query.state.as_deref().filter(|s| !s.is_empty()) else {
        return refuse(
            "callback without state".into(),
            "The identity provider's answer has no state: start again.",
        );
    };
    let Some(id) = &ctx.session_id else {
        return refuse(
            "callback without a session (a login not started in this browser)".into(),
            "This login was not started in this browser, or it took too long. Start again.",
        );
    };
    let now = Instant::now();
    let Some(pending) = app.sessions.take_pending(id, now, state) else {
        return refuse(
            "state does not match a login started in this session (tampered, replayed or expired)"
                .into(),
            "This login was not started in this browser, was already used, or took too long. Start again.",
        );
    };
    if let Some(iss) = &query.iss
        && iss != oidc.issuer()
    {
        return refuse(
            format!("the authorization response names issuer {iss:?} (RFC 9207), not ours"),
            "The answer came from another identity provider. Start again.",
        );
    }
    if let Some(error) = &query.error {
        let description = query.error_description.as_deref().unwrap_or("");
        return refuse(
            format!("the identity provider said {error}: {description}"),
            &format!("The identity provider refused: {error} {description}"),
        );
    }
    let Some(code) = query.code.as_deref().filter(|c| !c.is_empty()) else {
        return refuse(
            "callback without code".into(),
            "The identity provider's answer has no code: start again.",
        );
    };
    let identity = match oidc.finish(code, &pending).await {
        Ok(i) => i,
        Err(e) => return refuse(e.to_string(), &e.to_string()),
    };
    let admin = app
        .settings
        .admins
        .iter()
        .any(|(iss, sub)| *iss == identity.issuer && *sub == identity.subject);
    let linked_dns = match app
        .portal
        .store()
        .dns_linked_by(&session::actor_name(&identity.issuer, &identity.subject))
        .await
    {
        Ok(dns) => dns,
        Err(e) => return store_failure(&ctx, &e),
    };
    let user = User {
        issuer: identity.issuer.clone(),
        subject: identity.subject.clone(),
        profile: IdentityProfile {
            idp: identity.idp.clone(),
            email: identity.email.clone(),
            name: identity.name.clone(),
            eppn: identity.eppn.clone(),
        },
        idp_name: identity.idp_name.clone(),
        identities: login_identities(&identity),
        linked_dns,
        admin,
    };
    let Some(new_id) = app.sessions.login(id, now, user) else {
        return error_page(
            &ctx,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Login failed",
            "No session could be made.",
        );
    };
    tracing::info!(client = %ctx.client, issuer = %identity.issuer, subject = %identity.subject, admin, "logged in");
    let mut response = see_other("/");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&app, &new_id));
    response
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

impl WithCsrf for CsrfForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn logout(
    State(app): State<Arc<App>>,
    Posted {
        visit: Visit { ctx, .. },
        ..
    }: Posted<CsrfForm>,
) -> Response {
    if let Some(id) = &ctx.session_id {
        app.sessions.remove(id);
    }
    if let Some(u) = ctx.user() {
        tracing::info!(client = %ctx.client, issuer = %u.issuer, subject = %u.subject, "logged out");
    }
    let mut response = see_other("/");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie(&app));
    response
}

#[derive(Deserialize)]
struct LinkForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    account: String,
    #[serde(default)]
    password: Zeroizing<String>,
}

impl WithCsrf for LinkForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn link(
    State(app): State<Arc<App>>,
    Posted {
        visit: Visit { ctx, peer, headers },
        form,
    }: Posted<LinkForm>,
) -> Response {
    let user = match require_user(&ctx) {
        Ok(u) => u.clone(),
        Err(r) => return r,
    };
    let who = user.actor_name();
    let proved = match &app.settings.proof {
        Proof::Header { name } => match header_account(&app, peer, &headers, name) {
            Some(named) if named == form.account.trim() => {
                proof::local_account(&named, app.settings.min_uid)
            }
            Some(named) => {
                tracing::warn!(client = %ctx.client, %who, "link refused: the form names {:?}, the sign-on {named:?}", form.account);
                Err(ProofError::Refused(form.account.clone()))
            }
            None => {
                tracing::warn!(client = %ctx.client, %who, "link refused: no account header from a trusted proxy");
                Err(ProofError::Refused(form.account.clone()))
            }
        },
        Proof::Dev { accounts } => prove_dev_account(
            &app,
            &ctx,
            &who,
            accounts,
            form.account.trim(),
            &form.password,
        ),
        Proof::Pam { service } => {
            prove_with_pam(
                &app,
                &ctx,
                &who,
                service,
                form.account.trim(),
                form.password,
            )
            .await
        }
    };
    let account = match proved {
        Ok(a) => a,
        Err(e) => {
            // the log says why; the page says the same for every account (ProofError::public)
            tracing::warn!(client = %ctx.client, %who, account = %form.account, "account proof refused: {e}");
            let status = match e {
                ProofError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
                ProofError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                ProofError::BadName(_)
                | ProofError::NoAccount(_)
                | ProofError::SystemAccount { .. }
                | ProofError::Refused(_) => StatusCode::FORBIDDEN,
            };
            return error_page(&ctx, status, "Account not proved", &e.public());
        }
    };
    let approval = app.settings.approval;
    let mut linked = Vec::new();
    let mut problems = Vec::new();
    for identity in &user.identities {
        let change = Change::Link {
            identity: identity.clone(),
            profile: user.profile.clone(),
            account: account.clone(),
            approval,
        };
        match app.portal.change(&ctx.actor(), &change, clock::now()).await {
            Ok(_) => {
                tracing::info!(client = %ctx.client, %who, %identity, %account, "linked");
                linked.push(identity.to_string());
            }
            Err(StoreError::AlreadyLinked { .. }) => {}
            Err(e @ (StoreError::Invalid(_) | StoreError::ExportRefused { .. })) => {
                tracing::warn!(client = %ctx.client, %who, %identity, %account, "link refused: {e}");
                problems.push(e.to_string());
            }
            Err(e) => return store_failure(&ctx, &e),
        }
    }
    let message = if !problems.is_empty() {
        format!("Some links were refused: {}", problems.join("; "))
    } else if linked.is_empty() {
        format!("Your identity was already linked to {account}.")
    } else if approval == Approval::AwaitAdmin {
        format!("Linked to {account}; an administrator must approve the link before it is used.")
    } else {
        format!("Linked to {account}. The login nodes use the link from their next update.")
    };
    done(&app, &ctx, "/", message)
}

/// The account's password through PAM. The attempt is counted first, before the account is
/// looked up (an unknown or system account costs an attempt as a wrong password does), and
/// the lookup and PAM run on a blocking thread ([`proof::prove_password`]).
async fn prove_with_pam(
    app: &App,
    ctx: &Ctx,
    who: &str,
    service: &str,
    name: &str,
    password: Zeroizing<String>,
) -> Result<AccountName, ProofError> {
    let account = AccountName::parse(name).map_err(|_| ProofError::BadName(name.to_string()))?;
    let keys = proof::attempt_keys(account.as_str(), who, ctx.client);
    let started = Instant::now();
    app.limiter.begin(&keys, started)?;
    let service = service.to_string();
    let rhost = ctx.client.to_string();
    let min_uid = app.settings.min_uid;
    let for_pam = account.clone();
    let result = tokio::task::spawn_blocking(move || {
        proof::prove_password(&service, &for_pam, password, min_uid, &rhost)
    })
    .await
    .map_err(|e| ProofError::Internal(format!("the PAM check stopped: {e}")))?;
    if result.is_ok() {
        app.limiter.succeeded(&keys, started);
    }
    result.map(|()| account)
}

/// `--dev`: the account is one of the dev accounts and the password its dev password; rate
/// limited as the PAM proof is.
fn prove_dev_account(
    app: &App,
    ctx: &Ctx,
    who: &str,
    accounts: &[DevAccount],
    name: &str,
    password: &str,
) -> Result<AccountName, ProofError> {
    let account = AccountName::parse(name).map_err(|_| ProofError::BadName(name.to_string()))?;
    let keys = proof::attempt_keys(account.as_str(), who, ctx.client);
    let started = Instant::now();
    app.limiter.begin(&keys, started)?;
    // memcmp::eq compares equal lengths only (and panics otherwise)
    let right = accounts.iter().any(|a| {
        a.name == name
            && !password.is_empty()
            && a.password.len() == password.len()
            && openssl::memcmp::eq(a.password.as_bytes(), password.as_bytes())
    });
    if right {
        app.limiter.succeeded(&keys, started);
        Ok(account)
    } else {
        Err(ProofError::Refused(name.to_string()))
    }
}

async fn ssh_page(State(app): State<Arc<App>>, Visit { ctx, .. }: Visit) -> Response {
    if app.ssh_ca.is_none() {
        return error_page(
            &ctx,
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such page.",
        );
    }
    if let Err(r) = require_user(&ctx) {
        return r;
    }
    let csrf = ctx.session.as_ref().map(|s| s.csrf.as_str()).unwrap_or("");
    html(
        StatusCode::OK,
        pages::ssh_certificate(csrf, None, None, &ctx.frame()),
    )
}

#[derive(Debug, Deserialize)]
struct SshForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    public_key: String,
    /// Accounts, separated by spaces or commas (empty: every linked account).
    #[serde(default)]
    principals: String,
    /// `key`: make a key pair for the user (the pasted key, if any, is not used).
    #[serde(default)]
    generate: String,
}

impl WithCsrf for SshForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn ssh_certificate(
    State(app): State<Arc<App>>,
    Posted {
        visit: Visit { ctx, .. },
        form,
    }: Posted<SshForm>,
) -> Response {
    let Some(ca) = &app.ssh_ca else {
        return error_page(
            &ctx,
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such page.",
        );
    };
    let user = match require_user(&ctx) {
        Ok(u) => u.clone(),
        Err(r) => return r,
    };
    let requested: Vec<String> = form
        .principals
        .split([' ', ','])
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    // a key pair made here goes out in this response only: never stored, never logged
    let made = if form.generate == "key" {
        let made = hpccert_core::trust::sshca::generate_user_key(&format!(
            "{} via {}",
            user.actor_name(),
            app.settings.url
        ))
        .and_then(|(private, public)| {
            public
                .to_openssh()
                .map(|text| (private, text))
                .map_err(|e| hpccert_core::trust::sshca::SshCaError::Random(e.to_string()))
        });
        match made {
            Ok(made) => Some(made),
            Err(e) => {
                tracing::error!(client = %ctx.client, "SSH key pair: {e}");
                return error_page(
                    &ctx,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "No key pair",
                    "The portal could not make a key pair; paste your own public key instead.",
                );
            }
        }
    } else {
        None
    };
    let public_key = made.as_ref().map_or(form.public_key.as_str(), |(_, p)| p);
    let result = ca
        .issue_for_session(
            &user.issuer,
            &user.subject,
            public_key,
            &requested,
            ctx.client,
            clock::now(),
        )
        .await;
    let csrf = ctx.session.as_ref().map(|s| s.csrf.as_str()).unwrap_or("");
    match result {
        Ok(cert) => html(
            StatusCode::OK,
            pages::ssh_certificate(
                csrf,
                Some(Ok(&cert)),
                made.as_ref().map(|(private, _)| private.as_str()),
                &ctx.frame(),
            ),
        ),
        Err(reason) => {
            tracing::warn!(client = %ctx.client, who = %user.actor_name(), "SSH certificate refused: {reason}");
            crate::metrics_refused("portal_session");
            html(
                StatusCode::FORBIDDEN,
                pages::ssh_certificate(csrf, Some(Err(&reason)), None, &ctx.frame()),
            )
        }
    }
}

#[derive(Debug, Deserialize)]
struct UnlinkForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    /// The token subject or the DN (slash form) of the identity.
    #[serde(default)]
    subject: String,
    #[serde(default)]
    account: String,
}

impl WithCsrf for UnlinkForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn unlink(
    State(app): State<Arc<App>>,
    Posted {
        visit: Visit { ctx, .. },
        form,
    }: Posted<UnlinkForm>,
) -> Response {
    let user = match require_user(&ctx) {
        Ok(u) => u.clone(),
        Err(r) => return r,
    };
    // only the user's own links: those its start page shows
    let mine = match visible_links(&app, &user).await {
        Ok(l) => l,
        Err(e) => return store_failure(&ctx, &e),
    };
    let account = AccountName::parse(form.account.trim()).ok();
    let identity = account.as_ref().and_then(|account| {
        mine.iter()
            .find(|l| {
                l.identity.kind().as_str() == form.kind
                    && l.identity.subject() == form.subject
                    && l.account == account.as_str()
            })
            .map(|l| l.identity.clone())
    });
    let (Some(identity), Some(account)) = (identity, account) else {
        tracing::warn!(client = %ctx.client, subject = %user.subject, kind = %form.kind, account = %form.account, "unlink refused: not one of the user's links or not an account");
        return error_page(
            &ctx,
            StatusCode::BAD_REQUEST,
            "Nothing removed",
            "That is not one of your links.",
        );
    };
    let change = Change::Unlink {
        identity: identity.clone(),
        account: account.clone(),
    };
    match app.portal.change(&ctx.actor(), &change, clock::now()).await {
        Ok(_) => {
            tracing::info!(client = %ctx.client, %identity, %account, "unlinked");
            done(
                &app,
                &ctx,
                "/",
                format!("The link to {account} is removed."),
            )
        }
        Err(e @ StoreError::NoSuchLink { .. } | e @ StoreError::NoSuchIdentity(_)) => {
            tracing::warn!(client = %ctx.client, %identity, %account, "unlink refused: {e}");
            error_page(
                &ctx,
                StatusCode::BAD_REQUEST,
                "Nothing removed",
                "That is not one of your links.",
            )
        }
        Err(e) => store_failure(&ctx, &e),
    }
}

#[derive(Deserialize)]
struct DnForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    signature: String,
    #[serde(default)]
    certificates: String,
}

impl WithCsrf for DnForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// A certificate DN proved by a signed challenge joins the session's identities (the link
/// form then links it). Every answer uses the challenge up, right or wrong.
async fn prove_dn(
    State(app): State<Arc<App>>,
    Posted {
        visit: Visit { ctx, .. },
        form,
    }: Posted<DnForm>,
) -> Response {
    let user = match require_user(&ctx) {
        Ok(u) => u.clone(),
        Err(r) => return r,
    };
    let (Some(trust), Some(id)) = (&app.settings.certificate_dns, &ctx.session_id) else {
        tracing::warn!(client = %ctx.client, subject = %user.subject, "DN proof refused: [portal] certificate_dns is off");
        return error_page(
            &ctx,
            StatusCode::NOT_FOUND,
            "Not available",
            "This portal does not link certificate DNs other than the one your identity provider names.",
        );
    };
    let who = user.actor_name();
    let refuse = |e: dnproof::DnProofError| {
        if let dnproof::DnProofError::Trust(_) = e {
            // the server's own fault, and its paths are not the user's business
            tracing::error!(client = %ctx.client, %who, "DN proof failed: {e}");
            return error_page(
                &ctx,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Certificate DN not proved",
                "The portal cannot read its trusted certificate authorities now; try again later.",
            );
        }
        tracing::warn!(client = %ctx.client, %who, "DN proof refused: {e}");
        error_page(
            &ctx,
            StatusCode::FORBIDDEN,
            "Certificate DN not proved",
            &e.to_string(),
        )
    };
    let Some(challenge) = app.sessions.take_dn_challenge(id, Instant::now()) else {
        return refuse(dnproof::DnProofError::NoChallenge);
    };
    let trust = trust.clone();
    let checked = tokio::task::spawn_blocking(move || {
        dnproof::verify(
            &trust,
            &challenge.text,
            &form.certificates,
            &form.signature,
            clock::now(),
        )
    })
    .await;
    let dn = match checked {
        Ok(Ok(dn)) => dn,
        Ok(Err(e)) => return refuse(e),
        Err(e) => {
            tracing::error!(client = %ctx.client, %who, "DN proof stopped: {e}");
            return error_page(
                &ctx,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Certificate DN not proved",
                "The check stopped; try again.",
            );
        }
    };
    let identity = match IdentityKey::dn(&dn.to_slash()) {
        Ok(k) => k,
        Err(e) => return refuse(dnproof::DnProofError::Certificates(e.to_string())),
    };
    if !app
        .sessions
        .add_identity(id, Instant::now(), identity.clone())
    {
        return error_page(
            &ctx,
            StatusCode::FORBIDDEN,
            "Certificate DN not proved",
            "Your session ended: log in again.",
        );
    }
    tracing::info!(client = %ctx.client, %who, %identity, "certificate DN proved by a signed challenge");
    done(
        &app,
        &ctx,
        "/",
        format!(
            "You proved the certificate DN {}. Link it to your account with the form \"Link a local account\".",
            identity.subject()
        ),
    )
}

#[derive(Debug, Deserialize)]
struct AdminQuery {
    #[serde(default)]
    q: String,
}

async fn admin(
    State(app): State<Arc<App>>,
    Visit { ctx, .. }: Visit,
    Query(query): Query<AdminQuery>,
) -> Response {
    if let Err(r) = require_admin(&ctx) {
        return r;
    }
    let search = query.q.trim();
    let links = match app
        .portal
        .store()
        .links((!search.is_empty()).then_some(search))
        .await
    {
        Ok(l) => l,
        Err(e) => return store_failure(&ctx, &e),
    };
    let suspensions = match app.portal.store().suspensions().await {
        Ok(s) => s,
        Err(e) => return store_failure(&ctx, &e),
    };
    // the SSH CA's certificates that are still valid (the newest 200)
    let now = hpccert_core::clock::unix_seconds(clock::now());
    let certificates: Vec<_> = match app.portal.store().certificates().await {
        Ok(c) => c
            .into_iter()
            .filter(|c| c.valid_before > now)
            .take(200)
            .collect(),
        Err(e) => return store_failure(&ctx, &e),
    };
    let csrf = ctx
        .session
        .as_ref()
        .map(|s| s.csrf.clone())
        .unwrap_or_default();
    let view = pages::AdminView {
        csrf: &csrf,
        search,
        links: &links,
        suspensions: &suspensions,
        certificates: &certificates,
    };
    html(StatusCode::OK, pages::admin(&view, &ctx.frame()))
}

async fn audit(State(app): State<Arc<App>>, Visit { ctx, .. }: Visit) -> Response {
    if let Err(r) = require_admin(&ctx) {
        return r;
    }
    match app.portal.store().audit(500).await {
        Ok(entries) => html(StatusCode::OK, pages::audit(&entries, &ctx.frame())),
        Err(e) => store_failure(&ctx, &e),
    }
}

#[derive(Debug, Deserialize)]
struct IdentityForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    account: String,
    #[serde(default)]
    reason: String,
    /// An SSH certificate's serial (revoke).
    #[serde(default)]
    serial: String,
}

impl WithCsrf for IdentityForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl IdentityForm {
    fn identity(&self) -> Result<IdentityKey, StoreError> {
        match self.kind.as_str() {
            "token" => IdentityKey::token(&self.issuer, &self.subject),
            "dn" => IdentityKey::dn(&self.subject),
            other => Err(StoreError::Invalid(format!("identity kind {other:?}"))),
        }
    }

    fn account(&self) -> Result<AccountName, StoreError> {
        AccountName::parse(self.account.trim()).map_err(StoreError::Invalid)
    }

    fn suspension_target(&self) -> Result<SuspensionTarget, StoreError> {
        match self.target.as_str() {
            "identity" => self.identity().map(SuspensionTarget::Identity),
            "account" => self.account().map(SuspensionTarget::Account),
            other => Err(StoreError::Invalid(format!("suspension target {other:?}"))),
        }
    }
}

/// An admin's change: checks, applies, reports.
async fn admin_change(
    app: Arc<App>,
    Posted { visit, form }: Posted<IdentityForm>,
    make: fn(&IdentityForm) -> Result<Change, StoreError>,
) -> Response {
    let ctx = visit.ctx;
    if let Err(r) = require_admin(&ctx) {
        return r;
    }
    let change = match make(&form) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(client = %ctx.client, "admin change refused: {e}");
            return error_page(&ctx, StatusCode::BAD_REQUEST, "Not changed", &e.to_string());
        }
    };
    match app.portal.change(&ctx.actor(), &change, clock::now()).await {
        Ok(published) => {
            tracing::info!(client = %ctx.client, actor = %ctx.actor().name, action = change.action(), target = %change.target(), serial = published.serial, "admin change");
            done(
                &app,
                &ctx,
                "/admin",
                format!("Done: {} {}.", change.action(), change.target()),
            )
        }
        Err(e @ (StoreError::Database(_) | StoreError::Migrate(_) | StoreError::Corrupt(_))) => {
            store_failure(&ctx, &e)
        }
        Err(e) => {
            tracing::warn!(client = %ctx.client, action = change.action(), target = %change.target(), "admin change refused: {e}");
            error_page(&ctx, StatusCode::BAD_REQUEST, "Not changed", &e.to_string())
        }
    }
}

async fn approve(State(app): State<Arc<App>>, posted: Posted<IdentityForm>) -> Response {
    admin_change(app, posted, |f| {
        Ok(Change::Approve {
            identity: f.identity()?,
            account: f.account()?,
        })
    })
    .await
}

async fn suspend(State(app): State<Arc<App>>, posted: Posted<IdentityForm>) -> Response {
    admin_change(app, posted, |f| {
        let reason = f.reason.trim();
        if reason.is_empty() {
            return Err(StoreError::Invalid("a suspension needs a reason".into()));
        }
        Ok(Change::Suspend {
            target: f.suspension_target()?,
            reason: reason.to_string(),
        })
    })
    .await
}

async fn revoke_certificate(State(app): State<Arc<App>>, posted: Posted<IdentityForm>) -> Response {
    admin_change(app, posted, |f| {
        let serial = f.serial.trim().parse::<u64>().map_err(|_| {
            StoreError::Invalid(format!("{:?} is not a certificate serial", f.serial))
        })?;
        let reason = f.reason.trim();
        if reason.is_empty() {
            return Err(StoreError::Invalid("a revocation needs a reason".into()));
        }
        Ok(Change::RevokeCertificate {
            serial,
            reason: reason.to_string(),
        })
    })
    .await
}

async fn unsuspend(State(app): State<Arc<App>>, posted: Posted<IdentityForm>) -> Response {
    admin_change(app, posted, |f| {
        Ok(Change::Unsuspend {
            target: f.suspension_target()?,
        })
    })
    .await
}

async fn stylesheet() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        pages::STYLESHEET,
    )
        .into_response()
}

async fn not_found(Visit { ctx, .. }: Visit) -> Response {
    error_page(
        &ctx,
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(proxies: &[&str]) -> WebSettings {
        WebSettings {
            url: "https://portal.example.org".into(),
            trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
            approval: Approval::Immediate,
            proof: Proof::Pam {
                service: "mapping-portal".into(),
            },
            min_uid: 1000,
            admins: vec![],
            certificate_dns: None,
            dev: false,
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.1, 10.0.0.2"),
        );
        let s = settings(&["10.0.0.1", "10.0.0.2"]);
        assert_eq!(
            client_addr(&s, "192.0.2.5".parse().unwrap(), &h),
            "192.0.2.5".parse::<IpAddr>().unwrap()
        );
        // from a trusted proxy: the right-most untrusted address (a client cannot spoof past it)
        assert_eq!(
            client_addr(&s, "10.0.0.1".parse().unwrap(), &h),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn origin_and_cookie_follow_the_url() {
        let s = settings(&[]);
        assert_eq!(s.origin(), "https://portal.example.org");
        assert_eq!(s.cookie_name(), "__Host-hpccert-portal");
        let mut s = settings(&[]);
        s.url = "http://127.0.0.1:8443/portal".into();
        assert_eq!(s.origin(), "http://127.0.0.1:8443");
        assert_eq!(s.cookie_name(), "hpccert-portal");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; hpccert-portal=abc; b=2"),
        );
        assert_eq!(cookie_value(&h, "hpccert-portal").as_deref(), Some("abc"));
        assert_eq!(cookie_value(&h, "x"), None);
    }
}
