//! `add`, `remove`, `list`: edits that keep comments and order, under a lock, written
//! atomically. A file that does not parse is never rewritten.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use hpccert_core::host::atomic_file::{WriteLock, write_atomic};
use hpccert_core::identity::dn::DistinguishedName;
use hpccert_core::identity::gridmap::{
    GridMapfile, MappedAccount, ParsedLine, format_line, parse_line,
};
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::settings::effective_config;

fn parse_dn(dn: &str) -> anyhow::Result<DistinguishedName> {
    DistinguishedName::parse(dn).map_err(|e| anyhow!("cannot parse DN {dn:?}: {e}"))
}

/// Read the file's lines; refuse to edit a file that does not parse.
fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    read_checked_lines(path, "", |text| GridMapfile::parse(text).map(drop))
}

/// The lines of a line-based file (none when it does not exist), refused when `check` finds
/// errors, so that an edit never rewrites a broken file; `consequence` says what the broken
/// file means meanwhile.
pub(crate) fn read_checked_lines(
    path: &Path,
    consequence: &str,
    check: impl Fn(&str) -> Result<(), Vec<hpccert_core::identity::gridmap::LineError>>,
) -> anyhow::Result<Vec<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if let Err(errors) = check(&text) {
        let list: Vec<String> = errors
            .iter()
            .map(|e| format!("  line {}: {}", e.line, e.message))
            .collect();
        bail!(
            "{} does not parse{consequence}; fix it first (nothing was changed):\n{}",
            path.display(),
            list.join("\n")
        );
    }
    Ok(text.lines().map(str::to_string).collect())
}

/// Replace the file atomically with `lines`.
pub(crate) fn write_lines(path: &Path, lines: &[String]) -> anyhow::Result<()> {
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    write_atomic(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

fn mapping(line: &str) -> Option<(DistinguishedName, Vec<MappedAccount>)> {
    match parse_line(line) {
        Ok(ParsedLine::Mapping { dn, accounts }) => Some((dn, accounts)),
        _ => None,
    }
}

pub fn add(g: &GlobalArgs, dn: &str, accounts: &str) -> anyhow::Result<ExitCode> {
    let path = effective_config(g)?.mapping.grid_mapfile;
    let dn = parse_dn(dn)?;
    let new: Vec<MappedAccount> = accounts
        .split(',')
        .map(|a| MappedAccount::parse(a.trim()).map_err(|e| anyhow!("{e}")))
        .collect::<anyhow::Result<_>>()?;
    let _lock =
        WriteLock::acquire(&path).with_context(|| format!("cannot lock {}", path.display()))?;
    let mut lines = read_lines(&path)?;
    let existing = lines
        .iter()
        .position(|l| mapping(l).is_some_and(|(d, _)| d == dn));
    match existing {
        Some(i) => {
            let Some((_, mut list)) = mapping(&lines[i]) else {
                bail!("line {} changed under us", i + 1)
            };
            let before = list.len();
            for a in new {
                if !list.contains(&a) {
                    list.push(a);
                }
            }
            if list.len() == before {
                println!(
                    "{dn} already maps to {accounts} (line {}); nothing changed",
                    i + 1
                );
                return Ok(ExitCode::SUCCESS);
            }
            lines[i] = format_line(&dn, &list);
            println!("line {}: {}", i + 1, lines[i]);
        }
        None => {
            lines.push(format_line(&dn, &new));
            println!("line {}: {}", lines.len(), lines[lines.len() - 1]);
        }
    }
    write_lines(&path, &lines)?;
    Ok(ExitCode::SUCCESS)
}

pub fn remove(g: &GlobalArgs, dn: &str, account: Option<&str>) -> anyhow::Result<ExitCode> {
    let path = effective_config(g)?.mapping.grid_mapfile;
    let dn = parse_dn(dn)?;
    let account = account
        .map(|a| MappedAccount::parse(a).map_err(|e| anyhow!("{e}")))
        .transpose()?;
    let _lock =
        WriteLock::acquire(&path).with_context(|| format!("cannot lock {}", path.display()))?;
    let lines = read_lines(&path)?;
    let mut out = Vec::with_capacity(lines.len());
    let mut changed = 0;
    for (n, line) in lines.into_iter().enumerate() {
        match mapping(&line) {
            Some((d, mut list)) if d == dn => match &account {
                None => {
                    println!("removed line {}: {line}", n + 1);
                    changed += 1;
                }
                Some(a) if list.contains(a) => {
                    list.retain(|x| x != a);
                    changed += 1;
                    if list.is_empty() {
                        println!("removed line {}: {line}", n + 1);
                    } else {
                        let new = format_line(&d, &list);
                        println!("line {}: {new}", n + 1);
                        out.push(new);
                    }
                }
                Some(_) => out.push(line),
            },
            _ => out.push(line),
        }
    }
    if changed == 0 {
        match account {
            Some(a) => eprintln!("{dn} is not mapped to {a}; nothing changed"),
            None => eprintln!("{dn} is not in {}; nothing changed", path.display()),
        }
        return Ok(ExitCode::from(1));
    }
    write_lines(&path, &out)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct Listed {
    line: usize,
    dn: String,
    accounts: Vec<String>,
}

pub fn list(g: &GlobalArgs, json: bool) -> anyhow::Result<ExitCode> {
    let path = effective_config(g)?.mapping.grid_mapfile;
    let map = GridMapfile::load(&path)?;
    let rows: Vec<Listed> = map
        .entries()
        .iter()
        .map(|e| Listed {
            line: e.line,
            dn: e.dn.to_slash(),
            accounts: e.accounts.iter().map(ToString::to_string).collect(),
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in rows {
            println!("{}\t{}\t(line {})", r.dn, r.accounts.join(","), r.line);
        }
    }
    Ok(ExitCode::SUCCESS)
}
