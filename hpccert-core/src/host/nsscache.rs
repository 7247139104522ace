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
//! **The system range.** Ids below a floor ([`IdFloor`], `[mapping] nss_min_id`, default
//! [`DEFAULT_MIN_ID`] = 1000, where Debian and RHEL start regular users) belong to the system:
//! root, the daemons, `adm`, `wheel`, `sudo`, `docker`. The writers refuse, naming the line, a
//! passwd entry whose uid or primary gid is below the floor, a group entry whose gid is, and a
//! group entry named after a group of the system's group database (`getgrnam`) whose gid is
//! below the floor (`sudo` at gid 5000 still makes its members `%sudo` to a sudo that matches
//! groups by name). The reader does not know the floor (the NSS module reads no config); what
//! it serves was checked when it was written.
//!
//! Writers ([`write_passwd`], [`write_group`]) replace a file atomically
//! ([`crate::host::atomic_file`]), so a reader that opens the path reads either the old inode or the
//! new one, whole. Each file has two index files beside it (`passwd.ixname`, `passwd.ixid`,
//! see the `index` module), written after it: a lookup by name or id
//! ([`CachedTable::find_name`], [`CachedTable::find_id`]) reads one page of the index and the
//! one line, checked against the hash the index holds, so the first lookup of a process does
//! not parse 100,000 lines. An index that does not fit the file (stale, truncated, another
//! version) is ignored and the whole file is read. [`CachedTable::load`] (enumeration) keeps
//! the parsed table for the life of the process and parses again only when the file's
//! identity (device, inode, size, mtime, ctime) changes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use thiserror::Error;

use crate::host::atomic_file::{WriteLock, write_atomic};
use crate::identity::gridmap::{AccountName, LineError};

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
    #[error("refusing to write {table}: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Privileged {
        table: &'static str,
        errors: Vec<LineError>,
    },
}

/// The default of `[mapping] nss_min_id`: the first uid and gid of regular users on Debian and
/// RHEL (`UID_MIN` / `GID_MIN` in `/etc/login.defs`).
pub const DEFAULT_MIN_ID: u32 = 1000;

/// The lowest uid and gid the cache may give an entry, and the system's group database: what
/// keeps a pool or portal account out of the system range (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct IdFloor {
    min_id: u32,
    /// The gid of a group of that name in the system's group database.
    system_group: fn(&str) -> Option<u32>,
}

impl Default for IdFloor {
    fn default() -> Self {
        Self::new(DEFAULT_MIN_ID)
    }
}

/// `getgrnam(3)`: every source of `nsswitch.conf`, `files` first. A lookup that fails (a
/// directory that does not answer) counts as no group: the system groups are in `files`,
/// which answers before any other source is asked.
fn host_group_gid(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

impl IdFloor {
    /// Ids below `min_id` are the system's; groups are looked up in this host's database.
    pub fn new(min_id: u32) -> Self {
        Self {
            min_id,
            system_group: host_group_gid,
        }
    }

    /// Look groups up in `lookup` instead of the host's database (tests).
    pub fn with_group_database(mut self, lookup: fn(&str) -> Option<u32>) -> Self {
        self.system_group = lookup;
        self
    }

    pub fn min_id(&self) -> u32 {
        self.min_id
    }

    /// The passwd entries that would give an account a system uid or primary gid: (index in
    /// `entries`, why).
    pub fn passwd_refusals(&self, entries: &[PasswdEntry]) -> Vec<(usize, String)> {
        let floor = self.min_id;
        let mut out = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if e.uid < floor {
                out.push((
                    i,
                    format!("user {} (uid {}) is below the floor {floor}", e.name, e.uid),
                ));
            } else if e.gid < floor {
                out.push((
                    i,
                    format!(
                        "user {}: its primary group gid {} is below the floor {floor}",
                        e.name, e.gid
                    ),
                ));
            }
        }
        out
    }

    /// The group entries that would make or extend a system group: (index in `entries`, why).
    pub fn group_refusals(&self, entries: &[GroupEntry]) -> Vec<(usize, String)> {
        let floor = self.min_id;
        let mut out = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if e.gid < floor {
                out.push((
                    i,
                    format!(
                        "group {} (gid {}) is below the floor {floor}",
                        e.name, e.gid
                    ),
                ));
            } else if let Some(system) =
                (self.system_group)(e.name.as_str()).filter(|&gid| gid < floor)
            {
                let adds = if e.members.is_empty() {
                    String::new()
                } else {
                    let names: Vec<&str> = e.members.iter().map(AccountName::as_str).collect();
                    format!(" and would add {} to it", names.join(","))
                };
                out.push((
                    i,
                    format!(
                        "group {} (gid {}) is the system group {} (gid {system}, below the floor {floor}){adds}",
                        e.name, e.gid, e.name
                    ),
                ));
            }
        }
        out
    }
}

