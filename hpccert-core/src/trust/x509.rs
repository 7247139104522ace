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
//!   with RFC 5280 sanity checks on the CRL itself (see [`crate::trust::store`]);
//! * namespace constraints (`.namespaces`, `.signing_policy`) on every CA-issued certificate;
//! * key strength (RSA >= 2048 bits, named NIST curves, Ed25519/Ed448; no DSA).
//!
//! Validation time is a parameter. The result is a [`VerifiedChain`], which only this module
//! can construct.

use std::sync::LazyLock;
use std::time::SystemTime;

use openssl::stack::Stack;
use openssl::x509::{X509, X509Ref, X509StoreContext, X509VerifyResult};
use thiserror::Error;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::clock::unix_seconds;
use crate::identity::dn::DistinguishedName;
use crate::trust::certinfo::{
    CertInfo, OID_PPL_INDEPENDENT, OID_PPL_INHERIT_ALL, OID_PPL_LIMITED, ProxyKind,
};
use crate::trust::store::{CrlState, PolicyState, Purpose, TrustStore};

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
    /// Earliest `nextUpdate` of the CRLs the revocation checks read (None: none was read).
    crl_next_update: Option<i64>,
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
    /// Earliest `nextUpdate` (unix seconds) of the CRLs this verification read: after it, the
    /// answer "not revoked" may no longer hold. None when no CRL was read (`crl = ignore`, or
    /// no CA on the path has one under `if-present`).
    pub fn crl_next_update(&self) -> Option<i64> {
        self.crl_next_update
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

/// A [`CertInfo`] computed for this verification or borrowed from the trust store.
enum Info<'a> {
    Borrowed(&'a CertInfo),
    Owned(CertInfo),
}

impl std::ops::Deref for Info<'_> {
    type Target = CertInfo;
    fn deref(&self) -> &CertInfo {
        match self {
            Info::Borrowed(i) => i,
            Info::Owned(i) => i,
        }
    }
}

/// One certificate of the verified path.
struct PathCert<'a> {
    x509: X509,
    info: Info<'a>,
}

