//! RFC 6187: X.509 certificates in SSH publickey authentication.
//!
//! The key blob of an `x509v3-*` algorithm is
//! `string algorithm, uint32 n, string cert[1..n], uint32 m, string ocsp[0..m]` with the
//! presented certificate first (end entity or proxy), then proxies and intermediates. The
//! signature is `string format, string blob`, where the format depends on the algorithm
//! (RFC 6187 §3; `x509v3-ssh-ed25519` as asyncssh speaks it):
//!
//! | algorithm                    | signature format      | key, hash           |
//! |------------------------------|-----------------------|---------------------|
//! | x509v3-rsa2048-sha256        | rsa2048-sha256        | RSA >= 2048, SHA-256|
//! | x509v3-ssh-rsa, -sign-rsa    | ssh-rsa               | RSA >= 2048, SHA-1  |
//! | x509v3-ecdsa-sha2-nistp256   | ecdsa-sha2-nistp256   | P-256, SHA-256      |
//! | x509v3-ecdsa-sha2-nistp384   | ecdsa-sha2-nistp384   | P-384, SHA-384      |
//! | x509v3-ecdsa-sha2-nistp521   | ecdsa-sha2-nistp521   | P-521, SHA-512      |
//! | x509v3-ssh-ed25519           | ssh-ed25519           | Ed25519             |
//!
//! This module only decodes the blob and checks the possession proof (the signature with the
//! presented certificate's key); whether the chain is trusted and whom it maps to is the
//! core's decision ([`crate::auth::Engine::x509_login`]).

use hpccert_core::trust::x509::PresentedChain;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::sign::Verifier;
use openssl::x509::X509;

/// Certificates in one key blob, at most.
const MAX_CERTS: u32 = 16;

/// A decoded `x509v3-*` key blob.
#[derive(Debug)]
pub struct X509Key {
    pub chain: PresentedChain,
    /// The presented certificate (whose key signs).
    pub leaf: X509,
}

/// SSH wire reader.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u32(&mut self) -> Result<u32, String> {
        let (head, rest) = self.0.split_at_checked(4).ok_or("truncated")?;
        self.0 = rest;
        let mut b = [0u8; 4];
        b.copy_from_slice(head);
        Ok(u32::from_be_bytes(b))
    }
    fn string(&mut self) -> Result<&'a [u8], String> {
        let len = usize::try_from(self.u32()?).map_err(|e| e.to_string())?;
        let (s, rest) = self.0.split_at_checked(len).ok_or("truncated string")?;
        self.0 = rest;
        Ok(s)
    }
    fn end(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes", self.0.len()))
        }
    }
}

/// Decode the key blob of `algorithm`.
pub fn parse_key_blob(algorithm: &str, blob: &[u8]) -> Result<X509Key, String> {
    let mut r = Reader(blob);
    let named = r.string().map_err(|e| format!("key blob: {e}"))?;
    if named != algorithm.as_bytes() {
        return Err(format!(
            "key blob names {:?}, the request {algorithm:?}",
            String::from_utf8_lossy(named)
        ));
    }
    let n = r.u32().map_err(|e| format!("key blob: {e}"))?;
    if n == 0 || n > MAX_CERTS {
        return Err(format!(
            "key blob holds {n} certificates (1 to {MAX_CERTS} accepted)"
        ));
    }
    let mut ders = Vec::new();
    for i in 0..n {
        ders.push(
            r.string()
                .map_err(|e| format!("key blob certificate {i}: {e}"))?
                .to_vec(),
        );
    }
    let m = r.u32().map_err(|e| format!("key blob: {e}"))?;
    for i in 0..m.min(MAX_CERTS + 1) {
        // OCSP responses are not used (revocation comes from the CRLs of the trust store)
        r.string()
            .map_err(|e| format!("key blob OCSP response {i}: {e}"))?;
    }
    if m > MAX_CERTS {
        return Err(format!("key blob holds {m} OCSP responses"));
    }
    r.end().map_err(|e| format!("key blob: {e}"))?;
    let leaf =
        X509::from_der(&ders[0]).map_err(|e| format!("certificate 0 is not DER X.509: {e}"))?;
    let chain = PresentedChain::from_der_list(&ders).map_err(|e| e.to_string())?;
    Ok(X509Key { chain, leaf })
}

