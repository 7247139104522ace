//! Token commands: `explain --token`, `keys refresh`, `keys show`, `tokenmap check`,
//! `tokenmap import-condor`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use hpccert_core::config::{Config, IssuerConfig};
use hpccert_core::identity::gridmap::{GridMapfile, MappedAccount};
use hpccert_core::identity::mapping::{Mapper, TokenRules};
use hpccert_core::identity::tokenmap::{TokenMapfile, import_condor};
use hpccert_core::token::fetch::{Fetcher, refresh_issuer};
use hpccert_core::token::keys::{list_cached, read_cached};
use hpccert_core::token::{unix_seconds, verify_token};
use serde::Serialize;

use crate::outcome::{Outcome, ReadOnlySources};

/// The ad-hoc issuer flags of `explain --token`.
#[derive(Debug, Clone, Default)]
pub struct AdHoc {
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub jwks: Option<PathBuf>,
    pub token_mapfile: Option<PathBuf>,
    pub require_scope: Vec<String>,
}

impl AdHoc {
    /// Apply the flags: `--issuer` replaces the configured issuers with one.
    pub fn apply(&self, config: &mut Config) -> anyhow::Result<()> {
        if let Some(issuer) = &self.issuer {
            let mut one = IssuerConfig::new(issuer, &self.audience);
            one.jwks_file = self.jwks.clone();
            if !self.require_scope.is_empty() {
                one.required_scopes = Some(self.require_scope.clone());
            }
            if one.audiences.is_empty() {
                anyhow::bail!("--issuer needs --audience AUD (the audience this service accepts)");
            }
            config.issuers = vec![one];
        } else {
            if !self.audience.is_empty() || self.jwks.is_some() {
                anyhow::bail!(
                    "--audience and --jwks describe an ad-hoc issuer: give --issuer URL too"
                );
            }
            if !self.require_scope.is_empty() {
                for i in &mut config.issuers {
                    i.required_scopes = Some(self.require_scope.clone());
                }
            }
        }
        if let Some(map) = &self.token_mapfile {
            config.mapping.token_mapfile = Some(map.clone());
        }
        Ok(())
    }
}

fn read_token(source: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    if source == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the token from stdin")?;
    } else {
        text = std::fs::read_to_string(source)
            .with_context(|| format!("cannot read {}", source.display()))?;
    }
    Ok(text.trim().to_string())
}

/// Verify a token and map it, as a login would.
pub fn explain_token(
    config: &Config,
    source: &Path,
    (user, from): (Option<&str>, Option<std::net::IpAddr>),
    now: SystemTime,
) -> anyhow::Result<Outcome> {
    if config.issuers.is_empty() {
        anyhow::bail!(
            "no token issuer is configured: add an [[issuer]] table or give --issuer URL --audience AUD"
        );
    }
    let token = read_token(source)?;
    let policies = config.issuer_policies();
    let rules = TokenRules::of_config(config);
    let token_map = match &config.mapping.token_mapfile {
        Some(path) => Some(TokenMapfile::load(path).map_err(|errs| {
            let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("the token map is unusable:\n  {}", lines.join("\n  "))
        })?),
        None => None,
    };
    let keys = config.file_key_source();
    let verified = match verify_token(&token, &policies, &keys, config.tokens.max_token_bytes, now)
    {
        Ok(v) => v,
        Err(e) => {
            return Ok(Outcome::refused(
                "credential",
                None,
                Vec::new(),
                e.to_string(),
            ));
        }
    };
    let empty = GridMapfile::default();
    let sources = ReadOnlySources::load(config, from)?;
    match sources
        .apply(Mapper::new(&empty))
        .with_tokens(token_map.as_ref(), &rules)
        .decide_token(&verified, user)
    {
        Ok(d) => Ok(Outcome {
            decision: "accept",
            refused_at: None,
            account: Some(d.account().to_string()),
            identity: Some(d.identity().to_string()),
            credential: Some(d.credential().to_string()),
            proxy_depth: None,
            capabilities: Some(d.capabilities().iter().map(ToString::to_string).collect()),
            reasons: {
                let mut reasons = d.reasons().to_vec();
                let rights = hpccert_core::identity::rights::SessionRights::under(&d, config);
                reasons.push(format!("a session may: {rights}"));
                reasons
            },
            cache: Some(crate::outcome::cache_note(
                config,
                &d,
                (verified.expires_at(), None),
                hpccert_core::token::unix_seconds(now),
            )),
        }),
        Err(refusal) => Ok(Outcome::refused(
            "mapping",
            Some(format!(
                "{} (issuer {})",
                verified.subject(),
                verified.issuer()
            )),
            vec![verified.summary()],
            refusal.to_string(),
        )),
    }
}

