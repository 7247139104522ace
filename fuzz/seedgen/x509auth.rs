//! Writes `seeds/x509auth/*`: real RFC 6187 publickey requests, made with
//! `hpccert_core::dev::pki`, in the input format of the `x509auth` target:
//!
//! `string algorithm, string key blob, string signature, signed data (the rest)`
//!
//! (`string` = u32 big-endian length + bytes, as on the SSH wire). The signed data is what an
//! SSH client signs in a publickey request (RFC 4252 §7) and the signature is made with the
//! presented certificate's private key, so every seed verifies. The `x509auth` target reads these
//! files at build time (`include_bytes!`) as the list of genuine (key, signed data) pairs: after
//! regenerating, rebuild the target.
//!
//! ```sh
//! cd fuzz && cargo run --example x509auth_seeds      # (with CARGO_TARGET_DIR=$PWD/target)
//! ```

use std::path::Path;

use hpccert_core::dev::pki::{self, CertSpec, Credential, KeyKind, ProxySpec};
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey};
use openssl::sign::Signer;
use openssl::x509::{X509, X509NameBuilder};

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u32::try_from(s.len()).unwrap().to_be_bytes());
    out.extend_from_slice(s);
}

/// `string alg, uint32 n, string cert[n], uint32 m, string ocsp[m]`
fn key_blob(algorithm: &str, certs: &[&X509], ocsp: &[&[u8]]) -> Vec<u8> {
    let mut b = Vec::new();
    string(&mut b, algorithm.as_bytes());
    b.extend_from_slice(&u32::try_from(certs.len()).unwrap().to_be_bytes());
    for c in certs {
        string(&mut b, &c.to_der().unwrap());
    }
    b.extend_from_slice(&u32::try_from(ocsp.len()).unwrap().to_be_bytes());
    for o in ocsp {
        string(&mut b, o);
    }
    b
}

/// RFC 4252 §7: what the client signs.
fn signed_data(user: &str, algorithm: &str, blob: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    string(&mut d, &[0x5a; 32]); // session identifier (a SHA-256 exchange hash)
    d.push(50); // SSH_MSG_USERAUTH_REQUEST
    string(&mut d, user.as_bytes());
    string(&mut d, b"ssh-connection");
    string(&mut d, b"publickey");
    d.push(1);
    string(&mut d, algorithm.as_bytes());
    string(&mut d, blob);
    d
}

/// RFC 6187 §3 signature: `string format, string blob`.
fn sign(algorithm: &str, key: &PKey<openssl::pkey::Private>, data: &[u8]) -> Vec<u8> {
    let (format, md) = match algorithm {
        "x509v3-rsa2048-sha256" => ("rsa2048-sha256", Some(MessageDigest::sha256())),
        "x509v3-ssh-rsa" | "x509v3-sign-rsa" => ("ssh-rsa", Some(MessageDigest::sha1())),
        "x509v3-ecdsa-sha2-nistp256" => ("ecdsa-sha2-nistp256", Some(MessageDigest::sha256())),
        "x509v3-ecdsa-sha2-nistp384" => ("ecdsa-sha2-nistp384", Some(MessageDigest::sha384())),
        "x509v3-ecdsa-sha2-nistp521" => ("ecdsa-sha2-nistp521", Some(MessageDigest::sha512())),
        "x509v3-ssh-ed25519" => ("ssh-ed25519", None),
        _ => panic!("{algorithm}"),
    };
    let raw = match key.id() {
        Id::EC => {
            let hash = openssl::hash::hash(md.unwrap(), data).unwrap();
            let sig = EcdsaSig::sign(&hash, &key.ec_key().unwrap()).unwrap();
            let mut b = Vec::new();
            for n in [sig.r(), sig.s()] {
                // mpint: a leading zero when the top bit is set
                let mut v = n.to_vec();
                if v.first().is_some_and(|f| f & 0x80 != 0) {
                    v.insert(0, 0);
                }
                string(&mut b, &v);
            }
            b
        }
        Id::ED25519 => {
            let mut s = Signer::new_without_digest(key).unwrap();
            s.sign_oneshot_to_vec(data).unwrap()
        }
        _ => {
            let mut s = Signer::new(md.unwrap(), key).unwrap();
            s.update(data).unwrap();
            s.sign_to_vec().unwrap()
        }
    };
    let mut out = Vec::new();
    string(&mut out, format.as_bytes());
    string(&mut out, &raw);
    out
}

