//! The NSS cache: the `passwd` and `group` files that `libnss_hpccert.so.2` answers from.
//!
//! Two files in one directory ([`DEFAULT_DIR`]), in the `/etc/passwd` and `/etc/group` line
//! formats (as libnss-cache does), each ending in a trailer line
//!
//! ```text
//! #hpccert-nss v1 entries=N sha256=HEX
//! ```
//!
//! where `N` counts the lines before the trailer and `HEX` is the SHA-256 of every byte before
//! it. A file without a valid trailer, or whose count or checksum does not match, is refused as
//! a whole ([`NssCacheError`]): a truncated or half-written file is never read as entries.
//! Entries are parsed, not skipped: a bad line refuses the file with its line number. Account
//! and group names follow [`AccountName`]; uid 0 and gid 0 are refused (root never comes from
//! this cache); names and ids are unique.
//!
//! Writers ([`write_passwd`], [`write_group`]) replace a file atomically
//! ([`crate::atomic_file`]), so a reader that opens the path reads either the old inode or the
//! new one, whole. [`CachedTable`] keeps the parsed table for the life of the process and
//! parses again only when the file's identity (device, inode, size, mtime, ctime) changes;
//! lookups are hash-map lookups.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use thiserror::Error;

use crate::atomic_file::{WriteLock, write_atomic};
use crate::gridmap::{AccountName, LineError};

/// Where the cache lives on an installed system.
pub const DEFAULT_DIR: &str = "/var/lib/hpccert/nss";
/// The passwd database's file name in the cache directory.
pub const PASSWD_FILE: &str = "passwd";
/// The group database's file name in the cache directory.
pub const GROUP_FILE: &str = "group";
/// Files larger than this are refused (far above 100,000 entries).
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

const TRAILER_TAG: &str = "#hpccert-nss";
const TRAILER_VERSION: &str = "v1";

/// Why a cache file cannot be used. Every variant means "unavailable" to the NSS module.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NssCacheError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: larger than {MAX_FILE_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("not UTF-8")]
    NotUtf8,
    #[error(
        "no valid trailer line (`{TRAILER_TAG} {TRAILER_VERSION} entries=N sha256=HEX`): the file is truncated, half-written or not an hpccert NSS cache"
    )]
    MissingTrailer,
    #[error("the trailer counts {expected} entries but the file has {found} lines")]
    CountMismatch { expected: usize, found: usize },
    #[error("the checksum in the trailer does not match the content")]
    ChecksumMismatch,
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Lines(Vec<LineError>),
    #[error("refusing to write an entry the reader would refuse: {0}")]
    InvalidEntry(Box<NssCacheError>),
}

/// One passwd entry (the password field is always `x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: AccountName,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub dir: String,
    pub shell: String,
}

/// One group entry (the password field is always `x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: AccountName,
    pub gid: u32,
    pub members: Vec<AccountName>,
}

/// A database parsed from one cache file.
pub trait CacheTable: Sized + Send + Sync {
    /// The file name in the cache directory.
    const FILE: &'static str;
    /// Parse a whole file (trailer included).
    fn parse(text: &str) -> Result<Self, NssCacheError>;
}

/// The passwd database: entries in file order, indexed by name and by uid.
#[derive(Debug, Default)]
pub struct PasswdTable {
    entries: Vec<PasswdEntry>,
    by_name: HashMap<String, usize>,
    by_uid: HashMap<u32, usize>,
}

