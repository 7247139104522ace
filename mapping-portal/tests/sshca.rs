//! The SSH CA of the portal (`[portal.ssh_ca]`, `POST /ssh/v1/certificate`): a bearer token
//! of a configured issuer, mapped over the portal's own links as a node would map it, becomes
//! an OpenSSH certificate that `ssh-keygen -L` reads with the principals, validity, key id,
//! serial and extensions of the policy; every refusal says why, is audited, and records
//! nothing as issued.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use hpccert_core::config::Config;
use hpccert_core::dev::token::{DevKey, jwks};
use hpccert_core::identity::gridmap::AccountName;
use hpccert_core::token::{JwsAlgorithm, unix_seconds};
use mapping_portal::model::{
    Actor, Approval, Change, IdentityKey, IdentityProfile, SuspensionTarget,
};
use mapping_portal::sshca::CertificateAuthority;
use mapping_portal::store::Store;
use mapping_portal::{ExportToken, Portal, PortalSettings};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ISS: &str = "https://issuer.sshca.example";
const AUD: &str = "https://portal.sshca.example";
const SUB: &str = "http://cilogon.org/serverA/users/4242";
const STRANGER: &str = "http://cilogon.org/serverA/users/9999";

fn keygen(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-C", name])
        .args(args)
        .arg("-f")
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success());
    path
}

fn public(path: &Path) -> String {
    std::fs::read_to_string(path.with_extension("pub")).unwrap()
}

struct Site {
    dir: tempfile::TempDir,
    /// The grid CA `[trust]` trusts (for the X.509 proof).
    grid_ca: hpccert_core::dev::pki::Credential,
    settings: hpccert_core::config::PortalSshCaConfig,
    config: Config,
    base: String,
    portal: Arc<Portal>,
    issuer: DevKey,
    other_issuer: DevKey,
}

impl Site {
    fn token(&self, sub: &str, aud: &str, exp_in: i64) -> String {
        let t = unix_seconds(hpccert_core::clock::now());
        self.issuer
            .mint(
                &json!({"iss": ISS, "sub": sub, "aud": aud, "iat": t, "nbf": t, "exp": t + exp_in,
                          "scope": "openid compute.create", "wlcg.ver": "1.0"}),
            )
            .unwrap()
    }