fn seed(dir: &Path, name: &str, algorithm: &str, signer: &Credential, certs: &[&X509], ocsp: &[&[u8]]) {
    let blob = key_blob(algorithm, certs, ocsp);
    let data = signed_data("alice", algorithm, &blob);
    let sig = sign(algorithm, &signer.key, &data);
    let mut out = Vec::new();
    string(&mut out, algorithm.as_bytes());
    string(&mut out, &blob);
    string(&mut out, &sig);
    out.extend_from_slice(&data);
    std::fs::write(dir.join(name), &out).unwrap();
    println!("{name}: {} bytes", out.len());
}

/// devpki makes no P-521 keys: a self-signed P-521 certificate with openssl.
fn p521_self_signed(now: std::time::SystemTime) -> Credential {
    let key = PKey::from_ec_key(EcKey::generate(&EcGroup::from_curve_name(Nid::SECP521R1).unwrap()).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("O", "Grid").unwrap();
    name.append_entry_by_text("CN", "p521 user").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    };
    b.set_not_before(&openssl::asn1::Asn1Time::from_unix(secs(now) - 3600).unwrap()).unwrap();
    b.set_not_after(&openssl::asn1::Asn1Time::from_unix(secs(now) + 86400).unwrap()).unwrap();
    b.sign(&key, MessageDigest::sha512()).unwrap();
    Credential { cert: b.build(), key }
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/x509auth");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let now = hpccert_core::clock::now();
    let ca = pki::self_signed_ca(&CertSpec::ca("/O=Grid/CN=Fuzz CA", now, 3650).unwrap()).unwrap();
    let user = |kind| {
        pki::issue(
            &ca,
            &CertSpec {
                key: kind,
                ..CertSpec::user("/O=Grid/OU=fuzz/CN=Alice", now, 365).unwrap()
            },
        )
        .unwrap()
    };
    let p256 = user(KeyKind::EcP256);
    let p384 = user(KeyKind::EcP384);
    let rsa = user(KeyKind::Rsa(2048));
    let ed = user(KeyKind::Ed25519);
    let proxy = pki::issue_proxy(&p256, &ProxySpec::new("123456789", now, 12)).unwrap();
    let p521 = p521_self_signed(now);

    seed(&dir, "ecdsa-p256", "x509v3-ecdsa-sha2-nistp256", &p256, &[&p256.cert, &ca.cert], &[]);
    seed(&dir, "ecdsa-p384", "x509v3-ecdsa-sha2-nistp384", &p384, &[&p384.cert], &[]);
    seed(&dir, "ecdsa-p521", "x509v3-ecdsa-sha2-nistp521", &p521, &[&p521.cert], &[]);
    seed(&dir, "rsa2048-sha256", "x509v3-rsa2048-sha256", &rsa, &[&rsa.cert, &ca.cert], &[]);
    // SHA-1 RSA, with an (unused) OCSP response in the blob
    seed(&dir, "ssh-rsa-ocsp", "x509v3-ssh-rsa", &rsa, &[&rsa.cert, &ca.cert], &[b"\x30\x03\x0a\x01\x00"]);
    seed(&dir, "sign-rsa", "x509v3-sign-rsa", &rsa, &[&rsa.cert], &[]);
    seed(&dir, "ed25519", "x509v3-ssh-ed25519", &ed, &[&ed.cert, &ca.cert], &[]);
    // an RFC 3820 proxy presented first, signing with the proxy's key
    seed(&dir, "proxy-p256", "x509v3-ecdsa-sha2-nistp256", &proxy, &[&proxy.cert, &p256.cert, &ca.cert], &[]);
}
