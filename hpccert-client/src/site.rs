//! Sites: the portal's discovery document (`/.well-known/hpccert`), the client's own config
//! file (`~/.config/hpccert/config.toml`: the sites logged in to, and the default) and where a
//! site's files live.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::files;

/// What the portal says about its site (`GET /.well-known/hpccert`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Discovery {
    pub site: String,
    pub portal: String,
    pub certificate_endpoint: String,
    #[serde(default)]
    pub challenge_endpoint: Option<String>,
    /// Where an identity is linked to an account.
    pub link_url: String,
    pub oidc: OidcSettings,
    #[serde(default)]
    pub ssh_ca_keys: Vec<String>,
    /// `host` or `host:port`.
    #[serde(default)]
    pub login_hosts: Vec<String>,
    #[serde(default)]
    pub max_validity: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct OidcSettings {
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub audience: Option<String>,
}

/// The client's config file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The site `hpccert login` uses without a SITE argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default)]
    pub site: BTreeMap<String, SiteEntry>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteEntry {
    /// The portal's URL.
    pub portal: String,
}

/// Where the client keeps its state: the config and token directories and the SSH key
/// directory (all under HOME unless the XDG variables say otherwise).
#[derive(Debug, Clone)]
pub struct Dirs {
    pub config: PathBuf,
    pub ssh: PathBuf,
    pub runtime: PathBuf,
    pub home: PathBuf,
}

impl Dirs {
    pub fn from_env() -> Result<Self> {
        let home = std::env::var_os("HOME")
            .or_else(|| std::env::var_os("USERPROFILE"))
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("HOME is not set: cannot tell where to keep keys"))?;
        let xdg = |var: &str, default: PathBuf| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .unwrap_or(default)
        };
        let config = xdg("XDG_CONFIG_HOME", home.join(".config")).join("hpccert");
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.is_dir())
            .map_or_else(|| config.join("run"), |r| r.join("hpccert"));
        Ok(Self {
            config,
            ssh: home.join(".ssh").join("hpccert"),
            runtime,
            home,
        })
    }

    pub fn config_file(&self) -> PathBuf {
        self.config.join("config.toml")
    }
    /// The private key of a site; the public key and certificate are beside it.
    pub fn key(&self, site: &str) -> PathBuf {
        self.ssh.join(site)
    }
    pub fn certificate(&self, site: &str) -> PathBuf {
        self.ssh.join(format!("{site}-cert.pub"))
    }
    pub fn public_key(&self, site: &str) -> PathBuf {
        self.ssh.join(format!("{site}.pub"))
    }
    /// The site's discovery document as last fetched (for `ssh-config` and `status`).
    pub fn discovery(&self, site: &str) -> PathBuf {
        self.config.join(format!("{site}.json"))
    }
    /// The current access token (short-lived).
    pub fn access_token(&self, site: &str) -> PathBuf {
        self.runtime.join(format!("{site}.token"))
    }
    /// The refresh token, kept only with `--remember`.
    pub fn refresh_token(&self, site: &str) -> PathBuf {
        self.config.join(format!("{site}.refresh"))
    }
}

impl ClientConfig {
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("{}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string(self)?;
        files::write_private(path, text.as_bytes())
    }

    /// The site a command names (a name from this file, or a portal URL), or the default.
    pub fn resolve(&self, arg: Option<&str>) -> Result<(String, Option<String>)> {
        match arg {
            Some(a) if a.contains("://") => {
                let name = site_name(a)?;
                Ok((name, Some(a.trim_end_matches('/').to_string())))
            }
            Some(name) => match self.site.get(name) {
                Some(e) => Ok((name.to_string(), Some(e.portal.clone()))),
                None => bail!(
                    "no site named {name:?} in {}: log in once with the portal's URL (hpccert login https://portal.example.org)",
                    "~/.config/hpccert/config.toml"
                ),
            },
            None => match &self.default {
                Some(name) => Ok((name.clone(), self.site.get(name).map(|e| e.portal.clone()))),
                None => bail!(
                    "no site given and none logged in to yet: hpccert login https://portal.example.org"
                ),
            },
        }
    }
}

/// A site's short name from its portal URL: the host, with `-PORT` when a port is given.
pub fn site_name(portal: &str) -> Result<String> {
    let url = url::Url::parse(portal).with_context(|| format!("{portal:?} is not a URL"))?;
    check_portal_url(&url)?;
    let host = url
        .host_str()
        .ok_or_else(|| anyhow!("{portal:?} names no host"))?;
    Ok(match url.port() {
        Some(p) => format!("{host}-{p}"),
        None => host.to_string(),
    })
}

/// HTTPS, or plain HTTP to this machine only (a test or development portal).
pub fn check_portal_url(url: &url::Url) -> Result<()> {
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if url.scheme() == "https" || (url.scheme() == "http" && loopback) {
        Ok(())
    } else {
        bail!("{url}: a portal is reached over https (plain http only on this machine)")
    }
}

/// Fetch the portal's discovery document.
pub fn discover(http: &reqwest::blocking::Client, portal: &str) -> Result<Discovery> {
    let url = format!("{}/.well-known/hpccert", portal.trim_end_matches('/'));
    let r = http.get(&url).send().with_context(|| {
        format!("the portal {portal} cannot be reached (is the URL right, is the network up?)")
    })?;
    if !r.status().is_success() {
        bail!(
            "{url} answered {}: is {portal} an hpccert portal with an SSH CA?",
            r.status()
        );
    }
    let d: Discovery = r
        .json()
        .with_context(|| format!("{url} is not an hpccert discovery document"))?;
    Ok(d)
}

impl Discovery {
    /// The login hosts as (host, port).
    pub fn hosts(&self) -> Vec<(String, u16)> {
        self.login_hosts
            .iter()
            .map(|h| match h.rsplit_once(':') {
                Some((host, port)) if port.parse::<u16>().is_ok() => {
                    (host.to_string(), port.parse().unwrap_or(22))
                }
                _ => (h.clone(), 22),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn site_names_and_urls() {
        assert_eq!(
            site_name("https://portal.example.org").unwrap(),
            "portal.example.org"
        );
        assert_eq!(
            site_name("http://127.0.0.1:8080/").unwrap(),
            "127.0.0.1-8080"
        );
        let e = site_name("http://portal.example.org").unwrap_err();
        assert!(e.to_string().contains("https"), "{e}");
    }

    #[test]
    fn a_named_site_or_the_default() {
        let mut c = ClientConfig::default();
        assert!(c.resolve(None).is_err());
        c.site.insert(
            "hpc".into(),
            SiteEntry {
                portal: "https://p.example".into(),
            },
        );
        c.default = Some("hpc".into());
        assert_eq!(
            c.resolve(None).unwrap(),
            ("hpc".into(), Some("https://p.example".into()))
        );
        assert!(c.resolve(Some("other")).is_err());
        assert_eq!(
            c.resolve(Some("https://q.example/")).unwrap().0,
            "q.example"
        );
    }

    #[test]
    fn login_hosts_with_and_without_ports() {
        let d: Discovery = serde_json::from_value(serde_json::json!({
            "site": "s", "portal": "https://p", "certificate_endpoint": "https://p/c",
            "link_url": "https://p/", "oidc": {"issuer": null, "client_id": null},
            "login_hosts": ["login.example:22", "login.example:2222", "gsi.example"]
        }))
        .unwrap();
        assert_eq!(
            d.hosts(),
            vec![
                ("login.example".into(), 22),
                ("login.example".into(), 2222),
                ("gsi.example".into(), 22)
            ]
        );
    }
}
