//! sshd-gsi against real SSH clients: stock OpenSSH (`ssh`, `scp`, `sftp`, `rsync` over
//! `ssh`) through the shipped `hpccert-askpass`, paramiko and asyncssh, each logging in with a
//! 2 KB bearer token (over OpenSSH's 1023-byte answer limit).
//!
//! Every test starts its own `sshd-gsi -f CONFIG --listen 127.0.0.1:PORT` with a config in a
//! temporary directory: a dev token issuer (`[[issuer]]` with a local JWKS file), a token map
//! that maps the test subject to the current user, an ed25519 host key. The server's stderr
//! (its log) goes to a file the tests read.
//!
//! A missing client skips its test with a printed reason; under `HPCCERT_E2E_REQUIRED=1` (CI)
//! it fails instead. The Python clients come from `$HPCCERT_E2E_PYTHON`, else
//! `<repo>/.venv-e2e/bin/python` (`python3 -m venv .venv-e2e && .venv-e2e/bin/pip install
//! 'asyncssh[pyOpenSSL]' paramiko`; `.ci/run` does this).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

mod common;
use common::{Process, free_port, on_path, python_with, repo_root, skip, write_mode};

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hpccert_core::dev::token::{DevKey, b64, jwks};
use hpccert_core::token::{JwsAlgorithm, unix_seconds};
use serde_json::{Value, json};

const ISSUER: &str = "https://issuer.e2e-clients.example";
const OTHER_ISSUER: &str = "https://unknown-issuer.e2e-clients.example";
const AUDIENCE: &str = "https://login.e2e-clients.example";
const KID: &str = "e2e-rs256-1";
const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";
/// Size of the file moved by scp, sftp and rsync.
const BIG_FILE_BYTES: usize = 100 * 1024 * 1024;
/// Longest a client command may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// peers and skips

/// Whether every program is there (`(program, Debian package)`); a printed skip otherwise.
fn peers(programs: &[(&str, &str)]) -> bool {
    for (program, package) in programs {
        let found = if program.starts_with('/') {
            Path::new(program).is_file()
        } else {
            on_path(program)
        };
        if !found {
            skip(&format!("{program} not found (Debian package {package})"));
            return false;
        }
    }
    true
}

const SSH: (&str, &str) = ("ssh", "openssh-client");

fn askpass() -> PathBuf {
    repo_root().join("packaging/hpccert-askpass")
}

// ---------------------------------------------------------------------------------------------
// running commands

/// (exit code, stdout, stderr), within the client deadline.
fn run(cmd: &mut Command) -> (i32, String, String) {
    common::run_within(cmd, CLIENT_TIMEOUT)
}

fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = openssl::sha::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finish().iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// the local account the sessions run as

#[derive(Debug)]
struct LocalAccount {
    name: String,
    uid: String,
    groups: String,
    home: String,
    shell: String,
}

