//! The issuer key cache on disk, shared by every component.
//!
//! One file per issuer in the cache directory (default `/var/cache/hpccert/issuer-keys`),
//! named by the SHA-256 of the issuer URL, holding the issuer, where the keys came from, when
//! they were fetched, and the JWKS document itself. Files are written atomically by
//! `gridmap-tool keys refresh` or a daemon; readers (the PAM module, gridmap-tool) never
//! fetch. A file that is not owned by root (or the reading user) or that others can write is
//! refused: keys decide who logs in.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{IssuerKeys, IssuerPolicy, KeySet, KeySource, TokenError};

/// Default cache directory.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/hpccert/issuer-keys";

/// The content of one cache file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachedKeys {
    pub issuer: String,
    /// The JWKS URL the keys were fetched from.
    pub source: String,
    /// Unix seconds of the last successful fetch.
    pub fetched_at: i64,
    pub jwks: serde_json::Value,
}

/// The cache file for `issuer` in `dir`.
pub fn cache_file(dir: &Path, issuer: &str) -> PathBuf {
    let digest = openssl::sha::sha256(issuer.as_bytes());
    let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{name}.json"))
}

/// Refuse files that someone other than root or us could have written.
fn check_owner(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    let uid = meta.uid();
    let me = nix::unistd::geteuid().as_raw();
    if uid != 0 && uid != me {
        return Err(format!(
            "{} is owned by uid {uid}, not root",
            path.display()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (mode {:o})",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// Read and parse a JWKS file after the ownership check.
pub fn read_jwks_file(path: &Path) -> Result<KeySet, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    check_owner(path, &meta)?;
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    KeySet::from_jwks(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Read the cached keys of `issuer`.
pub fn read_cached(dir: &Path, issuer: &str) -> Result<(CachedKeys, KeySet), String> {
    let path = cache_file(dir, issuer);
    let meta = std::fs::metadata(&path)
        .map_err(|e| format!("no cached keys ({}: {e})", path.display()))?;
    check_owner(&path, &meta)?;
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let cached: CachedKeys = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: not a key cache file: {e}", path.display()))?;
    if cached.issuer != issuer {
        return Err(format!(
            "{} holds keys of {}, not {issuer}",
            path.display(),
            cached.issuer
        ));
    }
    let jwks = serde_json::to_vec(&cached.jwks).map_err(|e| e.to_string())?;
    let set = KeySet::from_jwks(&jwks).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((cached, set))
}

/// Write the cache file of `cached.issuer` atomically (mode 0644: public keys).
pub fn write_cached(dir: &Path, cached: &CachedKeys) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = cache_file(dir, &cached.issuer);
    let body = serde_json::to_vec_pretty(cached).map_err(std::io::Error::other)?;
    let _lock = crate::host::atomic_file::WriteLock::acquire(&path)?;
    crate::host::atomic_file::write_atomic(&path, &body)?;
    Ok(path)
}

/// One cache file as `keys show` lists it: its path and its content, or why it is unusable.
#[derive(Debug)]
pub struct CacheListing {
    pub path: PathBuf,
    pub content: Result<(CachedKeys, KeySet), String>,
}

/// Every cache file in `dir` (for `keys show`): the parsed content or the error.
pub fn list_cached(dir: &Path) -> Vec<CacheListing> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    for p in paths {
        let parsed = std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<CachedKeys>(&b).map_err(|e| e.to_string()))
            .and_then(|c| read_cached(dir, &c.issuer));
        out.push(CacheListing {
            path: p,
            content: parsed,
        });
    }
    out
}

/// What identifies one version of a file: an atomic replace changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    mtime: i64,
    mtime_nsec: i64,
    ino: u64,
}

/// Keys from files only: the cache directory, or a JWKS file configured for an issuer.
/// Parsed keys are kept for the life of the process while the file is unchanged.
#[derive(Debug, Default)]
pub struct FileKeySource {
    cache_dir: PathBuf,
    jwks_files: HashMap<String, PathBuf>,
    memo: Mutex<HashMap<String, (FileStamp, IssuerKeys)>>,
}

impl FileKeySource {
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            cache_dir: cache_dir.to_path_buf(),
            ..Self::default()
        }
    }

    /// Use a fixed JWKS file for `issuer` instead of the cache (keys never go stale).
    pub fn with_jwks_file(mut self, issuer: &str, file: &Path) -> Self {
        self.jwks_files
            .insert(issuer.to_string(), file.to_path_buf());
        self
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    fn stamp(path: &Path) -> Option<FileStamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ino: m.ino(),
        })
    }

    fn load(&self, issuer: &str) -> Result<IssuerKeys, String> {
        if let Some(file) = self.jwks_files.get(issuer) {
            return read_jwks_file(file).map(|k| IssuerKeys {
                keys: Arc::new(k),
                fetched_at: None,
            });
        }
        read_cached(&self.cache_dir, issuer).map(|(c, k)| IssuerKeys {
            keys: Arc::new(k),
            fetched_at: Some(c.fetched_at),
        })
    }
}

impl KeySource for FileKeySource {
    fn keys(&self, policy: &IssuerPolicy, _now: i64) -> Result<IssuerKeys, TokenError> {
        let path = self
            .jwks_files
            .get(&policy.issuer)
            .cloned()
            .unwrap_or_else(|| cache_file(&self.cache_dir, &policy.issuer));
        let stamp = Self::stamp(&path);
        if let (Some(stamp), Ok(memo)) = (stamp, self.memo.lock())
            && let Some((s, keys)) = memo.get(&policy.issuer)
            && *s == stamp
        {
            return Ok(keys.clone());
        }
        let keys = self
            .load(&policy.issuer)
            .map_err(|reason| TokenError::NoKeys {
                issuer: policy.issuer.clone(),
                reason,
            })?;
        if let (Some(stamp), Ok(mut memo)) = (stamp, self.memo.lock()) {
            memo.insert(policy.issuer.clone(), (stamp, keys.clone()));
        }
        Ok(keys)
    }
}

/// Keys held in memory (tests, benchmarks, the Wycheproof harness).
#[derive(Debug, Default)]
pub struct MemoryKeySource {
    keys: HashMap<String, IssuerKeys>,
}

impl MemoryKeySource {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&mut self, issuer: &str, keys: KeySet, fetched_at: Option<i64>) {
        self.keys.insert(
            issuer.to_string(),
            IssuerKeys {
                keys: Arc::new(keys),
                fetched_at,
            },
        );
    }
}

impl KeySource for MemoryKeySource {
    fn keys(&self, policy: &IssuerPolicy, _now: i64) -> Result<IssuerKeys, TokenError> {
        self.keys
            .get(&policy.issuer)
            .cloned()
            .ok_or_else(|| TokenError::NoKeys {
                issuer: policy.issuer.clone(),
                reason: "no keys configured".into(),
            })
    }
}
