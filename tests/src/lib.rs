//! Shared helpers for the end-to-end tests against real peers.
//!
//! A test whose peer is missing skips with a printed reason, so that `cargo test` passes on a
//! bare machine; CI sets `HPCCERT_E2E_REQUIRED=1`, which turns every such skip into a failure.
#![forbid(unsafe_code)]
// Test support: a failed helper is a failed test.
#![allow(clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod browser;

/// Whether `program` can be run; when it cannot and peers are required, panic.
pub fn peer_available(program: &str, package: &str) -> bool {
    let found = on_path(program);
    if !found {
        skip(&format!("{program} not found (Debian package {package})"));
    }
    found
}

/// Run a command; return (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Write `data` with the given mode.
pub fn write_mode(path: &Path, data: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The value, or a panic that says what failed (test support: a failure is a failed test).
pub trait OrFail<T> {
    fn or_fail(self, what: &str) -> T;
}

impl<T, E: std::fmt::Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, what: &str) -> T {
        self.unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}

impl<T> OrFail<T> for Option<T> {
    fn or_fail(self, what: &str) -> T {
        self.unwrap_or_else(|| panic!("{what}: missing"))
    }
}

/// Whether `HPCCERT_E2E_REQUIRED=1` (CI): a missing peer is then a failure, not a skip.
pub fn required() -> bool {
    std::env::var("HPCCERT_E2E_REQUIRED").is_ok_and(|v| v == "1")
}

/// Print a skip; a failure when peers are required.
pub fn skip(msg: &str) {
    assert!(!required(), "{msg}, and HPCCERT_E2E_REQUIRED=1");
    eprintln!("SKIPPED: {msg}");
}

/// A shared library of a Debian package, or a skip (a failure under HPCCERT_E2E_REQUIRED=1).
pub fn library(name: &str, package: &str) -> Option<PathBuf> {
    let found = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ]
    .iter()
    .map(|d| Path::new(d).join(name))
    .find(|p| p.is_file());
    if found.is_none() {
        skip(&format!("{name} not found (Debian package {package})"));
    }
    found
}

/// A module cargo built for this test run (`libpam_hpccert.so`, `libnss_hpccert.so`: their
/// crates are dev-dependencies of this one, so cargo builds them next to the test binaries).
pub fn built_library(file: &str) -> PathBuf {
    let exe = std::env::current_exe().or_fail("current_exe");
    let deps = exe.parent().or_fail("the test binary's directory");
    [deps.join(file), deps.join("..").join(file)]
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{file} not found in {} (its crate is a dev-dependency of this one, so cargo should have built it)",
                deps.display()
            )
        })
}

/// The PAM module cargo built for this test run.
pub fn built_module() -> PathBuf {
    built_library("libpam_hpccert.so")
}

/// The workspace's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .or_fail("the tests crate is inside the workspace")
        .to_path_buf()
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// `$HPCCERT_E2E_PYTHON`, else `<repo>/.venv-e2e/bin/python` (not resolved: a venv's
/// `python` is a symlink, its scripts are next to the link).
pub fn python_path() -> PathBuf {
    std::env::var_os("HPCCERT_E2E_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv-e2e/bin/python"))
}

/// The end-to-end tests' Python when it can `import modules` (`"asyncssh, OpenSSL"`); a
/// printed skip otherwise.
pub fn python_with(modules: &str) -> Option<PathBuf> {
    let python = python_path();
    let ok = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    skip(&format!(
        "Python modules {modules} not importable by {} (set HPCCERT_E2E_PYTHON, or: python3 -m venv .venv-e2e && .venv-e2e/bin/pip install 'asyncssh[pyOpenSSL]' paramiko)",
        python.display()
    ));
    None
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective uid).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A loopback port that was free a moment ago (bound to 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .or_fail("binding a loopback port")
        .port()
}

/// A real OpenID provider as a peer: panva's `oidc-provider` (npm, v9) on loopback, from
/// `tests/oidc/provider.mjs` (see its header for the clients, claims and options).
pub mod oidc {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;

    use super::browser::Browser;
    use super::{OrFail, peer_available, skip, write_mode};