fn account() -> &'static LocalAccount {
    static ACCOUNT: OnceLock<LocalAccount> = OnceLock::new();
    ACCOUNT.get_or_init(|| {
        let line = |args: &[&str]| {
            let (code, out, err) = run(Command::new(args[0]).args(&args[1..]));
            assert_eq!(code, 0, "{args:?}: {err}");
            out.trim_end().to_string()
        };
        let name = line(&["id", "-un"]);
        let passwd = line(&["getent", "passwd", &name]);
        let fields: Vec<&str> = passwd.split(':').collect();
        assert!(fields.len() >= 7, "getent passwd {name}: {passwd}");
        LocalAccount {
            uid: line(&["id", "-u", &name]),
            groups: line(&["id", "-G", &name]),
            home: fields[5].to_string(),
            shell: if fields[6].is_empty() {
                "/bin/sh".to_string()
            } else {
                fields[6].to_string()
            },
            name,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// tokens

struct Keys {
    issuer: DevKey,
    /// Same kid as the issuer's key, another key: its signatures are bad.
    rogue: DevKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        issuer: DevKey::generate(KID, JwsAlgorithm::RS256).unwrap(),
        rogue: DevKey::generate(KID, JwsAlgorithm::RS256).unwrap(),
    })
}

fn subject() -> String {
    format!("e2e-clients-user-{}", account().name)
}

/// WLCG claims padded to a realistic size with group memberships (the token comes out at
/// about 2.3 KB).
fn claims(iss: &str, aud: &str, iat: i64, exp: i64) -> Value {
    let groups: Vec<String> = (0..36)
        .map(|i| format!("/hpccert-e2e/collaboration/group-{i:03}"))
        .collect();
    json!({
        "iss": iss, "sub": subject(), "aud": aud, "iat": iat, "nbf": iat, "exp": exp,
        "jti": format!("e2e-{iat}-{}", std::process::id()), "wlcg.ver": "1.0",
        "scope": "compute.create compute.read compute.cancel storage.read:/home storage.modify:/scratch",
        "wlcg.groups": groups,
        "preferred_username": account().name,
        "eppn": format!("{}@e2e-clients.example", account().name),
    })
}

fn now() -> i64 {
    unix_seconds(hpccert_core::clock::now())
}

fn good_token() -> String {
    let t = now();
    let token = keys()
        .issuer
        .mint(&claims(ISSUER, AUDIENCE, t, t + 3600))
        .unwrap();
    assert!(
        (2000..4096).contains(&token.len()),
        "the test token should be about 2 KB, not {} bytes",
        token.len()
    );
    token
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
    /// A server offering `methods` (TOML strings), ready to accept connections; the test
    /// token's subject maps to the current user.
    fn start(methods: &[&str]) -> Self {
        Self::start_mapped(methods, &account().name)
    }

    /// The same, with the token's subject mapped to `accounts` (`a,b`).
    fn start_mapped(methods: &[&str], accounts: &str) -> Self {
        Self::start_with(methods, accounts, "")
    }

    /// The same, with extra `[sshd]` lines.
    fn start_with(methods: &[&str], accounts: &str, sshd_extra: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sshd-gsi-e2e-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let user = accounts;
        std::fs::create_dir(d.join("certificates")).unwrap();
        std::fs::create_dir(d.join("keys")).unwrap();
        write_mode(&d.join("grid-mapfile"), b"", 0o644);
        write_mode(
            &d.join("token-mapfile"),
            format!("\"{ISSUER}\" \"{}\" {user}\n", subject()).as_bytes(),
            0o644,
        );
        write_mode(
            &d.join("issuer-jwks.json"),
            jwks(&[&keys().issuer]).unwrap().to_string().as_bytes(),
            0o644,
        );
        let mut seed = [0u8; 32];
        openssl::rand::rand_bytes(&mut seed).unwrap();
        let host_key = russh::keys::PrivateKey::from(
            russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&seed),
        );
        let host_key = host_key
            .to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .unwrap();
        write_mode(&d.join("ssh_host_ed25519_key"), host_key.as_bytes(), 0o600);
        let methods: Vec<String> = methods.iter().map(|m| format!("\"{m}\"")).collect();
        let log = d.join("sshd-gsi.log");
        // a port found free (bound to 0, then released) may be taken by someone else before
        // the server binds it: then the next try takes another
        for _ in 0..5 {
            let port = free_port();
            let s = |name: &str| d.join(name).display().to_string();
            let config = format!(
                "version = 1\n\
                 [trust]\nca_dir = \"{}\"\n\
                 [mapping]\ngrid_mapfile = \"{}\"\ntoken_mapfile = \"{}\"\n\
                 [tokens]\nkey_cache_dir = \"{}\"\n\
                 [sshd]\nlisten = [\"127.0.0.1:{port}\"]\nhost_keys = [\"{}\"]\nmethods = [{}]\nsftp_server = \"{SFTP_SERVER}\"\n{sshd_extra}\
                 [[issuer]]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\nalgorithms = [\"RS256\"]\nprofile = \"wlcg\"\njwks_file = \"{}\"\nsession_rights = \"all\"\n",
                s("certificates"),
                s("grid-mapfile"),
                s("token-mapfile"),
                s("keys"),
                s("ssh_host_ed25519_key"),
                methods.join(", "),
                s("issuer-jwks.json"),
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

    /// Write a token file for the askpass helper.
    fn token_file(&self, name: &str, token: &str) -> PathBuf {
        let p = self.path(name);
        write_mode(&p, format!("{token}\n").as_bytes(), 0o600);
        p
    }

    /// The options every OpenSSH client gets (no user config, no agent, no host key pinning,
    /// keyboard-interactive only).
    fn ssh_options(&self) -> Vec<String> {
        [
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
            "ConnectTimeout=10",
        ]
        .iter()
        .map(ToString::to_string)
        .collect()
    }

    /// An OpenSSH client program with the askpass helper answering from `token_file`.
    fn client(&self, program: &str, token_file: &Path) -> Command {
        let mut c = Command::new(program);
        c.env("SSH_ASKPASS", askpass())
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("BEARER_TOKEN_FILE", token_file)
            .env_remove("BEARER_TOKEN")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("DISPLAY")
            .stdin(Stdio::null());
        c
    }

    /// `ssh -p PORT OPTIONS [extra] USER@127.0.0.1 COMMAND`, quiet.
    fn ssh(&self, token_file: &Path, user: &str, extra: &[&str], command: &str) -> Command {
        let mut c = self.client("ssh", token_file);
        c.arg("-p")
            .arg(self.port.to_string())
            .args(self.ssh_options())
            .args(["-o", "LogLevel=ERROR"])
            .args(extra)
            .arg(format!("{user}@127.0.0.1"))
            .arg(command);
        c
    }

    /// The log lines written since `from` bytes (and the new length).
    fn log_since(&self, from: usize) -> (String, usize) {
        let text = self.log();
        (text.get(from..).unwrap_or_default().to_string(), text.len())
    }
}

/// The `Failed`/`Accepted` line of `method` for `user` in `log`, with its `from 127.0.0.1
/// port N ssh2: ` part checked; returns the text after it.
fn auth_lines(log: &str, outcome: &str, method: &str, user: &str) -> Vec<String> {
    let head = format!("{outcome} {method} for {user} from 127.0.0.1 port ");
    log.lines()
        .filter_map(|line| {
            let rest = &line[line.find(&head)? + head.len()..];
            let (port, rest) = rest.split_once(" ssh2: ")?;
            assert!(
                port.parse::<u16>().is_ok_and(|p| p > 0),
                "bad port in: {line}"
            );
            Some(rest.to_string())
        })
        .collect()
}

/// The token (or any of its three parts) must never reach the log.
fn assert_not_logged(log: &str, tokens: &[&str]) {
    for token in tokens {
        for part in token.split('.').filter(|p| p.len() >= 16) {
            assert!(
                !log.contains(part),
                "the server log contains (part of) a token:\n{log}"
            );
        }
    }
}

fn assert_permission_denied(what: &str, code: i32, err: &str) {
    assert_eq!(
        code, 255,
        "{what}: ssh should fail to authenticate; stderr: {err}"
    );
    assert!(
        err.contains("Permission denied"),
        "{what}: no 'Permission denied' from ssh: {err}"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. stock OpenSSH ssh

#[test]
fn openssh_ssh_exec_with_2kb_token_through_askpass() {
    if !peers(&[SSH]) {
        return;
    }
    let server = Server::start(&["keyboard-interactive", "password"]);
    let token = good_token();
    let tf = server.token_file("token.jwt", &token);
    let a = account();
    let command = "printf 'USER=%s\\nHOME=%s\\nSHELL=%s\\nSSH_CONNECTION=%s\\nHPCCERT_TOKEN_SUBJECT=%s\\nHPCCERT_AUTH_METHOD=%s\\nID_U=%s\\nID_G=%s\\nPWD=%s\\n' \
        \"$USER\" \"$HOME\" \"$SHELL\" \"$SSH_CONNECTION\" \"$HPCCERT_TOKEN_SUBJECT\" \"$HPCCERT_AUTH_METHOD\" \"$(id -u)\" \"$(id -G)\" \"$(pwd)\"; \
        echo 'to stderr' >&2; exit 7";
    let (code, out, err) = run(&mut server.ssh(&tf, &a.name, &[], command));
    assert_eq!(code, 7, "exit status; stdout: {out}\nstderr: {err}");
    assert_eq!(err, "to stderr\n", "stderr");
    let vars: std::collections::BTreeMap<&str, &str> =
        out.lines().filter_map(|l| l.split_once('=')).collect();
    let expect = |k: &str, v: &str| {
        assert_eq!(vars.get(k).copied(), Some(v), "{k} in the session:\n{out}");
    };
    expect("USER", &a.name);
    expect("HOME", &a.home);
    expect("SHELL", &a.shell);
    expect("HPCCERT_TOKEN_SUBJECT", &subject());
    expect("HPCCERT_AUTH_METHOD", "token (keyboard-interactive)");
    expect("ID_U", &a.uid);
    expect("ID_G", &a.groups);
    expect("PWD", &a.home);
    let conn: Vec<&str> = vars
        .get("SSH_CONNECTION")
        .copied()
        .unwrap_or_default()
        .split(' ')
        .collect();
    assert_eq!(conn.len(), 4, "SSH_CONNECTION: {conn:?}");
    assert_eq!(conn[0], "127.0.0.1");
    assert!(conn[1].parse::<u16>().is_ok(), "SSH_CONNECTION: {conn:?}");
    assert_eq!(conn[2], "127.0.0.1");
    assert_eq!(conn[3], server.port.to_string());
    assert_eq!(out.lines().count(), 9, "nothing else on stdout:\n{out}");

    let log = server.log();
    let accepted = auth_lines(&log, "Accepted", "token (keyboard-interactive)", &a.name);
    assert_eq!(accepted.len(), 1, "one accepted login:\n{log}");
    eprintln!(
        "logged: Accepted token (keyboard-interactive) ...: {}",
        accepted[0]
    );
    assert!(
        accepted[0].starts_with(&format!("identity \"{} (issuer {ISSUER})\" ", subject())),
        "identity in: {}",
        accepted[0]
    );
    assert!(
        accepted[0].contains("credential SHA256:"),
        "credential fingerprint in: {}",
        accepted[0]
    );
    assert!(
        accepted[0].ends_with(&format!("account {}", a.name)),
        "account in: {}",
        accepted[0]
    );
    assert_not_logged(&log, &[&token]);
}

// ---------------------------------------------------------------------------------------------
// 3. ssh -tt

#[test]
fn openssh_ssh_tty() {
    if !peers(&[SSH]) {
        return;
    }
    let server = Server::start(&["keyboard-interactive"]);
    let token = good_token();
    let tf = server.token_file("token.jwt", &token);
    // the real helper, behind a wrapper that records the prompts it answers
    let prompts = server.path("prompts.txt");
    let wrapper = server.path("askpass-recording");
    write_mode(
        &wrapper,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\nexec '{}' \"$@\"\n",
            prompts.display(),
            askpass().display()
        )
        .as_bytes(),
        0o755,
    );
    let mut cmd = server.ssh(
        &tf,
        &account().name,
        &["-tt"],
        "tty; echo \"SSH_TTY=$SSH_TTY\"; echo \"TERM=$TERM\"; exit 5",
    );
    cmd.env("TERM", "xterm-256color");
    cmd.env("SSH_ASKPASS", &wrapper);
    let (code, out, err) = run(&mut cmd);
    assert_eq!(
        code, 5,
        "exit status through a PTY; stdout: {out}\nstderr: {err}"
    );
    // a PTY turns \n into \r\n
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    let tty = lines
        .first()
        .copied()
        .unwrap_or_default()
        .strip_prefix("/dev/pts/")
        .unwrap_or_else(|| panic!("`tty` should print /dev/pts/N: {out:?}"));
    assert!(tty.parse::<u32>().is_ok(), "`tty`: {out:?}");
    assert_eq!(
        lines.get(1).copied(),
        Some(format!("SSH_TTY=/dev/pts/{tty}").as_str()),
        "{out:?}"
    );
    assert_eq!(
        lines.get(2).copied(),
        Some("TERM=xterm-256color"),
        "{out:?}"
    );
    // a 2 KB token needs three answers of at most 1000 bytes: OpenSSH cuts at 1023
    let asked = std::fs::read_to_string(&prompts).unwrap();
    let asked: Vec<&str> = asked
        .lines()
        .map(|l| l.rsplit_once(") ").map_or(l, |(_, p)| p))
        .collect();
    assert_eq!(
        asked,
        [
            "Access token: ",
            "Access token (part 2): ",
            "Access token (part 3): "
        ],
        "prompts answered by hpccert-askpass (token of {} bytes)",
        token.len()
    );
    assert_not_logged(&server.log(), &[&token]);
}

// ---------------------------------------------------------------------------------------------
// 2. scp, sftp, rsync

#[test]
fn openssh_scp_sftp_rsync_100mb() {
    if !peers(&[
        SSH,
        ("scp", "openssh-client"),
        ("sftp", "openssh-client"),
        (SFTP_SERVER, "openssh-sftp-server"),
        ("rsync", "rsync"),
    ]) {
        return;
    }
    let server = Server::start(&["keyboard-interactive", "password"]);
    let token = good_token();
    let tf = server.token_file("token.jwt", &token);
    let user = &account().name;
    let port = server.port.to_string();
    let src = server.path("random.bin");
    {
        let mut data = vec![0u8; BIG_FILE_BYTES];
        openssl::rand::rand_bytes(&mut data).unwrap();
        let mut f = std::fs::File::create(&src).unwrap();
        f.write_all(&data).unwrap();
    }
    let want = sha256_file(&src);
    let remote = |name: &str| format!("{user}@127.0.0.1:{}", server.path(name).display());
    let check = |what: &str, name: &str| {
        let p = server.path(name);
        assert_eq!(
            std::fs::metadata(&p).map(|m| m.len()).ok(),
            Some(BIG_FILE_BYTES as u64),
            "{what}: size of {}",
            p.display()
        );
        assert_eq!(sha256_file(&p), want, "{what}: SHA-256 of {}", p.display());
        std::fs::remove_file(&p).unwrap();
    };
    let timed = |what: &str, cmd: &mut Command| {
        let t = Instant::now();
        let (code, out, err) = run(cmd);
        eprintln!("{what}: {:.1} s", t.elapsed().as_secs_f64());
        assert_eq!(code, 0, "{what}: stdout: {out}\nstderr: {err}");
    };

    // scp (sftp protocol underneath, OpenSSH >= 9)
    timed(
        "scp upload 100 MB",
        server
            .client("scp", &tf)
            .args(["-q", "-P", &port])
            .args(server.ssh_options())
            .arg(&src)
            .arg(remote("scp-up.bin")),
    );
    timed(
        "scp download 100 MB",
        server
            .client("scp", &tf)
            .args(["-q", "-P", &port])
            .args(server.ssh_options())
            .arg(remote("scp-up.bin"))
            .arg(server.path("scp-down.bin")),
    );
    check("scp upload", "scp-up.bin");
    check("scp download", "scp-down.bin");

    // sftp -b (which sets BatchMode=yes: an earlier -o BatchMode=no keeps askpass usable,
    // ssh takes the first value given)
    let batch = server.path("sftp.batch");
    std::fs::write(
        &batch,
        format!(
            "put {} {}\nget {} {}\n",
            src.display(),
            server.path("sftp-up.bin").display(),
            server.path("sftp-up.bin").display(),
            server.path("sftp-down.bin").display()
        ),
    )
    .unwrap();
    timed(
        "sftp put + get 100 MB",
        server
            .client("sftp", &tf)
            .args(["-q", "-P", &port])
            .args(server.ssh_options())
            .args(["-o", "BatchMode=no", "-b"])
            .arg(&batch)
            .arg(format!("{user}@127.0.0.1")),
    );
    check("sftp put", "sftp-up.bin");
    check("sftp get", "sftp-down.bin");

    // rsync over ssh (rsync --server runs in an exec session)
    let rsh = format!(
        "ssh -p {port} {} -o LogLevel=ERROR",
        server.ssh_options().join(" ")
    );
    timed(
        "rsync upload 100 MB",
        server
            .client("rsync", &tf)
            .args(["-e", &rsh])
            .arg(&src)
            .arg(remote("rsync-up.bin")),
    );
    timed(
        "rsync download 100 MB",
        server
            .client("rsync", &tf)
            .args(["-e", &rsh])
            .arg(remote("rsync-up.bin"))
            .arg(server.path("rsync-down.bin")),
    );
    check("rsync upload", "rsync-up.bin");
    check("rsync download", "rsync-down.bin");

    let log = server.log();
    assert_eq!(
        auth_lines(&log, "Accepted", "token (keyboard-interactive)", user).len(),
        5,
        "five logins (scp twice, sftp, rsync twice):\n{log}"
    );
    assert_not_logged(&log, &[&token]);
}

// ---------------------------------------------------------------------------------------------
// 4. paramiko and asyncssh

const PY_COMMAND: &str = "echo \"out $HPCCERT_AUTH_METHOD $USER\"; echo err-line >&2; exit 3";

const PARAMIKO: &str = r#"
import json, sys, paramiko
host, port, user, token_file, command = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
token = open(token_file).read().strip()

def run(t):
    ch = t.open_session()
    ch.exec_command(command)
    out = ch.makefile("rb").read().decode()
    err = ch.makefile_stderr("rb").read().decode()
    return {"out": out, "err": err, "status": ch.recv_exit_status()}

res = {}
t = paramiko.Transport((host, port))
t.start_client(timeout=10)
t.auth_password(user, token)
res["password"] = run(t)
t.close()

prompts = []
def handler(title, instructions, asked):
    prompts.extend(p for p, _ in asked)
    return [token for _ in asked]
t = paramiko.Transport((host, port))
t.start_client(timeout=10)
t.auth_interactive(user, handler)
res["keyboard-interactive"] = run(t)
res["keyboard-interactive"]["prompts"] = prompts
t.close()
print(json.dumps(res))
"#;

const ASYNCSSH: &str = r#"
import asyncio, json, sys, asyncssh
host, port, user, token_file, command = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
token = open(token_file).read().strip()

class Kbdint(asyncssh.SSHClient):
    def __init__(self):
        self.prompts = []
    def kbdint_auth_requested(self):
        return ""
    def kbdint_challenge_received(self, name, instructions, lang, asked):
        self.prompts.extend(p for p, _ in asked)
        return [token for _ in asked]

common = dict(known_hosts=None, client_keys=None, agent_path=None)

def result(r):
    return {"out": r.stdout, "err": r.stderr, "status": r.exit_status}

async def main():
    res = {}
    conn, client = await asyncssh.create_connection(
        Kbdint, host, port, username=user, preferred_auth="keyboard-interactive", **common)
    async with conn:
        res["keyboard-interactive"] = result(await conn.run(command, check=False))
        res["keyboard-interactive"]["prompts"] = client.prompts
    async with asyncssh.connect(host, port, username=user, password=token,
                                preferred_auth="password", **common) as conn:
        res["password"] = result(await conn.run(command, check=False))
    print(json.dumps(res))

asyncio.run(main())
"#;

fn python_clients(module: &str, script: &str) {
    let Some(python) = python_with(module) else {
        return;
    };
    let server = Server::start(&["keyboard-interactive", "password"]);
    let token = good_token();
    let tf = server.token_file("token.jwt", &token);
    let user = &account().name;
    let (code, out, err) = run(Command::new(&python)
        .args(["-c", script, "127.0.0.1", &server.port.to_string(), user])
        .arg(&tf)
        .arg(PY_COMMAND));
    assert_eq!(
        code,
        0,
        "{module}: stdout: {out}\nstderr: {err}\nserver log:\n{}",
        server.log()
    );
    let res: Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{module} output {out:?}: {e}"));
    for (method, server_method) in [
        ("password", "token (password)"),
        ("keyboard-interactive", "token (keyboard-interactive)"),
    ] {
        let r = &res[method];
        assert_eq!(
            r["out"].as_str(),
            Some(format!("out {server_method} {user}\n").as_str()),
            "{module} {method}: {r}"
        );
        assert_eq!(
            r["err"].as_str(),
            Some("err-line\n"),
            "{module} {method}: {r}"
        );
        assert_eq!(r["status"].as_i64(), Some(3), "{module} {method}: {r}");
    }
    // the whole 2 KB token in one answer to the first prompt: no continuation needed
    assert_eq!(
        res["keyboard-interactive"]["prompts"],
        json!(["Access token: "]),
        "{module}"
    );
    let log = server.log();
    for method in ["token (password)", "token (keyboard-interactive)"] {
        let accepted = auth_lines(&log, "Accepted", method, user);
        assert_eq!(accepted.len(), 1, "{module}: one {method} login:\n{log}");
        assert!(
            accepted[0].contains("credential SHA256:"),
            "{}",
            accepted[0]
        );
    }
    assert_not_logged(&log, &[&token]);
}

#[test]
fn paramiko_password_and_keyboard_interactive() {
    python_clients("paramiko", PARAMIKO);
}

#[test]
fn asyncssh_keyboard_interactive_and_password() {
    python_clients("asyncssh", ASYNCSSH);
}

// ---------------------------------------------------------------------------------------------
// 5. refusals

#[test]
fn refusals_are_ordinary_auth_failures_with_logged_reasons() {
    if !peers(&[SSH]) {
        return;
    }
    let server = Server::start(&["keyboard-interactive", "password"]);
    let k = keys();
    let t = now();
    let user = account().name.clone();
    let good = good_token();
    let header = json!({"alg": "RS256", "kid": KID, "typ": "at+jwt"});
    let alg_none = {
        let h = b64(json!({"alg": "none", "typ": "at+jwt"})
            .to_string()
            .as_bytes());
        let c = b64(claims(ISSUER, AUDIENCE, t, t + 3600).to_string().as_bytes());
        format!("{h}.{c}.")
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "another audience",
            k.issuer
                .mint(&claims(ISSUER, "https://elsewhere.example", t, t + 3600))
                .unwrap(),
            user.as_str(),
            "wrong audience",
        ),
        (
            "expired",
            k.issuer
                .mint(&claims(ISSUER, AUDIENCE, t - 7200, t - 3600))
                .unwrap(),
            user.as_str(),
            "expired",
        ),
        (
            "a login name the token map does not allow",
            good.clone(),
            "nobody",
            "is not mapped to",
        ),
        ("alg none", alg_none, user.as_str(), "alg none"),
        (
            "bad signature",
            k.rogue
                .mint_raw(&header, &claims(ISSUER, AUDIENCE, t, t + 3600))
                .unwrap(),
            user.as_str(),
            "bad signature",
        ),
        (
            "unknown issuer",
            k.issuer
                .mint(&claims(OTHER_ISSUER, AUDIENCE, t, t + 3600))
                .unwrap(),
            user.as_str(),
            "unknown issuer",
        ),
    ];
    let mut offset = server.log().len();
    for (i, (what, token, login, reason)) in cases.iter().enumerate() {
        let tf = server.token_file(&format!("bad-{i}.jwt"), token);
        let (code, out, err) = run(&mut server.ssh(
            &tf,
            login,
            &["-o", "NumberOfPasswordPrompts=1"],
            "echo should-not-run",
        ));
        assert_permission_denied(what, code, &err);
        assert!(!out.contains("should-not-run"), "{what}: {out}");
        let (new, len) = server.log_since(offset);
        offset = len;
        let failed = auth_lines(&new, "Failed", "token (keyboard-interactive)", login);
        assert_eq!(failed.len(), 1, "{what}: one failed token login:\n{new}");
        assert!(
            failed[0].contains(reason),
            "{what}: the logged reason should say {reason:?}: {}",
            failed[0]
        );
        eprintln!("{what}: logged {:?}", failed[0]);
        assert!(!new.contains("Accepted"), "{what}: {new}");
    }
    // and the good token still works on the same server
    let tf = server.token_file("good.jwt", &good);
    let (code, out, err) = run(&mut server.ssh(&tf, &user, &[], "echo ok"));
    assert_eq!((code, out.as_str()), (0, "ok\n"), "{err}");
    let (new, _) = server.log_since(offset);
    let accepted = auth_lines(&new, "Accepted", "token (keyboard-interactive)", &user);
    assert_eq!(accepted.len(), 1, "{new}");
    assert!(
        accepted[0].contains("credential SHA256:"),
        "{}",
        accepted[0]
    );

    let log = server.log();
    let mut all: Vec<&str> = cases.iter().map(|c| c.1.as_str()).collect();
    all.push(&good);
    assert_not_logged(&log, &all);
}

// ---------------------------------------------------------------------------------------------
// 6. methods not configured are not offered

/// `ssh -v` with keyboard-interactive: (exit code, the methods the server said can continue).
fn offered_methods(server: &Server, token_file: &Path) -> (i32, Vec<String>, String) {
    let mut c = server.client("ssh", token_file);
    c.arg("-v")
        .arg("-p")
        .arg(server.port.to_string())
        .args(server.ssh_options())
        .arg(format!("{}@127.0.0.1", account().name))
        .arg("echo should-not-run");
    let (code, out, err) = run(&mut c);
    assert!(!out.contains("should-not-run"), "{out}");
    let lists: Vec<String> = err
        .lines()
        .filter_map(|l| l.split_once("Authentications that can continue:"))
        .map(|(_, m)| m.trim().to_string())
        .collect();
    eprintln!("ssh -v: exit {code}, the server offered {lists:?}");
    (code, lists, err)
}

#[test]
fn methods_not_configured_are_not_offered() {
    if !peers(&[SSH]) {
        return;
    }
    let token = good_token();

    let server = Server::start(&["password"]);
    let tf = server.token_file("token.jwt", &token);
    let (code, lists, err) = offered_methods(&server, &tf);
    assert_permission_denied("password only", code, &err);
    assert!(!lists.is_empty(), "ssh -v shows the offered methods: {err}");
    assert!(
        lists.iter().all(|l| l == "password"),
        "only password offered: {lists:?}"
    );
    assert!(
        !err.contains("Next authentication method: keyboard-interactive"),
        "{err}"
    );
    let log = server.log();
    assert!(!log.contains("Accepted"), "{log}");
    assert!(!log.contains("keyboard-interactive"), "{log}");
    // a client that asks for keyboard-interactive anyway is refused, and told "password"
    if let Some(python) = python_with("paramiko") {
        let script = r#"
import sys, paramiko
t = paramiko.Transport(("127.0.0.1", int(sys.argv[1])))
t.start_client(timeout=10)
token = open(sys.argv[3]).read().strip()
try:
    t.auth_interactive(sys.argv[2], lambda title, instr, asked: [token for _ in asked])
    print("accepted")
except paramiko.BadAuthenticationType as e:
    print("refused", ",".join(e.allowed_types))
"#;
        let (code, out, err) = run(Command::new(python)
            .args(["-c", script, &server.port.to_string(), &account().name])
            .arg(&tf));
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), "refused password", "{err}");
        assert!(!server.log().contains("Accepted"), "{}", server.log());
    }
    assert_not_logged(&server.log(), &[&token]);
    drop(server);

    let server = Server::start(&[]);
    let tf = server.token_file("token.jwt", &token);
    let (code, lists, err) = offered_methods(&server, &tf);
    assert_permission_denied("no method", code, &err);
    assert!(!lists.is_empty(), "ssh -v shows the offered methods: {err}");
    assert!(
        lists.iter().all(String::is_empty),
        "no method offered: {lists:?}"
    );
    let log = server.log();
    assert!(!log.contains("Accepted"), "{log}");
    assert_not_logged(&log, &[&token]);
}

// ---------------------------------------------------------------------------------------------
// 7. privilege drop and window changes

/// The account `.ci/run` creates, with two supplementary groups.
const TEST_ACCOUNT: &str = "hpccert-e2e-alice";

#[test]
fn sessions_run_as_exactly_the_mapped_account() {
    if !nix::unistd::geteuid().is_root() {
        skip("not root: sessions can only run as the server's own account");
        return;
    }
    if !peers(&[SSH]) {
        return;
    }
    let (code, passwd, _) = run(Command::new("getent").args(["passwd", TEST_ACCOUNT]));
    if code != 0 {
        skip(&format!(
            "account {TEST_ACCOUNT} does not exist (.ci/run creates it)"
        ));
        return;
    }
    let home = passwd.trim().split(':').nth(5).unwrap().to_string();
    let expect = |args: &[&str]| {
        run(Command::new("id").args(args).arg(TEST_ACCOUNT))
            .1
            .trim()
            .to_string()
    };
    let (uid, gid, groups) = (expect(&["-u"]), expect(&["-g"]), expect(&["-G"]));
    let server = Server::start_mapped(
        &["keyboard-interactive"],
        &format!("{},{TEST_ACCOUNT}", account().name),
    );
    let token = good_token();
    let tf = server.token_file("token.jwt", &token);
    let (code, out, err) = run(&mut server.ssh(
        &tf,
        TEST_ACCOUNT,
        &[],
        "id -u; id -g; id -G; echo $HOME; pwd; echo $USER; cat /proc/self/status | grep -E '^(Uid|Gid):'",
    ));
    assert_eq!(
        code,
        0,
        "stdout: {out}\nstderr: {err}\nlog:\n{}",
        server.log()
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], uid, "id -u");
    assert_eq!(lines[1], gid, "id -g");
    let sorted = |s: &str| {
        let mut v: Vec<&str> = s.split_whitespace().collect();
        v.sort_unstable();
        v.join(" ")
    };
    assert_eq!(
        sorted(lines[2]),
        sorted(&groups),
        "id -G: exactly the account's groups"
    );
    assert!(
        groups.split_whitespace().count() >= 3,
        "the test account should have supplementary groups: {groups}"
    );
    assert_eq!(lines[3], home, "HOME");
    assert_eq!(lines[4], home, "pwd");
    assert_eq!(lines[5], TEST_ACCOUNT, "USER");
    // real, effective, saved and filesystem ids are all the account's
    for l in &lines[6..8] {
        let ids: Vec<&str> = l.split_whitespace().skip(1).collect();
        assert_eq!(ids.len(), 4, "{l}");
        let want = if l.starts_with("Uid") { &uid } else { &gid };
        assert!(ids.iter().all(|i| i == want), "{l}");
    }
    // the same token may not be used for an account the map does not list
    let (code, _, err) = run(&mut server.ssh(&tf, "daemon", &[], "true"));
    assert_permission_denied("unmapped account", code, &err);
}

