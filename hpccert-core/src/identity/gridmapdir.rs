//! Pool accounts (`.atlas` in the grid-mapfile) leased to identities through a gridmapdir,
//! compatible with the Globus `gss_assist` / LCMAPS `poolaccount` gridmapdir.
//!
//! **Layout.** The gridmapdir ([`crate::identity::pool::DEFAULT_GRIDMAPDIR`], `[mapping] gridmapdir`) holds one empty
//! file per pool account (`atlas001` ... `atlas040`; [`Gridmapdir::lease`] creates the files of
//! configured accounts that are missing). A lease is a second hard link to an account file,
//! named after the identity ([`LeaseKey`]); an account file whose link count is 2 is leased, 1
//! is free. The modification time of the pair is the time of the last login that used the
//! lease (every reuse sets it), which is what [`Gridmapdir::expire`] reads.
//!
//! **Identity file names.** A certificate identity is its DN in slash form encoded as
//! Globus and LCMAPS encode it (`gridmapdir_urlencode`): every ASCII letter or digit is kept,
//! lowercased, and every other byte becomes `%hh` (lowercase hex), so
//! `/DC=org/CN=Jane Doe` is `%2fdc%3dorg%2fcn%3djane%20doe` and a directory shared with LCMAPS
//! sees the same leases. (Globus formats a byte above 0x7f through a signed `char`, giving
//! `%ffffffc3` on x86; we write `%c3`. DNs from OpenSSL's one-line form are ASCII, so this only
//! matters for DNs with raw UTF-8.) As in LCMAPS, DNs that differ only in letter case share a
//! lease. A token identity is `~token ISSUER SUBJECT` encoded with every byte other than
//! `a-z` and `0-9` as `%hh` (upper-case letters included, so subjects that differ in case never
//! share a lease), e.g. `%7etoken%20https%3a%2f%2fcilogon%2eorg%20%48123`; its `%7e` prefix can
//! never begin a DN's name (`%2f`), and, starting with `%`, it is never taken for an account
//! file by LCMAPS. An issuer containing white space is refused. A name longer than 255 bytes
//! (the file name limit) is refused.
//!
//! **Concurrency.** Several login nodes may share the directory over NFS; the only atomic
//! operation relied on is `link(2)`. A new lease links the identity's name to an account file
//! whose link count is 1 and then reads the count again: exactly 2 means this lease won; more
//! means another identity linked the same account at the same moment, and this one unlinks its
//! name and tries the next account (so two identities never keep one account; both may back
//! off, and then the scan is repeated, a bounded number of times). `EEXIST` on the identity's
//! own name means a concurrent login of the same identity (or a retried NFS request that had
//! succeeded): the lease is looked up again. Each identity starts its scan at a position
//! derived from its name, so parallel first logins rarely meet on one account.

use std::fmt;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use thiserror::Error;

use crate::config::Config;
use crate::host::nsscache::{self, GroupEntry, IdFloor, PasswdEntry};
use crate::identity::Identity;
use crate::identity::dn::DistinguishedName;
use crate::identity::gridmap::AccountName;
use crate::identity::pool::{Pool, Pools};

/// Longest file name most file systems (and NFS) accept.
const NAME_MAX: usize = 255;
/// Full scans repeated after back-offs before a lease gives up as contended.
const ROUNDS: u32 = 40;
const TOKEN_PREFIX: &str = "~token ";

