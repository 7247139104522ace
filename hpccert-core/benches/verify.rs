//! Chain verification cost against its floor: the raw signature checks alone.
//!
//! `verify_chain` of an EEC needs one signature verification (the CA's signature on the
//! EEC; the anchor's self-signature is not checked), an EEC with two proxies needs three.
//! The `floor/*` benches do exactly those verifications with `X509::verify`, so
//! `verify/* ÷ floor/*` is the overhead of everything else (parsing, path building, CRL
//! lookup, proxy and namespace policy).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use hpccert_core::devpki::{self, CertSpec, Credential, KeyKind, ProxySpec};
use hpccert_core::trust::TrustStore;
use hpccert_core::x509::{CrlPolicy, PresentedChain, VerifyOptions, verify_chain};
use openssl::x509::X509;

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
}

criterion_group!(benches, bench);
criterion_main!(benches);