impl PasswdTable {
    fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
            by_name: HashMap::with_capacity(n),
            by_uid: HashMap::with_capacity(n),
        }
    }
    pub fn by_name(&self, name: &str) -> Option<&PasswdEntry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }
    pub fn by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.by_uid.get(&uid).map(|&i| &self.entries[i])
    }
    pub fn entries(&self) -> &[PasswdEntry] {
        &self.entries
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl CacheTable for PasswdTable {
    const FILE: &'static str = PASSWD_FILE;

    fn parse(text: &str) -> Result<Self, NssCacheError> {
        let (body, count) = checked_body(text)?;
        let mut table = Self::with_capacity(count);
        let mut errors = Vec::new();
        for (i, line) in body.lines().enumerate() {
            let number = i + 1;
            let entry = match parse_passwd_line(line) {
                Ok(e) => e,
                Err(message) => {
                    errors.push(line_error(number, message));
                    continue;
                }
            };
            let index = table.entries.len();
            if table.by_name.contains_key(entry.name.as_str()) {
                errors.push(line_error(number, format!("duplicate user {}", entry.name)));
                continue;
            }
            if table.by_uid.contains_key(&entry.uid) {
                errors.push(line_error(number, format!("duplicate uid {}", entry.uid)));
                continue;
            }
            table.by_name.insert(entry.name.as_str().to_string(), index);
            table.by_uid.insert(entry.uid, index);
            table.entries.push(entry);
        }
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(NssCacheError::Lines(errors))
        }
    }
}

/// The group database: entries in file order, indexed by name and by gid.
#[derive(Debug, Default)]
pub struct GroupTable {
    entries: Vec<GroupEntry>,
    by_name: HashMap<String, usize>,
    by_gid: HashMap<u32, usize>,
}

impl GroupTable {
    fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
            by_name: HashMap::with_capacity(n),
            by_gid: HashMap::with_capacity(n),
        }
    }
    pub fn by_name(&self, name: &str) -> Option<&GroupEntry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }
    pub fn by_gid(&self, gid: u32) -> Option<&GroupEntry> {
        self.by_gid.get(&gid).map(|&i| &self.entries[i])
    }
    pub fn entries(&self) -> &[GroupEntry] {
        &self.entries
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl CacheTable for GroupTable {
    const FILE: &'static str = GROUP_FILE;

    fn parse(text: &str) -> Result<Self, NssCacheError> {
        let (body, count) = checked_body(text)?;
        let mut table = Self::with_capacity(count);
        let mut errors = Vec::new();
        for (i, line) in body.lines().enumerate() {
            let number = i + 1;
            let entry = match parse_group_line(line) {
                Ok(e) => e,
                Err(message) => {
                    errors.push(line_error(number, message));
                    continue;
                }
            };
            let index = table.entries.len();
            if table.by_name.contains_key(entry.name.as_str()) {
                errors.push(line_error(
                    number,
                    format!("duplicate group {}", entry.name),
                ));
                continue;
            }
            if table.by_gid.contains_key(&entry.gid) {
                errors.push(line_error(number, format!("duplicate gid {}", entry.gid)));
                continue;
            }
            table.by_name.insert(entry.name.as_str().to_string(), index);
            table.by_gid.insert(entry.gid, index);
            table.entries.push(entry);
        }
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(NssCacheError::Lines(errors))
        }
    }
}

fn line_error(line: usize, message: String) -> LineError {
    LineError {
        path: None,
        line,
        message,
    }
}

/// The content before a valid trailer and its number of lines, or why there is none.
fn checked_body(text: &str) -> Result<(&str, usize), NssCacheError> {
    let without_newline = text
        .strip_suffix('\n')
        .ok_or(NssCacheError::MissingTrailer)?;
    let (body, trailer) = match without_newline.rfind('\n') {
        Some(i) => (&text[..=i], &without_newline[i + 1..]),
        None => ("", without_newline),
    };
    let fields: Vec<&str> = trailer.split(' ').collect();
    let [tag, version, entries, sha] = fields.as_slice() else {
        return Err(NssCacheError::MissingTrailer);
    };
    if *tag != TRAILER_TAG || *version != TRAILER_VERSION {
        return Err(NssCacheError::MissingTrailer);
    }
    let expected: usize = entries
        .strip_prefix("entries=")
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
        .ok_or(NssCacheError::MissingTrailer)?;
    let sha = sha
        .strip_prefix("sha256=")
        .filter(|h| h.len() == 64)
        .ok_or(NssCacheError::MissingTrailer)?;
    let found = body.lines().count();
    if found != expected {
        return Err(NssCacheError::CountMismatch { expected, found });
    }
    if !sha.eq_ignore_ascii_case(&sha256_hex(body.as_bytes())) {
        return Err(NssCacheError::ChecksumMismatch);
    }
    Ok((body, expected))
}

