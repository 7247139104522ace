//! sshd-gsi as an operator runs it: under a flood of connections that never authenticate
//! (MaxStartups, PerSourceMaxStartups, LoginGraceTime, no descriptor leak), audited by
//! `ssh-audit`, reloaded with SIGHUP (a broken file is refused, a good one takes effect without
//! dropping sessions, mapping files are re-read without a signal), stopped with SIGTERM
//! (sessions finish, new connections are refused) and reporting to systemd through
//! `$NOTIFY_SOCKET`.
//!
//! Every test starts its own `sshd-gsi -f CONFIG --listen 127.0.0.1:PORT` with a config in a
//! temporary directory: a dev token issuer (`[[issuer]]` with a local JWKS file) and a token
//! map that maps the test subject to the current user, a test CA in an IGTF trust directory,
//! a grid-mapfile, an ed25519 host key. The server's stderr (its log) goes to a file the tests
//! read. The flood connects from 127.0.0.2 and up (Linux routes all of 127/8 to `lo`), the
//! legitimate clients from 127.0.0.1.
//!
//! A missing client skips its test with a printed reason; under `HPCCERT_E2E_REQUIRED=1` (CI)
//! it fails instead. The Python clients (paramiko, asyncssh) come from `$HPCCERT_E2E_PYTHON`,
//! else `<repo>/.venv-e2e/bin/python`; `ssh-audit` is looked for next to that interpreter
//! (`python3 -m venv .venv-e2e && .venv-e2e/bin/pip install 'asyncssh[pyOpenSSL]' paramiko
//! ssh-audit`; `.ci/run` does this).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

mod common;
use common::{Process, free_port, python_path, python_with, skip, write_mode};

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use hpccert_core::dev::pki::{self as devpki, CertSpec, Credential};
use hpccert_core::dev::token::{DevKey, jwks};
use hpccert_core::token::{JwsAlgorithm, unix_seconds};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

const ISSUER: &str = "https://issuer.e2e-operations.example";
const AUDIENCE: &str = "https://login.e2e-operations.example";
const KID: &str = "e2e-operations-rs256-1";
const CA_DN: &str = "/DC=org/DC=hpccert-e2e/CN=hpccert E2E Operations CA";
/// A user the grid-mapfile does not know at first.
const NEW_DN: &str = "/DC=org/DC=hpccert-e2e/O=Operations/CN=New User";
/// Longest a client command may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// peers and skips

/// `ssh-audit` next to the test interpreter.
fn ssh_audit() -> Option<PathBuf> {
    let python = python_path();
    let audit = python
        .parent()
        .map(|d| d.join("ssh-audit"))
        .unwrap_or_else(|| PathBuf::from("ssh-audit"));
    if audit.is_file() {
        Some(audit)
    } else {
        skip(&format!(
            "{} not found (pip install ssh-audit into the environment of {})",
            audit.display(),
            python.display()
        ));
        None
    }
}

// ---------------------------------------------------------------------------------------------
// running commands

/// (exit code, stdout, stderr), within the client deadline.
fn run(cmd: &mut Command) -> (i32, String, String) {
    common::run_within(cmd, CLIENT_TIMEOUT)
}

/// Replace `path` as an editor or a deployment tool should: a temporary file renamed over it.
fn replace_atomically(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("tmp-e2e");
    write_mode(&tmp, data, 0o644);
    std::fs::rename(&tmp, path).unwrap();
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

/// Poll `f` every 50 ms until it is true or `timeout` passed; whether it became true.
fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// credentials: a token issuer, a CA

fn issuer_key() -> &'static DevKey {
    static KEY: OnceLock<DevKey> = OnceLock::new();
    KEY.get_or_init(|| DevKey::generate(KID, JwsAlgorithm::RS256).unwrap())
}

fn subject() -> String {
    format!("e2e-operations-user-{}", user())
}

fn good_token() -> String {
    let t = unix_seconds(hpccert_core::clock::now());
    issuer_key()
        .mint(&json!({
            "iss": ISSUER, "sub": subject(), "aud": AUDIENCE, "iat": t, "nbf": t, "exp": t + 3600,
            "jti": format!("e2e-operations-{t}-{}", std::process::id()), "wlcg.ver": "1.0",
            "scope": "compute.create compute.read",
        }))
        .unwrap()
}

struct Pki {
    ca: Credential,
    /// A user certificate for NEW_DN.
    new_user: Credential,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let now = hpccert_core::clock::now();
        let ca = devpki::self_signed_ca(&CertSpec::ca(CA_DN, now, 30).unwrap()).unwrap();
        let new_user = devpki::issue(&ca, &CertSpec::user(NEW_DN, now, 7).unwrap()).unwrap();
        Pki { ca, new_user }
    })
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

// ---------------------------------------------------------------------------------------------
// the server

struct Server {
    dir: tempfile::TempDir,
    port: u16,
    process: Process,
    log: PathBuf,
}

