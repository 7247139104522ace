//! The export bundle of `EXPORT.md` (format version 1), built from the store's state.
//!
//! [`build`] renders every file in the syntax of the file it becomes on a node and parses
//! it back with the core parser of that file, and checks the NSS tables against the portal's
//! `[mapping] nss_min_id` as a node's `gridmap-tool sync` does: a bundle that a node would
//! refuse is never made (the change that would have caused it is rolled back, see
//! [`crate::store`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use hpccert_core::host::atomic_file::write_atomic;
use hpccert_core::host::nsscache::{
    self, CacheTable, GroupEntry, GroupTable, IdFloor, PasswdEntry, PasswdTable,
};
use hpccert_core::identity::dn::DistinguishedName;
use hpccert_core::identity::gridmap::{self, AccountName, GridMapfile, MappedAccount};
use hpccert_core::identity::suspension::{Suspended, SuspensionList};
use hpccert_core::identity::tokenmap::{self, TokenMapfile};
use serde::Serialize;
use thiserror::Error;

use crate::model::{
    Account, IdentityKey, IdentityKind, RevokedCertificate, StoreError, SuspensionTarget,
};

/// `format` in the bundle.
pub const FORMAT: &str = "hpccert-export";
/// `version` in the bundle.
pub const VERSION: u32 = 1;

/// What the export is made of, read from the store in one transaction.
#[derive(Debug, Clone, Default)]
pub struct ExportState {
    pub serial: i64,
    /// When the last change was made (Unix seconds): the bundle's `generated`.
    pub changed: i64,
    pub accounts: Vec<Account>,
    /// Active links in a stable order (identity, then link creation); an identity's first
    /// account is its default.
    pub active_links: Vec<(IdentityKey, String)>,
    pub suspensions: Vec<SuspensionTarget>,
    /// Revoked SSH certificates that have not expired when the state was read (the KRL).
    pub revoked: Vec<RevokedCertificate>,
}

/// The five files, as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportFiles<T> {
    #[serde(rename = "grid-mapfile")]
    pub grid_mapfile: T,
    #[serde(rename = "token-mapfile")]
    pub token_mapfile: T,
    pub suspended: T,
    #[serde(rename = "nss-passwd")]
    pub nss_passwd: T,
    #[serde(rename = "nss-group")]
    pub nss_group: T,
}

impl<T> ExportFiles<T> {
    fn map<U>(&self, f: impl Fn(&T) -> U) -> ExportFiles<U> {
        ExportFiles {
            grid_mapfile: f(&self.grid_mapfile),
            token_mapfile: f(&self.token_mapfile),
            suspended: f(&self.suspended),
            nss_passwd: f(&self.nss_passwd),
            nss_group: f(&self.nss_group),
        }
    }
}

/// A checked bundle: every file parses with its core parser.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub serial: i64,
    pub generated: i64,
    pub files: ExportFiles<String>,
    passwd: Vec<PasswdEntry>,
    group: Vec<GroupEntry>,
    /// What the NSS tables were checked against (and [`Bundle::install`] writes with).
    floor: IdFloor,
    /// What the SSH CA's revocation list holds.
    pub revoked: Vec<RevokedCertificate>,
}

/// The SSH CA's part of a bundle (format version 2): the CA public keys the nodes trust and
/// the KRL of revoked certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshExport {
    /// `TrustedUserCAKeys` text: one OpenSSH public key per line (current, then next).
    pub ca_keys: String,
    /// The KRL (binary, PROTOCOL.krl), base64 in the JSON.
    pub krl: Vec<u8>,
}

#[derive(Serialize)]
struct BundleJson<'a> {
    format: &'static str,
    version: u32,
    serial: i64,
    generated: String,
    portal: &'a str,
    files: &'a ExportFiles<String>,
    sha256: ExportFiles<String>,
}

/// Installing the bundle into the portal's own `export_dir` failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum InstallError {
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("NSS cache in {}: {source}", dir.display())]
    Nss {
        dir: std::path::PathBuf,
        source: nsscache::NssCacheError,
    },
}

/// The file names in `export_dir`.
pub const GRID_MAPFILE: &str = "grid-mapfile";
pub const TOKEN_MAPFILE: &str = "token-mapfile";
pub const SUSPENDED_FILE: &str = "suspended";

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = openssl::sha::sha256(data);
    let mut out = String::with_capacity(64);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn refused(file: &'static str, errors: &[gridmap::LineError]) -> StoreError {
    StoreError::ExportRefused {
        file,
        reason: errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    }
}

fn account_name(file: &'static str, s: &str) -> Result<AccountName, StoreError> {
    AccountName::parse(s).map_err(|e| StoreError::ExportRefused {
        file,
        reason: format!("account {s:?}: {e}"),
    })
}

