//! libnss_hpccert.so.2: the `hpccert` NSS service, the passwd and group databases (by name, by
//! id, enumeration) for pool accounts and portal-managed accounts. A thin shell over
//! [`hpccert_core::host::nsscache`], which parses and checks the cache files that `gridmap-tool` and
//! the portal write atomically (`/var/lib/hpccert/nss/passwd` and `group`). The module opens no
//! socket, starts no runtime and writes nothing; a file is parsed once per process and again
//! only when it is replaced. `nsswitch.conf`: `passwd: files hpccert`, `group: files hpccert`.
//!
//! Answers: a found entry is `NSS_STATUS_SUCCESS`; an unknown name or id `NSS_STATUS_NOTFOUND`;
//! a missing, unreadable, truncated or invalid cache file `NSS_STATUS_UNAVAIL` (never a partial
//! answer); a buffer that is too small `NSS_STATUS_TRYAGAIN` with `ERANGE` (glibc retries with a
//! larger one). Every entry point catches panics, which become `NSS_STATUS_UNAVAIL`. A refused
//! cache file is logged to syslog (authpriv, error) once per version of the file, with the
//! reason (line numbers for bad entries); a missing file is not logged.
//!
//! # The cache directory
//! The directory is fixed at `/var/lib/hpccert/nss`. For tests (nss_wrapper) the environment
//! variable `HPCCERT_NSS_DIR` (an absolute path) replaces it, but only in a process that is not
//! running with elevated privileges: the kernel did not mark it `AT_SECURE` (no setuid/setgid
//! exec, no file capabilities) and its real and effective uids and gids are equal. That is the
//! rule the dynamic loader applies to `LD_PRELOAD` and `LD_LIBRARY_PATH`: whoever can set the
//! variable can already load code into that process, so the override gives them nothing more,
//! while a user cannot redirect the account lookups of `su`, `sudo`, `passwd` or any other
//! setuid program. The choice is made once per process.
//!
//! This crate is the FFI edge between glibc's NSS and Rust: being called with C structs and
//! buffers cannot be done without `unsafe`. The workspace denies `unsafe_code`; this crate root
//! allows it, and every block carries a `// SAFETY:` comment. The entry points and the buffer
//! packing are the crate's own rather than the `libnss` crate's macros, whose current release
//! misaligns `gr_mem` and can panic inside `extern "C"` functions (docs/ARCHITECTURE.md,
//! "Foreign interfaces").
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod buffer;

use std::ffi::{CStr, CString, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use hpccert_core::host::nsscache::{
    CacheTable, CachedTable, DEFAULT_DIR, GroupEntry, GroupTable, NssCacheError, PasswdEntry,
    PasswdTable,
};
use libc::{gid_t, group, passwd, size_t, uid_t};

use crate::buffer::{Buffer, PackError};

/// The test-only override of the cache directory (see the crate documentation).
pub const DIR_OVERRIDE_VAR: &str = "HPCCERT_NSS_DIR";

// glibc's `enum nss_status` (nss.h)
const NSS_STATUS_TRYAGAIN: c_int = -2;
const NSS_STATUS_UNAVAIL: c_int = -1;
const NSS_STATUS_NOTFOUND: c_int = 0;
const NSS_STATUS_SUCCESS: c_int = 1;

/// What one call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Found,
    NotFound,
    Unavailable,
    BufferTooSmall,
}

impl From<PackError> for Answer {
    fn from(e: PackError) -> Self {
        match e {
            PackError::TooSmall => Self::BufferTooSmall,
            PackError::Invalid => Self::Unavailable,
        }
    }
}

/// Run `call`, catch a panic, set `*errnop` and return glibc's status.
fn answer(errnop: *mut c_int, call: impl FnOnce() -> Answer) -> c_int {
    let answer = catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|payload| {
        // dropping a panic payload may panic again: leak it (never in a working module)
        std::mem::forget(payload);
        Answer::Unavailable
    });
    let (status, errno) = match answer {
        Answer::Found => (NSS_STATUS_SUCCESS, None),
        Answer::NotFound => (NSS_STATUS_NOTFOUND, Some(libc::ENOENT)),
        Answer::Unavailable => (NSS_STATUS_UNAVAIL, Some(libc::ENOENT)),
        Answer::BufferTooSmall => (NSS_STATUS_TRYAGAIN, Some(libc::ERANGE)),
    };
    if let Some(errno) = errno
        && !errnop.is_null()
    {
        // SAFETY: glibc passes a valid pointer to the caller's errno slot (checked non-null).
        unsafe { *errnop = errno };
    }
    status
}

