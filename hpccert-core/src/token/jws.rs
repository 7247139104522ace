//! The JWS layer of access tokens: compact serialization, header policy, issuer key sets, and
//! signature verification (the cryptography is `jsonwebtoken`'s, backed by aws-lc-rs).
//!
//! Header policy, whatever the issuer: `alg: none` (any casing) and HMAC algorithms are
//! refused (public-key issuers only), `crit` is refused (no extension is understood), keys
//! carried in the header (`jwk`, `jku`, `x5u`, `x5c`) are refused outright, `kid` must be a
//! short plain token, JWE (5 parts) is refused.

use std::fmt;
use std::str::FromStr;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use super::TokenError;

/// Signature algorithms the validator supports (all asymmetric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
pub enum JwsAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwsAlgorithm {
    pub const ALL: [JwsAlgorithm; 9] = [
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
        Self::ES256,
        Self::ES384,
        Self::EdDSA,
    ];

    fn jsonwebtoken(self) -> Algorithm {
        match self {
            Self::RS256 => Algorithm::RS256,
            Self::RS384 => Algorithm::RS384,
            Self::RS512 => Algorithm::RS512,
            Self::PS256 => Algorithm::PS256,
            Self::PS384 => Algorithm::PS384,
            Self::PS512 => Algorithm::PS512,
            Self::ES256 => Algorithm::ES256,
            Self::ES384 => Algorithm::ES384,
            Self::EdDSA => Algorithm::EdDSA,
        }
    }

    /// The kind of key this algorithm needs.
    fn key_kind(self) -> KeyKind {
        match self {
            Self::RS256 | Self::RS384 | Self::RS512 | Self::PS256 | Self::PS384 | Self::PS512 => {
                KeyKind::Rsa
            }
            Self::ES256 => KeyKind::EcP256,
            Self::ES384 => KeyKind::EcP384,
            Self::EdDSA => KeyKind::Ed25519,
        }
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl FromStr for JwsAlgorithm {
    type Err = TokenError;
    /// JWA names are case-sensitive (RFC 7518).
    fn from_str(s: &str) -> Result<Self, TokenError> {
        if s.eq_ignore_ascii_case("none") {
            return Err(TokenError::AlgNone);
        }
        // bytes, not a str slice: the name may start with a multi-byte character (fuzz find)
        if s.as_bytes()
            .get(..2)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"HS"))
        {
            return Err(TokenError::HmacRefused(s.to_string()));
        }
        Self::ALL
            .into_iter()
            .find(|a| a.to_string() == s)
            .ok_or_else(|| TokenError::UnsupportedAlgorithm(s.to_string()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

/// One issuer signing key.
#[derive(Clone)]
pub struct VerificationKey {
    kid: Option<String>,
    alg: Option<JwsAlgorithm>,
    kind: KeyKind,
    key: DecodingKey,
    /// e.g. "RSA 2048", "EC P-256"
    description: String,
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl VerificationKey {
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }
    pub fn alg(&self) -> Option<JwsAlgorithm> {
        self.alg
    }
    pub fn description(&self) -> &str {
        &self.description
    }
    fn fits(&self, alg: JwsAlgorithm) -> bool {
        self.kind == alg.key_kind() && self.alg.is_none_or(|a| a == alg)
    }
}

/// An issuer's signing keys, from a JWKS document.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerificationKey>,
    /// Keys of the document that are not used, and why (logged, shown by `keys show`).
    skipped: Vec<String>,
    /// Key ids that appear more than once: tokens naming them are refused.
    ambiguous: Vec<String>,
}

fn b64url(s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("not unpadded base64url".to_string());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| e.to_string())
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> Result<&'a str, String> {
    m.get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing or non-string {k:?}"))
}

/// A key id: short, printable, no path or quoting characters.
pub fn valid_kid(kid: &str) -> bool {
    (1..=128).contains(&kid.len())
        && kid.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'+' | b'=' | b':')
        })
}

/// The ROCA fingerprint (CVE-2017-15361, Infineon RSALib keys, factorable): for each of these
/// small primes p, n mod p lies in the subgroup generated by 65537 mod p. A random modulus
/// matches all of them with negligible probability.
fn roca_fingerprint(n: &[u8]) -> bool {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
        97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&p| {
        let r = n
            .iter()
            .fold(0u32, |acc, b| (acc * 256 + u32::from(*b)) % p);
        let g = 65537 % p;
        let mut x = 1;
        loop {
            if x == r {
                return true;
            }
            x = x * g % p;
            if x == 1 {
                return false;
            }
        }
    })
}

