//! The HTTP side: `GET /export/v1/bundle` (EXPORT.md) and `GET /healthz`.
//!
//! Plain HTTP: TLS is for the reverse proxy in front (or a later version); the export token
//! is a bearer secret, compared in constant time, and never logged.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::Portal;

/// The routes.
pub fn router(portal: Arc<Portal>) -> Router {
    Router::new()
        .route("/export/v1/bundle", get(bundle))
        .route("/healthz", get(healthz))
        .with_state(portal)
}

/// Serve until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    portal: Arc<Portal>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(portal).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
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

async fn bundle(
    State(portal): State<Arc<Portal>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
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
