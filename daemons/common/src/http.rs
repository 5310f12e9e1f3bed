//! HTTP pieces every daemon shares: the loopback `/healthz` + Prometheus `/metrics` server
//! ([`serve_health_metrics`]), and [`ApiError`], the one error body of every HTTP surface of
//! the project (DESIGN.md "REST API"):
//! `{"error", "message", "status", "correlation_id", "timestamp"}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Content type of the OpenMetrics text format that prometheus-client encodes.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The error body of every HTTP API in the project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_config`.
    pub error: String,
    /// Human text saying what was wrong.
    pub message: String,
    /// The HTTP status, repeated for clients that only keep the body.
    pub status: u16,
    /// The request's ID, also in the `x-request-id` header and the logs.
    pub correlation_id: String,
    /// When, RFC 3339.
    pub timestamp: String,
}

impl ApiError {
    /// An error with `status`, `code` and `message`, and a fresh correlation ID.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            error: code.to_owned(),
            message: message.into(),
            status: status.as_u16(),
            correlation_id: new_correlation_id(),
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }

    /// Uses the request's correlation ID instead of a fresh one.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = id.into();
        self
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.error, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let id = HeaderValue::from_str(&self.correlation_id).ok();
        let mut resp = (status, Json(self)).into_response();
        if let Some(id) = id {
            resp.headers_mut().insert("x-request-id", id);
        }
        resp
    }
}

/// A random 128-bit ID as 32 hex digits.
pub fn new_correlation_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Health as `/healthz` reports it: ready between `READY=1` and `STOPPING=1`.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<AtomicBool>);

impl Health {
    /// Marks the daemon ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether the daemon is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct MetricsState {
    daemon: &'static str,
    registry: Arc<Registry>,
    health: Health,
}

/// The `/healthz` + `/metrics` router (exposed for tests and for daemons that add routes).
pub fn health_metrics_router(
    daemon: &'static str,
    registry: Arc<Registry>,
    health: Health,
) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError::not_found("no such path (this port serves /healthz and /metrics)")
        })
        .with_state(MetricsState {
            daemon,
            registry,
            health,
        })
}

/// Serves `router` (built by [`health_metrics_router`], plus any daemon routes) on `listener`
/// until `shutdown` is cancelled.
pub async fn serve_health_metrics(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn healthz(State(s): State<MetricsState>) -> Response {
    let body = serde_json::json!({
        "daemon": s.daemon,
        "version": crate::VERSION,
        "status": if s.health.is_ready() { "ok" } else { "unavailable" },
    });
    let status = if s.health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Bytes of exposition text sent per piece of a `/metrics` answer.
const METRICS_CHUNK: usize = 64 * 1024;

/// Sends the exposition text in pieces of [`METRICS_CHUNK`] bytes as it is encoded.
struct ChunkWriter {
    buf: String,
    tx: tokio::sync::mpsc::Sender<Result<String, std::io::Error>>,
}

impl ChunkWriter {
    /// Sends what is buffered; an error once the client has gone.
    fn send(&mut self) -> std::fmt::Result {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.buf, String::with_capacity(METRICS_CHUNK));
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| std::fmt::Error)
    }
}

impl std::fmt::Write for ChunkWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.buf.len() + s.len() > METRICS_CHUNK {
            self.send()?;
        }
        self.buf.push_str(s);
        Ok(())
    }
}