/// `file line N: why` for each refusal of the floor.
fn below_floor(file: &'static str, refusals: Vec<(usize, String)>) -> Result<(), StoreError> {
    if refusals.is_empty() {
        return Ok(());
    }
    Err(StoreError::ExportRefused {
        file,
        reason: refusals
            .into_iter()
            .map(|(i, why)| format!("line {}: {why}", i + 1))
            .collect::<Vec<_>>()
            .join("; "),
    })
}

/// Render and check every file of the bundle; no NSS entry in the system range of `floor`.
pub fn build(state: &ExportState, floor: &IdFloor) -> Result<Bundle, StoreError> {
    // identity -> accounts, in the order the links come
    let mut order: Vec<&IdentityKey> = Vec::new();
    let mut accounts: HashMap<&IdentityKey, Vec<&str>> = HashMap::new();
    for (identity, account) in &state.active_links {
        let list = accounts.entry(identity).or_insert_with(|| {
            order.push(identity);
            Vec::new()
        });
        list.push(account);
    }

    let mut grid = String::new();
    let mut tokens = String::new();
    for identity in order {
        let list = accounts
            .get(identity)
            .map(Vec::as_slice)
            .unwrap_or_default();
        match identity.kind() {
            IdentityKind::Dn => {
                let dn = DistinguishedName::parse(identity.subject()).map_err(|e| {
                    StoreError::ExportRefused {
                        file: "grid-mapfile",
                        reason: format!("DN {:?}: {e}", identity.subject()),
                    }
                })?;
                let mapped = list
                    .iter()
                    .map(|a| account_name("grid-mapfile", a).map(MappedAccount::Local))
                    .collect::<Result<Vec<_>, _>>()?;
                let _ = writeln!(grid, "{}", gridmap::format_line(&dn, &mapped));
            }
            IdentityKind::Token => {
                let _ = writeln!(
                    tokens,
                    "{} {} {}",
                    tokenmap::quote(identity.issuer()),
                    tokenmap::quote(identity.subject()),
                    list.join(",")
                );
            }
        }
    }

    let mut suspended = String::new();
    for target in &state.suspensions {
        let entry = match target {
            SuspensionTarget::Account(a) => Suspended::Account(a.clone()),
            SuspensionTarget::Identity(k) => match k.kind() {
                IdentityKind::Dn => {
                    Suspended::Dn(DistinguishedName::parse(k.subject()).map_err(|e| {
                        StoreError::ExportRefused {
                            file: "suspended",
                            reason: format!("DN {:?}: {e}", k.subject()),
                        }
                    })?)
                }
                IdentityKind::Token => Suspended::Token {
                    issuer: k.issuer().to_string(),
                    subject: k.subject().to_string(),
                },
            },
        };
        let _ = writeln!(suspended, "{entry}");
    }

    let passwd: Vec<PasswdEntry> = state
        .accounts
        .iter()
        .map(|a| PasswdEntry {
            name: a.name.clone(),
            uid: a.uid,
            gid: a.gid,
            gecos: a.gecos.clone(),
            dir: a.home.clone(),
            shell: a.shell.clone(),
        })
        .collect();
    let group: Vec<GroupEntry> = state
        .accounts
        .iter()
        .map(|a| GroupEntry {
            name: a.name.clone(),
            gid: a.gid,
            members: Vec::new(),
        })
        .collect();

    // parse everything back as a node would
    let parsed = GridMapfile::parse(&grid).map_err(|e| refused("grid-mapfile", &e))?;
    if let Some(d) = parsed.duplicates().first() {
        return Err(StoreError::ExportRefused {
            file: "grid-mapfile",
            reason: format!(
                "line {} maps the DN of line {} again (two identities that a node takes for one DN: {})",
                d.line,
                d.first_line,
                d.dn.to_slash()
            ),
        });
    }
    TokenMapfile::parse(&tokens).map_err(|e| refused("token-mapfile", &e))?;
    SuspensionList::parse(&suspended).map_err(|e| refused("suspended", &e))?;
    let nss_passwd =
        without_trailer::<PasswdTable>("nss-passwd", &nsscache::render_passwd(&passwd))?;
    let nss_group = without_trailer::<GroupTable>("nss-group", &nsscache::render_group(&group))?;
    // an account with a system uid or gid (or named after a system group: its private group
    // would carry the name) would make every node refuse the bundle
    below_floor("nss-passwd", floor.passwd_refusals(&passwd))?;
    below_floor("nss-group", floor.group_refusals(&group))?;

    Ok(Bundle {
        revoked: state.revoked.clone(),
        serial: state.serial,
        generated: state.changed,
        files: ExportFiles {
            grid_mapfile: grid,
            token_mapfile: tokens,
            suspended,
            nss_passwd,
            nss_group,
        },
        passwd,
        group,
        floor: *floor,
    })
}