fn quoted(list: &[&str]) -> String {
    list.iter()
        .map(|m| format!("\"{m}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Server {
    /// A server offering `methods` (TOML strings), with `sshd_extra` lines in `[sshd]` and
    /// `env` in its environment, ready to accept connections.
    fn start(methods: &[&str], sshd_extra: &str, env: &[(&str, &Path)]) -> Self {
        Self::start_with(methods, sshd_extra, env, "", "")
    }

    /// The same, with `tokenmap_extra` lines at the end of the token map and `gridmap_extra`
    /// lines in the grid-mapfile.
    fn start_with(
        methods: &[&str],
        sshd_extra: &str,
        env: &[(&str, &Path)],
        tokenmap_extra: &str,
        gridmap_extra: &str,
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sshd-gsi-e2e-ops-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        devpki::install_ca(&d.join("certificates"), &pki().ca.cert, None, None).unwrap();
        std::fs::create_dir(d.join("keys")).unwrap();
        write_mode(
            &d.join("grid-mapfile"),
            format!("# e2e_operations\n{gridmap_extra}").as_bytes(),
            0o644,
        );
        write_mode(
            &d.join("token-mapfile"),
            format!(
                "\"{ISSUER}\" \"{}\" {}\n{tokenmap_extra}",
                subject(),
                user()
            )
            .as_bytes(),
            0o644,
        );
        write_mode(
            &d.join("issuer-jwks.json"),
            jwks(&[issuer_key()]).unwrap().to_string().as_bytes(),
            0o644,
        );
        write_mode(
            &d.join("ssh_host_ed25519_key"),
            openssh_ed25519_key().as_bytes(),
            0o600,
        );
        write_mode(&d.join("token.jwt"), good_token().as_bytes(), 0o600);
        let log = d.join("sshd-gsi.log");
        // a port found free (bound to 0, then released) may be taken by someone else before
        // the server binds it: then the next try takes another
        for _ in 0..5 {
            let port = free_port();
            write_mode(
                &d.join("hpccert.toml"),
                config_text(d, port, methods, sshd_extra).as_bytes(),
                0o644,
            );
            if let Some(child) = common::spawn_ready(&d.join("hpccert.toml"), port, &log, env) {
                return Self {
                    dir,
                    port,
                    process: child,
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

    /// Wait until the log (from byte `from` on) contains `needle`.
    fn wait_log(&self, from: usize, needle: &str, timeout: Duration) -> bool {
        wait_for(timeout, || {
            self.log()
                .get(from..)
                .is_some_and(|text| text.contains(needle))
        })
    }

    fn config_path(&self) -> PathBuf {
        self.path("hpccert.toml")
    }

    /// Rewrite the config file (atomically) with other methods and `[sshd]` lines.
    fn rewrite_config(&self, methods: &[&str], sshd_extra: &str) {
        replace_atomically(
            &self.config_path(),
            config_text(self.dir.path(), self.port, methods, sshd_extra).as_bytes(),
        );
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.process.0.id()).unwrap())
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap();
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.process.0.try_wait().unwrap()
    }

    /// The server's open file descriptors.
    fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }
}

fn config_text(d: &Path, port: u16, methods: &[&str], sshd_extra: &str) -> String {
    let s = |name: &str| d.join(name).display().to_string();
    format!(
        "version = 1\n\
         [trust]\nca_dir = \"{}\"\n\
         [mapping]\ngrid_mapfile = \"{}\"\ntoken_mapfile = \"{}\"\nsuspended_file = \"{}\"\nrestrictions_file = \"{}\"\n\
         gridmapdir = \"{}\"\nnss_cache_dir = \"{}\"\n\
         [tokens]\nkey_cache_dir = \"{}\"\n\
         [sshd]\nlisten = [\"127.0.0.1:{port}\"]\nhost_keys = [\"{}\"]\nmethods = [{}]\n{sshd_extra}\
         [[issuer]]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\nalgorithms = [\"RS256\"]\nprofile = \"wlcg\"\njwks_file = \"{}\"\nrequired_scopes = []\n",
        s("certificates"),
        s("grid-mapfile"),
        s("token-mapfile"),
        s("suspended"),
        s("restrictions"),
        s("gridmapdir"),
        s("nss"),
        s("keys"),
        s("ssh_host_ed25519_key"),
        quoted(methods),
        s("issuer-jwks.json"),
    )
}

// ---------------------------------------------------------------------------------------------
// clients

/// One paramiko login with the token (`password` or `keyboard-interactive`) that runs
/// `command`: prints `{"started": true, "login_seconds": ...}` once the command runs, then
/// the result: `ok`, `out`, `status` or `error` (exception class), `message`; `seconds`
/// from connecting to the exit status.
const PARAMIKO: &str = r#"
import json, sys, time, paramiko
host, port, user, token_file, method, command = sys.argv[1:7]
token = open(token_file).read().strip()
t0 = time.monotonic()
try:
    if "@" in host:
        # SOURCE@HOST: connect from that local address
        import socket
        source, host = host.split("@")
        t = paramiko.Transport(socket.create_connection((host, int(port)), source_address=(source, 0)))
    else:
        t = paramiko.Transport((host, int(port)))
    t.start_client(timeout=10)
    if method == "password":
        # no fallback to keyboard-interactive: password means password here
        t.auth_password(user, token, fallback=False)
    else:
        t.auth_interactive(user, lambda title, instructions, asked: [token for _ in asked])
    ch = t.open_session()
    ch.exec_command(command)
    print(json.dumps({"started": True, "login_seconds": time.monotonic() - t0}), flush=True)
    out = ch.makefile("rb").read().decode()
    status = ch.recv_exit_status()
    res = {"ok": True, "out": out, "status": status}
    t.close()
except Exception as e:
    res = {"ok": False, "error": type(e).__name__, "message": str(e)}
res["seconds"] = time.monotonic() - t0
print(json.dumps(res), flush=True)
"#;

/// One asyncssh RFC 6187 login with `key` and `cert`, running `command`: prints `ok`, then
/// `out`, `status` or `error` (exception class), `message`.
const ASYNCSSH_X509: &str = r#"
import asyncio, json, sys, asyncssh
host, port, user, key, cert, command = sys.argv[1:7]
async def main():
    try:
        async with asyncssh.connect(host, int(port), username=user,
                                    client_keys=[(key, cert)], preferred_auth="publickey",
                                    known_hosts=None, agent_path=None, config=[]) as conn:
            r = await asyncio.wait_for(conn.run(command, check=False), 30)
            res = {"ok": True, "out": r.stdout, "status": r.exit_status}
    except Exception as e:
        res = {"ok": False, "error": type(e).__name__, "message": str(e)}
    print(json.dumps(res))
asyncio.run(main())
"#;

/// A running Python client whose stdout lines arrive on a channel.
struct PyClient {
    _process: Process,
    lines: Receiver<String>,
    stderr: PathBuf,
}

impl PyClient {
    fn spawn(python: &Path, script: &str, args: &[&str], stderr: PathBuf) -> Self {
        let mut child = Command::new(python)
            .args(["-c", script])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            _process: Process(child),
            lines,
            stderr,
        }
    }

    /// The next JSON line; None if there is none within `timeout` (or the client ended).
    fn next(&self, timeout: Duration) -> Option<Value> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Some(
                serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("client printed {line:?}: {e}")),
            ),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The result line (the one with `ok`), skipping `started`.
    fn result(&self) -> Value {
        loop {
            let v = self.next(CLIENT_TIMEOUT).unwrap_or_else(|| {
                panic!(
                    "the client printed no result; stderr:\n{}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                )
            });
            if v.get("ok").is_some() {
                return v;
            }
        }
    }

    /// Whether the client is still running: no result printed yet (`started` lines are
    /// skipped).
    fn running(&self) -> bool {
        while let Ok(line) = self.lines.try_recv() {
            let v: Value = serde_json::from_str(&line).unwrap();
            if v.get("ok").is_some() {
                eprintln!("the client finished: {v}");
                return false;
            }
        }
        true
    }
}

/// Start a paramiko token login running `command` on `server`.
fn paramiko_spawn(python: &Path, server: &Server, method: &str, command: &str) -> PyClient {
    paramiko_spawn_from(python, server, "127.0.0.1", method, command)
}

/// The same from `source` (`127.0.0.1`, or `SOURCE@127.0.0.1` to connect from another local
/// address).
fn paramiko_spawn_from(
    python: &Path,
    server: &Server,
    source: &str,
    method: &str,
    command: &str,
) -> PyClient {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let token = server.path("token.jwt");
    PyClient::spawn(
        python,
        PARAMIKO,
        &[
            source,
            &server.port.to_string(),
            user(),
            token.to_str().unwrap(),
            method,
            command,
        ],
        server.path(&format!("paramiko-{n}.stderr")),
    )
}

/// A paramiko token login running `command`, to the end: the result line.
fn paramiko(python: &Path, server: &Server, method: &str, command: &str) -> Value {
    paramiko_spawn(python, server, method, command).result()
}

fn assert_ok(r: &Value, out: &str, what: &str, server: &Server) {
    assert_eq!(
        r["ok"],
        json!(true),
        "{what}: {r}\nserver log:\n{}",
        server.log()
    );
    assert_eq!(r["out"].as_str(), Some(out), "{what}: {r}");
    assert_eq!(r["status"].as_i64(), Some(0), "{what}: {r}");
}

// ---------------------------------------------------------------------------------------------
// 1. flood

/// Open `per_source` connections from each of `sources` to `target`; every other one sends
/// an SSH version line (and then nothing), the others send nothing at all.
fn flood(target: SocketAddr, sources: &[Ipv4Addr], per_source: usize) -> Vec<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut out = Vec::new();
        for _ in 0..per_source {
            for src in sources {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::new((*src).into(), 0)).unwrap();
                let stream = socket
                    .connect(target)
                    .await
                    .unwrap_or_else(|e| panic!("flood connect from {src}: {e}"));
                let mut stream = stream.into_std().unwrap();
                stream.set_nonblocking(false).unwrap();
                if out.len() % 2 == 0 {
                    // the server may already have dropped it
                    let _ = stream.write_all(b"SSH-2.0-flood_1.0\r\n");
                }
                out.push(stream);
            }
        }
        out
    })
}

fn count_lines(log: &str, needles: &[&str]) -> usize {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

#[test]
fn flood_of_unauthenticated_connections() {
    let Some(python) = python_with("paramiko") else {
        return;
    };
    let mut server = Server::start(
        &["keyboard-interactive", "password"],
        "max_startups = \"10:30:100\"\nper_source_max_startups = 5\nlogin_grace_time = 3\n",
        &[],
    );
    let target: SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();

    // a first login opens whatever the server opens lazily; then the baseline
    assert_ok(
        &paramiko(&python, &server, "password", "true"),
        "",
        "warm-up login",
        &server,
    );
    std::thread::sleep(Duration::from_millis(300));
    let baseline = server.fd_count();

    // 500 connections from one address: PerSourceMaxStartups keeps 5 of them
    let started = Instant::now();
    let mut flood_sockets = flood(target, &[Ipv4Addr::new(127, 0, 0, 2)], 500);
    eprintln!(
        "flood: 500 connections from 127.0.0.2 opened in {:?}",
        started.elapsed()
    );
    // the legitimate client, from 127.0.0.1, is not held up
    let r = paramiko(&python, &server, "password", "true");
    assert_ok(&r, "", "login under the flood", &server);
    let login = r["seconds"].as_f64().unwrap();
    eprintln!("flood: login + `true` from 127.0.0.1 took {login:.3} s");
    assert!(
        login < 2.0,
        "login under the flood took {login:.3} s (limit 2 s)"
    );
    assert!(
        server.wait_log(
            0,
            "Timeout before authentication for 127.0.0.2 port",
            Duration::from_secs(8)
        ),
        "no LoginGraceTime timeout for a flood connection:\n{}",
        server.log()
    );
    let log = server.log();
    let per_source = count_lines(
        &log,
        &[
            "drop connection from 127.0.0.2 port",
            "past PerSourceMaxStartups (5 from this address)",
        ],
    );
    eprintln!("flood: {per_source} connections dropped past PerSourceMaxStartups");
    assert!(
        per_source >= 400,
        "{per_source} PerSourceMaxStartups drops of 500"
    );
    assert_eq!(
        count_lines(&log, &["past MaxStartups"]),
        0,
        "5 unauthenticated connections are below MaxStartups' start (10)"
    );

    // from 40 more addresses (3 each): past MaxStartups' start (10), connections are dropped
    // at random, all of them at `full` (100). A legitimate client would be dropped as well
    // (sshd's MaxStartups is server-wide): it is not tried here.
    let sources: Vec<Ipv4Addr> = (3..43).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
    flood_sockets.extend(flood(target, &sources, 3));
    assert!(
        server.wait_log(0, "past MaxStartups (", Duration::from_secs(5)),
        "no MaxStartups drop:\n{}",
        server.log()
    );
    let max = count_lines(
        &server.log(),
        &["drop connection from 127.0.0.", "past MaxStartups ("],
    );
    eprintln!("flood: {max} of 120 connections from 40 addresses dropped past MaxStartups");
    std::thread::sleep(Duration::from_millis(300));
    eprintln!(
        "flood: server fds: {baseline} before, {} with {} flood sockets open",
        server.fd_count(),
        flood_sockets.len()
    );
    assert!(
        server.exited().is_none(),
        "the server died:\n{}",
        server.log()
    );

    // the flood ends: every descriptor is given back
    drop(flood_sockets);
    let mut now = 0;
    let back = wait_for(Duration::from_secs(10), || {
        now = server.fd_count();
        now <= baseline + 2
    });
    eprintln!("flood: server fds after the flood: {now} (baseline {baseline})");
    assert!(
        back,
        "the server holds {now} descriptors after the flood, {baseline} before"
    );
    assert!(
        server.exited().is_none(),
        "the server died:\n{}",
        server.log()
    );
    assert_ok(
        &paramiko(&python, &server, "keyboard-interactive", "true"),
        "",
        "login after the flood",
        &server,
    );
}

/// LoginGraceTime as sshd has it: a connection that has not authenticated after the grace
/// time is closed by the server, whether it sent its version line or nothing at all.
#[test]
fn login_grace_time_closes_unauthenticated_connections() {
    // Found by this file: sshd-gsi/src/server.rs accept_loop
    // - a connection that never sends its version line waits in `russh::server::run_stream`,
    //   which reads that line before returning; the grace timer starts only after it returns
    //   (and russh's inactivity_timeout is None): the connection and its MaxStartups slot
    //   are held for as long as the client keeps it open;
    // - after the grace time the task logs `Timeout before authentication` and returns, but
    //   dropping the `RunningSession` (a oneshot receiver) does not stop russh's spawned
    //   session task: the connection stays open, can still authenticate, and keeps its slot.
    // Together: idle connections from MaxStartups/PerSourceMaxStartups addresses hold the
    // server at `full` (every new connection dropped) for as long as the attacker wants.
    let mut server = Server::start(
        &["keyboard-interactive"],
        "login_grace_time = 2\nper_source_max_startups = 0\n",
        &[],
    );
    std::thread::sleep(Duration::from_millis(300));
    let baseline = server.fd_count();
    let mut silent = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let mut talker = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    talker.write_all(b"SSH-2.0-idle_1.0\r\n").unwrap();
    assert!(
        server.wait_log(0, "Timeout before authentication", Duration::from_secs(5)),
        "{}",
        server.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let mut open = Vec::new();
    for (name, s) in [("silent", &mut silent), ("version line only", &mut talker)] {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        if !closed {
            open.push(name);
        }
    }
    assert!(
        open.is_empty(),
        "the server keeps unauthenticated connections open past login_grace_time: {open:?} (fds: {} now, {baseline} before)",
        server.fd_count()
    );
    assert!(server.exited().is_none());
}

// ---------------------------------------------------------------------------------------------
// 2. ssh-audit

/// `ssh-audit -j`: (exit code, report).
fn audit_json(audit: &Path, server: &Server) -> (i32, Value) {
    let (code, out, err) = run(Command::new(audit).args([
        "-j",
        "-p",
        &server.port.to_string(),
        "--skip-rate-test",
        "127.0.0.1",
    ]));
    let v = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("ssh-audit -j printed {out:?} ({e}); stderr: {err}"));
    (code, v)
}

/// Every (section, algorithm, level, note) of an ssh-audit report.
fn audit_notes(report: &Value) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for section in ["kex", "key", "enc", "mac"] {
        for alg in report[section].as_array().into_iter().flatten() {
            let name = alg["algorithm"].as_str().unwrap_or_default();
            if let Some(notes) = alg["notes"].as_object() {
                for (level, list) in notes {
                    for note in list.as_array().into_iter().flatten() {
                        out.push((
                            section.to_string(),
                            name.to_string(),
                            level.clone(),
                            note.as_str().unwrap_or_default().to_string(),
                        ));
                    }
                }
            }
        }
    }
    out
}