/// The cache directory of this process (see the crate documentation).
fn cache_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| dir_override().unwrap_or_else(|| PathBuf::from(DEFAULT_DIR)))
}

fn dir_override() -> Option<PathBuf> {
    // SAFETY: getauxval only reads the auxiliary vector the kernel gave this process.
    let secure = unsafe { libc::getauxval(libc::AT_SECURE) } != 0;
    // SAFETY: these calls take no arguments, cannot fail and touch no memory of ours.
    let unprivileged =
        unsafe { libc::getuid() == libc::geteuid() && libc::getgid() == libc::getegid() };
    if secure || !unprivileged {
        return None;
    }
    let dir = PathBuf::from(std::env::var_os(DIR_OVERRIDE_VAR)?);
    dir.is_absolute().then_some(dir)
}

/// Log a refused cache file to syslog (authpriv), once per version of the file.
fn report_refused(path: &Path, error: &NssCacheError) {
    let message = format!("nss_hpccert: {} refused: {error}", path.display()).replace('\0', " ");
    let Ok(message) = CString::new(message) else {
        return;
    };
    // SAFETY: a constant NUL-terminated format with one `%s` and a NUL-terminated argument.
    unsafe {
        libc::syslog(
            libc::LOG_AUTHPRIV | libc::LOG_ERR,
            c"%s".as_ptr(),
            message.as_ptr(),
        )
    };
}

fn passwd_cache() -> &'static CachedTable<PasswdTable> {
    static TABLE: OnceLock<CachedTable<PasswdTable>> = OnceLock::new();
    TABLE.get_or_init(|| CachedTable::with_report(cache_dir(), report_refused))
}

fn group_cache() -> &'static CachedTable<GroupTable> {
    static TABLE: OnceLock<CachedTable<GroupTable>> = OnceLock::new();
    TABLE.get_or_init(|| CachedTable::with_report(cache_dir(), report_refused))
}

/// A single lookup's answer: the entry written into glibc's buffers by `fill`, not found, or
/// unavailable (a missing or refused cache).
fn lookup<E>(
    found: Result<Option<E>, Arc<NssCacheError>>,
    fill: impl FnOnce(&E) -> Answer,
) -> Answer {
    match found {
        Ok(Some(entry)) => fill(&entry),
        Ok(None) => Answer::NotFound,
        Err(_) => Answer::Unavailable,
    }
}

/// The whole passwd table (enumeration).
fn passwd_table() -> Option<Arc<PasswdTable>> {
    passwd_cache().load().ok()
}

/// The whole group table (enumeration).
fn group_table() -> Option<Arc<GroupTable>> {
    group_cache().load().ok()
}

/// The position of a `set*ent` / `get*ent_r` / `end*ent` walk (glibc serialises these calls).
#[derive(Debug)]
struct Cursor<T> {
    table: Arc<T>,
    next: usize,
}

static PASSWD_WALK: Mutex<Option<Cursor<PasswdTable>>> = Mutex::new(None);
static GROUP_WALK: Mutex<Option<Cursor<GroupTable>>> = Mutex::new(None);

fn locked<T>(walk: &Mutex<Option<Cursor<T>>>) -> MutexGuard<'_, Option<Cursor<T>>> {
    // the cursor is replaced whole or advanced by one: a poisoned lock still holds a usable value
    walk.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Start a walk over a fresh view of the table.
fn start_walk<T: CacheTable>(
    walk: &Mutex<Option<Cursor<T>>>,
    load: fn() -> Option<Arc<T>>,
) -> Answer {
    let cursor = load().map(|table| Cursor { table, next: 0 });
    let ok = cursor.is_some();
    *locked(walk) = cursor;
    if ok {
        Answer::Found
    } else {
        Answer::Unavailable
    }
}

