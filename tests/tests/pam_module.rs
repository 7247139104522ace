//! pam_hpccert.so under the real Linux-PAM library, through pam_wrapper (a private service
//! directory, no change to /etc/pam.d), driven by pamtester as a PAM application would be;
//! nss_wrapper supplies the test accounts (no change to /etc/passwd).
//!
//! Tokens are minted here with `hpccert_core::dev::token`; the issuer is not reachable (there
//! is none): the module validates offline with a configured JWKS file (one issuer) and the
//! issuer key cache (another). pamtester answers prompts from stdin, one read per prompt, so
//! the test writes each answer only after it sees the prompt (pamtester prints prompts on
//! stderr), which also checks the exact continuation prompts.
//!
//! Cargo builds the module before this test because the crate is a dev-dependency; the test
//! finds it next to its own binary (`target/<profile>/deps/libpam_hpccert.so`) and copies it
//! to `pam_hpccert.so`, the name it is installed under.
#![allow(clippy::panic)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hpccert_core::dev::token::{DevKey, jwks};
use hpccert_core::token::JwsAlgorithm;
use hpccert_core::token::keys::{CachedKeys, write_cached};
use hpccert_core::token::unix_seconds;
use hpccert_e2e::{built_module, library, peer_available, write_mode};
use serde_json::{Value, json};

const JWKS_ISSUER: &str = "https://jwks.issuer.test";
const CACHE_ISSUER: &str = "https://cache.issuer.test";
const AUD: &str = "https://login.hpc.test";
const PROMPT: &str = "Access token: ";

