//! A CRL belongs to the key that signed it (hardening issue, item 7).
//!
//! A re-keyed CA is two CA certificates with the same subject DN and different keys: in an
//! IGTF directory `<hash>.0` and `<hash>.1`, each with its own CRL (`<hash>.r0`, `<hash>.r1`).
//! Each CRL must be applied to the certificates of the CA whose key signed it, whatever file
//! it sits in; a CRL signed by neither key stands for neither CA.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

use std::path::Path;
use std::time::{Duration, SystemTime};

use hpccert_core::dev::pki::{self, CertSpec, Credential};
use hpccert_core::trust::store::TrustStore;
use hpccert_core::trust::x509::{
    CrlPolicy, PresentedChain, VerifyError, VerifyOptions, verify_chain,
};
use openssl::x509::{X509, X509Crl};

const DAY: Duration = Duration::from_secs(86400);
const HOUR: Duration = Duration::from_secs(3600);
const CA_DN: &str = "/DC=org/DC=test/CN=Rekeyed CA";

fn now() -> SystemTime {
    // a fixed instant: 2026-06-01T00:00:00Z
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_272_000)
}

/// One key of the re-keyed CA and what it issued.
struct Generation {
    ca: Credential,
    /// Not on any CRL of this generation.
    good: Credential,
    /// On this generation's CRL.
    revoked: Credential,
}

fn generation(tag: &str) -> Generation {
    let ca = pki::self_signed_ca(&CertSpec::ca(CA_DN, now(), 3650).unwrap()).unwrap();
    let user = |cn: &str| {
        pki::issue(
            &ca,
            &CertSpec::user(&format!("/DC=org/DC=test/CN={cn} {tag}"), now(), 30).unwrap(),
        )
        .unwrap()
    };
    Generation {
        good: user("Good"),
        revoked: user("Revoked"),
        ca,
    }
}

/// Two CAs named [`CA_DN`] with different keys.
fn rekeyed() -> (Generation, Generation) {
    (generation("1"), generation("2"))
}

/// A current CRL signed by `signer` revoking the serial numbers of `certs`. A serial of a
/// certificate of the other CA stands for a serial collision: it must not touch that CA.
fn crl_by(signer: &Credential, certs: &[&X509], number: u32) -> X509Crl {
    let list: Vec<(&X509, SystemTime)> = certs.iter().map(|c| (*c, now() - DAY)).collect();
    pki::crl(signer, &list, now() - HOUR, now() + DAY, number).unwrap()
}

/// The CRL of generation `own`, which also lists the serial of the other generation's
/// good certificate.
fn own_crl(own: &Generation, other: &Generation) -> X509Crl {
    crl_by(&own.ca, &[&own.revoked.cert, &other.good.cert], 1)
}

fn options(crl: CrlPolicy) -> VerifyOptions {
    VerifyOptions {
        crl,
        ..VerifyOptions::default()
    }
}

fn verify(trust: &TrustStore, cert: &Credential, crl: CrlPolicy) -> Result<(), VerifyError> {
    let chain = PresentedChain::from_certs(vec![cert.cert.clone()]).unwrap();
    verify_chain(trust, &chain, &options(crl), now()).map(|_| ())
}

fn assert_ok(trust: &TrustStore, cert: &Credential, crl: CrlPolicy) {
    if let Err(e) = verify(trust, cert, crl) {
        panic!(
            "{} under crl = {crl:?}: refused: {e}",
            cert.subject().to_slash()
        );
    }
}

fn assert_revoked(trust: &TrustStore, cert: &Credential, crl: CrlPolicy) {
    match verify(trust, cert, crl) {
        Err(VerifyError::Revoked { .. }) => {}
        other => panic!(
            "{} under crl = {crl:?}: expected revoked, got {other:?}",
            cert.subject().to_slash()
        ),
    }
}