fn algorithms(report: &Value, section: &str) -> Vec<String> {
    report[section]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["algorithm"].as_str().map(str::to_string))
        .collect()
}

/// Strict KEX (Terrapin) offered, nothing with SHA-1 offered, no CVE.
fn assert_hardened(report: &Value) {
    assert!(
        algorithms(report, "kex").contains(&"kex-strict-s-v00@openssh.com".to_string()),
        "no strict KEX: {report}"
    );
    for section in ["kex", "key", "enc", "mac"] {
        let list = algorithms(report, section);
        assert!(!list.is_empty(), "no {section} algorithms: {report}");
        for a in list {
            let l = a.to_ascii_lowercase();
            assert!(
                !l.contains("sha1") && l != "ssh-rsa" && l != "ssh-dss",
                "{section} algorithm with SHA-1: {a}"
            );
        }
    }
    for (section, alg, _, note) in audit_notes(report) {
        assert!(
            !note.contains("SHA-1") && !note.contains("SHA1"),
            "{section} {alg}: {note}"
        );
    }
    assert_eq!(report["cves"], json!([]), "{report}");
}

#[test]
fn ssh_audit_is_clean_with_the_post_quantum_kex_alone() {
    let Some(audit) = ssh_audit() else {
        return;
    };
    let server = Server::start(
        &["keyboard-interactive"],
        "kex_algorithms = [\"mlkem768x25519-sha256\"]\n",
        &[],
    );
    let (code, out, err) = run(Command::new(&audit).args([
        "-n",
        "-p",
        &server.port.to_string(),
        "--skip-rate-test",
        "127.0.0.1",
    ]));
    assert_eq!(code, 0, "ssh-audit: no failure, no warning:\n{out}\n{err}");
    assert!(
        !out.contains("[fail]") && !out.contains("[warn]"),
        "ssh-audit:\n{out}"
    );
    let (code, report) = audit_json(&audit, &server);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        algorithms(&report, "kex")
            .into_iter()
            .filter(|a| !a.starts_with("ext-info") && !a.starts_with("kex-strict"))
            .collect::<Vec<_>>(),
        vec!["mlkem768x25519-sha256".to_string()],
        "{report}"
    );
    assert_hardened(&report);
    let bad: Vec<_> = audit_notes(&report)
        .into_iter()
        .filter(|(_, _, level, _)| level != "info")
        .collect();
    assert!(bad.is_empty(), "ssh-audit notes: {bad:?}");

    // The default kex list adds curve25519-sha256 (and its @libssh.org name) for clients
    // without ML-KEM (OpenSSH before 9.9, paramiko). ssh-audit warns about those ("does not
    // provide protection against post-quantum attacks") and exits 2 (its WARNING code; 3 is
    // FAILURE): warnings about the missing post-quantum protection only, no failure.
    let server = Server::start(&["keyboard-interactive"], "", &[]);
    let (code, report) = audit_json(&audit, &server);
    assert_eq!(code, 2, "ssh-audit of the default kex list: {report}");
    assert_hardened(&report);
    let notes = audit_notes(&report);
    let warnings: Vec<_> = notes.iter().filter(|(_, _, l, _)| l == "warn").collect();
    assert!(!warnings.is_empty(), "{report}");
    for (section, alg, _, note) in &warnings {
        assert!(
            note.contains("post-quantum"),
            "a warning not about post-quantum protection: {section} {alg}: {note}"
        );
    }
    let others: Vec<_> = notes
        .iter()
        .filter(|(_, _, l, _)| l != "warn" && l != "info")
        .collect();
    assert!(others.is_empty(), "ssh-audit failures: {others:?}");
    eprintln!(
        "ssh-audit, default kex list: {} warnings, all about post-quantum protection",
        warnings.len()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. SIGHUP

#[test]
fn sighup_refuses_a_broken_config_and_applies_a_good_one_without_dropping_sessions() {
    let Some(python) = python_with("paramiko, asyncssh, OpenSSL") else {
        return;
    };
    let before = ["keyboard-interactive", "x509"];
    let server = Server::start(&before, "", &[]);
    assert_ok(
        &paramiko(&python, &server, "keyboard-interactive", "true"),
        "",
        "first login",
        &server,
    );

    // (a) a broken file: refused, with the file and the line, the running config kept
    let good = std::fs::read_to_string(server.config_path()).unwrap();
    let broken = format!("{good}bogus_key = 1\n");
    let line = broken.lines().count();
    replace_atomically(&server.config_path(), broken.as_bytes());
    let from = server.log().len();
    server.signal(Signal::SIGHUP);
    assert!(
        server.wait_log(
            from,
            "reload refused, keeping the running configuration",
            Duration::from_secs(10)
        ),
        "{}",
        server.log()
    );
    let log = server.log()[from..].to_string();
    let refused = log
        .lines()
        .find(|l| l.contains("reload refused"))
        .unwrap()
        .to_string();
    eprintln!("sighup (a): {refused}");
    assert!(
        refused.contains(&server.config_path().display().to_string())
            && refused.contains(&format!("line {line}"))
            && refused.contains("bogus_key"),
        "the refusal names the file, line {line} and the key: {refused}"
    );
    assert!(!log.contains("configuration reloaded"), "{log}");
    assert_ok(
        &paramiko(&python, &server, "keyboard-interactive", "true"),
        "",
        "login after a refused reload",
        &server,
    );
    let r = paramiko(&python, &server, "password", "true");
    assert_eq!(
        r["error"].as_str(),
        Some("BadAuthenticationType"),
        "password is not offered yet: {r}"
    );

    // (b) a good file that offers password too: applied at SIGHUP, a session open across
    // the reload goes on
    let session = paramiko_spawn(
        &python,
        &server,
        "keyboard-interactive",
        "sleep 3; echo done",
    );
    let started = session.next(CLIENT_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "the long session did not start: {}",
            std::fs::read_to_string(&session.stderr).unwrap_or_default()
        )
    });
    assert_eq!(started["started"], json!(true), "{started}");
    server.rewrite_config(&["keyboard-interactive", "password", "x509"], "");
    let from = server.log().len();
    server.signal(Signal::SIGHUP);
    assert!(
        server.wait_log(from, "configuration reloaded", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    assert!(
        session.running(),
        "the session is still running at the reload"
    );
    assert_ok(
        &paramiko(&python, &server, "password", "true"),
        "",
        "password login after the reload",
        &server,
    );
    let r = session.result();
    assert_ok(&r, "done\n", "the session across the reload", &server);

    // (c) a new grid-mapfile line admits a DN without a signal
    let key = server.path("new.key");
    let cert = server.path("new.pem");
    write_mode(&key, &pki().new_user.key_pem().unwrap(), 0o600);
    write_mode(&cert, &pki().new_user.cert_pem().unwrap(), 0o644);
    let x509 = || {
        let (code, out, err) = run(Command::new(&python).args([
            "-c",
            ASYNCSSH_X509,
            "127.0.0.1",
            &server.port.to_string(),
            user(),
            key.to_str().unwrap(),
            cert.to_str().unwrap(),
            "echo \"$HPCCERT_DN\"",
        ]));
        assert_eq!(code, 0, "asyncssh: {out}\n{err}");
        serde_json::from_str::<Value>(out.trim()).unwrap()
    };
    let from = server.log().len();
    let r = x509();
    assert_eq!(r["error"].as_str(), Some("PermissionDenied"), "{r}");
    assert!(
        server.log()[from..].contains(&format!("DN not in grid-mapfile: {NEW_DN}")),
        "{}",
        server.log()
    );
    let gridmap = server.path("grid-mapfile");
    let mut text = std::fs::read_to_string(&gridmap).unwrap();
    text.push_str(&format!("\"{NEW_DN}\" {}\n", user()));
    replace_atomically(&gridmap, text.as_bytes());
    // the mapping files are checked for changes at most every 2 s
    std::thread::sleep(Duration::from_millis(2200));
    let r = x509();
    assert_ok(
        &r,
        &format!("{NEW_DN}\n"),
        "x509 login after the grid-mapfile edit",
        &server,
    );
    assert!(
        server
            .log()
            .contains(&format!("Accepted x509 for {}", user())),
        "{}",
        server.log()
    );
}

/// paramiko sends a new `ssh-userauth` service request before every authentication method
/// (OpenSSH's sshd answers each one); `SSHClient.connect(password=TOKEN)` with a key at hand
/// (`pkey`, `~/.ssh`, an agent) tries the key first, then the password on the same connection.
#[test]
fn password_after_a_refused_key_on_the_same_connection() {
    // Found by this file: russh's server (.patched/russh-0.65.1/src/server/encrypted.rs,
    // `process_packet`) accepts SERVICE_REQUEST "ssh-userauth" only in
    // `WaitingAuthServiceRequest`; in `WaitingAuthRequest` the message falls to `_ => Ok(())`
    // and no SERVICE_ACCEPT is sent. paramiko waits for it until its auth_timeout (30 s) and
    // fails with "Authentication timeout." (also paramiko's default password-to-keyboard-
    // interactive fallback, which is why the other tests pass `fallback=False`).
    let Some(python) = python_with("paramiko") else {
        return;
    };
    let server = Server::start(&["keyboard-interactive", "password"], "", &[]);
    let script = r#"
import sys, time, paramiko
host, port, user, token_file = sys.argv[1:5]
token = open(token_file).read().strip()
t = paramiko.Transport((host, int(port)))
t.start_client(timeout=10)
t.auth_timeout = 5
try:
    t.auth_publickey(user, paramiko.ECDSAKey.generate())
    print("publickey accepted")
except paramiko.AuthenticationException:
    pass
t0 = time.monotonic()
try:
    t.auth_password(user, token, fallback=False)
    ch = t.open_session()
    ch.exec_command("echo ok")
    print(ch.makefile("rb").read().decode().strip())
except Exception as e:
    print(type(e).__name__, e, "after", round(time.monotonic() - t0, 1), "s")
"#;
    let (code, out, err) = run(Command::new(&python).args([
        "-c",
        script,
        "127.0.0.1",
        &server.port.to_string(),
        user(),
        server.path("token.jwt").to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "ok",
        "the token as the password after a refused key, same connection:\n{}",
        server.log()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. SIGTERM

#[test]
fn sigterm_lets_sessions_finish_and_refuses_new_connections() {
    let Some(python) = python_with("paramiko") else {
        return;
    };
    let mut server = Server::start(&["keyboard-interactive", "password"], "", &[]);
    let session = paramiko_spawn(&python, &server, "password", "sleep 3; echo finished");
    let started = session.next(CLIENT_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "the session did not start: {}",
            std::fs::read_to_string(&session.stderr).unwrap_or_default()
        )
    });
    assert_eq!(started["started"], json!(true), "{started}");
    let from = server.log().len();
    server.signal(Signal::SIGTERM);
    assert!(
        server.wait_log(from, "Received signal; terminating", Duration::from_secs(5)),
        "{}",
        server.log()
    );
    let mut last = String::new();
    let refused = wait_for(Duration::from_secs(3), || {
        match TcpStream::connect(("127.0.0.1", server.port)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => true,
            other => {
                last = format!("{other:?}");
                false
            }
        }
    });
    assert!(
        refused,
        "new connections after SIGTERM are not refused: {last}"
    );
    assert!(
        session.running() && server.exited().is_none(),
        "the server waits for the session"
    );
    let r = session.result();
    assert_ok(&r, "finished\n", "the session across SIGTERM", &server);
    let mut status = None;
    assert!(
        wait_for(Duration::from_secs(5), || {
            status = server.exited();
            status.is_some()
        }),
        "the server still runs after its last session ended:\n{}",
        server.log()
    );
    assert!(
        status.unwrap().success(),
        "exit status {status:?}:\n{}",
        server.log()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. sd_notify

#[test]
fn sd_notify_ready_reloading_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut server = Server::start(
        &["keyboard-interactive"],
        "",
        &[("NOTIFY_SOCKET", &socket_path)],
    );
    let recv = || {
        let mut buf = [0u8; 4096];
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no sd_notify message: {e}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let has = |msg: &str, field: &str| msg.lines().any(|l| l == field);
    let ready = recv();
    assert!(has(&ready, "READY=1"), "{ready:?}");
    server.signal(Signal::SIGHUP);
    let reloading = recv();
    assert!(has(&reloading, "RELOADING=1"), "{reloading:?}");
    let ready = recv();
    assert!(has(&ready, "READY=1"), "{ready:?}");
    assert!(
        server.wait_log(0, "configuration reloaded", Duration::from_secs(5)),
        "{}",
        server.log()
    );
    server.signal(Signal::SIGTERM);
    let stopping = recv();
    assert!(has(&stopping, "STOPPING=1"), "{stopping:?}");
    assert!(
        wait_for(Duration::from_secs(5), || server.exited().is_some()),
        "{}",
        server.log()
    );
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    assert!(socket.recv(&mut buf).is_err(), "nothing after STOPPING=1");
}

// ---------------------------------------------------------------------------------------------
// 6. PAM account and session stacks (as root)

/// The PAM test's account: sessions must run as it, with its limits.
const PAM_ACCOUNT: &str = "hpccert-e2e-alice";
const PAM_WRAPPER: &str = "/usr/lib/x86_64-linux-gnu/libpam_wrapper.so";

/// A server whose PAM service `hpccert-e2e` (through pam_wrapper, so the machine's
/// /etc/pam.d stays as it is) runs pam_exec in the account stack and pam_limits, pam_env and
/// pam_exec in the session stack, each leaving a trace in the test directory; its token map
/// maps `pam-subject` to [`PAM_ACCOUNT`].
fn pam_server(account_extra: &str) -> Option<(Server, PathBuf, tempfile::TempDir)> {
    if !nix::unistd::geteuid().is_root() {
        skip("the PAM session test needs root (sessions switch to another account)");
        return None;
    }
    if nix::unistd::User::from_name(PAM_ACCOUNT)
        .ok()
        .flatten()
        .is_none()
    {
        skip(&format!(
            "the account {PAM_ACCOUNT} does not exist (.ci/run creates it)"
        ));
        return None;
    }
    if !Path::new(PAM_WRAPPER).exists() {
        skip("pam_wrapper is not installed (Debian libpam-wrapper)");
        return None;
    }
    let pam = tempfile::Builder::new()
        .prefix("sshd-gsi-e2e-pam-")
        .tempdir()
        .unwrap();
    let p = pam.path();
    std::fs::create_dir(p.join("pam.d")).unwrap();
    let s = |name: &str| p.join(name).display().to_string();
    write_mode(
        &p.join("account.sh"),
        format!(
            "#!/bin/sh\n[ -e {deny} ] && exit 1\nenv | grep '^HPCCERT_' | sort > {env}\n\
             echo \"$PAM_TYPE $PAM_USER $PAM_RHOST $PAM_SERVICE\" >> {log}\n",
            deny = s("deny"),
            env = s("account-env"),
            log = s("account.log"),
        )
        .as_bytes(),
        0o755,
    );
    write_mode(
        &p.join("session.sh"),
        format!(
            "#!/bin/sh\necho \"$PAM_TYPE $PAM_USER $PAM_RHOST $PAM_TTY\" >> {}\n",
            s("session.log")
        )
        .as_bytes(),
        0o755,
    );
    write_mode(
        &p.join("limits.conf"),
        format!("{PAM_ACCOUNT} soft nofile 777\n{PAM_ACCOUNT} hard nofile 778\n").as_bytes(),
        0o644,
    );
    write_mode(
        &p.join("pam_env.conf"),
        b"E2E_PAM_MARKER DEFAULT=set-by-pam-env\n",
        0o644,
    );
    write_mode(
        &p.join("pam.d/hpccert-e2e"),
        format!(
            "auth required pam_deny.so\n\
             account required pam_exec.so quiet {account}\n{account_extra}\
             session required pam_limits.so conf={limits}\n\
             session required pam_env.so readenv=0 user_readenv=0 conffile={env}\n\
             session required pam_exec.so quiet {session}\n",
            account = s("account.sh"),
            limits = s("limits.conf"),
            env = s("pam_env.conf"),
            session = s("session.sh"),
        )
        .as_bytes(),
        0o644,
    );
    write_mode(
        &p.join("pam.d/other"),
        b"auth required pam_deny.so\naccount required pam_deny.so\nsession required pam_deny.so\n",
        0o644,
    );
    let service_dir = p.join("pam.d");
    let server = Server::start_with(
        &["password", "x509"],
        &format!(
            "use_pam = true\npam_service = \"hpccert-e2e\"\naudit_log = \"{}\"\n",
            p.join("audit.jsonl").display()
        ),
        &[
            ("LD_PRELOAD", Path::new(PAM_WRAPPER)),
            ("PAM_WRAPPER", Path::new("1")),
            ("PAM_WRAPPER_SERVICE_DIR", &service_dir),
        ],
        &format!("\"{ISSUER}\" \"pam-subject\" {PAM_ACCOUNT}\n"),
        &format!("\"{NEW_DN}\" {PAM_ACCOUNT}\n"),
    );
    let t = unix_seconds(hpccert_core::clock::now());
    let token = issuer_key()
        .mint(&json!({
            "iss": ISSUER, "sub": "pam-subject", "aud": AUDIENCE, "iat": t, "nbf": t,
            "exp": t + 3600, "jti": format!("e2e-pam-{t}"), "wlcg.ver": "1.0",
            "scope": "compute.create",
        }))
        .unwrap();
    let token_file = server.path("pam-token.jwt");
    write_mode(&token_file, token.as_bytes(), 0o600);
    Some((server, token_file, pam))
}

/// Log in as [`PAM_ACCOUNT`] with the token as the password, run `command` without a PTY and
/// `tty` with one; prints JSON: the outputs and exit statuses, or the error.
const PARAMIKO_PAM: &str = r#"
import json, sys, paramiko
host, port, user, token_file, command = sys.argv[1:6]
token = open(token_file).read().strip()
try:
    t = paramiko.Transport((host, int(port)))
    t.start_client(timeout=10)
    t.auth_password(user, token, fallback=False)
    result = {}
    ch = t.open_session()
    ch.exec_command(command)
    result["out"] = ch.makefile("rb").read().decode().strip()
    result["status"] = ch.recv_exit_status()
    ch = t.open_session()
    ch.get_pty()
    ch.exec_command("tty")
    result["tty"] = ch.makefile("rb").read().decode().strip()
    result["tty_status"] = ch.recv_exit_status()
    ch = t.open_session()
    ch.exec_command("kill -TERM $$")
    result["killed_status"] = ch.recv_exit_status()
    t.close()
    print(json.dumps(result))
except Exception as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
"#;

fn paramiko_pam(python: &Path, server: &Server, token: &Path, command: &str) -> Value {
    let (code, out, err) = run(Command::new(python).args([
        "-c",
        PARAMIKO_PAM,
        "127.0.0.1",
        &server.port.to_string(),
        PAM_ACCOUNT,
        token.to_str().unwrap(),
        command,
    ]));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"))
}

#[test]
fn pam_account_and_session_stacks_run_around_sessions() {
    let Some(python) = python_with("paramiko") else {
        return;
    };
    let Some((server, token, pam)) = pam_server("") else {
        return;
    };
    let p = pam.path();
    let r = paramiko_pam(
        &python,
        &server,
        &token,
        "echo \"$(id -un) marker=$E2E_PAM_MARKER nofile=$(ulimit -Sn)/$(ulimit -Hn) subject=$HPCCERT_TOKEN_SUBJECT\"; exit 3",
    );
    assert_eq!(
        r["out"].as_str(),
        Some(
            format!("{PAM_ACCOUNT} marker=set-by-pam-env nofile=777/778 subject=pam-subject")
                .as_str()
        ),
        "pam_env's variable and pam_limits' limits reach the session: {r}\nserver log:\n{}",
        server.log()
    );
    assert_eq!(
        r["status"].as_i64(),
        Some(3),
        "the exit status passes through the PAM helper: {r}"
    );
    let tty = r["tty"].as_str().unwrap_or_default().to_string();
    assert!(tty.starts_with("/dev/pts/"), "{r}");
    // a process killed by a signal is reported as killed by it, through the helper
    assert_eq!(
        r["killed_status"].as_i64(),
        Some(-1),
        "exit-signal, not a status: {r}"
    );
    assert!(
        wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(p.join("audit.jsonl")).is_ok_and(|a| {
                a.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .any(|e| e["exit_signal"] == json!("TERM"))
            })
        }),
        "audit: {:?}",
        std::fs::read_to_string(p.join("audit.jsonl"))
    );

    // the account stack saw the client and the verified identity in the PAM environment
    let account_log = std::fs::read_to_string(p.join("account.log")).unwrap();
    assert_eq!(
        account_log.trim(),
        format!("account {PAM_ACCOUNT} 127.0.0.1 hpccert-e2e"),
        "one account check at login"
    );
    let account_env = std::fs::read_to_string(p.join("account-env")).unwrap();
    for line in [
        "HPCCERT_AUTH_METHOD=token (password)",
        "HPCCERT_TOKEN_SUBJECT=pam-subject",
        &format!("HPCCERT_TOKEN_ISSUER={ISSUER}"),
    ] {
        assert!(
            account_env.lines().any(|l| l == line),
            "{line} in {account_env}"
        );
    }
    // a session opened and closed around each channel; PAM_TTY names the PTY, or "ssh"
    let expected = [
        format!("open_session {PAM_ACCOUNT} 127.0.0.1 ssh"),
        format!("close_session {PAM_ACCOUNT} 127.0.0.1 ssh"),
        format!("open_session {PAM_ACCOUNT} 127.0.0.1 {tty}"),
        format!("close_session {PAM_ACCOUNT} 127.0.0.1 {tty}"),
        format!("open_session {PAM_ACCOUNT} 127.0.0.1 ssh"),
        format!("close_session {PAM_ACCOUNT} 127.0.0.1 ssh"),
    ];
    assert!(
        wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(p.join("session.log"))
                .is_ok_and(|l| l.lines().collect::<Vec<_>>() == expected)
        }),
        "session stack: {:?}\nserver log:\n{}",
        std::fs::read_to_string(p.join("session.log")),
        server.log()
    );
}

#[test]
fn a_pam_account_refusal_refuses_the_login() {
    let Some(python) = python_with("paramiko") else {
        return;
    };
    let Some((server, token, pam)) = pam_server("") else {
        return;
    };
    write_mode(&pam.path().join("deny"), b"", 0o644);
    let r = paramiko_pam(&python, &server, &token, "echo should-not-run");
    assert!(
        matches!(
            r["error"].as_str(),
            Some("AuthenticationException" | "BadAuthenticationType")
        ),
        "{r}"
    );
    assert!(
        server.wait_log(
            0,
            &format!("PAM account check for {PAM_ACCOUNT} refused"),
            Duration::from_secs(5)
        ),
        "the refusal is logged with PAM's reason:\n{}",
        server.log()
    );
    assert!(
        !pam.path().join("session.log").exists(),
        "no session was opened"
    );
}

/// pam_hpccert (option `x509`) in sshd-gsi's account stack re-checks the chain sshd-gsi
/// hands over, against its own files: a chain its grid-mapfile no longer maps is refused.
#[test]
fn pam_hpccert_rechecks_the_chain_sshd_gsi_hands_over() {
    let Some(python) = python_with("asyncssh") else {
        return;
    };
    // pam_hpccert is a dev-dependency: cargo builds it beside this test's binary (deps/), and
    // beside sshd-gsi when it was built on its own
    let exe = std::env::current_exe().unwrap();
    let module = [
        exe.with_file_name("libpam_hpccert.so"),
        Path::new(env!("CARGO_BIN_EXE_sshd-gsi")).with_file_name("libpam_hpccert.so"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .expect("libpam_hpccert.so built as a dev-dependency");
    let probe = tempfile::tempdir().unwrap();
    let config = probe.path().join("module.toml");
    let gridmap = probe.path().join("module-grid-mapfile");
    let Some((server, _token, pam)) = pam_server(&format!(
        "account required {} config={} x509\n",
        module.display(),
        config.display()
    )) else {
        return;
    };
    write_mode(
        &config,
        format!(
            "version = 1\n[trust]\nca_dir = \"{}\"\n[mapping]\ngrid_mapfile = \"{}\"\n",
            server.path("certificates").display(),
            gridmap.display()
        )
        .as_bytes(),
        0o644,
    );
    let key = server.path("new-user.key");
    let cert = server.path("new-user.pem");
    write_mode(&key, &pki().new_user.key_pem().unwrap(), 0o600);
    write_mode(&cert, &pki().new_user.cert_pem().unwrap(), 0o644);
    let x509 = || {
        let (code, out, err) = run(Command::new(&python).args([
            "-c",
            ASYNCSSH_X509,
            "127.0.0.1",
            &server.port.to_string(),
            PAM_ACCOUNT,
            key.to_str().unwrap(),
            cert.to_str().unwrap(),
            "id -un",
        ]));
        assert_eq!(code, 0, "asyncssh: {out}\n{err}");
        serde_json::from_str::<Value>(out.trim()).unwrap()
    };
    write_mode(
        &gridmap,
        format!("\"{NEW_DN}\" {PAM_ACCOUNT}\n").as_bytes(),
        0o644,
    );
    let r = x509();
    assert_eq!(
        r["out"].as_str().map(str::trim),
        Some(PAM_ACCOUNT),
        "{r}\n{}",
        server.log()
    );
    let handed = std::fs::read_to_string(pam.path().join("account-env")).unwrap();
    assert!(handed.contains(&format!("HPCCERT_DN={NEW_DN}")), "{handed}");
    assert!(
        handed.contains("HPCCERT_X509_CHAIN=-----BEGIN CERTIFICATE-----"),
        "{handed}"
    );

    // the module's own grid-mapfile drops the DN: sshd-gsi still maps it, PAM refuses
    write_mode(&gridmap, b"# nobody\n", 0o644);
    let from = server.log().len();
    let r = x509();
    assert_eq!(r["error"].as_str(), Some("PermissionDenied"), "{r}");
    assert!(
        server.log()[from..].contains(&format!("PAM account check for {PAM_ACCOUNT} refused")),
        "{}",
        server.log()
    );
}

/// The suspension list is read at every login (changes within two seconds, no signal), and
/// an x509 login mapped to a pool leases an account in the gridmapdir; a key query does not.
#[test]
fn suspensions_take_effect_without_a_restart_and_pool_logins_lease() {
    let (Some(py_paramiko), Some(asyncssh)) = (python_with("paramiko"), python_with("asyncssh"))
    else {
        return;
    };
    let server = Server::start_with(
        &["password", "x509"],
        "[[pool]]\nname = \"e2epool\"\ncount = 2\nfirst_uid = 71001\ngid = 71000\n",
        &[],
        "",
        &format!("\"{NEW_DN}\" .e2epool\n"),
    );
    assert_ok(
        &paramiko(&py_paramiko, &server, "password", "echo ok"),
        "ok\n",
        "before",
        &server,
    );
    write_mode(
        &server.path("suspended"),
        format!("token \"{ISSUER}\" \"{}\"  # e2e\n", subject()).as_bytes(),
        0o644,
    );
    let refused = wait_for(Duration::from_secs(10), || {
        paramiko(&py_paramiko, &server, "password", "echo ok")["ok"] == json!(false)
    });
    assert!(
        refused,
        "still accepted after suspension:\n{}",
        server.log()
    );
    assert!(server.log().contains("is suspended"), "{}", server.log());

    // the pool: NEW_DN logs in as the pool's name and is given a lease (the gridmapdir is
    // the site's, made once, as for Globus and LCMAPS)
    std::fs::create_dir(server.path("gridmapdir")).unwrap();
    std::fs::create_dir(server.path("nss")).unwrap();
    let key = server.path("new-user.key");
    let cert = server.path("new-user.pem");
    write_mode(&key, &pki().new_user.key_pem().unwrap(), 0o600);
    write_mode(&cert, &pki().new_user.cert_pem().unwrap(), 0o644);
    let (code, out, err) = run(Command::new(&asyncssh).args([
        "-c",
        ASYNCSSH_X509,
        "127.0.0.1",
        &server.port.to_string(),
        "e2epool",
        key.to_str().unwrap(),
        cert.to_str().unwrap(),
        "id -un",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    let leases: Vec<String> = std::fs::read_dir(server.path("gridmapdir"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('%'))
        .collect();
    assert_eq!(
        leases.len(),
        1,
        "one lease for NEW_DN: {leases:?}\n{}",
        server.log()
    );
    // the leased account is named in the log; this test host has no such account (it would
    // come from nss_hpccert's cache, written next to the leases), so the login ends there
    assert!(
        server.log().contains("e2epool001") || server.log().contains("e2epool002"),
        "{}",
        server.log()
    );
    let nss = std::fs::read_to_string(server.path("nss/passwd")).unwrap();
    assert!(nss.contains("e2epool001:x:71001:71000:"), "{nss}");
}

/// Signal requests go to the session's process (its process group), not to the PAM helper
/// above it: even SIGKILL, which the helper could not pass on, ends the process, and the
/// helper still closes the PAM session and reports the signal.
#[test]
fn signal_requests_reach_the_session_process_under_pam() {
    let Some(python) = python_with("asyncssh") else {
        return;
    };
    let Some((server, token, pam)) = pam_server("") else {
        return;
    };
    let script = r#"
import asyncio, json, sys, asyncssh
port, user, token_file = sys.argv[1:4]
async def main():
    async with asyncssh.connect("127.0.0.1", int(port), username=user,
                                password=open(token_file).read().strip(),
                                preferred_auth="password", known_hosts=None,
                                agent_path=None, config=[]) as conn:
        out = {}
        for sig in ["TERM", "KILL"]:
            p = await conn.create_process("echo started; sleep 100")
            await p.stdout.readline()
            p.send_signal(sig)
            r = await asyncio.wait_for(p.wait(check=False), 20)
            out[sig] = r.exit_signal[0] if r.exit_signal else r.exit_status
        print(json.dumps(out))
asyncio.run(main())
"#;
    let (code, out, err) = run(Command::new(&python).args([
        "-c",
        script,
        &server.port.to_string(),
        PAM_ACCOUNT,
        token.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{out}{err}\n{}", server.log());
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        r,
        json!({"TERM": "TERM", "KILL": "KILL"}),
        "{}",
        server.log()
    );
    // both PAM sessions were closed by their helpers
    assert!(
        wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(pam.path().join("session.log"))
                .is_ok_and(|l| l.matches("close_session").count() == 2)
        }),
        "{:?}",
        std::fs::read_to_string(pam.path().join("session.log"))
    );
}

/// After a wrong token the server still lists `password` (as sshd does; russh by itself drops
/// it), so a client that follows the list (paramiko without fallback) may try again on the
/// same connection, and the right token then logs in.
#[test]
fn a_wrong_token_leaves_password_offered_for_another_try() {
    let Some(python) = python_with("paramiko") else {
        return;
    };
    let server = Server::start(&["keyboard-interactive", "password"], "", &[]);
    let script = r#"
import sys, paramiko
host, port, user, token_file = sys.argv[1:5]
token = open(token_file).read().strip()
t = paramiko.Transport((host, int(port)))
t.start_client(timeout=10)
try:
    t.auth_password(user, "not-a-token", fallback=False)
    print("wrong token accepted")
except paramiko.BadAuthenticationType as e:
    print("password no longer offered:", e.allowed_types)
except paramiko.AuthenticationException:
    print("refused")
t.auth_password(user, token, fallback=False)
ch = t.open_session()
ch.exec_command("echo ok")
print(ch.makefile("rb").read().decode().strip())
"#;
    let (code, out, err) = run(Command::new(&python).args([
        "-c",
        script,
        "127.0.0.1",
        &server.port.to_string(),
        user(),
        server.path("token.jwt").to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{out}{err}\n{}", server.log());
    assert_eq!(out.trim(), "refused\nok", "{err}\n{}", server.log());
}

/// `[sshd] session_token`: a token login's session finds the token in `BEARER_TOKEN_FILE`, a
/// file of the account's alone (0600, in a private directory), gone once the session ended;
/// with the option off the session gets no such variable.
#[test]
fn a_token_login_hands_its_token_to_the_session() {
    let Some(python) = python_with("paramiko") else {
        return;
    };
    let tokens = tempfile::tempdir().unwrap();
    let dir = tokens.path().join("session-tokens");
    let server = Server::start(
        &["keyboard-interactive"],
        &format!("session_token_dir = \"{}\"\n", dir.display()),
        &[],
    );
    let token = std::fs::read_to_string(server.path("token.jwt")).unwrap();
    let digest = openssl::sha::sha256(token.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let r = paramiko(
        &python,
        &server,
        "keyboard-interactive",
        "f=$BEARER_TOKEN_FILE; echo \"$f $(stat -c '%a %U' \"$f\") $(stat -c '%a' \"$(dirname \"$f\")\") $(tr -d '\\n' < \"$f\" | sha256sum | cut -d' ' -f1)\"",
    );
    assert_eq!(r["status"].as_i64(), Some(0), "{r}\n{}", server.log());
    let out = r["out"].as_str().unwrap().trim().to_string();
    let fields: Vec<&str> = out.split(' ').collect();
    assert_eq!(fields.len(), 5, "{out}");
    assert!(
        fields[0].starts_with(&dir.display().to_string()) && fields[0].ends_with("/token"),
        "{out}"
    );
    assert_eq!(&fields[1..4], &["600", user(), "700"], "{out}");
    assert_eq!(fields[4], digest, "the file holds the login's token");
    // the session ended: the file and its directory go
    let file = PathBuf::from(fields[0]);
    assert!(
        wait_for(Duration::from_secs(5), || !file.exists()
            && !file.parent().unwrap().exists()),
        "{} is still there",
        file.display()
    );
    assert!(
        !server.log().contains(token.trim()),
        "the token is in the log"
    );

    let off = Server::start(&["keyboard-interactive"], "session_token = false\n", &[]);
    let r = paramiko(
        &python,
        &off,
        "keyboard-interactive",
        "echo ${BEARER_TOKEN_FILE:-none}",
    );
    assert_eq!(r["out"].as_str().map(str::trim), Some("none"), "{r}");
}

/// Restrictions per identity (`[mapping] restrictions_file`): the token identity is refused
/// from an address its rule does not list (the log says why) and accepted from a listed one;
/// its forced command runs instead of the client's, which it finds in SSH_ORIGINAL_COMMAND; and
/// its max-sessions holds while logins run in parallel.
#[test]
fn restrictions_hold_an_identity_to_its_sources_command_and_session_limit() {
    let Some(python) = python_with("paramiko") else {
        return;
    };
    let server = Server::start(&["keyboard-interactive"], "", &[]);
    std::fs::write(
        server.path("restrictions"),
        format!(
            "token \"{ISSUER}\" \"{}\" from=127.0.0.1/32,::1 max-sessions=1 command=\"case \\\"$SSH_ORIGINAL_COMMAND\\\" in sleep*) sleep 3;; esac; echo forced:$SSH_ORIGINAL_COMMAND\"\n",
            subject()
        ),
    )
    .unwrap();
    // the file is read again within seconds of a change
    let forced = || paramiko(&python, &server, "keyboard-interactive", "ls /");
    assert!(
        wait_for(Duration::from_secs(10), || forced()["out"].as_str()
            == Some("forced:ls /\n")),
        "the forced command does not run:\n{}",
        server.log()
    );
    // from a second loopback address: refused, with the reason in the log
    let r = paramiko_spawn_from(
        &python,
        &server,
        "127.0.0.2@127.0.0.1",
        "keyboard-interactive",
        "id",
    )
    .result();
    assert_eq!(r["ok"], json!(false), "{r}");
    assert!(
        server.wait_log(
            0,
            "may not log in from 127.0.0.2 (allowed: 127.0.0.1/32,::1/128",
            Duration::from_secs(5)
        ),
        "{}",
        server.log()
    );
    // one session at a time: a second login while the first runs gets no session
    let first = paramiko_spawn(&python, &server, "keyboard-interactive", "sleep");
    assert!(
        first
            .next(Duration::from_secs(10))
            .is_some_and(|v| v["started"] == json!(true))
    );
    let second = paramiko(&python, &server, "keyboard-interactive", "ls");
    assert_ne!(
        second["out"].as_str(),
        Some("forced:ls\n"),
        "a second session ran: {second}"
    );
    assert!(
        server.wait_log(0, "max-sessions=1", Duration::from_secs(5)),
        "{}",
        server.log()
    );
    let first = first.result();
    assert_eq!(first["out"].as_str(), Some("forced:sleep\n"), "{first}");
    // the first one ended: its place is free again
    let third = paramiko(&python, &server, "keyboard-interactive", "again");
    assert_eq!(third["out"].as_str(), Some("forced:again\n"), "{third}");
}

/// Scopes limit what a token session may do (`[[issuer]] session_rights = "scopes"`): a
/// `storage.read:AREA/in` token can get files below `in`, cannot put anything, cannot read
/// `other` (directly, through `..`, or through a symlink planted below `in`), and cannot run
/// a command (the refusal names the scope it lacks); a `compute.create` token runs commands and
/// its session says what it may do in `HPCCERT_CAPABILITIES`.
#[test]
fn scopes_limit_a_token_session_to_its_storage_paths_and_commands() {
    let Some(python) = python_with("paramiko") else {
        return;
    };
    let server = Server::start(&["keyboard-interactive"], "", &[]);
    let area = server.path("area");
    std::fs::create_dir_all(area.join("in")).unwrap();
    std::fs::create_dir_all(area.join("other")).unwrap();
    std::fs::write(area.join("in/input.txt"), "the input\n").unwrap();
    std::fs::write(area.join("other/secret.txt"), "not for this token\n").unwrap();
    std::os::unix::fs::symlink("../other/secret.txt", area.join("in/escape")).unwrap();
    std::os::unix::fs::symlink(area.join("other"), area.join("in/other-dir")).unwrap();
    let t = unix_seconds(hpccert_core::clock::now());
    let token = issuer_key()
        .mint(&json!({
            "iss": ISSUER, "sub": subject(), "aud": AUDIENCE, "iat": t, "nbf": t, "exp": t + 3600,
            "wlcg.ver": "1.0", "scope": format!("storage.read:{}/in", area.display()),
        }))
        .unwrap();
    let token_file = server.path("storage.jwt");
    write_mode(&token_file, token.as_bytes(), 0o600);
    let script = r#"
import json, sys, paramiko
port, user, token_file, area = sys.argv[1:5]
token = open(token_file).read().strip()
t = paramiko.Transport(("127.0.0.1", int(port)))
t.start_client(timeout=10)
t.auth_interactive(user, lambda title, instructions, asked: [token for _ in asked])
out = {}
def attempt(name, f):
    try:
        out[name] = {"ok": True, "value": f()}
    except Exception as e:
        out[name] = {"ok": False, "error": str(e)}
sftp = t.open_sftp_client()
attempt("get", lambda: sftp.open(area + "/in/input.txt").read().decode())
attempt("list", lambda: sorted(sftp.listdir(area + "/in")))
attempt("put", lambda: sftp.open(area + "/in/new.txt", "w").write("x"))
attempt("other", lambda: sftp.open(area + "/other/secret.txt").read().decode())
attempt("dotdot", lambda: sftp.open(area + "/in/../other/secret.txt").read().decode())
attempt("symlink", lambda: sftp.open(area + "/in/escape").read().decode())
attempt("symlinked-dir", lambda: sftp.open(area + "/in/other-dir/secret.txt").read().decode())
attempt("etc", lambda: sftp.open("/etc/hostname").read().decode())
sftp.close()
ch = t.open_session()
attempt("exec", lambda: ch.exec_command("id"))
print(json.dumps(out))
"#;
    let out = Command::new(&python)
        .args(["-c", script, &server.port.to_string(), user()])
        .arg(&token_file)
        .arg(&area)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{e}: {text}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log()
        )
    });
    assert_eq!(
        r["get"]["value"],
        json!("the input\n"),
        "{r}\n{}",
        server.log()
    );
    assert_eq!(r["list"]["ok"], json!(true), "{r}");
    for refused in [
        "put",
        "other",
        "dotdot",
        "symlink",
        "symlinked-dir",
        "etc",
        "exec",
    ] {
        assert_eq!(r[refused]["ok"], json!(false), "{refused} was allowed: {r}");
    }
    assert!(!area.join("in/new.txt").exists(), "a file was written");
    assert!(
        server.wait_log(
            0,
            "the token allows no commands: it lacks compute.create",
            Duration::from_secs(5)
        ),
        "{}",
        server.log()
    );
    // a compute token runs commands and is told what it may do
    let r = paramiko(
        &python,
        &server,
        "keyboard-interactive",
        "echo $HPCCERT_CAPABILITIES",
    );
    assert_eq!(r["out"].as_str().map(str::trim), Some("commands"), "{r}");
}

/// `[sshd] max_sessions` counts the sessions open at once: sessions that ended (the server
/// closed their channels) leave the count, so one connection may run many in turn, while a
/// third at once is still refused under max_sessions = 2.
#[test]
fn max_sessions_counts_open_sessions_not_every_session_ever() {
    let Some(python) = python_with("paramiko") else {
        return;
    };
    let server = Server::start(&["keyboard-interactive"], "max_sessions = 2\n", &[]);
    let script = r#"
import json, sys, time, paramiko
port, user, token_file = sys.argv[1:4]
token = open(token_file).read().strip()
t = paramiko.Transport(("127.0.0.1", int(port)))
t.start_client(timeout=10)
t.auth_interactive(user, lambda title, instructions, asked: [token for _ in asked])
seq = []
for i in range(6):
    ch = t.open_session()
    ch.exec_command("echo %d" % i)
    seq.append(ch.makefile("rb").read().decode().strip())
    ch.recv_exit_status()
    ch.close()
    time.sleep(0.1)
held = []
for i in range(2):
    ch = t.open_session()
    ch.exec_command("sleep 2")
    held.append(ch)
try:
    t.open_session()
    third = "opened"
except Exception as e:
    third = type(e).__name__
print(json.dumps({"seq": seq, "third": third}))
"#;
    let out = Command::new(&python)
        .args(["-c", script, &server.port.to_string(), user()])
        .arg(server.path("token.jwt"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{e}: {text}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log()
        )
    });
    assert_eq!(r["seq"], json!(["0", "1", "2", "3", "4", "5"]), "{r}");
    assert_ne!(r["third"], json!("opened"), "{r}");
}

/// A PAM module that takes 5 s in the account stack delays only its own login: the broker
/// forks a child per job, so logins that come meanwhile run their stacks at once.
#[test]
fn a_slow_pam_module_delays_only_its_own_login() {
    let Some(python) = python_with("paramiko") else {
        return;
    };
    let Some((slow_dir, slow_script)) = slow_account_script() else {
        return;
    };
    let Some((server, token, _pam)) = pam_server(&format!(
        "account required pam_exec.so quiet {}\n",
        slow_script.display()
    )) else {
        return;
    };
    let marker = slow_dir.path().join("slow");
    write_mode(&marker, b"", 0o644);
    let login = |count: usize| {
        Command::new(&python)
            .args([
                "-c",
                PARAMIKO_LOGINS,
                &server.port.to_string(),
                PAM_ACCOUNT,
                token.to_str().unwrap(),
                &count.to_string(),
            ])
            .output()
            .unwrap()
    };
    std::thread::scope(|s| {
        let slow = s.spawn(|| login(1));
        // the slow login is in its account stack once the script took the marker
        assert!(
            wait_for(Duration::from_secs(10), || !marker.exists()),
            "the slow login never reached the account stack:\n{}",
            server.log()
        );
        let fast = login(10);
        assert!(
            fast.status.success(),
            "{}{}",
            String::from_utf8_lossy(&fast.stdout),
            String::from_utf8_lossy(&fast.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&fast.stdout).trim(), "10 logins");
        assert!(
            !slow.is_finished(),
            "ten logins ran while the slow one waited in its module: it must still be waiting"
        );
        let slow = slow.join().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&slow.stdout).trim(),
            "1 logins",
            "the slow login succeeds in the end: {}\n{}",
            String::from_utf8_lossy(&slow.stderr),
            server.log()
        );
    });
}

/// An account-stack script that sleeps 5 s for the login that finds (and takes) the marker
/// file `slow` in the returned directory.
fn slow_account_script() -> Option<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::Builder::new()
        .prefix("sshd-gsi-e2e-slow-")
        .tempdir()
        .unwrap();
    let script = dir.path().join("slow.sh");
    write_mode(
        &script,
        format!(
            "#!/bin/sh\nrm {marker} 2>/dev/null && sleep 5\nexit 0\n",
            marker = dir.path().join("slow").display()
        )
        .as_bytes(),
        0o755,
    );
    Some((dir, script))
}

/// `COUNT` logins in turn, each running `true`; prints "N logins" for those that succeeded.
const PARAMIKO_LOGINS: &str = r#"
import sys, paramiko
port, user, token_file, count = sys.argv[1:5]
token = open(token_file).read().strip()
ok = 0
for _ in range(int(count)):
    t = paramiko.Transport(("127.0.0.1", int(port)))
    t.start_client(timeout=10)
    t.auth_password(user, token, fallback=False)
    ch = t.open_session()
    ch.exec_command("true")
    if ch.recv_exit_status() == 0:
        ok += 1
    t.close()
print(f"{ok} logins")
"#;

/// A PAM broker that was killed is started again at the next login, and the sessions its
/// children serve go on meanwhile.
#[test]
fn a_killed_pam_broker_is_started_again_and_its_sessions_go_on() {
    let Some(python) = python_with("asyncssh") else {
        return;
    };
    let Some((server, token, _pam)) = pam_server("") else {
        return;
    };
    let script = r#"
import asyncio, json, sys, asyncssh
port, user, token_file, flag = sys.argv[1:5]
async def main():
    async with asyncssh.connect("127.0.0.1", int(port), username=user,
                                password=open(token_file).read().strip(),
                                preferred_auth="password", known_hosts=None,
                                agent_path=None, config=[]) as conn:
        p = await conn.create_process("echo started; read line; echo got $line")
        await p.stdout.readline()
        print("open", flush=True)
        # the test kills the broker now, then writes the flag file
        while True:
            try:
                open(flag).close()
                break
            except FileNotFoundError:
                await asyncio.sleep(0.05)
        p.stdin.write("after\n")
        p.stdin.write_eof()
        out = await p.stdout.readline()
        r = await asyncio.wait_for(p.wait(check=False), 20)
        print(json.dumps({"out": out.strip(), "status": r.exit_status}), flush=True)
asyncio.run(main())
"#;
    let flag = server.path("broker-killed");
    let mut session = Command::new(&python)
        .args([
            "-c",
            script,
            &server.port.to_string(),
            PAM_ACCOUNT,
            token.to_str().unwrap(),
            flag.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(session.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "open", "{}", server.log());
    let ours = brokers_of(&server);
    assert_eq!(ours.len(), 1, "one broker per server: {ours:?}");
    nix::sys::signal::kill(Pid::from_raw(ours[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
    write_mode(&flag, b"", 0o644);
    let done: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        done,
        json!({"out": "got after", "status": 0}),
        "the open session outlives its broker:\n{}",
        server.log()
    );
    assert!(session.wait().unwrap().success());
    // the next login starts a new broker
    let r = paramiko_pam(&python_with("paramiko").unwrap(), &server, &token, "id -un");
    assert_eq!(r["out"], PAM_ACCOUNT, "{r}\n{}", server.log());
    assert!(
        server.wait_log(0, "the PAM broker ended", Duration::from_secs(5)),
        "the restart is logged:\n{}",
        server.log()
    );
}

/// As under sshd, the account check and the login's first session use one PAM handle (the
/// same helper process runs both stacks); a second session on the connection gets its own.
#[test]
fn the_first_session_opens_in_the_process_that_ran_the_account_check() {
    let Some(python) = python_with("paramiko") else {
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("sshd-gsi-e2e-ppid-")
        .tempdir()
        .unwrap();
    let script = dir.path().join("ppid.sh");
    let log = dir.path().join("ppid.log");
    write_mode(
        &script,
        format!("#!/bin/sh\necho \"$PAM_TYPE $PPID\" >> {}\n", log.display()).as_bytes(),
        0o755,
    );
    let Some((server, token, _pam)) = pam_server(&format!(
        "account required pam_exec.so quiet {s}\nsession required pam_exec.so quiet {s}\n",
        s = script.display()
    )) else {
        return;
    };
    // three sessions on one connection (exec, PTY, killed)
    let r = paramiko_pam(&python, &server, &token, "true");
    assert_eq!(r["status"], 0, "{r}\n{}", server.log());
    assert!(
        wait_for(Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.matches("close_session").count() == 3)
        }),
        "{:?}",
        std::fs::read_to_string(&log)
    );
    let lines = std::fs::read_to_string(&log).unwrap();
    let pid_of = |kind: &str, nth: usize| -> String {
        lines
            .lines()
            .filter(|l| l.starts_with(kind))
            .nth(nth)
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or_else(|| panic!("no {kind} #{nth} in {lines}"))
            .to_string()
    };
    let account = pid_of("account", 0);
    assert_eq!(pid_of("open_session", 0), account, "{lines}");
    assert_eq!(pid_of("close_session", 0), account, "{lines}");
    assert_ne!(pid_of("open_session", 1), account, "{lines}");
    assert_ne!(
        pid_of("open_session", 2),
        pid_of("open_session", 1),
        "{lines}"
    );
}

/// The broker loads the stack once, but every login reads the service's file again (each child
/// runs `pam_start`): an edit of the PAM configuration applies to the next login, as under sshd.
#[test]
fn an_edit_of_the_pam_service_applies_to_the_next_login() {
    let Some(python) = python_with("paramiko") else {
        return;
    };
    let Some((server, token, pam)) = pam_server("") else {
        return;
    };
    let r = paramiko_pam(&python, &server, &token, "id -un");
    assert_eq!(r["out"], PAM_ACCOUNT, "{r}\n{}", server.log());
    let service = pam.path().join("pam.d/hpccert-e2e");
    let text = std::fs::read_to_string(&service).unwrap();
    write_mode(
        &service,
        text.replace(
            "auth required pam_deny.so\n",
            "auth required pam_deny.so\naccount required pam_deny.so\n",
        )
        .as_bytes(),
        0o644,
    );
    let r = paramiko_pam(&python, &server, &token, "echo should-not-run");
    assert!(
        matches!(
            r["error"].as_str(),
            Some("AuthenticationException" | "BadAuthenticationType")
        ),
        "{r}\n{}",
        server.log()
    );
}

/// The PAM brokers whose parent is `server`.
fn brokers_of(server: &Server) -> Vec<i32> {
    let out = Command::new("pgrep")
        .args(["-f", "sshd-gsi-pam-helper serve hpccert-e2e"])
        .output()
        .unwrap();
    let parent_of = |pid: i32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit(") ")
            .next()?
            .split(' ')
            .nth(1)?
            .parse::<i32>()
            .ok()
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&pid| parent_of(pid) == Some(server.pid().as_raw()))
        .collect()
}

/// SIGHUP starts a new broker (which loads the modules as they are now on disk) and the one
/// it replaces ends once nothing uses it.
#[test]
fn sighup_starts_a_new_pam_broker() {
    let Some(python) = python_with("paramiko") else {
        return;
    };
    let Some((server, token, _pam)) = pam_server("") else {
        return;
    };
    let before = brokers_of(&server);
    assert_eq!(before.len(), 1, "one broker per server: {before:?}");
    let from = server.log().len();
    server.signal(Signal::SIGHUP);
    assert!(
        server.wait_log(from, "configuration reloaded", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let r = paramiko_pam(&python, &server, &token, "id -un");
    assert_eq!(r["out"], PAM_ACCOUNT, "{r}\n{}", server.log());
    // the replaced configuration is let go within seconds of its last connection's end
    // (server::retire looks every 5 s)
    assert!(
        wait_for(Duration::from_secs(20), || {
            let now = brokers_of(&server);
            now.len() == 1 && now != before
        }),
        "a new broker, the old one gone: before {before:?}, now {:?}",
        brokers_of(&server)
    );
}
