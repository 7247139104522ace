//! `gridmap-tool explain`: the decision sshd-gsi and the PAM module would make, with reasons.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use hpccert_core::config::Config;
use hpccert_core::identity::dn::DistinguishedName;
use hpccert_core::identity::gridmap::GridMapfile;
use hpccert_core::identity::mapping::Mapper;
use hpccert_core::trust::store::TrustStore;
use hpccert_core::trust::x509::{PresentedChain, verify_chain};

use crate::cli::GlobalArgs;
use crate::outcome::{Outcome, ReadOnlySources, cache_note};
use crate::settings::{effective_config, validation_time};

fn load_gridmap(path: &Path) -> anyhow::Result<GridMapfile> {
    GridMapfile::load(path).with_context(|| "the grid-mapfile is unusable".to_string())
}

/// Verify `chain_file` and map it, as a login would.
pub fn explain_certificate(
    config: &Config,
    chain_file: &Path,
    (user, from): (Option<&str>, Option<IpAddr>),
    now: SystemTime,
) -> anyhow::Result<Outcome> {
    let trust_source = config.trust.source();
    let trust = TrustStore::load(&trust_source)
        .with_context(|| format!("cannot load the trust store {}", trust_source.display()))?;
    let gridmap = load_gridmap(&config.mapping.grid_mapfile)?;
    let pem = std::fs::read(chain_file)
        .with_context(|| format!("cannot read {}", chain_file.display()))?;
    let mut reasons = vec![format!(
        "trust store {} ({} CA(s))",
        trust_source.display(),
        trust.anchors().len()
    )];
    let chain = match PresentedChain::from_pem(&pem) {
        Ok(c) => c,
        Err(e) => return Ok(Outcome::refused("credential", None, reasons, e.to_string())),
    };
    let verified = match verify_chain(&trust, &chain, &config.trust.verify_options(), now) {
        Ok(v) => v,
        Err(e) => return Ok(Outcome::refused("credential", None, reasons, e.to_string())),
    };
    reasons.clear();
    let sources = ReadOnlySources::load(config, from)?;
    match sources.apply(Mapper::new(&gridmap)).decide(&verified, user) {
        Ok(decision) => Ok(Outcome {
            decision: "accept",
            refused_at: None,
            account: Some(decision.account().to_string()),
            identity: Some(decision.identity().to_string()),
            credential: Some(decision.credential().to_string()),
            proxy_depth: Some(decision.proxy_depth()),
            capabilities: None,
            reasons: decision.reasons().to_vec(),
            cache: Some(cache_note(
                config,
                &decision,
                (verified.not_after(), verified.crl_next_update()),
                hpccert_core::token::unix_seconds(now),
            )),
        }),
        Err(refusal) => {
            let reasons = vec![verified.summary()];
            Ok(Outcome::refused(
                "mapping",
                Some(verified.identity().to_slash()),
                reasons,
                refusal.to_string(),
            ))
        }
    }
}

/// Map a bare DN (no credential).
pub fn explain_dn(
    config: &Config,
    dn: &str,
    (user, from): (Option<&str>, Option<IpAddr>),
) -> anyhow::Result<Outcome> {
    let dn =
        DistinguishedName::parse(dn).map_err(|e| anyhow::anyhow!("cannot parse DN {dn:?}: {e}"))?;
    let gridmap = load_gridmap(&config.mapping.grid_mapfile)?;
    let note = "no credential checked (--dn): mapping only".to_string();
    let sources = ReadOnlySources::load(config, from)?;
    match sources.apply(Mapper::new(&gridmap)).choose(&dn, user) {
        Ok(choice) => {
            let mut reasons = vec![note];
            reasons.extend(choice.reasons().iter().cloned());
            Ok(Outcome {
                decision: "accept",
                refused_at: None,
                account: Some(choice.account().to_string()),
                identity: Some(dn.to_slash()),
                credential: None,
                proxy_depth: None,
                capabilities: None,
                reasons,
                cache: None,
            })
        }
        Err(refusal) => Ok(Outcome::refused(
            "mapping",
            Some(dn.to_slash()),
            vec![note],
            refusal.to_string(),
        )),
    }
}

/// What `explain` is asked about.
#[derive(Debug)]
pub enum Subject {
    Cert(PathBuf),
    Dn(String),
    Token(PathBuf, crate::tokens::AdHoc),
}

pub fn run(
    g: &GlobalArgs,
    subject: Subject,
    (user, from): (Option<String>, Option<IpAddr>),
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut config = effective_config(g)?;
    let now = validation_time(g)?;
    let outcome = match subject {
        Subject::Cert(cert) => explain_certificate(&config, &cert, (user.as_deref(), from), now)?,
        Subject::Dn(dn) => explain_dn(&config, &dn, (user.as_deref(), from))?,
        Subject::Token(token, adhoc) => {
            adhoc.apply(&mut config)?;
            crate::tokens::explain_token(&config, &token, (user.as_deref(), from), now)?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        outcome.print();
    }
    Ok(if outcome.accepted() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