fn assert_crl_missing(trust: &TrustStore, cert: &Credential) {
    match verify(trust, cert, CrlPolicy::Require) {
        Err(VerifyError::CrlMissing { ca }) => assert_eq!(ca, CA_DN),
        other => panic!(
            "{} under crl = Require: expected no CRL, got {other:?}",
            cert.subject().to_slash()
        ),
    }
}

/// An IGTF directory with the CA certificates at `<hash>.0`, `<hash>.1`, ... in this order
/// and the CRLs at `<hash>.r0`, `<hash>.r1`, ... in this order (whatever signed them).
fn directory(dir: &Path, cas: &[&Credential], crls: &[&X509Crl]) -> TrustStore {
    for ca in cas {
        pki::install_ca(dir, &ca.cert, None, None).unwrap();
    }
    let hash = pki::subject_hash(&cas[0].cert);
    for (n, crl) in crls.iter().enumerate() {
        std::fs::write(dir.join(format!("{hash}.r{n}")), crl.to_pem().unwrap()).unwrap();
    }
    TrustStore::load(dir).unwrap()
}

/// Both generations with their own CRLs: each CRL decides for its own CA only.
fn assert_each_crl_for_its_own_ca(trust: &TrustStore, one: &Generation, two: &Generation) {
    for policy in [CrlPolicy::IfPresent, CrlPolicy::Require] {
        assert_ok(trust, &one.good, policy);
        assert_ok(trust, &two.good, policy);
        assert_revoked(trust, &one.revoked, policy);
        assert_revoked(trust, &two.revoked, policy);
    }
}

#[test]
fn rekeyed_ca_each_crl_applies_to_its_own_certificates() {
    let (one, two) = rekeyed();
    let (crl1, crl2) = (own_crl(&one, &two), own_crl(&two, &one));
    // in an IGTF directory, as install_ca lays it out (<hash>.rN next to <hash>.N)
    let dir = tempfile::tempdir().unwrap();
    pki::install_ca(dir.path(), &one.ca.cert, Some(&crl1), None).unwrap();
    pki::install_ca(dir.path(), &two.ca.cert, Some(&crl2), None).unwrap();
    let trust = TrustStore::load(dir.path()).unwrap();
    assert_eq!(trust.anchors().len(), 2);
    assert!(trust.warnings().is_empty(), "{:?}", trust.warnings());
    assert_each_crl_for_its_own_ca(&trust, &one, &two);
    // and in memory, the CRLs in either order
    let copy = |crl: &X509Crl| X509Crl::from_der(&crl.to_der().unwrap()).unwrap();
    for crls in [[&crl1, &crl2], [&crl2, &crl1]] {
        let trust = TrustStore::from_certificates(
            vec![one.ca.cert.clone(), two.ca.cert.clone()],
            crls.iter().map(|c| copy(c)).collect(),
            vec![],
        )
        .unwrap();
        assert_each_crl_for_its_own_ca(&trust, &one, &two);
    }
}

#[test]
fn crls_are_matched_by_signing_key_not_by_file_number() {
    let (one, two) = rekeyed();
    let (crl1, crl2) = (own_crl(&one, &two), own_crl(&two, &one));
    // numbering swapped: CA1 at .0 with CA2's CRL at .r0, CA2 at .1 with CA1's CRL at .r1
    let dir = tempfile::tempdir().unwrap();
    let trust = directory(dir.path(), &[&one.ca, &two.ca], &[&crl2, &crl1]);
    assert!(trust.warnings().is_empty(), "{:?}", trust.warnings());
    assert_each_crl_for_its_own_ca(&trust, &one, &two);

    // only CA2 has a CRL, and it sits at .r0 (next to CA1's .0)
    let dir = tempfile::tempdir().unwrap();
    let trust = directory(dir.path(), &[&one.ca, &two.ca], &[&crl2]);
    assert!(trust.warnings().is_empty(), "{:?}", trust.warnings());
    for policy in [CrlPolicy::IfPresent, CrlPolicy::Require] {
        assert_ok(&trust, &two.good, policy);
        assert_revoked(&trust, &two.revoked, policy);
    }
    // CA1 has no CRL of its own: CA2's (which lists CA1's good serial) is not CA1's
    assert_ok(&trust, &one.good, CrlPolicy::IfPresent);
    assert_ok(&trust, &one.revoked, CrlPolicy::IfPresent);
    assert_crl_missing(&trust, &one.good);
}

