//! libnss_hpccert.so.2 loaded by nss_wrapper (no change to /etc/nsswitch.conf), driven by the
//! system's `getent` and `id`, answering from a cache written by
//! `hpccert_core::host::nsscache::write_passwd` / `write_group`.
//!
//! nss_wrapper's own files (`NSS_WRAPPER_PASSWD`/`GROUP`, both required) hold only root; every
//! other answer comes from the module. The module reads the cache directory from
//! `HPCCERT_NSS_DIR`, which it honours only in an unprivileged process (see the crate
//! documentation of nss_hpccert); the last test checks that rule with `setpriv` when run as
//! root.
//!
//! Cargo builds the module before this test because the crate is a dev-dependency; the test
//! finds it next to its own binary (`target/<profile>/deps/libnss_hpccert.so`) and copies it
//! to `libnss_hpccert.so.2`, the name glibc loads.
#![allow(clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hpccert_core::host::atomic_file::write_atomic;
use hpccert_core::host::nsscache::{
    GroupEntry, IdFloor, PasswdEntry, render_passwd, write_group, write_passwd,
};
use hpccert_core::identity::gridmap::AccountName;
use hpccert_e2e::{built_library, is_root, library, peer_available, run, skip};

fn name(s: &str) -> AccountName {
    AccountName::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn user(n: &str, uid: u32, gid: u32, gecos: &str) -> PasswdEntry {
    PasswdEntry {
        name: name(n),
        uid,
        gid,
        gecos: gecos.into(),
        dir: format!("/home/{n}"),
        shell: "/bin/bash".into(),
    }
}

/// Pool accounts (`atlas001`, `atlas002`, group `atlas`) and a portal-managed account
/// (`alice`, own group), both in the supplementary group `hpcusers`.
fn accounts() -> Vec<PasswdEntry> {
    vec![
        user("atlas001", 50_001, 50_000, "ATLAS pool account 1"),
        user("atlas002", 50_002, 50_000, "ATLAS pool account 2"),
        user("alice", 60_001, 60_001, "Alice Example (portal)"),
    ]
}

fn groups() -> Vec<GroupEntry> {
    vec![
        GroupEntry {
            name: name("atlas"),
            gid: 50_000,
            members: vec![],
        },
        GroupEntry {
            name: name("alice"),
            gid: 60_001,
            members: vec![],
        },
        GroupEntry {
            name: name("hpcusers"),
            gid: 50_100,
            members: vec![name("atlas001"), name("alice")],
        },
    ]
}

struct Site {
    dir: tempfile::TempDir,
    wrapper: PathBuf,
}

impl Site {
    fn new() -> Option<Self> {
        let wrapper = library("libnss_wrapper.so", "libnss-wrapper")?;
        if !peer_available("getent", "libc-bin") || !peer_available("id", "coreutils") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let site = Self { dir, wrapper };
        std::fs::copy(built_library("libnss_hpccert.so"), site.module())
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            site.path("passwd.wrapper"),
            "root:x:0:0:root:/root:/bin/bash\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(site.path("group.wrapper"), "root:x:0:\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir(site.cache()).unwrap_or_else(|e| panic!("{e}"));
        write_passwd(&site.cache(), &accounts(), &IdFloor::default())
            .unwrap_or_else(|e| panic!("{e}"));
        write_group(&site.cache(), &groups(), &IdFloor::default())
            .unwrap_or_else(|e| panic!("{e}"));
        Some(site)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn module(&self) -> PathBuf {
        self.path("libnss_hpccert.so.2")
    }
    fn cache(&self) -> PathBuf {
        self.path("nss")
    }

    /// `program args` under nss_wrapper with the module; (exit code, stdout, stderr).
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("LD_PRELOAD", &self.wrapper)
            .env("NSS_WRAPPER_PASSWD", self.path("passwd.wrapper"))
            .env("NSS_WRAPPER_GROUP", self.path("group.wrapper"))
            .env("NSS_WRAPPER_MODULE_SO_PATH", self.module())
            .env("NSS_WRAPPER_MODULE_FN_PREFIX", "hpccert")
            .env("HPCCERT_NSS_DIR", self.cache());
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> (i32, String, String) {
        run(&mut self.command(program, args))
    }

    /// `getent DB KEY`: the output line when found, `None` (after checking exit code 2 and
    /// empty output) when not.
    fn getent(&self, db: &str, key: &str) -> Option<String> {
        let (code, out, err) = self.run("getent", &[db, key]);
        match code {
            0 => Some(out.trim_end().to_string()),
            2 => {
                assert_eq!(out, "", "getent {db} {key}: output with exit code 2");
                None
            }
            _ => panic!("getent {db} {key}: exit {code}, {out}{err}"),
        }
    }

    fn enumerate(&self, db: &str) -> Vec<String> {
        let (code, out, err) = self.run("getent", &[db]);
        assert_eq!(code, 0, "getent {db}: {out}{err}");
        out.lines().map(str::to_string).collect()
    }
}

#[test]
fn passwd_and_group_lookups_for_pool_and_portal_accounts() {
    let Some(site) = Site::new() else { return };

    let atlas = "atlas001:x:50001:50000:ATLAS pool account 1:/home/atlas001:/bin/bash";
    let alice = "alice:x:60001:60001:Alice Example (portal):/home/alice:/bin/bash";
    assert_eq!(site.getent("passwd", "atlas001").as_deref(), Some(atlas));
    assert_eq!(site.getent("passwd", "50001").as_deref(), Some(atlas));
    assert_eq!(site.getent("passwd", "alice").as_deref(), Some(alice));
    assert_eq!(site.getent("passwd", "60001").as_deref(), Some(alice));
    // nss_wrapper's own file still answers for root
    assert_eq!(
        site.getent("passwd", "root").as_deref(),
        Some("root:x:0:0:root:/root:/bin/bash")
    );

    let hpcusers = "hpcusers:x:50100:atlas001,alice";
    assert_eq!(site.getent("group", "hpcusers").as_deref(), Some(hpcusers));
    assert_eq!(site.getent("group", "50100").as_deref(), Some(hpcusers));
    assert_eq!(
        site.getent("group", "atlas").as_deref(),
        Some("atlas:x:50000:")
    );
    assert_eq!(
        site.getent("group", "50000").as_deref(),
        Some("atlas:x:50000:")
    );

    // id: primary group and the supplementary groups from the group database
    let (code, out, err) = site.run("id", &["atlas001"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.trim_end(),
        "uid=50001(atlas001) gid=50000(atlas) groups=50000(atlas),50100(hpcusers)"
    );
    let (code, out, err) = site.run("id", &["alice"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.trim_end(),
        "uid=60001(alice) gid=60001(alice) groups=60001(alice),50100(hpcusers)"
    );
    let (code, out, _) = site.run("id", &["atlas002"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim_end(),
        "uid=50002(atlas002) gid=50000(atlas) groups=50000(atlas)"
    );

    // unknown names and ids: not found (exit 2, no output)
    for key in ["nobody-here", "atlas003", "50003", "4000000000"] {
        assert_eq!(site.getent("passwd", key), None, "passwd {key}");
    }
    for key in ["wheel", "50001", "50200"] {
        assert_eq!(site.getent("group", key), None, "group {key}");
    }
    let (code, _, _) = site.run("id", &["nobody-here"]);
    assert_eq!(code, 1);

    // enumeration: root from nss_wrapper, then the cache in file order
    assert_eq!(
        site.enumerate("passwd"),
        vec![
            "root:x:0:0:root:/root:/bin/bash".to_string(),
            atlas.to_string(),
            "atlas002:x:50002:50000:ATLAS pool account 2:/home/atlas002:/bin/bash".to_string(),
            alice.to_string(),
        ]
    );
    assert_eq!(
        site.enumerate("group"),
        vec![
            "root:x:0:".to_string(),
            "atlas:x:50000:".to_string(),
            "alice:x:60001:".to_string(),
            hpcusers.to_string(),
        ]
    );
}

#[test]
fn truncated_or_invalid_cache_is_unavailable_not_garbage() {
    let Some(site) = Site::new() else { return };
    let passwd = site.cache().join("passwd");
    let full = render_passwd(&accounts());

    // cut in the middle of the second entry (the first is complete), and cut just before
    // the trailer's end: no entry may come out of either
    for cut in [full.find("atlas002").unwrap_or(0) + 10, full.len() - 5] {
        write_atomic(&passwd, &full.as_bytes()[..cut]).unwrap_or_else(|e| panic!("{e}"));
        for key in ["atlas001", "50001", "alice"] {
            assert_eq!(site.getent("passwd", key), None, "cut {cut}: passwd {key}");
        }
        assert_eq!(
            site.enumerate("passwd"),
            vec!["root:x:0:0:root:/root:/bin/bash".to_string()],
            "cut {cut}"
        );
        // the group database is a separate file and still answers
        assert!(site.getent("group", "hpcusers").is_some());
    }

    // the trailer of another content (a line edited in place): unavailable too
    let edited = full.replace("/home/alice", "/home/mallory");
    write_atomic(&passwd, edited.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(site.getent("passwd", "alice"), None);

    // a missing file: unavailable; written again: served again
    std::fs::remove_file(&passwd).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(site.getent("passwd", "atlas001"), None);
    write_passwd(&site.cache(), &accounts(), &IdFloor::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(site.getent("passwd", "atlas001").is_some());
}

#[test]
fn lookups_while_the_cache_is_replaced_see_one_version_or_the_other() {
    let Some(site) = Site::new() else { return };
    let versions = [accounts(), {
        let mut v = accounts();
        v[0].gecos = "ATLAS pool account 1 (leased)".into();
        v.push(user("atlas003", 50_003, 50_000, "ATLAS pool account 3"));
        v
    }];
    let expected: Vec<String> = versions
        .iter()
        .map(|v| {
            format!(
                "atlas001:x:50001:50000:{}:/home/atlas001:/bin/bash",
                v[0].gecos
            )
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let cache = site.cache();
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                write_passwd(&cache, &versions[i % 2], &IdFloor::default())
                    .unwrap_or_else(|e| panic!("{e}"));
                i += 1;
            }
            i
        })
    };
    for _ in 0..40 {
        let line = site.getent("passwd", "atlas001");
        assert!(
            line.as_ref().is_some_and(|l| expected.contains(l)),
            "a lookup during replacement gave {line:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap_or_else(|_| panic!("writer panicked"));
    eprintln!("40 lookups during {writes} replacements: all whole");
}

#[test]
fn cache_dir_override_is_ignored_when_privileged() {
    let Some(site) = Site::new() else { return };
    let (_, uid, _) = run(Command::new("id").arg("-u"));
    if uid.trim() != "0" || !peer_available("python3", "python3") {
        eprintln!("SKIPPED: needs root (to change the effective uid) and python3");
        return;
    }
    let default_dir = hpccert_core::host::nsscache::DEFAULT_DIR;
    if Path::new(default_dir).exists() {
        eprintln!("SKIPPED: {default_dir} exists on this machine");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(site.dir.path(), std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{e}"));

    // A process started by root (no AT_SECURE, so the loader honours LD_PRELOAD and
    // nss_wrapper loads) that sets its effective uid before its first lookup, as a setuid
    // program runs: real uid != effective uid. (An exec of a setuid program cannot be used
    // here: the kernel marks it AT_SECURE and the loader then drops nss_wrapper itself.)
    let lookup = |seteuid: bool| {
        let script = format!(
            "import os, pwd, sys\n\
             {}\n\
             pwd.getpwnam('root')  # nss_wrapper still answers (KeyError: exit 1)\n\
             try:\n    print(pwd.getpwnam('atlas001').pw_uid)\nexcept KeyError:\n    sys.exit(2)\n",
            if seteuid { "os.seteuid(65534)" } else { "pass" }
        );
        run(&mut site.command("python3", &["-c", &script]))
    };
    let (code, out, err) = lookup(false);
    assert_eq!((code, out.trim()), (0, "50001"), "real == effective: {err}");
    let (code, out, err) = lookup(true);
    assert_eq!(
        (code, out.as_str()),
        (2, ""),
        "real != effective: HPCCERT_NSS_DIR must be ignored ({default_dir} is absent): {err}"
    );
}

#[test]
fn entries_larger_than_the_first_buffer_are_retried_not_cut() {
    let Some(site) = Site::new() else { return };
    // about 24 KB of member names: more than the first buffer getent and nss_wrapper offer,
    // so the module answers TRYAGAIN/ERANGE and the caller retries with a larger one
    let members: Vec<AccountName> = (1..=2000).map(|i| name(&format!("atlas{i:06}"))).collect();
    let mut all = groups();
    all.push(GroupEntry {
        name: name("bigpool"),
        gid: 50_200,
        members: members.clone(),
    });
    write_group(&site.cache(), &all, &IdFloor::default()).unwrap_or_else(|e| panic!("{e}"));
    let expected = format!(
        "bigpool:x:50200:{}",
        members
            .iter()
            .map(AccountName::as_str)
            .collect::<Vec<_>>()
            .join(",")
    );
    assert_eq!(site.getent("group", "bigpool").as_deref(), Some(&*expected));
    assert_eq!(site.getent("group", "50200").as_deref(), Some(&*expected));
    // enumeration does not skip or repeat the entry that needed a retry
    let listed = site.enumerate("group");
    assert_eq!(
        listed.len(),
        5,
        "{:?}",
        listed
            .iter()
            .map(|l| &l[..l.len().min(20)])
            .collect::<Vec<_>>()
    );
    assert_eq!(listed[4], expected);
    assert_eq!(listed[3], "hpcusers:x:50100:atlas001,alice");
}

/// As root, glibc's own lookup path (no nss_wrapper): in a private mount namespace
/// (`unshare -m`) an nsswitch.conf naming `hpccert` is bind-mounted over /etc/nsswitch.conf,
/// so the machine's configuration never changes; glibc loads `libnss_hpccert.so.2` by that
/// name (found through LD_LIBRARY_PATH), and `getent` and `id` resolve pool and portal
/// accounts next to the system's own.
#[test]
fn glibc_loads_the_module_from_nsswitch_conf_in_a_private_mount_namespace() {
    let Some(site) = Site::new() else { return };
    // only root may unshare the mount namespace and bind-mount
    if !is_root() {
        skip("the glibc NSS test needs root");
        return;
    }
    if !peer_available("unshare", "util-linux") {
        return;
    }
    let nsswitch = site.path("nsswitch.conf");
    std::fs::write(
        &nsswitch,
        "passwd: files hpccert\ngroup: files hpccert\nshadow: files\nhosts: files\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let script = format!(
        "set -e\nmount --bind {} /etc/nsswitch.conf\n\
         echo \"== $(getent passwd atlas001)\"\necho \"== $(getent group hpcusers)\"\n\
         echo \"== $(id atlas001)\"\necho \"== $(getent passwd root)\"\n\
         if getent passwd atlas003; then echo '== found atlas003'; else echo \"== atlas003: $?\"; fi\n",
        nsswitch.display()
    );
    let before = std::fs::read("/etc/nsswitch.conf").unwrap_or_default();
    let (code, out, err) = run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("LD_LIBRARY_PATH", site.dir.path())
        .env("HPCCERT_NSS_DIR", site.cache())
        .env_remove("LD_PRELOAD"));
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("== ")).collect();
    assert_eq!(
        lines,
        [
            "atlas001:x:50001:50000:ATLAS pool account 1:/home/atlas001:/bin/bash",
            "hpcusers:x:50100:atlas001,alice",
            "uid=50001(atlas001) gid=50000(atlas) groups=50000(atlas),50100(hpcusers)",
            "root:x:0:0:root:/root:/bin/bash",
            "atlas003: 2",
        ],
        "{out}{err}"
    );
    // the machine's own file is untouched, and outside the namespace the module is unknown
    assert_eq!(
        std::fs::read("/etc/nsswitch.conf").unwrap_or_default(),
        before
    );
    let (code, _, _) = run(Command::new("getent")
        .args(["passwd", "atlas001"])
        .env("LD_LIBRARY_PATH", site.dir.path())
        .env("HPCCERT_NSS_DIR", site.cache()));
    assert_eq!(code, 2, "atlas001 resolves outside the private namespace");
}

#[test]
fn pool_leases_write_a_cache_the_module_answers_from() {
    use hpccert_core::identity::dn::DistinguishedName;
    use hpccert_core::identity::gridmapdir::{Gridmapdir, LeaseKey};
    use hpccert_core::identity::pool::{PoolConfig, Pools};

    let Some(site) = Site::new() else { return };
    let pool = PoolConfig {
        name: "cms".into(),
        prefix: None,
        count: 3,
        first_uid: 70_000,
        gid: 70_000,
        group: None,
        home: "/home/{account}".into(),
        shell: "/bin/bash".into(),
    };
    let gridmapdir = site.path("gridmapdir");
    std::fs::create_dir(&gridmapdir).unwrap_or_else(|e| panic!("{e}"));
    let pools = Pools::from_config(&[pool]).unwrap_or_else(|(_, e)| panic!("{e}"));
    let dir = Gridmapdir::new(&gridmapdir, pools).with_nss_cache(&site.cache());
    let dn = DistinguishedName::parse("/O=Grid/CN=Jane Doe").unwrap_or_else(|e| panic!("{e}"));
    let key = LeaseKey::dn(&dn).unwrap_or_else(|e| panic!("{e}"));
    let leased = dir
        .lease("cms", &key, &|_: &AccountName| false)
        .unwrap_or_else(|e| panic!("{e}"))
        .lease
        .account;

    // the leased account and the free ones resolve, by name and by id
    let uid = 70_000
        + leased.as_str()[3..]
            .parse::<u32>()
            .unwrap_or_else(|e| panic!("{e}"))
        - 1;
    let line = format!("{leased}:x:{uid}:70000:pool account of cms:/home/{leased}:/bin/bash");
    assert_eq!(site.getent("passwd", leased.as_str()), Some(line.clone()));
    assert_eq!(site.getent("passwd", &uid.to_string()), Some(line));
    assert!(site.getent("passwd", "cms003").is_some());
    assert_eq!(
        site.getent("group", "cms").as_deref(),
        Some("cms:x:70000:cms001,cms002,cms003")
    );
    let (code, out, err) = site.run("id", &[leased.as_str()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("uid={uid}({leased}) gid=70000(cms)")),
        "{out}"
    );
}
