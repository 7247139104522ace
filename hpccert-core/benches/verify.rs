//! Chain verification cost against its floor: the raw signature checks alone.
//!
//! `verify_chain` of an EEC needs one signature verification (the CA's signature on the
//! EEC; the anchor's self-signature is not checked), an EEC with two proxies needs three.
//! The `floor/*` benches do exactly those verifications with `X509::verify`, so
//! `verify/* ÷ floor/*` is the overhead of everything else (parsing, path building, CRL
//! lookup, proxy and namespace policy).
//!
//! The `parts/*` benches split that overhead: `parts/openssl_*` is `X509_verify_cert` alone
//! with a store set up as the trust store's (path building, time, purpose and RFC 3820 proxy
//! checks, and the same signature verifications), which `verify_chain` cannot do without;
//! `parts/parse_*` is the strict x509-parser parse that the grid checks (proxy policy, key
//! strength, DNs) need, once per presented certificate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use hpccert_core::dev::pki::{self as devpki, CertSpec, Credential, KeyKind, ProxySpec};
use hpccert_core::trust::store::TrustStore;
use hpccert_core::trust::x509::{CrlPolicy, PresentedChain, VerifyOptions, verify_chain};
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509, X509PurposeId, X509StoreContext};
use x509_parser::prelude::FromDer;

const RSA: KeyKind = KeyKind::Rsa(2048);

struct Pki {
    trust: TrustStore,
    now: SystemTime,
    ca: Credential,
    user: Credential,
    proxy1: Credential,
    proxy2: Credential,
}

fn pki() -> Pki {
    // fixed validation time: 2025-06-01T00:00:00Z
    let now = UNIX_EPOCH + Duration::from_secs(1_748_736_000);
    let ca = devpki::self_signed_ca(&CertSpec {
        key: RSA,
        ..CertSpec::ca(
            "/DC=org/DC=cilogon/C=US/O=CILogon/CN=CILogon Bench CA",
            now,
            3650,
        )
        .unwrap()
    })
    .unwrap();
    let user = devpki::issue(
        &ca,
        &CertSpec {
            key: RSA,
            ..CertSpec::user("/DC=org/DC=cilogon/C=US/O=Inst 42/CN=User 42 A42", now, 365).unwrap()
        },
    )
    .unwrap();
    let proxy1 = devpki::issue_proxy(
        &user,
        &ProxySpec {
            key: RSA,
            ..ProxySpec::new("1234567890", now, 12)
        },
    )
    .unwrap();
    let proxy2 = devpki::issue_proxy(
        &proxy1,
        &ProxySpec {
            key: RSA,
            ..ProxySpec::new("987654321", now, 6)
        },
    )
    .unwrap();
    // a CRL for the CA, with a few revoked certificates that are not on our path, so the
    // lookup has something to search
    let mut others = Vec::new();
    for n in 0..8 {
        let other = devpki::issue(
            &ca,
            &CertSpec::user(
                &format!("/DC=org/DC=cilogon/C=US/O=Inst {n}/CN=Revoked {n}"),
                now,
                30,
            )
            .unwrap(),
        )
        .unwrap();
        others.push(other.cert);
    }
    let revoked: Vec<(&X509, SystemTime)> = others
        .iter()
        .map(|c| (c, now - Duration::from_secs(86400)))
        .collect();
    let crl = devpki::crl(
        &ca,
        &revoked,
        now - Duration::from_secs(3600),
        now + Duration::from_secs(7 * 86400),
        1,
    )
    .unwrap();
    let trust = TrustStore::from_certificates(vec![wire(&ca.cert)], vec![crl], Vec::new()).unwrap();
    Pki {
        trust,
        now,
        ca,
        user,
        proxy1,
        proxy2,
    }
}

/// The certificate as a server meets it: decoded from DER (OpenSSL then keeps the encoding
/// of the to-be-signed part, which a certificate fresh from the builder does not have).
fn wire(cert: &X509) -> X509 {
    X509::from_der(&cert.to_der().unwrap()).unwrap()
}

