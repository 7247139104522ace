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

use ssh_key::certificate::{Builder, CertType};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, Certificate, EcdsaCurve, HashAlg, PrivateKey, PublicKey};
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

/// Make a new Ed25519 CA key in `path` (OpenSSH format, mode 0600), as
/// `ssh-keygen -t ed25519 -N ''` would; an existing file is never replaced.
pub fn generate_ca_key(path: &Path, comment: &str) -> Result<(), SshCaError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |reason: String| SshCaError::Key {
        path: path.to_path_buf(),
        reason,
    };
    let mut seed = [0u8; 32];
    openssl::rand::rand_bytes(&mut seed).map_err(|e| err(e.to_string()))?;
    let mut key = PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&seed));
    key.set_comment(comment);
    let text = key
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| err(e.to_string()))?;
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

/// OpenSSH key revocation lists (PROTOCOL.krl): certificates revoked by serial, per CA key.
pub mod krl {
    use ssh_key::PublicKey;

    const MAGIC: &[u8; 8] = b"SSHKRL\n\0";
    const FORMAT_VERSION: u32 = 1;
    const SECTION_CERTIFICATES: u8 = 1;
    const CERT_SECTION_SERIAL_LIST: u8 = 0x20;

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

    /// A cheap structural check of a KRL received from elsewhere (the export bundle): the
    /// magic, the format version and a complete header.
    pub fn check(bytes: &[u8]) -> Result<(), String> {
        if bytes.len() < 8 + 4 + 8 + 8 + 8 + 4 + 4 || &bytes[..8] != MAGIC {
            return Err("not an OpenSSH KRL (no SSHKRL header)".into());
        }
        let version = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != FORMAT_VERSION {
            return Err(format!(
                "KRL format version {version}, not {FORMAT_VERSION}"
            ));
        }
        Ok(())
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
            crate::sshcert::verify_ssh_certificate(cert, keys, None, now).is_ok()
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
}
