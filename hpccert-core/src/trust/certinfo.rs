//! What the checks after OpenSSL's need to know about one certificate ([`CertInfo`]), read
//! from its DER once: its subject, expiry, RFC 3820 proxy facts and key strength. Shared by the
//! trust store (for its anchors) and the chain verification (for presented certificates).

use std::str::FromStr;
use std::sync::LazyLock;

use x509_parser::asn1_rs::{Oid, Tag};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::identity::dn::DistinguishedName;

/// RFC 3820 ProxyCertInfo.
const OID_PROXY_CERT_INFO: &str = "1.3.6.1.5.5.7.1.14";
/// Pre-RFC (GT3 draft) proxy cert info.
const OID_PROXY_CERT_INFO_DRAFT: &str = "1.3.6.1.4.1.3536.1.222";
pub(crate) const OID_PPL_INHERIT_ALL: &str = "1.3.6.1.5.5.7.21.1";
pub(crate) const OID_PPL_INDEPENDENT: &str = "1.3.6.1.5.5.7.21.2";
/// Globus limited proxy policy language.
pub(crate) const OID_PPL_LIMITED: &str = "1.3.6.1.4.1.3536.1.1.1.9";

/// DER content octets of an OID, to compare extension OIDs without formatting them.
fn oid_der(dotted: &str) -> Vec<u8> {
    Oid::from_str(dotted)
        .map(|o| o.as_bytes().to_vec())
        .unwrap_or_default()
}
static DER_PROXY_CERT_INFO: LazyLock<Vec<u8>> = LazyLock::new(|| oid_der(OID_PROXY_CERT_INFO));
static DER_PROXY_CERT_INFO_DRAFT: LazyLock<Vec<u8>> =
    LazyLock::new(|| oid_der(OID_PROXY_CERT_INFO_DRAFT));

/// What the checks after OpenSSL's need to know about one certificate, read from its DER
/// once: for presented certificates when they are first parsed, for trust anchors when the
/// trust store is loaded.
#[derive(Debug)]
pub(crate) struct CertInfo {
    /// The subject, or (x509-parser's text of it, why it cannot be read).
    pub(crate) subject: Result<DistinguishedName, (String, String)>,
    /// Unix seconds.
    pub(crate) not_after: i64,
    pub(crate) proxy: Result<ProxyKind, String>,
    /// Why the key is too weak (checked when `key_policy` is on).
    pub(crate) key_problem: Option<String>,
}

impl CertInfo {
    fn from_parsed(cert: &X509Certificate<'_>) -> Self {
        Self {
            subject: DistinguishedName::from_x509_name(cert.subject())
                .map_err(|e| (cert.subject().to_string(), e.to_string())),
            not_after: cert.validity().not_after.timestamp(),
            proxy: proxy_kind(cert),
            key_problem: key_problem(cert),
        }
    }

    /// Parse a DER certificate (as strictly as the verification does).
    pub(crate) fn from_der(der: &[u8]) -> Result<Self, String> {
        X509Certificate::from_der(der)
            .map(|(_, c)| Self::from_parsed(&c))
            .map_err(|e| e.to_string())
    }
}

/// The proxy facts of one certificate.
#[derive(Debug)]
pub(crate) enum ProxyKind {
    NotProxy,
    Rfc3820 { language: String },
    Legacy,
}

pub(crate) fn proxy_kind(cert: &X509Certificate<'_>) -> Result<ProxyKind, String> {
    for ext in cert.extensions() {
        let oid = ext.oid.as_bytes();
        if oid == DER_PROXY_CERT_INFO.as_slice() {
            if !ext.critical {
                return Err("ProxyCertInfo must be critical (RFC 3820 3.8)".to_string());
            }
            return proxy_policy_language(ext.value)
                .map(|language| ProxyKind::Rfc3820 { language });
        }
        if oid == DER_PROXY_CERT_INFO_DRAFT.as_slice() {
            return Ok(ProxyKind::Legacy);
        }
    }
    // legacy GT2 proxies carry no extension, only the name: issuer DN + CN=proxy
    if !name_may_end_with_proxy(cert) {
        return Ok(ProxyKind::NotProxy);
    }
    let subject = cert.subject().to_string();
    if subject.ends_with("CN=proxy") || subject.ends_with("CN=limited proxy") {
        let issuer = cert.issuer().to_string();
        if subject.starts_with(&issuer) {
            return Ok(ProxyKind::Legacy);
        }
    }
    Ok(ProxyKind::NotProxy)
}

/// False when the subject's text (x509-parser's `Display`, which ends with the last
/// attribute's value) cannot end with `CN=proxy` or `CN=limited proxy`: a quick test that
/// spares formatting both names of every ordinary certificate.
fn name_may_end_with_proxy(cert: &X509Certificate<'_>) -> bool {
    let Some(last) = cert
        .subject()
        .iter()
        .last()
        .and_then(|rdn| rdn.iter().last())
    else {
        // an empty name prints as ""
        return false;
    };
    let value = last.attr_value();
    match value.tag() {
        // printed as the bytes themselves
        Tag::NumericString
        | Tag::VisibleString
        | Tag::PrintableString
        | Tag::GeneralString
        | Tag::ObjectDescriptor
        | Tag::GraphicString
        | Tag::T61String
        | Tag::VideotexString
        | Tag::Utf8String
        | Tag::Ia5String => value.data.ends_with(b"proxy"),
        // decoded from UTF-16: let the full comparison decide
        Tag::BmpString => true,
        // printed in upper-case hex, which never ends with "proxy"
        _ => false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_constants_are_the_oids() {
        for (der, dotted) in [
            (&*DER_PROXY_CERT_INFO, OID_PROXY_CERT_INFO),
            (&*DER_PROXY_CERT_INFO_DRAFT, OID_PROXY_CERT_INFO_DRAFT),
        ] {
            assert!(!der.is_empty());
            assert_eq!(
                Oid::new(std::borrow::Cow::Borrowed(der)).to_id_string(),
                dotted
            );
        }
    }
}
