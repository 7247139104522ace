//! A development PKI: a CA, user certificates, RFC 3820 proxies and CRLs, made with OpenSSL.
//!
//! Used by dev mode and the demo (a new user sees a certificate login without a real CA),
//! and by the tests. Nothing here is used to verify anything.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Integer, Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{
    X509, X509Builder, X509Crl, X509CrlBuilder, X509Extension, X509Name, X509NameBuilder,
    X509RevokedBuilder,
};

use crate::identity::dn::DistinguishedName;

/// Key algorithm of a generated key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa(u32),
    EcP256,
    EcP384,
    /// End entities only (a CA signs with SHA-256, which Ed25519 does not take).
    Ed25519,
}

/// RFC 3820 proxy policy language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyPolicy {
    InheritAll,
    /// Globus limited proxy.
    Limited,
    Independent,
}

impl ProxyPolicy {
    fn oid(self) -> &'static str {
        match self {
            Self::InheritAll => "1.3.6.1.5.5.7.21.1",
            Self::Limited => "1.3.6.1.4.1.3536.1.1.1.9",
            Self::Independent => "1.3.6.1.5.5.7.21.2",
        }
    }
}

/// A certificate with its private key.
#[derive(Debug, Clone)]
pub struct Credential {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl Credential {
    pub fn cert_pem(&self) -> Result<Vec<u8>, ErrorStack> {
        self.cert.to_pem()
    }
    /// PKCS#8 PEM.
    pub fn key_pem(&self) -> Result<Vec<u8>, ErrorStack> {
        self.key.private_key_to_pem_pkcs8()
    }
    /// PKCS#1 PEM for RSA keys (what Globus tools expect), PKCS#8 otherwise.
    pub fn key_pem_traditional(&self) -> Result<Vec<u8>, ErrorStack> {
        match self.key.rsa() {
            Ok(rsa) => rsa.private_key_to_pem(),
            Err(_) => self.key.private_key_to_pem_pkcs8(),
        }
    }
    pub fn subject(&self) -> DistinguishedName {
        self.cert
            .to_der()
            .ok()
            .and_then(|d| DistinguishedName::from_certificate_der(&d).ok())
            .unwrap_or_else(|| DistinguishedName::from_rdns(Vec::new()))
    }
}

/// What to put in a certificate issued by [`issue`].
#[derive(Debug, Clone)]
pub struct CertSpec {
    pub subject: DistinguishedName,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub key: KeyKind,
    /// `Some(pathlen)` for a CA (None inside = no limit).
    pub ca: Option<Option<u32>>,
    /// Add an EKU with clientAuth (user certificates).
    pub client_auth: bool,
}

impl CertSpec {
    /// A user certificate valid from `now - 1h` for `days`.
    pub fn user(subject: &str, now: SystemTime, days: u64) -> Result<Self, String> {
        Ok(Self {
            subject: DistinguishedName::parse(subject).map_err(|e| e.to_string())?,
            not_before: now - std::time::Duration::from_secs(3600),
            not_after: now + std::time::Duration::from_secs(days * 86400),
            key: KeyKind::EcP256,
            ca: None,
            client_auth: true,
        })
    }

