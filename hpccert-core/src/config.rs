//! `/etc/hpccert/hpccert.toml`: one versioned config file for every component.
//!
//! Unknown keys are errors, and every error names the file, the line and the key. Each
//! component reads its own section; sections for components not built yet are refused
//! rather than ignored, so a typo never silently disables a check.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::trust::Purpose;
use crate::x509::{CrlPolicy, NamespaceEnforcement, VerifyOptions};

/// The default location of the config file.
pub const DEFAULT_PATH: &str = "/etc/hpccert/hpccert.toml";
/// The config format version this build reads.
pub const VERSION: u32 = 1;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Format version; must be 1.
    pub version: u32,
    #[serde(default)]
    pub trust: TrustConfig,
    #[serde(default)]
    pub mapping: MappingConfig,
}

/// `[trust]`: where CAs come from and how chains are checked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// IGTF trust directory (`<hash>.0`, `<hash>.r0`, `<hash>.namespaces`, ...).
    pub ca_dir: Option<PathBuf>,
    /// A PEM bundle of CA certificates, instead of `ca_dir`.
    pub ca_bundle: Option<PathBuf>,
    /// `require`, `if-present` or `ignore`.
    pub crl: CrlPolicy,
    /// `require`, `if-present` or `ignore`.
    pub namespaces: NamespaceEnforcement,
    /// Accept Globus limited proxies.
    pub allow_limited_proxies: bool,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            ca_dir: None,
            ca_bundle: None,
            crl: CrlPolicy::IfPresent,
            namespaces: NamespaceEnforcement::IfPresent,
            allow_limited_proxies: false,
        }
    }
}

impl TrustConfig {
    /// The trust source: `ca_bundle` if given, else `ca_dir`, else the IGTF default.
    pub fn source(&self) -> PathBuf {
        self.ca_bundle
            .clone()
            .or_else(|| self.ca_dir.clone())
            .unwrap_or_else(|| PathBuf::from("/etc/grid-security/certificates"))
    }

    pub fn verify_options(&self) -> VerifyOptions {
        VerifyOptions {
            crl: self.crl,
            namespaces: self.namespaces,
            allow_limited_proxies: self.allow_limited_proxies,
            purpose: Purpose::ClientAuth,
            ..VerifyOptions::default()
        }
    }
}

/// `[mapping]`: identity to account.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MappingConfig {
    pub grid_mapfile: PathBuf,
}

impl Default for MappingConfig {
    fn default() -> Self {
        Self {
            grid_mapfile: PathBuf::from("/etc/grid-security/grid-mapfile"),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            version: VERSION,
            trust: TrustConfig::default(),
            mapping: MappingConfig::default(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse `text`; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let config: Config =
            toml::from_str(text).map_err(|e| invalid(describe_toml_error(text, &e)))?;
        if config.version != VERSION {
            return Err(invalid(format!(
                "version = {} is not supported (this build reads version = {VERSION})",
                config.version
            )));
        }
        if config.trust.ca_dir.is_some() && config.trust.ca_bundle.is_some() {
            return Err(invalid(
                "[trust] ca_dir and ca_bundle are exclusive: give one".into(),
            ));
        }
        Ok(config)
    }
}

fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let snippet = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}: {message} (in `{snippet}`)")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let c = Config::parse(
            "version = 1\n[trust]\nca_dir = \"/x\"\ncrl = \"require\"\nnamespaces = \"ignore\"\nallow_limited_proxies = true\n[mapping]\ngrid_mapfile = \"/g\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.trust.crl, CrlPolicy::Require);
        assert_eq!(c.trust.namespaces, NamespaceEnforcement::Ignore);
        assert!(c.trust.allow_limited_proxies);
        assert_eq!(c.trust.source(), PathBuf::from("/x"));
        assert_eq!(c.mapping.grid_mapfile, PathBuf::from("/g"));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = Config::parse(
            "version = 1\n[trust]\ncrl = \"sometimes\"\n",
            Path::new("/etc/h.toml"),
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("/etc/h.toml: line 3:"), "{s}");
        assert!(s.contains("require") && s.contains("crl"), "{s}");

        let s = Config::parse(
            "version = 1\n[trust]\nca_dri = \"/x\"\n",
            Path::new("h.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(s.contains("line 3") && s.contains("ca_dri"), "{s}");

        let s = Config::parse("version = 2\n", Path::new("h.toml"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("version = 2 is not supported"), "{s}");

        let s = Config::parse("[trust]\n", Path::new("h.toml"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("version"), "{s}");

        let s = Config::parse("version = 1\n[sshd]\nport = 2\n", Path::new("h.toml"))
            .unwrap_err()
            .to_string();
        assert!(s.contains("sshd"), "{s}");
    }

    #[test]
    fn shipped_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/hpccert.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(
            c,
            Config::default(),
            "the shipped file documents the defaults"
        );
    }
}
