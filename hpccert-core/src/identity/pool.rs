//! The configured pools (`[[pool]]` tables, `.atlas` in the grid-mapfile): their accounts,
//! uids and NSS entries, validated as one table ([`Pools`]). Leasing them to identities is
//! [`crate::identity::gridmapdir`]'s.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::host::nsscache::{GroupEntry, PasswdEntry};
use crate::identity::gridmap::AccountName;

/// Where the gridmapdir lives by default (as for Globus and LCMAPS).
pub const DEFAULT_GRIDMAPDIR: &str = "/etc/grid-security/gridmapdir";
/// Largest pool (accounts).
pub const MAX_POOL_SIZE: u32 = 100_000;

/// One `[[pool]]` table (validated by [`Pools::from_config`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The pool's name, as the grid-mapfile names it (`.atlas`).
    pub name: String,
    /// Account names are the prefix and a number (`atlas001`) [default: the name].
    pub prefix: Option<String>,
    /// How many accounts (`atlas001` .. `atlas040`; numbers have at least 3 digits).
    pub count: u32,
    /// The uid of the first account; the others follow.
    pub first_uid: u32,
    /// The primary group of every account.
    pub gid: u32,
    /// The group's name [default: the pool's name].
    pub group: Option<String>,
    /// Home directories; `{account}` is replaced by the account name.
    #[serde(default = "default_pool_home")]
    pub home: String,
    #[serde(default = "default_pool_shell")]
    pub shell: String,
}

fn default_pool_home() -> String {
    "/home/{account}".into()
}
fn default_pool_shell() -> String {
    "/bin/bash".into()
}

/// One configured pool, validated: its accounts, uids and NSS attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    name: AccountName,
    accounts: Vec<AccountName>,
    first_uid: u32,
    gid: u32,
    group: AccountName,
    home: String,
    shell: String,
}

impl Pool {
    /// Validate one `[[pool]]` table; the message names the field.
    pub fn from_config(c: &PoolConfig) -> Result<Self, String> {
        let name = AccountName::parse(&c.name).map_err(|e| format!("name: {e}"))?;
        let prefix = c.prefix.as_deref().unwrap_or(&c.name);
        if c.count == 0 {
            return Err(format!("{name}: count must be at least 1"));
        }
        if c.count > MAX_POOL_SIZE {
            return Err(format!("{name}: count must be at most {MAX_POOL_SIZE}"));
        }
        if c.first_uid == 0 {
            return Err(format!(
                "{name}: first_uid must not be 0 (root never comes from a pool)"
            ));
        }
        if c.first_uid.checked_add(c.count - 1).is_none() {
            return Err(format!("{name}: first_uid + count overflows the uid range"));
        }
        if c.gid == 0 {
            return Err(format!("{name}: gid must not be 0"));
        }
        let group = AccountName::parse(c.group.as_deref().unwrap_or(&c.name))
            .map_err(|e| format!("{name}: group: {e}"))?;
        let width = c.count.to_string().len().max(3);
        let accounts = (1..=c.count)
            .map(|i| AccountName::parse(&format!("{prefix}{i:0width$}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{name}: prefix: {e}"))?;
        let bad = |s: &str| s.contains([':', '\n', '\0']) || !s.starts_with('/');
        if bad(&c.home) {
            return Err(format!(
                "{name}: home {:?} must be an absolute path without ':'",
                c.home
            ));
        }
        if bad(&c.shell) {
            return Err(format!(
                "{name}: shell {:?} must be an absolute path without ':'",
                c.shell
            ));
        }
        Ok(Self {
            name,
            accounts,
            first_uid: c.first_uid,
            gid: c.gid,
            group,
            home: c.home.clone(),
            shell: c.shell.clone(),
        })
    }

    pub fn name(&self) -> &AccountName {
        &self.name
    }
    /// The accounts in order (`atlas001`, `atlas002`, ...).
    pub fn accounts(&self) -> &[AccountName] {
        &self.accounts
    }
    /// The uid of the first account; the others follow.
    pub fn first_uid(&self) -> u32 {
        self.first_uid
    }
    pub fn gid(&self) -> u32 {
        self.gid
    }
    pub fn group(&self) -> &AccountName {
        &self.group
    }
    fn last_uid(&self) -> u32 {
        // checked at construction: first_uid + count - 1 fits
        let count = u32::try_from(self.accounts.len()).unwrap_or(u32::MAX);
        self.first_uid.saturating_add(count.saturating_sub(1))
    }

    /// The passwd entries of every account of the pool (leased or not).
    pub fn passwd_entries(&self) -> Vec<PasswdEntry> {
        self.accounts
            .iter()
            .zip(self.first_uid..)
            .map(|(a, uid)| PasswdEntry {
                name: a.clone(),
                uid,
                gid: self.gid,
                gecos: format!("pool account of {}", self.name),
                dir: self.home.replace("{account}", a.as_str()),
                shell: self.shell.clone(),
            })
            .collect()
    }
}

/// Every configured pool; account names, uid ranges and pool names do not overlap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pools {
    pools: Vec<Pool>,
    /// account name -> (pool index, account index)
    index: HashMap<AccountName, (usize, usize)>,
}

