//! `gridmap-tool demo`: the decision engine on a generated dev PKI, end to end.
//!
//! Writes a trust directory in IGTF layout (CA, CRL, namespaces), a grid-mapfile, a config
//! file and several credentials, then asks the engine about each credential exactly as
//! `gridmap-tool explain --config DIR/hpccert.toml --cert FILE` does; then the same for
//! access tokens of a dev issuer (`explain --token FILE`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use hpccert_core::config::Config;
use hpccert_core::dev::pki::{self, CertSpec, Credential, ProxyPolicy, ProxySpec};
use hpccert_core::dev::token::{self as devtoken, DevKey};
use hpccert_core::token::JwsAlgorithm;
use serde_json::json;

use crate::explain::explain_certificate;

const DOMAIN: &str = "/DC=org/DC=hpccert-demo";
const ISSUER: &str = "https://issuer.hpccert-demo.example";
const AUDIENCE: &str = "https://login.hpccert-demo.example";
const SUBJECT: &str = "9f2c6c1e-demo-user";

fn login_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "nobody".to_string())
}

fn write_chain(path: &Path, creds: &[&Credential]) -> anyhow::Result<()> {
    let mut pem = Vec::new();
    for c in creds {
        pem.extend(c.cert_pem()?);
    }
    std::fs::write(path, pem).with_context(|| format!("cannot write {}", path.display()))
}

fn unreachable_dir() -> anyhow::Result<PathBuf> {
    Err(anyhow!("no demo directory"))
}

