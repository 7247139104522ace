//! The portal's SSH CA: a certificate for the user's public key, proved with an access token
//! or with an X.509 certificate or proxy that signs the CA's challenge.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::site::Discovery;

/// The CA's answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Issued {
    pub certificate: String,
    pub principals: Vec<String>,
    pub valid_before: u64,
    #[serde(default)]
    pub identity: Option<String>,
}

/// How the request is proved.
#[derive(Debug)]
pub enum Proof<'a> {
    Token(&'a str),
    /// A PEM file holding the certificate (or proxy) and its key, as Globus writes proxies.
    X509(&'a Path),
}

pub fn request(
    http: &reqwest::blocking::Client,
    site: &Discovery,
    public_key: &str,
    principals: &[String],
    proof: &Proof<'_>,
) -> Result<Issued> {
    let mut body = json!({"public_key": public_key.trim()});
    if !principals.is_empty() {
        body["principals"] = json!(principals);
    }
    let mut r = http.post(&site.certificate_endpoint);
    match proof {
        Proof::Token(t) => r = r.bearer_auth(t),
        Proof::X509(file) => body["x509"] = x509_proof(http, site, file)?,
    }
    let r = r
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .with_context(|| {
            format!(
                "the portal's CA {} cannot be reached",
                site.certificate_endpoint
            )
        })?;
    let status = r.status();
    let answer: Value = r.json().unwrap_or(Value::Null);
    if status.is_success() {
        return serde_json::from_value(answer).context("the CA's answer holds no certificate");
    }
    let reason = answer["reason"].as_str().unwrap_or("no reason given");
    let advice = match answer["error"].as_str() {
        Some("not_allowed") if reason.contains("suspended") => {
            "the site suspended this identity or account: contact the site's support".to_string()
        }
        Some("not_allowed") => format!(
            "if this identity is not linked to your account yet, link it at {}",
            site.link_url
        ),
        Some("invalid_token")
            if reason.contains("not valid before") || reason.contains("in the future") =>
        {
            "this computer's clock may be wrong: check it (timedatectl)".to_string()
        }
        Some("invalid_token") => {
            "the portal does not accept this login's token (another identity provider or audience?)"
                .to_string()
        }
        Some("rate_limited") => "too many certificates were asked for: wait and retry".to_string(),
        Some("bad_key") => "the key is not one the site accepts".to_string(),
        _ => "try again later; -v shows the steps".to_string(),
    };
    bail!("the portal refused a certificate ({status}): {reason}\n  {advice}")
}

/// The proxy (or certificate) file as Globus finds it: the given file, `X509_USER_PROXY`, then
/// `/tmp/x509up_u<uid>`.
pub fn find_proxy(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("X509_USER_PROXY") {
        return Ok(PathBuf::from(p));
    }
    #[cfg(unix)]
    {
        let p = PathBuf::from(format!("/tmp/x509up_u{}", nix::unistd::getuid()));
        if p.is_file() {
            return Ok(p);
        }
        bail!(
            "no proxy: {} does not exist and X509_USER_PROXY is not set (grid-proxy-init makes one)",
            p.display()
        )
    }
    #[cfg(not(unix))]
    bail!("no proxy: set X509_USER_PROXY or give --x509 FILE")
}

/// Ask the CA for a challenge and sign it with the proxy's key: the `x509` member.
fn x509_proof(http: &reqwest::blocking::Client, site: &Discovery, file: &Path) -> Result<Value> {
    let endpoint = site
        .challenge_endpoint
        .clone()
        .unwrap_or_else(|| format!("{}/ssh/v1/challenge", site.portal.trim_end_matches('/')));
    let pem = crate::files::read_secret(file, "the proxy")?;
    let key = openssl::pkey::PKey::private_key_from_pem(pem.as_bytes())
        .with_context(|| format!("{} holds no private key", file.display()))?;
    let certificates: String = {
        let mut out = String::new();
        let mut inside = false;
        for line in pem.lines() {
            if line.starts_with("-----BEGIN CERTIFICATE-----") {
                inside = true;
            }
            if inside {
                out.push_str(line);
                out.push('\n');
            }
            if line.starts_with("-----END CERTIFICATE-----") {
                inside = false;
            }
        }
        out
    };
    if certificates.is_empty() {
        bail!("{} holds no certificate", file.display());
    }
    let r = http
        .post(&endpoint)
        .send()
        .with_context(|| format!("the CA's challenge endpoint {endpoint} cannot be reached"))?;
    let status = r.status();
    let answer: Value = r.json().unwrap_or(Value::Null);
    let challenge = answer["challenge"].as_str().ok_or_else(|| {
        anyhow!(
            "the CA gave no challenge ({status}): {}",
            answer["reason"].as_str().unwrap_or("no reason given")
        )
    })?;
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key)?;
    let signature = base64::engine::general_purpose::STANDARD
        .encode(signer.sign_oneshot_to_vec(challenge.as_bytes())?);
    Ok(json!({"certificates": certificates, "challenge": challenge, "signature": signature}))
}