/// Check a rendered NSS cache file (trailer included) as the reader would, and return its
/// lines without the trailer (the installer on the node writes its own).
fn without_trailer<T: CacheTable>(file: &'static str, full: &str) -> Result<String, StoreError> {
    T::parse(full).map_err(|e| StoreError::ExportRefused {
        file,
        reason: e.to_string(),
    })?;
    let body_end = full
        .strip_suffix('\n')
        .and_then(|s| s.rfind('\n'))
        .map_or(0, |i| i + 1);
    Ok(full[..body_end].to_string())
}

impl Bundle {
    /// The response body of `GET /export/v1/bundle`.
    pub fn to_json(&self, portal_url: &str) -> Vec<u8> {
        self.to_json_with(portal_url, None)
    }

    /// The bundle's JSON; with the SSH CA's files, format version 2 (`ssh-ca-keys` and
    /// `ssh-krl`, base64, with their digests: EXPORT.md), else version 1.
    pub fn to_json_with(&self, portal_url: &str, ssh: Option<&SshExport>) -> Vec<u8> {
        let generated = time::OffsetDateTime::from_unix_timestamp(self.generated)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".into());
        let json = BundleJson {
            format: FORMAT,
            version: if ssh.is_some() { 2 } else { VERSION },
            serial: self.serial,
            generated,
            portal: portal_url,
            files: &self.files,
            sha256: self.files.map(|t| sha256_hex(t.as_bytes())),
        };
        // serialising plain strings and integers cannot fail
        let mut value = serde_json::to_value(&json).unwrap_or_default();
        if let Some(ssh) = ssh {
            use base64::Engine as _;
            let krl = base64::engine::general_purpose::STANDARD.encode(&ssh.krl);
            value["files"]["ssh-ca-keys"] = serde_json::Value::from(ssh.ca_keys.clone());
            value["files"]["ssh-krl"] = serde_json::Value::from(krl);
            value["sha256"]["ssh-ca-keys"] =
                serde_json::Value::from(sha256_hex(ssh.ca_keys.as_bytes()));
            value["sha256"]["ssh-krl"] = serde_json::Value::from(sha256_hex(&ssh.krl));
        }
        let mut body = serde_json::to_vec_pretty(&value).unwrap_or_default();
        body.push(b'\n');
        body
    }