fn sha256_hex(data: &[u8]) -> String {
    openssl::sha::sha256(data)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn parse_id(field: &str, what: &str) -> Result<u32, String> {
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{what} {field:?} is not a number"));
    }
    let id: u32 = field
        .parse()
        .map_err(|_| format!("{what} {field:?} is out of range"))?;
    if id == 0 {
        return Err(format!("{what} 0 (root) is never served from this cache"));
    }
    if id == u32::MAX {
        return Err(format!("{what} {id} is reserved (-1)"));
    }
    Ok(id)
}

fn parse_text(field: &str, what: &str) -> Result<String, String> {
    if field.bytes().any(|b| b == 0 || b == b'\r') {
        Err(format!("{what} contains a NUL or carriage return"))
    } else {
        Ok(field.to_string())
    }
}

fn parse_path(field: &str, what: &str) -> Result<String, String> {
    let path = parse_text(field, what)?;
    if path.starts_with('/') {
        Ok(path)
    } else {
        Err(format!("{what} {field:?} is not an absolute path"))
    }
}

fn parse_passwd_line(line: &str) -> Result<PasswdEntry, String> {
    let fields: Vec<&str> = line.split(':').collect();
    let [name, password, uid, gid, gecos, dir, shell] = fields.as_slice() else {
        return Err(format!(
            "expected 7 fields name:x:uid:gid:gecos:dir:shell, found {}",
            fields.len()
        ));
    };
    if *password != "x" {
        return Err("the password field must be `x`".into());
    }
    Ok(PasswdEntry {
        name: AccountName::parse(name)?,
        uid: parse_id(uid, "uid")?,
        gid: parse_id(gid, "gid")?,
        gecos: parse_text(gecos, "gecos")?,
        dir: parse_path(dir, "home directory")?,
        shell: parse_path(shell, "shell")?,
    })
}

