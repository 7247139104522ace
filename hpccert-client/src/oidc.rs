//! OpenID Connect with the site's issuer and public client: the authorization code flow with
//! PKCE S256 and a loopback redirect (RFC 8252), the device authorization grant (RFC 8628),
//! client credentials with a secret or an RFC 7523 `private_key_jwt` assertion, and refresh.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;

/// How long a browser or device login may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(600);

/// The provider's endpoints (`/.well-known/openid-configuration`).
#[derive(Debug, Clone, Deserialize)]
pub struct Provider {
    pub issuer: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: String,
    pub device_authorization_endpoint: Option<String>,
}

/// What a token request gave.
#[derive(Debug, Clone, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
}

/// The client and what it asks for.
#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    pub scopes: Vec<String>,
    /// The resource (RFC 8707) the access token is for: the site's audience.
    pub audience: Option<String>,
}

pub fn discover(http: &reqwest::blocking::Client, issuer: &str) -> Result<Provider> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let p: Provider = http
        .get(&url)
        .send()
        .and_then(reqwest::blocking::Response::error_for_status)
        .with_context(|| format!("the identity provider {issuer} cannot be reached"))?
        .json()
        .with_context(|| format!("{url} is not an OpenID provider configuration"))?;
    if p.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
        bail!(
            "the identity provider at {issuer} calls itself {}: refused (a provider must name itself)",
            p.issuer
        );
    }
    Ok(p)
}

