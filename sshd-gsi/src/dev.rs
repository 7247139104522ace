//! `sshd-gsi --dev`: an unprivileged server on 127.0.0.1:2222 with everything it needs made
//! once in a state directory: a dev CA and trust directory, a certificate and key for the
//! current user, a grid-mapfile and a token map mapping them to the current user, a dev token
//! issuer, a host key and a config file. Each start mints a fresh access token.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hpccert_core::config::Config;
use hpccert_core::dev::pki::{self, CertSpec};
use hpccert_core::dev::token::{self as devtoken, DevKey};
use hpccert_core::token::{JwsAlgorithm, unix_seconds};
use serde_json::json;

const DOMAIN: &str = "/DC=org/DC=hpccert-dev";
const ISSUER: &str = "https://issuer.hpccert-dev.example";
const AUDIENCE: &str = "https://login.hpccert-dev.example";
const KID: &str = "dev-rs256-1";
const ASKPASS: &str = include_str!("../../packaging/hpccert-askpass");
const SSH_X509: &str = include_str!("../dev/ssh-x509.py");

/// What `--dev` prepared.
#[derive(Debug)]
pub struct DevSetup {
    pub config: Config,
    pub config_path: PathBuf,
    pub state: PathBuf,
    pub user: String,
    pub token_file: PathBuf,
    pub askpass: PathBuf,
}

pub fn default_state_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("hpccert-dev")
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    std::fs::write(path, data).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn e<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Make (once) and return the dev setup; `listen` is the address to serve on.
pub fn prepare(state: &Path, listen: &str) -> Result<DevSetup, String> {
    std::fs::create_dir_all(state).map_err(|err| format!("{}: {err}", state.display()))?;
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700)).map_err(e)?;
    let account = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .map_err(e)?
        .ok_or("the current user has no account name")?;
    let (user, home) = (account.name, account.dir);
    let now = hpccert_core::clock::now();
    let trust = state.join("certificates");
    let user_cert = state.join("user.pem");
    let user_key = state.join("user.key");
    if !user_cert.exists() || !trust.exists() {
        // RSA 2048, as CILogon issues them (and what Globus grid-proxy-init can extend)
        let rsa = pki::KeyKind::Rsa(2048);
        let ca_spec = CertSpec {
            key: rsa,
            ..CertSpec::ca(&format!("{DOMAIN}/CN=hpccert Dev CA"), now, 3650)?
        };
        let ca = pki::self_signed_ca(&ca_spec)?;
        let user_spec = CertSpec {
            key: rsa,
            ..CertSpec::user(&format!("{DOMAIN}/O=Dev/CN={user}"), now, 365)?
        };
        let cred = pki::issue(&ca, &user_spec)?;
        pki::install_ca(
            &trust,
            &ca.cert,
            None,
            Some(&format!(
                "TO Issuer SELF PERMIT Subject \"{DOMAIN}/O=Dev/.*\"\n"
            )),
        )?;
        std::fs::write(&user_cert, cred.cert_pem().map_err(e)?).map_err(e)?;
        write_private(&user_key, &cred.key_pem_traditional().map_err(e)?)?;
        let line = hpccert_core::identity::gridmap::format_line(
            &cred.subject(),
            &[hpccert_core::identity::gridmap::MappedAccount::parse(
                &user,
            )?],
        );
        std::fs::write(
            state.join("grid-mapfile"),
            format!("# sshd-gsi --dev\n{line}\n"),
        )
        .map_err(e)?;
    }
    let issuer_key_file = state.join("issuer.key");
    let issuer = if issuer_key_file.exists() {
        DevKey::from_pem(
            KID,
            JwsAlgorithm::RS256,
            &std::fs::read(&issuer_key_file).map_err(e)?,
        )
        .map_err(e)?
    } else {
        let k = DevKey::generate(KID, JwsAlgorithm::RS256).map_err(e)?;
        write_private(&issuer_key_file, &k.private_pem().map_err(e)?)?;
        k
    };
    let jwks = state.join("issuer-jwks.json");
    std::fs::write(&jwks, devtoken::jwks(&[&issuer]).map_err(e)?.to_string()).map_err(e)?;
    std::fs::set_permissions(&jwks, std::fs::Permissions::from_mode(0o644)).map_err(e)?;
    let subject = format!("dev-user-{user}");
    std::fs::write(
        state.join("token-mapfile"),
        format!("# sshd-gsi --dev\n\"{ISSUER}\" \"{subject}\" {user}\n"),
    )
    .map_err(e)?;
    // a token about as large as real CILogon/WLCG ones (over OpenSSH's 1023-byte answer limit)
    let t = unix_seconds(now);
    let claims = json!({
        "iss": ISSUER, "sub": subject, "aud": AUDIENCE, "iat": t, "nbf": t, "exp": t + 3600,
        "jti": format!("dev-{t}"), "wlcg.ver": "1.0",
        // a gateway's scopes: jobs, and files below your home (sftp is confined there)
        "scope": format!("compute.create compute.read compute.cancel storage.modify:{}", home.display()),
        "wlcg.groups": ["/hpccert-dev", "/hpccert-dev/users"],
        "preferred_username": user, "name": "hpccert Dev User", "idp": "https://idp.hpccert-dev.example/idp",
        "eppn": format!("{user}@hpccert-dev.example"),
        "cert_subject_dn": format!("{DOMAIN}/O=Dev/CN={user}"),
    });
    let token_file = state.join("token.jwt");
    write_private(&token_file, issuer.mint(&claims).map_err(e)?.as_bytes())?;
    let ssh_x509 = state.join("ssh-x509.py");
    std::fs::write(&ssh_x509, SSH_X509).map_err(e)?;
    std::fs::set_permissions(&ssh_x509, std::fs::Permissions::from_mode(0o755)).map_err(e)?;
    let askpass = state.join("hpccert-askpass");
    std::fs::write(&askpass, ASKPASS).map_err(e)?;
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755)).map_err(e)?;
    let host_key = state.join("ssh_host_ed25519_key");
    if !host_key.exists() {
        let mut seed = [0u8; 32];
        openssl::rand::rand_bytes(&mut seed).map_err(e)?;
        let pair = russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&seed);
        let key = russh::keys::PrivateKey::from(pair);
        let text = key
            .to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .map_err(e)?;
        write_private(&host_key, text.as_bytes())?;
    }
    let config_path = state.join("hpccert.toml");
    let s = |p: &Path| p.display().to_string();
    let text = format!(
        "# sshd-gsi --dev (rewritten at each start)\nversion = 1\n\
         [trust]\nca_dir = \"{}\"\n\
         [mapping]\ngrid_mapfile = \"{}\"\ntoken_mapfile = \"{}\"\nsuspended_file = \"{}\"\n\
         [tokens]\nkey_cache_dir = \"{}\"\n\
         [sshd]\nlisten = [\"{listen}\"]\nhost_keys = [\"{}\"]\nmethods = [\"x509\", \"keyboard-interactive\", \"password\"]\nuse_pam = false\n\
         [[issuer]]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\nalgorithms = [\"RS256\"]\nprofile = \"wlcg\"\njwks_file = \"{}\"\n",
        s(&trust),
        s(&state.join("grid-mapfile")),
        s(&state.join("token-mapfile")),
        s(&state.join("suspended")),
        s(&state.join("keys")),
        s(&host_key),
        s(&jwks),
    );
    std::fs::write(&config_path, text).map_err(e)?;
    let config = Config::load(&config_path).map_err(e)?;
    Ok(DevSetup {
        config,
        config_path,
        state: state.to_path_buf(),
        user,
        token_file,
        askpass,
    })
}

