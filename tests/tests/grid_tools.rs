//! Real grid tooling as a peer: Globus `grid-proxy-init -rfc` proxies, `grid-mapfile-add-entry`
//! grid-mapfiles, and OpenSSL's own proxy verification as a reference verdict.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

use hpccert_core::clock;
use hpccert_core::dev::pki::{self, CertSpec, Credential, KeyKind};
use hpccert_core::identity::dn::DistinguishedName;
use hpccert_core::identity::gridmap::GridMapfile;
use hpccert_core::trust::store::TrustStore;
use hpccert_core::trust::x509::{PresentedChain, VerifyError, VerifyOptions, verify_chain};
use hpccert_e2e::{peer_available, run, write_mode};

const USER_DN: &str = "/DC=org/DC=test/O=Grid/CN=Grid User";

struct Site {
    dir: tempfile::TempDir,
    _user: Credential,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let now = clock::now();
        let mut ca_spec = CertSpec::ca("/DC=org/DC=test/CN=Test Grid CA", now, 3650).unwrap();
        ca_spec.key = KeyKind::Rsa(2048);
        let ca = pki::self_signed_ca(&ca_spec).unwrap();
        let mut user_spec = CertSpec::user(USER_DN, now, 30).unwrap();
        user_spec.key = KeyKind::Rsa(2048);
        let user = pki::issue(&ca, &user_spec).unwrap();
        let signing_policy = "access_id_CA X509 '/DC=org/DC=test/CN=Test Grid CA'\npos_rights globus CA:sign\ncond_subjects globus '\"/DC=org/DC=test/*\"'\n";
        pki::install_ca(&dir.path().join("certificates"), &ca.cert, None, None).unwrap();
        std::fs::write(
            dir.path()
                .join("certificates")
                .join(format!("{}.signing_policy", pki::subject_hash(&ca.cert))),
            signing_policy,
        )
        .unwrap();
        write_mode(
            &dir.path().join("usercert.pem"),
            &user.cert_pem().unwrap(),
            0o644,
        );
        write_mode(
            &dir.path().join("userkey.pem"),
            &user.key_pem_traditional().unwrap(),
            0o400,
        );
        Site { dir, _user: user }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn trust(&self) -> TrustStore {
        TrustStore::load(&self.path("certificates")).unwrap()
    }

    /// grid-proxy-init from `cert`/`key` into `out`.
    fn proxy_init(&self, cert: &Path, key: &Path, out: &Path, extra: &[&str]) {
        let (code, stdout, stderr) = run(Command::new("grid-proxy-init")
            .env("X509_CERT_DIR", self.path("certificates"))
            .env("X509_USER_PROXY", out)
            .args(["-rfc", "-q", "-cert"])
            .arg(cert)
            .arg("-key")
            .arg(key)
            .arg("-out")
            .arg(out)
            .args(extra)
            .stdin(std::process::Stdio::null()));
        assert_eq!(code, 0, "grid-proxy-init failed:\n{stdout}\n{stderr}");
    }

    fn verify(
        &self,
        file: &Path,
        options: &VerifyOptions,
    ) -> Result<hpccert_core::trust::x509::VerifiedChain, VerifyError> {
        let pem = std::fs::read(file).unwrap();
        verify_chain(
            &self.trust(),
            &PresentedChain::from_pem(&pem).unwrap(),
            options,
            clock::now(),
        )
    }
}