/// Why a pool operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PoolError {
    #[error("pool {pool} is full: {leased} of {total} accounts leased{}", if *.avoided > 0 { format!(", {avoided} free one(s) suspended") } else { String::new() })]
    Full {
        pool: String,
        leased: usize,
        total: usize,
        avoided: usize,
    },
    #[error("no pool named {0} is configured")]
    UnknownPool(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lease for {identity}: {reason}")]
    Identity { identity: String, reason: String },
    #[error(
        "{identity} already holds {account} from pool {held}, not from pool {wanted} (release it first: gridmap-tool pool release {account})"
    )]
    OtherPool {
        identity: String,
        account: String,
        held: String,
        wanted: String,
    },
    #[error(
        "{identity} has a lease file {} whose account file is gone or unknown (link count {nlink}); release it: gridmap-tool pool release --key {key}", path.display()
    )]
    Stale {
        identity: String,
        key: String,
        path: PathBuf,
        nlink: u64,
    },
    #[error(
        "pool {pool}: could not settle a lease for {identity} after {ROUNDS} rounds of contention"
    )]
    Contended { pool: String, identity: String },
    #[error("the NSS cache was not written: {0}")]
    NssCache(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PoolError + '_ {
    move |source| PoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write the NSS cache (`passwd`, `group`) in `dir` when its content differs from what
/// is there; `true` when a file was written. Entries of others in the cache (the portal's
/// accounts, installed by `gridmap-tool sync`) are kept, before the pool accounts; a pool
/// account or group of the same name or id replaces theirs. A cache that does not parse is
/// not kept (the next sync writes its entries again). The writer refuses what `floor`
/// refuses: a pool's own entries were checked against the floor with the configuration;
/// a kept entry it refuses (installed before the floor existed) is left out, with a
/// warning, rather than failing every lease until the next sync.
pub fn write_nss_cache(pools: &Pools, dir: &Path, floor: &IdFloor) -> Result<bool, PoolError> {
    let (pool_passwd, pool_group) = pools.nss_entries();
    let kept_passwd: Vec<PasswdEntry> = nsscache::CachedTable::<nsscache::PasswdTable>::new(dir)
        .load()
        .map(|t| {
            t.entries()
                .iter()
                .filter(|e| {
                    !pool_passwd
                        .iter()
                        .any(|p| p.name == e.name || p.uid == e.uid)
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let kept_group: Vec<GroupEntry> = nsscache::CachedTable::<nsscache::GroupTable>::new(dir)
        .load()
        .map(|t| {
            t.entries()
                .iter()
                .filter(|e| {
                    !pool_group
                        .iter()
                        .any(|p| p.name == e.name || p.gid == e.gid)
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let refused = floor.passwd_refusals(&kept_passwd);
    let kept_passwd = without_refused(kept_passwd, &refused, &dir.join(nsscache::PASSWD_FILE));
    let refused = floor.group_refusals(&kept_group);
    let kept_group = without_refused(kept_group, &refused, &dir.join(nsscache::GROUP_FILE));
    let passwd: Vec<PasswdEntry> = kept_passwd.into_iter().chain(pool_passwd).collect();
    let group: Vec<GroupEntry> = kept_group.into_iter().chain(pool_group).collect();
    let same = |file: &str, text: String| {
        std::fs::read(dir.join(file)).is_ok_and(|old| old == text.as_bytes())
    };
    let mut wrote = false;
    if !same(nsscache::PASSWD_FILE, nsscache::render_passwd(&passwd)) {
        nsscache::write_passwd(dir, &passwd, floor)
            .map_err(|e| PoolError::NssCache(e.to_string()))?;
        wrote = true;
    }
    if !same(nsscache::GROUP_FILE, nsscache::render_group(&group)) {
        nsscache::write_group(dir, &group, floor)
            .map_err(|e| PoolError::NssCache(e.to_string()))?;
        wrote = true;
    }
    Ok(wrote)
}

/// `kept` without the entries `refused` names (by index), each logged with its reason.
fn without_refused<E>(kept: Vec<E>, refused: &[(usize, String)], file: &Path) -> Vec<E> {
    for (_, why) in refused {
        tracing::warn!(
            "{}: an entry installed earlier is left out of the NSS cache: {why}",
            file.display()
        );
    }
    kept.into_iter()
        .enumerate()
        .filter(|(i, _)| !refused.iter().any(|(r, _)| r == i))
        .map(|(_, e)| e)
        .collect()
}

/// The name of an identity's lease file in the gridmapdir.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseKey(String);

impl LeaseKey {
    /// A certificate identity: its slash-form DN, LCMAPS-encoded.
    pub fn dn(dn: &DistinguishedName) -> Result<Self, PoolError> {
        let slash = dn.to_slash();
        Self::checked(lcmaps_encode(&slash), &slash)
    }

    /// A token identity: `~token ISSUER SUBJECT`, encoded case-preserving.
    pub fn token(issuer: &str, subject: &str) -> Result<Self, PoolError> {
        let who = format!("{subject} (issuer {issuer})");
        if issuer.is_empty() || issuer.contains(char::is_whitespace) {
            return Err(PoolError::Identity {
                identity: who,
                reason: "an issuer with white space cannot lease".into(),
            });
        }
        Self::checked(
            strict_encode(&format!("{TOKEN_PREFIX}{issuer} {subject}")),
            &who,
        )
    }

    /// The key of a decision's identity (OpenSSH certificates do not lease).
    pub fn of(identity: &Identity) -> Result<Self, PoolError> {
        match identity {
            Identity::Certificate(dn) => Self::dn(dn),
            Identity::Token { issuer, subject } => Self::token(issuer, subject),
            Identity::SshCertificate { .. } => Err(PoolError::Identity {
                identity: identity.to_string(),
                reason: "OpenSSH certificates do not lease pool accounts".into(),
            }),
        }
    }

    /// A name found in the gridmapdir, if it is an identity's (it starts with `%`).
    pub fn from_file_name(name: &str) -> Option<Self> {
        (name.starts_with('%') && name.len() <= NAME_MAX && !name.contains('/'))
            .then(|| Self(name.to_string()))
    }

    fn checked(name: String, who: &str) -> Result<Self, PoolError> {
        if name.len() > NAME_MAX {
            return Err(PoolError::Identity {
                identity: who.to_string(),
                reason: format!(
                    "its encoded name is {} bytes, longer than the {NAME_MAX}-byte file name limit",
                    name.len()
                ),
            });
        }
        Ok(Self(name))
    }

    /// The file name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identity in words, decoded (a DN comes back lowercased, as LCMAPS stores it).
    pub fn describe(&self) -> String {
        let decoded = decode(&self.0);
        match decoded.strip_prefix(TOKEN_PREFIX) {
            Some(rest) => match rest.split_once(' ') {
                Some((issuer, subject)) => format!("{subject} (issuer {issuer})"),
                None => decoded,
            },
            None => decoded,
        }
    }
}

impl fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Globus/LCMAPS `gridmapdir_urlencode`: ASCII letters and digits kept (lowercased), every
/// other byte as `%hh`.
pub fn lcmaps_encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() * 3);
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b.to_ascii_lowercase()));
        } else {
            let _ = write!(out, "%{b:02x}");
        }
    }
    out
}

/// Like [`lcmaps_encode`] but injective: only `a-z` and `0-9` are kept.
fn strict_encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() * 3);
    for b in raw.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02x}");
        }
    }
    out
}

fn decode(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A lease: an identity's link to a pool account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub pool: AccountName,
    pub account: AccountName,
    pub key: LeaseKey,
    /// The last login that used it (the files' modification time).
    pub last_used: SystemTime,
}

