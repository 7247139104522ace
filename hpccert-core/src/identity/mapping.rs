//! The decision engine: a verified identity and a requested login name become a
//! [`Decision`] (the account, and why) or a [`Refusal`] (why not).
//!
//! Every front end (sshd-gsi, the PAM module, `gridmap-tool explain`) asks this engine, so
//! they all decide the same way and explain it in the same words.
//!
//! Rules for certificate identities (grid-mapfile):
//! * the identity is the end-entity DN of the verified chain (proxies map as their owner);
//! * with no requested account, the first account of the DN's line is used;
//! * a requested account must be one the line lists;
//! * a pool entry (`.atlas`) is served by a [`PoolLeaser`] ([`crate::identity::gridmapdir::Gridmapdir`]): with
//!   no requested account and a pool first on the line, or with the pool's name as the login
//!   name (`ssh atlas@host`), the identity's lease (an existing one, or a new one) gives the
//!   account; the leased account itself may also be requested. Without a leaser (no pool
//!   configured) such a login is refused ([`Refusal::PoolUnavailable`]). `explain` uses
//!   [`Mapper::with_pool_preview`]: it reports the existing lease or what a login would
//!   lease, and never leases.
//!
//! The suspension list ([`crate::identity::suspension`]) is checked for every kind of credential: a
//! suspended identity is refused before any mapping, a suspended account after it (and a new
//! lease never picks a suspended account). A list that cannot be read or parsed refuses every
//! login.
//!
//! Rules for token identities `(iss, sub)` ([`Mapper::decide_token`]), in this order:
//! 1. authorisation of the issuer's [`TokenRules`]: every required scope held (a storage
//!    scope covers the paths below it), and at least one required group when groups are
//!    configured (`wlcg.groups`, `groups`, `isMemberOf`, `eduperson_entitlement`);
//! 2. the token map ([`crate::identity::tokenmap`]): a rule for `(iss, sub)` gives the accounts;
//! 3. otherwise the issuer's username claim (`preferred_username`, `eppn`, ...): a value
//!    with `@domain` counts only for a configured domain and gives its local part; the name
//!    must be a valid POSIX account name and not a reserved or system account;
//! 4. the requested account must be one of those; the first is the default.

use std::fmt;

use thiserror::Error;

use crate::config::{Config, IssuerConfig};
use crate::identity::Identity;
use crate::identity::dn::DistinguishedName;
use crate::identity::gridmap::{AccountName, GridMapfile, MappedAccount};
use crate::identity::gridmapdir::{LeaseKey, PoolError, PoolLeaser};
use crate::identity::restriction::{Applied, RestrictionError, Restrictions, Source};
use crate::identity::suspension::{SuspensionError, SuspensionList};
use crate::identity::tokenmap::TokenMapfile;
use crate::token::{Capability, VerifiedToken};
use crate::trust::x509::VerifiedChain;

/// Why no account was granted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("DN not in grid-mapfile: {dn}")]
    NotMapped { dn: String },
    #[error("account {requested} is not mapped to {dn} (allowed: {})", allowed.join(", "))]
    AccountNotAllowed {
        dn: String,
        requested: String,
        allowed: Vec<String>,
    },
    #[error("invalid login name {requested:?}: {reason}")]
    BadLoginName { requested: String, reason: String },
    #[error(
        "{dn} maps to pool .{pool}, but no pool is configured here (a [[pool]] table named {pool:?})"
    )]
    PoolUnavailable { dn: String, pool: String },
    #[error("pool {pool} is full: {leased} of {total} accounts leased{}", if *.suspended > 0 { format!(", {suspended} free one(s) suspended") } else { String::new() })]
    PoolFull {
        pool: String,
        leased: usize,
        total: usize,
        suspended: usize,
    },
    #[error("no account from pool {pool} for {identity}: {reason}")]
    PoolLease {
        identity: String,
        pool: String,
        reason: String,
    },
    #[error("{what} is suspended ({entry})")]
    Suspended { what: String, entry: String },
    #[error("cannot tell who is suspended, so every login is refused: {reason}")]
    SuspensionListUnusable { reason: String },
    #[error("{identity} may not log in from {from} (allowed: {allowed}; {rule})")]
    SourceNotAllowed {
        identity: String,
        from: String,
        allowed: String,
        rule: String,
    },
    #[error("cannot tell what the restrictions file says, so every login is refused: {reason}")]
    RestrictionsUnusable { reason: String },
    #[error("token of {issuer} subject {subject} is not mapped: {reason}")]
    TokenNotMapped {
        issuer: String,
        subject: String,
        reason: String,
    },
    #[error("account {requested} is not mapped to {identity} (allowed: {})", allowed.join(", "))]
    TokenAccountNotAllowed {
        identity: String,
        requested: String,
        allowed: Vec<String>,
    },
    #[error("certificate {key_id:?} is not valid for account {requested} (principals: {})", principals.join(", "))]
    NotAPrincipal {
        key_id: String,
        requested: String,
        principals: Vec<String>,
    },
    #[error("token lacks required scope {required} (it has: {held})")]
    MissingScope { required: String, held: String },
    #[error("token is in none of the required groups {} (it has: {held})", required.join(", "))]
    NotInGroup { required: Vec<String>, held: String },
}