fn random_text(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    openssl::rand::rand_bytes(&mut b).context("the system's random source")?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

fn pkce() -> Result<(String, String)> {
    let verifier = random_text(32)?;
    let challenge = URL_SAFE_NO_PAD.encode(openssl::sha::sha256(verifier.as_bytes()));
    Ok((verifier, challenge))
}

/// An error answer of the provider (`{"error": ..., "error_description": ...}`) in words.
fn provider_error(body: &Value, status: reqwest::StatusCode) -> String {
    match (body["error"].as_str(), body["error_description"].as_str()) {
        (Some(e), Some(d)) => format!("{e}: {d}"),
        (Some(e), None) => e.to_string(),
        _ => format!("HTTP {status}"),
    }
}

fn token_request(
    http: &reqwest::blocking::Client,
    provider: &Provider,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Result<std::result::Result<Tokens, (String, Value)>> {
    let mut r = http.post(&provider.token_endpoint).form(form);
    if let Some((id, secret)) = basic {
        r = r.basic_auth(
            url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>(),
            Some(url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>()),
        );
    }
    let r = r.send().with_context(|| {
        format!(
            "the token endpoint {} cannot be reached",
            provider.token_endpoint
        )
    })?;
    let status = r.status();
    let body: Value = r.json().unwrap_or(Value::Null);
    if status.is_success() {
        let tokens: Tokens = serde_json::from_value(body)
            .context("the token endpoint's answer holds no access token")?;
        return Ok(Ok(tokens));
    }
    Ok(Err((provider_error(&body, status), body)))
}

/// The authorization code flow: a loopback listener on a free port receives the redirect
/// after the user logged in through `open` (the browser). `progress` says what happens.
pub fn code_flow(
    http: &reqwest::blocking::Client,
    provider: &Provider,
    client: &Client,
    open: &dyn Fn(&str) -> Result<()>,
    progress: &dyn Fn(&str),
) -> Result<Tokens> {
    let endpoint = provider
        .authorization_endpoint
        .as_deref()
        .ok_or_else(|| anyhow!("the identity provider has no authorization endpoint"))?;
    let listener = TcpListener::bind("127.0.0.1:0").context("a loopback port for the redirect")?;
    let port = listener.local_addr()?.port();
    let redirect = format!("http://127.0.0.1:{port}/");
    let (verifier, challenge) = pkce()?;
    let state = random_text(16)?;
    let nonce = random_text(16)?;
    let mut url = url::Url::parse(endpoint).context("the authorization endpoint")?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &client.client_id)
            .append_pair("redirect_uri", &redirect)
            .append_pair("scope", &client.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(aud) = &client.audience {
            q.append_pair("resource", aud);
        }
    }
    open(url.as_str())?;
    progress("waiting for the browser login to finish (Ctrl-C to give up)...");
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + LOGIN_TIMEOUT;
    let (mut stream, _) = loop {
        match listener.accept() {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    bail!("no answer from the browser login in 10 minutes");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e).context("the loopback redirect"),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/");
    let answer = url::Url::parse(&format!("http://127.0.0.1{target}"))?;
    let param = |k: &str| {
        answer
            .query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };
    let (title, outcome) = match (param("error"), param("code")) {
        (Some(e), _) => (
            "Login refused",
            Err(anyhow!(
                "the identity provider refused the login: {e}{}",
                param("error_description")
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            )),
        ),
        (None, Some(code)) if param("state").as_deref() == Some(state.as_str()) => {
            ("Logged in", Ok(code))
        }
        (None, Some(_)) => (
            "Login refused",
            Err(anyhow!(
                "the redirect's state does not match this login: refused"
            )),
        ),
        (None, None) => (
            "Login refused",
            Err(anyhow!("the redirect carried no authorization code")),
        ),
    };
    let page = format!(
        "<!doctype html><meta charset=utf-8><title>hpccert: {title}</title><p>hpccert: {title}. You can close this window and return to the terminal.</p>"
    );
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
        page.len()
    );
    drop(stream);
    let code = outcome?;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("client_id", client.client_id.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    if let Some(aud) = &client.audience {
        form.push(("resource", aud));
    }
    let tokens = token_request(http, provider, &form, None)?
        .map_err(|(e, _)| anyhow!("the identity provider refused the code: {e}"))?;
    check_nonce(&tokens, &nonce)?;
    Ok(tokens)
}

/// The ID token, when there is one, must carry this login's nonce. (It came straight from the
/// token endpoint over the connection the client opened, so its signature is not needed to
/// trust it here, OIDC Core 3.1.3.7; the access token is what the portal verifies.)
fn check_nonce(tokens: &Tokens, nonce: &str) -> Result<()> {
    let Some(id) = &tokens.id_token else {
        return Ok(());
    };
    let claims = jwt_claims(id).context("the ID token")?;
    if claims["nonce"].as_str() != Some(nonce) {
        bail!("the ID token's nonce is not this login's: refused");
    }
    Ok(())
}

/// The claims of a JWT, not verified (to read `exp`, `sub`, `nonce`).
pub fn jwt_claims(token: &str) -> Result<Value> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| anyhow!("not a JWT"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .context("not a JWT")?;
    serde_json::from_slice(&bytes).context("not a JWT")
}

#[derive(Debug, Deserialize)]
struct DeviceAuthorization {
    device_code: String,
    user_code: String,
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    interval: Option<u64>,
}

/// The device authorization grant: shows where to go and the code (with a QR code), then
/// polls as the provider asks.
pub fn device_flow(
    http: &reqwest::blocking::Client,
    provider: &Provider,
    client: &Client,
    show: &dyn Fn(&str, &str, Option<&str>),
    progress: &dyn Fn(&str),
) -> Result<Tokens> {
    let endpoint = provider.device_authorization_endpoint.as_deref().ok_or_else(|| {
        anyhow!("the identity provider offers no device login (RFC 8628): log in with a browser on this machine, or copy a certificate from one that has")
    })?;
    let mut form = vec![
        ("client_id", client.client_id.clone()),
        ("scope", client.scopes.join(" ")),
    ];
    if let Some(aud) = &client.audience {
        form.push(("resource", aud.clone()));
    }
    let r = http
        .post(endpoint)
        .form(&form)
        .send()
        .with_context(|| format!("the device endpoint {endpoint} cannot be reached"))?;
    let status = r.status();
    let body: Value = r.json().unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "the identity provider refused the device login: {}",
            provider_error(&body, status)
        );
    }
    let auth: DeviceAuthorization =
        serde_json::from_value(body).context("the device endpoint's answer")?;
    show(
        &auth.verification_uri,
        &auth.user_code,
        auth.verification_uri_complete.as_deref(),
    );
    let mut interval = Duration::from_secs(auth.interval.unwrap_or(5).max(1));
    let deadline =
        Instant::now() + Duration::from_secs(auth.expires_in.unwrap_or(600)).min(LOGIN_TIMEOUT);
    let mut form = vec![
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", auth.device_code.as_str()),
        ("client_id", client.client_id.as_str()),
    ];
    if let Some(aud) = &client.audience {
        form.push(("resource", aud));
    }
    let mut waited = false;
    loop {
        std::thread::sleep(interval);
        match token_request(http, provider, &form, None)? {
            Ok(tokens) => return Ok(tokens),
            Err((_, body)) => match body["error"].as_str() {
                Some("authorization_pending") => {
                    if !waited {
                        progress("waiting for the login on the other device...");
                        waited = true;
                    }
                }
                // RFC 8628 3.5: five seconds more from now on
                Some("slow_down") => interval += Duration::from_secs(5),
                Some("access_denied") => {
                    bail!("the login was denied at the identity provider (consent refused)")
                }
                Some("expired_token") => bail!(
                    "the device code expired before the login finished: run hpccert login again"
                ),
                _ => bail!(
                    "the identity provider refused the device login: {}",
                    provider_error(&body, reqwest::StatusCode::BAD_REQUEST)
                ),
            },
        }
        if Instant::now() > deadline {
            bail!("the device code expired before the login finished: run hpccert login again");
        }
    }
}

