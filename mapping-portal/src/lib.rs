//! mapping-portal: users link their CILogon identity and DN to their local account; login
//! nodes fetch the result as one export bundle (`EXPORT.md`).
//!
//! * [`store`]: the database (SQLite or PostgreSQL) and the one function that changes it;
//! * [`model`]: identities, accounts, links, suspensions, changes and errors;
//! * [`export`]: the bundle, checked with the core parsers before it is published;
//! * [`http`]: `GET /export/v1/bundle` and `GET /healthz`, and serving (HTTP or HTTPS);
//! * [`web`]: the pages: OIDC login, account proof, links, admin pages;
//! * [`sshca`]: the SSH user CA (`[portal.ssh_ca]`): `POST /ssh/v1/certificate`,
//!   `GET /.well-known/hpccert`;
//! * [`metrics`]: Prometheus counters at `GET /metrics` (loopback clients).
//!
//! [`Portal`] ties them: it applies a change, then publishes the new bundle (in memory for
//! the HTTP side, and into `[portal] export_dir` for the portal's own node).
#![forbid(unsafe_code)]

pub mod export;
pub mod http;
pub mod metrics;
pub mod model;
pub mod possession;
pub mod sshca;
pub mod store;
pub mod web;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use export::{Bundle, sha256_hex};
use hpccert_core::identity::dn::DistinguishedName;
use model::{Actor, Change, StoreError};
use store::Store;

/// The bundle as served: its body and ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub serial: i64,
    pub body: Vec<u8>,
    /// Hex SHA-256 of the body (the ETag without its quotes).
    pub etag: String,
}

/// A secret that never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ExportToken(String);

impl ExportToken {
    /// Shorter secrets are refused: they could be guessed.
    pub const MIN_LEN: usize = 32;

    pub fn new(secret: &str) -> Result<Self, StoreError> {
        if secret.len() < Self::MIN_LEN
            || secret.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(StoreError::Invalid(format!(
                "an export token must be at least {} characters without white space",
                Self::MIN_LEN
            )));
        }
        Ok(Self(secret.to_string()))
    }

    /// The secret (to print once, in `--dev`).
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn digest(&self) -> [u8; 32] {
        openssl::sha::sha256(self.0.as_bytes())
    }
}

impl std::fmt::Debug for ExportToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExportToken(<secret>)")
    }
}

/// What the portal needs besides its database.
#[derive(Debug, Clone)]
pub struct PortalSettings {
    /// The public URL named in the bundle.
    pub url: String,
    pub export_tokens: Vec<ExportToken>,
    /// Client certificate subjects that may fetch the export (over mutual TLS).
    pub export_client_dns: Vec<DistinguishedName>,
    pub export_dir: Option<PathBuf>,
    /// The SSH CA's public keys: with any, the bundle is format version 2 and carries them and
    /// the KRL of revoked certificates.
    pub ssh_ca_keys: hpccert_core::trust::sshca::CaPublicKeys,
}

/// The running portal.
#[derive(Debug)]
pub struct Portal {
    store: Store,
    url: String,
    /// SHA-256 of each export token: compared in constant time, on equal lengths.
    token_digests: Vec<[u8; 32]>,
    client_dns: Vec<DistinguishedName>,
    export_dir: Option<PathBuf>,
    ssh_ca_keys: hpccert_core::trust::sshca::CaPublicKeys,
    current: RwLock<Arc<Published>>,
    /// Serialises installs into `export_dir` (never an older serial over a newer one).
    installed: tokio::sync::Mutex<i64>,
}

