//! The flows a command-line client (`hpccert login`) uses against the test provider, done here
//! with reqwest and the browser harness alone, so that the provider and the harness are known
//! to work before a client is tested with them:
//!
//! - the device authorization grant (RFC 8628) of the public client `hpc-cli`: the user's side
//!   in headless Chromium (`oidc::complete_device_flow`), the device polling; a JWT access
//!   token for the resource, an ID token with `openid`; `slow_down` for a poll sooner than the
//!   interval; a refusal at the consent page (`oidc::deny_device_flow`) or at the code's
//!   confirmation (`oidc::abort_device_flow`) gives `access_denied`;
//! - authorization code + PKCE S256 with a loopback listener on a random port
//!   (`http://127.0.0.1:PORT/`, RFC 8252 7.3), the browser driven by
//!   `oidc::complete_code_flow`;
//! - client credentials of `hpc-robot-jwt`, authenticated by an RFC 7523 `private_key_jwt`
//!   assertion (RSA and EC P-256 keys).
//!
//! Screenshots: `target/test-artifacts/<test>/`. Without node, `tests/oidc/node_modules`,
//! Chromium or chromedriver these tests skip, unless `HPCCERT_E2E_REQUIRED=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hpccert_e2e::browser::{Browser, browser_available};
use hpccert_e2e::free_port;
use hpccert_e2e::oidc::{
    AUDIENCE, CLI_CLIENT, CLI_LOOPBACK, ClientKey, DEVICE_CODE_GRANT, DEVICE_INTERVAL,
    JWT_BEARER_ASSERTION, KeyKind, Provider, ROBOT, ROBOT_JWT_CLIENT, SCOPE, SLOW_DOWN_STEP,
    abort_device_flow, claims, client_assertion, complete_code_flow, complete_device_flow,
    deny_device_flow, provider_available, random_bytes, write_client_key, write_jwks,
};
use serde_json::Value;

/// The device interval these tests start the provider with (seconds).
const INTERVAL: u64 = 1;

fn start_provider(dir: &Path, options: &[&str]) -> Provider {
    let jwks = dir.join("jwks.json");
    write_jwks(&jwks, "client-flows");
    Provider::start_with(dir, free_port(), &jwks, options)
}

/// The JSON body of a response, with its status.
fn json(resp: reqwest::blocking::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, body)
}

