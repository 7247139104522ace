//! gridmap-tool's token commands as an administrator runs them: explain --token (configured
//! and ad-hoc issuers), keys refresh against an HTTP issuer on loopback, keys show,
//! tokenmap check and import-condor.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hpccert_core::dev::token::{DevKey, jwks};
use hpccert_core::token::JwsAlgorithm;
use serde_json::{Value, json};

const ISS: &str = "https://issuer.example.org";
const AUD: &str = "https://login.example.org";

fn tool_with(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gridmap-tool"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn now() -> i64 {
    hpccert_core::token::unix_seconds(hpccert_core::clock::now())
}

fn claims(iss: &str, aud: &str, scope: &str) -> Value {
    json!({"iss": iss, "sub": "user-42", "aud": aud, "iat": now() - 10, "exp": now() + 600, "scope": scope})
}

struct Site {
    dir: tempfile::TempDir,
    key: DevKey,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = DevKey::generate("k1", JwsAlgorithm::RS256).unwrap();
        std::fs::write(
            dir.path().join("jwks.json"),
            jwks(&[&key]).unwrap().to_string(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("token-mapfile"),
            format!("\"{ISS}\" \"user-42\" alice,bob\n"),
        )
        .unwrap();
        Self { dir, key }
    }
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.dir.path().join(name), text).unwrap();
        self.path(name)
    }
    /// A config with one issuer whose keys come from the JWKS file.
    fn config(&self, extra: &str) -> String {
        self.write(
            "hpccert.toml",
            &format!(
                "version = 1\n[tokens]\nkey_cache_dir = \"{}\"\n[mapping]\ntoken_mapfile = \"{}\"\n\
                 [[issuer]]\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\njwks_file = \"{}\"\n{extra}",
                self.path("cache"),
                self.path("token-mapfile"),
                self.path("jwks.json")
            ),
        )
    }
}

#[test]
fn explain_token_with_a_configured_issuer() {
    let site = Site::new();
    let config = site.config("");
    let token = site.write(
        "t.jwt",
        &site.key.mint(&claims(ISS, AUD, "compute.create")).unwrap(),
    );
    let o = tool_with(
        Path::new(&config),
        &["explain", "--token", &token, "--json"],
        None,
    );
    assert_eq!(code(&o), 0, "{}", out(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["decision"], "accept");
    assert_eq!(v["account"], "alice");
    assert_eq!(v["capabilities"], json!(["compute.create"]));
    // what a session of it may do: commands, no files (no storage.* scope)
    assert!(
        v["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "a session may: commands"),
        "{v}"
    );
    assert!(v["credential"].as_str().unwrap().starts_with("SHA256:"));
    // the token itself never appears in the output
    assert!(!out(&o).contains(token.as_str()));

    // from stdin, asking for the second account
    let text = std::fs::read_to_string(&token).unwrap();
    let o = tool_with(
        Path::new(&config),
        &["explain", "--token", "-", "--user", "bob"],
        Some(&text),
    );
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(
        out(&o).starts_with("ACCEPT user-42 (issuer https://issuer.example.org) -> bob"),
        "{}",
        out(&o)
    );
    let o = tool_with(
        Path::new(&config),
        &["explain", "--token", "-", "--user", "root"],
        Some(&text),
    );
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(
        out(&o).contains("account root is not mapped"),
        "{}",
        out(&o)
    );

    // required scopes from the config
    let config = site.config("required_scopes = [\"compute.cancel\"]\n");
    let o = tool_with(Path::new(&config), &["explain", "--token", &token], None);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(
        out(&o).contains("lacks required scope compute.cancel"),
        "{}",
        out(&o)
    );

    // a token for another service
    let other = site.write(
        "o.jwt",
        &site
            .key
            .mint(&claims(ISS, "https://elsewhere", ""))
            .unwrap(),
    );
    let o = tool_with(
        Path::new(&config),
        &["explain", "--token", &other, "--json"],
        None,
    );
    assert_eq!(code(&o), 1);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["decision"].as_str(), v["refused_at"].as_str()),
        (Some("refuse"), Some("credential"))
    );
}

#[test]
fn explain_token_ad_hoc_issuer() {
    let site = Site::new();
    // a config without issuers: the flags describe one
    let config = site.write("empty.toml", "version = 1\n");
    let token = site.write(
        "t.jwt",
        &site
            .key
            .mint(&claims("https://adhoc.example", AUD, "compute.create"))
            .unwrap(),
    );
    let o = tool_with(Path::new(&config), &["explain", "--token", &token], None);
    assert_eq!(code(&o), 2, "{}", out(&o));
    assert!(
        out(&o).contains("no token issuer is configured"),
        "{}",
        out(&o)
    );
    let map = site.write(
        "adhoc-map",
        "\"https://adhoc.example\" /user-[0-9]+/ carol\n",
    );
    let jwks = site.path("jwks.json");
    let base = [
        "explain",
        "--token",
        &token,
        "--issuer",
        "https://adhoc.example",
        "--jwks",
        &jwks,
    ];
    let o = tool_with(
        Path::new(&config),
        &[&base[..], &["--audience", AUD, "--token-mapfile", &map]].concat(),
        None,
    );
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(out(&o).contains("-> carol"), "{}", out(&o));
    let o = tool_with(
        Path::new(&config),
        &[
            &base[..],
            &[
                "--audience",
                AUD,
                "--token-mapfile",
                &map,
                "--require-scope",
                "storage.read:/data",
            ],
        ]
        .concat(),
        None,
    );
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(
        out(&o).contains("lacks required scope storage.read:/data"),
        "{}",
        out(&o)
    );
    // --issuer without --audience is a usage error
    let o = tool_with(
        Path::new(&config),
        &[&base[..], &["--token-mapfile", &map]].concat(),
        None,
    );
    assert_eq!(code(&o), 2, "{}", out(&o));
}

