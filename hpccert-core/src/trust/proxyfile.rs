//! A proxy file handed over by a client after an X.509 login, and the check that it is the
//! login's own credential.
//!
//! In RFC 6187 the server sees only the client's certificate chain and a signature: the private
//! key stays with the client, so the server cannot make a usable proxy itself (GSI-OpenSSH gets
//! one through GSSAPI delegation). sshd-gsi's `[sshd] x509_proxy_handover` lets the client hand
//! one over explicitly; this module parses it ([`ProxyFile`], the `grid-proxy-init` layout: the
//! proxy certificate, its private key, the chain) and decides whether it may be handed on
//! ([`verify_handover`]): the key must be the first certificate's, the first certificate an
//! RFC 3820 proxy, and the chain either exactly the chain the login presented or a proxy issued
//! by the login's presented certificate followed by that chain, verified against the trust store
//! like a login (validity, proxy rules, CRLs, namespaces) and naming the login's identity.
//!
//! The private key is a secret: it is never in an error, and `Debug` does not show it.

use std::time::SystemTime;

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::identity::dn::DistinguishedName;
use crate::trust::store::TrustStore;
use crate::trust::x509::{PresentedChain, VerifiedChain, VerifyError, VerifyOptions, verify_chain};

/// The most a handed proxy file may weigh: a chain of 16 certificates and a key fit easily.
pub const MAX_PROXY_FILE_BYTES: usize = 64 * 1024;

/// Why a handed PEM is not a proxy file. No variant carries key material.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProxyFileError {
    #[error("{0} bytes: more than a proxy file holds ({MAX_PROXY_FILE_BYTES} at most)")]
    TooLarge(usize),
    #[error("no certificate in the PEM")]
    NoCertificate,
    #[error("{0} private keys in the PEM (a proxy file holds exactly one)")]
    KeyCount(usize),
    #[error("the private key is encrypted (a proxy's key is not)")]
    EncryptedKey,
    #[error("a PEM block of type {0:?} (a proxy file holds certificates and one private key)")]
    UnexpectedBlock(String),
    #[error("malformed PEM: {0}")]
    Malformed(String),
    #[error("certificate #{index} does not parse: {reason}")]
    BadCertificate { index: usize, reason: String },
    #[error("the private key does not parse")]
    BadKey,
    #[error("the private key is not the key of the first certificate ({subject})")]
    KeyMismatch { subject: String },
}

/// Why a handed proxy file is not taken. The `Display` text is what the server logs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HandoverError {
    #[error("not a proxy file: {0}")]
    File(#[from] ProxyFileError),
    #[error(
        "{subject} is not an RFC 3820 proxy (a long-lived certificate's key is not taken: hand over a proxy of it)"
    )]
    NotAProxy { subject: String },
    #[error(
        "its chain is neither the login's chain nor a proxy of the login's certificate followed by that chain"
    )]
    NotTheLoginChain,
    #[error("{subject} was not issued by the login's certificate {login}")]
    NotIssuedByLogin { subject: String, login: String },
    #[error("the chain does not verify: {0}")]
    Verify(#[from] VerifyError),
    #[error("it is a credential of {handed}, the login is {login}")]
    OtherIdentity { handed: String, login: String },
    #[error("verification error: {0}")]
    Internal(String),
}

/// A proxy file: certificates (the proxy first, then its chain) and the proxy's private key,
/// whose match with the first certificate is checked when parsed.
pub struct ProxyFile {
    chain: PresentedChain,
    key: PKey<Private>,
}

impl std::fmt::Debug for ProxyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyFile")
            .field("certificates", &self.chain.certificates().len())
            .field("key", &"<secret>")
            .finish()
    }
}