fn parse_group_line(line: &str) -> Result<GroupEntry, String> {
    let fields: Vec<&str> = line.split(':').collect();
    let [name, password, gid, members] = fields.as_slice() else {
        return Err(format!(
            "expected 4 fields name:x:gid:members, found {}",
            fields.len()
        ));
    };
    if *password != "x" {
        return Err("the password field must be `x`".into());
    }
    let members = if members.is_empty() {
        Vec::new()
    } else {
        members
            .split(',')
            .map(AccountName::parse)
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok(GroupEntry {
        name: AccountName::parse(name)?,
        gid: parse_id(gid, "gid")?,
        members,
    })
}

fn with_trailer(body: String, count: usize) -> String {
    let sha = sha256_hex(body.as_bytes());
    let mut text = body;
    let _ = writeln!(
        text,
        "{TRAILER_TAG} {TRAILER_VERSION} entries={count} sha256={sha}"
    );
    text
}

/// The passwd file for `entries`, trailer included.
pub fn render_passwd(entries: &[PasswdEntry]) -> String {
    let mut body = String::new();
    for e in entries {
        let _ = writeln!(
            body,
            "{}:x:{}:{}:{}:{}:{}",
            e.name, e.uid, e.gid, e.gecos, e.dir, e.shell
        );
    }
    with_trailer(body, entries.len())
}

/// The group file for `entries`, trailer included.
pub fn render_group(entries: &[GroupEntry]) -> String {
    let mut body = String::new();
    for e in entries {
        let members: Vec<&str> = e.members.iter().map(AccountName::as_str).collect();
        let _ = writeln!(body, "{}:x:{}:{}", e.name, e.gid, members.join(","));
    }
    with_trailer(body, entries.len())
}

fn write_checked<T: CacheTable>(dir: &Path, text: &str) -> Result<(), NssCacheError> {
    // what the reader would refuse is never written (a ':' or newline in a gecos, uid 0, ...)
    T::parse(text).map_err(|e| NssCacheError::InvalidEntry(Box::new(e)))?;
    let path = dir.join(T::FILE);
    let io = |source| NssCacheError::Io {
        path: path.clone(),
        source,
    };
    let _lock = WriteLock::acquire(&path).map_err(io)?;
    write_atomic(&path, text.as_bytes()).map_err(io)
}

/// Replace `dir/passwd` atomically with `entries`.
pub fn write_passwd(dir: &Path, entries: &[PasswdEntry]) -> Result<(), NssCacheError> {
    write_checked::<PasswdTable>(dir, &render_passwd(entries))
}

/// Replace `dir/group` atomically with `entries`.
pub fn write_group(dir: &Path, entries: &[GroupEntry]) -> Result<(), NssCacheError> {
    write_checked::<GroupTable>(dir, &render_group(entries))
}

/// Which version of a file a parsed table came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

type Loaded<T> = Result<Arc<T>, Arc<NssCacheError>>;

/// One cache file, parsed once per version of the file and shared by every lookup of the
/// process. A refused file is remembered too (until it changes), so a broken 100,000-line file
/// is not parsed again on every lookup.
#[derive(Debug)]
pub struct CachedTable<T> {
    path: PathBuf,
    slot: Mutex<Option<(FileStamp, Loaded<T>)>>,
    report: fn(&Path, &NssCacheError),
}

impl<T: CacheTable> CachedTable<T> {
    /// The table `T::FILE` in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self::with_report(dir, |_, _| {})
    }

    /// As [`CachedTable::new`], calling `report` once for each version of the file that is
    /// refused (a missing file is not reported: a node without pool accounts has none).
    pub fn with_report(dir: &Path, report: fn(&Path, &NssCacheError)) -> Self {
        Self {
            path: dir.join(T::FILE),
            slot: Mutex::new(None),
            report,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The table as the file is now: the remembered parse if the file has not changed, else a
    /// fresh one. The file is opened once and that inode is read, so a concurrent atomic
    /// replacement gives the old or the new version, never a mix.
    pub fn load(&self) -> Loaded<T> {
        let io = |source| {
            Arc::new(NssCacheError::Io {
                path: self.path.clone(),
                source,
            })
        };
        let current = FileStamp::of(&std::fs::metadata(&self.path).map_err(io)?);
        if let Some((stamp, loaded)) = self.lock().as_ref()
            && *stamp == current
        {
            return loaded.clone();
        }
        let mut file = File::open(&self.path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        let stamp = FileStamp::of(&meta);
        let loaded = if meta.len() > MAX_FILE_BYTES {
            Err(Arc::new(NssCacheError::TooLarge {
                path: self.path.clone(),
            }))
        } else {
            let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
            match (&mut file).take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes) {
                Err(e) => Err(io(e)),
                Ok(_) => match String::from_utf8(bytes) {
                    Err(_) => Err(Arc::new(NssCacheError::NotUtf8)),
                    Ok(text) => T::parse(&text).map(Arc::new).map_err(Arc::new),
                },
            }
        };
        if let Err(e) = &loaded {
            (self.report)(&self.path, e);
        }
        *self.lock() = Some((stamp, loaded.clone()));
        loaded
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(FileStamp, Loaded<T>)>> {
        // the slot is only ever replaced whole, so a poisoned lock still holds a consistent value
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> AccountName {
        AccountName::parse(s).unwrap()
    }

    fn pool(n: u32) -> Vec<PasswdEntry> {
        (1..=n)
            .map(|i| PasswdEntry {
                name: name(&format!("atlas{i:06}")),
                uid: 100_000 + i,
                gid: 50_000,
                gecos: format!("ATLAS pool account {i}"),
                dir: format!("/home/atlas{i:06}"),
                shell: "/bin/bash".into(),
            })
            .collect()
    }

    fn groups() -> Vec<GroupEntry> {
        vec![
            GroupEntry {
                name: name("atlas"),
                gid: 50_000,
                members: vec![],
            },
            GroupEntry {
                name: name("hpcusers"),
                gid: 50_100,
                members: vec![name("atlas000001"), name("alice")],
            },
        ]
    }

    #[test]
    fn parses_and_looks_up_by_name_and_id() {
        let text = render_passwd(&pool(3));
        let t = PasswdTable::parse(&text).unwrap();
        assert_eq!(t.len(), 3);
        let e = t.by_name("atlas000002").unwrap();
        assert_eq!((e.uid, e.gid), (100_002, 50_000));
        assert_eq!(e.dir, "/home/atlas000002");
        assert_eq!(t.by_uid(100_003).unwrap().name.as_str(), "atlas000003");
        assert!(t.by_name("nobody").is_none());
        assert!(t.by_uid(1).is_none());

        let g = GroupTable::parse(&render_group(&groups())).unwrap();
        assert_eq!(g.by_gid(50_100).unwrap().members.len(), 2);
        assert_eq!(g.by_name("atlas").unwrap().gid, 50_000);
        assert!(g.by_name("wheel").is_none());
    }

    #[test]
    fn empty_database_is_valid() {
        let t = PasswdTable::parse(&render_passwd(&[])).unwrap();
        assert!(t.is_empty());
    }

    #[test]
    fn truncated_or_trailerless_file_is_refused() {
        let text = render_passwd(&pool(50));
        // every proper prefix is refused: never a partial table
        for cut in [0, 1, 40, text.len() / 2, text.len() - 70, text.len() - 1] {
            let err = PasswdTable::parse(&text[..cut]).unwrap_err();
            assert!(
                matches!(
                    err,
                    NssCacheError::MissingTrailer
                        | NssCacheError::CountMismatch { .. }
                        | NssCacheError::ChecksumMismatch
                ),
                "cut {cut}: {err}"
            );
        }
        let body: String = text.lines().take(50).map(|l| format!("{l}\n")).collect();
        assert!(matches!(
            PasswdTable::parse(&body),
            Err(NssCacheError::MissingTrailer)
        ));
    }

    #[test]
    fn count_or_checksum_mismatch_is_refused() {
        let text = render_passwd(&pool(3));
        // a line lost in the middle: count mismatch
        let mut lines: Vec<&str> = text.lines().collect();
        lines.remove(1);
        let dropped: String = lines.iter().map(|l| format!("{l}\n")).collect();
        assert!(matches!(
            PasswdTable::parse(&dropped),
            Err(NssCacheError::CountMismatch {
                expected: 3,
                found: 2
            })
        ));
        // same count, changed content: checksum mismatch
        let edited = text.replace("100002", "100009");
        assert!(matches!(
            PasswdTable::parse(&edited),
            Err(NssCacheError::ChecksumMismatch)
        ));
    }

    /// A body with a correct trailer, so the line checks are what fails.
    fn sealed(body: &str) -> String {
        with_trailer(body.to_string(), body.lines().count())
    }

    #[test]
    fn bad_lines_are_refused_with_line_numbers() {
        let text = sealed(
            "alice:x:1001:1001::/home/alice:/bin/bash\n\
             root:x:0:0::/root:/bin/bash\n\
             bob:x:1002:abc::/home/bob:/bin/bash\n\
             carol:x:1003:1003\n\
             alice:x:1004:1004::/home/a:/bin/sh\n\
             dave:x:1001:1001::/home/dave:/bin/sh\n\
             bad name:x:1005:1005::/home/e:/bin/sh\n\
             erin:secret:1006:1006::/home/erin:/bin/sh\n\
             fred:x:1007:1007::home/fred:/bin/sh\n",
        );
        let Err(NssCacheError::Lines(errors)) = PasswdTable::parse(&text) else {
            panic!("expected line errors");
        };
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7, 8, 9]);
        let all = NssCacheError::Lines(errors).to_string();
        assert!(all.contains("line 2: uid 0 (root)"), "{all}");
        assert!(all.contains("line 5: duplicate user alice"), "{all}");
        assert!(all.contains("line 6: duplicate uid 1001"), "{all}");

        let Err(NssCacheError::Lines(errors)) = GroupTable::parse(&sealed(
            "staff:x:2000:alice,bob\nwheel:x:0:\nstaff2:x:2001:alice,,bob\n",
        )) else {
            panic!("expected line errors");
        };
        assert_eq!(
            errors.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![2, 3]
        );
    }

    #[test]
    fn writer_round_trip_and_refuses_what_the_reader_would() {
        let dir = tempfile::tempdir().unwrap();
        write_passwd(dir.path(), &pool(10)).unwrap();
        write_group(dir.path(), &groups()).unwrap();
        let p = CachedTable::<PasswdTable>::new(dir.path()).load().unwrap();
        assert_eq!(p.entries(), pool(10).as_slice());
        let g = CachedTable::<GroupTable>::new(dir.path()).load().unwrap();
        assert_eq!(g.entries(), groups().as_slice());

        let mut bad = pool(1);
        bad[0].gecos = "a:b".into();
        assert!(matches!(
            write_passwd(dir.path(), &bad),
            Err(NssCacheError::InvalidEntry(_))
        ));
        bad[0].gecos = "line\nbreak".into();
        assert!(write_passwd(dir.path(), &bad).is_err());
        bad[0].gecos = String::new();
        bad[0].uid = 0;
        assert!(write_passwd(dir.path(), &bad).is_err());
        // the file on disk is still the good one
        let again = CachedTable::<PasswdTable>::new(dir.path()).load().unwrap();
        assert_eq!(again.len(), 10);
    }

    #[test]
    fn cached_table_reparses_only_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        write_passwd(dir.path(), &pool(2)).unwrap();
        let cache = CachedTable::<PasswdTable>::new(dir.path());
        let first = cache.load().unwrap();
        let second = cache.load().unwrap();
        assert!(Arc::ptr_eq(&first, &second), "unchanged file parsed again");
        write_passwd(dir.path(), &pool(5)).unwrap();
        assert_eq!(cache.load().unwrap().len(), 5);

        // replaced by a truncated file: unavailable, and the error is remembered
        let text = render_passwd(&pool(5));
        write_atomic(cache.path(), &text.as_bytes()[..text.len() / 2]).unwrap();
        assert!(cache.load().is_err());
        assert!(cache.load().is_err());
        // missing file: unavailable
        std::fs::remove_file(cache.path()).unwrap();
        assert!(cache.load().is_err());
        assert!(matches!(
            cache.load().unwrap_err().as_ref(),
            NssCacheError::Io { .. }
        ));
    }

    #[test]
    fn a_refused_version_is_reported_once() {
        static REPORTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = tempfile::tempdir().unwrap();
        let cache = CachedTable::<GroupTable>::with_report(dir.path(), |path, e| {
            assert!(path.ends_with("group"));
            assert!(matches!(e, NssCacheError::MissingTrailer), "{e}");
            REPORTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        assert!(cache.load().is_err()); // missing: not reported
        write_atomic(cache.path(), b"atlas:x:50000:\n").unwrap();
        for _ in 0..3 {
            assert!(cache.load().is_err());
        }
        assert_eq!(REPORTS.load(std::sync::atomic::Ordering::SeqCst), 1);
        write_group(dir.path(), &groups()).unwrap();
        assert_eq!(cache.load().unwrap().len(), 2);
        assert_eq!(REPORTS.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn hundred_thousand_entries() {
        let dir = tempfile::tempdir().unwrap();
        let entries = pool(100_000);
        write_passwd(dir.path(), &entries).unwrap();
        let cache = CachedTable::<PasswdTable>::new(dir.path());
        let start = std::time::Instant::now();
        let t = cache.load().unwrap();
        let parsed = start.elapsed();
        assert_eq!(t.len(), 100_000);
        let start = std::time::Instant::now();
        for i in (1..=100_000).step_by(997) {
            let e = cache.load().unwrap();
            let n = format!("atlas{i:06}");
            assert_eq!(e.by_name(&n).unwrap().uid, 100_000 + i);
            assert_eq!(e.by_uid(100_000 + i).unwrap().name.as_str(), n);
        }
        let looked_up = start.elapsed();
        let text = render_passwd(&entries);
        let start = std::time::Instant::now();
        let _ = sha256_hex(text.as_bytes());
        let hashed = start.elapsed();
        let start = std::time::Instant::now();
        let _ = PasswdTable::parse(&text).unwrap();
        let parsed_in_memory = start.elapsed();
        // informational only (the machine is shared): no timed assertion
        eprintln!("100,000 entries: checksum {hashed:?}, parse from memory {parsed_in_memory:?}");
        eprintln!("100,000 entries: load {parsed:?}, 101 cached lookups {looked_up:?}");
    }
}
