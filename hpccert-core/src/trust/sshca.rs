//! The site's SSH user certificate authority (the portal's `[portal.ssh_ca]`): the CA key (an
//! Ed25519 key in a file only its owner can read), the policy (validity, allowed user keys,
//! extensions), issuing short-lived OpenSSH user certificates (PROTOCOL.certkeys) and the
//! revocation list that the nodes install (an OpenSSH KRL, PROTOCOL.krl).
//!
//! The CA never decides who may have which principals: the caller passes what the mapping
//! engine allowed. It enforces what any certificate it signs must satisfy: a user key of an
//! allowed type and size, a validity that ends no later than the policy's maximum and the
//! credential's own expiry, at least one principal (an empty list means "anyone" to OpenSSH),
//! and the site's extensions.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The OpenSSH public key type the CA reads user keys into (ssh-key's).
pub use ssh_key::PublicKey;
use ssh_key::certificate::{Builder, CertType};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, Certificate, EcdsaCurve, HashAlg, PrivateKey};
use thiserror::Error;

/// Why the CA refuses to load or to sign.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SshCaError {
    #[error("SSH CA key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the user key is not an OpenSSH public key: {0}")]
    MalformedKey(String),
    #[error("user key type {found} is not allowed (allowed: {allowed})")]
    KeyTypeNotAllowed { found: String, allowed: String },
    #[error("RSA user key of {bits} bits is too weak (at least {min} bits)")]
    WeakRsaKey { bits: usize, min: usize },
    #[error("no principal: a certificate names at least one account")]
    NoPrincipals,
    #[error("the credential expires before the certificate could start")]
    CredentialExpired,
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("a new key could not be made: {0}")]
    Random(String),
}

/// The user keys a certificate may be issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKeyType {
    Ed25519,
    EcdsaP256,
    EcdsaP384,
    /// RSA of at least this many bits (3072 by default).
    Rsa(usize),
}

impl UserKeyType {
    /// The name in `[portal.ssh_ca] key_types`.
    pub fn name(self) -> String {
        match self {
            Self::Ed25519 => "ssh-ed25519".into(),
            Self::EcdsaP256 => "ecdsa-sha2-nistp256".into(),
            Self::EcdsaP384 => "ecdsa-sha2-nistp384".into(),
            Self::Rsa(bits) => format!("rsa-{bits}"),
        }
    }

    /// Parse a `key_types` entry: `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ecdsa-sha2-nistp384`,
    /// `rsa` (3072 bits or more) or `rsa-BITS` (BITS at least 3072).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "ssh-ed25519" => Ok(Self::Ed25519),
            "ecdsa-sha2-nistp256" => Ok(Self::EcdsaP256),
            "ecdsa-sha2-nistp384" => Ok(Self::EcdsaP384),
            "rsa" | "ssh-rsa" => Ok(Self::Rsa(3072)),
            other => match other.strip_prefix("rsa-").map(str::parse::<usize>) {
                Some(Ok(bits)) if bits >= 3072 => Ok(Self::Rsa(bits)),
                Some(Ok(bits)) => Err(format!("rsa-{bits}: RSA user keys need at least 3072 bits")),
                _ => Err(format!(
                    "unknown user key type {other:?} (ssh-ed25519, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, rsa, rsa-BITS)"
                )),
            },
        }
    }

    /// The default: every type the issue names.
    pub fn defaults() -> Vec<Self> {
        vec![
            Self::Ed25519,
            Self::EcdsaP256,
            Self::EcdsaP384,
            Self::Rsa(3072),
        ]
    }
}

/// The extensions a certificate carries (each `permit-*` on or off by policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extensions {
    pub pty: bool,
    pub agent_forwarding: bool,
    pub port_forwarding: bool,
    pub x11_forwarding: bool,
    pub user_rc: bool,
}

impl Default for Extensions {
    /// `ssh-keygen -s`'s defaults: all of them.
    fn default() -> Self {
        Self {
            pty: true,
            agent_forwarding: true,
            port_forwarding: true,
            x11_forwarding: true,
            user_rc: true,
        }
    }
}

impl Extensions {
    fn names(&self) -> Vec<&'static str> {
        [
            (self.agent_forwarding, "permit-agent-forwarding"),
            (self.port_forwarding, "permit-port-forwarding"),
            (self.pty, "permit-pty"),
            (self.user_rc, "permit-user-rc"),
            (self.x11_forwarding, "permit-X11-forwarding"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// What every certificate must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPolicy {
    pub max_validity: Duration,
    pub key_types: Vec<UserKeyType>,
    pub extensions: Extensions,
}

impl Default for CaPolicy {
    fn default() -> Self {
        Self {
            max_validity: Duration::from_secs(12 * 3600),
            key_types: UserKeyType::defaults(),
            extensions: Extensions::default(),
        }
    }
}

/// One certificate to sign, as the caller's decision made it.
#[derive(Debug, Clone)]
pub struct CertRequest<'a> {
    pub public_key: &'a PublicKey,
    /// The accounts (never empty).
    pub principals: Vec<String>,
    pub key_id: String,
    pub serial: u64,
    /// The credential's own expiry (a token's `exp`, a certificate's notAfter), if sooner.
    pub credential_expires: Option<SystemTime>,
    /// `source-address` (CIDR list), when the identity's mapping or issuer restricts sources.
    pub source_address: Option<String>,
    /// `force-command`, when the identity is restricted to one command.
    pub force_command: Option<String>,
    /// Leave out `permit-pty` whatever the policy says (a `no-pty` restriction).
    pub no_pty: bool,
    /// Leave out `permit-port-forwarding`, `permit-agent-forwarding` and
    /// `permit-X11-forwarding` whatever the policy says (a `no-forwarding` restriction).
    pub no_forwarding: bool,
}

/// A signed certificate and its window.
#[derive(Debug, Clone)]
pub struct Issued {
    pub certificate: Certificate,
    pub valid_after: u64,
    pub valid_before: u64,
}

impl Issued {
    /// The certificate in OpenSSH's one-line form (`ssh-ed25519-cert-v01@openssh.com AAAA... key id`).
    pub fn openssh(&self) -> Result<String, SshCaError> {
        self.certificate
            .to_openssh()
            .map_err(|e| SshCaError::Signing(e.to_string()))
    }
}

/// The loaded CA: the key it signs with, and the next key (published, not used yet).
pub struct SshCa {
    current: PrivateKey,
    next: Option<PrivateKey>,
    policy: CaPolicy,
}

impl std::fmt::Debug for SshCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshCa")
            .field("current", &fingerprint(self.current.public_key()))
            .field(
                "next",
                &self.next.as_ref().map(|k| fingerprint(k.public_key())),
            )
            .field("policy", &self.policy)
            .finish()
    }
}

/// `SHA256:...` of a public key.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Load an Ed25519 CA private key (OpenSSH format, unencrypted) from a file that only its
/// owner may read: a key readable or writable by group or others is refused, never used.
pub fn load_ca_key(path: &Path) -> Result<PrivateKey, SshCaError> {
    let err = |reason: String| SshCaError::Key {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(err(format!(
            "mode {:04o}: group or others may read or write it (chmod 600, owned by the portal's user)",
            meta.mode() & 0o7777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let key = PrivateKey::from_openssh(&text)
        .map_err(|e| err(format!("not an OpenSSH private key: {e}")))?;
    if key.is_encrypted() {
        return Err(err(
            "encrypted: the portal needs it unencrypted (protect the file instead)".into(),
        ));
    }
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(err(format!(
            "a {} key; the SSH CA key is Ed25519 (ssh-keygen -t ed25519)",
            key.algorithm()
        )));
    }
    Ok(key)
}

/// The CA's public keys as the nodes see them: what the export publishes (the trusted keys
/// and the KRL), without the private keys.
#[derive(Debug, Clone, Default)]
pub struct CaPublicKeys {
    keys: Vec<PublicKey>,
}

impl CaPublicKeys {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `TrustedUserCAKeys` text: one OpenSSH public key per line, current first.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (i, k) in self.keys.iter().enumerate() {
            let mut k = k.clone();
            k.set_comment(if i == 0 {
                "hpccert SSH user CA (current)"
            } else {
                "hpccert SSH user CA (next)"
            });
            if let Ok(line) = k.to_openssh() {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }

    /// A KRL of the revoked serials, each listed under the CA key (by fingerprint) that
    /// signed it; serials of a key no longer published are left out (no node trusts it).
    pub fn krl(
        &self,
        revoked: &[(String, u64)],
        version: u64,
        generated: u64,
    ) -> Result<Vec<u8>, SshCaError> {
        let sections: Vec<(&PublicKey, Vec<u64>)> = self
            .keys
            .iter()
            .map(|k| {
                let fp = fingerprint(k);
                let serials = revoked
                    .iter()
                    .filter(|(f, _)| *f == fp)
                    .map(|(_, s)| *s)
                    .collect();
                (k, serials)
            })
            .collect();
        krl::render(&sections, version, generated, "hpccert SSH CA revocations")
            .map_err(|e| SshCaError::Signing(e.to_string()))
    }
}

/// A new Ed25519 key from the system's random source.
fn new_ed25519(comment: &str) -> Result<PrivateKey, String> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    openssl::rand::rand_bytes(seed.as_mut()).map_err(|e| e.to_string())?;
    let mut key = PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&seed));
    key.set_comment(comment);
    Ok(key)
}

/// A new Ed25519 key pair for a user who has none at hand (the portal's "make a key pair for
/// me"): the private key in OpenSSH's format, unencrypted (wiped from memory when dropped),
/// and its public key. The caller hands it out once and never stores it.
pub fn generate_user_key(
    comment: &str,
) -> Result<(zeroize::Zeroizing<String>, PublicKey), SshCaError> {
    let key = new_ed25519(comment).map_err(SshCaError::Random)?;
    let text = key
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| SshCaError::Random(e.to_string()))?;
    Ok((text, key.public_key().clone()))
}

