//! Chain validation with test PKI made here (OpenSSL through hpccert_core::dev::pki).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

use std::time::{Duration, SystemTime};

use hpccert_core::dev::pki::{
    self as devpki, CertSpec, Credential, KeyKind, ProxyPolicy, ProxySpec,
};
use hpccert_core::identity::dn::DistinguishedName;
use hpccert_core::trust::namespaces::parse_namespaces;
use hpccert_core::trust::store::TrustStore;
use hpccert_core::trust::x509::{
    CrlPolicy, NamespaceEnforcement, PresentedChain, VerifyError, VerifyOptions, verify_chain,
};
use openssl::x509::X509;

const DAY: Duration = Duration::from_secs(86400);
const HOUR: Duration = Duration::from_secs(3600);

fn now() -> SystemTime {
    // a fixed instant: 2026-06-01T00:00:00Z
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_272_000)
}

struct Pki {
    ca: Credential,
    user: Credential,
}

fn pki() -> Pki {
    let ca =
        devpki::self_signed_ca(&CertSpec::ca("/DC=org/DC=test/CN=Test CA", now(), 3650).unwrap())
            .unwrap();
    let user = devpki::issue(
        &ca,
        &CertSpec::user("/DC=org/DC=test/O=Grid/CN=Alice", now(), 365).unwrap(),
    )
    .unwrap();
    Pki { ca, user }
}

fn store(anchors: &[&Credential]) -> TrustStore {
    TrustStore::from_certificates(
        anchors.iter().map(|c| c.cert.clone()).collect(),
        vec![],
        vec![],
    )
    .unwrap()
}

fn chain(certs: &[&Credential]) -> PresentedChain {
    PresentedChain::from_certs(certs.iter().map(|c| c.cert.clone()).collect()).unwrap()
}

fn verify(
    trust: &TrustStore,
    certs: &[&Credential],
) -> Result<hpccert_core::trust::x509::VerifiedChain, VerifyError> {
    verify_chain(trust, &chain(certs), &VerifyOptions::default(), now())
}

fn proxy(issuer: &Credential, cn: &str, f: impl FnOnce(&mut ProxySpec)) -> Credential {
    let mut spec = ProxySpec::new(cn, now(), 12);
    f(&mut spec);
    devpki::issue_proxy(issuer, &spec).unwrap()
}

#[test]
fn valid_end_entity_certificate() {
    let p = pki();
    let v = verify(&store(&[&p.ca]), &[&p.user]).unwrap();
    assert_eq!(v.identity().to_slash(), "/DC=org/DC=test/O=Grid/CN=Alice");
    assert_eq!(v.ca().to_slash(), "/DC=org/DC=test/CN=Test CA");
    assert_eq!(v.proxy_depth(), 0);
    assert!(v.fingerprint().starts_with("SHA256:"));
}

#[test]
fn valid_chain_through_an_intermediate() {
    let p = pki();
    let mut spec = CertSpec::ca("/DC=org/DC=test/CN=Sub CA", now(), 1000).unwrap();
    spec.ca = Some(Some(0));
    let sub = devpki::issue(&p.ca, &spec).unwrap();
    let user = devpki::issue(
        &sub,
        &CertSpec::user("/DC=org/DC=test/CN=Bob", now(), 30).unwrap(),
    )
    .unwrap();
    let v = verify(&store(&[&p.ca]), &[&user, &sub]).unwrap();
    assert_eq!(v.path().len(), 3);
    // without the intermediate there is no path
    assert!(matches!(
        verify(&store(&[&p.ca]), &[&user]),
        Err(VerifyError::UnknownCa { .. })
    ));
}