#[test]
fn grid_proxy_init_rfc_proxies() {
    if !peer_available("grid-proxy-init", "globus-proxy-utils") {
        return;
    }
    let site = Site::new();
    let proxy = site.path("x509up");
    site.proxy_init(
        &site.path("usercert.pem"),
        &site.path("userkey.pem"),
        &proxy,
        &[],
    );
    // the file holds proxy cert, proxy key and user cert, as Globus writes it
    let v = site.verify(&proxy, &VerifyOptions::default()).unwrap();
    assert_eq!(v.identity(), &DistinguishedName::parse(USER_DN).unwrap());
    assert_eq!(v.proxy_depth(), 1);
    assert!(
        v.presented_subject()
            .to_slash()
            .starts_with(&format!("{USER_DN}/CN="))
    );
    assert!(
        DistinguishedName::parse(USER_DN)
            .unwrap()
            .is_parent_of(v.presented_subject())
    );

    // a proxy of that proxy
    let proxy2 = site.path("x509up2");
    site.proxy_init(&proxy, &proxy, &proxy2, &["-valid", "1:00"]);
    let v = site.verify(&proxy2, &VerifyOptions::default()).unwrap();
    assert_eq!(v.proxy_depth(), 2);
    assert_eq!(v.identity().to_slash(), USER_DN);

    // limited proxies are refused unless allowed
    let limited = site.path("x509up_limited");
    site.proxy_init(
        &site.path("usercert.pem"),
        &site.path("userkey.pem"),
        &limited,
        &["-limited"],
    );
    let e = site
        .verify(&limited, &VerifyOptions::default())
        .unwrap_err();
    assert!(matches!(e, VerifyError::LimitedProxy { .. }), "{e}");
    let allow = VerifyOptions {
        allow_limited_proxies: true,
        ..VerifyOptions::default()
    };
    assert!(site.verify(&limited, &allow).unwrap().is_limited());

    // path length: a proxy made with -path-length 1 may sign one more proxy, not two
    // (grid-proxy-init treats -path-length 0 as "no limit")
    let pl1 = site.path("x509up_pl1");
    site.proxy_init(
        &site.path("usercert.pem"),
        &site.path("userkey.pem"),
        &pl1,
        &["-path-length", "1"],
    );
    let child = site.path("x509up_pl1_child");
    site.proxy_init(&pl1, &pl1, &child, &["-valid", "2:00"]);
    assert_eq!(
        site.verify(&child, &VerifyOptions::default())
            .unwrap()
            .proxy_depth(),
        2
    );
    let grandchild = site.path("x509up_pl1_grandchild");
    site.proxy_init(&child, &child, &grandchild, &["-valid", "1:00"]);
    let e = site
        .verify(&grandchild, &VerifyOptions::default())
        .unwrap_err();
    assert!(
        matches!(&e, VerifyError::BadProxy { reason, .. } if reason.contains("path length")),
        "{e}"
    );

    // legacy (pre-RFC) proxies are refused with a hint
    let legacy = site.path("x509up_old");
    let (code, out, err) = run(Command::new("grid-proxy-init")
        .env("X509_CERT_DIR", site.path("certificates"))
        .args(["-old", "-q", "-cert"])
        .arg(site.path("usercert.pem"))
        .arg("-key")
        .arg(site.path("userkey.pem"))
        .arg("-out")
        .arg(&legacy)
        .stdin(std::process::Stdio::null()));
    if code == 0 {
        let e = site.verify(&legacy, &VerifyOptions::default()).unwrap_err();
        assert!(
            matches!(&e, VerifyError::BadProxy { reason, .. } if reason.contains("grid-proxy-init -rfc")),
            "{e}"
        );
    } else {
        eprintln!("grid-proxy-init -old not supported here: {out}{err}");
    }
}

/// OpenSSL's `verify -allow_proxy_certs` and ours agree on real proxies.
#[test]
fn openssl_reference_verdicts_agree() {
    if !peer_available("grid-proxy-init", "globus-proxy-utils")
        || !peer_available("openssl", "openssl")
    {
        return;
    }
    let site = Site::new();
    let proxy = site.path("x509up");
    site.proxy_init(
        &site.path("usercert.pem"),
        &site.path("userkey.pem"),
        &proxy,
        &[],
    );
    let proxy_cert = site.path("proxy-only.pem");
    let first = openssl::x509::X509::stack_from_pem(&std::fs::read(&proxy).unwrap()).unwrap();
    std::fs::write(&proxy_cert, first[0].to_pem().unwrap()).unwrap();
    let reference = |untrusted: &Path| {
        run(Command::new("openssl")
            .arg("verify")
            .arg("-CApath")
            .arg(site.path("certificates"))
            .arg("-allow_proxy_certs")
            .arg("-untrusted")
            .arg(untrusted)
            .arg(&proxy_cert))
    };
    let (code, out, err) = reference(&site.path("usercert.pem"));
    assert_eq!(code, 0, "openssl verify refused a real proxy: {out}{err}");
    assert!(site.verify(&proxy, &VerifyOptions::default()).is_ok());

    // a different user's certificate as the "issuer": both refuse
    let imposter_site = Site::new();
    let (code, _, _) = reference(&imposter_site.path("usercert.pem"));
    assert_ne!(code, 0);
    let mut pem = first[0].to_pem().unwrap();
    pem.extend(std::fs::read(imposter_site.path("usercert.pem")).unwrap());
    let chain = PresentedChain::from_pem(&pem).unwrap();
    assert!(
        verify_chain(
            &site.trust(),
            &chain,
            &VerifyOptions::default(),
            clock::now()
        )
        .is_err()
    );
}