/// Make a new Ed25519 CA key in `path` (OpenSSH format, mode 0600), as
/// `ssh-keygen -t ed25519 -N ''` would; an existing file is never replaced.
pub fn generate_ca_key(path: &Path, comment: &str) -> Result<(), SshCaError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |reason: String| SshCaError::Key {
        path: path.to_path_buf(),
        reason,
    };
    let text = new_ed25519(comment)
        .and_then(|key| {
            key.to_openssh(ssh_key::LineEnding::LF)
                .map_err(|e| e.to_string())
        })
        .map_err(err)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| err(e.to_string()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| err(e.to_string()))
}

impl SshCa {
    /// The public keys (current, then next) for the export.
    pub fn public_set(&self) -> CaPublicKeys {
        CaPublicKeys {
            keys: self.public_keys().into_iter().cloned().collect(),
        }
    }

    pub fn new(current: PrivateKey, next: Option<PrivateKey>, policy: CaPolicy) -> Self {
        Self {
            current,
            next,
            policy,
        }
    }

    /// Load the current and (optionally) the next key.
    pub fn load(current: &Path, next: Option<&Path>, policy: CaPolicy) -> Result<Self, SshCaError> {
        Ok(Self::new(
            load_ca_key(current)?,
            next.map(load_ca_key).transpose()?,
            policy,
        ))
    }

    pub fn policy(&self) -> &CaPolicy {
        &self.policy
    }

    /// The key certificates are signed with.
    pub fn public_key(&self) -> &PublicKey {
        self.current.public_key()
    }

    /// Every public key the nodes trust: the current one, then the next one (a rollover
    /// publishes the next key before it signs anything).
    pub fn public_keys(&self) -> Vec<&PublicKey> {
        std::iter::once(self.current.public_key())
            .chain(self.next.as_ref().map(PrivateKey::public_key))
            .collect()
    }

    /// The `TrustedUserCAKeys` file: one OpenSSH public key per line.
    pub fn trusted_keys_text(&self) -> String {
        self.public_set().text()
    }

    /// Sign a user certificate; `now` is the time of issuance (valid from a minute before,
    /// for clocks a little behind).
    pub fn issue(&self, req: &CertRequest<'_>, now: SystemTime) -> Result<Issued, SshCaError> {
        check_user_key(req.public_key, &self.policy.key_types)?;
        if req.principals.is_empty() || req.principals.iter().any(String::is_empty) {
            return Err(SshCaError::NoPrincipals);
        }
        let now_s = unix(now);
        let valid_after = now_s.saturating_sub(60);
        let mut valid_before = now_s.saturating_add(self.policy.max_validity.as_secs());
        if let Some(exp) = req.credential_expires {
            valid_before = valid_before.min(unix(exp));
        }
        if valid_before <= now_s {
            return Err(SshCaError::CredentialExpired);
        }
        let mut nonce = [0u8; 32];
        openssl::rand::rand_bytes(&mut nonce).map_err(|e| SshCaError::Signing(e.to_string()))?;
        let e = |e: ssh_key::Error| SshCaError::Signing(e.to_string());
        let mut b = Builder::new(
            nonce.to_vec(),
            req.public_key.key_data().clone(),
            valid_after,
            valid_before,
        )
        .map_err(e)?;
        b.serial(req.serial).map_err(e)?;
        b.cert_type(CertType::User).map_err(e)?;
        b.key_id(req.key_id.clone()).map_err(e)?;
        for p in &req.principals {
            b.valid_principal(p.clone()).map_err(e)?;
        }
        if let Some(cmd) = &req.force_command {
            b.critical_option("force-command", cmd.clone()).map_err(e)?;
        }
        if let Some(src) = &req.source_address {
            b.critical_option("source-address", src.clone())
                .map_err(e)?;
        }
        for name in self.policy.extensions.names() {
            let forwarding = matches!(
                name,
                "permit-port-forwarding" | "permit-agent-forwarding" | "permit-X11-forwarding"
            );
            if (req.no_pty && name == "permit-pty") || (req.no_forwarding && forwarding) {
                continue;
            }
            b.extension(name, "").map_err(e)?;
        }
        let certificate = b.sign(&self.current).map_err(e)?;
        Ok(Issued {
            certificate,
            valid_after,
            valid_before,
        })
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether `key` is a user key the policy allows (type, curve, RSA size).
pub fn check_user_key(key: &PublicKey, allowed: &[UserKeyType]) -> Result<(), SshCaError> {
    let allowed_text = || {
        allowed
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let found = match key.key_data() {
        KeyData::Ed25519(_) => UserKeyType::Ed25519,
        KeyData::Ecdsa(k) => match k.curve() {
            EcdsaCurve::NistP256 => UserKeyType::EcdsaP256,
            EcdsaCurve::NistP384 => UserKeyType::EcdsaP384,
            other => {
                return Err(SshCaError::KeyTypeNotAllowed {
                    found: format!("ecdsa {other}"),
                    allowed: allowed_text(),
                });
            }
        },
        KeyData::Rsa(k) => {
            let bits = k.key_size() as usize;
            let min = allowed
                .iter()
                .filter_map(|t| match t {
                    UserKeyType::Rsa(b) => Some(*b),
                    _ => None,
                })
                .min();
            return match min {
                Some(min) if bits >= min => Ok(()),
                Some(min) => Err(SshCaError::WeakRsaKey { bits, min }),
                None => Err(SshCaError::KeyTypeNotAllowed {
                    found: "ssh-rsa".into(),
                    allowed: allowed_text(),
                }),
            };
        }
        other => {
            return Err(SshCaError::KeyTypeNotAllowed {
                found: other.algorithm().to_string(),
                allowed: allowed_text(),
            });
        }
    };
    if allowed.contains(&found) {
        Ok(())
    } else {
        Err(SshCaError::KeyTypeNotAllowed {
            found: found.name(),
            allowed: allowed_text(),
        })
    }
}

/// Parse a user's public key (an `authorized_keys` line: `TYPE BASE64 [comment]`).
pub fn parse_user_key(text: &str) -> Result<PublicKey, SshCaError> {
    let line = text.trim();
    if line.len() > 16 * 1024 || line.contains('\n') {
        return Err(SshCaError::MalformedKey(
            "one line of at most 16 KiB".into(),
        ));
    }
    PublicKey::from_openssh(line).map_err(|e| SshCaError::MalformedKey(e.to_string()))
}

/// OpenSSH key revocation lists (PROTOCOL.krl): the portal writes them ([`krl::render`]:
/// certificates revoked by serial, per CA key); sshd-gsi reads them ([`krl::parse`],
/// [`krl::load`]) and asks them about every OpenSSH certificate ([`krl::Krl::is_revoked`]).
pub mod krl {
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::Read;
    use std::path::{Path, PathBuf};

    use ssh_key::encoding::Encode;
    use ssh_key::public::KeyData;
    use ssh_key::{Certificate, HashAlg, PublicKey};
    use thiserror::Error;

    const MAGIC: &[u8; 8] = b"SSHKRL\n\0";
    const FORMAT_VERSION: u32 = 1;
    const SECTION_CERTIFICATES: u8 = 0x01;
    const SECTION_EXPLICIT_KEY: u8 = 0x02;
    const SECTION_FINGERPRINT_SHA1: u8 = 0x03;
    const SECTION_SIGNATURE: u8 = 0x04;
    const SECTION_FINGERPRINT_SHA256: u8 = 0x05;
    const SECTION_EXTENSION: u8 = 0xff;
    const CERT_SECTION_SERIAL_LIST: u8 = 0x20;
    const CERT_SECTION_SERIAL_RANGE: u8 = 0x21;
    const CERT_SECTION_SERIAL_BITMAP: u8 = 0x22;
    const CERT_SECTION_KEY_ID: u8 = 0x23;
    const CERT_SECTION_EXTENSION: u8 = 0x39;
    /// OpenSSH's largest bignum (`SSHBUF_MAX_BIGNUM`, 16384 bits): a bitmap covers at most
    /// 16384 serials; one more leading zero byte is allowed.
    const MAX_BITMAP_BYTES: usize = 16384 / 8;
    /// The largest KRL file [`load`] reads: a generous bound (ranges and bitmaps keep even
    /// long revocation lists small), so a runaway file cannot exhaust memory.
    pub const MAX_FILE_BYTES: u64 = 64 << 20;

    fn u32be(out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&v.to_be_bytes());
    }
    fn u64be(out: &mut Vec<u8>, v: u64) {
        out.extend_from_slice(&v.to_be_bytes());
    }
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        u32be(out, u32::try_from(s.len()).unwrap_or(u32::MAX));
        out.extend_from_slice(s);
    }

    /// A KRL revoking `serials` of certificates signed by each CA key. `version` grows with
    /// every change (the portal's serial); `generated` is Unix seconds. The serials are
    /// written sorted and once each; a CA with none gets no section.
    pub fn render(
        revoked: &[(&PublicKey, Vec<u64>)],
        version: u64,
        generated: u64,
        comment: &str,
    ) -> Result<Vec<u8>, ssh_key::Error> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        u32be(&mut out, FORMAT_VERSION);
        u64be(&mut out, version);
        u64be(&mut out, generated);
        u64be(&mut out, 0); // flags
        string(&mut out, b""); // reserved
        string(&mut out, comment.as_bytes());
        for (ca, serials) in revoked {
            let mut serials = serials.clone();
            serials.sort_unstable();
            serials.dedup();
            if serials.is_empty() {
                continue;
            }
            let mut list = Vec::new();
            for s in serials {
                u64be(&mut list, s);
            }
            let mut section = Vec::new();
            string(&mut section, &ca.to_bytes()?);
            string(&mut section, b""); // reserved
            section.push(CERT_SECTION_SERIAL_LIST);
            string(&mut section, &list);
            out.push(SECTION_CERTIFICATES);
            string(&mut out, &section);
        }
        Ok(out)
    }

