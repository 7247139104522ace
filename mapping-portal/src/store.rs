//! The portal's database: SQLite (a file, the default) or PostgreSQL, with the same SQL.
//!
//! Both go through sqlx's `Any` driver, so every query is written once (`$1` parameters,
//! which SQLite and PostgreSQL both read) and runs on both; only the migrations differ
//! (ids: `INTEGER PRIMARY KEY` in SQLite, identity columns in PostgreSQL).
//!
//! Every change goes through [`Store::change`]: one transaction applies it, writes its audit
//! row, bumps the export serial and builds the export from the new state; when the export
//! would not parse on a node, the transaction is rolled back and the change refused.

use std::borrow::Cow;
use std::time::SystemTime;

use hpccert_core::clock::unix_seconds;
use hpccert_core::host::nsscache::IdFloor;
use hpccert_core::identity::gridmap::AccountName;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyConnection, AnyPool, Row};

use crate::export::{self, Bundle, ExportState};
use crate::model::{
    Account, Actor, Approval, AuditEntry, CertificateProof, Change, IdentityKey, IdentityProfile,
    IssuedCertificate, Link, LinkState, RevokedCertificate, StoreError, Suspension,
    SuspensionTarget,
};

/// The migrations of `migrations/BACKEND/`, embedded (as `sqlx::migrate!` would, without
/// compiling sqlx's proc-macro crate): `(version, description, SQL)`.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "portal",
        include_str!("../migrations/sqlite/0001_portal.sql"),
    ),
    (
        2,
        "links linked_by",
        include_str!("../migrations/sqlite/0002_links_linked_by.sql"),
    ),
    (
        3,
        "ssh certificates",
        include_str!("../migrations/sqlite/0003_ssh_certificates.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "portal",
        include_str!("../migrations/postgres/0001_portal.sql"),
    ),
    (
        2,
        "links linked_by",
        include_str!("../migrations/postgres/0002_links_linked_by.sql"),
    ),
    (
        3,
        "ssh certificates",
        include_str!("../migrations/postgres/0003_ssh_certificates.sql"),
    ),
];

fn migrator(backend: Backend) -> Migrator {
    let list = match backend {
        Backend::Sqlite => SQLITE_MIGRATIONS,
        Backend::Postgres => POSTGRES_MIGRATIONS,
    };
    Migrator {
        migrations: list
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    Cow::Borrowed(*sql),
                    false,
                )
            })
            .collect(),
        ..Migrator::DEFAULT
    }
}

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// From the URL's scheme.
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::Invalid(
                "database must be sqlite://PATH?mode=rwc or postgres://... (the URL is not shown: it may hold a password)".into(),
            ))
        }
    }
}

/// The portal's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// What the export's NSS tables are checked against (`[mapping] nss_min_id`).
    id_floor: IdFloor,
}

fn id(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v} is not a 32-bit id")))
}

fn account_name(s: &str) -> Result<AccountName, StoreError> {
    AccountName::parse(s).map_err(|e| StoreError::Corrupt(format!("account {s:?}: {e}")))
}