impl Portal {
    /// Publish the store's current export and return the portal.
    pub async fn start(store: Store, settings: PortalSettings) -> Result<Arc<Self>, StoreError> {
        let bundle = store.export().await?;
        let published = publish(&bundle, &settings.url, &settings.ssh_ca_keys);
        let portal = Arc::new(Self {
            store,
            url: settings.url,
            token_digests: settings
                .export_tokens
                .iter()
                .map(ExportToken::digest)
                .collect(),
            client_dns: settings.export_client_dns,
            export_dir: settings.export_dir,
            ssh_ca_keys: settings.ssh_ca_keys,
            current: RwLock::new(Arc::new(published)),
            installed: tokio::sync::Mutex::new(-1),
        });
        portal.install(&bundle).await;
        Ok(portal)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Apply a change and publish the new export.
    pub async fn change(
        &self,
        actor: &Actor,
        change: &Change,
        now: SystemTime,
    ) -> Result<Arc<Published>, StoreError> {
        let bundle = self.store.change(actor, change, now).await?;
        let published = Arc::new(publish(&bundle, &self.url, &self.ssh_ca_keys));
        {
            let mut current = self
                .current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // two changes may finish out of order: keep the newer
            if current.serial < published.serial {
                *current = Arc::clone(&published);
            }
        }
        self.install(&bundle).await;
        Ok(published)
    }

    /// The bundle being served.
    pub fn current(&self) -> Arc<Published> {
        let current = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&current)
    }

    /// Whether `presented` is one of the export tokens (constant time in the secret).
    pub fn export_token_ok(&self, presented: &str) -> bool {
        let digest = openssl::sha::sha256(presented.as_bytes());
        let mut ok = false;
        for known in &self.token_digests {
            ok |= openssl::memcmp::eq(known, &digest);
        }
        ok
    }

    /// Whether a client certificate with this subject may fetch the export (the certificate
    /// itself was verified against `export_client_ca` in the TLS handshake).
    pub fn export_client_ok(&self, subject: &DistinguishedName) -> bool {
        self.client_dns
            .iter()
            .any(|dn| dn.canonical() == subject.canonical())
    }

    async fn install(&self, bundle: &Bundle) {
        let Some(dir) = &self.export_dir else { return };
        let mut installed = self.installed.lock().await;
        if *installed >= bundle.serial {
            return;
        }
        match bundle.install(dir) {
            Ok(()) => {
                *installed = bundle.serial;
                tracing::info!(serial = bundle.serial, dir = %dir.display(), "export installed");
            }
            // the database and the HTTP export are right; the node's files catch up at the
            // next change or restart
            Err(e) => tracing::error!(serial = bundle.serial, "installing the export failed: {e}"),
        }
    }
}

/// Count an issued SSH certificate.
pub(crate) fn metrics_issued() {
    metrics::get().certificates_issued.inc();
}

/// Count a refused certificate request.
pub(crate) fn metrics_refused(reason: &str) {
    metrics::get()
        .certificates_refused
        .get_or_create(&metrics::ReasonLabels {
            reason: reason.to_string(),
        })
        .inc();
}

fn publish(
    bundle: &Bundle,
    url: &str,
    ssh_ca_keys: &hpccert_core::trust::sshca::CaPublicKeys,
) -> Published {
    let ssh = if ssh_ca_keys.is_empty() {
        None
    } else {
        let revoked: Vec<(String, u64)> = bundle
            .revoked
            .iter()
            .map(|r| (r.ca_fingerprint.clone(), r.serial))
            .collect();
        match ssh_ca_keys.krl(
            &revoked,
            u64::try_from(bundle.serial).unwrap_or(0),
            u64::try_from(bundle.generated).unwrap_or(0),
        ) {
            Ok(krl) => Some(export::SshExport {
                ca_keys: ssh_ca_keys.text(),
                krl,
            }),
            // never a bundle without the revocations: the nodes keep the last one
            Err(e) => {
                tracing::error!("the KRL could not be made, the bundle keeps no SSH files: {e}");
                None
            }
        }
    };
    let body = bundle.to_json_with(url, ssh.as_ref());
    Published {
        serial: bundle.serial,
        etag: sha256_hex(&body),
        body,
    }
}
