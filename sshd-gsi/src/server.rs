//! Listening and accepting: our own accept loop around russh's `run_stream`, so that one
//! failing connection (or a transient accept error such as EMFILE) never stops the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hpccert_core::config::{Config, SshMethod};
use russh::MethodKind;
use russh::keys::PrivateKey;
use tokio::net::TcpListener;

use crate::auth::SharedEngine;
use crate::session::Connection;

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
    let mut methods = russh::MethodSet::empty();
    for m in &config.sshd.methods {
        methods.push(match m {
            SshMethod::X509 => MethodKind::PublicKey,
            SshMethod::KeyboardInteractive => MethodKind::KeyboardInteractive,
            SshMethod::Password => MethodKind::Password,
            SshMethod::OpensshCert => MethodKind::PublicKey,
        });
    }
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
        // RFC 6187: russh hands these publickey algorithms to the handler (our patch)
        external_publickey_algorithms: if config.sshd.methods.contains(&SshMethod::X509) {
            config.sshd.x509_algorithms.clone()
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}

/// Serve on every configured address until the process ends. The engine is built outside
/// the runtime (its HTTP client is a blocking one, used from blocking threads only).
pub async fn serve(engine: SharedEngine) -> Result<(), String> {
    let config = &engine.config;
    let keys = host_keys(config)?;
    let listen = config.sshd.listen.clone();
    let grace = Duration::from_secs(config.sshd.login_grace_time);
    let russh_config = Arc::new(russh_config(config, keys));
    let mut listeners = Vec::new();
    for addr in &listen {
        let addr: SocketAddr = addr.parse().map_err(|e| format!("listen {addr}: {e}"))?;
        match TcpListener::bind(addr).await {
            Ok(l) => {
                tracing::info!(target: "sshd_gsi", "Server listening on {} port {}.", addr.ip(), addr.port());
                listeners.push(l);
            }
            // `[::]` and `0.0.0.0` on the same port collide where IPv6 sockets are dual-stack
            Err(e) if addr.is_ipv6() && !listeners.is_empty() => {
                tracing::debug!(target: "sshd_gsi", "not listening on {addr}: {e}");
            }
            Err(e) => return Err(format!("cannot listen on {addr}: {e}")),
        }
    }
    let mut tasks = Vec::new();
    for l in listeners {
        let (engine, russh_config) = (engine.clone(), russh_config.clone());
        tasks.push(tokio::spawn(accept_loop(l, engine, russh_config, grace)));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    engine: SharedEngine,
    config: Arc<russh::server::Config>,
    grace: Duration,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE, ENFILE, ECONNABORTED...: log, pause, go on
                tracing::warn!(target: "sshd_gsi", "accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let local = stream.local_addr().unwrap_or(peer);
        let _ = stream.set_nodelay(true);
        tracing::debug!(target: "sshd_gsi", "Connection from {} port {}", peer.ip(), peer.port());
        let authenticated = Arc::new(AtomicBool::new(false));
        let handler = Connection::new(engine.clone(), peer, local, authenticated.clone());
        let config = config.clone();
        tokio::spawn(async move {
            let session = match russh::server::run_stream(config, stream, handler).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(target: "sshd_gsi", "connection {peer}: {e}");
                    return;
                }
            };
            tokio::pin!(session);
            // LoginGraceTime: an unauthenticated connection is dropped after `grace`
            tokio::select! {
                r = &mut session => {
                    if let Err(e) = r {
                        tracing::debug!(target: "sshd_gsi", "connection {peer}: {e}");
                    }
                    return;
                }
                () = tokio::time::sleep(grace) => {}
            }
            if !authenticated.load(Ordering::SeqCst) {
                tracing::info!(
                    target: "sshd_gsi::auth",
                    "Timeout before authentication for {} port {}",
                    peer.ip(),
                    peer.port()
                );
                return;
            }
            if let Err(e) = session.await {
                tracing::debug!(target: "sshd_gsi", "connection {peer}: {e}");
            }
        });
    }
}
