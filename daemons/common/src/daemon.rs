//! The daemon runner: one lifecycle for every Rookery daemon.
//!
//! A daemon implements [`Daemon`] (start, apply a new config, describe itself, drain) and its
//! `main.rs` calls [`main`]. The runner provides the command line (`run`, `check-config`,
//! `print-config`), loads and validates the config, binds the gRPC socket (with health and
//! `Admin`) and the loopback `/healthz` + `/metrics` listener, tells systemd `READY=1` only
//! then, reloads on SIGHUP or `Admin.Reload` (validate, then apply; a rejected config keeps the
//! old one and says why in `STATUS=` and the journal), and on SIGTERM sends `STOPPING=1` and
//! drains within [`DRAIN_TIMEOUT`]. Tests drive the same lifecycle in-process with [`run`].
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 usage, 78 (EX_CONFIG) invalid config.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::service::RoutesBuilder;
use tonic::{Request, Response, Status};

use crate::config::{self, ConfigErrors, DaemonConfig, Loaded, Problem, Sources};
use crate::http::Health;
use crate::logging::{AaaKind, aaa};
use crate::notify::Notifier;
use crate::proto;

/// Bound on the graceful drain after SIGTERM: well inside systemd's default stop timeout
/// (90 s), long enough for a daemon to finish writing its batch.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Exit code of an invalid configuration (sysexits.h EX_CONFIG); units set
/// `RestartPreventExitStatus=78` so a bad config never restart-loops.
pub const EXIT_CONFIG: u8 = 78;
/// Exit code of a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a command-line usage error.
pub const EXIT_USAGE: u8 = 2;

/// Boxed error of a daemon's start or apply.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a daemon gets at start.
pub struct StartContext<'a, C> {
    /// The validated configuration.
    pub config: &'a C,
    /// Register metrics here (names `rookery_<daemon>_…`); frozen once the daemon is ready.
    pub registry: &'a mut Registry,
    /// Add the daemon's own gRPC services here; they are served next to health and `Admin`.
    pub routes: &'a mut RoutesBuilder,
    /// Extra HTTP routes served on the loopback metrics listener next to `/healthz` and
    /// `/metrics` (e.g. probed's blackbox-compatible `/probe`). Merge into it.
    pub http_routes: &'a mut axum::Router,
    /// Cancelled at SIGTERM: long-running tasks stop when it fires.
    pub shutdown: CancellationToken,
}