/// Names that a claim rule never maps to, whatever the token says.
pub const RESERVED_ACCOUNTS: &[&str] = &[
    "root",
    "toor",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "sshd",
    "admin",
    "administrator",
    "operator",
    "adm",
    "wheel",
    "sudo",
    "systemd-network",
    "messagebus",
];

/// How one issuer's tokens map and what they must allow (from its `[[issuer]]` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRules {
    pub issuer: String,
    /// A claim that names the account, when the token map has no rule.
    pub username_claim: Option<String>,
    /// Domains whose `user@domain` claim values map to `user`; values of other domains map
    /// to nothing.
    pub username_domains: Vec<String>,
    /// Every one of these must be held.
    pub required_scopes: Vec<Capability>,
    /// At least one of these must be held, when not empty.
    pub required_groups: Vec<String>,
    /// Claim-derived accounts with a uid below this are refused (system accounts).
    pub min_uid: u32,
}

impl TokenRules {
    /// How an `[[issuer]]`'s tokens map to accounts.
    pub fn of_issuer(issuer: &IssuerConfig) -> Self {
        Self {
            issuer: issuer.issuer.clone(),
            username_claim: issuer.username_claim.clone(),
            username_domains: issuer.username_domains.clone(),
            required_scopes: issuer.login_scopes(),
            required_groups: issuer.required_groups.clone(),
            min_uid: issuer.min_uid,
        }
    }

    /// The rules of every trusted issuer of `config`.
    pub fn of_config(config: &Config) -> Vec<Self> {
        config.issuers.iter().map(Self::of_issuer).collect()
    }

    pub fn new(issuer: &str) -> Self {
        Self {
            issuer: issuer.to_string(),
            username_claim: None,
            username_domains: Vec::new(),
            required_scopes: Vec::new(),
            required_groups: Vec::new(),
            min_uid: 1000,
        }
    }
}

/// The uid of a local account (a parameter so tests decide what exists).
pub type UidLookup = fn(&str) -> Option<u32>;

/// The system's account database.
pub fn system_uid(name: &str) -> Option<u32> {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

/// The account an identity may use, and the reasons, before any credential is involved
/// (what `gridmap-tool explain --dn` shows).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct AccountChoice {
    account: AccountName,
    reasons: Vec<String>,
    /// Why this choice read more than the mapping files (see [`Decision::not_reusable`]).
    live: Option<&'static str>,
}

impl AccountChoice {
    pub fn account(&self) -> &AccountName {
        &self.account
    }
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }
}

/// Why a decision read a pool's leases (see [`Decision::not_reusable`]).
const LEASED: &str = "it leases a pool account (the lease is renewed at each login)";
/// Why a decision read the account database (see [`Decision::not_reusable`]).
const CLAIMED: &str =
    "its account comes from a token claim (looked up in the account database at each login)";

/// A granted login: only [`Mapper::decide`] makes one, and only from a [`VerifiedChain`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Decision {
    account: AccountName,
    identity: Identity,
    credential: String,
    proxy_depth: usize,
    capabilities: Vec<Capability>,
    reasons: Vec<String>,
    /// What the restrictions file holds this login to (empty when nothing).
    restrictions: Applied,
    /// Why the decision read more than its files (see [`Decision::not_reusable`]).
    live: Option<&'static str>,
}

