//! `sync --from URL`: fetch the mapping portal's export bundle (`mapping-portal/EXPORT.md`)
//! and install it.
//!
//! Everything that can be checked is checked before the first file changes: the URL (HTTPS,
//! or plain HTTP to a loopback address only), the token file's permissions, the state file,
//! the site's static grid-mapfile, the response (status, size, ETag = SHA-256 of the body),
//! the bundle ([`Bundle::parse`]: shape, format, version, digests, every file with its core
//! parser), the serial against the last installed one, no NSS account or group in the system
//! range ([`Bundle::check_id_floor`]: an id below `[mapping] nss_min_id`, a group named after a
//! system group), the merged grid-mapfile and NSS tables, and that every target directory
//! exists. A refusal exits 2 and changes nothing.
//!
//! Installing replaces each file atomically (temporary file, fsync, rename) under that file's
//! own lock (the one `add`, `suspend` and the pool code take), in the order of EXPORT.md:
//! suspension list, token map, grid-mapfile, NSS passwd, NSS group, then the state file
//! (ETag, serial, URL, time). A file whose content is unchanged is not rewritten. If
//! installing fails in the middle (disk full, I/O error), the files written so far hold the
//! new content and the rest the old, each file whole; the state file still names the old
//! ETag and serial, so the next sync fetches and installs the whole bundle again. The whole
//! sync holds `.portal-sync.json.lock` beside the state file, so two syncs never interleave.

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use hpccert_core::config::Config;
use hpccert_core::host::atomic_file::{WriteLock, write_atomic};
use hpccert_core::host::export::{self, Bundle, ExportFile, MAX_BUNDLE_BYTES};
use hpccert_core::host::nsscache::{self, CacheTable, GroupTable, IdFloor, PasswdTable};
use hpccert_core::identity::gridmap::GridMapfile;
use hpccert_core::identity::suspension::SuspensionList;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH};
use serde::{Deserialize, Serialize};

use crate::cli::{GlobalArgs, SyncArgs};
use crate::settings::effective_config;

/// The state file's name in its directory.
pub const STATE_FILE: &str = ".portal-sync.json";

/// A bearer token: never printed, never logged.
struct BearerToken(String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// Where each file goes.
#[derive(Debug)]
struct Targets {
    /// The SSH CA's public keys and its KRL (version 2 bundles).
    ssh_ca_keys: PathBuf,
    ssh_krl: PathBuf,
    suspended: PathBuf,
    token_mapfile: Option<PathBuf>,
    grid_mapfile: PathBuf,
    nss_dir: PathBuf,
    state: PathBuf,
}

impl Targets {
    /// All under `dir`, or the configured paths with the state beside the grid-mapfile.
    fn new(config: &Config, dir: Option<&Path>) -> Self {
        match dir {
            Some(d) => Self {
                ssh_ca_keys: d.join(SSH_CA_KEYS_FILE),
                ssh_krl: d.join(SSH_KRL_FILE),
                suspended: d.join("suspended"),
                token_mapfile: Some(d.join("token-mapfile")),
                grid_mapfile: d.join("grid-mapfile"),
                nss_dir: d.join("nss"),
                state: d.join(STATE_FILE),
            },
            None => {
                let m = &config.mapping;
                Self {
                    ssh_ca_keys: config
                        .sshd
                        .trusted_user_ca_keys
                        .first()
                        .cloned()
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_SSH_CA_KEYS)),
                    ssh_krl: PathBuf::from(DEFAULT_SSH_KRL),
                    suspended: m.suspended_file.clone(),
                    token_mapfile: m.token_mapfile.clone(),
                    grid_mapfile: m.grid_mapfile.clone(),
                    nss_dir: m.nss_cache_dir.clone(),
                    state: parent(&m.grid_mapfile).join(STATE_FILE),
                }
            }
        }
    }
}

