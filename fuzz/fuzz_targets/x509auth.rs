//! RFC 6187 (`x509v3-*`) publickey requests as sshd-gsi reads them, on arbitrary bytes. The
//! module is sshd-gsi's own `x509auth.rs`, compiled in from its source.
//!
//! Input: `string algorithm, string key blob, string signature, signed data (the rest)`, where
//! `string` is a u32 big-endian length and that many bytes (a length past the end takes what
//! is left), so every input splits.
//!
//! Checked:
//! - `parse_key_blob`, `check_key` and `verify_signature` never panic;
//! - a parsed blob's chain starts with the presented certificate (the one whose key signs);
//! - a signature verifies only for a (key, signed data) pair that was really signed with that
//!   key: the genuine pairs are those of `seeds/x509auth` (made by `seedgen/x509auth.rs` with
//!   the private keys, which the fuzzer does not have). Anything else verifying (a random or
//!   mangled signature, other data, another key) is a forgery and a panic.
//!
//! The signature is checked with the blob's certificate when the blob parses, and always with
//! the seeds' certificates too, so that the signature parser is reached without a valid blob.
#![no_main]

#[path = "../../sshd-gsi/src/x509auth.rs"]
#[allow(dead_code, clippy::all)]
mod x509auth;

use std::collections::HashSet;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use openssl::x509::X509;

/// The seeds: genuine requests (regenerate with `cargo run --example x509auth_seeds`).
const SEEDS: &[(&str, &[u8])] = &[
    ("ecdsa-p256", include_bytes!("../seeds/x509auth/ecdsa-p256")),
    ("ecdsa-p384", include_bytes!("../seeds/x509auth/ecdsa-p384")),
    ("ecdsa-p521", include_bytes!("../seeds/x509auth/ecdsa-p521")),
    ("rsa2048-sha256", include_bytes!("../seeds/x509auth/rsa2048-sha256")),
    ("ssh-rsa-ocsp", include_bytes!("../seeds/x509auth/ssh-rsa-ocsp")),
    ("sign-rsa", include_bytes!("../seeds/x509auth/sign-rsa")),
    ("ed25519", include_bytes!("../seeds/x509auth/ed25519")),
    ("proxy-p256", include_bytes!("../seeds/x509auth/proxy-p256")),
];

struct Request<'a> {
    algorithm: String,
    blob: &'a [u8],
    signature: &'a [u8],
    data: &'a [u8],
}

/// A length-prefixed field; a length past the end takes the rest.
fn field<'a>(b: &mut &'a [u8]) -> &'a [u8] {
    let Some((len, rest)) = b.split_first_chunk::<4>() else {
        *b = &[];
        return &[];
    };
    let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX).min(rest.len());
    let (f, rest) = rest.split_at(len);
    *b = rest;
    f
}

fn split(mut input: &[u8]) -> Request<'_> {
    let algorithm = String::from_utf8_lossy(field(&mut input)).into_owned();
    let blob = field(&mut input);
    let signature = field(&mut input);
    Request { algorithm, blob, signature, data: input }
}

fn spki(cert: &X509) -> Vec<u8> {
    cert.public_key().unwrap().public_key_to_der().unwrap()
}

struct Genuine {
    /// (SubjectPublicKeyInfo DER, signed data) of every seed.
    pairs: HashSet<(Vec<u8>, Vec<u8>)>,
    /// The seeds' presented certificates.
    leaves: Vec<X509>,
}

static GENUINE: LazyLock<Genuine> = LazyLock::new(|| {
    let mut pairs = HashSet::new();
    let mut leaves = Vec::new();
    for (name, bytes) in SEEDS {
        let r = split(bytes);
        let key = x509auth::parse_key_blob(&r.algorithm, r.blob)
            .unwrap_or_else(|e| panic!("seed {name}: the blob does not parse: {e}"));
        x509auth::verify_signature(&r.algorithm, &key.leaf, r.data, r.signature)
            .unwrap_or_else(|e| panic!("seed {name}: the signature does not verify: {e}"));
        pairs.insert((spki(&key.leaf), r.data.to_vec()));
        leaves.push(key.leaf);
    }
    Genuine { pairs, leaves }
});

fuzz_target!(|input: &[u8]| {
    let genuine = &*GENUINE;
    let r = split(input);
    let mut parsed = None;
    if let Ok(key) = x509auth::parse_key_blob(&r.algorithm, r.blob) {
        let certs = key.chain.certificates();
        assert!((1..=16).contains(&certs.len()), "{} certificates", certs.len());
        assert_eq!(
            certs[0].to_der().unwrap(),
            key.leaf.to_der().unwrap(),
            "the chain does not start with the presented certificate"
        );
        let _ = x509auth::check_key(&r.algorithm, &key.leaf);
        parsed = Some(key.leaf);
    }
    for leaf in parsed.iter().chain(&genuine.leaves) {
        if x509auth::verify_signature(&r.algorithm, leaf, r.data, r.signature).is_ok() {
            let pair = (spki(leaf), r.data.to_vec());
            assert!(
                genuine.pairs.contains(&pair),
                "FORGERY: a signature verified for {:?} with a key and data that were never signed \
                 together (signature {:02x?}, data {:02x?}, certificate {:?})",
                r.algorithm,
                r.signature,
                r.data,
                leaf.subject_name()
            );
        }
    }
});
