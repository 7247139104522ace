//! PAM_USER is read back after `pam_authenticate`, through the real libpam: pam_wrapper (a
//! private service directory, preloaded into a child process running this test again),
//! pam_matrix (the password) and pam_set_items (a module that sets PAM_USER from the
//! environment variable of that name, as a module mapping login names would).
//!
//! Without libpam-wrapper the test is skipped with a message, or fails when
//! `HPCCERT_E2E_REQUIRED=1` (CI).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

use hpccert_pam_appl::{Conversation, Pam};
use zeroize::Zeroizing;

/// Set in the child: the directory of the PAM services.
const CHILD: &str = "HPCCERT_PAM_APPL_CHILD";

fn pam_wrapper() -> Option<PathBuf> {
    let found = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ]
    .iter()
    .map(|d| Path::new(d).join("libpam_wrapper.so"))
    .find(|p| p.is_file());
    if found.is_none() {
        let required = std::env::var("HPCCERT_E2E_REQUIRED").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "libpam_wrapper.so not found (Debian package libpam-wrapper), and HPCCERT_E2E_REQUIRED=1"
        );
        eprintln!("SKIPPED: libpam_wrapper.so not found (Debian package libpam-wrapper)");
    }
    found
}

/// Answers every prompt with the password.
struct Password(&'static str);

impl Conversation for Password {
    fn prompt(&mut self, _echo: bool, _text: &str) -> Option<Zeroizing<String>> {
        Some(Zeroizing::new(self.0.to_string()))
    }
    fn info(&mut self, _text: &str) {}
    fn error(&mut self, _text: &str) {}
}

#[test]
fn a_module_that_changes_pam_user_is_refused_after_authentication() {
    if std::env::var_os(CHILD).is_some() {
        // the child, under pam_wrapper
        let mut pam = Pam::start("plain", "alice", Box::new(Password("secret"))).unwrap();
        pam.authenticate(0).unwrap();
        assert_eq!(pam.user().unwrap().as_deref(), Some("alice"));
        pam.acct_mgmt(0).unwrap();
        pam.check_user("pam_acct_mgmt").unwrap();
        let mut pam = Pam::start("plain", "alice", Box::new(Password("wrong"))).unwrap();
        assert!(pam.authenticate(0).is_err());

        // the right password, but a module then made the user root: refused
        let mut pam = Pam::start("switch", "alice", Box::new(Password("secret"))).unwrap();
        let e = pam.authenticate(0).unwrap_err();
        assert_eq!(
            e,
            "pam_authenticate: a module changed PAM_USER from \"alice\" to \"root\": refused"
        );
        assert_eq!(pam.user().unwrap().as_deref(), Some("root"));
        return;
    }
    let Some(wrapper) = pam_wrapper() else { return };
    let modules = wrapper.parent().unwrap().join("pam_wrapper");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let matrix = modules.join("pam_matrix.so");
    let set_items = modules.join("pam_set_items.so");
    for service in ["plain", "switch"] {
        std::fs::write(
            d.join(format!("passdb-{service}")),
            format!("alice:secret:{service}\n"),
        )
        .unwrap();
        let m = format!(
            "{} passdb={}/passdb-{service}",
            matrix.display(),
            d.display()
        );
        let mut stack = format!("auth required {m}\naccount required {m}\n");
        if service == "switch" {
            stack.push_str(&format!("auth required {}\n", set_items.display()));
        }
        std::fs::write(d.join(service), stack).unwrap();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_module_that_changes_pam_user_is_refused_after_authentication",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, d)
        .env("LD_PRELOAD", &wrapper)
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", d)
        // what pam_set_items.so sets PAM_USER to
        .env("PAM_USER", "root")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(all.contains("1 passed"), "the child ran no test: {all}");
}