    /// The one resource the provider mints tokens for (their `aud`).
    pub const AUDIENCE: &str = "https://login.example.org";
    /// The confidential client (client credentials): id and secret. The `sub` of its tokens
    /// is the client id.
    pub const ROBOT: (&str, &str) = ("hpc-robot", "robot-secret");
    /// The public native client: authorization code + PKCE S256, and the device
    /// authorization grant (RFC 8628).
    pub const CLI_CLIENT: &str = "hpc-cli";
    /// A registered redirect URI of [`CLI_CLIENT`]. The client is native, so any port of it is
    /// accepted too (RFC 8252 7.3): `http://127.0.0.1:PORT/callback`.
    pub const CLI_REDIRECT: &str = "http://127.0.0.1/callback";
    /// The other registered redirect URI of [`CLI_CLIENT`], for a loopback listener on any
    /// port: `http://127.0.0.1:PORT/` (what `hpccert login` uses). Only the port may differ:
    /// another path, `localhost` or `[::1]` is refused.
    pub const CLI_LOOPBACK: &str = "http://127.0.0.1/";
    /// The grant type of the device authorization grant (RFC 8628 3.4).
    pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
    /// The polling interval (seconds) the device authorization answer names unless the
    /// provider was started with `--device-interval N` (RFC 8628's default).
    pub const DEVICE_INTERVAL: u64 = 5;
    /// What a `slow_down` answer adds to a device code's interval (seconds, RFC 8628 3.5).
    pub const SLOW_DOWN_STEP: u64 = 5;
    /// The confidential client that authenticates with an RFC 7523 `private_key_jwt`
    /// assertion (client credentials). It exists only when the provider was started with
    /// `--robot-jwks PATH` (its public JWKS; see [`write_client_key`]). The `sub` of its tokens
    /// is the client id.
    pub const ROBOT_JWT_CLIENT: &str = "hpc-robot-jwt";
    /// The `client_assertion_type` of a JWT client assertion (RFC 7523 2.2).
    pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    /// The scope every token request asks for (and the provider grants).
    pub const SCOPE: &str = "compute.create storage.read:/home";
    /// The confidential web client (authorization code + PKCE, client_secret_basic): id and
    /// secret. Its redirect URIs are given with `--portal-redirect URL` (repeatable).
    pub const PORTAL: (&str, &str) = ("hpc-portal", "portal-secret");
    /// The scopes the portal client may ask for (CILogon's).
    pub const PORTAL_SCOPE: &str = "openid email profile org.cilogon.userinfo";

    /// The claims the provider gives the account with login name `login` (all its scopes
    /// granted), as in `provider.mjs`: CILogon-like, with a certificate subject DN whose
    /// serial is derived from the login name (FNV-1a), so a test knows it in advance.
    pub fn account_claims(login: &str) -> serde_json::Value {
        serde_json::json!({
            "sub": login,
            "email": format!("{login}@example.org"),
            "email_verified": true,
            "name": format!("Test User {login}"),
            "given_name": "Test User",
            "family_name": login,
            "eppn": format!("{login}@example.org"),
            "idp": "https://idp.example.org/idp/shibboleth",
            "idp_name": "Example University",
            "cert_subject_dn": account_dn(login),
            "isMemberOf": ["/hpc/users"],
        })
    }

    /// The `cert_subject_dn` of the account with login name `login` (OpenSSL's one-line
    /// form, as CILogon gives it).
    pub fn account_dn(login: &str) -> String {
        let hash = login.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        format!(
            "/DC=org/DC=cilogon/C=US/O=Example University/CN=Test User {login} A{:07}",
            hash % 10_000_000
        )
    }