/// Where the SSH CA's files go under `--dir`.
const SSH_CA_KEYS_FILE: &str = "ssh-ca-keys.pub";
const SSH_KRL_FILE: &str = "ssh-revoked.krl";
/// Where they go without `--dir` (the drop-in for system OpenSSH names them): the CA keys to
/// the first `[sshd] trusted_user_ca_keys` file, if any.
const DEFAULT_SSH_CA_KEYS: &str = "/etc/hpccert/ssh-ca-keys.pub";
const DEFAULT_SSH_KRL: &str = "/etc/hpccert/ssh-revoked.krl";

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What was installed last (`DIR/.portal-sync.json`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    url: String,
    etag: String,
    serial: u64,
    portal: String,
    installed_at: String,
}

fn read_state(path: &Path) -> anyhow::Result<Option<State>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            anyhow!(
                "{}: cannot read the last sync's state ({e}); the last installed serial is unknown, so nothing is installed until the file is fixed or removed",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!("{}: {e}", path.display())),
    }
}

/// The bundle's URL: HTTPS, or HTTP to a loopback address. A URL without a path names a
/// portal: its bundle is at [`export::PATH`].
fn checked_url(s: &str) -> anyhow::Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(s).map_err(|e| anyhow!("bad URL {s:?}: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        bail!("{s}: credentials in the URL are refused (use --token-file)");
    }
    match url.scheme() {
        "https" => {}
        "http" if loopback(&url) => {}
        "http" => bail!(
            "{s}: plain http is refused except to a loopback address (127.0.0.1, ::1, localhost); use https"
        ),
        other => bail!("{s}: scheme {other} refused (https required)"),
    }
    if url.path() == "/" || url.path().is_empty() {
        url.set_path(export::PATH);
    }
    Ok(url)
}

fn loopback(url: &reqwest::Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// Refuse a secret file that others than its owner may read (as ssh refuses a key).
fn check_private(path: &Path, what: &str) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{}: permissions {mode:04o} are too open: the {what} must be readable by its owner only (chmod 600)",
            path.display()
        );
    }
    Ok(())
}

/// The token in `path`; refused when others than the owner may read it.
fn read_token(path: &Path) -> anyhow::Result<BearerToken> {
    check_private(path, "token file")?;
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let token = text.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!(
            "{}: expected one token (printable ASCII, no spaces)",
            path.display()
        );
    }
    Ok(BearerToken(token.to_string()))
}

/// How to reach the portal: the trusted CAs besides the built-in roots, the client identity.
#[derive(Default)]
struct Tls {
    roots: Vec<reqwest::Certificate>,
    identity: Option<reqwest::Identity>,
}

impl Tls {
    fn new(args: &SyncArgs) -> anyhow::Result<Self> {
        let mut tls = Self::default();
        if let Some(path) = &args.ca_file {
            let pem =
                std::fs::read(path).with_context(|| format!("--ca-file {}", path.display()))?;
            tls.roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| anyhow!("--ca-file {}: {}", path.display(), e.without_url()))?;
            if tls.roots.is_empty() {
                bail!("--ca-file {}: no certificate in the file", path.display());
            }
        }
        if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
            check_private(key, "client key")?;
            let mut pem =
                std::fs::read(cert).with_context(|| format!("--client-cert {}", cert.display()))?;
            pem.extend(
                std::fs::read(key).with_context(|| format!("--client-key {}", key.display()))?,
            );
            tls.identity = Some(reqwest::Identity::from_pem(&pem).map_err(|e| {
                anyhow!(
                    "--client-cert {} / --client-key {}: {}",
                    cert.display(),
                    key.display(),
                    e.without_url()
                )
            })?);
        }
        Ok(tls)
    }
}

/// The answer of the portal.
enum Fetched {
    Unchanged,
    Bundle { body: Vec<u8>, etag: Option<String> },
}

