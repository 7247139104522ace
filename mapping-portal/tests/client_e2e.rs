//! The `hpccert` client end to end (issue 15): the real OpenID provider (npm `oidc-provider`),
//! the portal's SSH CA and export, a login node (OpenSSH's sshd on the shipped drop-in's lines
//! and sshd-gsi, both on the files `gridmap-tool sync` installed), a scratch HOME and a private
//! ssh-agent. `hpccert login` gets a certificate, puts it in the agent for its validity,
//! `hpccert ssh-config --install` writes the block, and stock ssh, scp, sftp and rsync reach
//! both servers as the mapped account through that block alone. Then the other ways in (client
//! credentials with a secret, a Globus proxy from `grid-proxy-init`), the refusals (a secret
//! others can read, an unlinked identity naming the link page, a suspended identity, an
//! unparseable ~/.ssh/config left untouched), and a short-validity site whose certificate
//! `hpccert check` sees expire while the agent drops it.
//!
//! Root only (OpenSSH's sshd switches to the account), with the e2e peers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
mod nodes;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hpccert_core::config::Config;
use hpccert_core::dev::pki::{self, CertSpec, KeyKind};
use hpccert_core::identity::gridmap::AccountName;
use hpccert_e2e::browser::{Browser, browser_available};
use hpccert_e2e::free_port;
use hpccert_e2e::oidc::{
    AUDIENCE, KeyKind as ClientKeyKind, Provider, ROBOT, ROBOT_JWT_CLIENT, complete_code_flow,
    complete_device_flow, deny_device_flow, write_client_key, write_jwks,
};
use mapping_portal::model::{
    Actor, Approval, Change, IdentityKey, IdentityProfile, SuspensionTarget,
};
use mapping_portal::sshca::CertificateAuthority;
use mapping_portal::store::Store;
use mapping_portal::{ExportToken, Portal, PortalSettings};
use nodes::{Killed, Servers, bin, run};

const ACCOUNT: &str = "hpccert-e2e-alice";
/// The person (login name at the test provider) linked to the account; `STRANGER` is not.
const PERSON: &str = "alice";
const STRANGER: &str = "mallory";
const GRID_CA: &str = "/DC=org/DC=example/CN=Client e2e CA";
const USER_DN: &str = "/DC=org/DC=example/O=Grid Users/CN=Client e2e User";
const EXPORT_TOKEN: &str = "0123456789abcdef0123456789abcdef-client-e2e";

fn peers() -> bool {
    let mut programs = nodes::OPENSSH.to_vec();
    programs.push(("/usr/bin/ssh-agent", "openssh-client"));
    programs.push(("/usr/bin/grid-proxy-init", "globus-proxy-utils"));
    nodes::node_peers(
        "client_e2e",
        ACCOUNT,
        &programs,
        &["sshd-gsi", "gridmap-tool", "hpccert"],
    )
}

/// The user's side: a scratch HOME and a private ssh-agent.
struct User {
    home: PathBuf,
    agent_sock: PathBuf,
    _agent: Killed,
}

impl User {
    fn new(d: &Path, name: &str) -> Self {
        let home = d.join(name);
        std::fs::create_dir(&home).unwrap();
        let agent_sock = d.join(format!("{name}-agent.sock"));
        let agent = Killed(
            Command::new("ssh-agent")
                .arg("-D")
                .arg("-a")
                .arg(&agent_sock)
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agent_sock.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            home,
            agent_sock,
            _agent: agent,
        }
    }

    fn cmd(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("SSH_AUTH_SOCK", &self.agent_sock)
            .stdin(Stdio::null());
        c
    }

