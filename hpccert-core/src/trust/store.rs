//! The trust store: CA certificates, CRLs and namespace policies.
//!
//! Read from an IGTF trust directory (`/etc/grid-security/certificates`) or from a PEM bundle.
//!
//! In a directory:
//! * `<hash>.0` ... `<hash>.9` are CA certificates (PEM; under OpenSSL's new or old hash
//!   names, often both as links to one file: duplicates are recognised by fingerprint);
//! * `<hash>.r0` ... `<hash>.r9` are CRLs as `fetch-crl` writes them (PEM or DER);
//! * `<hash>.namespaces` and `<hash>.signing_policy` hold namespace constraints
//!   ([`crate::trust::namespaces`]).
//!
//! A CRL belongs to the key that signed it, not to a file number or a name: when the store is
//! loaded its signature is checked (once) against every CA certificate named as its issuer,
//! and it becomes the CRL of each CA whose key verifies it. Two CAs with one subject DN and
//! different keys (a re-keyed CA, `<hash>.0` and `<hash>.1`) so each have their own CRL,
//! wherever `<hash>.rN` it sits; one CA's CRL never stands for the other's (not under
//! `crl = require` either). A CRL that names trusted CAs but is signed by none of them is
//! ignored for them, with a warning: it revokes nothing and disables nothing. A CRL that
//! names no trusted CA is kept for CAs a client presents, and checked against such a CA's key
//! when it is used.
//!
//! Nothing is skipped silently: a CA file or an ignored CRL is reported in
//! [`TrustStore::warnings`] (and so logged); a CRL file that cannot be read at all (so names no
//! signer) makes every CA of its `<hash>` unusable, and a policy file that cannot be used makes
//! its CA unusable (certificates they issued are refused, fail closed), unless the matching
//! check is configured `ignore`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509, X509Crl, X509CrlRef, X509PurposeId, X509Ref};
use thiserror::Error;

use crate::host::reload::{Fingerprint as SourceFingerprint, fingerprint as source_fingerprint};
use crate::identity::dn::DistinguishedName;
use crate::trust::certinfo::CertInfo;
use crate::trust::namespaces::{NamespacePolicy, PolicyFormat, PolicyIssuer, load_policy_file};

/// Why a trust store could not be loaded at all.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TrustError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}: no CA certificate found (expected <hash>.0 files or a PEM bundle)")]
    NoAnchors(PathBuf),
}

/// A trusted CA certificate.
#[derive(Debug, Clone)]
pub struct TrustAnchor {
    pub(crate) cert: X509,
    subject: DistinguishedName,
    file: PathBuf,
    fingerprint: String,
    /// What chain verification needs to know about this certificate, read once at load.
    pub(crate) info: Arc<CertInfo>,
    /// The CRL this CA's key signed (the newest, if several), or a CRL file under its
    /// `<hash>` that cannot be read. `None`: it has no CRL of its own.
    crl: Option<CrlState>,
}

impl TrustAnchor {
    pub fn subject(&self) -> &DistinguishedName {
        &self.subject
    }
    pub fn file(&self) -> &Path {
        &self.file
    }
    /// SHA-256 of the DER certificate, hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    /// This CA's own CRL: one whose signature its key verified when the store was loaded.
    pub fn crl(&self) -> Option<&CrlState> {
        self.crl.as_ref()
    }

    /// Take `crl`, which this CA's key signed: the newer of two is kept, and a CRL file that
    /// cannot be read keeps the CA unusable.
    fn take_crl(&mut self, crl: LoadedCrl) {
        let replace = match &self.crl {
            Some(CrlState::Loaded(old)) => crl.this_update > old.this_update,
            Some(CrlState::Broken { .. }) => false,
            None => true,
        };
        if replace {
            self.crl = Some(CrlState::Loaded(Box::new(crl)));
        }
    }
}

