//! gridmap-tool as an administrator runs it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use hpccert_core::dev::pki::{self, CertSpec, Credential, ProxyPolicy, ProxySpec};

fn tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gridmap-tool"))
        // never pick up the machine's /etc/hpccert/hpccert.toml
        .arg("--config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/hpccert.toml"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

#[test]
fn convert_dn_both_ways() {
    let o = tool(&[
        "convert-dn",
        "/DC=org/DC=cilogon/C=US/O=Example/CN=John Smith A251",
        "--to",
        "rfc4514",
    ]);
    assert_eq!(code(&o), 0);
    assert_eq!(
        stdout(&o).trim(),
        "CN=John Smith A251,O=Example,C=US,DC=cilogon,DC=org"
    );
    let o = tool(&[
        "convert-dn",
        "CN=John Smith A251,O=Example,C=US,DC=cilogon,DC=org",
        "--to",
        "openssl",
    ]);
    assert_eq!(
        stdout(&o).trim(),
        "/DC=org/DC=cilogon/C=US/O=Example/CN=John Smith A251"
    );
    let o = tool(&["convert-dn", "not a dn", "--to", "openssl"]);
    assert_eq!(code(&o), 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot parse DN"));
}

#[test]
fn check_reports_findings_with_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("grid-mapfile");
    std::fs::write(
        &f,
        "# ok\n\"/O=Grid/CN=a\" root\n\"/O=Grid/CN=a\" root\n\"/O=Grid/CN=b\" no-such-user-xyz\n",
    )
    .unwrap();
    let o = tool(&["--ca-dir", "/nonexistent", "check", f.to_str().unwrap()]);
    let out = stdout(&o);
    assert_eq!(code(&o), 1, "{out}");
    assert!(
        out.contains(":3: warning: duplicate DN /O=Grid/CN=a (line 2 wins"),
        "{out}"
    );
    assert!(
        out.contains(":4: warning: account no-such-user-xyz does not exist"),
        "{out}"
    );

    std::fs::write(&f, "\"/O=Grid/CN=a\" root\n\"/O=Grid/CN=b\n").unwrap();
    let o = tool(&["--ca-dir", "/nonexistent", "check", f.to_str().unwrap()]);
    assert_eq!(code(&o), 1);
    assert!(
        stdout(&o).contains(":2: error: missing closing quote"),
        "{}",
        stdout(&o)
    );

    std::fs::write(&f, "\"/O=Grid/CN=a\" root\n").unwrap();
    let o = tool(&["--ca-dir", "/nonexistent", "check", f.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));

    let o = tool(&["check", dir.path().join("missing").to_str().unwrap()]);
    assert_eq!(code(&o), 2);
}

#[test]
fn edits_keep_comments_and_order_and_refuse_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("grid-mapfile");
    let original = "# site map\n\"/O=Grid/CN=a\" alice\n\n# people\n\"/O=Grid/CN=b\" bob\n";
    std::fs::write(&f, original).unwrap();
    let g = f.to_str().unwrap();

    let o = tool(&["--gridmap", g, "add", "CN=c,O=Grid", "carol"]);
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let o = tool(&["--gridmap", g, "add", "/O=Grid/CN=a", "shared,.atlas"]);
    assert_eq!(code(&o), 0);
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "# site map\n\"/O=Grid/CN=a\" alice,shared,.atlas\n\n# people\n\"/O=Grid/CN=b\" bob\n\"/O=Grid/CN=c\" carol\n"
    );

    let o = tool(&["--gridmap", g, "remove", "/O=Grid/CN=a", "shared"]);
    assert_eq!(code(&o), 0);
    let o = tool(&["--gridmap", g, "remove", "/O=Grid/CN=b"]);
    assert_eq!(code(&o), 0);
    let o = tool(&["--gridmap", g, "remove", "/O=Grid/CN=zzz"]);
    assert_eq!(code(&o), 1);
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "# site map\n\"/O=Grid/CN=a\" alice,.atlas\n\n# people\n\"/O=Grid/CN=c\" carol\n"
    );

    let o = tool(&["--gridmap", g, "list", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[1]["dn"], "/O=Grid/CN=c");
    assert_eq!(rows[0]["accounts"], serde_json::json!(["alice", ".atlas"]));

    // a broken file is never rewritten
    let broken = "\"/O=Grid/CN=a alice\n";
    std::fs::write(&f, broken).unwrap();
    let o = tool(&["--gridmap", g, "add", "/O=Grid/CN=d", "dave"]);
    assert_eq!(code(&o), 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing was changed"));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), broken);
    // and bad input changes nothing either
    std::fs::write(&f, original).unwrap();
    let o = tool(&["--gridmap", g, "add", "/O=Grid/CN=d", "bad name"]);
    assert_eq!(code(&o), 2);
    assert_eq!(std::fs::read_to_string(&f).unwrap(), original);
}

struct Site {
    dir: tempfile::TempDir,
    user: Credential,
    ca: Credential,
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_272_000)
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::self_signed_ca(&CertSpec::ca("/DC=org/DC=test/CN=Test CA", now(), 3650).unwrap())
        .unwrap();
    let user = pki::issue(
        &ca,
        &CertSpec::user("/DC=org/DC=test/CN=Alice", now(), 365).unwrap(),
    )
    .unwrap();
    pki::install_ca(&dir.path().join("certificates"), &ca.cert, None, None).unwrap();
    std::fs::write(
        dir.path().join("grid-mapfile"),
        "\"/DC=org/DC=test/CN=Alice\" alice,shared\n",
    )
    .unwrap();
    Site { dir, user, ca }
}

