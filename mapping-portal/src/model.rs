//! What the portal stores, in the domain's words, and the changes it accepts.
//!
//! Every value here is checked when it is made ("parse, don't validate"): an identity key
//! has a non-empty issuer and subject, a DN is parsed and kept in its slash form, an account
//! name is an [`AccountName`]. The store only ever sees checked values.

use std::fmt;

use hpccert_core::identity::dn::DistinguishedName;
use hpccert_core::identity::gridmap::AccountName;
use thiserror::Error;

/// What kind of identity: a token identity `(iss, sub)` or a certificate DN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityKind {
    Token,
    Dn,
}

impl IdentityKind {
    /// The value in the `identities.kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Dn => "dn",
        }
    }

    pub(crate) fn from_column(s: &str) -> Result<Self, StoreError> {
        match s {
            "token" => Ok(Self::Token),
            "dn" => Ok(Self::Dn),
            other => Err(StoreError::Corrupt(format!(
                "identities.kind is {other:?} (expected token or dn)"
            ))),
        }
    }
}

/// Which identity: unique per (kind, issuer, subject). A DN has an empty issuer (the
/// grid-mapfile names no issuer) and its subject is the DN in slash form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdentityKey {
    kind: IdentityKind,
    issuer: String,
    subject: String,
}

impl IdentityKey {
    /// A token identity; the issuer and subject are compared exactly, as a node does.
    pub fn token(issuer: &str, subject: &str) -> Result<Self, StoreError> {
        if issuer.is_empty() || subject.is_empty() {
            return Err(StoreError::Invalid(format!(
                "a token identity needs an issuer and a subject (got issuer {issuer:?}, subject {subject:?})"
            )));
        }
        Ok(Self {
            kind: IdentityKind::Token,
            issuer: issuer.to_string(),
            subject: subject.to_string(),
        })
    }

    /// A certificate DN, in slash or RFC 4514 form; kept in slash form.
    pub fn dn(dn: &str) -> Result<Self, StoreError> {
        let parsed = DistinguishedName::parse(dn)
            .map_err(|e| StoreError::Invalid(format!("DN {dn:?}: {e}")))?;
        if parsed.is_empty() {
            return Err(StoreError::Invalid("an empty DN".into()));
        }
        Ok(Self {
            kind: IdentityKind::Dn,
            issuer: String::new(),
            subject: parsed.to_slash(),
        })
    }

    pub(crate) fn from_columns(
        kind: &str,
        issuer: String,
        subject: String,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            kind: IdentityKind::from_column(kind)?,
            issuer,
            subject,
        })
    }

    pub fn kind(&self) -> IdentityKind {
        self.kind
    }
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    /// The token subject, or the DN in slash form.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

impl fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            IdentityKind::Token => write!(f, "token {:?} {:?}", self.issuer, self.subject),
            IdentityKind::Dn => write!(f, "dn {:?}", self.subject),
        }
    }
}

/// What the identity provider told about the person (shown to admins, never exported).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityProfile {
    pub idp: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub eppn: Option<String>,
}

/// A portal-managed account: exported as NSS passwd and group lines (a private group of the
/// same name and gid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: AccountName,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

/// Whether a new link takes effect at once or waits for an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    Immediate,
    AwaitAdmin,
}

/// A link's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Active,
    /// Awaiting an admin's approval; not exported.
    Pending,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Pending => "pending",
        }
    }

    pub(crate) fn from_column(s: &str) -> Result<Self, StoreError> {
        match s {
            "active" => Ok(Self::Active),
            "pending" => Ok(Self::Pending),
            other => Err(StoreError::Corrupt(format!(
                "links.state is {other:?} (expected active or pending)"
            ))),
        }
    }
}

/// Who or what a suspension names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuspensionTarget {
    Identity(IdentityKey),
    Account(AccountName),
}

impl fmt::Display for SuspensionTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Identity(k) => k.fmt(f),
            Self::Account(a) => write!(f, "account {a}"),
        }
    }
}

/// Who makes a change, and from where (for the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub from_addr: Option<String>,
}

impl Actor {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            from_addr: None,
        }
    }
}

