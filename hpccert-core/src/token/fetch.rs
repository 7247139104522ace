//! Fetching issuer keys over HTTP (cargo feature `fetch`; the PAM and NSS modules do not
//! enable it, so no network code is linked into them).
//!
//! Discovery reads `ISSUER/.well-known/openid-configuration`, checks that its `issuer` is the
//! configured one exactly, and follows `jwks_uri`; a configured JWKS URL skips discovery.
//! HTTPS is required, except for loopback addresses (test issuers).
//!
//! [`RefreshingKeySource`] is the daemon's key source: the disk cache first; a fetch when the
//! cache is missing or old; last good keys kept when the issuer is down (until
//! `max_key_age`); failing issuers not retried within `negative_ttl`; an unknown `kid`
//! triggers a refetch at most once per `min_refetch_interval`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::keys::{CachedKeys, FileKeySource, write_cached};
use super::{IssuerKeys, IssuerPolicy, KeySet, KeySource, TokenError};

/// An HTTP client for issuer metadata and keys.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::blocking::Client,
}

fn loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn checked_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("bad URL {s:?}: {e}"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback(&url) => Ok(url),
        other => Err(format!(
            "{s}: scheme {other} refused (https required except on loopback)"
        )),
    }
}

impl Fetcher {
    pub fn new(timeout: Duration) -> Result<Self, String> {
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hpccert/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { client })
    }

    fn get(&self, url: &str, limit: usize) -> Result<Vec<u8>, String> {
        let url = checked_url(url)?;
        let resp = self
            .client
            .get(url.clone())
            .send()
            .map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        let body = resp.bytes().map_err(|e| format!("{url}: {e}"))?;
        if body.len() > limit {
            return Err(format!("{url}: response larger than {limit} bytes"));
        }
        Ok(body.to_vec())
    }

    /// The issuer's `jwks_uri` from its discovery document.
    pub fn discover_jwks_uri(&self, issuer: &str) -> Result<String, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let body = self.get(&url, 256 * 1024)?;
        let doc: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))?;
        let stated = doc
            .get("issuer")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        if stated != issuer {
            return Err(format!("{url} names issuer {stated:?}, not {issuer:?}"));
        }
        doc.get("jwks_uri")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("{url}: no jwks_uri"))
    }

    /// Fetch the issuer's keys (through discovery unless `jwks_uri` is given).
    pub fn fetch(
        &self,
        issuer: &str,
        jwks_uri: Option<&str>,
        now: i64,
    ) -> Result<(CachedKeys, KeySet), String> {
        let uri = match jwks_uri {
            Some(u) => u.to_string(),
            None => self.discover_jwks_uri(issuer)?,
        };
        let body = self.get(&uri, 1024 * 1024)?;
        let set = KeySet::from_jwks(&body).map_err(|e| format!("{uri}: {e}"))?;
        let jwks: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok((
            CachedKeys {
                issuer: issuer.to_string(),
                source: uri,
                fetched_at: now,
                jwks,
            },
            set,
        ))
    }
}

/// Fetch an issuer's keys and write them to the cache (what `gridmap-tool keys refresh` does).
pub fn refresh_issuer(
    fetcher: &Fetcher,
    issuer: &str,
    jwks_uri: Option<&str>,
    cache_dir: &Path,
    now: i64,
) -> Result<(PathBuf, CachedKeys, KeySet), String> {
    let (cached, set) = fetcher.fetch(issuer, jwks_uri, now)?;
    let path =
        write_cached(cache_dir, &cached).map_err(|e| format!("cannot write the key cache: {e}"))?;
    Ok((path, cached, set))
}

#[derive(Debug, Default, Clone)]
struct FetchState {
    last_attempt: Option<i64>,
    last_error: Option<String>,
    last_kid_refetch: Option<i64>,
}

/// Timing of a [`RefreshingKeySource`], seconds.
#[derive(Debug, Clone, Copy)]
pub struct RefreshTiming {
    /// Refresh cached keys older than this.
    pub refresh_after: i64,
    /// After a failed fetch, do not try that issuer again for this long.
    pub negative_ttl: i64,
    /// At most one refetch for an unknown `kid` per issuer in this interval.
    pub min_refetch_interval: i64,
}