    /// Install the files into `dir` (the portal's own node), in the order of EXPORT.md:
    /// the suspension list first, then the token map, the grid-mapfile, the NSS cache.
    pub fn install(&self, dir: &Path) -> Result<(), InstallError> {
        for (name, text) in [
            (SUSPENDED_FILE, &self.files.suspended),
            (TOKEN_MAPFILE, &self.files.token_mapfile),
            (GRID_MAPFILE, &self.files.grid_mapfile),
        ] {
            let path = dir.join(name);
            write_atomic(&path, text.as_bytes())
                .map_err(|source| InstallError::Io { path, source })?;
        }
        let nss = |source| InstallError::Nss {
            dir: dir.to_path_buf(),
            source,
        };
        nsscache::write_passwd(dir, &self.passwd, &self.floor).map_err(nss)?;
        nsscache::write_group(dir, &self.group, &self.floor).map_err(nss)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default floor, with a group database of Debian's system groups.
    fn floor() -> IdFloor {
        IdFloor::default().with_group_database(|n| match n {
            "root" => Some(0),
            "sudo" => Some(27),
            _ => None,
        })
    }

    fn account(name: &str, uid: u32) -> Account {
        Account {
            name: AccountName::parse(name).unwrap(),
            uid,
            gid: uid,
            gecos: format!("{name} (portal)"),
            home: format!("/home/{name}"),
            shell: "/bin/bash".into(),
        }
    }

    #[test]
    fn renders_every_file_in_its_syntax() {
        let dn =
            IdentityKey::dn("/DC=org/DC=cilogon/C=US/O=Example/CN=Jane \"J\" Doe A123").unwrap();
        let tok = IdentityKey::token(
            "https://cilogon.org",
            "http://cilogon.org/serverA/users/123",
        )
        .unwrap();
        let state = ExportState {
            serial: 3,
            changed: 1_795_000_000,
            accounts: vec![account("jdoe", 60001)],
            active_links: vec![
                (dn.clone(), "jdoe".into()),
                (tok.clone(), "jdoe".into()),
                (dn, "jdoe2".into()),
            ],
            suspensions: vec![
                SuspensionTarget::Account(AccountName::parse("mallory").unwrap()),
                SuspensionTarget::Identity(tok),
            ],
            revoked: vec![],
        };
        let b = build(&state, &floor()).unwrap();
        assert_eq!(
            b.files.grid_mapfile,
            "\"/DC=org/DC=cilogon/C=US/O=Example/CN=Jane \\\"J\\\" Doe A123\" jdoe,jdoe2\n"
        );
        assert_eq!(
            b.files.token_mapfile,
            "\"https://cilogon.org\" \"http://cilogon.org/serverA/users/123\" jdoe\n"
        );
        assert_eq!(
            b.files.suspended,
            "account mallory\ntoken \"https://cilogon.org\" \"http://cilogon.org/serverA/users/123\"\n"
        );
        assert_eq!(
            b.files.nss_passwd,
            "jdoe:x:60001:60001:jdoe (portal):/home/jdoe:/bin/bash\n"
        );
        assert_eq!(b.files.nss_group, "jdoe:x:60001:\n");

        let json: serde_json::Value =
            serde_json::from_slice(&b.to_json("https://p.example")).unwrap();
        assert_eq!(json["format"], "hpccert-export");
        assert_eq!(json["version"], 1);
        assert_eq!(json["serial"], 3);
        assert_eq!(json["portal"], "https://p.example");
        assert_eq!(json["generated"], "2026-11-18T11:06:40Z");
        for name in [
            "grid-mapfile",
            "token-mapfile",
            "suspended",
            "nss-passwd",
            "nss-group",
        ] {
            let text = json["files"][name].as_str().unwrap();
            assert_eq!(json["sha256"][name], sha256_hex(text.as_bytes()), "{name}");
        }
    }

    #[test]
    fn an_empty_portal_exports_empty_files() {
        let b = build(&ExportState::default(), &floor()).unwrap();
        assert_eq!(
            b.files.map(String::len),
            ExportFiles {
                grid_mapfile: 0,
                token_mapfile: 0,
                suspended: 0,
                nss_passwd: 0,
                nss_group: 0
            }
        );
    }

    #[test]
    fn refuses_what_a_node_would_refuse() {
        let mut bad = account("eve", 60002);
        bad.gecos = "Eve: the attacker".into();
        let e = build(
            &ExportState {
                accounts: vec![bad],
                ..ExportState::default()
            },
            &floor(),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::ExportRefused {
                    file: "nss-passwd",
                    ..
                }
            ),
            "{e}"
        );
        let root = account("toor", 0);
        let e = build(
            &ExportState {
                accounts: vec![root],
                ..ExportState::default()
            },
            &floor(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("nss-passwd"), "{e}");
    }

    #[test]
    fn accounts_in_the_system_range_are_never_exported() {
        let refused = |accounts: Vec<Account>, floor: &IdFloor| {
            build(
                &ExportState {
                    accounts,
                    ..ExportState::default()
                },
                floor,
            )
            .unwrap_err()
            .to_string()
        };
        let e = refused(vec![account("jdoe", 60001), account("svc", 999)], &floor());
        assert!(e.contains("nss-passwd"), "{e}");
        assert!(
            e.contains("line 2: user svc (uid 999) is below the floor 1000"),
            "{e}"
        );
        let mut wheel = account("eve", 60002);
        wheel.gid = 10;
        let e = refused(vec![wheel], &floor());
        assert!(
            e.contains("line 1: user eve: its primary group gid 10 is below the floor 1000"),
            "{e}"
        );
        // an account named after a system group exports that group's name as its own
        let e = refused(vec![account("sudo", 60003)], &floor());
        assert!(e.contains("nss-group"), "{e}");
        assert!(
            e.contains("line 1: group sudo (gid 60003) is the system group sudo (gid 27"),
            "{e}"
        );
        // the portal's own floor decides
        let e = refused(vec![account("jdoe", 60001)], &IdFloor::new(60_002));
        assert!(e.contains("below the floor 60002"), "{e}");
        build(
            &ExportState {
                accounts: vec![account("old", 600)],
                ..ExportState::default()
            },
            &IdFloor::new(500),
        )
        .unwrap();
    }

    #[test]
    fn installs_files_that_the_node_reads() {
        let dir = tempfile::tempdir().unwrap();
        let dn = IdentityKey::dn("/DC=org/CN=Jane").unwrap();
        let b = build(
            &ExportState {
                serial: 1,
                accounts: vec![account("jdoe", 60001)],
                active_links: vec![(dn, "jdoe".into())],
                ..ExportState::default()
            },
            &floor(),
        )
        .unwrap();
        b.install(dir.path()).unwrap();
        let g = GridMapfile::load(&dir.path().join(GRID_MAPFILE)).unwrap();
        assert_eq!(g.len(), 1);
        let text = std::fs::read_to_string(dir.path().join("passwd")).unwrap();
        assert_eq!(
            PasswdTable::parse(&text)
                .unwrap()
                .by_uid(60001)
                .unwrap()
                .name
                .as_str(),
            "jdoe"
        );
    }
}