/// Every change the portal accepts; [`crate::store::Store::change`] applies one, writes its
/// audit row and bumps the export serial in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new portal-managed account.
    CreateAccount(Account),
    /// Link an identity (created if new; its profile updated otherwise) to an account.
    Link {
        identity: IdentityKey,
        profile: IdentityProfile,
        account: AccountName,
        approval: Approval,
    },
    /// Make a pending link active.
    Approve {
        identity: IdentityKey,
        account: AccountName,
    },
    Unlink {
        identity: IdentityKey,
        account: AccountName,
    },
    Suspend {
        target: SuspensionTarget,
        reason: String,
    },
    Unsuspend {
        target: SuspensionTarget,
    },
    /// Revoke one SSH certificate the CA issued (an admin's revoke): it goes into the KRL.
    RevokeCertificate {
        serial: u64,
        reason: String,
    },
}

impl Change {
    /// The audit log's name for the change.
    pub fn action(&self) -> &'static str {
        match self {
            Self::CreateAccount(_) => "create-account",
            Self::Link { .. } => "link",
            Self::Approve { .. } => "approve",
            Self::Unlink { .. } => "unlink",
            Self::Suspend { .. } => "suspend",
            Self::Unsuspend { .. } => "unsuspend",
            Self::RevokeCertificate { .. } => "revoke-ssh-certificate",
        }
    }

    /// The audit log's target.
    pub fn target(&self) -> String {
        match self {
            Self::CreateAccount(a) => format!("account {}", a.name),
            Self::Link {
                identity, account, ..
            }
            | Self::Approve { identity, account }
            | Self::Unlink { identity, account } => format!("{identity} -> {account}"),
            Self::Suspend { target, .. } | Self::Unsuspend { target } => target.to_string(),
            Self::RevokeCertificate { serial, .. } => format!("ssh certificate serial {serial}"),
        }
    }
}

/// One link as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub identity: IdentityKey,
    pub profile: IdentityProfile,
    pub account: String,
    pub state: LinkState,
    pub created: i64,
    pub approved_by: Option<String>,
}

/// One suspension as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspension {
    pub target: SuspensionTarget,
    pub reason: String,
    pub by: String,
    pub at: i64,
}

/// One audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub from_addr: Option<String>,
    pub detail: String,
}

/// Why the store refused or failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("no identity {0} is known to the portal")]
    NoSuchIdentity(IdentityKey),
    #[error("{identity} is not linked to account {account}")]
    NoSuchLink {
        identity: IdentityKey,
        account: AccountName,
    },
    #[error("{identity} is already linked to account {account} ({state})")]
    AlreadyLinked {
        identity: IdentityKey,
        account: AccountName,
        state: &'static str,
    },
    #[error("the link of {identity} to account {account} is already active")]
    AlreadyActive {
        identity: IdentityKey,
        account: AccountName,
    },
    #[error("account {0} already exists")]
    AccountExists(AccountName),
    #[error("uid {uid} already belongs to account {owner}")]
    UidInUse { uid: u32, owner: String },
    #[error("gid {gid} is already the group of account {owner}")]
    GidInUse { gid: u32, owner: String },
    #[error("{0} is already suspended")]
    AlreadySuspended(SuspensionTarget),
    #[error("no unrevoked SSH certificate has serial {0}")]
    NoSuchCertificate(u64),
    #[error("{0} is not suspended")]
    NotSuspended(SuspensionTarget),
    #[error("the change would publish a {file} that a login node refuses: {reason}")]
    ExportRefused { file: &'static str, reason: String },
    #[error("the database holds something this build cannot read: {0}")]
    Corrupt(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// How a caller proved who it is to the SSH CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateProof {
    /// A bearer access token from a configured issuer.
    Token,
    /// The portal's own browser session.
    PortalSession,
    /// An X.509 certificate or proxy that signed a challenge.
    X509,
}

impl CertificateProof {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::PortalSession => "portal-session",
            Self::X509 => "x509",
        }
    }
}

/// A revoked certificate that has not expired: what the KRL lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedCertificate {
    pub serial: u64,
    pub ca_fingerprint: String,
    pub valid_before: i64,
}

/// An OpenSSH certificate the SSH CA issued (a row of `ssh_certificates`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub serial: u64,
    pub identity: IdentityKey,
    pub accounts: Vec<String>,
    pub key_fingerprint: String,
    pub ca_fingerprint: String,
    pub key_id: String,
    pub valid_after: i64,
    pub valid_before: i64,
    pub source_addr: Option<String>,
    pub proof: CertificateProof,
    pub issued_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
}
