//! The mapping portal's export bundle, format version 1 (`mapping-portal/EXPORT.md`): what a
//! portal serves at `GET /export/v1/bundle` and `gridmap-tool sync` installs.
//!
//! [`Bundle::parse`] is the one check of a bundle, shared by the portal (before it serves one)
//! and the installer (before it changes anything): the JSON shape (exactly the members the
//! format names, nothing else), `format`, `version`, `generated` (RFC 3339), every file's
//! SHA-256 against `sha256`, and every file parsed with the core parser of the file it becomes
//! ([`GridMapfile`], [`TokenMapfile`], [`SuspensionList`], NSS passwd and group lines through
//! [`nsscache::parse_passwd_lines`] / [`nsscache::parse_group_lines`]). What the installer
//! checks beyond the body, against its own state, is here too: [`check_etag`] (the body's
//! SHA-256 is the ETag), [`Bundle::check_serial`] (never a lower serial than the last one
//! installed, so a replayed old bundle cannot undo a suspension) and [`Bundle::check_id_floor`]
//! (no account or group in the system range of the node's `[mapping] nss_min_id`).
//!
//! Parse, don't validate: a [`Bundle`] holds the files' text (installed byte for byte) and
//! their parsed forms; errors name the file and the line.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::host::nsscache::{self, GroupEntry, IdFloor, NssCacheError, PasswdEntry};
use crate::identity::gridmap::{GridMapfile, LineError};
use crate::identity::suspension::SuspensionList;
use crate::identity::tokenmap::TokenMapfile;

/// The value of the bundle's `format` member.
pub const FORMAT: &str = "hpccert-export";
/// The newest format version this code reads and writes: 2 adds the SSH CA's files
/// (`ssh-ca-keys`, `ssh-krl`), sent by a portal with `[portal.ssh_ca]`.
pub const VERSION: u64 = 2;
/// The versions this code reads.
pub const VERSIONS: [u64; 2] = [1, 2];
/// Where a portal serves the bundle, relative to its base URL.
pub const PATH: &str = "/export/v1/bundle";
/// Bundles larger than this are refused (an installer stops reading here).
pub const MAX_BUNDLE_BYTES: usize = 64 * 1024 * 1024;

/// One member of `files` (and of `sha256`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportFile {
    GridMapfile,
    TokenMapfile,
    Suspended,
    NssPasswd,
    NssGroup,
}

impl ExportFile {
    /// Every member, in the order an installer writes them (EXPORT.md "Installing").
    pub const INSTALL_ORDER: [Self; 5] = [
        Self::Suspended,
        Self::TokenMapfile,
        Self::GridMapfile,
        Self::NssPasswd,
        Self::NssGroup,
    ];

    /// The member's name in the bundle.
    pub fn name(self) -> &'static str {
        match self {
            Self::GridMapfile => "grid-mapfile",
            Self::TokenMapfile => "token-mapfile",
            Self::Suspended => "suspended",
            Self::NssPasswd => "nss-passwd",
            Self::NssGroup => "nss-group",
        }
    }
}

impl std::fmt::Display for ExportFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a bundle is refused. Every variant means: install nothing.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error("the bundle is larger than {MAX_BUNDLE_BYTES} bytes")]
    TooLarge,
    #[error("the bundle is not the JSON object of format {FORMAT} v{VERSION}: {0}")]
    Shape(String),
    #[error("the bundle's format is {0:?}, not {FORMAT:?}")]
    Format(String),
    #[error("the bundle is version {0}; this tool reads versions 1 and 2")]
    Version(u64),
    #[error("a version {version} bundle {problem}")]
    SshFiles { version: u64, problem: &'static str },
    #[error("files.{member}: {message}")]
    SshFile {
        member: &'static str,
        message: String,
    },
    #[error("the bundle's `generated` {0:?} is not an RFC 3339 time")]
    Generated(String),
    #[error("sha256.{file} is not 64 hexadecimal digits")]
    DigestSyntax { file: ExportFile },
    #[error("files.{file}: its SHA-256 is {found}, but sha256.{file} says {stated}")]
    DigestMismatch {
        file: ExportFile,
        stated: String,
        found: String,
    },
    #[error("files.{file}: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    File {
        file: ExportFile,
        errors: Vec<LineError>,
    },
    #[error("files.{file}: {message}")]
    NssFile { file: ExportFile, message: String },
    #[error("{}", .0.join("; "))]
    SystemIds(Vec<String>),
    #[error(
        "the bundle's serial {found} is lower than the serial {installed} installed last: a replayed or older bundle is never installed"
    )]
    SerialWentBack { found: u64, installed: u64 },
    #[error("the response has no ETag (the portal must send ETag: \"<SHA-256 of the body>\")")]
    MissingEtag,
    #[error("the ETag {0:?} is not a strong ETag of a SHA-256 (\"<64 hex digits>\")")]
    EtagSyntax(String),
    #[error(
        "the body's SHA-256 is {found} but the ETag says {stated}: the download is corrupted or truncated"
    )]
    EtagMismatch { stated: String, found: String },
}