fn parse_key(m: &Map<String, Value>) -> Result<VerificationKey, String> {
    let kty = str_field(m, "kty")?;
    // a published key set never holds private parts: one that does is a leaked key
    if let Some(private) = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"]
        .iter()
        .find(|f| m.contains_key(**f))
    {
        return Err(format!(
            "the key carries private key material ({private}): a leaked key is never used"
        ));
    }
    if let Some(u) = m.get("use")
        && u.as_str() != Some("sig")
    {
        return Err(format!("use is {u}, not \"sig\""));
    }
    if let Some(ops) = m.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return Err("key_ops does not include \"verify\"".to_string());
        }
    }
    let alg = match m.get("alg") {
        None => None,
        Some(Value::String(a)) => Some(a.parse::<JwsAlgorithm>().map_err(|e| e.to_string())?),
        Some(other) => return Err(format!("alg {other} is not a string")),
    };
    let kid = match m.get("kid") {
        None => None,
        Some(Value::String(k)) if valid_kid(k) => Some(k.clone()),
        Some(other) => return Err(format!("unusable kid {other}")),
    };
    let (kind, key, description) = match kty {
        "RSA" => {
            let n = b64url(str_field(m, "n")?).map_err(|e| format!("n: {e}"))?;
            let e = b64url(str_field(m, "e")?).map_err(|e| format!("e: {e}"))?;
            let n_trim: &[u8] = &n[n.iter().position(|b| *b != 0).unwrap_or(n.len())..];
            let bits = n_trim
                .first()
                .map_or(0, |f| n_trim.len() * 8 - f.leading_zeros() as usize);
            if bits < 2048 {
                return Err(format!("RSA key of {bits} bits (at least 2048 required)"));
            }
            let e_trim: &[u8] = &e[e.iter().position(|b| *b != 0).unwrap_or(e.len())..];
            let small_or_even = e_trim.is_empty()
                || e_trim.last().is_some_and(|l| l & 1 == 0)
                || (e_trim.len() == 1 && e_trim[0] < 3);
            if small_or_even {
                return Err("RSA public exponent must be odd and at least 3".to_string());
            }
            if roca_fingerprint(n_trim) {
                return Err("RSA modulus has the ROCA fingerprint (CVE-2017-15361)".to_string());
            }
            let key = DecodingKey::from_rsa_raw_components(&n, &e);
            (KeyKind::Rsa, key, format!("RSA {bits}"))
        }
        "EC" => {
            let crv = str_field(m, "crv")?;
            let (kind, len) = match crv {
                "P-256" => (KeyKind::EcP256, 32),
                "P-384" => (KeyKind::EcP384, 48),
                other => return Err(format!("unsupported curve {other}")),
            };
            let x = str_field(m, "x")?;
            let y = str_field(m, "y")?;
            let (xb, yb) = (b64url(x)?, b64url(y)?);
            if xb.len() != len || yb.len() != len {
                return Err(format!("{crv} coordinates must be {len} bytes"));
            }
            let key = DecodingKey::from_ec_components(x, y).map_err(|e| e.to_string())?;
            (kind, key, format!("EC {crv}"))
        }
        "OKP" => {
            let crv = str_field(m, "crv")?;
            if crv != "Ed25519" {
                return Err(format!("unsupported OKP curve {crv}"));
            }
            let x = str_field(m, "x")?;
            if b64url(x)?.len() != 32 {
                return Err("Ed25519 key must be 32 bytes".to_string());
            }
            let key = DecodingKey::from_ed_components(x).map_err(|e| e.to_string())?;
            (KeyKind::Ed25519, key, "OKP Ed25519".to_string())
        }
        "oct" => return Err("symmetric (oct) keys are never used".to_string()),
        other => return Err(format!("unsupported key type {other}")),
    };
    if let Some(a) = alg
        && a.key_kind() != kind
    {
        return Err(format!("alg {a} does not fit a {description} key"));
    }
    Ok(VerificationKey {
        kid,
        alg,
        kind,
        key,
        description,
    })
}

impl KeySet {
    /// Parse a JWKS document (`{"keys": [...]}`). Unusable keys are skipped and listed;
    /// a document with no usable key is an error.
    pub fn from_jwks(json: &[u8]) -> Result<Self, String> {
        let doc: Value =
            serde_json::from_slice(json).map_err(|e| format!("JWKS is not JSON: {e}"))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("JWKS has no \"keys\" array")?;
        let mut set = KeySet::default();
        for (i, k) in keys.iter().enumerate() {
            let Some(m) = k.as_object() else {
                set.skipped.push(format!("key #{i}: not an object"));
                continue;
            };
            match parse_key(m) {
                Ok(key) => set.keys.push(key),
                Err(e) => {
                    let kid = m.get("kid").and_then(Value::as_str).unwrap_or("-");
                    set.skipped.push(format!("key #{i} (kid {kid}): {e}"));
                }
            }
        }
        let mut kids: Vec<&str> = set.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        kids.sort_unstable();
        let mut ambiguous: Vec<String> = kids
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0].to_string())
            .collect();
        ambiguous.dedup();
        set.ambiguous = ambiguous;
        if set.keys.is_empty() {
            return Err(format!(
                "JWKS has no usable signing key ({})",
                set.skipped.join("; ")
            ));
        }
        Ok(set)
    }

    pub fn keys(&self) -> &[VerificationKey] {
        &self.keys
    }
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// The parts of a compact JWS, decoded once.
#[derive(Debug)]
pub struct CompactJws<'a> {
    pub header: Map<String, Value>,
    pub payload: Vec<u8>,
    signing_input: &'a str,
    signature: &'a str,
    pub alg: JwsAlgorithm,
    pub kid: Option<String>,
    pub typ: Option<String>,
}

