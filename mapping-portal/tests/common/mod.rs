//! Databases for the tests: SQLite in a temporary directory always; PostgreSQL from
//! `HPCCERT_TEST_POSTGRES_URL` (a role that may create databases), or a private server
//! started from `/usr/lib/postgresql/*/bin` when that variable is unset.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("portal.db").display())
}

/// A PostgreSQL server to make databases in.
pub enum Postgres {
    External(String),
    Private(PrivatePostgres),
}

impl Postgres {
    /// The server, or why there is none.
    pub fn find() -> Result<Self, String> {
        if let Ok(url) = std::env::var("HPCCERT_TEST_POSTGRES_URL") {
            return Ok(Self::External(url));
        }
        PrivatePostgres::start().map(Self::Private)
    }

    /// Which server (without the URL: it may hold a password).
    pub fn describe(&self) -> String {
        match self {
            Self::External(_) => "the server of HPCCERT_TEST_POSTGRES_URL".into(),
            Self::Private(p) => format!("a private server on 127.0.0.1:{}", p.port),
        }
    }

    fn base_url(&self) -> String {
        match self {
            Self::External(u) => u.clone(),
            Self::Private(p) => format!("postgres://postgres@127.0.0.1:{}/postgres", p.port),
        }
    }

    /// A new empty database; its URL.
    pub async fn fresh_database(&self, name: &str) -> String {
        let base = self.base_url();
        let db = format!("hpccert_test_{}_{}_{name}", std::process::id(), unique());
        let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        with_database(&base, &db)
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// `base` with its database name replaced.
fn with_database(base: &str, db: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (base, String::new()),
    };
    let after_scheme = head.find("://").map_or(0, |i| i + 3);
    let host_end = head[after_scheme..]
        .find('/')
        .map_or(head.len(), |i| after_scheme + i);
    format!("{}/{db}{query}", &head[..host_end])
}

/// A PostgreSQL server of this test process, in a temporary directory, stopped on drop.
pub struct PrivatePostgres {
    _dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
    /// The server's self-signed TLS certificate (PEM), its own trust anchor.
    pub ca_pem: Vec<u8>,
}

fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PrivatePostgres {
    fn start() -> Result<Self, String> {
        let bin = postgres_bin().ok_or(
            "no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql) and HPCCERT_TEST_POSTGRES_URL is unset",
        )?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        // PostgreSQL refuses to run as root: run it as the postgres user
        let as_user = |program: &Path| -> Command {
            if is_root() {
                let mut c = Command::new("setpriv");
                c.args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ]);
                c.arg(program);
                c
            } else {
                Command::new(program)
            }
        };
        if is_root() {
            let ok = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .map_err(|e| e.to_string())?;
            if !ok.success() {
                return Err("cannot chown the data directory to postgres".into());
            }
        }
        let out = as_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // TLS on (a self-signed certificate for 127.0.0.1): tls_verify_full connects with
        // sslmode=verify-full against it
        let (cert, key) = server_certificate();
        let cert_file = dir.path().join("server.crt");
        let key_file = dir.path().join("server.key");
        std::fs::write(&cert_file, &cert).map_err(|e| e.to_string())?;
        std::fs::write(&key_file, &key).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        if is_root() {
            let ok = Command::new("chown")
                .arg("postgres:")
                .arg(&cert_file)
                .arg(&key_file)
                .status()
                .map_err(|e| e.to_string())?;
            if !ok.success() {
                return Err("cannot chown the TLS files to postgres".into());
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = as_user(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "ssl=on",
                "-c",
                &format!("ssl_cert_file={}", cert_file.display()),
                "-c",
                &format!("ssl_key_file={}", key_file.display()),
            ])
            .arg("-k")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("postgres: {e}"))?;
        let server = Self {
            _dir: dir,
            child,
            port,
            ca_pem: cert,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err("the private PostgreSQL did not start within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // SIGINT: fast shutdown
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// a running portal (SQLite) on a free loopback port

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use mapping_portal::store::Store;
use mapping_portal::{ExportToken, Portal, PortalSettings};

pub const TOKEN: &str = "0123456789abcdef0123456789abcdef-export";
pub const DN: &str = "/DC=org/DC=cilogon/C=US/O=Example/CN=Jane Doe A123";
pub const ISS: &str = "https://cilogon.org";
pub const SUB: &str = "http://cilogon.org/serverA/users/123";

pub fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_000_000 + s)
}

pub struct Running {
    pub portal: Arc<Portal>,
    pub base: String,
    pub export_dir: tempfile::TempDir,
    _db: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub async fn start() -> Running {
    let db = tempfile::tempdir().unwrap();
    let export_dir = tempfile::tempdir().unwrap();
    let store = Store::open(&sqlite_url(db.path()), at(0)).await.unwrap();
    let portal = Portal::start(
        store,
        PortalSettings {
            ssh_ca_keys: Default::default(),
            url: "https://portal.example.org".into(),
            export_tokens: vec![ExportToken::new(TOKEN).unwrap()],
            export_client_dns: vec![],
            export_dir: Some(export_dir.path().to_path_buf()),
        },
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mapping_portal::http::serve(
        listener,
        mapping_portal::http::router(Arc::clone(&portal)),
        async {
            let _ = rx.await;
        },
    ));
    Running {
        portal,
        base,
        export_dir,
        _db: db,
        stop: Some(tx),
        server,
    }
}

impl Running {
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.server).await.unwrap().unwrap();
    }
}

/// A self-signed server certificate for 127.0.0.1 (PEM certificate, PEM key).
pub fn server_certificate() -> (Vec<u8>, Vec<u8>) {
    use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
    let key = openssl::pkey::PKey::from_ec_key(
        openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "127.0.0.1").unwrap();
    let name = name.build();
    let mut b = openssl::x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    let serial = openssl::bn::BigNum::from_u32(1)
        .unwrap()
        .to_asn1_integer()
        .unwrap();
    b.set_serial_number(&serial).unwrap();
    b.append_extension(BasicConstraints::new().critical().build().unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .ip("127.0.0.1")
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, openssl::hash::MessageDigest::sha256())
        .unwrap();
    (
        b.build().to_pem().unwrap(),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
}
