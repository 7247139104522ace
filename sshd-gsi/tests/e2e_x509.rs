//! sshd-gsi RFC 6187 X.509 publickey logins against real clients: asyncssh (the Python SSH
//! library that speaks RFC 6187) with end-entity certificates (RSA 2048, ECDSA P-256 and
//! P-384), RFC 3820 proxies made by the dev PKI (depth 1 and 2) and by Globus
//! `grid-proxy-init -rfc`; the refusals (unmapped DN, revoked, expired proxy, limited proxy,
//! a login name the grid-mapfile does not allow, an untrusted CA, an algorithm not enabled);
//! and stock OpenSSH, which sees the configured `x509v3-*` algorithms in `server-sig-algs`
//! and whose ordinary keys an x509-only server refuses.
//!
//! Every test starts its own `sshd-gsi -f CONFIG --listen 127.0.0.1:PORT` with a config in a
//! temporary directory: an IGTF trust directory holding the test CA and its CRL, a
//! grid-mapfile mapping the test DNs to the current user, an ed25519 host key. The server's
//! stderr (its log) goes to a file; each client login is matched to its `Accepted x509` /
//! `Failed x509` line by the client's local port.
//!
//! A missing client skips (the part of) its test with a printed reason; under
//! `HPCCERT_E2E_REQUIRED=1` (CI) it fails instead. asyncssh comes from `$HPCCERT_E2E_PYTHON`,
//! else `<repo>/.venv-e2e/bin/python` (`python3 -m venv .venv-e2e && .venv-e2e/bin/pip install
//! 'asyncssh[pyOpenSSL]'`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

mod common;
use common::{Process, free_port, python_with, write_mode};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use hpccert_core::dev::pki::{
    self as devpki, CertSpec, Credential, KeyKind, ProxyPolicy, ProxySpec,
};
use openssl::x509::X509Crl;
use serde_json::{Value, json};

const CA_DN: &str = "/DC=org/DC=hpccert-e2e/CN=hpccert E2E X509 CA";
const OTHER_CA_DN: &str = "/DC=org/DC=elsewhere/CN=Untrusted CA";
const RSA_DN: &str = "/DC=org/DC=hpccert-e2e/O=X509/CN=RSA User";
const P256_DN: &str = "/DC=org/DC=hpccert-e2e/O=X509/CN=P256 User";
const P384_DN: &str = "/DC=org/DC=hpccert-e2e/O=X509/CN=P384 User";
const REVOKED_DN: &str = "/DC=org/DC=hpccert-e2e/O=X509/CN=Revoked User";
const UNMAPPED_DN: &str = "/DC=org/DC=hpccert-e2e/O=X509/CN=Unmapped User";

const RSA: &str = "x509v3-rsa2048-sha256";
const P256: &str = "x509v3-ecdsa-sha2-nistp256";
const P384: &str = "x509v3-ecdsa-sha2-nistp384";

/// What every successful login runs: the identity the session sees, on stdout; a line on
/// stderr; a non-zero exit status.
const COMMAND: &str = "printf 'DN=%s\\nDEPTH=%s\\nMETHOD=%s\\nUSER=%s\\n' \"$HPCCERT_DN\" \"$HPCCERT_PROXY_DEPTH\" \"$HPCCERT_AUTH_METHOD\" \"$(id -un)\"; echo err-line >&2; exit 3";
/// Longest a client command may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// peers and skips

// ---------------------------------------------------------------------------------------------
// running commands

/// (exit code, stdout, stderr), within the client deadline.
fn run(cmd: &mut Command) -> (i32, String, String) {
    common::run_within(cmd, CLIENT_TIMEOUT)
}

/// The account the sessions run as: the current user (root in CI).
fn user() -> &'static str {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .expect("the current user has an account name")
            .name
    })
}

// ---------------------------------------------------------------------------------------------
// the test PKI (made once per test binary)