/// The exposition, streamed: encoded on a blocking thread in pieces of [`METRICS_CHUNK`]
/// bytes that are sent as they come, so a daemon with thousands of series never holds its
/// whole exposition (megabytes) in memory. Collectors must not hold locks their daemon needs
/// while they write (a slow client slows the encoding down). An encoding error after the
/// first piece ends the answer without its terminating chunk, so the client sees it broken,
/// not short.
async fn metrics(State(s): State<MetricsState>) -> Response {
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let registry = s.registry.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter {
            buf: String::with_capacity(METRICS_CHUNK),
            tx,
        };
        let result =
            prometheus_client::encoding::text::encode(&mut w, &registry).and_then(|()| w.send());
        if result.is_err() && !w.tx.is_closed() {
            let _ =
                w.tx.blocking_send(Err(std::io::Error::other("cannot encode metrics")));
        }
    });
    // The first piece decides the status: an error before any text is still a clean 500.
    match rx.recv().await {
        Some(Ok(first)) => {
            use tokio_stream::StreamExt as _;
            let body = tokio_stream::once(Ok(first))
                .chain(tokio_stream::wrappers::ReceiverStream::new(rx));
            (
                [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
                axum::body::Body::from_stream(body),
            )
                .into_response()
        }
        Some(Err(err)) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics_encoding",
            format!("cannot encode metrics: {err}"),
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics_encoding",
            "cannot encode metrics: the encoder stopped",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    async fn get_text(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        let status = buf[9..12].parse().unwrap();
        (status, buf)
    }

    #[tokio::test]
    async fn healthz_follows_readiness_and_metrics_are_openmetrics() {
        let mut registry = Registry::default();
        let c = Counter::<u64>::default();
        registry.register("rookery_testd_things", "Things seen", c.clone());
        c.inc_by(3);
        let health = Health::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let router = health_metrics_router("testd", Arc::new(registry), health.clone());
        let server = tokio::spawn(serve_health_metrics(listener, router, stop.clone()));

        assert_eq!(get_text(addr, "/healthz").await.0, 503);
        health.set_ready(true);
        let (status, body) = get_text(addr, "/healthz").await;
        assert_eq!(status, 200);
        assert!(body.contains("\"daemon\":\"testd\""), "{body}");
        let (status, body) = get_text(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("rookery_testd_things_total 3"), "{body}");
        assert!(body.contains("application/openmetrics-text"), "{body}");

        let (status, body) = get_text(addr, "/nope").await;
        assert_eq!(status, 404);
        let json: ApiError = serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(json.error, "not_found");
        assert_eq!(json.status, 404);
        assert_eq!(json.correlation_id.len(), 32);
        assert!(chrono::DateTime::parse_from_rfc3339(&json.timestamp).is_ok());
        assert!(
            body.contains(&format!("x-request-id: {}", json.correlation_id)),
            "{body}"
        );
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    /// A collector that writes `ok` series and then fails (`ok` = 0: fails at once).
    #[derive(Debug)]
    struct Failing {
        ok: usize,
    }

    impl prometheus_client::collector::Collector for Failing {
        fn encode(
            &self,
            mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
        ) -> std::fmt::Result {
            use prometheus_client::encoding::EncodeMetric as _;
            if self.ok == 0 {
                return Err(std::fmt::Error);
            }
            let family = encoder.encode_descriptor(
                "rookery_testd_failing",
                "Fails midway",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            let mut family = Some(family);
            for i in 0..self.ok {
                let Some(mut f) = family.take() else { break };
                let gauge = prometheus_client::metrics::gauge::Gauge::<i64>::default();
                gauge.set(i64::try_from(i).unwrap());
                gauge.encode(f.encode_family(&[("n", i.to_string())])?)?;
                family = Some(f);
            }
            Err(std::fmt::Error)
        }
    }

    async fn get(router: axum::Router, path: &str) -> Response {
        use tower::ServiceExt as _;
        router
            .oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap()
    }

    /// The streamed exposition is byte for byte what the encoder writes into one string,
    /// across many pieces; an encoding error before any text is a 500, after some text a
    /// broken body (never a short one that looks complete).
    #[tokio::test]
    async fn metrics_stream_the_exact_exposition_and_break_on_errors() {
        use prometheus_client::metrics::family::Family;
        let mut registry = Registry::default();
        let family = Family::<Vec<(String, String)>, Counter<u64>>::default();
        registry.register("rookery_testd_probes", "Probes", family.clone());
        for i in 0..20_000u64 {
            family
                .get_or_create(&vec![("target".to_owned(), format!("target-{i}"))])
                .inc_by(i);
        }
        let mut expected = String::new();
        prometheus_client::encoding::text::encode(&mut expected, &registry).unwrap();
        assert!(expected.len() > 10 * METRICS_CHUNK, "{}", expected.len());
        let router = health_metrics_router("testd", Arc::new(registry), Health::default());
        let resp = get(router, "/metrics").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            OPENMETRICS_CONTENT_TYPE
        );
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(body == expected.as_bytes(), "exposition differs");

        let mut registry = Registry::default();
        registry.register_collector(Box::new(Failing { ok: 0 }));
        let router = health_metrics_router("testd", Arc::new(registry), Health::default());
        let resp = get(router, "/metrics").await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);

        let mut registry = Registry::default();
        registry.register_collector(Box::new(Failing { ok: 20_000 }));
        let router = health_metrics_router("testd", Arc::new(registry), Health::default());
        let resp = get(router, "/metrics").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .is_err(),
            "a failed encoding must not end like a complete answer"
        );
    }
}