/// What a lease call did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Leased {
    pub lease: Lease,
    /// `true` for a new lease, `false` when the identity's lease was reused.
    pub new: bool,
}

/// What `explain` says about a pool, without leasing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preview {
    /// The identity holds this lease.
    Existing(Lease),
    /// A login would lease one of `free` accounts, `next` first (unless another login is faster).
    WouldLease {
        pool: AccountName,
        next: AccountName,
        free: usize,
        total: usize,
    },
}

/// One pool account and its lease, for `pool list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub pool: AccountName,
    pub account: AccountName,
    pub uid: u32,
    /// The lease, if any (`None` also when the account file does not exist yet).
    pub lease: Option<Lease>,
}

/// What to release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseTarget {
    Identity(LeaseKey),
    Account(AccountName),
}

/// The leases of pool accounts in one gridmapdir.
#[derive(Debug, Clone)]
pub struct Gridmapdir {
    dir: PathBuf,
    pools: Pools,
    nss_dir: Option<PathBuf>,
    /// What the NSS cache's writer refuses (`[mapping] nss_min_id`).
    id_floor: IdFloor,
    clock: fn() -> SystemTime,
    /// Start each identity's scan at its own position (off only to test the worst case).
    spread_scans: bool,
}

/// An account file's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    nlink: u64,
    mtime: SystemTime,
}

impl FileId {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            nlink: m.nlink(),
            mtime: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }
    fn same_file(&self, o: &Self) -> bool {
        self.dev == o.dev && self.ino == o.ino
    }
}

/// A lease file and the configured account it is linked to (`None`: none is).
type Resolved<'a> = (FileId, Option<(&'a Pool, &'a AccountName)>);