fn refuse_privileged(
    table: &'static str,
    refusals: Vec<(usize, String)>,
) -> Result<(), NssCacheError> {
    if refusals.is_empty() {
        return Ok(());
    }
    Err(NssCacheError::Privileged {
        table,
        errors: refusals
            .into_iter()
            .map(|(i, message)| line_error(i + 1, message))
            .collect(),
    })
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
    /// One entry of the database.
    type Entry: Clone;
    /// Parse a whole file (trailer included).
    fn parse(text: &str) -> Result<Self, NssCacheError>;
    /// Parse one line (no newline).
    fn parse_line(line: &str) -> Result<Self::Entry, String>;
    /// The entry's name and numeric id (uid or gid).
    fn key(entry: &Self::Entry) -> (&str, u32);
    /// Look up in a parsed table.
    fn find_name(&self, name: &str) -> Option<&Self::Entry>;
    fn find_id(&self, id: u32) -> Option<&Self::Entry>;
}

/// What one line of a database is: a passwd or a group entry.
pub trait NssEntry: Clone + Send + Sync {
    /// The file name in the cache directory.
    const FILE: &'static str;
    /// What a name and an id are called in messages (`user`/`uid`, `group`/`gid`).
    const NAME: &'static str;
    const ID: &'static str;
    fn parse_line(line: &str) -> Result<Self, String>;
    fn name(&self) -> &str;
    fn id(&self) -> u32;
}

impl NssEntry for PasswdEntry {
    const FILE: &'static str = PASSWD_FILE;
    const NAME: &'static str = "user";
    const ID: &'static str = "uid";
    fn parse_line(line: &str) -> Result<Self, String> {
        parse_passwd_line(line)
    }
    fn name(&self) -> &str {
        self.name.as_str()
    }
    fn id(&self) -> u32 {
        self.uid
    }
}

impl NssEntry for GroupEntry {
    const FILE: &'static str = GROUP_FILE;
    const NAME: &'static str = "group";
    const ID: &'static str = "gid";
    fn parse_line(line: &str) -> Result<Self, String> {
        parse_group_line(line)
    }
    fn name(&self) -> &str {
        self.name.as_str()
    }
    fn id(&self) -> u32 {
        self.gid
    }
}

/// A database: entries in file order, indexed by name and by id.
#[derive(Debug)]
pub struct Table<E> {
    entries: Vec<E>,
    by_name: HashMap<String, usize>,
    by_id: HashMap<u32, usize>,
}

/// The passwd database.
pub type PasswdTable = Table<PasswdEntry>;
/// The group database.
pub type GroupTable = Table<GroupEntry>;

impl<E: NssEntry> Table<E> {
    pub fn by_name(&self, name: &str) -> Option<&E> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }
    /// By uid (passwd) or gid (group).
    pub fn by_id(&self, id: u32) -> Option<&E> {
        self.by_id.get(&id).map(|&i| &self.entries[i])
    }
    pub fn entries(&self) -> &[E] {
        &self.entries
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The lines of a body (no trailer); every bad or duplicate line is reported.
    fn parse_body(body: &str, count: usize) -> Result<Self, NssCacheError> {
        let mut table = Self {
            entries: Vec::with_capacity(count),
            by_name: HashMap::with_capacity(count),
            by_id: HashMap::with_capacity(count),
        };
        let mut errors = Vec::new();
        for (i, line) in body.lines().enumerate() {
            let number = i + 1;
            let entry = match E::parse_line(line) {
                Ok(e) => e,
                Err(message) => {
                    errors.push(line_error(number, message));
                    continue;
                }
            };
            if table.by_name.contains_key(entry.name()) {
                errors.push(line_error(
                    number,
                    format!("duplicate {} {}", E::NAME, entry.name()),
                ));
                continue;
            }
            if table.by_id.contains_key(&entry.id()) {
                errors.push(line_error(
                    number,
                    format!("duplicate {} {}", E::ID, entry.id()),
                ));
                continue;
            }
            let index = table.entries.len();
            table.by_name.insert(entry.name().to_string(), index);
            table.by_id.insert(entry.id(), index);
            table.entries.push(entry);
        }
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(NssCacheError::Lines(errors))
        }
    }
}

impl PasswdTable {
    pub fn by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.by_id(uid)
    }
}

impl GroupTable {
    pub fn by_gid(&self, gid: u32) -> Option<&GroupEntry> {
        self.by_id(gid)
    }
}

impl<E: NssEntry> CacheTable for Table<E> {
    const FILE: &'static str = E::FILE;
    type Entry = E;

