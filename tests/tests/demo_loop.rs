//! The demo of the whole loop (`scripts/demo.sh`, issue "the first ten minutes"), driven as a
//! new user would: headless Chromium logs in to the portal through its built-in dev identity
//! provider, links the dev researcher to the account running the demo with the dev password
//! the page shows; the demo's sync loop installs the mapping on the node; stock `ssh` (the
//! researcher's access token through the askpass helper) and asyncssh (the researcher's
//! certificate, RFC 6187) log in to sshd-gsi as that account; `gridmap-tool explain` agrees.
//! Then the dev admin suspends the identity and the next sync refuses the token login again.
//!
//! Screenshots of each page are kept under `target/test-artifacts/demo_loop/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hpccert_e2e::browser::{Browser, browser_available};
use hpccert_e2e::{free_port, peer_available, python_with, repo_root, run};

/// The demo, in its own process group: dropping it stops the portal, sshd-gsi and the loop.
struct Demo {
    child: Child,
    out: PathBuf,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

impl Demo {
    fn output(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.out) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

/// Where `cargo test` put the workspace's binaries (beside this test's directory).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The token login the demo prints: stock ssh, the token through the askpass helper.
fn token_login(state: &Path, ssh_port: u16, user: &str) -> (i32, String, String) {
    run(Command::new("ssh")
        .env("SSH_ASKPASS", repo_root().join("packaging/hpccert-askpass"))
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("BEARER_TOKEN_FILE", state.join("ada.jwt"))
        .args(["-p", &ssh_port.to_string()])
        .args([
            "-o",
            "PreferredAuthentications=keyboard-interactive",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=no",
        ])
        .arg(format!("{user}@127.0.0.1"))
        .arg("id; echo identity=$HPCCERT_IDENTITY")
        .stdin(Stdio::null()))
}

/// The 32-byte private seed of an unencrypted OpenSSH Ed25519 private key: the 32 bytes before
/// the public key's last occurrence (the private section holds seed || public key).
fn ed25519_seed(pem: &str) -> [u8; 32] {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let blob = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .unwrap();
    let tag = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20";
    let at = blob.windows(tag.len()).position(|w| w == tag).unwrap() + tag.len();
    let public = &blob[at..at + 32];
    let last = blob.windows(32).rposition(|w| w == public).unwrap();
    assert!(
        last >= at + 32 + 32,
        "no private section after the public key"
    );
    blob[last - 32..last].try_into().unwrap()
}

/// Stock ssh with the key and the certificate beside it (`id_ed25519-cert.pub`), nothing else.
fn certificate_login(
    state: &Path,
    key: &Path,
    ssh_port: u16,
    user: &str,
    command: &str,
) -> (i32, String, String) {
    run(Command::new("ssh")
        .args(["-p", &ssh_port.to_string(), "-i"])
        .arg(key)
        .arg("-o")
        .arg(format!(
            "CertificateFile={}",
            state.join("id_ed25519-cert.pub").display()
        ))
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg(format!("{user}@127.0.0.1"))
        .arg(command)
        .stdin(Stdio::null()))
}

#[test]
fn the_demo_links_in_the_browser_and_then_ssh_logs_in_as_the_account() {
    if !browser_available() || !peer_available("ssh", "openssh-client") {
        return;
    }
    let bins = bin_dir();
    for b in ["mapping-portal", "sshd-gsi", "gridmap-tool"] {
        if !bins.join(b).is_file() {
            hpccert_e2e::skip(&format!(
                "{b} not built in {} (run the workspace's tests)",
                bins.display()
            ));
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("demo");
    let (portal_port, ssh_port) = (free_port(), free_port());
    let portal = format!("http://127.0.0.1:{portal_port}");
    let out = dir.path().join("demo.out");
    let child = Command::new(repo_root().join("scripts/demo.sh"))
        .args(["--state-dir", &state.display().to_string()])
        .args(["--portal-port", &portal_port.to_string()])
        .args(["--ssh-port", &ssh_port.to_string()])
        .args(["--sync-interval", "1"])
        .env("HPCCERT_DEMO_BIN_DIR", &bins)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(dir.path().join("demo.err")).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let demo = Demo { child, out };
    let instructions = wait_until("the demo's instructions", Duration::from_secs(60), || {
        let o = demo.output();
        o.contains("Ctrl-C stops everything").then_some(o)
    });
    let user = run(Command::new("id").arg("-un")).1.trim().to_string();
    let password = std::fs::read_to_string(state.join("portal/dev-account-password"))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        instructions.contains(&format!("account {user}: its dev password is {password}")),
        "{instructions}"
    );

    // the researcher's access token, as the demo says to get it
    let token = reqwest::blocking::get(format!("{portal}/dev-idp/access-token/ada"))
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .unwrap();
    std::fs::write(state.join("ada.jwt"), &token).unwrap();
    // not linked yet: refused
    let (code, out, err) = token_login(&state, ssh_port, &user);
    assert_ne!(code, 0, "logged in before any link: {out}{err}");

    // the portal in the browser: dev login as Ada, link to the account
    let b = Browser::start();
    b.goto(&format!("{portal}/"));
    b.wait_for("a[href='/login']");
    assert!(
        b.source().contains("Development mode"),
        "{}",
        b.body_excerpt()
    );
    b.screenshot("welcome");
    b.click("a[href='/login']");
    b.wait_for("#login-ada");
    assert!(b.source().contains("Development identity provider"));
    b.screenshot("dev-idp-login");
    b.click("#login-ada");
    b.wait_for("#account");
    assert!(b.source().contains("Ada Lovelace"), "{}", b.body_excerpt());
    assert_eq!(b.text("#dev-accounts code.dev-account"), user);
    assert_eq!(b.text("#dev-accounts code.dev-password"), password);
    b.screenshot("home-not-linked");
    b.fill("#account", &user);
    b.fill("#password", &password);
    b.click("form[action='/link'] button[type=submit]");
    b.wait_for("#links");
    b.screenshot("home-linked");

    // the sync loop installs it; stock ssh with the token logs in as the account
    let out = wait_until(
        "a token login after the link",
        Duration::from_secs(30),
        || {
            let (code, out, _) = token_login(&state, ssh_port, &user);
            (code == 0).then_some(out)
        },
    );
    assert!(out.contains(&format!("({user})")), "{out}");
    assert!(
        out.contains("identity=http://cilogon.org/serverD/users/1001"),
        "{out}"
    );
    assert!(demo.output().contains("sync:   token-mapfile: +1 -0 lines"));

    // the same researcher's certificate (the DN the provider asserted, linked with it)
    let researchers = state.join("portal/dev-idp/researchers");
    if let Some(python) = python_with("asyncssh") {
        let (code, out, err) = run(Command::new(python)
            .arg(repo_root().join("sshd-gsi/dev/ssh-x509.py"))
            .args(["-p", &ssh_port.to_string()])
            .arg("--key")
            .arg(researchers.join("ada.key"))
            .arg("--cert")
            .arg(researchers.join("ada.pem"))
            .arg(format!("{user}@127.0.0.1"))
            .arg("id; echo dn=$HPCCERT_DN")
            .stdin(Stdio::null()));
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains(&format!("({user})")), "{out}");
        assert!(
            out.contains("dn=/DC=org/DC=hpccert-dev/C=US/O=Dev University/CN=Ada Lovelace A1001"),
            "{out}"
        );
    }

    // an OpenSSH certificate from the portal's dev SSH CA, as the demo prints it: stock ssh
    // logs in with it (the node trusts the CA keys the sync installed)
    let key = state.join("id_ed25519");
    let (code, _, err) = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key));
    assert_eq!(code, 0, "{err}");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let answer = reqwest::blocking::Client::new()
        .post(format!("{portal}/ssh/v1/certificate"))
        .bearer_auth(token.trim())
        .body(serde_json::json!({"public_key": public.trim()}).to_string())
        .send()
        .and_then(|r| r.text())
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let cert = answer["certificate"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    std::fs::write(state.join("id_ed25519-cert.pub"), cert).unwrap();
    let (code, out, err) = certificate_login(
        &state,
        &key,
        ssh_port,
        &user,
        "id; echo method=$HPCCERT_AUTH_METHOD",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("({user})")) && out.contains("method=openssh-cert"),
        "{out}"
    );