const PARAMIKO_RESIZE: &str = r#"
import sys, time, paramiko
host, port, user, token_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
t = paramiko.Transport((host, port))
t.start_client(timeout=10)
t.auth_password(user, open(token_file).read().strip())
ch = t.open_session()
ch.get_pty("xterm", 80, 24)
ch.exec_command("stty size; read x; stty size")
time.sleep(0.5)
ch.resize_pty(132, 50)
time.sleep(0.2)
ch.send("go\n")
out = b""
while True:
    d = ch.recv(4096)
    if not d:
        break
    out += d
print(repr(out.decode()), ch.recv_exit_status())
"#;

#[test]
fn window_changes_reach_the_pty() {
    let Some(python) = python_with("paramiko") else {
        return;
    };
    let server = Server::start(&["password"]);
    let tf = server.token_file("token.jwt", &good_token());
    let (code, out, err) = run(Command::new(&python)
        .args([
            "-c",
            PARAMIKO_RESIZE,
            "127.0.0.1",
            &server.port.to_string(),
            &account().name,
        ])
        .arg(&tf));
    assert_eq!(
        code,
        0,
        "stdout: {out}\nstderr: {err}\nlog:\n{}",
        server.log()
    );
    assert!(out.contains("24 80"), "initial size: {out}");
    assert!(out.contains("50 132"), "size after window-change: {out}");
    assert!(out.trim_end().ends_with(" 0"), "exit status: {out}");
}