    /// `tests/oidc`: the provider script and its `node_modules`.
    pub fn oidc_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
    }

    /// node and the installed provider, or a printed skip (a failure when peers are required).
    pub fn provider_available() -> bool {
        if !peer_available("node", "nodejs") {
            return false;
        }
        let module = oidc_dir().join("node_modules").join("oidc-provider");
        if module.is_dir() {
            return true;
        }
        skip(&format!(
            "{} missing (run `cd tests/oidc && npm ci`)",
            module.display()
        ));
        false
    }

    /// A private RSA JWKS with one signing key `kid`, written for the provider (mode 0600).
    pub fn write_jwks(path: &Path, kid: &str) {
        let rsa = openssl::rsa::Rsa::generate(2048).or_fail("RSA key");
        write_jwks_keys(path, &[rsa_jwk(&rsa, kid, true)]);
    }

    /// The JWK (RS256 signing) of an RSA key; with its private members when `private`.
    fn rsa_jwk(
        rsa: &openssl::rsa::RsaRef<openssl::pkey::Private>,
        kid: &str,
        private: bool,
    ) -> serde_json::Value {
        let b = |n: &openssl::bn::BigNumRef| B64URL.encode(n.to_vec());
        let mut jwk = serde_json::json!({
            "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": b(rsa.n()), "e": b(rsa.e()),
        });
        if private {
            let members = [
                ("d", rsa.d()),
                ("p", rsa.p().or_fail("p")),
                ("q", rsa.q().or_fail("q")),
                ("dp", rsa.dmp1().or_fail("dp")),
                ("dq", rsa.dmq1().or_fail("dq")),
                ("qi", rsa.iqmp().or_fail("qi")),
            ];
            for (name, n) in members {
                jwk[name] = b(n).into();
            }
        }
        jwk
    }

    /// The kind of key a `private_key_jwt` client signs its assertions with.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum KeyKind {
        /// RSA 2048, RS256.
        Rsa,
        /// EC P-256, ES256.
        EcP256,
    }

    /// A `private_key_jwt` client's key, as written by [`write_client_key`].
    #[derive(Debug, Clone)]
    pub struct ClientKey {
        /// The private key, PKCS#8 PEM (`BEGIN PRIVATE KEY`), mode 0600.
        pub pem: PathBuf,
        /// The public JWKS with the one key, for `provider.mjs --robot-jwks PATH`.
        pub jwks: PathBuf,
        /// The key's `kid` in the JWKS.
        pub kid: String,
        /// `RS256` or `ES256`.
        pub alg: &'static str,
    }

    impl ClientKey {
        /// The private key.
        pub fn private_key(&self) -> openssl::pkey::PKey<openssl::pkey::Private> {
            let pem = std::fs::read(&self.pem).or_fail("reading the client key");
            openssl::pkey::PKey::private_key_from_pem(&pem).or_fail("the client key")
        }
    }

    /// A new key pair for [`ROBOT_JWT_CLIENT`]: the private key as `dir/<kid>.pem` (PKCS#8 PEM,
    /// mode 0600) and its public JWKS as `dir/<kid>.jwks.json` (one key, `kid`, `use` sig,
    /// `alg` RS256 or ES256), to give the provider as `--robot-jwks`.
    pub fn write_client_key(dir: &Path, kid: &str, kind: KeyKind) -> ClientKey {
        let (pkey, jwk, alg) = match kind {
            KeyKind::Rsa => {
                let rsa = openssl::rsa::Rsa::generate(2048).or_fail("RSA key");
                let jwk = rsa_jwk(&rsa, kid, false);
                let pkey = openssl::pkey::PKey::from_rsa(rsa).or_fail("RSA key");
                (pkey, jwk, "RS256")
            }
            KeyKind::EcP256 => {
                use openssl::bn::{BigNum, BigNumContext};
                use openssl::ec::{EcGroup, EcKey};
                let group =
                    EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).or_fail("P-256");
                let ec = EcKey::generate(&group).or_fail("EC key");
                let (mut x, mut y) = (
                    BigNum::new().or_fail("bignum"),
                    BigNum::new().or_fail("bignum"),
                );
                let mut ctx = BigNumContext::new().or_fail("bignum context");
                ec.public_key()
                    .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
                    .or_fail("EC public key");
                let coordinate =
                    |n: &BigNum| B64URL.encode(n.to_vec_padded(32).or_fail("32 bytes"));
                let jwk = serde_json::json!({
                    "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                    "x": coordinate(&x), "y": coordinate(&y),
                });
                let pkey = openssl::pkey::PKey::from_ec_key(ec).or_fail("EC key");
                (pkey, jwk, "ES256")
            }
        };
        let key = ClientKey {
            pem: dir.join(format!("{kid}.pem")),
            jwks: dir.join(format!("{kid}.jwks.json")),
            kid: kid.to_string(),
            alg,
        };
        let pem = pkey.private_key_to_pem_pkcs8().or_fail("PKCS#8 PEM");
        write_mode(&key.pem, &pem, 0o600);
        write_jwks_keys(&key.jwks, &[jwk]);
        key
    }

    /// An RFC 7523 client assertion of `client_id` for `audience` (the token endpoint or the
    /// issuer), signed with `key`: iss = sub = the client, a fresh jti, valid 5 minutes.
    pub fn client_assertion(key: &ClientKey, client_id: &str, audience: &str) -> String {
        let now = hpccert_core::clock::unix_seconds(hpccert_core::clock::now());
        let header = serde_json::json!({ "alg": key.alg, "typ": "JWT", "kid": key.kid });
        let claims = serde_json::json!({
            "iss": client_id, "sub": client_id, "aud": audience,
            "iat": now, "exp": now + 300, "jti": B64URL.encode(random_bytes(16)),
        });
        let part = |v: &serde_json::Value| B64URL.encode(v.to_string());
        let input = format!("{}.{}", part(&header), part(&claims));
        let pkey = key.private_key();
        let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey)
            .or_fail("signer");
        signer.update(input.as_bytes()).or_fail("signing");
        let der = signer.sign_to_vec().or_fail("signing");
        let signature = if key.alg == "ES256" {
            // JWS ES256 is r || s, 32 bytes each, not OpenSSL's DER
            let sig = openssl::ecdsa::EcdsaSig::from_der(&der).or_fail("ECDSA signature");
            let mut raw = sig.r().to_vec_padded(32).or_fail("r");
            raw.extend(sig.s().to_vec_padded(32).or_fail("s"));
            raw
        } else {
            der
        };
        format!("{input}.{}", B64URL.encode(signature))
    }

    pub fn write_jwks_keys(path: &Path, keys: &[serde_json::Value]) {
        let doc = serde_json::json!({ "keys": keys });
        write_mode(path, &serde_json::to_vec(&doc).or_fail("JWKS"), 0o600);
    }

    pub fn read_jwks_keys(path: &Path) -> Vec<serde_json::Value> {
        let text = std::fs::read(path).or_fail("reading the JWKS");
        let doc: serde_json::Value = serde_json::from_slice(&text).or_fail("JWKS");
        doc["keys"].as_array().or_fail("JWKS keys").clone()
    }

    /// The claims of a token, unverified (to see what the provider minted).
    pub fn claims(token: &str) -> serde_json::Value {
        let payload = token.split('.').nth(1).or_fail("a JWT payload");
        let json = B64URL.decode(payload).or_fail("base64url payload");
        serde_json::from_slice(&json).or_fail("JSON payload")
    }

    pub fn random_bytes(n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        openssl::rand::rand_bytes(&mut buf).or_fail("random bytes");
        buf
    }

    /// `node tests/oidc/provider.mjs` on a fixed loopback port; killed on drop.
    #[derive(Debug)]
    pub struct Provider {
        child: Option<Child>,
        port: u16,
        log: PathBuf,
    }

    impl Provider {
        /// Start the provider signing with the private JWKS `jwks`; its stderr goes to
        /// `dir/provider-PORT.log`. Returns once it listens.
        pub fn start(dir: &Path, port: u16, jwks: &Path) -> Self {
            Self::start_with(dir, port, jwks, &[])
        }

        /// [`Provider::start`] with more options for `provider.mjs` (e.g. `["--groups", "44"]`).
        pub fn start_with(dir: &Path, port: u16, jwks: &Path, options: &[&str]) -> Self {
            let log = dir.join(format!("provider-{port}.log"));
            // the port was free a moment ago (or was ours before a restart): retry briefly if not
            for attempt in 0..10 {
                let stderr = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .or_fail("the provider's log");
                let mut child = Command::new("node")
                    .arg(oidc_dir().join("provider.mjs"))
                    .arg("--port")
                    .arg(port.to_string())
                    .arg("--jwks")
                    .arg(jwks)
                    .args(options)
                    .current_dir(oidc_dir())
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(stderr)
                    .spawn()
                    .or_fail("cannot start node");
                let stdout = child.stdout.take().or_fail("the provider's stdout");
                let (tx, rx) = mpsc::channel();
                std::thread::spawn(move || {
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        // once nobody listens, keep draining so that the provider never blocks
                        let _ = tx.send(line);
                    }
                });
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(line) if line.starts_with("READY ") => {
                            let provider = Self {
                                child: Some(child),
                                port,
                                log,
                            };
                            assert_eq!(line, format!("READY {}", provider.issuer()));
                            return provider;
                        }
                        Ok(_) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            let _ = child.kill();
                            let _ = child.wait();
                            panic!(
                                "provider not ready after 30 s:\n{}",
                                std::fs::read_to_string(&log).unwrap_or_default()
                            );
                        }
                    }
                }
                // stdout closed before READY: the provider exited (port taken?)
                let status = child.wait().or_fail("waiting for the provider");
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if attempt < 9 && text.contains("EADDRINUSE") {
                    std::thread::sleep(Duration::from_millis(300));
                    continue;
                }
                panic!("provider exited ({status}) before it was ready:\n{text}");
            }
            unreachable!("the loop returns or panics")
        }

        /// What the provider wrote on stderr (for failure messages).
        pub fn log_text(&self) -> String {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }

        pub fn issuer(&self) -> String {
            format!("http://127.0.0.1:{}", self.port)
        }

        /// Kill the provider (and wait for it); nothing listens on its port afterwards.
        pub fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        /// An HTTP client that does not follow redirects.
        pub fn http() -> reqwest::blocking::Client {
            reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(20))
                .build()
                .or_fail("HTTP client")
        }

        /// The access token from a token endpoint answer (checked; a refusal fails the test).
        pub fn token_request(&self, req: reqwest::blocking::RequestBuilder) -> String {
            self.token_request_with(req, SCOPE)
        }

        /// The same, the answer naming `scope`.
        pub fn token_request_with(
            &self,
            req: reqwest::blocking::RequestBuilder,
            scope: &str,
        ) -> String {
            let resp = req.send().or_fail("token request");
            let status = resp.status();
            let bytes = resp.bytes().or_fail("token response");
            let body: serde_json::Value = serde_json::from_slice(&bytes).or_fail("token JSON");
            assert!(
                status.is_success(),
                "token endpoint said {status}: {body}\n{}",
                self.log_text()
            );
            assert_eq!(body["token_type"], "Bearer", "{body}");
            assert_eq!(body["scope"], scope, "{body}");
            body["access_token"]
                .as_str()
                .or_fail("access_token")
                .to_string()
        }

        /// Client credentials (a confidential client) for the resource `AUDIENCE`.
        pub fn client_credentials(&self) -> String {
            self.client_credentials_for(SCOPE)
        }

        /// The same asking for `scope` (the provider must offer it: `--scope`).
        pub fn client_credentials_for(&self, scope: &str) -> String {
            let req = Self::http()
                .post(format!("{}/token", self.issuer()))
                .basic_auth(ROBOT.0, Some(ROBOT.1))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("resource", AUDIENCE),
                    ("scope", scope),
                ]);
            self.token_request_with(req, scope)
        }

        /// Client credentials of [`ROBOT_JWT_CLIENT`] for the resource `AUDIENCE`, the client
        /// authenticated by an RFC 7523 assertion signed with `key` for the token endpoint
        /// (the provider must run with `--robot-jwks key.jwks`).
        pub fn private_key_jwt_credentials(&self, key: &ClientKey) -> String {
            let token_endpoint = format!("{}/token", self.issuer());
            let assertion = client_assertion(key, ROBOT_JWT_CLIENT, &token_endpoint);
            let req = Self::http().post(token_endpoint).form(&[
                ("grant_type", "client_credentials"),
                ("resource", AUDIENCE),
                ("scope", SCOPE),
                ("client_assertion_type", JWT_BEARER_ASSERTION),
                ("client_assertion", &assertion),
            ]);
            self.token_request(req)
        }

        /// Authorization code + PKCE S256 as a public client: the authorization endpoint, the
        /// provider's login and consent forms (as a browser would post them, logging in as
        /// `login`, which becomes the token's `sub`), then the token endpoint with the code
        /// verifier. Also checks that the code needs the right verifier and is single use.
        pub fn code_flow(&self, login: &str) -> String {
            let http = Self::http();
            let verifier = B64URL.encode(random_bytes(32));
            let challenge = B64URL.encode(openssl::sha::sha256(verifier.as_bytes()));
            let state = B64URL.encode(random_bytes(12));
            let auth = reqwest::Url::parse_with_params(
                &format!("{}/auth", self.issuer()),
                &[
                    ("client_id", CLI_CLIENT),
                    ("response_type", "code"),
                    ("redirect_uri", CLI_REDIRECT),
                    ("scope", &format!("openid {SCOPE}")),
                    ("resource", AUDIENCE),
                    ("code_challenge", &challenge),
                    ("code_challenge_method", "S256"),
                    ("state", &state),
                ],
            )
            .or_fail("authorization URL");
            let callback = browse(&http, auth, login);
            let query: BTreeMap<String, String> = callback.query_pairs().into_owned().collect();
            assert_eq!(query.get("state"), Some(&state), "{callback}");
            // RFC 9207: the authorization response names its issuer
            assert_eq!(query.get("iss"), Some(&self.issuer()), "{callback}");
            let code = query
                .get("code")
                .unwrap_or_else(|| panic!("no code: {callback}"));

            let redeem = |v: &str| {
                http.post(format!("{}/token", self.issuer())).form(&[
                    ("grant_type", "authorization_code"),
                    ("client_id", CLI_CLIENT),
                    ("code", code.as_str()),
                    ("redirect_uri", CLI_REDIRECT),
                    ("resource", AUDIENCE),
                    ("code_verifier", v),
                ])
            };
            let refused = |req: reqwest::blocking::RequestBuilder| {
                let resp = req.send().or_fail("token request");
                let status = resp.status();
                let bytes = resp.bytes().or_fail("token response");
                let body: serde_json::Value = serde_json::from_slice(&bytes).or_fail("JSON");
                assert_eq!(status.as_u16(), 400, "{body}");
                assert_eq!(body["error"], "invalid_grant", "{body}");
            };
            // the code is bound to the challenge: another verifier does not redeem it
            refused(redeem(&B64URL.encode(random_bytes(32))));
            let token = self.token_request(redeem(&verifier));
            // and it is single use
            refused(redeem(&verifier));
            token
        }
    }

    impl Drop for Provider {
        fn drop(&mut self) {
            self.stop();
        }
    }

    /// A minimal cookie jar: (name, path) -> value, sent where the path matches.
    #[derive(Default)]
    struct Cookies(BTreeMap<(String, String), String>);

    impl Cookies {
        fn store(&mut self, resp: &reqwest::blocking::Response) {
            for header in resp.headers().get_all(reqwest::header::SET_COOKIE) {
                let text = header.to_str().or_fail("Set-Cookie");
                let mut parts = text.split(';').map(str::trim);
                let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else {
                    continue;
                };
                let path = parts
                    .filter_map(|a| a.split_once('='))
                    .find(|(k, _)| k.eq_ignore_ascii_case("path"))
                    .map_or("/", |(_, v)| v)
                    .to_string();
                let key = (name.to_string(), path);
                if value.is_empty() {
                    self.0.remove(&key); // koa deletes a cookie by setting it empty and expired
                } else {
                    self.0.insert(key, value.to_string());
                }
            }
        }

        fn header(&self, url: &reqwest::Url) -> String {
            self.0
                .iter()
                .filter(|((_, path), _)| url.path().starts_with(path.as_str()))
                .map(|((name, _), value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join("; ")
        }
    }

    /// The value of `attr="..."` in the first tag of `html` that has it after `from`.
    fn html_attr<'a>(html: &'a str, from: &str, attr: &str) -> Option<&'a str> {
        let start = html.find(from)?;
        let rest = &html[start..];
        let at = rest.find(&format!("{attr}=\""))? + attr.len() + 2;
        let end = rest[at..].find('"')?;
        Some(&rest[at..at + end])
    }

    /// Follow the authorization request through the provider's pages until it redirects to
    /// the client: log in as `login` (any password), consent, and return the callback URL.
    fn browse(http: &reqwest::blocking::Client, start: reqwest::Url, login: &str) -> reqwest::Url {
        let mut cookies = Cookies::default();
        let mut url = start;
        let mut form: Option<Vec<(&str, &str)>> = None;
        let mut pages = Vec::new();
        for _ in 0..12 {
            let mut req = match &form {
                Some(f) => http.post(url.clone()).form(f),
                None => http.get(url.clone()),
            };
            let jar = cookies.header(&url);
            if !jar.is_empty() {
                req = req.header(reqwest::header::COOKIE, jar);
            }
            let resp = req.send().or_fail("provider page");
            cookies.store(&resp);
            let status = resp.status();
            if status.is_redirection() {
                let location = resp.headers()[reqwest::header::LOCATION]
                    .to_str()
                    .or_fail("Location");
                let next = url.join(location).or_fail("redirect URL");
                if next.as_str().starts_with(CLI_REDIRECT) {
                    assert_eq!(pages, ["login", "consent"], "the provider's pages");
                    return next;
                }
                url = next;
                form = None;
                continue;
            }
            let body = resp.text().or_fail("provider page");
            assert!(status.is_success(), "{url}: HTTP {status}\n{body}");
            let action = html_attr(&body, "<form", "action")
                .unwrap_or_else(|| panic!("{url}: no form\n{body}"));
            let prompt = html_attr(&body, "name=\"prompt\"", "value")
                .unwrap_or_else(|| panic!("{url}: no prompt\n{body}"));
            pages.push(prompt.to_string());
            url = url.join(action).or_fail("form action");
            form = Some(match prompt {
                "login" => vec![("prompt", "login"), ("login", login), ("password", "any")],
                "consent" => {
                    // the consent page lists what the client asks for this resource
                    assert!(body.contains(AUDIENCE), "{body}");
                    assert!(body.contains("compute.create"), "{body}");
                    vec![("prompt", "consent")]
                }
                other => panic!("unexpected prompt {other}"),
            });
        }
        panic!("no redirect to the client after the pages {pages:?}");
    }

    // The provider's pages in a real browser (`hpccert_e2e::browser`): the development login
    // and consent pages (features.devInteractions) and the device flow's own pages.

    /// The development login page's login field.
    const LOGIN_PAGE: &str = "input[name=login]";
    /// The consent page's hidden prompt field.
    const CONSENT_PAGE: &str = "input[name=prompt][value=consent]";
    /// The "[ Cancel ]" link of the login and consent pages (`/interaction/UID/abort`): the
    /// interaction ends with access_denied.
    const CANCEL_LINK: &str = "a[href$='/abort']";
    /// The device confirmation page's buttons (outside their form `op.deviceConfirmForm`).
    const DEVICE_CONTINUE: &str = "button[autofocus][form='op.deviceConfirmForm']";
    const DEVICE_ABORT: &str = "button[name=abort][form='op.deviceConfirmForm']";
    /// The device pages' error line (`<p class="red">`), e.g. "The Sign-in request was
    /// interrupted" after a refusal.
    const DEVICE_ERROR: &str = "p.red";
    /// How long a flow through the provider's pages may take in all.
    const PAGES_WAIT: Duration = Duration::from_secs(30);

    fn fill_login(b: &Browser, login: &str) {
        b.fill("input[name=login]", login);
        b.fill("input[name=password]", "any password");
    }

    /// Log in at the provider's development login page as `login` (any password), then
    /// consent at its consent page, as a person does; screenshots `<shot>-provider-login` and
    /// `<shot>-provider-consent`. Both pages must come (a fresh browser session).
    pub fn provider_login(b: &Browser, login: &str, shot: &str) {
        b.wait_for(LOGIN_PAGE);
        fill_login(b, login);
        b.screenshot(&format!("{shot}-provider-login"));
        b.submit_form("form");
        b.wait_for(CONSENT_PAGE);
        assert_eq!(b.text("h1"), "Authorize");
        b.screenshot(&format!("{shot}-provider-consent"));
        b.submit_form("form");
    }

    /// What to do at the consent page.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum AtConsent {
        Consent,
        /// Follow "[ Cancel ]": the user refuses.
        Cancel,
    }

    /// Wait until the browser has left the page at `url` (a form was sent): the next look at
    /// the page must not see the old one still in place.
    fn left_page(b: &Browser, url: &str) {
        let deadline = Instant::now() + PAGES_WAIT;
        while b.current_url() == url && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Go through the provider's login and consent pages as they come until `done` says the
    /// flow left them: log in as `login` when asked (a browser whose provider session is still
    /// alive is not), and consent or cancel at the consent page (not shown when an earlier
    /// grant of this browser's session covers the request). Returns the pages seen.
    fn through_pages(
        b: &Browser,
        login: &str,
        shot: &str,
        at_consent: AtConsent,
        done: &dyn Fn(&Browser) -> bool,
    ) -> Vec<&'static str> {
        let deadline = Instant::now() + PAGES_WAIT;
        let mut pages = Vec::new();
        loop {
            if done(b) {
                return pages;
            }
            assert!(
                pages.len() < 4,
                "the provider's pages go round: {pages:?}\n(at {})\n{}",
                b.current_url(),
                b.body_excerpt()
            );
            if b.is_present(LOGIN_PAGE) {
                fill_login(b, login);
                b.screenshot(&format!("{shot}-provider-login"));
                let before = b.current_url();
                b.submit_form("form");
                left_page(b, &before);
                pages.push("login");
                continue;
            }
            if b.is_present(CONSENT_PAGE) {
                assert_eq!(b.text("h1"), "Authorize");
                b.screenshot(&format!("{shot}-provider-consent"));
                let before = b.current_url();
                match at_consent {
                    AtConsent::Consent => b.submit_form("form"),
                    AtConsent::Cancel => b.click(CANCEL_LINK),
                }
                left_page(b, &before);
                pages.push("consent");
                continue;
            }
            // the provider's errors are JSON (renderError), shown as text: no use waiting
            let source = b.source();
            if !b.is_present("form") && source.contains("\"error\"") {
                panic!(
                    "the provider refused after the pages {pages:?}\n(at {})\n{}",
                    b.current_url(),
                    b.body_excerpt()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the provider's pages did not finish after {PAGES_WAIT:?} (pages {pages:?})\n(at {})\n{}",
                b.current_url(),
                b.body_excerpt()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Open the device flow's `verification_uri_complete` (its `user_code` parameter fills in
    /// the code) and wait for the confirmation page, which must show that code.
    fn open_device_confirmation(b: &Browser, verification_uri_complete: &str) {
        let url = reqwest::Url::parse(verification_uri_complete).or_fail("verification URI");
        let user_code = url
            .query_pairs()
            .find(|(k, _)| k == "user_code")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no user_code in {verification_uri_complete}"));
        b.goto(verification_uri_complete);
        // a page that posts the code by script, then the confirmation page
        b.wait_for(DEVICE_CONTINUE);
        assert_eq!(b.text("h1"), "Confirm Device");
        assert_eq!(b.text("code"), user_code, "the code the provider shows");
        b.screenshot("device-confirm");
    }

    /// The device flow's error line, when the page shows one.
    fn device_error(b: &Browser) -> Option<String> {
        b.is_present(DEVICE_ERROR).then(|| b.text(DEVICE_ERROR))
    }

    /// The user's side of a device login (RFC 8628) in a browser: open
    /// `verification_uri_complete` (as the device flow printed it), check that the page shows
    /// its user code and confirm it, log in as `login` at the development login page (any
    /// password; skipped when the browser is still logged in at the provider), consent, and
    /// wait for the provider's "Sign-in Success" page. The device's next poll then gets its
    /// tokens. Screenshots `device-confirm`, `device-provider-login`,
    /// `device-provider-consent` and `device-success`.
    pub fn complete_device_flow(b: &Browser, verification_uri_complete: &str, login: &str) {
        open_device_confirmation(b, verification_uri_complete);
        b.click(DEVICE_CONTINUE);
        let pages = through_pages(b, login, "device", AtConsent::Consent, &|b| {
            b.title() == "Sign-in Success" || b.is_present(DEVICE_ERROR)
        });
        if let Some(error) = device_error(b) {
            panic!("the device login failed after the pages {pages:?}: {error}");
        }
        assert_eq!(b.text("h1"), "Sign-in Success");
        b.screenshot("device-success");
    }

    /// A device login (RFC 8628) that the user refuses: as [`complete_device_flow`] up to the
    /// consent page, where the user follows "`[ Cancel ]`". The provider shows "The Sign-in
    /// request was interrupted" and the device's next poll gets `access_denied`. The browser
    /// must be asked for consent (a fresh browser, or one without a grant for the request).
    /// Screenshots `device-confirm`, `device-provider-login`, `device-provider-consent` and
    /// `device-denied`.
    pub fn deny_device_flow(b: &Browser, verification_uri_complete: &str, login: &str) {
        open_device_confirmation(b, verification_uri_complete);
        b.click(DEVICE_CONTINUE);
        let pages = through_pages(b, login, "device", AtConsent::Cancel, &|b| {
            b.title() == "Sign-in Success" || b.is_present(DEVICE_ERROR)
        });
        assert!(
            pages.contains(&"consent"),
            "the provider asked for no consent (pages {pages:?}): use a fresh browser"
        );
        let error = device_error(b).unwrap_or_else(|| {
            panic!(
                "no refusal shown after the pages {pages:?}\n{}",
                b.body_excerpt()
            )
        });
        assert_eq!(error, "The Sign-in request was interrupted");
        b.screenshot("device-denied");
    }

    /// A device login (RFC 8628) that the user aborts at once: "`[ Abort ]`" on the page that
    /// confirms the code (no login). The device's next poll gets `access_denied`.
    /// Screenshots `device-confirm` and `device-aborted`.
    pub fn abort_device_flow(b: &Browser, verification_uri_complete: &str) {
        open_device_confirmation(b, verification_uri_complete);
        b.click(DEVICE_ABORT);
        b.wait_for(DEVICE_ERROR);
        assert_eq!(b.text(DEVICE_ERROR), "The Sign-in request was interrupted");
        b.screenshot("device-aborted");
    }

    /// The user's side of an authorization code login in a browser: open `authorization_url`
    /// (as the client printed it), log in as `login` at the development login page (any
    /// password; skipped when the browser is still logged in at the provider), consent
    /// (skipped when an earlier grant covers the request), and wait until the provider has
    /// redirected the browser to the request's `redirect_uri` (e.g. a client's loopback
    /// listener `http://127.0.0.1:PORT/`, which then has the code). Returns the URL the
    /// browser shows there (the redirect with `code`, `state` and `iss`, unless the client's
    /// answer moved it on). Screenshots `code-provider-login`, `code-provider-consent` and
    /// `code-redirected`.
    pub fn complete_code_flow(b: &Browser, authorization_url: &str, login: &str) -> String {
        let url = reqwest::Url::parse(authorization_url).or_fail("authorization URL");
        let redirect = url
            .query_pairs()
            .find(|(k, _)| k == "redirect_uri")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no redirect_uri in {authorization_url}"));
        b.goto(authorization_url);
        through_pages(b, login, "code", AtConsent::Consent, &|b| {
            b.current_url().starts_with(&redirect)
        });
        b.screenshot("code-redirected");
        b.current_url()
    }
}

/// Serialises the tests of one test binary that start processes under pam_wrapper.
///
/// pam_wrapper gives each process a private copy of its service directory, `/tmp/pam.0` to
/// `/tmp/pam.z`, choosing the first name that `lstat` finds free and only then creating it:
/// two processes starting at the same moment can choose the same name, and one then reads the
/// other's services (seen here as a token "refused: bad signature" against another test's
/// keys). Hold the guard for as long as the test starts such processes.
pub fn pam_wrapper_serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
