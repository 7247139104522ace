//! pam_hpccert.so under a real OpenSSH `sshd` (Debian's 9.2, on loopback with its own
//! config), with access tokens from a real OpenID provider (panva's `oidc-provider`, started
//! once per test process), validated offline.
//!
//! The provider mints the tokens (client credentials, padded with `--groups` to about 2 KB;
//! authorization code for a second subject), its keys are fetched once through discovery
//! into the key cache (what `gridmap-tool keys refresh` does), and the provider is stopped
//! before any login: every login below is verified with the cached keys only.
//!
//! sshd runs with `UsePAM yes` and keyboard-interactive only, under pam_wrapper (a private
//! service directory, so the machine's /etc/pam.d stays as it is); its PAM service `sshd`
//! is the stack of packaging/pam.d/README's "token logins only" (pam_hpccert for auth and
//! account, pam_unix for account and session). Clients: paramiko (the whole token in one
//! answer), stock `ssh` through packaging/hpccert-askpass (three parts of at most 1000
//! bytes, joined by the module's continuation prompts), and pamtester on the same service.
//!
//! The module's own log lines (accepted, or the reason of a refusal) never reach sshd's log
//! here: OpenSSH runs keyboard-interactive PAM authentication in a child process that first
//! empties its environment (`environ[0] = NULL` in auth-pam.c's `sshpam_thread`; only `TZ`
//! is kept), so pam_wrapper in that child no longer sees `PAM_WRAPPER_DEBUGLEVEL` and prints
//! only `pam_syslog` lines of LOG_ERR and worse, while the module logs refusals at LOG_NOTICE
//! and acceptances at LOG_INFO (on a real system they go to syslog). So sshd's own lines
//! (`Accepted keyboard-interactive/pam`, `PAM: Authentication failure`) are checked in sshd's
//! log, and the module's reasons with pamtester on the same service and the same tokens.
//!
//! Needs root (sshd switches to the test account), the account `hpccert-e2e-alice`
//! (`.ci/run` creates it), openssh-server, openssh-client, pamtester, libpam-wrapper, node
//! with `tests/oidc/node_modules`, and `.venv-e2e` with paramiko (or `HPCCERT_E2E_PYTHON`);
//! without them the tests skip, unless `HPCCERT_E2E_REQUIRED=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hpccert_core::dev::token::DevKey;
use hpccert_core::token::JwsAlgorithm;
use hpccert_core::token::fetch::Fetcher;
use hpccert_core::token::keys::{CachedKeys, write_cached};
use hpccert_core::token::unix_seconds;
use hpccert_e2e::oidc::{AUDIENCE, Provider, ROBOT, claims, provider_available, write_jwks};
use hpccert_e2e::{
    built_module, free_port, is_root, library, peer_available, run, skip, write_mode,
};

/// The test account the robot's tokens map to.
const ACCOUNT: &str = "hpccert-e2e-alice";
/// The subject of the authorization-code token (the provider's login name): mapped to
/// [`OTHER_ACCOUNT`], so it must not log in as [`ACCOUNT`].
const OTHER_SUBJECT: &str = "bob";
const OTHER_ACCOUNT: &str = "nobody";
const PROMPT: &str = "Access token: ";
const SSHD: &str = "/usr/sbin/sshd";
/// Extra `wlcg.groups` entries that make a client-credentials token about 2 KB.
const GROUPS: &str = "44";

// ---------------------------------------------------------------------------------------------
// the provider's tokens and keys, once per test process

/// What the provider minted and published, kept after it stopped.
struct Minted {
    issuer: String,
    /// The provider's keys as `gridmap-tool keys refresh` fetched them (discovery, jwks_uri).
    keys: CachedKeys,
    /// Client credentials of `hpc-robot`, about 2 KB.
    robot: String,
    /// Authorization code + PKCE, logged in as [`OTHER_SUBJECT`].
    other: String,
}