/// What pamtester did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
    fn succeeded(&self) -> bool {
        self.code == 0
            && self.all().contains("pamtester: successfully authenticated")
            && self.all().contains("pamtester: account management done")
    }
    /// The module's log lines (pam_wrapper prints `pam_syslog` lines as `SYSLOG(priority): `).
    fn log(&self) -> String {
        self.stderr
            .lines()
            .filter(|l| l.contains("SYSLOG("))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

struct Site {
    dir: tempfile::TempDir,
    wrappers: String,
    jwks_key: DevKey,
    cache_key: DevKey,
    /// Held while the test runs (see [`hpccert_e2e::pam_wrapper_serial`]).
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Site {
    fn new() -> Option<Self> {
        if !peer_available("pamtester", "pamtester") {
            return None;
        }
        let pam_wrapper = library("libpam_wrapper.so", "libpam-wrapper")?;
        let nss_wrapper = library("libnss_wrapper.so", "libnss-wrapper")?;
        let pam_deny = [
            "/usr/lib/x86_64-linux-gnu/security",
            "/lib/x86_64-linux-gnu/security",
        ]
        .iter()
        .any(|d| Path::new(d).join("pam_deny.so").is_file());
        assert!(pam_deny, "pam_deny.so not found (libpam-modules)");

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let d = dir.path();
        let module = d.join("pam_hpccert.so");
        std::fs::copy(built_module(), &module).unwrap_or_else(|e| panic!("copy module: {e}"));

        let jwks_key =
            DevKey::generate("rsa-1", JwsAlgorithm::RS256).unwrap_or_else(|e| panic!("{e}"));
        let cache_key =
            DevKey::generate("ec-1", JwsAlgorithm::ES256).unwrap_or_else(|e| panic!("{e}"));
        let jwks_doc = jwks(&[&jwks_key]).unwrap_or_else(|e| panic!("{e}"));
        write_mode(&d.join("jwks.json"), jwks_doc.to_string().as_bytes(), 0o644);
        // the other issuer's keys as `gridmap-tool keys refresh` leaves them
        let cached = CachedKeys {
            issuer: CACHE_ISSUER.into(),
            source: "https://cache.issuer.test/jwks".into(),
            fetched_at: unix_seconds(hpccert_core::clock::now()),
            jwks: jwks(&[&cache_key]).unwrap_or_else(|e| panic!("{e}")),
        };
        write_cached(&d.join("keys"), &cached).unwrap_or_else(|e| panic!("key cache: {e}"));
        write_mode(
            &d.join("token-map"),
            format!("\"{JWKS_ISSUER}\" \"alice-subject\" alice\n").as_bytes(),
            0o644,
        );
        let dd = d.display();
        write_mode(
            &d.join("hpccert.toml"),
            format!(
                "version = 1\n\
                 [tokens]\nkey_cache_dir = \"{dd}/keys\"\n\
                 [mapping]\ntoken_mapfile = \"{dd}/token-map\"\nsuspended_file = \"{dd}/suspended\"\nrestrictions_file = \"{dd}/restrictions\"\n\
                 [[issuer]]\nissuer = \"{JWKS_ISSUER}\"\naudiences = [\"{AUD}\"]\nalgorithms = [\"RS256\"]\njwks_file = \"{dd}/jwks.json\"\n\
                 [[issuer]]\nissuer = \"{CACHE_ISSUER}\"\naudiences = [\"{AUD}\"]\nalgorithms = [\"ES256\"]\nusername_claim = \"preferred_username\"\n"
            )
            .as_bytes(),
            0o644,
        );
        write_mode(
            &d.join("passwd"),
            b"alice:x:1001:1001:Alice:/home/alice:/bin/sh\nbob:x:1002:1002:Bob:/home/bob:/bin/sh\n",
            0o644,
        );
        write_mode(&d.join("group"), b"alice:x:1001:\nbob:x:1002:\n", 0o644);

        let svc = d.join("pam.d");
        std::fs::create_dir(&svc).unwrap_or_else(|e| panic!("{e}"));
        let m = module.display();
        let cfg = format!("config={dd}/hpccert.toml");
        let set_items = pam_wrapper
            .parent()
            .map(|p| p.join("pam_wrapper/pam_set_items.so"))
            .unwrap_or_default();
        let services: Vec<(&str, String)> = vec![
            (
                "hpccert",
                format!("auth required {m} {cfg}\naccount required {m} {cfg}\n"),
            ),
            (
                // pam_exec runs env(1) with the PAM environment; `stdout` shows its output
                "hpccert-env",
                format!(
                    "auth required {m} {cfg}\nauth required pam_exec.so stdout /usr/bin/env\naccount required {m} {cfg}\n"
                ),
            ),
            (
                "hpccert-scope",
                format!(
                    "auth required {m} {cfg} require_scope=storage.read:/data\naccount required {m} {cfg}\n"
                ),
            ),
            (
                "hpccert-first",
                format!(
                    "auth required {} \nauth required {m} {cfg} use_first_pass\naccount required {m} {cfg}\n",
                    set_items.display()
                ),
            ),
            (
                "hpccert-prompt",
                format!(
                    "auth required {m} {cfg} [prompt=Bearer token: ]\naccount required {m} {cfg}\n"
                ),
            ),
            (
                "hpccert-acct-only",
                format!("account required {m} {cfg}\naccount required pam_permit.so\n"),
            ),
            (
                "hpccert-badopt",
                format!("auth required {m} {cfg} no_such_option\n"),
            ),
            (
                "hpccert-noconf",
                format!("auth required {m} config={dd}/missing.toml\n"),
            ),
            (
                "hpccert-ignore",
                format!(
                    "auth sufficient {m} {cfg} ignore_unknown_user\nauth required pam_deny.so\n"
                ),
            ),
            (
                "other",
                "auth required pam_deny.so\naccount required pam_deny.so\n".into(),
            ),
        ];
        for (name, text) in services {
            write_mode(&svc.join(name), text.as_bytes(), 0o644);
        }
        let wrappers = format!("{} {}", pam_wrapper.display(), nss_wrapper.display());
        Some(Self {
            dir,
            wrappers,
            jwks_key,
            cache_key,
            _serial: hpccert_e2e::pam_wrapper_serial(),
        })
    }

    fn claims(&self, sub: &str) -> Value {
        let now = unix_seconds(hpccert_core::clock::now()) as u64;
        json!({
            "iss": JWKS_ISSUER, "sub": sub, "aud": AUD,
            "iat": now - 10, "nbf": now - 10, "exp": now + 900,
            "scope": "openid profile compute.create storage.read:/data",
        })
    }

    /// A token of the JWKS issuer, padded with groups (as real tokens of users in many
    /// projects are) to between `size` and `size + 40` bytes.
    fn token_of_size(&self, claims: Value, size: usize) -> String {
        let mint = |n: usize| {
            let mut c = claims.clone();
            let groups: Vec<String> = (0..n).map(|i| format!("/hpc/project-{i:06}")).collect();
            c["wlcg.groups"] = json!(groups);
            self.jwks_key.mint(&c).unwrap_or_else(|e| panic!("{e}"))
        };
        // each group adds 22 bytes of JSON, 29 to 30 bytes of base64
        let mut n = 0;
        loop {
            let token = mint(n);
            if token.len() >= size {
                return token;
            }
            n += (size - token.len()).div_ceil(30).max(1);
        }
    }

    fn token(&self, change: impl FnOnce(&mut Value)) -> String {
        let mut c = self.claims("alice-subject");
        change(&mut c);
        self.token_of_size(c, 2048)
    }

    /// Run `pamtester -v SERVICE USER OPS...`, answering each expected prompt in turn; stdin
    /// is closed after the last answer.
    fn pamtester(
        &self,
        service: &str,
        user: &str,
        ops: &[&str],
        answers: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Run {
        self.pamtester_items(&[], service, user, ops, answers, env)
    }

    /// The same with PAM items set by pamtester (`-I rhost=ADDR`).
    fn pamtester_items(
        &self,
        items: &[&str],
        service: &str,
        user: &str,
        ops: &[&str],
        answers: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Run {
        let d = self.dir.path();
        let mut cmd = Command::new("pamtester");
        cmd.arg("-v");
        for item in items {
            cmd.arg("-I").arg(item);
        }
        cmd.arg(service)
            .arg(user)
            .args(ops)
            .env("LD_PRELOAD", &self.wrappers)
            .env("PAM_WRAPPER", "1")
            .env("PAM_WRAPPER_SERVICE_DIR", d.join("pam.d"))
            .env("PAM_WRAPPER_DEBUGLEVEL", "2")
            .env("NSS_WRAPPER_PASSWD", d.join("passwd"))
            .env("NSS_WRAPPER_GROUP", d.join("group"))
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run pamtester: {e}"));
        let stderr_buf = Arc::new(Mutex::new(String::new()));
        let reader = {
            let buf = Arc::clone(&stderr_buf);
            let mut pipe = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut b) = buf.lock() {
                        b.push_str(&String::from_utf8_lossy(&chunk[..n]));
                    }
                }
            })
        };
        let out_reader = {
            let mut pipe = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = pipe.read_to_string(&mut s);
                s
            })
        };
        let mut stdin = child.stdin.take();
        let mut seen = 0;
        for (prompt, answer) in answers {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let text = stderr_buf.lock().map(|b| b.clone()).unwrap_or_default();
                if let Some(at) = text[seen..].find(prompt) {
                    seen += at + prompt.len();
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("pamtester never asked {prompt:?}; stderr so far:\n{text}");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if let Some(w) = stdin.as_mut() {
                // one write per answer: pamtester reads each answer with one read(2)
                w.write_all(format!("{answer}\n").as_bytes())
                    .unwrap_or_else(|e| panic!("writing the answer: {e}"));
            }
        }
        drop(stdin);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => {
                    let _ = child.kill();
                    panic!("pamtester did not finish");
                }
            }
        };
        let _ = reader.join();
        let stdout = out_reader.join().unwrap_or_default();
        let stderr = stderr_buf.lock().map(|b| b.clone()).unwrap_or_default();
        Run {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        }
    }

    fn login(&self, user: &str, token: &str) -> Run {
        self.pamtester(
            "hpccert",
            user,
            &["authenticate", "acct_mgmt"],
            &[(PROMPT, token)],
            &[],
        )
    }
}

