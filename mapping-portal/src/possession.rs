//! Proof of possession of an X.509 certificate's key: the holder signs a one-time challenge
//! with `openssl dgst -sha256 -sign` and sends the signature with the certificates (the end
//! entity's first, then any intermediates). The chain is verified as a login's is (trust
//! store, CRLs, namespaces, RFC 3820 proxies), the signature with the first certificate's
//! key. Used by the DN proof of the portal's pages ([`crate::web::dnproof`], which refuses
//! proxies) and by the SSH CA's X.509 proof ([`crate::sshca`], which takes them).
//!
//! What is sent is never logged: neither the signature nor the certificates, and a paste
//! holding a private key is refused before it is read any further.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hpccert_core::config::TrustConfig;
use hpccert_core::trust::store::TrustStore;
use hpccert_core::trust::x509::{PresentedChain, VerifiedChain, verify_chain};
use openssl::hash::MessageDigest;
use openssl::pkey::Id;
use openssl::sign::Verifier;
use thiserror::Error;

/// A paste larger than this is not read (a chain of a few certificates is a few KB).
pub const MAX_PASTE: usize = 64 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PossessionError {
    #[error("the paste holds a private key: never send a key anywhere; send only the certificates")]
    PrivateKey,
    #[error("the certificates or the signature are larger than {MAX_PASTE} bytes")]
    TooLarge,
    #[error("the certificates: {0}")]
    Certificates(String),
    #[error("the signature is not base64: {0}")]
    SignatureEncoding(String),
    #[error(
        "the signature does not match the challenge and the first certificate's key (sign the challenge text with that certificate's key: openssl dgst -sha256 -sign)"
    )]
    SignatureMismatch,
    #[error("the certificate's key type is not supported (RSA and EC keys are)")]
    KeyType,
    #[error("the certificate chain is refused: {0}")]
    Chain(String),
    #[error("the trust store cannot be loaded: {0}")]
    Trust(String),
}

/// Check the answer to `challenge`: `certificates` (PEM, the end entity's first, then any
/// intermediates) and `signature` (base64 of `openssl dgst -sha256 -sign`, made with the
/// first certificate's key). Returns the verified chain (proxies included: the caller
/// decides whether it takes one).
pub fn verify(
    trust: &TrustConfig,
    challenge: &str,
    certificates: &str,
    signature: &str,
    now: SystemTime,
) -> Result<VerifiedChain, PossessionError> {
    if certificates.len() > MAX_PASTE || signature.len() > MAX_PASTE {
        return Err(PossessionError::TooLarge);
    }
    if certificates.contains("PRIVATE KEY") || signature.contains("PRIVATE KEY") {
        return Err(PossessionError::PrivateKey);
    }
    let signature: String = signature.split_whitespace().collect();
    let signature = STANDARD
        .decode(signature.as_bytes())
        .map_err(|e| PossessionError::SignatureEncoding(e.to_string()))?;
    let chain = PresentedChain::from_pem(certificates.as_bytes())
        .map_err(|e| PossessionError::Certificates(e.to_string()))?;
    let leaf = chain
        .certificates()
        .first()
        .ok_or_else(|| PossessionError::Certificates("no certificate".into()))?;
    let key = leaf
        .public_key()
        .map_err(|e| PossessionError::Certificates(e.to_string()))?;
    if !matches!(key.id(), Id::RSA | Id::EC) {
        return Err(PossessionError::KeyType);
    }
    // the text exactly as shown (printf '%s'), or with the newline `echo` adds
    let signed = |data: &[u8]| -> bool {
        Verifier::new(MessageDigest::sha256(), &key)
            .and_then(|mut v| v.verify_oneshot(&signature, data))
            .unwrap_or(false)
    };
    if !signed(challenge.as_bytes()) && !signed(format!("{challenge}\n").as_bytes()) {
        return Err(PossessionError::SignatureMismatch);
    }
    let source = trust.source();
    let store = TrustStore::load_cached(&source)
        .map_err(|e| PossessionError::Trust(format!("{}: {e}", source.display())))?;
    verify_chain(&store, &chain, &trust.verify_options(), now)
        .map_err(|e| PossessionError::Chain(e.to_string()))
}
