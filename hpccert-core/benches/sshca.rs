//! The SSH CA's issuance (issue 14): what `POST /ssh/v1/certificate` computes for one request,
//! without the HTTP and database round trips: verify the bearer token (RS256, keys in memory),
//! map it with the engine (token map of 1,000 identities, suspension list), check the user key
//! and sign an Ed25519 certificate. `sign` alone and `verify_token` alone show where the time
//! goes. Target: median under 1 ms for the whole (`issue/token+map+sign`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use hpccert_core::dev::token::{DevKey, jwks};
use hpccert_core::identity::gridmap::GridMapfile;
use hpccert_core::identity::mapping::{Mapper, TokenRules};
use hpccert_core::identity::suspension::{SuspensionError, SuspensionList};
use hpccert_core::identity::tokenmap::TokenMapfile;
use hpccert_core::token::keys::MemoryKeySource;
use hpccert_core::token::{IssuerPolicy, JwsAlgorithm, KeySet, verify_token};
use hpccert_core::trust::sshca::{CaPolicy, CertRequest, SshCa, check_user_key, parse_user_key};
use serde_json::json;
use ssh_key::PrivateKey;
use ssh_key::private::Ed25519Keypair;

const ISS: &str = "https://cilogon.org";
const AUD: &str = "https://portal.example.org";
const NOW: u64 = 1_780_000_000;

fn issuance(c: &mut Criterion) {
    let key = DevKey::generate("k1", JwsAlgorithm::RS256).unwrap();
    let mut keys = MemoryKeySource::new();
    keys.insert(
        ISS,
        KeySet::from_jwks(jwks(&[&key]).unwrap().to_string().as_bytes()).unwrap(),
        None,
    );
    let policy = IssuerPolicy::new(ISS, &[AUD]);
    let n = NOW as i64;
    let token = key
        .mint(&json!({
            "iss": ISS, "sub": "http://cilogon.org/serverA/users/500", "aud": AUD,
            "exp": n + 3600, "iat": n - 5, "nbf": n - 5, "scope": "openid compute.create",
            "wlcg.ver": "1.0",
        }))
        .unwrap();
    let mut map = String::new();
    for i in 0..1000 {
        map.push_str(&format!(
            "\"{ISS}\" \"http://cilogon.org/serverA/users/{i}\" user{i}\n"
        ));
    }
    let token_map = TokenMapfile::parse(&map).unwrap();
    let suspensions: Result<SuspensionList, SuspensionError> =
        SuspensionList::parse("account mallory\n").map_err(SuspensionError::Syntax);
    let rules = vec![TokenRules::new(ISS)];
    let empty = GridMapfile::default();
    let ca = SshCa::new(
        PrivateKey::from(Ed25519Keypair::from_seed(&[7u8; 32])),
        None,
        CaPolicy::default(),
    );
    let user = parse_user_key(
        &PrivateKey::from(Ed25519Keypair::from_seed(&[9u8; 32]))
            .public_key()
            .to_openssh()
            .unwrap(),
    )
    .unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(NOW);
    let whole = || {
        let verified =
            verify_token(&token, std::slice::from_ref(&policy), &keys, 16 * 1024, now).unwrap();
        let mapper = Mapper::new(&empty)
            .with_suspensions(&suspensions)
            .with_tokens(Some(&token_map), &rules);
        let decision = mapper.decide_token(&verified, None).unwrap();
        check_user_key(&user, &ca.policy().key_types).unwrap();
        ca.issue(
            &CertRequest {
                public_key: &user,
                principals: vec![decision.account().to_string()],
                key_id: format!("{} serial 1", decision.identity()),
                serial: 1,
                credential_expires: Some(
                    UNIX_EPOCH + Duration::from_secs(verified.expires_at() as u64),
                ),
                source_address: None,
                force_command: None,
                no_pty: false,
                no_forwarding: false,
            },
            now,
        )
        .unwrap()
    };
    assert_eq!(whole().certificate.valid_principals(), ["user500"]);
    let mut g = c.benchmark_group("sshca");
    g.bench_function("issue/token+map+sign", |b| b.iter(|| black_box(whole())));
    g.bench_function("verify_token", |b| {
        b.iter(|| {
            black_box(
                verify_token(&token, std::slice::from_ref(&policy), &keys, 16 * 1024, now).unwrap(),
            )
        })
    });
    g.bench_function("sign", |b| {
        b.iter(|| {
            black_box(
                ca.issue(
                    &CertRequest {
                        public_key: &user,
                        principals: vec!["user500".into()],
                        key_id: "k".into(),
                        serial: 1,
                        credential_expires: None,
                        source_address: None,
                        force_command: None,
                        no_pty: false,
                        no_forwarding: false,
                    },
                    now,
                )
                .unwrap(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, issuance);
criterion_main!(benches);
