//! Chain validation for user certificates and RFC 3820 proxy chains.
//!
//! **Library choice.** Path building and signature checks are OpenSSL's `X509_verify_cert`
//! (the `openssl` crate), because OpenSSL verifies RFC 3820 proxy certificates natively
//! (`X509_V_FLAG_ALLOW_PROXY_CERTS`: the proxy naming rule, `pCPathLenConstraint`, the
//! issuer's key usage), which is what Globus GSI itself relies on; rustls-webpki has no notion
//! of proxies and would refuse every proxy chain as "EE certificate used as CA". Everything
//! grid-specific is checked here, on the chain OpenSSL built, with our own typed errors:
//!
//! * proxy policy: RFC 3820 `ProxyCertInfo` policy languages (`inheritAll` accepted,
//!   Globus `limited` refused unless configured, `independent` and unknown ones refused),
//!   legacy pre-RFC Globus proxies refused with a hint, a proxy outliving its issuer refused;
//! * CRLs (`require` / `if-present` / `ignore`) on every CA-issued certificate of the path,
//!   with RFC 5280 sanity checks on the CRL itself (see [`crate::trust`]);
//! * namespace constraints (`.namespaces`, `.signing_policy`) on every CA-issued certificate;
//! * key strength (RSA >= 2048 bits, named NIST curves, Ed25519/Ed448; no DSA).
//!
//! Validation time is a parameter. The result is a [`VerifiedChain`], which only this module
//! can construct.

use std::time::{SystemTime, UNIX_EPOCH};

use openssl::stack::Stack;
use openssl::x509::{X509, X509StoreContext, X509VerifyResult};
use thiserror::Error;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::dn::DistinguishedName;
use crate::trust::{CrlState, PolicyState, Purpose, TrustStore, check_crl_signer};

/// RFC 3820 ProxyCertInfo.
const OID_PROXY_CERT_INFO: &str = "1.3.6.1.5.5.7.1.14";
/// Pre-RFC (GT3 draft) proxy cert info.
const OID_PROXY_CERT_INFO_DRAFT: &str = "1.3.6.1.4.1.3536.1.222";
const OID_PPL_INHERIT_ALL: &str = "1.3.6.1.5.5.7.21.1";
const OID_PPL_INDEPENDENT: &str = "1.3.6.1.5.5.7.21.2";
/// Globus limited proxy policy language.
const OID_PPL_LIMITED: &str = "1.3.6.1.4.1.3536.1.1.1.9";

/// What to do about CRLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrlPolicy {
    /// Every CA on the path must have a current CRL.
    Require,
    /// Check the CRL where the CA has one (a CRL file that cannot be used still refuses).
    IfPresent,
    /// Do not check revocation.
    Ignore,
}

/// What to do about namespace policies (`.namespaces`, `.signing_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NamespaceEnforcement {
    /// Every CA on the path must have a policy file.
    Require,
    /// Enforce the policy where the CA has one.
    IfPresent,
    Ignore,
}

/// Verification policy.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub crl: CrlPolicy,
    pub namespaces: NamespaceEnforcement,
    pub allow_limited_proxies: bool,
    pub purpose: Purpose,
    /// Maximum number of certificates above the presented one (OpenSSL verify depth).
    pub max_depth: u32,
    /// Refuse weak keys (RSA < 2048, DSA, unnamed or small curves).
    pub key_policy: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            crl: CrlPolicy::IfPresent,
            namespaces: NamespaceEnforcement::IfPresent,
            allow_limited_proxies: false,
            purpose: Purpose::ClientAuth,
            max_depth: 16,
            key_policy: true,
        }
    }
}