impl ProxyFile {
    /// Parse PEM text: `CERTIFICATE` blocks (in order, the proxy first) and exactly one
    /// unencrypted private key (`PRIVATE KEY`, `RSA PRIVATE KEY`, `EC PRIVATE KEY`) anywhere
    /// among them, as `grid-proxy-init` writes it. Text outside the blocks is ignored; any
    /// other block is refused.
    pub fn from_pem(pem: &[u8]) -> Result<Self, ProxyFileError> {
        if pem.len() > MAX_PROXY_FILE_BYTES {
            return Err(ProxyFileError::TooLarge(pem.len()));
        }
        let text = std::str::from_utf8(pem)
            .map_err(|_| ProxyFileError::Malformed("not ASCII text".into()))?;
        let mut certs = Vec::new();
        let mut keys = Vec::new();
        for block in pem_blocks(text)? {
            match block.label.as_str() {
                "CERTIFICATE" => {
                    let index = certs.len();
                    certs.push(X509::from_pem(block.text.as_bytes()).map_err(|e| {
                        ProxyFileError::BadCertificate {
                            index,
                            reason: e.to_string(),
                        }
                    })?);
                }
                "ENCRYPTED PRIVATE KEY" => return Err(ProxyFileError::EncryptedKey),
                label if label.ends_with("PRIVATE KEY") => {
                    if block.encrypted {
                        return Err(ProxyFileError::EncryptedKey);
                    }
                    // the empty passphrase: never a prompt (an encrypted key was refused above)
                    keys.push(
                        PKey::private_key_from_pem_passphrase(block.text.as_bytes(), b"")
                            .map_err(|_| ProxyFileError::BadKey)?,
                    );
                }
                other => return Err(ProxyFileError::UnexpectedBlock(other.to_string())),
            }
        }
        if keys.len() != 1 {
            return Err(ProxyFileError::KeyCount(keys.len()));
        }
        let Some(key) = keys.pop() else {
            return Err(ProxyFileError::KeyCount(0));
        };
        let Some(first) = certs.first() else {
            return Err(ProxyFileError::NoCertificate);
        };
        let matches = first
            .public_key()
            .map(|public| public.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(ProxyFileError::KeyMismatch {
                subject: subject_of(first),
            });
        }
        let chain = PresentedChain::from_certs(certs).map_err(|_| ProxyFileError::NoCertificate)?;
        Ok(Self { chain, key })
    }

    /// The certificates, the proxy first.
    pub fn chain(&self) -> &PresentedChain {
        &self.chain
    }

    /// The file as `grid-proxy-init` writes it: the proxy certificate, its key (PKCS#1 for RSA,
    /// as Globus tools have always read it; PKCS#8 otherwise), then the rest of the chain.
    pub fn to_pem(&self) -> Result<Zeroizing<Vec<u8>>, String> {
        let err = |e: openssl::error::ErrorStack| format!("proxy file: {e}");
        let mut out = Zeroizing::new(Vec::new());
        let certs = self.chain.certificates();
        let pem = |c: &X509| c.to_pem().map_err(err);
        if let Some(first) = certs.first() {
            out.extend(pem(first)?);
        }
        let key = Zeroizing::new(match self.key.rsa() {
            Ok(rsa) => rsa.private_key_to_pem().map_err(err)?,
            Err(_) => self.key.private_key_to_pem_pkcs8().map_err(err)?,
        });
        out.extend_from_slice(&key);
        for c in certs.iter().skip(1) {
            out.extend(pem(c)?);
        }
        Ok(out)
    }
}

/// What the handed proxy file is checked against: the login's presented chain and the
/// decision's identity and proxy depth.
#[derive(Debug, Clone, Copy)]
pub struct LoginCredential<'a> {
    pub chain: &'a PresentedChain,
    pub identity: &'a DistinguishedName,
    pub proxy_depth: usize,
}

/// Whether `handed` may be handed on to the sessions of `login`: it is an RFC 3820 proxy
/// (never a long-lived certificate's key), its certificates are exactly the login's presented
/// chain or a proxy signed by the login's presented certificate followed by that chain, and the
/// whole chain verifies against `trust` under `options` at `now` to the login's identity.
pub fn verify_handover(
    trust: &TrustStore,
    options: &VerifyOptions,
    now: SystemTime,
    login: &LoginCredential<'_>,
    handed: &ProxyFile,
) -> Result<VerifiedChain, HandoverError> {
    let handed_certs = handed.chain.certificates();
    let login_certs = login.chain.certificates();
    let same = |a: &[X509], b: &[X509]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| matches!((x.to_der(), y.to_der()), (Ok(x), Ok(y)) if x == y))
    };
    let (Some(first), Some(login_leaf)) = (handed_certs.first(), login_certs.first()) else {
        return Err(HandoverError::NotTheLoginChain);
    };
    let depth = if same(handed_certs, login_certs) {
        login.proxy_depth
    } else if same(&handed_certs[1..], login_certs) {
        // a new proxy: issued (named and signed) by the login's presented certificate
        let named = first
            .issuer_name()
            .try_cmp(login_leaf.subject_name())
            .map(|o| o.is_eq())
            .unwrap_or(false);
        let signed = login_leaf
            .public_key()
            .and_then(|k| first.verify(&k))
            .unwrap_or(false);
        if !(named && signed) {
            return Err(HandoverError::NotIssuedByLogin {
                subject: subject_of(first),
                login: subject_of(login_leaf),
            });
        }
        login.proxy_depth + 1
    } else {
        return Err(HandoverError::NotTheLoginChain);
    };
    let verified = verify_chain(trust, &handed.chain, options, now)?;
    if verified.identity() != login.identity {
        return Err(HandoverError::OtherIdentity {
            handed: verified.identity().to_slash(),
            login: login.identity.to_slash(),
        });
    }
    if verified.proxy_depth() == 0 {
        return Err(HandoverError::NotAProxy {
            subject: subject_of(first),
        });
    }
    if verified.proxy_depth() != depth {
        return Err(HandoverError::Internal(format!(
            "the verified path has {} proxies, {depth} expected",
            verified.proxy_depth()
        )));
    }
    Ok(verified)
}

