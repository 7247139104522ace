//! Prometheus metrics, served on `[sshd] metrics_listen` (a local address; off by default) at
//! `/metrics` in the text exposition format: connections accepted and dropped, authentication
//! results by method and outcome, sessions (total and open), session bytes by direction.

use std::net::SocketAddr;
use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    pub method: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: String,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub connections: Counter,
    pub dropped: Family<ReasonLabels, Counter>,
    pub auth: Family<AuthLabels, Counter>,
    pub sessions: Counter,
    pub sessions_open: Gauge,
    pub bytes: Family<DirectionLabels, Counter>,
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("sshd_gsi");
        let m = Metrics {
            connections: Counter::default(),
            dropped: Family::default(),
            auth: Family::default(),
            sessions: Counter::default(),
            sessions_open: Gauge::default(),
            bytes: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "TCP connections accepted",
            m.connections.clone(),
        );
        registry.register(
            "connections_dropped",
            "Connections dropped before SSH (MaxStartups)",
            m.dropped.clone(),
        );
        registry.register(
            "auth",
            "Authentication decisions by method and result",
            m.auth.clone(),
        );
        registry.register("sessions", "Session processes started", m.sessions.clone());
        registry.register(
            "sessions_open",
            "Session processes running",
            m.sessions_open.clone(),
        );
        registry.register(
            "session_bytes",
            "Bytes between clients and session processes",
            m.bytes.clone(),
        );
        Metrics { registry, ..m }
    })
}

impl Metrics {
    pub fn auth(&self, method: &str, result: &str) {
        self.auth
            .get_or_create(&AuthLabels {
                method: method.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    pub fn dropped(&self, reason: &str) {
        self.dropped
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn bytes(&self, direction: &str, n: u64) {
        self.bytes
            .get_or_create(&DirectionLabels {
                direction: direction.to_string(),
            })
            .inc_by(n);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serve `/metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr) -> Result<(), String> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Response, StatusCode};
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("metrics listen {addr}: {e}"))?;
    tracing::info!(target: "sshd_gsi", "metrics on http://{addr}/metrics");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        if req.uri().path() == "/metrics" {
                            Response::builder()
                                .header(
                                    "content-type",
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(Full::new(Bytes::from(get().render())))
                        } else {
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"not found\n")))
                        }
                    },
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render() {
        let m = get();
        m.auth("x509", "accept");
        m.dropped("per-source");
        m.bytes("out", 42);
        let text = m.render();
        assert!(
            text.contains("sshd_gsi_auth_total{method=\"x509\",result=\"accept\"}"),
            "{text}"
        );
        assert!(
            text.contains("sshd_gsi_connections_dropped_total{reason=\"per-source\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sshd_gsi_session_bytes_total{direction=\"out\"} 42"),
            "{text}"
        );
        assert!(text.contains("# EOF"), "{text}");
    }
}