/// Why a chain was refused. The `Display` text is the reason logged and shown to admins.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("no certificate presented")]
    EmptyChain,
    #[error("malformed certificate #{index}: {reason}")]
    Malformed { index: usize, reason: String },
    #[error("certificate expired: {subject} (not after {not_after})")]
    Expired { subject: String, not_after: String },
    #[error("certificate not yet valid: {subject} (not before {not_before})")]
    NotYetValid { subject: String, not_before: String },
    #[error("unknown CA: no trusted CA issued {subject} (issuer {issuer})")]
    UnknownCa { subject: String, issuer: String },
    #[error(
        "certificate revoked: {subject} (serial {serial}, revoked {revoked_at}) by the CRL of {ca}"
    )]
    Revoked {
        subject: String,
        serial: String,
        revoked_at: String,
        ca: String,
    },
    #[error("no CRL for CA {ca} (CRL checking is `require`)")]
    CrlMissing { ca: String },
    #[error("CRL of CA {ca} cannot be used: {reason}")]
    CrlUnusable { ca: String, reason: String },
    #[error("namespace violation: {subject} issued by {ca}: {reason}")]
    Namespace {
        subject: String,
        ca: String,
        reason: String,
    },
    #[error("no namespace policy for CA {ca} (namespaces is `require`)")]
    NamespaceMissing { ca: String },
    #[error("limited proxy refused: {subject} (allow_limited_proxies is off)")]
    LimitedProxy { subject: String },
    #[error("bad proxy: {subject}: {reason}")]
    BadProxy { subject: String, reason: String },
    #[error("weak key: {subject}: {reason}")]
    WeakKey { subject: String, reason: String },
    #[error("invalid certificate: {subject}: {reason}")]
    Invalid { subject: String, reason: String },
    #[error("verification error: {0}")]
    Internal(String),
}

/// A certificate chain as a client presents it: the end certificate (EEC or proxy) first,
/// then the rest (proxies, the EEC, intermediates) in any order.
#[derive(Debug, Clone)]
pub struct PresentedChain {
    certs: Vec<X509>,
}

impl PresentedChain {
    pub fn from_pem(pem: &[u8]) -> Result<Self, VerifyError> {
        let certs = X509::stack_from_pem(pem).map_err(|e| VerifyError::Malformed {
            index: 0,
            reason: format!("PEM: {e}"),
        })?;
        if certs.is_empty() {
            return Err(VerifyError::Malformed {
                index: 0,
                reason: "no PEM certificate found".into(),
            });
        }
        Self::from_certs(certs)
    }

    pub fn from_der_list<B: AsRef<[u8]>>(ders: &[B]) -> Result<Self, VerifyError> {
        let mut certs = Vec::new();
        for (index, der) in ders.iter().enumerate() {
            certs.push(
                X509::from_der(der.as_ref()).map_err(|e| VerifyError::Malformed {
                    index,
                    reason: e.to_string(),
                })?,
            );
        }
        Self::from_certs(certs)
    }

    pub fn from_certs(certs: Vec<X509>) -> Result<Self, VerifyError> {
        if certs.is_empty() {
            return Err(VerifyError::EmptyChain);
        }
        Ok(Self { certs })
    }

    pub fn certificates(&self) -> &[X509] {
        &self.certs
    }
}

/// Proof that a chain was verified. Only [`verify_chain`] constructs it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct VerifiedChain {
    identity: DistinguishedName,
    presented_subject: DistinguishedName,
    ca: DistinguishedName,
    fingerprint: String,
    proxy_depth: usize,
    limited: bool,
    not_after: i64,
    path: Vec<DistinguishedName>,
}

impl VerifiedChain {
    /// The identity: the end-entity certificate's subject (also for proxies).
    pub fn identity(&self) -> &DistinguishedName {
        &self.identity
    }
    /// Subject of the certificate that was presented (a proxy's own name for proxies).
    pub fn presented_subject(&self) -> &DistinguishedName {
        &self.presented_subject
    }
    /// The trust anchor the path ends at.
    pub fn ca(&self) -> &DistinguishedName {
        &self.ca
    }
    /// `SHA256:` and the hex SHA-256 of the presented certificate.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    /// Number of proxy certificates above the EEC (0 for a plain certificate).
    pub fn proxy_depth(&self) -> usize {
        self.proxy_depth
    }
    pub fn is_limited(&self) -> bool {
        self.limited
    }
    /// Earliest `notAfter` on the path (unix seconds): when this credential stops working.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }
    /// One line for logs and explanations.
    pub fn summary(&self) -> String {
        let proxies = match self.proxy_depth {
            0 => String::new(),
            1 => " through 1 RFC 3820 proxy".to_string(),
            n => format!(" through {n} RFC 3820 proxies"),
        };
        let limited = if self.limited { " (limited)" } else { "" };
        format!(
            "certificate chain verified: {} under CA {}{proxies}{limited}",
            self.identity, self.ca
        )
    }

    /// Subjects from the presented certificate up to the anchor.
    pub fn path(&self) -> &[DistinguishedName] {
        &self.path
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs().min(i64::MAX as u64) as i64,
        Err(e) => -(e.duration().as_secs().min(i64::MAX as u64) as i64),
    }
}