/// The signature format, digest and key type an algorithm uses.
fn scheme(algorithm: &str) -> Option<(&'static str, Option<MessageDigest>, Id, Option<Nid>)> {
    Some(match algorithm {
        "x509v3-rsa2048-sha256" => (
            "rsa2048-sha256",
            Some(MessageDigest::sha256()),
            Id::RSA,
            None,
        ),
        "x509v3-ssh-rsa" | "x509v3-sign-rsa" => {
            ("ssh-rsa", Some(MessageDigest::sha1()), Id::RSA, None)
        }
        "x509v3-ecdsa-sha2-nistp256" => (
            "ecdsa-sha2-nistp256",
            Some(MessageDigest::sha256()),
            Id::EC,
            Some(Nid::X9_62_PRIME256V1),
        ),
        "x509v3-ecdsa-sha2-nistp384" => (
            "ecdsa-sha2-nistp384",
            Some(MessageDigest::sha384()),
            Id::EC,
            Some(Nid::SECP384R1),
        ),
        "x509v3-ecdsa-sha2-nistp521" => (
            "ecdsa-sha2-nistp521",
            Some(MessageDigest::sha512()),
            Id::EC,
            Some(Nid::SECP521R1),
        ),
        "x509v3-ssh-ed25519" => ("ssh-ed25519", None, Id::ED25519, None),
        _ => return None,
    })
}

/// Check that `leaf`'s key fits `algorithm` (type, curve, RSA size).
pub fn check_key(algorithm: &str, leaf: &X509) -> Result<PKey<Public>, String> {
    let (_, _, id, curve) =
        scheme(algorithm).ok_or_else(|| format!("unsupported algorithm {algorithm}"))?;
    let key = leaf
        .public_key()
        .map_err(|e| format!("certificate key: {e}"))?;
    if key.id() != id {
        return Err(format!("the certificate's key does not fit {algorithm}"));
    }
    if id == Id::RSA && key.bits() < 2048 {
        return Err(format!("RSA key of {} bits (at least 2048)", key.bits()));
    }
    if let Some(nid) = curve {
        let ec = key.ec_key().map_err(|e| e.to_string())?;
        if ec.group().curve_name() != Some(nid) {
            return Err(format!("the certificate's curve does not fit {algorithm}"));
        }
    }
    Ok(key)
}

/// Verify the possession proof: `signature` (the request's signature string) over
/// `signed_data` with the presented certificate's key.
#[allow(dead_code)] // the tests' and the benchmark's: the server keeps the key it checked once
pub fn verify_signature(
    algorithm: &str,
    leaf: &X509,
    signed_data: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    let key = check_key(algorithm, leaf)?;
    verify_signature_with(algorithm, &key, signed_data, signature)
}