    // the same from the portal's "SSH certificate" page, in the browser (the session is the
    // proof): paste the public key, take the certificate from the page
    b.goto(&format!("{portal}/ssh"));
    b.wait_for("#public_key");
    b.fill("#public_key", public.trim());
    b.click("form[action='/ssh'] button[type=submit]");
    b.wait_for("#issued");
    b.screenshot("ssh-certificate");
    let from_page = b.text("#certificate");
    assert!(
        from_page.starts_with("ssh-ed25519-cert-v01@openssh.com "),
        "{from_page}"
    );
    std::fs::write(state.join("id_ed25519-cert.pub"), &from_page).unwrap();
    let (code, out, err) = certificate_login(&state, &key, ssh_port, &user, "id -un");
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), user);

    // no key at hand: the page makes a key pair and shows it once with the certificate
    b.goto(&format!("{portal}/ssh"));
    b.wait_for("#generate");
    b.click("#generate");
    b.wait_for("#private_key");
    b.screenshot("ssh-key-pair");
    let made_key = b.text("#private_key");
    assert!(
        made_key.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"),
        "{made_key}"
    );
    let made_cert = b.text("#certificate");
    let made = state.join("made-key");
    std::fs::write(&made, format!("{}\n", made_key.trim())).unwrap();
    std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(state.join("id_ed25519-cert.pub"), &made_cert).unwrap();
    let (code, out, err) = certificate_login(&state, &made, ssh_port, &user, "id -un");
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), user);
    // the portal kept no copy: no file of its state holds the key's private half (raw, hex or
    // base64 at any alignment)
    let seed = ed25519_seed(&made_key);
    let mut needles: Vec<Vec<u8>> = vec![seed.to_vec()];
    needles.push(
        seed.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into_bytes(),
    );
    for skip in 0..3 {
        let b64 = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&seed[skip..])
        };
        needles.push(b64.as_bytes()[..b64.len() - 4].to_vec());
    }
    let mut stack = vec![state.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path == made {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                for needle in &needles {
                    assert!(
                        !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                        "{} holds the private key the page made",
                        path.display()
                    );
                }
            }
        }
    }

    // explain, as the demo prints it
    let tool = bins.join("gridmap-tool");
    let config = state.join("node/hpccert.toml");
    let (code, out, err) = run(Command::new(&tool)
        .arg("--config")
        .arg(&config)
        .arg("explain")
        .arg("--token")
        .arg(state.join("ada.jwt")));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("-> {user}")), "{out}");
    let (code, out, err) = run(Command::new(&tool)
        .arg("--config")
        .arg(&config)
        .arg("explain")
        .arg("--cert")
        .arg(researchers.join("ada.pem")));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("-> {user}")), "{out}");

    // the dev admin suspends Ada's token identity; the next sync refuses the login again
    b.click("form[action='/logout'] button");
    b.wait_for("a[href='/login']");
    b.delete_all_cookies();
    b.goto(&format!("{portal}/login"));
    b.wait_for("#login-admin");
    b.click("#login-admin");
    b.wait_for("nav a[href='/admin']");
    b.click("nav a[href='/admin']");
    b.wait_for("#admin-links");
    // the certificate the portal issued is listed, valid
    let certs = b.find_all_text("#certificates tbody tr");
    let serial = answer["serial"].as_u64().unwrap().to_string();
    assert!(
        certs
            .iter()
            .any(|r| r.contains(&serial) && r.contains("valid")),
        "{certs:?}"
    );
    let rows = b.find_all_text("#admin-links tbody tr");
    let row = rows
        .iter()
        .position(|r| r.contains("Token identity") && r.contains("users/1001"))
        .unwrap_or_else(|| panic!("no token row for Ada: {rows:?}"));
    let form = format!(
        "#admin-links tbody tr:nth-child({}) form[action='/admin/suspend']",
        row + 1
    );
    b.fill(&format!("{form} input[name=reason]"), "demo: lost laptop");
    b.click(&format!("{form} button"));
    b.wait_for("#suspensions");
    b.screenshot("admin-suspended");
    // the suspension revoked the identity's certificate
    let certs = b.find_all_text("#certificates tbody tr");
    assert!(
        certs
            .iter()
            .any(|r| r.contains(&serial) && r.contains("revoked")),
        "{certs:?}"
    );
    let err = wait_until(
        "the token login refused after the suspension",
        Duration::from_secs(30),
        || {
            let (code, out, err) = token_login(&state, ssh_port, &user);
            (code != 0).then(|| format!("{out}{err}"))
        },
    );
    assert!(err.contains("Permission denied"), "{err}");
    let log = std::fs::read_to_string(state.join("sshd-gsi.log")).unwrap();
    assert!(log.contains("suspended"), "{log}");
}