/// POST /device/auth as hpc-cli: the device authorization answer (checked).
fn device_start(provider: &Provider, scope: &str, resource: Option<&str>) -> Value {
    let mut form = vec![("client_id", CLI_CLIENT), ("scope", scope)];
    if let Some(r) = resource {
        form.push(("resource", r));
    }
    let (status, body) = json(
        Provider::http()
            .post(format!("{}/device/auth", provider.issuer()))
            .form(&form)
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{body}\n{}", provider.log_text());
    let issuer = provider.issuer();
    let user_code = body["user_code"].as_str().unwrap();
    assert_eq!(
        body["verification_uri"],
        format!("{issuer}/device"),
        "{body}"
    );
    assert_eq!(
        body["verification_uri_complete"],
        format!("{issuer}/device?user_code={user_code}"),
        "{body}"
    );
    assert_eq!(body["interval"], INTERVAL, "{body}");
    assert!(body["expires_in"].as_u64().unwrap() >= 300, "{body}");
    assert!(body["device_code"].as_str().unwrap().len() >= 20, "{body}");
    body
}

/// One poll of the token endpoint for `device_code`: (status, body).
fn poll(provider: &Provider, device_code: &str) -> (u16, Value) {
    json(
        Provider::http()
            .post(format!("{}/token", provider.issuer()))
            .form(&[
                ("grant_type", DEVICE_CODE_GRANT),
                ("client_id", CLI_CLIENT),
                ("device_code", device_code),
            ])
            .send()
            .unwrap(),
    )
}

/// The error of a 400 answer.
fn error(answer: &(u16, Value)) -> &str {
    assert_eq!(answer.0, 400, "{}", answer.1);
    answer.1["error"].as_str().unwrap()
}

/// Checks of a JWT access token for the resource, as hpc-cli's code flow gets them: RFC 9068
/// (typ at+jwt), RS256 by the provider's key, aud the resource, the WLCG claims.
fn assert_resource_token(token: &str, issuer: &str, sub: &str) -> Value {
    let header: Value =
        serde_json::from_slice(&B64URL.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["typ"], "at+jwt", "{header}");
    assert_eq!(header["alg"], "RS256", "{header}");
    assert_eq!(header["kid"], "client-flows", "{header}");
    let c = claims(token);
    assert_eq!(c["iss"], issuer, "{c}");
    assert_eq!(c["aud"], AUDIENCE, "{c}");
    assert_eq!(c["sub"], sub, "{c}");
    assert_eq!(c["scope"], SCOPE, "{c}");
    assert_eq!(c["wlcg.ver"], "1.0", "{c}");
    assert_eq!(
        c["wlcg.groups"],
        serde_json::json!(["/hpc", "/hpc/users"]),
        "{c}"
    );
    c
}

/// The successful token answer of a device flow for `login`: a JWT for the resource; with
/// `openid`, an ID token for hpc-cli. Returns the access token's claims.
fn assert_device_tokens(
    provider: &Provider,
    answer: &(u16, Value),
    login: &str,
    openid: bool,
) -> Value {
    let (status, body) = answer;
    assert_eq!(*status, 200, "{body}\n{}", provider.log_text());
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert_eq!(body["scope"], SCOPE, "{body}");
    assert!(body.get("refresh_token").is_none(), "{body}");
    let c = assert_resource_token(
        body["access_token"].as_str().unwrap(),
        &provider.issuer(),
        login,
    );
    assert_eq!(c["client_id"], CLI_CLIENT, "{c}");
    if openid {
        let id = claims(body["id_token"].as_str().unwrap());
        assert_eq!(id["iss"], provider.issuer(), "{id}");
        assert_eq!(id["aud"], CLI_CLIENT, "{id}");
        assert_eq!(id["sub"], login, "{id}");
    } else {
        assert!(body.get("id_token").is_none(), "{body}");
    }
    c
}

#[test]
fn device_flow_gets_a_jwt_for_the_resource_and_slow_down_when_polled_too_fast() {
    if !provider_available() || !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let provider = start_provider(dir.path(), &["--device-interval", &INTERVAL.to_string()]);
    let issuer = provider.issuer();
    let discovery = json(
        Provider::http()
            .get(format!("{issuer}/.well-known/openid-configuration"))
            .send()
            .unwrap(),
    )
    .1;
    assert_eq!(
        discovery["device_authorization_endpoint"],
        format!("{issuer}/device/auth")
    );
    assert!(
        discovery["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&Value::from(DEVICE_CODE_GRANT)),
        "{discovery}"
    );

    // without a resource parameter (the default resource) and with openid
    let start = device_start(&provider, &format!("openid {SCOPE}"), None);
    let device_code = start["device_code"].as_str().unwrap();
    assert_eq!(
        error(&poll(&provider, device_code)),
        "authorization_pending"
    );
    // at once again: too fast, and the interval grows by 5 s
    let slow = poll(&provider, device_code);
    assert_eq!(error(&slow), "slow_down");
    let slowed = Instant::now();
    let interval = Duration::from_secs(INTERVAL + SLOW_DOWN_STEP);
    assert!(
        slow.1["error_description"]
            .as_str()
            .unwrap()
            .contains(&format!("every {} seconds", INTERVAL + SLOW_DOWN_STEP)),
        "{}",
        slow.1
    );

    let browser = Browser::start();
    complete_device_flow(
        &browser,
        start["verification_uri_complete"].as_str().unwrap(),
        "alice",
    );
    // the next poll after the grown interval has the tokens
    std::thread::sleep(interval.saturating_sub(slowed.elapsed()));
    let answer = poll(&provider, device_code);
    let device_claims = assert_device_tokens(&provider, &answer, "alice", true);
    // the device code is single use
    assert_eq!(error(&poll(&provider, device_code)), "invalid_grant");

    // the same claims as the code flow's token (over plain HTTP, Provider::code_flow)
    let code_claims = assert_resource_token(&provider.code_flow("alice"), &issuer, "alice");
    let names = |c: &Value| c.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&device_claims), names(&code_claims));

    // a second device login in the same browser, naming the resource, without openid: the
    // provider's session stands (no login page); polls at the old interval after a slow_down
    // are too fast again, and an approved code answers at once however fast it is polled
    let start = device_start(&provider, SCOPE, Some(AUDIENCE));
    let device_code = start["device_code"].as_str().unwrap();
    assert_eq!(
        error(&poll(&provider, device_code)),
        "authorization_pending"
    );
    assert_eq!(error(&poll(&provider, device_code)), "slow_down");
    std::thread::sleep(Duration::from_millis(INTERVAL * 1000 + 200));
    assert_eq!(error(&poll(&provider, device_code)), "slow_down");
    complete_device_flow(
        &browser,
        start["verification_uri_complete"].as_str().unwrap(),
        "alice",
    );
    let answer = poll(&provider, device_code);
    assert_device_tokens(&provider, &answer, "alice", false);

    // an unknown device code, and a device code of no request
    assert_eq!(
        error(&poll(&provider, &B64URL.encode(random_bytes(32)))),
        "invalid_grant"
    );
    // the provider's default interval is RFC 8628's
    drop(provider);
    let provider = start_provider(dir.path(), &[]);
    let (_, body) = json(
        Provider::http()
            .post(format!("{}/device/auth", provider.issuer()))
            .form(&[("client_id", CLI_CLIENT), ("scope", SCOPE)])
            .send()
            .unwrap(),
    );
    assert_eq!(body["interval"], DEVICE_INTERVAL, "{body}");
}