/// Split and decode a compact JWS and apply the header policy. No signature check yet.
pub fn parse_compact(token: &str, max_len: usize) -> Result<CompactJws<'_>, TokenError> {
    if token.len() > max_len {
        return Err(TokenError::TooLarge {
            len: token.len(),
            max: max_len,
        });
    }
    let token = token.trim();
    let dots = token.bytes().filter(|b| *b == b'.').count();
    match dots {
        2 => {}
        4 => {
            return Err(TokenError::Malformed(
                "5-part token: encrypted (JWE) tokens are not supported".into(),
            ));
        }
        n => {
            return Err(TokenError::Malformed(format!(
                "{} part(s); a signed token has 3",
                n + 1
            )));
        }
    }
    let mut parts = token.splitn(3, '.');
    let (h, p, s) = match (parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s)) => (h, p, s),
        _ => return Err(TokenError::Malformed("a signed token has 3 parts".into())),
    };
    let header_bytes = b64url(h).map_err(|e| TokenError::Malformed(format!("header: {e}")))?;
    let header: Map<String, Value> = match serde_json::from_slice(&header_bytes) {
        Ok(Value::Object(m)) => m,
        _ => return Err(TokenError::Malformed("header is not a JSON object".into())),
    };
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.parse::<JwsAlgorithm>()?,
        Some(_) => return Err(TokenError::Malformed("alg is not a string".into())),
        None => return Err(TokenError::Malformed("no alg in header".into())),
    };
    for embedded in ["jwk", "jku", "x5u", "x5c"] {
        if header.contains_key(embedded) {
            return Err(TokenError::EmbeddedKey(embedded.to_string()));
        }
    }
    if let Some(crit) = header.get("crit") {
        let names: Vec<String> = match crit.as_array() {
            Some(a) if !a.is_empty() => a
                .iter()
                .map(|v| v.as_str().unwrap_or("?").to_string())
                .collect(),
            _ => vec![crit.to_string()],
        };
        return Err(TokenError::CriticalHeader(names));
    }
    if header.contains_key("b64") {
        return Err(TokenError::Malformed(
            "unencoded payloads (b64) are not supported".into(),
        ));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) if valid_kid(k) => Some(k.clone()),
        Some(other) => {
            return Err(TokenError::BadKid(
                other.to_string().chars().take(80).collect(),
            ));
        }
    };
    let typ = match header.get("typ") {
        None => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(TokenError::Malformed("typ is not a string".into())),
    };
    if s.is_empty() {
        return Err(TokenError::BadSignature(
            "the signature is empty (stripped)".into(),
        ));
    }
    // the alphabet only: the signature is decoded once, by the verification itself
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        || s.len() % 4 == 1
    {
        return Err(TokenError::BadSignature(
            "signature: not unpadded base64url".into(),
        ));
    }
    let payload = b64url(p).map_err(|e| TokenError::Malformed(format!("payload: {e}")))?;
    let signing_input = &token[..h.len() + 1 + p.len()];
    Ok(CompactJws {
        header,
        payload,
        signing_input,
        signature: s,
        alg,
        kid,
        typ,
    })
}

impl CompactJws<'_> {
    /// Check the signature with the issuer's keys and the allowed algorithms.
    /// `Err(UnknownKid)` tells a daemon that a key refresh may help.
    pub fn verify(&self, keys: &KeySet, allowed: &[JwsAlgorithm]) -> Result<(), TokenError> {
        if !allowed.contains(&self.alg) {
            return Err(TokenError::AlgorithmNotAllowed(self.alg.to_string()));
        }
        let candidates: Vec<&VerificationKey> = match &self.kid {
            Some(kid) => {
                if keys.ambiguous.iter().any(|a| a == kid) {
                    return Err(TokenError::BadKid(format!(
                        "{kid} (several keys have this id)"
                    )));
                }
                let found: Vec<&VerificationKey> = keys
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                    .collect();
                if found.is_empty() {
                    return Err(TokenError::UnknownKid(kid.clone()));
                }
                found
            }
            None => keys.keys.iter().collect(),
        };
        let fitting: Vec<&&VerificationKey> =
            candidates.iter().filter(|k| k.fits(self.alg)).collect();
        if fitting.is_empty() {
            return Err(TokenError::BadSignature(format!(
                "no {} key fits alg {}",
                keys_kinds(&candidates),
                self.alg
            )));
        }
        for key in fitting {
            if let Ok(true) = jsonwebtoken::crypto::verify(
                self.signature,
                self.signing_input.as_bytes(),
                &key.key,
                self.alg.jsonwebtoken(),
            ) {
                return Ok(());
            }
        }
        Err(TokenError::BadSignature(
            "the signature does not verify".into(),
        ))
    }
}

fn keys_kinds(keys: &[&VerificationKey]) -> String {
    let mut d: Vec<&str> = keys.iter().map(|k| k.description.as_str()).collect();
    d.dedup();
    d.join("/")
}