/// The files of a bundle, as text: the JSON `files` and `sha256` objects have exactly these
/// members.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Files {
    #[serde(rename = "grid-mapfile")]
    pub grid_mapfile: String,
    #[serde(rename = "token-mapfile")]
    pub token_mapfile: String,
    pub suspended: String,
    #[serde(rename = "nss-passwd")]
    pub nss_passwd: String,
    #[serde(rename = "nss-group")]
    pub nss_group: String,
    /// Version 2: the SSH CA's public keys (`TrustedUserCAKeys` text).
    #[serde(
        rename = "ssh-ca-keys",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ssh_ca_keys: Option<String>,
    /// Version 2: the KRL, base64 (its digest is of the decoded bytes).
    #[serde(rename = "ssh-krl", default, skip_serializing_if = "Option::is_none")]
    pub ssh_krl: Option<String>,
}

impl Files {
    /// The text of one member.
    pub fn text(&self, file: ExportFile) -> &str {
        match file {
            ExportFile::GridMapfile => &self.grid_mapfile,
            ExportFile::TokenMapfile => &self.token_mapfile,
            ExportFile::Suspended => &self.suspended,
            ExportFile::NssPasswd => &self.nss_passwd,
            ExportFile::NssGroup => &self.nss_group,
        }
    }

    /// The `sha256` object for these files.
    pub fn digests(&self) -> Files {
        let d = |f| sha256_hex(self.text(f).as_bytes());
        Files {
            grid_mapfile: d(ExportFile::GridMapfile),
            token_mapfile: d(ExportFile::TokenMapfile),
            suspended: d(ExportFile::Suspended),
            nss_passwd: d(ExportFile::NssPasswd),
            nss_group: d(ExportFile::NssGroup),
            ssh_ca_keys: self.ssh_ca_keys.as_ref().map(|k| sha256_hex(k.as_bytes())),
            ssh_krl: self.ssh_krl.as_ref().map(|k| {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(k)
                    .unwrap_or_default();
                sha256_hex(&bytes)
            }),
        }
    }
}

/// The SSH CA's files of a version 2 bundle, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshFiles {
    /// The CA public keys, one OpenSSH public key per line (installed byte for byte).
    pub ca_keys: String,
    /// The KRL's bytes.
    pub krl: Vec<u8>,
}

