//! What `explain` reports ([`Outcome`]) and what its decisions read besides the mapping files
//! ([`ReadOnlySources`]): shared by the certificate and the token explanations.

use std::net::IpAddr;

use hpccert_core::config::Config;
use hpccert_core::host::credential_cache::{explain_reuse, reuse_until};
use hpccert_core::identity::gridmapdir::Gridmapdir;
use hpccert_core::identity::mapping::Decision;
use hpccert_core::identity::mapping::Mapper;
use hpccert_core::identity::restriction::{RestrictionError, Restrictions, Source};
use hpccert_core::identity::suspension::{SuspensionError, SuspensionList};
use serde::Serialize;

/// What the engine decided, in a form for people and for scripts.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub decision: &'static str,
    /// `credential` (the certificate was refused) or `mapping` (no account for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_at: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_depth: Option<usize>,
    /// What a token allows (scopes as capabilities).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    pub reasons: Vec<String>,
    /// How long sshd-gsi's credential cache would reuse an accepted decision, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
}

impl Outcome {
    pub fn refused(
        stage: &'static str,
        identity: Option<String>,
        mut reasons: Vec<String>,
        why: String,
    ) -> Self {
        reasons.push(why);
        Self {
            decision: "refuse",
            refused_at: Some(stage),
            account: None,
            identity,
            credential: None,
            proxy_depth: None,
            capabilities: None,
            reasons,
            cache: None,
        }
    }

    pub fn accepted(&self) -> bool {
        self.decision == "accept"
    }

    pub fn print(&self) {
        let who = self
            .identity
            .as_deref()
            .unwrap_or("(credential not accepted)");
        match &self.account {
            Some(account) if self.accepted() => println!("ACCEPT {who} -> {account}"),
            _ => println!("REFUSE {who}"),
        }
        for r in &self.reasons {
            println!("  - {r}");
        }
        if let Some(c) = &self.cache {
            println!("  cache: {c}");
        }
    }
}

/// What sshd-gsi's credential cache would do with `decision`, verified at `now` (unix seconds)
/// from a credential that ends at `credential_end`, checked against CRLs whose next update is
/// `crl_next_update`: the same bound the server computes.
pub fn cache_note(
    config: &Config,
    decision: &Decision,
    (credential_end, crl_next_update): (i64, Option<i64>),
    now: i64,
) -> String {
    let ttl = if config.sshd.credential_cache_size == 0 {
        0
    } else {
        config.sshd.credential_cache_ttl
    };
    let reuse = reuse_until(now, credential_end, crl_next_update, ttl);
    explain_reuse(reuse, decision, now)
}

/// What a decision reads besides the mapping files, for `explain`: the suspension list (an
/// unusable one refuses, as at login) and the pools, which explain only looks at.
#[derive(Debug)]
pub struct ReadOnlySources {
    suspensions: Result<SuspensionList, SuspensionError>,
    restrictions: Result<Restrictions, RestrictionError>,
    /// The client address `--from` names (None: from= rules are reported, not checked).
    from: Option<IpAddr>,
    pools: Option<Gridmapdir>,
}

impl ReadOnlySources {
    pub fn load(config: &Config, from: Option<IpAddr>) -> anyhow::Result<Self> {
        Ok(Self {
            suspensions: SuspensionList::load(&config.mapping.suspended_file),
            restrictions: Restrictions::load(&config.mapping.restrictions_file),
            from,
            pools: Gridmapdir::from_config(config).map_err(anyhow::Error::msg)?,
        })
    }

    /// `mapper` with the suspension list, the restrictions and a read-only view of the pools.
    pub fn apply<'a>(&'a self, mapper: Mapper<'a>) -> Mapper<'a> {
        let mapper = mapper
            .with_suspensions(&self.suspensions)
            .with_restrictions(
                &self.restrictions,
                self.from.map_or(Source::NotChecked, Source::Known),
            );
        match &self.pools {
            Some(g) => mapper.with_pool_preview(g),
            None => mapper,
        }
    }
}