    /// Why a KRL is refused. Every offset is from the start of the KRL.
    #[derive(Debug, Clone, PartialEq, Eq, Error)]
    #[non_exhaustive]
    pub enum KrlError {
        #[error("not an OpenSSH KRL: it does not start with \"SSHKRL\\n\\0\"")]
        NotKrl,
        #[error("KRL format version {0}: only version 1 is defined")]
        FormatVersion(u32),
        #[error("truncated: {what} at byte {offset} needs {needed} bytes, {left} left")]
        Truncated {
            what: &'static str,
            offset: usize,
            needed: u64,
            left: usize,
        },
        #[error("{what} at byte {offset}: {reason}")]
        Invalid {
            what: &'static str,
            offset: usize,
            reason: String,
        },
        #[error("unknown KRL section type {kind:#04x} at byte {offset}")]
        UnknownSection { kind: u8, offset: usize },
        #[error("unknown certificate section type {kind:#04x} at byte {offset}")]
        UnknownCertSection { kind: u8, offset: usize },
        #[error("{what} at byte {offset} is not supported: {reason}")]
        Unsupported {
            what: &'static str,
            offset: usize,
            reason: &'static str,
        },
        #[error("{what} at byte {offset}: {left} bytes of trailing data")]
        TrailingData {
            what: &'static str,
            offset: usize,
            left: usize,
        },
        #[error("{}: {reason}", path.display())]
        Read { path: PathBuf, reason: String },
        #[error("{}: {error}", path.display())]
        InFile { path: PathBuf, error: Box<KrlError> },
    }