fn check_ssh_files(
    version: u64,
    files: &Files,
    digests: &Files,
) -> Result<Option<SshFiles>, ExportError> {
    let (keys, krl, keys_digest, krl_digest) = match (
        version,
        &files.ssh_ca_keys,
        &files.ssh_krl,
        &digests.ssh_ca_keys,
        &digests.ssh_krl,
    ) {
        (1, None, None, None, None) => return Ok(None),
        (1, ..) => {
            return Err(ExportError::SshFiles {
                version,
                problem: "has SSH CA files (only version 2 has them)",
            });
        }
        (_, Some(k), Some(r), Some(kd), Some(rd)) => (k, r, kd, rd),
        _ => {
            return Err(ExportError::SshFiles {
                version,
                problem: "lacks files.ssh-ca-keys, files.ssh-krl or their sha256",
            });
        }
    };
    let file_error =
        |member: &'static str, message: String| ExportError::SshFile { member, message };
    use base64::Engine as _;
    let krl_bytes = base64::engine::general_purpose::STANDARD
        .decode(krl)
        .map_err(|e| file_error("ssh-krl", format!("not base64: {e}")))?;
    for (member, stated, found) in [
        ("ssh-ca-keys", keys_digest, sha256_hex(keys.as_bytes())),
        ("ssh-krl", krl_digest, sha256_hex(&krl_bytes)),
    ] {
        if !stated.eq_ignore_ascii_case(&found) {
            return Err(file_error(
                member,
                format!("its SHA-256 is {found}, but sha256.{member} says {stated}"),
            ));
        }
    }
    line_endings(keys).map_err(|e| file_error("ssh-ca-keys", e.to_string()))?;
    let mut count = 0;
    for (n, line) in keys.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        ssh_key::PublicKey::from_openssh(line).map_err(|e| {
            file_error(
                "ssh-ca-keys",
                format!("line {}: not an OpenSSH public key: {e}", n + 1),
            )
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(file_error("ssh-ca-keys", "no CA key".into()));
    }
    crate::trust::sshca::krl::parse(&krl_bytes)
        .map_err(|e| file_error("ssh-krl", e.to_string()))?;
    Ok(Some(SshFiles {
        ca_keys: keys.clone(),
        krl: krl_bytes,
    }))
}

/// The bundle's JSON object, member for member.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    format: String,
    version: u64,
    serial: u64,
    generated: String,
    portal: String,
    files: Files,
    sha256: Files,
}

/// A bundle that passed every check of its own content.
#[derive(Debug, Clone)]
#[must_use]
pub struct Bundle {
    pub serial: u64,
    /// When the portal made it (RFC 3339, as sent).
    pub generated: String,
    /// The portal's own URL, as it names itself.
    pub portal: String,
    /// The files' text, installed byte for byte.
    pub files: Files,
    pub grid_mapfile: GridMapfile,
    pub token_mapfile: TokenMapfile,
    pub suspended: SuspensionList,
    pub passwd: Vec<PasswdEntry>,
    pub group: Vec<GroupEntry>,
    /// Version 2: the SSH CA's keys and KRL.
    pub ssh: Option<SshFiles>,
}

