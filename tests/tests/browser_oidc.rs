//! A person's OpenID Connect login at the test provider, in a real browser: headless Chromium
//! (driven through chromedriver by `hpccert_e2e::browser`) follows the authorization request
//! of the confidential web client `hpc-portal` (the mapping portal's client) through the
//! provider's login and consent pages to the client's callback, a tiny HTTP listener of this
//! test. The code is then redeemed as a web application does (client_secret_basic + PKCE
//! code verifier), and the ID token (RS256, checked against the provider's published keys)
//! and userinfo must carry CILogon's claims. Codes are single use and bound to the verifier.
//!
//! Screenshots of each page: `target/test-artifacts/portal_login_through_a_browser/`.
//!
//! Without Chromium, chromedriver, node or `tests/oidc/node_modules` this test skips, unless
//! `HPCCERT_E2E_REQUIRED=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hpccert_e2e::browser::{Browser, PHONE, browser_available};
use hpccert_e2e::free_port;
use hpccert_e2e::oidc::{
    PORTAL, PORTAL_SCOPE, Provider, account_claims, account_dn, claims, provider_available,
    random_bytes, write_jwks,
};
use serde_json::Value;

const KID: &str = "portal-test-key";
/// The claims a portal reads (CILogon's, and email).
const CILOGON_CLAIMS: [&str; 9] = [
    "sub",
    "email",
    "email_verified",
    "name",
    "cert_subject_dn",
    "eppn",
    "idp",
    "idp_name",
    "isMemberOf",
];

/// The client's callback: answers every request with 200 "callback received" and reports
/// each request line.
fn callback_listener() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // the rest of the head
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = "callback received";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if tx.send(request_line.trim_end().to_string()).is_err() {
                break;
            }
        }
    });
    (port, rx)
}

/// The JSON body of a response.
fn json(resp: reqwest::blocking::Response) -> Value {
    let bytes = resp.bytes().unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// The next request line for `path` (others, like /favicon.ico, are skipped).
fn next_request(rx: &mpsc::Receiver<String>, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no request for {path} at the callback: {e}"));
        if line.starts_with(&format!("GET {path}?")) {
            return line;
        }
    }
}

/// An authorization request of the portal: (URL, state, nonce, code verifier).
struct AuthRequest {
    url: String,
    state: String,
    nonce: String,
    verifier: String,
}

fn auth_request(issuer: &str, redirect: &str) -> AuthRequest {
    let verifier = B64URL.encode(random_bytes(32));
    let challenge = B64URL.encode(openssl::sha::sha256(verifier.as_bytes()));
    let state = B64URL.encode(random_bytes(12));
    let nonce = B64URL.encode(random_bytes(12));
    let url = reqwest::Url::parse_with_params(
        &format!("{issuer}/auth"),
        &[
            ("client_id", PORTAL.0),
            ("response_type", "code"),
            ("redirect_uri", redirect),
            ("scope", PORTAL_SCOPE),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", &state),
            ("nonce", &nonce),
        ],
    )
    .unwrap()
    .to_string();
    AuthRequest {
        url,
        state,
        nonce,
        verifier,
    }
}

/// The query of the callback request line `GET /login/callback?... HTTP/1.1`.
fn callback_query(request_line: &str) -> BTreeMap<String, String> {
    let target = request_line.split(' ').nth(1).unwrap();
    let url = reqwest::Url::parse(&format!("http://callback{target}")).unwrap();
    url.query_pairs().into_owned().collect()
}

/// POST /token for a code as the portal: (HTTP status, JSON body).
fn redeem(issuer: &str, redirect: &str, code: &str, verifier: Option<&str>) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v));
    }
    let resp = Provider::http()
        .post(format!("{issuer}/token"))
        .basic_auth(PORTAL.0, Some(PORTAL.1))
        .form(&form)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, json(resp))
}

/// Whether the JWS `token` is signed RS256 by one of the keys of the JWKS `jwks`.
fn rs256_valid(token: &str, jwks: &Value) -> bool {
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let header: Value = serde_json::from_slice(
        &B64URL
            .decode(signing_input.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "RS256", "{header}");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap_or_else(|| panic!("no key {} in {jwks}", header["kid"]));
    let bn = |member: &str| {
        openssl::bn::BigNum::from_slice(&B64URL.decode(jwk[member].as_str().unwrap()).unwrap())
            .unwrap()
    };
    let rsa = openssl::rsa::Rsa::from_public_components(bn("n"), bn("e")).unwrap();
    let key = openssl::pkey::PKey::from_rsa(rsa).unwrap();
    let mut verifier =
        openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &key).unwrap();
    verifier.update(signing_input.as_bytes()).unwrap();
    verifier
        .verify(&B64URL.decode(signature).unwrap())
        .unwrap_or(false)
}

