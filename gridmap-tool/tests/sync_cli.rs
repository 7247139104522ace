//! `gridmap-tool sync --from URL` against a small portal in the test (a std TcpListener thread
//! answering HTTP/1.1 as EXPORT.md says: Bearer token, ETag = SHA-256 of the body, 304 on a
//! matching If-None-Match, 401 on a wrong token).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a failed test

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hpccert_core::host::export::{self, Files};
use hpccert_core::host::nsscache::{CachedTable, GroupTable, PasswdTable};

const TOKEN: &str = "s3cret-export-token-0123456789abcdef";
const JANE: &str = "/DC=org/DC=cilogon/C=US/O=Example/CN=Jane Doe A123";
const MALLORY: &str = "/DC=org/DC=cilogon/C=US/O=Example/CN=Mallory M666";

/// What the test portal answers.
struct Served {
    body: Vec<u8>,
    /// The ETag header sent with a 200 (normally the body's SHA-256).
    etag: String,
    requests: usize,
}

struct Portal {
    url: String,
    served: Arc<Mutex<Served>>,
}

impl Portal {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/export/v1/bundle", listener.local_addr().unwrap());
        let served = Arc::new(Mutex::new(Served {
            body: Vec::new(),
            etag: String::new(),
            requests: 0,
        }));
        let s = Arc::clone(&served);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = BTreeMap::new();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap() == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let mut served = s.lock().unwrap();
                served.requests += 1;
                let current = export::etag(&served.body);
                let response = if headers.get("authorization").map(String::as_str)
                    != Some(&format!("Bearer {TOKEN}"))
                {
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 22\r\nConnection: close\r\n\r\nmissing or wrong token"
                        .to_vec()
                } else if headers.get("if-none-match") == Some(&current) {
                    format!(
                        "HTTP/1.1 304 Not Modified\r\nETag: {current}\r\nConnection: close\r\n\r\n"
                    )
                    .into_bytes()
                } else {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        served.etag,
                        served.body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&served.body);
                    r
                };
                let _ = stream.write_all(&response);
            }
        });
        Self { url, served }
    }

    /// Serve `body` with its proper ETag.
    fn serve(&self, body: Vec<u8>) {
        let etag = export::etag(&body);
        self.serve_with_etag(body, etag);
    }

    fn serve_with_etag(&self, body: Vec<u8>, etag: String) {
        let mut s = self.served.lock().unwrap();
        s.body = body;
        s.etag = etag;
    }

    fn requests(&self) -> usize {
        self.served.lock().unwrap().requests
    }
}

fn files() -> Files {
    Files {
        grid_mapfile: format!("\"{JANE}\" jdoe\n\"{MALLORY}\" mallory\n"),
        token_mapfile: "\"https://cilogon.org\" \"http://cilogon.org/serverA/users/123\" jdoe\n"
            .into(),
        suspended: "account mallory\n".into(),
        nss_passwd: "jdoe:x:60001:60001:Jane Doe (portal):/home/jdoe:/bin/bash\n\
                     mallory:x:60002:60002:Mallory (portal):/home/mallory:/bin/bash\n"
            .into(),
        nss_group: "jdoe:x:60001:\nmallory:x:60002:\n".into(),
        ssh_ca_keys: None,
        ssh_krl: None,
    }
}

fn bundle(serial: u64, files: Files) -> Vec<u8> {
    export::render(
        serial,
        "2026-11-24T12:00:00Z",
        "https://portal.example.org",
        files,
    )
}

/// A site: a config naming the files under `root/dir`, the token file.
struct Site {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dir: PathBuf,
}

impl Site {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let dir = root.join("installed");
        std::fs::write(
            root.join("hpccert.toml"),
            format!(
                "version = 1\n[mapping]\ngrid_mapfile = \"{d}/grid-mapfile\"\n\
                 token_mapfile = \"{d}/token-mapfile\"\nsuspended_file = \"{d}/suspended\"\n\
                 nss_cache_dir = \"{d}/nss\"\ngridmapdir = \"{r}/gridmapdir\"\n",
                d = dir.display(),
                r = root.display()
            ),
        )
        .unwrap();
        let token = root.join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        Self {
            _tmp: tmp,
            root,
            dir,
        }
    }

    fn tool(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_gridmap-tool"))
            .arg("--config")
            .arg(self.root.join("hpccert.toml"))
            .args(args)
            .output()
            .unwrap()
    }

    fn sync(&self, portal: &Portal, extra: &[&str]) -> Output {
        let token = self.root.join("token");
        let mut args = vec![
            "sync",
            "--from",
            &portal.url,
            "--token-file",
            token.to_str().unwrap(),
            "--dir",
            self.dir.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.tool(&args)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap()
    }

    /// Every installed file (not the lock files) with its bytes and mtime.
    fn snapshot(&self) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_none_or(|x| x != "lock") {
                    let m = std::fs::metadata(&p).unwrap().modified().unwrap();
                    out.insert(p.clone(), (std::fs::read(&p).unwrap(), m));
                }
            }
        }
        out
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

