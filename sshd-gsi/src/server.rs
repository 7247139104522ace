//! Listening and accepting: our own accept loop around russh's `run_stream`, so that one
//! failing connection (or a transient accept error such as EMFILE) never stops the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hpccert_core::config::{Config, SshMethod};
use russh::keys::PrivateKey;
use tokio::net::TcpListener;

use crate::auth::{Engine, SharedEngine};
use crate::limits::{AuthFlag, MaxStartups, Refused, Startups};
use crate::session::Connection;
use tokio::signal::unix::{SignalKind, signal};

/// Load the host keys; a server without one cannot start.
pub fn host_keys(config: &Config) -> Result<Vec<PrivateKey>, String> {
    let mut keys = Vec::new();
    for path in &config.sshd.host_keys {
        keys.push(
            russh::keys::load_secret_key(path, None)
                .map_err(|e| format!("host key {}: {e}", path.display()))?,
        );
    }
    if keys.is_empty() {
        return Err("[sshd] host_keys is empty".into());
    }
    Ok(keys)
}

/// The russh configuration: methods offered exactly as configured (none means none).
pub fn russh_config(config: &Config, keys: Vec<PrivateKey>) -> russh::server::Config {
    let methods = crate::auth::method_set(config);
    russh::server::Config {
        server_id: russh::SshId::Standard(
            format!("SSH-2.0-sshd-gsi_{}", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods,
        keys,
        auth_rejection_time: Duration::from_millis(500),
        auth_rejection_time_initial: Some(Duration::ZERO),
        max_auth_attempts: config.sshd.max_auth_tries,
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(60)),
        keepalive_max: 3,
        window_size: 8 * 1024 * 1024,
        maximum_packet_size: 65535,
        nodelay: true,
        preferred: hardened(&config.sshd.kex_algorithms),
        // RFC 6187: russh hands these publickey algorithms to the handler (our patch)
        external_publickey_algorithms: if config.sshd.methods.contains(&SshMethod::X509) {
            config.sshd.x509_algorithms.clone()
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}

/// How SIGHUP rebuilds the configuration.
pub type ConfigSource = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// What the accept loops read at each connection: swapped as a whole on reload.
pub struct Live {
    engine: SharedEngine,
    russh: Arc<russh::server::Config>,
    startups: Arc<Startups>,
    grace: Duration,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// Everything a start (or a reload) loads: the decision engine, host keys, limits. Called
/// outside the async runtime (the engine's HTTP client is a blocking one).
pub fn prepare(config: Config) -> Result<Live, String> {
    let keys = host_keys(&config)?;
    let max = MaxStartups::parse(&config.sshd.max_startups).map_err(|e| format!("[sshd] {e}"))?;
    let engine = Arc::new(Engine::load(config)?);
    let config = &engine.config;
    Ok(Live {
        russh: Arc::new(russh_config(config, keys)),
        startups: Startups::new(max, config.sshd.per_source_max_startups),
        grace: Duration::from_secs(config.sshd.login_grace_time),
        engine,
    })
}

/// Engines replaced by a reload are dropped on a plain thread: their blocking HTTP client
/// must not be dropped inside the async runtime.
fn retire(engine: SharedEngine) {
    let _ = std::thread::Builder::new()
        .name("retire-engine".into())
        .spawn(move || {
            while Arc::strong_count(&engine) > 1 {
                std::thread::sleep(Duration::from_secs(5));
            }
            drop(engine);
        });
}

/// Load a new configuration off the runtime (the blocking HTTP client needs that).
async fn rebuild(source: &Arc<ConfigSource>) -> Result<Live, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let source = source.clone();
    std::thread::spawn(move || {
        let _ = tx.send(source().and_then(prepare));
    });
    rx.await
        .map_err(|_| "the reload thread failed".to_string())?
}

/// Modern algorithms only, no SHA-1 anywhere: curve25519 and the ML-KEM hybrid for key
/// exchange with strict KEX (Terrapin), ChaCha20-Poly1305 and AES-GCM, encrypt-then-MAC
/// SHA-2 MACs, and no `ssh-rsa` (SHA-1) signatures.
pub fn hardened(kex_names: &[String]) -> russh::Preferred {
    use russh::keys::{Algorithm, EcdsaCurve, HashAlg};
    use russh::{cipher, kex, mac};
    use std::borrow::Cow;
    russh::Preferred {
        kex: Cow::Owned(
            kex_names
                .iter()
                .filter_map(|n| match n.as_str() {
                    "mlkem768x25519-sha256" => Some(kex::MLKEM768X25519_SHA256),
                    "curve25519-sha256" => Some(kex::CURVE25519),
                    "curve25519-sha256@libssh.org" => Some(kex::CURVE25519_PRE_RFC_8731),
                    _ => None,
                })
                .chain([
                    kex::EXTENSION_SUPPORT_AS_CLIENT,
                    kex::EXTENSION_SUPPORT_AS_SERVER,
                    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
                    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
                ])
                .collect(),
        ),
        key: Cow::Owned(vec![
            Algorithm::Ed25519,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP521,
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
        ]),
        cipher: Cow::Borrowed(&[
            cipher::CHACHA20_POLY1305,
            cipher::AES_256_GCM,
            cipher::AES_128_GCM,
        ]),
        mac: Cow::Borrowed(&[mac::HMAC_SHA512_ETM, mac::HMAC_SHA256_ETM]),
        ..russh::Preferred::default()
    }
}

/// Serve on every configured address until SIGTERM/SIGINT (then stop accepting and wait for
/// the sessions to end; a second signal ends them). SIGHUP re-reads the configuration and
/// every file the decisions read; a new configuration that does not load is refused and the
/// running one kept. The first [`Live`] is prepared outside the runtime by the caller.
pub async fn serve(live: Live, source: ConfigSource) -> Result<(), String> {
    let state = Arc::new(std::sync::RwLock::new(Arc::new(live)));
    let result = run(&state, source).await;
    // the configuration in use at the end goes on a plain thread, as replaced ones do (its
    // blocking HTTP client must not be dropped inside the runtime)
    let _ = std::thread::Builder::new()
        .name("retire-engine".into())
        .spawn(move || drop(state))
        .map(std::thread::JoinHandle::join);
    result
}

/// Accept, reload and stop, on `state` (the configuration in use).
async fn run(
    state: &Arc<std::sync::RwLock<Arc<Live>>>,
    source: ConfigSource,
) -> Result<(), String> {
    let listen = state
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .engine
        .config
        .sshd
        .listen
        .clone();
    let mut listeners = Vec::new();
    for addr in &listen {
        let addr: SocketAddr = addr.parse().map_err(|e| format!("listen {addr}: {e}"))?;
        // every configured address or none: a server that silently lost one (IPv6, say)
        // refuses the clients that use it
        let l = bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        tracing::info!(target: "sshd_gsi", "Server listening on {} port {}.", addr.ip(), addr.port());
        listeners.push(l);
    }
    let active = Arc::new(tokio::sync::Semaphore::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut loops = Vec::new();
    for l in listeners {
        loops.push(tokio::spawn(accept_loop(
            l,
            state.clone(),
            active.clone(),
            stop_rx.clone(),
        )));
    }
    let metrics_listen = state
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .engine
        .config
        .sshd
        .metrics_listen
        .clone();
    if let Some(addr) = &metrics_listen {
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| format!("[sshd] metrics_listen {addr}: {e}"))?;
        crate::metrics::serve(addr).await?;
    }
    hpccert_core::host::notify::ready();
    let source = Arc::new(source);
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!(target: "sshd_gsi", "Received SIGHUP; re-reading the configuration.");
                hpccert_core::host::notify::reloading();
                match rebuild(&source).await {
                    Ok(new) => {
                        if new.engine.config.sshd.listen != listen {
                            tracing::warn!(target: "sshd_gsi", "[sshd] listen changed: the new addresses take effect at the next start");
                        }
                        let old = std::mem::replace(
                            &mut *state.write().unwrap_or_else(|p| p.into_inner()),
                            Arc::new(new),
                        );
                        if let Ok(old) = Arc::try_unwrap(old) {
                            retire(old.engine);
                        }
                        tracing::info!(target: "sshd_gsi", "configuration reloaded");
                    }
                    Err(e) => tracing::error!(target: "sshd_gsi", "reload refused, keeping the running configuration: {e}"),
                }
                hpccert_core::host::notify::ready();
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!(target: "sshd_gsi", "Received signal; terminating: no new connections, waiting for sessions to end.");
    hpccert_core::host::notify::stopping();
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    // every connection task holds a permit-to-be: wait until none is left
    tokio::select! {
        _ = wait_idle(&active) => {}
        _ = term.recv() => tracing::info!(target: "sshd_gsi", "second signal: ending the sessions"),
        _ = int.recv() => tracing::info!(target: "sshd_gsi", "second signal: ending the sessions"),
    }
    Ok(())
}

/// Connections register by adding a permit on start and taking one on end.
async fn wait_idle(active: &tokio::sync::Semaphore) {
    while active.available_permits() > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Active(Arc<tokio::sync::Semaphore>);

impl Active {
    fn new(s: &Arc<tokio::sync::Semaphore>) -> Self {
        s.add_permits(1);
        Self(s.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Ok(p) = self.0.try_acquire() {
            p.forget();
        }
    }
}

/// A listening socket on `addr`: an IPv6 one is IPv6 only (`IPV6_V6ONLY`, as sshd sets it), so
/// that `0.0.0.0:P` and `[::]:P` both bind and IPv4 clients arrive as IPv4 addresses (the
/// source-address rules and per-source limits compare them as such).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<std::sync::RwLock<Arc<Live>>>,
    active: Arc<tokio::sync::Semaphore>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE, ENFILE, ECONNABORTED...: log, pause, go on
                    tracing::warn!(target: "sshd_gsi", "accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        // an IPv4 client is an IPv4 address, whatever socket it came through
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let live = state.read().unwrap_or_else(|p| p.into_inner()).clone();
        let local = stream.local_addr().unwrap_or(peer);
        let slot = match live.startups.admit(peer.ip(), crate::limits::roll()) {
            Ok(slot) => slot,
            Err(refused) => {
                let why = match refused {
                    Refused::Max(n, p) => {
                        crate::metrics::get().dropped("max-startups");
                        format!("past MaxStartups ({n} unauthenticated, drop chance {p}%)")
                    }
                    Refused::PerSource(n) => {
                        crate::metrics::get().dropped("per-source-max-startups");
                        format!("past PerSourceMaxStartups ({n} from this address)")
                    }
                };
                tracing::info!(
                    target: "sshd_gsi::auth",
                    "drop connection from {} port {} on {} port {} {why}",
                    peer.ip(),
                    peer.port(),
                    local.ip(),
                    local.port()
                );
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        crate::metrics::get().connections.inc();
        tracing::debug!(target: "sshd_gsi", "Connection from {} port {}", peer.ip(), peer.port());
        let authenticated = AuthFlag::with_slot(slot);
        let handler = Connection::new(live.engine.clone(), peer, local, authenticated.clone());
        let (config, grace) = (live.russh.clone(), live.grace);
        let guard = Active::new(&active);
        tokio::spawn(async move {
            let _guard = guard;
            // LoginGraceTime covers everything before authentication, the version exchange
            // included: a client that sends nothing is closed too
            let started = tokio::time::Instant::now();
            // a second descriptor of the socket: shutdown(2) on it ends the connection
            // whatever state russh's session task is in
            let socket = std::os::fd::AsFd::as_fd(&stream).try_clone_to_owned().ok();
            let timed_out = || {
                if let Some(fd) = &socket {
                    let _ = nix::sys::socket::shutdown(
                        std::os::fd::AsRawFd::as_raw_fd(fd),
                        nix::sys::socket::Shutdown::Both,
                    );
                }
                tracing::info!(
                    target: "sshd_gsi::auth",
                    "Timeout before authentication for {} port {}",
                    peer.ip(),
                    peer.port()
                );
            };
            let session = match tokio::time::timeout(
                grace,
                russh::server::run_stream(config, stream, handler),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(target: "sshd_gsi", "connection {peer}: {e}");
                    return;
                }
                // dropping the future closes the socket
                Err(_) => return timed_out(),
            };
            let handle = session.handle();
            tokio::pin!(session);
            tokio::select! {
                r = &mut session => {
                    if let Err(e) = r {
                        tracing::debug!(target: "sshd_gsi", "connection {peer}: {e}");
                    }
                    return;
                }
                () = tokio::time::sleep_until(started + grace) => {}
            }
            if !authenticated.is_set() {
                timed_out();
                // russh's session task outlives a dropped handle: end it explicitly
                let _ = handle
                    .disconnect(
                        russh::Disconnect::ByApplication,
                        "Login grace time exceeded".into(),
                        String::new(),
                    )
                    .await;
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut session).await;
                return;
            }
            if let Err(e) = session.await {
                tracing::debug!(target: "sshd_gsi", "connection {peer}: {e}");
            }
        });
    }
}