/// An OpenSSL store as `TrustStore` builds it for `verify_chain` (see trust/store.rs).
fn openssl_store(ca: &X509, now: SystemTime) -> X509Store {
    let mut builder = X509StoreBuilder::new().unwrap();
    builder.add_cert(ca.clone()).unwrap();
    let mut param = X509VerifyParam::new().unwrap();
    param.set_time(now.duration_since(UNIX_EPOCH).unwrap().as_secs() as _);
    param.set_depth(16);
    param
        .set_flags(X509VerifyFlags::ALLOW_PROXY_CERTS | X509VerifyFlags::USE_CHECK_TIME)
        .unwrap();
    builder.set_param(&param).unwrap();
    builder.set_purpose(X509PurposeId::SSL_CLIENT).unwrap();
    builder.build()
}

/// `X509_verify_cert` alone: `certs[0]` presented, the rest untrusted.
fn openssl_verify(store: &X509Store, certs: &[X509]) -> bool {
    let mut untrusted = Stack::new().unwrap();
    for c in &certs[1..] {
        untrusted.push(c.clone()).unwrap();
    }
    let mut ctx = X509StoreContext::new().unwrap();
    ctx.init(store, &certs[0], &untrusted, |c| c.verify_cert())
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let p = pki();
    let options = VerifyOptions {
        crl: CrlPolicy::IfPresent,
        ..VerifyOptions::default()
    };
    let (ca, user, proxy1, proxy2) = (
        wire(&p.ca.cert),
        wire(&p.user.cert),
        wire(&p.proxy1.cert),
        wire(&p.proxy2.cert),
    );
    let eec = PresentedChain::from_certs(vec![user.clone()]).unwrap();
    let proxies =
        PresentedChain::from_certs(vec![proxy2.clone(), proxy1.clone(), user.clone()]).unwrap();
    // sanity: both verify, with the expected shape
    let v = verify_chain(&p.trust, &eec, &options, p.now).unwrap();
    assert_eq!(v.proxy_depth(), 0);
    let v = verify_chain(&p.trust, &proxies, &options, p.now).unwrap();
    assert_eq!(v.proxy_depth(), 2);

    let ca_key = ca.public_key().unwrap();
    let user_key = user.public_key().unwrap();
    let proxy1_key = proxy1.public_key().unwrap();
    assert!(user.verify(&ca_key).unwrap());
    assert!(proxy1.verify(&user_key).unwrap());
    assert!(proxy2.verify(&proxy1_key).unwrap());

    let mut g = c.benchmark_group("verify");
    g.bench_function("eec", |b| {
        b.iter(|| verify_chain(&p.trust, black_box(&eec), &options, p.now).unwrap())
    });
    g.bench_function("eec+2proxies", |b| {
        b.iter(|| verify_chain(&p.trust, black_box(&proxies), &options, p.now).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("floor");
    g.bench_function("1sig", |b| {
        b.iter(|| black_box(&user).verify(&ca_key).unwrap())
    });
    g.bench_function("3sig", |b| {
        b.iter(|| {
            black_box(&user).verify(&ca_key).unwrap()
                & black_box(&proxy1).verify(&user_key).unwrap()
                & black_box(&proxy2).verify(&proxy1_key).unwrap()
        })
    });
    g.finish();

    let store = openssl_store(&wire(&p.ca.cert), p.now);
    let eec_certs = vec![user.clone()];
    let proxy_certs = vec![proxy2.clone(), proxy1.clone(), user.clone()];
    assert!(openssl_verify(&store, &eec_certs));
    assert!(openssl_verify(&store, &proxy_certs));
    let user_der = user.to_der().unwrap();
    let mut g = c.benchmark_group("parts");
    g.bench_function("openssl_eec", |b| {
        b.iter(|| openssl_verify(&store, black_box(&eec_certs)))
    });
    g.bench_function("openssl_eec+2proxies", |b| {
        b.iter(|| openssl_verify(&store, black_box(&proxy_certs)))
    });
    g.bench_function("parse_eec", |b| {
        b.iter(|| {
            x509_parser::certificate::X509Certificate::from_der(black_box(&user_der))
                .unwrap()
                .1
                .validity()
                .not_after
                .timestamp()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