/// RFC 3339 text of a unix time.
pub fn format_unix(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

fn asn1_unix(t: &openssl::asn1::Asn1TimeRef) -> Option<i64> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    Some(i64::from(d.days) * 86400 + i64::from(d.secs))
}

fn subject_of(cert: &openssl::x509::X509Ref) -> String {
    cert.to_der()
        .ok()
        .and_then(|d| DistinguishedName::from_certificate_der(&d).ok())
        .map(|dn| dn.to_slash())
        .unwrap_or_else(|| "<unreadable subject>".to_string())
}

/// One certificate of the verified path, parsed once.
struct PathCert {
    x509: X509,
    der: Vec<u8>,
}

impl PathCert {
    fn parsed(&self) -> Result<X509Certificate<'_>, VerifyError> {
        X509Certificate::from_der(&self.der)
            .map(|(_, c)| c)
            .map_err(|e| VerifyError::Invalid {
                subject: subject_of(&self.x509),
                reason: e.to_string(),
            })
    }
}

/// The proxy facts of one certificate.
enum ProxyKind {
    NotProxy,
    Rfc3820 { language: String },
    Legacy,
}

fn proxy_kind(cert: &X509Certificate<'_>) -> Result<ProxyKind, String> {
    for ext in cert.extensions() {
        let oid = ext.oid.to_id_string();
        if oid == OID_PROXY_CERT_INFO {
            if !ext.critical {
                return Err("ProxyCertInfo must be critical (RFC 3820 3.8)".to_string());
            }
            return proxy_policy_language(ext.value)
                .map(|language| ProxyKind::Rfc3820 { language });
        }
        if oid == OID_PROXY_CERT_INFO_DRAFT {
            return Ok(ProxyKind::Legacy);
        }
    }
    // legacy GT2 proxies carry no extension, only the name: issuer DN + CN=proxy
    let subject = cert.subject().to_string();
    if subject.ends_with("CN=proxy") || subject.ends_with("CN=limited proxy") {
        let issuer = cert.issuer().to_string();
        if subject.starts_with(&issuer) {
            return Ok(ProxyKind::Legacy);
        }
    }
    Ok(ProxyKind::NotProxy)
}

/// ProxyCertInfo ::= SEQUENCE { pCPathLenConstraint INTEGER OPTIONAL,
///                              proxyPolicy SEQUENCE { policyLanguage OID, policy OCTET STRING OPTIONAL } }
fn proxy_policy_language(value: &[u8]) -> Result<String, String> {
    use x509_parser::der_parser::ber::BerObjectContent;
    use x509_parser::der_parser::der::parse_der;
    let bad = || "malformed ProxyCertInfo".to_string();
    let (rest, obj) = parse_der(value).map_err(|_| bad())?;
    if !rest.is_empty() {
        return Err(bad());
    }
    let BerObjectContent::Sequence(items) = obj.content else {
        return Err(bad());
    };
    let policy = match items.as_slice() {
        [len, policy] if matches!(len.content, BerObjectContent::Integer(_)) => policy,
        [policy] => policy,
        _ => return Err(bad()),
    };
    let BerObjectContent::Sequence(parts) = &policy.content else {
        return Err(bad());
    };
    match parts.first().map(|p| &p.content) {
        Some(BerObjectContent::OID(oid)) => Ok(oid.to_id_string()),
        _ => Err(bad()),
    }
}

fn legacy_proxy(subject: String) -> VerifyError {
    VerifyError::BadProxy {
        subject,
        reason:
            "legacy (pre-RFC 3820) Globus proxy; create an RFC 3820 proxy (grid-proxy-init -rfc)"
                .into(),
    }
}

