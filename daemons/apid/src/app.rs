//! Wiring of apid into the shared daemon runner: state, TLS, the first-boot admin, the HTTPS
//! API listener and the HTTP redirect listener ([`Running`]), and reloads of `[auth]`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::Request;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use rookery_common::config::Sources;
use rookery_common::daemon::{self, BoxError, Control, Daemon, RunError, StartContext};
use rookery_common::http::ApiError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, Api, Peer};
use crate::bootstrap::{self, InitialAdmin};
use crate::config::Config;
use crate::store::Store;
use crate::tls::{self, TlsListener};

/// Why apid could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state directory could not be created.
    #[error("cannot create state directory {}", .path.display())]
    StateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate could not be loaded or generated.
    #[error("cannot set up TLS")]
    Tls(#[from] tls::CertError),
    /// The database could not be opened.
    #[error("cannot open the database")]
    Store(#[from] crate::store::StoreError),
    /// The signing key could not be read or created.
    #[error("cannot load the token signing key {}", .path.display())]
    SigningKey {
        /// The key file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The one-time admin could not be created.
    #[error("cannot create the initial admin")]
    InitialAdmin(#[from] bootstrap::InitialAdminError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// apid's listeners, running.
pub struct Running {
    /// The handlers' state.
    pub api: Arc<Api>,
    /// Where HTTPS listens (the real port when configured as 0).
    pub https: SocketAddr,
    /// Where the redirect listens, if enabled.
    pub http: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Opens state and TLS, creates the one-time admin if due, and serves until `shutdown`.
    pub async fn start(config: &Config, shutdown: CancellationToken) -> Result<Self, StartError> {
        // One process-wide TLS provider (ring, docs/decisions/0002); a second install is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = &config.state.directory;
        std::fs::create_dir_all(dir).map_err(|source| StartError::StateDir {
            path: dir.clone(),
            source,
        })?;
        if tls::ensure_certificate(&config.tls.cert, &config.tls.key)? {
            tracing::warn!(
                cert = %config.tls.cert.display(),
                "Generated a self-signed certificate; install a trusted one for production."
            );
        }
        let tls_config = Arc::new(tls::server_config(&config.tls.cert, &config.tls.key)?);
        let store = Store::open(dir)?;
        let key = api::load_signing_key(&config.auth.signing_key).map_err(|source| {
            StartError::SigningKey {
                path: config.auth.signing_key.clone(),
                source,
            }
        })?;
        match bootstrap::create_initial_admin(&store, &config.auth.initial_admin)? {
            InitialAdmin::Created(name) => {
                tracing::info!(user = %name, "Created the one-time admin; the password must be changed at first login.");
            }
            InitialAdmin::NoFile => tracing::warn!(
                file = %config.auth.initial_admin.display(),
                "No users and no initial-admin file; use rookeryctl user reset-password or the first-boot service."
            ),
            InitialAdmin::Empty => tracing::warn!(
                file = %config.auth.initial_admin.display(),
                "The initial-admin file holds no password."
            ),
            InitialAdmin::UsersExist => {}
        }
        let api = Arc::new(Api::new(
            store,
            key,
            config.auth.clone(),
            config.daemons.clone(),
        ));

        let bind = |addr: SocketAddr| async move {
            rookery_common::listen::tcp(addr).map_err(|source| StartError::Bind { addr, source })
        };
        let tcp = bind(config.http.listen).await?;
        let listener = TlsListener::new(tcp, tls_config, shutdown.clone()).map_err(|source| {
            StartError::Bind {
                addr: config.http.listen,
                source,
            }
        })?;
        let https =
            axum::serve::Listener::local_addr(&listener).map_err(|source| StartError::Bind {
                addr: config.http.listen,
                source,
            })?;
        let router = api::router(
            api.clone(),
            config.http.body_limit,
            config.webui.directory.clone(),
        );
        let stop = shutdown.clone();
        let mut tasks = vec![tokio::spawn(async move {
            let served = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<Peer>(),
            )
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "The HTTPS server stopped.");
            }
        })];

        let mut http = None;
        if config.http.redirect {
            let tcp = bind(config.http.redirect_listen).await?;
            http = Some(tcp.local_addr().map_err(|source| StartError::Bind {
                addr: config.http.redirect_listen,
                source,
            })?);
            let port = https.port();
            let router = axum::Router::new().fallback(move |req: Request| redirect(req, port));
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(err) = axum::serve(tcp, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                {
                    tracing::error!(error = %err, "The HTTP redirect server stopped.");
                }
            }));
        }
        Ok(Self {
            api,
            https,
            http,
            tasks,
        })
    }

    /// Waits for the servers to finish after `shutdown`.
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// 308 to the same path on HTTPS (`port` omitted when 443).
async fn redirect(req: Request, port: u16) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok());
    let Some(host) = host else {
        return ApiError::bad_request("a Host header is needed to redirect to HTTPS")
            .into_response();
    };
    let authority = if port == 443 {
        host.host().to_owned()
    } else if host.host().contains(':') {
        format!("[{}]:{port}", host.host())
    } else {
        format!("{}:{port}", host.host())
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    match Uri::builder()
        .scheme("https")
        .authority(authority)
        .path_and_query(path)
        .build()
    {
        Ok(uri) => Redirect::permanent(&uri.to_string()).into_response(),
        Err(_) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "cannot build the HTTPS URL",
        )
        .into_response(),
    }
}

/// The running API daemon.
pub struct Apid {
    running: Mutex<Option<Running>>,
    api: Arc<Api>,
    https: SocketAddr,
}

impl Daemon for Apid {
    type Config = Config;

    async fn start(ctx: StartContext<'_, Config>) -> Result<Self, BoxError> {
        let running = Running::start(ctx.config, ctx.shutdown.clone()).await?;
        running.api.metrics.register(ctx.registry);
        Ok(Self {
            api: running.api.clone(),
            https: running.https,
            running: Mutex::new(Some(running)),
        })
    }

    async fn apply(&self, config: &Config) -> Result<(), BoxError> {
        self.api.set_auth(config.auth.clone());
        Ok(())
    }

    fn status_text(&self) -> String {
        let users = self.api.store.user_count().unwrap_or(0);
        format!("serving https on {}; {users} users", self.https)
    }

    async fn drain(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(r) = running {
            r.join().await;
        }
    }
}

/// Runs apid in-process until `control.shutdown` is cancelled (the binary goes through
/// `rookery_common::daemon::main`).
pub async fn run(sources: Sources, control: Control) -> Result<(), RunError> {
    daemon::run::<Apid>(sources, control).await
}
