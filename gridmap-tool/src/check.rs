//! `gridmap-tool check`: parse and lint a grid-mapfile.

use std::path::PathBuf;
use std::process::ExitCode;

use hpccert_core::identity::gridmap::{GridMapfile, MappedAccount};
use hpccert_core::trust::store::{PolicyState, TrustStore};

use crate::cli::GlobalArgs;
use crate::settings::effective_config;

pub fn run(g: &GlobalArgs, file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = effective_config(g)?;
    let path = file.unwrap_or(config.mapping.grid_mapfile.clone());
    let text = match std::fs::read(&path) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return Ok(ExitCode::from(2));
        }
    };
    let shown = path.display();
    let mut findings = 0usize;
    let map = match GridMapfile::parse(&text) {
        Ok(m) => m,
        Err(errors) => {
            for e in &errors {
                println!("{shown}:{}: error: {}", e.line, e.message);
            }
            println!(
                "{shown}: {} syntax error(s); the file would not be loaded",
                errors.len()
            );
            return Ok(ExitCode::from(1));
        }
    };
    for d in map.duplicates() {
        findings += 1;
        println!(
            "{shown}:{}: warning: duplicate DN {} (line {} wins; this line is ignored)",
            d.line, d.dn, d.first_line
        );
    }
    for entry in map.entries() {
        for account in &entry.accounts {
            if let MappedAccount::Local(name) = account {
                match nix::unistd::User::from_name(name.as_str()) {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        findings += 1;
                        println!(
                            "{shown}:{}: warning: account {name} does not exist on this host",
                            entry.line
                        );
                    }
                    Err(e) => {
                        findings += 1;
                        println!(
                            "{shown}:{}: warning: cannot look up account {name}: {e}",
                            entry.line
                        );
                    }
                }
            }
        }
    }
    // namespaces: a DN that no trusted CA's policy allows can never log in
    let source = config.trust.source();
    match TrustStore::load(&source) {
        Ok(trust) => {
            let policies: Vec<_> = trust
                .policies()
                .filter_map(|(_, state)| match state {
                    PolicyState::Loaded { policy, .. } => Some(policy),
                    PolicyState::Broken { .. } => None,
                })
                .collect();
            let without = trust
                .anchors()
                .iter()
                .filter(|a| trust.policy_for(a.subject()).is_none())
                .count();
            if policies.is_empty() {
                eprintln!(
                    "note: no namespace policy in {}; namespace check skipped",
                    source.display()
                );
            } else {
                if without > 0 {
                    eprintln!(
                        "note: {without} trusted CA(s) have no namespace policy; their DNs cannot be checked"
                    );
                }
                for entry in map.entries() {
                    if without == 0 && !policies.iter().any(|p| p.check(&entry.dn).is_ok()) {
                        findings += 1;
                        println!(
                            "{shown}:{}: warning: no trusted CA's namespace allows {}",
                            entry.line, entry.dn
                        );
                    }
                }
            }
        }
        Err(e) => eprintln!("note: namespace check skipped: {e}"),
    }
    println!("{shown}: {} mapping(s), {findings} finding(s)", map.len());
    Ok(if findings == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