    /// A CA certificate valid from `now - 1h` for `days`.
    pub fn ca(subject: &str, now: SystemTime, days: u64) -> Result<Self, String> {
        Ok(Self {
            ca: Some(None),
            client_auth: false,
            ..Self::user(subject, now, days)?
        })
    }
}

/// What to put in a proxy issued by [`issue_proxy`].
#[derive(Debug, Clone)]
pub struct ProxySpec {
    /// The CN added to the issuer's subject (a serial number, as grid-proxy-init does).
    pub cn: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub policy: ProxyPolicy,
    pub path_len: Option<u32>,
    pub key: KeyKind,
}

impl ProxySpec {
    pub fn new(cn: &str, now: SystemTime, hours: u64) -> Self {
        Self {
            cn: cn.to_string(),
            not_before: now - std::time::Duration::from_secs(300),
            not_after: now + std::time::Duration::from_secs(hours * 3600),
            policy: ProxyPolicy::InheritAll,
            path_len: None,
            key: KeyKind::EcP256,
        }
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub fn generate_key(kind: KeyKind) -> Result<PKey<Private>, ErrorStack> {
    match kind {
        KeyKind::Rsa(bits) => PKey::from_rsa(Rsa::generate(bits)?),
        KeyKind::EcP256 => PKey::from_ec_key(EcKey::generate(
            EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?.as_ref(),
        )?),
        KeyKind::EcP384 => PKey::from_ec_key(EcKey::generate(
            EcGroup::from_curve_name(Nid::SECP384R1)?.as_ref(),
        )?),
        KeyKind::Ed25519 => PKey::generate_ed25519(),
    }
}

fn asn1_time(t: SystemTime) -> Result<Asn1Time, String> {
    let secs = t.duration_since(UNIX_EPOCH).map_err(err)?.as_secs();
    Asn1Time::from_unix(secs as _).map_err(err)
}

/// An OpenSSL name with the RDNs of `dn` in order (multi-valued RDNs are not supported).
pub fn x509_name(dn: &DistinguishedName) -> Result<X509Name, String> {
    let mut b = X509NameBuilder::new().map_err(err)?;
    for rdn in dn.rdns() {
        if rdn.avas().len() != 1 {
            return Err("multi-valued RDNs are not supported by the dev PKI".into());
        }
        let ava = &rdn.avas()[0];
        let name = ava.attr().name();
        b.append_entry_by_text(name, ava.value())
            .map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(b.build())
}

fn random_serial() -> Result<Asn1Integer, ErrorStack> {
    let mut bn = BigNum::new()?;
    bn.rand(64, MsbOption::MAYBE_ZERO, false)?;
    bn.to_asn1_integer()
}

/// A self-signed CA.
pub fn self_signed_ca(spec: &CertSpec) -> Result<Credential, String> {
    let key = generate_key(spec.key).map_err(err)?;
    build(spec, &key, None).map(|cert| Credential { cert, key })
}

/// A certificate issued by `issuer` (a CA or intermediate).
pub fn issue(issuer: &Credential, spec: &CertSpec) -> Result<Credential, String> {
    let key = generate_key(spec.key).map_err(err)?;
    build(spec, &key, Some(issuer)).map(|cert| Credential { cert, key })
}

fn build(
    spec: &CertSpec,
    key: &PKey<Private>,
    issuer: Option<&Credential>,
) -> Result<X509, String> {
    let mut b = X509Builder::new().map_err(err)?;
    b.set_version(2).map_err(err)?;
    let serial = random_serial().map_err(err)?;
    b.set_serial_number(&serial).map_err(err)?;
    let subject = x509_name(&spec.subject)?;
    b.set_subject_name(&subject).map_err(err)?;
    match issuer {
        Some(i) => b.set_issuer_name(i.cert.subject_name()).map_err(err)?,
        None => b.set_issuer_name(&subject).map_err(err)?,
    }
    let (not_before, not_after) = (asn1_time(spec.not_before)?, asn1_time(spec.not_after)?);
    b.set_not_before(&not_before).map_err(err)?;
    b.set_not_after(&not_after).map_err(err)?;
    b.set_pubkey(key).map_err(err)?;
    match spec.ca {
        Some(pathlen) => {
            let mut bc = BasicConstraints::new();
            bc.critical().ca();
            if let Some(p) = pathlen {
                bc.pathlen(p);
            }
            b.append_extension(bc.build().map_err(err)?).map_err(err)?;
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()
                    .map_err(err)?,
            )
            .map_err(err)?;
        }
        None => {
            b.append_extension(BasicConstraints::new().critical().build().map_err(err)?)
                .map_err(err)?;
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .digital_signature()
                    .key_encipherment()
                    .build()
                    .map_err(err)?,
            )
            .map_err(err)?;
            if spec.client_auth {
                b.append_extension(ExtendedKeyUsage::new().client_auth().build().map_err(err)?)
                    .map_err(err)?;
            }
        }
    }
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))
        .map_err(err)?;
    b.append_extension(ski).map_err(err)?;
    if let Some(i) = issuer {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&i.cert), None))
            .map_err(err)?;
        b.append_extension(aki).map_err(err)?;
    }
    let signer = issuer.map(|i| &i.key).unwrap_or(key);
    b.sign(signer, MessageDigest::sha256()).map_err(err)?;
    Ok(b.build())
}

/// DER of an OBJECT IDENTIFIER (tag included).
fn der_oid(oid: &str) -> Result<Vec<u8>, String> {
    let arcs: Vec<u64> = oid
        .split('.')
        .map(|a| a.parse::<u64>().map_err(err))
        .collect::<Result<_, _>>()?;
    if arcs.len() < 2 {
        return Err(format!("bad OID {oid}"));
    }
    let mut body = Vec::new();
    let mut push_arc = |mut v: u64| {
        let mut tmp = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            tmp.push(((v & 0x7f) as u8) | 0x80);
            v >>= 7;
        }
        tmp.reverse();
        body.extend(tmp);
    };
    push_arc(arcs[0] * 40 + arcs[1]);
    for a in &arcs[2..] {
        push_arc(*a);
    }
    Ok(der_tlv(0x06, &body))
}

fn der_tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    if len < 128 {
        out.push(len as u8);
    } else if len < 256 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(body);
    out
}

