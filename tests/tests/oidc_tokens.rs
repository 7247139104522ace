//! A real OpenID provider as a peer: panva's `oidc-provider` (npm, v9) on loopback mints JWT
//! access tokens (RFC 9068) through client credentials and through authorization code + PKCE
//! (driving its development login and consent pages over plain HTTP), with WLCG claims. Our
//! token code validates them through the real key-discovery path (discovery document, then
//! `jwks_uri`, then the on-disk key cache), including key rotation (new `kid`), the issuer
//! going down (last good keys serve) and the staleness limit (keys too old refuse).
//!
//! The provider lives in `tests/oidc` (`npm ci` there installs it; `.ci/run` does) and is
//! started by `hpccert_e2e::oidc::Provider` (shared with `openssh_pam.rs`). Without
//! `node` or `tests/oidc/node_modules` these tests skip, unless `HPCCERT_E2E_REQUIRED=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hpccert_core::clock;
use hpccert_core::token::fetch::{Fetcher, RefreshTiming, RefreshingKeySource};
use hpccert_core::token::keys::{self, FileKeySource};
use hpccert_core::token::{
    Capability, DEFAULT_MAX_TOKEN_BYTES, IssuerPolicy, JwsAlgorithm, KeySource, Profile,
    TokenError, VerifiedToken, verify_token,
};
use hpccert_e2e::oidc::{
    AUDIENCE, CLI_CLIENT, CLI_REDIRECT, Provider, ROBOT, claims, provider_available,
    read_jwks_keys, write_jwks, write_jwks_keys,
};
use hpccert_e2e::{free_port, run, write_mode};

/// The policy a site would configure for this issuer.
fn policy(issuer: &str) -> IssuerPolicy {
    IssuerPolicy {
        algorithms: vec![JwsAlgorithm::RS256],
        profile: Profile::Wlcg,
        require_at_jwt: true,
        max_lifetime: Some(2 * 3600),
        ..IssuerPolicy::new(issuer, &[AUDIENCE])
    }
}

fn verify(
    token: &str,
    policies: &[IssuerPolicy],
    keys: &dyn KeySource,
    now: SystemTime,
) -> Result<VerifiedToken, TokenError> {
    verify_token(token, policies, keys, DEFAULT_MAX_TOKEN_BYTES, now)
}

fn daemon_keys(cache: &Path, timing: RefreshTiming) -> RefreshingKeySource {
    RefreshingKeySource::new(
        FileKeySource::new(cache),
        Fetcher::new(Duration::from_secs(5)).unwrap(),
        timing,
    )
}

fn header_kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let h: serde_json::Value = serde_json::from_slice(&B64URL.decode(header).unwrap()).unwrap();
    assert_eq!(h["typ"], "at+jwt", "{h}");
    h["kid"].as_str().unwrap().to_string()
}

fn assert_wlcg_token(v: &VerifiedToken, issuer: &str, subject: &str, kid: &str) {
    assert_eq!(v.issuer(), issuer);
    assert_eq!(v.subject(), subject);
    assert_eq!(v.audience(), AUDIENCE);
    assert_eq!(v.profile(), Profile::Wlcg);
    assert_eq!(v.alg(), JwsAlgorithm::RS256);
    assert_eq!(v.kid(), Some(kid));
    assert_eq!(
        v.capabilities(),
        [
            Capability::ComputeCreate,
            Capability::StorageRead("/home".into())
        ]
    );
    assert_eq!(v.groups(), ["/hpc", "/hpc/users"]);
    assert_eq!(v.claim_str("wlcg.ver"), Some("1.0"));
    let lifetime = v.expires_at() - v.issued_at().unwrap();
    assert_eq!(lifetime, 3600);
    assert!(v.fingerprint().starts_with("SHA256:"));
}