/// A minimal HTTP issuer on loopback: discovery and JWKS. `up` switches it off.
fn issuer_server(jwks_doc: Value) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let up = Arc::new(AtomicBool::new(true));
    let (b, u) = (base.clone(), up.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request_line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .to_string();
            let (status, body) = if !u.load(Ordering::SeqCst) {
                ("503 Service Unavailable", "down".to_string())
            } else if path == "/.well-known/openid-configuration" {
                (
                    "200 OK",
                    json!({"issuer": b, "jwks_uri": format!("{b}/jwks")}).to_string(),
                )
            } else if path == "/jwks" {
                ("200 OK", jwks_doc.to_string())
            } else {
                ("404 Not Found", "no".to_string())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (base, up)
}

#[test]
fn keys_refresh_and_show() {
    let site = Site::new();
    let (base, up) = issuer_server(jwks(&[&site.key]).unwrap());
    let config = site.write(
        "hpccert.toml",
        &format!(
            "version = 1\n[tokens]\nkey_cache_dir = \"{}\"\n[mapping]\ntoken_mapfile = \"{}\"\n\
             [[issuer]]\nissuer = \"{base}\"\naudiences = [\"{AUD}\"]\n",
            site.path("cache"),
            site.write("map", &format!("\"{base}\" \"user-42\" alice\n")),
        ),
    );
    let config = Path::new(&config);
    let token = site.write("t.jwt", &site.key.mint(&claims(&base, AUD, "")).unwrap());
    // nothing cached yet: explain refuses with the reason, keys show says so
    let o = tool_with(config, &["explain", "--token", &token], None);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(out(&o).contains("no cached keys"), "{}", out(&o));
    let o = tool_with(config, &["keys", "show"], None);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(out(&o).contains("[NO KEYS]"), "{}", out(&o));

    let o = tool_with(config, &["keys", "refresh"], None);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(
        out(&o).contains(&format!("OK {base}: 1 key(s) [k1] from {base}/jwks")),
        "{}",
        out(&o)
    );
    let o = tool_with(config, &["explain", "--token", &token], None);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let o = tool_with(config, &["keys", "show", "--json"], None);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["keys"][0]["kid"], "k1");
    assert_eq!(v[0]["keys"][0]["key"], "RSA 2048");
    assert_eq!(v[0]["stale"], false);

    // the issuer goes down: refresh fails (exit 1) and the last good keys still serve
    up.store(false, Ordering::SeqCst);
    let o = tool_with(config, &["keys", "refresh"], None);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(
        out(&o).contains("FAILED") && out(&o).contains("keeping the cached keys"),
        "{}",
        out(&o)
    );
    let o = tool_with(config, &["explain", "--token", &token], None);
    assert_eq!(code(&o), 0, "{}", out(&o));
    // eight days later those keys are stale: explain refuses, keys show flags them
    let later = time::OffsetDateTime::from_unix_timestamp(now() + 8 * 86400).unwrap();
    let at = later
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let o = tool_with(config, &["--at", &at, "keys", "show"], None);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(out(&o).contains("[STALE]"), "{}", out(&o));
    let o = tool_with(config, &["--at", &at, "explain", "--token", &token], None);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(out(&o).contains("are stale"), "{}", out(&o));
}

#[test]
fn tokenmap_check_and_import() {
    let site = Site::new();
    let config = site.config("");
    let good = site.write("good", &format!("\"{ISS}\" \"user-1\" root\n"));
    let o = tool_with(Path::new(&config), &["tokenmap", "check", &good], None);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let findings = site.write(
        "findings",
        &format!("\"{ISS}\" \"u\" root\n\"{ISS}\" \"u\" root\n\"https://unknown\" /.*/ no-such-user-xyz\n"),
    );
    let o = tool_with(Path::new(&config), &["tokenmap", "check", &findings], None);
    assert_eq!(code(&o), 1, "{}", out(&o));
    let text = out(&o);
    assert!(
        text.contains(":2: warning: duplicate rule (line 1 wins"),
        "{text}"
    );
    assert!(
        text.contains(":3: warning: issuer https://unknown is not configured"),
        "{text}"
    );
    assert!(
        text.contains(":3: warning: account no-such-user-xyz does not exist"),
        "{text}"
    );
    let bad = site.write("bad", "\"i\" \"s\" ok\n\"i\" nope x\n");
    let o = tool_with(Path::new(&config), &["tokenmap", "check", &bad], None);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(out(&o).contains(":2: error: subject"), "{}", out(&o));
    let o = tool_with(
        Path::new(&config),
        &["tokenmap", "check", &site.path("missing")],
        None,
    );
    assert_eq!(code(&o), 2, "{}", out(&o));

    let condor = site.write(
        "condor",
        "SCITOKENS /^https:\\/\\/cms-auth\\.web\\.cern\\.ch\\/,bad55f4e$/ cmsprod\nGSI \"/CN=x\" x\n",
    );
    let o = tool_with(
        Path::new(&config),
        &["tokenmap", "import-condor", &condor],
        None,
    );
    assert_eq!(code(&o), 1, "{}", out(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("\"https://cms-auth.web.cern.ch/\" /bad55f4e/ cmsprod"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(":2: not converted: method GSI"),
        "{}",
        out(&o)
    );
}