#[test]
fn crl_signed_by_neither_key_is_ignored_with_a_warning() {
    let (one, two) = rekeyed();
    // a third key under the same name (an impostor, or a CA generation no longer trusted)
    let stranger = pki::self_signed_ca(&CertSpec::ca(CA_DN, now(), 3650).unwrap()).unwrap();
    let strange = crl_by(&stranger, &[&one.good.cert, &two.good.cert], 9);
    let crl1 = own_crl(&one, &two);
    // at .r1 (next to CA2, which has no CRL) and at .r0 (CA1's own CRL moved to .r1)
    for crls in [[&crl1, &strange], [&strange, &crl1]] {
        let dir = tempfile::tempdir().unwrap();
        let trust = directory(dir.path(), &[&one.ca, &two.ca], &crls);
        let hash = pki::subject_hash(&one.ca.cert);
        let at = if std::ptr::eq(crls[0], &strange) {
            "r0"
        } else {
            "r1"
        };
        assert!(
            trust
                .warnings()
                .iter()
                .any(|w| w.contains(&format!("{hash}.{at}")) && w.contains("ignored")),
            "{:?}",
            trust.warnings()
        );
        // it disables neither CA and revokes nothing
        assert_ok(&trust, &one.good, CrlPolicy::IfPresent);
        assert_ok(&trust, &two.good, CrlPolicy::IfPresent);
        assert_revoked(&trust, &one.revoked, CrlPolicy::IfPresent);
        // under `require`, CA1 has its own CRL; CA2 has none (the stranger's does not count)
        assert_ok(&trust, &one.good, CrlPolicy::Require);
        assert_revoked(&trust, &one.revoked, CrlPolicy::Require);
        assert_crl_missing(&trust, &two.good);
    }

    // the stranger's CRL alone: no CA has a CRL
    let dir = tempfile::tempdir().unwrap();
    let trust = directory(dir.path(), &[&one.ca, &two.ca], &[&strange]);
    assert_eq!(trust.warnings().len(), 1, "{:?}", trust.warnings());
    for g in [&one, &two] {
        assert_ok(&trust, &g.good, CrlPolicy::IfPresent);
        assert_crl_missing(&trust, &g.good);
    }
    // in memory, a CRL that no CA of its name signed is refused (the caller passed it)
    let e = TrustStore::from_certificates(
        vec![one.ca.cert.clone(), two.ca.cert.clone()],
        vec![strange],
        vec![],
    )
    .unwrap_err();
    assert!(e.to_string().contains("signature"), "{e}");
}

#[test]
fn one_cas_crl_never_stands_for_the_other() {
    let (one, two) = rekeyed();
    let crl1 = own_crl(&one, &two);
    let dir = tempfile::tempdir().unwrap();
    pki::install_ca(dir.path(), &one.ca.cert, Some(&crl1), None).unwrap();
    pki::install_ca(dir.path(), &two.ca.cert, None, None).unwrap();
    let trust = TrustStore::load(dir.path()).unwrap();
    assert!(trust.warnings().is_empty(), "{:?}", trust.warnings());
    // if-present: CA2 has no CRL of its own and works; CA1's CRL (which lists the serial of
    // CA2's good certificate) is not applied to it
    assert_ok(&trust, &two.good, CrlPolicy::IfPresent);
    assert_ok(&trust, &two.revoked, CrlPolicy::IfPresent);
    assert_ok(&trust, &one.good, CrlPolicy::IfPresent);
    assert_revoked(&trust, &one.revoked, CrlPolicy::IfPresent);
    // require: CA1's CRL does not satisfy it for CA2
    assert_ok(&trust, &one.good, CrlPolicy::Require);
    assert_crl_missing(&trust, &two.good);
}

