//! OpenSSH user certificates (PROTOCOL.certkeys) signed by configured SSH CA keys, for sites
//! that issue them (e.g. from a token, by an SSH CA service).
//!
//! A certificate is accepted when: it is a user certificate; its signature verifies with a
//! CA key in the trusted list (SHA-256 fingerprint match); now is inside its validity window;
//! it names at least one principal (an empty list would mean "anyone" in OpenSSH: refused
//! here, fail closed); its critical options are understood: `source-address` is enforced
//! against the client's address, any other (e.g. `force-command`, which this server cannot
//! honour) refuses the certificate. The principals are the accounts it may use.

use std::net::IpAddr;
use std::path::Path;
use std::time::SystemTime;

use ssh_key::certificate::CertType;
use ssh_key::{Certificate, HashAlg, PublicKey};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SshCertError {
    #[error("not a user certificate")]
    NotUserCertificate,
    #[error("certificate {key_id:?} is not signed by a trusted SSH CA (signed by {ca})")]
    UntrustedCa { key_id: String, ca: String },
    #[error("certificate {key_id:?} is not valid now (signature or validity window)")]
    Invalid { key_id: String },
    #[error("certificate {key_id:?} names no principal")]
    NoPrincipals { key_id: String },
    #[error(
        "certificate {key_id:?} has critical option {option}, which this server does not implement"
    )]
    UnknownCriticalOption { key_id: String, option: String },
    #[error("certificate {key_id:?} is restricted to source addresses {allowed}, not {peer}")]
    SourceAddress {
        key_id: String,
        allowed: String,
        peer: String,
    },
}

/// Proof that an OpenSSH certificate was verified; only [`verify_ssh_certificate`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct VerifiedSshCertificate {
    key_id: String,
    serial: u64,
    principals: Vec<String>,
    ca_fingerprint: String,
    fingerprint: String,
}

impl VerifiedSshCertificate {
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
    pub fn serial(&self) -> u64 {
        self.serial
    }
    /// The accounts the certificate may log in as.
    pub fn principals(&self) -> &[String] {
        &self.principals
    }
    pub fn ca_fingerprint(&self) -> &str {
        &self.ca_fingerprint
    }
    /// `SHA256:...` of the certificate's key.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    pub fn summary(&self) -> String {
        format!(
            "OpenSSH certificate {:?} serial {} verified, signed by CA {}",
            self.key_id, self.serial, self.ca_fingerprint
        )
    }
}

/// Read trusted CA public keys: OpenSSH public key lines (`ssh-ed25519 AAAA... comment`),
/// comments and blank lines allowed; every bad line is an error naming the file and line.
pub fn load_ca_keys(path: &Path) -> Result<Vec<PublicKey>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = PublicKey::from_openssh(line)
            .map_err(|e| format!("{}: line {}: {e}", path.display(), i + 1))?;
        keys.push(key);
    }
    Ok(keys)
}