/// One Rookery daemon, as the runner sees it.
pub trait Daemon: Sized + Send + Sync + 'static {
    /// The daemon's `<daemon>.toml`.
    type Config: DaemonConfig;

    /// Opens state, binds the daemon's own sockets and spawns its work. `READY=1` is sent
    /// after this returns and the runner's sockets are bound.
    fn start(
        ctx: StartContext<'_, Self::Config>,
    ) -> impl Future<Output = Result<Self, BoxError>> + Send;

    /// Applies a new, already validated configuration. An error keeps the old one running.
    fn apply(&self, config: &Self::Config) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// One line for systemd's `STATUS=` and `Admin.Status`.
    fn status_text(&self) -> String;

    /// Daemon-specific facts for `Admin.Status`.
    fn details(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// Finishes in-flight work after SIGTERM (the shutdown token is already cancelled).
    fn drain(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Why [`run`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid (exit 78).
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// The daemon's own start failed.
    #[error("cannot start")]
    Start(#[source] BoxError),
    /// The gRPC socket could not be bound.
    #[error(transparent)]
    Bind(#[from] crate::grpc::BindError),
    /// The metrics listener could not be bound.
    #[error("cannot listen on {addr} for /healthz and /metrics")]
    Metrics {
        /// The configured `[metrics] listen`.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl RunError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => EXIT_CONFIG,
            _ => EXIT_FAILURE,
        }
    }
}

/// How the outside world steers a running daemon (signals in production, tests in-process).
#[derive(Debug, Clone, Default)]
pub struct Control {
    /// Cancel to stop the daemon (SIGTERM).
    pub shutdown: CancellationToken,
    /// Notify to reload the configuration (SIGHUP).
    pub reload: Arc<Notify>,
}

#[derive(Parser)]
struct Cli {
    /// Config file [default: /etc/rookery/<daemon>.toml]; drop-ins are read from the `.d`
    /// directory beside it.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Check the configuration: print every problem as PATH:LINE:COL: KEY: MESSAGE and exit 78
    /// if there is any.
    CheckConfig,
    /// Print the effective configuration (defaults applied) as TOML.
    PrintConfig,
}

/// The whole `main` of a daemon: parses the command line and runs the chosen command.
pub fn main<D: Daemon>() -> ExitCode {
    let name = D::Config::DAEMON;
    let cmd = Cli::command()
        .name(format!("rookery-{name}"))
        .version(crate::VERSION)
        .about(format!("Rookery {name} daemon"));
    let cli = match cmd
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let sources = Sources::from_process(name, cli.config.as_deref());
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => ExitCode::from(check_config::<D::Config>(&sources)),
        Command::PrintConfig => ExitCode::from(print_config::<D::Config>(&sources)),
        Command::Run => {
            crate::logging::init(name);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(err) => {
                    tracing::error!(error = %err, "Cannot start the async runtime.");
                    return ExitCode::from(EXIT_FAILURE);
                }
            };
            let code = runtime.block_on(async {
                let control = Control::default();
                if let Err(err) = spawn_signal_handlers(control.clone()) {
                    tracing::error!(error = %err, "Cannot install signal handlers.");
                    return EXIT_FAILURE;
                }
                match run::<D>(sources, control).await {
                    Ok(()) => 0,
                    Err(err) => {
                        report_run_error(&err);
                        err.exit_code()
                    }
                }
            });
            ExitCode::from(code)
        }
    }
}

fn report_run_error(err: &RunError) {
    if let RunError::Config(errors) = err {
        for p in &errors.0 {
            tracing::error!(problem = %p, "Invalid configuration.");
        }
    }
    let chain = crate::error_chain(err);
    tracing::error!(error = %chain, "Daemon stopped.");
    Notifier.status(&format!("failed: {chain}"));
}

/// The report of `check-config` for `C` from `sources`: the lines to print and the exit code
/// (0, or 78 with one line per problem). `rookeryctl config check` prints the same.
pub fn check_config_report<C: DaemonConfig>(sources: &Sources) -> (Vec<String>, u8) {
    match config::load::<C>(sources) {
        Ok(loaded) => {
            let mut lines: Vec<String> = loaded
                .warnings
                .iter()
                .map(|w| format!("warning: {w}"))
                .collect();
            let files: Vec<String> = loaded
                .files
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            if files.is_empty() {
                lines.push(format!(
                    "{}: not present; compiled defaults are valid",
                    sources.main.display()
                ));
            } else {
                lines.push(format!("{}: ok", files.join(", ")));
            }
            (lines, 0)
        }
        Err(errors) => (
            errors.0.iter().map(ToString::to_string).collect(),
            EXIT_CONFIG,
        ),
    }
}

#[allow(clippy::print_stdout, reason = "check-config is a command-line report")]
fn check_config<C: DaemonConfig>(sources: &Sources) -> u8 {
    let (lines, code) = check_config_report::<C>(sources);
    for line in lines {
        println!("{line}");
    }
    code
}

#[allow(clippy::print_stdout, reason = "print-config is a command-line report")]
fn print_config<C: DaemonConfig>(sources: &Sources) -> u8 {
    match config::load::<C>(sources) {
        Ok(loaded) => {
            print!("{}", config::render(&loaded.config));
            0
        }
        Err(errors) => {
            for p in &errors.0 {
                println!("{p}");
            }
            EXIT_CONFIG
        }
    }
}

fn spawn_signal_handlers(control: Control) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { control.shutdown.cancel(); break; }
                _ = int.recv() => { control.shutdown.cancel(); break; }
                _ = hup.recv() => control.reload.notify_one(),
            }
        }
    });
    Ok(())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

