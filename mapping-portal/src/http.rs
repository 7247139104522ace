//! The HTTP side: `GET /export/v1/bundle` (EXPORT.md) and `GET /healthz`, and serving the
//! whole portal over plain HTTP (behind a TLS reverse proxy) or HTTPS (rustls).
//!
//! The export token is a bearer secret, compared in constant time, and never logged.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_server::tls::TlsInfo;
use hpccert_core::identity::dn::DistinguishedName;

use crate::Portal;

/// The routes.
pub fn router(portal: Arc<Portal>) -> Router {
    Router::new()
        .route("/export/v1/bundle", get(bundle))
        .route("/healthz", get(healthz))
        .route("/metrics", get(crate::metrics::serve))
        .with_state(portal)
}

/// The whole portal: the export, and the pages when `web` is given.
pub fn app_router(portal: Arc<Portal>, web: Option<Arc<crate::web::App>>) -> Router {
    match web {
        Some(app) => router(portal).merge(crate::web::router(app)),
        None => router(portal),
    }
}

/// Serve `app` over plain HTTP until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// The TLS settings from a PEM certificate chain and key (rustls, ring provider); with
/// `client_ca`, clients may present a certificate issued by one of its CAs (mutual TLS for the
/// export; browsers present none and are served as before).
pub fn tls_config(
    certificate: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> std::io::Result<axum_server::tls_rustls::RustlsConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    // the process-wide provider: ring, as reqwest's rustls uses (a second call is harmless)
    let _ = rustls::crypto::ring::default_provider().install_default();
    let invalid = |what: &std::path::Path, e: &dyn std::fmt::Display| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", what.display()),
        )
    };
    let chain = CertificateDer::pem_file_iter(certificate)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| invalid(certificate, &e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(key, &e))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(client_ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in
                CertificateDer::pem_file_iter(client_ca).map_err(|e| invalid(client_ca, &e))?
            {
                roots
                    .add(ca.map_err(|e| invalid(client_ca, &e))?)
                    .map_err(|e| invalid(client_ca, &e))?;
            }
            if roots.is_empty() {
                return Err(invalid(client_ca, &"no CA certificate in the file"));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .allow_unauthenticated()
                .build()
                .map_err(|e| invalid(client_ca, &e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key_der)
        .map_err(|e| invalid(certificate, &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(axum_server::tls_rustls::RustlsConfig::from_config(
        Arc::new(config),
    ))
}

/// Serve `app` over HTTPS until `shutdown` completes (then up to 10 s for open requests).
pub async fn serve_tls(
    listener: std::net::TcpListener,
    tls: axum_server::tls_rustls::RustlsConfig,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    });
    axum_server::from_tcp_rustls(listener, tls)?
        .handle(handle)
        .serve(app.into_make_service_with_connect_info::<SocketAddr>())
        .await
}

fn unauthorized(reason: &'static str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
        format!("{reason}\n"),
    )
        .into_response()
}

/// Whether an `If-None-Match` value names `etag` (quoted, or `*`; weak tags compare too).
fn matches_etag(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag).trim_matches('"') == etag)
}

/// The subject of the client certificate of a mutual TLS connection (verified in the
/// handshake against `export_client_ca`), when there is one.
fn client_certificate(tls: Option<&Arc<TlsInfo>>) -> Option<DistinguishedName> {
    let der = tls?.peer_certificates.first()?;
    DistinguishedName::from_certificate_der(der).ok()
}

async fn bundle(
    State(portal): State<Arc<Portal>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    tls: Option<Extension<Arc<TlsInfo>>>,
    headers: HeaderMap,
) -> Response {
    if let Some(subject) = client_certificate(tls.as_ref().map(|Extension(t)| t)) {
        if portal.export_client_ok(&subject) {
            tracing::info!(%peer, client = %subject.to_slash(), "export requested with a client certificate");
            return answer(&portal, &headers, &peer);
        }
        tracing::warn!(%peer, client = %subject.to_slash(), "export: client certificate not in export_client_dns");
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented else {
        tracing::warn!(%peer, "export refused: no bearer token");
        return unauthorized("export: a bearer token is required");
    };
    if !portal.export_token_ok(presented) {
        tracing::warn!(%peer, "export refused: wrong bearer token");
        return unauthorized("export: wrong bearer token");
    }
    answer(&portal, &headers, &peer)
}

/// The bundle (or 304) for an authorized client.
fn answer(portal: &Portal, headers: &HeaderMap, peer: &SocketAddr) -> Response {
    let current = portal.current();
    let etag = format!("\"{}\"", current.etag);
    let Ok(etag_value) = HeaderValue::from_str(&etag) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches_etag(v, &current.etag));
    if not_modified {
        tracing::debug!(%peer, serial = current.serial, "export not modified");
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response();
    }
    tracing::info!(%peer, serial = current.serial, "export sent");
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag_value),
        ],
        current.body.clone(),
    )
        .into_response()
}

/// `ok` when the database answers (nothing about its content: no credential is asked).
async fn healthz(State(portal): State<Arc<Portal>>) -> Response {
    match portal.store().ping().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::error!("health check: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_forms() {
        assert!(matches_etag("\"abc\"", "abc"));
        assert!(matches_etag("\"x\", W/\"abc\"", "abc"));
        assert!(matches_etag("*", "abc"));
        assert!(!matches_etag("\"abd\"", "abc"));
    }
}
