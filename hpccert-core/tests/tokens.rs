//! Token validation and token mapping: valid tokens of every supported algorithm, and the
//! attacks a validator must refuse.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hpccert_core::dev::token::{DevKey, b64, jwks};
use hpccert_core::identity::Identity;
use hpccert_core::identity::gridmap::GridMapfile;
use hpccert_core::identity::mapping::{Mapper, Refusal, TokenRules};
use hpccert_core::identity::tokenmap::TokenMapfile;
use hpccert_core::token::keys::MemoryKeySource;
use hpccert_core::token::{
    Capability, IssuerPolicy, JwsAlgorithm, KeySet, Profile, TokenError, VerifiedToken,
    WLCG_ANY_AUDIENCE, verify_token,
};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use serde_json::{Value, json};

const ISS: &str = "https://issuer.example.org";
const AUD: &str = "https://login.example.org";
const NOW: i64 = 1_780_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW as u64)
}

struct Fixture {
    rsa: DevKey,
    ec: DevKey,
    keys: MemoryKeySource,
    policy: IssuerPolicy,
}

fn fixture() -> Fixture {
    let rsa = DevKey::generate("rsa-1", JwsAlgorithm::RS256).unwrap();
    let ec = DevKey::generate("ec-1", JwsAlgorithm::ES256).unwrap();
    let mut keys = MemoryKeySource::new();
    let set = KeySet::from_jwks(jwks(&[&rsa, &ec]).unwrap().to_string().as_bytes()).unwrap();
    keys.insert(ISS, set, Some(NOW - 60));
    Fixture {
        rsa,
        ec,
        keys,
        policy: IssuerPolicy::new(ISS, &[AUD]),
    }
}

fn claims() -> Value {
    json!({
        "iss": ISS, "sub": "user-123", "aud": AUD,
        "exp": NOW + 600, "iat": NOW - 10, "nbf": NOW - 10,
        "scope": "openid compute.create storage.read:/home/alice",
        "preferred_username": "alice",
    })
}

impl Fixture {
    fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        self.verify_with(token, &self.policy)
    }
    fn verify_with(&self, token: &str, policy: &IssuerPolicy) -> Result<VerifiedToken, TokenError> {
        verify_token(
            token,
            std::slice::from_ref(policy),
            &self.keys,
            16 * 1024,
            now(),
        )
    }
}

/// A token with an arbitrary header, signed by `key` with its own algorithm.
fn with_header(key: &DevKey, header: Value, claims: &Value) -> String {
    key.mint_raw(&header, claims).unwrap()
}