/// One PEM block: its label, whether its headers say it is encrypted, and its text (the BEGIN
/// and END lines included), wiped when dropped.
struct PemBlock {
    label: String,
    encrypted: bool,
    text: Zeroizing<String>,
}

/// The PEM blocks of `text`, in order.
fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, ProxyFileError> {
    let mut blocks = Vec::new();
    let mut open: Option<PemBlock> = None;
    for line in text.lines() {
        let line = line.trim_end();
        match open.as_mut() {
            None => {
                if let Some(label) = line
                    .strip_prefix("-----BEGIN ")
                    .and_then(|l| l.strip_suffix("-----"))
                {
                    let mut text = Zeroizing::new(String::new());
                    text.push_str(line);
                    text.push('\n');
                    open = Some(PemBlock {
                        label: label.to_string(),
                        encrypted: false,
                        text,
                    });
                }
            }
            Some(block) => {
                block.text.push_str(line);
                block.text.push('\n');
                if let Some(label) = line
                    .strip_prefix("-----END ")
                    .and_then(|l| l.strip_suffix("-----"))
                {
                    if label != block.label {
                        return Err(ProxyFileError::Malformed(format!(
                            "BEGIN {} ended by END {label}",
                            block.label
                        )));
                    }
                    if let Some(done) = open.take() {
                        blocks.push(done);
                    }
                } else if line.starts_with("-----BEGIN ") {
                    return Err(ProxyFileError::Malformed(format!(
                        "BEGIN {} not ended",
                        block.label
                    )));
                } else if line.starts_with("Proc-Type:") && line.contains("ENCRYPTED") {
                    block.encrypted = true;
                }
            }
        }
    }
    match open {
        Some(block) => Err(ProxyFileError::Malformed(format!(
            "BEGIN {} not ended",
            block.label
        ))),
        None => Ok(blocks),
    }
}