impl Store {
    /// Connect (creating an SQLite file when the URL says `mode=rwc`) and run the migrations.
    pub async fn open(url: &str, now: SystemTime) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let options: AnyConnectOptions = url.parse()?;
        // SQLite: one connection, so that writers queue instead of failing with "busy"
        let max = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => 8,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .connect_with(options)
            .await?;
        migrator(backend).run(&pool).await?;
        // a new database: its export was "generated" when it was made
        sqlx::query("UPDATE export_state SET changed = $1 WHERE serial = 0 AND changed = 0")
            .bind(unix_seconds(now))
            .execute(&pool)
            .await?;
        Ok(Self {
            pool,
            backend,
            id_floor: IdFloor::default(),
        })
    }

    /// Refuse a change whose export has an NSS account or group in the system range of
    /// `floor` [default: `IdFloor::default()`, 1000 and this host's group database].
    pub fn with_id_floor(mut self, floor: IdFloor) -> Self {
        self.id_floor = floor;
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Close the pool (waits for connections in use).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Apply one change: the change, its audit row and the serial bump in one transaction,
    /// committed only if the resulting export parses. Returns the new export.
    pub async fn change(
        &self,
        actor: &Actor,
        change: &Change,
        now: SystemTime,
    ) -> Result<Bundle, StoreError> {
        let at = unix_seconds(now);
        let mut tx = self.pool.begin().await?;
        // the serial bump first: in PostgreSQL it locks the row, so changes run one by one
        let serial: i64 = sqlx::query(
            "UPDATE export_state SET serial = serial + 1, changed = $1 WHERE id = 1 RETURNING serial",
        )
        .bind(at)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let detail = apply(&mut tx, actor, change, at).await?;
        sqlx::query(
            "INSERT INTO audit (at, actor, action, target, from_addr, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(at)
        .bind(&actor.name)
        .bind(change.action())
        .bind(change.target())
        .bind(actor.from_addr.clone())
        .bind(format!("serial {serial}{detail}"))
        .execute(&mut *tx)
        .await?;
        let bundle = export::build(&read_export_state(&mut tx).await?, &self.id_floor)?;
        tx.commit().await?;
        tracing::info!(
            target: "audit",
            actor = %actor.name,
            from = actor.from_addr.as_deref().unwrap_or("-"),
            action = change.action(),
            target_ = %change.target(),
            serial,
            "portal change"
        );
        Ok(bundle)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT serial FROM export_state WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(())
    }

    /// The export of the current state.
    pub async fn export(&self) -> Result<Bundle, StoreError> {
        let mut conn = self.pool.acquire().await?;
        export::build(&read_export_state(&mut conn).await?, &self.id_floor)
    }

    /// Links whose account, issuer, subject/DN, email, name or eppn contains `search`
    /// (case-insensitive); every link without a search.
    pub async fn links(&self, search: Option<&str>) -> Result<Vec<Link>, StoreError> {
        let pattern = format!("%{}%", escape_like(search.unwrap_or("")).to_lowercase());
        let rows = sqlx::query(&format!(
            "{LINK_COLUMNS} \
             WHERE LOWER(l.account) LIKE $1 ESCAPE '\\' OR LOWER(i.issuer) LIKE $1 ESCAPE '\\' \
                OR LOWER(i.subject) LIKE $1 ESCAPE '\\' OR LOWER(COALESCE(i.email, '')) LIKE $1 ESCAPE '\\' \
                OR LOWER(COALESCE(i.name, '')) LIKE $1 ESCAPE '\\' OR LOWER(COALESCE(i.eppn, '')) LIKE $1 ESCAPE '\\' \
             ORDER BY l.account, i.id, l.id"
        ))
        .bind(pattern)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(link_of_row).collect()
    }

    /// The links of one identity (an exact match on the unique key: an index lookup).
    pub async fn links_of(&self, identity: &IdentityKey) -> Result<Vec<Link>, StoreError> {
        let rows = sqlx::query(&format!(
            "{LINK_COLUMNS} WHERE i.kind = $1 AND i.issuer = $2 AND i.subject = $3 \
             ORDER BY l.account, l.id"
        ))
        .bind(identity.kind().as_str())
        .bind(identity.issuer())
        .bind(identity.subject())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(link_of_row).collect()
    }

    /// The links of one identity that `actor` (an [`Actor`]'s name) made.
    pub async fn links_made_by(
        &self,
        identity: &IdentityKey,
        actor: &str,
    ) -> Result<Vec<Link>, StoreError> {
        let rows = sqlx::query(&format!(
            "{LINK_COLUMNS} WHERE i.kind = $1 AND i.issuer = $2 AND i.subject = $3 \
             AND l.linked_by = $4 ORDER BY l.account, l.id"
        ))
        .bind(identity.kind().as_str())
        .bind(identity.issuer())
        .bind(identity.subject())
        .bind(actor)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(link_of_row).collect()
    }

    /// The certificate DNs that have a link made by `actor` (an [`Actor`]'s name).
    pub async fn dns_linked_by(&self, actor: &str) -> Result<Vec<IdentityKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT i.kind, i.issuer, i.subject FROM links l \
             JOIN identities i ON i.id = l.identity_id \
             WHERE l.linked_by = $1 AND i.kind = 'dn' ORDER BY i.subject",
        )
        .bind(actor)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                IdentityKey::from_columns(&r.try_get::<String, _>(0)?, r.try_get(1)?, r.try_get(2)?)
            })
            .collect()
    }

    /// Every suspension, oldest first.
    pub async fn suspensions(&self) -> Result<Vec<Suspension>, StoreError> {
        let rows = sqlx::query(
            "SELECT i.kind, i.issuer, i.subject, s.account, s.reason, s.suspended_by, s.at \
             FROM suspensions s LEFT JOIN identities i ON i.id = s.identity_id ORDER BY s.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Suspension {
                    target: suspension_target(r)?,
                    reason: r.try_get(4)?,
                    by: r.try_get(5)?,
                    at: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// The newest `limit` audit rows, newest first.
    pub async fn audit(&self, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, actor, action, target, from_addr, detail FROM audit ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: r.try_get(0)?,
                    actor: r.try_get(1)?,
                    action: r.try_get(2)?,
                    target: r.try_get(3)?,
                    from_addr: r.try_get(4)?,
                    detail: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// Record an issued SSH certificate and its audit row, in one transaction (the export
    /// does not change: the serial stays).
    pub async fn record_certificate(&self, cert: &IssuedCertificate) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO ssh_certificates (serial, identity_kind, identity_issuer, identity_subject, \
             accounts, key_fingerprint, ca_fingerprint, key_id, valid_after, valid_before, source_addr, \
             proof, issued_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(cert.serial.to_string())
        .bind(cert.identity.kind().as_str())
        .bind(cert.identity.issuer())
        .bind(cert.identity.subject())
        .bind(cert.accounts.join(","))
        .bind(&cert.key_fingerprint)
        .bind(&cert.ca_fingerprint)
        .bind(&cert.key_id)
        .bind(cert.valid_after)
        .bind(cert.valid_before)
        .bind(cert.source_addr.clone())
        .bind(cert.proof.as_str())
        .bind(cert.issued_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO audit (at, actor, action, target, from_addr, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(cert.issued_at)
        .bind(cert.identity.to_string())
        .bind("issue-ssh-certificate")
        .bind(cert.accounts.join(","))
        .bind(cert.source_addr.clone())
        .bind(format!(
            "serial {} key {} valid until {} proof {}",
            cert.serial,
            cert.key_fingerprint,
            cert.valid_before,
            cert.proof.as_str()
        ))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// An audit row that changes nothing else (a refused certificate request).
    pub async fn audit_event(
        &self,
        at: i64,
        actor: &str,
        action: &str,
        target: &str,
        from_addr: Option<&str>,
        detail: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit (at, actor, action, target, from_addr, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(at)
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(from_addr.map(str::to_string))
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every certificate issued, newest first.
    pub async fn certificates(&self) -> Result<Vec<IssuedCertificate>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, identity_kind, identity_issuer, identity_subject, accounts, key_fingerprint, \
             ca_fingerprint, key_id, valid_after, valid_before, source_addr, proof, issued_at, revoked_at, \
             revoked_reason FROM ssh_certificates ORDER BY issued_at DESC, serial",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let serial: String = r.try_get(0)?;
                let proof: String = r.try_get(11)?;
                let accounts: String = r.try_get(4)?;
                Ok(IssuedCertificate {
                    serial: serial.parse().map_err(|_| {
                        StoreError::Corrupt(format!("ssh_certificates.serial {serial:?}"))
                    })?,
                    identity: IdentityKey::from_columns(
                        &r.try_get::<String, _>(1)?,
                        r.try_get(2)?,
                        r.try_get(3)?,
                    )?,
                    accounts: accounts.split(',').map(str::to_string).collect(),
                    key_fingerprint: r.try_get(5)?,
                    ca_fingerprint: r.try_get(6)?,
                    key_id: r.try_get(7)?,
                    valid_after: r.try_get(8)?,
                    valid_before: r.try_get(9)?,
                    source_addr: r.try_get(10)?,
                    proof: match proof.as_str() {
                        "token" => CertificateProof::Token,
                        "portal-session" => CertificateProof::PortalSession,
                        "x509" => CertificateProof::X509,
                        other => {
                            return Err(StoreError::Corrupt(format!(
                                "ssh_certificates.proof {other:?}"
                            )));
                        }
                    },
                    issued_at: r.try_get(12)?,
                    revoked_at: r.try_get(13)?,
                    revoked_reason: r.try_get(14)?,
                })
            })
            .collect()
    }

    /// The portal-managed accounts, by uid.
    pub async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        read_accounts(&mut conn).await
    }
}

/// The columns [`link_of_row`] reads.
const LINK_COLUMNS: &str = "SELECT i.kind, i.issuer, i.subject, i.idp, i.email, i.name, i.eppn, \
     l.account, l.state, l.created, l.approved_by \
     FROM links l JOIN identities i ON i.id = l.identity_id";

fn link_of_row(r: &sqlx::any::AnyRow) -> Result<Link, StoreError> {
    Ok(Link {
        identity: IdentityKey::from_columns(
            &r.try_get::<String, _>(0)?,
            r.try_get(1)?,
            r.try_get(2)?,
        )?,
        profile: IdentityProfile {
            idp: r.try_get(3)?,
            email: r.try_get(4)?,
            name: r.try_get(5)?,
            eppn: r.try_get(6)?,
        },
        account: r.try_get(7)?,
        state: LinkState::from_column(&r.try_get::<String, _>(8)?)?,
        created: r.try_get(9)?,
        approved_by: r.try_get(10)?,
    })
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Columns: kind, issuer, subject (NULL for an account), account.
fn suspension_target(r: &sqlx::any::AnyRow) -> Result<SuspensionTarget, StoreError> {
    let account: Option<String> = r.try_get(3)?;
    let kind: Option<String> = r.try_get(0)?;
    match (account, kind) {
        (Some(a), None) => Ok(SuspensionTarget::Account(account_name(&a)?)),
        (None, Some(kind)) => Ok(SuspensionTarget::Identity(IdentityKey::from_columns(
            &kind,
            r.try_get(1)?,
            r.try_get(2)?,
        )?)),
        _ => Err(StoreError::Corrupt(
            "a suspension names both or neither an identity and an account".into(),
        )),
    }
}

async fn read_accounts(conn: &mut AnyConnection) -> Result<Vec<Account>, StoreError> {
    let rows = sqlx::query("SELECT name, uid, gid, gecos, home, shell FROM users ORDER BY uid")
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Account {
                name: account_name(&r.try_get::<String, _>(0)?)?,
                uid: id(r.try_get(1)?, "uid")?,
                gid: id(r.try_get(2)?, "gid")?,
                gecos: r.try_get(3)?,
                home: r.try_get(4)?,
                shell: r.try_get(5)?,
            })
        })
        .collect()
}

async fn read_export_state(conn: &mut AnyConnection) -> Result<ExportState, StoreError> {
    let row = sqlx::query("SELECT serial, changed FROM export_state WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let serial: i64 = row.try_get(0)?;
    let changed: i64 = row.try_get(1)?;
    let accounts = read_accounts(conn).await?;
    let links = sqlx::query(
        "SELECT i.kind, i.issuer, i.subject, l.account FROM links l \
         JOIN identities i ON i.id = l.identity_id WHERE l.state = 'active' ORDER BY i.id, l.id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let active_links = links
        .iter()
        .map(|r| {
            Ok((
                IdentityKey::from_columns(
                    &r.try_get::<String, _>(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                )?,
                r.try_get(3)?,
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let rows = sqlx::query(
        "SELECT i.kind, i.issuer, i.subject, s.account FROM suspensions s \
         LEFT JOIN identities i ON i.id = s.identity_id ORDER BY s.id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let suspensions = rows
        .iter()
        .map(suspension_target)
        .collect::<Result<Vec<_>, _>>()?;
    // expired certificates drop out of the KRL
    let revoked = sqlx::query(
        "SELECT serial, ca_fingerprint, valid_before FROM ssh_certificates \
         WHERE revoked_at IS NOT NULL AND valid_before > $1 ORDER BY serial",
    )
    .bind(changed)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        let serial: String = r.try_get(0)?;
        Ok(RevokedCertificate {
            serial: serial
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("ssh_certificates.serial {serial:?}")))?,
            ca_fingerprint: r.try_get(1)?,
            valid_before: r.try_get(2)?,
        })
    })
    .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(ExportState {
        serial,
        changed,
        accounts,
        active_links,
        suspensions,
        revoked,
    })
}

async fn identity_id(
    conn: &mut AnyConnection,
    key: &IdentityKey,
) -> Result<Option<i64>, StoreError> {
    let row =
        sqlx::query("SELECT id FROM identities WHERE kind = $1 AND issuer = $2 AND subject = $3")
            .bind(key.kind().as_str())
            .bind(key.issuer())
            .bind(key.subject())
            .fetch_optional(&mut *conn)
            .await?;
    Ok(match row {
        Some(r) => Some(r.try_get(0)?),
        None => None,
    })
}

async fn existing_identity(conn: &mut AnyConnection, key: &IdentityKey) -> Result<i64, StoreError> {
    identity_id(conn, key)
        .await?
        .ok_or_else(|| StoreError::NoSuchIdentity(key.clone()))
}

async fn link_state(
    conn: &mut AnyConnection,
    identity: i64,
    account: &AccountName,
) -> Result<Option<LinkState>, StoreError> {
    let row = sqlx::query("SELECT state FROM links WHERE identity_id = $1 AND account = $2")
        .bind(identity)
        .bind(account.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(r) => Ok(Some(LinkState::from_column(&r.try_get::<String, _>(0)?)?)),
        None => Ok(None),
    }
}

/// Apply the change inside the transaction; the text is added to the audit row's detail.
async fn apply(
    conn: &mut AnyConnection,
    actor: &Actor,
    change: &Change,
    at: i64,
) -> Result<String, StoreError> {
    match change {
        Change::CreateAccount(a) => {
            let clash = sqlx::query(
                "SELECT name, uid, gid FROM users WHERE name = $1 OR uid = $2 OR gid = $3",
            )
            .bind(a.name.as_str())
            .bind(i64::from(a.uid))
            .bind(i64::from(a.gid))
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(r) = clash {
                let owner: String = r.try_get(0)?;
                return Err(if owner == a.name.as_str() {
                    StoreError::AccountExists(a.name.clone())
                } else if r.try_get::<i64, _>(1)? == i64::from(a.uid) {
                    StoreError::UidInUse { uid: a.uid, owner }
                } else {
                    StoreError::GidInUse { gid: a.gid, owner }
                });
            }
            sqlx::query(
                "INSERT INTO users (name, uid, gid, gecos, home, shell, created) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(a.name.as_str())
            .bind(i64::from(a.uid))
            .bind(i64::from(a.gid))
            .bind(&a.gecos)
            .bind(&a.home)
            .bind(&a.shell)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            Ok(format!(", uid {} gid {}", a.uid, a.gid))
        }
        Change::Link {
            identity,
            profile,
            account,
            approval,
        } => {
            let id = match identity_id(conn, identity).await? {
                Some(id) => {
                    sqlx::query(
                        "UPDATE identities SET idp = COALESCE($1, idp), email = COALESCE($2, email), \
                         name = COALESCE($3, name), eppn = COALESCE($4, eppn) WHERE id = $5",
                    )
                    .bind(profile.idp.clone())
                    .bind(profile.email.clone())
                    .bind(profile.name.clone())
                    .bind(profile.eppn.clone())
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                    id
                }
                None => sqlx::query(
                    "INSERT INTO identities (kind, issuer, subject, idp, email, name, eppn, created) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                )
                .bind(identity.kind().as_str())
                .bind(identity.issuer())
                .bind(identity.subject())
                .bind(profile.idp.clone())
                .bind(profile.email.clone())
                .bind(profile.name.clone())
                .bind(profile.eppn.clone())
                .bind(at)
                .fetch_one(&mut *conn)
                .await?
                .try_get(0)?,
            };
            if let Some(state) = link_state(conn, id, account).await? {
                return Err(StoreError::AlreadyLinked {
                    identity: identity.clone(),
                    account: account.clone(),
                    state: state.as_str(),
                });
            }
            let (state, approved_by) = match approval {
                Approval::Immediate => (LinkState::Active, Some(actor.name.clone())),
                Approval::AwaitAdmin => (LinkState::Pending, None),
            };
            sqlx::query(
                "INSERT INTO links (identity_id, account, state, created, approved_by, linked_by) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(account.as_str())
            .bind(state.as_str())
            .bind(at)
            .bind(approved_by)
            .bind(actor.name.clone())
            .execute(&mut *conn)
            .await?;
            Ok(format!(", {}", state.as_str()))
        }
        Change::Approve { identity, account } => {
            let id = existing_identity(conn, identity).await?;
            match link_state(conn, id, account).await? {
                None => Err(StoreError::NoSuchLink {
                    identity: identity.clone(),
                    account: account.clone(),
                }),
                Some(LinkState::Active) => Err(StoreError::AlreadyActive {
                    identity: identity.clone(),
                    account: account.clone(),
                }),
                Some(LinkState::Pending) => {
                    sqlx::query(
                        "UPDATE links SET state = 'active', approved_by = $1 WHERE identity_id = $2 AND account = $3",
                    )
                    .bind(&actor.name)
                    .bind(id)
                    .bind(account.as_str())
                    .execute(&mut *conn)
                    .await?;
                    Ok(String::new())
                }
            }
        }
        Change::Unlink { identity, account } => {
            let id = existing_identity(conn, identity).await?;
            let done = sqlx::query("DELETE FROM links WHERE identity_id = $1 AND account = $2")
                .bind(id)
                .bind(account.as_str())
                .execute(&mut *conn)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NoSuchLink {
                    identity: identity.clone(),
                    account: account.clone(),
                });
            }
            Ok(String::new())
        }
        Change::Suspend { target, reason } => {
            let (identity, account) = suspension_columns(conn, target).await?;
            let exists =
                sqlx::query("SELECT id FROM suspensions WHERE identity_id = $1 OR account = $2")
                    .bind(identity)
                    .bind(account.clone())
                    .fetch_optional(&mut *conn)
                    .await?;
            if exists.is_some() {
                return Err(StoreError::AlreadySuspended(target.clone()));
            }
            sqlx::query(
                "INSERT INTO suspensions (identity_id, account, reason, suspended_by, at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(identity)
            .bind(account)
            .bind(reason)
            .bind(&actor.name)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            // every unexpired SSH certificate of the identity, or naming the account, is
            // revoked with it (an unsuspension does not bring them back)
            let why = format!("suspended: {target}: {reason}");
            let revoked = match target {
                SuspensionTarget::Identity(k) => {
                    sqlx::query(
                        "UPDATE ssh_certificates SET revoked_at = $1, revoked_reason = $2 \
                         WHERE revoked_at IS NULL AND valid_before > $1 AND identity_kind = $3 \
                         AND identity_issuer = $4 AND identity_subject = $5",
                    )
                    .bind(at)
                    .bind(&why)
                    .bind(k.kind().as_str())
                    .bind(k.issuer())
                    .bind(k.subject())
                    .execute(&mut *conn)
                    .await?
                }
                SuspensionTarget::Account(a) => {
                    sqlx::query(
                        "UPDATE ssh_certificates SET revoked_at = $1, revoked_reason = $2 \
                         WHERE revoked_at IS NULL AND valid_before > $1 \
                         AND (',' || accounts || ',') LIKE ('%,' || $3 || ',%')",
                    )
                    .bind(at)
                    .bind(&why)
                    .bind(a.as_str())
                    .execute(&mut *conn)
                    .await?
                }
            }
            .rows_affected();
            Ok(if revoked > 0 {
                format!(", reason: {reason}, {revoked} SSH certificate(s) revoked")
            } else {
                format!(", reason: {reason}")
            })
        }
        Change::RevokeCertificate { serial, reason } => {
            let done = sqlx::query(
                "UPDATE ssh_certificates SET revoked_at = $1, revoked_reason = $2 \
                 WHERE serial = $3 AND revoked_at IS NULL",
            )
            .bind(at)
            .bind(format!("revoked by {}: {reason}", actor.name))
            .bind(serial.to_string())
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NoSuchCertificate(*serial));
            }
            Ok(format!(", reason: {reason}"))
        }
        Change::Unsuspend { target } => {
            let (identity, account) = suspension_columns(conn, target).await?;
            let done =
                sqlx::query("DELETE FROM suspensions WHERE identity_id = $1 OR account = $2")
                    .bind(identity)
                    .bind(account)
                    .execute(&mut *conn)
                    .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotSuspended(target.clone()));
            }
            Ok(String::new())
        }
    }
}

/// `(identity_id, account)` of a suspension row; an identity must be known to the portal.
async fn suspension_columns(
    conn: &mut AnyConnection,
    target: &SuspensionTarget,
) -> Result<(Option<i64>, Option<String>), StoreError> {
    Ok(match target {
        SuspensionTarget::Identity(key) => (Some(existing_identity(conn, key).await?), None),
        SuspensionTarget::Account(a) => (None, Some(a.as_str().to_string())),
    })
}
