//! sshd-gsi against OpenSSH's sshd on the same requests, where sshd has the behaviour (the
//! hardening review): the same paramiko client asks both servers and the answers must agree.
//!
//! - subsystems run through the account's shell (`$SHELL -c sftp-server`): an account whose
//!   shell is nologin gets no sftp (nor exec);
//! - one process per session channel: a second exec on a channel that runs one is refused and
//!   never started; at most `MaxSessions` (10) session channels per connection;
//! - a session's PTY belongs to the account, group tty, mode 0620;
//! - the default listen addresses (`0.0.0.0` and `[::]` on one port) serve IPv4 and IPv6, and
//!   an IPv4 client is logged as an IPv4 address.
//!
//! Root only (accounts, PTY ownership, a second sshd); OpenSSH's sshd from Debian's
//! openssh-server; paramiko in the e2e Python.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Process, free_port, python_with, skip, write_mode};
use hpccert_core::dev::token::{DevKey, jwks};
use hpccert_core::token::{JwsAlgorithm, unix_seconds};
use serde_json::{Value, json};

const ISSUER: &str = "https://issuer.parity.example";
const AUDIENCE: &str = "https://login.parity.example";
const SUBJECT: &str = "parity-user";
/// A plain account (bash) and one whose shell is nologin (.ci/run makes both).
const ALICE: &str = "hpccert-e2e-alice";
const NOLOGIN: &str = "hpccert-e2e-nologin";
const SSHD: &str = "/usr/sbin/sshd";

fn issuer_key() -> &'static DevKey {
    static KEY: OnceLock<DevKey> = OnceLock::new();
    KEY.get_or_init(|| DevKey::generate("parity-1", JwsAlgorithm::RS256).unwrap())
}

fn token() -> String {
    let t = unix_seconds(hpccert_core::clock::now());
    issuer_key()
        .mint(&json!({
            "iss": ISSUER, "sub": SUBJECT, "aud": AUDIENCE, "iat": t, "nbf": t, "exp": t + 3600,
            "wlcg.ver": "1.0", "scope": "compute.create",
        }))
        .unwrap()
}

/// Root, both accounts, sshd, paramiko: or a printed skip (a failure in CI).
fn peers() -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        skip("e2e_sshd_parity runs as root (accounts, PTY ownership, a second sshd)");
        return None;
    }
    for a in [ALICE, NOLOGIN] {
        if nix::unistd::User::from_name(a).ok().flatten().is_none() {
            skip(&format!("account {a} missing (.ci/run makes it)"));
            return None;
        }
    }
    if !Path::new(SSHD).is_file() {
        skip("/usr/sbin/sshd missing (Debian package openssh-server)");
        return None;
    }
    python_with("paramiko")
}

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

/// Both servers, for the same accounts.
struct Servers {
    dir: tempfile::TempDir,
    openssh: (u16, Process),
    gsi: (u16, Process),
}