/// Both grant types, verified through discovery into an empty cache; then what must refuse.
#[test]
fn provider_tokens_verify_through_discovery() {
    if !provider_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks-a.json");
    write_jwks(&jwks, "hpccert-test-a");
    let started = Instant::now();
    let provider = Provider::start(dir.path(), free_port(), &jwks);
    let issuer = provider.issuer();
    eprintln!("provider {issuer} up in {:?}", started.elapsed());

    let robot_token = provider.client_credentials();
    let c = claims(&robot_token);
    assert_eq!(c["client_id"], ROBOT.0, "{c}");
    assert_eq!(c["wlcg.ver"], "1.0", "{c}");
    let user_token = provider.code_flow("alice");
    assert_eq!(claims(&user_token)["client_id"], CLI_CLIENT);

    // the authorization endpoint insists on PKCE for this public client
    let no_pkce = Provider::http()
        .get(
            reqwest::Url::parse_with_params(
                &format!("{issuer}/auth"),
                &[
                    ("client_id", CLI_CLIENT),
                    ("response_type", "code"),
                    ("redirect_uri", CLI_REDIRECT),
                    ("scope", "openid"),
                    ("resource", AUDIENCE),
                ],
            )
            .unwrap(),
        )
        .send()
        .unwrap();
    let location = no_pkce.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        location.starts_with(CLI_REDIRECT) && location.contains("error=invalid_request"),
        "{location}"
    );

    // a daemon's key source: nothing cached, so the first token fetches through discovery
    let cache = dir.path().join("keys");
    let keys = daemon_keys(&cache, RefreshTiming::default());
    let policies = [policy(&issuer)];
    let now = clock::now();
    let v = verify(&robot_token, &policies, &keys, now).unwrap();
    assert_wlcg_token(&v, &issuer, ROBOT.0, "hpccert-test-a");
    assert_eq!(v.claim_str("client_id"), Some(ROBOT.0));
    eprintln!("{}", v.summary());
    let v = verify(&user_token, &policies, &keys, now).unwrap();
    assert_wlcg_token(&v, &issuer, "alice", "hpccert-test-a");
    assert_eq!(v.claim_str("client_id"), Some(CLI_CLIENT));
    eprintln!("{}", v.summary());

    // the keys came from discovery's jwks_uri and sit in the cache, public parts only
    let (cached, set) = keys::read_cached(&cache, &issuer).unwrap();
    assert_eq!(cached.source, format!("{issuer}/jwks"));
    assert!(set.has_kid("hpccert-test-a"));
    let text = std::fs::read_to_string(keys::cache_file(&cache, &issuer)).unwrap();
    assert!(
        !text.contains("\"d\""),
        "private key material in the cache:\n{text}"
    );

    // a files-only reader (the PAM module, gridmap-tool) accepts from that cache
    let files = FileKeySource::new(&cache);
    let v = verify(&user_token, &policies, &files, now).unwrap();
    assert_eq!(v.subject(), "alice");

    // what must refuse
    let mut other_aud = policy(&issuer);
    other_aud.audiences = vec!["https://other.example.org".into()];
    let e = verify(&robot_token, &[other_aud], &keys, now).unwrap_err();
    assert!(
        matches!(&e, TokenError::WrongAudience { found, .. } if found == AUDIENCE),
        "{e}"
    );
    let mut ec_only = policy(&issuer);
    ec_only.algorithms = vec![JwsAlgorithm::ES256];
    let e = verify(&robot_token, &[ec_only], &keys, now).unwrap_err();
    assert_eq!(e, TokenError::AlgorithmNotAllowed("RS256".into()));
    let e = verify(
        &robot_token,
        &[policy("https://elsewhere.example.org")],
        &keys,
        now,
    )
    .unwrap_err();
    assert_eq!(e, TokenError::UnknownIssuer(issuer.clone()));
    let mut scitoken = policy(&issuer);
    scitoken.profile = Profile::Scitoken;
    assert!(verify(&robot_token, &[scitoken], &keys, now).is_ok());
    let mut short = policy(&issuer);
    short.max_lifetime = Some(600);
    let e = verify(&robot_token, &[short], &keys, now).unwrap_err();
    assert!(
        matches!(e, TokenError::LifetimeTooLong { lifetime: 3600, .. }),
        "{e}"
    );
    let later = now + Duration::from_secs(3600 + 120);
    let e = verify(&robot_token, &policies, &files, later).unwrap_err();
    assert!(matches!(e, TokenError::Expired { .. }), "{e}");
    // one signature character changed
    let (head, sig) = robot_token.rsplit_once('.').unwrap();
    let mut sig = sig.as_bytes().to_vec();
    let mid = sig.len() / 2;
    sig[mid] = if sig[mid] == b'A' { b'B' } else { b'A' };
    let forged = format!("{head}.{}", String::from_utf8(sig).unwrap());
    let e = verify(&forged, &policies, &keys, now).unwrap_err();
    assert!(matches!(e, TokenError::BadSignature(_)), "{e}");

    cli_checks(dir.path(), &issuer, &user_token, &robot_token);
    eprintln!("provider test done in {:?}", started.elapsed());
}

