//! The config file the package installs as /etc/hpccert/portal.toml (packaging/portal.toml)
//! parses as it is, with the defaults the portal's unit and the install test rely on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

use std::path::Path;

use hpccert_core::config::Config;

fn shipped() -> (String, std::path::PathBuf) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/portal.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    (text, path)
}

#[test]
fn the_shipped_portal_config_parses_with_its_defaults() {
    let (text, path) = shipped();
    let config = Config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    let portal = config.portal.expect("a [portal] section");
    // the state directory of mapping-portal.service
    assert_eq!(
        portal.database.as_deref(),
        Some("sqlite:///var/lib/hpccert-portal/portal.db?mode=rwc")
    );
    assert_eq!(portal.listen, "127.0.0.1:8443");
    assert_eq!(portal.url, None);
    assert_eq!(portal.export_dir, None);
    // packaging/test-install.sh replaces exactly these lines
    assert!(text.lines().any(|l| l == "export_tokens = []"));
    assert!(text.lines().any(|l| l == "listen = \"127.0.0.1:8443\""));
    assert!(portal.export_tokens.is_empty());
}

#[test]
fn the_shipped_portal_config_parses_with_every_key_uncommented() {
    // every commented-out `#key = value` and `#[table]` line is a real key with a valid value
    let (text, path) = shipped();
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(key, _)| {
                        key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
            {
                rest
            }
            _ => line,
        })
        .fold(String::new(), |text, line| text + line + "\n");
    assert!(uncommented.contains("\n[portal.oidc]\n"));
    let config = Config::parse(&uncommented, &path).unwrap_or_else(|e| panic!("{e}"));
    let portal = config.portal.expect("a [portal] section");
    assert_eq!(portal.pam_service, "mapping-portal");
    assert_eq!(portal.trusted_proxies.len(), 2);
    assert_eq!(portal.export_client_dns.len(), 1);
    let oidc = portal.oidc.expect("[portal.oidc]");
    assert_eq!(oidc.issuer, "https://cilogon.org");
    assert!(oidc.client_secret.is_none() && oidc.client_secret_file.is_some());
}

#[test]
fn every_key_of_the_shipped_portal_config_is_explained() {
    let (text, _) = shipped();
    // a setting, active or commented out, follows a comment line or the setting it goes with
    let mut explained = false;
    for (n, line) in text.lines().enumerate() {
        let setting = line.trim_start_matches('#');
        let is_setting = setting.contains(" = ") && !setting.starts_with(' ');
        assert!(
            !is_setting || explained,
            "line {}: `{line}` has no comment above it",
            n + 1
        );
        explained = line.starts_with("# ") || is_setting;
    }
}
