//! Leasing from separate processes sharing one gridmapdir (as login nodes sharing it over
//! NFS do): this test binary runs itself 50 times as a helper that makes one lease.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hpccert_core::identity::dn::DistinguishedName;
use hpccert_core::identity::gridmap::AccountName;
use hpccert_core::identity::gridmapdir::{Gridmapdir, LeaseKey};
use hpccert_core::identity::pool::{PoolConfig, Pools};

const HELPER_DIR: &str = "HPCCERT_POOL_HELPER_DIR";
const HELPER_DN: &str = "HPCCERT_POOL_HELPER_DN";
const MARK: &str = "LEASE-RESULT ";

fn gridmapdir(dir: &Path) -> Gridmapdir {
    let pool = PoolConfig {
        name: "atlas".into(),
        prefix: None,
        count: 40,
        first_uid: 20000,
        gid: 20000,
        group: None,
        home: "/home/{account}".into(),
        shell: "/bin/bash".into(),
    };
    Gridmapdir::new(
        &dir.join("gridmapdir"),
        Pools::from_config(&[pool]).unwrap(),
    )
    .with_nss_cache(dir)
}

fn lease(dir: &Path, dn: &str) -> String {
    let key = LeaseKey::dn(&DistinguishedName::parse(dn).unwrap()).unwrap();
    match gridmapdir(dir).lease("atlas", &key, &|_: &AccountName| false) {
        Ok(l) => format!("ok {}", l.lease.account),
        Err(e) => format!("err {e}"),
    }
}

/// Not a test on its own: the body of each helper process (a no-op otherwise).
#[test]
fn helper_lease_once() {
    let (Ok(dir), Ok(dn)) = (std::env::var(HELPER_DIR), std::env::var(HELPER_DN)) else {
        return;
    };
    let dir = Path::new(&dir);
    // start together: wait for the parent's go file
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join("go").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("{MARK}{}", lease(dir, &dn));
}

#[test]
fn fifty_processes_share_forty_accounts() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("gridmapdir")).unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..50)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "helper_lease_once",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(HELPER_DIR, tmp.path())
                .env(HELPER_DN, format!("/O=Grid/CN=process {i}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let started = Instant::now();
    std::fs::write(tmp.path().join("go"), "").unwrap();
    let results: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success());
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines()
                .find_map(|l| l.split_once(MARK).map(|(_, r)| r))
                .unwrap_or_else(|| panic!("no result from a helper: {text}"))
                .to_string()
        })
        .collect();
    eprintln!(
        "50 processes leased in {:?} (including process start-up)",
        started.elapsed()
    );
    let mut accounts: Vec<&str> = results
        .iter()
        .filter_map(|r| r.strip_prefix("ok "))
        .collect();
    let refused: Vec<&str> = results
        .iter()
        .filter_map(|r| r.strip_prefix("err "))
        .collect();
    assert_eq!(accounts.len(), 40, "{results:?}");
    accounts.sort_unstable();
    accounts.dedup();
    assert_eq!(
        accounts.len(),
        40,
        "two identities on one account: {results:?}"
    );
    assert_eq!(refused.len(), 10, "{results:?}");
    for r in refused {
        assert_eq!(r, "pool atlas is full: 40 of 40 accounts leased");
    }
    // every account file is linked exactly twice, and each winner keeps its account
    let g = gridmapdir(tmp.path());
    let listed = g.list().unwrap();
    assert!(listed.iter().all(|s| s.lease.is_some()));
    for s in listed {
        let dn = s.lease.unwrap().key.describe();
        assert_eq!(lease(tmp.path(), &dn), format!("ok {}", s.account));
    }
    // and the NSS cache was written
    assert!(tmp.path().join("passwd").exists() && tmp.path().join("group").exists());
}