fn subject_of(cert: &X509) -> String {
    cert.to_der()
        .ok()
        .and_then(|d| DistinguishedName::from_certificate_der(&d).ok())
        .map(|dn| dn.to_slash())
        .unwrap_or_else(|| "<unreadable subject>".to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;
    use crate::dev::pki::{self, CertSpec, Credential, KeyKind, ProxySpec};

    struct Site {
        now: SystemTime,
        trust: TrustStore,
        user: Credential,
        other_user: Credential,
        proxy: Credential,
    }

    fn site() -> Site {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_748_736_000);
        let ca = pki::self_signed_ca(&CertSpec::ca("/O=Grid/CN=CA", now, 30).unwrap()).unwrap();
        let user = |dn: &str| {
            pki::issue(
                &ca,
                &CertSpec {
                    key: KeyKind::EcP256,
                    ..CertSpec::user(dn, now, 7).unwrap()
                },
            )
            .unwrap()
        };
        let (alice, bob) = (user("/O=Grid/CN=alice"), user("/O=Grid/CN=bob"));
        let proxy = pki::issue_proxy(&alice, &ProxySpec::new("1001", now, 12)).unwrap();
        let trust = TrustStore::from_certificates(vec![ca.cert.clone()], vec![], vec![]).unwrap();
        Site {
            now,
            trust,
            user: alice,
            other_user: bob,
            proxy,
        }
    }

    /// grid-proxy-init's layout: the certificate, the key, the rest.
    fn file(leaf: &Credential, rest: &[&Credential]) -> Vec<u8> {
        let mut pem = leaf.cert_pem().unwrap();
        pem.extend(leaf.key_pem_traditional().unwrap());
        for c in rest {
            pem.extend(c.cert_pem().unwrap());
        }
        pem
    }

    fn check(s: &Site, login: &[&Credential], depth: usize, pem: &[u8]) -> Result<usize, String> {
        let chain =
            PresentedChain::from_certs(login.iter().map(|c| c.cert.clone()).collect()).unwrap();
        let identity = s.user.subject();
        let handed = ProxyFile::from_pem(pem).map_err(|e| e.to_string())?;
        let login = LoginCredential {
            chain: &chain,
            identity: &identity,
            proxy_depth: depth,
        };
        verify_handover(&s.trust, &VerifyOptions::default(), s.now, &login, &handed)
            .map(|v| v.proxy_depth())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_logins_proxy_or_a_new_proxy_of_its_certificate_is_taken() {
        let s = site();
        // logged in with the proxy, hands the same file
        let same = file(&s.proxy, &[&s.user]);
        assert_eq!(check(&s, &[&s.proxy, &s.user], 1, &same), Ok(1));
        // logged in with the certificate, hands a proxy of it
        assert_eq!(check(&s, &[&s.user], 0, &same), Ok(1));
        // logged in with the proxy, hands a proxy of the proxy
        let deeper = pki::issue_proxy(&s.proxy, &ProxySpec::new("2002", s.now, 6)).unwrap();
        let pem = file(&deeper, &[&s.proxy, &s.user]);
        assert_eq!(check(&s, &[&s.proxy, &s.user], 1, &pem), Ok(2));
        // the file written back holds the same credential, and parses again
        let again = ProxyFile::from_pem(&ProxyFile::from_pem(&pem).unwrap().to_pem().unwrap());
        assert_eq!(again.unwrap().chain().certificates().len(), 3);
    }

    #[test]
    fn anything_else_is_refused_saying_why() {
        let s = site();
        let login = [&s.proxy, &s.user];
        // another key with the proxy certificate
        let mut pem = s.proxy.cert_pem().unwrap();
        pem.extend(s.user.key_pem().unwrap());
        pem.extend(s.user.cert_pem().unwrap());
        let e = check(&s, &login, 1, &pem).unwrap_err();
        assert!(e.contains("not the key of the first certificate"), "{e}");
        // no key, two keys, an encrypted key, a stray block
        let e = check(&s, &login, 1, &s.proxy.cert_pem().unwrap()).unwrap_err();
        assert!(e.contains("0 private keys"), "{e}");
        let mut two = file(&s.proxy, &[&s.user]);
        two.extend(s.proxy.key_pem().unwrap());
        assert!(
            check(&s, &login, 1, &two)
                .unwrap_err()
                .contains("2 private keys")
        );
        let encrypted = s
            .proxy
            .key
            .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_128_cbc(), b"pw")
            .unwrap();
        let mut enc = s.proxy.cert_pem().unwrap();
        enc.extend(encrypted);
        assert!(
            check(&s, &login, 1, &enc)
                .unwrap_err()
                .contains("encrypted")
        );
        let mut stray = file(&s.proxy, &[&s.user]);
        stray.extend(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n");
        assert!(
            check(&s, &login, 1, &stray)
                .unwrap_err()
                .contains("X509 CRL")
        );
        // another identity's proxy, from the same CA
        let bobs = pki::issue_proxy(&s.other_user, &ProxySpec::new("3003", s.now, 12)).unwrap();
        let e = check(&s, &login, 1, &file(&bobs, &[&s.other_user])).unwrap_err();
        assert!(e.contains("neither the login's chain"), "{e}");
        // bob's proxy claiming alice's chain: not signed by it
        let e = check(&s, &login, 1, &file(&bobs, &[&s.proxy, &s.user])).unwrap_err();
        assert!(e.contains("not issued by the login's certificate"), "{e}");
        // the long-lived certificate's own key
        let e = check(&s, &[&s.user], 0, &file(&s.user, &[])).unwrap_err();
        assert!(e.contains("not an RFC 3820 proxy"), "{e}");
        // an expired proxy of the login's certificate
        let old = pki::issue_proxy(
            &s.user,
            &ProxySpec {
                not_before: s.now - Duration::from_secs(7200),
                not_after: s.now - Duration::from_secs(3600),
                ..ProxySpec::new("4004", s.now, 1)
            },
        )
        .unwrap();
        let e = check(&s, &[&s.user], 0, &file(&old, &[&s.user])).unwrap_err();
        assert!(e.contains("expired"), "{e}");
    }

    #[test]
    fn the_key_is_in_no_error_and_no_debug_output() {
        let s = site();
        let pem = file(&s.proxy, &[&s.user]);
        let parsed = ProxyFile::from_pem(&pem).unwrap();
        let key = String::from_utf8(s.proxy.key_pem_traditional().unwrap()).unwrap();
        let line = key.lines().nth(1).unwrap();
        assert!(!format!("{parsed:?}").contains(line));
        let mut bad = s.proxy.cert_pem().unwrap();
        bad.extend(key.replace(line, "AAAA").as_bytes());
        let e = ProxyFile::from_pem(&bad).unwrap_err().to_string();
        assert!(!e.contains(line) && !e.contains("AAAA"), "{e}");
    }
}
