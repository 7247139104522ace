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
use hpccert_core::gridmap::AccountName;
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
    let out = Command::new(tool)
        .args(["sync", "--from", base, "--token-file"])
        .arg(token)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(TOKEN), "the token was printed: {text}");
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