fn legacy_proxy(subject: String) -> VerifyError {
    VerifyError::BadProxy {
        subject,
        reason:
            "legacy (pre-RFC 3820) Globus proxy; create an RFC 3820 proxy (grid-proxy-init -rfc)"
                .into(),
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
    // every presented certificate must parse strictly before anything else happens; what
    // the checks below need is read now, once
    let mut infos: Vec<CertInfo> = Vec::with_capacity(presented.certs.len());
    let mut leaf_der = Vec::new();
    for (index, cert) in presented.certs.iter().enumerate() {
        let der = cert.to_der().map_err(|e| VerifyError::Malformed {
            index,
            reason: e.to_string(),
        })?;
        let info =
            CertInfo::from_der(&der).map_err(|reason| VerifyError::Malformed { index, reason })?;
        // OpenSSL would only say "invalid CA certificate" about a legacy proxy's issuer
        if matches!(info.proxy, Ok(ProxyKind::Legacy)) {
            return Err(legacy_proxy(subject_of(cert)));
        }
        infos.push(info);
        if index == 0 {
            leaf_der = der;
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
    // The chain holds the very objects it was built from (presented certificates and the
    // store's anchors, reference-counted), so their information is found by identity.
    // Anything else is read from its DER here.
    let path: Vec<PathCert<'_>> = chain
        .into_iter()
        .map(|x509| {
            let known = presented
                .certs
                .iter()
                .position(|c| same_cert(c, &x509))
                .map(|i| &infos[i])
                .or_else(|| trust.anchor_for(&x509).map(|a| &*a.info));
            let info = match known {
                Some(info) => Info::Borrowed(info),
                None => {
                    let der = x509
                        .to_der()
                        .map_err(|e| VerifyError::Internal(e.to_string()))?;
                    Info::Owned(CertInfo::from_der(&der).map_err(|reason| {
                        VerifyError::Invalid {
                            subject: subject_of(&x509),
                            reason,
                        }
                    })?)
                }
            };
            Ok(PathCert { x509, info })
        })
        .collect::<Result<_, VerifyError>>()?;
    check_path(trust, &path, &leaf_der, options, now)
}

/// The same OpenSSL certificate object.
fn same_cert(a: &X509Ref, b: &X509Ref) -> bool {
    // an `&X509Ref` is the address of OpenSSL's X509 object
    std::ptr::eq(a, b)
}

/// SHA-256 with the implementation fetched once (OpenSSL 3 otherwise looks it up in its
/// provider tables on every digest).
fn sha256(data: &[u8]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    static SHA256: LazyLock<Option<openssl::md::Md>> =
        LazyLock::new(|| openssl::md::Md::fetch(None, "SHA256", None).ok());
    match SHA256.as_ref() {
        Some(md) => {
            let mut ctx = openssl::md_ctx::MdCtx::new()?;
            ctx.digest_init(md)?;
            ctx.digest_update(data)?;
            let mut out = vec![0; md.size()];
            let n = ctx.digest_final(&mut out)?;
            out.truncate(n);
            Ok(out)
        }
        None => {
            openssl::hash::hash(openssl::hash::MessageDigest::sha256(), data).map(|d| d.to_vec())
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// `leaf_der`: the DER of `path[0]`, the presented certificate.
fn check_path(
    trust: &TrustStore,
    path: &[PathCert<'_>],
    leaf_der: &[u8],
    options: &VerifyOptions,
    now: i64,
) -> Result<VerifiedChain, VerifyError> {
    let names: Vec<DistinguishedName> = path
        .iter()
        .map(|c| match &c.info.subject {
            Ok(name) => Ok(name.clone()),
            Err((subject, reason)) => Err(VerifyError::Invalid {
                subject: subject.clone(),
                reason: reason.clone(),
            }),
        })
        .collect::<Result<_, _>>()?;

    if options.key_policy {
        for (cert, name) in path.iter().zip(&names) {
            if let Some(reason) = &cert.info.key_problem {
                return Err(VerifyError::WeakKey {
                    subject: name.to_slash(),
                    reason: reason.clone(),
                });
            }
        }
    }

    // proxies: a run at the bottom of the path
    let mut proxy_depth = 0;
    let mut limited = false;
    for (i, cert) in path.iter().enumerate() {
        let subject = || names[i].to_slash();
        match &cert.info.proxy {
            Err(reason) => {
                return Err(VerifyError::BadProxy {
                    subject: subject(),
                    reason: reason.clone(),
                });
            }
            Ok(ProxyKind::NotProxy) => break,
            Ok(ProxyKind::Legacy) => return Err(legacy_proxy(subject())),
            Ok(ProxyKind::Rfc3820 { language }) => {
                match language.as_str() {
                    OID_PPL_INHERIT_ALL => {}
                    OID_PPL_LIMITED => limited = true,
                    OID_PPL_INDEPENDENT => {
                        return Err(VerifyError::BadProxy {
                            subject: subject(),
                            reason: "independent proxy: it carries none of its issuer's identity"
                                .into(),
                        });
                    }
                    other => {
                        return Err(VerifyError::BadProxy {
                            subject: subject(),
                            reason: format!("unknown proxy policy language {other}"),
                        });
                    }
                }
                let Some(issuer) = path.get(i + 1) else {
                    return Err(VerifyError::BadProxy {
                        subject: subject(),
                        reason: "proxy without issuer".into(),
                    });
                };
                if cert.info.not_after > issuer.info.not_after {
                    return Err(VerifyError::BadProxy {
                        subject: subject(),
                        reason: format!(
                            "proxy outlives its issuer (proxy not after {}, issuer not after {})",
                            format_unix(cert.info.not_after),
                            format_unix(issuer.info.not_after)
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
    let mut crl_next_update: Option<i64> = None;
    for i in eec..anchor {
        let subject = &names[i];
        let ca = &names[i + 1];
        let next = check_revocation(trust, &path[i], &path[i + 1], subject, ca, options.crl, now)?;
        crl_next_update = match (crl_next_update, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        check_namespace(trust, subject, ca, options.namespaces)?;
    }

    let not_after = path.iter().map(|c| c.info.not_after).min().unwrap_or(now);
    let fingerprint = format!(
        "SHA256:{}",
        hex(&sha256(leaf_der).map_err(|e| VerifyError::Internal(e.to_string()))?)
    );
    Ok(VerifiedChain {
        identity: names[eec].clone(),
        presented_subject: names[0].clone(),
        ca: names[anchor].clone(),
        fingerprint,
        proxy_depth,
        limited,
        not_after,
        crl_next_update,
        path: names,
    })
}

fn check_revocation(
    trust: &TrustStore,
    cert: &PathCert<'_>,
    issuer: &PathCert<'_>,
    subject: &DistinguishedName,
    ca: &DistinguishedName,
    policy: CrlPolicy,
    now: i64,
) -> Result<Option<i64>, VerifyError> {
    if policy == CrlPolicy::Ignore {
        return Ok(None);
    }
    let unusable = |reason: String| VerifyError::CrlUnusable {
        ca: ca.to_slash(),
        reason,
    };
    // the CRL signed by this issuer's key: another CA's of the same name never stands for it
    let state = trust.crl_of(&issuer.x509, ca);
    let crl = match state.as_deref() {
        None if policy == CrlPolicy::Require => {
            return Err(VerifyError::CrlMissing { ca: ca.to_slash() });
        }
        None => return Ok(None),
        Some(CrlState::Broken { file, reason }) => {
            return Err(unusable(format!("{}: {reason}", file.display())));
        }
        Some(CrlState::Loaded(crl)) => crl,
    };
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
    Ok(crl.next_update)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dev::pki::{self, CertSpec};

    fn kind(cert: &X509) -> ProxyKind {
        let der = cert.to_der().unwrap();
        let (_, parsed) = X509Certificate::from_der(&der).unwrap();
        crate::trust::certinfo::proxy_kind(&parsed).unwrap()
    }

    #[test]
    fn legacy_proxies_are_recognised_by_name() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_748_736_000);
        let ca = pki::self_signed_ca(&CertSpec::ca("/O=Grid/CN=CA", now, 30).unwrap()).unwrap();
        let user = |dn: &str| {
            pki::issue(&ca, &CertSpec::user(dn, now, 1).unwrap())
                .unwrap()
                .cert
        };
        // GT2 proxies: the issuer's name plus CN=proxy or CN=limited proxy, no extension
        for dn in ["/O=Grid/CN=CA/CN=proxy", "/O=Grid/CN=CA/CN=limited proxy"] {
            assert!(matches!(kind(&user(dn)), ProxyKind::Legacy), "{dn}");
        }
        for dn in [
            "/O=Grid/CN=CA/CN=alice",
            "/O=Grid/CN=CA/CN=alice proxy",
            "/O=Other/CN=proxy",
            "/O=Grid/CN=proxy",
        ] {
            assert!(matches!(kind(&user(dn)), ProxyKind::NotProxy), "{dn}");
        }
        // and refused before OpenSSL looks at them
        let trust = TrustStore::from_certificates(vec![ca.cert.clone()], vec![], vec![]).unwrap();
        let chain = PresentedChain::from_certs(vec![user("/O=Grid/CN=CA/CN=proxy")]).unwrap();
        let err = verify_chain(&trust, &chain, &VerifyOptions::default(), now).unwrap_err();
        assert!(
            matches!(&err, VerifyError::BadProxy { reason, .. } if reason.contains("legacy")),
            "{err}"
        );
    }
}
