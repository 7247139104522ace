//! The effective configuration: the config file plus command-line overrides.

use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, anyhow};
use hpccert_core::config::{Config, DEFAULT_PATH};

use crate::cli::GlobalArgs;

/// Load the config file (the default path may be absent) and apply the flags.
pub fn effective_config(g: &GlobalArgs) -> anyhow::Result<Config> {
    let mut config = match &g.config {
        Some(path) => Config::load(path)?,
        None if Path::new(DEFAULT_PATH).exists() => Config::load(Path::new(DEFAULT_PATH))?,
        None => Config::default(),
    };
    if let Some(dir) = &g.ca_dir {
        config.trust.ca_dir = Some(dir.clone());
        config.trust.ca_bundle = None;
    }
    if let Some(map) = &g.gridmap {
        config.mapping.grid_mapfile = map.clone();
    }
    if let Some(crl) = g.crl {
        config.trust.crl = crl.into();
    }
    if g.allow_limited_proxies {
        config.trust.allow_limited_proxies = true;
    }
    Ok(config)
}

/// `--at` or the current time.
pub fn validation_time(g: &GlobalArgs) -> anyhow::Result<SystemTime> {
    match &g.at {
        None => Ok(hpccert_core::clock::now()),
        Some(text) => {
            let t =
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .with_context(|| {
                    format!("--at {text:?} is not an RFC 3339 time (e.g. 2026-01-31T12:00:00Z)")
                })?;
            let secs = u64::try_from(t.unix_timestamp())
                .map_err(|_| anyhow!("--at {text:?} is before 1970"))?;
            Ok(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        }
    }
}
