//! `gridmap-tool pool ...`, `suspend`, `unsuspend` and `explain` with pools and suspensions,
//! as an administrator runs them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use hpccert_core::config::Config;
use hpccert_core::identity::dn::DistinguishedName;
use hpccert_core::identity::gridmap::AccountName;
use hpccert_core::identity::gridmapdir::{Gridmapdir, LeaseKey};

struct Site {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Site {
    /// A config with a pool of 3, a grid-mapfile mapping two DNs to it and one to bob.
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        std::fs::create_dir(root.join("gridmapdir")).unwrap();
        std::fs::create_dir(root.join("nss")).unwrap();
        std::fs::write(
            root.join("grid-mapfile"),
            "\"/O=Grid/CN=Jane Doe\" .atlas\n\"/O=Grid/CN=John\" .atlas\n\"/O=Grid/CN=Bob\" bob\n",
        )
        .unwrap();
        std::fs::write(
            root.join("hpccert.toml"),
            format!(
                "version = 1\n[mapping]\ngrid_mapfile = \"{r}/grid-mapfile\"\ngridmapdir = \"{r}/gridmapdir\"\n\
                 suspended_file = \"{r}/suspended\"\nnss_cache_dir = \"{r}/nss\"\n\
                 [[pool]]\nname = \"atlas\"\ncount = 3\nfirst_uid = 20000\ngid = 20000\n",
                r = root.display()
            ),
        )
        .unwrap();
        Self { _tmp: tmp, root }
    }

    fn tool(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_gridmap-tool"))
            .arg("--config")
            .arg(self.root.join("hpccert.toml"))
            .args(args)
            .output()
            .unwrap()
    }

    fn gridmapdir(&self) -> Gridmapdir {
        Gridmapdir::from_config(&Config::load(&self.root.join("hpccert.toml")).unwrap())
            .unwrap()
            .unwrap()
    }