/// The token must never be logged or echoed: its signature is unique to it.
fn assert_not_leaked(run: &Run, token: &str) {
    if let Some(sig) = token.rsplit('.').next().filter(|s| s.len() > 20) {
        assert!(
            !run.all().contains(sig),
            "the token appears in the output:\n{}",
            run.all()
        );
    }
}

fn assert_refused(run: &Run, pam_message: &str, reason: &str) {
    assert_eq!(run.code, 1, "expected a refusal:\n{}", run.all());
    assert!(
        run.all().contains(pam_message),
        "expected {pam_message:?}:\n{}",
        run.all()
    );
    assert!(
        run.log().contains(reason),
        "expected the reason {reason:?} in the module's log:\n{}",
        run.all()
    );
}

#[test]
fn a_2kb_token_logs_in_the_mapped_user_and_nobody_else() {
    let Some(site) = Site::new() else { return };
    let token = site.token(|_| {});
    assert!((2048..2100).contains(&token.len()), "{}", token.len());

    let run = site.login("alice", &token);
    assert!(run.succeeded(), "{}", run.all());
    let log = run.log();
    assert!(
        log.contains(
            "SYSLOG(6): accepted alice-subject (issuer https://jwks.issuer.test) credential SHA256:"
        ),
        "{log}"
    );
    assert!(log.contains("for user alice"), "{log}");
    assert_not_leaked(&run, &token);

    // the identity in the PAM environment, as the next module (pam_exec) sees it
    let run = site.pamtester(
        "hpccert-env",
        "alice",
        &["authenticate", "acct_mgmt"],
        &[(PROMPT, &token)],
        &[],
    );
    assert!(run.succeeded(), "{}", run.all());
    let out = run.all();
    for line in [
        "HPCCERT_TOKEN_ISSUER=https://jwks.issuer.test\n",
        "HPCCERT_TOKEN_SUBJECT=alice-subject\n",
        "HPCCERT_IDENTITY=alice-subject (issuer https://jwks.issuer.test)\n",
        "HPCCERT_CREDENTIAL=SHA256:",
    ] {
        assert!(out.contains(line), "{line:?} not in\n{out}");
    }
    assert_not_leaked(&run, &token);

    // another existing account: the identity does not map to it
    let run = site.login("bob", &token);
    assert_refused(
        &run,
        "Authentication failure",
        "SYSLOG(5): user bob: account bob is not mapped to alice-subject",
    );
    assert_not_leaked(&run, &token);

    // an account that does not exist
    let run = site.login("nosuchuser", &token);
    assert_refused(
        &run,
        "User not known to the underlying authentication module",
        "user \"nosuchuser\" is not known to the system",
    );
}

