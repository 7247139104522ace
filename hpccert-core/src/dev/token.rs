//! A development token issuer: signing keys, their JWKS, and minted JWTs, for the demo,
//! tests and benchmarks. Never used to verify anything.

use base64::Engine;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use serde_json::{Value, json};

use crate::token::JwsAlgorithm;

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// One signing key of a dev issuer.
pub struct DevKey {
    pub kid: String,
    pub alg: JwsAlgorithm,
    key: PKey<Private>,
}

impl std::fmt::Debug for DevKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl DevKey {
    /// A new key for `alg` (RS*/PS*: RSA 2048; ES256: P-256; ES384: P-384; EdDSA: Ed25519).
    pub fn generate(kid: &str, alg: JwsAlgorithm) -> Result<Self, openssl::error::ErrorStack> {
        let key = match alg {
            JwsAlgorithm::RS256
            | JwsAlgorithm::RS384
            | JwsAlgorithm::RS512
            | JwsAlgorithm::PS256
            | JwsAlgorithm::PS384
            | JwsAlgorithm::PS512 => PKey::from_rsa(Rsa::generate(2048)?)?,
            JwsAlgorithm::ES256 => {
                let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
                PKey::from_ec_key(EcKey::generate(&group)?)?
            }
            JwsAlgorithm::ES384 => {
                let group = EcGroup::from_curve_name(Nid::SECP384R1)?;
                PKey::from_ec_key(EcKey::generate(&group)?)?
            }
            JwsAlgorithm::EdDSA => PKey::generate_ed25519()?,
        };
        Ok(Self {
            kid: kid.to_string(),
            alg,
            key,
        })
    }

    /// The private key, PKCS#8 PEM (to keep a dev issuer across runs).
    pub fn private_pem(&self) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        self.key.private_key_to_pem_pkcs8()
    }

    /// A key saved with [`DevKey::private_pem`].
    pub fn from_pem(
        kid: &str,
        alg: JwsAlgorithm,
        pem: &[u8],
    ) -> Result<Self, openssl::error::ErrorStack> {
        Ok(Self {
            kid: kid.to_string(),
            alg,
            key: PKey::private_key_from_pem(pem)?,
        })
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Result<Value, openssl::error::ErrorStack> {
        let mut jwk = match self.alg {
            JwsAlgorithm::ES256 | JwsAlgorithm::ES384 => {
                let ec = self.key.ec_key()?;
                let (crv, len) = if self.alg == JwsAlgorithm::ES256 {
                    ("P-256", 32)
                } else {
                    ("P-384", 48)
                };
                let mut x = openssl::bn::BigNum::new()?;
                let mut y = openssl::bn::BigNum::new()?;
                let mut ctx = BigNumContext::new()?;
                ec.public_key()
                    .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)?;
                json!({"kty": "EC", "crv": crv, "x": b64(&x.to_vec_padded(len)?), "y": b64(&y.to_vec_padded(len)?)})
            }
            JwsAlgorithm::EdDSA => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&self.key.raw_public_key()?)})
            }
            _ => {
                let rsa = self.key.rsa()?;
                json!({"kty": "RSA", "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())})
            }
        };
        jwk["kid"] = json!(self.kid);
        jwk["alg"] = json!(self.alg.to_string());
        jwk["use"] = json!("sig");
        Ok(jwk)
    }

    /// Sign `input` as `alg` (which must fit the key) and return the base64url signature.
    pub fn sign(
        &self,
        alg: JwsAlgorithm,
        input: &[u8],
    ) -> Result<String, openssl::error::ErrorStack> {
        let digest = match alg {
            JwsAlgorithm::RS256 | JwsAlgorithm::PS256 | JwsAlgorithm::ES256 => {
                MessageDigest::sha256()
            }
            JwsAlgorithm::RS384 | JwsAlgorithm::PS384 | JwsAlgorithm::ES384 => {
                MessageDigest::sha384()
            }
            JwsAlgorithm::RS512 | JwsAlgorithm::PS512 => MessageDigest::sha512(),
            JwsAlgorithm::EdDSA => {
                let mut signer = Signer::new_without_digest(&self.key)?;
                return Ok(b64(&signer.sign_oneshot_to_vec(input)?));
            }
        };
        match alg {
            JwsAlgorithm::ES256 | JwsAlgorithm::ES384 => {
                let len = if alg == JwsAlgorithm::ES256 { 32 } else { 48 };
                let hash = openssl::hash::hash(digest, input)?;
                let ec = self.key.ec_key()?;
                let sig = EcdsaSig::sign(&hash, &ec)?;
                let mut raw = sig.r().to_vec_padded(len)?;
                raw.extend(sig.s().to_vec_padded(len)?);
                Ok(b64(&raw))
            }
            _ => {
                let mut signer = Signer::new(digest, &self.key)?;
                if matches!(
                    alg,
                    JwsAlgorithm::PS256 | JwsAlgorithm::PS384 | JwsAlgorithm::PS512
                ) {
                    signer.set_rsa_padding(openssl::rsa::Padding::PKCS1_PSS)?;
                    signer.set_rsa_pss_saltlen(openssl::sign::RsaPssSaltlen::DIGEST_LENGTH)?;
                }
                signer.update(input)?;
                Ok(b64(&signer.sign_to_vec()?))
            }
        }
    }

    /// A compact JWS with this header and payload, signed with this key's algorithm.
    pub fn mint_raw(
        &self,
        header: &Value,
        claims: &Value,
    ) -> Result<String, openssl::error::ErrorStack> {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.sign(self.alg, input.as_bytes())?;
        Ok(format!("{input}.{sig}"))
    }

    /// A token with the usual header (`alg`, `kid`, `typ: at+jwt`).
    pub fn mint(&self, claims: &Value) -> Result<String, openssl::error::ErrorStack> {
        self.mint_raw(
            &json!({"alg": self.alg.to_string(), "kid": self.kid, "typ": "at+jwt"}),
            claims,
        )
    }
}

/// A JWKS document of these keys.
pub fn jwks(keys: &[&DevKey]) -> Result<Value, openssl::error::ErrorStack> {
    let list: Result<Vec<Value>, _> = keys.iter().map(|k| k.jwk()).collect();
    Ok(json!({ "keys": list? }))
}