fn stat(path: &Path) -> Result<Option<FileId>, PoolError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(Some(FileId::of(&m))),
        Ok(_) => Err(PoolError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other("not a regular file"),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// FNV-1a: where an identity starts its scan (spreads parallel first logins).
fn spread(key: &LeaseKey) -> usize {
    let h = key.0.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    usize::try_from(h % 1_000_003).unwrap_or(0)
}

impl Gridmapdir {
    pub fn new(dir: &Path, pools: Pools) -> Self {
        Self {
            dir: dir.to_path_buf(),
            pools,
            nss_dir: None,
            id_floor: IdFloor::default(),
            clock: crate::clock::now,
            spread_scans: true,
        }
    }

    /// The configured gridmapdir and pools, with the NSS cache written on every change;
    /// `None` when no pool is configured.
    pub fn from_config(config: &Config) -> Result<Option<Self>, String> {
        let pools = Pools::from_config(&config.pools)
            .map_err(|(i, e)| format!("[[pool]] #{}: {e}", i + 1))?;
        if pools.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            Self::new(&config.mapping.gridmapdir, pools)
                .with_nss_cache(&config.mapping.nss_cache_dir)
                .with_id_floor(config.mapping.id_floor()),
        ))
    }

    /// Rewrite the NSS cache in `dir` after every change.
    pub fn with_nss_cache(mut self, dir: &Path) -> Self {
        self.nss_dir = Some(dir.to_path_buf());
        self
    }

    /// The NSS cache refuses what `floor` refuses [default: `IdFloor::default()`, 1000].
    pub fn with_id_floor(mut self, floor: IdFloor) -> Self {
        self.id_floor = floor;
        self
    }

    /// Read the time of a login from `clock` (tests fix it).
    pub fn with_clock(mut self, clock: fn() -> SystemTime) -> Self {
        self.clock = clock;
        self
    }

    /// Every identity scans from the first account: the most contention (for tests).
    #[cfg(test)]
    fn without_spread(mut self) -> Self {
        self.spread_scans = false;
        self
    }

    fn start(&self, key: &LeaseKey, n: usize) -> usize {
        if self.spread_scans {
            spread(key) % n
        } else {
            0
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn pool(&self, name: &str) -> Result<&Pool, PoolError> {
        self.pools
            .get(name)
            .ok_or_else(|| PoolError::UnknownPool(name.to_string()))
    }

    /// Every configured account file's identity (missing files are left out).
    fn account_files(&self) -> Result<Vec<(&Pool, &AccountName, FileId)>, PoolError> {
        let mut out = Vec::new();
        for pool in self.pools.iter() {
            for a in pool.accounts() {
                if let Some(id) = stat(&self.path(a.as_str()))? {
                    out.push((pool, a, id));
                }
            }
        }
        Ok(out)
    }

    /// The account a lease file is linked to, with its pool.
    fn resolve(&self, key: &LeaseKey) -> Result<Option<Resolved<'_>>, PoolError> {
        let Some(id) = stat(&self.path(key.as_str()))? else {
            return Ok(None);
        };
        if id.nlink < 2 {
            return Ok(Some((id, None)));
        }
        for pool in self.pools.iter() {
            for a in pool.accounts() {
                if let Some(aid) = stat(&self.path(a.as_str()))?
                    && aid.same_file(&id)
                {
                    return Ok(Some((id, Some((pool, a)))));
                }
            }
        }
        Ok(Some((id, None)))
    }

    /// The identity's lease, if it holds one (read-only).
    pub fn lookup(&self, key: &LeaseKey) -> Result<Option<Lease>, PoolError> {
        match self.resolve(key)? {
            None => Ok(None),
            Some((id, Some((pool, account)))) => Ok(Some(Lease {
                pool: pool.name().clone(),
                account: account.clone(),
                key: key.clone(),
                last_used: id.mtime,
            })),
            Some((id, None)) => Err(PoolError::Stale {
                identity: key.describe(),
                key: key.to_string(),
                path: self.path(key.as_str()),
                nlink: id.nlink,
            }),
        }
    }

    /// Like [`Self::lookup`], but waits briefly while another login of the same identity
    /// is settling its lease (link count above 2).
    fn lookup_settled(&self, key: &LeaseKey) -> Result<Option<Lease>, PoolError> {
        for attempt in 0..ROUNDS {
            match self.resolve(key)? {
                Some((id, _)) if id.nlink > 2 => {
                    std::thread::sleep(Duration::from_millis(1 + u64::from(attempt)));
                }
                _ => return self.lookup(key),
            }
        }
        self.lookup(key)
    }

    fn touch(&self, key: &LeaseKey) -> SystemTime {
        let now = (self.clock)();
        let path = self.path(key.as_str());
        if let Err(e) = std::fs::File::open(&path).and_then(|f| f.set_modified(now)) {
            // as Globus and LCMAPS: the lease stands; only its expiry age is off
            tracing::warn!("cannot set the last-use time of {}: {e}", path.display());
        }
        now
    }

    fn ensure_account_files(&self, pool: &Pool) -> Result<(), PoolError> {
        for a in pool.accounts() {
            let path = self.path(a.as_str());
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
            {
                Ok(_) => tracing::info!("created pool account file {}", path.display()),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
        Ok(())
    }

    fn check_pool(&self, lease: Lease, pool: &Pool) -> Result<Lease, PoolError> {
        if &lease.pool == pool.name() {
            Ok(lease)
        } else {
            Err(PoolError::OtherPool {
                identity: lease.key.describe(),
                account: lease.account.to_string(),
                held: lease.pool.to_string(),
                wanted: pool.name().to_string(),
            })
        }
    }

    /// The identity's lease in `pool`: its existing one (its last-use time set to now) or a
    /// new one on a free account for which `avoid` is false.
    pub fn lease(
        &self,
        pool: &str,
        key: &LeaseKey,
        avoid: &dyn Fn(&AccountName) -> bool,
    ) -> Result<Leased, PoolError> {
        let pool = self.pool(pool)?;
        let key_path = self.path(key.as_str());
        self.ensure_account_files(pool)?;
        let n = pool.accounts().len();
        let start = self.start(key, n);
        let mut full_scans = 0;
        for round in 0..ROUNDS {
            if let Some(lease) = self.lookup_settled(key)? {
                let mut lease = self.check_pool(lease, pool)?;
                lease.last_used = self.touch(key);
                return Ok(Leased { lease, new: false });
            }
            let (mut contended, mut leased, mut avoided) = (false, 0, 0);
            let mut retry_lookup = false;
            for i in 0..n {
                let account = &pool.accounts()[(start + i) % n];
                let account_path = self.path(account.as_str());
                let Some(aid) = stat(&account_path)? else {
                    contended = true; // removed under us: look again
                    continue;
                };
                match aid.nlink {
                    1 => {}
                    2 => {
                        leased += 1;
                        continue;
                    }
                    _ => {
                        leased += 1;
                        contended = true;
                        continue;
                    }
                }
                if avoid(account) {
                    avoided += 1;
                    continue;
                }
                match std::fs::hard_link(&account_path, &key_path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                        // a concurrent login of this identity, or our own link whose NFS
                        // reply was lost (link(2): check the count of the unique name)
                        match stat(&key_path)? {
                            Some(kid) if kid.same_file(&aid) && kid.nlink == 2 => {}
                            _ => {
                                retry_lookup = true;
                                break;
                            }
                        }
                    }
                    Err(e) => return Err(io(&key_path)(e)),
                }
                match stat(&key_path)? {
                    Some(kid) if kid.same_file(&aid) && kid.nlink == 2 => {
                        let last_used = self.touch(key);
                        self.write_nss()?;
                        tracing::info!(
                            "leased {account} (pool {}) to {}",
                            pool.name(),
                            key.describe()
                        );
                        return Ok(Leased {
                            lease: Lease {
                                pool: pool.name().clone(),
                                account: account.clone(),
                                key: key.clone(),
                                last_used,
                            },
                            new: true,
                        });
                    }
                    Some(kid) if kid.same_file(&aid) => {
                        // another identity linked the same account at the same moment
                        std::fs::remove_file(&key_path).map_err(io(&key_path))?;
                        contended = true;
                        leased += 1;
                    }
                    _ => {
                        retry_lookup = true;
                        break;
                    }
                }
            }
            // full only after two quiet scans in a row: between two logins that both backed
            // off from one account, a scan may see it leased for a moment
            if !contended && !retry_lookup {
                full_scans += 1;
            } else {
                full_scans = 0;
            }
            if full_scans == 2 {
                return Err(PoolError::Full {
                    pool: pool.name().to_string(),
                    leased,
                    total: n,
                    avoided,
                });
            }
            // back off a little, differently for each identity
            let jitter = u64::try_from(spread(key) % 7).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(1 + jitter + u64::from(round % 8)));
        }
        Err(PoolError::Contended {
            pool: pool.name().to_string(),
            identity: key.describe(),
        })
    }

    /// What a login would get from `pool`, without leasing or touching anything.
    pub fn preview(
        &self,
        pool: &str,
        key: &LeaseKey,
        avoid: &dyn Fn(&AccountName) -> bool,
    ) -> Result<Preview, PoolError> {
        let pool = self.pool(pool)?;
        if let Some(lease) = self.lookup(key)? {
            return self.check_pool(lease, pool).map(Preview::Existing);
        }
        let n = pool.accounts().len();
        let start = spread(key) % n;
        let (mut next, mut free, mut leased, mut avoided) = (None, 0, 0, 0);
        for i in 0..n {
            let account = &pool.accounts()[(start + i) % n];
            let free_now = match stat(&self.path(account.as_str()))? {
                None => true, // created at the first lease
                Some(id) => id.nlink == 1,
            };
            if !free_now {
                leased += 1;
            } else if avoid(account) {
                avoided += 1;
            } else {
                free += 1;
                next = next.or(Some(account));
            }
        }
        match next {
            Some(next) => Ok(Preview::WouldLease {
                pool: pool.name().clone(),
                next: next.clone(),
                free,
                total: n,
            }),
            None => Err(PoolError::Full {
                pool: pool.name().to_string(),
                leased,
                total: n,
                avoided,
            }),
        }
    }

    /// The identity names in the directory, by file identity.
    fn lease_files(&self) -> Result<Vec<(LeaseKey, FileId)>, PoolError> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(io(&self.dir))?;
        for entry in entries {
            let entry = entry.map_err(io(&self.dir))?;
            let Some(key) = entry
                .file_name()
                .to_str()
                .and_then(LeaseKey::from_file_name)
            else {
                continue;
            };
            if let Some(id) = stat(&entry.path())? {
                out.push((key, id));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Every pool account and its lease, in configuration order.
    pub fn list(&self) -> Result<Vec<AccountState>, PoolError> {
        let leases = self.lease_files()?;
        let mut out = Vec::new();
        for pool in self.pools.iter() {
            for (a, uid) in pool.accounts().iter().zip(pool.first_uid()..) {
                let lease = match stat(&self.path(a.as_str()))? {
                    Some(aid) if aid.nlink >= 2 => leases
                        .iter()
                        .find(|(_, id)| id.same_file(&aid))
                        .map(|(key, id)| Lease {
                            pool: pool.name().clone(),
                            account: a.clone(),
                            key: key.clone(),
                            last_used: id.mtime,
                        }),
                    _ => None,
                };
                out.push(AccountState {
                    pool: pool.name().clone(),
                    account: a.clone(),
                    uid,
                    lease,
                });
            }
        }
        Ok(out)
    }

    /// Identity files whose account file is gone or not a configured account (reported by
    /// `pool list`; LCMAPS leases of pools not configured here show up as well).
    pub fn unattached(&self) -> Result<Vec<LeaseKey>, PoolError> {
        let accounts = self.account_files()?;
        Ok(self
            .lease_files()?
            .into_iter()
            .filter(|(_, id)| !accounts.iter().any(|(_, _, a)| a.same_file(id)))
            .map(|(k, _)| k)
            .collect())
    }

    /// Remove a lease (by identity, or by account); the released lease, if there was one.
    pub fn release(&self, target: &ReleaseTarget) -> Result<Option<Lease>, PoolError> {
        let released = match target {
            ReleaseTarget::Identity(key) => {
                let lease = match self.lookup(key) {
                    Ok(l) => l,
                    Err(PoolError::Stale { .. }) => None,
                    Err(e) => return Err(e),
                };
                let path = self.path(key.as_str());
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(io(&path)(e)),
                }
                lease
            }
            ReleaseTarget::Account(account) => {
                let Some(state) = self.list()?.into_iter().find(|s| &s.account == account) else {
                    return Err(PoolError::UnknownPool(format!(
                        "(no configured pool has account {account})"
                    )));
                };
                let Some(lease) = state.lease else {
                    return Ok(None);
                };
                let path = self.path(lease.key.as_str());
                std::fs::remove_file(&path).map_err(io(&path))?;
                Some(lease)
            }
        };
        if let Some(l) = &released {
            tracing::info!(
                "released {} (pool {}) from {}",
                l.account,
                l.pool,
                l.key.describe()
            );
            self.write_nss()?;
        }
        Ok(released)
    }

    /// Release every lease not used for longer than `older_than`; the released leases.
    pub fn expire(&self, older_than: Duration) -> Result<Vec<Lease>, PoolError> {
        let now = (self.clock)();
        let old = |t: SystemTime| now.duration_since(t).is_ok_and(|age| age > older_than);
        let mut released = Vec::new();
        for state in self.list()? {
            let Some(lease) = state.lease else { continue };
            if !old(lease.last_used) {
                continue;
            }
            // read again right before removing: a login may just have reused it
            match self.lookup(&lease.key) {
                Ok(Some(now_lease))
                    if now_lease.account == lease.account && old(now_lease.last_used) =>
                {
                    let path = self.path(lease.key.as_str());
                    match std::fs::remove_file(&path) {
                        Ok(()) => released.push(now_lease),
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(io(&path)(e)),
                    }
                }
                _ => {}
            }
        }
        if !released.is_empty() {
            self.write_nss()?;
        }
        Ok(released)
    }

    /// Write the NSS cache if one is configured and its content changed.
    pub fn write_nss(&self) -> Result<(), PoolError> {
        if let Some(dir) = &self.nss_dir {
            write_nss_cache(&self.pools, dir, &self.id_floor)?;
        }
        Ok(())
    }
}

/// A granted pool account and how it came about, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolGrant {
    pub account: AccountName,
    pub reason: String,
}

