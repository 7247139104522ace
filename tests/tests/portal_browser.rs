//! The mapping portal end to end, in a real browser (issue #7): headless Chromium, driven
//! through chromedriver, logs in at the real OpenID provider (npm `oidc-provider`, CILogon
//! style claims), proves a local account with its password through the real Linux-PAM
//! (pam_wrapper's private service directory; pam_matrix holds the password), links, sees
//! the link, removes it; an admin suspends. After each step the portal's exported files are
//! read by the real `gridmap-tool explain` with an access token from the same provider.
//!
//! Screenshots of every page (desktop and phone widths) are saved under
//! `target/test-artifacts/portal_browser/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hpccert_core::dev::pki::{self, CertSpec};
use hpccert_e2e::browser::{Browser, PHONE, WINDOW, browser_available};
use hpccert_e2e::oidc::{
    AUDIENCE, PORTAL, Provider, account_dn, provider_available, provider_login, write_jwks,
};
use hpccert_e2e::{free_port, library, run, write_mode};

const ACCOUNT: &str = "jdoe";
/// The DN of the user's older grid certificate, which the identity provider does not assert.
const OLD_DN: &str = "/DC=org/DC=example/O=Old Grid/CN=Jane Doe";
/// What `gridmap-tool explain` says of a DN without a grid-mapfile line.
const NOT_MAPPED: &str = "DN not in grid-mapfile";
const PASSWORD: &str = "correct horse battery staple";
/// Another account, for the rate limit (its attempts lock it for 15 minutes).
const OTHER: &str = "jroe";

/// The workspace's binaries (built by `cargo test --workspace`), beside this test's directory.
fn built_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent()?.parent()?.join(name);
    if bin.is_file() {
        return Some(bin);
    }
    hpccert_e2e::skip(&format!(
        "{} not built (run the workspace's tests)",
        bin.display()
    ));
    None
}