/// The next entry of a walk (starting one if `set*ent` was not called), packed by `fill`; the
/// cursor moves on only when the entry fitted into the caller's buffer.
fn next_in_walk<T: CacheTable, E>(
    walk: &Mutex<Option<Cursor<T>>>,
    load: fn() -> Option<Arc<T>>,
    entries: fn(&T) -> &[E],
    fill: impl FnOnce(&E) -> Answer,
) -> Answer {
    let mut guard = locked(walk);
    if guard.is_none() {
        let Some(table) = load() else {
            return Answer::Unavailable;
        };
        *guard = Some(Cursor { table, next: 0 });
    }
    let Some(cursor) = guard.as_mut() else {
        return Answer::Unavailable;
    };
    let Some(entry) = entries(&cursor.table).get(cursor.next) else {
        return Answer::NotFound;
    };
    let answer = fill(entry);
    if answer == Answer::Found {
        cursor.next += 1;
    }
    answer
}

/// Pack `entry` into `*result` and glibc's buffer.
///
/// # Safety
/// `result` is null or points to a writable `struct passwd`; `buffer` is null or valid for
/// writes of `buflen` bytes; both stay valid for the call and are not otherwise accessed.
unsafe fn fill_passwd(
    entry: &PasswdEntry,
    result: *mut passwd,
    buffer: *mut c_char,
    buflen: size_t,
) -> Answer {
    if result.is_null() {
        return Answer::Unavailable;
    }
    // SAFETY: by this function's contract.
    let Some(mut buf) = (unsafe { Buffer::from_raw(buffer, buflen) }) else {
        return Answer::Unavailable;
    };
    let packed = (|| {
        Ok::<_, PackError>((
            buf.put_str(entry.name.as_str())?,
            buf.put_str("x")?,
            buf.put_str(&entry.gecos)?,
            buf.put_str(&entry.dir)?,
            buf.put_str(&entry.shell)?,
        ))
    })();
    let (name, password, gecos, dir, shell) = match packed {
        Ok(p) => p,
        Err(e) => return e.into(),
    };
    // SAFETY: `result` is non-null and writable by this function's contract; the strings live in
    // the caller's buffer.
    unsafe {
        *result = passwd {
            pw_name: name,
            pw_passwd: password,
            pw_uid: entry.uid,
            pw_gid: entry.gid,
            pw_gecos: gecos,
            pw_dir: dir,
            pw_shell: shell,
        };
    }
    Answer::Found
}

/// Pack `entry` into `*result` and glibc's buffer.
///
/// # Safety
/// As for [`fill_passwd`], with a `struct group`.
unsafe fn fill_group(
    entry: &GroupEntry,
    result: *mut group,
    buffer: *mut c_char,
    buflen: size_t,
) -> Answer {
    if result.is_null() {
        return Answer::Unavailable;
    }
    // SAFETY: by this function's contract.
    let Some(mut buf) = (unsafe { Buffer::from_raw(buffer, buflen) }) else {
        return Answer::Unavailable;
    };
    let packed = (|| {
        let name = buf.put_str(entry.name.as_str())?;
        let password = buf.put_str("x")?;
        let members = entry
            .members
            .iter()
            .map(|m| buf.put_str(m.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let members = buf.put_ptr_array(&members)?;
        Ok::<_, PackError>((name, password, members))
    })();
    let (name, password, members) = match packed {
        Ok(p) => p,
        Err(e) => return e.into(),
    };
    // SAFETY: `result` is non-null and writable by this function's contract; the strings and
    // the member array live in the caller's buffer.
    unsafe {
        *result = group {
            gr_name: name,
            gr_passwd: password,
            gr_gid: entry.gid,
            gr_mem: members,
        };
    }
    Answer::Found
}

/// A name argument as UTF-8 (an account name is ASCII; anything else is not in the cache).
///
/// # Safety
/// `name` is null or a NUL-terminated string valid for the call.
unsafe fn name_arg<'a>(name: *const c_char) -> Option<&'a str> {
    if name.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated by the contract.
    unsafe { CStr::from_ptr(name) }.to_str().ok()
}

/// `getpwnam_r` for the `hpccert` service.
///
/// # Safety
/// Called by glibc (or nss_wrapper) with a NUL-terminated name, a writable `struct passwd`, a
/// buffer of `buflen` bytes and an errno slot.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _nss_hpccert_getpwnam_r(
    name: *const c_char,
    result: *mut passwd,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    answer(errnop, || {
        // SAFETY: glibc's name argument.
        let Some(name) = (unsafe { name_arg(name) }) else {
            return Answer::NotFound;
        };
        lookup(passwd_cache().find_name(name), |entry| {
            // SAFETY: glibc's result and buffer, valid for this call.
            unsafe { fill_passwd(entry, result, buffer, buflen) }
        })
    })
}

/// `getpwuid_r` for the `hpccert` service.
///
/// # Safety
/// As for [`_nss_hpccert_getpwnam_r`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _nss_hpccert_getpwuid_r(
    uid: uid_t,
    result: *mut passwd,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    answer(errnop, || {
        lookup(passwd_cache().find_id(uid), |entry| {
            // SAFETY: glibc's result and buffer, valid for this call.
            unsafe { fill_passwd(entry, result, buffer, buflen) }
        })
    })
}