impl Decision {
    pub fn account(&self) -> &AccountName {
        &self.account
    }
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
    /// What a token allows (empty for certificates, which carry no scopes).
    pub fn capabilities(&self) -> &[Capability] {
        &self.capabilities
    }
    /// Fingerprint of the credential that was verified.
    pub fn credential(&self) -> &str {
        &self.credential
    }
    pub fn proxy_depth(&self) -> usize {
        self.proxy_depth
    }
    /// Every step of the decision, in words.
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }
    /// The restrictions the session must honour (forced command, no PTY, session limit).
    pub fn restrictions(&self) -> &Applied {
        &self.restrictions
    }
    /// Why the same credential would not get this decision again just because the files it
    /// read (grid-mapfile, token map, suspension list, restrictions) are unchanged: it leased
    /// a pool account (a lease is renewed, or given again, at each login) or took its account
    /// from a token claim (looked up in the account database, which has no generation). None:
    /// the decision depends only on the credential, the requested name, the client address
    /// and those files, so a login daemon may reuse it while they are unchanged.
    pub fn not_reusable(&self) -> Option<&'static str> {
        self.live
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.identity, self.account)
    }
}

/// How the engine may use pools.
#[derive(Debug, Clone, Copy)]
enum PoolAccess<'a> {
    /// No pool configured: pool entries are refused.
    None,
    /// Logins lease.
    Lease(&'a dyn PoolLeaser),
    /// `explain`: report, never lease.
    Preview(&'a dyn PoolLeaser),
}

/// The engine over one set of mapping sources.
#[derive(Debug, Clone, Copy)]
pub struct Mapper<'a> {
    gridmap: &'a GridMapfile,
    token_map: Option<&'a TokenMapfile>,
    token_rules: &'a [TokenRules],
    uid_of: UidLookup,
    pools: PoolAccess<'a>,
    suspensions: Option<&'a Result<SuspensionList, SuspensionError>>,
    restrictions: Option<&'a Result<Restrictions, RestrictionError>>,
    /// The client's address, checked against `from=`.
    from: Source,
}

impl<'a> Mapper<'a> {
    pub fn new(gridmap: &'a GridMapfile) -> Self {
        Self {
            gridmap,
            token_map: None,
            token_rules: &[],
            uid_of: system_uid,
            pools: PoolAccess::None,
            suspensions: None,
            restrictions: None,
            from: Source::NotChecked,
        }
    }

    /// Hold logins to `list`'s restrictions, for a client at `from`; an unusable list
    /// (`Err`) refuses every login.
    pub fn with_restrictions(
        mut self,
        list: &'a Result<Restrictions, RestrictionError>,
        from: Source,
    ) -> Self {
        self.restrictions = Some(list);
        self.from = from;
        self
    }

    /// The decision with the restrictions that apply to it, or the refusal they make.
    fn restrict(&self, mut decision: Decision) -> Result<Decision, Refusal> {
        let list = match self.restrictions {
            None => return Ok(decision),
            Some(Err(e)) => {
                return Err(Refusal::RestrictionsUnusable {
                    reason: e.to_string(),
                });
            }
            Some(Ok(list)) => list,
        };
        let applied = list
            .applied(&decision.identity, &decision.account)
            .map_err(|reason| Refusal::RestrictionsUnusable { reason })?;
        if applied.is_empty() {
            return Ok(decision);
        }
        match self.from {
            Source::Known(addr) => {
                if let Some((rule, nets)) = applied.refuses(addr) {
                    return Err(Refusal::SourceNotAllowed {
                        identity: decision.identity.to_string(),
                        from: addr.to_canonical().to_string(),
                        allowed: nets
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        rule: rule.to_string(),
                    });
                }
            }
            Source::Unknown if !applied.from.is_empty() => {
                let (rule, nets) = &applied.from[0];
                return Err(Refusal::SourceNotAllowed {
                    identity: decision.identity.to_string(),
                    from: "an unknown address".into(),
                    allowed: nets
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    rule: rule.clone(),
                });
            }
            Source::NotChecked if !applied.from.is_empty() => decision
                .reasons
                .push("the client's address is not known here: from= not checked".into()),
            Source::Unknown | Source::NotChecked => {}
        }
        decision.reasons.push(format!(
            "restricted: {} ({})",
            applied.describe(),
            applied.rules.join(", ")
        ));
        decision.restrictions = applied;
        Ok(decision)
    }

    /// Lease pool accounts for logins through `leaser`.
    pub fn with_pools(mut self, leaser: &'a dyn PoolLeaser) -> Self {
        self.pools = PoolAccess::Lease(leaser);
        self
    }

    /// Report pool leases without leasing (`explain`).
    pub fn with_pool_preview(mut self, leaser: &'a dyn PoolLeaser) -> Self {
        self.pools = PoolAccess::Preview(leaser);
        self
    }