fn der_small_int(v: u32) -> Vec<u8> {
    let mut bytes: Vec<u8> = v
        .to_be_bytes()
        .iter()
        .copied()
        .skip_while(|b| *b == 0)
        .collect();
    if bytes.first().is_none_or(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    der_tlv(0x02, &bytes)
}

fn extension(oid: &str, critical: bool, der: &[u8]) -> Result<X509Extension, String> {
    let obj = Asn1Object::from_str(oid).map_err(err)?;
    let value = Asn1OctetString::new_from_bytes(der).map_err(err)?;
    X509Extension::new_from_der(&obj, critical, &value).map_err(err)
}

/// An RFC 3820 proxy issued by `issuer` (an EEC or another proxy).
pub fn issue_proxy(issuer: &Credential, spec: &ProxySpec) -> Result<Credential, String> {
    let key = generate_key(spec.key).map_err(err)?;
    let mut b = X509Builder::new().map_err(err)?;
    b.set_version(2).map_err(err)?;
    let serial = random_serial().map_err(err)?;
    b.set_serial_number(&serial).map_err(err)?;
    let mut name = X509NameBuilder::new().map_err(err)?;
    for e in issuer.cert.subject_name().entries() {
        name.append_entry_by_nid(
            e.object().nid(),
            &String::from_utf8_lossy(e.data().as_slice()),
        )
        .map_err(err)?;
    }
    name.append_entry_by_nid(Nid::COMMONNAME, &spec.cn)
        .map_err(err)?;
    b.set_subject_name(&name.build()).map_err(err)?;
    b.set_issuer_name(issuer.cert.subject_name()).map_err(err)?;
    let (not_before, not_after) = (asn1_time(spec.not_before)?, asn1_time(spec.not_after)?);
    b.set_not_before(&not_before).map_err(err)?;
    b.set_not_after(&not_after).map_err(err)?;
    b.set_pubkey(&key).map_err(err)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()
            .map_err(err)?,
    )
    .map_err(err)?;
    let mut info = Vec::new();
    if let Some(p) = spec.path_len {
        info.extend(der_small_int(p));
    }
    info.extend(der_tlv(0x30, &der_oid(spec.policy.oid())?));
    b.append_extension(extension(
        "1.3.6.1.5.5.7.1.14",
        true,
        &der_tlv(0x30, &info),
    )?)
    .map_err(err)?;
    b.sign(&issuer.key, MessageDigest::sha256()).map_err(err)?;
    Ok(Credential {
        cert: b.build(),
        key,
    })
}

/// A CRL signed by `ca` listing `revoked` (certificate, revocation time).
pub fn crl(
    ca: &Credential,
    revoked: &[(&X509, SystemTime)],
    this_update: SystemTime,
    next_update: SystemTime,
    number: u32,
) -> Result<X509Crl, String> {
    let mut b = X509CrlBuilder::new().map_err(err)?;
    b.set_issuer_name(ca.cert.subject_name()).map_err(err)?;
    let (this, next) = (asn1_time(this_update)?, asn1_time(next_update)?);
    b.set_last_update(&this).map_err(err)?;
    b.set_next_update(&next).map_err(err)?;
    for (cert, at) in revoked {
        let mut r = X509RevokedBuilder::new().map_err(err)?;
        r.set_serial_number(cert.serial_number()).map_err(err)?;
        let at = asn1_time(*at)?;
        r.set_revocation_date(&at).map_err(err)?;
        b.add_revoked(r.build()).map_err(err)?;
    }
    b.append_extension(extension("2.5.29.20", false, &der_small_int(number))?)
        .map_err(err)?;
    let ski = ca
        .cert
        .subject_key_id()
        .ok_or("the CA has no subject key identifier")?;
    let aki = der_tlv(0x30, &der_tlv(0x80, ski.as_slice()));
    b.append_extension(extension("2.5.29.35", false, &aki)?)
        .map_err(err)?;
    b.sign(&ca.key, MessageDigest::sha256()).map_err(err)?;
    let built = b.build().map_err(err)?;
    // parsed back from its DER, as a CRL read from a file is: OpenSSL keeps that encoding for
    // signature checks, while a built CRL is encoded again from its structure, and the lookup
    // of a serial sorts the revoked entries in place (a CRL whose entries were not in serial
    // order would then fail its own signature check, at random, in the tests)
    X509Crl::from_der(&built.to_der().map_err(err)?).map_err(err)
}

/// OpenSSL's subject hash file stem (`<8 hex>`) for a CA certificate.
pub fn subject_hash(cert: &X509) -> String {
    format!("{:08x}", cert.subject_name_hash())
}

/// Write a CA (and optionally its CRL and namespaces text) into an IGTF-style directory.
pub fn install_ca(
    dir: &Path,
    ca: &X509,
    crl: Option<&X509Crl>,
    namespaces: Option<&str>,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(err)?;
    let hash = subject_hash(ca);
    let mut n = 0;
    while dir.join(format!("{hash}.{n}")).exists() {
        n += 1;
    }
    std::fs::write(dir.join(format!("{hash}.{n}")), ca.to_pem().map_err(err)?).map_err(err)?;
    if let Some(c) = crl {
        std::fs::write(dir.join(format!("{hash}.r{n}")), c.to_pem().map_err(err)?).map_err(err)?;
    }
    if let Some(ns) = namespaces {
        std::fs::write(dir.join(format!("{hash}.namespaces")), ns).map_err(err)?;
    }
    Ok(())
}
