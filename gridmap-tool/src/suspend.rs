//! `suspend` and `unsuspend`: edits of the suspension list that keep comments and order,
//! under a lock, written atomically. A list that does not parse is never rewritten.

use std::path::Path;
use std::process::ExitCode;

use crate::edit::write_lines;
use anyhow::{Context, anyhow, bail};
use hpccert_core::host::atomic_file::WriteLock;
use hpccert_core::identity::dn::DistinguishedName;
use hpccert_core::identity::gridmap::AccountName;
use hpccert_core::identity::suspension::{Suspended, SuspensionList, parse_line};

use crate::cli::GlobalArgs;
use crate::settings::effective_config;

/// The entry named on the command line.
pub fn entry(
    dn: Option<&str>,
    token: &[String],
    account: Option<&str>,
) -> anyhow::Result<Suspended> {
    match (dn, token, account) {
        (Some(d), [], None) => Ok(Suspended::Dn(
            DistinguishedName::parse(d).map_err(|e| anyhow!("cannot parse DN {d:?}: {e}"))?,
        )),
        (None, [issuer, subject], None) => Ok(Suspended::Token {
            issuer: issuer.clone(),
            subject: subject.clone(),
        }),
        (None, [], Some(a)) => Ok(Suspended::Account(
            AccountName::parse(a).map_err(anyhow::Error::msg)?,
        )),
        _ => bail!("give one of --dn DN, --token ISSUER SUBJECT, --account NAME"),
    }
}

fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    crate::edit::read_checked_lines(path, " (every login is refused until it does)", |text| {
        SuspensionList::parse(text).map(drop)
    })
}

pub fn suspend(g: &GlobalArgs, what: Suspended) -> anyhow::Result<ExitCode> {
    let path = effective_config(g)?.mapping.suspended_file;
    let _lock =
        WriteLock::acquire(&path).with_context(|| format!("cannot lock {}", path.display()))?;
    let mut lines = read_lines(&path)?;
    if let Some(n) = lines
        .iter()
        .position(|l| parse_line(l).ok().flatten().as_ref() == Some(&what))
    {
        println!(
            "{what} is already suspended (line {}); nothing changed",
            n + 1
        );
        return Ok(ExitCode::SUCCESS);
    }
    lines.push(what.to_string());
    write_lines(&path, &lines)?;
    println!("{}: line {}: {what}", path.display(), lines.len());
    Ok(ExitCode::SUCCESS)
}

pub fn unsuspend(g: &GlobalArgs, what: Suspended) -> anyhow::Result<ExitCode> {
    let path = effective_config(g)?.mapping.suspended_file;
    let _lock =
        WriteLock::acquire(&path).with_context(|| format!("cannot lock {}", path.display()))?;
    let lines = read_lines(&path)?;
    let before = lines.len();
    let mut kept = Vec::with_capacity(before);
    for (n, line) in lines.into_iter().enumerate() {
        if parse_line(&line).ok().flatten().as_ref() == Some(&what) {
            println!("removed line {}: {line}", n + 1);
        } else {
            kept.push(line);
        }
    }
    if kept.len() == before {
        eprintln!("{what} is not in {}; nothing changed", path.display());
        return Ok(ExitCode::from(1));
    }
    write_lines(&path, &kept)?;
    Ok(ExitCode::SUCCESS)
}