    /// Refuse what `list` suspends; an unusable list (`Err`) refuses every login.
    pub fn with_suspensions(mut self, list: &'a Result<SuspensionList, SuspensionError>) -> Self {
        self.suspensions = Some(list);
        self
    }

    /// Refuse a suspended identity (or every identity when the list is unusable).
    fn check_identity(
        &self,
        identity: &Identity,
        reasons: &mut Vec<String>,
    ) -> Result<(), Refusal> {
        match self.suspensions {
            None => Ok(()),
            Some(Err(e)) => Err(Refusal::SuspensionListUnusable {
                reason: e.to_string(),
            }),
            Some(Ok(list)) => match list.identity(identity) {
                Some(entry) => Err(Refusal::Suspended {
                    what: identity.to_string(),
                    entry: list.locate(entry),
                }),
                None => {
                    if let Some(path) = list.path() {
                        reasons.push(format!(
                            "not suspended ({}: {} entr{})",
                            path.display(),
                            list.entries().len(),
                            if list.entries().len() == 1 {
                                "y"
                            } else {
                                "ies"
                            }
                        ));
                    }
                    Ok(())
                }
            },
        }
    }

    /// Refuse a suspended account.
    fn check_account(&self, account: &AccountName) -> Result<(), Refusal> {
        match self.suspensions {
            None => Ok(()),
            Some(Err(e)) => Err(Refusal::SuspensionListUnusable {
                reason: e.to_string(),
            }),
            Some(Ok(list)) => match list.account(account) {
                Some(entry) => Err(Refusal::Suspended {
                    what: format!("account {account}"),
                    entry: list.locate(entry),
                }),
                None => Ok(()),
            },
        }
    }

    fn suspended_account(&self, account: &AccountName) -> bool {
        self.check_account(account).is_err()
    }

    /// The account `identity` gets from `pool`: its lease (new or reused), or in preview
    /// what a login would get.
    fn pool_account(
        &self,
        identity: &Identity,
        pool: &AccountName,
        reasons: &mut Vec<String>,
    ) -> Result<AccountName, Refusal> {
        let (leaser, preview) = match self.pools {
            PoolAccess::None => {
                return Err(Refusal::PoolUnavailable {
                    dn: identity.to_string(),
                    pool: pool.to_string(),
                });
            }
            PoolAccess::Lease(l) => (l, false),
            PoolAccess::Preview(l) => (l, true),
        };
        let refusal = |e: PoolError| match e {
            PoolError::Full {
                pool,
                leased,
                total,
                avoided,
            } => Refusal::PoolFull {
                pool,
                leased,
                total,
                suspended: avoided,
            },
            other => Refusal::PoolLease {
                identity: identity.to_string(),
                pool: pool.to_string(),
                reason: other.to_string(),
            },
        };
        let key = LeaseKey::of(identity).map_err(refusal)?;
        let avoid = |a: &AccountName| self.suspended_account(a);
        let grant = if preview {
            leaser.preview(pool, &key, &avoid)
        } else {
            leaser.lease(pool, &key, &avoid)
        }
        .map_err(refusal)?;
        reasons.push(grant.reason);
        Ok(grant.account)
    }

    /// Pick the account among a mapping's `targets` (local accounts and pools).
    fn pick(
        &self,
        identity: &Identity,
        targets: &[MappedAccount],
        requested: Option<&str>,
        reasons: &mut Vec<String>,
        not_allowed: &dyn Fn(&str) -> Refusal,
    ) -> Result<(AccountName, Option<&'static str>), Refusal> {
        let mut live = None;
        let account = match requested {
            None => match targets.first() {
                Some(MappedAccount::Local(a)) => {
                    reasons.push(format!("no login name requested: the first account, {a}"));
                    a.clone()
                }
                Some(MappedAccount::Pool(p)) => {
                    reasons.push(format!(
                        "no login name requested: the first target, pool .{p}"
                    ));
                    live = Some(LEASED);
                    self.pool_account(identity, p, reasons)?
                }
                None => return Err(not_allowed("")),
            },
            Some(name) => {
                let wanted = AccountName::parse(name).map_err(|reason| Refusal::BadLoginName {
                    requested: name.to_string(),
                    reason,
                })?;
                if targets.contains(&MappedAccount::Local(wanted.clone())) {
                    reasons.push(format!(
                        "requested account {wanted} is listed for this identity"
                    ));
                    wanted
                } else if targets.contains(&MappedAccount::Pool(wanted.clone())) {
                    reasons.push(format!(
                        "login name {wanted} asks for its account from pool .{wanted}"
                    ));
                    live = Some(LEASED);
                    self.pool_account(identity, &wanted, reasons)?
                } else if let Some(pool) = self.leased_pool(identity, targets, &wanted) {
                    reasons.push(format!(
                        "requested account {wanted} is its lease from pool .{pool}"
                    ));
                    live = Some(LEASED);
                    let account = self.pool_account(identity, &pool, reasons)?;
                    if account != wanted {
                        return Err(not_allowed(name));
                    }
                    account
                } else {
                    return Err(not_allowed(name));
                }
            }
        };
        self.check_account(&account)?;
        Ok((account, live))
    }