#[test]
fn grid_mapfile_add_entry_files_parse_to_the_same_mappings() {
    if !peer_available("grid-mapfile-add-entry", "globus-gss-assist-progs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("grid-mapfile");
    std::fs::write(&map, "").unwrap();
    let entries: &[(&str, &[&str])] = &[
        (
            "/DC=org/DC=cilogon/C=US/O=Example University/CN=John Smith A251",
            &["jsmith"],
        ),
        (
            "/DC=org/DC=test/O=Grid/CN=Jürgen Müller",
            &["juergen", "shared"],
        ),
        (
            "/C=DE/O=GermanGrid/OU=KIT/CN=host/login.example.org",
            &["hostsvc"],
        ),
        ("/O=Grid/CN=back\\slash", &["bs"]),
    ];
    for (dn, accounts) in entries {
        let (code, out, err) = run(Command::new("grid-mapfile-add-entry")
            .args(["-dn", dn, "-ln"])
            .args(*accounts)
            .arg("-f")
            .arg(&map)
            .arg("-force"));
        assert_eq!(code, 0, "{out}{err}");
    }
    // adding an account to an existing DN
    let (code, out, err) = run(Command::new("grid-mapfile-add-entry")
        .args(["-dn", entries[0].0, "-ln", "jsmith2", "-f"])
        .arg(&map)
        .arg("-force"));
    assert_eq!(code, 0, "{out}{err}");

    let parsed = GridMapfile::load(&map)
        .unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(&map).unwrap()));
    let accounts = |dn: &str| -> Vec<String> {
        parsed
            .lookup(&DistinguishedName::parse(dn).unwrap())
            .unwrap_or_else(|| {
                panic!(
                    "{dn} not found in\n{}",
                    std::fs::read_to_string(&map).unwrap()
                )
            })
            .accounts
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(accounts(entries[0].0), ["jsmith", "jsmith2"]);
    assert_eq!(accounts(entries[1].0), ["juergen", "shared"]);
    assert_eq!(accounts(entries[2].0), ["hostsvc"]);
    // Globus unescapes `\s` to `s`, and so do we
    assert_eq!(accounts("/O=Grid/CN=backslash"), ["bs"]);
    assert_eq!(parsed.len(), 4);
    assert!(parsed.duplicates().is_empty());
}

/// DNs read from certificates match what OpenSSL prints, in both forms, including multi-valued
/// RDNs, e-mail attributes and characters that need escaping.
#[test]
fn dns_from_certificates_match_openssl() {
    if !peer_available("openssl", "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("c.pem");
    for subject in [
        "/DC=org/DC=cilogon/C=US/O=Example/CN=John Smith A251",
        "/DC=org/DC=test/CN=Jane Doe+UID=jdoe/emailAddress=jane@example.org",
        "/O=Grid/OU=a,b/CN=Smith\\, John",
        "/O=Grid/CN=host\\/login.example.org",
    ] {
        let (code, out, err) = run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .args([
                "-keyout",
                "/dev/null",
                "-days",
                "1",
                "-multivalue-rdn",
                "-subj",
                subject,
                "-out",
            ])
            .arg(&cert));
        assert_eq!(code, 0, "{out}{err}");
        let ours = DistinguishedName::from_certificate_der(
            &openssl::x509::X509::from_pem(&std::fs::read(&cert).unwrap())
                .unwrap()
                .to_der()
                .unwrap(),
        )
        .unwrap();
        let print = |nameopt: &str| {
            let (code, out, err) = run(Command::new("openssl")
                .args(["x509", "-noout", "-subject", "-nameopt", nameopt, "-in"])
                .arg(&cert));
            assert_eq!(code, 0, "{err}");
            out.trim().trim_start_matches("subject=").trim().to_string()
        };
        let rfc = print("RFC2253");
        assert_eq!(ours.to_rfc4514(), rfc, "{subject}");
        assert_eq!(DistinguishedName::parse(&rfc).unwrap(), ours, "{subject}");
        let compat = print("compat");
        assert_eq!(
            DistinguishedName::parse(&compat).unwrap(),
            ours,
            "{subject}: {compat}"
        );
    }
}