impl Pools {
    /// Validate the `[[pool]]` tables; an error names the table (`#N`, 1-based) and field.
    pub fn from_config(tables: &[PoolConfig]) -> Result<Self, (usize, String)> {
        let mut pools: Vec<Pool> = Vec::with_capacity(tables.len());
        let mut index = HashMap::new();
        for (i, t) in tables.iter().enumerate() {
            let pool = Pool::from_config(t).map_err(|e| (i, e))?;
            for other in &pools {
                let clash = |e: String| Err((i, e));
                if other.name == pool.name {
                    return clash(format!("{}: name: pool configured twice", pool.name));
                }
                if pool.first_uid <= other.last_uid() && other.first_uid <= pool.last_uid() {
                    return clash(format!(
                        "{}: first_uid: uids {}-{} overlap pool {} (uids {}-{})",
                        pool.name,
                        pool.first_uid,
                        pool.last_uid(),
                        other.name,
                        other.first_uid,
                        other.last_uid()
                    ));
                }
                if (other.group == pool.group) != (other.gid == pool.gid) {
                    return clash(format!(
                        "{}: group {} (gid {}) conflicts with pool {}'s group {} (gid {})",
                        pool.name, pool.group, pool.gid, other.name, other.group, other.gid
                    ));
                }
            }
            let p = pools.len();
            for (a, account) in pool.accounts.iter().enumerate() {
                if let Some((q, _)) = index.insert(account.clone(), (p, a)) {
                    return Err((
                        i,
                        format!(
                            "{}: prefix: account {account} is also in pool {}",
                            pool.name, pools[q].name
                        ),
                    ));
                }
            }
            pools.push(pool);
        }
        Ok(Self { pools, index })
    }

    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Pool> {
        self.pools.iter()
    }
    pub fn get(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name.as_str() == name)
    }
    /// The pool an account belongs to.
    pub fn pool_of(&self, account: &str) -> Option<&Pool> {
        let name = AccountName::parse(account).ok()?;
        self.index.get(&name).map(|&(p, _)| &self.pools[p])
    }

    /// The NSS cache content: every pool account, and one group per pool group listing the
    /// accounts of its pools as members.
    pub fn nss_entries(&self) -> (Vec<PasswdEntry>, Vec<GroupEntry>) {
        let passwd = self.pools.iter().flat_map(Pool::passwd_entries).collect();
        let mut groups: Vec<GroupEntry> = Vec::new();
        for p in &self.pools {
            match groups.iter_mut().find(|g| g.gid == p.gid) {
                Some(g) => g.members.extend(p.accounts.iter().cloned()),
                None => groups.push(GroupEntry {
                    name: p.group.clone(),
                    gid: p.gid,
                    members: p.accounts.clone(),
                }),
            }
        }
        (passwd, groups)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pool_config(name: &str, count: u32, first_uid: u32) -> PoolConfig {
        PoolConfig {
            name: name.into(),
            prefix: None,
            count,
            first_uid,
            gid: first_uid,
            group: None,
            home: "/home/{account}".into(),
            shell: "/bin/bash".into(),
        }
    }

    #[test]
    fn config_validation_names_the_field() {
        let ok = pool_config("atlas", 40, 20000);
        let p = Pools::from_config(std::slice::from_ref(&ok)).unwrap();
        let atlas = p.get("atlas").unwrap();
        assert_eq!(atlas.accounts()[0].as_str(), "atlas001");
        assert_eq!(atlas.accounts()[39].as_str(), "atlas040");
        assert_eq!(p.pool_of("atlas017").unwrap().name().as_str(), "atlas");
        let e = |c: PoolConfig| Pool::from_config(&c).unwrap_err();
        assert!(e(pool_config("atlas", 0, 20000)).contains("count must be at least 1"));
        assert!(e(pool_config("atlas", 10, 0)).contains("first_uid"));
        assert!(e(pool_config("../x", 10, 100)).contains("name:"));
        assert!(e(pool_config("a", 10, u32::MAX - 3)).contains("overflows"));
        let mut c = pool_config("atlas", 10, 100);
        c.home = "home/{account}".into();
        assert!(e(c).contains("home"));
        let mut c = pool_config("atlas", 10, 100);
        c.prefix = Some("-x".into());
        assert!(e(c).contains("prefix"));
        let overlap = Pools::from_config(&[ok.clone(), pool_config("cms", 10, 20039)]).unwrap_err();
        assert_eq!(overlap.0, 1);
        assert!(
            overlap
                .1
                .contains("first_uid: uids 20039-20048 overlap pool atlas"),
            "{}",
            overlap.1
        );
        let twice = Pools::from_config(&[ok.clone(), pool_config("atlas", 1, 30000)]).unwrap_err();
        assert!(twice.1.contains("configured twice"));
        let mut same_names = pool_config("cms", 5, 30000);
        same_names.prefix = Some("atlas".into());
        let e = Pools::from_config(&[ok.clone(), same_names]).unwrap_err();
        assert!(
            e.1.contains("account atlas001 is also in pool atlas"),
            "{}",
            e.1
        );
        // four-digit names from a thousand accounts up
        let big = Pool::from_config(&pool_config("big", 1000, 40000)).unwrap();
        assert_eq!(big.accounts()[0].as_str(), "big0001");
    }
}