/// The commands a new user runs against the dev server.
pub fn instructions(d: &DevSetup, listen: &str) -> String {
    let (host, port) = listen.rsplit_once(':').unwrap_or(("127.0.0.1", "2222"));
    format!(
        "sshd-gsi --dev: state in {state}, config {config}\n\
         \n\
         Log in with your dev certificate (RFC 6187; needs pip install 'asyncssh[pyOpenSSL]'):\n\
         \n  python3 {state}/ssh-x509.py -p {port} --key {state}/user.key --cert {state}/user.pem {user}@{host} id\n\
         \n\
         or with an RFC 3820 proxy of it (Debian: globus-proxy-utils):\n\
         \n  X509_CERT_DIR={state}/certificates grid-proxy-init -rfc -cert {state}/user.pem -key {state}/user.key -out {state}/x509up\n  \
         X509_USER_PROXY={state}/x509up python3 {state}/ssh-x509.py -p {port} {user}@{host} 'echo $HPCCERT_DN'\n\
         \n\
         Log in with the dev access token ({len} bytes), stock OpenSSH, through the askpass helper:\n\
         \n  SSH_ASKPASS={askpass} SSH_ASKPASS_REQUIRE=force BEARER_TOKEN_FILE={token} \\\n    \
         ssh -p {port} -o PreferredAuthentications=keyboard-interactive -o StrictHostKeyChecking=no \\\n    \
         -o UserKnownHostsFile=/dev/null {user}@{host} 'id; echo $HPCCERT_IDENTITY'\n\
         \n\
         Or give the token as the password (clients that only do passwords, e.g. paramiko):\n\
         \n  python3 -c 'import paramiko,sys; c=paramiko.SSHClient(); c.set_missing_host_key_policy(paramiko.AutoAddPolicy()); \
         c.connect(\"{host}\", {port}, \"{user}\", password=open(\"{token}\").read().strip(), allow_agent=False, look_for_keys=False); \
         print(c.exec_command(\"id\")[1].read().decode())'\n\
         \n\
         Explain a decision:  gridmap-tool --config {config} explain --token {token}\n",
        state = d.state.display(),
        config = d.config_path.display(),
        askpass = d.askpass.display(),
        token = d.token_file.display(),
        len = std::fs::metadata(&d.token_file)
            .map(|m| m.len())
            .unwrap_or(0),
        user = d.user,
    )
}
