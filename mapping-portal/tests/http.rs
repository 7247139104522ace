//! The HTTP export against a running portal (SQLite), fetched with reqwest as a node would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

mod common;

use hpccert_core::host::nsscache::{self, CacheTable, GroupTable, PasswdTable};
use hpccert_core::identity::gridmap::{AccountName, GridMapfile};
use hpccert_core::identity::suspension::SuspensionList;
use hpccert_core::identity::tokenmap::TokenMapfile;
use mapping_portal::export::sha256_hex;
use mapping_portal::model::{
    Account, Actor, Approval, Change, IdentityKey, IdentityProfile, SuspensionTarget,
};
use reqwest::StatusCode;
use serde_json::Value;

use common::{DN, ISS, SUB, TOKEN, at, start};

async fn fetch(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    etag: Option<&str>,
) -> reqwest::Response {
    let mut req = client.get(format!("{base}/export/v1/bundle"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(e) = etag {
        req = req.header("If-None-Match", e);
    }
    req.send().await.unwrap()
}

/// The bundle's checks of EXPORT.md, as `gridmap-tool sync` makes them; returns the JSON.
fn check_bundle(body: &[u8], etag: &str) -> Value {
    assert_eq!(etag, format!("\"{}\"", sha256_hex(body)));
    let json: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["format"], "hpccert-export");
    assert_eq!(json["version"], 1);
    assert_eq!(json["portal"], "https://portal.example.org");
    assert!(json["serial"].is_i64());
    assert!(
        time::OffsetDateTime::parse(
            json["generated"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok()
    );
    let files = json["files"].as_object().unwrap();
    assert_eq!(files.len(), 5);
    for (name, text) in files {
        let text = text.as_str().unwrap();
        assert_eq!(json["sha256"][name], sha256_hex(text.as_bytes()), "{name}");
        assert!(text.is_empty() || text.ends_with('\n'), "{name}");
        match name.as_str() {
            "grid-mapfile" => drop(GridMapfile::parse(text).unwrap()),
            "token-mapfile" => drop(TokenMapfile::parse(text).unwrap()),
            "suspended" => drop(SuspensionList::parse(text).unwrap()),
            // the installer adds the trailer: render it as the node would, then parse
            "nss-passwd" => drop(
                PasswdTable::parse(&nsscache::render_passwd(&parse_lines::<PasswdTable>(text)))
                    .unwrap(),
            ),
            "nss-group" => drop(
                GroupTable::parse(&nsscache::render_group(&parse_lines::<GroupTable>(text)))
                    .unwrap(),
            ),
            other => panic!("unexpected file {other}"),
        }
    }
    json
}

fn parse_lines<T: CacheTable>(text: &str) -> Vec<T::Entry> {
    text.lines().map(|l| T::parse_line(l).unwrap()).collect()
}

#[tokio::test]
async fn serves_the_export_as_export_md_says() {
    let running = start().await;
    let client = reqwest::Client::new();
    let base = &running.base;

    // 401 without or with a wrong credential, with a one-line reason and no content
    for token in [
        None,
        Some("wrong"),
        Some(&TOKEN[1..]),
        Some("0123456789abcdef0123456789abcdef-exporT"),
    ] {
        let r = fetch(&client, base, token, None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(r.headers().get("etag").is_none());
        let text = r.text().await.unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains("serial"));
    }
    let r = client
        .get(format!("{base}/export/v1/bundle"))
        .header("Authorization", format!("Basic {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // 200: an empty portal
    let r = fetch(&client, base, Some(TOKEN), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    let etag0 = r.headers()["etag"].to_str().unwrap().to_string();
    let json = check_bundle(&r.bytes().await.unwrap(), &etag0);
    assert_eq!(json["serial"], 0);
    assert_eq!(json["files"]["grid-mapfile"], "");

    // 304 with the same ETag; 200 again with another
    let r = fetch(&client, base, Some(TOKEN), Some(&etag0)).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()["etag"], etag0.as_str());
    assert!(r.bytes().await.unwrap().is_empty());
    let r = fetch(&client, base, Some(TOKEN), Some("\"0000\"")).await;
    assert_eq!(r.status(), StatusCode::OK);
    // 401 comes before 304: a wrong token learns nothing from the ETag
    let r = fetch(&client, base, Some("wrong"), Some(&etag0)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // changes: an account, a DN link, a token link, a suspension
    let admin = Actor::new("admin");
    let profile = IdentityProfile::default();
    let portal = &running.portal;
    portal
        .change(
            &admin,
            &Change::CreateAccount(Account {
                name: AccountName::parse("jdoe").unwrap(),
                uid: 60001,
                gid: 60001,
                gecos: "Jane Doe (portal)".into(),
                home: "/home/jdoe".into(),
                shell: "/bin/bash".into(),
            }),
            at(1),
        )
        .await
        .unwrap();
    portal
        .change(
            &admin,
            &Change::Link {
                identity: IdentityKey::dn(DN).unwrap(),
                profile: profile.clone(),
                account: AccountName::parse("jdoe").unwrap(),
                approval: Approval::Immediate,
            },
            at(2),
        )
        .await
        .unwrap();
    portal
        .change(
            &admin,
            &Change::Link {
                identity: IdentityKey::token(ISS, SUB).unwrap(),
                profile,
                account: AccountName::parse("jdoe").unwrap(),
                approval: Approval::Immediate,
            },
            at(3),
        )
        .await
        .unwrap();
    portal
        .change(
            &admin,
            &Change::Suspend {
                target: SuspensionTarget::Account(AccountName::parse("mallory").unwrap()),
                reason: "ticket 4711".into(),
            },
            at(4),
        )
        .await
        .unwrap();

    // the old ETag no longer matches: 200 with the new bundle
    let r = fetch(&client, base, Some(TOKEN), Some(&etag0)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_ne!(etag, etag0);
    let json = check_bundle(&r.bytes().await.unwrap(), &etag);
    assert_eq!(json["serial"], 4);
    assert_eq!(json["generated"], "2026-11-18T11:06:44Z");
    assert_eq!(json["files"]["grid-mapfile"], format!("\"{DN}\" jdoe\n"));
    assert_eq!(
        json["files"]["token-mapfile"],
        format!("\"{ISS}\" \"{SUB}\" jdoe\n")
    );
    assert_eq!(json["files"]["suspended"], "account mallory\n");
    assert_eq!(
        json["files"]["nss-passwd"],
        "jdoe:x:60001:60001:Jane Doe (portal):/home/jdoe:/bin/bash\n"
    );
    assert_eq!(json["files"]["nss-group"], "jdoe:x:60001:\n");
    let r = fetch(&client, base, Some(TOKEN), Some(&etag)).await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    // the portal's own node: the same files installed in export_dir, NSS cache with trailer
    let dir = running.export_dir.path();
    assert_eq!(
        std::fs::read_to_string(dir.join("grid-mapfile")).unwrap(),
        format!("\"{DN}\" jdoe\n")
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("suspended")).unwrap(),
        "account mallory\n"
    );
    let passwd = PasswdTable::parse(&std::fs::read_to_string(dir.join("passwd")).unwrap()).unwrap();
    assert_eq!(passwd.by_name("jdoe").unwrap().uid, 60001);

    let r = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    running.stop().await;
}
