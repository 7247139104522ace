//! Proving a certificate DN the identity provider did not assert (`[portal] certificate_dns`):
//! the portal shows a one-time challenge naming itself and the logged-in identity; the user
//! signs it with the certificate's own key using the `openssl` command line and pastes the
//! signature and the certificate (with any intermediate CAs). The chain is verified as a
//! login's is (trust store, CRLs, namespaces), the signature with the certificate's key.
//!
//! A proxy certificate is refused here although a login accepts one: a proxy is delegated,
//! often held by gateways and batch jobs, and holding one must not be enough to link its
//! owner's DN to another account for good.
//!
//! What the user pastes is never logged: neither the signature nor the certificates, and a
//! paste holding a private key is refused before it is read any further.

use std::time::{Duration, Instant, SystemTime};

use hpccert_core::config::TrustConfig;
use hpccert_core::identity::dn::DistinguishedName;
use thiserror::Error;

pub use crate::possession::MAX_PASTE;
use crate::possession::{self, PossessionError};

/// How long a challenge can be answered.
pub const CHALLENGE_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// A challenge shown to one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub text: String,
    pub issued: Instant,
    /// When it can no longer be answered, in Unix seconds (shown on the page).
    pub expires_unix: i64,
}

impl Challenge {
    /// A new challenge for the portal at `origin` and the login (`issuer`, `subject`): the
    /// text names both, so that a user asked to sign it elsewhere can see whose it is.
    /// Characters a shell's single quotes or a terminal could mangle become `_`.
    pub fn new(origin: &str, issuer: &str, subject: &str, nonce: &str, now: Instant) -> Self {
        let text = format!(
            "hpccert-portal {origin} certificate DN for {subject} at {issuer} nonce {nonce}"
        )
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " :/.,_@+=-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
        let expires = hpccert_core::clock::now() + CHALLENGE_LIFETIME;
        let expires_unix = expires
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Self {
            text,
            issued: now,
            expires_unix,
        }
    }

    pub fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.issued) > CHALLENGE_LIFETIME
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DnProofError {
    #[error(
        "no challenge is waiting for an answer (it was used or is older than 15 minutes): sign the new one"
    )]
    NoChallenge,
    #[error(
        "the paste holds a private key: never paste a key anywhere; paste only the certificates"
    )]
    PrivateKey,
    #[error("the paste is larger than {MAX_PASTE} bytes")]
    TooLarge,
    #[error("the certificates: {0}")]
    Certificates(String),
    #[error("the signature is not base64: {0}")]
    SignatureEncoding(String),
    #[error(
        "the signature does not match this challenge and the first certificate's key: sign the new challenge on the start page with the key of the first certificate you paste"
    )]
    SignatureMismatch,
    #[error(
        "that is a proxy certificate; sign with the certificate's own key (a proxy is delegated, and may be held by services)"
    )]
    Proxy,
    #[error("the certificate's key type is not supported (RSA and EC keys are)")]
    KeyType,
    #[error("the certificate chain is refused: {0}")]
    Chain(String),
    #[error("the trust store cannot be loaded: {0}")]
    Trust(String),
}

/// Check the answer to `challenge`: `certificates` (PEM, the end entity's first, then any
/// intermediates) and `signature` (base64 of `openssl dgst -sha256 -sign`). Returns the proved
/// DN. A proxy is refused (see the module's documentation).
pub fn verify(
    trust: &TrustConfig,
    challenge: &str,
    certificates: &str,
    signature: &str,
    now: SystemTime,
) -> Result<DistinguishedName, DnProofError> {
    let verified = possession::verify(trust, challenge, certificates, signature, now)?;
    if verified.proxy_depth() > 0 {
        return Err(DnProofError::Proxy);
    }
    Ok(verified.identity().clone())
}

impl From<PossessionError> for DnProofError {
    fn from(e: PossessionError) -> Self {
        match e {
            PossessionError::PrivateKey => Self::PrivateKey,
            PossessionError::TooLarge => Self::TooLarge,
            PossessionError::Certificates(m) => Self::Certificates(m),
            PossessionError::SignatureEncoding(m) => Self::SignatureEncoding(m),
            PossessionError::SignatureMismatch => Self::SignatureMismatch,
            PossessionError::KeyType => Self::KeyType,
            PossessionError::Chain(m) => Self::Chain(m),
            PossessionError::Trust(m) => Self::Trust(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_names_the_portal_and_the_login_in_safe_characters() {
        let c = Challenge::new(
            "https://portal.example.org",
            "https://cilogon.org",
            "http://cilogon.org/serverA/users/1'; rm -rf ~",
            "n0nce",
            Instant::now(),
        );
        assert!(
            c.text
                .starts_with("hpccert-portal https://portal.example.org ")
        );
        assert!(c.text.contains("at https://cilogon.org nonce n0nce"));
        assert!(!c.text.contains('\''), "{}", c.text);
        assert!(!c.text.contains(';'), "{}", c.text);
    }

    #[test]
    fn challenges_expire() {
        let t = Instant::now();
        let c = Challenge::new("o", "i", "s", "n", t);
        let now_unix = hpccert_core::clock::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (c.expires_unix - now_unix - 900).abs() <= 2,
            "shown: 15 min on"
        );
        assert!(!c.expired(t + CHALLENGE_LIFETIME));
        assert!(c.expired(t + CHALLENGE_LIFETIME + Duration::from_secs(1)));
    }

    #[test]
    fn a_pasted_key_or_bad_base64_is_refused_before_anything_else() {
        let trust = TrustConfig::default();
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(
            verify(
                &trust,
                "c",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "AAAA",
                now
            ),
            Err(DnProofError::PrivateKey)
        );
        assert!(matches!(
            verify(&trust, "c", "", "not base64!", now),
            Err(DnProofError::SignatureEncoding(_))
        ));
        assert!(matches!(
            verify(&trust, "c", "no pem here", "AAAA", now),
            Err(DnProofError::Certificates(_))
        ));
        assert_eq!(
            verify(&trust, "c", &"x".repeat(MAX_PASTE + 1), "AAAA", now),
            Err(DnProofError::TooLarge)
        );
    }
}