pub fn run(dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let temp = match dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("hpccert-demo-").tempdir()?),
    };
    let dir = match (dir, &temp) {
        (Some(d), _) => {
            std::fs::create_dir_all(&d)?;
            d
        }
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => unreachable_dir()?,
    };
    let now = hpccert_core::clock::now();
    let e = |e: String| anyhow!(e);
    let user = login_name();

    let ca = pki::self_signed_ca(
        &CertSpec::ca(&format!("{DOMAIN}/CN=hpccert Demo CA"), now, 365).map_err(e)?,
    )
    .map_err(e)?;
    let issue = |cn: &str, ou: &str| -> anyhow::Result<Credential> {
        let spec = CertSpec::user(&format!("{ou}/CN={cn}"), now, 30).map_err(e)?;
        pki::issue(&ca, &spec).map_err(e)
    };
    let alice = issue(&format!("{user} Demo User"), &format!("{DOMAIN}/O=Demo"))?;
    let revoked = issue("Revoked User", &format!("{DOMAIN}/O=Demo"))?;
    let unmapped = issue("Unmapped User", &format!("{DOMAIN}/O=Demo"))?;
    let outsider = issue("Outsider", "/DC=org/DC=elsewhere")?;
    let proxy = pki::issue_proxy(&alice, &ProxySpec::new("1001", now, 12)).map_err(e)?;
    let mut limited_spec = ProxySpec::new("1002", now, 12);
    limited_spec.policy = ProxyPolicy::Limited;
    let limited = pki::issue_proxy(&alice, &limited_spec).map_err(e)?;
    let crl = pki::crl(
        &ca,
        &[(&revoked.cert, now)],
        now - Duration::from_secs(60),
        now + Duration::from_secs(7 * 86400),
        1,
    )
    .map_err(e)?;

    let trust = dir.join("certificates");
    pki::install_ca(
        &trust,
        &ca.cert,
        Some(&crl),
        Some(&format!(
            "TO Issuer SELF PERMIT Subject \"{DOMAIN}/O=Demo/.*\"\n"
        )),
    )
    .map_err(e)?;
    let gridmap = dir.join("grid-mapfile");
    std::fs::write(
        &gridmap,
        format!(
            "# demo grid-mapfile\n{}\n{}\n{}\n",
            hpccert_core::identity::gridmap::format_line(
                &alice.subject(),
                &[hpccert_core::identity::gridmap::MappedAccount::parse(&user).map_err(e)?]
            ),
            hpccert_core::identity::gridmap::format_line(
                &revoked.subject(),
                &[hpccert_core::identity::gridmap::MappedAccount::parse(&user).map_err(e)?]
            ),
            hpccert_core::identity::gridmap::format_line(
                &outsider.subject(),
                &[hpccert_core::identity::gridmap::MappedAccount::parse(&user).map_err(e)?]
            ),
        ),
    )?;
    // a dev token issuer: its JWKS as a local file, a token map for the demo user
    let issuer_key = DevKey::generate("demo-es256-1", JwsAlgorithm::ES256)?;
    let jwks_file = dir.join("issuer-jwks.json");
    std::fs::write(&jwks_file, devtoken::jwks(&[&issuer_key])?.to_string())?;
    let token_map = dir.join("token-mapfile");
    std::fs::write(
        &token_map,
        format!("# demo token map\n\"{ISSUER}\" \"{SUBJECT}\" {user}\n"),
    )?;
    let config_path = dir.join("hpccert.toml");
    std::fs::write(
        &config_path,
        format!(
            "version = 1\n[trust]\nca_dir = \"{}\"\ncrl = \"require\"\nnamespaces = \"require\"\n[mapping]\ngrid_mapfile = \"{}\"\ntoken_mapfile = \"{}\"\n\
             [[issuer]]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\nprofile = \"wlcg\"\njwks_file = \"{}\"\n",
            trust.display(),
            gridmap.display(),
            token_map.display(),
            jwks_file.display()
        ),
    )?;
    let config = Config::load(&config_path)?;

    let cases: Vec<(&str, Vec<&Credential>, Option<&str>)> = vec![
        ("user certificate", vec![&alice], None),
        ("RFC 3820 proxy", vec![&proxy, &alice], None),
        (
            "proxy, asking for an account the DN is not mapped to",
            vec![&proxy, &alice],
            Some("other-account"),
        ),
        ("limited proxy", vec![&limited, &alice], None),
        ("revoked certificate", vec![&revoked], None),
        ("outside the CA namespace", vec![&outsider], None),
        ("valid but not in the grid-mapfile", vec![&unmapped], None),
    ];
    println!(
        "hpccert demo: dev CA, trust directory, grid-mapfile and config in {}\n",
        dir.display()
    );
    let mut expected_ok = true;
    for (n, (title, chain, login)) in cases.iter().enumerate() {
        let file = dir.join(format!("chain{}.pem", n + 1));
        write_chain(&file, chain)?;
        let outcome = explain_certificate(&config, &file, (*login, None), now)?;
        println!("== {}: {title}", n + 1);
        println!(
            "$ gridmap-tool explain --config {} --cert {}{}",
            config_path.display(),
            file.display(),
            login.map(|l| format!(" --user {l}")).unwrap_or_default()
        );
        outcome.print();
        println!();
        // the first two are the only logins that may succeed
        expected_ok &= outcome.accepted() == (n < 2);
    }
    let t = hpccert_core::token::unix_seconds(now);
    let claims = |sub: &str, aud: &str, exp: i64, scope: &str| {
        json!({"iss": ISSUER, "sub": sub, "aud": aud, "iat": t - 60, "exp": exp,
               "wlcg.ver": "1.0", "scope": scope, "wlcg.groups": ["/demo"]})
    };
    let good = claims(
        SUBJECT,
        AUDIENCE,
        t + 1200,
        "compute.create storage.read:/home",
    );
    let forged = {
        let signed = issuer_key.mint(&claims(
            "someone-else",
            AUDIENCE,
            t + 1200,
            "compute.create",
        ))?;
        let header = devtoken::b64(br#"{"alg":"none"}"#);
        let body = signed.split('.').nth(1).unwrap_or_default().to_string();
        format!("{header}.{body}.")
    };
    let token_cases: Vec<(&str, String, bool)> = vec![
        (
            "WLCG access token, mapped by the token map",
            issuer_key.mint(&good)?,
            true,
        ),
        (
            "expired token",
            issuer_key.mint(&claims(SUBJECT, AUDIENCE, t - 600, "compute.create"))?,
            false,
        ),
        (
            "token for another service (audience)",
            issuer_key.mint(&claims(
                SUBJECT,
                "https://elsewhere.example",
                t + 1200,
                "compute.create",
            ))?,
            false,
        ),
        (
            "storage-only token (no compute.create)",
            issuer_key.mint(&claims(SUBJECT, AUDIENCE, t + 1200, "storage.read:/home"))?,
            false,
        ),
        ("forged token (alg none)", forged, false),
    ];
    for (i, (title, token, ok)) in token_cases.iter().enumerate() {
        let n = cases.len() + i + 1;
        let file = dir.join(format!("token{}.jwt", i + 1));
        std::fs::write(&file, token)?;
        let outcome = crate::tokens::explain_token(&config, &file, (None, None), now)?;
        println!("== {n}: {title}");
        println!(
            "$ gridmap-tool explain --config {} --token {}",
            config_path.display(),
            file.display()
        );
        outcome.print();
        println!();
        expected_ok &= outcome.accepted() == *ok;
    }
    if !expected_ok {
        eprintln!("demo: a decision differs from what the demo expects");
        return Ok(ExitCode::from(1));
    }
    if temp.is_some() {
        println!(
            "(the files in {} are removed on exit; use --dir DIR to keep them)",
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