fn mint() -> Minted {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    write_jwks(&jwks, "hpccert-openssh-pam");
    let port = free_port();
    let mut provider = Provider::start_with(dir.path(), port, &jwks, &["--groups", GROUPS]);
    let issuer = provider.issuer();
    let robot = provider.client_credentials();
    let other = provider.code_flow(OTHER_SUBJECT);
    let fetcher = Fetcher::new(Duration::from_secs(5)).unwrap();
    let (keys, set) = fetcher
        .fetch(&issuer, None, unix_seconds(hpccert_core::clock::now()))
        .unwrap();
    assert!(set.has_kid("hpccert-openssh-pam"));
    assert_eq!(keys.source, format!("{issuer}/jwks"));
    provider.stop();
    // nothing answers at the issuer any more: whatever accepts below did it offline
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the provider still listens"
    );

    // what the provider minted: the client-credentials sub is the client id
    let c = claims(&robot);
    assert_eq!(c["iss"], issuer.as_str(), "{c}");
    assert_eq!(c["sub"], ROBOT.0, "{c}");
    assert_eq!(c["aud"], AUDIENCE, "{c}");
    assert_eq!(c["wlcg.groups"].as_array().unwrap().len(), 46, "{c}");
    assert!(
        (2048..=2200).contains(&robot.len()),
        "the robot token is {} bytes",
        robot.len()
    );
    assert_eq!(claims(&other)["sub"], OTHER_SUBJECT);
    eprintln!(
        "provider {issuer}: tokens of {} and {} bytes, keys fetched, stopped after {:?}",
        robot.len(),
        other.len(),
        started.elapsed()
    );
    Minted {
        issuer,
        keys,
        robot,
        other,
    }
}

static MINTED: OnceLock<Minted> = OnceLock::new();

fn minted() -> &'static Minted {
    MINTED.get_or_init(mint)
}

// ---------------------------------------------------------------------------------------------
// the site: module, config, keys, token map, PAM service directory

/// Everything every test here needs, or a printed skip.
fn peers_available() -> Option<PathBuf> {
    if !is_root() {
        skip("the OpenSSH PAM tests need root (sshd switches to the test account)");
        return None;
    }
    if !run(Command::new("id").arg(ACCOUNT)).0.eq(&0) {
        skip(&format!(
            "the account {ACCOUNT} does not exist (.ci/run creates it)"
        ));
        return None;
    }
    if !Path::new(SSHD).is_file() {
        skip(&format!("{SSHD} not found (Debian package openssh-server)"));
        return None;
    }
    if !peer_available("ssh-keygen", "openssh-client") || !provider_available() {
        return None;
    }
    library("libpam_wrapper.so", "libpam-wrapper")
}