fn key_problem(cert: &X509Certificate<'_>) -> Option<String> {
    let spki = cert.public_key();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            // x509-parser's `key_size()` assumes a leading 0x00 and rounds down to whole
            // bytes (a 2052-bit modulus reads as 2048): count the bits ourselves.
            let modulus = rsa.modulus;
            let start = modulus
                .iter()
                .position(|b| *b != 0)
                .unwrap_or(modulus.len());
            let bits = match modulus.get(start) {
                Some(first) => (modulus.len() - start) * 8 - first.leading_zeros() as usize,
                None => 0,
            };
            if bits < 2048 {
                Some(format!("RSA key of {bits} bits (at least 2048 required)"))
            } else if !bits.is_multiple_of(8) {
                Some(format!(
                    "RSA modulus of {bits} bits is not a whole number of bytes"
                ))
            } else {
                None
            }
        }
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7" | "1.3.132.0.34" | "1.3.132.0.35") => None,
                Some(other) => Some(format!(
                    "elliptic curve {other} is not allowed (P-256, P-384, P-521)"
                )),
                None => {
                    Some("EC key without a named curve (explicit curve parameters)".to_string())
                }
            }
        }
        Ok(PublicKey::DSA(_)) => Some("DSA keys are not allowed".to_string()),
        Ok(_) => {
            let alg = spki.algorithm.algorithm.to_id_string();
            match alg.as_str() {
                "1.3.101.112" | "1.3.101.113" => None,
                other => Some(format!("unsupported public key algorithm {other}")),
            }
        }
        Err(e) => Some(format!("unreadable public key: {e}")),
    }
}

/// Map an OpenSSL verification failure to a typed refusal.
fn openssl_refusal(
    code: X509VerifyResult,
    cert: Option<(String, String, i64, i64)>,
) -> VerifyError {
    use openssl_sys as ffi;
    let (subject, issuer, not_before, not_after) =
        cert.unwrap_or_else(|| ("<unknown>".into(), "<unknown>".into(), 0, 0));
    let raw = code.as_raw();
    match raw {
        ffi::X509_V_ERR_CERT_HAS_EXPIRED => VerifyError::Expired {
            subject,
            not_after: format_unix(not_after),
        },
        ffi::X509_V_ERR_CERT_NOT_YET_VALID => VerifyError::NotYetValid {
            subject,
            not_before: format_unix(not_before),
        },
        ffi::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        | ffi::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
        | ffi::X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
        | ffi::X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT => VerifyError::UnknownCa { subject, issuer },
        ffi::X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED => VerifyError::BadProxy {
            subject,
            reason: "proxy path length constraint exceeded".into(),
        },
        // X509_V_ERR_PROXY_SUBJECT_NAME_VIOLATION (not exported by openssl-sys)
        67 => VerifyError::BadProxy {
            subject,
            reason: "proxy subject must be its issuer's subject plus one CN".into(),
        },
        ffi::X509_V_ERR_CERT_SIGNATURE_FAILURE if subject != issuer => VerifyError::Invalid {
            subject,
            reason:
                "signature does not verify with the issuer's key (wrong key or altered certificate)"
                    .into(),
        },
        _ => VerifyError::Invalid {
            subject,
            reason: code.error_string().to_string(),
        },
    }
}

fn cert_facts(cert: &openssl::x509::X509Ref) -> (String, String, i64, i64) {
    let der = cert.to_der().unwrap_or_default();
    match X509Certificate::from_der(&der) {
        Ok((_, c)) => (
            DistinguishedName::from_x509_name(c.subject())
                .map(|d| d.to_slash())
                .unwrap_or_default(),
            DistinguishedName::from_x509_name(c.issuer())
                .map(|d| d.to_slash())
                .unwrap_or_default(),
            c.validity().not_before.timestamp(),
            c.validity().not_after.timestamp(),
        ),
        Err(_) => (subject_of(cert), "<unknown>".into(), 0, 0),
    }
}