/// How a confidential client (a gateway, a robot) authenticates.
#[derive(Debug)]
pub enum ClientAuth {
    Secret(String),
    /// RFC 7523: a JWT signed with this PEM key (RSA: RS256, EC P-256: ES256).
    PrivateKeyJwt {
        pem: String,
        kid: Option<String>,
    },
}

/// Client credentials: a token for the client itself.
pub fn client_credentials(
    http: &reqwest::blocking::Client,
    provider: &Provider,
    client: &Client,
    auth: &ClientAuth,
) -> Result<Tokens> {
    let scope = client.scopes.join(" ");
    let mut form = vec![("grant_type", "client_credentials".to_string())];
    if !scope.is_empty() {
        form.push(("scope", scope));
    }
    if let Some(aud) = &client.audience {
        form.push(("resource", aud.clone()));
    }
    let basic = match auth {
        ClientAuth::Secret(secret) => Some((client.client_id.as_str(), secret.as_str())),
        ClientAuth::PrivateKeyJwt { pem, kid } => {
            form.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ));
            form.push((
                "client_assertion",
                client_assertion(
                    &client.client_id,
                    &provider.token_endpoint,
                    pem,
                    kid.as_deref(),
                )?,
            ));
            form.push(("client_id", client.client_id.clone()));
            None
        }
    };
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    token_request(http, provider, &form, basic)?
        .map_err(|(e, _)| anyhow!("the identity provider refused the client credentials: {e}"))
}

/// The RFC 7523 assertion: iss = sub = the client, aud = the token endpoint, a fresh jti, 5
/// minutes.
fn client_assertion(
    client_id: &str,
    audience: &str,
    pem: &str,
    kid: Option<&str>,
) -> Result<String> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let (key, alg) = if pem.contains("EC PRIVATE KEY") || openssl_is_ec(pem) {
        (EncodingKey::from_ec_pem(pem.as_bytes()), Algorithm::ES256)
    } else {
        (EncodingKey::from_rsa_pem(pem.as_bytes()), Algorithm::RS256)
    };
    let key = key.context("the private_key_jwt key is not an RSA or EC P-256 private key (PEM)")?;
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    let now = hpccert_core::token::unix_seconds(hpccert_core::clock::now());
    let claims = serde_json::json!({
        "iss": client_id, "sub": client_id, "aud": audience,
        "iat": now, "exp": now + 300, "jti": random_text(16)?,
    });
    jsonwebtoken::encode(&header, &claims, &key).context("signing the client assertion")
}

fn openssl_is_ec(pem: &str) -> bool {
    openssl::pkey::PKey::private_key_from_pem(pem.as_bytes())
        .is_ok_and(|k| k.id() == openssl::pkey::Id::EC)
}