    async fn request(&self, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut r = reqwest::Client::new()
            .post(format!("{}/ssh/v1/certificate", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        let status = r.status();
        (
            status,
            serde_json::from_str(&r.text().await.unwrap()).unwrap(),
        )
    }

    async fn challenge(&self) -> String {
        let r = reqwest::Client::new()
            .post(format!("{}/ssh/v1/challenge", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        let expires = v["expires"].as_u64().unwrap();
        let now = unix_seconds(hpccert_core::clock::now()) as u64;
        assert!((now + 295..=now + 305).contains(&expires), "{v}");
        v["challenge"].as_str().unwrap().to_string()
    }

    async fn issued(&self) -> usize {
        self.portal.store().certificates().await.unwrap().len()
    }
}

async fn site(per_identity: usize) -> Option<Site> {
    if Command::new("ssh-keygen").arg("-?").output().is_err() {
        hpccert_e2e_skip("ssh-keygen not found (openssh-client)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // the CA key, named by key_file below
    keygen(d, "ca", &["-t", "ed25519"]);
    let now = hpccert_core::clock::now();
    let grid_ca = hpccert_core::dev::pki::self_signed_ca(
        &hpccert_core::dev::pki::CertSpec::ca("/DC=org/DC=example/CN=Grid CA", now, 1).unwrap(),
    )
    .unwrap();
    std::fs::create_dir(d.join("trust")).unwrap();
    hpccert_core::dev::pki::install_ca(&d.join("trust"), &grid_ca.cert, None, None).unwrap();
    let issuer = DevKey::generate("sshca-1", JwsAlgorithm::RS256).unwrap();
    let other_issuer = DevKey::generate("other-1", JwsAlgorithm::RS256).unwrap();
    std::fs::write(d.join("jwks.json"), jwks(&[&issuer]).unwrap().to_string()).unwrap();
    std::fs::create_dir(d.join("keys")).unwrap();
    let text = format!(
        "version = 1\n[trust]\nca_dir = \"{0}/trust\"\n[mapping]\nrestrictions_file = \"{0}/restrictions\"\n[tokens]\nkey_cache_dir = \"{0}/keys\"\n\
         [portal]\n[portal.ssh_ca]\nkey_file = \"{0}/ca\"\nmax_validity = 7200\npermit_x11_forwarding = false\n\
         per_identity_per_hour = {per_identity}\nsite_name = \"Test HPC\"\nclient_id = \"hpccert-cli\"\naudience = \"{AUD}\"\n\
         login_hosts = [\"login.test.example:22\", \"login.test.example:2222\"]\n\
         [[issuer]]\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\nalgorithms = [\"RS256\"]\njwks_file = \"{0}/jwks.json\"\n",
        d.display()
    );
    let config = Config::parse(&text, Path::new("portal.toml")).unwrap();
    let store = Store::open(&common::sqlite_url(d), hpccert_core::clock::now())
        .await
        .unwrap();
    let settings = config.portal.as_ref().unwrap().ssh_ca.clone().unwrap();
    let key = CertificateAuthority::load_ca(&settings).unwrap();
    let portal = Portal::start(
        store,
        PortalSettings {
            ssh_ca_keys: key.public_set(),
            url: "https://portal.test.example".into(),
            export_tokens: vec![ExportToken::new(&"e".repeat(40)).unwrap()],
            export_client_dns: vec![],
            export_dir: None,
        },
    )
    .await
    .unwrap();
    let admin = Actor {
        name: "admin".into(),
        from_addr: None,
    };
    for account in ["jdoe", "jdoe-gw"] {
        portal
            .change(
                &admin,
                &Change::Link {
                    identity: IdentityKey::token(ISS, SUB).unwrap(),
                    profile: IdentityProfile::default(),
                    account: AccountName::parse(account).unwrap(),
                    approval: Approval::Immediate,
                },
                hpccert_core::clock::now(),
            )
            .await
            .unwrap();
    }
    let ca = CertificateAuthority::new(
        key,
        &settings,
        &config,
        Arc::clone(&portal),
        "https://portal.test.example",
        Some(ISS.into()),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = mapping_portal::sshca::router(Arc::new(ca));
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap()
    });
    Some(Site {
        dir,
        grid_ca,
        settings,
        config,
        base,
        portal,
        issuer,
        other_issuer,
    })
}

fn hpccert_e2e_skip(why: &str) {
    assert!(
        std::env::var("HPCCERT_E2E_REQUIRED").as_deref() != Ok("1"),
        "required peer missing: {why}"
    );
    eprintln!("SKIPPED: {why}");
}

#[tokio::test]
async fn a_linked_token_gets_a_certificate_that_ssh_keygen_reads_as_the_policy_says() {
    let Some(s) = site(30).await else { return };
    let user = keygen(s.dir.path(), "id_ed25519", &["-t", "ed25519"]);
    // valid longer than max_validity: the policy's 2 hours bound the certificate
    let token = s.token(SUB, AUD, 3 * 3600);
    let (status, body) = s
        .request(
            Some(&token),
            &json!({"public_key": public(&user), "principals": ["jdoe", "jdoe-gw"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["principals"], json!(["jdoe", "jdoe-gw"]));
    let cert = s.dir.path().join("id_ed25519-cert.pub");
    std::fs::write(&cert, body["certificate"].as_str().unwrap()).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(&cert)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let serial = body["serial"].as_u64().unwrap();
    assert!(text.contains(&format!("Serial: {serial}")), "{text}");
    assert!(
        text.contains(SUB) && text.contains(&format!("serial {serial}")),
        "{text}"
    );
    assert!(
        text.contains("jdoe\n") && text.contains("jdoe-gw\n"),
        "{text}"
    );
    assert!(
        text.contains("permit-pty") && !text.contains("permit-X11-forwarding"),
        "{text}"
    );
    // max_validity 2 h (plus the minute before now)
    let (after, before) = (
        body["valid_after"].as_u64().unwrap(),
        body["valid_before"].as_u64().unwrap(),
    );
    assert_eq!(before - after, 7200 + 60);
    // recorded, with the identity, accounts, key, source and proof; audited
    let certs = s.portal.store().certificates().await.unwrap();
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].serial, serial);
    assert_eq!(certs[0].identity, IdentityKey::token(ISS, SUB).unwrap());
    assert_eq!(certs[0].accounts, vec!["jdoe", "jdoe-gw"]);
    assert_eq!(certs[0].source_addr.as_deref(), Some("127.0.0.1"));
    assert!(certs[0].key_fingerprint.starts_with("SHA256:"));
    let audit = s.portal.store().audit(10).await.unwrap();
    assert!(
        audit.iter().any(|a| a.action == "issue-ssh-certificate"),
        "{audit:?}"
    );

    // no principals asked: the engine's pick (the first account); a token that ends before
    // max_validity: the certificate ends with it
    let short = s.token(SUB, AUD, 600);
    let (status, body) = s
        .request(Some(&short), &json!({"public_key": public(&user)}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["principals"], json!(["jdoe"]));
    let exp = unix_seconds(hpccert_core::clock::now()) as u64 + 600;
    assert!(body["valid_before"].as_u64().unwrap() <= exp, "{body}");

    // discovery
    let text = reqwest::get(format!("{}/.well-known/hpccert", s.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let d: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(d["site"], "Test HPC");
    assert_eq!(d["oidc"]["issuer"], ISS);
    assert_eq!(d["oidc"]["client_id"], "hpccert-cli");
    assert_eq!(d["max_validity"], 7200);
    assert!(
        d["ssh_ca_keys"][0]
            .as_str()
            .unwrap()
            .starts_with("ssh-ed25519 ")
    );
    assert_eq!(d["login_hosts"][1], "login.test.example:2222");
}

#[tokio::test]
async fn refusals_say_why_are_audited_and_record_nothing() {
    let Some(s) = site(30).await else { return };
    let d = s.dir.path();
    let ed = public(&keygen(d, "ed", &["-t", "ed25519"]));
    let good = s.token(SUB, AUD, 3600);
    let t = unix_seconds(hpccert_core::clock::now());
    let cases: Vec<(&str, Option<String>, Value, StatusCode, &str)> = vec![
        ("no token", None, json!({"public_key": ed}), StatusCode::UNAUTHORIZED, "no credential"),
        ("other audience", Some(s.token(SUB, "https://elsewhere.example", 3600)), json!({"public_key": ed}), StatusCode::UNAUTHORIZED, "aud"),
        ("expired", Some(s.token(SUB, AUD, -120)), json!({"public_key": ed}), StatusCode::UNAUTHORIZED, "expired"),
        ("unknown issuer", Some(s.other_issuer.mint(&json!({"iss": "https://rogue.example", "sub": SUB, "aud": AUD, "iat": t, "exp": t + 600})).unwrap()), json!({"public_key": ed}), StatusCode::UNAUTHORIZED, "rogue.example"),
        ("unlinked identity", Some(s.token(STRANGER, AUD, 3600)), json!({"public_key": ed}), StatusCode::FORBIDDEN, "users/9999"),
        ("principal not allowed", Some(good.clone()), json!({"public_key": ed, "principals": ["root"]}), StatusCode::FORBIDDEN, "root"),
        ("weak key", Some(good.clone()), json!({"public_key": public(&keygen(d, "rsa2048", &["-t", "rsa", "-b", "2048"]))}), StatusCode::BAD_REQUEST, "2048 bits"),
        ("disallowed key", Some(good.clone()), json!({"public_key": public(&keygen(d, "p521", &["-t", "ecdsa", "-b", "521"]))}), StatusCode::BAD_REQUEST, "not allowed"),
        ("malformed key", Some(good.clone()), json!({"public_key": "ssh-ed25519 AAAA!!!"}), StatusCode::BAD_REQUEST, "not an OpenSSH public key"),
        ("unknown field", Some(good.clone()), json!({"public_key": ed, "valid_for": "10y"}), StatusCode::BAD_REQUEST, "valid_for"),
    ];
    for (what, token, body, status, needle) in cases {
        let (got, answer) = s.request(token.as_deref(), &body).await;
        assert_eq!(got, status, "{what}: {answer}");
        let reason = answer["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(needle), "{what}: {answer}");
    }
    assert_eq!(s.issued().await, 0, "a refusal recorded a certificate");
    let audit = s.portal.store().audit(50).await.unwrap();
    assert!(
        audit
            .iter()
            .filter(|a| a.action == "refuse-ssh-certificate")
            .count()
            >= 10,
        "{audit:?}"
    );

    // suspended identity, then suspended account
    let admin = Actor {
        name: "admin".into(),
        from_addr: None,
    };
    for target in [
        SuspensionTarget::Identity(IdentityKey::token(ISS, SUB).unwrap()),
        SuspensionTarget::Account(AccountName::parse("jdoe").unwrap()),
    ] {
        s.portal
            .change(
                &admin,
                &Change::Suspend {
                    target: target.clone(),
                    reason: "lost laptop".into(),
                },
                hpccert_core::clock::now(),
            )
            .await
            .unwrap();
        let (got, answer) = s
            .request(
                Some(&good),
                &json!({"public_key": ed, "principals": ["jdoe"]}),
            )
            .await;
        assert_eq!(got, StatusCode::FORBIDDEN, "{answer}");
        assert!(
            answer["reason"].as_str().unwrap().contains("suspended"),
            "{answer}"
        );
        s.portal
            .change(
                &admin,
                &Change::Unsuspend { target },
                hpccert_core::clock::now(),
            )
            .await
            .unwrap();
    }
    assert_eq!(s.issued().await, 0);
    let (got, answer) = s
        .request(
            Some(&good),
            &json!({"public_key": ed, "principals": ["jdoe"]}),
        )
        .await;
    assert_eq!(got, StatusCode::OK, "{answer}");
}

/// Suspending the identity revokes its certificates: the next bundle (format version 2) carries
/// the CA keys and a KRL that `ssh-keygen -Q` reads as revoking the certificate; an admin's
/// revoke of one serial does the same.
#[tokio::test]
async fn a_suspension_revokes_issued_certificates_into_the_bundles_krl() {
    use base64::Engine as _;
    let Some(s) = site(30).await else { return };
    let d = s.dir.path();
    let user = keygen(d, "id_ed25519", &["-t", "ed25519"]);
    let good = s.token(SUB, AUD, 3600);
    let mut certs = Vec::new();
    for name in ["a", "b"] {
        let (status, body) = s
            .request(Some(&good), &json!({"public_key": public(&user)}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let path = d.join(format!("cert-{name}.pub"));
        std::fs::write(&path, body["certificate"].as_str().unwrap()).unwrap();
        certs.push((path, body["serial"].as_u64().unwrap()));
    }
    let bundle = |s: &Site| -> Value { serde_json::from_slice(&s.portal.current().body).unwrap() };
    let query = |b: &Value, cert: &Path| -> bool {
        let krl = base64::engine::general_purpose::STANDARD
            .decode(b["files"]["ssh-krl"].as_str().unwrap())
            .unwrap();
        let path = d.join("krl");
        std::fs::write(&path, krl).unwrap();
        let out = Command::new("ssh-keygen")
            .arg("-Q")
            .arg("-f")
            .arg(&path)
            .arg(cert)
            .output()
            .unwrap();
        !out.status.success() && String::from_utf8_lossy(&out.stdout).contains("REVOKED")
    };
    let b = bundle(&s);
    assert_eq!(b["version"], 2, "{b}");
    assert!(
        b["files"]["ssh-ca-keys"]
            .as_str()
            .unwrap()
            .starts_with("ssh-ed25519 ")
    );
    assert!(!query(&b, &certs[0].0) && !query(&b, &certs[1].0));

    // an admin revokes the first one
    let admin = Actor {
        name: "admin".into(),
        from_addr: None,
    };
    s.portal
        .change(
            &admin,
            &Change::RevokeCertificate {
                serial: certs[0].1,
                reason: "key lost".into(),
            },
            hpccert_core::clock::now(),
        )
        .await
        .unwrap();
    let b = bundle(&s);
    assert!(query(&b, &certs[0].0) && !query(&b, &certs[1].0));
    // revoking it again, or an unknown serial: refused
    assert!(
        s.portal
            .change(
                &admin,
                &Change::RevokeCertificate {
                    serial: certs[0].1,
                    reason: "x".into()
                },
                hpccert_core::clock::now()
            )
            .await
            .is_err()
    );

    // suspending the identity revokes the other
    s.portal
        .change(
            &admin,
            &Change::Suspend {
                target: SuspensionTarget::Identity(IdentityKey::token(ISS, SUB).unwrap()),
                reason: "compromised".into(),
            },
            hpccert_core::clock::now(),
        )
        .await
        .unwrap();
    let b = bundle(&s);
    assert!(query(&b, &certs[0].0) && query(&b, &certs[1].0));
    let recorded = s.portal.store().certificates().await.unwrap();
    assert!(
        recorded.iter().all(|c| c.revoked_at.is_some()),
        "{recorded:?}"
    );
    assert!(recorded.iter().any(|c| {
        c.revoked_reason
            .as_deref()
            .unwrap_or("")
            .contains("compromised")
    }));
}

/// The portal's own session as the proof (the "SSH certificate" page): the accounts the token
/// map gives the identity, without suspended ones; nothing for an unlinked or suspended
/// identity, or for an account that is not theirs.
#[tokio::test]
async fn a_portal_session_gets_a_certificate_for_its_linked_accounts_only() {
    let Some(s) = site(30).await else { return };
    let ed = public(&keygen(s.dir.path(), "ed", &["-t", "ed25519"]));
    let ca = CertificateAuthority::new(
        CertificateAuthority::load_ca(&s.settings).unwrap(),
        &s.settings,
        &s.config,
        Arc::clone(&s.portal),
        "https://portal.test.example",
        None,
    )
    .unwrap();
    let at = "127.0.0.1".parse().unwrap();
    let now = hpccert_core::clock::now();
    let cert = ca
        .issue_for_session(ISS, SUB, &ed, &[], at, now)
        .await
        .unwrap();
    assert_eq!(cert.principals, vec!["jdoe", "jdoe-gw"]);
    let certs = s.portal.store().certificates().await.unwrap();
    assert_eq!(
        certs[0].proof,
        mapping_portal::model::CertificateProof::PortalSession
    );
    let only = ca
        .issue_for_session(ISS, SUB, &ed, &["jdoe-gw".into()], at, now)
        .await
        .unwrap();
    assert_eq!(only.principals, vec!["jdoe-gw"]);
    let e = ca
        .issue_for_session(ISS, SUB, &ed, &["root".into()], at, now)
        .await
        .unwrap_err();
    assert!(e.contains("root is not one of yours"), "{e}");
    let e = ca
        .issue_for_session(ISS, STRANGER, &ed, &[], at, now)
        .await
        .unwrap_err();
    assert!(e.contains("no account is linked"), "{e}");
    let admin = Actor {
        name: "admin".into(),
        from_addr: None,
    };
    s.portal
        .change(
            &admin,
            &Change::Suspend {
                target: SuspensionTarget::Account(AccountName::parse("jdoe").unwrap()),
                reason: "x".into(),
            },
            now,
        )
        .await
        .unwrap();
    let left = ca
        .issue_for_session(ISS, SUB, &ed, &[], at, now)
        .await
        .unwrap();
    assert_eq!(left.principals, vec!["jdoe-gw"]);
    s.portal
        .change(
            &admin,
            &Change::Suspend {
                target: SuspensionTarget::Identity(IdentityKey::token(ISS, SUB).unwrap()),
                reason: "y".into(),
            },
            now,
        )
        .await
        .unwrap();
    let e = ca
        .issue_for_session(ISS, SUB, &ed, &[], at, now)
        .await
        .unwrap_err();
    assert!(e.contains("suspended"), "{e}");
    assert_eq!(s.issued().await, 3);
}

#[tokio::test]
async fn too_many_requests_for_one_identity_are_refused_with_429() {
    let Some(s) = site(2).await else { return };
    let ed = public(&keygen(s.dir.path(), "ed", &["-t", "ed25519"]));
    let good = s.token(SUB, AUD, 3600);
    for _ in 0..2 {
        let (got, answer) = s.request(Some(&good), &json!({"public_key": ed})).await;
        assert_eq!(got, StatusCode::OK, "{answer}");
    }
    let (got, answer) = s.request(Some(&good), &json!({"public_key": ed})).await;
    assert_eq!(got, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(answer["error"], "rate_limited");
    assert_eq!(s.issued().await, 2);
}

#[test]
fn a_ca_key_that_others_can_read_stops_the_portal_from_starting() {
    if Command::new("ssh-keygen").arg("-?").output().is_err() {
        hpccert_e2e_skip("ssh-keygen not found (openssh-client)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = keygen(d, "ca", &["-t", "ed25519"]);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = d.join("portal.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[portal]\ndatabase = \"sqlite://{0}/p.db?mode=rwc\"\nlisten = \"127.0.0.1:0\"\n\
             export_tokens = [\"{1}\"]\n[portal.ssh_ca]\nkey_file = \"{0}/ca\"\n",
            d.display(),
            "x".repeat(40)
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mapping-portal"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the SSH CA cannot start") && err.contains("mode 0644"),
        "{err}"
    );
}

fn sign(key: &openssl::pkey::PKey<openssl::pkey::Private>, text: &str) -> String {
    use base64::Engine as _;
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), key).unwrap();
    base64::engine::general_purpose::STANDARD
        .encode(signer.sign_oneshot_to_vec(text.as_bytes()).unwrap())
}

/// A gateway holding an RFC 3820 proxy of a linked DN signs a challenge of the CA and gets a
/// certificate for the DN's account that ends no later than the proxy; a replayed answer, a
/// challenge the CA never made, a signature by another key, an untrusted chain and an unlinked
/// DN are refused with their reasons, and only the good proof is recorded (proof `x509`).
#[tokio::test]
async fn a_proxy_that_signs_a_challenge_gets_a_certificate_for_its_dns_account() {
    use hpccert_core::dev::pki::{self, CertSpec, Credential, ProxySpec};
    const GATEWAY_DN: &str = "/DC=org/DC=example/O=Science Gateway/CN=Gateway Robot";
    let Some(s) = site(30).await else { return };
    let d = s.dir.path();
    let now = hpccert_core::clock::now();
    let user = pki::issue(&s.grid_ca, &CertSpec::user(GATEWAY_DN, now, 1).unwrap()).unwrap();
    let proxy = pki::issue_proxy(&user, &ProxySpec::new("777", now, 1)).unwrap();
    let stranger = pki::issue(
        &s.grid_ca,
        &CertSpec::user("/DC=org/DC=example/CN=Somebody Else", now, 1).unwrap(),
    )
    .unwrap();
    let rogue_ca =
        pki::self_signed_ca(&CertSpec::ca("/DC=org/DC=example/CN=Grid CA", now, 1).unwrap())
            .unwrap();
    let forged = pki::issue(&rogue_ca, &CertSpec::user(GATEWAY_DN, now, 1).unwrap()).unwrap();
    let admin = Actor {
        name: "admin".into(),
        from_addr: None,
    };
    s.portal
        .change(
            &admin,
            &Change::Link {
                identity: IdentityKey::dn(GATEWAY_DN).unwrap(),
                profile: IdentityProfile::default(),
                account: AccountName::parse("gwrobot").unwrap(),
                approval: Approval::Immediate,
            },
            now,
        )
        .await
        .unwrap();
    let pem = |chain: &[&Credential]| -> String {
        chain
            .iter()
            .map(|c| String::from_utf8(c.cert_pem().unwrap()).unwrap())
            .collect()
    };
    let ed = public(&keygen(d, "gw", &["-t", "ed25519"]));
    let body = |chain: String, challenge: &str, signature: String| json!({"public_key": ed, "x509": {"certificates": chain, "challenge": challenge, "signature": signature}});

    let challenge = s.challenge().await;
    assert!(
        challenge.starts_with("hpccert-ssh-ca https://portal.test.example challenge "),
        "{challenge}"
    );
    let good = body(
        pem(&[&proxy, &user]),
        &challenge,
        sign(&proxy.key, &challenge),
    );
    let (status, answer) = s.request(None, &good).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["principals"], json!(["gwrobot"]));
    assert_eq!(answer["identity"], GATEWAY_DN);
    assert_eq!(answer["proxy_depth"], 1);
    let proxy_end = proxy.cert.not_after();
    let valid_before = answer["valid_before"].as_u64().unwrap();
    let end = openssl::asn1::Asn1Time::from_unix(valid_before as i64).unwrap();
    let left = end.diff(proxy_end).unwrap();
    assert!(
        left.days * 86_400 + left.secs >= 0,
        "the certificate ({valid_before}) outlives the proxy ({proxy_end})"
    );
    let policy_end = unix_seconds(now) as u64 + 7200;
    assert!(
        valid_before < policy_end - 3000,
        "capped by the proxy, not the policy"
    );
    let recorded = s.portal.store().certificates().await.unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].proof.as_str(), "x509");
    assert_eq!(recorded[0].identity.subject(), GATEWAY_DN);

    let fresh = s.challenge().await;
    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "a replayed answer",
            good.clone(),
            StatusCode::UNAUTHORIZED,
            "answered already",
        ),
        (
            "a challenge the CA never made",
            body(
                pem(&[&proxy, &user]),
                "hpccert-ssh-ca https://portal.test.example challenge 00",
                sign(
                    &proxy.key,
                    "hpccert-ssh-ca https://portal.test.example challenge 00",
                ),
            ),
            StatusCode::UNAUTHORIZED,
            "not made here",
        ),
        (
            "the user's key signing for the proxy",
            body(pem(&[&proxy, &user]), &fresh, sign(&user.key, &fresh)),
            StatusCode::UNAUTHORIZED,
            "does not match",
        ),
        (
            "an untrusted CA",
            body(pem(&[&forged]), &s.challenge().await, String::new()),
            StatusCode::UNAUTHORIZED,
            "does not match",
        ),
        (
            "a key in the request",
            body(
                pem(&[&user]) + &String::from_utf8(user.key_pem().unwrap()).unwrap(),
                &s.challenge().await,
                String::new(),
            ),
            StatusCode::UNAUTHORIZED,
            "private key",
        ),
    ];
    for (what, request, status, needle) in cases {
        let (got, answer) = s.request(None, &request).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(answer["error"], "invalid_proof", "{what}: {answer}");
        assert!(
            answer["reason"].as_str().unwrap().contains(needle),
            "{what}: {answer}"
        );
    }
    // a forged chain that signs properly is refused by the chain check
    let c = s.challenge().await;
    let (got, answer) = s
        .request(None, &body(pem(&[&forged]), &c, sign(&forged.key, &c)))
        .await;
    assert_eq!(got, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("chain is refused"),
        "{answer}"
    );
    // a trusted DN nobody linked
    let c = s.challenge().await;
    let (got, answer) = s
        .request(None, &body(pem(&[&stranger]), &c, sign(&stranger.key, &c)))
        .await;
    assert_eq!(got, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        answer["reason"].as_str().unwrap().contains("Somebody Else"),
        "{answer}"
    );
    // two credentials at once
    let c = s.challenge().await;
    let (got, answer) = s
        .request(
            Some(&s.token(SUB, AUD, 3600)),
            &body(pem(&[&proxy, &user]), &c, sign(&proxy.key, &c)),
        )
        .await;
    assert_eq!(got, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(s.issued().await, 1, "a refusal recorded a certificate");
}

/// The site's restrictions for an identity ride in its certificates as the nodes would apply
/// them at a login: `from=` as `source-address`, `command=` as `force-command`, `no-pty` and
/// `no-forwarding` leave those permissions out; accounts restricted differently cannot share
/// one certificate.
#[tokio::test]
async fn restrictions_become_critical_options_and_missing_permissions() {
    let Some(s) = site(30).await else { return };
    let d = s.dir.path();
    std::fs::write(
        d.join("restrictions"),
        format!("token \"{ISS}\" \"{SUB}\" from=192.0.2.0/24,2001:db8::/48 command=\"/usr/local/bin/submit\" no-pty no-forwarding\naccount jdoe-gw max-sessions=2 from=192.0.2.0/24,2001:db8::/48\n"),
    )
    .unwrap();
    let key = public(&keygen(d, "restricted", &["-t", "ed25519"]));
    let token = s.token(SUB, AUD, 3600);
    let (status, body) = s
        .request(
            Some(&token),
            &json!({"public_key": key, "principals": ["jdoe"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cert = d.join("restricted-cert.pub");
    std::fs::write(&cert, body["certificate"].as_str().unwrap()).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(&cert)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("source-address 192.0.2.0/24,2001:db8::/48"),
        "{text}"
    );
    assert!(
        text.contains("force-command /usr/local/bin/submit"),
        "{text}"
    );
    for gone in [
        "permit-pty",
        "permit-port-forwarding",
        "permit-agent-forwarding",
    ] {
        assert!(!text.contains(gone), "{gone}: {text}");
    }
    // jdoe-gw's own rule adds a second source list: not one certificate for both
    let (status, body) = s
        .request(
            Some(&token),
            &json!({"public_key": key, "principals": ["jdoe", "jdoe-gw"]}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("one account at a time"),
        "{body}"
    );
    // an unusable restrictions file issues nothing
    std::fs::write(d.join("restrictions"), "account jdoe\n").unwrap();
    let (status, body) = s
        .request(
            Some(&token),
            &json!({"public_key": key, "principals": ["jdoe"]}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("restrictions"),
        "{body}"
    );
}