/// A CRL read from the trust directory, with what was learned about it at load time.
#[derive(Clone)]
pub struct LoadedCrl {
    pub(crate) crl: Arc<X509Crl>,
    pub file: PathBuf,
    pub issuer: DistinguishedName,
    /// Unix seconds.
    pub this_update: i64,
    pub next_update: Option<i64>,
    /// Problems that make this CRL unusable (RFC 5280 5.2: CRL number present and not
    /// critical, no unknown critical extension, issuer allowed to sign CRLs).
    pub defects: Vec<String>,
    /// Whether the signature was checked against the CA it is the CRL of (always, for the
    /// CRL of a trust anchor; not yet, for one kept for CAs a client presents).
    pub signature_checked: bool,
}

impl std::fmt::Debug for LoadedCrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCrl")
            .field("file", &self.file)
            .field("issuer", &self.issuer)
            .field("this_update", &self.this_update)
            .field("next_update", &self.next_update)
            .field("defects", &self.defects)
            .field("signature_checked", &self.signature_checked)
            .finish_non_exhaustive()
    }
}

/// The CRL situation of one CA.
#[derive(Debug, Clone)]
pub enum CrlState {
    Loaded(Box<LoadedCrl>),
    /// A CRL file under this CA's `<hash>` cannot be read, so it may be this CA's.
    Broken {
        file: PathBuf,
        reason: String,
    },
}

/// The namespace policy situation of one CA.
#[derive(Debug, Clone)]
pub enum PolicyState {
    Loaded {
        file: PathBuf,
        policy: NamespacePolicy,
    },
    Broken {
        file: PathBuf,
        reason: String,
    },
}

/// Which certificate purpose to check (OpenSSL's purpose checks on key usage and EKU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// User certificates: `clientAuth` when an EKU is present (the default).
    ClientAuth,
    ServerAuth,
    /// No purpose check (test harnesses only).
    Any,
}

type StoreKey = (i64, Purpose, u32);

/// CA certificates, CRLs and namespace policies from one source.
pub struct TrustStore {
    source: PathBuf,
    /// Each with its own CRL.
    anchors: Vec<TrustAnchor>,
    /// CRLs signed by no trust anchor, by issuer name: for CAs a client presents (checked
    /// against such a CA's key when used).
    other_crls: HashMap<DistinguishedName, Vec<LoadedCrl>>,
    policies: HashMap<DistinguishedName, PolicyState>,
    warnings: Vec<String>,
    /// Anchor index by the address of its OpenSSL object (which the stores built from this
    /// trust store share): how a verified chain's top certificate finds its anchor.
    by_object: HashMap<usize, usize>,
    /// OpenSSL stores carry the verification time, so one is built per second of use.
    store_cache: Mutex<Option<(StoreKey, Arc<X509Store>)>>,
}

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustStore")
            .field("source", &self.source)
            .field("anchors", &self.anchors)
            .field("other_crls", &self.other_crls)
            .field("policies", &self.policies)
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

impl Clone for TrustStore {
    fn clone(&self) -> Self {
        Self {
            source: self.source.clone(),
            anchors: self.anchors.clone(),
            other_crls: self.other_crls.clone(),
            policies: self.policies.clone(),
            warnings: self.warnings.clone(),
            // the clone shares the anchors' OpenSSL objects
            by_object: self.by_object.clone(),
            store_cache: Mutex::new(None),
        }
    }
}

fn fingerprint(cert: &X509) -> String {
    match cert.digest(openssl::hash::MessageDigest::sha256()) {
        Ok(d) => d.iter().map(|b| format!("{b:02x}")).collect(),
        Err(_) => String::from("unavailable"),
    }
}

fn anchor_from(cert: X509, file: &Path) -> Result<TrustAnchor, String> {
    let der = cert.to_der().map_err(|e| e.to_string())?;
    let subject = DistinguishedName::from_certificate_der(&der).map_err(|e| e.to_string())?;
    let info = CertInfo::from_der(&der)?;
    Ok(TrustAnchor {
        fingerprint: fingerprint(&cert),
        cert,
        subject,
        file: file.to_path_buf(),
        info: Arc::new(info),
        crl: None,
    })
}

/// Identity of an OpenSSL certificate object: its address.
fn object_key(cert: &X509Ref) -> usize {
    // an `&X509Ref` is the address of OpenSSL's X509 object
    std::ptr::from_ref(cert) as usize
}