/// A new access token from a remembered refresh token.
pub fn refresh(
    http: &reqwest::blocking::Client,
    provider: &Provider,
    client: &Client,
    refresh_token: &str,
) -> Result<Tokens> {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", client.client_id.as_str()),
    ];
    if let Some(aud) = &client.audience {
        form.push(("resource", aud));
    }
    token_request(http, provider, &form, None)?
        .map_err(|(e, _)| anyhow!("the remembered login is no longer good ({e}): hpccert login"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pkce_is_s256_of_the_verifier() {
        let (v, c) = pkce().unwrap();
        assert_eq!(v.len(), 43);
        assert_eq!(
            c,
            URL_SAFE_NO_PAD.encode(openssl::sha::sha256(v.as_bytes()))
        );
        assert_ne!(pkce().unwrap().0, v, "fresh each time");
    }

    /// A provider that answers the device endpoint, then each token poll with the next of
    /// `answers` (status, JSON), recording when each poll came.
    fn mock_provider(
        answers: Vec<(u16, &'static str)>,
    ) -> (Provider, std::sync::mpsc::Receiver<Instant>) {
        use std::io::Read as _;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut answers = answers.into_iter();
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).unwrap();
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                let (status, body) = if request.starts_with("POST /device") {
                    (
                        200,
                        r#"{"device_code":"dc","user_code":"ABCD-EFGH","verification_uri":"http://x/device","verification_uri_complete":"http://x/device?user_code=ABCD-EFGH","expires_in":60,"interval":1}"#,
                    )
                } else {
                    let _ = tx.send(Instant::now());
                    answers.next().unwrap_or((500, "{}"))
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let provider = Provider {
            issuer: base.clone(),
            authorization_endpoint: None,
            token_endpoint: format!("{base}/token"),
            device_authorization_endpoint: Some(format!("{base}/device")),
        };
        (provider, rx)
    }

    fn device(answers: Vec<(u16, &'static str)>) -> (Result<Tokens>, Vec<Instant>) {
        let (provider, polls) = mock_provider(answers);
        let client = Client {
            client_id: "cli".into(),
            scopes: vec!["openid".into()],
            audience: None,
        };
        let shown = std::sync::Mutex::new(String::new());
        let result = device_flow(
            &reqwest::blocking::Client::new(),
            &provider,
            &client,
            &|_, code, _| *shown.lock().unwrap() = code.to_string(),
            &|_| {},
        );
        assert_eq!(*shown.lock().unwrap(), "ABCD-EFGH");
        (result, polls.try_iter().collect())
    }

    /// RFC 8628 3.5: `authorization_pending` keeps the pace, `slow_down` adds five seconds to
    /// the interval from then on.
    #[test]
    fn the_device_flow_polls_as_the_provider_asks() {
        let (result, polls) = device(vec![
            (400, r#"{"error":"authorization_pending"}"#),
            (400, r#"{"error":"slow_down"}"#),
            (200, r#"{"access_token":"at","token_type":"Bearer"}"#),
        ]);
        assert_eq!(result.unwrap().access_token, "at");
        assert_eq!(polls.len(), 3);
        let pending_gap = polls[1] - polls[0];
        let slowed_gap = polls[2] - polls[1];
        assert!(
            pending_gap >= Duration::from_secs(1) && pending_gap < Duration::from_secs(3),
            "{pending_gap:?}"
        );
        assert!(slowed_gap >= Duration::from_secs(6), "{slowed_gap:?}");
    }

    #[test]
    fn a_denied_or_expired_device_login_says_so() {
        let (result, _) = device(vec![(400, r#"{"error":"access_denied"}"#)]);
        assert!(result.unwrap_err().to_string().contains("denied"));
        let (result, _) = device(vec![(400, r#"{"error":"expired_token"}"#)]);
        let e = result.unwrap_err().to_string();
        assert!(
            e.contains("expired") && e.contains("hpccert login again"),
            "{e}"
        );
    }

    #[test]
    fn jwt_claims_are_read_and_a_foreign_nonce_refused() {
        let claims = URL_SAFE_NO_PAD.encode(br#"{"nonce":"n1","exp":5}"#);
        let t = Tokens {
            access_token: "a".into(),
            refresh_token: None,
            id_token: Some(format!("e30.{claims}.sig")),
        };
        assert_eq!(
            jwt_claims(t.id_token.as_deref().unwrap()).unwrap()["exp"],
            5
        );
        check_nonce(&t, "n1").unwrap();
        assert!(check_nonce(&t, "n2").is_err());
        assert!(jwt_claims("nonsense").is_err());
    }
}
