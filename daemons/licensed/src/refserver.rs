//! A reference licence server for tests (feature `test-support`): the three endpoints of
//! `docs/licensing.md` over HTTPS on 127.0.0.1 with a CA of its own (so the client's
//! `ca-file` is exercised), with failure modes switched at run time: unknown key (401),
//! forbidden (403), expired (403 `expired`), 5xx, slow answers, feature changes, and down.
//! It records every keepalive it receives.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::key::LicenceKey;
use crate::protocol::{
    ErrorBody, GrantedFeature, KeepaliveRequest, KeepaliveResponse, ValidateRequest,
    ValidateResponse,
};

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Known keys are valid.
    Normal,
    /// Every key is refused with 403 `forbidden`.
    Forbidden,
    /// Every request fails with 503.
    ServerError,
    /// Known keys are expired (403 `expired`).
    Expired,
}

#[derive(Debug)]
struct Settings {
    mode: Mode,
    delay: Duration,
    keys: Vec<String>,
    features: Vec<GrantedFeature>,
    expires_at: Option<i64>,
    keepalives: Vec<KeepaliveRequest>,
    hits: Vec<&'static str>,
}

type Shared = Arc<Mutex<Settings>>;

/// A running reference server.
pub struct RefServer {
    /// Base URL, e.g. `https://localhost:41234`.
    pub url: String,
    /// PEM of the CA that signed the server's certificate (write it to `ca-file`).
    pub ca_pem: String,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    settings: Shared,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A well-formed key the server accepts by default.
pub fn test_key() -> LicenceKey {
    LicenceKey::from_groups(["TEST", "0000", "RKRY", "0001"]).expect("the test key is well-formed")
}

struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Settings> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

fn error(status: StatusCode, code: &str, message: &str, expires_at: Option<i64>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: code.into(),
            message: message.into(),
            expires_at,
        }),
    )
        .into_response()
}

/// Common checks; `Err` is the answer to send.
async fn admit(
    s: &Shared,
    endpoint: &'static str,
    key: &str,
    product: &str,
) -> Result<ValidateResponse, Response> {
    let (delay, mode) = {
        let mut g = lock(s);
        g.hits.push(endpoint);
        (g.delay, g.mode)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let g = lock(s);
    if mode == Mode::ServerError {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "maintenance",
            None,
        ));
    }
    if !g.keys.iter().any(|k| k == key) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "invalid_key",
            "unknown licence key",
            None,
        ));
    }
    if product != "rookery" {
        return Err(error(
            StatusCode::FORBIDDEN,
            "product_mismatch",
            "key is for another product",
            None,
        ));
    }
    match mode {
        Mode::Forbidden => Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "licence revoked",
            None,
        )),
        Mode::Expired => Err(error(
            StatusCode::FORBIDDEN,
            "expired",
            "licence expired",
            g.expires_at.or(Some(1)),
        )),
        _ => Ok(ValidateResponse {
            valid: true,
            customer: "Test Customer".into(),
            tier: "enterprise".into(),
            expires_at: g.expires_at,
            features: g.features.clone(),
        }),
    }
}

async fn validate(State(s): State<Shared>, Json(req): Json<ValidateRequest>) -> Response {
    match admit(
        &s,
        "validate",
        &req.identity.license_key,
        &req.identity.product,
    )
    .await
    {
        Ok(r) => Json(r).into_response(),
        Err(resp) => resp,
    }
}

async fn features(State(s): State<Shared>, Json(req): Json<ValidateRequest>) -> Response {
    match admit(
        &s,
        "features",
        &req.identity.license_key,
        &req.identity.product,
    )
    .await
    {
        Ok(r) => Json(r).into_response(),
        Err(resp) => resp,
    }
}

async fn keepalive(State(s): State<Shared>, Json(req): Json<KeepaliveRequest>) -> Response {
    match admit(
        &s,
        "keepalive",
        &req.identity.license_key,
        &req.identity.product,
    )
    .await
    {
        Ok(_) => {
            lock(&s).keepalives.push(req);
            Json(KeepaliveResponse { ok: true }).into_response()
        }
        Err(resp) => resp,
    }
}

impl RefServer {
    /// Starts a server that accepts [`test_key`] with features `autoperf` and `sso`.
    pub async fn start() -> Self {
        let ca_key = KeyPair::generate().expect("key generation works");
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).expect("empty SAN list is valid");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Rookery test licence CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA self-signs");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().expect("key generation works");
        let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("SANs are valid")
            .signed_by(&leaf_key, &issuer)
            .expect("CA signs the leaf");
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .expect("certificate and key match");
        let tcp = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback bind works");
        let addr = tcp.local_addr().expect("bound socket has an address");
        let settings: Shared = Arc::new(Mutex::new(Settings {
            mode: Mode::Normal,
            delay: Duration::ZERO,
            keys: vec![test_key().to_string()],
            features: vec![
                GrantedFeature {
                    name: "autoperf".into(),
                    enabled: true,
                },
                GrantedFeature {
                    name: "sso".into(),
                    enabled: true,
                },
            ],
            expires_at: None,
            keepalives: Vec::new(),
            hits: Vec::new(),
        }));
        let stop = CancellationToken::new();
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let task = Self::spawn(
            TlsListener {
                tcp,
                acceptor: acceptor.clone(),
            },
            settings.clone(),
            stop.clone(),
        );
        Self {
            url: format!("https://localhost:{}", addr.port()),
            ca_pem: ca_cert.pem(),
            addr,
            acceptor,
            settings,
            stop,
            task: Some(task),
        }
    }

    fn spawn(
        listener: TlsListener,
        settings: Shared,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let app = axum::Router::new()
            .route(crate::protocol::VALIDATE, post(validate))
            .route(crate::protocol::FEATURES, post(features))
            .route(crate::protocol::KEEPALIVE, post(keepalive))
            .with_state(settings);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        })
    }

    /// Switches the failure mode.
    pub fn set_mode(&self, mode: Mode) {
        lock(&self.settings).mode = mode;
    }

    /// Delays every answer by `d`.
    pub fn set_delay(&self, d: Duration) {
        lock(&self.settings).delay = d;
    }

    /// Replaces the granted features.
    pub fn set_features(&self, features: &[(&str, bool)]) {
        lock(&self.settings).features = features
            .iter()
            .map(|(n, e)| GrantedFeature {
                name: (*n).into(),
                enabled: *e,
            })
            .collect();
    }

    /// Sets the licence expiry (Unix seconds).
    pub fn set_expires_at(&self, at: Option<i64>) {
        lock(&self.settings).expires_at = at;
    }

    /// Keepalives received so far.
    pub fn keepalives(&self) -> Vec<KeepaliveRequest> {
        lock(&self.settings).keepalives.clone()
    }

    /// How many requests reached `endpoint` (`validate`, `features`, `keepalive`).
    pub fn hits(&self, endpoint: &str) -> usize {
        lock(&self.settings)
            .hits
            .iter()
            .filter(|h| **h == endpoint)
            .count()
    }

    /// Takes the server down: connections are refused until [`RefServer::restart`].
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Brings a stopped server back on the same port, with the same certificate.
    pub async fn restart(&mut self) {
        let tcp = TcpListener::bind(self.addr)
            .await
            .expect("port is free again");
        self.stop = CancellationToken::new();
        let listener = TlsListener {
            tcp,
            acceptor: self.acceptor.clone(),
        };
        self.task = Some(Self::spawn(
            listener,
            self.settings.clone(),
            self.stop.clone(),
        ));
    }
}