    /// The listed pool from which `identity` holds a lease of `account`, if any.
    fn leased_pool(
        &self,
        identity: &Identity,
        targets: &[MappedAccount],
        account: &AccountName,
    ) -> Option<AccountName> {
        let leaser = match self.pools {
            PoolAccess::None => return None,
            PoolAccess::Lease(l) | PoolAccess::Preview(l) => l,
        };
        let key = LeaseKey::of(identity).ok()?;
        let lease = leaser.existing(&key).ok()??;
        (&lease.account == account && targets.contains(&MappedAccount::Pool(lease.pool.clone())))
            .then_some(lease.pool)
    }

    /// Map tokens with this token map and these per-issuer rules.
    pub fn with_tokens(
        mut self,
        token_map: Option<&'a TokenMapfile>,
        rules: &'a [TokenRules],
    ) -> Self {
        self.token_map = token_map;
        self.token_rules = rules;
        self
    }

    /// Look local accounts up with `uid_of` instead of the system database.
    pub fn with_uid_lookup(mut self, uid_of: UidLookup) -> Self {
        self.uid_of = uid_of;
        self
    }

    /// The login decision for a verified token.
    pub fn decide_token(
        &self,
        token: &VerifiedToken,
        requested: Option<&str>,
    ) -> Result<Decision, Refusal> {
        let default_rules = TokenRules::new(token.issuer());
        let rules = self
            .token_rules
            .iter()
            .find(|r| r.issuer == token.issuer())
            .unwrap_or(&default_rules);
        let mut reasons = vec![token.summary()];
        let identity = Identity::Token {
            issuer: token.issuer().to_string(),
            subject: token.subject().to_string(),
        };
        self.check_identity(&identity, &mut reasons)?;
        let held = || {
            let caps: Vec<String> = token
                .capabilities()
                .iter()
                .map(ToString::to_string)
                .collect();
            if caps.is_empty() {
                "no scopes".to_string()
            } else {
                caps.join(" ")
            }
        };
        for required in &rules.required_scopes {
            if !token.capabilities().iter().any(|c| c.satisfies(required)) {
                return Err(Refusal::MissingScope {
                    required: required.to_string(),
                    held: held(),
                });
            }
        }
        if !rules.required_scopes.is_empty() {
            let names: Vec<String> = rules
                .required_scopes
                .iter()
                .map(ToString::to_string)
                .collect();
            reasons.push(format!("required scope(s) held: {}", names.join(" ")));
        }
        if !rules.required_groups.is_empty() {
            match rules
                .required_groups
                .iter()
                .find(|g| token.groups().contains(g))
            {
                Some(g) => reasons.push(format!("member of required group {g}")),
                None => {
                    let held = if token.groups().is_empty() {
                        "no groups".to_string()
                    } else {
                        token.groups().join(", ")
                    };
                    return Err(Refusal::NotInGroup {
                        required: rules.required_groups.clone(),
                        held,
                    });
                }
            }
        }
        let not_mapped = |reason: String| Refusal::TokenNotMapped {
            issuer: token.issuer().to_string(),
            subject: token.subject().to_string(),
            reason,
        };
        let mut claimed = None;
        let targets: Vec<MappedAccount> = match self
            .token_map
            .and_then(|m| m.lookup(token.issuer(), token.subject()))
        {
            Some(rule) => {
                let names: Vec<String> = rule.accounts.iter().map(ToString::to_string).collect();
                reasons.push(format!(
                    "token map line {} maps it to {}",
                    rule.line,
                    names.join(", ")
                ));
                rule.accounts.clone()
            }
            None => match &rules.username_claim {
                None => {
                    return Err(not_mapped(
                        "no token map rule and no username claim configured".into(),
                    ));
                }
                Some(claim) => {
                    let account = self
                        .claim_account(token, claim, rules)
                        .map_err(not_mapped)?;
                    reasons.push(format!(
                        "no token map rule; claim {claim} names account {account}"
                    ));
                    claimed = Some(CLAIMED);
                    vec![MappedAccount::Local(account)]
                }
            },
        };
        // the same choice as for a grid-mapfile line: the first target, or the requested
        // account when listed, or leased from a listed pool
        let not_allowed = |name: &str| {
            if name.is_empty() {
                not_mapped("no account".into())
            } else {
                Refusal::TokenAccountNotAllowed {
                    identity: identity.to_string(),
                    requested: name.to_string(),
                    allowed: targets.iter().map(ToString::to_string).collect(),
                }
            }
        };
        let (account, leased) =
            self.pick(&identity, &targets, requested, &mut reasons, &not_allowed)?;
        self.restrict(Decision {
            live: leased.or(claimed),
            account,
            identity,
            credential: token.fingerprint().to_string(),
            proxy_depth: 0,
            capabilities: token.capabilities().to_vec(),
            reasons,
            restrictions: Applied::default(),
        })
    }