#[test]
fn first_sync_installs_every_file_and_explain_uses_them() {
    let portal = Portal::start();
    portal.serve(bundle(7, files()));
    let site = Site::new();
    let o = site.sync(&portal, &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("installed serial 7 from"), "{out}");
    assert!(out.contains("suspended: +1 -0 lines"), "{out}");
    assert!(out.contains("grid-mapfile: +4 -0 lines"), "{out}"); // 2 comments, 2 mappings
    assert!(out.contains("nss passwd: +2 -0 lines"), "{out}");
    assert!(!stderr(&o).contains(TOKEN) && !out.contains(TOKEN));

    assert_eq!(site.read("suspended"), files().suspended);
    assert_eq!(site.read("token-mapfile"), files().token_mapfile);
    let gridmap = site.read("grid-mapfile");
    assert!(gridmap.ends_with(&files().grid_mapfile), "{gridmap}");
    assert!(gridmap.starts_with("# Installed by `gridmap-tool sync`"));
    // the NSS cache is readable as the NSS module reads it
    let passwd = CachedTable::<PasswdTable>::new(&site.dir.join("nss"));
    let jdoe = passwd.find_name("jdoe").unwrap().unwrap();
    assert_eq!(jdoe.uid, 60001);
    assert_eq!(jdoe.gecos, "Jane Doe (portal)");
    assert_eq!(
        passwd.find_id(60002).unwrap().unwrap().name.as_str(),
        "mallory"
    );
    let group = CachedTable::<GroupTable>::new(&site.dir.join("nss"));
    assert_eq!(group.load().unwrap().len(), 2);
    // the state: ETag and serial
    let state: serde_json::Value = serde_json::from_str(&site.read(".portal-sync.json")).unwrap();
    assert_eq!(state["serial"], 7);
    assert_eq!(state["etag"], export::etag(&bundle(7, files())));
    assert_eq!(state["url"], portal.url.as_str());

    // explain maps the portal's DN, and refuses the suspended account
    let o = site.tool(&["explain", "--dn", JANE]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("-> jdoe"), "{}", stdout(&o));
    let o = site.tool(&["explain", "--dn", MALLORY]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(stdout(&o).contains("suspended"), "{}", stdout(&o));
}

/// A new portal exports empty lists: a node's first sync must still create every file, or
/// sshd-gsi (whose config names them) refuses to start on a missing token map.
#[test]
fn first_sync_of_an_empty_portal_creates_every_file() {
    let portal = Portal::start();
    let empty = Files {
        grid_mapfile: String::new(),
        token_mapfile: String::new(),
        suspended: String::new(),
        nss_passwd: String::new(),
        nss_group: String::new(),
        ssh_ca_keys: None,
        ssh_krl: None,
    };
    portal.serve(bundle(1, empty));
    let site = Site::new();
    let o = site.sync(&portal, &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    for f in [
        "suspended",
        "token-mapfile",
        "grid-mapfile",
        "nss/passwd",
        "nss/group",
    ] {
        assert!(
            site.dir.join(f).is_file(),
            "{f} not created: {}",
            stdout(&o)
        );
    }
    assert_eq!(site.read("token-mapfile"), "");
    // and the next bundle with the same (empty) files rewrites nothing
    let before = site.snapshot();
    portal.serve(bundle(
        2,
        Files {
            grid_mapfile: String::new(),
            token_mapfile: String::new(),
            suspended: String::new(),
            nss_passwd: String::new(),
            nss_group: String::new(),
            ssh_ca_keys: None,
            ssh_krl: None,
        },
    ));
    let o = site.sync(&portal, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("token-mapfile: unchanged"),
        "{}",
        stdout(&o)
    );
    let after = site.snapshot();
    let tm = site.dir.join("token-mapfile");
    assert_eq!(after[&tm], before[&tm]);
}

#[test]
fn same_etag_is_304_and_rewrites_nothing_then_a_new_bundle_installs() {
    let portal = Portal::start();
    portal.serve(bundle(7, files()));
    let site = Site::new();
    assert_eq!(code(&site.sync(&portal, &[])), 0);
    let before = site.snapshot();
    std::thread::sleep(Duration::from_millis(20));

    let o = site.sync(&portal, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "unchanged (serial 7)");
    assert_eq!(
        site.snapshot(),
        before,
        "mtimes or contents changed on a 304"
    );
    assert_eq!(portal.requests(), 2);

    // serial 8 unsuspends mallory and adds bob
    let mut f = files();
    f.suspended = String::new();
    f.grid_mapfile.push_str("\"/O=Grid/CN=Bob\" bob\n");
    portal.serve(bundle(8, f.clone()));
    let o = site.sync(&portal, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("installed serial 8"), "{out}");
    assert!(out.contains("suspended: +0 -1 lines"), "{out}");
    assert!(
        out.contains("no longer suspended: account mallory"),
        "{out}"
    );
    assert!(out.contains("grid-mapfile: +1 -0 lines"), "{out}");
    assert!(out.contains("token-mapfile: unchanged"), "{out}");
    assert!(out.contains("nss passwd: unchanged"), "{out}");
    assert_eq!(site.read("suspended"), "");
    let o = site.tool(&["explain", "--dn", "/O=Grid/CN=Bob"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    // an unchanged file was not rewritten
    let after = site.snapshot();
    let tm = site.dir.join("token-mapfile");
    assert_eq!(after[&tm], before[&tm]);
}

#[test]
fn a_corrupted_download_changes_nothing() {
    let portal = Portal::start();
    portal.serve(bundle(7, files()));
    let site = Site::new();
    assert_eq!(code(&site.sync(&portal, &[])), 0);
    let before = site.snapshot();

    let mut digest_mismatch: serde_json::Value =
        serde_json::from_slice(&bundle(8, files())).unwrap();
    digest_mismatch["files"]["suspended"] = "".into(); // the digest still says "account mallory"
    let mut bad_line = files();
    bad_line
        .nss_passwd
        .push_str("eve:x:0:0:root in disguise:/root:/bin/sh\n");
    let good = bundle(9, files());
    let cases: Vec<(&str, Vec<u8>, Option<String>, &str)> = vec![
        (
            "digest mismatch",
            serde_json::to_vec(&digest_mismatch).unwrap(),
            None,
            "files.suspended: its SHA-256 is",
        ),
        (
            "a file that does not parse",
            bundle(8, bad_line),
            None,
            "files.nss-passwd: line 3: uid 0",
        ),
        (
            "truncated JSON",
            good[..good.len() / 2].to_vec(),
            None,
            "is not the JSON object",
        ),
        (
            "a lower serial",
            bundle(6, files()),
            None,
            "serial 6 is lower than the serial 7",
        ),
        (
            "a body whose SHA-256 differs from the ETag",
            good.clone(),
            Some(export::etag(&bundle(10, files()))),
            "the download is corrupted or truncated",
        ),
        (
            "no ETag at all",
            good.clone(),
            Some(String::new()),
            "not a strong ETag",
        ),
    ];
    for (what, body, etag, expected) in cases {
        match etag {
            Some(e) => portal.serve_with_etag(body, e),
            None => portal.serve(body),
        }
        let o = site.sync(&portal, &[]);
        assert_eq!(code(&o), 2, "{what}: {}{}", stdout(&o), stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("sync refused, nothing changed"),
            "{what}: {err}"
        );
        assert!(err.contains(expected), "{what}: {err}");
        assert_eq!(site.snapshot(), before, "{what}: an installed file changed");
    }
    // and the good one still installs afterwards
    portal.serve(good);
    let o = site.sync(&portal, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("installed serial 9"), "{}", stdout(&o));
}

#[test]
fn wrong_token_or_open_token_file_is_refused() {
    let portal = Portal::start();
    portal.serve(bundle(7, files()));
    let site = Site::new();
    let token = site.root.join("token");
    std::fs::write(&token, "wrong-token\n").unwrap();
    let o = site.sync(&portal, &[]);
    assert_eq!(code(&o), 2, "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(err.contains("missing or wrong token"), "{err}");
    assert!(
        !err.contains("wrong-token\n") && !err.contains("Bearer"),
        "{err}"
    );
    assert!(!site.dir.join("grid-mapfile").exists());

    // a token file others can read is refused before any request
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let requests = portal.requests();
    let o = site.sync(&portal, &[]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("too open"), "{}", stderr(&o));
    assert_eq!(portal.requests(), requests);
}

#[test]
fn static_grid_mapfile_comes_first_and_wins() {
    let portal = Portal::start();
    portal.serve(bundle(7, files()));
    let site = Site::new();
    let static_file = site.root.join("grid-mapfile.static");
    std::fs::write(
        &static_file,
        format!("# the site's own\n\"{JANE}\" jane_local\n\"/O=Grid/CN=Admin\" admin\n"),
    )
    .unwrap();
    let o = site.sync(
        &portal,
        &["--static-gridmap", static_file.to_str().unwrap()],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!(
            "warning: portal line 1 ({JANE}) is shadowed by static line 2 (the static line wins)"
        )),
        "{}",
        stdout(&o)
    );
    let gridmap = site.read("grid-mapfile");
    let static_at = gridmap.find("jane_local").unwrap();
    let portal_at = gridmap.find("\" jdoe").unwrap();
    assert!(static_at < portal_at, "{gridmap}");
    let o = site.tool(&["explain", "--dn", JANE]);
    assert!(stdout(&o).contains("-> jane_local"), "{}", stdout(&o));

    // a static file that does not parse refuses the sync
    std::fs::write(&static_file, "\"/O=Grid/CN=x\n").unwrap();
    let before = site.snapshot();
    portal.serve(bundle(8, files()));
    let o = site.sync(
        &portal,
        &["--static-gridmap", static_file.to_str().unwrap()],
    );
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("static grid-mapfile"), "{}", stderr(&o));
    assert_eq!(site.snapshot(), before);
}

#[test]
fn plain_http_to_another_host_is_refused_without_connecting() {
    let site = Site::new();
    let started = Instant::now();
    // 192.0.2.1 (TEST-NET-1) never answers: a connection attempt would take the timeout
    let o = site.tool(&[
        "sync",
        "--from",
        "http://192.0.2.1/export/v1/bundle",
        "--dir",
        site.dir.to_str().unwrap(),
        "--timeout",
        "20",
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("plain http is refused except to a loopback address"),
        "{}",
        stderr(&o)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!Path::new(&site.dir).exists());
}

#[test]
fn the_nodes_own_suspensions_survive_every_sync() {
    let portal = Portal::start();
    portal.serve(bundle(7, files()));
    let site = Site::new();
    let local = site.root.join("suspended.static");
    std::fs::write(
        &local,
        format!("dn \"{JANE}\"  # suspended on this node only\n"),
    )
    .unwrap();
    let args = ["--static-suspended", local.to_str().unwrap()];
    let o = site.sync(&portal, &args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let installed = site.read("suspended");
    assert!(installed.contains(&format!("dn \"{JANE}\"")), "{installed}");
    assert!(installed.contains("account mallory"), "{installed}");
    // both refuse: the node's own entry and the portal's
    let o = site.tool(&["explain", "--dn", JANE]);
    assert!(stdout(&o).contains("suspended"), "{}", stdout(&o));
    // a new bundle from the portal keeps the node's suspension
    let mut changed = files();
    changed.suspended = String::new();
    portal.serve(bundle(8, changed));
    let o = site.sync(&portal, &args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let installed = site.read("suspended");
    assert!(installed.contains(&format!("dn \"{JANE}\"")), "{installed}");
    assert!(!installed.contains("account mallory"), "{installed}");
    // a local list that does not parse refuses the sync and changes nothing
    std::fs::write(&local, "dn not-quoted\n").unwrap();
    let before = site.snapshot();
    portal.serve(bundle(9, files()));
    let o = site.sync(&portal, &args);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("static suspension list"),
        "{}",
        stderr(&o)
    );
    assert_eq!(site.snapshot(), before);
}

/// A version 2 bundle (a portal with an SSH CA): the KRL and the CA keys are installed first,
/// byte for byte; a broken KRL refuses the whole bundle; a later version 1 bundle leaves them
/// as they are.
#[test]
fn a_version_2_bundle_installs_the_ssh_ca_keys_and_the_krl() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ca");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status();
    if !ok.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var("HPCCERT_E2E_REQUIRED").as_deref() != Ok("1"),
            "ssh-keygen missing"
        );
        eprintln!("SKIPPED: ssh-keygen not found");
        return;
    }
    let ca_line = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let ca = hpccert_core::trust::sshca::SshCa::load(&key, None, Default::default()).unwrap();
    let krl = ca
        .public_set()
        .krl(
            &[(hpccert_core::trust::sshca::fingerprint(ca.public_key()), 77)],
            3,
            0,
        )
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&krl);
    let portal = Portal::start();
    let mut f = files();
    f.ssh_ca_keys = Some(ca_line.clone());
    f.ssh_krl = Some(b64);
    portal.serve(bundle(7, f.clone()));
    let site = Site::new();
    let o = site.sync(&portal, &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let krl_at = out
        .find("ssh-krl: replaced")
        .unwrap_or_else(|| panic!("{out}"));
    let keys_at = out
        .find("ssh-ca-keys: +1 -0 lines")
        .unwrap_or_else(|| panic!("{out}"));
    let suspended_at = out.find("suspended:").unwrap();
    assert!(krl_at < keys_at && keys_at < suspended_at, "order: {out}");
    assert_eq!(
        std::fs::read(site.dir.join("ssh-revoked.krl")).unwrap(),
        krl
    );
    assert_eq!(site.read("ssh-ca-keys.pub"), ca_line);

    // a KRL that is not one: exit 2, nothing changed
    let before = site.snapshot();
    let mut bad = f.clone();
    bad.ssh_krl =
        Some(base64::engine::general_purpose::STANDARD.encode(b"not a krl at all, really"));
    portal.serve(bundle(8, bad));
    let o = site.sync(&portal, &[]);
    assert_eq!(code(&o), 2, "{}", stdout(&o));
    assert!(stderr(&o).contains("files.ssh-krl"), "{}", stderr(&o));
    assert_eq!(site.snapshot(), before);

    // a version 1 bundle after it: the SSH files stay
    portal.serve(bundle(9, files()));
    let o = site.sync(&portal, &[]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        std::fs::read(site.dir.join("ssh-revoked.krl")).unwrap(),
        krl
    );
}

/// A bundle that would give an account or group an id of the system range (below `[mapping]
/// nss_min_id`, 1000 by default) or add a member to a system group is refused before any file
/// changes, naming the member and the line.
#[test]
fn system_ids_and_members_of_system_groups_are_refused() {
    let portal = Portal::start();
    portal.serve(bundle(7, files()));
    let site = Site::new();
    assert_eq!(code(&site.sync(&portal, &[])), 0);
    let before = site.snapshot();

    let with = |passwd: &str, group: &str| {
        let mut f = files();
        f.nss_passwd.push_str(passwd);
        f.nss_group.push_str(group);
        f
    };
    let cases = [
        (
            "uid 0",
            with("eve:x:0:60003:root in disguise:/root:/bin/sh\n", ""),
            "files.nss-passwd: line 3: uid 0 (root)",
        ),
        (
            "a uid below the floor",
            with("old:x:500:60001:old:/home/old:/bin/sh\n", ""),
            "nss-passwd line 3: user old (uid 500) is below the floor 1000",
        ),
        (
            "a primary group below the floor",
            with("eve:x:60003:27:Eve:/home/eve:/bin/sh\n", ""),
            "nss-passwd line 3: user eve: its primary group gid 27 is below the floor 1000",
        ),
        (
            "gid 10",
            with("", "wheel:x:10:jdoe\n"),
            "nss-group line 3: group wheel (gid 10) is below the floor 1000",
        ),
        (
            "a member added to sudo's gid",
            with("", "sudo:x:27:jdoe,mallory\n"),
            "nss-group line 3: group sudo (gid 27) is below the floor 1000",
        ),
        (
            // group root (gid 0) is in every host's group database
            "a member added to group root under another gid",
            with("", "root:x:70000:jdoe\n"),
            "nss-group line 3: group root (gid 70000) is the system group root (gid 0, below the floor 1000) and would add jdoe to it",
        ),
    ];
    for (serial, (what, f, expected)) in (8..).zip(cases) {
        portal.serve(bundle(serial, f));
        let o = site.sync(&portal, &[]);
        assert_eq!(code(&o), 2, "{what}: {}{}", stdout(&o), stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("sync refused, nothing changed"),
            "{what}: {err}"
        );
        assert!(err.contains(expected), "{what}: {err}");
        assert_eq!(site.snapshot(), before, "{what}: an installed file changed");
    }

    // a first sync of such a bundle creates nothing either
    let fresh = Site::new();
    portal.serve(bundle(20, with("", "wheel:x:10:jdoe\n")));
    let o = fresh.sync(&portal, &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(!fresh.dir.join("grid-mapfile").exists());
    assert!(!fresh.dir.join("nss/group").exists());

    // the floor is the node's: with nss_min_id = 400, uid 500 installs
    let low = Site::new();
    let config = low.root.join("hpccert.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}nss_min_id = 400\n")).unwrap();
    portal.serve(bundle(
        21,
        with("old:x:500:500:old:/home/old:/bin/sh\n", "old:x:500:\n"),
    ));
    let o = low.sync(&portal, &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let passwd = CachedTable::<PasswdTable>::new(&low.dir.join("nss"));
    assert_eq!(passwd.find_name("old").unwrap().unwrap().uid, 500);
}