    fn parse(text: &str) -> Result<Self, NssCacheError> {
        let (body, count) = checked_body(text)?;
        Self::parse_body(body, count)
    }
    fn parse_line(line: &str) -> Result<E, String> {
        E::parse_line(line)
    }
    fn key(entry: &E) -> (&str, u32) {
        (entry.name(), entry.id())
    }
    fn find_name(&self, name: &str) -> Option<&E> {
        self.by_name(name)
    }
    fn find_id(&self, id: u32) -> Option<&E> {
        self.by_id(id)
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

/// Parse passwd lines without a trailer (the portal's export, [`crate::host::export`]) with every
/// check the reader makes: one entry a line, each line ending in a newline, unique names and
/// uids, no uid 0. Errors carry 1-based line numbers.
pub fn parse_passwd_lines(text: &str) -> Result<Vec<PasswdEntry>, NssCacheError> {
    lines_checked(text)?;
    PasswdTable::parse_body(text, text.lines().count()).map(|t| t.entries)
}

/// Parse group lines without a trailer, with every check the reader makes (see
/// [`parse_passwd_lines`]).
pub fn parse_group_lines(text: &str) -> Result<Vec<GroupEntry>, NssCacheError> {
    lines_checked(text)?;
    GroupTable::parse_body(text, text.lines().count()).map(|t| t.entries)
}

fn lines_checked(text: &str) -> Result<(), NssCacheError> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(NssCacheError::Lines(vec![line_error(
            text.lines().count(),
            "the last line does not end in a newline (truncated?)".into(),
        )]));
    }
    if text.contains('\r') {
        let n = text.lines().position(|l| l.contains('\r')).unwrap_or(0) + 1;
        return Err(NssCacheError::Lines(vec![line_error(
            n,
            "carriage return".into(),
        )]));
    }
    Ok(())
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
    let (by_name, by_id) = index::build::<T>(text)?;
    let _lock = WriteLock::acquire(&path).map_err(io)?;
    write_atomic(&path, text.as_bytes()).map_err(io)?;
    // the indexes name the file's checksum: until both are replaced, a reader finds them
    // out of date and reads the file itself
    for (suffix, data) in [(index::NAME_SUFFIX, by_name), (index::ID_SUFFIX, by_id)] {
        let p = index::path(&path, suffix);
        write_atomic(&p, &data).map_err(|source| NssCacheError::Io { path: p, source })?;
    }
    Ok(())
}

/// Replace `dir/passwd` atomically with `entries`; refused as a whole, with the lines, when
/// one would give an account a uid or primary gid below `floor`.
pub fn write_passwd(
    dir: &Path,
    entries: &[PasswdEntry],
    floor: &IdFloor,
) -> Result<(), NssCacheError> {
    refuse_privileged(PASSWD_FILE, floor.passwd_refusals(entries))?;
    write_checked::<PasswdTable>(dir, &render_passwd(entries))
}

/// Replace `dir/group` atomically with `entries`; refused as a whole, with the lines, when one
/// has a gid below `floor` or is a system group.
pub fn write_group(
    dir: &Path,
    entries: &[GroupEntry],
    floor: &IdFloor,
) -> Result<(), NssCacheError> {
    refuse_privileged(GROUP_FILE, floor.group_refusals(entries))?;
    write_checked::<GroupTable>(dir, &render_group(entries))
}

