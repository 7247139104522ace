//! The token in the session (`[sshd] session_token`): after a token login, the bearer token is
//! written to a file only the account can read, and the session finds it through
//! `BEARER_TOKEN_FILE`, where WLCG tools (and HTCondor jobs, as credmon hands them theirs) look.
//!
//! Layout: `[sshd] session_token_dir` (root's, 0711) holds one directory per login, made by
//! root with a random name, mode 0700; the file `token` (0600) is written in it with
//! `O_CREAT | O_EXCL | O_NOFOLLOW`, then the file and the directory are given to the account.
//! Until then the account cannot reach either, so it can plant no link or file to be written
//! through. The sessions of a login share the file; it is removed with its directory when the
//! last of them ends. The token is never logged and never in argv.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use crate::spawn::Account;

/// A login's token file; removed when dropped (the last session of the login ended).
#[derive(Debug)]
pub struct SessionToken {
    dir: PathBuf,
    file: PathBuf,
}

impl SessionToken {
    /// Write `token` for `account` under `parent`.
    pub fn create(parent: &Path, account: &Account, token: &str) -> Result<Self, String> {
        let err = |what: &str, e: std::io::Error| format!("session token: {what}: {e}");
        if !parent.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(parent)
                .map_err(|e| err(&parent.display().to_string(), e))?;
        }
        let mut name = [0u8; 12];
        openssl::rand::rand_bytes(&mut name).map_err(|e| format!("session token: {e}"))?;
        let name: String = name.iter().map(|b| format!("{b:02x}")).collect();
        let dir = parent.join(format!("{}-{name}", account.name));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| err(&dir.display().to_string(), e))?;
        let file = dir.join("token");
        let made = Self { dir, file };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&made.file)
            .map_err(|e| err(&made.file.display().to_string(), e))?;
        f.write_all(token.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| err(&made.file.display().to_string(), e))?;
        let owner = (Some(account.uid), Some(account.gid));
        nix::unistd::fchown(&f, owner.0, owner.1)
            .map_err(|e| format!("session token: chown {}: {e}", made.file.display()))?;
        nix::unistd::chown(&made.dir, owner.0, owner.1)
            .map_err(|e| format!("session token: chown {}: {e}", made.dir.display()))?;
        Ok(made)
    }

    /// The file, for `BEARER_TOKEN_FILE`.
    pub fn path(&self) -> &Path {
        &self.file
    }
}

impl Drop for SessionToken {
    fn drop(&mut self) {
        // the account owns the directory and may have added files to it: remove it whole
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(target: "sshd_gsi::session", "session token {}: not removed: {e}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn the_file_is_the_accounts_alone_and_goes_with_the_last_holder() {
        let parent = tempfile::tempdir().unwrap();
        let me = Account::lookup(
            &nix::unistd::User::from_uid(nix::unistd::getuid())
                .unwrap()
                .unwrap()
                .name,
        )
        .unwrap();
        let t = std::sync::Arc::new(
            SessionToken::create(&parent.path().join("tokens"), &me, "tok.en").unwrap(),
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
}
