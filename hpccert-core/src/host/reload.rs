//! Files that reload themselves when they change on disk, keeping the last good version.
//!
//! [`Reloading`] holds a parsed value (a grid-mapfile, a trust store) and a fingerprint of
//! its source (size, mtime, inode, ctime of the file, or of every entry of a directory).
//! [`Reloading::current`] re-checks the fingerprint at most once per `check_interval`;
//! when it changed, the source is parsed again. A source that no longer parses is logged and
//! the last good value stays in service: a broken edit never replaces a good file.

use std::fmt::Display;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Loader<T> = Box<dyn Fn(&Path) -> Result<T, String> + Send + Sync>;
pub(crate) type Fingerprint = Vec<(PathBuf, u64, i64, i64, u64, i64, i64)>;

fn stat(path: &Path) -> Option<(u64, i64, i64, u64, i64, i64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ino(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

/// Fingerprint of a file, or of a directory and everything directly in it.
pub(crate) fn fingerprint(path: &Path) -> Fingerprint {
    let mut out = Vec::new();
    let mut push = |p: &Path| {
        if let Some((len, mtime, nsec, ino, ctime, ctime_nsec)) = stat(p) {
            out.push((p.to_path_buf(), len, mtime, nsec, ino, ctime, ctime_nsec));
        }
    };
    push(path);
    if path.is_dir()
        && let Ok(rd) = std::fs::read_dir(path)
    {
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            push(&e);
        }
    }
    out
}

struct State<T> {
    value: Arc<T>,
    fingerprint: Fingerprint,
    checked: Instant,
    last_error: Option<String>,
}

/// A value loaded from a path, reloaded when the path changes.
pub struct Reloading<T> {
    path: PathBuf,
    loader: Loader<T>,
    check_interval: Duration,
    state: Mutex<State<T>>,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Load `path` now; an error here is returned (there is no last good value yet).
    pub fn open<E: Display>(
        path: &Path,
        check_interval: Duration,
        loader: impl Fn(&Path) -> Result<T, E> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let loader: Loader<T> = Box::new(move |p| loader(p).map_err(|e| e.to_string()));
        let fingerprint = fingerprint(path);
        let value = loader(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            loader,
            check_interval,
            state: Mutex::new(State {
                value: Arc::new(value),
                fingerprint,
                checked: Instant::now(),
                last_error: None,
            }),
        })
    }

    /// The current value, reloaded first if the source changed.
    pub fn current(&self) -> Arc<T> {
        let Ok(mut state) = self.state.lock() else {
            // a poisoned lock means a loader panicked; the old value is still intact
            return self
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .value
                .clone();
        };
        if state.checked.elapsed() >= self.check_interval {
            state.checked = Instant::now();
            let now = fingerprint(&self.path);
            if now != state.fingerprint {
                match (self.loader)(&self.path) {
                    Ok(value) => {
                        tracing::info!(target: "hpccert::reload", path = %self.path.display(), "reloaded");
                        state.value = Arc::new(value);
                        state.last_error = None;
                    }
                    Err(e) => {
                        tracing::error!(
                            target: "hpccert::reload",
                            path = %self.path.display(),
                            "changed file is unusable, keeping the last good version: {e}"
                        );
                        state.last_error = Some(e);
                    }
                }
                state.fingerprint = now;
            }
        }
        state.value.clone()
    }

    /// The error of the last failed reload, if the newest version on disk is unusable.
    pub fn last_error(&self) -> Option<String> {
        self.state.lock().ok().and_then(|s| s.last_error.clone())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::dn::DistinguishedName;
    use crate::identity::gridmap::GridMapfile;

    #[test]
    fn reloads_on_change_and_keeps_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("grid-mapfile");
        std::fs::write(&f, "\"/O=Grid/CN=a\" alice\n").unwrap();
        let map = Reloading::open(&f, Duration::ZERO, GridMapfile::load).unwrap();
        let a = DistinguishedName::parse("/O=Grid/CN=a").unwrap();
        let b = DistinguishedName::parse("/O=Grid/CN=b").unwrap();
        assert!(map.current().lookup(&a).is_some());

        crate::host::atomic_file::write_atomic(
            &f,
            b"\"/O=Grid/CN=a\" alice\n\"/O=Grid/CN=b\" bob\n",
        )
        .unwrap();
        assert!(map.current().lookup(&b).is_some());
        assert!(map.last_error().is_none());

        // a broken edit: the last good map stays in service
        crate::host::atomic_file::write_atomic(&f, b"\"/O=Grid/CN=a alice\n").unwrap();
        let current = map.current();
        assert!(current.lookup(&a).is_some() && current.lookup(&b).is_some());
        assert!(
            map.last_error().unwrap().contains("line 1"),
            "{:?}",
            map.last_error()
        );
    }
}
