//! `gridmap-tool sync` (the real binary) from a running portal into a node's directory: the
//! first sync installs the portal's links and suspensions, an unchanged portal answers 304 and
//! nothing is rewritten, a change comes with a new ETag and is installed, and
//! `gridmap-tool explain` on the node maps the linked DN and refuses the suspended account.
//! Corrupted downloads are refused by gridmap-tool's own tests (`gridmap-tool/tests/sync_cli.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{DN, TOKEN, at, start};
use hpccert_core::identity::gridmap::AccountName;
use mapping_portal::model::{
    Account, Actor, Approval, Change, IdentityKey, IdentityProfile, SuspensionTarget,
};

/// The workspace's gridmap-tool, built by `cargo test --workspace` (beside this test's
/// directory); None when it was not built (a run of this crate alone).
fn gridmap_tool() -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let tool = exe.parent()?.parent()?.join("gridmap-tool");
    if tool.is_file() {
        return Some(tool);
    }
    let msg = format!("{} not built (run the workspace's tests)", tool.display());
    assert!(
        std::env::var("HPCCERT_E2E_REQUIRED").as_deref() != Ok("1"),
        "{msg}, and HPCCERT_E2E_REQUIRED=1"
    );
    eprintln!("SKIPPED: {msg}");
    None
}

fn sync(tool: &Path, base: &str, token: &Path, dir: &Path) -> (i32, String) {
    let (code, text) = sync_with(
        tool,
        base,
        dir,
        &["--token-file".into(), token.display().to_string()],
    );
    assert!(!text.contains(TOKEN), "the token was printed: {text}");
    (code, text)
}

