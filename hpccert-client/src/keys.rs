//! The site's key pair (`~/.ssh/hpccert/SITE`, 0600 in a 0700 directory), its certificate
//! beside it (`SITE-cert.pub`), and the ssh-agent: the key and certificate are added with a
//! lifetime equal to the certificate's remaining validity (`ssh-add -t`).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};

use crate::files;

/// The public key of the site's key pair, made when there is none.
pub fn ensure_key(key: &Path, public: &Path, comment: &str) -> Result<String> {
    if key.is_file() {
        let text = std::fs::read_to_string(key)
            .with_context(|| format!("cannot read {}", key.display()))?;
        let private = ssh_key::PrivateKey::from_openssh(&text)
            .with_context(|| format!("{} is not an OpenSSH private key", key.display()))?;
        return private.public_key().to_openssh().context("the public key");
    }
    let (private, made) = hpccert_core::trust::sshca::generate_user_key(comment)?;
    files::write_private(key, private.as_bytes())?;
    let text = made.to_openssh().context("the public key")?;
    files::write_mode(public, format!("{text}\n").as_bytes(), 0o644)?;
    Ok(text)
}

/// What a certificate file says.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub principals: Vec<String>,
    pub key_id: String,
    pub valid_before: u64,
    pub serial: u64,
}

impl CertInfo {
    pub fn read(path: &Path) -> Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let cert = ssh_key::Certificate::from_openssh(text.trim())
            .with_context(|| format!("{} is not an OpenSSH certificate", path.display()))?;
        Ok(Some(Self {
            principals: cert.valid_principals().to_vec(),
            key_id: cert.key_id().to_string(),
            valid_before: cert.valid_before(),
            serial: cert.serial(),
        }))
    }

    /// Seconds of validity left at `now` (0 when expired).
    pub fn remaining(&self, now: u64) -> u64 {
        self.valid_before.saturating_sub(now)
    }
}

/// Whether an ssh-agent is reachable.
pub fn agent_running() -> bool {
    std::env::var_os("SSH_AUTH_SOCK").is_some_and(|s| !s.is_empty())
}

/// Add the key (and the certificate beside it, which ssh-add loads with it) to the agent for
/// `seconds`, replacing what the agent held of it.
pub fn add_to_agent(key: &Path, seconds: u64) -> Result<()> {
    let _ = remove_from_agent(key);
    let out = Command::new("ssh-add")
        .arg("-q")
        .arg("-t")
        .arg(seconds.max(1).to_string())
        .arg(key)
        .stdin(Stdio::null())
        .output()
        .context("ssh-add (OpenSSH's client) is not installed")?;
    if !out.status.success() {
        bail!(
            "ssh-add could not add {}: {}",
            key.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Remove the key and its certificate from the agent.
pub fn remove_from_agent(key: &Path) -> Result<()> {
    let out = Command::new("ssh-add")
        .arg("-q")
        .arg("-d")
        .arg(key)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow!("ssh-add: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_key_pair_is_made_once_and_kept_private() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("ssh/hpccert/site");
        let public = d.path().join("ssh/hpccert/site.pub");
        let first = ensure_key(&key, &public, "me").unwrap();
        assert!(first.starts_with("ssh-ed25519 "), "{first}");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&public), 0o644);
        assert_eq!(mode(key.parent().unwrap()), 0o700);
        assert_eq!(ensure_key(&key, &public, "me").unwrap(), first, "reused");
    }
}