/// `<8 hex>.<suffix>` file names of a trust directory.
fn hash_name(name: &str) -> Option<(&str, &str)> {
    let (hash, suffix) = name.split_once('.')?;
    (hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some((hash, suffix))
}

fn is_digit_suffix(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|d| d.len() == 1 && d.as_bytes()[0].is_ascii_digit())
}

fn unix(t: &x509_parser::time::ASN1Time) -> i64 {
    t.timestamp()
}

impl TrustStore {
    /// The store at `path`, loaded once per process while `path` stays as it was (size,
    /// mtime, inode and ctime of the directory and of every file in it): for occasional
    /// checks in a long-running process without a [`crate::host::reload::Reloading`] of their own,
    /// such as the portal's DN proofs. A source that changed is loaded again;
    /// one that no longer loads is an error (no last good version: such a check fails closed).
    pub fn load_cached(path: &Path) -> Result<Arc<Self>, TrustError> {
        /// At most this many sources are kept (one per configuration in practice).
        const KEPT: usize = 4;
        type Loaded = Vec<(PathBuf, SourceFingerprint, Arc<TrustStore>)>;
        static LOADED: Mutex<Loaded> = Mutex::new(Vec::new());
        // held through a load: callers arriving meanwhile wait for it rather than each
        // loading the directory and its CRLs again
        let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
        // taken before the load: a change during the load makes the next call load again
        let print = source_fingerprint(path);
        if let Some((_, _, store)) = loaded.iter().find(|(p, f, _)| p == path && *f == print) {
            return Ok(Arc::clone(store));
        }
        let store = Arc::new(Self::load(path)?);
        loaded.retain(|(p, _, _)| p != path);
        if loaded.len() >= KEPT {
            loaded.remove(0);
        }
        loaded.push((path.to_path_buf(), print, Arc::clone(&store)));
        Ok(store)
    }