/// `setpwent`: start enumerating the passwd cache.
#[unsafe(no_mangle)]
pub extern "C" fn _nss_hpccert_setpwent(_stayopen: c_int) -> c_int {
    answer(std::ptr::null_mut(), || {
        start_walk(&PASSWD_WALK, passwd_table)
    })
}

/// `getpwent_r`: the next passwd entry.
///
/// # Safety
/// As for [`_nss_hpccert_getpwnam_r`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _nss_hpccert_getpwent_r(
    result: *mut passwd,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    answer(errnop, || {
        next_in_walk(&PASSWD_WALK, passwd_table, PasswdTable::entries, |entry| {
            // SAFETY: glibc's result and buffer, valid for this call.
            unsafe { fill_passwd(entry, result, buffer, buflen) }
        })
    })
}

/// `endpwent`: end the enumeration.
#[unsafe(no_mangle)]
pub extern "C" fn _nss_hpccert_endpwent() -> c_int {
    answer(std::ptr::null_mut(), || {
        *locked(&PASSWD_WALK) = None;
        Answer::Found
    })
}

/// `getgrnam_r` for the `hpccert` service.
///
/// # Safety
/// As for [`_nss_hpccert_getpwnam_r`], with a `struct group`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _nss_hpccert_getgrnam_r(
    name: *const c_char,
    result: *mut group,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    answer(errnop, || {
        // SAFETY: glibc's name argument.
        let Some(name) = (unsafe { name_arg(name) }) else {
            return Answer::NotFound;
        };
        lookup(group_cache().find_name(name), |entry| {
            // SAFETY: glibc's result and buffer, valid for this call.
            unsafe { fill_group(entry, result, buffer, buflen) }
        })
    })
}

/// `getgrgid_r` for the `hpccert` service.
///
/// # Safety
/// As for [`_nss_hpccert_getgrnam_r`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _nss_hpccert_getgrgid_r(
    gid: gid_t,
    result: *mut group,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    answer(errnop, || {
        lookup(group_cache().find_id(gid), |entry| {
            // SAFETY: glibc's result and buffer, valid for this call.
            unsafe { fill_group(entry, result, buffer, buflen) }
        })
    })
}

/// `setgrent`: start enumerating the group cache.
#[unsafe(no_mangle)]
pub extern "C" fn _nss_hpccert_setgrent(_stayopen: c_int) -> c_int {
    answer(std::ptr::null_mut(), || {
        start_walk(&GROUP_WALK, group_table)
    })
}

/// `getgrent_r`: the next group entry.
///
/// # Safety
/// As for [`_nss_hpccert_getgrnam_r`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _nss_hpccert_getgrent_r(
    result: *mut group,
    buffer: *mut c_char,
    buflen: size_t,
    errnop: *mut c_int,
) -> c_int {
    answer(errnop, || {
        next_in_walk(&GROUP_WALK, group_table, GroupTable::entries, |entry| {
            // SAFETY: glibc's result and buffer, valid for this call.
            unsafe { fill_group(entry, result, buffer, buflen) }
        })
    })
}

/// `endgrent`: end the enumeration.
#[unsafe(no_mangle)]
pub extern "C" fn _nss_hpccert_endgrent() -> c_int {
    answer(std::ptr::null_mut(), || {
        *locked(&GROUP_WALK) = None;
        Answer::Found
    })
}