/// What the [`crate::identity::mapping::Mapper`] asks of pools: a lease for a login, or a read-only
/// preview for `explain`.
pub trait PoolLeaser: fmt::Debug + Send + Sync {
    /// Lease (or reuse the identity's lease) from `pool`, never an account `avoid` names.
    fn lease(
        &self,
        pool: &AccountName,
        key: &LeaseKey,
        avoid: &dyn Fn(&AccountName) -> bool,
    ) -> Result<PoolGrant, PoolError>;
    /// What a login would get, changing nothing.
    fn preview(
        &self,
        pool: &AccountName,
        key: &LeaseKey,
        avoid: &dyn Fn(&AccountName) -> bool,
    ) -> Result<PoolGrant, PoolError>;
    /// The identity's existing lease, changing nothing.
    fn existing(&self, key: &LeaseKey) -> Result<Option<Lease>, PoolError>;
}

/// RFC 3339 in UTC, for messages.
pub fn format_time(t: SystemTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(crate::clock::unix_seconds(t))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "(unknown time)".into())
}

impl PoolLeaser for Gridmapdir {
    fn lease(
        &self,
        pool: &AccountName,
        key: &LeaseKey,
        avoid: &dyn Fn(&AccountName) -> bool,
    ) -> Result<PoolGrant, PoolError> {
        let l = Gridmapdir::lease(self, pool.as_str(), key, avoid)?;
        let reason = if l.new {
            format!(
                "leased {} from pool {pool} (new lease in {})",
                l.lease.account,
                self.dir.display()
            )
        } else {
            format!("reuses its lease of {} from pool {pool}", l.lease.account)
        };
        Ok(PoolGrant {
            account: l.lease.account,
            reason,
        })
    }