fn ed25519_host_key(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

impl Servers {
    fn start(gsi_listen: Option<&[String]>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sshd-gsi-parity-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        // sshd reads the directories above its files: keep them root's and not writable by others
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        ed25519_host_key(&d.join("host_key"));
        // the client's key for OpenSSH, authorised for both accounts
        ed25519_host_key(&d.join("client_key"));
        std::fs::create_dir(d.join("authorized")).unwrap();
        let public = std::fs::read_to_string(d.join("client_key.pub")).unwrap();
        for a in [ALICE, NOLOGIN] {
            write_mode(&d.join("authorized").join(a), public.as_bytes(), 0o644);
        }
        let openssh_port = free_port();
        write_mode(
            &d.join("sshd_config"),
            format!(
                "Port {openssh_port}\nListenAddress 127.0.0.1\nListenAddress ::1\nHostKey {0}/host_key\nPidFile {0}/sshd.pid\n\
                 UsePAM no\nPubkeyAuthentication yes\nAuthorizedKeysFile {0}/authorized/%u\nStrictModes no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 Subsystem sftp /usr/lib/openssh/sftp-server\nMaxStartups 100\nLogLevel VERBOSE\n",
                d.display()
            )
            .as_bytes(),
            0o644,
        );
        std::fs::create_dir_all("/run/sshd").unwrap();
        let openssh = Process(
            Command::new(SSHD)
                .args(["-D", "-f"])
                .arg(d.join("sshd_config"))
                .arg("-E")
                .arg(d.join("sshd.log"))
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
        // sshd-gsi: the token maps to both accounts (the login name picks one)
        write_mode(
            &d.join("token-mapfile"),
            format!("\"{ISSUER}\" \"{SUBJECT}\" {ALICE},{NOLOGIN}\n").as_bytes(),
            0o644,
        );
        write_mode(&d.join("grid-mapfile"), b"", 0o644);
        write_mode(
            &d.join("jwks.json"),
            jwks(&[issuer_key()]).unwrap().to_string().as_bytes(),
            0o644,
        );
        write_mode(&d.join("token"), token().as_bytes(), 0o600);
        std::fs::create_dir(d.join("keys")).unwrap();
        std::fs::create_dir(d.join("certificates")).unwrap();
        let gsi_port = free_port();
        let listen = match gsi_listen {
            Some(l) => l
                .iter()
                .map(|a| format!("\"{}\"", a.replace("PORT", &gsi_port.to_string())))
                .collect::<Vec<_>>()
                .join(", "),
            None => format!("\"127.0.0.1:{gsi_port}\""),
        };
        write_mode(
            &d.join("hpccert.toml"),
            format!(
                "version = 1\n[trust]\nca_dir = \"{0}/certificates\"\n\
                 [mapping]\ngrid_mapfile = \"{0}/grid-mapfile\"\ntoken_mapfile = \"{0}/token-mapfile\"\n\
                 [tokens]\nkey_cache_dir = \"{0}/keys\"\n\
                 [sshd]\nlisten = [{listen}]\nhost_keys = [\"{0}/host_key\"]\nmethods = [\"password\"]\nuse_pam = false\n\
                 max_startups = \"100:30:200\"\nper_source_max_startups = 0\n\
                 sftp_server = \"/usr/lib/openssh/sftp-server\"\n\
                 [[issuer]]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\nalgorithms = [\"RS256\"]\nprofile = \"wlcg\"\njwks_file = \"{0}/jwks.json\"\nsession_rights = \"all\"\n",
                d.display()
            )
            .as_bytes(),
            0o644,
        );
        let gsi = Process(
            Command::new(env!("CARGO_BIN_EXE_sshd-gsi"))
                .arg("-f")
                .arg(d.join("hpccert.toml"))
                .env("HPCCERT_LOG", "info,russh=warn")
                .env("NO_COLOR", "1")
                .env_remove("NOTIFY_SOCKET")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(d.join("sshd-gsi.log")).unwrap())
                .spawn()
                .unwrap(),
        );
        let servers = Self {
            dir,
            openssh: (openssh_port, openssh),
            gsi: (gsi_port, gsi),
        };
        for (name, port) in [("sshd", openssh_port), ("sshd-gsi", gsi_port)] {
            assert!(
                wait_for(Duration::from_secs(15), || std::net::TcpStream::connect((
                    "127.0.0.1",
                    port
                ))
                .is_ok()),
                "{name} did not start:\n{}\n{}",
                servers.log("sshd.log"),
                servers.log("sshd-gsi.log")
            );
        }
        servers
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// The same paramiko `action` against both servers: (OpenSSH's answer, sshd-gsi's).
    fn both(&self, python: &Path, user: &str, action: &str, arg: &str) -> (Value, Value) {
        let d = self.dir.path();
        let one = |port: u16, auth: &str, secret: PathBuf| -> Value {
            let out = Command::new(python)
                .args(["-c", CLIENT])
                .args(["127.0.0.1", &port.to_string(), user, auth])
                .arg(secret)
                .args([action, arg])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            serde_json::from_str(text.trim()).unwrap_or_else(|e| {
                panic!(
                    "client printed {text:?} ({e}); stderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
        };
        (
            one(self.openssh.0, "key", d.join("client_key")),
            one(self.gsi.0, "password", d.join("token")),
        )
    }
}

/// paramiko: log in (a key file, or a token as the password) and do one thing; prints JSON.
const CLIENT: &str = r#"
import json, sys, time, paramiko
host, port, user, auth, secret, action, arg = sys.argv[1:8]
res = {}
t = paramiko.Transport((host, int(port)))
t.start_client(timeout=10)
if auth == "key":
    t.auth_publickey(user, paramiko.Ed25519Key.from_private_key_file(secret))
else:
    t.auth_password(user, open(secret).read().strip(), fallback=False)

def run(ch, command, timeout=20):
    ch.settimeout(timeout)
    ch.exec_command(command)
    out = b""
    while True:
        b = ch.recv(65536)
        if not b:
            break
        out += b
    return out.decode(errors="replace"), ch.recv_exit_status()

if action == "sftp":
    try:
        s = paramiko.SFTPClient.from_transport(t)
        s.listdir(".")
        res["sftp"] = "ok"
    except Exception as e:
        res["sftp"] = "refused"
        res["error"] = type(e).__name__
elif action == "exec":
    ch = t.open_session()
    out, status = run(ch, arg)
    res["status"] = status
elif action == "exec-out":
    ch = t.open_session()
    out, status = run(ch, arg)
    res["status"] = status
    res["out"] = out.strip()
elif action == "exec-twice":
    ch = t.open_session()
    ch.exec_command("sleep 1; echo first")
    try:
        ch.exec_command(arg)
        res["second"] = "accepted"
    except Exception as e:
        res["second"] = "refused"
    out = b""
    ch.settimeout(20)
    while True:
        b = ch.recv(65536)
        if not b:
            break
        out += b
    res["out"] = out.decode().strip()
elif action == "sessions":
    opened = []
    for i in range(int(arg)):
        try:
            opened.append(t.open_session(timeout=10))
        except Exception as e:
            break
    res["opened"] = len(opened)
elif action == "pty":
    ch = t.open_session()
    ch.get_pty(term="xterm", width=80, height=24)
    out, status = run(ch, arg)
    res["out"] = out.strip()
t.close()
print(json.dumps(res))
"#;

#[test]
fn an_account_whose_shell_is_nologin_gets_no_sftp_and_no_exec_from_either_server() {
    let Some(python) = peers() else { return };
    let s = Servers::start(None);
    let (openssh, gsi) = s.both(&python, ALICE, "sftp", "");
    assert_eq!(openssh["sftp"], "ok", "{openssh}");
    assert_eq!(gsi, openssh, "{}", s.log("sshd-gsi.log"));
    let (openssh, gsi) = s.both(&python, NOLOGIN, "sftp", "");
    assert_eq!(openssh["sftp"], "refused", "{openssh}");
    // both refuse; paramiko's exception class depends on whether nologin's message arrived
    // before the close (OSError) or was read as an SFTP packet (SFTPError), with either server
    assert_eq!(
        gsi["sftp"],
        openssh["sftp"],
        "{gsi}\n{}",
        s.log("sshd-gsi.log")
    );
    let (openssh, gsi) = s.both(&python, NOLOGIN, "exec", "true");
    assert_ne!(openssh["status"], 0, "{openssh}");
    assert_eq!(gsi, openssh, "{}", s.log("sshd-gsi.log"));
}

#[test]
fn a_second_exec_on_a_busy_channel_is_refused_and_never_runs_and_max_sessions_holds() {
    let Some(python) = peers() else { return };
    let s = Servers::start(None);
    let marker = |tag: &str| s.dir.path().join(format!("second-ran-{tag}"));
    // the second command would leave a file if it ever ran
    let cmd = format!("touch {}", marker("X").display());
    let (openssh, gsi) = s.both(&python, ALICE, "exec-twice", &cmd);
    assert_eq!(openssh["second"], "refused", "{openssh}");
    assert_eq!(gsi, openssh, "{}", s.log("sshd-gsi.log"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!marker("X").exists(), "a second exec ran");
    // MaxSessions: sshd's default 10, sshd-gsi's [sshd] max_sessions default 10
    let (openssh, gsi) = s.both(&python, ALICE, "sessions", "12");
    assert_eq!(openssh, json!({"opened": 10}));
    assert_eq!(gsi, openssh, "{}", s.log("sshd-gsi.log"));
    assert!(s.log("sshd-gsi.log").contains("max_sessions = 10"));
}

#[test]
fn the_pty_belongs_to_the_account_group_tty_mode_0620_as_under_sshd() {
    let Some(python) = peers() else { return };
    let s = Servers::start(None);
    let (openssh, gsi) = s.both(&python, ALICE, "pty", "stat -c '%U %G %a' \"$(tty)\"");
    assert_eq!(openssh["out"], format!("{ALICE} tty 620"), "{openssh}");
    assert_eq!(gsi, openssh, "{}", s.log("sshd-gsi.log"));
}

#[test]
fn the_default_listen_addresses_serve_ipv4_and_ipv6_and_ipv4_peers_stay_ipv4() {
    let Some(python) = peers() else { return };
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        skip("no IPv6 loopback on this machine");
        return;
    }
    // the shipped default: 0.0.0.0 and [::] on one port
    let listen = ["0.0.0.0:PORT".to_string(), "[::]:PORT".to_string()];
    let s = Servers::start(Some(&listen));
    let log = s.log("sshd-gsi.log");
    assert!(
        log.contains(&format!("Server listening on :: port {}.", s.gsi.0)),
        "{log}"
    );
    assert!(
        log.contains(&format!("Server listening on 0.0.0.0 port {}.", s.gsi.0)),
        "{log}"
    );
    let d = s.dir.path();
    for host in ["127.0.0.1", "::1"] {
        let out = Command::new(&python)
            .args(["-c", CLIENT, host, &s.gsi.0.to_string(), ALICE, "password"])
            .arg(d.join("token"))
            .args(["exec", "echo $SSH_CONNECTION"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(v["status"], 0, "{host}: {v}");
    }
    let log = s.log("sshd-gsi.log");
    // the IPv4 login was logged with an IPv4 address, not ::ffff:127.0.0.1
    assert!(log.contains("from 127.0.0.1 port"), "{log}");
    assert!(!log.contains("::ffff:"), "{log}");
    assert!(log.contains("from ::1 port"), "{log}");
    // and a configured address that cannot be bound stops the server, loudly
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_sshd-gsi"))
        .arg("-f")
        .arg(d.join("hpccert.toml"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

/// Many logins at once: the server forks session processes while other threads of it resolve
/// accounts and groups (NSS). The groups are resolved before the fork and only set in the
/// child, so every session comes up, with exactly the groups sshd gives the account.
#[test]
fn concurrent_logins_get_the_accounts_groups_as_under_sshd() {
    let Some(python) = peers() else { return };
    let s = Servers::start(None);
    let command = "id -Gn";
    let (openssh, _) = s.both(&python, ALICE, "exec-out", command);
    let groups = openssh["out"].as_str().unwrap().to_string();
    assert!(
        groups.contains("hpccert-e2e-g1") && groups.contains("hpccert-e2e-g2"),
        "{groups}"
    );
    let d = s.dir.path().to_path_buf();
    let port = s.gsi.0;
    let workers: Vec<_> = (0..24)
        .map(|_| {
            let (python, d) = (python.clone(), d.clone());
            std::thread::spawn(move || {
                let out = Command::new(&python)
                    .args([
                        "-c",
                        CLIENT,
                        "127.0.0.1",
                        &port.to_string(),
                        ALICE,
                        "password",
                    ])
                    .arg(d.join("token"))
                    .args(["exec-out", command])
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                serde_json::from_slice::<Value>(&out.stdout)
                    .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
            })
        })
        .collect();
    for w in workers {
        let v = w.join().unwrap();
        assert_eq!(v["status"], 0, "{v}\n{}", s.log("sshd-gsi.log"));
        assert_eq!(v["out"], groups.as_str(), "{v}");
    }
}
