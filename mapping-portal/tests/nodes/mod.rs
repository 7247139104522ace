//! The login node of the SSH CA's end-to-end tests: OpenSSH's sshd configured with only the
//! shipped drop-in's lines (TrustedUserCAKeys, RevokedKeys, AuthorizedPrincipalsFile none) on
//! the files `gridmap-tool sync` installed, and sshd-gsi's openssh-cert method on the same
//! files; and the small process helpers the tests share.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hpccert_e2e::{free_port, skip};

pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join(name)
}

pub fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn keygen(path: &Path) {
    let (code, out) = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path));
    assert_eq!(code, 0, "{out}");
}

pub fn wait_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Both servers, stopped when dropped.
pub struct Servers {
    pub openssh_port: u16,
    pub gsi_port: u16,
    _openssh: Killed,
    _gsi: Killed,
}

impl Servers {
    /// Start both in `d` on the CA keys and KRL installed in `node`.
    pub fn start(d: &Path, node: &Path) -> Self {
        Self::start_on(d, node, free_port(), free_port())
    }

    /// The same on the given ports.
    pub fn start_on(d: &Path, node: &Path, openssh_port: u16, gsi_port: u16) -> Self {
        keygen(&d.join("host_key"));
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {openssh_port}\nListenAddress 127.0.0.1\nHostKey {0}/host_key\nPidFile {0}/sshd.pid\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nAuthorizedKeysFile none\n\
                 Subsystem sftp /usr/lib/openssh/sftp-server\n\
                 TrustedUserCAKeys {1}/ssh-ca-keys.pub\nRevokedKeys {1}/ssh-revoked.krl\nAuthorizedPrincipalsFile none\n",
                d.display(),
                node.display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let _openssh = Killed(
            Command::new("/usr/sbin/sshd")
                .args(["-D", "-f"])
                .arg(d.join("sshd_config"))
                .arg("-E")
                .arg(d.join("sshd.log"))
                .spawn()
                .unwrap(),
        );
        wait_port(openssh_port, "sshd", &d.join("sshd.log"));

        // sshd-gsi: openssh-cert on the same files
        std::fs::write(d.join("grid-mapfile"), "").unwrap();
        std::fs::write(
            d.join("hpccert.toml"),
            format!(
                "version = 1\n[mapping]\ngrid_mapfile = \"{0}/grid-mapfile\"\n[tokens]\nkey_cache_dir = \"{0}/keys\"\n\
                 [sshd]\nlisten = [\"127.0.0.1:{gsi_port}\"]\nhost_keys = [\"{0}/host_key\"]\nmethods = [\"openssh-cert\"]\nuse_pam = false\n\
                 sftp_server = \"/usr/lib/openssh/sftp-server\"\ntrusted_user_ca_keys = [\"{1}/ssh-ca-keys.pub\"]\nrevoked_keys = \"{1}/ssh-revoked.krl\"\n",
                d.display(),
                node.display()
            ),
        )
        .unwrap();
        let _gsi = Killed(
            Command::new(bin("sshd-gsi"))
                .arg("-f")
                .arg(d.join("hpccert.toml"))
                .env("NO_COLOR", "1")
                .stderr(std::fs::File::create(d.join("sshd-gsi.log")).unwrap())
                .spawn()
                .unwrap(),
        );
        wait_port(gsi_port, "sshd-gsi", &d.join("sshd-gsi.log"));

        Self {
            openssh_port,
            gsi_port,
            _openssh,
            _gsi,
        }
    }
}

/// Whether a root-only login-node test can run: root, the test account, the programs (with
/// the packages that hold them) and the workspace's binaries; a skip says what is missing.
pub fn node_peers(test: &str, account: &str, programs: &[(&str, &str)], bins: &[&str]) -> bool {
    if !nix::unistd::geteuid().is_root() {
        skip(&format!("{test} runs as root (OpenSSH's sshd)"));
        return false;
    }
    if nix::unistd::User::from_name(account)
        .ok()
        .flatten()
        .is_none()
    {
        skip(&format!("account {account} missing (.ci/run makes it)"));
        return false;
    }
    for (program, package) in programs {
        if !Path::new(program).exists() {
            skip(&format!("{program} missing ({package})"));
            return false;
        }
    }
    for b in bins {
        if !bin(b).is_file() {
            skip(&format!("{b} not built (run the workspace's tests)"));
            return false;
        }
    }
    hpccert_e2e::oidc::provider_available()
}

/// The OpenSSH programs every login-node test uses.
pub const OPENSSH: &[(&str, &str)] = &[
    ("/usr/sbin/sshd", "openssh-server"),
    ("/usr/bin/ssh", "openssh-client"),
    ("/usr/bin/scp", "openssh-client"),
    ("/usr/bin/sftp", "openssh-client"),
    ("/usr/bin/rsync", "rsync"),
];