struct Portal {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Portal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Portal {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// mapping-portal with its config, PAM through pam_wrapper (service `mapping-portal`:
/// pam_matrix with one account and password) and the account known through nss_wrapper;
/// certificate DNs may be proved against the trust directory `dir`/certificates.
fn start_portal(dir: &Path, port: u16, issuer: &str) -> Option<Portal> {
    let binary = built_binary("mapping-portal")?;
    let pam_wrapper = library("libpam_wrapper.so", "libpam-wrapper")?;
    let nss_wrapper = library("libnss_wrapper.so", "libnss-wrapper")?;
    let pam_matrix = pam_wrapper
        .parent()
        .unwrap()
        .join("pam_wrapper/pam_matrix.so");
    assert!(
        pam_matrix.is_file(),
        "{} missing (libpam-wrapper)",
        pam_matrix.display()
    );
    let d = dir.display();
    write_mode(
        &dir.join("passdb"),
        format!("{ACCOUNT}:{PASSWORD}:mapping-portal\n{OTHER}:{PASSWORD}:mapping-portal\n")
            .as_bytes(),
        0o600,
    );
    std::fs::create_dir_all(dir.join("pam.d")).unwrap();
    let m = pam_matrix.display();
    write_mode(
        &dir.join("pam.d/mapping-portal"),
        format!("auth required {m} passdb={d}/passdb\naccount required {m} passdb={d}/passdb\n")
            .as_bytes(),
        0o644,
    );
    write_mode(
        &dir.join("passwd"),
        format!(
            "{ACCOUNT}:x:1234:1234:Jane Doe:/home/{ACCOUNT}:/bin/bash\n\
             {OTHER}:x:1235:1235:John Roe:/home/{OTHER}:/bin/bash\n\
             daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
        )
        .as_bytes(),
        0o644,
    );
    write_mode(
        &dir.join("group"),
        format!("{ACCOUNT}:x:1234:\n{OTHER}:x:1235:\n").as_bytes(),
        0o644,
    );
    std::fs::create_dir_all(dir.join("export")).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let config = dir.join("portal.toml");
    write_mode(
        &config,
        format!(
            "version = 1\n[portal]\ndatabase = \"sqlite://{d}/portal.db?mode=rwc\"\n\
             listen = \"127.0.0.1:{port}\"\nurl = \"{base}\"\nexport_dir = \"{d}/export\"\n\
             export_tokens = [\"0123456789abcdef0123456789abcdef-export\"]\n\
             admins = [{{ issuer = \"{issuer}\", subject = \"admin\" }}]\n\
             certificate_dns = true\n\
             [trust]\nca_dir = \"{d}/certificates\"\n\
             [portal.oidc]\nissuer = \"{issuer}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n",
            PORTAL.0, PORTAL.1
        )
        .as_bytes(),
        0o600,
    );
    let log = dir.join("portal.log");
    let child = Command::new(binary)
        .arg("--config")
        .arg(&config)
        .env(
            "LD_PRELOAD",
            format!("{} {}", pam_wrapper.display(), nss_wrapper.display()),
        )
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", dir.join("pam.d"))
        .env("NSS_WRAPPER_PASSWD", dir.join("passwd"))
        .env("NSS_WRAPPER_GROUP", dir.join("group"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let portal = Portal { child, base, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    let http = reqwest::blocking::Client::new();
    while Instant::now() < deadline {
        if http
            .get(format!("{}/healthz", portal.base))
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            return Some(portal);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the portal did not answer /healthz:\n{}", portal.log_text());
}

/// gridmap-tool reading the portal's exported files, trusting the provider's tokens.
struct Node {
    tool: PathBuf,
    config: PathBuf,
    token_file: PathBuf,
}

impl Node {
    fn new(dir: &Path, export: &Path, issuer: &str, token: &str) -> Option<Self> {
        let tool = built_binary("gridmap-tool")?;
        let e = export.display();
        let config = dir.join("node.toml");
        write_mode(
            &config,
            format!(
                "version = 1\n[trust]\nca_dir = \"{0}/certificates\"\n\
                 [tokens]\nkey_cache_dir = \"{0}/keys\"\n\
                 [mapping]\ngrid_mapfile = \"{e}/grid-mapfile\"\ntoken_mapfile = \"{e}/token-mapfile\"\n\
                 suspended_file = \"{e}/suspended\"\n\
                 [[issuer]]\nissuer = \"{issuer}\"\naudiences = [\"{AUDIENCE}\"]\nalgorithms = [\"RS256\"]\n",
                dir.display()
            )
            .as_bytes(),
            0o644,
        );
        let token_file = dir.join("user.token");
        write_mode(&token_file, token.as_bytes(), 0o600);
        let node = Self {
            tool,
            config,
            token_file,
        };
        let (code, out, err) = node.run(&["keys", "refresh"]);
        assert_eq!(code, 0, "keys refresh: {out}{err}");
        Some(node)
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        run(Command::new(&self.tool)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null()))
    }

    /// `explain --cert`: exit code and everything it printed.
    fn explain_cert(&self, chain: &Path) -> (i32, String) {
        let (code, out, err) = self.run(&["explain", "--cert", &chain.display().to_string()]);
        (code, format!("{out}{err}"))
    }

    /// `explain --token`: exit code and everything it printed.
    fn explain(&self) -> (i32, String) {
        let (code, out, err) =
            self.run(&["explain", "--token", &self.token_file.display().to_string()]);
        (code, format!("{out}{err}"))
    }
}

/// Wait until the page shows `text` (a form's answer replaces the page: until it has loaded,
/// the old page is still there).
fn wait_for_text(b: &Browser, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.source().contains(text) {
        assert!(
            Instant::now() < deadline,
            "no {text:?} after 10 s at {}:\n{}",
            b.current_url(),
            b.body_excerpt()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn a_user_links_in_the_browser_and_the_node_maps_then_refuses() {
    if !provider_available() || !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let jwks = d.join("jwks.json");
    write_jwks(&jwks, "portal-e2e");
    let portal_port = free_port();
    let callback = format!("http://127.0.0.1:{portal_port}/login/callback");
    let provider = Provider::start_with(d, free_port(), &jwks, &["--portal-redirect", &callback]);
    let issuer = provider.issuer();
    // an older grid certificate of the same person, from a CA the portal and the node trust
    let now = hpccert_core::clock::now();
    let grid_ca =
        pki::self_signed_ca(&CertSpec::ca("/DC=org/DC=example/CN=Old Grid CA", now, 1).unwrap())
            .unwrap();
    let old = pki::issue(&grid_ca, &CertSpec::user(OLD_DN, now, 1).unwrap()).unwrap();
    pki::install_ca(&d.join("certificates"), &grid_ca.cert, None, None).unwrap();
    write_mode(&d.join("usercert.pem"), &old.cert_pem().unwrap(), 0o644);
    write_mode(&d.join("userkey.pem"), &old.key_pem().unwrap(), 0o600);
    let Some(portal) = start_portal(d, portal_port, &issuer) else {
        return;
    };
    let export = d.join("export");

    // the node's view, with a token of the same user from the same provider
    let user_token = provider.code_flow("alice");
    let Some(node) = Node::new(d, &export, &issuer, &user_token) else {
        return;
    };
    let (code, out) = node.explain();
    assert_ne!(code, 0, "not linked yet: {out}");

    let b = Browser::start();
    b.goto(&format!("{}/", portal.base));
    b.wait_for("a[href='/login']");
    b.screenshot("welcome");
    b.set_viewport_size(PHONE.0, PHONE.1);
    b.screenshot("welcome-phone");
    b.set_viewport_size(WINDOW.0, WINDOW.1);
    b.click("a[href='/login']");
    provider_login(&b, "alice", "alice");
    b.wait_for("#account");
    assert!(
        b.current_url().starts_with(&portal.base),
        "{}",
        b.current_url()
    );
    let page = b.source();
    assert!(page.contains("Test User alice"), "{page}");
    assert!(page.contains("Example University"), "{page}");
    assert!(page.contains(&account_dn("alice")), "{page}");
    b.screenshot("home-not-linked");

    // a wrong password first: refused, nothing linked
    b.fill("#account", ACCOUNT);
    b.fill("#password", "wrong password");
    b.screenshot("link-form");
    b.click("form[action='/link'] button[type=submit]");
    wait_for_text(&b, "Account not proved");
    // the answer every refused account gets (no such account, system account, wrong password)
    assert!(
        b.source()
            .contains("That account and password do not match."),
        "{}\n{}",
        b.source(),
        portal.log_text()
    );
    b.screenshot("link-wrong-password");
    assert_eq!(read(&export.join("token-mapfile")), "");
    assert!(
        portal.log_text().contains("account proof refused"),
        "{}",
        portal.log_text()
    );

    // the right password: linked
    b.goto(&format!("{}/", portal.base));
    b.wait_for("#account");
    b.fill("#account", ACCOUNT);
    b.fill("#password", PASSWORD);
    b.click("form[action='/link'] button[type=submit]");
    wait_for_text(&b, "Linked to");
    let page = b.source();
    assert!(page.contains(&format!("Linked to {ACCOUNT}")), "{page}");
    assert_eq!(b.find_all_text("#links td.account"), vec![ACCOUNT, ACCOUNT]);
    b.screenshot("linked");
    b.set_viewport_size(PHONE.0, PHONE.1);
    b.screenshot("linked-phone");
    b.set_viewport_size(WINDOW.0, WINDOW.1);
    assert!(
        !portal.log_text().contains(PASSWORD),
        "the password is never logged"
    );

    // the exported files, and the node's verdict
    assert_eq!(
        read(&export.join("token-mapfile")),
        format!("\"{issuer}\" \"alice\" {ACCOUNT}\n")
    );
    assert_eq!(
        read(&export.join("grid-mapfile")),
        format!("\"{}\" {ACCOUNT}\n", account_dn("alice"))
    );
    let (code, out) = node.explain();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(ACCOUNT), "{out}");

    // unlink the token identity: gone from the export, and the node refuses
    b.click("#links tr:first-child form[action='/unlink'] button");
    wait_for_text(&b, "is removed");
    assert!(b.source().contains("is removed"), "{}", b.source());
    b.screenshot("unlinked");
    assert_eq!(read(&export.join("token-mapfile")), "");
    let (code, out) = node.explain();
    assert_ne!(code, 0, "{out}");

    // link again, then an admin suspends the token identity
    b.fill("#account", ACCOUNT);
    b.fill("#password", PASSWORD);
    b.click("form[action='/link'] button[type=submit]");
    wait_for_text(&b, "Linked to");
    let (code, out) = node.explain();
    assert_eq!(code, 0, "{out}\n{}\n{}", b.source(), portal.log_text());

    // the older certificate's DN: the page's challenge signed with its key by the openssl
    // command line, pasted with the certificate, then linked with the account's password
    let (code, out) = node.explain_cert(&d.join("usercert.pem"));
    assert_ne!(code, 0, "not linked yet: {out}");
    assert!(out.contains(OLD_DN) && out.contains(NOT_MAPPED), "{out}");
    let challenge = b.text("#dn-challenge");
    let (code, signature, err) = run(Command::new("sh").arg("-c").arg(format!(
        "printf '%s' '{challenge}' | openssl dgst -sha256 -sign {}/userkey.pem | openssl base64",
        d.display()
    )));
    assert_eq!(code, 0, "{err}");
    b.fill("#signature", &signature);
    b.fill("#certificates", &read(&d.join("usercert.pem")));
    b.screenshot("dn-proof-form");
    b.click("form[action='/dn'] button[type=submit]");
    wait_for_text(&b, "You proved the certificate DN");
    assert!(b.source().contains(OLD_DN), "{}", b.source());
    b.screenshot("dn-proved");
    b.fill("#account", ACCOUNT);
    b.fill("#password", PASSWORD);
    b.click("form[action='/link'] button[type=submit]");
    wait_for_text(&b, "Linked to");
    assert!(
        read(&export.join("grid-mapfile")).contains(&format!("\"{OLD_DN}\" {ACCOUNT}\n")),
        "{}",
        read(&export.join("grid-mapfile"))
    );
    let (code, out) = node.explain_cert(&d.join("usercert.pem"));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(ACCOUNT), "{out}");
    let cert_text = read(&d.join("usercert.pem"));
    let pasted = [
        &signature.lines().next().unwrap()[..40],
        &cert_text.lines().nth(2).unwrap()[..40],
    ];
    for piece in pasted {
        assert!(
            !portal.log_text().contains(piece),
            "what the user pastes is never logged: {piece}"
        );
    }

    b.click("form[action='/logout'] button");
    b.wait_for("a[href='/login']");
    b.delete_all_cookies();

    b.goto(&format!("{}/login", portal.base));
    provider_login(&b, "admin", "admin");
    b.wait_for("nav a[href='/admin']");
    b.click("nav a[href='/admin']");
    b.wait_for("#admin-links");
    b.screenshot("admin");
    // the row of alice's token identity
    let rows = b.find_all_text("#admin-links tbody tr");
    let row = rows
        .iter()
        .position(|r| r.contains("Token identity") && r.contains("alice"))
        .unwrap_or_else(|| panic!("no token row for alice: {rows:?}"));
    let form = format!(
        "#admin-links tbody tr:nth-child({}) form[action='/admin/suspend']",
        row + 1
    );
    b.fill(&format!("{form} input[name=reason]"), "lost laptop");
    b.click(&format!("{form} button"));
    wait_for_text(&b, "lost laptop");
    b.wait_for("#suspensions");
    b.screenshot("admin-suspended");
    let (code, out) = node.explain();
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("suspended"), "{out}");
    b.click("a[href='/admin/audit']");
    b.wait_for("#audit");
    let audit = b.source();
    for action in ["link", "unlink", "suspend"] {
        assert!(
            audit.contains(&format!("<td>{action}</td>")),
            "{action}: {audit}"
        );
    }
    b.screenshot("audit");

    // the proof is rate-limited per account and identity: five wrong passwords, then even the
    // right one is refused (and PAM is not asked); a system account is refused whatever the
    // password, with the answer a wrong password gets (the log says why)
    b.goto(&format!("{}/", portal.base));
    for attempt in 1..=6 {
        b.wait_for("#account");
        b.fill("#account", OTHER);
        b.fill("#password", if attempt == 6 { PASSWORD } else { "guess" });
        b.click("form[action='/link'] button[type=submit]");
        wait_for_text(&b, "Account not proved");
        let page = b.source();
        if attempt == 6 {
            assert!(page.contains("too many failed attempts"), "{page}");
            b.screenshot("rate-limited");
        } else {
            assert!(
                page.contains("That account and password do not match."),
                "attempt {attempt}: {page}"
            );
        }
        b.goto(&format!("{}/", portal.base));
    }
    b.wait_for("#account");
    b.fill("#account", "daemon");
    b.fill("#password", PASSWORD);
    b.click("form[action='/link'] button[type=submit]");
    wait_for_text(&b, "That account and password do not match.");
    assert!(
        portal
            .log_text()
            .contains("system accounts cannot be linked"),
        "{}",
        portal.log_text()
    );
    assert!(!read(&export.join("token-mapfile")).contains(OTHER));
}