/// Verify a presented chain against the trust store at time `now`.
pub fn verify_chain(
    trust: &TrustStore,
    presented: &PresentedChain,
    options: &VerifyOptions,
    now: SystemTime,
) -> Result<VerifiedChain, VerifyError> {
    let now = unix_seconds(now);
    let leaf = &presented.certs[0];
    // every presented certificate must parse strictly before anything else happens
    for (index, cert) in presented.certs.iter().enumerate() {
        let der = cert.to_der().map_err(|e| VerifyError::Malformed {
            index,
            reason: e.to_string(),
        })?;
        let (_, parsed) = X509Certificate::from_der(&der).map_err(|e| VerifyError::Malformed {
            index,
            reason: e.to_string(),
        })?;
        // OpenSSL would only say "invalid CA certificate" about a legacy proxy's issuer
        if matches!(proxy_kind(&parsed), Ok(ProxyKind::Legacy)) {
            return Err(legacy_proxy(subject_of(cert)));
        }
    }
    let store = trust
        .openssl_store(now, options.purpose, options.max_depth)
        .map_err(VerifyError::Internal)?;
    let mut untrusted = Stack::new().map_err(|e| VerifyError::Internal(e.to_string()))?;
    for cert in &presented.certs[1..] {
        untrusted
            .push(cert.clone())
            .map_err(|e| VerifyError::Internal(e.to_string()))?;
    }
    let mut ctx = X509StoreContext::new().map_err(|e| VerifyError::Internal(e.to_string()))?;
    let outcome = ctx
        .init(&store, leaf, &untrusted, |c| {
            let ok = c.verify_cert()?;
            if ok {
                let chain: Vec<X509> = c
                    .chain()
                    .map(|s| s.iter().map(|x| x.to_owned()).collect())
                    .unwrap_or_default();
                Ok(Ok(chain))
            } else {
                let facts = c.current_cert().map(cert_facts);
                Ok(Err((c.error(), facts)))
            }
        })
        .map_err(|e| VerifyError::Internal(e.to_string()))?;
    let chain = match outcome {
        Ok(chain) => chain,
        Err((code, facts)) => return Err(openssl_refusal(code, facts)),
    };
    if chain.is_empty() {
        return Err(VerifyError::Internal(
            "OpenSSL returned an empty chain".into(),
        ));
    }
    let path: Vec<PathCert> = chain
        .into_iter()
        .map(|x509| {
            let der = x509
                .to_der()
                .map_err(|e| VerifyError::Internal(e.to_string()))?;
            Ok(PathCert { x509, der })
        })
        .collect::<Result<_, VerifyError>>()?;
    check_path(trust, &path, options, now)
}