    /// The login decision for a verified OpenSSH certificate: its principals are the accounts
    /// it may use (the first is the default).
    pub fn decide_ssh_certificate(
        &self,
        cert: &crate::trust::sshcert::VerifiedSshCertificate,
        requested: Option<&str>,
    ) -> Result<Decision, Refusal> {
        let refusal = |requested: &str| Refusal::NotAPrincipal {
            key_id: cert.key_id().to_string(),
            requested: requested.to_string(),
            principals: cert.principals().to_vec(),
        };
        let name = requested
            .or(cert.principals().first().map(String::as_str))
            .unwrap_or_default();
        if !cert.principals().iter().any(|p| p == name) {
            return Err(refusal(name));
        }
        let account = AccountName::parse(name).map_err(|reason| Refusal::BadLoginName {
            requested: name.to_string(),
            reason,
        })?;
        self.check_account(&account)?;
        self.restrict(Decision {
            reasons: vec![
                cert.summary(),
                format!("principal {account} is listed in the certificate"),
            ],
            account,
            identity: Identity::SshCertificate {
                key_id: cert.key_id().to_string(),
                ca: cert.ca_fingerprint().to_string(),
            },
            credential: cert.fingerprint().to_string(),
            proxy_depth: 0,
            capabilities: Vec::new(),
            restrictions: Applied::default(),
            live: None,
        })
    }