impl Bundle {
    /// Check and parse a bundle's body (see the module documentation for what is checked).
    pub fn parse(body: &[u8]) -> Result<Self, ExportError> {
        if body.len() > MAX_BUNDLE_BYTES {
            return Err(ExportError::TooLarge);
        }
        // the shape first; then the identification, so that another format or version is
        // named as such rather than as a shape error where possible
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| ExportError::Shape(e.to_string()))?;
        if let Some(format) = value.get("format").and_then(|f| f.as_str())
            && format != FORMAT
        {
            return Err(ExportError::Format(format.to_string()));
        }
        if let Some(version) = value.get("version").and_then(serde_json::Value::as_u64)
            && !VERSIONS.contains(&version)
        {
            return Err(ExportError::Version(version));
        }
        // from the bytes again (not the Value): serde_json refuses duplicate members there
        let wire: Wire =
            serde_json::from_slice(body).map_err(|e| ExportError::Shape(e.to_string()))?;
        if wire.format != FORMAT {
            return Err(ExportError::Format(wire.format));
        }
        if !VERSIONS.contains(&wire.version) {
            return Err(ExportError::Version(wire.version));
        }
        let ssh = check_ssh_files(wire.version, &wire.files, &wire.sha256)?;
        if time::OffsetDateTime::parse(
            &wire.generated,
            &time::format_description::well_known::Rfc3339,
        )
        .is_err()
        {
            return Err(ExportError::Generated(wire.generated));
        }
        for file in ExportFile::INSTALL_ORDER {
            let stated = wire.sha256.text(file);
            if stated.len() != 64 || !stated.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ExportError::DigestSyntax { file });
            }
            let found = sha256_hex(wire.files.text(file).as_bytes());
            if !stated.eq_ignore_ascii_case(&found) {
                return Err(ExportError::DigestMismatch {
                    file,
                    stated: stated.to_string(),
                    found,
                });
            }
        }
        let files = wire.files;
        let text_errors = |file: ExportFile| -> Result<(), ExportError> {
            line_endings(files.text(file)).map_err(|e| ExportError::File {
                file,
                errors: vec![e],
            })
        };
        let lines = |file: ExportFile| move |errors| ExportError::File { file, errors };
        text_errors(ExportFile::GridMapfile)?;
        let grid_mapfile =
            GridMapfile::parse(&files.grid_mapfile).map_err(lines(ExportFile::GridMapfile))?;
        text_errors(ExportFile::TokenMapfile)?;
        let token_mapfile =
            TokenMapfile::parse(&files.token_mapfile).map_err(lines(ExportFile::TokenMapfile))?;
        text_errors(ExportFile::Suspended)?;
        let suspended =
            SuspensionList::parse(&files.suspended).map_err(lines(ExportFile::Suspended))?;
        let passwd = nsscache::parse_passwd_lines(&files.nss_passwd)
            .map_err(|e| nss_error(ExportFile::NssPasswd, e))?;
        let group = nsscache::parse_group_lines(&files.nss_group)
            .map_err(|e| nss_error(ExportFile::NssGroup, e))?;
        Ok(Self {
            serial: wire.serial,
            generated: wire.generated,
            portal: wire.portal,
            files,
            grid_mapfile,
            token_mapfile,
            suspended,
            passwd,
            group,
            ssh,
        })
    }

    /// Refuse NSS entries in the system range of `floor` (`[mapping] nss_min_id`): an
    /// account or group id below it, a group named after a system group. Each refusal names
    /// the member and its line (`nss-group line 3: group wheel (gid 10) is below the floor
    /// 1000`).
    pub fn check_id_floor(&self, floor: &IdFloor) -> Result<(), ExportError> {
        let at = |file: ExportFile| {
            move |(i, why): (usize, String)| format!("{file} line {}: {why}", i + 1)
        };
        let refusals: Vec<String> = floor
            .passwd_refusals(&self.passwd)
            .into_iter()
            .map(at(ExportFile::NssPasswd))
            .chain(
                floor
                    .group_refusals(&self.group)
                    .into_iter()
                    .map(at(ExportFile::NssGroup)),
            )
            .collect();
        if refusals.is_empty() {
            Ok(())
        } else {
            Err(ExportError::SystemIds(refusals))
        }
    }

    /// Refuse a serial lower than `installed`, the serial installed last (none: anything goes).
    pub fn check_serial(&self, installed: Option<u64>) -> Result<(), ExportError> {
        match installed {
            Some(installed) if self.serial < installed => Err(ExportError::SerialWentBack {
                found: self.serial,
                installed,
            }),
            _ => Ok(()),
        }
    }
}

/// A file's text must be lines that each end in `\n`, without carriage returns.
fn line_endings(text: &str) -> Result<(), LineError> {
    let error = |line, message: &str| LineError {
        path: None,
        line,
        message: message.to_string(),
    };
    if let Some(n) = text.lines().position(|l| l.contains('\r')) {
        return Err(error(n + 1, "carriage return (lines end in \\n)"));
    }
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(error(
            text.lines().count(),
            "the last line does not end in a newline (truncated?)",
        ));
    }
    Ok(())
}

fn nss_error(file: ExportFile, e: NssCacheError) -> ExportError {
    match e {
        NssCacheError::Lines(errors) => ExportError::File { file, errors },
        other => ExportError::NssFile {
            file,
            message: other.to_string(),
        },
    }
}

/// The body of a bundle for `files` (what a portal serves; tests build bundles with it). The
/// digests are computed here; nothing is checked (the portal runs [`Bundle::parse`] on the
/// result before serving it).
pub fn render(serial: u64, generated: &str, portal: &str, files: Files) -> Vec<u8> {
    let wire = Wire {
        format: FORMAT.to_string(),
        version: if files.ssh_ca_keys.is_some() || files.ssh_krl.is_some() {
            2
        } else {
            1
        },
        serial,
        generated: generated.to_string(),
        portal: portal.to_string(),
        sha256: files.digests(),
        files,
    };
    // a struct of strings and integers always serialises
    serde_json::to_vec_pretty(&wire).unwrap_or_default()
}

/// The ETag a portal sends for `body`: the quoted hex SHA-256.
pub fn etag(body: &[u8]) -> String {
    format!("\"{}\"", sha256_hex(body))
}