fn check_path(
    trust: &TrustStore,
    path: &[PathCert],
    options: &VerifyOptions,
    now: i64,
) -> Result<VerifiedChain, VerifyError> {
    let parsed: Vec<X509Certificate<'_>> = path
        .iter()
        .map(PathCert::parsed)
        .collect::<Result<_, _>>()?;
    let names: Vec<DistinguishedName> = parsed
        .iter()
        .map(|c| {
            DistinguishedName::from_x509_name(c.subject()).map_err(|e| VerifyError::Invalid {
                subject: c.subject().to_string(),
                reason: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;

    if options.key_policy {
        for (cert, name) in parsed.iter().zip(&names) {
            if let Some(reason) = key_problem(cert) {
                return Err(VerifyError::WeakKey {
                    subject: name.to_slash(),
                    reason,
                });
            }
        }
    }

    // proxies: a run at the bottom of the path
    let mut proxy_depth = 0;
    let mut limited = false;
    for (i, cert) in parsed.iter().enumerate() {
        let subject = names[i].to_slash();
        match proxy_kind(cert).map_err(|reason| VerifyError::BadProxy {
            subject: subject.clone(),
            reason,
        })? {
            ProxyKind::NotProxy => break,
            ProxyKind::Legacy => return Err(legacy_proxy(subject)),
            ProxyKind::Rfc3820 { language } => {
                match language.as_str() {
                    OID_PPL_INHERIT_ALL => {}
                    OID_PPL_LIMITED => limited = true,
                    OID_PPL_INDEPENDENT => {
                        return Err(VerifyError::BadProxy {
                            subject,
                            reason: "independent proxy: it carries none of its issuer's identity"
                                .into(),
                        });
                    }
                    other => {
                        return Err(VerifyError::BadProxy {
                            subject,
                            reason: format!("unknown proxy policy language {other}"),
                        });
                    }
                }
                let Some(issuer) = parsed.get(i + 1) else {
                    return Err(VerifyError::BadProxy {
                        subject,
                        reason: "proxy without issuer".into(),
                    });
                };
                if cert.validity().not_after.timestamp() > issuer.validity().not_after.timestamp() {
                    return Err(VerifyError::BadProxy {
                        subject,
                        reason: format!(
                            "proxy outlives its issuer (proxy not after {}, issuer not after {})",
                            format_unix(cert.validity().not_after.timestamp()),
                            format_unix(issuer.validity().not_after.timestamp())
                        ),
                    });
                }
                proxy_depth += 1;
            }
        }
    }
    if limited && !options.allow_limited_proxies {
        return Err(VerifyError::LimitedProxy {
            subject: names[0].to_slash(),
        });
    }
    let eec = proxy_depth;
    if eec >= path.len() {
        return Err(VerifyError::BadProxy {
            subject: names[0].to_slash(),
            reason: "no end-entity certificate".into(),
        });
    }
    if names[eec].is_empty() {
        return Err(VerifyError::Invalid {
            subject: "<empty subject>".into(),
            reason: "the end-entity certificate has an empty subject DN, so no identity".into(),
        });
    }

    // CA-issued certificates: the EEC and any intermediates below the anchor
    let anchor = path.len() - 1;
    for i in eec..anchor {
        let subject = &names[i];
        let ca = &names[i + 1];
        check_revocation(trust, &path[i], &path[i + 1], subject, ca, options.crl, now)?;
        check_namespace(trust, subject, ca, options.namespaces)?;
    }

    let not_after = parsed
        .iter()
        .map(|c| c.validity().not_after.timestamp())
        .min()
        .unwrap_or(now);
    let fingerprint = {
        let digest = openssl::hash::hash(openssl::hash::MessageDigest::sha256(), &path[0].der)
            .map_err(|e| VerifyError::Internal(e.to_string()))?;
        format!(
            "SHA256:{}",
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    };
    Ok(VerifiedChain {
        identity: names[eec].clone(),
        presented_subject: names[0].clone(),
        ca: names[anchor].clone(),
        fingerprint,
        proxy_depth,
        limited,
        not_after,
        path: names,
    })
}

fn check_revocation(
    trust: &TrustStore,
    cert: &PathCert,
    issuer: &PathCert,
    subject: &DistinguishedName,
    ca: &DistinguishedName,
    policy: CrlPolicy,
    now: i64,
) -> Result<(), VerifyError> {
    if policy == CrlPolicy::Ignore {
        return Ok(());
    }
    let unusable = |reason: String| VerifyError::CrlUnusable {
        ca: ca.to_slash(),
        reason,
    };
    let crl = match trust.crl_for(ca) {
        None if policy == CrlPolicy::Require => {
            return Err(VerifyError::CrlMissing { ca: ca.to_slash() });
        }
        None => return Ok(()),
        Some(CrlState::Broken { file, reason }) => {
            return Err(unusable(format!("{}: {reason}", file.display())));
        }
        Some(CrlState::Loaded(crl)) => crl,
    };
    if !crl.signature_checked {
        let mut defects = Vec::new();
        check_crl_signer(&crl.crl, &issuer.x509, &mut defects).map_err(&unusable)?;
        if let Some(d) = defects.first() {
            return Err(unusable(d.clone()));
        }
    }
    if let Some(d) = crl.defects.first() {
        return Err(unusable(d.clone()));
    }
    if crl.this_update > now {
        return Err(unusable(format!(
            "CRL not yet valid (this update {})",
            format_unix(crl.this_update)
        )));
    }
    match crl.next_update {
        Some(next) if next < now => {
            return Err(unusable(format!(
                "CRL expired (next update was due {})",
                format_unix(next)
            )));
        }
        None => return Err(unusable("CRL has no next update time".into())),
        _ => {}
    }
    if let openssl::x509::CrlStatus::Revoked(entry) =
        crl.crl.get_by_serial(cert.x509.serial_number())
    {
        let serial = cert
            .x509
            .serial_number()
            .to_bn()
            .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
            .unwrap_or_default();
        return Err(VerifyError::Revoked {
            subject: subject.to_slash(),
            serial,
            revoked_at: asn1_unix(entry.revocation_date())
                .map(format_unix)
                .unwrap_or_else(|| entry.revocation_date().to_string()),
            ca: ca.to_slash(),
        });
    }
    Ok(())
}

fn check_namespace(
    trust: &TrustStore,
    subject: &DistinguishedName,
    ca: &DistinguishedName,
    enforcement: NamespaceEnforcement,
) -> Result<(), VerifyError> {
    match (enforcement, trust.policy_for(ca)) {
        (NamespaceEnforcement::Ignore, _) => Ok(()),
        (NamespaceEnforcement::Require, None) => {
            Err(VerifyError::NamespaceMissing { ca: ca.to_slash() })
        }
        (NamespaceEnforcement::IfPresent, None) => Ok(()),
        (_, Some(PolicyState::Broken { file, reason })) => Err(VerifyError::Namespace {
            subject: subject.to_slash(),
            ca: ca.to_slash(),
            reason: format!("{}: {reason}", file.display()),
        }),
        (_, Some(PolicyState::Loaded { policy, .. })) => {
            policy
                .check(subject)
                .map_err(|reason| VerifyError::Namespace {
                    subject: subject.to_slash(),
                    ca: ca.to_slash(),
                    reason,
                })
        }
    }
}