#[test]
fn expired_and_not_yet_valid() {
    let p = pki();
    let mut spec = CertSpec::user("/DC=org/DC=test/CN=Old", now() - 400 * DAY, 365).unwrap();
    spec.key = KeyKind::EcP256;
    let old = devpki::issue(&p.ca, &spec).unwrap();
    let e = verify(&store(&[&p.ca]), &[&old]).unwrap_err();
    assert!(matches!(e, VerifyError::Expired { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("certificate expired: /DC=org/DC=test/CN=Old"),
        "{e}"
    );

    let future = devpki::issue(
        &p.ca,
        &CertSpec::user("/DC=org/DC=test/CN=Future", now() + 10 * DAY, 365).unwrap(),
    )
    .unwrap();
    let e = verify(&store(&[&p.ca]), &[&future]).unwrap_err();
    assert!(matches!(e, VerifyError::NotYetValid { .. }), "{e}");
}

#[test]
fn wrong_ca_is_unknown() {
    let p = pki();
    let other =
        devpki::self_signed_ca(&CertSpec::ca("/DC=org/DC=test/CN=Test CA", now(), 3650).unwrap())
            .unwrap();
    // same CA name, different key: the signature does not verify
    let e = verify(&store(&[&other]), &[&p.user]).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::UnknownCa { .. } | VerifyError::Invalid { .. }
        ),
        "{e}"
    );
    let stranger =
        devpki::self_signed_ca(&CertSpec::ca("/O=Elsewhere/CN=Other CA", now(), 3650).unwrap())
            .unwrap();
    let e = verify(&store(&[&stranger]), &[&p.user]).unwrap_err();
    assert_eq!(
        e,
        VerifyError::UnknownCa {
            subject: "/DC=org/DC=test/O=Grid/CN=Alice".into(),
            issuer: "/DC=org/DC=test/CN=Test CA".into()
        }
    );
    // a self-signed "user" certificate is not trusted either
    let e = verify(&store(&[&stranger]), &[&p.ca]).unwrap_err();
    assert!(matches!(e, VerifyError::UnknownCa { .. }), "{e}");
}

fn with_crl(p: &Pki, revoked: &[&X509], this: SystemTime, next: SystemTime) -> TrustStore {
    let list: Vec<(&X509, SystemTime)> = revoked.iter().map(|c| (*c, now() - DAY)).collect();
    let crl = devpki::crl(&p.ca, &list, this, next, 7).unwrap();
    TrustStore::from_certificates(vec![p.ca.cert.clone()], vec![crl], vec![]).unwrap()
}

#[test]
fn revoked_certificate_is_refused() {
    let p = pki();
    let other = devpki::issue(
        &p.ca,
        &CertSpec::user("/DC=org/DC=test/CN=Other", now(), 30).unwrap(),
    )
    .unwrap();
    let trust = with_crl(&p, &[&p.user.cert], now() - HOUR, now() + DAY);
    let e = verify(&trust, &[&p.user]).unwrap_err();
    assert!(matches!(e, VerifyError::Revoked { .. }), "{e}");
    assert!(e.to_string().contains("revoked"), "{e}");
    // a proxy of a revoked certificate is refused too
    let px = proxy(&p.user, "1", |_| {});
    assert!(matches!(
        verify(&trust, &[&px, &p.user]),
        Err(VerifyError::Revoked { .. })
    ));
    // others under the same CA still pass
    assert!(verify(&trust, &[&other]).is_ok());
    // ... unless revocation checking is off
    let opts = VerifyOptions {
        crl: CrlPolicy::Ignore,
        ..VerifyOptions::default()
    };
    assert!(verify_chain(&trust, &chain(&[&p.user]), &opts, now()).is_ok());
}

#[test]
fn crl_required_but_missing_or_stale() {
    let p = pki();
    let require = VerifyOptions {
        crl: CrlPolicy::Require,
        ..VerifyOptions::default()
    };
    let e = verify_chain(&store(&[&p.ca]), &chain(&[&p.user]), &require, now()).unwrap_err();
    assert_eq!(
        e,
        VerifyError::CrlMissing {
            ca: "/DC=org/DC=test/CN=Test CA".into()
        }
    );
    // with a current CRL it passes
    let trust = with_crl(&p, &[], now() - HOUR, now() + DAY);
    let v = verify_chain(&trust, &chain(&[&p.user]), &require, now()).unwrap();
    assert_eq!(v.proxy_depth(), 0);
    // an expired CRL refuses, even under if-present
    let stale = with_crl(&p, &[], now() - 10 * DAY, now() - DAY);
    let e = verify(&stale, &[&p.user]).unwrap_err();
    assert!(
        matches!(&e, VerifyError::CrlUnusable { reason, .. } if reason.contains("expired")),
        "{e}"
    );
}

