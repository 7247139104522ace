//! The verified-credential cache against its budget (issue #19): a cache hit must cost at most
//! 1.05x the possession-proof signature check alone.
//!
//! * `x509/possession_alone`: what no login can skip, as the server did it before the cache:
//!   the presented certificate's key taken out and checked against the algorithm, and the
//!   RFC 6187 `x509v3-rsa2048-sha256` signature (RSA-2048, SHA-256 over the signed data, which
//!   holds the whole key blob) verified ([`x509auth::verify_signature`]).
//! * `x509/possession_decoded_key`: the signature check alone with the key already decoded
//!   (the strictest floor: no certificate decoding at all).
//! * `x509/cache_hit`: the server's work for a repeated login, in the engine's order: the key
//!   blob copied for the blocking task, the cache looked up by the blob's exact bytes in a
//!   full cache (1,024 entries), the remembered key's signature check
//!   ([`x509auth::verify_signature_with`]), the four sources read as the engine reads them
//!   ([`Reloading::current`]: trust store, grid-mapfile, suspension list, restrictions) into
//!   two generations, the remembered proof and decision checked against them, and the
//!   decision cloned for the login.
//! * `x509/full_verification`: a login without the cache: the blob decoded, the key checked,
//!   the signature verified, the chain verified (CRL lookup included) and mapped.
//! * `key/*`: the parts of a hit: the lookup alone, everything of `cache_hit` but the signature
//!   (its cost over the possession proof, measured apart from the signature's noise), and the
//!   alternative not taken: SHA-256 of the blob as the key.
//!
//! `cache_hit ÷ possession_alone` is the criterion's ratio.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

#[allow(dead_code)]
#[path = "../src/x509auth.rs"]
mod x509auth;

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hpccert_core::dev::pki::{self as devpki, CertSpec, Credential, KeyKind};
use hpccert_core::host::credential_cache::{
    CredentialCache, CredentialKey, Generation, Remembered, reuse_until,
};
use hpccert_core::host::reload::Reloading;
use hpccert_core::identity::gridmap::GridMapfile;
use hpccert_core::identity::mapping::{Decision, Mapper};
use hpccert_core::identity::restriction::{RestrictionError, Restrictions, Source};
use hpccert_core::identity::suspension::{SuspensionError, SuspensionList};
use hpccert_core::trust::store::TrustStore;
use hpccert_core::trust::x509::{VerifiedChain, VerifyOptions, verify_chain};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Public};
use openssl::sign::Signer;

const ALG: &str = "x509v3-rsa2048-sha256";
const RSA: KeyKind = KeyKind::Rsa(2048);

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u32::try_from(s.len()).unwrap().to_be_bytes());
    out.extend_from_slice(s);
}

fn blob(creds: &[&Credential]) -> Vec<u8> {
    let mut b = Vec::new();
    string(&mut b, ALG.as_bytes());
    b.extend_from_slice(&u32::try_from(creds.len()).unwrap().to_be_bytes());
    for c in creds {
        string(&mut b, &c.cert.to_der().unwrap());
    }
    b.extend_from_slice(&0u32.to_be_bytes());
    b
}

/// What the client signs (RFC 4252 §7): session id, request, algorithm and the key blob.
fn signed_data(blob: &[u8], user: &str) -> Vec<u8> {
    let mut d = Vec::new();
    string(&mut d, &[0x5a; 32]);
    d.push(50);
    string(&mut d, user.as_bytes());
    string(&mut d, b"ssh-connection");
    string(&mut d, b"publickey");
    d.push(1);
    string(&mut d, ALG.as_bytes());
    string(&mut d, blob);
    d
}

fn sign(cred: &Credential, data: &[u8]) -> Vec<u8> {
    let mut s = Signer::new(MessageDigest::sha256(), &cred.key).unwrap();
    s.update(data).unwrap();
    let raw = s.sign_to_vec().unwrap();
    let mut out = Vec::new();
    string(&mut out, b"rsa2048-sha256");
    string(&mut out, &raw);
    out
}