#[test]
fn portal_login_through_a_browser() {
    if !provider_available() || !browser_available() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    write_jwks(&jwks_file, KID);
    let (callback_port, requests) = callback_listener();
    let redirect = format!("http://127.0.0.1:{callback_port}/login/callback");
    let provider = Provider::start_with(
        dir.path(),
        free_port(),
        &jwks_file,
        &["--portal-redirect", &redirect],
    );
    let issuer = provider.issuer();
    let http = Provider::http();
    let discovery = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .unwrap();
    let discovery = json(discovery);
    let jwks = json(
        http.get(discovery["jwks_uri"].as_str().unwrap())
            .send()
            .unwrap(),
    );
    for scope in PORTAL_SCOPE.split(' ') {
        assert!(
            discovery["scopes_supported"]
                .as_array()
                .unwrap()
                .contains(&Value::from(scope)),
            "{scope} not in {discovery}"
        );
    }

    let browser = Browser::start();
    let browser_ready = started.elapsed();

    // the provider's login page
    let first = auth_request(&issuer, &redirect);
    browser.goto(&first.url);
    browser.wait_for("input[name=login]");
    assert!(
        browser
            .current_url()
            .starts_with(&format!("{issuer}/interaction/")),
        "{}",
        browser.current_url()
    );
    assert_eq!(browser.text("h1"), "Sign-in");
    browser.fill("input[name=login]", "alice");
    browser.fill("input[name=password]", "any password");
    let login = browser.screenshot("provider-login");
    browser.submit_form("form");

    // the consent page lists what the portal asks for (but openid, which the login gave)
    browser.wait_for("input[name=prompt][value=consent]");
    assert_eq!(browser.text("h1"), "Authorize");
    let listed = browser.find_all_text(".login-card li");
    for scope in ["email", "profile", "org.cilogon.userinfo"] {
        assert!(
            listed.iter().any(|l| l == scope),
            "{scope} not in {listed:?}"
        );
    }
    let consent = browser.screenshot("provider-consent");
    browser.submit_form("form");

    // back at the portal's callback, with a code and the state
    let landed = browser.wait_for_url_prefix(&redirect);
    assert_eq!(browser.text("body"), "callback received");
    let callback = browser.screenshot("callback");
    let request_line = next_request(&requests, "/login/callback");
    assert!(request_line.ends_with(" HTTP/1.1"), "{request_line}");
    let query = callback_query(&request_line);
    assert_eq!(query.get("state"), Some(&first.state), "{request_line}");
    assert_eq!(query.get("iss"), Some(&issuer), "{request_line}"); // RFC 9207
    let code = query.get("code").expect("a code").clone();
    let landed_query: BTreeMap<String, String> = reqwest::Url::parse(&landed)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(
        landed_query, query,
        "what the browser shows is what the listener got"
    );
    let login_done = started.elapsed();

    for png in [&login, &consent, &callback] {
        let bytes = std::fs::read(png).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", png.display());
        assert!(
            bytes.len() > 1000,
            "{}: {} bytes",
            png.display(),
            bytes.len()
        );
    }

    // the web application redeems the code with its secret and the PKCE verifier
    let (status, tokens) = redeem(&issuer, &redirect, &code, Some(&first.verifier));
    assert_eq!(status, 200, "{tokens}\n{}", provider.log_text());
    assert_eq!(tokens["token_type"], "Bearer", "{tokens}");
    assert_eq!(tokens["scope"], PORTAL_SCOPE, "{tokens}");
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    let access_token = tokens["access_token"].as_str().unwrap();
    // an opaque token for userinfo, not a JWT for the resource
    assert!(!access_token.contains('.'), "{access_token}");
    let id_token = tokens["id_token"].as_str().unwrap();

    // the ID token: signed RS256 with the provider's published key, for this login
    let header: Value =
        serde_json::from_slice(&B64URL.decode(id_token.split('.').next().unwrap()).unwrap())
            .unwrap();
    assert_eq!(header["kid"], KID, "{header}");
    assert!(rs256_valid(id_token, &jwks), "ID token signature");
    // another signature (its first character changed: the last one has padding bits)
    let (signed, signature) = id_token.rsplit_once('.').unwrap();
    let other = if signature.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{signed}.{other}{}", &signature[1..]);
    assert!(
        !rs256_valid(&tampered, &jwks),
        "a changed signature still verifies"
    );
    let id = claims(id_token);
    eprintln!("ID token header {header}\nclaims {id}");
    assert_eq!(id["iss"], issuer, "{id}");
    assert_eq!(id["aud"], PORTAL.0, "{id}");
    assert_eq!(id["nonce"], first.nonce, "{id}");
    assert_eq!(id["sub"], "alice", "{id}");
    let now = u64::try_from(hpccert_core::clock::unix_seconds(hpccert_core::clock::now())).unwrap();
    let (iat, exp) = (id["iat"].as_u64().unwrap(), id["exp"].as_u64().unwrap());
    assert!(iat.abs_diff(now) < 60 && exp > now, "{id}");
    // CILogon's claims are in the ID token itself (conformIdTokenClaims false)
    let expected = account_claims("alice");
    for claim in CILOGON_CLAIMS {
        assert_eq!(id[claim], expected[claim], "{claim} in the ID token {id}");
    }
    assert_eq!(
        id["cert_subject_dn"].as_str().unwrap(),
        account_dn("alice"),
        "{id}"
    );
    assert!(
        account_dn("alice")
            .starts_with("/DC=org/DC=cilogon/C=US/O=Example University/CN=Test User alice A")
            && account_dn("alice") != account_dn("bob")
    );

    // userinfo with the access token: the same claims
    let resp = http
        .get(discovery["userinfo_endpoint"].as_str().unwrap())
        .bearer_auth(access_token)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let userinfo = json(resp);
    eprintln!("userinfo {userinfo}");
    for claim in CILOGON_CLAIMS {
        assert_eq!(
            userinfo[claim], expected[claim],
            "{claim} at userinfo {userinfo}"
        );
    }
    // and a token it did not issue is refused there
    let resp = http
        .get(discovery["userinfo_endpoint"].as_str().unwrap())
        .bearer_auth(B64URL.encode(random_bytes(32)))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // a code is single use, and its replay revokes what it gave (RFC 6749 4.1.2): the grant
    // and so the access token
    let (status, body) = redeem(&issuer, &redirect, &code, Some(&first.verifier));
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let resp = http
        .get(discovery["userinfo_endpoint"].as_str().unwrap())
        .bearer_auth(access_token)
        .send()
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        401,
        "a revoked access token at userinfo"
    );

    // a second login in the same browser: the provider's session stands (no login page), but
    // the grant was revoked, so it asks for consent again; that code needs its verifier
    let cookies = browser.cookies();
    let session = cookies
        .iter()
        .find(|c| c.name == "_session")
        .unwrap_or_else(|| panic!("no provider session cookie in {cookies:?}"));
    assert!(session.http_only, "{session:?}");
    let second = auth_request(&issuer, &redirect);
    browser.goto(&second.url);
    browser.wait_for("input[name=prompt][value=consent]");
    assert!(!browser.is_present("input[name=login]"));
    browser.submit_form("form");
    browser.wait_for_url_prefix(&redirect);
    let query = callback_query(&next_request(&requests, "/login/callback"));
    assert_eq!(query.get("state"), Some(&second.state));
    let code = &query["code"];
    let (status, body) = redeem(&issuer, &redirect, code, None);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    // nor with another client's secret
    let resp = http
        .post(format!("{issuer}/token"))
        .basic_auth(PORTAL.0, Some("not-the-secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("code_verifier", second.verifier.as_str()),
        ])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body = json(resp);
    assert_eq!(body["error"], "invalid_client", "{body}");

    // without cookies the provider asks for a login again; on a phone's screen
    browser.delete_all_cookies();
    assert!(browser.cookies().is_empty());
    browser.set_viewport_size(PHONE.0, PHONE.1);
    browser.goto(&auth_request(&issuer, &redirect).url);
    browser.wait_for("input[name=login]");
    assert_eq!(
        browser.viewport_size(),
        (u64::from(PHONE.0), u64::from(PHONE.1))
    );
    let phone = browser.screenshot("provider-login-phone");
    let png = std::fs::read(&phone).unwrap();
    // the PNG's IHDR: width and height, big-endian, at bytes 16..24
    let png_size = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert_eq!(png_size, PHONE, "{}", phone.display());

    // the browser reaches loopback only: another host fails at the dead proxy (a .invalid
    // name, which no resolver knows, in case it did not)
    let err = browser.with_client(|c| c.goto("http://portal.invalid/"));
    let err = err.expect_err("a page beyond loopback loaded").to_string();
    assert!(err.contains("ERR_PROXY_CONNECTION_FAILED"), "{err}");

    drop(browser);
    eprintln!(
        "timing: browser ready {browser_ready:?}, first login done {login_done:?}, all {:?}",
        started.elapsed()
    );
}