#[test]
fn a_refused_device_login_gives_access_denied() {
    if !provider_available() || !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let provider = start_provider(dir.path(), &["--device-interval", &INTERVAL.to_string()]);
    let browser = Browser::start();

    // the user logs in, then cancels at the consent page
    let start = device_start(&provider, &format!("openid {SCOPE}"), None);
    let device_code = start["device_code"].as_str().unwrap();
    deny_device_flow(
        &browser,
        start["verification_uri_complete"].as_str().unwrap(),
        "bob",
    );
    let answer = poll(&provider, device_code);
    assert_eq!(error(&answer), "access_denied", "{}", provider.log_text());

    // the user aborts at the page that confirms the code
    let start = device_start(&provider, SCOPE, None);
    let device_code = start["device_code"].as_str().unwrap();
    abort_device_flow(
        &browser,
        start["verification_uri_complete"].as_str().unwrap(),
    );
    assert_eq!(error(&poll(&provider, device_code)), "access_denied");
    // and the code is done with: it cannot be confirmed again
    browser.goto(start["verification_uri_complete"].as_str().unwrap());
    browser.wait_for("p.red");
    assert_eq!(
        browser.text("p.red"),
        "The code you entered is incorrect. Try again"
    );
}

/// The client's loopback listener: answers each request with 200 "logged in" and reports its
/// request line.
fn loopback_listener() -> (u16, mpsc::Receiver<String>) {
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
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let body = "logged in";
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

#[test]
fn code_flow_with_a_loopback_redirect_on_a_random_port() {
    if !provider_available() || !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let provider = start_provider(dir.path(), &[]);
    let issuer = provider.issuer();
    let (port, requests) = loopback_listener();
    let redirect = format!("http://127.0.0.1:{port}/");
    assert_ne!(redirect, CLI_LOOPBACK);

    let verifier = B64URL.encode(random_bytes(32));
    let challenge = B64URL.encode(openssl::sha::sha256(verifier.as_bytes()));
    let state = B64URL.encode(random_bytes(12));
    let nonce = B64URL.encode(random_bytes(12));
    let auth_url = |redirect: &str| {
        reqwest::Url::parse_with_params(
            &format!("{issuer}/auth"),
            &[
                ("client_id", CLI_CLIENT),
                ("response_type", "code"),
                ("redirect_uri", redirect),
                ("scope", &format!("openid {SCOPE}")),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("state", &state),
                ("nonce", &nonce),
            ],
        )
        .unwrap()
        .to_string()
    };
    // only the port of a registered loopback redirect may vary
    for refused in [
        format!("http://127.0.0.1:{port}/other"),
        format!("http://localhost:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("https://127.0.0.1:{port}/"),
    ] {
        let (status, body) = json(Provider::http().get(auth_url(&refused)).send().unwrap());
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_redirect_uri")),
            "{refused}: {body}"
        );
    }

    let browser = Browser::start();
    let landed = complete_code_flow(&browser, &auth_url(&redirect), "carol");
    assert_eq!(browser.text("body"), "logged in");
    let deadline = Instant::now() + Duration::from_secs(10);
    let request_line = loop {
        let line = requests
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the redirect at the loopback listener");
        if line.starts_with("GET /?") {
            break line;
        }
    };
    let target = request_line.split(' ').nth(1).unwrap();
    assert_eq!(landed, format!("http://127.0.0.1:{port}{target}"));
    let query: BTreeMap<String, String> = reqwest::Url::parse(&landed)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(query.get("state"), Some(&state), "{landed}");
    assert_eq!(query.get("iss"), Some(&issuer), "{landed}"); // RFC 9207
    let code = query["code"].as_str();

    let redeem = |verifier: &str| {
        json(
            Provider::http()
                .post(format!("{issuer}/token"))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("client_id", CLI_CLIENT),
                    ("code", code),
                    ("redirect_uri", redirect.as_str()),
                    ("code_verifier", verifier),
                ])
                .send()
                .unwrap(),
        )
    };
    // the code needs its verifier (PKCE S256)
    assert_eq!(
        error(&redeem(&B64URL.encode(random_bytes(32)))),
        "invalid_grant"
    );
    let (status, body) = redeem(&verifier);
    assert_eq!(status, 200, "{body}\n{}", provider.log_text());
    assert_eq!(body["scope"], SCOPE, "{body}");
    let c = assert_resource_token(body["access_token"].as_str().unwrap(), &issuer, "carol");
    assert_eq!(c["client_id"], CLI_CLIENT, "{c}");
    let id = claims(body["id_token"].as_str().unwrap());
    assert_eq!(
        (id["aud"].as_str(), id["sub"].as_str()),
        (Some(CLI_CLIENT), Some("carol")),
        "{id}"
    );
    assert_eq!(id["nonce"], nonce.as_str(), "{id}");
}