/// A directory with the module, its config (the provider as the one issuer, keys from the
/// cache), the token map and the PAM service `sshd`.
struct Site {
    dir: tempfile::TempDir,
    pam_wrapper: PathBuf,
    minted: &'static Minted,
    /// Held while the test runs (see [`hpccert_e2e::pam_wrapper_serial`]).
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Site {
    fn new() -> Option<Self> {
        let pam_wrapper = peers_available()?;
        let minted = minted();
        let dir = tempfile::Builder::new()
            .prefix("hpccert-openssh-pam-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let dd = d.display();
        let module = d.join("pam_hpccert.so");
        std::fs::copy(built_module(), &module).unwrap();
        // the keys as `gridmap-tool keys refresh` left them (fetched a moment ago)
        write_cached(&d.join("keys"), &minted.keys).unwrap();
        let issuer = &minted.issuer;
        write_mode(
            &d.join("token-map"),
            format!(
                "\"{issuer}\" \"{}\" {ACCOUNT}\n\"{issuer}\" \"{OTHER_SUBJECT}\" {OTHER_ACCOUNT}\n",
                ROBOT.0
            )
            .as_bytes(),
            0o644,
        );
        write_mode(
            &d.join("hpccert.toml"),
            format!(
                "version = 1\n\
                 [tokens]\nkey_cache_dir = \"{dd}/keys\"\n\
                 [mapping]\ntoken_mapfile = \"{dd}/token-map\"\nsuspended_file = \"{dd}/suspended\"\n\
                 [[issuer]]\nissuer = \"{issuer}\"\naudiences = [\"{AUDIENCE}\"]\n\
                 algorithms = [\"RS256\"]\nprofile = \"wlcg\"\nrequire_at_jwt = true\n"
            )
            .as_bytes(),
            0o644,
        );
        let svc = d.join("pam.d");
        std::fs::create_dir(&svc).unwrap();
        let m = module.display();
        let cfg = format!("config={dd}/hpccert.toml");
        write_mode(
            &svc.join("sshd"),
            format!(
                "auth required {m} {cfg}\n\
                 account required {m} {cfg}\n\
                 account required pam_unix.so\n\
                 session required pam_unix.so\n\
                 password required pam_deny.so\n"
            )
            .as_bytes(),
            0o644,
        );
        write_mode(
            &svc.join("other"),
            b"auth required pam_deny.so\naccount required pam_deny.so\n\
              session required pam_deny.so\npassword required pam_deny.so\n",
            0o644,
        );
        Some(Self {
            dir,
            pam_wrapper,
            minted,
            _serial: hpccert_e2e::pam_wrapper_serial(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A token file (mode 0600), as a user keeps one for the askpass helper.
    fn token_file(&self, name: &str, token: &str) -> PathBuf {
        let p = self.path(name);
        write_mode(&p, format!("{token}\n").as_bytes(), 0o600);
        p
    }

    /// The environment that puts a program under pam_wrapper with this site's services.
    fn pam_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", self.pam_wrapper.display().to_string()),
            ("PAM_WRAPPER", "1".into()),
            (
                "PAM_WRAPPER_SERVICE_DIR",
                self.path("pam.d").display().to_string(),
            ),
            // pam_syslog lines on stderr as `SYSLOG(priority): ...`
            ("PAM_WRAPPER_DEBUGLEVEL", "2".into()),
        ]
    }

    /// Start sshd on a free loopback port (a few tries if another process takes the port).
    fn sshd(&self) -> Sshd {
        let d = self.dir.path();
        let host_key = d.join("host_ed25519");
        if !host_key.exists() {
            let (code, out, err) = run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&host_key));
            assert_eq!(code, 0, "ssh-keygen: {out}{err}");
        }
        std::fs::create_dir_all("/run/sshd").unwrap(); // sshd's privilege separation directory
        for attempt in 0..5 {
            let port = free_port();
            let config = d.join("sshd_config");
            write_mode(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n\
                     UsePAM yes\nKbdInteractiveAuthentication yes\nPasswordAuthentication no\n\
                     PubkeyAuthentication no\nAuthenticationMethods keyboard-interactive\n\
                     StrictModes no\nPrintMotd no\nPrintLastLog no\nUseDNS no\n\
                     LoginGraceTime 30\nMaxStartups 50\n",
                    host_key.display(),
                    d.join("sshd.pid").display()
                )
                .as_bytes(),
                0o644,
            );
            // stderr (`-e`) into a pipe, not a file: the pre-authentication child runs with
            // RLIMIT_FSIZE 0 and would die of SIGXFSZ writing (pam_wrapper's lines) to a file
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .envs(self.pam_env())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {SSHD}: {e}"));
            let log = Arc::new(Mutex::new(String::new()));
            let mut pipe = child.stderr.take().unwrap();
            let sink = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            });
            let ready = format!("Server listening on 127.0.0.1 port {port}.");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let text = log.lock().unwrap().clone();
                if text.contains(&ready) {
                    return Sshd {
                        child,
                        port,
                        log,
                        from: text.len(),
                    };
                }
                if let Some(status) = child.try_wait().unwrap() {
                    std::thread::sleep(Duration::from_millis(50)); // the last lines
                    let text = log.lock().unwrap().clone();
                    if attempt < 4 && text.contains("Address already in use") {
                        break;
                    }
                    panic!("sshd exited ({status}) before it listened:\n{text}");
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("sshd not listening after 20 s:\n{text}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("no free port for sshd after 5 tries");
    }

    /// `pamtester -v sshd USER OPS...` on this site's `sshd` service (the token on stdin
    /// answers the one prompt); returns (exit code, stdout + stderr).
    fn pamtester(&self, user: &str, ops: &[&str], answer: &str) -> (i32, String) {
        let mut child = Command::new("pamtester")
            .arg("-v")
            .arg("sshd")
            .arg(user)
            .args(ops)
            .envs(self.pam_env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run pamtester: {e}"));
        // one write, before the prompt: pamtester reads the answer with one read(2)
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
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

/// A running sshd; killed on drop.
struct Sshd {
    child: Child,
    port: u16,
    /// What sshd (and pam_wrapper) wrote on stderr.
    log: Arc<Mutex<String>>,
    /// The log's length when sshd was ready (what came before is startup).
    from: usize,
}

impl Sshd {
    /// What sshd (and pam_wrapper) logged since it was ready.
    fn log(&self) -> String {
        let text = self.log.lock().unwrap();
        text.get(self.from..).unwrap_or_default().to_string()
    }

    /// Wait until `needle` is in the log (sshd's monitor may write a line just after the
    /// client has its answer).
    fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if log.contains(needle) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// No part of a token (header, claims, signature) may appear in `text`.
fn assert_not_logged(text: &str, tokens: &[&str]) {
    for token in tokens {
        for part in token.split('.').filter(|p| p.len() >= 16) {
            assert!(
                !text.contains(part),
                "the log contains (part of) a token:\n{text}"
            );
        }
    }
}

/// The token's fingerprint as the module exports it (`SHA256:` and the hex SHA-256).
fn fingerprint(token: &str) -> String {
    let digest = openssl::sha::sha256(token.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("SHA256:{hex}")
}

// ---------------------------------------------------------------------------------------------
// paramiko

/// Each attempt `(user, token file)`: keyboard-interactive answering every prompt with the
/// whole token, then (when accepted) `command`. Prints one JSON object per attempt.
const PARAMIKO: &str = r#"
import json, sys, paramiko
port, command = int(sys.argv[1]), sys.argv[2]
attempts = sys.argv[3:]
for user, token_file in zip(attempts[0::2], attempts[1::2]):
    token = open(token_file).read().strip()
    prompts = []
    def handler(title, instructions, asked):
        prompts.extend(p for p, _ in asked)
        return [token for _ in asked]
    t = paramiko.Transport(("127.0.0.1", port))
    t.start_client(timeout=10)
    res = {"user": user}
    try:
        t.auth_interactive(user, handler)
        ch = t.open_session()
        ch.exec_command(command)
        res["out"] = ch.makefile("rb").read().decode()
        res["err"] = ch.makefile_stderr("rb").read().decode()
        res["status"] = ch.recv_exit_status()
    except paramiko.AuthenticationException as e:
        res["refused"] = str(e)
    res["prompts"] = prompts
    t.close()
    print(json.dumps(res), flush=True)
"#;

/// Run the paramiko attempts; one JSON answer per attempt.
fn paramiko(
    python: &Path,
    sshd: &Sshd,
    command: &str,
    attempts: &[(&str, &Path)],
) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(python);
    cmd.args(["-c", PARAMIKO])
        .arg(sshd.port.to_string())
        .arg(command)
        .stdin(Stdio::null());
    for (user, file) in attempts {
        cmd.arg(user).arg(file);
    }
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "paramiko: {out}{err}\nsshd:\n{}", sshd.log());
    let answers: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), attempts.len(), "{out}{err}");
    answers
}

const ENV_COMMAND: &str = "id -un; printf 'HPCCERT_TOKEN_SUBJECT=%s\\nHPCCERT_TOKEN_ISSUER=%s\\nHPCCERT_IDENTITY=%s\\nHPCCERT_CREDENTIAL=%s\\n' \
    \"$HPCCERT_TOKEN_SUBJECT\" \"$HPCCERT_TOKEN_ISSUER\" \"$HPCCERT_IDENTITY\" \"$HPCCERT_CREDENTIAL\"";

/// What a session printed for [`ENV_COMMAND`]: the identity of the robot token.
fn assert_session(out: &str, minted: &Minted) {
    let issuer = &minted.issuer;
    let expected = format!(
        "{ACCOUNT}\nHPCCERT_TOKEN_SUBJECT={}\nHPCCERT_TOKEN_ISSUER={issuer}\n\
         HPCCERT_IDENTITY={} (issuer {issuer})\nHPCCERT_CREDENTIAL={}\n",
        ROBOT.0,
        ROBOT.0,
        fingerprint(&minted.robot)
    );
    assert_eq!(out, expected, "the session's account and PAM environment");
}

#[test]
fn paramiko_logs_in_with_a_2kb_provider_token_and_the_session_sees_the_identity() {
    let Some(site) = Site::new() else { return };
    let Some(python) = hpccert_e2e::python_with("paramiko") else {
        return;
    };
    let m = site.minted;
    let sshd = site.sshd();
    let tf = site.token_file("robot.jwt", &m.robot);
    let answers = paramiko(&python, &sshd, ENV_COMMAND, &[(ACCOUNT, &tf)]);
    let a = &answers[0];
    assert!(a.get("refused").is_none(), "{a}\nsshd:\n{}", sshd.log());
    // one prompt, the module's, answered with the whole 2 KB token
    assert_eq!(a["prompts"], serde_json::json!([PROMPT]), "{a}");
    assert_eq!(a["status"], 0, "{a}");
    assert_eq!(a["err"], "", "{a}");
    assert_session(a["out"].as_str().unwrap(), m);

    let log = sshd.wait_log("Accepted keyboard-interactive/pam");
    assert!(
        log.contains(&format!(
            "Accepted keyboard-interactive/pam for {ACCOUNT} from 127.0.0.1 port "
        )),
        "{log}"
    );
    // (the module's own "accepted ..." line is not in this log: see the header)
    assert_not_logged(&log, &[&m.robot]);
}

// ---------------------------------------------------------------------------------------------
// stock OpenSSH through the askpass helper

#[test]
fn openssh_ssh_logs_in_with_the_2kb_token_in_parts_through_hpccert_askpass() {
    let Some(site) = Site::new() else { return };
    if !peer_available("ssh", "openssh-client") {
        return;
    }
    let m = site.minted;
    let sshd = site.sshd();
    let tf = site.token_file("robot.jwt", &m.robot);
    // the shipped helper, behind a wrapper that records the prompts it answers
    let askpass = hpccert_e2e::repo_root().join("packaging/hpccert-askpass");
    let prompts = site.path("prompts.txt");
    let wrapper = site.path("askpass-recording");
    write_mode(
        &wrapper,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\nexec '{}' \"$@\"\n",
            prompts.display(),
            askpass.display()
        )
        .as_bytes(),
        0o755,
    );
    let (code, out, err) = run(Command::new("ssh")
        .env("SSH_ASKPASS", &wrapper)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("BEARER_TOKEN_FILE", &tf)
        .env_remove("BEARER_TOKEN")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("DISPLAY")
        .stdin(Stdio::null())
        .arg("-p")
        .arg(sshd.port.to_string())
        .args([
            "-F",
            "/dev/null",
            "-o",
            "PreferredAuthentications=keyboard-interactive",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentityAgent=none",
            "-o",
            "BatchMode=no",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("{ACCOUNT}@127.0.0.1"))
        .arg(ENV_COMMAND));
    let log = sshd.wait_log("Accepted keyboard-interactive/pam");
    assert_eq!(code, 0, "ssh: {out}{err}\nsshd:\n{log}");
    assert_eq!(err, "", "ssh's stderr");
    assert_session(&out, m);

    // 2 KB: three answers of at most 1000 bytes (+ "\"), each below OpenSSH's 1023
    let asked = std::fs::read_to_string(&prompts).unwrap();
    let asked: Vec<&str> = asked.lines().collect();
    assert_eq!(asked.len(), 3, "{asked:?}");
    for (prompt, expected) in asked.iter().zip([
        "Access token: ",
        "Access token (part 2): ",
        "Access token (part 3): ",
    ]) {
        assert!(prompt.ends_with(expected), "{prompt:?} for {expected:?}");
    }
    assert!(
        log.contains(&format!(
            "Accepted keyboard-interactive/pam for {ACCOUNT} from 127.0.0.1 port "
        )),
        "{log}"
    );
    assert_not_logged(&log, &[&m.robot]);
}

// ---------------------------------------------------------------------------------------------
// refusals

#[test]
fn sshd_refuses_wrong_and_unmapped_tokens_and_logs_why_but_never_the_token() {
    let Some(site) = Site::new() else { return };
    let Some(python) = hpccert_e2e::python_with("paramiko") else {
        return;
    };
    let m = site.minted;
    let sshd = site.sshd();
    let now = unix_seconds(hpccert_core::clock::now());

    // the provider's token with one signature character changed
    let (head, sig) = m.robot.rsplit_once('.').unwrap();
    let mut sig = sig.as_bytes().to_vec();
    let mid = sig.len() / 2;
    sig[mid] = if sig[mid] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{head}.{}", String::from_utf8(sig).unwrap());
    // the same claims signed by someone else's key under the provider's key id
    let mut robot_claims = claims(&m.robot);
    let impostor = DevKey::generate("hpccert-openssh-pam", JwsAlgorithm::RS256).unwrap();
    let forged = impostor.mint(&robot_claims).unwrap();
    // another issuer's token
    robot_claims["iss"] = "https://rogue.example.org".into();
    robot_claims["iat"] = now.into();
    let rogue = impostor.mint(&robot_claims).unwrap();

    let cases: [(&str, &str, &str, String); 5] = [
        (
            "tampered",
            ACCOUNT,
            &tampered,
            format!("user {ACCOUNT}: token refused: bad signature"),
        ),
        (
            "forged",
            ACCOUNT,
            &forged,
            format!("user {ACCOUNT}: token refused: bad signature"),
        ),
        (
            "rogue",
            ACCOUNT,
            &rogue,
            format!("user {ACCOUNT}: token refused: unknown issuer \"https://rogue.example.org\""),
        ),
        // a real token of the provider whose subject is mapped to another account
        (
            "other",
            ACCOUNT,
            &m.other,
            format!(
                "user {ACCOUNT}: account {ACCOUNT} is not mapped to {OTHER_SUBJECT} (issuer {}) (allowed: {OTHER_ACCOUNT})",
                m.issuer
            ),
        ),
        // the good token for another existing account
        (
            "robot",
            OTHER_ACCOUNT,
            &m.robot,
            format!(
                "user {OTHER_ACCOUNT}: account {OTHER_ACCOUNT} is not mapped to {} (issuer {}) (allowed: {ACCOUNT})",
                ROBOT.0, m.issuer
            ),
        ),
    ];
    let files: Vec<PathBuf> = cases
        .iter()
        .map(|(name, _, token, _)| site.token_file(&format!("{name}.jwt"), token))
        .collect();
    let attempts: Vec<(&str, &Path)> = cases
        .iter()
        .zip(&files)
        .map(|((_, user, _, _), file)| (*user, file.as_path()))
        .collect();
    let answers = paramiko(&python, &sshd, "id -un", &attempts);
    for (answer, (name, user, _, _)) in answers.iter().zip(&cases) {
        assert!(answer["refused"].is_string(), "{name}: accepted: {answer}");
        assert!(answer.get("out").is_none(), "{name}: {answer}");
        assert_eq!(
            answer["prompts"],
            serde_json::json!([PROMPT]),
            "{name}: {answer}"
        );
        assert_eq!(answer["user"], *user);
    }
    // sshd's own account of it: PAM said no, for each attempt
    let log = sshd.wait_log(&format!(
        "PAM: Authentication failure for {OTHER_ACCOUNT} from 127.0.0.1"
    ));
    assert_eq!(
        log.matches(&format!(
            "PAM: Authentication failure for {ACCOUNT} from 127.0.0.1"
        ))
        .count(),
        4,
        "{log}"
    );
    assert_eq!(
        log.matches(&format!(
            "PAM: Authentication failure for {OTHER_ACCOUNT} from 127.0.0.1"
        ))
        .count(),
        1,
        "{log}"
    );
    assert!(!log.contains("Accepted "), "{log}");
    let tokens: Vec<&str> = cases.iter().map(|(_, _, token, _)| *token).collect();
    assert_not_logged(&log, &tokens);

    // the module's reason for each refusal: the same service, user and token under
    // pamtester (see the header)
    for (name, user, token, reason) in &cases {
        let (code, out) = site.pamtester(user, &["authenticate"], token);
        assert_eq!(code, 1, "{name}: {out}");
        assert!(out.contains("Authentication failure"), "{name}: {out}");
        let line = out
            .lines()
            .find(|l| l.contains(&format!("SYSLOG(5): {reason}")))
            .unwrap_or_else(|| panic!("{name}: expected {reason:?} in\n{out}"));
        assert!(line.ends_with(" (PAM_AUTH_ERR)"), "{name}: {line}");
        assert_not_logged(&out, &[token]);
    }
}

// ---------------------------------------------------------------------------------------------
// pamtester on the same service

#[test]
fn pamtester_accepts_the_2kb_provider_token_for_the_mapped_account_only() {
    let Some(site) = Site::new() else { return };
    if !peer_available("pamtester", "pamtester") {
        return;
    }
    let m = site.minted;
    let ok = |out: &str| {
        out.contains("pamtester: successfully authenticated")
            && out.contains("pamtester: account management done")
    };

    let (code, out) = site.pamtester(ACCOUNT, &["authenticate", "acct_mgmt"], &m.robot);
    assert_eq!(code, 0, "{out}");
    assert!(ok(&out), "{out}");
    assert!(out.contains(PROMPT), "{out}");
    assert!(
        out.contains(&format!(
            "accepted {} (issuer {}) credential {} for user {ACCOUNT}",
            ROBOT.0,
            m.issuer,
            fingerprint(&m.robot)
        )),
        "{out}"
    );
    assert_not_logged(&out, &[&m.robot]);

    // the same token for root
    let (code, out) = site.pamtester("root", &["authenticate"], &m.robot);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Authentication failure"), "{out}");
    assert!(
        out.contains(&format!(
            "SYSLOG(5): user root: account root is not mapped to {} (issuer {}) (allowed: {ACCOUNT})",
            ROBOT.0, m.issuer
        )),
        "{out}"
    );
    assert_not_logged(&out, &[&m.robot]);

    // another subject's token (mapped to another account) for the test account
    let (code, out) = site.pamtester(ACCOUNT, &["authenticate"], &m.other);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "user {ACCOUNT}: account {ACCOUNT} is not mapped to {OTHER_SUBJECT}"
        )),
        "{out}"
    );
    assert_not_logged(&out, &[&m.other]);
}