/// Key rotation (new kid, old kid retired), the issuer going down, stale keys, no keys.
#[test]
fn key_rotation_and_issuer_outage() {
    if !provider_available() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let jwks_a = dir.path().join("jwks-a.json");
    write_jwks(&jwks_a, "rotation-a");
    let mut provider = Provider::start(dir.path(), port, &jwks_a);
    let issuer = provider.issuer();
    let token_a = provider.client_credentials();
    assert_eq!(header_kid(&token_a), "rotation-a");

    let cache = dir.path().join("keys");
    // no rate limit on kid refetches, so that two rotations in a row are both seen
    let timing = RefreshTiming {
        min_refetch_interval: 0,
        ..RefreshTiming::default()
    };
    let keys = daemon_keys(&cache, timing);
    let policies = [policy(&issuer)];
    let v = verify(&token_a, &policies, &keys, clock::now()).unwrap();
    assert_wlcg_token(&v, &issuer, ROBOT.0, "rotation-a");

    // rotation 1: a new signing key first, the old one still published
    let jwks_b = dir.path().join("jwks-b.json");
    write_jwks(&jwks_b, "rotation-b");
    let mut both = read_jwks_keys(&jwks_b);
    both.extend(read_jwks_keys(&jwks_a));
    write_jwks_keys(&jwks_b, &both);
    provider.stop();
    provider = Provider::start(dir.path(), port, &jwks_b);
    let token_b = provider.client_credentials();
    assert_eq!(header_kid(&token_b), "rotation-b");
    // the cache still holds the old keys only: the unknown kid makes the source refetch
    assert!(
        !keys::read_cached(&cache, &issuer)
            .unwrap()
            .1
            .has_kid("rotation-b")
    );
    let v = verify(&token_b, &policies, &keys, clock::now()).unwrap();
    assert_wlcg_token(&v, &issuer, ROBOT.0, "rotation-b");
    let (_, set) = keys::read_cached(&cache, &issuer).unwrap();
    assert!(set.has_kid("rotation-a") && set.has_kid("rotation-b"));
    // tokens signed before the rotation still verify while their key is published
    assert!(verify(&token_a, &policies, &keys, clock::now()).is_ok());

    // rotation 2: the old key retired
    let jwks_c = dir.path().join("jwks-c.json");
    write_jwks(&jwks_c, "rotation-c");
    provider.stop();
    provider = Provider::start(dir.path(), port, &jwks_c);
    let token_c = provider.client_credentials();
    assert_eq!(header_kid(&token_c), "rotation-c");
    let v = verify(&token_c, &policies, &keys, clock::now()).unwrap();
    assert_wlcg_token(&v, &issuer, ROBOT.0, "rotation-c");
    let (_, set) = keys::read_cached(&cache, &issuer).unwrap();
    assert!(set.has_kid("rotation-c") && !set.has_kid("rotation-a"));
    let e = verify(&token_a, &policies, &keys, clock::now()).unwrap_err();
    assert_eq!(e, TokenError::UnknownKid("rotation-a".into()));

    // a kid the issuer no longer publishes, with the default rate limit (60 s): one refetch,
    // then none within the interval
    let limited = daemon_keys(&cache, RefreshTiming::default());
    let fetched_at = || keys::read_cached(&cache, &issuer).unwrap().0.fetched_at;
    let t0 = clock::now() + Duration::from_secs(10);
    let e = verify(&token_a, &policies, &limited, t0).unwrap_err();
    assert_eq!(e, TokenError::UnknownKid("rotation-a".into()));
    let refetched = fetched_at();
    assert_eq!(refetched, hpccert_core::token::unix_seconds(t0));
    let e = verify(&token_a, &policies, &limited, t0 + Duration::from_secs(30)).unwrap_err();
    assert_eq!(e, TokenError::UnknownKid("rotation-a".into()));
    assert_eq!(
        fetched_at(),
        refetched,
        "refetched within min_refetch_interval"
    );

    // the issuer goes down
    provider.stop();
    let now = clock::now();
    // a restarted daemon (fresh state, same cache) whose keys are due for a refresh: the
    // fetch fails, the last good keys still serve
    let restarted = daemon_keys(
        &cache,
        RefreshTiming {
            refresh_after: 60,
            ..RefreshTiming::default()
        },
    );
    let in_two_minutes = now + Duration::from_secs(120);
    let v = verify(&token_c, &policies, &restarted, in_two_minutes).unwrap();
    assert_eq!(v.kid(), Some("rotation-c"));
    let err = restarted
        .last_error(&issuer)
        .expect("a refresh was attempted");
    assert!(err.contains(&issuer), "{err}");
    // files-only readers do not care that the issuer is down
    assert!(verify(&token_c, &policies, &FileKeySource::new(&cache), now).is_ok());

    // past the staleness limit the cached keys no longer serve, though the token is valid
    let mut strict = policy(&issuer);
    strict.max_key_age = 600;
    let in_twenty_minutes = now + Duration::from_secs(1200);
    let e = verify(&token_c, &[strict.clone()], &restarted, in_twenty_minutes).unwrap_err();
    let expected_age = hpccert_core::token::unix_seconds(in_twenty_minutes) - fetched_at();
    assert!(expected_age > 600);
    assert_eq!(
        e,
        TokenError::StaleKeys {
            issuer: issuer.clone(),
            age: expected_age,
            limit: 600
        }
    );
    let e = verify(
        &token_c,
        &[strict],
        &FileKeySource::new(&cache),
        in_twenty_minutes,
    )
    .unwrap_err();
    assert!(matches!(e, TokenError::StaleKeys { .. }), "{e}");
    // with the default limit (7 days) the same keys still serve at that time
    assert!(verify(&token_c, &policies, &restarted, in_twenty_minutes).is_ok());

    // an issuer that is down and was never cached: no keys at all
    let empty = dir.path().join("empty-cache");
    let cold = daemon_keys(&empty, RefreshTiming::default());
    let e = verify(&token_c, &policies, &cold, now).unwrap_err();
    match &e {
        TokenError::NoKeys { issuer: i, reason } => {
            assert_eq!(i, &issuer);
            assert!(
                reason.contains("/.well-known/openid-configuration"),
                "{reason}"
            );
        }
        other => panic!("expected NoKeys, got {other}"),
    }
    assert!(!keys::cache_file(&empty, &issuer).exists());

    // the administrator's view of the same outage
    if let Some(cli) = Cli::new(dir.path(), &issuer, &cache, "max_key_age = 600\n") {
        let (code, out, err) = cli.run(&["keys", "refresh"]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            format!("{out}{err}").contains("FAILED")
                && format!("{out}{err}").contains("keeping the cached keys"),
            "{out}{err}"
        );
        let token = cli.token_file("c.jwt", &token_c);
        let (code, v) = cli.explain_json(&token, &[]);
        assert_eq!((code, v["decision"].as_str()), (0, Some("accept")), "{v}");
        assert_eq!(v["account"], "robot", "{v}");
        let at = rfc3339(in_twenty_minutes);
        let (code, v) = cli.explain_json(&token, &["--at", &at]);
        assert_eq!((code, v["decision"].as_str()), (1, Some("refuse")), "{v}");
        assert!(v["reasons"].to_string().contains("stale"), "{v}");
    }
    eprintln!("rotation test done in {:?}", started.elapsed());
}

