//! The SSH CA end to end (issue 14): the real OpenID provider (npm `oidc-provider`) issues an
//! access token by the code flow (a person) and by client credentials (a gateway); the portal
//! links both identities and signs certificates for them; `gridmap-tool sync` installs the CA
//! keys and the KRL on a node; stock `ssh`, `scp`, `sftp` and `rsync` and paramiko log in with
//! the certificate to a test instance of the system's OpenSSH `sshd` (configured only with the
//! shipped drop-in's lines and the files sync installed) and to sshd-gsi, as the mapped
//! account; so does a certificate the CA issued to a portal-linked DN for an RFC 3820 proxy
//! that signed its challenge (a gateway with grid credentials). Then the identity is suspended in the portal, the node syncs, and both servers
//! refuse the same certificate (`ssh-keygen -Q` agrees).
//!
//! Root only (OpenSSH's sshd switches to the account), with the e2e peers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
mod nodes;

use nodes::{Servers, bin, keygen, run};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hpccert_core::config::Config;
use hpccert_core::dev::pki::{self, CertSpec, ProxySpec};
use hpccert_core::identity::gridmap::AccountName;
use hpccert_e2e::oidc::{
    AUDIENCE, Provider, ROBOT, claims, read_jwks_keys, write_jwks, write_jwks_keys,
};
use hpccert_e2e::{free_port, python_with};
use mapping_portal::model::{
    Actor, Approval, Change, IdentityKey, IdentityProfile, SuspensionTarget,
};
use mapping_portal::sshca::CertificateAuthority;
use mapping_portal::store::Store;
use mapping_portal::{ExportToken, Portal, PortalSettings};
use serde_json::{Value, json};

const ACCOUNT: &str = "hpccert-e2e-alice";
const GRID_CA: &str = "/DC=org/DC=example/CN=SSH CA e2e Grid CA";
const GATEWAY_DN: &str = "/DC=org/DC=example/O=Science Gateway/CN=e2e Gateway";
const EXPORT_TOKEN: &str = "0123456789abcdef0123456789abcdef-ssh-ca-e2e";

fn peers() -> Option<PathBuf> {
    if !nodes::node_peers(
        "ssh_ca_e2e",
        ACCOUNT,
        nodes::OPENSSH,
        &["sshd-gsi", "gridmap-tool"],
    ) {
        return None;
    }
    python_with("paramiko")
}

/// stock `ssh` with the key and its certificate, nothing else (no agent, no config).
fn ssh_args(d: &Path, port: u16) -> Vec<String> {
    vec![
        "-p".into(),
        port.to_string(),
        "-F".into(),
        "/dev/null".into(),
        "-i".into(),
        d.join("id_ed25519").display().to_string(),
        "-o".into(),
        format!(
            "CertificateFile={}",
            d.join("id_ed25519-cert.pub").display()
        ),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "IdentityAgent=none".into(),
        "-o".into(),
        "PreferredAuthentications=publickey".into(),
        "-o".into(),
        "StrictHostKeyChecking=no".into(),
        "-o".into(),
        "UserKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
    ]
}

/// `ssh`, `scp`, `sftp`, `rsync` and paramiko as the account; panics on any failure.
fn every_client_logs_in(python: &Path, d: &Path, port: u16, server: &str) {
    let mut args = ssh_args(d, port);
    let (code, out) = run(Command::new("ssh")
        .args(&args)
        .arg(format!("{ACCOUNT}@127.0.0.1"))
        .arg("id -un"));
    assert_eq!(code, 0, "{server} ssh: {out}");
    assert_eq!(out.trim(), ACCOUNT, "{server}");
    let payload = d.join("payload.txt");
    std::fs::write(
        &payload,
        format!("hello from the SSH CA test to {server}\n"),
    )
    .unwrap();
    // scp (its -P for the port)
    args[0] = "-P".into();
    let (code, out) = run(Command::new("scp").args(&args).arg(&payload).arg(format!(
        "{ACCOUNT}@127.0.0.1:/tmp/hpccert-ssh-ca-{server}.txt"
    )));
    assert_eq!(code, 0, "{server} scp: {out}");
    let batch = d.join("sftp.batch");
    std::fs::write(
        &batch,
        format!(
            "get /tmp/hpccert-ssh-ca-{server}.txt {}\n",
            d.join(format!("back-{server}.txt")).display()
        ),
    )
    .unwrap();
    let (code, out) = run(Command::new("sftp")
        .args(&args)
        .arg("-b")
        .arg(&batch)
        .arg(format!("{ACCOUNT}@127.0.0.1")));
    assert_eq!(code, 0, "{server} sftp: {out}");
    assert_eq!(
        std::fs::read(d.join(format!("back-{server}.txt"))).unwrap(),
        std::fs::read(&payload).unwrap()
    );
    args[0] = "-p".into();
    let rsh = format!("ssh {}", args.join(" "));
    let (code, out) = run(Command::new("rsync")
        .args(["-e", &rsh])
        .arg(&payload)
        .arg(format!(
            "{ACCOUNT}@127.0.0.1:/tmp/hpccert-ssh-ca-rsync-{server}.txt"
        )));
    assert_eq!(code, 0, "{server} rsync: {out}");
    // paramiko with the same key and certificate
    let script = r#"
import sys, paramiko
port, user, key, cert = sys.argv[1:5]
k = paramiko.Ed25519Key.from_private_key_file(key)
k.load_certificate(cert)
c = paramiko.SSHClient()
c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
c.connect("127.0.0.1", int(port), user, pkey=k, allow_agent=False, look_for_keys=False)
print(c.exec_command("id -un")[1].read().decode().strip())
"#;
    let (code, out) = run(Command::new(python)
        .args(["-c", script, &port.to_string(), ACCOUNT])
        .arg(d.join("id_ed25519"))
        .arg(d.join("id_ed25519-cert.pub")));
    assert_eq!(code, 0, "{server} paramiko: {out}");
    assert_eq!(out.trim(), ACCOUNT, "{server} paramiko");
}