#[test]
fn bad_tokens_and_answers_are_refused_with_the_reason() {
    let Some(site) = Site::new() else { return };
    let now = unix_seconds(hpccert_core::clock::now());
    let other_key =
        DevKey::generate("rsa-1", JwsAlgorithm::RS256).unwrap_or_else(|e| panic!("{e}"));
    let forged = other_key
        .mint(&site.claims("alice-subject"))
        .unwrap_or_else(|e| panic!("{e}"));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            site.token(|c| {
                c["iat"] = json!(now - 7200);
                c["nbf"] = json!(now - 7200);
                c["exp"] = json!(now - 3600);
            }),
            "token refused: token expired at",
        ),
        (
            "wrong audience",
            site.token(|c| c["aud"] = json!("https://elsewhere.test")),
            "token refused: wrong audience: token is for https://elsewhere.test",
        ),
        (
            "unknown issuer",
            site.token(|c| c["iss"] = json!("https://rogue.issuer.test")),
            "token refused: unknown issuer \"https://rogue.issuer.test\"",
        ),
        ("forged signature", forged, "token refused: bad signature"),
        (
            "unmapped subject",
            site.token(|c| c["sub"] = json!("mallory")),
            "token of https://jwks.issuer.test subject mallory is not mapped",
        ),
        (
            "garbage",
            "this is not a token".into(),
            "token refused: malformed token",
        ),
        ("empty answer", String::new(), "no token: empty answer"),
    ];
    for (what, answer, reason) in cases {
        let run = site.login("alice", &answer);
        assert_eq!(run.code, 1, "{what}: {}", run.all());
        assert!(
            run.all().contains("Authentication failure"),
            "{what}: {}",
            run.all()
        );
        assert!(
            run.log()
                .contains(&format!("SYSLOG(5): user alice: {reason}")),
            "{what}: expected {reason:?} in\n{}",
            run.all()
        );
        assert!(!run.all().contains("successfully authenticated"), "{what}");
        assert_not_leaked(&run, &answer);
    }

    // a suspended identity: the token is good, the identity may not log in anywhere
    let good = site.token(|_| {});
    write_mode(
        &site.dir.path().join("suspended"),
        format!("token \"{JWKS_ISSUER}\" \"alice-subject\"  # ticket 42\n").as_bytes(),
        0o644,
    );
    let run = site.login("alice", &good);
    assert_refused(&run, "Authentication failure", "is suspended");
    assert!(
        run.log().contains("ticket 42") || run.log().contains("line 1"),
        "{}",
        run.log()
    );
    assert_not_leaked(&run, &good);
    std::fs::remove_file(site.dir.path().join("suspended")).unwrap_or_else(|e| panic!("{e}"));
    assert!(site.login("alice", &good).succeeded());

    // no answer at all (stdin closed: pamtester's conversation returns no response)
    let run = site.pamtester("hpccert", "alice", &["authenticate"], &[], &[]);
    assert_refused(
        &run,
        "Authentication failure",
        "SYSLOG(5): user alice: no token: the application gave no answer",
    );
}