    fn preview(
        &self,
        pool: &AccountName,
        key: &LeaseKey,
        avoid: &dyn Fn(&AccountName) -> bool,
    ) -> Result<PoolGrant, PoolError> {
        match Gridmapdir::preview(self, pool.as_str(), key, avoid)? {
            Preview::Existing(l) => Ok(PoolGrant {
                reason: format!(
                    "holds a lease of {} from pool {pool} (last used {})",
                    l.account,
                    format_time(l.last_used)
                ),
                account: l.account,
            }),
            Preview::WouldLease {
                pool,
                next,
                free,
                total,
            } => Ok(PoolGrant {
                reason: format!(
                    "no lease yet: a login would lease from pool {pool} ({free} of {total} free; next free: {next}); explain does not lease"
                ),
                account: next,
            }),
        }
    }

    fn existing(&self, key: &LeaseKey) -> Result<Option<Lease>, PoolError> {
        self.lookup(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::pool::PoolConfig;
    use crate::identity::pool::tests::pool_config;

    fn fixed_clock() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn dir_with(pools: &[PoolConfig]) -> (tempfile::TempDir, Gridmapdir) {
        let tmp = tempfile::tempdir().unwrap();
        let gmd = tmp.path().join("gridmapdir");
        std::fs::create_dir(&gmd).unwrap();
        let g = Gridmapdir::new(&gmd, Pools::from_config(pools).unwrap())
            .with_nss_cache(tmp.path())
            .with_clock(fixed_clock);
        (tmp, g)
    }

    fn dn(s: &str) -> LeaseKey {
        LeaseKey::dn(&DistinguishedName::parse(s).unwrap()).unwrap()
    }

    const NONE: &dyn Fn(&AccountName) -> bool = &|_| false;

    #[test]
    fn the_pool_writer_keeps_the_portals_accounts_in_the_nss_cache() {
        let (tmp, g) = dir_with(&[pool_config("atlas", 2, 20000)]);
        let portal = PasswdEntry {
            name: AccountName::parse("jdoe").unwrap(),
            uid: 60001,
            gid: 60001,
            gecos: "Jane Doe (portal)".into(),
            dir: "/home/jdoe".into(),
            shell: "/bin/bash".into(),
        };
        let portal_group = GroupEntry {
            name: AccountName::parse("jdoe").unwrap(),
            gid: 60001,
            members: vec![],
        };
        let floor = IdFloor::default();
        nsscache::write_passwd(tmp.path(), std::slice::from_ref(&portal), &floor).unwrap();
        nsscache::write_group(tmp.path(), std::slice::from_ref(&portal_group), &floor).unwrap();
        // a lease rewrites the cache: the portal's entries stay, the pool's are added
        let leased = g.lease("atlas", &dn("/O=Grid/CN=Jane"), NONE).unwrap();
        assert!(leased.new);
        let passwd = nsscache::CachedTable::<nsscache::PasswdTable>::new(tmp.path());
        assert_eq!(passwd.find_name("jdoe").unwrap(), Some(portal));
        assert_eq!(
            passwd.find_name("atlas001").unwrap().map(|e| e.uid),
            Some(20000)
        );
        let group = nsscache::CachedTable::<nsscache::GroupTable>::new(tmp.path());
        assert_eq!(group.find_name("jdoe").unwrap(), Some(portal_group));
        assert!(group.find_name("atlas").unwrap().is_some());
    }

    #[test]
    fn the_pool_writer_leaves_out_system_entries_and_refuses_a_system_group() {
        let (tmp, g) = dir_with(&[pool_config("atlas", 2, 20000)]);
        // a cache installed before the floor existed: the portal's jdoe, a uid-500 account and
        // a group adding jdoe to gid 10 (written past the writer, as an old version did)
        let passwd =
            "jdoe:x:60001:60001::/home/jdoe:/bin/bash\nold:x:500:60001::/home/old:/bin/sh\n";
        let group = "jdoe:x:60001:\nwheel2:x:10:jdoe\n";
        for (file, body) in [
            (nsscache::PASSWD_FILE, passwd),
            (nsscache::GROUP_FILE, group),
        ] {
            let text = if file == nsscache::PASSWD_FILE {
                nsscache::render_passwd(&nsscache::parse_passwd_lines(body).unwrap())
            } else {
                nsscache::render_group(&nsscache::parse_group_lines(body).unwrap())
            };
            crate::host::atomic_file::write_atomic(&tmp.path().join(file), text.as_bytes())
                .unwrap();
        }
        let _ = g.lease("atlas", &dn("/O=Grid/CN=Jane"), NONE).unwrap();
        let passwd = nsscache::CachedTable::<nsscache::PasswdTable>::new(tmp.path());
        assert!(passwd.find_name("jdoe").unwrap().is_some());
        assert!(passwd.find_name("atlas001").unwrap().is_some());
        assert_eq!(passwd.find_name("old").unwrap(), None);
        let group = nsscache::CachedTable::<nsscache::GroupTable>::new(tmp.path());
        assert!(group.find_name("jdoe").unwrap().is_some());
        assert_eq!(group.find_id(10).unwrap(), None);

        // a pool whose group is a system group by name: the NSS cache is never written, and
        // the lease that would need it fails with the reason
        let mut sudo = pool_config("staff", 2, 30000);
        sudo.group = Some("sudo".into());
        let (tmp, g) = dir_with(&[sudo]);
        let g = g
            .with_id_floor(IdFloor::default().with_group_database(|n| (n == "sudo").then_some(27)));
        let e = g
            .lease("staff", &dn("/O=Grid/CN=Jane"), NONE)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 1: group sudo (gid 30000) is the system group sudo (gid 27"),
            "{e}"
        );
        assert!(!tmp.path().join(nsscache::GROUP_FILE).exists());
    }

    #[test]
    fn dn_encoding_matches_lcmaps() {
        assert_eq!(
            lcmaps_encode("/DC=org/DC=cilogon/C=US/O=X/CN=Jane Doe A1"),
            "%2fdc%3dorg%2fdc%3dcilogon%2fc%3dus%2fo%3dx%2fcn%3djane%20doe%20a1"
        );
        assert_eq!(lcmaps_encode("a-b_c.d@e"), "a%2db%5fc%2ed%40e");
        assert_eq!(lcmaps_encode("é"), "%c3%a9");
        assert_eq!(dn("/O=Grid/CN=Jane").as_str(), "%2fo%3dgrid%2fcn%3djane");
        // as in LCMAPS, DNs differing only in case share a name
        assert_eq!(dn("/O=Grid/CN=JANE"), dn("/O=Grid/CN=jane"));
        assert_eq!(dn("/O=Grid/CN=Jane").describe(), "/o=grid/cn=jane");
    }

    #[test]
    fn token_encoding_is_distinct_and_case_preserving() {
        let k = LeaseKey::token("https://cilogon.org", "Ab1").unwrap();
        assert_eq!(k.as_str(), "%7etoken%20https%3a%2f%2fcilogon%2eorg%20%41b1");
        assert_ne!(k, LeaseKey::token("https://cilogon.org", "ab1").unwrap());
        assert_eq!(k.describe(), "Ab1 (issuer https://cilogon.org)");
        assert!(!k.as_str().starts_with("%2f"));
        assert!(LeaseKey::token("https://x y", "s").is_err());
        let long = "x".repeat(300);
        let e = LeaseKey::token("https://i", &long).unwrap_err().to_string();
        assert!(e.contains("file name limit"), "{e}");
        assert!(LeaseKey::from_file_name("atlas001").is_none());
        assert!(LeaseKey::from_file_name("%2fo%3dx").is_some());
    }

    #[test]
    fn lease_reuse_release_and_full_pool() {
        let (tmp, g) = dir_with(&[pool_config("atlas", 3, 20000)]);
        let jane = dn("/O=Grid/CN=Jane");
        let first = g.lease("atlas", &jane, NONE).unwrap();
        assert!(first.new);
        assert_eq!(first.lease.last_used, fixed_clock());
        // the same identity keeps its lease
        let again = g.lease("atlas", &jane, NONE).unwrap();
        assert!(!again.new);
        assert_eq!(again.lease.account, first.lease.account);
        // a hard link: link count 2, same inode
        let a = std::fs::metadata(g.dir().join(first.lease.account.as_str())).unwrap();
        let k = std::fs::metadata(g.dir().join(jane.as_str())).unwrap();
        assert_eq!((a.nlink(), a.ino()), (2, k.ino()));
        assert_eq!(
            g.lookup(&jane).unwrap().unwrap().account,
            first.lease.account
        );

        let others: Vec<_> = ["/O=Grid/CN=a", "/O=Grid/CN=b"]
            .iter()
            .map(|d| g.lease("atlas", &dn(d), NONE).unwrap().lease.account)
            .collect();
        assert!(!others.contains(&first.lease.account) && others[0] != others[1]);
        let e = g.lease("atlas", &dn("/O=Grid/CN=c"), NONE).unwrap_err();
        assert_eq!(e.to_string(), "pool atlas is full: 3 of 3 accounts leased");
        assert!(matches!(
            g.preview("atlas", &dn("/O=Grid/CN=c"), NONE),
            Err(PoolError::Full { .. })
        ));

        // release by identity and by account
        let released = g.release(&ReleaseTarget::Identity(jane.clone())).unwrap();
        assert_eq!(released.unwrap().account, first.lease.account);
        assert!(g.lookup(&jane).unwrap().is_none());
        assert_eq!(
            g.release(&ReleaseTarget::Identity(jane.clone())).unwrap(),
            None
        );
        let r = g
            .release(&ReleaseTarget::Account(others[0].clone()))
            .unwrap()
            .unwrap();
        assert_eq!(r.key, dn("/O=Grid/CN=a"));
        let listed = g.list().unwrap();
        assert_eq!(listed.len(), 3);
        assert_eq!(listed.iter().filter(|s| s.lease.is_some()).count(), 1);

        // the NSS cache holds every pool account, leased or not
        let passwd = std::fs::read_to_string(tmp.path().join("passwd")).unwrap();
        assert!(
            passwd.starts_with(
                "atlas001:x:20000:20000:pool account of atlas:/home/atlas001:/bin/bash\n"
            ),
            "{passwd}"
        );
        assert!(passwd.contains("atlas003:x:20002:"));
        let group = std::fs::read_to_string(tmp.path().join("group")).unwrap();
        assert!(
            group.starts_with("atlas:x:20000:atlas001,atlas002,atlas003\n"),
            "{group}"
        );
    }

    #[test]
    fn preview_changes_nothing_and_avoid_is_honoured() {
        let (_tmp, g) = dir_with(&[pool_config("atlas", 2, 20000)]);
        let k = dn("/O=Grid/CN=Jane");
        let p = g.preview("atlas", &k, NONE).unwrap();
        assert!(
            matches!(
                p,
                Preview::WouldLease {
                    free: 2,
                    total: 2,
                    ..
                }
            ),
            "{p:?}"
        );
        assert!(g.lookup(&k).unwrap().is_none());
        assert_eq!(std::fs::read_dir(g.dir()).unwrap().count(), 0);
        // never an avoided (suspended) account
        let avoid = |a: &AccountName| a.as_str() == "atlas001";
        assert_eq!(
            g.lease("atlas", &k, &avoid).unwrap().lease.account.as_str(),
            "atlas002"
        );
        let e = g
            .lease("atlas", &dn("/O=Grid/CN=x"), &avoid)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "pool atlas is full: 1 of 2 accounts leased, 1 free one(s) suspended"
        );
        assert!(matches!(
            g.preview("atlas", &k, NONE).unwrap(),
            Preview::Existing(_)
        ));
    }

    #[test]
    fn a_lease_in_another_pool_or_a_stale_file_refuses() {
        let (_tmp, g) = dir_with(&[pool_config("atlas", 2, 20000), pool_config("cms", 2, 30000)]);
        let k = dn("/O=Grid/CN=Jane");
        let _ = g.lease("cms", &k, NONE).unwrap();
        let e = g.lease("atlas", &k, NONE).unwrap_err().to_string();
        assert!(e.contains("already holds cms"), "{e}");
        // the account file removed under a lease: the identity's file is stale
        let stale = dn("/O=Grid/CN=Old");
        let l = g.lease("atlas", &stale, NONE).unwrap();
        std::fs::remove_file(g.dir().join(l.lease.account.as_str())).unwrap();
        let e = g.lease("atlas", &stale, NONE).unwrap_err().to_string();
        assert!(e.contains("gridmap-tool pool release"), "{e}");
        assert_eq!(g.unattached().unwrap(), vec![stale.clone()]);
        g.release(&ReleaseTarget::Identity(stale.clone())).unwrap();
        assert!(g.lease("atlas", &stale, NONE).unwrap().new);
    }

    #[test]
    fn expiry_releases_only_old_leases() {
        let (_tmp, g) = dir_with(&[pool_config("atlas", 3, 20000)]);
        let old = dn("/O=Grid/CN=old");
        let fresh = dn("/O=Grid/CN=fresh");
        let _ = g.lease("atlas", &old, NONE).unwrap();
        let _ = g.lease("atlas", &fresh, NONE).unwrap();
        let day = Duration::from_secs(86400);
        std::fs::File::open(g.dir().join(old.as_str()))
            .unwrap()
            .set_modified(fixed_clock() - 31 * day)
            .unwrap();
        let expired = g.expire(30 * day).unwrap();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].key, old);
        assert!(g.lookup(&old).unwrap().is_none());
        assert!(g.lookup(&fresh).unwrap().is_some());
        assert!(g.expire(30 * day).unwrap().is_empty());
    }

    #[test]
    fn parallel_first_leases_never_share_an_account() {
        let (_tmp, g) = dir_with(&[pool_config("atlas", 40, 20000)]);
        fifty_into_forty(&g);
    }

    #[test]
    fn parallel_first_leases_all_scanning_from_the_same_account() {
        let (_tmp, g) = dir_with(&[pool_config("atlas", 40, 20000)]);
        fifty_into_forty(&g.without_spread());
    }

    fn fifty_into_forty(g: &Gridmapdir) {
        let results: Vec<Result<Leased, PoolError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..50)
                .map(|i| {
                    s.spawn(move || g.lease("atlas", &dn(&format!("/O=Grid/CN=user {i}")), NONE))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut accounts: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|l| l.lease.account.to_string()))
            .collect();
        let full: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(ToString::to_string))
            .collect();
        accounts.sort();
        accounts.dedup();
        assert_eq!(accounts.len(), 40, "{full:?}");
        assert_eq!(full.len(), 10, "{full:?}");
        for f in &full {
            assert_eq!(f, "pool atlas is full: 40 of 40 accounts leased");
        }
        // every winner keeps its account on the next login
        for (i, r) in results.iter().enumerate() {
            if let Ok(l) = r {
                let again = g
                    .lease("atlas", &dn(&format!("/O=Grid/CN=user {i}")), NONE)
                    .unwrap();
                assert_eq!(again.lease.account, l.lease.account);
                assert!(!again.new);
            }
        }
    }
}