fn refused(d: &Path, port: u16) -> bool {
    let (code, _) = run(Command::new("ssh")
        .args(ssh_args(d, port))
        .arg(format!("{ACCOUNT}@127.0.0.1"))
        .arg("true"));
    code == 255
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_certificates_log_in_to_openssh_and_sshd_gsi_until_a_suspension_revokes_them() {
    let Some(python) = peers() else { return };
    let dir = tempfile::Builder::new()
        .prefix("ssh-ca-e2e-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    // the identity provider: a person's token (code flow) and a gateway's (client credentials)
    let private_jwks = d.join("provider-jwks.json");
    write_jwks(&private_jwks, "ssh-ca-e2e");
    let provider = Provider::start(d, free_port(), &private_jwks);
    let issuer = provider.issuer();
    let person = tokio::task::block_in_place(|| provider.code_flow("alice"));
    let gateway = tokio::task::block_in_place(|| provider.client_credentials());
    let public: Vec<Value> = read_jwks_keys(&private_jwks)
        .into_iter()
        .map(|k| json!({"kty": k["kty"], "kid": k["kid"], "use": "sig", "alg": "RS256", "n": k["n"], "e": k["e"]}))
        .collect();
    write_jwks_keys(&d.join("issuer-jwks.json"), &public);

    // a grid CA the portal trusts, and a gateway's certificate and proxy from it
    let now = hpccert_core::clock::now();
    let grid_ca = pki::self_signed_ca(&CertSpec::ca(GRID_CA, now, 1).unwrap()).unwrap();
    let gateway_cert = pki::issue(&grid_ca, &CertSpec::user(GATEWAY_DN, now, 1).unwrap()).unwrap();
    let gateway_proxy = pki::issue_proxy(&gateway_cert, &ProxySpec::new("4242", now, 1)).unwrap();
    std::fs::create_dir(d.join("trust")).unwrap();
    pki::install_ca(&d.join("trust"), &grid_ca.cert, None, None).unwrap();

    // the portal: CA, issuer, links of the three identities to the account
    keygen(&d.join("ca"));
    std::fs::create_dir(d.join("keys")).unwrap();
    let config = Config::parse(
        &format!(
            "version = 1\n[trust]\nca_dir = \"{0}/trust\"\n[tokens]\nkey_cache_dir = \"{0}/keys\"\n[portal]\n[portal.ssh_ca]\nkey_file = \"{0}/ca\"\n\
             [[issuer]]\nissuer = \"{issuer}\"\naudiences = [\"{AUDIENCE}\"]\nalgorithms = [\"RS256\"]\njwks_file = \"{0}/issuer-jwks.json\"\n",
            d.display()
        ),
        Path::new("portal.toml"),
    )
    .unwrap();
    let settings = config.portal.as_ref().unwrap().ssh_ca.clone().unwrap();
    let key = CertificateAuthority::load_ca(&settings).unwrap();
    let store = Store::open(&common::sqlite_url(d), hpccert_core::clock::now())
        .await
        .unwrap();
    let portal = Portal::start(
        store,
        PortalSettings {
            ssh_ca_keys: key.public_set(),
            url: "http://127.0.0.1".into(),
            export_tokens: vec![ExportToken::new(EXPORT_TOKEN).unwrap()],
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
    let person_sub = claims(&person)["sub"].as_str().unwrap().to_string();
    let gateway_sub = claims(&gateway)["sub"].as_str().unwrap().to_string();
    assert_eq!(gateway_sub, ROBOT.0);
    for identity in [
        IdentityKey::token(&issuer, &person_sub).unwrap(),
        IdentityKey::token(&issuer, &gateway_sub).unwrap(),
        IdentityKey::dn(GATEWAY_DN).unwrap(),
    ] {
        portal
            .change(
                &admin,
                &Change::Link {
                    identity,
                    profile: IdentityProfile::default(),
                    account: AccountName::parse(ACCOUNT).unwrap(),
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
        "http://127.0.0.1",
        Some(issuer.clone()),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = mapping_portal::sshca::router(Arc::new(ca))
        .merge(mapping_portal::http::router(Arc::clone(&portal)));
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap()
    });

    // a certificate for the person's key (and one for the gateway's, to the same account)
    keygen(&d.join("id_ed25519"));
    let http = reqwest::Client::new();
    let mut serials = Vec::new();
    for token in [&gateway, &person] {
        let r = http
            .post(format!("{base}/ssh/v1/certificate"))
            .bearer_auth(token)
            .body(
                json!({"public_key": std::fs::read_to_string(d.join("id_ed25519.pub")).unwrap()})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert!(status.is_success(), "{body}");
        assert_eq!(body["principals"], json!([ACCOUNT]));
        serials.push(body["serial"].as_u64().unwrap());
        std::fs::write(
            d.join("id_ed25519-cert.pub"),
            body["certificate"].as_str().unwrap(),
        )
        .unwrap();
    }

    // the node: sync installs the CA keys and the KRL
    let node = d.join("node");
    std::fs::create_dir(&node).unwrap();
    std::fs::write(d.join("export-token"), EXPORT_TOKEN).unwrap();
    std::fs::set_permissions(
        d.join("export-token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let sync = || {
        run(Command::new(bin("gridmap-tool"))
            .args([
                "sync",
                "--from",
                &format!("{base}/export/v1/bundle"),
                "--token-file",
            ])
            .arg(d.join("export-token"))
            .arg("--dir")
            .arg(&node))
    };
    let (code, out) = tokio::task::block_in_place(sync);
    assert_eq!(code, 0, "{out}");
    assert!(
        node.join("ssh-ca-keys.pub").is_file() && node.join("ssh-revoked.krl").is_file(),
        "{out}"
    );

    // OpenSSH's sshd with the drop-in's three lines on the installed files, and sshd-gsi's
    // openssh-cert method on the same files
    let servers = Servers::start(d, &node);
    let (openssh_port, gsi_port) = (servers.openssh_port, servers.gsi_port);

    tokio::task::block_in_place(|| {
        every_client_logs_in(&python, d, openssh_port, "openssh");
        every_client_logs_in(&python, d, gsi_port, "sshd-gsi");
    });

    // the gateway's proxy signs a challenge of the CA: a certificate for the DN's account
    let person_cert = std::fs::read_to_string(d.join("id_ed25519-cert.pub")).unwrap();
    let r = http
        .post(format!("{base}/ssh/v1/challenge"))
        .send()
        .await
        .unwrap();
    let challenge: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let challenge = challenge["challenge"].as_str().unwrap().to_string();
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &gateway_proxy.key)
            .unwrap();
    let signature = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .encode(signer.sign_oneshot_to_vec(challenge.as_bytes()).unwrap())
    };
    let chain: String = [&gateway_proxy, &gateway_cert]
        .iter()
        .map(|c| String::from_utf8(c.cert_pem().unwrap()).unwrap())
        .collect();
    let r = http
        .post(format!("{base}/ssh/v1/certificate"))
        .body(
            json!({"public_key": std::fs::read_to_string(d.join("id_ed25519.pub")).unwrap(),
                   "x509": {"certificates": chain, "challenge": challenge, "signature": signature}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert!(status.is_success(), "{body}");
    assert_eq!(body["principals"], json!([ACCOUNT]));
    assert_eq!(body["identity"], GATEWAY_DN);
    std::fs::write(
        d.join("id_ed25519-cert.pub"),
        body["certificate"].as_str().unwrap(),
    )
    .unwrap();
    let (code, out) = run(Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(d.join("id_ed25519-cert.pub")));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(GATEWAY_DN) && out.contains(ACCOUNT), "{out}");
    tokio::task::block_in_place(|| {
        every_client_logs_in(&python, d, openssh_port, "openssh-dn");
        every_client_logs_in(&python, d, gsi_port, "sshd-gsi-dn");
    });
    std::fs::write(d.join("id_ed25519-cert.pub"), person_cert).unwrap();

    // suspended in the portal: the next sync's KRL refuses the certificate on both servers
    portal
        .change(
            &admin,
            &Change::Suspend {
                target: SuspensionTarget::Identity(
                    IdentityKey::token(&issuer, &person_sub).unwrap(),
                ),
                reason: "ssh-ca e2e".into(),
            },
            hpccert_core::clock::now(),
        )
        .await
        .unwrap();
    let (code, out) = tokio::task::block_in_place(sync);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(Command::new("ssh-keygen")
        .arg("-Q")
        .arg("-f")
        .arg(node.join("ssh-revoked.krl"))
        .arg(d.join("id_ed25519-cert.pub")));
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("REVOKED"), "{out}");
    tokio::task::block_in_place(|| {
        assert!(
            refused(d, openssh_port),
            "OpenSSH still accepts the revoked certificate"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !refused(d, gsi_port) {
            assert!(
                Instant::now() < deadline,
                "sshd-gsi still accepts the revoked certificate:\n{}",
                std::fs::read_to_string(d.join("sshd-gsi.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let log = std::fs::read_to_string(d.join("sshd-gsi.log")).unwrap_or_default();
    assert!(log.contains("revoked"), "{log}");
}