impl Site {
    fn chain(&self, name: &str, creds: &[&Credential]) -> PathBuf {
        let p = self.dir.path().join(name);
        let mut pem = Vec::new();
        for c in creds {
            pem.extend(c.cert_pem().unwrap());
        }
        std::fs::write(&p, pem).unwrap();
        p
    }
    fn explain(&self, extra: &[&str]) -> Output {
        let ca_dir = self.dir.path().join("certificates");
        let gridmap = self.dir.path().join("grid-mapfile");
        let mut args = vec![
            "--ca-dir",
            ca_dir.to_str().unwrap(),
            "--gridmap",
            gridmap.to_str().unwrap(),
            "--at",
            "2026-06-01T00:00:00Z",
            "explain",
        ];
        args.extend_from_slice(extra);
        tool(&args)
    }
}

#[test]
fn explain_certificates() {
    let s = site();
    let eec = s.chain("eec.pem", &[&s.user]);
    let o = s.explain(&["--cert", eec.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stdout(&o).starts_with("ACCEPT /DC=org/DC=test/CN=Alice -> alice\n"),
        "{}",
        stdout(&o)
    );

    let o = s.explain(&[
        "--cert",
        eec.to_str().unwrap(),
        "--user",
        "shared",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["decision"], "accept");
    assert_eq!(v["account"], "shared");
    assert_eq!(v["proxy_depth"], 0);
    assert!(v["credential"].as_str().unwrap().starts_with("SHA256:"));
    // how long sshd-gsi would reuse the decision: the default TTL, shorter than the certificate
    let cache = v["cache"].as_str().unwrap();
    assert!(
        cache.starts_with("sshd-gsi would reuse this decision for 300 s, until ")
            && cache.contains("credential_cache_ttl"),
        "{cache}"
    );
    assert!(
        stdout(&s.explain(&["--cert", eec.to_str().unwrap()]))
            .contains("\n  cache: sshd-gsi would reuse")
    );

    let o = s.explain(&["--cert", eec.to_str().unwrap(), "--user", "root", "--json"]);
    assert_eq!(code(&o), 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["refused_at"], "mapping");
    assert!(
        v["reasons"][1]
            .as_str()
            .unwrap()
            .contains("account root is not mapped"),
        "{v}"
    );

    let mut spec = ProxySpec::new("123", now(), 12);
    spec.policy = ProxyPolicy::Limited;
    let limited = pki::issue_proxy(&s.user, &spec).unwrap();
    let lp = s.chain("limited.pem", &[&limited, &s.user]);
    let o = s.explain(&["--cert", lp.to_str().unwrap()]);
    assert_eq!(code(&o), 1);
    assert!(
        stdout(&o).contains("limited proxy refused"),
        "{}",
        stdout(&o)
    );
    let o = s.explain(&["--allow-limited-proxies", "--cert", lp.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));

    // validation time matters: a year later the certificate has expired
    let ca_dir = s.dir.path().join("certificates");
    let gridmap = s.dir.path().join("grid-mapfile");
    let o = tool(&[
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--gridmap",
        gridmap.to_str().unwrap(),
        "--at",
        "2027-07-01T00:00:00Z",
        "explain",
        "--cert",
        eec.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("certificate expired"), "{}", stdout(&o));
    let _ = &s.ca;
}

#[test]
fn explain_dn_and_usage_errors() {
    let s = site();
    let o = s.explain(&["--dn", "CN=Alice,DC=test,DC=org"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains("no credential checked"));
    let o = s.explain(&["--dn", "/DC=org/DC=test/CN=Mallory"]);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("DN not in grid-mapfile"));
    let o = s.explain(&[]);
    assert_eq!(code(&o), 2);
    let o = Command::new(env!("CARGO_BIN_EXE_gridmap-tool"))
        .args([
            "--config",
            "/nonexistent.toml",
            "explain",
            "--dn",
            "/O=x/CN=y",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent.toml"));
    let o = s.explain(&["--dn", "/O=x/CN=y", "--bogus"]);
    assert_eq!(code(&o), 2);
}

#[test]
fn demo_runs_to_the_expected_decisions() {
    let o = Command::new(env!("CARGO_BIN_EXE_gridmap-tool"))
        .arg("demo")
        .output()
        .unwrap();
    assert_eq!(
        code(&o),
        0,
        "{}\n{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    let out = stdout(&o);
    // 7 certificate cases (2 accepted), 5 token cases (1 accepted)
    assert_eq!(out.matches("\nACCEPT ").count(), 3, "{out}");
    assert_eq!(out.matches("\nREFUSE ").count(), 9, "{out}");
    assert!(out.contains("certificate revoked"));
    assert!(out.contains("alg none refused"));
    assert!(out.contains("lacks required scope compute.create"));
}

#[test]
fn check_reports_dns_outside_every_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::self_signed_ca(&CertSpec::ca("/DC=org/DC=test/CN=Test CA", now(), 3650).unwrap())
        .unwrap();
    let certs = dir.path().join("certificates");
    pki::install_ca(
        &certs,
        &ca.cert,
        None,
        Some("TO Issuer SELF PERMIT Subject \"/DC=org/DC=test/.*\"\n"),
    )
    .unwrap();
    let map = dir.path().join("grid-mapfile");
    std::fs::write(
        &map,
        "\"/DC=org/DC=test/CN=In\" root\n\"/DC=org/DC=other/CN=Out\" root\n",
    )
    .unwrap();
    let o = tool(&[
        "--ca-dir",
        certs.to_str().unwrap(),
        "check",
        map.to_str().unwrap(),
    ]);
    let out = stdout(&o);
    assert_eq!(code(&o), 1, "{out}");
    assert!(
        out.contains(":2: warning: no trusted CA's namespace allows /DC=org/DC=other/CN=Out"),
        "{out}"
    );
    assert!(!out.contains(":1: warning"), "{out}");
}

/// `explain --from ADDR` checks the restrictions file's `from=` as a login from there would;
/// without it the rule is shown, not checked.
#[test]
fn explain_from_checks_the_restrictions() {
    let s = site();
    let eec = s.chain("eec.pem", &[&s.user]);
    let d = s.dir.path();
    std::fs::write(
        d.join("restrictions"),
        "dn \"/DC=org/DC=test/CN=Alice\" from=10.0.0.0/8 no-pty\n",
    )
    .unwrap();
    std::fs::write(
        d.join("hpccert.toml"),
        format!(
            "version = 1\n[mapping]\nrestrictions_file = \"{}\"\n",
            d.join("restrictions").display()
        ),
    )
    .unwrap();
    let config = d.join("hpccert.toml");
    let with = |from: Option<&str>| {
        let mut extra = vec!["--cert", eec.to_str().unwrap()];
        if let Some(f) = from {
            extra.extend(["--from", f]);
        }
        let ca_dir = d.join("certificates");
        let gridmap = d.join("grid-mapfile");
        let mut args = vec![
            "--ca-dir",
            ca_dir.to_str().unwrap(),
            "--gridmap",
            gridmap.to_str().unwrap(),
            "--at",
            "2026-06-01T00:00:00Z",
            "explain",
        ];
        args.extend(extra);
        Command::new(env!("CARGO_BIN_EXE_gridmap-tool"))
            .arg("--config")
            .arg(&config)
            .args(&args)
            .output()
            .unwrap()
    };
    let o = with(Some("192.0.2.1"));
    assert_eq!(
        code(&o),
        1,
        "{}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout(&o).contains("may not log in from 192.0.2.1 (allowed: 10.0.0.0/8;"),
        "{}",
        stdout(&o)
    );
    let o = with(Some("10.2.3.4"));
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stdout(&o).contains("restricted: from=10.0.0.0/8 no-pty"),
        "{}",
        stdout(&o)
    );
    let o = with(None);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains("from= not checked"), "{}", stdout(&o));
}