    /// What a login does: lease for `dn`.
    fn login(&self, dn: &str) -> String {
        let key = LeaseKey::dn(&DistinguishedName::parse(dn).unwrap()).unwrap();
        self.gridmapdir()
            .lease("atlas", &key, &|_: &AccountName| false)
            .unwrap()
            .lease
            .account
            .to_string()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn lease_files(root: &Path) -> usize {
    std::fs::read_dir(root.join("gridmapdir"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('%')
        })
        .count()
}

#[test]
fn explain_previews_and_never_leases() {
    let site = Site::new();
    let o = site.tool(&["explain", "--dn", "/O=Grid/CN=Jane Doe"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 0, "{out}{}", stderr(&o));
    assert!(
        out.contains("a login would lease from pool atlas (3 of 3 free; next free: atlas00"),
        "{out}"
    );
    assert!(out.contains("explain does not lease"), "{out}");
    assert_eq!(lease_files(&site.root), 0);

    let account = site.login("/O=Grid/CN=Jane Doe");
    let o = site.tool(&["explain", "--dn", "/O=Grid/CN=Jane Doe", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["account"], account.as_str());
    let reasons = v["reasons"].to_string();
    assert!(
        reasons.contains(&format!("holds a lease of {account} from pool atlas")),
        "{reasons}"
    );
    // asking for someone else's pool account is refused
    let other = if account == "atlas001" {
        "atlas002"
    } else {
        "atlas001"
    };
    let o = site.tool(&["explain", "--dn", "/O=Grid/CN=Jane Doe", "--user", other]);
    assert_eq!(code(&o), 1);
    assert!(
        stdout(&o).contains(&format!("account {other} is not mapped")),
        "{}",
        stdout(&o)
    );
    assert_eq!(lease_files(&site.root), 1);
}

#[test]
fn pool_list_release_and_expire() {
    let site = Site::new();
    let jane = site.login("/O=Grid/CN=Jane Doe");
    let john = site.login("/O=Grid/CN=John");
    assert_ne!(jane, john);

    let o = site.tool(&["pool", "list"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(out.contains(&format!("atlas\t{jane}\t")), "{out}");
    assert!(out.contains("/o=grid/cn=jane doe"), "{out}");
    assert!(out.contains("# pool atlas: 2 of 3 leased"), "{out}");
    assert!(out.contains("\tfree\n"), "{out}");

    let o = site.tool(&["pool", "list", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.len(), 3);
    let row = rows.iter().find(|r| r["account"] == jane.as_str()).unwrap();
    assert_eq!(row["leased"], true);
    assert!((20000..20003).contains(&row["uid"].as_u64().unwrap()));
    assert_eq!(row["identity"], "/o=grid/cn=jane doe");
    assert!(
        row["lease_file"]
            .as_str()
            .unwrap()
            .starts_with("%2fo%3dgrid%2fcn%3djane%20doe")
    );

    // release by account, then by DN; nothing left to release is exit 1
    let o = site.tool(&["pool", "release", &jane]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!(
        "released {jane} (pool atlas) from /o=grid/cn=jane doe"
    )));
    let o = site.tool(&["pool", "release", &jane]);
    assert_eq!(code(&o), 1);
    let o = site.tool(&["pool", "release", "--dn", "/O=Grid/CN=John"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(lease_files(&site.root), 0);
    let o = site.tool(&["pool", "release"]);
    assert_eq!(code(&o), 2);

    // expire: only leases unused for longer than the age go
    let old = site.login("/O=Grid/CN=Jane Doe");
    let _fresh = site.login("/O=Grid/CN=John");
    let key = LeaseKey::dn(&DistinguishedName::parse("/O=Grid/CN=Jane Doe").unwrap()).unwrap();
    std::fs::File::open(site.root.join("gridmapdir").join(key.as_str()))
        .unwrap()
        .set_modified(hpccert_core::clock::now() - Duration::from_secs(31 * 86400))
        .unwrap();
    let o = site.tool(&["pool", "expire", "--older-than", "30d"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        out.contains(&format!(
            "released {old} (pool atlas) from /o=grid/cn=jane doe"
        )),
        "{out}"
    );
    assert!(
        out.contains("1 lease(s) unused for more than 30d released"),
        "{out}"
    );
    assert_eq!(lease_files(&site.root), 1);
    let o = site.tool(&["pool", "expire", "--older-than", "3 years"]);
    assert_eq!(code(&o), 2);

    // every change rewrote the NSS cache: all pool accounts, leased or not
    let passwd = std::fs::read_to_string(site.root.join("nss/passwd")).unwrap();
    assert!(passwd.contains("atlas001:x:20000:20000:"), "{passwd}");
    assert!(passwd.contains("atlas003:x:20002:20000:"), "{passwd}");
}

#[test]
fn pool_commands_without_pools_are_usage_errors() {
    let o = Command::new(env!("CARGO_BIN_EXE_gridmap-tool"))
        .arg("--config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/hpccert.toml"))
        .args(["pool", "list"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("no [[pool]] table is configured"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn suspend_and_unsuspend() {
    let site = Site::new();
    let list = site.root.join("suspended");
    std::fs::write(&list, "# suspended at the security team's request\n").unwrap();

    let o = site.tool(&["suspend", "--dn", "CN=Bob,O=Grid"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = site.tool(&[
        "suspend",
        "--token",
        "https://cilogon.org",
        "http://cilogon.org/u/1",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = site.tool(&["suspend", "--account", "atlas002"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // again: nothing changes
    let o = site.tool(&["suspend", "--dn", "/O=Grid/CN=Bob"]);
    assert_eq!(code(&o), 0);
    assert!(
        stdout(&o).contains("already suspended (line 2)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        std::fs::read_to_string(&list).unwrap(),
        "# suspended at the security team's request\ndn \"/O=Grid/CN=Bob\"\n\
         token \"https://cilogon.org\" \"http://cilogon.org/u/1\"\naccount atlas002\n"
    );
    let o = site.tool(&["suspend", "--dn", "/O=Grid/CN=Bob", "--account", "bob"]);
    assert_eq!(code(&o), 2);

    // explain shows the refusal with the file and line
    let o = site.tool(&["explain", "--dn", "/O=Grid/CN=Bob"]);
    assert_eq!(code(&o), 1);
    assert!(
        stdout(&o).contains(&format!(
            "/O=Grid/CN=Bob is suspended ({} line 2: dn \"/O=Grid/CN=Bob\")",
            list.display()
        )),
        "{}",
        stdout(&o)
    );
    // a suspended pool account is never leased
    let o = site.tool(&["explain", "--dn", "/O=Grid/CN=Jane Doe"]);
    assert!(stdout(&o).contains("(2 of 3 free"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("-> atlas002"), "{}", stdout(&o));

    let o = site.tool(&["unsuspend", "--dn", "/O=Grid/CN=Bob"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = site.tool(&["explain", "--dn", "/O=Grid/CN=Bob"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let o = site.tool(&["unsuspend", "--dn", "/O=Grid/CN=Bob"]);
    assert_eq!(code(&o), 1);

    // a broken list refuses everyone and is never rewritten
    std::fs::write(&list, "account bob\nsuspend everyone\n").unwrap();
    let o = site.tool(&["explain", "--dn", "/O=Grid/CN=Bob"]);
    assert_eq!(code(&o), 1);
    assert!(
        stdout(&o).contains(&format!(
            "cannot tell who is suspended, so every login is refused: {}: line 2:",
            list.display()
        )),
        "{}",
        stdout(&o)
    );
    let o = site.tool(&["unsuspend", "--account", "bob"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("line 2: unknown entry"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(&list).unwrap(),
        "account bob\nsuspend everyone\n"
    );
}