/// `gridmap-tool keys refresh` and `explain --token` against the live provider.
fn cli_checks(dir: &Path, issuer: &str, user_token: &str, robot_token: &str) {
    let cache = dir.join("cli-keys");
    let Some(cli) = Cli::new(dir, issuer, &cache, "") else {
        return;
    };
    let user = cli.token_file("user.jwt", user_token);
    let robot = cli.token_file("robot.jwt", robot_token);
    // nothing cached: the tool never fetches while explaining
    let (code, v) = cli.explain_json(&user, &[]);
    assert_eq!((code, v["decision"].as_str()), (1, Some("refuse")), "{v}");
    assert!(v["reasons"].to_string().contains("no cached keys"), "{v}");

    let (code, out, err) = cli.run(&["keys", "refresh"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "OK {issuer}: 1 key(s) [hpccert-test-a] from {issuer}/jwks"
        )),
        "{out}{err}"
    );
    let (code, v) = cli.explain_json(&user, &[]);
    assert_eq!((code, v["decision"].as_str()), (0, Some("accept")), "{v}");
    assert_eq!(v["account"], "alice", "{v}");
    assert_eq!(
        v["capabilities"],
        serde_json::json!(["compute.create", "storage.read:/home"]),
        "{v}"
    );
    let (code, out, err) = cli.run(&["explain", "--token", &robot]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!("ACCEPT hpc-robot (issuer {issuer}) -> robot")),
        "{out}{err}"
    );
    // the same token for a site that wants another group
    let strict = Cli::new(
        &dir.join("strict"),
        issuer,
        &cache,
        "required_groups = [\"/hpc/admins\"]\n",
    )
    .unwrap();
    let (code, v) = strict.explain_json(&user, &[]);
    assert_eq!((code, v["decision"].as_str()), (1, Some("refuse")), "{v}");
}