    /// The account a claim names, under the domain and reserved-account guards.
    fn claim_account(
        &self,
        token: &VerifiedToken,
        claim: &str,
        rules: &TokenRules,
    ) -> Result<AccountName, String> {
        let value = token
            .claim_str(claim)
            .ok_or_else(|| format!("the token has no string claim {claim}"))?;
        let name = match value.rsplit_once('@') {
            Some((local, domain)) => {
                if !rules
                    .username_domains
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(domain))
                {
                    return Err(format!(
                        "claim {claim} is in domain {domain:?}, not one of the configured username_domains ({})",
                        if rules.username_domains.is_empty() {
                            "none".to_string()
                        } else {
                            rules.username_domains.join(", ")
                        }
                    ));
                }
                local
            }
            None => value,
        };
        let account = AccountName::parse(name).map_err(|e| format!("claim {claim}: {e}"))?;
        if RESERVED_ACCOUNTS.contains(&account.as_str()) {
            return Err(format!(
                "claim {claim} names the reserved account {account}"
            ));
        }
        match (self.uid_of)(account.as_str()) {
            None => Err(format!(
                "claim {claim} names {account}, which is not an account on this host"
            )),
            Some(uid) if uid < rules.min_uid => Err(format!(
                "claim {claim} names the system account {account} (uid {uid} < {})",
                rules.min_uid
            )),
            Some(_) => Ok(account),
        }
    }

    /// Which account `dn` may use, given the requested login name.
    pub fn choose(
        &self,
        dn: &DistinguishedName,
        requested: Option<&str>,
    ) -> Result<AccountChoice, Refusal> {
        let identity = Identity::Certificate(dn.clone());
        let mut reasons = Vec::new();
        self.check_identity(&identity, &mut reasons)?;
        let entry = self
            .gridmap
            .lookup(dn)
            .ok_or_else(|| Refusal::NotMapped { dn: dn.to_slash() })?;
        let listed: Vec<String> = entry.accounts.iter().map(ToString::to_string).collect();
        reasons.push(format!(
            "grid-mapfile line {} maps {} to {}",
            entry.line,
            dn,
            listed.join(", ")
        ));
        let not_allowed = |requested: &str| Refusal::AccountNotAllowed {
            dn: dn.to_slash(),
            requested: requested.to_string(),
            allowed: listed.clone(),
        };
        let (account, live) = self.pick(
            &identity,
            &entry.accounts,
            requested,
            &mut reasons,
            &not_allowed,
        )?;
        Ok(AccountChoice {
            account,
            reasons,
            live,
        })
    }

    /// The login decision for a verified certificate chain.
    pub fn decide(
        &self,
        chain: &VerifiedChain,
        requested: Option<&str>,
    ) -> Result<Decision, Refusal> {
        let choice = self.choose(chain.identity(), requested)?;
        let mut reasons = vec![chain.summary()];
        reasons.extend(choice.reasons);
        self.restrict(Decision {
            live: choice.live,
            account: choice.account,
            identity: Identity::Certificate(chain.identity().clone()),
            credential: chain.fingerprint().to_string(),
            proxy_depth: chain.proxy_depth(),
            capabilities: Vec::new(),
            reasons,
            restrictions: Applied::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> GridMapfile {
        GridMapfile::parse("\"/O=Grid/CN=alice\" alice,shared\n\"/O=Grid/CN=pooled\" .atlas\n\"/O=Grid/CN=mixed\" .atlas,bob\n").unwrap()
    }

    fn dn(s: &str) -> DistinguishedName {
        DistinguishedName::parse(s).unwrap()
    }

    #[test]
    fn first_account_is_the_default() {
        let m = map();
        let c = Mapper::new(&m)
            .choose(&dn("/O=Grid/CN=alice"), None)
            .unwrap();
        assert_eq!(c.account().as_str(), "alice");
        assert!(c.reasons()[0].contains("line 1"));
        assert_eq!(c.live, None, "a grid-mapfile line reads only the file");
    }

    #[test]
    fn requested_account_must_be_listed() {
        let m = map();
        let mapper = Mapper::new(&m);
        assert_eq!(
            mapper
                .choose(&dn("/O=Grid/CN=alice"), Some("shared"))
                .unwrap()
                .account()
                .as_str(),
            "shared"
        );
        let e = mapper
            .choose(&dn("/O=Grid/CN=alice"), Some("root"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "account root is not mapped to /O=Grid/CN=alice (allowed: alice, shared)"
        );
        assert!(matches!(
            mapper.choose(&dn("/O=Grid/CN=alice"), Some("../x")),
            Err(Refusal::BadLoginName { .. })
        ));
        // a pool name is never a login name
        assert!(
            mapper
                .choose(&dn("/O=Grid/CN=pooled"), Some(".atlas"))
                .is_err()
        );
    }

    #[test]
    fn unmapped_and_pool_only() {
        let m = map();
        let mapper = Mapper::new(&m);
        assert_eq!(
            mapper.choose(&dn("/O=Grid/CN=eve"), None).unwrap_err(),
            Refusal::NotMapped {
                dn: "/O=Grid/CN=eve".into()
            }
        );
        assert!(matches!(
            mapper.choose(&dn("/O=Grid/CN=pooled"), None),
            Err(Refusal::PoolUnavailable { .. })
        ));
        // first target is a pool: the default would need a lease, even if a named account follows
        assert!(matches!(
            mapper.choose(&dn("/O=Grid/CN=mixed"), None),
            Err(Refusal::PoolUnavailable { .. })
        ));
        assert_eq!(
            mapper
                .choose(&dn("/O=Grid/CN=mixed"), Some("bob"))
                .unwrap()
                .account()
                .as_str(),
            "bob"
        );
    }

    fn pooled_dir(count: u32) -> (tempfile::TempDir, crate::identity::gridmapdir::Gridmapdir) {
        let tmp = tempfile::tempdir().unwrap();
        let config = crate::identity::pool::PoolConfig {
            name: "atlas".into(),
            prefix: None,
            count,
            first_uid: 20000,
            gid: 20000,
            group: None,
            home: "/home/{account}".into(),
            shell: "/bin/bash".into(),
        };
        let pools = crate::identity::pool::Pools::from_config(&[config]).unwrap();
        let g = crate::identity::gridmapdir::Gridmapdir::new(tmp.path(), pools);
        (tmp, g)
    }

    #[test]
    fn pool_entries_lease_and_explain_only_previews() {
        let m = map();
        let (_tmp, g) = pooled_dir(2);
        let pooled = dn("/O=Grid/CN=pooled");
        // explain: what a login would get, and nothing leased
        let preview = Mapper::new(&m)
            .with_pool_preview(&g)
            .choose(&pooled, None)
            .unwrap();
        assert!(
            preview
                .reasons()
                .iter()
                .any(|r| r.contains("would lease from pool atlas (2 of 2 free")),
            "{:?}",
            preview.reasons()
        );
        assert!(g.list().unwrap().iter().all(|s| s.lease.is_none()));
        // a login leases, and keeps its lease
        let mapper = Mapper::new(&m).with_pools(&g);
        let first = mapper.choose(&pooled, None).unwrap();
        assert_eq!(
            first.live,
            Some(LEASED),
            "a pool lease is decided at each login"
        );
        let leased = first.account().clone();
        assert!(leased.as_str().starts_with("atlas00"));
        assert_eq!(mapper.choose(&pooled, None).unwrap().account(), &leased);
        // the pool's name as login name, and the leased account itself
        assert_eq!(
            mapper.choose(&pooled, Some("atlas")).unwrap().account(),
            &leased
        );
        assert_eq!(
            mapper
                .choose(&pooled, Some(leased.as_str()))
                .unwrap()
                .account(),
            &leased
        );
        // someone else's pool account is not allowed
        let other = if leased.as_str() == "atlas001" {
            "atlas002"
        } else {
            "atlas001"
        };
        assert!(matches!(
            mapper.choose(&pooled, Some(other)),
            Err(Refusal::AccountNotAllowed { .. })
        ));
        // explain reports the existing lease
        let preview = Mapper::new(&m)
            .with_pool_preview(&g)
            .choose(&pooled, None)
            .unwrap();
        assert_eq!(preview.account(), &leased);
        assert!(
            preview
                .reasons()
                .iter()
                .any(|r| r.contains("holds a lease"))
        );
        // mixed line: the second identity takes the last account, a third finds the pool full
        assert!(mapper.choose(&dn("/O=Grid/CN=mixed"), None).is_ok());
        let m2 = GridMapfile::parse("\"/O=Grid/CN=late\" .atlas\n").unwrap();
        let e = Mapper::new(&m2)
            .with_pools(&g)
            .choose(&dn("/O=Grid/CN=late"), None)
            .unwrap_err();
        assert_eq!(e.to_string(), "pool atlas is full: 2 of 2 accounts leased");
        // a pool the leaser does not know
        let m3 = GridMapfile::parse("\"/O=Grid/CN=x\" .cms\n").unwrap();
        let e = Mapper::new(&m3)
            .with_pools(&g)
            .choose(&dn("/O=Grid/CN=x"), None)
            .unwrap_err();
        assert!(e.to_string().contains("no pool named cms"), "{e}");
    }

    #[test]
    fn suspended_identities_and_accounts_are_refused() {
        let m = map();
        let list = SuspensionList::parse("dn \"/O=Grid/CN=alice\"\naccount bob\n")
            .map_err(SuspensionError::Syntax);
        let mapper = Mapper::new(&m).with_suspensions(&list);
        let e = mapper.choose(&dn("/O=Grid/CN=alice"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/O=Grid/CN=alice is suspended (the suspension list line 1: dn \"/O=Grid/CN=alice\")"
        );
        let e = mapper
            .choose(&dn("/O=Grid/CN=mixed"), Some("bob"))
            .unwrap_err();
        assert!(
            e.to_string().contains("account bob is suspended") && e.to_string().contains("line 2"),
            "{e}"
        );
        // an unusable list refuses everyone
        let broken = SuspensionList::parse("nonsense\n").map_err(SuspensionError::Syntax);
        let e = Mapper::new(&m)
            .with_suspensions(&broken)
            .choose(&dn("/O=Grid/CN=mixed"), Some("bob"))
            .unwrap_err();
        assert!(matches!(e, Refusal::SuspensionListUnusable { .. }));
        assert!(e.to_string().contains("line 1"), "{e}");
        // a new lease never picks a suspended account
        let (_tmp, g) = pooled_dir(2);
        let list = SuspensionList::parse("account atlas001\naccount atlas002\n")
            .map_err(SuspensionError::Syntax);
        let e = Mapper::new(&m)
            .with_pools(&g)
            .with_suspensions(&list)
            .choose(&dn("/O=Grid/CN=pooled"), None)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "pool atlas is full: 0 of 2 accounts leased, 2 free one(s) suspended"
        );
    }
}