fn unsigned(header: &Value, claims: &Value, sig: &str) -> String {
    format!(
        "{}.{}.{sig}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

#[test]
fn every_supported_algorithm_verifies() {
    for alg in JwsAlgorithm::ALL {
        let key = DevKey::generate("k", alg).unwrap();
        let mut keys = MemoryKeySource::new();
        keys.insert(
            ISS,
            KeySet::from_jwks(jwks(&[&key]).unwrap().to_string().as_bytes()).unwrap(),
            None,
        );
        let mut policy = IssuerPolicy::new(ISS, &[AUD]);
        policy.algorithms = vec![alg];
        let token = key.mint(&claims()).unwrap();
        let v = verify_token(&token, &[policy.clone()], &keys, 16 * 1024, now())
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(v.subject(), "user-123");
        assert_eq!(v.alg(), alg);
        // an allow-list without this algorithm refuses it
        policy.algorithms = JwsAlgorithm::ALL
            .into_iter()
            .filter(|a| *a != alg)
            .collect();
        assert_eq!(
            verify_token(&token, &[policy], &keys, 16 * 1024, now()).unwrap_err(),
            TokenError::AlgorithmNotAllowed(alg.to_string())
        );
    }
}

#[test]
fn a_valid_token_carries_identity_scopes_and_groups() {
    let f = fixture();
    let mut c = claims();
    c["wlcg.groups"] = json!(["/cms", "/cms/prod"]);
    c["aud"] = json!(["other", AUD]);
    let v = f.verify(&f.rsa.mint(&c).unwrap()).unwrap();
    assert_eq!(
        (v.issuer(), v.subject(), v.audience()),
        (ISS, "user-123", AUD)
    );
    assert!(v.capabilities().contains(&Capability::ComputeCreate));
    assert!(
        v.capabilities()
            .contains(&Capability::StorageRead("/home/alice".into()))
    );
    assert_eq!(v.groups(), ["/cms", "/cms/prod"]);
    assert!(v.fingerprint().starts_with("SHA256:"));
    assert_eq!(v.kid(), Some("rsa-1"));
    assert!(v.summary().contains("user-123"));
}

#[test]
fn alg_none_in_every_casing_is_refused() {
    let f = fixture();
    for none in ["none", "None", "NONE", "nOnE"] {
        let t = unsigned(&json!({"alg": none, "kid": "rsa-1"}), &claims(), "");
        assert_eq!(f.verify(&t).unwrap_err(), TokenError::AlgNone, "{none}");
        let t = unsigned(&json!({"alg": none}), &claims(), "AAAA");
        assert_eq!(f.verify(&t).unwrap_err(), TokenError::AlgNone, "{none}");
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let f = fixture();
    let jwk = f.rsa.jwk().unwrap();
    // the classic key-confusion attack: HMAC keyed with the public key (as PEM and as JWK text)
    let rsa_pub = openssl::rsa::Rsa::from_public_components(
        openssl::bn::BigNum::from_slice(&base64_url(jwk["n"].as_str().unwrap())).unwrap(),
        openssl::bn::BigNum::from_slice(&base64_url(jwk["e"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    for secret in [
        rsa_pub.public_key_to_pem().unwrap(),
        jwk.to_string().into_bytes(),
    ] {
        let header = json!({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims().to_string().as_bytes())
        );
        let hmac = PKey::hmac(&secret).unwrap();
        let mut s = Signer::new(MessageDigest::sha256(), &hmac).unwrap();
        s.update(input.as_bytes()).unwrap();
        let token = format!("{input}.{}", b64(&s.sign_to_vec().unwrap()));
        assert_eq!(
            f.verify(&token).unwrap_err(),
            TokenError::HmacRefused("HS256".into())
        );
    }
}

fn base64_url(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

#[test]
fn stripped_or_altered_signatures_are_refused() {
    let f = fixture();
    let token = f.rsa.mint(&claims()).unwrap();
    let (input, sig) = token.rsplit_once('.').unwrap();
    assert!(matches!(
        f.verify(&format!("{input}.")),
        Err(TokenError::BadSignature(_))
    ));
    // one bit of the signature flipped
    let mut raw = base64_url(sig);
    raw[10] ^= 1;
    assert!(matches!(
        f.verify(&format!("{input}.{}", b64(&raw))),
        Err(TokenError::BadSignature(_))
    ));
    // the payload changed under the old signature (a different subject)
    let mut c = claims();
    c["sub"] = json!("root");
    let header = input.split('.').next().unwrap();
    let forged = format!("{header}.{}.{sig}", b64(c.to_string().as_bytes()));
    assert!(matches!(
        f.verify(&forged),
        Err(TokenError::BadSignature(_))
    ));
    // the signature of an ES256 key under an RS256 header
    let es = f.ec.mint(&claims()).unwrap();
    let es_sig = es.rsplit_once('.').unwrap().1;
    assert!(matches!(
        f.verify(&format!("{input}.{es_sig}")),
        Err(TokenError::BadSignature(_))
    ));
    // non-base64url signature text
    assert!(matches!(
        f.verify(&format!("{input}.a+b/c=")),
        Err(TokenError::BadSignature(_))
    ));
}

#[test]
fn es256_all_zero_signature_is_refused() {
    // CVE-2022-21449 ("psychic signatures"): r = s = 0 verified on some Java versions
    let f = fixture();
    let header = json!({"alg": "ES256", "kid": "ec-1"});
    let t = unsigned(&header, &claims(), &b64(&[0u8; 64]));
    assert!(
        matches!(f.verify(&t), Err(TokenError::BadSignature(_))),
        "{:?}",
        f.verify(&t)
    );
    let t = unsigned(&header, &claims(), &b64(&[0u8; 8]));
    assert!(matches!(f.verify(&t), Err(TokenError::BadSignature(_))));
}

#[test]
fn issuer_must_match_exactly() {
    let f = fixture();
    for iss in [
        "https://issuer.example.org/",
        "https://ISSUER.example.org",
        "http://issuer.example.org",
        "",
    ] {
        let mut c = claims();
        c["iss"] = json!(iss);
        assert_eq!(
            f.verify(&f.rsa.mint(&c).unwrap()).unwrap_err(),
            TokenError::UnknownIssuer(iss.into())
        );
    }
    let mut c = claims();
    c["iss"] = json!(["https://issuer.example.org"]);
    assert!(matches!(
        f.verify(&f.rsa.mint(&c).unwrap()),
        Err(TokenError::BadClaim { claim: "iss", .. })
    ));
    let mut c = claims();
    c.as_object_mut().unwrap().remove("iss");
    assert_eq!(
        f.verify(&f.rsa.mint(&c).unwrap()).unwrap_err(),
        TokenError::MissingClaim("iss")
    );
}

#[test]
fn audience_rules() {
    let f = fixture();
    let mint = |aud: Value| {
        let mut c = claims();
        c["aud"] = aud;
        f.rsa.mint(&c).unwrap()
    };
    assert!(matches!(
        f.verify(&mint(json!("https://other.example.org"))),
        Err(TokenError::WrongAudience { .. })
    ));
    assert!(matches!(
        f.verify(&mint(json!([]))),
        Err(TokenError::WrongAudience { .. })
    ));
    assert!(matches!(
        f.verify(&mint(json!(42))),
        Err(TokenError::BadClaim { claim: "aud", .. })
    ));
    let mut c = claims();
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        f.verify(&f.rsa.mint(&c).unwrap()).unwrap_err(),
        TokenError::MissingClaim("aud")
    );
    // WLCG "any" only when configured
    let any = mint(json!(WLCG_ANY_AUDIENCE));
    assert!(matches!(
        f.verify(&any),
        Err(TokenError::WrongAudience { .. })
    ));
    let mut p = f.policy.clone();
    p.accept_any_audience = true;
    assert_eq!(
        f.verify_with(&any, &p).unwrap().audience(),
        WLCG_ANY_AUDIENCE
    );
}

#[test]
fn time_claims() {
    let f = fixture();
    let mint = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims();
        edit(&mut c);
        f.rsa.mint(&c).unwrap()
    };
    assert!(matches!(
        f.verify(&mint(&|c| c["exp"] = json!(NOW - 61))),
        Err(TokenError::Expired { .. })
    ));
    // within the 60 s leeway
    assert!(f.verify(&mint(&|c| c["exp"] = json!(NOW - 30))).is_ok());
    assert!(matches!(
        f.verify(&mint(&|c| c["nbf"] = json!(NOW + 3600))),
        Err(TokenError::NotYetValid { .. })
    ));
    assert!(matches!(
        f.verify(&mint(&|c| c["iat"] = json!(NOW + 3600))),
        Err(TokenError::IssuedInFuture { .. })
    ));
    assert_eq!(
        f.verify(&mint(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        }))
        .unwrap_err(),
        TokenError::MissingClaim("exp")
    );
    assert!(matches!(
        f.verify(&mint(&|c| c["exp"] = json!((NOW + 600).to_string()))),
        Err(TokenError::BadClaim { claim: "exp", .. })
    ));
    assert!(matches!(
        f.verify(&mint(&|c| c["nbf"] = json!(null))),
        Err(TokenError::BadClaim { claim: "nbf", .. })
    ));
    let mut p = f.policy.clone();
    p.max_lifetime = Some(300);
    assert!(matches!(
        f.verify_with(&f.rsa.mint(&claims()).unwrap(), &p),
        Err(TokenError::LifetimeTooLong { .. })
    ));
}

#[test]
fn header_policy() {
    let f = fixture();
    let c = claims();
    let t = with_header(
        &f.rsa,
        json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"], "exp": 1}),
        &c,
    );
    assert_eq!(
        f.verify(&t).unwrap_err(),
        TokenError::CriticalHeader(vec!["exp".into()])
    );
    for (name, value) in [
        ("jku", json!("https://evil.example/jwks.json")),
        ("x5u", json!("https://evil.example/cert.pem")),
        ("jwk", f.rsa.jwk().unwrap()),
        ("x5c", json!(["MIIB"])),
    ] {
        let mut h = json!({"alg": "RS256", "kid": "rsa-1"});
        h[name] = value;
        assert_eq!(
            f.verify(&with_header(&f.rsa, h, &c)).unwrap_err(),
            TokenError::EmbeddedKey(name.into())
        );
    }
    for kid in [
        "../../../etc/passwd",
        "x' OR '1'='1",
        "a;DROP TABLE keys",
        "a/b",
        "",
        "k\u{0}",
    ] {
        let t = with_header(&f.rsa, json!({"alg": "RS256", "kid": kid}), &c);
        assert!(
            matches!(f.verify(&t), Err(TokenError::BadKid(_))),
            "{kid:?}: {:?}",
            f.verify(&t)
        );
    }
    let t = with_header(&f.rsa, json!({"alg": "RS256", "kid": "rsa-2"}), &c);
    assert_eq!(
        f.verify(&t).unwrap_err(),
        TokenError::UnknownKid("rsa-2".into())
    );
    // the kid of the EC key under an RS256 header: no key fits
    let t = with_header(&f.rsa, json!({"alg": "RS256", "kid": "ec-1"}), &c);
    assert!(matches!(f.verify(&t), Err(TokenError::BadSignature(_))));
    // no kid: every fitting key is tried
    assert!(
        f.verify(&with_header(&f.rsa, json!({"alg": "RS256"}), &c))
            .is_ok()
    );
    // typ policy
    assert!(
        f.verify(&with_header(
            &f.rsa,
            json!({"alg": "RS256", "typ": "JWT"}),
            &c
        ))
        .is_ok()
    );
    assert_eq!(
        f.verify(&with_header(
            &f.rsa,
            json!({"alg": "RS256", "typ": "id_token+jwt"}),
            &c
        ))
        .unwrap_err(),
        TokenError::WrongType("id_token+jwt".into())
    );
    let mut p = f.policy.clone();
    p.require_at_jwt = true;
    assert!(
        f.verify_with(
            &with_header(&f.rsa, json!({"alg": "RS256", "typ": "JWT"}), &c),
            &p
        )
        .is_err()
    );
    assert!(
        f.verify_with(
            &with_header(&f.rsa, json!({"alg": "RS256", "typ": "at+jwt"}), &c),
            &p
        )
        .is_ok()
    );
}

#[test]
fn structure_and_size() {
    let f = fixture();
    let good = f.rsa.mint(&claims()).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    for bad in [
        parts[..2].join("."),
        format!("{good}.x"),
        format!("{good}.x.y"),
        "".to_string(),
        "not a token".to_string(),
    ] {
        assert!(
            matches!(f.verify(&bad), Err(TokenError::Malformed(_))),
            "{bad:?}: {:?}",
            f.verify(&bad)
        );
    }
    let huge = format!("{}.{}.{}", parts[0], "A".repeat(1024 * 1024), parts[2]);
    assert!(matches!(f.verify(&huge), Err(TokenError::TooLarge { .. })));
    // payload and header must be JSON objects
    let t = unsigned(&json!({"alg": "RS256"}), &json!([1, 2]), "AAAA");
    assert!(matches!(f.verify(&t), Err(TokenError::Malformed(_))));
}

#[test]
fn refusals_never_contain_the_token() {
    let f = fixture();
    let token = f.rsa.mint(&claims()).unwrap();
    let sig = token.rsplit_once('.').unwrap().1;
    let mut c = claims();
    c["exp"] = json!(NOW - 3600);
    for t in [format!("{token}x"), f.rsa.mint(&c).unwrap()] {
        let msg = f.verify(&t).unwrap_err().to_string();
        assert!(!msg.contains(sig) && !msg.contains(&t[..40]), "{msg}");
    }
}

#[test]
fn stale_keys_refuse() {
    let mut f = fixture();
    let set = KeySet::from_jwks(jwks(&[&f.rsa]).unwrap().to_string().as_bytes()).unwrap();
    f.keys.insert(ISS, set, Some(NOW - 8 * 86400));
    assert!(matches!(
        f.verify(&f.rsa.mint(&claims()).unwrap()),
        Err(TokenError::StaleKeys { .. })
    ));
}

#[test]
fn profiles() {
    let f = fixture();
    let mut wlcg = f.policy.clone();
    wlcg.profile = Profile::Wlcg;
    let mut c = claims();
    assert!(matches!(
        f.verify_with(&f.rsa.mint(&c).unwrap(), &wlcg),
        Err(TokenError::Profile { .. })
    ));
    c["wlcg.ver"] = json!("1.0");
    assert!(f.verify_with(&f.rsa.mint(&c).unwrap(), &wlcg).is_ok());
    let mut sci = f.policy.clone();
    sci.profile = Profile::Scitoken;
    let mut c = claims();
    c["ver"] = json!("scitoken:2.0");
    assert!(f.verify_with(&f.rsa.mint(&c).unwrap(), &sci).is_ok());
    c["ver"] = json!("scitoken:9.0");
    assert!(matches!(
        f.verify_with(&f.rsa.mint(&c).unwrap(), &sci),
        Err(TokenError::Profile { .. })
    ));
    c["ver"] = json!("scitoken:2.0");
    c["scope"] = json!("");
    assert!(matches!(
        f.verify_with(&f.rsa.mint(&c).unwrap(), &sci),
        Err(TokenError::Profile { .. })
    ));
}

// ---- mapping

fn uid_of(name: &str) -> Option<u32> {
    match name {
        "alice" => Some(1001),
        "bob" => Some(1002),
        "svc" => Some(998),
        "root" => Some(0),
        _ => None,
    }
}

fn decide(
    token: &VerifiedToken,
    map: Option<&TokenMapfile>,
    rules: &[TokenRules],
    user: Option<&str>,
) -> Result<String, Refusal> {
    let gridmap = GridMapfile::parse("").unwrap();
    Mapper::new(&gridmap)
        .with_tokens(map, rules)
        .with_uid_lookup(uid_of)
        .decide_token(token, user)
        .map(|d| {
            assert!(matches!(d.identity(), Identity::Token { .. }));
            assert!(d.credential().starts_with("SHA256:"));
            d.account().to_string()
        })
}

#[test]
fn token_map_and_claim_rules() {
    let f = fixture();
    let token = f.verify(&f.rsa.mint(&claims()).unwrap()).unwrap();
    let map = TokenMapfile::parse(&format!("\"{ISS}\" \"user-123\" bob,alice\n")).unwrap();
    assert_eq!(decide(&token, Some(&map), &[], None).unwrap(), "bob");
    assert_eq!(
        decide(&token, Some(&map), &[], Some("alice")).unwrap(),
        "alice"
    );
    assert!(matches!(
        decide(&token, Some(&map), &[], Some("root")),
        Err(Refusal::TokenAccountNotAllowed { .. })
    ));
    // no map rule, no claim rule: not mapped
    assert!(matches!(
        decide(&token, None, &[], None),
        Err(Refusal::TokenNotMapped { .. })
    ));
    // claim rule
    let mut rules = TokenRules::new(ISS);
    rules.username_claim = Some("preferred_username".into());
    assert_eq!(
        decide(&token, None, std::slice::from_ref(&rules), None).unwrap(),
        "alice"
    );
    // a map rule wins over the claim
    assert_eq!(
        decide(&token, Some(&map), std::slice::from_ref(&rules), None).unwrap(),
        "bob"
    );
    // rules of another issuer do not apply
    let mut other = rules.clone();
    other.issuer = "https://other".into();
    assert!(decide(&token, None, &[other], None).is_err());
}

/// A token map line may name a pool, as a grid-mapfile line does: a login leases an account
/// (keyed by issuer and subject) and keeps it; a preview leases nothing; another token
/// identity gets another account.
#[test]
fn token_map_pools_lease_accounts() {
    use hpccert_core::identity::gridmapdir::Gridmapdir;
    use hpccert_core::identity::pool::{PoolConfig, Pools};
    let f = fixture();
    let token = f.verify(&f.rsa.mint(&claims()).unwrap()).unwrap();
    let mut other_claims = claims();
    other_claims["sub"] = json!("user-456");
    let other = f.verify(&f.rsa.mint(&other_claims).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pools = Pools::from_config(&[PoolConfig {
        name: "atlas".into(),
        prefix: None,
        count: 2,
        first_uid: 20000,
        gid: 20000,
        group: None,
        home: "/home/{account}".into(),
        shell: "/bin/bash".into(),
    }])
    .unwrap();
    let leaser = Gridmapdir::new(tmp.path(), pools);
    let map = TokenMapfile::parse(&format!("\"{ISS}\" /user-.*/ .atlas\n")).unwrap();
    let gridmap = GridMapfile::parse("").unwrap();
    let uid_of = |name: &str| name.strip_prefix("atlas00").map(|_| 20001);
    // explain: a preview, nothing leased
    let preview = Mapper::new(&gridmap)
        .with_tokens(Some(&map), &[])
        .with_uid_lookup(uid_of)
        .with_pool_preview(&leaser)
        .decide_token(&token, None)
        .unwrap();
    assert!(preview.account().as_str().starts_with("atlas00"));
    assert!(leaser.list().unwrap().iter().all(|s| s.lease.is_none()));
    // a login leases, and the same identity keeps its account
    let login = Mapper::new(&gridmap)
        .with_tokens(Some(&map), &[])
        .with_uid_lookup(uid_of)
        .with_pools(&leaser);
    let first = login.decide_token(&token, None).unwrap();
    assert!(
        first.reasons().iter().any(|r| r.contains("pool")),
        "{:?}",
        first.reasons()
    );
    assert_eq!(
        login.decide_token(&token, None).unwrap().account(),
        first.account()
    );
    assert_eq!(
        login.decide_token(&token, Some("atlas")).unwrap().account(),
        first.account()
    );
    // another subject gets the other account, and may not take the first one's
    let second = login.decide_token(&other, None).unwrap();
    assert_ne!(second.account(), first.account());
    assert!(matches!(
        login.decide_token(&other, Some(first.account().as_str())),
        Err(Refusal::TokenAccountNotAllowed { .. })
    ));
    // without pools (pam_hpccert, which never writes) the line is refused, not guessed
    let e = Mapper::new(&gridmap)
        .with_tokens(Some(&map), &[])
        .with_uid_lookup(uid_of)
        .decide_token(&token, None)
        .unwrap_err();
    assert!(e.to_string().contains("pool"), "{e}");
}

#[test]
fn claim_rules_guard_domains_and_reserved_accounts() {
    let f = fixture();
    let verify = |name: &str| {
        let mut c = claims();
        c["eppn"] = json!(name);
        f.verify(&f.rsa.mint(&c).unwrap()).unwrap()
    };
    let mut rules = TokenRules::new(ISS);
    rules.username_claim = Some("eppn".into());
    rules.username_domains = vec!["example.edu".into()];
    let r = std::slice::from_ref(&rules);
    assert_eq!(
        decide(&verify("alice@example.edu"), None, r, None).unwrap(),
        "alice"
    );
    assert_eq!(
        decide(&verify("alice@EXAMPLE.EDU"), None, r, None).unwrap(),
        "alice"
    );
    // the same local part at another institution is somebody else
    let e = decide(&verify("alice@evil.edu"), None, r, None).unwrap_err();
    assert!(e.to_string().contains("evil.edu"), "{e}");
    for (name, why) in [
        ("root@example.edu", "reserved"),
        ("svc@example.edu", "system account"),
        ("nobody2@example.edu", "not an account"),
        ("../x@example.edu", "invalid"),
    ] {
        let e = decide(&verify(name), None, r, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{name}: {e}");
    }
    let mut c = claims();
    c.as_object_mut().unwrap().remove("eppn");
    let no_claim = f.verify(&f.rsa.mint(&c).unwrap()).unwrap();
    assert!(
        decide(&no_claim, None, r, None)
            .unwrap_err()
            .to_string()
            .contains("no string claim eppn")
    );
}

#[test]
fn scopes_and_groups_authorise() {
    let f = fixture();
    let map = TokenMapfile::parse(&format!("\"{ISS}\" /user-[0-9]+/ alice\n")).unwrap();
    let mut c = claims();
    c["wlcg.groups"] = json!(["/hpc/users"]);
    let token = f.verify(&f.rsa.mint(&c).unwrap()).unwrap();
    let mut rules = TokenRules::new(ISS);
    rules.required_scopes = vec![
        Capability::ComputeCreate,
        Capability::parse("storage.read:/home/alice/data"),
    ];
    assert_eq!(
        decide(&token, Some(&map), std::slice::from_ref(&rules), None).unwrap(),
        "alice"
    );
    rules.required_scopes.push(Capability::ComputeCancel);
    let e = decide(&token, Some(&map), std::slice::from_ref(&rules), None).unwrap_err();
    assert!(matches!(e, Refusal::MissingScope { .. }), "{e}");
    rules.required_scopes.clear();
    rules.required_groups = vec!["/hpc/admins".into(), "/hpc/users".into()];
    assert_eq!(
        decide(&token, Some(&map), std::slice::from_ref(&rules), None).unwrap(),
        "alice"
    );
    rules.required_groups = vec!["/hpc/admins".into()];
    assert!(matches!(
        decide(&token, Some(&map), &[rules], None),
        Err(Refusal::NotInGroup { .. })
    ));
}

#[test]
fn an_algorithm_name_starting_with_a_multibyte_character_is_refused_not_a_panic() {
    // fuzz find: the HMAC check sliced `alg` inside a character
    let f = fixture();
    let t = unsigned(&json!({"alg": "Qڢwt"}), &claims(), "AAAA");
    assert_eq!(
        f.verify(&t).unwrap_err(),
        TokenError::UnsupportedAlgorithm("Qڢwt".into())
    );
    let t = unsigned(&json!({"alg": "ڢ"}), &claims(), "AAAA");
    assert!(matches!(
        f.verify(&t),
        Err(TokenError::UnsupportedAlgorithm(_))
    ));
    // the raw fuzz input itself
    assert!(
        hpccert_core::token::jws::parse_compact("eyJhbGciOiAiUdqid3QifQ.7.", 16 * 1024).is_err()
    );
}

/// The engine holds a decision to the restrictions file: refused from an address the rule does
/// not list (naming the rule), accepted from a listed one with the restrictions on the
/// decision, reported but not checked when the address is not known (`explain` without
/// `--from`); an unusable file refuses every login.
#[test]
fn restrictions_refuse_other_sources_and_ride_on_the_decision() {
    use hpccert_core::identity::restriction::{RestrictionError, Restrictions, Source};
    let f = fixture();
    let token = f.verify(&f.rsa.mint(&claims()).unwrap()).unwrap();
    let map = TokenMapfile::parse(&format!("\"{ISS}\" \"user-123\" bob\n")).unwrap();
    let gridmap = GridMapfile::parse("").unwrap();
    let list = Restrictions::parse(&format!(
        "issuer \"{ISS}\" from=10.1.0.0/16 no-pty\naccount bob command=\"/bin/submit\"\n"
    ))
    .map_err(RestrictionError::Syntax);
    let at = |from: Option<&str>| {
        Mapper::new(&gridmap)
            .with_tokens(Some(&map), &[])
            .with_uid_lookup(uid_of)
            .with_restrictions(
                &list,
                from.map_or(Source::NotChecked, |a| Source::Known(a.parse().unwrap())),
            )
            .decide_token(&token, None)
    };
    let e = at(Some("192.0.2.1")).unwrap_err();
    assert!(matches!(e, Refusal::SourceNotAllowed { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("may not log in from 192.0.2.1 (allowed: 10.1.0.0/16; line 1)"),
        "{e}"
    );
    let d = at(Some("10.1.2.3")).unwrap();
    assert_eq!(d.restrictions().command.as_deref(), Some("/bin/submit"));
    assert!(d.restrictions().no_pty);
    assert!(
        d.reasons()
            .iter()
            .any(|r| r.starts_with("restricted: from=10.1.0.0/16 command=")),
        "{:?}",
        d.reasons()
    );
    let d = at(None).unwrap();
    assert!(
        d.reasons().iter().any(|r| r.contains("from= not checked")),
        "{:?}",
        d.reasons()
    );
    let broken = Restrictions::parse("account bob\n").map_err(RestrictionError::Syntax);
    let e = Mapper::new(&gridmap)
        .with_tokens(Some(&map), &[])
        .with_uid_lookup(uid_of)
        .with_restrictions(&broken, Source::NotChecked)
        .decide_token(&token, None)
        .unwrap_err();
    assert!(matches!(e, Refusal::RestrictionsUnusable { .. }), "{e}");
}
