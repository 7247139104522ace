//! The dev identity provider of `mapping-portal --dev` as an OpenID provider: discovery, the
//! code flow with PKCE for the registered client and redirect URI only, single-use codes,
//! ID tokens that verify with its JWKS, and WLCG access tokens that hpccert-core's token
//! validation accepts with those keys (as sshd-gsi does in the demo).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mapping_portal::web::devidp::{self, CLIENT_ID, DEV_AUDIENCE, DevIdp};
use reqwest::StatusCode;
use serde_json::Value;

struct Server {
    base: String,
    idp: Arc<DevIdp>,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let idp =
        Arc::new(DevIdp::open(&base, &dir.path().join("idp"), hpccert_core::clock::now()).unwrap());
    let router = devidp::router(Arc::clone(&idp));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Server {
        base,
        idp,
        _dir: dir,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-and-more";

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(openssl::sha::sha256(verifier.as_bytes()))
}

/// The authorization parameters of the portal's own login.
fn params(s: &Server, login: &str) -> Vec<(&'static str, String)> {
    vec![
        ("response_type", "code".into()),
        ("client_id", CLIENT_ID.into()),
        ("redirect_uri", format!("{}/login/callback", s.base)),
        ("state", "st4te".into()),
        ("nonce", "n0nce".into()),
        ("code_challenge", challenge(VERIFIER)),
        ("code_challenge_method", "S256".into()),
        ("scope", "openid email".into()),
        ("login", login.into()),
    ]
}

/// Pick a researcher; the code from the redirect.
async fn code_for(s: &Server, form: &[(&'static str, String)]) -> reqwest::Response {
    client()
        .post(format!("{}/dev-idp/authorize", s.base))
        .form(form)
        .send()
        .await
        .unwrap()
}

fn code_of(location: &str) -> String {
    let q = location.split_once('?').unwrap().1;
    q.split('&')
        .find_map(|kv| kv.strip_prefix("code="))
        .unwrap()
        .to_string()
}

async fn exchange(s: &Server, code: &str, verifier: &str, redirect: &str) -> reqwest::Response {
    client()
        .post(format!("{}/dev-idp/token", s.base))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", redirect),
            ("client_id", CLIENT_ID),
        ])
        .send()
        .await
        .unwrap()
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn the_code_flow_gives_tokens_that_verify_and_a_code_is_used_once() {
    let s = start().await;
    let meta: Value = client()
        .get(format!(
            "{}/dev-idp/.well-known/openid-configuration",
            s.base
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(meta["issuer"], format!("{}/dev-idp", s.base));
    assert_eq!(meta["code_challenge_methods_supported"][0], "S256");

    let page = client()
        .get(format!("{}/dev-idp/authorize", s.base))
        .query(&params(&s, "")[..8])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("Development identity provider"), "{html}");
    assert!(html.contains("login-ada"), "{html}");

    let r = code_for(&s, &params(&s, "ada")).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("{}/login/callback?code=", s.base)),
        "{location}"
    );
    assert!(location.ends_with("&state=st4te"), "{location}");
    let code = code_of(&location);
    let redirect = format!("{}/login/callback", s.base);
    let r = exchange(&s, &code, VERIFIER, &redirect).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let id = claims(body["id_token"].as_str().unwrap());
    assert_eq!(id["aud"], CLIENT_ID);
    assert_eq!(id["nonce"], "n0nce");
    assert_eq!(id["sub"], "http://cilogon.org/serverD/users/1001");
    assert_eq!(
        id["cert_subject_dn"],
        "/DC=org/DC=hpccert-dev/C=US/O=Dev University/CN=Ada Lovelace A1001"
    );

    // the access token verifies with the provider's JWKS file, for the dev audience
    let access = body["access_token"].as_str().unwrap();
    let text = format!(
        "version = 1\n[[issuer]]\nissuer = \"{}\"\naudiences = [\"{DEV_AUDIENCE}\"]\nalgorithms = [\"RS256\"]\nprofile = \"wlcg\"\njwks_file = \"{}\"\n",
        s.idp.issuer(),
        s.idp.files().jwks.display()
    );
    let config =
        hpccert_core::config::Config::parse(&text, std::path::Path::new("test.toml")).unwrap();
    let verified = hpccert_core::token::verify_token(
        access,
        &config.issuer_policies(),
        &config.file_key_source(),
        config.tokens.max_token_bytes,
        hpccert_core::clock::now(),
    );
    assert!(verified.is_ok(), "{verified:?}");

    // the same code again: refused
    let r = exchange(&s, &code, VERIFIER, &redirect).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn wrong_verifier_client_or_redirect_is_refused() {
    let s = start().await;
    let redirect = format!("{}/login/callback", s.base);

    // a wrong PKCE verifier: refused, and the code is spent
    let location = code_for(&s, &params(&s, "grace")).await.headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    let code = code_of(&location);
    let wrong = "x".repeat(50);
    let r = exchange(&s, &code, &wrong, &redirect).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert!(
        body["error_description"].as_str().unwrap().contains("PKCE"),
        "{body}"
    );
    assert_eq!(
        exchange(&s, &code, VERIFIER, &redirect).await.status(),
        StatusCode::BAD_REQUEST
    );

    // a redirect URI that is not registered, another client, no PKCE, an unknown researcher:
    // no code is given
    for (field, value) in [
        ("redirect_uri", "http://127.0.0.1:1/steal".to_string()),
        ("client_id", "someone-else".to_string()),
        ("code_challenge_method", "plain".to_string()),
        ("login", "mallory".to_string()),
    ] {
        let mut p = params(&s, "ada");
        for kv in p.iter_mut().filter(|kv| kv.0 == field) {
            kv.1 = value.clone();
        }
        let r = code_for(&s, &p).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{field}={value}");
        assert!(r.headers().get("location").is_none());
    }

    // the exchange with another redirect URI than the authorization's
    let location = code_for(&s, &params(&s, "ada")).await.headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    let r = exchange(
        &s,
        &code_of(&location),
        VERIFIER,
        "http://127.0.0.1:1/other",
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // the access-token page knows only the dev researchers
    let r = client()
        .get(format!("{}/dev-idp/access-token/nobody", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