fn unix(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether `peer` is in a `source-address` list (`addr` or `addr/bits`, comma-separated).
fn source_allowed(list: &str, peer: IpAddr) -> bool {
    list.split(',').map(str::trim).any(|entry| {
        let (addr, bits) = match entry.split_once('/') {
            Some((a, b)) => (a, b.parse::<u32>().ok()),
            None => (entry, None),
        };
        let Ok(addr) = addr.parse::<IpAddr>() else {
            return false;
        };
        match (addr, peer) {
            (IpAddr::V4(a), IpAddr::V4(p)) => {
                let bits = bits.unwrap_or(32).min(32);
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(a) & mask == u32::from(p) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(p)) => {
                let bits = bits.unwrap_or(128).min(128);
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(a) & mask == u128::from(p) & mask
            }
            _ => false,
        }
    })
}

/// Verify `cert` against the trusted CA keys at `now`, for a client at `peer`.
pub fn verify_ssh_certificate(
    cert: &Certificate,
    trusted: &[PublicKey],
    peer: Option<IpAddr>,
    now: SystemTime,
) -> Result<VerifiedSshCertificate, SshCertError> {
    let key_id = cert.key_id().to_string();
    if cert.cert_type() != CertType::User {
        return Err(SshCertError::NotUserCertificate);
    }
    let ca = cert.signature_key().fingerprint(HashAlg::Sha256);
    let fingerprints: Vec<_> = trusted
        .iter()
        .map(|k| k.fingerprint(HashAlg::Sha256))
        .collect();
    if !fingerprints.contains(&ca) {
        return Err(SshCertError::UntrustedCa {
            key_id,
            ca: ca.to_string(),
        });
    }
    cert.validate_at(unix(now), &fingerprints)
        .map_err(|_| SshCertError::Invalid {
            key_id: key_id.clone(),
        })?;
    if cert.valid_principals().is_empty() {
        return Err(SshCertError::NoPrincipals { key_id });
    }
    for (name, value) in cert.critical_options().iter() {
        if name == "source-address" {
            let ok = peer.is_some_and(|p| source_allowed(value, p));
            if !ok {
                return Err(SshCertError::SourceAddress {
                    key_id,
                    allowed: value.clone(),
                    peer: peer
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "unknown".into()),
                });
            }
        } else {
            return Err(SshCertError::UnknownCriticalOption {
                key_id,
                option: name.clone(),
            });
        }
    }
    Ok(VerifiedSshCertificate {
        key_id,
        serial: cert.serial(),
        principals: cert.valid_principals().to_vec(),
        ca_fingerprint: ca.to_string(),
        fingerprint: cert.public_key().fingerprint(HashAlg::Sha256).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::certificate::Builder;
    use ssh_key::private::{Ed25519Keypair, PrivateKey};

    fn key(seed: u8) -> PrivateKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
    }

    const NOW: u64 = 1_780_000_000;

    fn cert(
        ca: &PrivateKey,
        principals: &[&str],
        options: &[(&str, &str)],
        cert_type: CertType,
    ) -> Certificate {
        let user = key(9);
        let mut b = Builder::new(
            [7u8; 16],
            user.public_key().key_data().clone(),
            NOW - 60,
            NOW + 3600,
        )
        .unwrap();
        b.serial(42)
            .unwrap()
            .key_id("alice@gateway")
            .unwrap()
            .cert_type(cert_type)
            .unwrap();
        if principals.is_empty() {
            // OpenSSH's "any principal"
            b.all_principals_valid().unwrap();
        }
        for p in principals {
            b.valid_principal(*p).unwrap();
        }
        for (k, v) in options {
            b.critical_option(*k, *v).unwrap();
        }
        b.sign(ca).unwrap()
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(NOW)
    }

    #[test]
    fn a_certificate_of_a_trusted_ca_names_its_accounts() {
        let ca = key(1);
        let trusted = vec![ca.public_key().clone()];
        let c = cert(&ca, &["alice", "alice-batch"], &[], CertType::User);
        let v = verify_ssh_certificate(&c, &trusted, None, now()).unwrap();
        assert_eq!(v.principals(), ["alice", "alice-batch"]);
        assert_eq!(v.key_id(), "alice@gateway");
        assert_eq!(v.serial(), 42);
        assert!(v.fingerprint().starts_with("SHA256:"));
        // after the validity window
        let later = now() + std::time::Duration::from_secs(7200);
        assert!(matches!(
            verify_ssh_certificate(&c, &trusted, None, later),
            Err(SshCertError::Invalid { .. })
        ));
    }

    #[test]
    fn refusals() {
        let ca = key(1);
        let trusted = vec![ca.public_key().clone()];
        let other = key(2);
        let c = cert(&other, &["alice"], &[], CertType::User);
        assert!(matches!(
            verify_ssh_certificate(&c, &trusted, None, now()),
            Err(SshCertError::UntrustedCa { .. })
        ));
        let c = cert(&ca, &[], &[], CertType::User);
        assert!(matches!(
            verify_ssh_certificate(&c, &trusted, None, now()),
            Err(SshCertError::NoPrincipals { .. })
        ));
        let c = cert(&ca, &["alice"], &[], CertType::Host);
        assert_eq!(
            verify_ssh_certificate(&c, &trusted, None, now()),
            Err(SshCertError::NotUserCertificate)
        );
        let c = cert(
            &ca,
            &["alice"],
            &[("force-command", "/bin/true")],
            CertType::User,
        );
        assert!(matches!(
            verify_ssh_certificate(&c, &trusted, None, now()),
            Err(SshCertError::UnknownCriticalOption { .. })
        ));
        let c = cert(
            &ca,
            &["alice"],
            &[("source-address", "10.1.0.0/16,192.0.2.7")],
            CertType::User,
        );
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(verify_ssh_certificate(&c, &trusted, ip("10.1.200.3"), now()).is_ok());
        assert!(verify_ssh_certificate(&c, &trusted, ip("192.0.2.7"), now()).is_ok());
        assert!(matches!(
            verify_ssh_certificate(&c, &trusted, ip("10.2.0.1"), now()),
            Err(SshCertError::SourceAddress { .. })
        ));
        assert!(verify_ssh_certificate(&c, &trusted, None, now()).is_err());
    }

    #[test]
    fn ca_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pub");
        let line = key(1).public_key().to_openssh().unwrap();
        std::fs::write(&f, format!("# site CA\n{line} site-ca\n\n")).unwrap();
        assert_eq!(load_ca_keys(&f).unwrap().len(), 1);
        std::fs::write(&f, format!("{line}\nssh-ed25519 garbage\n")).unwrap();
        assert!(load_ca_keys(&f).unwrap_err().contains("line 2"));
    }
}
