//! Wiring of ingestd into the shared daemon runner: opens the store, binds every listener
//! (so `READY=1` means they all accept), starts the scraper and retention, serves the `Logs`
//! and `Metrics` gRPC services and `/api/v1/query_range`, and applies reloads (retention and
//! downsampling apply live; listeners, limits, scrape targets and the queue at restart).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use rookery_common::config::Sources;
use rookery_common::daemon::{self, BoxError, Control, Daemon, RunError, StartContext};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, StoreBackend};
use crate::events::Metrics;
use crate::store::{Retention, Store};

/// The running ingester.
pub struct Ingestd {
    store: Store,
    bound: BTreeMap<String, String>,
    running: Mutex<Config>,
    tasks: Mutex<Option<JoinSet<()>>>,
}

fn retention(c: &Config) -> Retention {
    Retention {
        max_bytes: c.store.max_bytes,
        max_age: c.store.max_age,
        interval: c.store.retention_interval,
        downsample_after: c.store.downsample_after,
        downsample_step: c.store.downsample_step,
    }
}

fn tls_acceptor(c: &Config) -> Result<TlsAcceptor, BoxError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&c.syslog.tls_cert_file, &c.syslog.tls_key_file) else {
        return Err("syslog.tls needs syslog.tls-cert-file and syslog.tls-key-file".into());
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("cannot read syslog.tls-cert-file {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read syslog.tls-key-file {}: {e}", key.display()))?;
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("syslog TLS certificate and key do not fit: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

async fn bind_tcp(addr: SocketAddr, key: &str) -> Result<TcpListener, BoxError> {
    rookery_common::listen::tcp(addr)
        .map_err(|e| format!("cannot listen on {key} {addr}: {e}").into())
}

impl Daemon for Ingestd {
    type Config = Config;

    async fn start(ctx: StartContext<'_, Config>) -> Result<Self, BoxError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let c = ctx.config;
        let dir = &c.state.directory;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create state directory {}: {e}", dir.display()))?;
        let metrics = Metrics::default();
        metrics.register(ctx.registry);
        let store = match c.store.backend {
            StoreBackend::Sqlite => Store::open(
                dir,
                c.store.queue_records,
                c.store.batch_records,
                retention(c),
                metrics.clone(),
            )?,
            StoreBackend::Postgres => {
                let why =
                    crate::forward::require_central_database(&c.store.licensed_socket).await?;
                tracing::info!(feature = crate::forward::DATABASE_FEATURE, reason = %why, "PostgreSQL store licensed.");
                Store::open_postgres(
                    &c.store.postgres,
                    c.store.queue_records,
                    c.store.batch_records,
                    retention(c),
                    metrics.clone(),
                )
                .await?
            }
        };
        // Before any listener: every record committed from now on is spooled.
        store.set_forwarding(!c.forward.remote_write_url.is_empty());
        store.set_otlp_forwarding(!c.forward.otlp_url.is_empty());
        store.set_quic_forwarding(!c.forward.quic_peer.is_empty());
        // Certificates are read now: a bad file fails the start instead of spooling forever.
        let quic_sender = if c.forward.quic_peer.is_empty() {
            None
        } else {
            Some(crate::quic::Sender::new(&c.forward)?)
        };
        let shutdown = ctx.shutdown.clone();
        let sctx = crate::syslog::Ctx {
            store: store.clone(),
            metrics: metrics.clone(),
            max_message_bytes: c.syslog.max_message_bytes,
            connections: Arc::new(Semaphore::new(c.syslog.max_connections)),
            shutdown: shutdown.clone(),
        };
        let tls = if c.syslog.tls.is_empty() {
            None
        } else {
            Some(tls_acceptor(c)?)
        };
        // Bind everything first: a port that cannot be bound fails the start before READY.
        let mut bound = BTreeMap::new();
        let mut udp = Vec::new();
        for (i, a) in c.syslog.udp.iter().enumerate() {
            let s = rookery_common::listen::udp(*a)
                .map_err(|e| format!("cannot listen on syslog.udp {a}: {e}"))?;
            bound.insert(format!("syslog-udp-{i}"), s.local_addr()?.to_string());
            udp.push(s);
        }
        let mut tcp = Vec::new();
        for (i, a) in c.syslog.tcp.iter().enumerate() {
            let l = bind_tcp(*a, "syslog.tcp").await?;
            bound.insert(format!("syslog-tcp-{i}"), l.local_addr()?.to_string());
            tcp.push(l);
        }
        let mut tls_l = Vec::new();
        for (i, a) in c.syslog.tls.iter().enumerate() {
            let l = bind_tcp(*a, "syslog.tls").await?;
            bound.insert(format!("syslog-tls-{i}"), l.local_addr()?.to_string());
            tls_l.push(l);
        }
        let mut http_l = Vec::new();
        for (i, a) in c.http.listen.iter().enumerate() {
            let l = bind_tcp(*a, "http.listen").await?;
            bound.insert(format!("http-{i}"), l.local_addr()?.to_string());
            http_l.push(l);
        }
        let mut otlp_grpc = Vec::new();
        for (i, a) in c.otlp.grpc.iter().enumerate() {
            let l = bind_tcp(*a, "otlp.grpc").await?;
            bound.insert(format!("otlp-grpc-{i}"), l.local_addr()?.to_string());
            otlp_grpc.push(l);
        }
        let mut otlp_http = Vec::new();
        for (i, a) in c.otlp.http.iter().enumerate() {
            let l = bind_tcp(*a, "otlp.http").await?;
            bound.insert(format!("otlp-http-{i}"), l.local_addr()?.to_string());
            otlp_http.push(l);
        }
        let mut quic_eps = Vec::new();
        for (i, a) in c.quic.listen.iter().enumerate() {
            let ep = crate::quic::endpoint(*a, &c.quic)?;
            bound.insert(format!("quic-{i}"), ep.local_addr()?.to_string());
            quic_eps.push(ep);
        }
        let mut tasks = JoinSet::new();
        let octx = crate::otlp::OtlpCtx {
            store: store.clone(),
            metrics: metrics.clone(),
            max_labels: c.store.max_labels_per_series,
        };
        for ep in quic_eps {
            tasks.spawn(crate::quic::serve(
                ep,
                octx.clone(),
                c.http.max_body_bytes,
                shutdown.clone(),
            ));
        }
        for l in otlp_grpc {
            tasks.spawn(crate::otlp::serve_grpc(
                l,
                octx.clone(),
                c.http.max_body_bytes,
                shutdown.clone(),
            ));
        }
        let otlp_router = crate::otlp::http_router(octx, c.http.max_body_bytes);
        for l in otlp_http {
            tasks.spawn(crate::http::serve(l, otlp_router.clone(), shutdown.clone()));
        }
        for s in udp {
            tasks.spawn(crate::syslog::serve_udp(s, sctx.clone()));
        }
        for l in tcp {
            tasks.spawn(crate::syslog::serve_stream(l, None, sctx.clone()));
        }
        for l in tls_l {
            tasks.spawn(crate::syslog::serve_stream(l, tls.clone(), sctx.clone()));
        }
        let router = crate::http::router(crate::http::HttpCtx {
            store: store.clone(),
            metrics: metrics.clone(),
            max_body_bytes: c.http.max_body_bytes,
        })
        .merge(
            axum::Router::new()
                .route(
                    "/api/v1/write",
                    axum::routing::post(crate::remote_write::write),
                )
                .with_state(crate::remote_write::WriteCtx {
                    store: store.clone(),
                    metrics: metrics.clone(),
                    max_labels: c.store.max_labels_per_series,
                    interner: std::sync::Arc::new(crate::remote_write::LabelInterner::new(
                        crate::remote_write::INTERNED_LABEL_SETS,
                    )),
                }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(c.http.max_body_bytes));
        let query_routes = axum::Router::new()
            .route(
                "/api/v1/query_range",
                axum::routing::get(crate::remote_write::query_range),
            )
            .with_state(store.clone());
        *ctx.http_routes = std::mem::take(ctx.http_routes).merge(query_routes);
        for l in http_l {
            tasks.spawn(crate::http::serve(l, router.clone(), shutdown.clone()));
        }
        if !c.scrape.targets.is_empty() {
            tasks.spawn(crate::scrape::run(
                store.clone(),
                metrics.clone(),
                c.scrape.targets.clone(),
                c.scrape.interval,
                c.scrape.timeout,
                shutdown.clone(),
            ));
        }
        if !c.forward.remote_write_url.is_empty() {
            tasks.spawn(crate::forward::run(
                store.clone(),
                metrics.clone(),
                c.forward.clone(),
                shutdown.clone(),
            ));
        }
        if !c.forward.otlp_url.is_empty() {
            tasks.spawn(crate::forward::run_otlp(
                store.clone(),
                metrics.clone(),
                c.forward.clone(),
                shutdown.clone(),
            ));
        }
        if let Some(sender) = quic_sender {
            tasks.spawn(crate::forward::run_quic(
                store.clone(),
                metrics.clone(),
                c.forward.clone(),
                sender,
                shutdown.clone(),
            ));
        }
        tasks.spawn(store.clone().retention_loop(shutdown));
        ctx.routes
            .add_service(crate::service::server(store.clone()));
        ctx.routes
            .add_service(crate::service::metrics_server(store.clone()));
        tracing::info!(listeners = ?bound, db = %store.describe(), "Log ingest listening.");
        Ok(Self {
            store,
            bound,
            running: Mutex::new(c.clone()),
            tasks: Mutex::new(Some(tasks)),
        })
    }

    async fn apply(&self, config: &Config) -> Result<(), BoxError> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let mut live = running.clone();
        live.store.max_bytes = config.store.max_bytes;
        live.store.max_age = config.store.max_age;
        live.store.retention_interval = config.store.retention_interval;
        live.store.downsample_after = config.store.downsample_after;
        live.store.downsample_step = config.store.downsample_step;
        if live != *config {
            tracing::warn!(
                "Listener, limit, scrape and queue changes take effect at the next restart; retention applies now."
            );
        }
        self.store.set_retention(retention(config));
        *running = live;
        Ok(())
    }

    fn status_text(&self) -> String {
        format!(
            "ingesting on {} listeners; {} records queued",
            self.bound.len(),
            self.store.queue_depth()
        )
    }

    fn details(&self) -> BTreeMap<String, String> {
        let mut d = self.bound.clone();
        d.insert("database".into(), self.store.describe());
        d.insert("queue-depth".into(), self.store.queue_depth().to_string());
        d
    }

    async fn drain(&self) {
        let tasks = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut tasks) = tasks {
            while tasks.join_next().await.is_some() {}
        }
    }
}

/// Runs ingestd in-process until `control.shutdown` is cancelled (tests use this; the binary
/// goes through `rookery_common::daemon::main`).
pub async fn run(sources: Sources, control: Control) -> Result<(), RunError> {
    daemon::run::<Ingestd>(sources, control).await
}
