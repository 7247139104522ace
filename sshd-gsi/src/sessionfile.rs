//! Credentials handed to the session as files only the account can read:
//!
//! * the token (`[sshd] session_token`): after a token login, the bearer token in the file
//!   `token`, named by `BEARER_TOKEN_FILE`, where WLCG tools (and HTCondor jobs, as credmon
//!   hands them theirs) look;
//! * the proxy (`[sshd] x509_proxy_handover`): after an X.509 login, the proxy the client handed
//!   over (checked by `hpccert_core::trust::proxyfile`) in the file `x509up`, named by
//!   `X509_USER_PROXY`, where Globus and other grid tools look.
//!
//! Layout: `[sshd] session_token_dir` (root's, 0711) holds one directory per credential handed,
//! made by root with a random name, mode 0700; the file (0600) is written in it with
//! `O_CREAT | O_EXCL | O_NOFOLLOW`, then the file and the directory are given to the account.
//! Until then the account cannot reach either, so it can plant no link or file to be written
//! through. The sessions of a login that hold the same credential share the file; it is removed
//! with its directory when the last of them ends. The content is never logged and never in
//! argv.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::spawn::Account;

/// Which credential a session file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The bearer token of a token login (`BEARER_TOKEN_FILE`).
    Token,
    /// The proxy an X.509 login handed over (`X509_USER_PROXY`).
    Proxy,
}

impl Kind {
    /// The file's name in its directory.
    fn file_name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Proxy => "x509up",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Token => "session token",
            Self::Proxy => "session proxy",
        })
    }
}

/// A credential's file for the sessions of a login; removed when dropped (the last session
/// that held it ended).
#[derive(Debug)]
pub struct SessionFile {
    kind: Kind,
    dir: PathBuf,
    file: PathBuf,
}

impl SessionFile {
    /// Write `content` for `account` under `parent`.
    pub fn create(
        parent: &Path,
        account: &Account,
        kind: Kind,
        content: &[u8],
    ) -> Result<Self, String> {
        let err = |what: &str, e: std::io::Error| format!("{kind}: {what}: {e}");
        if !parent.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(parent)
                .map_err(|e| err(&parent.display().to_string(), e))?;
        }
        let mut name = [0u8; 12];
        openssl::rand::rand_bytes(&mut name).map_err(|e| format!("{kind}: {e}"))?;
        let name: String = name.iter().map(|b| format!("{b:02x}")).collect();
        let dir = parent.join(format!("{}-{name}", account.name));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| err(&dir.display().to_string(), e))?;
        let file = dir.join(kind.file_name());
        let made = Self { kind, dir, file };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&made.file)
            .map_err(|e| err(&made.file.display().to_string(), e))?;
        f.write_all(content)
            .and_then(|()| f.sync_all())
            .map_err(|e| err(&made.file.display().to_string(), e))?;
        let owner = (Some(account.uid), Some(account.gid));
        nix::unistd::fchown(&f, owner.0, owner.1)
            .map_err(|e| format!("{kind}: chown {}: {e}", made.file.display()))?;
        nix::unistd::chown(&made.dir, owner.0, owner.1)
            .map_err(|e| format!("{kind}: chown {}: {e}", made.dir.display()))?;
        Ok(made)
    }

    /// The file, for `BEARER_TOKEN_FILE` or `X509_USER_PROXY`.
    pub fn path(&self) -> &Path {
        &self.file
    }
}

impl Drop for SessionFile {
    fn drop(&mut self) {
        // the account owns the directory and may have added files to it: remove it whole
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(target: "sshd_gsi::session", "{} {}: not removed: {e}", self.kind, self.dir.display());
        }
    }
}

/// The credential files a session holds: the login's token (`BEARER_TOKEN_FILE`),
/// the proxy its client handed over (`X509_USER_PROXY`). The session holds them: the last
/// session holding a file removes it when it ends.
#[derive(Debug)]
pub struct SessionFiles {
    token: Option<Arc<SessionFile>>,
    proxy: Option<Arc<SessionFile>>,
}

impl SessionFiles {
    pub fn new(token: Option<Arc<SessionFile>>, proxy: Option<Arc<SessionFile>>) -> Self {
        Self { token, proxy }
    }

    /// The variables naming the files.
    pub fn environment(&self) -> impl Iterator<Item = (&'static str, &Path)> {
        [
            ("BEARER_TOKEN_FILE", self.token.as_deref()),
            ("X509_USER_PROXY", self.proxy.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, f)| f.map(|f| (k, f.path())))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    /// The account running the tests.
    fn me() -> Account {
        let name = nix::unistd::User::from_uid(nix::unistd::getuid())
            .unwrap()
            .unwrap()
            .name;
        Account::lookup(&name).unwrap()
    }

    #[test]
    fn the_file_is_the_accounts_alone_and_goes_with_the_last_holder() {
        let parent = tempfile::tempdir().unwrap();
        let me = me();
        let t = std::sync::Arc::new(
            SessionFile::create(&parent.path().join("tokens"), &me, Kind::Token, b"tok.en")
                .unwrap(),
        );
        let meta = std::fs::metadata(t.path()).unwrap();
        assert_eq!((meta.mode() & 0o777, meta.uid()), (0o600, me.uid.as_raw()));
        let dir = std::fs::metadata(t.path().parent().unwrap()).unwrap();
        assert_eq!(dir.mode() & 0o777, 0o700);
        assert_eq!(std::fs::read_to_string(t.path()).unwrap(), "tok.en");
        let second = std::sync::Arc::clone(&t);
        let path = t.path().to_path_buf();
        drop(t);
        assert!(path.exists(), "another session still holds it");
        drop(second);
        assert!(!path.exists() && !path.parent().unwrap().exists());
    }

    #[test]
    fn the_session_finds_each_file_under_its_variable() {
        let parent = tempfile::tempdir().unwrap();
        let me = me();
        let proxy = Arc::new(SessionFile::create(parent.path(), &me, Kind::Proxy, b"pem").unwrap());
        assert!(proxy.path().ends_with("x509up"));
        let files = SessionFiles::new(None, Some(Arc::clone(&proxy)));
        let env: Vec<_> = files.environment().collect();
        assert_eq!(env, [("X509_USER_PROXY", proxy.path())]);
    }
}