#[test]
fn one_cas_unusable_crl_does_not_disable_the_other() {
    let (one, two) = rekeyed();
    // CA1's CRL is stale (signed by CA1's key, so it is CA1's): CA1 is refused, CA2 is not
    let stale = pki::crl(&one.ca, &[], now() - 10 * DAY, now() - DAY, 1).unwrap();
    let crl2 = own_crl(&two, &one);
    let dir = tempfile::tempdir().unwrap();
    let trust = directory(dir.path(), &[&one.ca, &two.ca], &[&stale, &crl2]);
    for policy in [CrlPolicy::IfPresent, CrlPolicy::Require] {
        let e = verify(&trust, &one.good, policy).unwrap_err();
        assert!(
            matches!(&e, VerifyError::CrlUnusable { reason, .. } if reason.contains("expired")),
            "{e}"
        );
        assert_ok(&trust, &two.good, policy);
        assert_revoked(&trust, &two.revoked, policy);
    }
    // a CRL file that cannot be read at all names no signer: every CA of its hash fails
    // closed (as for a single CA)
    let hash = pki::subject_hash(&one.ca.cert);
    std::fs::write(dir.path().join(format!("{hash}.r0")), "garbage").unwrap();
    let trust = TrustStore::load(dir.path()).unwrap();
    for g in [&one, &two] {
        let e = verify(&trust, &g.good, CrlPolicy::IfPresent).unwrap_err();
        assert!(matches!(e, VerifyError::CrlUnusable { .. }), "{e}");
    }
}

#[test]
fn crl_of_a_presented_intermediate_is_checked_against_its_key() {
    // a trusted root, and two intermediates named CA_DN with different keys that only the
    // clients present; the CRL of the first names no trust anchor
    let root = pki::self_signed_ca(&CertSpec::ca("/DC=org/DC=test/CN=Root", now(), 3650).unwrap())
        .unwrap();
    let sub = || pki::issue(&root, &CertSpec::ca(CA_DN, now(), 1000).unwrap()).unwrap();
    let (sub1, sub2) = (sub(), sub());
    let user = |ca: &Credential, cn: &str| {
        pki::issue(
            ca,
            &CertSpec::user(&format!("/DC=org/DC=test/CN={cn}"), now(), 30).unwrap(),
        )
        .unwrap()
    };
    let (good1, revoked1, good2) = (
        user(&sub1, "Good 1"),
        user(&sub1, "Revoked 1"),
        user(&sub2, "Good 2"),
    );
    let crl1 = crl_by(&sub1, &[&revoked1.cert, &good2.cert], 1);
    // the root's own (empty) CRL, for `require` on the intermediates it issued
    let root_crl = crl_by(&root, &[], 1);
    let trust =
        TrustStore::from_certificates(vec![root.cert.clone()], vec![crl1, root_crl], vec![])
            .unwrap();
    let verify = |leaf: &Credential, ca: &Credential, crl: CrlPolicy| {
        let chain = PresentedChain::from_certs(vec![leaf.cert.clone(), ca.cert.clone()]).unwrap();
        verify_chain(&trust, &chain, &options(crl), now()).map(|_| ())
    };
    for policy in [CrlPolicy::IfPresent, CrlPolicy::Require] {
        verify(&good1, &sub1, policy).unwrap();
        let r = verify(&revoked1, &sub1, policy);
        assert!(
            matches!(r, Err(VerifyError::Revoked { .. })),
            "{policy:?}: {r:?}"
        );
    }
    // sub1's CRL is not sub2's: it neither revokes sub2's serial nor satisfies `require`
    verify(&good2, &sub2, CrlPolicy::IfPresent).unwrap();
    assert_eq!(
        verify(&good2, &sub2, CrlPolicy::Require),
        Err(VerifyError::CrlMissing { ca: CA_DN.into() })
    );
}