/// `keys refresh`: fetch each issuer's keys into the cache. Exit 1 when any issuer failed
/// (its last good keys stay in the cache).
pub fn keys_refresh(
    config: &Config,
    only: Option<&str>,
    now: SystemTime,
) -> anyhow::Result<ExitCode> {
    let now = unix_seconds(now);
    let fetcher = Fetcher::new(Duration::from_secs(config.tokens.fetch_timeout))
        .map_err(anyhow::Error::msg)?;
    let mut failed = 0;
    let mut done = 0;
    for issuer in &config.issuers {
        if only.is_some_and(|o| o != issuer.issuer) {
            continue;
        }
        done += 1;
        if let Some(file) = &issuer.jwks_file {
            println!(
                "SKIP {}: keys come from {} (nothing to fetch)",
                issuer.issuer,
                file.display()
            );
            continue;
        }
        let dir = &config.tokens.key_cache_dir;
        match refresh_issuer(
            &fetcher,
            &issuer.issuer,
            issuer.jwks_uri.as_deref(),
            dir,
            now,
        ) {
            Ok((path, cached, set)) => {
                let kids: Vec<&str> = set.keys().iter().map(|k| k.kid().unwrap_or("-")).collect();
                println!(
                    "OK {}: {} key(s) [{}] from {} -> {}",
                    issuer.issuer,
                    set.keys().len(),
                    kids.join(", "),
                    cached.source,
                    path.display()
                );
                for s in set.skipped() {
                    println!("  skipped {s}");
                }
            }
            Err(e) => {
                failed += 1;
                let kept = match read_cached(dir, &issuer.issuer) {
                    Ok((c, _)) => format!(
                        "keeping the cached keys fetched {} s ago",
                        now - c.fetched_at
                    ),
                    Err(_) => "no cached keys".to_string(),
                };
                println!("FAILED {}: {e} ({kept})", issuer.issuer);
                tracing::warn!(issuer = %issuer.issuer, "key refresh failed: {e}");
            }
        }
    }
    if let Some(o) = only
        && done == 0
    {
        anyhow::bail!("issuer {o} is not configured");
    }
    if done == 0 {
        println!("no [[issuer]] configured: nothing to refresh");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(Debug, Serialize)]
struct KeyRow {
    kid: Option<String>,
    alg: Option<String>,
    key: String,
}

#[derive(Debug, Serialize)]
struct IssuerRow {
    issuer: String,
    configured: bool,
    source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fetched_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    age_seconds: Option<i64>,
    stale: bool,
    keys: Vec<KeyRow>,
    skipped: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `keys show`: each configured issuer and each cache file, with key ids and ages.
pub fn keys_show(config: &Config, json: bool, now: SystemTime) -> anyhow::Result<ExitCode> {
    let now = unix_seconds(now);
    let dir = &config.tokens.key_cache_dir;
    let mut rows = Vec::new();
    for issuer in &config.issuers {
        let mut row = IssuerRow {
            issuer: issuer.issuer.clone(),
            configured: true,
            source: String::new(),
            fetched_at: None,
            age_seconds: None,
            stale: false,
            keys: Vec::new(),
            skipped: Vec::new(),
            error: None,
        };
        let loaded = match &issuer.jwks_file {
            Some(f) => {
                row.source = f.display().to_string();
                hpccert_core::token::keys::read_jwks_file(f)
            }
            None => read_cached(dir, &issuer.issuer).map(|(c, set)| {
                row.source = c.source.clone();
                row.fetched_at = Some(c.fetched_at);
                row.age_seconds = Some(now - c.fetched_at);
                row.stale = now - c.fetched_at > issuer.max_key_age;
                set
            }),
        };
        match loaded {
            Ok(set) => {
                row.keys = set
                    .keys()
                    .iter()
                    .map(|k| KeyRow {
                        kid: k.kid().map(str::to_string),
                        alg: k.alg().map(|a| a.to_string()),
                        key: k.description().to_string(),
                    })
                    .collect();
                row.skipped = set.skipped().to_vec();
            }
            Err(e) => row.error = Some(e),
        }
        rows.push(row);
    }
    for listing in list_cached(dir) {
        if let Ok((c, set)) = &listing.content
            && !config.issuers.iter().any(|i| i.issuer == c.issuer)
        {
            rows.push(IssuerRow {
                issuer: c.issuer.clone(),
                configured: false,
                source: c.source.clone(),
                fetched_at: Some(c.fetched_at),
                age_seconds: Some(now - c.fetched_at),
                stale: false,
                keys: set
                    .keys()
                    .iter()
                    .map(|k| KeyRow {
                        kid: k.kid().map(str::to_string),
                        alg: k.alg().map(|a| a.to_string()),
                        key: k.description().to_string(),
                    })
                    .collect(),
                skipped: set.skipped().to_vec(),
                error: None,
            });
        }
    }
    let unusable = rows
        .iter()
        .filter(|r| r.configured && (r.error.is_some() || r.stale))
        .count();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("key cache: {}", dir.display());
        for r in &rows {
            let state = match (&r.error, r.stale, r.configured) {
                (Some(_), _, _) => "NO KEYS",
                (None, true, _) => "STALE",
                (None, false, false) => "not configured",
                (None, false, true) => "ok",
            };
            println!("{} [{state}]", r.issuer);
            println!(
                "  source: {}",
                if r.source.is_empty() { "-" } else { &r.source }
            );
            if let (Some(at), Some(age)) = (r.fetched_at, r.age_seconds) {
                println!(
                    "  fetched: {} ({age} s ago)",
                    hpccert_core::trust::x509::format_unix(at)
                );
            }
            if let Some(e) = &r.error {
                println!("  error: {e}");
            }
            for k in &r.keys {
                println!(
                    "  key {} {} {}",
                    k.kid.as_deref().unwrap_or("(no kid)"),
                    k.alg.as_deref().unwrap_or("(any alg)"),
                    k.key
                );
            }
            for s in &r.skipped {
                println!("  skipped {s}");
            }
        }
    }
    Ok(if unusable == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `tokenmap check`: syntax errors, duplicate rules, unknown accounts, unconfigured issuers.
pub fn tokenmap_check(config: &Config, file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let Some(path) = file.or_else(|| config.mapping.token_mapfile.clone()) else {
        anyhow::bail!("no token map: give FILE or set [mapping] token_mapfile");
    };
    let shown = path.display();
    let text = match std::fs::read(&path) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) => {
            eprintln!("{shown}: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let map = match TokenMapfile::parse(&text) {
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
    let mut findings = 0;
    for (first, later) in map.duplicates() {
        findings += 1;
        println!(
            "{shown}:{later}: warning: duplicate rule (line {first} wins; this line is ignored)"
        );
    }
    for rule in map.rules() {
        if !config.issuers.iter().any(|i| i.issuer == rule.issuer) {
            findings += 1;
            println!(
                "{shown}:{}: warning: issuer {} is not configured ([[issuer]])",
                rule.line, rule.issuer
            );
        }
        for target in &rule.accounts {
            match target {
                MappedAccount::Local(a) => {
                    if hpccert_core::identity::mapping::system_uid(a.as_str()).is_none() {
                        findings += 1;
                        println!(
                            "{shown}:{}: warning: account {a} does not exist on this host",
                            rule.line
                        );
                    }
                }
                MappedAccount::Pool(p) => {
                    if !config.pools.iter().any(|c| c.name == p.as_str()) {
                        findings += 1;
                        println!(
                            "{shown}:{}: warning: pool .{p} is not configured ([[pool]])",
                            rule.line
                        );
                    }
                }
            }
        }
    }
    println!("{shown}: {} rule(s), {findings} finding(s)", map.len());
    Ok(if findings == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `tokenmap import-condor`: convert HTCondor SCITOKENS lines; the result on stdout.
pub fn tokenmap_import_condor(file: &Path) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let r = import_condor(&text);
    println!(
        "# converted from {} by gridmap-tool tokenmap import-condor",
        file.display()
    );
    for line in &r.lines {
        println!("{line}");
    }
    for (n, note) in &r.notes {
        eprintln!("{}:{n}: note: {note}", file.display());
    }
    for (n, why) in &r.refused {
        eprintln!("{}:{n}: not converted: {why}", file.display());
    }
    Ok(if r.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