// ---------------------------------------------------------------------------------------------
// 8. OpenSSH user certificates

#[test]
fn openssh_user_certificates_from_a_trusted_ca() {
    if !peers(&[SSH, ("ssh-keygen", "openssh-client")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keygen = |args: &[&str]| {
        let (code, _, err) = run(Command::new("ssh-keygen").args(["-q"]).args(args));
        assert_eq!(code, 0, "ssh-keygen {args:?}: {err}");
    };
    let p = |n: &str| d.join(n).display().to_string();
    let user = account().name.clone();
    keygen(&["-t", "ed25519", "-N", "", "-f", &p("ca")]);
    keygen(&["-t", "ed25519", "-N", "", "-f", &p("rogue-ca")]);
    for (key, ca, principals, extra) in [
        ("good", "ca", user.as_str(), vec![]),
        ("other", "ca", "someone-else", vec![]),
        ("rogue", "rogue-ca", user.as_str(), vec![]),
        (
            "forced",
            "ca",
            user.as_str(),
            vec!["-O", "force-command=/bin/true"],
        ),
        (
            "expired",
            "ca",
            user.as_str(),
            vec!["-V", "20200101:20200102"],
        ),
    ] {
        keygen(&["-t", "ed25519", "-N", "", "-f", &p(key)]);
        let mut args = vec!["-s", &p(ca)]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        args.extend(["-I", &format!("{key}@gateway"), "-n", principals].map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(p(&format!("{key}.pub")));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        keygen(&refs);
    }
    let server = Server::start_with(
        &["openssh-cert"],
        &user,
        &format!("trusted_user_ca_keys = [\"{}\"]\n", p("ca.pub")),
    );
    let ssh = |key: &str| {
        let mut c = Command::new("ssh");
        c.args([
            "-p",
            &server.port.to_string(),
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "IdentityAgent=none",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
        ])
        .args(["-i", &p(key)])
        .arg(format!("{user}@127.0.0.1"))
        .arg("echo \"$HPCCERT_AUTH_METHOD $HPCCERT_SSH_CERT_KEY_ID\"");
        run(&mut c)
    };
    let (code, out, err) = ssh("good");
    assert_eq!(
        code,
        0,
        "stdout: {out}\nstderr: {err}\nlog:\n{}",
        server.log()
    );
    assert_eq!(out.trim(), "openssh-cert good@gateway");
    for (key, reason) in [
        ("other", "is not valid for account"),
        ("rogue", "not signed by a trusted SSH CA"),
        ("forced", "critical option force-command"),
    ] {
        let (code, _, err) = ssh(key);
        assert_eq!(code, 255, "{key}: {err}");
        let log = server.log();
        let failed = auth_lines(&log, "Failed", "openssh-cert", &user);
        assert!(
            failed.iter().any(|l| l.contains(reason)),
            "{key}: no failure with {reason:?}:\n{log}"
        );
    }
    // an expired certificate does not even get its possession proof checked (russh refuses it)
    let (code, _, err) = ssh("expired");
    assert_eq!(code, 255, "expired: {err}");
    assert_eq!(
        auth_lines(&server.log(), "Accepted", "openssh-cert", &user).len(),
        1
    );
}

/// `GET /metrics` from the server's metrics listener.
fn metrics(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the sample `name{labels}` in a metrics exposition (0 when absent).
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn openssh_certificates_are_checked_against_a_revocation_list_reloaded_on_change() {
    if !peers(&[SSH, ("ssh-keygen", "openssh-client")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |n: &str| d.join(n).display().to_string();
    let keygen = |args: &[&str]| {
        let (code, out, err) = run(Command::new("ssh-keygen").args(args));
        assert_eq!(code, 0, "ssh-keygen {args:?}: {out}{err}");
        out
    };
    let user = account().name.clone();
    keygen(&["-q", "-t", "ed25519", "-N", "", "-f", &p("ca")]);
    // two users' certificates, serials 77 and 78, each in a file of its own (CertificateFile)
    for serial in ["77", "78"] {
        let key = format!("key{serial}");
        keygen(&["-q", "-t", "ed25519", "-N", "", "-f", &p(&key)]);
        let id = format!("krl-e2e-{serial}@gateway");
        keygen(&[
            "-q",
            "-s",
            &p("ca"),
            "-I",
            &id,
            "-n",
            &user,
            "-z",
            serial,
            &p(&format!("{key}.pub")),
        ]);
        std::fs::rename(
            d.join(format!("{key}-cert.pub")),
            d.join(format!("cert{serial}")),
        )
        .unwrap();
    }
    let ca_fp = keygen(&["-l", "-E", "sha256", "-f", &p("ca.pub")])
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let krl = d.join("ssh-revoked.krl");
    // a KRL written as an operator would: ssh-keygen -k into a temporary file, then a rename
    let write_krl = |spec: &str| {
        std::fs::write(d.join("krl.spec"), spec).unwrap();
        keygen(&[
            "-q",
            "-k",
            "-f",
            &p("krl.tmp"),
            "-s",
            &p("ca.pub"),
            &p("krl.spec"),
        ]);
        std::fs::rename(d.join("krl.tmp"), &krl).unwrap();
    };
    let write_raw = |bytes: &[u8]| {
        std::fs::write(d.join("krl.tmp"), bytes).unwrap();
        std::fs::rename(d.join("krl.tmp"), &krl).unwrap();
    };
    let ssh_keygen_q = |serial: &str| {
        run(Command::new("ssh-keygen")
            .arg("-Q")
            .arg("-f")
            .arg(&krl)
            .arg(d.join(format!("cert{serial}"))))
        .0
    };
    write_krl("serial: 5\n");
    let metrics_port = free_port();
    let server = Server::start_with(
        &["openssh-cert"],
        &user,
        &format!(
            "trusted_user_ca_keys = [\"{}\"]\nrevoked_keys = \"{}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n",
            p("ca.pub"),
            krl.display()
        ),
    );
    let ssh = |serial: &str| {
        let mut c = Command::new("ssh");
        c.args(["-p", &server.port.to_string(), "-F", "/dev/null"])
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .args([
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "IdentityAgent=none",
            ])
            .args(["-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR"])
            .args(["-o", "PreferredAuthentications=publickey"])
            .args(["-i", &p(&format!("key{serial}"))])
            .arg("-o")
            .arg(format!("CertificateFile={}", p(&format!("cert{serial}"))))
            .arg(format!("{user}@127.0.0.1"))
            .arg("echo \"$HPCCERT_AUTH_METHOD $HPCCERT_SSH_CERT_KEY_ID\"");
        run(&mut c)
    };
    let logs_in = |serial: &str| {
        let (code, out, err) = ssh(serial);
        match code {
            0 => {
                assert_eq!(out.trim(), format!("openssh-cert krl-e2e-{serial}@gateway"));
                true
            }
            255 => {
                assert!(err.contains("Permission denied"), "{err}");
                false
            }
            _ => panic!("ssh exited {code}: {out}\n{err}"),
        }
    };
    // the server notices a changed file within two seconds; allow ten
    let within = |what: &str, serial: &str, want: bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while logs_in(serial) != want {
            assert!(
                Instant::now() < deadline,
                "{what}: certificate {serial} {} after 10 s\n{}",
                if want {
                    "still refused"
                } else {
                    "still accepted"
                },
                server.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let refusals = || {
        sample(
            &metrics(metrics_port),
            "sshd_gsi_auth_total{method=\"openssh-cert\",result=\"refuse\"}",
        )
    };
    let failed = || auth_lines(&server.log(), "Failed", "openssh-cert", &user);

    // 1. a KRL of another serial: both certificates log in
    assert_eq!(ssh_keygen_q("77"), 0);
    assert!(logs_in("77"), "log:\n{}", server.log());
    assert!(logs_in("78"));
    assert_eq!(refusals(), 0);

    // 2. serial 77 revoked: refused within seconds, as ssh-keygen -Q says; 78 still logs in
    write_krl("serial: 77\n");
    assert_eq!(
        ssh_keygen_q("77"),
        1,
        "ssh-keygen -Q should call 77 revoked"
    );
    assert_eq!(ssh_keygen_q("78"), 0);
    within("serial 77 revoked", "77", false);
    assert!(logs_in("78"));
    let why = format!(
        "certificate \"krl-e2e-77@gateway\" serial 77 revoked by {}: serial 77 of CA {ca_fp}",
        krl.display()
    );
    assert!(
        failed().iter().any(|l| l == &why),
        "no failure saying {why:?}:\n{}",
        server.log()
    );
    let refused_so_far = refusals();
    assert!(refused_so_far >= 1, "the refusal is counted");

    // 3. a KRL that does not parse: every certificate is refused, and the log says why
    write_raw(b"SSHKRL\n\0\0\0\0\x01 cut short");
    assert_eq!(
        ssh_keygen_q("78"),
        255,
        "ssh-keygen -Q refuses the broken KRL too"
    );
    within("broken KRL", "78", false);
    assert!(!logs_in("77"));
    let unusable = failed()
        .into_iter()
        .filter(|l| {
            l.contains("the revoked keys file is unusable")
                && l.contains(&format!("{}: truncated", krl.display()))
        })
        .count();
    assert!(unusable >= 2, "no 'unusable' failures:\n{}", server.log());
    assert!(refusals() >= refused_so_far + 2);
    assert!(
        server
            .log()
            .contains("every openssh-cert login is refused until it is fixed"),
        "the reload logs the broken file:\n{}",
        server.log()
    );

    // 4. no file at all: refused as well (sshd's RevokedKeys does the same)
    std::fs::remove_file(&krl).unwrap();
    let before = failed().len();
    within("missing KRL", "78", false);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!logs_in("78"));
    assert!(
        failed()[before..]
            .iter()
            .any(|l| l.contains("unusable") && l.contains("No such file")),
        "{}",
        server.log()
    );

    // 5. a KRL revoking another serial: 77 logs in again, 78 is now refused
    write_krl("serial: 78\nserial: 100-200\n");
    assert_eq!(ssh_keygen_q("77"), 0);
    assert_eq!(ssh_keygen_q("78"), 1);
    within("serial 78 revoked instead", "77", true);
    assert!(!logs_in("78"));
    assert!(
        failed().iter().any(|l| l.ends_with(&format!(
            "revoked by {}: serial 78 of CA {ca_fp}",
            krl.display()
        ))),
        "{}",
        server.log()
    );
    assert_eq!(
        auth_lines(&server.log(), "Accepted", "openssh-cert", &user).len() as u64,
        sample(
            &metrics(metrics_port),
            "sshd_gsi_auth_total{method=\"openssh-cert\",result=\"accept\"}"
        )
    );
}

// ---------------------------------------------------------------------------------------------
// 9. login records

#[test]
fn pty_sessions_leave_login_records() {
    if !nix::unistd::geteuid().is_root() {
        skip("not root: login records are written by a root server only");
        return;
    }
    if !peers(&[SSH, ("who", "coreutils"), ("last", "util-linux")]) {
        return;
    }
    if !Path::new("/var/run/utmp").exists() || !Path::new("/var/log/wtmp").exists() {
        skip(
            "/var/run/utmp or /var/log/wtmp missing (systemd creates them at boot; .ci/run does in CI)",
        );
        return;
    }
    if run(Command::new("getent").args(["passwd", TEST_ACCOUNT])).0 != 0 {
        skip(&format!(
            "account {TEST_ACCOUNT} does not exist (.ci/run creates it)"
        ));
        return;
    }
    let server = Server::start_mapped(&["keyboard-interactive"], TEST_ACCOUNT);
    let tf = server.token_file("token.jwt", &good_token());
    let (code, out, err) = run(&mut server.ssh(&tf, TEST_ACCOUNT, &["-tt"], "who; tty"));
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let tty = out
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .find_map(|l| l.strip_prefix("/dev/"))
        .unwrap_or_else(|| panic!("no tty in {out:?}"))
        .to_string();
    // utmp while the session runs
    assert!(
        out.lines()
            .any(|l| l.starts_with(TEST_ACCOUNT) && l.contains(&tty) && l.contains("127.0.0.1")),
        "`who` in the session should list {TEST_ACCOUNT} on {tty} from 127.0.0.1: {out:?}"
    );
    // wtmp afterwards: a login on that line, already ended (DEAD_PROCESS written)
    std::thread::sleep(Duration::from_millis(300));
    let (_, last, _) = run(Command::new("last").args(["-w", "-f", "/var/log/wtmp", TEST_ACCOUNT]));
    let line = last
        .lines()
        .find(|l| l.contains(&tty) && l.contains("127.0.0.1"))
        .unwrap_or_else(|| panic!("`last` has no {tty} login of {TEST_ACCOUNT}: {last}"));
    assert!(
        !line.contains("still logged in"),
        "the logout was not recorded: {line}"
    );
    // and the session is gone from utmp
    let (_, who, _) = run(&mut Command::new("who"));
    assert!(
        !who.lines()
            .any(|l| l.starts_with(TEST_ACCOUNT) && l.contains(&format!("{tty} "))),
        "utmp still lists the ended session: {who}"
    );
    let (_, lastlog, _) = run(Command::new("lastlog").args(["-u", TEST_ACCOUNT]));
    assert!(
        lastlog.contains(&tty) && lastlog.contains("127.0.0.1"),
        "lastlog: {lastlog}"
    );
}