#[test]
fn a_long_token_arrives_in_parts_through_a_1023_byte_client() {
    let Some(site) = Site::new() else { return };
    let token = site.token_of_size(site.claims("alice-subject"), 2900);
    assert!((2900..3000).contains(&token.len()), "{}", token.len());
    // what a user of stock ssh (answers cut at 1023 bytes) types: parts ending in '\'
    let chunks: Vec<&str> = token
        .as_bytes()
        .chunks(1000)
        .map(|c| std::str::from_utf8(c).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert_eq!(chunks.len(), 3);
    let answers: Vec<String> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i + 1 < chunks.len() {
                format!("{c}\\")
            } else {
                (*c).to_string()
            }
        })
        .collect();
    assert!(answers.iter().all(|a| a.len() < 1023));
    let run = site.pamtester(
        "hpccert",
        "alice",
        &["authenticate", "acct_mgmt"],
        &[
            (PROMPT, &answers[0]),
            ("Access token (part 2): ", &answers[1]),
            ("Access token (part 3): ", &answers[2]),
        ],
        &[],
    );
    assert!(run.succeeded(), "{}", run.all());
    assert_not_leaked(&run, &token);

    // a custom prompt names the parts the same way
    let run = site.pamtester(
        "hpccert-prompt",
        "alice",
        &["authenticate"],
        &[
            ("Bearer token: ", &format!("{}\\", &token[..1500])),
            ("Bearer token (part 2): ", &token[1500..]),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.all().contains("successfully authenticated"));
}

#[test]
fn keys_from_the_key_cache_and_claim_mapping() {
    let Some(site) = Site::new() else { return };
    let now = unix_seconds(hpccert_core::clock::now());
    let claims = json!({
        "iss": CACHE_ISSUER, "sub": "8b1e6a3c-0000-4000-8000-000000000001", "aud": AUD,
        "iat": now - 5, "exp": now + 600, "preferred_username": "bob",
    });
    let token = site
        .cache_key
        .mint(&claims)
        .unwrap_or_else(|e| panic!("{e}"));
    let run = site.login("bob", &token);
    assert!(run.succeeded(), "{}", run.all());
    let run = site.login("alice", &token);
    assert_refused(
        &run,
        "Authentication failure",
        "account alice is not mapped",
    );
}

