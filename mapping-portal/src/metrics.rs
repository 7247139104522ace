//! Prometheus metrics of the portal (text exposition format at `GET /metrics`, answered to
//! loopback clients only): SSH certificates issued, and refused by reason.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// The portal's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub certificates_issued: Counter,
    pub certificates_refused: Family<ReasonLabels, Counter>,
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("hpccert_portal");
        let issued = Counter::default();
        let refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "ssh_certificates_issued",
            "OpenSSH certificates issued by the SSH CA",
            issued.clone(),
        );
        registry.register(
            "ssh_certificates_refused",
            "Certificate requests refused, by reason",
            refused.clone(),
        );
        Metrics {
            registry,
            certificates_issued: issued,
            certificates_refused: refused,
        }
    })
}

/// `GET /metrics`, for loopback clients (a scraper on the portal's host or its proxy).
pub async fn serve(extensions: axum::http::Extensions) -> Response {
    if !extensions
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|p| p.0.ip().to_canonical().is_loopback())
    {
        return (
            StatusCode::FORBIDDEN,
            "metrics are served to loopback clients only\n",
        )
            .into_response();
    }
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &get().registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}
