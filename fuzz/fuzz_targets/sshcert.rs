//! OpenSSH user certificates (`hpccert_core::trust::sshcert`) on arbitrary bytes, with fixed trusted CA
//! keys (`seeds/sshcert/trusted-cas.pub`: Ed25519, ECDSA P-256 and RSA CAs) at a fixed time
//! (2030-01-01, inside the seeds' validity).
//!
//! The input is tried as the raw certificate blob a client sends in a publickey request
//! (`Certificate::from_bytes`, what russh decodes) and, when it is UTF-8, as an authorized-key
//! style line (`Certificate::from_openssh`) and as a CA key file (`sshcert::load_ca_keys`).
//! Every certificate that decodes goes through `verify_ssh_certificate` for several client
//! addresses (none, 192.0.2.7, 198.51.100.1, 2001:db8::7).
//!
//! Checked:
//! - nothing panics;
//! - with no trusted CA nothing is accepted;
//! - an accepted certificate is one the CAs really signed: every signed field (nonce, key,
//!   serial, type, key id, principals, validity, critical options, extensions, CA key) equals
//!   that of one of the seeds' certificates, which `seedgen/sshcert.sh` made with the CAs'
//!   private keys (the fuzzer does not have them), and its CA key is a trusted one. Any other
//!   accepted certificate is a forgery;
//! - it is also a user certificate valid at the time, names a principal, has no critical
//!   option but `source-address`, and was checked for a known client address;
//! - a CA key file that loads has one key per non-comment line.
#![no_main]

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use hpccert_core::trust::sshcert::{load_ca_keys, verify_ssh_certificate};
use libfuzzer_sys::fuzz_target;
use ssh_key::certificate::{CertType, OptionsMap};
use ssh_key::public::KeyData;
use ssh_key::{Certificate, PublicKey};

const NOW: u64 = 1_893_456_000; // 2030-01-01T00:00:00Z

const TRUSTED_CAS: &str = include_str!("../seeds/sshcert/trusted-cas.pub");

/// The seeds' certificates signed by a trusted CA (`untrusted.cert` is signed by another key).
const SIGNED: &[&str] = &[
    include_str!("../seeds/sshcert/ed25519.cert"),
    include_str!("../seeds/sshcert/ecdsa-source.cert"),
    include_str!("../seeds/sshcert/rsa.cert"),
    include_str!("../seeds/sshcert/force-command.cert"),
    include_str!("../seeds/sshcert/no-principals.cert"),
    include_str!("../seeds/sshcert/host.cert"),
    include_str!("../seeds/sshcert/expired.cert"),
    include_str!("../seeds/sshcert/source-other.cert"),
];

type Signed = (
    Vec<u8>,
    KeyData,
    u64,
    CertType,
    String,
    Vec<String>,
    u64,
    u64,
    OptionsMap,
    OptionsMap,
    KeyData,
);

/// What the CA's signature covers (all but the `reserved` field, which is empty and not
/// exposed).
fn signed(c: &Certificate) -> Signed {
    (
        c.nonce().to_vec(),
        c.public_key().clone(),
        c.serial(),
        c.cert_type(),
        c.key_id().to_string(),
        c.valid_principals().to_vec(),
        c.valid_after(),
        c.valid_before(),
        c.critical_options().clone(),
        c.extensions().clone(),
        c.signature_key().clone(),
    )
}

struct Fixed {
    trusted: Vec<PublicKey>,
    signed: Vec<Signed>,
    file: std::path::PathBuf,
}

static FIXED: LazyLock<Fixed> = LazyLock::new(|| {
    let trusted: Vec<PublicKey> = TRUSTED_CAS
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| PublicKey::from_openssh(l).expect("trusted-cas.pub"))
        .collect();
    assert_eq!(trusted.len(), 3, "trusted-cas.pub");
    let signed = SIGNED
        .iter()
        .map(|s| signed(&Certificate::from_openssh(s).expect("a seed certificate")))
        .collect();
    // the seeds meant to be accepted are (one per CA): the fixed time and keys fit the seeds
    for (seed, peer) in [(SIGNED[0], PEERS[0]), (SIGNED[1], PEERS[1]), (SIGNED[2], PEERS[0])] {
        let c = Certificate::from_openssh(seed).expect("a seed certificate");
        let v = verify_ssh_certificate(&c, &trusted, peer, now())
            .unwrap_or_else(|e| panic!("seed {:?} is refused: {e}", c.key_id()));
        assert!(!v.principals().is_empty());
    }
    let file = std::env::temp_dir().join(format!("hpccert-fuzz-sshcert-{}.pub", std::process::id()));
    Fixed { trusted, signed, file }
});

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
}

const PEERS: [Option<IpAddr>; 4] = [
    None,
    Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7))),
    Some(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1))),
    Some(IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7))),
];

fn check(cert: &Certificate, fixed: &Fixed) {
    for peer in PEERS {
        assert!(
            verify_ssh_certificate(cert, &[], peer, now()).is_err(),
            "accepted with no trusted CA"
        );
        let Ok(v) = verify_ssh_certificate(cert, &fixed.trusted, peer, now()) else {
            continue;
        };
        let content = signed(cert);
        assert!(
            fixed.signed.contains(&content),
            "FORGERY: accepted a certificate the CAs never signed: {cert:?}"
        );
        assert!(
            fixed.trusted.iter().any(|k| k.key_data() == cert.signature_key()),
            "accepted a certificate of an untrusted CA: {cert:?}"
        );
        assert_eq!(cert.cert_type(), CertType::User);
        assert!(cert.valid_after() <= NOW && NOW < cert.valid_before());
        assert!(!v.principals().is_empty());
        assert_eq!(v.principals(), cert.valid_principals());
        assert!(peer.is_some() || cert.critical_options().is_empty());
        assert!(
            cert.critical_options().keys().all(|k| k == "source-address"),
            "accepted with critical options {:?}",
            cert.critical_options()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let fixed = &*FIXED;
    if let Ok(cert) = Certificate::from_bytes(data) {
        check(&cert, fixed);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cert) = Certificate::from_openssh(text) {
        check(&cert, fixed);
    }
    // a CA key file (in the temporary directory, named after the process, removed at once)
    std::fs::write(&fixed.file, text).unwrap();
    let loaded = load_ca_keys(&fixed.file);
    let _ = std::fs::remove_file(&fixed.file);
    if let Ok(keys) = loaded {
        let lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(keys.len(), lines, "CA key file {text:?}");
    }
});