impl Default for RefreshTiming {
    fn default() -> Self {
        Self {
            refresh_after: 3600,
            negative_ttl: 60,
            min_refetch_interval: 60,
        }
    }
}

/// The daemon's key source (see the module documentation).
#[derive(Debug)]
pub struct RefreshingKeySource {
    files: FileKeySource,
    fetcher: Fetcher,
    jwks_uris: HashMap<String, String>,
    timing: RefreshTiming,
    state: Mutex<HashMap<String, FetchState>>,
}

impl RefreshingKeySource {
    pub fn new(files: FileKeySource, fetcher: Fetcher, timing: RefreshTiming) -> Self {
        Self {
            files,
            fetcher,
            jwks_uris: HashMap::new(),
            timing,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Use a fixed JWKS URL for `issuer` (no discovery).
    pub fn with_jwks_uri(mut self, issuer: &str, uri: &str) -> Self {
        self.jwks_uris.insert(issuer.to_string(), uri.to_string());
        self
    }

    /// The last fetch error of `issuer`, if its last attempt failed.
    pub fn last_error(&self, issuer: &str) -> Option<String> {
        self.state.lock().ok()?.get(issuer)?.last_error.clone()
    }

    /// Fetch now unless a recent failure says not to; on success the cache file is replaced.
    fn try_fetch(&self, issuer: &str, now: i64) -> Option<IssuerKeys> {
        {
            let Ok(state) = self.state.lock() else {
                return None;
            };
            if let Some(s) = state.get(issuer)
                && s.last_error.is_some()
                && s.last_attempt
                    .is_some_and(|t| now - t < self.timing.negative_ttl)
            {
                return None;
            }
        }
        let result = refresh_issuer(
            &self.fetcher,
            issuer,
            self.jwks_uris.get(issuer).map(String::as_str),
            self.files.cache_dir(),
            now,
        );
        let mut state = self.state.lock().ok()?;
        let entry = state.entry(issuer.to_string()).or_default();
        entry.last_attempt = Some(now);
        match result {
            Ok((_, cached, set)) => {
                entry.last_error = None;
                tracing::info!(target: "hpccert::keys", issuer, source = %cached.source, keys = set.keys().len(), "issuer keys refreshed");
                Some(IssuerKeys {
                    keys: Arc::new(set),
                    fetched_at: Some(cached.fetched_at),
                })
            }
            Err(e) => {
                tracing::warn!(target: "hpccert::keys", issuer, "key refresh failed: {e}");
                entry.last_error = Some(e);
                None
            }
        }
    }
}

impl KeySource for RefreshingKeySource {
    fn keys(&self, policy: &IssuerPolicy, now: i64) -> Result<IssuerKeys, TokenError> {
        match self.files.keys(policy, now) {
            Ok(keys) => {
                let old = keys
                    .fetched_at
                    .is_some_and(|t| now - t > self.timing.refresh_after);
                if old && let Some(fresh) = self.try_fetch(&policy.issuer, now) {
                    return Ok(fresh);
                }
                Ok(keys)
            }
            Err(cache_error) => {
                self.try_fetch(&policy.issuer, now)
                    .ok_or_else(|| TokenError::NoKeys {
                        issuer: policy.issuer.clone(),
                        reason: self
                            .last_error(&policy.issuer)
                            .unwrap_or_else(|| cache_error.to_string()),
                    })
            }
        }
    }

    fn refresh_for_unknown_kid(&self, policy: &IssuerPolicy, now: i64) -> Option<IssuerKeys> {
        {
            let mut state = self.state.lock().ok()?;
            let entry = state.entry(policy.issuer.clone()).or_default();
            if entry
                .last_kid_refetch
                .is_some_and(|t| now - t < self.timing.min_refetch_interval)
            {
                return None;
            }
            entry.last_kid_refetch = Some(now);
        }
        self.try_fetch(&policy.issuer, now)
    }
}