    /// `hpccert ARGS`: (exit code, stdout, stderr).
    fn hpccert(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.cmd(&bin("hpccert")).args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn agent_list(&self) -> String {
        let out = self.cmd(Path::new("ssh-add")).arg("-l").output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ssh_config(&self) -> PathBuf {
        self.home.join(".ssh/config")
    }

    /// Stock ssh through the installed block alone (OpenSSH reads ~ from the passwd entry,
    /// not HOME: the scratch file is named with -F).
    fn ssh(&self, host: &str, command: &str) -> (i32, String) {
        let out = self
            .cmd(Path::new("ssh"))
            .arg("-F")
            .arg(self.ssh_config())
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg("-l")
            .arg(ACCOUNT)
            .arg(host)
            .arg(command)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

fn common_opts(user: &User) -> Vec<String> {
    vec![
        "-F".into(),
        user.ssh_config().display().to_string(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=no".into(),
        "-o".into(),
        "UserKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
    ]
}

/// ssh, scp, sftp and rsync to `host` (an alias of the installed block) as the account.
fn every_client(user: &User, host: &str, tag: &str) {
    let (code, out) = user.ssh(host, "id -un");
    assert_eq!(code, 0, "{tag} ssh: {out}");
    assert_eq!(out.trim(), ACCOUNT, "{tag}");
    let payload = user.home.join(format!("payload-{tag}.txt"));
    std::fs::write(&payload, format!("from the hpccert client test to {tag}\n")).unwrap();
    let remote = format!("/tmp/hpccert-client-{tag}.txt");
    let opts = common_opts(user);
    let out = user
        .cmd(Path::new("scp"))
        .args(&opts)
        .arg(&payload)
        .arg(format!("{ACCOUNT}@{host}:{remote}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tag} scp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let batch = user.home.join("sftp.batch");
    let back = user.home.join(format!("back-{tag}.txt"));
    std::fs::write(&batch, format!("get {remote} {}\n", back.display())).unwrap();
    let out = user
        .cmd(Path::new("sftp"))
        .args(&opts)
        .arg("-b")
        .arg(&batch)
        .arg(format!("{ACCOUNT}@{host}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tag} sftp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&back).unwrap(),
        std::fs::read(&payload).unwrap()
    );
    let rsh = format!("ssh {}", opts.join(" "));
    let out = user
        .cmd(Path::new("rsync"))
        .args(["-e", &rsh])
        .arg(&payload)
        .arg(format!(
            "{ACCOUNT}@{host}:/tmp/hpccert-client-rsync-{tag}.txt"
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tag} rsync: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The portal's CA routes and export on a port of their own.
async fn serve_ca(
    portal: &Arc<Portal>,
    config: &Config,
    url_port: u16,
    issuer: &str,
    listener: tokio::net::TcpListener,
) {
    let settings = config.portal.as_ref().unwrap().ssh_ca.clone().unwrap();
    let key = CertificateAuthority::load_ca(&settings).unwrap();
    let ca = CertificateAuthority::new(
        key,
        &settings,
        config,
        Arc::clone(portal),
        &format!("http://127.0.0.1:{url_port}"),
        Some(issuer.to_string()),
    )
    .unwrap();
    let router = mapping_portal::sshca::router(Arc::new(ca))
        .merge(mapping_portal::http::router(Arc::clone(portal)));
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap()
    });
}

fn portal_config(d: &Path, issuer: &str, max_validity: u64, hosts: &[u16]) -> Config {
    let hosts: Vec<String> = hosts.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    Config::parse(
        &format!(
            "version = 1\n[trust]\nca_dir = \"{0}/trust\"\n[tokens]\nkey_cache_dir = \"{0}/keys\"\n[portal]\n[portal.ssh_ca]\nkey_file = \"{0}/ca\"\n\
             max_validity = {max_validity}\nsite_name = \"Client e2e HPC\"\nclient_id = \"hpc-cli\"\naudience = \"{AUDIENCE}\"\nscopes = [\"openid\"]\n\
             login_hosts = [{1}]\n\
             [[issuer]]\nissuer = \"{issuer}\"\naudiences = [\"{AUDIENCE}\"]\nalgorithms = [\"RS256\"]\njwks_file = \"{0}/issuer-jwks.json\"\n",
            d.display(),
            hosts.join(", ")
        ),
        Path::new("portal.toml"),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpccert_login_then_ssh_config_reaches_both_servers_and_refusals_say_why() {
    if !peers() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("client-e2e-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    // the identity provider and its public keys for the portal
    let private_jwks = d.join("provider-jwks.json");
    write_jwks(&private_jwks, "client-e2e");
    // the gateway's private_key_jwt key, registered with the provider as hpc-robot-jwt
    let jwt_key = write_client_key(d, "robot-jwt-1", ClientKeyKind::Rsa);
    let provider = Provider::start_with(
        d,
        free_port(),
        &private_jwks,
        &[
            "--device-interval",
            "1",
            "--robot-jwks",
            &jwt_key.jwks.display().to_string(),
        ],
    );
    let issuer = provider.issuer();
    let public: Vec<serde_json::Value> = hpccert_e2e::oidc::read_jwks_keys(&private_jwks)
        .into_iter()
        .map(|k| serde_json::json!({"kty": k["kty"], "kid": k["kid"], "use": "sig", "alg": "RS256", "n": k["n"], "e": k["e"]}))
        .collect();
    hpccert_e2e::oidc::write_jwks_keys(&d.join("issuer-jwks.json"), &public);

    // a grid CA and a user certificate for the X.509 way in
    let now = hpccert_core::clock::now();
    // Globus tools want RSA keys, a traditional key file and a signing policy
    let mut ca_spec = CertSpec::ca(GRID_CA, now, 1).unwrap();
    ca_spec.key = KeyKind::Rsa(2048);
    let grid_ca = pki::self_signed_ca(&ca_spec).unwrap();
    let mut user_spec = CertSpec::user(USER_DN, now, 1).unwrap();
    user_spec.key = KeyKind::Rsa(2048);
    let user_cert = pki::issue(&grid_ca, &user_spec).unwrap();
    std::fs::create_dir(d.join("trust")).unwrap();
    pki::install_ca(&d.join("trust"), &grid_ca.cert, None, None).unwrap();
    std::fs::write(
        d.join("trust").join(format!("{}.signing_policy", pki::subject_hash(&grid_ca.cert))),
        format!("access_id_CA X509 '{GRID_CA}'\npos_rights globus CA:sign\ncond_subjects globus '\"/DC=org/DC=example/*\"'\n"),
    )
    .unwrap();
    std::fs::create_dir(d.join("keys")).unwrap();
    nodes::keygen(&d.join("ca"));

    // the portal: links of the robot and the grid user to the account
    let (openssh_port, gsi_port) = (free_port(), free_port());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let site_url = format!("http://127.0.0.1:{port}");
    let site = format!("127.0.0.1-{port}");
    let config = portal_config(d, &issuer, 3600, &[openssh_port, gsi_port]);
    let store = Store::open(&common::sqlite_url(d), now).await.unwrap();
    let key =
        CertificateAuthority::load_ca(config.portal.as_ref().unwrap().ssh_ca.as_ref().unwrap())
            .unwrap();
    let portal = Portal::start(
        store,
        PortalSettings {
            ssh_ca_keys: key.public_set(),
            url: site_url.clone(),
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
    for identity in [
        IdentityKey::token(&issuer, ROBOT.0).unwrap(),
        IdentityKey::token(&issuer, ROBOT_JWT_CLIENT).unwrap(),
        IdentityKey::token(&issuer, PERSON).unwrap(),
        IdentityKey::dn(USER_DN).unwrap(),
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
                now,
            )
            .await
            .unwrap();
    }
    serve_ca(&portal, &config, port, &issuer, listener).await;

    // the node: sync, then both servers on the installed files
    let node = d.join("node");
    std::fs::create_dir(&node).unwrap();
    std::fs::write(d.join("export-token"), EXPORT_TOKEN).unwrap();
    std::fs::set_permissions(
        d.join("export-token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let sync = {
        let (d, node, site_url) = (d.to_path_buf(), node.clone(), site_url.clone());
        move || {
            run(Command::new(bin("gridmap-tool"))
                .args([
                    "sync",
                    "--from",
                    &format!("{site_url}/export/v1/bundle"),
                    "--token-file",
                ])
                .arg(d.join("export-token"))
                .arg("--dir")
                .arg(&node))
        }
    };
    let (code, out) = tokio::task::block_in_place(&sync);
    assert_eq!(code, 0, "{out}");
    let _servers = Servers::start_on(d, &node, openssh_port, gsi_port);

    tokio::task::block_in_place(|| {
        // a gateway: client credentials with a secret only it can read
        let gw = User::new(d, "gateway");
        let secret = gw.home.join("robot-secret");
        std::fs::write(&secret, ROBOT.1).unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let secret_arg = secret.display().to_string();
        let login = [
            "login",
            &site_url,
            "--client-credentials",
            "--client-id",
            ROBOT.0,
            "--client-secret-file",
            &secret_arg,
        ];
        let (code, _, err) = gw.hpccert(&login);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("can be read by others"), "{err}");
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let started = Instant::now();
        let (code, out, err) = gw.hpccert(&login);
        let took = started.elapsed();
        assert_eq!(code, 0, "{out}{err}");
        eprintln!(
            "hpccert login (client credentials, to the certificate in the agent): {} ms",
            took.as_millis()
        );
        assert!(out.contains(&format!("account {ACCOUNT} until")), "{out}");
        assert!(out.contains("in the ssh-agent"), "{out}");
        // the agent holds key and certificate
        let listed = gw.agent_list();
        assert!(listed.contains("ED25519-CERT"), "{listed}");
        // status and check
        let (code, out, _) = gw.hpccert(&["status"]);
        assert_eq!(code, 0);
        assert!(
            out.contains(ACCOUNT) && out.contains("valid until"),
            "{out}"
        );
        assert_eq!(gw.hpccert(&["check"]).0, 0);
        assert_eq!(
            gw.hpccert(&["check", "--min-valid", "2h"]).0,
            1,
            "a 1 h certificate"
        );

        // the ssh config block, installed beside what the user had
        std::fs::create_dir_all(gw.home.join(".ssh")).unwrap();
        std::fs::write(gw.ssh_config(), "Host *\n    ServerAliveInterval 30\n").unwrap();
        let (code, _, err) = gw.hpccert(&["ssh-config", "--install"]);
        assert_eq!(code, 0, "{err}");
        let text = std::fs::read_to_string(gw.ssh_config()).unwrap();
        assert!(
            text.starts_with("Host *\n    ServerAliveInterval 30\n"),
            "{text}"
        );
        assert!(text.contains(&format!("# BEGIN hpccert {site} ")), "{text}");
        let (code, again, _) = gw.hpccert(&["ssh-config", "--install"]);
        assert_eq!(code, 0);
        assert_eq!(
            std::fs::read_to_string(gw.ssh_config()).unwrap(),
            text,
            "idempotent {again}"
        );
        let gsi_alias = format!("127.0.0.1-{gsi_port}");
        let openssh_alias = format!("127.0.0.1-{openssh_port}");
        let g = gw
            .cmd(Path::new("ssh"))
            .arg("-G")
            .arg("-F")
            .arg(gw.ssh_config())
            .arg(&gsi_alias)
            .output()
            .unwrap();
        let g = String::from_utf8_lossy(&g.stdout);
        assert!(g.contains(&format!("port {gsi_port}")), "{g}");
        assert!(
            g.contains(&format!(
                "certificatefile {}",
                gw.home
                    .join(format!(".ssh/hpccert/{site}-cert.pub"))
                    .display()
            )),
            "{g}"
        );
        every_client(&gw, &openssh_alias, "openssh");
        every_client(&gw, &gsi_alias, "sshd-gsi");

        // a Globus proxy from grid-proxy-init
        let grid = User::new(d, "grid");
        let globus = grid.home.join(".globus");
        std::fs::create_dir(&globus).unwrap();
        std::fs::write(globus.join("usercert.pem"), user_cert.cert_pem().unwrap()).unwrap();
        hpccert_e2e::write_mode(
            &globus.join("userkey.pem"),
            &user_cert.key_pem_traditional().unwrap(),
            0o400,
        );
        let proxy = grid.home.join("x509up");
        let out = grid
            .cmd(Path::new("grid-proxy-init"))
            .env("X509_CERT_DIR", d.join("trust"))
            .arg("-cert")
            .arg(globus.join("usercert.pem"))
            .arg("-key")
            .arg(globus.join("userkey.pem"))
            .arg("-out")
            .arg(&proxy)
            .args(["-hours", "1", "-rfc"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "grid-proxy-init: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let (code, out, err) =
            grid.hpccert(&["login", &site_url, "--x509", &proxy.display().to_string()]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains(USER_DN) && out.contains(ACCOUNT), "{out}");
        let (code, _, err) = grid.hpccert(&["ssh-config", "--install"]);
        assert_eq!(code, 0, "{err}");
        let (code, out) = grid.ssh(&gsi_alias, "id -un");
        assert_eq!((code, out.trim()), (0, ACCOUNT), "{out}");

        // an unparseable ~/.ssh/config is left untouched
        let broken = "Host a\n  {{ template }}\n";
        std::fs::write(grid.ssh_config(), broken).unwrap();
        let (code, _, err) = grid.hpccert(&["ssh-config", "--install"]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("left untouched"), "{err}");
        assert_eq!(std::fs::read_to_string(grid.ssh_config()).unwrap(), broken);

        // logout removes the key, the certificate and the agent's entries
        let (code, _, err) = gw.hpccert(&["logout"]);
        assert_eq!(code, 0, "{err}");
        assert!(!gw.agent_list().contains("ED25519"), "{}", gw.agent_list());
        assert!(!gw.home.join(format!(".ssh/hpccert/{site}")).exists());
        assert_eq!(gw.hpccert(&["check"]).0, 1);
    });

    // suspended: the next login says so
    portal
        .change(
            &admin,
            &Change::Suspend {
                target: SuspensionTarget::Identity(IdentityKey::token(&issuer, ROBOT.0).unwrap()),
                reason: "client e2e".into(),
            },
            hpccert_core::clock::now(),
        )
        .await
        .unwrap();
    tokio::task::block_in_place(|| {
        let gw = User::new(d, "gateway2");
        let secret = gw.home.join("robot-secret");
        hpccert_e2e::write_mode(&secret, ROBOT.1.as_bytes(), 0o600);
        let (code, out, err) = gw.hpccert(&[
            "login",
            &site_url,
            "--client-credentials",
            "--client-id",
            ROBOT.0,
            "--client-secret-file",
            &secret.display().to_string(),
        ]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains("suspended"), "{err}");
    });

    // a portal that trusts another issuer than the one it sends its users to
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_port = listener.local_addr().unwrap().port();
    let other = portal_config(d, "https://other-issuer.example", 3600, &[gsi_port]);
    serve_ca(&portal, &other, other_port, &issuer, listener).await;
    tokio::task::block_in_place(|| {
        let gw = User::new(d, "gateway3");
        let secret = gw.home.join("robot-secret");
        hpccert_e2e::write_mode(&secret, ROBOT.1.as_bytes(), 0o600);
        let (code, out, err) = gw.hpccert(&[
            "login",
            &format!("http://127.0.0.1:{other_port}"),
            "--client-credentials",
            "--client-id",
            ROBOT.0,
            "--client-secret-file",
            &secret.display().to_string(),
        ]);
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains("does not accept this login's token"), "{err}");
        assert!(
            !gw.home
                .join(".ssh/hpccert")
                .join(format!("127.0.0.1-{other_port}-cert.pub"))
                .exists()
        );
    });

    // a person: the browser login (the client's loopback redirect caught), the device login
    // (completed on the verification page), and the refusals of both
    tokio::task::block_in_place(|| person_logins(d, &site_url, gsi_port, &jwt_key));

    // a short-validity site: check flips to 1 when the certificate expires, and the agent
    // drops it at the same time
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let short_port = listener.local_addr().unwrap().port();
    let short = portal_config(d, &issuer, 4, &[gsi_port]);
    serve_ca(&portal, &short, short_port, &issuer, listener).await;
    tokio::task::block_in_place(|| {
        let grid = User::new(d, "grid-short");
        let globus = grid.home.join(".globus");
        std::fs::create_dir(&globus).unwrap();
        hpccert_e2e::write_mode(
            &globus.join("userkey.pem"),
            &user_cert.key_pem().unwrap(),
            0o600,
        );
        let proxy = grid.home.join("x509up");
        let mut pem = user_cert.cert_pem().unwrap();
        pem.extend(user_cert.key_pem().unwrap());
        hpccert_e2e::write_mode(&proxy, &pem, 0o600);
        let (code, out, err) = grid.hpccert(&[
            "login",
            &format!("http://127.0.0.1:{short_port}"),
            "--x509",
            &proxy.display().to_string(),
        ]);
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(grid.hpccert(&["check"]).0, 0);
        assert!(
            grid.agent_list().contains("ED25519-CERT"),
            "{}",
            grid.agent_list()
        );
        std::thread::sleep(Duration::from_secs(6));
        assert_eq!(grid.hpccert(&["check"]).0, 1, "expired");
        assert!(
            !grid.agent_list().contains("ED25519-CERT"),
            "the agent still holds it: {}",
            grid.agent_list()
        );
    });
}

/// `hpccert ARGS` started in the background, its stderr collected line by line.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(user: &User, args: &[&str], browser_script: Option<&Path>) -> Self {
        let mut cmd = user.cmd(&bin("hpccert"));
        if let Some(script) = browser_script {
            cmd.env("BROWSER", script);
        }
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first stderr line that contains `needle` (within 30 s).
    fn line_with(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?}; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Exit code, stdout and all of stderr.
    fn finish(mut self) -> (i32, String, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "hpccert did not finish:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        use std::io::Read as _;
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status.code().unwrap_or(-1), out, self.seen.join("\n"))
    }
}

/// The device login's verification URL with the code, as the client shows it.
fn device_url(run: &mut Running) -> String {
    let line = run.line_with("(or open ");
    line.trim_start_matches("(or open ")
        .split(", or scan")
        .next()
        .unwrap()
        .to_string()
}

fn person_logins(d: &Path, site_url: &str, gsi_port: u16, jwt_key: &hpccert_e2e::oidc::ClientKey) {
    // a gateway with a private_key_jwt client
    let gw = User::new(d, "gateway-jwt");
    let pem = gw.home.join("client-key.pem");
    hpccert_e2e::write_mode(&pem, &std::fs::read(&jwt_key.pem).unwrap(), 0o600);
    let (code, out, err) = gw.hpccert(&[
        "login",
        site_url,
        "--client-credentials",
        "--client-id",
        ROBOT_JWT_CLIENT,
        "--private-key-jwt",
        &pem.display().to_string(),
        "--key-id",
        &jwt_key.kid,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(ACCOUNT), "{out}");

    if !browser_available() {
        return;
    }
    let gsi_alias = format!("127.0.0.1-{gsi_port}");
    // the code flow: BROWSER is a script that hands the URL to the test's Chromium
    let url_file = d.join("browser-url");
    let script = d.join("browser.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nprintf '%s' \"$1\" > {}\n", url_file.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let person = User::new(d, "person");
    let run = Running::start(&person, &["login", site_url], Some(&script));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !url_file.exists() {
        assert!(Instant::now() < deadline, "the client opened no browser");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let url = std::fs::read_to_string(&url_file).unwrap();
    assert!(
        url.contains("code_challenge_method=S256")
            && url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
        "{url}"
    );
    let b = Browser::start();
    let landed = complete_code_flow(&b, &url, PERSON);
    let (code, out, err) = run.finish();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("as {PERSON}")) || out.contains(ACCOUNT),
        "{out}"
    );
    assert!(
        b.source().contains("Logged in"),
        "the loopback page at {landed}: {}",
        b.source()
    );
    assert_eq!(person.hpccert(&["ssh-config", "--install"]).0, 0);
    let (code, out) = person.ssh(&gsi_alias, "id -un");
    assert_eq!((code, out.trim()), (0, ACCOUNT), "{out}");
    assert!(person.agent_list().contains("ED25519-CERT"));
    // the login's access token for jobs: on stdout, and in the WLCG bearer token file
    let (code, token, err) = person.hpccert(&["token"]);
    assert_eq!(code, 0, "{err}");
    let claims = hpccert_e2e::oidc::claims(token.trim());
    assert_eq!(
        (claims["sub"].as_str(), claims["aud"].as_str()),
        (Some(PERSON), Some(AUDIENCE)),
        "{claims}"
    );
    let bt = person.home.join("bt");
    let out = person
        .cmd(&bin("hpccert"))
        .env("BEARER_TOKEN_FILE", &bt)
        .args(["token", "--write"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&bt).unwrap(), token.trim());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&bt).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // the device flow, completed on the verification page (the browser is still logged in)
    let headless = User::new(d, "headless");
    let mut run = Running::start(&headless, &["login", site_url, "--device"], None);
    let url = device_url(&mut run);
    complete_device_flow(&b, &url, PERSON);
    let (code, out, err) = run.finish();
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("enter the code: "), "{err}");
    assert!(out.contains(ACCOUNT), "{out}");

    // someone the portal has not linked: the message names the link page
    let stranger = User::new(d, "stranger");
    let mut run = Running::start(&stranger, &["login", site_url, "--device"], None);
    let url = device_url(&mut run);
    complete_device_flow(&Browser::start(), &url, STRANGER);
    let (code, out, err) = run.finish();
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&format!("link it at {site_url}/")), "{err}");
    assert!(!stranger.agent_list().contains("ED25519"));

    // consent denied at the provider
    let denied = User::new(d, "denied");
    let mut run = Running::start(&denied, &["login", site_url, "--device"], None);
    let url = device_url(&mut run);
    deny_device_flow(&Browser::start(), &url, "carol");
    let (code, out, err) = run.finish();
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("denied"), "{err}");
}
