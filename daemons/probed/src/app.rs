//! Wiring of probed into the shared daemon runner: opens the results store in the state
//! directory, registers the metrics, adds `/probe` to the loopback metrics listener, starts
//! the scheduler and swaps its targets on reload.

use std::collections::BTreeMap;
use std::sync::Arc;

use rookery_common::config::Sources;
use rookery_common::daemon::{self, BoxError, Control, Daemon, RunError, StartContext};

use crate::autoperf::Gate;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::scheduler::{Scheduler, Sink};
use crate::store::Store;

/// The running prober.
pub struct Probed {
    scheduler: Arc<Scheduler>,
    gate: Arc<Gate>,
}

impl Probed {
    /// The scheduler (tests and the gRPC service use it).
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }
}

impl Daemon for Probed {
    type Config = Config;

    async fn start(ctx: StartContext<'_, Config>) -> Result<Self, BoxError> {
        let dir = &ctx.config.state.directory;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create state directory {}: {e}", dir.display()))?;
        let store = Store::open_configured(&ctx.config.store, dir, ctx.shutdown.clone()).await?;
        tracing::info!(store = %store.describe(), "Results store open.");
        let metrics = Metrics::default();
        metrics.register(ctx.registry);
        let sink = Sink::new(metrics, store);
        let gate = Gate::new(&ctx.config.autoperf);
        tokio::spawn(gate.clone().run(ctx.shutdown.clone()));
        let scheduler = Arc::new(Scheduler::new(
            sink,
            ctx.config.scheduler.max_concurrency as usize,
            gate.clone(),
            ctx.shutdown.clone(),
        ));
        scheduler.apply(ctx.config)?;
        ctx.routes
            .add_service(crate::grpc::server(scheduler.clone()));
        let routes = std::mem::take(ctx.http_routes);
        *ctx.http_routes = routes.merge(crate::blackbox::router(scheduler.clone()));
        tracing::info!(
            targets = ctx.config.targets.len(),
            modules = ctx.config.modules.len(),
            "Scheduler started."
        );
        Ok(Self { scheduler, gate })
    }

    async fn apply(&self, config: &Config) -> Result<(), BoxError> {
        self.scheduler.apply(config)?;
        self.scheduler
            .sink()
            .store
            .set_retention(config.store.retention);
        tracing::info!(targets = config.targets.len(), "Targets applied.");
        Ok(())
    }

    fn status_text(&self) -> String {
        let targets = self.scheduler.target_count();
        let failing = self.scheduler.sink().metrics.failing();
        let autoperf = if self.gate.state().active {
            ", autoperf on"
        } else {
            ""
        };
        format!("probing {targets} targets, {failing} failing{autoperf}")
    }

    fn details(&self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::new();
        d.insert(
            "targets".to_owned(),
            self.scheduler.target_count().to_string(),
        );
        d.insert(
            "modules".to_owned(),
            self.scheduler.module_names().join(","),
        );
        d.insert("store".to_owned(), self.scheduler.sink().store.describe());
        d
    }

    async fn drain(&self) {
        self.scheduler.drain().await;
    }
}

/// Runs probed in-process until `control.shutdown` is cancelled (tests use this; the binary
/// goes through `rookery_common::daemon::main`).
pub async fn run(sources: Sources, control: Control) -> Result<(), RunError> {
    daemon::run::<Probed>(sources, control).await
}