/// Check that `etag` (the response header, `None` when absent) is the SHA-256 of `body`.
pub fn check_etag(body: &[u8], etag: Option<&str>) -> Result<(), ExportError> {
    let etag = etag.ok_or(ExportError::MissingEtag)?;
    let hex = etag
        .strip_prefix('"')
        .and_then(|e| e.strip_suffix('"'))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| ExportError::EtagSyntax(etag.to_string()))?;
    let found = sha256_hex(body);
    if hex.eq_ignore_ascii_case(&found) {
        Ok(())
    } else {
        Err(ExportError::EtagMismatch {
            stated: hex.to_string(),
            found,
        })
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    openssl::sha::sha256(data)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn files() -> Files {
        Files {
            grid_mapfile: "\"/DC=org/DC=cilogon/C=US/O=Example/CN=Jane Doe A123\" jdoe\n".into(),
            token_mapfile:
                "\"https://cilogon.org\" \"http://cilogon.org/serverA/users/123\" jdoe\n".into(),
            suspended: "account mallory\n".into(),
            nss_passwd: "jdoe:x:60001:60001:Jane Doe (portal):/home/jdoe:/bin/bash\n".into(),
            nss_group: "jdoe:x:60001:\n".into(),
            ssh_ca_keys: None,
            ssh_krl: None,
        }
    }

    fn body(files: Files) -> Vec<u8> {
        render(
            42,
            "2026-11-24T12:00:00Z",
            "https://portal.example.org",
            files,
        )
    }

    fn edit(f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(&body(files())).unwrap();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn sha256_of_abc() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_example_of_export_md_parses() {
        let b = Bundle::parse(&body(files())).unwrap();
        assert_eq!(b.serial, 42);
        assert_eq!(b.grid_mapfile.len(), 1);
        assert_eq!(b.token_mapfile.len(), 1);
        assert_eq!(b.suspended.entries().len(), 1);
        assert_eq!(b.passwd[0].uid, 60001);
        assert_eq!(b.group[0].name.as_str(), "jdoe");
        assert_eq!(b.files, files());
        // empty files are fine
        let empty = Bundle::parse(&body(Files::default())).unwrap();
        assert!(empty.passwd.is_empty());
    }

    #[test]
    fn system_ids_are_refused_with_member_and_line() {
        let floor = IdFloor::default().with_group_database(|n| match n {
            "sudo" => Some(27),
            _ => None,
        });
        let b = Bundle::parse(&body(files())).unwrap();
        b.check_id_floor(&floor).unwrap();
        let mut f = files();
        f.nss_passwd
            .push_str("daemon2:x:2:60001::/home/daemon2:/bin/sh\n");
        f.nss_group = "jdoe:x:60001:\nadm:x:4:jdoe\nsudo:x:60002:jdoe\n".into();
        let b = Bundle::parse(&body(f)).unwrap();
        let e = b.check_id_floor(&floor).unwrap_err().to_string();
        assert_eq!(
            e,
            "nss-passwd line 2: user daemon2 (uid 2) is below the floor 1000; \
             nss-group line 2: group adm (gid 4) is below the floor 1000; \
             nss-group line 3: group sudo (gid 60002) is the system group sudo (gid 27, below the floor 1000) and would add jdoe to it"
        );
        // a lower floor of the node's lets what it allows through
        let mut f = files();
        f.nss_passwd = "old:x:600:600::/home/old:/bin/sh\n".into();
        f.nss_group = "old:x:600:\n".into();
        let b = Bundle::parse(&body(f)).unwrap();
        assert!(b.check_id_floor(&floor).is_err());
        b.check_id_floor(&IdFloor::new(500)).unwrap();
    }

    #[test]
    fn shape_format_version_and_time_are_checked() {
        let e = Bundle::parse(b"{\"format\": \"hpccert-export\", \"version\": 1, ").unwrap_err();
        assert!(matches!(e, ExportError::Shape(_)), "{e}");
        let e = Bundle::parse(b"[]").unwrap_err();
        assert!(matches!(e, ExportError::Shape(_)), "{e}");
        let e = Bundle::parse(&edit(|v| v["format"] = "other".into())).unwrap_err();
        assert!(matches!(e, ExportError::Format(_)), "{e}");
        let e = Bundle::parse(&edit(|v| v["version"] = 3.into())).unwrap_err();
        assert!(matches!(e, ExportError::Version(3)), "{e}");
        assert!(e.to_string().contains("reads versions 1 and 2"), "{e}");
        // version 2 needs the SSH CA's files, version 1 must not have them
        let e = Bundle::parse(&edit(|v| v["version"] = 2.into())).unwrap_err();
        assert!(matches!(e, ExportError::SshFiles { version: 2, .. }), "{e}");
        let e = Bundle::parse(&edit(|v| {
            v["files"]["ssh-ca-keys"] = "".into();
        }))
        .unwrap_err();
        assert!(matches!(e, ExportError::SshFiles { version: 1, .. }), "{e}");
        let e = Bundle::parse(&edit(|v| v["generated"] = "yesterday".into())).unwrap_err();
        assert!(matches!(e, ExportError::Generated(_)), "{e}");
        let e = Bundle::parse(&edit(|v| v["extra"] = 1.into())).unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
        let e = Bundle::parse(&edit(|v| {
            v["files"].as_object_mut().unwrap().remove("nss-group");
        }))
        .unwrap_err();
        assert!(e.to_string().contains("nss-group"), "{e}");
        let e = Bundle::parse(&edit(|v| v["serial"] = (-1).into())).unwrap_err();
        assert!(matches!(e, ExportError::Shape(_)), "{e}");
        // a duplicate member is refused, not "the last one wins"
        let text = String::from_utf8(body(files())).unwrap();
        let dup = text.replacen("\"serial\": 42,", "\"serial\": 42, \"serial\": 43,", 1);
        assert!(Bundle::parse(dup.as_bytes()).is_err());
    }

    #[test]
    fn every_digest_is_checked() {
        let e = Bundle::parse(&edit(|v| {
            v["files"]["suspended"] = "".into();
        }))
        .unwrap_err();
        assert!(
            matches!(
                e,
                ExportError::DigestMismatch {
                    file: ExportFile::Suspended,
                    ..
                }
            ),
            "{e}"
        );
        let e = Bundle::parse(&edit(|v| v["sha256"]["nss-group"] = "abc".into())).unwrap_err();
        assert!(matches!(e, ExportError::DigestSyntax { .. }), "{e}");
    }

    #[test]
    fn each_file_parses_with_its_parser_and_errors_name_file_and_line() {
        type Change = fn(&mut Files);
        let cases: [(Change, &str); 6] = [
            (
                |f| f.grid_mapfile.push_str("\"/O=Grid/CN=x\n"),
                "files.grid-mapfile: line 2:",
            ),
            (
                |f| f.token_mapfile = "\"https://i\" jdoe\n".into(),
                "files.token-mapfile: line 1:",
            ),
            (
                |f| f.suspended = "# c\nsuspend everyone\n".into(),
                "files.suspended: line 2:",
            ),
            (
                |f| f.nss_passwd.push_str("root:x:0:0:root:/root:/bin/sh\n"),
                "files.nss-passwd: line 2:",
            ),
            (
                |f| f.nss_group.push_str("jdoe:x:60002:\n"),
                "files.nss-group: line 2: duplicate group",
            ),
            (
                |f| f.grid_mapfile = "\"/O=Grid/CN=x\" jdoe".into(),
                "files.grid-mapfile: line 1: the last line does not end in a newline",
            ),
        ];
        for (change, expected) in cases {
            let mut f = files();
            change(&mut f);
            let e = Bundle::parse(&body(f)).unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
        }
    }

    #[test]
    fn serial_and_etag() {
        let body = body(files());
        let b = Bundle::parse(&body).unwrap();
        b.check_serial(None).unwrap();
        b.check_serial(Some(42)).unwrap();
        let e = b.check_serial(Some(43)).unwrap_err();
        assert!(e.to_string().contains("lower than the serial 43"), "{e}");

        let tag = etag(&body);
        check_etag(&body, Some(&tag)).unwrap();
        check_etag(&body, Some(&tag.to_uppercase())).unwrap();
        assert!(matches!(
            check_etag(&body, None),
            Err(ExportError::MissingEtag)
        ));
        assert!(matches!(
            check_etag(&body, Some(&format!("W/{tag}"))),
            Err(ExportError::EtagSyntax(_))
        ));
        assert!(matches!(
            check_etag(&body[..body.len() - 1], Some(&tag)),
            Err(ExportError::EtagMismatch { .. })
        ));
    }
}