#[test]
fn options_first_pass_scopes_and_unusable_configuration() {
    let Some(site) = Site::new() else { return };
    let token = site.token(|_| {});

    // use_first_pass: PAM_AUTHTOK set by an earlier module (pam_wrapper's pam_set_items.so
    // takes it from the PAM_AUTHTOK environment variable); no prompt
    let run = site.pamtester(
        "hpccert-first",
        "alice",
        &["authenticate", "acct_mgmt"],
        &[],
        &[("PAM_AUTHTOK", &token)],
    );
    assert!(run.succeeded(), "{}", run.all());
    assert!(!run.all().contains(PROMPT));

    // require_scope on the stack line, on top of the issuer's rules
    let no_storage = site.token(|c| c["scope"] = json!("openid compute.create"));
    let run = site.pamtester(
        "hpccert-scope",
        "alice",
        &["authenticate"],
        &[(PROMPT, &no_storage)],
        &[],
    );
    assert_refused(
        &run,
        "Authentication failure",
        "token lacks required scope storage.read:/data",
    );
    let run = site.pamtester(
        "hpccert-scope",
        "alice",
        &["authenticate", "acct_mgmt"],
        &[(PROMPT, &token)],
        &[],
    );
    assert!(run.succeeded(), "{}", run.all());

    // an unknown option: logged, refused, no prompt
    let run = site.pamtester("hpccert-badopt", "alice", &["authenticate"], &[], &[]);
    assert_refused(
        &run,
        "Error in service module",
        "SYSLOG(3): refusing: unknown option \"no_such_option\"",
    );
    assert!(!run.all().contains(PROMPT));

    // an unreadable configuration: PAM_AUTHINFO_UNAVAIL, no prompt
    let run = site.pamtester("hpccert-noconf", "alice", &["authenticate"], &[], &[]);
    assert_refused(
        &run,
        "Authentication service cannot retrieve authentication info",
        "configuration unusable",
    );
    assert!(!run.all().contains(PROMPT));

    // ignore_unknown_user: the module steps aside without a prompt (the next module decides)
    let run = site.pamtester("hpccert-ignore", "nosuchuser", &["authenticate"], &[], &[]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(!run.all().contains(PROMPT), "{}", run.all());
    let run = site.login("alice", &token);
    assert!(run.succeeded(), "{}", run.all());

    // account without an identity from this module: PAM_IGNORE, so the rest of the stack
    // (here pam_permit) decides
    let run = site.pamtester("hpccert-acct-only", "alice", &["acct_mgmt"], &[], &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(run.all().contains("account management done"));
}

#[test]
fn the_module_exports_only_the_pam_entry_points() {
    let Some(_site) = Site::new() else { return };
    if !peer_available("nm", "binutils") {
        return;
    }
    let (code, out, err) = hpccert_e2e::run(
        Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(built_module()),
    );
    assert_eq!(code, 0, "{err}");
    let mut exported: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|s| !s.starts_with('_'))
        .collect();
    exported.sort_unstable();
    assert_eq!(
        exported,
        [
            "pam_sm_acct_mgmt",
            "pam_sm_authenticate",
            "pam_sm_close_session",
            "pam_sm_open_session",
            "pam_sm_setcred"
        ]
    );
}

/// A PAM application that hands over a certificate chain, as sshd-gsi does: Python's ctypes
/// on the real libpam (resolved through the global namespace, so pam_wrapper's preloaded
/// `pam_start` is the one called). It puts the chain's certificates (never a private key) into
/// HPCCERT_X509_CHAIN, runs authenticate then acct_mgmt with a conversation that answers
/// nothing, and prints JSON: both return codes and the DN the module exported.
const HANDOVER_APP: &str = r#"
import ctypes, json, re, sys
service, user, chain_file = sys.argv[1:4]
ctypes.CDLL("libpam.so.0", mode=ctypes.RTLD_GLOBAL)
pam = ctypes.CDLL(None)
CONV = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
class PamConv(ctypes.Structure):
    _fields_ = [("conv", CONV), ("appdata", ctypes.c_void_p)]
nobody = CONV(lambda n, msg, resp, data: 19)  # PAM_CONV_ERR: nobody to ask
conv = PamConv(nobody, None)
h = ctypes.c_void_p()
assert pam.pam_start(service.encode(), user.encode(), ctypes.byref(conv), ctypes.byref(h)) == 0
text = open(chain_file).read()
certs = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", text, re.S)
assert pam.pam_putenv(h, ("HPCCERT_X509_CHAIN=" + "".join(certs)).encode()) == 0
auth = pam.pam_authenticate(h, 0)
account = pam.pam_acct_mgmt(h, 0) if auth == 0 else None
pam.pam_getenv.restype = ctypes.c_char_p
dn = pam.pam_getenv(h, b"HPCCERT_DN")
pam.pam_end(h, auth)
print(json.dumps({"auth": auth, "account": account, "certs": len(certs),
                  "dn": dn.decode() if dn else None}))
"#;

#[test]
fn certificate_chains_handed_over_by_the_application() {
    use hpccert_core::dev::pki::{self, CertSpec, Credential, KeyKind};
    let Some(site) = Site::new() else { return };
    if !peer_available("grid-proxy-init", "globus-proxy-utils") {
        return;
    }
    let d = site.dir.path();
    let now = hpccert_core::clock::now();
    let day = Duration::from_secs(86400);
    let rsa = |mut spec: CertSpec| {
        spec.key = KeyKind::Rsa(2048);
        spec
    };
    let ca = pki::self_signed_ca(&rsa(CertSpec::ca(
        "/DC=org/DC=test/CN=PAM Grid CA",
        now,
        365,
    )
    .unwrap_or_else(|e| panic!("{e}"))))
    .unwrap_or_else(|e| panic!("{e}"));
    let issue = |issuer: &Credential, cn: &str, spec: Option<CertSpec>| {
        let spec = spec.unwrap_or_else(|| {
            CertSpec::user(&format!("/DC=org/DC=test/CN={cn}"), now, 30)
                .unwrap_or_else(|e| panic!("{e}"))
        });
        let cred = pki::issue(issuer, &rsa(spec)).unwrap_or_else(|e| panic!("{e}"));
        let cert = d.join(format!("{cn}.pem"));
        let key = d.join(format!("{cn}.key"));
        write_mode(
            &cert,
            &cred.cert_pem().unwrap_or_else(|e| panic!("{e}")),
            0o644,
        );
        write_mode(
            &key,
            &cred.key_pem_traditional().unwrap_or_else(|e| panic!("{e}")),
            0o400,
        );
        (cred, cert, key)
    };
    let (_, good, good_key) = issue(&ca, "Good", None);
    let (revoked, revoked_pem, _) = issue(&ca, "Revoked", None);
    let (_, unmapped, unmapped_key) = issue(&ca, "Unmapped", None);
    let mut old = CertSpec::user("/DC=org/DC=test/CN=Expired", now - day * 40, 1)
        .unwrap_or_else(|e| panic!("{e}"));
    old.not_before = now - day * 40;
    let (_, expired, _) = issue(&ca, "Expired", Some(old));
    let other_ca = pki::self_signed_ca(&rsa(
        CertSpec::ca("/DC=org/DC=test/CN=Other CA", now, 365).unwrap_or_else(|e| panic!("{e}"))
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let (_, untrusted, _) = issue(&other_ca, "Untrusted", None);
    let crl = pki::crl(
        &ca,
        &[(&revoked.cert, now - day)],
        now - day,
        now + day * 7,
        1,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let certs = d.join("certificates");
    pki::install_ca(&certs, &ca.cert, Some(&crl), None).unwrap_or_else(|e| panic!("{e}"));
    // RFC 3820 proxies as Globus makes them (the proxy file holds its key too: the
    // application hands over only the certificates)
    let proxy = |cert: &Path, key: &Path, out: &str| {
        let out = d.join(out);
        let (code, stdout, stderr) = hpccert_e2e::run(
            Command::new("grid-proxy-init")
                .env("X509_CERT_DIR", &certs)
                .env("X509_USER_PROXY", &out)
                .args(["-rfc", "-q", "-cert"])
                .arg(cert)
                .arg("-key")
                .arg(key)
                .arg("-out")
                .arg(&out)
                .stdin(Stdio::null()),
        );
        assert_eq!(code, 0, "grid-proxy-init: {stdout}{stderr}");
        out
    };
    let good_proxy = proxy(&good, &good_key, "good-proxy");
    let unmapped_proxy = proxy(&unmapped, &unmapped_key, "unmapped-proxy");
    write_mode(
        &d.join("x509-grid-mapfile"),
        b"\"/DC=org/DC=test/CN=Good\" alice\n\"/DC=org/DC=test/CN=Revoked\" alice\n\"/DC=org/DC=test/CN=Expired\" alice\n\"/DC=org/DC=test/CN=Untrusted\" alice\n",
        0o644,
    );
    let dd = d.display();
    write_mode(
        &d.join("x509.toml"),
        format!(
            "version = 1\n[trust]\nca_dir = \"{dd}/certificates\"\ncrl = \"require\"\nnamespaces = \"ignore\"\n\
             [mapping]\ngrid_mapfile = \"{dd}/x509-grid-mapfile\"\nsuspended_file = \"{dd}/suspended\"\n"
        )
        .as_bytes(),
        0o644,
    );
    let module = d.join("pam_hpccert.so");
    let line = format!("{} config={dd}/x509.toml x509", module.display());
    write_mode(
        &d.join("pam.d/hpccert-x509"),
        format!("auth required {line}\naccount required {line}\n").as_bytes(),
        0o644,
    );
    write_mode(
        &d.join("pam.d/hpccert-x509-debug"),
        format!("auth required {line} debug\naccount required {line} debug\n").as_bytes(),
        0o644,
    );
    write_mode(
        &d.join("pam.d/hpccert-x509-off"),
        format!(
            "auth required {m} config={dd}/x509.toml\naccount required {m} config={dd}/x509.toml\n",
            m = module.display()
        )
        .as_bytes(),
        0o644,
    );
    // the application, or under valgrind with `valgrind` options (its exit status then says
    // whether memcheck found errors)
    let run_app = |valgrind: &[&str], service: &str, user: &str, chain: &Path| {
        let mut cmd = match valgrind {
            [] => Command::new("/usr/bin/python3"),
            options => {
                let mut c = Command::new("valgrind");
                c.args(options).arg("/usr/bin/python3");
                c
            }
        };
        cmd.args(["-c", HANDOVER_APP, service, user])
            .arg(chain)
            .env("LD_PRELOAD", &site.wrappers)
            .env("PAM_WRAPPER", "1")
            .env("PAM_WRAPPER_SERVICE_DIR", d.join("pam.d"))
            .env("PAM_WRAPPER_DEBUGLEVEL", "2")
            .env("NSS_WRAPPER_PASSWD", d.join("passwd"))
            .env("NSS_WRAPPER_GROUP", d.join("group"))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("python3: {e}"))
    };
    let app = |service: &str, user: &str, chain: &Path| -> (Value, String) {
        let out = run_app(&[], service, user, chain);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let v = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
        (v, stderr)
    };
    const SUCCESS: i64 = 0;
    const AUTH_ERR: i64 = 7;
    for chain in [&good, &good_proxy] {
        let (r, log) = app("hpccert-x509", "alice", chain);
        assert_eq!(
            r["auth"].as_i64(),
            Some(SUCCESS),
            "{}: {r}\n{log}",
            chain.display()
        );
        assert_eq!(r["account"].as_i64(), Some(SUCCESS), "{r}\n{log}");
        assert_eq!(r["dn"].as_str(), Some("/DC=org/DC=test/CN=Good"), "{r}");
        assert!(
            log.contains("accepted certificate /DC=org/DC=test/CN=Good"),
            "{log}"
        );
    }
    assert_eq!(
        app("hpccert-x509", "alice", &good_proxy).0["certs"].as_i64(),
        Some(2)
    );
    let refusals: [(&str, &Path, &str); 6] = [
        ("bob", &good, "account bob is not mapped"),
        ("alice", &revoked_pem, "revoked"),
        ("alice", &expired, "expired"),
        ("alice", &untrusted, "/DC=org/DC=test/CN=Other CA"),
        ("alice", &unmapped, "/DC=org/DC=test/CN=Unmapped"),
        ("alice", &unmapped_proxy, "/DC=org/DC=test/CN=Unmapped"),
    ];
    for (user, chain, reason) in refusals {
        let (r, log) = app("hpccert-x509", user, chain);
        assert_eq!(
            r["auth"].as_i64(),
            Some(AUTH_ERR),
            "{}: {r}\n{log}",
            chain.display()
        );
        assert_eq!(r["dn"], Value::Null, "{r}");
        let module_log: String = log.lines().filter(|l| l.contains("SYSLOG(")).collect();
        assert!(
            module_log.contains(reason),
            "{}: the log names why ({reason}):\n{module_log}",
            chain.display()
        );
    }
    // without the option the variable proves nothing: the module asks for a token instead,
    // and this application answers nothing
    let (r, log) = app("hpccert-x509-off", "alice", &good);
    assert_ne!(r["auth"].as_i64(), Some(SUCCESS), "{r}\n{log}");
    assert_eq!(r["dn"], Value::Null, "{r}");

    // memcheck over whole transactions (auth, account, pam_end: libpam frees the trust store
    // kept on the handle, then unloads the module): no invalid access, nothing definitely
    // lost (the module is linked -z nodelete, so its statics stay reachable)
    if !peer_available("valgrind", "valgrind") {
        return;
    }
    for (user, chain, auth) in [("alice", &good, SUCCESS), ("alice", &revoked_pem, AUTH_ERR)] {
        let log_file = d.join("valgrind.log");
        let log_arg = format!("--log-file={}", log_file.display());
        let out = run_app(
            &[
                "--quiet",
                "--error-exitcode=99",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite",
                "--show-leak-kinds=definite",
                "--keep-debuginfo=yes",
                &log_arg,
            ],
            "hpccert-x509-debug",
            user,
            chain,
        );
        let memcheck = std::fs::read_to_string(&log_file).unwrap_or_default();
        assert_eq!(out.status.code(), Some(0), "memcheck:\n{memcheck}");
        let r: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        assert_eq!(r["auth"].as_i64(), Some(auth), "{r}");
        if auth == SUCCESS {
            // account used the store auth kept on the handle (then freed it)
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(
                log.contains("trust store: the one loaded earlier in this transaction"),
                "{log}"
            );
        }
    }
}

/// Restrictions per identity in the PAM module: `from=` is checked against PAM_RHOST (an
/// address outside it, a host name or none is refused, with the reason in the log); a rule the
/// module cannot enforce (a forced command) refuses rather than letting the login through.
#[test]
fn restrictions_check_pam_rhost_and_refuse_what_pam_cannot_enforce() {
    let Some(site) = Site::new() else { return };
    let d = site.dir.path();
    let token = site.token(|_| {});
    write_mode(
        &d.join("restrictions"),
        format!("token \"{JWKS_ISSUER}\" \"alice-subject\" from=192.0.2.0/24\n").as_bytes(),
        0o644,
    );
    let login_from = |items: &[&str]| {
        site.pamtester_items(
            items,
            "hpccert",
            "alice",
            &["authenticate", "acct_mgmt"],
            &[(PROMPT, token.as_str())],
            &[],
        )
    };
    let run = login_from(&["rhost=192.0.2.10"]);
    assert!(run.succeeded(), "{}", run.all());
    let run = login_from(&["rhost=198.51.100.1"]);
    assert_refused(
        &run,
        "Authentication failure",
        "may not log in from 198.51.100.1 (allowed: 192.0.2.0/24",
    );
    let run = login_from(&["rhost=client.example.org"]);
    assert_refused(
        &run,
        "Authentication failure",
        "may not log in from an unknown address",
    );
    let run = login_from(&[]);
    assert_refused(
        &run,
        "Authentication failure",
        "may not log in from an unknown address",
    );
    write_mode(
        &d.join("restrictions"),
        format!("token \"{JWKS_ISSUER}\" \"alice-subject\" command=\"/bin/submit\"\n").as_bytes(),
        0o644,
    );
    let run = login_from(&["rhost=192.0.2.10"]);
    assert_refused(
        &run,
        "Authentication failure",
        "are the SSH server's to enforce",
    );
    assert_not_leaked(&run, &token);
}
