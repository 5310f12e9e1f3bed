//! Wiring of licensed into the shared daemon runner: opens the manager on the state
//! directory, serves the `Licensing` gRPC service, runs the validation/keepalive loop, and
//! applies reloaded configuration.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use rookery_common::config::Sources;
use rookery_common::daemon::{self, BoxError, Control, Daemon, RunError, StartContext};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::grace::SystemClock;
use crate::manager::Manager;

/// The running licensing agent.
pub struct Licensed {
    manager: Manager,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Daemon for Licensed {
    type Config = Config;

    async fn start(ctx: StartContext<'_, Config>) -> Result<Self, BoxError> {
        // One process-wide TLS provider (ring: no C toolchain for cross builds). Installing it
        // twice (tests start several daemons in one process) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = &ctx.config.state.directory;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create state directory {}: {e}", dir.display()))?;
        let manager = Manager::new(ctx.config, dir, Arc::new(SystemClock))?;
        manager.register_metrics(ctx.registry);
        ctx.routes
            .add_service(crate::service::server(manager.clone()));
        let runner = manager.clone();
        let shutdown = ctx.shutdown.clone();
        let task = tokio::spawn(async move { runner.run(shutdown).await });
        Ok(Self {
            manager,
            task: Mutex::new(Some(task)),
        })
    }

    async fn apply(&self, config: &Config) -> Result<(), BoxError> {
        self.manager.apply_config(config);
        Ok(())
    }

    fn status_text(&self) -> String {
        self.manager.summary()
    }

    fn details(&self) -> BTreeMap<String, String> {
        let s = self.manager.status();
        let mut d = BTreeMap::new();
        d.insert("release-mode".into(), s.release_mode.to_string());
        d.insert("source".into(), s.source);
        if !s.key_masked.is_empty() {
            d.insert("key".into(), s.key_masked);
        }
        d
    }

    async fn drain(&self) {
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Runs licensed in-process until `control.shutdown` is cancelled (tests use this; the
/// binary goes through `rookery_common::daemon::main`).
pub async fn run(sources: Sources, control: Control) -> Result<(), RunError> {
    daemon::run::<Licensed>(sources, control).await
}