fn fetch(
    url: &reqwest::Url,
    token: Option<&BearerToken>,
    tls: Tls,
    if_none_match: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Fetched> {
    let mut builder = reqwest::blocking::Client::builder();
    for root in tls.roots {
        builder = builder.add_root_certificate(root);
    }
    if let Some(identity) = tls.identity {
        builder = builder.identity(identity);
    }
    let client = builder
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hpccert-gridmap-tool/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot make an HTTP client")?;
    let mut request = client.get(url.clone()).header(ACCEPT, "application/json");
    if let Some(token) = token {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.0))
            .map_err(|_| anyhow!("the token is not a valid header value"))?;
        value.set_sensitive(true);
        request = request.header(AUTHORIZATION, value);
    }
    if let Some(tag) = if_none_match {
        request = request.header(
            IF_NONE_MATCH,
            HeaderValue::from_str(tag).map_err(|_| anyhow!("the stored ETag is not valid"))?,
        );
    }
    let response = request
        .send()
        .map_err(|e| anyhow!("{url}: {}", e.without_url()))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        if if_none_match.is_none() {
            bail!("{url}: 304 Not Modified to a request without If-None-Match");
        }
        return Ok(Fetched::Unchanged);
    }
    if status != reqwest::StatusCode::OK {
        let mut reason = Vec::new();
        let _ = response.take(512).read_to_end(&mut reason);
        let reason = String::from_utf8_lossy(&reason);
        let line: String = reason
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        bail!(
            "{url}: HTTP {status}{}",
            if line.is_empty() {
                String::new()
            } else {
                format!(": {line}")
            }
        );
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case("application/json") {
        bail!("{url}: Content-Type {content_type:?}, expected application/json");
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BUNDLE_BYTES as u64)
    {
        bail!("{url}: the bundle is larger than {MAX_BUNDLE_BYTES} bytes");
    }
    let etag = response
        .headers()
        .get(ETAG)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut body = Vec::new();
    response
        .take(MAX_BUNDLE_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| anyhow!("{url}: reading the body: {e}"))?;
    if body.len() > MAX_BUNDLE_BYTES {
        bail!("{url}: the bundle is larger than {MAX_BUNDLE_BYTES} bytes");
    }
    Ok(Fetched::Bundle { body, etag })
}