#[test]
fn crl_signed_by_another_key_makes_the_ca_unusable() {
    let p = pki();
    let impostor =
        devpki::self_signed_ca(&CertSpec::ca("/DC=org/DC=test/CN=Test CA", now(), 3650).unwrap())
            .unwrap();
    let crl = devpki::crl(&impostor, &[], now() - HOUR, now() + DAY, 1).unwrap();
    let e = TrustStore::from_certificates(vec![p.ca.cert.clone()], vec![crl], vec![]).unwrap_err();
    assert!(e.to_string().contains("signature"), "{e}");
}

#[test]
fn namespace_constraints() {
    let p = pki();
    let policies = parse_namespaces(
        "TO Issuer \"/DC=org/DC=test/CN=Test CA\" PERMIT Subject \"/DC=org/DC=test/O=Grid/.*\"\n",
    )
    .unwrap();
    let trust = TrustStore::from_certificates(vec![p.ca.cert.clone()], vec![], policies).unwrap();
    assert!(verify(&trust, &[&p.user]).is_ok());
    let outsider = devpki::issue(
        &p.ca,
        &CertSpec::user("/DC=org/DC=evil/CN=Alice", now(), 30).unwrap(),
    )
    .unwrap();
    let e = verify(&trust, &[&outsider]).unwrap_err();
    assert!(matches!(e, VerifyError::Namespace { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("namespace violation: /DC=org/DC=evil/CN=Alice"),
        "{e}"
    );
    // require: a CA without policy refuses
    let require = VerifyOptions {
        namespaces: NamespaceEnforcement::Require,
        ..VerifyOptions::default()
    };
    let e = verify_chain(&store(&[&p.ca]), &chain(&[&p.user]), &require, now()).unwrap_err();
    assert!(matches!(e, VerifyError::NamespaceMissing { .. }), "{e}");
}

#[test]
fn proxy_chains() {
    let p = pki();
    let trust = store(&[&p.ca]);
    let p1 = proxy(&p.user, "1111", |_| {});
    let v = verify(&trust, &[&p1, &p.user]).unwrap();
    assert_eq!(v.identity().to_slash(), "/DC=org/DC=test/O=Grid/CN=Alice");
    assert_eq!(
        v.presented_subject().to_slash(),
        "/DC=org/DC=test/O=Grid/CN=Alice/CN=1111"
    );
    assert_eq!(v.proxy_depth(), 1);
    assert!(!v.is_limited());

    // proxy of a proxy; the chain may come in any order after the first certificate
    let p2 = proxy(&p1, "2222", |s| s.not_after = now() + 6 * HOUR);
    let v = verify(&trust, &[&p2, &p.user, &p1]).unwrap();
    assert_eq!(v.proxy_depth(), 2);
    assert_eq!(v.identity().to_slash(), "/DC=org/DC=test/O=Grid/CN=Alice");
}

#[test]
fn limited_proxies() {
    let p = pki();
    let trust = store(&[&p.ca]);
    let limited = proxy(&p.user, "3333", |s| s.policy = ProxyPolicy::Limited);
    let e = verify(&trust, &[&limited, &p.user]).unwrap_err();
    assert!(matches!(e, VerifyError::LimitedProxy { .. }), "{e}");
    // a full proxy below a limited one is limited too
    let below = proxy(&limited, "4444", |s| s.not_after = now() + 6 * HOUR);
    assert!(matches!(
        verify(&trust, &[&below, &limited, &p.user]),
        Err(VerifyError::LimitedProxy { .. })
    ));
    let allow = VerifyOptions {
        allow_limited_proxies: true,
        ..VerifyOptions::default()
    };
    let v = verify_chain(&trust, &chain(&[&limited, &p.user]), &allow, now()).unwrap();
    assert!(v.is_limited());
}

#[test]
fn bad_proxies() {
    let p = pki();
    let trust = store(&[&p.ca]);

    // signed by the wrong key: a proxy "of Alice" made by someone holding another key
    let mallory = Credential {
        cert: p.user.cert.clone(),
        key: devpki::generate_key(KeyKind::EcP256).unwrap(),
    };
    let forged = proxy(&mallory, "5555", |_| {});
    let e = verify(&trust, &[&forged, &p.user]).unwrap_err();
    assert!(
        matches!(&e, VerifyError::Invalid { reason, .. } if reason.contains("signature")),
        "{e}"
    );

    // outliving its issuer
    let long = proxy(&p.user, "6666", |s| s.not_after = now() + 400 * DAY);
    let e = verify(&trust, &[&long, &p.user]).unwrap_err();
    assert!(
        matches!(&e, VerifyError::BadProxy { reason, .. } if reason.contains("outlives")),
        "{e}"
    );

    // path length exceeded: a proxy with pCPathLenConstraint 0 issues another proxy
    let p0 = proxy(&p.user, "7777", |s| s.path_len = Some(0));
    assert!(verify(&trust, &[&p0, &p.user]).is_ok());
    let p01 = proxy(&p0, "8888", |s| s.not_after = now() + 6 * HOUR);
    let e = verify(&trust, &[&p01, &p0, &p.user]).unwrap_err();
    assert!(
        matches!(&e, VerifyError::BadProxy { reason, .. } if reason.contains("path length")),
        "{e}"
    );

    // independent proxies carry no identity
    let ind = proxy(&p.user, "9999", |s| s.policy = ProxyPolicy::Independent);
    assert!(matches!(
        verify(&trust, &[&ind, &p.user]),
        Err(VerifyError::BadProxy { .. })
    ));

    // an expired proxy
    let old = proxy(&p.user, "1234", |s| {
        s.not_before = now() - 2 * DAY;
        s.not_after = now() - DAY;
    });
    assert!(matches!(
        verify(&trust, &[&old, &p.user]),
        Err(VerifyError::Expired { .. })
    ));

    // a proxy without its issuer in the chain
    assert!(matches!(
        verify(&trust, &[&p1_of(&p)]),
        Err(VerifyError::UnknownCa { .. })
    ));
}

fn p1_of(p: &Pki) -> Credential {
    proxy(&p.user, "4321", |_| {})
}

#[test]
fn weak_keys_are_refused() {
    let p = pki();
    let mut spec = CertSpec::user("/DC=org/DC=test/CN=Weak", now(), 30).unwrap();
    spec.key = KeyKind::Rsa(1024);
    let weak = devpki::issue(&p.ca, &spec).unwrap();
    let e = verify(&store(&[&p.ca]), &[&weak]).unwrap_err();
    assert!(
        matches!(&e, VerifyError::WeakKey { reason, .. } if reason.contains("1024")),
        "{e}"
    );
}

#[test]
fn igtf_directory_end_to_end() {
    let p = pki();
    let revoked = devpki::issue(
        &p.ca,
        &CertSpec::user("/DC=org/DC=test/O=Grid/CN=Revoked", now(), 30).unwrap(),
    )
    .unwrap();
    let crl = devpki::crl(
        &p.ca,
        &[(&revoked.cert, now() - DAY)],
        now() - HOUR,
        now() + 7 * DAY,
        3,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    devpki::install_ca(
        dir.path(),
        &p.ca.cert,
        Some(&crl),
        Some("TO Issuer SELF PERMIT Subject \"/DC=org/DC=test/O=Grid/.*\"\n"),
    )
    .unwrap();
    // unrelated files of an IGTF directory are ignored
    std::fs::write(dir.path().join("TestCA.info"), "alias = TestCA\n").unwrap();
    let trust = TrustStore::load(dir.path()).unwrap();
    assert_eq!(trust.anchors().len(), 1);
    assert!(trust.warnings().is_empty(), "{:?}", trust.warnings());
    let require = VerifyOptions {
        crl: CrlPolicy::Require,
        namespaces: NamespaceEnforcement::Require,
        ..VerifyOptions::default()
    };
    let v = verify_chain(&trust, &chain(&[&p.user]), &require, now()).unwrap();
    assert_eq!(v.proxy_depth(), 0);
    assert!(matches!(
        verify_chain(&trust, &chain(&[&revoked]), &require, now()),
        Err(VerifyError::Revoked { .. })
    ));
    let outsider = devpki::issue(
        &p.ca,
        &CertSpec::user("/DC=org/DC=test/CN=Outsider", now(), 30).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        verify_chain(&trust, &chain(&[&outsider]), &require, now()),
        Err(VerifyError::Namespace { .. })
    ));

    // a corrupt CRL file makes its CA unusable (fail closed), not silently unchecked
    let hash = devpki::subject_hash(&p.ca.cert);
    std::fs::write(dir.path().join(format!("{hash}.r0")), "garbage").unwrap();
    let trust = TrustStore::load(dir.path()).unwrap();
    let e = verify(&trust, &[&p.user]).unwrap_err();
    assert!(matches!(e, VerifyError::CrlUnusable { .. }), "{e}");
    // a corrupt namespaces file likewise
    std::fs::remove_file(dir.path().join(format!("{hash}.r0"))).unwrap();
    std::fs::write(
        dir.path().join(format!("{hash}.namespaces")),
        "TO Issuer SELF MAYBE Subject \"x\"\n",
    )
    .unwrap();
    let trust = TrustStore::load(dir.path()).unwrap();
    let e = verify(&trust, &[&p.user]).unwrap_err();
    assert!(matches!(e, VerifyError::Namespace { .. }), "{e}");
}

#[test]
fn pem_bundle_and_presented_pem() {
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, p.ca.cert_pem().unwrap()).unwrap();
    let trust = TrustStore::load(&bundle).unwrap();
    let px = proxy(&p.user, "77", |_| {});
    let mut pem = px.cert_pem().unwrap();
    pem.extend(p.user.cert_pem().unwrap());
    let v = verify_chain(
        &trust,
        &PresentedChain::from_pem(&pem).unwrap(),
        &VerifyOptions::default(),
        now(),
    )
    .unwrap();
    assert_eq!(
        v.identity(),
        &DistinguishedName::parse("/DC=org/DC=test/O=Grid/CN=Alice").unwrap()
    );
    assert!(matches!(
        PresentedChain::from_pem(b"nope"),
        Err(VerifyError::Malformed { .. })
    ));
}

#[test]
fn trust_directory_reloads_on_change() {
    use hpccert_core::host::reload::Reloading;
    let p = pki();
    let other =
        devpki::self_signed_ca(&CertSpec::ca("/DC=org/DC=other/CN=Other CA", now(), 3650).unwrap())
            .unwrap();
    let bob = devpki::issue(
        &other,
        &CertSpec::user("/DC=org/DC=other/CN=Bob", now(), 30).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    devpki::install_ca(dir.path(), &p.ca.cert, None, None).unwrap();
    let trust = Reloading::open(dir.path(), Duration::ZERO, TrustStore::load).unwrap();
    assert!(verify(&trust.current(), &[&p.user]).is_ok());
    assert!(matches!(
        verify(&trust.current(), &[&bob]),
        Err(VerifyError::UnknownCa { .. })
    ));
    // a new CA dropped into the directory is trusted without a restart
    devpki::install_ca(dir.path(), &other.cert, None, None).unwrap();
    assert!(verify(&trust.current(), &[&bob]).is_ok());
    // a new CRL revokes without a restart
    let crl = devpki::crl(
        &other,
        &[(&bob.cert, now() - DAY)],
        now() - HOUR,
        now() + DAY,
        2,
    )
    .unwrap();
    std::fs::write(
        dir.path()
            .join(format!("{}.r0", devpki::subject_hash(&other.cert))),
        crl.to_pem().unwrap(),
    )
    .unwrap();
    assert!(matches!(
        verify(&trust.current(), &[&bob]),
        Err(VerifyError::Revoked { .. })
    ));
}

#[test]
fn a_cached_trust_store_is_loaded_again_when_its_directory_changes() {
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    devpki::install_ca(dir.path(), &p.ca.cert, None, None).unwrap();
    let first = TrustStore::load_cached(dir.path()).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&first, &TrustStore::load_cached(dir.path()).unwrap()),
        "unchanged: the same store"
    );
    assert!(verify(&first, &[&p.user]).is_ok());
    // a CRL arrives (fetch-crl): the next call loads the directory again and sees it
    let crl = devpki::crl(
        &p.ca,
        &[(&p.user.cert, now() - DAY)],
        now() - HOUR,
        now() + DAY,
        2,
    )
    .unwrap();
    let crl_file = dir
        .path()
        .join(format!("{}.r0", devpki::subject_hash(&p.ca.cert)));
    std::fs::write(&crl_file, crl.to_pem().unwrap()).unwrap();
    let second = TrustStore::load_cached(dir.path()).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&first, &second));
    assert!(matches!(
        verify(&second, &[&p.user]),
        Err(VerifyError::Revoked { .. })
    ));
    // a directory that no longer loads is an error, not the last good store
    let gone = dir.path().to_path_buf();
    drop(dir);
    assert!(TrustStore::load_cached(&gone).is_err());
}