type Proof = (VerifiedChain, String, PKey<Public>);

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let now = hpccert_core::clock::now();
    let t = hpccert_core::token::unix_seconds(now);
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
    let crl = devpki::crl(
        &ca,
        &[],
        now - Duration::from_secs(3600),
        now + Duration::from_secs(7 * 86400),
        1,
    )
    .unwrap();
    // the sources as the engine holds them: files, reloaded when they change
    let trust_dir = dir.path().join("certificates");
    devpki::install_ca(&trust_dir, &ca.cert, Some(&crl), None).unwrap();
    let gridmap_file = dir.path().join("grid-mapfile");
    std::fs::write(
        &gridmap_file,
        "\"/DC=org/DC=cilogon/C=US/O=Inst 42/CN=User 42 A42\" user42\n",
    )
    .unwrap();
    let check = Duration::from_secs(2);
    let trust = Reloading::open(&trust_dir, check, TrustStore::load).unwrap();
    let gridmap = Reloading::open(&gridmap_file, check, GridMapfile::load).unwrap();
    let suspensions: Reloading<Result<SuspensionList, SuspensionError>> =
        Reloading::open(&dir.path().join("suspended"), check, |p| {
            Ok::<_, String>(SuspensionList::load(p))
        })
        .unwrap();
    let restrictions: Reloading<Result<Restrictions, RestrictionError>> =
        Reloading::open(&dir.path().join("restrictions"), check, |p| {
            Ok::<_, String>(Restrictions::load(p))
        })
        .unwrap();
    let options = VerifyOptions::default();
    let from: IpAddr = "192.0.2.7".parse().unwrap();
    let login = "user42";

    let key_blob = blob(&[&user, &ca]);
    let data = signed_data(&key_blob, login);
    let sig = sign(&user, &data);
    let leaf = x509auth::parse_key_blob(ALG, &key_blob).unwrap().leaf;

    let decide = |chain: &VerifiedChain,
                  g: &GridMapfile,
                  s: &Result<SuspensionList, SuspensionError>,
                  r: &Result<Restrictions, RestrictionError>|
     -> Decision {
        Mapper::new(g)
            .with_suspensions(s)
            .with_restrictions(r, Source::Known(from))
            .decide(chain, Some(login))
            .unwrap()
    };

    // a full cache: 1,023 other chains (other bytes in their first certificate) and ours
    let cache: CredentialCache<Remembered<Proof>> = CredentialCache::new(300, 1024);
    let remember = |b: &[u8]| {
        let parsed = x509auth::parse_key_blob(ALG, b).unwrap();
        let key = x509auth::check_key(ALG, &parsed.leaf).unwrap();
        let tr = trust.current();
        let verified = verify_chain(&tr, &parsed.chain, &options, now).unwrap();
        let (g, s, r) = (
            gridmap.current(),
            suspensions.current(),
            restrictions.current(),
        );
        let decision = decide(&verified, &g, &s, &r);
        let reuse = reuse_until(t, verified.not_after(), verified.crl_next_update(), 300).unwrap();
        let remembered = Remembered::new(
            (verified, ALG.to_string(), key),
            Generation::new().with(&tr),
            reuse,
        )
        .with_decision(
            login,
            from,
            Generation::new().with(&g).with(&s).with(&r),
            &decision,
        );
        cache.insert(CredentialKey::Chain(b), reuse.until, remembered);
    };
    remember(&key_blob);
    let template = cache.get(CredentialKey::Chain(&key_blob), t).unwrap();
    for i in 0..1023u32 {
        let mut other = key_blob.clone();
        // inside the first certificate's serial number and signature
        other[40..44].copy_from_slice(&i.to_be_bytes());
        let n = other.len();
        other[n - 300..n - 296].copy_from_slice(&i.to_be_bytes());
        cache.insert(
            CredentialKey::Chain(&other),
            t + 300,
            Remembered::clone(&template),
        );
    }
    drop(template);
    assert!(cache.get(CredentialKey::Chain(&key_blob), t).is_some());

    let mut g = c.benchmark_group("x509");
    g.bench_function("possession_alone", |b| {
        b.iter(|| {
            x509auth::verify_signature(ALG, black_box(&leaf), black_box(&data), black_box(&sig))
                .unwrap()
        })
    });
    let decoded = x509auth::check_key(ALG, &leaf).unwrap();
    g.bench_function("possession_decoded_key", |b| {
        b.iter(|| {
            x509auth::verify_signature_with(
                ALG,
                black_box(&decoded),
                black_box(&data),
                black_box(&sig),
            )
            .unwrap()
        })
    });
    g.bench_function("cache_hit", |b| {
        b.iter(|| {
            // x509_key: the lookup by exact bytes, the remembered key
            let remembered = cache
                .get(CredentialKey::Chain(black_box(&key_blob)), t)
                .unwrap();
            let (_, algorithm, key) = remembered.proof_unchecked();
            assert_eq!(algorithm, ALG);
            // the possession proof, always
            x509auth::verify_signature_with(ALG, key, black_box(&data), black_box(&sig)).unwrap();
            // x509_login: the blob handed to the blocking task, the sources read now
            let blob_copy = black_box(key_blob.clone());
            let tr = trust.current();
            let verified_now = Generation::new().with(&tr);
            let (gm, s, r) = (
                gridmap.current(),
                suspensions.current(),
                restrictions.current(),
            );
            let mapped_now = Generation::new().with(&gm).with(&s).with(&r);
            remembered.proof(&verified_now, t).unwrap();
            let decision = remembered
                .decision(login, from, &mapped_now)
                .unwrap()
                .clone();
            black_box((decision, blob_copy))
        })
    });
    g.bench_function("full_verification", |b| {
        b.iter(|| {
            let parsed = x509auth::parse_key_blob(ALG, black_box(&key_blob)).unwrap();
            let key = x509auth::check_key(ALG, &parsed.leaf).unwrap();
            x509auth::verify_signature_with(ALG, &key, black_box(&data), black_box(&sig)).unwrap();
            let tr = trust.current();
            let verified = verify_chain(&tr, &parsed.chain, &options, now).unwrap();
            let (gm, s, r) = (
                gridmap.current(),
                suspensions.current(),
                restrictions.current(),
            );
            black_box(decide(&verified, &gm, &s, &r))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("key");
    g.bench_function("lookup_exact_bytes", |b| {
        b.iter(|| cache.get(CredentialKey::Chain(black_box(&key_blob)), t))
    });
    g.bench_function("hit_without_signature", |b| {
        b.iter(|| {
            let remembered = cache
                .get(CredentialKey::Chain(black_box(&key_blob)), t)
                .unwrap();
            let blob_copy = black_box(key_blob.clone());
            let tr = trust.current();
            let verified_now = Generation::new().with(&tr);
            let (gm, s, r) = (
                gridmap.current(),
                suspensions.current(),
                restrictions.current(),
            );
            let mapped_now = Generation::new().with(&gm).with(&s).with(&r);
            remembered.proof(&verified_now, t).unwrap();
            let decision = remembered
                .decision(login, from, &mapped_now)
                .unwrap()
                .clone();
            black_box((decision, blob_copy))
        })
    });
    g.bench_function("sha256_of_blob", |b| {
        b.iter(|| openssl::sha::sha256(black_box(&key_blob)))
    });
    g.finish();
    eprintln!("key blob: {} bytes", key_blob.len());
}

criterion_group!(benches, bench);
criterion_main!(benches);