struct Shared<D: Daemon> {
    daemon: D,
    sources: Sources,
    current: Mutex<Loaded<D::Config>>,
    state: Mutex<&'static str>,
    last_reload_error: Mutex<String>,
    config_loaded: Mutex<SystemTime>,
    started: SystemTime,
    started_mono: Instant,
    reload_lock: tokio::sync::Mutex<()>,
    reloads: Family<ResultLabel, Counter>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl<D: Daemon> Shared<D> {
    fn status_line(&self) -> String {
        let digest = lock(&self.current).digest.clone();
        let mut line = format!(
            "{}; config {}",
            self.daemon.status_text(),
            &digest[..12.min(digest.len())]
        );
        let err = lock(&self.last_reload_error).clone();
        if !err.is_empty() {
            line.push_str("; last reload rejected: ");
            line.push_str(&err);
        }
        line
    }

    /// Validate, then apply. A rejected configuration leaves the running one in place.
    async fn reload(&self) -> proto::ReloadResponse {
        let _serial = self.reload_lock.lock().await;
        let name = D::Config::DAEMON;
        *lock(&self.state) = "reloading";
        Notifier.reloading("reloading configuration");
        tracing::info!("Reloading configuration.");
        let outcome = match config::load::<D::Config>(&self.sources) {
            Err(errors) => {
                for p in &errors.0 {
                    tracing::warn!(problem = %p, "Invalid configuration.");
                }
                let first = errors
                    .0
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let reason = if errors.0.len() > 1 {
                    format!("{} problems, first: {first}", errors.0.len())
                } else {
                    first
                };
                Err((reason, issues(&errors.0)))
            }
            Ok(loaded) => {
                for w in &loaded.warnings {
                    tracing::warn!(warning = %w, "Configuration file permissions.");
                }
                let restart_needed = {
                    // Compared in place: the configuration can be large (thousands of targets).
                    let current = lock(&self.current);
                    current.config.grpc() != loaded.config.grpc()
                        || current.config.metrics() != loaded.config.metrics()
                };
                if restart_needed {
                    tracing::warn!(
                        "Changes to [grpc] or [metrics] take effect at the next restart."
                    );
                }
                match self.daemon.apply(&loaded.config).await {
                    Ok(()) => Ok(loaded),
                    Err(err) => Err((format!("cannot apply: {err}"), Vec::new())),
                }
            }
        };
        let response = match outcome {
            Ok(loaded) => {
                let digest = loaded.digest.clone();
                *lock(&self.current) = loaded;
                *lock(&self.config_loaded) = SystemTime::now();
                lock(&self.last_reload_error).clear();
                self.reloads
                    .get_or_create(&ResultLabel {
                        result: "applied".into(),
                    })
                    .inc();
                tracing::info!(config = %digest, "Configuration reloaded.");
                aaa(
                    AaaKind::System,
                    "",
                    &format!("{name}.reload"),
                    "success",
                    &[("config", &digest)],
                );
                proto::ReloadResponse {
                    applied: true,
                    config_digest: digest,
                    issues: Vec::new(),
                    error: String::new(),
                }
            }
            Err((reason, issues)) => {
                *lock(&self.last_reload_error) = reason.clone();
                self.reloads
                    .get_or_create(&ResultLabel {
                        result: "rejected".into(),
                    })
                    .inc();
                tracing::warn!(reason = %reason, "Reload rejected, the previous configuration keeps running.");
                aaa(
                    AaaKind::System,
                    "",
                    &format!("{name}.reload"),
                    "rejected",
                    &[("reason", &reason)],
                );
                proto::ReloadResponse {
                    applied: false,
                    config_digest: lock(&self.current).digest.clone(),
                    error: if issues.is_empty() {
                        reason
                    } else {
                        String::new()
                    },
                    issues,
                }
            }
        };
        *lock(&self.state) = "ready";
        Notifier.ready(&self.status_line());
        response
    }
}

fn issues(problems: &[Problem]) -> Vec<proto::ConfigIssue> {
    problems
        .iter()
        .map(|p| {
            let (line, column) = match &p.location {
                config::Location::File { line, column, .. } => (*line, *column),
                _ => (0, 0),
            };
            proto::ConfigIssue {
                location: p.location.to_string(),
                line,
                column,
                key: p.key.clone(),
                message: p.message.clone(),
                rendered: p.to_string(),
            }
        })
        .collect()
}

struct AdminService<D: Daemon>(Arc<Shared<D>>);

#[tonic::async_trait]
impl<D: Daemon> proto::admin_server::Admin for AdminService<D> {
    async fn status(
        &self,
        _: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let s = &self.0;
        let (digest, _) = {
            let cur = lock(&s.current);
            (cur.digest.clone(), ())
        };
        Ok(Response::new(proto::StatusResponse {
            daemon: D::Config::DAEMON.to_owned(),
            version: crate::VERSION.to_owned(),
            started_unix: unix(s.started),
            uptime_seconds: s.started_mono.elapsed().as_secs(),
            state: (*lock(&s.state)).to_owned(),
            status_text: s.status_line(),
            config_digest: digest,
            config_loaded_unix: unix(*lock(&s.config_loaded)),
            last_reload_error: lock(&s.last_reload_error).clone(),
            details: s.daemon.details().into_iter().collect(),
        }))
    }

    async fn validate_config(
        &self,
        request: Request<proto::ValidateConfigRequest>,
    ) -> Result<Response<proto::ValidateConfigResponse>, Status> {
        let text = request.into_inner().text;
        Ok(Response::new(
            match config::load_candidate::<D::Config>(&self.0.sources, &text) {
                Ok(loaded) => proto::ValidateConfigResponse {
                    ok: true,
                    issues: Vec::new(),
                    effective: config::render(&loaded.config),
                },
                Err(errors) => proto::ValidateConfigResponse {
                    ok: false,
                    issues: issues(&errors.0),
                    effective: String::new(),
                },
            },
        ))
    }