/// [`verify_signature`] with the certificate's key already taken out and checked against
/// `algorithm` by [`check_key`] (a cached credential keeps it, so a repeated login does not
/// decode the certificate again).
pub fn verify_signature_with(
    algorithm: &str,
    key: &PKey<Public>,
    signed_data: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    let (format, digest, id, _) =
        scheme(algorithm).ok_or_else(|| format!("unsupported algorithm {algorithm}"))?;
    if key.id() != id {
        return Err(format!("the certificate's key does not fit {algorithm}"));
    }
    let mut r = Reader(signature);
    let named = r.string().map_err(|e| format!("signature: {e}"))?;
    if named != format.as_bytes() {
        return Err(format!(
            "signature format {:?} does not fit {algorithm} (expected {format})",
            String::from_utf8_lossy(named)
        ));
    }
    let blob = r.string().map_err(|e| format!("signature: {e}"))?;
    r.end().map_err(|e| format!("signature: {e}"))?;
    let ok = match (id, digest) {
        (Id::EC, Some(md)) => {
            let mut s = Reader(blob);
            let rr = BigNum::from_slice(s.string()?).map_err(|e| e.to_string())?;
            let ss = BigNum::from_slice(s.string()?).map_err(|e| e.to_string())?;
            s.end()?;
            let sig = EcdsaSig::from_private_components(rr, ss).map_err(|e| e.to_string())?;
            let hash = openssl::hash::hash(md, signed_data).map_err(|e| e.to_string())?;
            let ec = key.ec_key().map_err(|e| e.to_string())?;
            sig.verify(&hash, &ec).map_err(|e| e.to_string())?
        }
        (_, Some(md)) => {
            let mut v = Verifier::new(md, key).map_err(|e| e.to_string())?;
            v.update(signed_data).map_err(|e| e.to_string())?;
            v.verify(blob).map_err(|e| e.to_string())?
        }
        (_, None) => {
            let mut v = Verifier::new_without_digest(key).map_err(|e| e.to_string())?;
            v.verify_oneshot(blob, signed_data)
                .map_err(|e| e.to_string())?
        }
    };
    if ok {
        Ok(())
    } else {
        Err("the signature does not verify with the certificate's key".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpccert_core::dev::pki::{self as devpki, CertSpec, Credential, KeyKind};
    use openssl::sign::Signer;

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&u32::try_from(s.len()).unwrap().to_be_bytes());
        out.extend_from_slice(s);
    }

    fn blob(algorithm: &str, creds: &[&Credential]) -> Vec<u8> {
        let mut b = Vec::new();
        string(&mut b, algorithm.as_bytes());
        b.extend_from_slice(&u32::try_from(creds.len()).unwrap().to_be_bytes());
        for c in creds {
            string(&mut b, &c.cert.to_der().unwrap());
        }
        b.extend_from_slice(&0u32.to_be_bytes());
        b
    }

    fn sign(algorithm: &str, cred: &Credential, data: &[u8]) -> Vec<u8> {
        let (format, md, id, _) = scheme(algorithm).unwrap();
        let raw = match id {
            Id::EC => {
                let hash = openssl::hash::hash(md.unwrap(), data).unwrap();
                let sig = EcdsaSig::sign(&hash, &cred.key.ec_key().unwrap()).unwrap();
                let mut b = Vec::new();
                // mpints: a leading zero when the top bit is set
                for n in [sig.r(), sig.s()] {
                    let mut v = n.to_vec();
                    if v.first().is_some_and(|f| f & 0x80 != 0) {
                        v.insert(0, 0);
                    }
                    string(&mut b, &v);
                }
                b
            }
            Id::ED25519 => {
                let mut s = Signer::new_without_digest(&cred.key).unwrap();
                s.sign_oneshot_to_vec(data).unwrap()
            }
            _ => {
                let mut s = Signer::new(md.unwrap(), &cred.key).unwrap();
                s.update(data).unwrap();
                s.sign_to_vec().unwrap()
            }
        };
        let mut out = Vec::new();
        string(&mut out, format.as_bytes());
        string(&mut out, &raw);
        out
    }

    fn pki(kind: KeyKind) -> (Credential, Credential) {
        let now = hpccert_core::clock::now();
        let ca =
            devpki::self_signed_ca(&CertSpec::ca("/O=Grid/CN=Test CA", now, 10).unwrap()).unwrap();
        let user = devpki::issue(
            &ca,
            &CertSpec {
                key: kind,
                ..CertSpec::user("/O=Grid/CN=alice", now, 1).unwrap()
            },
        )
        .unwrap();
        (ca, user)
    }

    #[test]
    fn rsa_and_ecdsa_possession_proofs() {
        for (alg, kind) in [
            ("x509v3-rsa2048-sha256", KeyKind::Rsa(2048)),
            ("x509v3-ssh-rsa", KeyKind::Rsa(2048)),
            ("x509v3-ecdsa-sha2-nistp256", KeyKind::EcP256),
            ("x509v3-ecdsa-sha2-nistp384", KeyKind::EcP384),
            ("x509v3-ssh-ed25519", KeyKind::Ed25519),
        ] {
            let (ca, user) = pki(kind);
            let key = parse_key_blob(alg, &blob(alg, &[&user, &ca])).unwrap();
            let data = b"session id + request";
            let sig = sign(alg, &user, data);
            verify_signature(alg, &key.leaf, data, &sig).unwrap_or_else(|e| panic!("{alg}: {e}"));
            // other data, or a signature by the CA's key, does not verify
            assert!(
                verify_signature(alg, &key.leaf, b"other", &sig).is_err(),
                "{alg}"
            );
            assert!(
                verify_signature(alg, &key.leaf, data, &sign(alg, &ca, data)).is_err(),
                "{alg}"
            );
        }
    }

    #[test]
    fn mismatches_are_refused() {
        let (_, rsa) = pki(KeyKind::Rsa(2048));
        let (_, ec) = pki(KeyKind::EcP256);
        let data = b"d";
        // a key that does not fit the algorithm
        assert!(
            verify_signature(
                "x509v3-ecdsa-sha2-nistp256",
                &rsa.cert,
                data,
                &sign("x509v3-rsa2048-sha256", &rsa, data)
            )
            .is_err()
        );
        assert!(check_key("x509v3-ecdsa-sha2-nistp384", &ec.cert).is_err());
        // a SHA-1 signature under the SHA-256 algorithm name
        let sha1 = sign("x509v3-ssh-rsa", &rsa, data);
        let e = verify_signature("x509v3-rsa2048-sha256", &rsa.cert, data, &sha1).unwrap_err();
        assert!(e.contains("signature format \"ssh-rsa\""), "{e}");
        // small RSA keys
        let (_, small) = pki(KeyKind::Rsa(1024));
        assert!(
            check_key("x509v3-rsa2048-sha256", &small.cert)
                .unwrap_err()
                .contains("1024")
        );
    }

    #[test]
    fn malformed_blobs_are_errors_not_panics() {
        let (ca, user) = pki(KeyKind::EcP256);
        let alg = "x509v3-ecdsa-sha2-nistp256";
        let good = blob(alg, &[&user, &ca]);
        assert!(
            parse_key_blob("x509v3-rsa2048-sha256", &good)
                .unwrap_err()
                .contains("names")
        );
        for cut in [0, 3, 10, good.len() - 1] {
            assert!(parse_key_blob(alg, &good[..cut]).is_err(), "cut {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(
            parse_key_blob(alg, &trailing)
                .unwrap_err()
                .contains("trailing")
        );
        let mut none = Vec::new();
        string(&mut none, alg.as_bytes());
        none.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(
            parse_key_blob(alg, &none)
                .unwrap_err()
                .contains("0 certificates")
        );
        let mut garbage = Vec::new();
        string(&mut garbage, alg.as_bytes());
        garbage.extend_from_slice(&1u32.to_be_bytes());
        string(&mut garbage, b"not DER");
        garbage.extend_from_slice(&0u32.to_be_bytes());
        assert!(parse_key_blob(alg, &garbage).is_err());
        assert!(verify_signature(alg, &user.cert, b"d", b"\x00\x00").is_err());
        assert!(scheme("x509v3-ssh-dss").is_none());
        // every algorithm the config accepts is implemented
        for a in hpccert_core::config::KNOWN_X509_ALGORITHMS {
            assert!(scheme(a).is_some(), "{a}");
        }
    }
}