/// Our own CLI, from the build this test belongs to (`cargo test --workspace` builds it;
/// `cargo build -p gridmap-tool` otherwise).
fn gridmap_tool() -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let tool = exe.parent()?.parent()?.join("gridmap-tool");
    if tool.is_file() {
        eprintln!("gridmap-tool checks with {}", tool.display());
        // `cargo test -p hpccert-e2e` alone does not rebuild it
        let built = std::fs::metadata(&tool).and_then(|m| m.modified()).ok();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let newest = ["gridmap-tool/src", "hpccert-core/src"]
            .iter()
            .filter_map(|d| newest_mtime(&root.join(d)))
            .max();
        if let (Some(built), Some(newest)) = (built, newest)
            && newest > built
        {
            eprintln!(
                "WARNING: {} is older than its sources (cargo build -p gridmap-tool)",
                tool.display()
            );
        }
        return Some(tool);
    }
    let msg = format!("{} not built (cargo build -p gridmap-tool)", tool.display());
    let required = std::env::var("HPCCERT_E2E_REQUIRED").is_ok_and(|v| v == "1");
    assert!(!required, "{msg}, and HPCCERT_E2E_REQUIRED=1");
    eprintln!("SKIPPED (gridmap-tool checks): {msg}");
    None
}

/// gridmap-tool with a site config naming the provider as a WLCG issuer.
struct Cli {
    tool: PathBuf,
    dir: PathBuf,
    config: PathBuf,
}

impl Cli {
    fn new(dir: &Path, issuer: &str, cache: &Path, extra: &str) -> Option<Self> {
        let tool = gridmap_tool()?;
        std::fs::create_dir_all(dir).unwrap();
        let grid_mapfile = dir.join("grid-mapfile");
        let token_mapfile = dir.join("token-mapfile");
        std::fs::write(&grid_mapfile, "").unwrap();
        std::fs::write(
            &token_mapfile,
            format!("\"{issuer}\" \"alice\" alice\n\"{issuer}\" \"hpc-robot\" robot\n"),
        )
        .unwrap();
        let config = dir.join("hpccert.toml");
        std::fs::write(
            &config,
            format!(
                "version = 1\n[tokens]\nkey_cache_dir = \"{}\"\n\
                 [mapping]\ngrid_mapfile = \"{}\"\ntoken_mapfile = \"{}\"\n\
                 [[issuer]]\nissuer = \"{issuer}\"\naudiences = [\"{AUDIENCE}\"]\n\
                 algorithms = [\"RS256\"]\nprofile = \"wlcg\"\nrequire_at_jwt = true\n{extra}",
                cache.display(),
                grid_mapfile.display(),
                token_mapfile.display(),
            ),
        )
        .unwrap();
        Some(Self {
            tool,
            dir: dir.to_path_buf(),
            config,
        })
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        run(Command::new(&self.tool)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null()))
    }

    fn token_file(&self, name: &str, token: &str) -> String {
        let path = self.dir.join(name);
        write_mode(&path, token.as_bytes(), 0o600);
        path.display().to_string()
    }

    /// `explain --token FILE --json`: exit code and the parsed answer.
    fn explain_json(&self, token_file: &str, extra: &[&str]) -> (i32, serde_json::Value) {
        let mut args = vec!["explain", "--token", token_file, "--json"];
        args.extend_from_slice(extra);
        let (code, out, err) = self.run(&args);
        let v = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("explain --json printed no JSON ({e}):\n{out}{err}"));
        (code, v)
    }
}

/// The newest modification time of the files under `dir`.
fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            if meta.is_dir() {
                newest_mtime(&e.path())
            } else {
                meta.modified().ok()
            }
        })
        .max()
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(hpccert_core::token::unix_seconds(t))
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}