    /// Load from a directory (IGTF layout) or a PEM bundle file.
    pub fn load(path: &Path) -> Result<Self, TrustError> {
        let meta = std::fs::metadata(path).map_err(|source| TrustError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.is_dir() {
            Self::load_dir(path)
        } else {
            Self::load_bundle(path)
        }
    }

    /// A PEM bundle: anchors only, no CRLs or namespace policies.
    pub fn load_bundle(path: &Path) -> Result<Self, TrustError> {
        let pem = std::fs::read(path).map_err(|source| TrustError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let certs = X509::stack_from_pem(&pem).map_err(|e| TrustError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut anchors = Vec::new();
        for cert in certs {
            let anchor = anchor_from(cert, path).map_err(|message| TrustError::Invalid {
                path: path.to_path_buf(),
                message,
            })?;
            anchors.push(anchor);
        }
        Self::from_parts(path, anchors, HashMap::new(), HashMap::new(), Vec::new())
    }

    /// An IGTF trust directory.
    pub fn load_dir(dir: &Path) -> Result<Self, TrustError> {
        let io = |source| TrustError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        let mut warnings = Vec::new();
        let mut anchors: Vec<TrustAnchor> = Vec::new();
        // file hash -> the anchors read from `<hash>.N` files, in file order: the CAs a CRL
        // file that cannot be read may belong to, and (the first) what SELF names
        let mut by_hash: HashMap<String, Vec<usize>> = HashMap::new();
        for name in &names {
            let Some((hash, suffix)) = hash_name(name) else {
                continue;
            };
            if !(suffix.len() == 1 && suffix.as_bytes()[0].is_ascii_digit()) {
                continue;
            }
            let file = dir.join(name);
            let loaded = std::fs::read(&file)
                .map_err(|e| e.to_string())
                .and_then(|pem| X509::stack_from_pem(&pem).map_err(|e| e.to_string()));
            let certs = match loaded {
                Ok(c) if !c.is_empty() => c,
                Ok(_) => {
                    warnings.push(format!(
                        "{}: no certificate in file; CA not loaded",
                        file.display()
                    ));
                    continue;
                }
                Err(e) => {
                    warnings.push(format!(
                        "{}: cannot read CA certificate: {e}; CA not loaded",
                        file.display()
                    ));
                    continue;
                }
            };
            for cert in certs {
                match anchor_from(cert, &file) {
                    Ok(a) => {
                        let index =
                            match anchors.iter().position(|b| b.fingerprint == a.fingerprint) {
                                Some(i) => i,
                                None => {
                                    anchors.push(a);
                                    anchors.len() - 1
                                }
                            };
                        let of_hash = by_hash.entry(hash.to_ascii_lowercase()).or_default();
                        if !of_hash.contains(&index) {
                            of_hash.push(index);
                        }
                    }
                    Err(e) => warnings.push(format!("{}: {e}; CA not loaded", file.display())),
                }
            }
        }

        let mut other_crls: HashMap<DistinguishedName, Vec<LoadedCrl>> = HashMap::new();
        let mut policies: HashMap<DistinguishedName, PolicyState> = HashMap::new();
        for name in &names {
            let Some((hash, suffix)) = hash_name(name) else {
                continue;
            };
            let file = dir.join(name);
            let of_hash = by_hash
                .get(&hash.to_ascii_lowercase())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let owner = of_hash
                .first()
                .and_then(|&i| anchors.get(i))
                .map(|a| a.subject.clone());
            if is_digit_suffix(suffix, "r") {
                match load_crl(&file) {
                    // matched to its CA by the key that signed it, never by the file's number
                    Ok(crl) => match place_crl(crl, &mut anchors, &mut other_crls) {
                        Placed::Anchors | Placed::NoAnchorOfItsName => {}
                        Placed::SignedByNone { issuer, candidates } => warnings.push(format!(
                            "{}: CRL of {issuer} is signed by none of the {candidates} trusted \
                             CA certificate(s) of that name: ignored for them (it revokes \
                             nothing and counts as no CRL)",
                            file.display()
                        )),
                    },
                    // no signer can be told: every CA of this hash may be the one it is for
                    Err(reason) if !of_hash.is_empty() => {
                        for &i in of_hash {
                            if let Some(anchor) = anchors.get_mut(i) {
                                anchor.crl = Some(CrlState::Broken {
                                    file: file.clone(),
                                    reason: reason.clone(),
                                });
                            }
                        }
                    }
                    Err(reason) => warnings.push(format!(
                        "{}: unusable CRL for an unknown CA: {reason}",
                        file.display()
                    )),
                }
            } else if suffix == "namespaces" || suffix == "signing_policy" {
                match load_policy_file(&file) {
                    Ok(list) => {
                        for mut policy in list {
                            if let Some(ca) = &owner {
                                policy.resolve_self(ca);
                            }
                            let PolicyIssuer::Dn(issuer) = policy.issuer().clone() else {
                                warnings.push(format!(
                                    "{}: SELF rule in a file that names no loaded CA; rule ignored",
                                    file.display()
                                ));
                                continue;
                            };
                            // .namespaces wins over .signing_policy for the same CA
                            let keep_old = matches!(
                                policies.get(&issuer),
                                Some(PolicyState::Loaded { policy: old, .. })
                                    if old.format() == PolicyFormat::Namespaces
                                        && policy.format() == PolicyFormat::SigningPolicy
                            ) || matches!(
                                policies.get(&issuer),
                                Some(PolicyState::Broken { .. })
                            );
                            if !keep_old {
                                policies.insert(
                                    issuer,
                                    PolicyState::Loaded {
                                        file: file.clone(),
                                        policy,
                                    },
                                );
                            }
                        }
                    }
                    Err(e) => {
                        let reason = format!("unusable {suffix} file: {e}");
                        match owner {
                            Some(ca) => {
                                policies.insert(
                                    ca,
                                    PolicyState::Broken {
                                        file: file.clone(),
                                        reason,
                                    },
                                );
                            }
                            None => warnings
                                .push(format!("{}: {reason} (for an unknown CA)", file.display())),
                        }
                    }
                }
            }
        }
        Self::from_parts(dir, anchors, other_crls, policies, warnings)
    }

    fn from_parts(
        source: &Path,
        anchors: Vec<TrustAnchor>,
        other_crls: HashMap<DistinguishedName, Vec<LoadedCrl>>,
        policies: HashMap<DistinguishedName, PolicyState>,
        warnings: Vec<String>,
    ) -> Result<Self, TrustError> {
        if anchors.is_empty() {
            return Err(TrustError::NoAnchors(source.to_path_buf()));
        }
        for w in &warnings {
            tracing::warn!(target: "hpccert::trust", "{w}");
        }
        let by_object = anchors
            .iter()
            .enumerate()
            .map(|(i, a)| (object_key(&a.cert), i))
            .collect();
        Ok(Self {
            source: source.to_path_buf(),
            anchors,
            other_crls,
            policies,
            warnings,
            by_object,
            store_cache: Mutex::new(None),
        })
    }

    /// Trust anchors built in memory (tests, harnesses, dev mode).
    pub fn from_certificates(
        anchors: Vec<X509>,
        crls: Vec<X509Crl>,
        policies: Vec<NamespacePolicy>,
    ) -> Result<Self, TrustError> {
        let here = PathBuf::from("<memory>");
        let mut list = Vec::new();
        for cert in anchors {
            list.push(
                anchor_from(cert, &here).map_err(|message| TrustError::Invalid {
                    path: here.clone(),
                    message,
                })?,
            );
        }
        let mut other_crls = HashMap::new();
        for crl in crls {
            let der = crl.to_der().map_err(|e| TrustError::Invalid {
                path: here.clone(),
                message: e.to_string(),
            })?;
            let loaded = crl_from_der(&der, crl, &here).map_err(|message| TrustError::Invalid {
                path: here.clone(),
                message,
            })?;
            // a CRL the caller passed that no CA of its name signed is a mistake of theirs
            if let Placed::SignedByNone { issuer, candidates } =
                place_crl(loaded, &mut list, &mut other_crls)
            {
                return Err(TrustError::Invalid {
                    path: here,
                    message: format!(
                        "CRL of {issuer}: its signature verifies with the key of none of the \
                         {candidates} trusted CA certificate(s) of that name"
                    ),
                });
            }
        }
        let mut policy_map = HashMap::new();
        for policy in policies {
            if let PolicyIssuer::Dn(dn) = policy.issuer().clone() {
                policy_map.insert(
                    dn,
                    PolicyState::Loaded {
                        file: here.clone(),
                        policy,
                    },
                );
            }
        }
        Self::from_parts(&here, list, other_crls, policy_map, Vec::new())
    }

    pub fn source(&self) -> &Path {
        &self.source
    }
    pub fn anchors(&self) -> &[TrustAnchor] {
        &self.anchors
    }
    /// Problems met while loading (each also logged).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
    /// CRLs signed by no trust anchor, named as issued by `issuer`: they can only be the
    /// CRLs of a CA of that name that a client presents (see [`Self::crl_of`]).
    pub fn other_crls(&self, issuer: &DistinguishedName) -> &[LoadedCrl] {
        self.other_crls
            .get(issuer)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The CRL situation of the CA whose certificate `issuer` (named `name`) issued a
    /// certificate of a verified path: the CRL its key signed. `None`: it has none of its own.
    ///
    /// For a trust anchor (the store's own certificate object) this is the CRL matched to it
    /// at load. For a CA the client presented: the CRL of a trust anchor with the same name
    /// and key, else the newest of [`Self::other_crls`] its key verifies (checked here, as
    /// the CA was not known at load); a CRL file of its name that cannot be read refuses.
    pub fn crl_of(&self, issuer: &X509Ref, name: &DistinguishedName) -> Option<Cow<'_, CrlState>> {
        if let Some(anchor) = self.anchor_for(issuer) {
            return anchor.crl.as_ref().map(Cow::Borrowed);
        }
        let key = issuer.public_key().ok();
        let same_name = || self.anchors.iter().filter(|a| &a.subject == name);
        let same_key = same_name().find(|a| {
            key.as_ref()
                .zip(a.cert.public_key().ok())
                .is_some_and(|(k, ak)| k.public_eq(&ak))
        });
        if let Some(anchor) = same_key {
            return match (&anchor.crl, signer_defect(issuer)) {
                (Some(CrlState::Loaded(crl)), Some(defect)) => {
                    let mut crl = crl.clone();
                    crl.defects.push(defect);
                    Some(Cow::Owned(CrlState::Loaded(crl)))
                }
                (state, _) => state.as_ref().map(Cow::Borrowed),
            };
        }
        if let Some(broken) = same_name().find_map(|a| match &a.crl {
            Some(b @ CrlState::Broken { .. }) => Some(b),
            _ => None,
        }) {
            return Some(Cow::Borrowed(broken));
        }
        let candidates = self.other_crls(name);
        let own = candidates
            .iter()
            .filter(|c| crl_signed_by(&c.crl, issuer))
            .max_by_key(|c| c.this_update);
        match own {
            Some(crl) => {
                let mut crl = crl.clone();
                crl.signature_checked = true;
                crl.defects.extend(signer_defect(issuer));
                Some(Cow::Owned(CrlState::Loaded(Box::new(crl))))
            }
            None => {
                if !candidates.is_empty() {
                    tracing::warn!(
                        target: "hpccert::trust",
                        "CRL(s) of {name} ({}) are not signed by the key of the CA the client \
                         presented: not its CRL",
                        candidates
                            .iter()
                            .map(|c| c.file.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                None
            }
        }
    }
    pub fn policy_for(&self, issuer: &DistinguishedName) -> Option<&PolicyState> {
        self.policies.get(issuer)
    }
    pub fn policies(&self) -> impl Iterator<Item = (&DistinguishedName, &PolicyState)> {
        self.policies.iter()
    }

    /// The anchor whose OpenSSL object `cert` is (as in a chain built from
    /// [`Self::openssl_store`]); `None` for any other object, even an equal certificate.
    pub(crate) fn anchor_for(&self, cert: &X509Ref) -> Option<&TrustAnchor> {
        let i = *self.by_object.get(&object_key(cert))?;
        let anchor = self.anchors.get(i)?;
        std::ptr::eq::<X509Ref>(&*anchor.cert, cert).then_some(anchor)
    }

    /// An OpenSSL store for verification at `now` (unix seconds), cached per second.
    pub(crate) fn openssl_store(
        &self,
        now: i64,
        purpose: Purpose,
        depth: u32,
    ) -> Result<Arc<X509Store>, String> {
        let key = (now, purpose, depth);
        if let Ok(cache) = self.store_cache.lock()
            && let Some((k, store)) = cache.as_ref()
            && *k == key
        {
            return Ok(store.clone());
        }
        let store = Arc::new(
            self.build_store(now, purpose, depth)
                .map_err(|e| format!("building the OpenSSL store: {e}"))?,
        );
        if let Ok(mut cache) = self.store_cache.lock() {
            *cache = Some((key, store.clone()));
        }
        Ok(store)
    }

    fn build_store(
        &self,
        now: i64,
        purpose: Purpose,
        depth: u32,
    ) -> Result<X509Store, openssl::error::ErrorStack> {
        let mut builder = X509StoreBuilder::new()?;
        for a in &self.anchors {
            builder.add_cert(a.cert.clone())?;
        }
        let mut param = X509VerifyParam::new()?;
        param.set_time(now as _);
        param.set_depth(depth.min(i32::MAX as u32) as i32);
        // RFC 3820 proxies are verified natively by OpenSSL (name rules, ProxyCertInfo
        // path length, issuer key usage); our own policy (limited, lifetime) is applied on
        // the verified chain afterwards.
        param.set_flags(X509VerifyFlags::ALLOW_PROXY_CERTS | X509VerifyFlags::USE_CHECK_TIME)?;
        builder.set_param(&param)?;
        match purpose {
            Purpose::ClientAuth => builder.set_purpose(X509PurposeId::SSL_CLIENT)?,
            Purpose::ServerAuth => builder.set_purpose(X509PurposeId::SSL_SERVER)?,
            Purpose::Any => {}
        }
        Ok(builder.build())
    }
}

/// Parse a CRL file (PEM or DER).
fn load_crl(file: &Path) -> Result<LoadedCrl, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read: {e}"))?;
    let crl = X509Crl::from_pem(&bytes)
        .or_else(|_| X509Crl::from_der(&bytes))
        .map_err(|e| format!("not a CRL: {e}"))?;
    let der = crl.to_der().map_err(|e| e.to_string())?;
    crl_from_der(&der, crl, file)
}

/// Where [`place_crl`] put a CRL.
#[derive(Debug)]
enum Placed {
    /// It is the CRL of each trust anchor whose key verified its signature.
    Anchors,
    /// No trust anchor has its issuer's name: kept in the other CRLs.
    NoAnchorOfItsName,
    /// Trust anchors have its issuer's name, but the key of none of them verifies it: it is
    /// none of theirs (kept in the other CRLs, for a presented CA whose key it may be).
    SignedByNone {
        issuer: DistinguishedName,
        candidates: usize,
    },
}

/// Match a CRL to the CAs it belongs to: the trust anchors named as its issuer whose key
/// verifies its signature (one check per anchor of that name, here at load, never at use).
fn place_crl(
    crl: LoadedCrl,
    anchors: &mut [TrustAnchor],
    other_crls: &mut HashMap<DistinguishedName, Vec<LoadedCrl>>,
) -> Placed {
    let mut candidates = 0;
    let mut signed = false;
    for anchor in anchors.iter_mut().filter(|a| a.subject == crl.issuer) {
        candidates += 1;
        if !crl_signed_by(&crl.crl, &anchor.cert) {
            continue;
        }
        signed = true;
        let mut own = crl.clone();
        own.signature_checked = true;
        own.defects.extend(signer_defect(&anchor.cert));
        anchor.take_crl(own);
    }
    if signed {
        return Placed::Anchors;
    }
    let issuer = crl.issuer.clone();
    other_crls.entry(crl.issuer.clone()).or_default().push(crl);
    if candidates == 0 {
        Placed::NoAnchorOfItsName
    } else {
        Placed::SignedByNone { issuer, candidates }
    }
}

const OID_CRL_NUMBER: &str = "2.5.29.20";
const OID_DELTA_CRL: &str = "2.5.29.27";
const OID_AKI: &str = "2.5.29.35";
const OID_ISSUING_DP: &str = "2.5.29.28";

/// A parsed CRL with its own defects; not yet matched to a CA.
fn crl_from_der(der: &[u8], crl: X509Crl, file: &Path) -> Result<LoadedCrl, String> {
    let (_, parsed) = x509_parser::parse_x509_crl(der).map_err(|e| format!("not a CRL: {e}"))?;
    let issuer = DistinguishedName::from_x509_name(parsed.issuer()).map_err(|e| e.to_string())?;
    let mut defects = Vec::new();
    let mut has_number = false;
    for ext in parsed.extensions() {
        let oid = ext.oid.to_id_string();
        match oid.as_str() {
            OID_CRL_NUMBER => {
                has_number = true;
                if ext.critical {
                    defects.push("the CRL number extension is marked critical".to_string());
                }
            }
            OID_DELTA_CRL => defects.push("delta CRLs are not supported".to_string()),
            OID_AKI => {}
            OID_ISSUING_DP if ext.critical => defects.push(
                "partitioned CRLs (critical issuing distribution point) are not supported"
                    .to_string(),
            ),
            _ if ext.critical => defects.push(format!("unknown critical CRL extension {oid}")),
            _ => {}
        }
    }
    if !has_number {
        defects.push("the CRL has no CRL number".to_string());
    }
    Ok(LoadedCrl {
        crl: Arc::new(crl),
        file: file.to_path_buf(),
        issuer,
        this_update: unix(&parsed.last_update()),
        next_update: parsed.next_update().map(|t| unix(&t)),
        defects,
        signature_checked: false,
    })
}

/// Whether `issuer`'s key verifies the signature of `crl`.
fn crl_signed_by(crl: &X509CrlRef, issuer: &X509Ref) -> bool {
    issuer
        .public_key()
        .is_ok_and(|key| crl.verify(&key).unwrap_or(false))
}

/// What makes `issuer` unfit to sign CRLs: a key usage without cRLSign.
fn signer_defect(issuer: &X509Ref) -> Option<String> {
    let der = issuer.to_der().ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    match cert.key_usage() {
        Ok(Some(ku)) if !ku.value.crl_sign() => {
            Some("the CA's key usage does not allow signing CRLs (no cRLSign)".to_string())
        }
        _ => None,
    }
}