/// The index files beside each cache file (`passwd.ixname`, `passwd.ixid`, ...), so that one
/// lookup reads one page of records and one line instead of parsing the whole file (as
/// libnss-cache does with its `.ixname` / `.ixuid` files).
///
/// An index is a 64-byte header, a fence, then the records sorted by key. The header holds
/// `HPCNSSX1`, the record size (u32 LE), the record count (u64 LE), the SHA-256 of the cache
/// file's body (the checksum its trailer names) and the fence stride (u32 LE). The fence is the
/// key of every stride-th record, so that a reader keeps it in memory and reads one run of at
/// most `stride` records per lookup. A record by name is the name NUL-padded to 32 bytes, the
/// line's offset (u64 LE) and length (u32 LE), 4 bytes of padding and the first 16 bytes of the
/// line's SHA-256; by id, the id (u32 BE), the length (u32 LE), the offset (u64 LE) and the hash.
///
/// A reader uses an index only when its size is exactly what its header says and its checksum
/// equals the one in the cache file's trailer (read from the file's end: a truncated file has
/// none), and it checks the hash of every line it reads. Anything else makes the index
/// unusable, and the reader parses the whole file instead, with all of its checks.
mod index {
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};

    use super::{
        CacheTable, NssCacheError, TRAILER_TAG, TRAILER_VERSION, checked_body, line_error,
    };

    pub const NAME_SUFFIX: &str = "ixname";
    pub const ID_SUFFIX: &str = "ixid";
    const MAGIC: &[u8; 8] = b"HPCNSSX1";
    const HEADER: u64 = 64;
    const NAME_RECORD: usize = 64;
    const ID_RECORD: usize = 32;
    const NAME_BYTES: usize = 32;
    const STRIDE: usize = 128;

    pub fn path(file: &Path, suffix: &str) -> PathBuf {
        let mut p = file.as_os_str().to_owned();
        p.push(".");
        p.push(suffix);
        PathBuf::from(p)
    }

    fn line_hash(line: &[u8]) -> [u8; 16] {
        let full = openssl::sha::sha256(line);
        let mut h = [0u8; 16];
        h.copy_from_slice(&full[..16]);
        h
    }

    /// The sortable key bytes of a record (its first `key_len` bytes).
    fn key_len(record: usize) -> usize {
        if record == NAME_RECORD { NAME_BYTES } else { 4 }
    }

    fn assemble(record: usize, mut records: Vec<Vec<u8>>, sha: &[u8; 32]) -> Vec<u8> {
        records.sort_by(|a, b| a[..key_len(record)].cmp(&b[..key_len(record)]));
        let mut out = Vec::with_capacity(64 + records.len() * (record + 1));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(record as u32).to_le_bytes());
        out.extend_from_slice(&(records.len() as u64).to_le_bytes());
        out.extend_from_slice(sha);
        out.extend_from_slice(&(STRIDE as u32).to_le_bytes());
        out.resize(64, 0);
        for r in records.iter().step_by(STRIDE) {
            out.extend_from_slice(&r[..key_len(record)]);
        }
        for r in &records {
            out.extend_from_slice(r);
        }
        out
    }

    /// Both indexes of a cache file's text (already checked by the writer).
    pub fn build<T: CacheTable>(text: &str) -> Result<(Vec<u8>, Vec<u8>), NssCacheError> {
        let (body, _) = checked_body(text)?;
        let sha = openssl::sha::sha256(body.as_bytes());
        let mut names = Vec::new();
        let mut ids = Vec::new();
        let mut offset = 0u64;
        for (number, line) in body.split_inclusive('\n').enumerate() {
            let content = line.strip_suffix('\n').unwrap_or(line);
            let entry = T::parse_line(content)
                .map_err(|m| NssCacheError::Lines(vec![line_error(number + 1, m)]))?;
            let (name, id) = T::key(&entry);
            let hash = line_hash(content.as_bytes());
            let len = (content.len() as u32).to_le_bytes();
            let mut n = vec![0u8; NAME_BYTES];
            n[..name.len()].copy_from_slice(name.as_bytes());
            n.extend_from_slice(&offset.to_le_bytes());
            n.extend_from_slice(&len);
            n.extend_from_slice(&[0u8; 4]);
            n.extend_from_slice(&hash);
            names.push(n);
            let mut i = id.to_be_bytes().to_vec();
            i.extend_from_slice(&len);
            i.extend_from_slice(&offset.to_le_bytes());
            i.extend_from_slice(&hash);
            ids.push(i);
            offset += line.len() as u64;
        }
        Ok((
            assemble(NAME_RECORD, names, &sha),
            assemble(ID_RECORD, ids, &sha),
        ))
    }

    /// An index found usable for one version of the cache file, its fence in memory.
    #[derive(Debug)]
    pub struct Index {
        file: File,
        index: File,
        record: usize,
        count: u64,
        stride: u64,
        fence: Vec<u8>,
        records_at: u64,
    }

    /// The key a lookup searches.
    pub enum Key<'a> {
        Name(&'a str),
        Id(u32),
    }

    fn u32_le(b: &[u8]) -> Option<u32> {
        Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))
    }
    fn u64_le(b: &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?))
    }

    /// The checksum named by the trailer at the end of `file` (`len` bytes long).
    fn trailer_sha(file: &File, len: u64) -> Option<[u8; 32]> {
        let tail_len = len.min(256);
        let mut tail = vec![0u8; usize::try_from(tail_len).ok()?];
        file.read_exact_at(&mut tail, len - tail_len).ok()?;
        let text = std::str::from_utf8(&tail).ok()?.strip_suffix('\n')?;
        let trailer = &text[text.rfind('\n').map_or(0, |i| i + 1)..];
        let mut fields = trailer.split(' ');
        if fields.next()? != TRAILER_TAG || fields.next()? != TRAILER_VERSION {
            return None;
        }
        fields.next()?.strip_prefix("entries=")?;
        let hex = fields.next()?.strip_prefix("sha256=")?;
        if hex.len() != 64 || fields.next().is_some() {
            return None;
        }
        let mut sha = [0u8; 32];
        for (i, b) in sha.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(sha)
    }

    impl Index {
        /// Open the index at `index_path` of the cache file `file` (`file_len` bytes, already
        /// open); None when there is none or it does not fit the file.
        pub fn open(file: &File, file_len: u64, index_path: &Path, by_name: bool) -> Option<Self> {
            let index = File::open(index_path).ok()?;
            let len = index.metadata().ok()?.len();
            let mut h = [0u8; 64];
            index.read_exact_at(&mut h, 0).ok()?;
            let record = usize::try_from(u32_le(&h[8..])?).ok()?;
            let count = u64_le(&h[12..])?;
            let stride = u64::from(u32_le(&h[52..])?);
            let expected = if by_name { NAME_RECORD } else { ID_RECORD };
            if &h[..8] != MAGIC || record != expected || stride == 0 {
                return None;
            }
            let fence_len = count.div_ceil(stride).checked_mul(key_len(record) as u64)?;
            let records_at = HEADER.checked_add(fence_len)?;
            if len != records_at.checked_add(count.checked_mul(record as u64)?)?
                || h[20..52] != trailer_sha(file, file_len)?
            {
                return None;
            }
            let mut fence = vec![0u8; usize::try_from(fence_len).ok()?];
            index.read_exact_at(&mut fence, HEADER).ok()?;
            Some(Self {
                file: file.try_clone().ok()?,
                index,
                record,
                count,
                stride,
                fence,
                records_at,
            })
        }

        /// The entry for `key`: Ok(None) when the index says there is none; Err(()) when the
        /// index and the file disagree (the caller reads the whole file instead).
        pub fn find<T: CacheTable>(&self, key: &Key<'_>) -> Result<Option<T::Entry>, ()> {
            let mut padded = [0u8; NAME_BYTES];
            let id_bytes;
            let wanted: &[u8] = match key {
                Key::Name(n) => {
                    if n.len() > NAME_BYTES || n.as_bytes().contains(&0) {
                        return Ok(None);
                    }
                    padded[..n.len()].copy_from_slice(n.as_bytes());
                    &padded
                }
                Key::Id(id) => {
                    id_bytes = id.to_be_bytes();
                    &id_bytes
                }
            };
            let kl = key_len(self.record);
            // the last fence key <= wanted names the run of records to read
            let fences = self.fence.chunks_exact(kl);
            let run = fences.take_while(|f| *f <= wanted).count();
            if run == 0 {
                return Ok(None);
            }
            let first = (run as u64 - 1) * self.stride;
            let n = self.stride.min(self.count - first);
            let mut page = vec![0u8; usize::try_from(n).map_err(|_| ())? * self.record];
            self.index
                .read_exact_at(&mut page, self.records_at + first * self.record as u64)
                .map_err(|_| ())?;
            let records: Vec<&[u8]> = page.chunks_exact(self.record).collect();
            match records.binary_search_by(|r| r[..kl].cmp(wanted)) {
                Ok(i) => self.entry::<T>(records[i], key).map(Some),
                Err(_) => Ok(None),
            }
        }

        fn entry<T: CacheTable>(&self, rec: &[u8], key: &Key<'_>) -> Result<T::Entry, ()> {
            let (offset, len, hash) = if self.record == NAME_RECORD {
                (u64_le(&rec[32..]), u32_le(&rec[40..]), &rec[48..64])
            } else {
                (u64_le(&rec[8..]), u32_le(&rec[4..]), &rec[16..32])
            };
            let (offset, len) = (offset.ok_or(())?, len.ok_or(())?);
            let mut line = vec![0u8; usize::try_from(len).map_err(|_| ())?];
            self.file.read_exact_at(&mut line, offset).map_err(|_| ())?;
            if line_hash(&line) != hash {
                return Err(());
            }
            let text = std::str::from_utf8(&line).map_err(|_| ())?;
            let entry = T::parse_line(text).map_err(|_| ())?;
            let (name, id) = T::key(&entry);
            let matches = match key {
                Key::Name(n) => name == *n,
                Key::Id(i) => id == *i,
            };
            if matches { Ok(entry) } else { Err(()) }
        }
    }
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
    /// Each index as opened for one version of the file and of the index (None: unusable).
    by_name_index: IndexSlot,
    by_id_index: IndexSlot,
    report: fn(&Path, &NssCacheError),
}