/// `gridmap-tool sync --from BASE --dir DIR EXTRA...`: exit code and everything it printed.
fn sync_with(tool: &Path, base: &str, dir: &Path, extra: &[String]) -> (i32, String) {
    let out = Command::new(tool)
        .args(["sync", "--from", base, "--dir"])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn explain(tool: &Path, dir: &Path, args: &[&str]) -> (i32, String) {
    let config = dir.join("hpccert.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[mapping]\ngrid_mapfile = \"{0}/grid-mapfile\"\nsuspended_file = \"{0}/suspended\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let out = Command::new(tool)
        .arg("--config")
        .arg(&config)
        .arg("explain")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gridmap_tool_sync_installs_from_a_running_portal() {
    let Some(tool) = gridmap_tool() else { return };
    let running = start().await;
    let node = tempfile::tempdir().unwrap();
    let token = node.path().join("export.token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dir = node.path().join("node");
    std::fs::create_dir(&dir).unwrap();
    let base = running.base.clone();
    let run = |t: &Path, d: &Path| {
        let (t, d, b, k) = (
            t.to_path_buf(),
            d.to_path_buf(),
            base.clone(),
            token.clone(),
        );
        tokio::task::spawn_blocking(move || sync(&t, &b, &k, &d))
    };

    let admin = Actor::new("admin");
    let jdoe = AccountName::parse("jdoe").unwrap();
    for (i, change) in [
        Change::CreateAccount(Account {
            name: jdoe.clone(),
            uid: 60001,
            gid: 60001,
            gecos: "Jane Doe (portal)".into(),
            home: "/home/jdoe".into(),
            shell: "/bin/bash".into(),
        }),
        Change::Link {
            identity: IdentityKey::dn(DN).unwrap(),
            profile: IdentityProfile::default(),
            account: jdoe.clone(),
            approval: Approval::Immediate,
        },
    ]
    .iter()
    .enumerate()
    {
        running
            .portal
            .change(&admin, change, at(1 + i as u64))
            .await
            .unwrap();
    }

    // first sync: every file installed; the node maps the DN
    let (code, out) = run(&tool, &dir).await.unwrap();
    assert_eq!(code, 0, "{out}");
    let gridmap = std::fs::read_to_string(dir.join("grid-mapfile")).unwrap();
    assert!(gridmap.contains(&format!("\"{DN}\" jdoe")), "{gridmap}");
    let (code, out) = explain(&tool, &dir, &["--dn", DN]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("jdoe"), "{out}");
    let mtime = std::fs::metadata(dir.join("grid-mapfile"))
        .unwrap()
        .modified()
        .unwrap();

    // unchanged portal: 304, nothing rewritten
    let (code, out) = run(&tool, &dir).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("unchanged"), "{out}");
    assert_eq!(
        std::fs::metadata(dir.join("grid-mapfile"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );

    // a suspension in the portal: a new ETag, installed, and the node refuses the account
    running
        .portal
        .change(
            &admin,
            &Change::Suspend {
                target: SuspensionTarget::Account(jdoe.clone()),
                reason: "ticket 4711".into(),
            },
            at(10),
        )
        .await
        .unwrap();
    let (code, out) = run(&tool, &dir).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("installed serial 3"), "{out}");
    assert!(out.contains("suspended: +1 -0 lines"), "{out}");
    let (code, out) = explain(&tool, &dir, &["--dn", DN]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("suspended"), "{out}");
    running.stop().await;
}

/// Over HTTPS with mutual TLS: gridmap-tool trusts the portal's certificate from `--ca-file`
/// and presents the node's certificate (`--client-cert`, `--client-key`) instead of a token;
/// without a credential, or with a readable key, it is refused and installs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gridmap_tool_sync_with_a_client_certificate() {
    use hpccert_core::dev::pki::{self, CertSpec};
    use std::sync::Arc;
    let Some(tool) = gridmap_tool() else { return };
    let now = hpccert_core::clock::now();
    let ca = pki::self_signed_ca(&CertSpec::ca("/DC=org/DC=example/CN=Nodes CA", now, 1).unwrap())
        .unwrap();
    let node_cert = pki::issue(
        &ca,
        &CertSpec::user("/DC=org/DC=example/CN=node1.example.org", now, 1).unwrap(),
    )
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    let p = |name: &str| d.path().join(name);
    let (server_cert, server_key) = common::server_certificate();
    std::fs::write(p("server.crt"), &server_cert).unwrap();
    std::fs::write(p("server.key"), &server_key).unwrap();
    std::fs::write(p("nodes-ca.pem"), ca.cert_pem().unwrap()).unwrap();
    std::fs::write(p("node.crt"), node_cert.cert_pem().unwrap()).unwrap();
    std::fs::write(p("node.key"), node_cert.key_pem().unwrap()).unwrap();
    std::fs::set_permissions(p("node.key"), std::fs::Permissions::from_mode(0o600)).unwrap();

    let store = mapping_portal::store::Store::open(&common::sqlite_url(d.path()), at(0))
        .await
        .unwrap();
    let portal = mapping_portal::Portal::start(
        store,
        mapping_portal::PortalSettings {
            ssh_ca_keys: Default::default(),
            url: "https://portal.example.org".into(),
            export_tokens: vec![],
            export_client_dns: vec![node_cert.subject()],
            export_dir: None,
        },
    )
    .await
    .unwrap();
    let jdoe = AccountName::parse("jdoe").unwrap();
    portal
        .change(
            &Actor::new("admin"),
            &Change::Link {
                identity: IdentityKey::dn(DN).unwrap(),
                profile: IdentityProfile::default(),
                account: jdoe,
                approval: Approval::Immediate,
            },
            at(1),
        )
        .await
        .unwrap();
    let tls = mapping_portal::http::tls_config(
        &p("server.crt"),
        &p("server.key"),
        Some(&p("nodes-ca.pem")),
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mapping_portal::http::serve_tls(
        listener,
        tls,
        mapping_portal::http::router(Arc::clone(&portal)),
        async {
            let _ = stopped.await;
        },
    ));

    let dir = p("node");
    std::fs::create_dir(&dir).unwrap();
    let run = move |extra: Vec<String>| {
        let (tool, base, dir) = (tool.clone(), base.clone(), dir.clone());
        tokio::task::spawn_blocking(move || sync_with(&tool, &base, &dir, &extra))
    };
    let s = |path: std::path::PathBuf| path.display().to_string();
    let ca_file = vec!["--ca-file".to_string(), s(p("server.crt"))];
    let mut with_cert = ca_file.clone();
    with_cert.extend([
        "--client-cert".into(),
        s(p("node.crt")),
        "--client-key".into(),
        s(p("node.key")),
    ]);

    // no credential: 401, nothing installed
    let (code, out) = run(ca_file.clone()).await.unwrap();
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("401"), "{out}");
    assert!(!d.path().join("node/grid-mapfile").exists());
    // the node's certificate: installed
    let (code, out) = run(with_cert.clone()).await.unwrap();
    assert_eq!(code, 0, "{out}");
    let gridmap = std::fs::read_to_string(d.path().join("node/grid-mapfile")).unwrap();
    assert!(gridmap.contains(&format!("\"{DN}\" jdoe")), "{gridmap}");
    // a key others may read: refused before connecting
    std::fs::set_permissions(p("node.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = run(with_cert).await.unwrap();
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("too open"), "{out}");
    // without --ca-file the portal's certificate is not trusted
    let (code, out) = run(vec![]).await.unwrap();
    assert_eq!(code, 2, "{out}");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
