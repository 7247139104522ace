//! `pool list|release|expire`: the gridmapdir leases of pool accounts.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use hpccert_core::identity::dn::DistinguishedName;
use hpccert_core::identity::gridmap::AccountName;
use hpccert_core::identity::gridmapdir::{Gridmapdir, LeaseKey, ReleaseTarget, format_time};
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::settings::effective_config;

fn gridmapdir(g: &GlobalArgs) -> anyhow::Result<Gridmapdir> {
    let config = effective_config(g)?;
    Gridmapdir::from_config(&config)
        .map_err(anyhow::Error::msg)?
        .ok_or_else(|| anyhow!("no [[pool]] table is configured"))
}

#[derive(Serialize)]
struct Row {
    pool: String,
    account: String,
    uid: u32,
    leased: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used: Option<String>,
}

pub fn list(g: &GlobalArgs, json: bool) -> anyhow::Result<ExitCode> {
    let dir = gridmapdir(g)?;
    let rows: Vec<Row> = dir
        .list()?
        .into_iter()
        .map(|s| Row {
            pool: s.pool.to_string(),
            account: s.account.to_string(),
            uid: s.uid,
            leased: s.lease.is_some(),
            identity: s.lease.as_ref().map(|l| l.key.describe()),
            lease_file: s.lease.as_ref().map(|l| l.key.to_string()),
            last_used: s.lease.as_ref().map(|l| format_time(l.last_used)),
        })
        .collect();
    let unattached = dir.unattached()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in &rows {
            match (&r.identity, &r.last_used) {
                (Some(who), Some(when)) => {
                    println!("{}\t{}\t{}\t{when}\t{who}", r.pool, r.account, r.uid)
                }
                _ => println!("{}\t{}\t{}\tfree", r.pool, r.account, r.uid),
            }
        }
        for pool in dir.pools().iter() {
            let leased = rows
                .iter()
                .filter(|r| r.leased && r.pool == pool.name().as_str())
                .count();
            println!(
                "# pool {}: {leased} of {} leased",
                pool.name(),
                pool.accounts().len()
            );
        }
    }
    for key in &unattached {
        eprintln!(
            "warning: {} ({}) is linked to no configured pool account (stale, or another pool's lease)",
            key,
            key.describe()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Whose lease `release` removes.
#[derive(Debug, Default)]
pub struct Whose {
    pub account: Option<String>,
    pub dn: Option<String>,
    pub token: Vec<String>,
    pub key: Option<String>,
}

pub fn release(g: &GlobalArgs, whose: Whose) -> anyhow::Result<ExitCode> {
    let dir = gridmapdir(g)?;
    let target = match whose {
        Whose {
            account: Some(a), ..
        } => ReleaseTarget::Account(AccountName::parse(&a).map_err(anyhow::Error::msg)?),
        Whose { dn: Some(d), .. } => {
            let dn =
                DistinguishedName::parse(&d).map_err(|e| anyhow!("cannot parse DN {d:?}: {e}"))?;
            ReleaseTarget::Identity(LeaseKey::dn(&dn)?)
        }
        Whose { key: Some(k), .. } => ReleaseTarget::Identity(
            LeaseKey::from_file_name(&k)
                .ok_or_else(|| anyhow!("{k:?} is not a lease file name (they start with %)"))?,
        ),
        Whose { token, .. } if token.len() == 2 => {
            ReleaseTarget::Identity(LeaseKey::token(&token[0], &token[1])?)
        }
        _ => bail!("give an ACCOUNT, --dn DN, --token ISSUER SUBJECT or --key FILE_NAME"),
    };
    match dir.release(&target)? {
        Some(l) => {
            println!(
                "released {} (pool {}) from {}",
                l.account,
                l.pool,
                l.key.describe()
            );
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("no lease to release");
            Ok(ExitCode::from(1))
        }
    }
}

/// `30d`, `12h`, `90m`, `3600s`, `2w`.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .with_context(|| format!("{text:?} is not a duration (e.g. 30d, 12h, 90m)"))?;
    let secs = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => bail!("{text:?}: unknown unit {unit:?} (s, m, h, d or w)"),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

pub fn expire(g: &GlobalArgs, older_than: &str) -> anyhow::Result<ExitCode> {
    let age = parse_duration(older_than)?;
    let dir = gridmapdir(g)?;
    let released = dir.expire(age)?;
    for l in &released {
        println!(
            "released {} (pool {}) from {}, last used {}",
            l.account,
            l.pool,
            l.key.describe(),
            format_time(l.last_used)
        );
    }
    println!(
        "{} lease(s) unused for more than {older_than} released",
        released.len()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert!(parse_duration("3y").is_err());
        assert!(parse_duration("d").is_err());
    }
}
