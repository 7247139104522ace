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
//! * pool entries (`.atlas`) are recognised; leasing pool accounts is not available yet, so
//!   a login that would need a lease is refused with that reason.

use std::fmt;

use thiserror::Error;

use crate::dn::DistinguishedName;
use crate::gridmap::{AccountName, GridMapfile, MappedAccount};
use crate::x509::VerifiedChain;

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
    #[error("{dn} maps only to pool .{pool}, and pool account leases are not available yet")]
    PoolUnavailable { dn: String, pool: String },
}

/// The account an identity may use, and the reasons, before any credential is involved
/// (what `gridmap-tool explain --dn` shows).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct AccountChoice {
    account: AccountName,
    reasons: Vec<String>,
}

impl AccountChoice {
    pub fn account(&self) -> &AccountName {
        &self.account
    }
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }
}

/// A granted login: only [`Mapper::decide`] makes one, and only from a [`VerifiedChain`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Decision {
    account: AccountName,
    identity: DistinguishedName,
    credential: String,
    proxy_depth: usize,
    reasons: Vec<String>,
}

impl Decision {
    pub fn account(&self) -> &AccountName {
        &self.account
    }
    pub fn identity(&self) -> &DistinguishedName {
        &self.identity
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
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.identity, self.account)
    }
}

/// The engine over one set of mapping sources.
#[derive(Debug, Clone, Copy)]
pub struct Mapper<'a> {
    gridmap: &'a GridMapfile,
}

impl<'a> Mapper<'a> {
    pub fn new(gridmap: &'a GridMapfile) -> Self {
        Self { gridmap }
    }

    /// Which account `dn` may use, given the requested login name.
    pub fn choose(
        &self,
        dn: &DistinguishedName,
        requested: Option<&str>,
    ) -> Result<AccountChoice, Refusal> {
        let entry = self
            .gridmap
            .lookup(dn)
            .ok_or_else(|| Refusal::NotMapped { dn: dn.to_slash() })?;
        let listed: Vec<String> = entry.accounts.iter().map(ToString::to_string).collect();
        let mut reasons = vec![format!(
            "grid-mapfile line {} maps {} to {}",
            entry.line,
            dn,
            listed.join(", ")
        )];
        let account = match requested {
            None => {
                let account = entry
                    .accounts
                    .iter()
                    .find_map(|a| match a {
                        MappedAccount::Local(a) => Some(a),
                        MappedAccount::Pool(_) => None,
                    })
                    .filter(|_| matches!(entry.accounts.first(), Some(MappedAccount::Local(_))));
                match account {
                    Some(a) => {
                        reasons.push(format!("no login name requested: the first account, {a}"));
                        a.clone()
                    }
                    None => {
                        let pool = match entry.accounts.first() {
                            Some(MappedAccount::Pool(p)) => p.to_string(),
                            _ => String::new(),
                        };
                        return Err(Refusal::PoolUnavailable {
                            dn: dn.to_slash(),
                            pool,
                        });
                    }
                }
            }
            Some(name) => {
                let wanted = AccountName::parse(name).map_err(|reason| Refusal::BadLoginName {
                    requested: name.to_string(),
                    reason,
                })?;
                if entry
                    .accounts
                    .contains(&MappedAccount::Local(wanted.clone()))
                {
                    reasons.push(format!("requested account {wanted} is listed for this DN"));
                    wanted
                } else {
                    return Err(Refusal::AccountNotAllowed {
                        dn: dn.to_slash(),
                        requested: name.to_string(),
                        allowed: listed,
                    });
                }
            }
        };
        Ok(AccountChoice { account, reasons })
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
        Ok(Decision {
            account: choice.account,
            identity: chain.identity().clone(),
            credential: chain.fingerprint().to_string(),
            proxy_depth: chain.proxy_depth(),
            reasons,
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
}