#[test]
fn private_key_jwt_client_credentials() {
    if !provider_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rsa = write_client_key(d, "robot-rsa", KeyKind::Rsa);
    let ec = write_client_key(d, "robot-ec", KeyKind::EcP256);
    assert!(
        std::fs::read_to_string(&ec.pem)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let public: Value = serde_json::from_slice(&std::fs::read(&ec.jwks).unwrap()).unwrap();
    assert!(public["keys"][0].get("d").is_none(), "{public}");

    let assertion_request = |provider: &Provider, key: &ClientKey, audience: &str| {
        let assertion = client_assertion(key, ROBOT_JWT_CLIENT, audience);
        let form = [
            ("grant_type", "client_credentials"),
            ("resource", AUDIENCE),
            ("scope", SCOPE),
            ("client_assertion_type", JWT_BEARER_ASSERTION),
            ("client_assertion", assertion.as_str()),
        ];
        let send = || {
            json(
                Provider::http()
                    .post(format!("{}/token", provider.issuer()))
                    .form(&form)
                    .send()
                    .unwrap(),
            )
        };
        (send(), send())
    };

    // without --robot-jwks the client does not exist
    let provider = start_provider(d, &[]);
    let ((status, body), _) =
        assertion_request(&provider, &rsa, &format!("{}/token", provider.issuer()));
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    drop(provider);

    for (key, other) in [(&rsa, &ec), (&ec, &rsa)] {
        let provider = start_provider(d, &["--robot-jwks", key.jwks.to_str().unwrap()]);
        let issuer = provider.issuer();
        let token = provider.private_key_jwt_credentials(key);
        let c = assert_resource_token(&token, &issuer, ROBOT_JWT_CLIENT);
        assert_eq!(c["client_id"], ROBOT_JWT_CLIENT, "{c}");
        // as hpc-robot's token, but for the client
        let robot = claims(&provider.client_credentials());
        assert_eq!(robot["sub"], ROBOT.0);
        let names = |c: &Value| c.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&c), names(&robot));
        // the issuer is an audience too; an assertion is single use (jti)
        let (first, replay) = assertion_request(&provider, key, &issuer);
        assert_eq!(first.0, 200, "{}", first.1);
        assert_eq!(
            (replay.0, replay.1["error"].as_str()),
            (401, Some("invalid_client")),
            "{}",
            replay.1
        );
        // another key, another audience: refused
        let ((status, body), _) = assertion_request(&provider, other, &issuer);
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{body}"
        );
        let ((status, body), _) = assertion_request(&provider, key, AUDIENCE);
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{body}"
        );
    }
}
