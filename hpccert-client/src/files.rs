//! Files only their owner reads: written atomically (a temporary file in the same directory,
//! then rename), mode 0600 in a directory made 0700; secrets read only from such files.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

/// Create `dir` (and its parents) readable only by its owner when it does not exist.
pub fn private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Write `data` to `path` atomically, mode 0600.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("{} has no directory", path.display()))?;
    private_dir(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".hpccert-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    // tempfile creates its files 0600
    tmp.write_all(data)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| anyhow!("cannot write {}: {}", path.display(), e.error))?;
    Ok(())
}

/// Write `data` to `path` atomically with the given mode (public keys and certificates).
pub fn write_mode(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    write_private(path, data)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    Ok(())
}

/// Read a secret (client secret, private key) from a file that neither its group nor others
/// can read: a secret others can read is no longer a secret, and is refused.
pub fn read_secret(path: &Path, what: &str) -> Result<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path).with_context(|| format!("{what} {}", path.display()))?;
        if meta.mode() & 0o077 != 0 {
            bail!(
                "{what} {} can be read by others (mode {:o}): chmod 600 {0} first",
                path.display(),
                meta.mode() & 0o777
            );
        }
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    Ok(text.trim().to_string())
}

/// Remove `path` if it exists.
pub fn remove(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn private_files_and_directories() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a/b/secret");
        write_private(&f, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&f), 0o600);
        assert_eq!(mode(&d.path().join("a/b")), 0o700);
        assert_eq!(read_secret(&f, "secret").unwrap(), "x");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_secret(&f, "client secret").unwrap_err().to_string();
        assert!(e.contains("can be read by others (mode 640)"), "{e}");
    }
}