struct Pki {
    ca: Credential,
    crl: X509Crl,
    rsa: Credential,
    p256: Credential,
    p384: Credential,
    revoked: Credential,
    unmapped: Credential,
    /// An untrusted CA, and a certificate it issued with a mapped DN (P256_DN).
    other_ca: Credential,
    stranger: Credential,
    /// Proxies of `p256`: depth 1, a proxy of that (depth 2), expired, limited.
    proxy1: Credential,
    proxy2: Credential,
    expired_proxy: Credential,
    limited_proxy: Credential,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let now = hpccert_core::clock::now();
        let hour = Duration::from_secs(3600);
        let rsa_key = KeyKind::Rsa(2048);
        // RSA CA and user: what Globus grid-proxy-init can extend
        let ca = devpki::self_signed_ca(&CertSpec {
            key: rsa_key,
            ..CertSpec::ca(CA_DN, now, 30).unwrap()
        })
        .unwrap();
        let user = |dn: &str, key: KeyKind| {
            devpki::issue(
                &ca,
                &CertSpec {
                    key,
                    ..CertSpec::user(dn, now, 7).unwrap()
                },
            )
            .unwrap()
        };
        let rsa = user(RSA_DN, rsa_key);
        let p256 = user(P256_DN, KeyKind::EcP256);
        let p384 = user(P384_DN, KeyKind::EcP384);
        let revoked = user(REVOKED_DN, KeyKind::EcP256);
        let unmapped = user(UNMAPPED_DN, KeyKind::EcP256);
        let crl = devpki::crl(
            &ca,
            &[(&revoked.cert, now - Duration::from_secs(60))],
            now - hour,
            now + 24 * hour,
            1,
        )
        .unwrap();
        let other_ca =
            devpki::self_signed_ca(&CertSpec::ca(OTHER_CA_DN, now, 30).unwrap()).unwrap();
        let stranger = devpki::issue(&other_ca, &CertSpec::user(P256_DN, now, 7).unwrap()).unwrap();
        let proxy1 = devpki::issue_proxy(&p256, &ProxySpec::new("1001", now, 12)).unwrap();
        let proxy2 = devpki::issue_proxy(&proxy1, &ProxySpec::new("2002", now, 6)).unwrap();
        let expired_proxy = devpki::issue_proxy(
            &p256,
            &ProxySpec {
                not_before: now - 3 * hour,
                not_after: now - hour,
                ..ProxySpec::new("3003", now, 1)
            },
        )
        .unwrap();
        let limited_proxy = devpki::issue_proxy(
            &p256,
            &ProxySpec {
                policy: ProxyPolicy::Limited,
                ..ProxySpec::new("4004", now, 12)
            },
        )
        .unwrap();
        Pki {
            ca,
            crl,
            rsa,
            p256,
            p384,
            revoked,
            unmapped,
            other_ca,
            stranger,
            proxy1,
            proxy2,
            expired_proxy,
            limited_proxy,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// the server

struct Server {
    dir: tempfile::TempDir,
    port: u16,
    /// Held for its `Drop`: the server ends with the test.
    _process: Process,
    log: PathBuf,
}

impl Server {
    /// A server offering `methods` (TOML strings) and, if given, only the x509 `algorithms`,
    /// ready to accept connections.
    fn start(methods: &[&str], algorithms: Option<&[&str]>) -> Self {
        Self::start_with(methods, algorithms, "")
    }

    /// As [`Self::start`], with `sshd` (TOML lines) added to `[sshd]`.
    fn start_with(methods: &[&str], algorithms: Option<&[&str]>, sshd: &str) -> Self {
        let pki = pki();
        let dir = tempfile::Builder::new()
            .prefix("sshd-gsi-e2e-x509-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let user = user();
        let trust = d.join("certificates");
        devpki::install_ca(&trust, &pki.ca.cert, Some(&pki.crl), None).unwrap();
        // for grid-proxy-init, which checks the user certificate against the trust directory
        std::fs::write(
            trust.join(format!("{}.signing_policy", devpki::subject_hash(&pki.ca.cert))),
            format!(
                "access_id_CA X509 '{CA_DN}'\npos_rights globus CA:sign\ncond_subjects globus '\"/DC=org/DC=hpccert-e2e/*\"'\n"
            ),
        )
        .unwrap();
        std::fs::create_dir(d.join("keys")).unwrap();
        let gridmap: String = [RSA_DN, P256_DN, P384_DN, REVOKED_DN]
            .iter()
            .map(|dn| format!("\"{dn}\" {user}\n"))
            .collect();
        write_mode(
            &d.join("grid-mapfile"),
            format!("# e2e_x509\n{gridmap}").as_bytes(),
            0o644,
        );
        write_mode(
            &d.join("ssh_host_ed25519_key"),
            openssh_ed25519_key().as_bytes(),
            0o600,
        );
        let quoted = |list: &[&str]| {
            list.iter()
                .map(|m| format!("\"{m}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let algorithms = algorithms
            .map(|a| format!("x509_algorithms = [{}]\n", quoted(a)))
            .unwrap_or_default();
        let log = d.join("sshd-gsi.log");
        // a port found free (bound to 0, then released) may be taken by someone else before
        // the server binds it: then the next try takes another
        for _ in 0..5 {
            let port = free_port();
            let s = |name: &str| d.join(name).display().to_string();
            let config = format!(
                "version = 1\n\
                 [trust]\nca_dir = \"{}\"\ncrl = \"if-present\"\n\
                 [mapping]\ngrid_mapfile = \"{}\"\n\
                 [tokens]\nkey_cache_dir = \"{}\"\n\
                 [sshd]\nlisten = [\"127.0.0.1:{port}\"]\nhost_keys = [\"{}\"]\nmethods = [{}]\n{algorithms}{sshd}",
                s("certificates"),
                s("grid-mapfile"),
                s("keys"),
                s("ssh_host_ed25519_key"),
                quoted(methods),
            );
            write_mode(&d.join("hpccert.toml"), config.as_bytes(), 0o644);
            if let Some(child) = common::spawn_ready(&d.join("hpccert.toml"), port, &log, &[]) {
                return Self {
                    dir,
                    port,
                    _process: child,
                    log,
                };
            }
        }
        panic!("sshd-gsi could not bind a free port in 5 tries");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Write `leaf`'s key (PKCS#8, 0600) and the chain `leaf, rest...` (PEM) as `NAME.key`
    /// and `NAME.pem`; returns (key file, chain file).
    fn credential(
        &self,
        name: &str,
        leaf: &Credential,
        rest: &[&Credential],
    ) -> (PathBuf, PathBuf) {
        let key = self.path(&format!("{name}.key"));
        let chain = self.path(&format!("{name}.pem"));
        write_mode(&key, &leaf.key_pem().unwrap(), 0o600);
        let mut pem = leaf.cert_pem().unwrap();
        for c in rest {
            pem.extend(c.cert_pem().unwrap());
        }
        write_mode(&chain, &pem, 0o644);
        (key, chain)
    }

    /// `ssh -vvv` with an ordinary ed25519 key, publickey only, no agent, batch mode:
    /// (exit code, stdout, stderr).
    fn openssh_plain_key(&self) -> (i32, String, String) {
        let key = self.path("id_ed25519");
        write_mode(&key, openssh_ed25519_key().as_bytes(), 0o600);
        run(Command::new("ssh")
            .env_remove("SSH_AUTH_SOCK")
            .arg("-vvv")
            .args(["-F", "/dev/null", "-p", &self.port.to_string(), "-i"])
            .arg(&key)
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "IdentityAgent=none",
                "-o",
                "BatchMode=yes",
                "-o",
                "PreferredAuthentications=publickey",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=10",
            ])
            .arg(format!("{}@127.0.0.1", user()))
            .arg("echo should-not-run"))
    }
}

/// A fresh ed25519 private key in OpenSSH format.
fn openssh_ed25519_key() -> String {
    let mut seed = [0u8; 32];
    openssl::rand::rand_bytes(&mut seed).unwrap();
    russh::keys::PrivateKey::from(russh::keys::ssh_key::private::Ed25519Keypair::from_seed(
        &seed,
    ))
    .to_openssh(russh::keys::ssh_key::LineEnding::LF)
    .unwrap()
    .to_string()
}

/// An `Accepted x509` or `Failed x509` line of the server log.
#[derive(Debug)]
struct AuthLine {
    accepted: bool,
    user: String,
    port: u16,
    /// What follows `ssh2: `.
    rest: String,
}

/// The x509 outcome lines of `log`, each with its `from 127.0.0.1 port N ssh2: ` checked.
fn x509_lines(log: &str) -> Vec<AuthLine> {
    log.lines()
        .filter_map(|line| {
            let (accepted, at) = match (
                line.find("Accepted x509 for "),
                line.find("Failed x509 for "),
            ) {
                (Some(i), _) => (true, i + "Accepted x509 for ".len()),
                (None, Some(i)) => (false, i + "Failed x509 for ".len()),
                (None, None) => return None,
            };
            let (user, rest) = line[at..]
                .split_once(" from 127.0.0.1 port ")
                .unwrap_or_else(|| panic!("no `from 127.0.0.1 port` in: {line}"));
            let (port, rest) = rest
                .split_once(" ssh2: ")
                .unwrap_or_else(|| panic!("no `ssh2: ` in: {line}"));
            Some(AuthLine {
                accepted,
                user: user.to_string(),
                port: port
                    .parse()
                    .unwrap_or_else(|e| panic!("bad port in {line}: {e}")),
                rest: rest.to_string(),
            })
        })
        .collect()
}

/// The `server-sig-algs` list `ssh -vvv` printed.
fn server_sig_algs(ssh_stderr: &str) -> Vec<String> {
    let line = ssh_stderr
        .lines()
        .find(|l| l.contains("server-sig-algs=<"))
        .unwrap_or_else(|| panic!("ssh -vvv shows no server-sig-algs:\n{ssh_stderr}"));
    let list = line
        .split_once("server-sig-algs=<")
        .and_then(|(_, l)| l.split_once('>'))
        .map(|(l, _)| l)
        .unwrap_or_else(|| panic!("server-sig-algs line: {line}"));
    list.split(',').map(str::to_string).collect()
}

fn x509_only(algs: &[String]) -> Vec<String> {
    let mut x: Vec<String> = algs
        .iter()
        .filter(|a| a.starts_with("x509v3-"))
        .cloned()
        .collect();
    x.sort();
    x
}

fn sorted(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(ToString::to_string).collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// asyncssh

/// Logs in once per job, one after the other; prints a JSON list of results: `ok`, then
/// `out`, `err`, `status` or `error` (exception class), `message`; `port` (the client's local
/// port, to find the server's log line) and `algorithms` (the publickey algorithms tried).
const ASYNCSSH: &str = r#"
import asyncio, json, logging, re, sys
import asyncssh

# "[conn=0, auth] Trying public key auth with x509v3-ecdsa-sha2-nistp256 key"
TRYING = re.compile(r"Trying public key auth with (\S+) key$")

class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.algorithms = []
    def emit(self, record):
        m = TRYING.search(record.getMessage())
        if m:
            self.algorithms.append(m.group(1))

capture = Capture()
logger = logging.getLogger("asyncssh")
logger.setLevel(logging.DEBUG)
logger.addHandler(capture)
logger.propagate = False
asyncssh.set_debug_level(1)

class Client(asyncssh.SSHClient):
    def __init__(self):
        self.port = None
    def connection_made(self, conn):
        self.port = conn.get_extra_info("sockname")[1]

async def login(host, port, job):
    capture.algorithms = []
    clients = []
    def factory():
        c = Client()
        clients.append(c)
        return c
    res = {"name": job["name"]}
    try:
        conn, _ = await asyncio.wait_for(asyncssh.create_connection(
            factory, host, port, username=job["user"],
            client_keys=[(job["key"], job["cert"])], preferred_auth="publickey",
            known_hosts=None, agent_path=None, config=[]), 30)
        async with conn:
            r = await asyncio.wait_for(conn.run(job["command"], check=False, env=job.get("env") or {}), 30)
            res.update(ok=True, out=r.stdout, err=r.stderr, status=r.exit_status)
    except Exception as e:
        res.update(ok=False, error=type(e).__name__, message=str(e))
    res["port"] = clients[0].port if clients else None
    res["algorithms"] = list(capture.algorithms)
    return res

async def main():
    host, port, jobs = sys.argv[1], int(sys.argv[2]), json.load(open(sys.argv[3]))
    print(json.dumps([await login(host, port, job) for job in jobs]))

asyncio.run(main())
"#;

/// One asyncssh login: `key` and `cert` files (the same file for a Globus proxy).
struct Job<'a> {
    name: &'a str,
    user: &'a str,
    key: PathBuf,
    cert: PathBuf,
}

/// Run the jobs with asyncssh against `server`; one result per job, in order.
fn asyncssh_logins(python: &Path, server: &Server, jobs: &[Job<'_>]) -> Vec<Value> {
    let list: Vec<Value> = jobs
        .iter()
        .map(|j| {
            json!({"name": j.name, "user": j.user, "key": j.key, "cert": j.cert, "command": COMMAND})
        })
        .collect();
    asyncssh_run(python, server, list)
}

/// Run jobs (JSON: `name`, `user`, `key`, `cert`, `command`, optionally `env`) with asyncssh
/// against `server`; one result per job, in order.
fn asyncssh_run(python: &Path, server: &Server, list: Vec<Value>) -> Vec<Value> {
    let count = list.len();
    let file = server.path("jobs.json");
    std::fs::write(&file, Value::Array(list).to_string()).unwrap();
    let (code, out, err) = run(Command::new(python)
        .args(["-c", ASYNCSSH, "127.0.0.1", &server.port.to_string()])
        .arg(&file));
    assert_eq!(
        code,
        0,
        "asyncssh: stdout: {out}\nstderr: {err}\nserver log:\n{}",
        server.log()
    );
    let results: Vec<Value> = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("asyncssh output {out:?}: {e}\nstderr: {err}"));
    assert_eq!(results.len(), count, "{out}");
    results
}

fn port_of(r: &Value) -> u16 {
    r["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("no client port in {r}"))
}

/// A login that must have worked: the session's output and the server's `Accepted` line.
fn assert_login(log: &str, r: &Value, dn: &str, depth: u32, algorithm: &str) {
    let name = r["name"].as_str().unwrap_or_default();
    let user = user();
    assert_eq!(r["ok"], json!(true), "{name}: {r}\nserver log:\n{log}");
    assert_eq!(
        r["out"].as_str(),
        Some(format!("DN={dn}\nDEPTH={depth}\nMETHOD=x509\nUSER={user}\n").as_str()),
        "{name}: stdout: {r}"
    );
    assert_eq!(r["err"].as_str(), Some("err-line\n"), "{name}: stderr: {r}");
    assert_eq!(r["status"].as_i64(), Some(3), "{name}: exit status: {r}");
    // the algorithm of the last (the accepted) publickey attempt
    let tried: Vec<&str> = r["algorithms"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        tried.last().copied(),
        Some(algorithm),
        "{name}: publickey algorithms tried: {tried:?}"
    );
    let port = port_of(r);
    let lines: Vec<AuthLine> = x509_lines(log)
        .into_iter()
        .filter(|l| l.port == port)
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{name}: one x509 line for port {port}:\n{log}"
    );
    let l = &lines[0];
    assert!(l.accepted, "{name}: {l:?}");
    assert_eq!(l.user, *user, "{name}: {l:?}");
    assert!(
        l.rest
            .starts_with(&format!("identity \"{dn}\" credential SHA256:")),
        "{name}: identity and credential in: {}",
        l.rest
    );
    assert!(
        l.rest
            .ends_with(&format!(" proxy depth {depth} account {user}")),
        "{name}: proxy depth and account in: {}",
        l.rest
    );
    eprintln!("{name}: {algorithm}, logged: {}", l.rest);
}

/// A login that must have failed as an ordinary authentication failure, with a `Failed x509`
/// line (for `login`) whose reason contains `reason`, and no `Accepted` line.
fn assert_refused(log: &str, r: &Value, login: &str, reason: &str) {
    let name = r["name"].as_str().unwrap_or_default();
    assert_eq!(r["ok"], json!(false), "{name}: should be refused: {r}");
    assert_eq!(
        r["error"].as_str(),
        Some("PermissionDenied"),
        "{name}: an ordinary authentication failure: {r}"
    );
    let port = port_of(r);
    let lines: Vec<AuthLine> = x509_lines(log)
        .into_iter()
        .filter(|l| l.port == port)
        .collect();
    assert!(
        lines.iter().all(|l| !l.accepted),
        "{name}: accepted?\n{log}"
    );
    assert_eq!(
        lines.len(),
        1,
        "{name}: one Failed x509 line for port {port}:\n{log}"
    );
    assert_eq!(lines[0].user, login, "{name}: {:?}", lines[0]);
    assert!(
        lines[0].rest.contains(reason),
        "{name}: the logged reason should say {reason:?}: {}",
        lines[0].rest
    );
    eprintln!("{name}: refused, logged: {}", lines[0].rest);
}

// ---------------------------------------------------------------------------------------------
// 1. logins

#[test]
fn asyncssh_logs_in_with_certificates_and_proxies() {
    let Some(python) = python_with("asyncssh, OpenSSL") else {
        return;
    };
    let pki = pki();
    let server = Server::start(&["x509", "keyboard-interactive"], None);
    let me = user();
    let (k256, c256) = server.credential("p256", &pki.p256, &[]);
    let (k384, c384) = server.credential("p384", &pki.p384, &[]);
    let (kp1, cp1) = server.credential("proxy1", &pki.proxy1, &[&pki.p256]);
    let (kp2, cp2) = server.credential("proxy2", &pki.proxy2, &[&pki.proxy1, &pki.p256]);
    let job = |name, key, cert| Job {
        name,
        user: me,
        key,
        cert,
    };
    let mut jobs = vec![
        job("EC P-256 certificate", k256, c256),
        job("EC P-384 certificate", k384, c384),
        job("proxy (depth 1)", kp1, cp1),
        job("proxy of a proxy (depth 2)", kp2, cp2),
    ];
    // a real Globus proxy: proxy certificate, its key and the user certificate in one file
    let globus = hpccert_e2e::peer_available("grid-proxy-init", "globus-proxy-utils");
    if globus {
        let cert = server.path("usercert.pem");
        let key = server.path("userkey.pem");
        let proxy = server.path("x509up");
        write_mode(&cert, &pki.rsa.cert_pem().unwrap(), 0o644);
        write_mode(&key, &pki.rsa.key_pem_traditional().unwrap(), 0o400);
        let (code, out, err) = run(Command::new("grid-proxy-init")
            .env("X509_CERT_DIR", server.path("certificates"))
            .env("X509_USER_PROXY", &proxy)
            .args(["-rfc", "-q", "-cert"])
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .arg("-out")
            .arg(&proxy));
        assert_eq!(code, 0, "grid-proxy-init failed:\n{out}\n{err}");
        jobs.push(job("grid-proxy-init -rfc proxy", proxy.clone(), proxy));
    }
    let results = asyncssh_logins(&python, &server, &jobs);
    let log = server.log();
    assert_login(&log, &results[0], P256_DN, 0, P256);
    assert_login(&log, &results[1], P384_DN, 0, P384);
    assert_login(&log, &results[2], P256_DN, 1, P256);
    assert_login(&log, &results[3], P256_DN, 2, P256);
    if globus {
        assert_login(&log, &results[4], RSA_DN, 1, RSA);
    }
    // the two proxies are distinct credentials of one identity
    let credential = |r: &Value| {
        let port = port_of(r);
        let l = x509_lines(&log)
            .into_iter()
            .find(|l| l.port == port)
            .unwrap();
        l.rest
            .split(" credential ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .unwrap()
            .to_string()
    };
    assert_ne!(credential(&results[2]), credential(&results[3]));
    assert_ne!(credential(&results[0]), credential(&results[2]));
}

// ---------------------------------------------------------------------------------------------
// 1b and 2. x509_algorithms: RSA with SHA-256 only

#[test]
fn rsa2048_sha256_only_server() {
    let server = Server::start(&["x509"], Some(&[RSA]));
    // 3. server-sig-algs: exactly the configured x509 algorithms
    if hpccert_e2e::peer_available("ssh", "openssh-client") {
        let (code, _, err) = server.openssh_plain_key();
        assert_eq!(code, 255, "{err}");
        let algs = server_sig_algs(&err);
        eprintln!("server-sig-algs: {algs:?}");
        assert_eq!(x509_only(&algs), sorted(&[RSA]), "{algs:?}");
    }
    let Some(python) = python_with("asyncssh, OpenSSL") else {
        return;
    };
    let pki = pki();
    let me = user();
    let (kr, cr) = server.credential("rsa", &pki.rsa, &[]);
    let (k256, c256) = server.credential("p256", &pki.p256, &[]);
    let results = asyncssh_logins(
        &python,
        &server,
        &[
            Job {
                name: "RSA 2048 certificate",
                user: me,
                key: kr,
                cert: cr,
            },
            Job {
                name: "EC P-256 certificate, nistp256 not enabled",
                user: me,
                key: k256,
                cert: c256,
            },
        ],
    );
    let log = server.log();
    assert_login(&log, &results[0], RSA_DN, 0, RSA);
    // the algorithm not offered: asyncssh still tries the key's only algorithm; the server
    // refuses it (and must not accept it)
    let r = &results[1];
    eprintln!("{}: {r}", r["name"]);
    assert_eq!(r["ok"], json!(false), "{r}\n{log}");
    assert_eq!(r["error"].as_str(), Some("PermissionDenied"), "{r}");
    let port = port_of(r);
    let lines: Vec<AuthLine> = x509_lines(&log)
        .into_iter()
        .filter(|l| l.port == port)
        .collect();
    assert!(lines.iter().all(|l| !l.accepted), "{log}");
    for l in &lines {
        assert!(
            l.rest.contains(&format!("algorithm {P256} is not enabled")),
            "{l:?}"
        );
    }
    eprintln!(
        "algorithm not enabled: tried {}, logged {lines:?}",
        r["algorithms"]
    );
}

// ---------------------------------------------------------------------------------------------
// 2. refusals

#[test]
fn refusals_are_ordinary_auth_failures_with_logged_reasons() {
    let Some(python) = python_with("asyncssh, OpenSSL") else {
        return;
    };
    let pki = pki();
    let server = Server::start(&["x509"], None);
    let me = user();
    let cred =
        |name: &str, leaf: &Credential, rest: &[&Credential]| server.credential(name, leaf, rest);
    let cases: Vec<(&str, &str, (PathBuf, PathBuf), String)> = vec![
        (
            "unmapped DN",
            me,
            cred("unmapped", &pki.unmapped, &[]),
            format!("DN not in grid-mapfile: {UNMAPPED_DN}"),
        ),
        (
            "revoked certificate",
            me,
            cred("revoked", &pki.revoked, &[]),
            "certificate revoked".to_string(),
        ),
        (
            "expired proxy",
            me,
            cred("expired", &pki.expired_proxy, &[&pki.p256]),
            "certificate expired".to_string(),
        ),
        (
            "limited proxy",
            me,
            cred("limited", &pki.limited_proxy, &[&pki.p256]),
            "limited proxy refused".to_string(),
        ),
        (
            "a login name the grid-mapfile does not allow",
            "nobody",
            cred("p256", &pki.p256, &[]),
            format!("account nobody is not mapped to {P256_DN}"),
        ),
        (
            "a chain from an untrusted CA",
            me,
            cred("stranger-chain", &pki.stranger, &[&pki.other_ca]),
            format!("unknown CA: no trusted CA issued {OTHER_CA_DN}"),
        ),
        (
            "a certificate of an untrusted CA, alone",
            me,
            cred("stranger", &pki.stranger, &[]),
            format!("unknown CA: no trusted CA issued {P256_DN} (issuer {OTHER_CA_DN})"),
        ),
    ];
    let jobs: Vec<Job<'_>> = cases
        .iter()
        .map(|(name, login, (key, cert), _)| Job {
            name,
            user: login,
            key: key.clone(),
            cert: cert.clone(),
        })
        .collect();
    let results = asyncssh_logins(&python, &server, &jobs);
    let log = server.log();
    for ((_, login, _, reason), r) in cases.iter().zip(&results) {
        assert_refused(&log, r, login, reason);
    }
    assert!(!log.contains("Accepted"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// 3 and 4. stock OpenSSH

#[test]
fn openssh_plain_key_refused_and_server_sig_algs() {
    if !hpccert_e2e::peer_available("ssh", "openssh-client") {
        return;
    }
    let configured = [P384, "x509v3-ssh-rsa", RSA];
    let server = Server::start(&["x509"], Some(&configured));
    let (code, out, err) = server.openssh_plain_key();
    assert!(!out.contains("should-not-run"), "{out}");
    assert_eq!(code, 255, "ssh should fail to authenticate; stderr: {err}");
    assert!(
        err.contains(&format!(
            "{}@127.0.0.1: Permission denied (publickey)",
            user()
        )),
        "an ordinary refusal: {err}"
    );
    assert!(
        err.contains("Offering public key:"),
        "the key was offered: {err}"
    );
    assert!(!err.contains("Server accepts key"), "{err}");
    for abnormal in ["Connection reset", "Broken pipe", "Connection closed by"] {
        assert!(!err.contains(abnormal), "{abnormal}: {err}");
    }
    let algs = server_sig_algs(&err);
    eprintln!("server-sig-algs: {algs:?}");
    assert_eq!(x509_only(&algs), sorted(&configured), "{algs:?}");
    let log = server.log();
    assert!(!log.contains("Accepted"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// 5. the proxy handed to the session ([sshd] x509_proxy_handover)

/// What a handover session prints: `X509_USER_PROXY` or `none`, whether `X509_USER_PROXY_PEM`
/// reached it, and for a file: its mode and owner, its directory's mode, the subject OpenSSL
/// reads from it and whether its key is the certificate's.
const HANDOVER_COMMAND: &str = r#"f=${X509_USER_PROXY:-none}; echo "file=$f"; echo "pem=${X509_USER_PROXY_PEM:-unset}"
if [ "$f" != none ]; then
  echo "mode=$(stat -c '%a %U' "$f") dir=$(stat -c '%a' "$(dirname "$f")")"
  openssl x509 -noout -subject -nameopt compat -in "$f"
  a=$(openssl x509 -noout -pubkey -in "$f"); b=$(openssl pkey -in "$f" -pubout)
  [ -n "$a" ] && [ "$a" = "$b" ] && echo key=matches
fi"#;

/// A proxy file as grid-proxy-init writes it: the certificate, its key, the rest of the chain.
fn proxy_file(leaf: &Credential, key: &Credential, rest: &[&Credential]) -> String {
    let mut pem = leaf.cert_pem().unwrap();
    pem.extend(key.key_pem_traditional().unwrap());
    for c in rest {
        pem.extend(c.cert_pem().unwrap());
    }
    String::from_utf8(pem).unwrap()
}

/// A line of the key's base64, to look for in the log.
fn key_line(cred: &Credential) -> String {
    let pem = String::from_utf8(cred.key_pem_traditional().unwrap()).unwrap();
    pem.lines().nth(1).unwrap().to_string()
}

/// The `key=value` lines a handover session printed.
fn fields(r: &Value) -> std::collections::HashMap<String, String> {
    r["out"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_proxy_handed_over_in_the_environment_reaches_the_session_when_it_is_the_logins() {
    let Some(python) = python_with("asyncssh, OpenSSL") else {
        return;
    };
    let pki = pki();
    let me = user();
    let files = tempfile::tempdir().unwrap();
    let dir = files.path().join("session-files");
    let sshd = format!(
        "session_token_dir = \"{}\"\nx509_proxy_handover = true\n",
        dir.display()
    );
    // a proxy of another user of the same CA
    let now = hpccert_core::clock::now();
    let rsa_proxy = devpki::issue_proxy(&pki.rsa, &ProxySpec::new("5005", now, 12)).unwrap();
    let own = proxy_file(&pki.proxy1, &pki.proxy1, &[&pki.p256]);
    let wrong_key = proxy_file(&pki.proxy1, &pki.proxy2, &[&pki.p256]);
    let others = proxy_file(&rsa_proxy, &rsa_proxy, &[&pki.rsa]);
    let secrets = [
        key_line(&pki.proxy1),
        key_line(&pki.proxy2),
        key_line(&rsa_proxy),
    ];

    // with PAM (the default: the path reaches the session through the PAM helper) and without
    for pam in ["", "use_pam = false\n"] {
        let server = Server::start_with(&["x509"], None, &format!("{sshd}{pam}"));
        let (kp1, cp1) = server.credential("proxy1", &pki.proxy1, &[&pki.p256]);
        let (k256, c256) = server.credential("p256", &pki.p256, &[]);
        let job = |name: &str, key: &PathBuf, cert: &PathBuf, pem: &str| {
            json!({"name": name, "user": me, "key": key, "cert": cert,
                   "command": HANDOVER_COMMAND, "env": {"X509_USER_PROXY_PEM": pem}})
        };
        let results = asyncssh_run(
            &python,
            &server,
            vec![
                job("logged in with the proxy, hands it over", &kp1, &cp1, &own),
                job(
                    "logged in with the certificate, hands a proxy of it",
                    &k256,
                    &c256,
                    &own,
                ),
                job(
                    "a proxy certificate with another key",
                    &kp1,
                    &cp1,
                    &wrong_key,
                ),
                job("another user's proxy", &kp1, &cp1, &others),
                // the same chain again: its verification comes from the credential cache
                job("the proxy again, from the cache", &kp1, &cp1, &own),
            ],
        );
        let log = server.log();
        for l in log.lines().filter(|l| l.contains("proxy handover")) {
            eprintln!("{}: {l}", if pam.is_empty() { "PAM" } else { "no PAM" });
        }
        for r in [&results[0], &results[1], &results[4]] {
            let f = fields(r);
            assert_eq!(r["status"].as_i64(), Some(0), "{pam}{r}\n{log}");
            let file = PathBuf::from(&f["file"]);
            assert!(
                file.starts_with(&dir) && file.ends_with("x509up"),
                "{pam}{r}"
            );
            assert_eq!(
                f["pem"], "unset",
                "the PEM itself is no session variable: {r}"
            );
            assert_eq!(f["mode"], format!("600 {me} dir=700"), "{r}");
            assert!(f["subject"].contains(&format!("{P256_DN}/CN=1001")), "{r}");
            assert_eq!(f.get("key").map(String::as_str), Some("matches"), "{r}");
            // the session ended: the file and its directory go
            assert!(
                wait_for(Duration::from_secs(5), || !file.exists()
                    && !file.parent().unwrap().exists()),
                "{} is still there",
                file.display()
            );
            let port = port_of(r);
            assert!(
                log.lines().any(|l| l.contains("proxy handover accepted")
                    && l.contains(&format!("port {port} ssh2"))
                    && l.contains("proxy depth 1")),
                "{log}"
            );
        }
        let again = port_of(&results[4]);
        assert!(
            log.lines().any(|l| l.contains("Accepted x509")
                && l.contains(&format!("port {again} ssh2"))
                && l.contains("(cached")),
            "the last login's chain came from the cache:\n{log}"
        );
        for (r, why) in results[2..4].iter().zip([
            "the private key is not the key of the first certificate",
            "neither the login's chain nor a proxy of the login's certificate",
        ]) {
            // refused: the session runs, without the proxy
            assert_eq!(r["status"].as_i64(), Some(0), "{r}\n{log}");
            assert_eq!(fields(r)["file"], "none", "{r}");
            let port = port_of(r);
            assert!(
                log.lines().any(|l| l.contains("proxy handover refused")
                    && l.contains(&format!("port {port} ssh2"))
                    && l.contains(why)),
                "refusal saying {why:?}:\n{log}"
            );
        }
        for secret in &secrets {
            assert!(
                !log.contains(secret.as_str()),
                "a key is in the log:\n{log}"
            );
        }
    }

    // off (the default): nothing is written, the session gets no X509_USER_PROXY
    let off = Server::start_with(
        &["x509"],
        None,
        &format!("session_token_dir = \"{}\"\n", dir.display()),
    );
    let (kp1, cp1) = off.credential("proxy1", &pki.proxy1, &[&pki.p256]);
    let results = asyncssh_run(
        &python,
        &off,
        vec![
            json!({"name": "handover off", "user": me, "key": kp1, "cert": cp1,
                    "command": HANDOVER_COMMAND, "env": {"X509_USER_PROXY_PEM": own}}),
        ],
    );
    let f = fields(&results[0]);
    assert_eq!(
        (f["file"].as_str(), f["pem"].as_str()),
        ("none", "unset"),
        "{}",
        results[0]
    );
    assert!(
        std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none()),
        "nothing written below {}",
        dir.display()
    );
    let log = off.log();
    assert!(log.contains("x509_proxy_handover is off"), "{log}");
    assert!(!log.contains(secrets[0].as_str()), "{log}");
}

fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