    async fn reload(
        &self,
        _: Request<proto::ReloadRequest>,
    ) -> Result<Response<proto::ReloadResponse>, Status> {
        Ok(Response::new(self.0.reload().await))
    }
}

/// Runs daemon `D` until `control.shutdown` is cancelled: load config, start, bind, `READY=1`,
/// serve, reload on `control.reload`, then `STOPPING=1` and a bounded drain.
pub async fn run<D: Daemon>(sources: Sources, control: Control) -> Result<(), RunError> {
    let name = D::Config::DAEMON;
    let loaded = config::load::<D::Config>(&sources)?;
    for w in &loaded.warnings {
        tracing::warn!(warning = %w, "Configuration file permissions.");
    }
    tracing::info!(version = crate::VERSION, config = %loaded.digest, "Starting.");
    Notifier.status("starting");

    let mut registry = Registry::default();
    let reloads = Family::<ResultLabel, Counter>::default();
    registry.register(
        format!("rookery_{name}_config_reloads"),
        "Configuration reloads by result",
        reloads.clone(),
    );
    let build_info = Family::<VersionLabel, Gauge>::default();
    build_info
        .get_or_create(&VersionLabel {
            version: crate::VERSION.to_owned(),
        })
        .set(1);
    registry.register(
        format!("rookery_{name}_build_info"),
        "Version of the running daemon",
        build_info,
    );

    let mut routes = RoutesBuilder::default();
    let mut http_routes = axum::Router::new();
    let daemon = D::start(StartContext {
        config: &loaded.config,
        registry: &mut registry,
        routes: &mut routes,
        http_routes: &mut http_routes,
        shutdown: control.shutdown.clone(),
    })
    .await
    .map_err(RunError::Start)?;

    let socket = loaded.config.grpc().socket.clone();
    let metrics_addr = loaded.config.metrics().listen;
    let grpc_listener = crate::grpc::bind(&socket).await?;
    let metrics_listener =
        crate::listen::tcp(metrics_addr).map_err(|source| RunError::Metrics {
            addr: metrics_addr,
            source,
        })?;

    let shared = Arc::new(Shared {
        daemon,
        sources,
        current: Mutex::new(loaded),
        state: Mutex::new("starting"),
        last_reload_error: Mutex::new(String::new()),
        config_loaded: Mutex::new(SystemTime::now()),
        started: SystemTime::now(),
        started_mono: Instant::now(),
        reload_lock: tokio::sync::Mutex::new(()),
        reloads,
    });

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let servers_stop = CancellationToken::new();
    let router = tonic::transport::Server::builder()
        .add_routes(routes.routes())
        .add_service(health_service)
        .add_service(proto::admin_server::AdminServer::new(AdminService(
            shared.clone(),
        )));
    let grpc_task = tokio::spawn(crate::grpc::serve(
        grpc_listener,
        router,
        servers_stop.clone(),
    ));
    let health = Health::default();
    let metrics_task = tokio::spawn(crate::http::serve_health_metrics(
        metrics_listener,
        crate::http::health_metrics_router(name, Arc::new(registry), health.clone())
            .merge(http_routes),
        servers_stop.clone(),
    ));

    *lock(&shared.state) = "ready";
    health.set_ready(true);
    Notifier.ready(&shared.status_line());
    let watchdog = Notifier.spawn_watchdog(servers_stop.clone());
    tracing::info!(socket = %socket.display(), metrics = %metrics_addr, "Ready.");
    aaa(
        AaaKind::System,
        "",
        &format!("{name}.start"),
        "success",
        &[("version", crate::VERSION)],
    );

    loop {
        tokio::select! {
            () = control.shutdown.cancelled() => break,
            () = control.reload.notified() => { shared.reload().await; }
        }
    }

    *lock(&shared.state) = "stopping";
    health.set_ready(false);
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    Notifier.stopping("stopping: draining");
    tracing::info!("Stopping.");
    if tokio::time::timeout(DRAIN_TIMEOUT, shared.daemon.drain())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_s = DRAIN_TIMEOUT.as_secs(),
            "Drain did not finish in time, stopping anyway."
        );
    }
    servers_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), grpc_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), metrics_task).await;
    if let Some(w) = watchdog {
        w.abort();
    }
    let _ = std::fs::remove_file(&socket);
    aaa(AaaKind::System, "", &format!("{name}.stop"), "success", &[]);
    tracing::info!("Stopped.");
    Ok(())
}