    /// A cursor over untrusted bytes: every length is checked against what is left before
    /// anything is sliced, nothing is allocated from a length field.
    struct Reader<'a> {
        buf: &'a [u8],
        pos: usize,
        /// Offset of `buf` in the whole KRL (for messages).
        base: usize,
    }

    impl<'a> Reader<'a> {
        fn new(buf: &'a [u8], base: usize) -> Self {
            Self { buf, pos: 0, base }
        }

        fn offset(&self) -> usize {
            self.base + self.pos
        }

        fn left(&self) -> usize {
            self.buf.len().saturating_sub(self.pos)
        }

        fn is_empty(&self) -> bool {
            self.left() == 0
        }

        fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], KrlError> {
            let truncated = KrlError::Truncated {
                what,
                offset: self.offset(),
                needed: n,
                left: self.left(),
            };
            let n = usize::try_from(n).map_err(|_| truncated.clone())?;
            let end = self.pos.checked_add(n).ok_or_else(|| truncated.clone())?;
            let out = self.buf.get(self.pos..end).ok_or(truncated)?;
            self.pos = end;
            Ok(out)
        }

        fn u8(&mut self, what: &'static str) -> Result<u8, KrlError> {
            let b = self.take(1, what)?;
            Ok(b.first().copied().unwrap_or_default())
        }

        fn u32(&mut self, what: &'static str) -> Result<u32, KrlError> {
            let mut a = [0u8; 4];
            a.copy_from_slice(self.take(4, what)?);
            Ok(u32::from_be_bytes(a))
        }

        fn u64(&mut self, what: &'static str) -> Result<u64, KrlError> {
            let mut a = [0u8; 8];
            a.copy_from_slice(self.take(8, what)?);
            Ok(u64::from_be_bytes(a))
        }

        /// A `string` (uint32 length, then the bytes), as a reader of its own.
        fn string(&mut self, what: &'static str) -> Result<Reader<'a>, KrlError> {
            let len = self.u32(what)?;
            let base = self.offset();
            Ok(Reader::new(self.take(u64::from(len), what)?, base))
        }

        /// A `string` that must not contain NUL (OpenSSH's `cstring`).
        fn cstring(&mut self, what: &'static str) -> Result<&'a [u8], KrlError> {
            let s = self.string(what)?;
            if s.buf.contains(&0) {
                return Err(KrlError::Invalid {
                    what,
                    offset: s.base,
                    reason: "contains a NUL byte".into(),
                });
            }
            Ok(s.buf)
        }

        fn rest(&mut self) -> &'a [u8] {
            let out = self.buf.get(self.pos..).unwrap_or_default();
            self.pos = self.buf.len();
            out
        }

        /// Everything must have been read.
        fn finish(&self, what: &'static str) -> Result<(), KrlError> {
            if self.is_empty() {
                Ok(())
            } else {
                Err(KrlError::TrailingData {
                    what,
                    offset: self.offset(),
                    left: self.left(),
                })
            }
        }
    }

    /// A `KRL_SECTION_CERT_SERIAL_BITMAP`: bit N (from the least significant) revokes serial
    /// `offset + N`. Kept as it was read (at most [`MAX_BITMAP_BYTES`]), never expanded.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Bitmap {
        offset: u64,
        /// Big-endian, without leading zero bytes.
        bits: Vec<u8>,
    }

    impl Bitmap {
        fn contains(&self, serial: u64) -> bool {
            let Some(n) = serial.checked_sub(self.offset) else {
                return false;
            };
            let byte = usize::try_from(n / 8).unwrap_or(usize::MAX);
            let Some(index) = self
                .bits
                .len()
                .checked_sub(1)
                .and_then(|l| l.checked_sub(byte))
            else {
                return false;
            };
            self.bits
                .get(index)
                .is_some_and(|b| (b >> (n % 8)) & 1 == 1)
        }
    }

    /// What one CA (or any CA) has revoked.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    struct RevokedCerts {
        /// Inclusive ranges; sorted and merged once the KRL is read.
        serials: Vec<(u64, u64)>,
        bitmaps: Vec<Bitmap>,
        key_ids: BTreeSet<Vec<u8>>,
    }

    impl RevokedCerts {
        fn serial_revoked(&self, serial: u64) -> bool {
            let i = self.serials.partition_point(|&(_, hi)| hi < serial);
            self.serials.get(i).is_some_and(|&(lo, _)| lo <= serial)
                || self.bitmaps.iter().any(|b| b.contains(serial))
        }

        fn merge_serials(&mut self) {
            self.serials.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.serials.len());
            for &(lo, hi) in &self.serials {
                match merged.last_mut() {
                    Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                    _ => merged.push((lo, hi)),
                }
            }
            self.serials = merged;
        }
    }

    /// A parsed KRL. Build one with [`parse`] or [`load`].
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Krl {
        version: u64,
        generated: u64,
        flags: u64,
        comment: String,
        /// Revoked certificates per CA key; `None`: of any CA (an empty `ca_key`).
        certs: BTreeMap<Option<KeyData>, RevokedCerts>,
        /// `KRL_SECTION_EXPLICIT_KEY`: plain public key blobs.
        explicit_keys: BTreeSet<Vec<u8>>,
        /// `KRL_SECTION_FINGERPRINT_SHA1`: SHA-1 of plain public key blobs.
        sha1: BTreeSet<Vec<u8>>,
        /// `KRL_SECTION_FINGERPRINT_SHA256`: SHA-256 of plain public key blobs.
        sha256: BTreeSet<Vec<u8>>,
    }

    /// Parse a KRL as OpenSSH's `ssh_krl_from_blob` does, and refuse it whole where OpenSSH
    /// does (sshd then refuses every key): a bad magic or format version, a truncated field,
    /// a section or certificate section of an unknown type, data left over in a section or
    /// after the last one, serial 0 (in a list, a range or a bitmap), a range whose start is
    /// after its end, a negative or too long bitmap, a CA key or key id that does not parse.
    ///
    /// Two section types that PROTOCOL.krl defines are refused too, on purpose:
    /// - signatures (0x04): sshd passes no trusted signer, so a signature adds no trust; it
    ///   only makes OpenSSH refuse a KRL whose signature does not verify. Checking it would be
    ///   code for a feature that ssh-keygen cannot even produce (it never signs KRLs), and
    ///   skipping it would accept a KRL that sshd refuses. Refused: fail closed, and the
    ///   error says why.
    /// - extensions (0xff, and 0x39 in a certificates section): unknown to the OpenSSH of
    ///   Debian 12 (9.2), which refuses them; later OpenSSH skips the non-critical ones.
    ///   Nothing writes them yet.
    ///
    /// Work and memory are bounded by the input: every length is checked against the bytes
    /// left, nothing is allocated from a length field, bitmaps are kept as read.
    pub fn parse(bytes: &[u8]) -> Result<Krl, KrlError> {
        let mut r = Reader::new(bytes, 0);
        if r.take(8, "magic").ok() != Some(MAGIC.as_slice()) {
            return Err(KrlError::NotKrl);
        }
        let format = r.u32("format version")?;
        if format != FORMAT_VERSION {
            return Err(KrlError::FormatVersion(format));
        }
        let mut krl = Krl {
            version: r.u64("krl_version")?,
            generated: r.u64("generated_date")?,
            flags: r.u64("flags")?,
            ..Krl::default()
        };
        r.string("header reserved field")?;
        krl.comment = String::from_utf8_lossy(r.cstring("comment")?).into_owned();
        while !r.is_empty() {
            let at = r.offset();
            let kind = r.u8("section type")?;
            let mut s = r.string("section")?;
            match kind {
                SECTION_CERTIFICATES => parse_certificates(&mut s, &mut krl)?,
                SECTION_EXPLICIT_KEY => blobs(&mut s, &mut krl.explicit_keys, None)?,
                SECTION_FINGERPRINT_SHA1 => blobs(&mut s, &mut krl.sha1, Some(20))?,
                SECTION_FINGERPRINT_SHA256 => blobs(&mut s, &mut krl.sha256, Some(32))?,
                SECTION_SIGNATURE => {
                    return Err(KrlError::Unsupported {
                        what: "signature section",
                        offset: at,
                        reason: "signed KRLs are refused (sshd trusts no KRL signer, and ssh-keygen never writes signatures)",
                    });
                }
                SECTION_EXTENSION => {
                    return Err(KrlError::Unsupported {
                        what: "extension section",
                        offset: at,
                        reason: "KRL extensions are refused, as by OpenSSH 9.2",
                    });
                }
                other => {
                    return Err(KrlError::UnknownSection {
                        kind: other,
                        offset: at,
                    });
                }
            }
            s.finish("section")?;
        }
        for rc in krl.certs.values_mut() {
            rc.merge_serials();
        }
        Ok(krl)
    }

    /// Read and parse a KRL file (at most [`MAX_FILE_BYTES`]).
    pub fn load(path: &Path) -> Result<Krl, KrlError> {
        let read = |reason: String| KrlError::Read {
            path: path.to_path_buf(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| read(e.to_string()))?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| read(e.to_string()))?;
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_FILE_BYTES {
            return Err(read(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        parse(&bytes).map_err(|e| KrlError::InFile {
            path: path.to_path_buf(),
            error: Box::new(e),
        })
    }

    /// A section of `string`s: explicit keys (any length) or hashes (`len` bytes each).
    fn blobs(
        s: &mut Reader<'_>,
        into: &mut BTreeSet<Vec<u8>>,
        len: Option<usize>,
    ) -> Result<(), KrlError> {
        while !s.is_empty() {
            let b = s.string("revoked key")?;
            if let Some(len) = len
                && b.buf.len() != len
            {
                return Err(KrlError::Invalid {
                    what: "revoked key hash",
                    offset: b.base,
                    reason: format!("{} bytes, not {len}", b.buf.len()),
                });
            }
            into.insert(b.buf.to_vec());
        }
        Ok(())
    }

    fn invalid(what: &'static str, offset: usize, reason: &str) -> KrlError {
        KrlError::Invalid {
            what,
            offset,
            reason: reason.to_string(),
        }
    }

    /// `KRL_SECTION_CERTIFICATES`: the CA key (empty: any CA), a reserved string, then
    /// certificate sections.
    fn parse_certificates(s: &mut Reader<'_>, krl: &mut Krl) -> Result<(), KrlError> {
        let ca_blob = s.string("CA key")?;
        let ca = if ca_blob.buf.is_empty() {
            None
        } else {
            let key = PublicKey::from_bytes(ca_blob.buf).map_err(|e| {
                invalid(
                    "CA key",
                    ca_blob.base,
                    &format!("not an SSH public key: {e}"),
                )
            })?;
            if key.key_data().is_certificate() {
                return Err(invalid(
                    "CA key",
                    ca_blob.base,
                    "a certificate, not a plain key",
                ));
            }
            Some(key.key_data().clone())
        };
        s.string("certificates section reserved field")?;
        let rc = krl.certs.entry(ca).or_default();
        while !s.is_empty() {
            let at = s.offset();
            let kind = s.u8("certificate section type")?;
            let mut sub = s.string("certificate section")?;
            match kind {
                CERT_SECTION_SERIAL_LIST => {
                    while !sub.is_empty() {
                        let at = sub.offset();
                        let serial = sub.u64("serial")?;
                        if serial == 0 {
                            return Err(invalid("serial list", at, "serial 0 cannot be revoked"));
                        }
                        rc.serials.push((serial, serial));
                    }
                }
                CERT_SECTION_SERIAL_RANGE => {
                    let lo = sub.u64("serial range start")?;
                    let hi = sub.u64("serial range end")?;
                    if lo == 0 || lo > hi {
                        return Err(invalid(
                            "serial range",
                            sub.base,
                            &format!("{lo}-{hi}: starts at 0 or after its end"),
                        ));
                    }
                    rc.serials.push((lo, hi));
                }
                CERT_SECTION_SERIAL_BITMAP => {
                    let offset = sub.u64("serial bitmap offset")?;
                    let mut mpint = sub.string("serial bitmap")?;
                    rc.bitmaps.push(bitmap(offset, mpint.base, mpint.rest())?);
                }
                CERT_SECTION_KEY_ID => {
                    while !sub.is_empty() {
                        rc.key_ids.insert(sub.cstring("key id")?.to_vec());
                    }
                }
                CERT_SECTION_EXTENSION => {
                    return Err(KrlError::Unsupported {
                        what: "certificate extension section",
                        offset: at,
                        reason: "KRL extensions are refused, as by OpenSSH 9.2",
                    });
                }
                other => {
                    return Err(KrlError::UnknownCertSection {
                        kind: other,
                        offset: at,
                    });
                }
            }
            sub.finish("certificate section")?;
        }
        Ok(())
    }

    /// A bitmap's `mpint`, checked as OpenSSH's `sshbuf_get_bignum2_bytes_direct` and
    /// `parse_revoked_certs` check it.
    fn bitmap(offset: u64, at: usize, mpint: &[u8]) -> Result<Bitmap, KrlError> {
        if mpint.first().is_some_and(|b| b & 0x80 != 0) {
            return Err(invalid("serial bitmap", at, "negative"));
        }
        if mpint.len() > MAX_BITMAP_BYTES + 1
            || (mpint.len() == MAX_BITMAP_BYTES + 1 && mpint.first() != Some(&0))
        {
            return Err(invalid(
                "serial bitmap",
                at,
                &format!("longer than {} bits", MAX_BITMAP_BYTES * 8),
            ));
        }
        let start = mpint.iter().position(|&b| b != 0).unwrap_or(mpint.len());
        let bits = mpint.get(start..).unwrap_or_default().to_vec();
        if let Some(&first) = bits.first() {
            // bits.len() <= MAX_BITMAP_BYTES, so these fit in a u64
            let nbits = (bits.len() as u64 - 1) * 8 + u64::from(8 - first.leading_zeros());
            if offset.checked_add(nbits - 1).is_none() {
                return Err(invalid("serial bitmap", at, "serials wrap past 2^64"));
            }
        }
        let bitmap = Bitmap { offset, bits };
        if bitmap.contains(0) {
            return Err(invalid("serial bitmap", at, "serial 0 cannot be revoked"));
        }
        Ok(bitmap)
    }

    impl Krl {
        /// `krl_version`: grows with every change.
        pub fn version(&self) -> u64 {
            self.version
        }

        /// `generated_date`, Unix seconds.
        pub fn generated(&self) -> u64 {
            self.generated
        }

        /// `flags` (none are defined; kept as read).
        pub fn flags(&self) -> u64 {
            self.flags
        }

        pub fn comment(&self) -> &str {
            &self.comment
        }

        /// What the KRL holds, in counts (for logs).
        pub fn summary(&self) -> String {
            let cas = self.certs.keys().filter(|k| k.is_some()).count();
            let any = if self.certs.contains_key(&None) {
                " and any CA"
            } else {
                ""
            };
            let (mut ranges, mut bitmaps, mut ids) = (0, 0, 0);
            for rc in self.certs.values() {
                ranges += rc.serials.len();
                bitmaps += rc.bitmaps.len();
                ids += rc.key_ids.len();
            }
            format!(
                "KRL version {} generated {} ({:?}): certificates of {cas} CA keys{any}: {ranges} serial ranges, {bitmaps} serial bitmaps, {ids} key ids; {} keys, {} SHA1 and {} SHA256 hashes",
                self.version,
                self.generated,
                self.comment,
                self.explicit_keys.len(),
                self.sha1.len(),
                self.sha256.len()
            )
        }

        /// Why `cert` is revoked, or None. As OpenSSH's `ssh_krl_check_key`: the
        /// certificate's key (explicitly, by SHA1 or SHA256 hash of the plain key), then the
        /// certificates revoked for its CA and for any CA (key id, then serial; serial 0 is
        /// never revoked), then the CA key itself.
        #[must_use]
        pub fn is_revoked(&self, cert: &Certificate) -> Option<String> {
            if let Some(how) = self.key_revoked(cert.public_key()) {
                return Some(format!("key {how}"));
            }
            let ca = cert.signature_key();
            for (entry, of) in [
                (
                    Some(ca.clone()),
                    format!("CA {}", ca.fingerprint(HashAlg::Sha256)),
                ),
                (None, "any CA".to_string()),
            ] {
                let Some(rc) = self.certs.get(&entry) else {
                    continue;
                };
                if rc.key_ids.contains(cert.key_id().as_bytes()) {
                    return Some(format!("key id {:?} of {of}", cert.key_id()));
                }
                // serial 0 ("none given") is never revoked; parse refuses it anyway
                if cert.serial() != 0 && rc.serial_revoked(cert.serial()) {
                    return Some(format!("serial {} of {of}", cert.serial()));
                }
            }
            self.key_revoked(ca).map(|how| format!("CA key {how}"))
        }

        /// `SHA256:... (how)` when the plain key is revoked. A key that cannot be encoded
        /// cannot be looked up: revoked (fail closed).
        fn key_revoked(&self, key: &KeyData) -> Option<String> {
            let fp = key.fingerprint(HashAlg::Sha256);
            let Ok(blob) = key.encode_vec() else {
                return Some(format!("{fp} (cannot be encoded to look it up)"));
            };
            if self.sha1.contains(openssl::sha::sha1(&blob).as_slice()) {
                return Some(format!("{fp} (by SHA1 hash)"));
            }
            if self.sha256.contains(openssl::sha::sha256(&blob).as_slice()) {
                return Some(format!("{fp} (by SHA256 hash)"));
            }
            if self.explicit_keys.contains(&blob) {
                return Some(format!("{fp} (listed explicitly)"));
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    fn ssh_keygen() -> bool {
        Command::new("ssh-keygen").arg("-?").output().is_ok()
    }

    fn keygen(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
        let path = dir.join(name);
        let st = Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-C", name])
            .args(args)
            .arg("-f")
            .arg(&path)
            .status()
            .unwrap();
        assert!(st.success());
        path
    }

    fn user_key(path: &Path) -> PublicKey {
        parse_user_key(&std::fs::read_to_string(path.with_extension("pub")).unwrap()).unwrap()
    }

    #[test]
    fn a_ca_key_others_can_read_is_refused() {
        if !ssh_keygen() {
            eprintln!("SKIPPED: ssh-keygen not found");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let ca = keygen(d.path(), "ca", &["-t", "ed25519"]);
        assert!(load_ca_key(&ca).is_ok());
        std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_ca_key(&ca).unwrap_err().to_string();
        assert!(
            e.contains("mode 0644") && e.contains("group or others"),
            "{e}"
        );
        std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(load_ca_key(&ca).is_err());
        let rsa = keygen(d.path(), "rsa-ca", &["-t", "rsa", "-b", "3072"]);
        let e = load_ca_key(&rsa).unwrap_err().to_string();
        assert!(e.contains("Ed25519"), "{e}");
        assert!(load_ca_key(&d.path().join("missing")).is_err());
    }

    #[test]
    fn issued_certificates_read_back_with_ssh_keygen_and_a_krl_revokes_them() {
        if !ssh_keygen() {
            eprintln!("SKIPPED: ssh-keygen not found");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let ca = SshCa::load(
            &keygen(d.path(), "ca", &["-t", "ed25519"]),
            None,
            CaPolicy {
                extensions: Extensions {
                    x11_forwarding: false,
                    user_rc: false,
                    ..Extensions::default()
                },
                ..CaPolicy::default()
            },
        )
        .unwrap();
        let user = keygen(d.path(), "id_ed25519", &["-t", "ed25519"]);
        let key = user_key(&user);
        let now = crate::clock::now();
        let token_exp = now + Duration::from_secs(3600);
        let issued = ca
            .issue(
                &CertRequest {
                    public_key: &key,
                    principals: vec!["jdoe".into(), "jdoe-gw".into()],
                    key_id:
                        "token https://cilogon.org http://cilogon.org/serverA/users/1 serial 77"
                            .into(),
                    serial: 77,
                    credential_expires: Some(token_exp),
                    source_address: Some("10.0.0.0/8,192.0.2.7/32".into()),
                    force_command: None,
                    no_pty: false,
                    no_forwarding: false,
                },
                now,
            )
            .unwrap();
        // never past the token's expiry
        assert_eq!(issued.valid_before, unix(token_exp));
        let cert = d.path().join("id_ed25519-cert.pub");
        std::fs::write(&cert, issued.openssh().unwrap()).unwrap();
        let out = Command::new("ssh-keygen")
            .arg("-L")
            .arg("-f")
            .arg(&cert)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("Type: ssh-ed25519-cert-v01@openssh.com user certificate"),
            "{text}"
        );
        assert!(text.contains("Serial: 77"), "{text}");
        assert!(text.contains("users/1 serial 77\""), "{text}");
        assert!(
            text.contains("jdoe\n") && text.contains("jdoe-gw"),
            "{text}"
        );
        assert!(
            text.contains("source-address 10.0.0.0/8,192.0.2.7/32"),
            "{text}"
        );
        assert!(
            text.contains("permit-pty") && text.contains("permit-port-forwarding"),
            "{text}"
        );
        assert!(
            !text.contains("permit-X11-forwarding") && !text.contains("permit-user-rc"),
            "{text}"
        );

        // a KRL of another serial: not revoked; of this one: revoked (ssh-keygen -Q agrees)
        let query = |serials: Vec<u64>| {
            let krl = d.path().join("krl");
            std::fs::write(
                &krl,
                krl::render(&[(ca.public_key(), serials)], 3, 0, "test").unwrap(),
            )
            .unwrap();
            Command::new("ssh-keygen")
                .arg("-Q")
                .arg("-f")
                .arg(&krl)
                .arg(&cert)
                .output()
                .unwrap()
        };
        let o = query(vec![5, 76, 78]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        let o = query(vec![78, 77, 5, 77]);
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("REVOKED"),
            "{o:?}"
        );
        // an empty KRL parses and revokes nothing
        let o = query(vec![]);
        assert!(o.status.success(), "{o:?}");
    }

    /// A rollover: the next key is published (trusted) before it signs; once promoted, the
    /// old key stays published as the next one during the changeover, so certificates it
    /// signed keep working until they expire, and new ones come from the new key; once the
    /// old key is no longer published, its certificates are refused.
    #[test]
    fn a_rollover_keeps_old_certificates_valid_while_the_old_key_is_published() {
        if !ssh_keygen() {
            eprintln!("SKIPPED: ssh-keygen not found");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let a = keygen(d.path(), "ca-a", &["-t", "ed25519"]);
        let b = keygen(d.path(), "ca-b", &["-t", "ed25519"]);
        let user = user_key(&keygen(d.path(), "user", &["-t", "ed25519"]));
        let now = crate::clock::now();
        let issue = |ca: &SshCa, serial| {
            ca.issue(
                &CertRequest {
                    public_key: &user,
                    principals: vec!["jdoe".into()],
                    key_id: "k".into(),
                    serial,
                    credential_expires: None,
                    source_address: None,
                    force_command: None,
                    no_pty: false,
                    no_forwarding: false,
                },
                now,
            )
            .unwrap()
            .certificate
        };
        let trusted = |ca: &SshCa| -> Vec<PublicKey> {
            ca.public_set()
                .text()
                .lines()
                .map(|l| PublicKey::from_openssh(l).unwrap())
                .collect()
        };
        let accepted = |cert: &Certificate, keys: &[PublicKey]| {
            crate::trust::sshcert::verify_ssh_certificate(cert, keys, None, now).is_ok()
        };
        // before: A signs, B is announced
        let before = SshCa::load(&a, Some(&b), CaPolicy::default()).unwrap();
        let old = issue(&before, 1);
        assert_eq!(trusted(&before).len(), 2);
        assert!(accepted(&old, &trusted(&before)));
        // promoted: B signs, A stays published for the changeover
        let during = SshCa::load(&b, Some(&a), CaPolicy::default()).unwrap();
        let new = issue(&during, 2);
        assert_eq!(new.signature_key(), during.public_key().key_data());
        assert!(accepted(&old, &trusted(&during)) && accepted(&new, &trusted(&during)));
        // after: A retired
        let after = SshCa::load(&b, None, CaPolicy::default()).unwrap();
        assert!(!accepted(&old, &trusted(&after)) && accepted(&new, &trusted(&after)));
    }

    #[test]
    fn weak_disallowed_and_malformed_keys_and_empty_principals_are_refused() {
        if !ssh_keygen() {
            eprintln!("SKIPPED: ssh-keygen not found");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let ca = SshCa::load(
            &keygen(d.path(), "ca", &["-t", "ed25519"]),
            None,
            CaPolicy::default(),
        )
        .unwrap();
        let now = crate::clock::now();
        let request = |key: &PublicKey, principals: Vec<String>| {
            ca.issue(
                &CertRequest {
                    public_key: key,
                    principals,
                    key_id: "k".into(),
                    serial: 1,
                    credential_expires: None,
                    source_address: None,
                    force_command: None,
                    no_pty: false,
                    no_forwarding: false,
                },
                now,
            )
        };
        let rsa2048 = user_key(&keygen(d.path(), "rsa2048", &["-t", "rsa", "-b", "2048"]));
        assert!(matches!(
            request(&rsa2048, vec!["a".into()]),
            Err(SshCaError::WeakRsaKey {
                bits: 2048,
                min: 3072
            })
        ));
        let rsa3072 = user_key(&keygen(d.path(), "rsa3072", &["-t", "rsa", "-b", "3072"]));
        assert!(request(&rsa3072, vec!["a".into()]).is_ok());
        let p521 = user_key(&keygen(d.path(), "p521", &["-t", "ecdsa", "-b", "521"]));
        assert!(matches!(
            request(&p521, vec!["a".into()]),
            Err(SshCaError::KeyTypeNotAllowed { .. })
        ));
        let p256 = user_key(&keygen(d.path(), "p256", &["-t", "ecdsa", "-b", "256"]));
        assert!(request(&p256, vec!["a".into()]).is_ok());
        assert!(matches!(
            request(&p256, vec![]),
            Err(SshCaError::NoPrincipals)
        ));
        assert!(matches!(
            parse_user_key("ssh-ed25519 AAAAnot-base64"),
            Err(SshCaError::MalformedKey(_))
        ));
        assert!(matches!(
            parse_user_key("hello"),
            Err(SshCaError::MalformedKey(_))
        ));
        // a credential already expired gets nothing
        let ed = user_key(&keygen(d.path(), "ed", &["-t", "ed25519"]));
        let r = ca.issue(
            &CertRequest {
                public_key: &ed,
                principals: vec!["a".into()],
                key_id: "k".into(),
                serial: 2,
                credential_expires: Some(now - Duration::from_secs(1)),
                source_address: None,
                force_command: None,
                no_pty: false,
                no_forwarding: false,
            },
            now,
        );
        assert!(matches!(r, Err(SshCaError::CredentialExpired)));
        // policy parsing
        assert_eq!(UserKeyType::parse("rsa").unwrap(), UserKeyType::Rsa(3072));
        assert_eq!(
            UserKeyType::parse("rsa-4096").unwrap(),
            UserKeyType::Rsa(4096)
        );
        assert!(UserKeyType::parse("rsa-2048").is_err());
        assert!(UserKeyType::parse("ssh-dss").is_err());
    }

    // ---- KRLs read back

    /// `ssh-keygen -s CA -I ID -n alice [-z SERIAL] KEY.pub` for a fresh key; the certificate.
    fn signed(dir: &Path, name: &str, ca: &str, id: &str, serial: Option<u64>) -> Certificate {
        keygen(dir, name, &["-t", "ed25519"]);
        let mut c = Command::new("ssh-keygen");
        c.args(["-q", "-s"])
            .arg(dir.join(ca))
            .args(["-I", id, "-n", "alice"]);
        if let Some(s) = serial {
            c.args(["-z", &s.to_string()]);
        }
        let st = c.arg(dir.join(format!("{name}.pub"))).status().unwrap();
        assert!(st.success());
        let text = std::fs::read_to_string(dir.join(format!("{name}-cert.pub"))).unwrap();
        Certificate::from_openssh(text.trim()).unwrap()
    }

    /// `ssh-keygen -Q -f KRL CERT`: Some(revoked) as it answers, None when it refuses the KRL.
    fn ssh_keygen_q(krl: &Path, cert: &Path) -> Option<bool> {
        let o = Command::new("ssh-keygen")
            .arg("-Q")
            .arg("-f")
            .arg(krl)
            .arg(cert)
            .output()
            .unwrap();
        match o.status.code() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        }
    }

    /// `ssh-keygen -k -f KRL [-s CA.pub | -s none] SPEC`
    fn ssh_keygen_krl(dir: &Path, name: &str, ca: Option<&str>, spec: &str) -> PathBuf {
        let spec_file = dir.join(format!("{name}.spec"));
        std::fs::write(&spec_file, spec).unwrap();
        let krl = dir.join(name);
        let mut c = Command::new("ssh-keygen");
        c.args(["-q", "-k", "-f"]).arg(&krl);
        if let Some(ca) = ca {
            c.arg("-s").arg(if ca == "none" {
                PathBuf::from("none")
            } else {
                dir.join(format!("{ca}.pub"))
            });
        }
        let o = c.arg(&spec_file).output().unwrap();
        assert!(o.status.success(), "ssh-keygen -k {spec}: {o:?}");
        krl
    }

    fn pub_line(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(format!("{name}.pub")))
            .unwrap()
            .trim()
            .to_string()
    }

    #[test]
    fn krls_written_by_ssh_keygen_answer_like_ssh_keygen_q() {
        if !ssh_keygen() {
            eprintln!("SKIPPED: ssh-keygen not found");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        keygen(dir, "ca", &["-t", "ed25519"]);
        keygen(dir, "other-ca", &["-t", "ecdsa", "-b", "256"]);
        let certs: Vec<(&str, Certificate)> = [
            ("c77", "ca", "myid", Some(77)),
            ("c78", "ca", "other", Some(78)),
            ("c3", "ca", "three", Some(3)),
            ("c5", "ca", "five", Some(5)),
            ("c150", "ca", "hundred-fifty", Some(150)),
            ("c1000", "ca", "thousand", Some(1000)),
            ("c0", "ca", "zero", None),
            ("o77", "other-ca", "myid", Some(77)),
            ("o5", "other-ca", "o-five", Some(5)),
        ]
        .into_iter()
        .map(|(name, ca, id, serial)| (name, signed(dir, name, ca, id, serial)))
        .collect();
        let fp = |name: &str| fingerprint(&user_key(&dir.join(name)));
        let ca_fp = fp("ca");
        let odd: String = (1..120)
            .step_by(2)
            .map(|s| format!("serial: {s}\n"))
            .collect();
        let cases: Vec<(&str, Option<&str>, String, &str)> = vec![
            (
                "serial",
                Some("ca"),
                "serial: 77\n".into(),
                "1 serial ranges",
            ),
            (
                "range-list-id",
                Some("ca"),
                "serial: 100-200\nserial: 1000\nid: myid\nid: zero\n".into(),
                "2 key ids",
            ),
            ("bitmap", Some("ca"), odd, "1 serial bitmaps"),
            (
                "any-ca",
                Some("none"),
                "serial: 5\nid: myid\n".into(),
                "of 0 CA keys and any CA",
            ),
            ("other-ca", Some("other-ca"), "serial: 1-80\n".into(), ""),
            (
                "key",
                None,
                format!("key: {}\n", pub_line(dir, "c78")),
                "1 keys",
            ),
            (
                "plain-line",
                None,
                format!("{}\n", pub_line(dir, "c3")),
                "1 keys",
            ),
            (
                "sha1",
                None,
                format!("sha1: {}\n", pub_line(dir, "c5")),
                "1 SHA1",
            ),
            (
                "sha256",
                None,
                format!("sha256: {}\n", pub_line(dir, "c150")),
                "1 SHA256",
            ),
            ("hash", None, format!("hash: {}\n", fp("c1000")), "1 SHA256"),
            (
                "revoked-ca",
                None,
                format!("sha256: {}\n", pub_line(dir, "other-ca")),
                "1 SHA256",
            ),
            ("empty", Some("ca"), String::new(), "0 serial ranges"),
        ];
        let mut revoked_count = 0;
        for (name, ca, spec, summary) in &cases {
            let path = ssh_keygen_krl(dir, name, *ca, spec);
            let krl = krl::parse(&std::fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(krl.summary().contains(summary), "{name}: {}", krl.summary());
            assert_eq!(krl::load(&path).unwrap(), krl);
            for (cert_name, cert) in &certs {
                let theirs = ssh_keygen_q(&path, &dir.join(format!("{cert_name}-cert.pub")))
                    .unwrap_or_else(|| panic!("ssh-keygen refuses KRL {name}"));
                let ours = krl.is_revoked(cert);
                assert_eq!(
                    ours.is_some(),
                    theirs,
                    "KRL {name} ({spec:?}), certificate {cert_name}: ours {ours:?}, ssh-keygen -Q says revoked={theirs}"
                );
                revoked_count += usize::from(theirs);
            }
        }
        assert!(revoked_count >= 15, "{revoked_count}");

        // the reasons name what matched
        let reason = |krl: &str, cert: usize| {
            krl::load(&dir.join(krl))
                .unwrap()
                .is_revoked(&certs[cert].1)
        };
        assert_eq!(
            reason("serial", 0),
            Some(format!("serial 77 of CA {ca_fp}"))
        );
        assert_eq!(
            reason("range-list-id", 6),
            Some(format!("key id \"zero\" of CA {ca_fp}"))
        );
        assert_eq!(
            reason("range-list-id", 4),
            Some(format!("serial 150 of CA {ca_fp}"))
        );
        assert_eq!(reason("bitmap", 2), Some(format!("serial 3 of CA {ca_fp}")));
        assert_eq!(reason("any-ca", 8), Some("serial 5 of any CA".into()));
        assert_eq!(
            reason("any-ca", 7),
            Some("key id \"myid\" of any CA".into())
        );
        assert_eq!(
            reason("key", 1),
            Some(format!("key {} (listed explicitly)", fp("c78")))
        );
        assert_eq!(
            reason("sha1", 3),
            Some(format!("key {} (by SHA1 hash)", fp("c5")))
        );
        assert_eq!(
            reason("hash", 5),
            Some(format!("key {} (by SHA256 hash)", fp("c1000")))
        );
        assert_eq!(
            reason("revoked-ca", 7),
            Some(format!("CA key {} (by SHA256 hash)", fp("other-ca")))
        );
        // serial 0 is never revoked by serial, only by key id
        assert_eq!(reason("serial", 6), None);
    }

    #[test]
    fn rendered_krls_parse_and_answer_like_ssh_keygen_q() {
        if !ssh_keygen() {
            eprintln!("SKIPPED: ssh-keygen not found");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        keygen(dir, "ca", &["-t", "ed25519"]);
        keygen(dir, "next-ca", &["-t", "ed25519"]);
        let certs: Vec<(&str, Certificate)> = [
            ("a", "ca", Some(77)),
            ("b", "ca", Some(78)),
            ("c", "next-ca", Some(77)),
            ("e", "next-ca", Some(9)),
            ("z", "ca", None),
        ]
        .into_iter()
        .map(|(name, ca, serial)| (name, signed(dir, name, ca, name, serial)))
        .collect();
        let ca = user_key(&dir.join("ca"));
        let next = user_key(&dir.join("next-ca"));
        let bytes = krl::render(
            &[(&ca, vec![77, 5, 77, 1 << 40]), (&next, vec![9])],
            42,
            1_780_000_000,
            "hpccert portal",
        )
        .unwrap();
        let parsed = krl::parse(&bytes).unwrap();
        assert_eq!(parsed.version(), 42);
        assert_eq!(parsed.generated(), 1_780_000_000);
        assert_eq!(parsed.comment(), "hpccert portal");
        assert_eq!(parsed.flags(), 0);
        assert!(
            parsed.summary().contains("2 CA keys: 4 serial ranges"),
            "{}",
            parsed.summary()
        );
        let path = dir.join("rendered.krl");
        std::fs::write(&path, &bytes).unwrap();
        for (name, cert) in &certs {
            let theirs = ssh_keygen_q(&path, &dir.join(format!("{name}-cert.pub"))).unwrap();
            assert_eq!(
                parsed.is_revoked(cert).is_some(),
                theirs,
                "certificate {name}"
            );
        }
        assert_eq!(
            parsed.is_revoked(&certs[0].1),
            Some(format!("serial 77 of CA {}", fingerprint(&ca)))
        );
        // no CA with serials: a KRL that revokes nothing
        let empty = krl::parse(&krl::render(&[(&ca, vec![])], 1, 0, "").unwrap()).unwrap();
        assert!(certs.iter().all(|(_, c)| empty.is_revoked(c).is_none()));
    }

    /// A KRL built by hand: the header, then `sections` as they are.
    fn hand_krl(sections: &[u8]) -> Vec<u8> {
        let mut out = b"SSHKRL\n\0".to_vec();
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(&[0u8; 24]); // version, date, flags
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // reserved, comment
        out.extend_from_slice(sections);
        out
    }

    fn ssh_string(b: &[u8]) -> Vec<u8> {
        let mut out = (b.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(b);
        out
    }

    fn cert_section(ca: &[u8], subs: &[u8]) -> Vec<u8> {
        let mut body = ssh_string(ca);
        body.extend(ssh_string(b""));
        body.extend_from_slice(subs);
        let mut out = vec![0x01];
        out.extend(ssh_string(&body));
        out
    }

    fn sub(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend(ssh_string(body));
        out
    }

    #[test]
    fn truncated_and_malformed_krls_are_refused_where_ssh_keygen_refuses_them() {
        if !ssh_keygen() {
            eprintln!("SKIPPED: ssh-keygen not found");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        keygen(dir, "ca", &["-t", "ed25519"]);
        signed(dir, "u", "ca", "myid", Some(77));
        let cert = dir.join("u-cert.pub");
        let full = std::fs::read(ssh_keygen_krl(
            dir,
            "full",
            Some("ca"),
            &format!(
                "serial: 77\nserial: 100-200\nid: someone\nsha1: {}\n",
                pub_line(dir, "ca")
            ),
        ))
        .unwrap();
        let ours = |bytes: &[u8]| krl::parse(bytes);
        let theirs = |bytes: &[u8]| {
            let p = dir.join("case.krl");
            std::fs::write(&p, bytes).unwrap();
            ssh_keygen_q(&p, &cert)
        };
        // every prefix: refused by both, or (cut at a section boundary) read by both alike
        let mut refused = 0;
        for len in 8..full.len() {
            let cut = &full[..len];
            match (ours(cut), theirs(cut)) {
                (Err(_), None) => refused += 1,
                (Ok(_), None) => panic!("prefix of {len} bytes parses, ssh-keygen refuses it"),
                (Err(e), Some(_)) => panic!("prefix of {len} bytes: {e}, ssh-keygen reads it"),
                (Ok(_), Some(_)) => {}
            }
        }
        assert!(refused > full.len() - 20, "{refused} of {}", full.len());
        // every byte changed: an error or a KRL, never a panic; a KRL still answers
        let parsed_cert =
            Certificate::from_openssh(std::fs::read_to_string(&cert).unwrap().trim()).unwrap();
        for i in 0..full.len() {
            for x in [0x01, 0x80, 0xff] {
                let mut bytes = full.clone();
                bytes[i] ^= x;
                if let Ok(k) = ours(&bytes) {
                    let _ = k.is_revoked(&parsed_cert);
                }
            }
        }
        assert!(matches!(ours(&full[..7]), Err(krl::KrlError::NotKrl)));
        assert!(matches!(
            ours(&full[..20]),
            Err(krl::KrlError::Truncated { .. })
        ));

        let ca_blob = user_key(&dir.join("ca")).to_bytes().unwrap();
        let serials = |v: &[u64]| -> Vec<u8> { v.iter().flat_map(|s| s.to_be_bytes()).collect() };
        let range = |lo: u64, hi: u64| sub(0x21, &serials(&[lo, hi]));
        let bitmap = |offset: u64, mpint: &[u8]| {
            let mut b = offset.to_be_bytes().to_vec();
            b.extend(ssh_string(mpint));
            sub(0x22, &b)
        };
        let mut with_trailing = full.clone();
        with_trailing.push(0x01);
        let mut ca_with_trailing = ca_blob.clone();
        ca_with_trailing.push(0);
        let mut version2 = full.clone();
        version2[11] = 2;
        let mut huge_length = hand_krl(&[0x01]);
        huge_length.extend_from_slice(&u32::MAX.to_be_bytes());
        huge_length.extend_from_slice(b"short");
        let mut nul_comment = hand_krl(b"");
        nul_comment.truncate(nul_comment.len() - 4);
        nul_comment.extend(ssh_string(b"a\0b"));
        let extension = {
            let mut b = ssh_string(b"ext@example.com");
            b.push(0);
            b.extend(ssh_string(b""));
            sub(0xff, &b)
        };
        let signature = {
            let mut b = sub(0x04, &ca_blob);
            b.extend(ssh_string(b"not a signature"));
            b
        };
        // (name, KRL, parses, revokes serial 77 of the CA)
        let cases: Vec<(&str, Vec<u8>, bool, bool)> = vec![
            ("trailing byte", with_trailing, false, false),
            ("format version 2", version2, false, false),
            ("4 GiB length", huge_length, false, false),
            ("NUL in the comment", nul_comment, false, false),
            (
                "unknown section 0x06",
                hand_krl(&sub(0x06, b"")),
                false,
                false,
            ),
            ("extension section", hand_krl(&extension), false, false),
            ("signature section", hand_krl(&signature), false, false),
            (
                "unknown certificate section 0x24",
                hand_krl(&cert_section(&ca_blob, &sub(0x24, b""))),
                false,
                false,
            ),
            (
                "CA key with a trailing byte",
                hand_krl(&cert_section(&ca_with_trailing, b"")),
                false,
                false,
            ),
            (
                "CA key that is no key",
                hand_krl(&cert_section(b"garbage", b"")),
                false,
                false,
            ),
            (
                "serial list of 7 bytes",
                hand_krl(&cert_section(&ca_blob, &sub(0x20, &[0, 0, 0, 0, 0, 0, 77]))),
                false,
                false,
            ),
            (
                "serial 0",
                hand_krl(&cert_section(&ca_blob, &sub(0x20, &serials(&[0])))),
                false,
                false,
            ),
            (
                "range 80-70",
                hand_krl(&cert_section(&ca_blob, &range(80, 70))),
                false,
                false,
            ),
            (
                "range with 8 more bytes",
                hand_krl(&cert_section(&ca_blob, &sub(0x21, &serials(&[70, 80, 90])))),
                false,
                false,
            ),
            (
                "range 70-80",
                hand_krl(&cert_section(&ca_blob, &range(70, 80))),
                true,
                true,
            ),
            (
                "bitmap with serial 0",
                hand_krl(&cert_section(&ca_blob, &bitmap(0, &[1]))),
                false,
                false,
            ),
            (
                "negative bitmap",
                hand_krl(&cert_section(&ca_blob, &bitmap(70, &[0x80]))),
                false,
                false,
            ),
            (
                "bitmap with leading zeros",
                hand_krl(&cert_section(&ca_blob, &bitmap(70, &[0, 0, 0x80]))),
                true,
                true,
            ),
            (
                "bitmap past 2^64",
                hand_krl(&cert_section(&ca_blob, &bitmap(u64::MAX - 3, &[0x10]))),
                false,
                false,
            ),
            (
                "bitmap of 2049 bytes",
                hand_krl(&cert_section(
                    &ca_blob,
                    &bitmap(1, &[&[1u8][..], &[0; 2048]].concat()),
                )),
                false,
                false,
            ),
            (
                "bitmap of 2048 bytes",
                hand_krl(&cert_section(
                    &ca_blob,
                    &bitmap(1, &[&[0x40u8][..], &[0; 2047]].concat()),
                )),
                true,
                false,
            ),
            (
                "SHA1 of 19 bytes",
                hand_krl(&sub(0x03, &ssh_string(&[1; 19]))),
                false,
                false,
            ),
            (
                "SHA256 of 33 bytes",
                hand_krl(&sub(0x05, &ssh_string(&[1; 33]))),
                false,
                false,
            ),
            (
                "key id with NUL",
                hand_krl(&cert_section(&ca_blob, &sub(0x23, &ssh_string(b"my\0id")))),
                false,
                false,
            ),
            (
                "any CA, serial 77",
                hand_krl(&cert_section(b"", &sub(0x20, &serials(&[77])))),
                true,
                true,
            ),
            ("no sections", hand_krl(b""), true, false),
        ];
        for (name, bytes, parses, revoked) in cases {
            let theirs = theirs(&bytes);
            assert_eq!(
                theirs,
                parses.then_some(revoked),
                "{name}: ssh-keygen -Q disagrees with the expectation"
            );
            match ours(&bytes) {
                Ok(k) => {
                    assert!(parses, "{name}: parses, but ssh-keygen refuses it");
                    assert_eq!(k.is_revoked(&parsed_cert).is_some(), revoked, "{name}");
                }
                Err(e) => {
                    assert!(!parses, "{name}: refused ({e}), but ssh-keygen reads it");
                    eprintln!("{name}: {e}");
                }
            }
        }
        // errors say where and what
        let e = ours(&hand_krl(&sub(0x06, b""))).unwrap_err().to_string();
        assert_eq!(e, "unknown KRL section type 0x06 at byte 44");
        let e = ours(&hand_krl(&signature)).unwrap_err().to_string();
        assert!(
            e.contains("signature section at byte 44 is not supported"),
            "{e}"
        );
        let e = krl::load(&dir.join("missing.krl")).unwrap_err().to_string();
        assert!(
            e.contains("missing.krl") && e.contains("No such file"),
            "{e}"
        );
        std::fs::write(dir.join("garbage.krl"), b"SSHKRL\n\0\0\0\0\x01garbage").unwrap();
        let e = krl::load(&dir.join("garbage.krl")).unwrap_err().to_string();
        assert!(
            e.contains("garbage.krl: truncated: krl_version at byte 12"),
            "{e}"
        );
    }
}