type IndexSlot = Mutex<Option<((FileStamp, FileStamp), Option<Arc<index::Index>>)>>;

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
            by_name_index: Mutex::new(None),
            by_id_index: Mutex::new(None),
            report,
        }
    }

    /// One entry by name. Through the index files when they fit the current file (a few
    /// reads, no parse of the whole file), else from the whole file as [`CachedTable::load`]
    /// reads it. `Err` is "unavailable", as for `load`.
    pub fn find_name(&self, name: &str) -> Result<Option<T::Entry>, Arc<NssCacheError>> {
        self.find(&index::Key::Name(name))
    }

    /// One entry by uid or gid, as [`CachedTable::find_name`].
    pub fn find_id(&self, id: u32) -> Result<Option<T::Entry>, Arc<NssCacheError>> {
        self.find(&index::Key::Id(id))
    }

    fn find(&self, key: &index::Key<'_>) -> Result<Option<T::Entry>, Arc<NssCacheError>> {
        let from_table = |t: &T| {
            match key {
                index::Key::Name(n) => t.find_name(n),
                index::Key::Id(i) => t.find_id(*i),
            }
            .cloned()
        };
        let current = std::fs::metadata(&self.path).map(|m| FileStamp::of(&m));
        if let Ok(stamp) = &current
            && let Some((s, loaded)) = self.lock().as_ref()
            && s == stamp
        {
            // this version is parsed already (or known to be refused)
            return loaded.as_ref().map(|t| from_table(t)).map_err(Arc::clone);
        }
        if let Ok(stamp) = current
            && let Some(ix) = self.index_for(stamp, matches!(key, index::Key::Name(_)))
            && let Ok(found) = ix.find::<T>(key)
        {
            return Ok(found);
        }
        self.load().map(|t| from_table(&t))
    }

    /// The usable index (by name or by id) of the file version `file`, opened once per
    /// version of the file and of the index.
    fn index_for(&self, file: FileStamp, by_name: bool) -> Option<Arc<index::Index>> {
        let suffix = if by_name {
            index::NAME_SUFFIX
        } else {
            index::ID_SUFFIX
        };
        let ix_path = index::path(&self.path, suffix);
        let now = (file, FileStamp::of(&std::fs::metadata(&ix_path).ok()?));
        let slot = if by_name {
            &self.by_name_index
        } else {
            &self.by_id_index
        };
        let mut guard = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((stamps, ix)) = guard.as_ref()
            && *stamps == now
        {
            return ix.clone();
        }
        let opened = File::open(&self.path).ok().and_then(|f| {
            let meta = f.metadata().ok()?;
            // the file opened must be the version stat'ed, or the index is checked against
            // another one
            (FileStamp::of(&meta) == file)
                .then(|| index::Index::open(&f, meta.len(), &ix_path, by_name))
                .flatten()
                .map(Arc::new)
        });
        *guard = Some((now, opened.clone()));
        opened
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

    /// A group database with the system groups of a Debian host (not this host's).
    fn system_groups(name: &str) -> Option<u32> {
        match name {
            "root" => Some(0),
            "wheel" => Some(10),
            "sudo" => Some(27),
            "users" => Some(100),
            "alice" => Some(1001),
            _ => None,
        }
    }

    fn floor() -> IdFloor {
        IdFloor::default().with_group_database(system_groups)
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
        write_passwd(dir.path(), &pool(10), &floor()).unwrap();
        write_group(dir.path(), &groups(), &floor()).unwrap();
        let p = CachedTable::<PasswdTable>::new(dir.path()).load().unwrap();
        assert_eq!(p.entries(), pool(10).as_slice());
        let g = CachedTable::<GroupTable>::new(dir.path()).load().unwrap();
        assert_eq!(g.entries(), groups().as_slice());

        let mut bad = pool(1);
        bad[0].gecos = "a:b".into();
        assert!(matches!(
            write_passwd(dir.path(), &bad, &floor()),
            Err(NssCacheError::InvalidEntry(_))
        ));
        bad[0].gecos = "line\nbreak".into();
        assert!(write_passwd(dir.path(), &bad, &floor()).is_err());
        bad[0].gecos = String::new();
        bad[0].uid = 0;
        assert!(write_passwd(dir.path(), &bad, &floor()).is_err());
        // the file on disk is still the good one
        let again = CachedTable::<PasswdTable>::new(dir.path()).load().unwrap();
        assert_eq!(again.len(), 10);
    }

    #[test]
    fn the_writer_refuses_system_uids_and_gids_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        write_passwd(dir.path(), &pool(3), &floor()).unwrap();
        let before = std::fs::read(dir.path().join(PASSWD_FILE)).unwrap();

        let mut bad = pool(3);
        bad[1].uid = 10; // line 2: a system uid
        bad[2].gid = 27; // line 3: primary group sudo
        let Err(NssCacheError::Privileged { table, errors }) =
            write_passwd(dir.path(), &bad, &floor())
        else {
            panic!("expected a refusal");
        };
        assert_eq!(table, "passwd");
        assert_eq!(errors.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 3]);
        let text = NssCacheError::Privileged { table, errors }.to_string();
        assert!(
            text.contains("line 2: user atlas000002 (uid 10) is below the floor 1000"),
            "{text}"
        );
        assert!(
            text.contains(
                "line 3: user atlas000003: its primary group gid 27 is below the floor 1000"
            ),
            "{text}"
        );
        // one below the floor, and the floor itself
        bad = pool(1);
        bad[0].uid = 999;
        assert!(write_passwd(dir.path(), &bad, &floor()).is_err());
        bad[0].uid = 1000;
        bad[0].gid = 1000;
        write_passwd(dir.path(), &bad, &floor()).unwrap();
        write_passwd(dir.path(), &pool(3), &floor()).unwrap();
        assert_eq!(std::fs::read(dir.path().join(PASSWD_FILE)).unwrap(), before);

        // the floor is configurable: 500 lets uid 600 in, 60000 keeps the pool out
        bad[0].uid = 600;
        bad[0].gid = 600;
        let low = IdFloor::new(500).with_group_database(system_groups);
        write_passwd(dir.path(), &bad, &low).unwrap();
        let high = IdFloor::new(60_000).with_group_database(system_groups);
        let e = write_passwd(dir.path(), &pool(1), &high).unwrap_err();
        assert!(
            e.to_string().contains(
                "line 1: user atlas000001: its primary group gid 50000 is below the floor 60000"
            ),
            "{e}"
        );
    }

    #[test]
    fn the_writer_refuses_system_groups_and_members_added_to_them() {
        let dir = tempfile::tempdir().unwrap();
        write_group(dir.path(), &groups(), &floor()).unwrap();
        let before = std::fs::read(dir.path().join(GROUP_FILE)).unwrap();
        let group = |n: &str, gid: u32, members: &[&str]| GroupEntry {
            name: name(n),
            gid,
            members: members.iter().map(|m| name(m)).collect(),
        };
        let refused = |entries: &[GroupEntry]| -> String {
            match write_group(dir.path(), entries, &floor()) {
                Err(e @ NssCacheError::Privileged { table: "group", .. }) => e.to_string(),
                other => panic!("expected a refusal, got {other:?}"),
            }
        };
        // a gid below the floor, whatever the name
        let e = refused(&[groups()[0].clone(), group("staff2", 10, &["alice"])]);
        assert_eq!(
            e,
            "refusing to write group: line 2: group staff2 (gid 10) is below the floor 1000"
        );
        // an existing system group by name, with members or without, at any gid
        let e = refused(&[
            group("sudo", 5000, &["atlas000001", "alice"]),
            groups()[1].clone(),
            group("wheel", 5001, &[]),
        ]);
        assert!(
            e.contains(
                "line 1: group sudo (gid 5000) is the system group sudo (gid 27, below the floor 1000) and would add atlas000001,alice to it"
            ),
            "{e}"
        );
        assert!(
            e.contains("line 3: group wheel (gid 5001) is the system group wheel (gid 10"),
            "{e}"
        );
        assert!(!e.contains("line 2"), "{e}");
        let e = refused(&[group("root", 0, &["alice"])]);
        assert!(e.contains("group root (gid 0) is below the floor"), "{e}");
        // a group of the database above the floor (a user's private group) is not a system one
        write_group(dir.path(), &[group("alice", 60_001, &[])], &floor()).unwrap();
        // nothing refused was written
        write_group(dir.path(), &groups(), &floor()).unwrap();
        assert_eq!(std::fs::read(dir.path().join(GROUP_FILE)).unwrap(), before);
    }

    #[test]
    fn the_hosts_group_database_knows_root() {
        // the default floor asks this host: every Unix host has group root (gid 0)
        let e = write_group(
            tempfile::tempdir().unwrap().path(),
            &[GroupEntry {
                name: name("root"),
                gid: 70_000,
                members: vec![name("alice")],
            }],
            &IdFloor::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("is the system group root (gid 0"),
            "{e}"
        );
    }

    #[test]
    fn cached_table_reparses_only_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        write_passwd(dir.path(), &pool(2), &floor()).unwrap();
        let cache = CachedTable::<PasswdTable>::new(dir.path());
        let first = cache.load().unwrap();
        let second = cache.load().unwrap();
        assert!(Arc::ptr_eq(&first, &second), "unchanged file parsed again");
        write_passwd(dir.path(), &pool(5), &floor()).unwrap();
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
        write_group(dir.path(), &groups(), &floor()).unwrap();
        assert_eq!(cache.load().unwrap().len(), 2);
        assert_eq!(REPORTS.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn hundred_thousand_entries() {
        let dir = tempfile::tempdir().unwrap();
        let entries = pool(100_000);
        write_passwd(dir.path(), &entries, &floor()).unwrap();
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

    fn index_files(dir: &Path) -> [PathBuf; 2] {
        let p = dir.join(PASSWD_FILE);
        [
            index::path(&p, index::NAME_SUFFIX),
            index::path(&p, index::ID_SUFFIX),
        ]
    }

    #[test]
    fn single_lookups_read_the_indexes_not_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let entries = pool(1000);
        write_passwd(dir.path(), &entries, &floor()).unwrap();
        assert!(index_files(dir.path()).iter().all(|p| p.is_file()));
        let cache = CachedTable::<PasswdTable>::new(dir.path());
        for e in entries.iter().step_by(37).chain(entries.last()) {
            assert_eq!(cache.find_name(e.name.as_str()).unwrap().as_ref(), Some(e));
            assert_eq!(cache.find_id(e.uid).unwrap().as_ref(), Some(e));
        }
        for missing in ["atlas000000", "atlas001001", "a", "zzzz", ""] {
            assert_eq!(cache.find_name(missing).unwrap(), None, "{missing}");
        }
        for missing in [1, 100_000, 101_001, u32::MAX] {
            assert_eq!(cache.find_id(missing).unwrap(), None, "{missing}");
        }
        // answered from the indexes: the whole file was never parsed
        assert!(cache.lock().is_none());
        // groups too
        write_group(dir.path(), &groups(), &floor()).unwrap();
        let g = CachedTable::<GroupTable>::new(dir.path());
        assert_eq!(
            g.find_name("hpcusers").unwrap().map(|e| e.gid),
            Some(50_100)
        );
        assert_eq!(
            g.find_id(50_000).unwrap().map(|e| e.name.to_string()),
            Some("atlas".into())
        );
        assert!(g.lock().is_none());
    }

    #[test]
    fn a_stale_truncated_or_lying_index_falls_back_to_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let [by_name, by_id] = index_files(dir.path());
        write_passwd(dir.path(), &pool(10), &floor()).unwrap();
        let old = (
            std::fs::read(&by_name).unwrap(),
            std::fs::read(&by_id).unwrap(),
        );

        // a newer file with the older indexes: their checksum is another file's
        let mut newer = pool(10);
        newer[3].shell = "/bin/zsh".into();
        write_passwd(dir.path(), &newer, &floor()).unwrap();
        std::fs::write(&by_name, &old.0).unwrap();
        std::fs::write(&by_id, &old.1).unwrap();
        let cache = CachedTable::<PasswdTable>::new(dir.path());
        assert_eq!(
            cache.find_name("atlas000004").unwrap().unwrap().shell,
            "/bin/zsh"
        );
        assert!(cache.lock().is_some(), "answered from the whole file");

        // truncated indexes
        write_passwd(dir.path(), &newer, &floor()).unwrap();
        let full = std::fs::read(&by_id).unwrap();
        std::fs::write(&by_id, &full[..full.len() - 5]).unwrap();
        let cache = CachedTable::<PasswdTable>::new(dir.path());
        assert_eq!(cache.find_id(100_004).unwrap().unwrap().shell, "/bin/zsh");
        assert!(cache.lock().is_some());

        // a line edited in place (trailer kept): the index's line hash no longer matches, and
        // the whole file's checksum refuses it: unavailable, not the edited entry
        write_passwd(dir.path(), &newer, &floor()).unwrap();
        let path = dir.path().join(PASSWD_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("/home/atlas000004", "/home/mallory0004"),
        )
        .unwrap();
        let cache = CachedTable::<PasswdTable>::new(dir.path());
        let refused = cache.find_name("atlas000004").unwrap_err();
        assert!(
            matches!(*refused, NssCacheError::ChecksumMismatch),
            "{refused}"
        );
        // once the whole file is known refused, this process serves nothing from it
        assert!(cache.find_name("atlas000001").is_err());
        // a process that never looks up the edited entry is served the untouched lines, each
        // exactly as written (its hash checked); the edited one is never served
        let fresh = CachedTable::<PasswdTable>::new(dir.path());
        assert_eq!(
            fresh.find_name("atlas000001").unwrap().unwrap().uid,
            100_001
        );
        assert!(fresh.find_id(100_004).is_err());

        // no indexes at all (an older writer): the whole file
        write_passwd(dir.path(), &newer, &floor()).unwrap();
        std::fs::remove_file(&by_name).unwrap();
        let cache = CachedTable::<PasswdTable>::new(dir.path());
        assert_eq!(
            cache.find_name("atlas000010").unwrap().unwrap().uid,
            100_010
        );
    }
}
