//! Token validation cost against its floor, and loading the key cache (the PAM case).
//!
//! `verify/*` runs the whole `verify_token` (parse, header policy, issuer lookup, signature,
//! claims, scopes, fingerprint) with keys in memory; `floor/*` is the signature check alone
//! (`jsonwebtoken::crypto::verify` on the same input and key), so `verify ÷ floor` is the
//! cost of everything else. `load_cache/*` is what a PAM module pays once per process: read
//! one issuer's cache file, parse the JWKS, build the keys.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use hpccert_core::dev::token::{DevKey, jwks};
use hpccert_core::token::keys::{CachedKeys, FileKeySource, MemoryKeySource, write_cached};
use hpccert_core::token::{IssuerPolicy, JwsAlgorithm, KeySet, KeySource, verify_token};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::json;

const ISS: &str = "https://cilogon.org";
const AUD: &str = "https://login.example.org";
const NOW: u64 = 1_780_000_000;

fn bench_alg(c: &mut Criterion, alg: JwsAlgorithm, jwt_alg: Algorithm) {
    let key = DevKey::generate("k1", alg).unwrap();
    let other = DevKey::generate("k0", alg).unwrap();
    let doc = jwks(&[&other, &key]).unwrap();
    let mut keys = MemoryKeySource::new();
    keys.insert(
        ISS,
        KeySet::from_jwks(doc.to_string().as_bytes()).unwrap(),
        None,
    );
    let mut policy = IssuerPolicy::new(ISS, &[AUD]);
    policy.algorithms = vec![alg];
    let n = NOW as i64;
    // a realistic CILogon/WLCG access token (about 1 KB)
    let claims = json!({
        "iss": ISS, "sub": "http://cilogon.org/serverA/users/1234567", "aud": [AUD, "https://other"],
        "exp": n + 900, "iat": n - 5, "nbf": n - 5, "jti": "https://cilogon.org/oauth2/1f2e3d4c5b6a",
        "scope": "openid profile email org.cilogon.userinfo compute.create storage.read:/home/jsmith storage.modify:/scratch/jsmith",
        "wlcg.ver": "1.0", "wlcg.groups": ["/hpc", "/hpc/users", "/hpc/gateway"],
        "eppn": "jsmith@example.edu", "preferred_username": "jsmith",
        "isMemberOf": ["CO:members:active", "CO:COU:HPC:members:active"],
    });
    let token = key.mint(&claims).unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(NOW);
    let v = verify_token(&token, std::slice::from_ref(&policy), &keys, 16 * 1024, now).unwrap();
    assert_eq!(v.subject(), "http://cilogon.org/serverA/users/1234567");
    let (input, sig) = token.rsplit_once('.').unwrap();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk().unwrap()).unwrap();
    let decoding = DecodingKey::from_jwk(&jwk).unwrap();
    assert!(jsonwebtoken::crypto::verify(sig, input.as_bytes(), &decoding, jwt_alg).unwrap());

    let mut g = c.benchmark_group(format!("token_{alg}"));
    g.bench_function("verify", |b| {
        b.iter(|| {
            verify_token(
                black_box(&token),
                std::slice::from_ref(&policy),
                &keys,
                16 * 1024,
                now,
            )
            .unwrap()
        })
    });
    g.bench_function("floor", |b| {
        b.iter(|| {
            jsonwebtoken::crypto::verify(black_box(sig), input.as_bytes(), &decoding, jwt_alg)
                .unwrap()
        })
    });
    g.finish();
}

fn bench_load(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let k1 = DevKey::generate("rsa-2025", JwsAlgorithm::RS256).unwrap();
    let k2 = DevKey::generate("rsa-2026", JwsAlgorithm::RS256).unwrap();
    let k3 = DevKey::generate("ec-2026", JwsAlgorithm::ES256).unwrap();
    let cached = CachedKeys {
        issuer: ISS.into(),
        source: "https://cilogon.org/oauth2/certs".into(),
        fetched_at: NOW as i64 - 600,
        jwks: jwks(&[&k1, &k2, &k3]).unwrap(),
    };
    write_cached(dir.path(), &cached).unwrap();
    let policy = IssuerPolicy::new(ISS, &[AUD]);
    let mut g = c.benchmark_group("load_cache");
    g.bench_function("one_issuer_3_keys", |b| {
        b.iter(|| {
            // a fresh source each time: nothing memoised, as in a new PAM process
            let src = FileKeySource::new(dir.path());
            src.keys(&policy, NOW as i64).unwrap()
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_alg(c, JwsAlgorithm::RS256, Algorithm::RS256);
    bench_alg(c, JwsAlgorithm::ES256, Algorithm::ES256);
    bench_load(c);
}

criterion_group!(token_benches, benches);
criterion_main!(token_benches);
