//! Confining a token session's sftp server to the token's `storage.*` paths, with the Landlock
//! LSM (the `landlock` crate): the session process may read (and, for write scopes, write)
//! only below those paths, and read and execute only the programs and libraries it runs.
//!
//! Why this holds where a path check would not: Landlock decides on the file the kernel
//! actually reaches, after every symlink and `..` is resolved, at each open; a symlink planted
//! below an allowed path that points elsewhere reaches a file outside the allowed hierarchies
//! and is refused, and `..` out of an allowed directory is refused the same way. The rules are
//! made before the process runs anything of the user's (in the server or PAM helper, as root)
//! and applied in the child after the privilege drop, with `no_new_privs`; they are inherited
//! by everything the process starts and cannot be lifted. A kernel without Landlock (or a
//! ruleset that cannot be applied fully) refuses the session: never an unconfined one.
//!
//! Shared by sshd-gsi and its PAM helper (`#[path]`): both may start the session process.
#![allow(unsafe_code)] // the pre-exec hook is FFI by nature; the block says why it is sound

use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr,
};
use serde::{Deserialize, Serialize};

/// The Landlock ABI the rules are written for (truncate needs V3).
const ABI_USED: ABI = ABI::V3;

/// What the session process may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// Read-only below these.
    pub read: Vec<PathBuf>,
    /// Read and write below these.
    pub write: Vec<PathBuf>,
    /// Programs and libraries: read and execute only (the shell, sftp-server, their
    /// libraries and the loader's cache).
    pub runtime: Vec<PathBuf>,
}

impl Confinement {
    /// The rules for `read` and `write` paths, with what `programs` need to run.
    pub fn new(read: &[PathBuf], write: &[PathBuf], programs: &[&Path]) -> Self {
        // the loader's cache, and what a user lookup reads (sftp-server refuses to run when
        // getpwuid finds nobody): the account database and the NSS modules, with the NSS
        // cache of hpccert's own module
        let mut runtime: Vec<PathBuf> = [
            "/etc/ld.so.cache",
            "/etc/passwd",
            "/etc/group",
            "/etc/nsswitch.conf",
            "/var/lib/hpccert/nss",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        runtime.extend(nss_modules());
        for p in programs {
            for f in cached_runtime_files(p) {
                if !runtime.contains(&f) {
                    runtime.push(f);
                }
            }
        }
        Self {
            read: read.to_vec(),
            write: write.to_vec(),
            runtime,
        }
    }

    /// The Landlock ruleset, ready for [`restrict_in_child`]. Paths that do not exist are left
    /// out (nothing there to allow).
    pub fn ruleset(&self) -> Result<RulesetCreated, String> {
        let e = |e: landlock::RulesetError| format!("Landlock: {e}");
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(ABI_USED))
            .map_err(e)?
            .create()
            .map_err(e)?;
        let file_rights = AccessFs::ReadFile | AccessFs::Execute;
        let add = |ruleset: RulesetCreated,
                   path: &Path,
                   dir_rights: landlock::BitFlags<AccessFs>|
         -> Result<RulesetCreated, String> {
            let Ok(meta) = std::fs::metadata(path) else {
                return Ok(ruleset);
            };
            let rights = if meta.is_dir() {
                dir_rights
            } else {
                dir_rights & AccessFs::from_file(ABI_USED)
            };
            let fd = PathFd::new(path).map_err(|err| format!("{}: {err}", path.display()))?;
            ruleset
                .add_rule(PathBeneath::new(fd, rights))
                .map_err(|err| format!("Landlock rule for {}: {err}", path.display()))
        };
        for p in &self.runtime {
            ruleset = add(ruleset, p, file_rights)?;
        }
        // sftp-server (as sshd's children) opens /dev/null for its standard descriptors
        ruleset = add(
            ruleset,
            Path::new("/dev/null"),
            AccessFs::ReadFile | AccessFs::WriteFile,
        )?;
        for p in &self.read {
            ruleset = add(ruleset, p, AccessFs::from_read(ABI_USED))?;
        }
        for p in &self.write {
            ruleset = add(
                ruleset,
                p,
                AccessFs::from_read(ABI_USED) | AccessFs::from_write(ABI_USED),
            )?;
        }
        Ok(ruleset)
    }
}

/// Restrict the calling process (the forked child, after the privilege drop) with `ruleset`:
/// `no_new_privs`, then `landlock_restrict_self`. No allocation on success.
pub fn restrict_in_child(ruleset: RulesetCreated) -> std::io::Result<()> {
    match ruleset.restrict_self() {
        Ok(status) if status.ruleset == landlock::RulesetStatus::FullyEnforced => Ok(()),
        Ok(_) => Err(std::io::Error::other(
            "Landlock could not enforce the rules",
        )),
        Err(_) => Err(std::io::Error::other("Landlock could not be applied")),
    }
}

/// Register the confinement on `cmd` (after its privilege drop: pre_exec hooks run in order).
pub fn apply(cmd: &mut std::process::Command, confinement: &Confinement) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let mut ruleset = Some(confinement.ruleset()?);
    // SAFETY: runs in the forked child before exec; restrict_self makes two system calls
    // (prctl and landlock_restrict_self) on the ruleset fd made before the fork.
    unsafe {
        cmd.pre_exec(move || match ruleset.take() {
            Some(r) => restrict_in_child(r),
            None => Err(std::io::Error::other("the confinement was already used")),
        });
    }
    Ok(())
}

/// The NSS modules glibc may load for a user lookup (`libnss_*.so.2` in the library
/// directories).
fn nss_modules() -> Vec<PathBuf> {
    // read once per process: NSS modules are installed with the packages that need them,
    // before the server (re)starts
    static FOUND: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    FOUND.get_or_init(scan_nss_modules).clone()
}

fn scan_nss_modules() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib64",
    ] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("libnss_") && name.ends_with(".so.2") {
                let p = std::fs::canonicalize(e.path()).unwrap_or_else(|_| e.path());
                if !found.contains(&p) {
                    found.push(p);
                }
            }
        }
    }
    found
}

/// [`runtime_files`] of `program`, run once per program and its modification time (a limited
/// sftp session starts `ldd` only when the shell or sftp-server changed since the last one).
fn cached_runtime_files(program: &Path) -> Vec<PathBuf> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::SystemTime;
    type Cache = HashMap<PathBuf, (Option<SystemTime>, Vec<PathBuf>)>;
    static CACHE: std::sync::OnceLock<Mutex<Cache>> = std::sync::OnceLock::new();
    let modified = std::fs::metadata(program).and_then(|m| m.modified()).ok();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some((when, files)) = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(program)
        && *when == modified
    {
        return files.clone();
    }
    let files = runtime_files(program);
    cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(program.to_path_buf(), (modified, files.clone()));
    files
}

/// `program`, its ELF interpreter and shared libraries (from `ldd`); just the program when
/// `ldd` does not list them (a static binary).
fn runtime_files(program: &Path) -> Vec<PathBuf> {
    let mut files = vec![std::fs::canonicalize(program).unwrap_or_else(|_| program.to_path_buf())];
    if let Ok(out) = std::process::Command::new("ldd")
        .arg(program)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                let p = PathBuf::from(p);
                files.push(std::fs::canonicalize(&p).unwrap_or(p));
            }
        }
    }
    files
}