/// A static file of the node's (`what`), which must parse with `parse`; its text ending in a
/// newline.
fn read_static_file<E: std::fmt::Display>(
    path: &Path,
    what: &str,
    parse: impl FnOnce(&str) -> Result<(), Vec<E>>,
) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{what} {}", path.display()))?;
    parse(&text).map_err(|errors| {
        anyhow!(
            "{what} {}: {}",
            path.display(),
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    Ok(if text.is_empty() || text.ends_with('\n') {
        text
    } else {
        text + "\n"
    })
}

/// The site's static grid-mapfile (must parse), ending in a newline.
fn read_static(path: &Path) -> anyhow::Result<String> {
    read_static_file(path, "static grid-mapfile", |t| {
        GridMapfile::parse(t).map(drop)
    })
}

/// The node's own suspension list (must parse), ending in a newline.
fn read_static_suspended(path: &Path) -> anyhow::Result<String> {
    read_static_file(path, "static suspension list", |t| {
        SuspensionList::parse(t).map(drop)
    })
}

/// The installed suspension list: the portal's as it is, or with the node's own entries first
/// (a suspension in either refuses).
fn merge_suspended(static_file: Option<(&Path, &str)>, url: &reqwest::Url, portal: &str) -> String {
    let Some((path, lines)) = static_file else {
        return portal.to_string();
    };
    format!(
        "# Installed by `gridmap-tool sync`: edit the static suspension list or the portal; changes here are lost at the next sync.\n\
         # static: {}\n{lines}# portal: {url}\n{portal}",
        path.display()
    )
}

/// The installed grid-mapfile: the static lines first, then the portal's (the first line for
/// a DN wins, so a DN in both keeps its static line), and the portal lines that are shadowed.
fn merge_gridmap(
    static_file: Option<(&Path, &str)>,
    url: &reqwest::Url,
    portal: &str,
) -> anyhow::Result<(String, Vec<String>)> {
    let mut text = String::from(
        "# Installed by `gridmap-tool sync`: edit the static grid-mapfile or the portal; changes here are lost at the next sync.\n",
    );
    if let Some((path, lines)) = static_file {
        text.push_str(&format!("# static: {}\n", path.display()));
        text.push_str(lines);
    }
    text.push_str(&format!("# portal: {url}\n"));
    let portal_first_line = text.lines().count() + 1;
    text.push_str(portal);
    let merged = GridMapfile::parse(&text).map_err(|errors| {
        anyhow!(
            "the merged grid-mapfile does not parse: {}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let shadowed = merged
        .duplicates()
        .iter()
        .filter(|d| d.first_line < portal_first_line && d.line >= portal_first_line)
        .map(|d| {
            format!(
                "portal line {} ({}) is shadowed by static line {} (the static line wins)",
                d.line + 1 - portal_first_line,
                d.dn.to_slash(),
                d.first_line - 2
            )
        })
        .collect();
    Ok((text, shadowed))
}

/// `+added -removed` lines between two texts (as multisets of lines).
fn line_changes(old: &str, new: &str) -> (usize, usize) {
    let mut count: HashMap<&str, i64> = HashMap::new();
    for l in new.lines() {
        *count.entry(l).or_default() += 1;
    }
    for l in old.lines() {
        *count.entry(l).or_default() -= 1;
    }
    let added = count
        .values()
        .filter(|&&n| n > 0)
        .map(|&n| n as usize)
        .sum();
    let removed = count
        .values()
        .filter(|&&n| n < 0)
        .map(|&n| (-n) as usize)
        .sum();
    (added, removed)
}

/// The lines of `old` that `new` lacks.
fn removed_lines<'a>(old: &'a str, new: &str) -> Vec<&'a str> {
    let mut have: HashMap<&str, usize> = HashMap::new();
    for l in new.lines() {
        *have.entry(l).or_default() += 1;
    }
    old.lines()
        .filter(|l| match have.get_mut(l) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .collect()
}

fn read_or_empty(path: &Path) -> anyhow::Result<String> {
    match std::fs::read(path) {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(anyhow!("{}: {e}", path.display())),
    }
}

/// One file to install: where, what, and what is there now.
struct Planned {
    label: &'static str,
    path: PathBuf,
    new: String,
    old: String,
    kind: Kind,
}

enum Kind {
    Plain,
    /// Binary content (the KRL); `new` and `old` hold its base64 for the comparison.
    Binary(Vec<u8>),
    NssPasswd(Vec<nsscache::PasswdEntry>),
    NssGroup(Vec<nsscache::GroupEntry>),
}

/// The NSS cache body (without the trailer) of an installed file.
fn nss_body(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("#hpccert-nss "))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn refusal(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("sync refused, nothing changed: {e:#}")
}

pub fn run(g: &GlobalArgs, args: SyncArgs) -> anyhow::Result<ExitCode> {
    let url = checked_url(&args.from).map_err(refusal)?;
    let config = effective_config(g).map_err(refusal)?;
    let targets = Targets::new(&config, args.dir.as_deref());
    let token = args
        .token_file
        .as_deref()
        .map(read_token)
        .transpose()
        .map_err(refusal)?;
    let tls = Tls::new(&args).map_err(refusal)?;
    if let Some(dir) = &args.dir {
        std::fs::create_dir_all(dir.join("nss"))
            .with_context(|| format!("cannot make {}", dir.display()))
            .map_err(refusal)?;
    }
    let _lock = WriteLock::acquire(&targets.state)
        .with_context(|| format!("cannot lock {}", targets.state.display()))
        .map_err(refusal)?;
    let state = read_state(&targets.state).map_err(refusal)?;
    let static_file = match &args.static_gridmap {
        Some(p) => {
            if std::fs::canonicalize(p).ok() == std::fs::canonicalize(&targets.grid_mapfile).ok() {
                return Err(refusal(format!(
                    "the static grid-mapfile {} is the file sync installs; keep the static lines in a separate file",
                    p.display()
                )));
            }
            Some((p.as_path(), read_static(p).map_err(refusal)?))
        }
        None => None,
    };
    let static_suspended = match &args.static_suspended {
        Some(p) => {
            if std::fs::canonicalize(p).ok() == std::fs::canonicalize(&targets.suspended).ok() {
                return Err(refusal(format!(
                    "the static suspension list {} is the file sync installs; keep the node's own suspensions in a separate file",
                    p.display()
                )));
            }
            Some((p.clone(), read_static_suspended(p).map_err(refusal)?))
        }
        None => None,
    };
    let if_none_match = state
        .as_ref()
        .filter(|s| s.url == url.as_str())
        .map(|s| s.etag.as_str());

    let fetched = fetch(
        &url,
        token.as_ref(),
        tls,
        if_none_match,
        Duration::from_secs(args.timeout),
    )
    .map_err(refusal)?;
    let (body, etag) = match fetched {
        Fetched::Unchanged => {
            let serial = state.as_ref().map_or(0, |s| s.serial);
            println!("unchanged (serial {serial})");
            return Ok(ExitCode::SUCCESS);
        }
        Fetched::Bundle { body, etag } => (body, etag),
    };
    export::check_etag(&body, etag.as_deref()).map_err(refusal)?;
    let bundle = Bundle::parse(&body).map_err(refusal)?;
    bundle
        .check_serial(state.as_ref().map(|s| s.serial))
        .map_err(refusal)?;

    let plan = plan(
        &config,
        &targets,
        &bundle,
        &url,
        static_file,
        static_suspended,
    )?;
    for p in &plan.files {
        let dir = parent(&p.path);
        if !dir.is_dir() {
            return Err(refusal(format!(
                "{}: directory {} does not exist",
                p.label,
                dir.display()
            )));
        }
    }

    // from here on files change, in the order of EXPORT.md
    let mut summary = Vec::new();
    for p in &plan.files {
        let old_body = match p.kind {
            Kind::Plain | Kind::Binary(_) => p.old.clone(),
            _ => nss_body(&p.old),
        };
        let (added, removed) = line_changes(&old_body, &p.new);
        // a file that does not exist yet is written even when it would be empty: the node's
        // services refuse to start on a configured file that is missing
        let unchanged = p.path.exists()
            && match &p.kind {
                Kind::Plain | Kind::Binary(_) => p.old == p.new,
                Kind::NssPasswd(e) => p.old == nsscache::render_passwd(e),
                Kind::NssGroup(e) => p.old == nsscache::render_group(e),
            };
        if unchanged {
            summary.push(format!("  {}: unchanged ({})", p.label, p.path.display()));
            continue;
        }
        install(p, &config.mapping.id_floor()).with_context(|| {
            format!(
                "installing {} failed: the files listed before it are new, it and the rest are whole but old; the next sync installs again",
                p.path.display()
            )
        })?;
        summary.push(match &p.kind {
            Kind::Binary(bytes) => format!(
                "  {}: replaced ({} bytes) ({})",
                p.label,
                bytes.len(),
                p.path.display()
            ),
            _ => format!(
                "  {}: +{added} -{removed} lines ({})",
                p.label,
                p.path.display()
            ),
        });
        if p.label == "suspended" {
            for line in removed_lines(&p.old, &p.new) {
                if hpccert_core::identity::suspension::parse_line(line)
                    .ok()
                    .flatten()
                    .is_some()
                {
                    summary.push(format!("    no longer suspended: {line}"));
                }
            }
        }
    }
    if plan.skipped_token_map {
        summary.push(
            "  token-mapfile: not installed ([mapping] token_mapfile is not set; the portal's token map is empty)"
                .into(),
        );
    }
    let new_state = State {
        url: url.to_string(),
        // the portal's own spelling (checked above to be the body's SHA-256)
        etag: etag.unwrap_or_else(|| export::etag(&body)),
        serial: bundle.serial,
        portal: bundle.portal.clone(),
        installed_at: installed_at()?,
    };
    let mut json = serde_json::to_vec_pretty(&new_state)?;
    json.push(b'\n');
    write_atomic(&targets.state, &json).with_context(|| {
        format!(
            "every file is installed, but writing {} failed: the next sync installs again",
            targets.state.display()
        )
    })?;

    println!(
        "installed serial {} from {url} (generated {})",
        bundle.serial, bundle.generated
    );
    for line in summary {
        println!("{line}");
    }
    for s in &plan.shadowed {
        println!("  warning: {s}");
    }
    Ok(ExitCode::SUCCESS)
}

struct Plan {
    files: Vec<Planned>,
    shadowed: Vec<String>,
    skipped_token_map: bool,
}

/// Every file's new content, checked; nothing is written.
fn plan(
    config: &Config,
    targets: &Targets,
    bundle: &Bundle,
    url: &reqwest::Url,
    static_file: Option<(&Path, String)>,
    static_suspended: Option<(PathBuf, String)>,
) -> anyhow::Result<Plan> {
    let mut files = Vec::new();
    let mut skipped_token_map = false;
    let mut shadowed = Vec::new();
    // the revocations first, then the CA keys: a node never trusts a key before it knows
    // what that key's certificates lost
    if let Some(ssh) = &bundle.ssh {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let old_krl = match std::fs::read(&targets.ssh_krl) {
            Ok(b) => b64(&b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(refusal(format!("{}: {e}", targets.ssh_krl.display()))),
        };
        files.push(Planned {
            label: "ssh-krl",
            path: targets.ssh_krl.clone(),
            new: b64(&ssh.krl),
            old: old_krl,
            kind: Kind::Binary(ssh.krl.clone()),
        });
        files.push(Planned {
            label: "ssh-ca-keys",
            path: targets.ssh_ca_keys.clone(),
            new: ssh.ca_keys.clone(),
            old: read_or_empty(&targets.ssh_ca_keys).map_err(refusal)?,
            kind: Kind::Plain,
        });
    }
    for file in ExportFile::INSTALL_ORDER {
        match file {
            ExportFile::Suspended => files.push(Planned {
                label: "suspended",
                path: targets.suspended.clone(),
                new: merge_suspended(
                    static_suspended
                        .as_ref()
                        .map(|(p, t)| (p.as_path(), t.as_str())),
                    url,
                    &bundle.files.suspended,
                ),
                old: read_or_empty(&targets.suspended).map_err(refusal)?,
                kind: Kind::Plain,
            }),
            ExportFile::TokenMapfile => match &targets.token_mapfile {
                Some(path) => files.push(Planned {
                    label: "token-mapfile",
                    path: path.clone(),
                    new: bundle.files.token_mapfile.clone(),
                    old: read_or_empty(path).map_err(refusal)?,
                    kind: Kind::Plain,
                }),
                None if bundle.token_mapfile.is_empty() => skipped_token_map = true,
                None => {
                    return Err(refusal(
                        "the portal's token map has rules but [mapping] token_mapfile is not set",
                    ));
                }
            },
            ExportFile::GridMapfile => {
                let (text, s) = merge_gridmap(
                    static_file.as_ref().map(|(p, t)| (*p, t.as_str())),
                    url,
                    &bundle.files.grid_mapfile,
                )
                .map_err(refusal)?;
                shadowed = s;
                files.push(Planned {
                    label: "grid-mapfile",
                    path: targets.grid_mapfile.clone(),
                    new: text,
                    old: read_or_empty(&targets.grid_mapfile).map_err(refusal)?,
                    kind: Kind::Plain,
                });
            }
            ExportFile::NssPasswd | ExportFile::NssGroup => {}
        }
    }
    // no account or group of the system range (`[mapping] nss_min_id`, the system's groups):
    // the portal's lines by their line in the bundle
    let floor = config.mapping.id_floor();
    bundle.check_id_floor(&floor).map_err(refusal)?;
    // the NSS cache also serves the configured pool accounts (the pool code writes them on
    // every lease change): keep them, and refuse a portal account that collides with one
    let pools = hpccert_core::identity::pool::Pools::from_config(&config.pools)
        .map_err(|(i, e)| refusal(format!("[[pool]] #{}: {e}", i + 1)))?;
    let (pool_passwd, pool_group) = pools.nss_entries();
    // the pools' ids were checked against the floor with the configuration; their group
    // names are checked here, as the writer will
    let pool_refusals: Vec<String> = floor
        .passwd_refusals(&pool_passwd)
        .into_iter()
        .chain(floor.group_refusals(&pool_group))
        .map(|(_, why)| format!("[[pool]] {why}"))
        .collect();
    if !pool_refusals.is_empty() {
        return Err(refusal(pool_refusals.join("; ")));
    }
    let mut passwd = bundle.passwd.clone();
    passwd.extend(pool_passwd);
    let mut group = bundle.group.clone();
    group.extend(pool_group);
    let passwd_text = nsscache::render_passwd(&passwd);
    PasswdTable::parse(&passwd_text).map_err(|e| {
        refusal(format!(
            "the portal's passwd entries and the configured pool accounts collide: {e}"
        ))
    })?;
    let group_text = nsscache::render_group(&group);
    GroupTable::parse(&group_text).map_err(|e| {
        refusal(format!(
            "the portal's group entries and the configured pool groups collide: {e}"
        ))
    })?;
    for (label, file, text, kind) in [
        (
            "nss passwd",
            PasswdTable::FILE,
            passwd_text,
            Kind::NssPasswd(passwd),
        ),
        (
            "nss group",
            GroupTable::FILE,
            group_text,
            Kind::NssGroup(group),
        ),
    ] {
        let path = targets.nss_dir.join(file);
        files.push(Planned {
            label,
            old: read_or_empty(&path).map_err(refusal)?,
            path,
            new: nss_body(&text),
            kind,
        });
    }
    Ok(Plan {
        files,
        shadowed,
        skipped_token_map,
    })
}

fn install(p: &Planned, floor: &IdFloor) -> anyhow::Result<()> {
    match &p.kind {
        Kind::Plain => {
            let _lock = WriteLock::acquire(&p.path)?;
            write_atomic(&p.path, p.new.as_bytes())?;
        }
        Kind::Binary(bytes) => {
            let _lock = WriteLock::acquire(&p.path)?;
            write_atomic(&p.path, bytes)?;
        }
        Kind::NssPasswd(entries) => nsscache::write_passwd(&parent(&p.path), entries, floor)?,
        Kind::NssGroup(entries) => nsscache::write_group(&parent(&p.path), entries, floor)?,
    }
    Ok(())
}

fn installed_at() -> anyhow::Result<String> {
    let secs = hpccert_core::clock::unix_seconds(hpccert_core::clock::now());
    let t = time::OffsetDateTime::from_unix_timestamp(secs)?;
    Ok(t.format(&time::format_description::well_known::Rfc3339)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            checked_url("https://portal.example.org").unwrap().as_str(),
            "https://portal.example.org/export/v1/bundle"
        );
        assert_eq!(
            checked_url("https://p.example.org/x/bundle")
                .unwrap()
                .as_str(),
            "https://p.example.org/x/bundle"
        );
        checked_url("http://127.0.0.1:8080/").unwrap();
        checked_url("http://[::1]:8080/").unwrap();
        checked_url("http://localhost/").unwrap();
        for bad in [
            "http://portal.example.org/",
            "http://127.0.0.1.example.org/",
            "ftp://127.0.0.1/",
            "https://user:pw@portal.example.org/",
            "not a url",
        ] {
            assert!(checked_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn line_changes_count_multisets() {
        assert_eq!(line_changes("a\nb\n", "b\nc\nc\n"), (2, 1));
        assert_eq!(line_changes("", ""), (0, 0));
        assert_eq!(removed_lines("a\nb\na\n", "a\n"), vec!["b", "a"]);
    }

    #[test]
    fn token_debug_is_secret() {
        assert_eq!(format!("{:?}", BearerToken("abc".into())), "<secret>");
    }
}
