//! AutoPerf: continuous mode. While `[autoperf] enabled` and licensed grants the `autoperf`
//! feature (it always does with release mode off), the listed targets are probed every
//! `[autoperf] interval` instead of at their own interval.
//!
//! [`Gate`] asks licensed (`rookery.v1.Licensing/CheckFeature` on its socket) at start and
//! every `check-interval`. A licensed that cannot be reached keeps the last answer
//! (DESIGN.md: degrade gracefully, never stop a running test); before any answer AutoPerf
//! stays off, since nothing says it is licensed.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rookery_common::proto::CheckFeatureRequest;
use rookery_common::proto::licensing_client::LicensingClient;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::AutoperfSection;

/// Name of the licensed feature that gates AutoPerf.
pub const FEATURE: &str = "autoperf";

/// Whether AutoPerf runs, and why (shared with the scheduler and status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The listed targets run continuously.
    pub active: bool,
    /// Why (or why not), for status and logs.
    pub reason: String,
}

/// The licence gate of AutoPerf.
pub struct Gate {
    tx: watch::Sender<State>,
    config: Mutex<AutoperfSection>,
    wake: tokio::sync::Notify,
    licensed: Mutex<Option<bool>>,
}

/// Asks licensed whether `feature` is enabled: `Some(answer)`, or `None` if it is unreachable.
pub async fn ask(socket: &Path, feature: &str) -> Option<(bool, String)> {
    let channel = rookery_common::grpc::connect(socket).await.ok()?;
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        LicensingClient::new(channel).check_feature(CheckFeatureRequest {
            name: feature.to_owned(),
        }),
    )
    .await
    .ok()?
    .ok()?
    .into_inner();
    Some((reply.enabled, reply.reason))
}

impl Gate {
    /// A gate for `config`, closed until the first answer.
    pub fn new(config: &AutoperfSection) -> Arc<Self> {
        let reason = if config.enabled {
            "waiting for licensed".to_owned()
        } else {
            "disabled in the configuration".to_owned()
        };
        Arc::new(Self {
            tx: watch::channel(State {
                active: false,
                reason,
            })
            .0,
            config: Mutex::new(config.clone()),
            wake: tokio::sync::Notify::new(),
            licensed: Mutex::new(None),
        })
    }

    /// Follows the gate's state.
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.tx.subscribe()
    }

    /// Whether AutoPerf runs now (cheaper than [`Gate::state`]).
    pub fn active(&self) -> bool {
        self.tx.borrow().active
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.tx.borrow().clone()
    }

    /// Takes a new `[autoperf]` section (reload) and re-checks at once.
    pub fn apply(&self, config: &AutoperfSection) {
        *self.config.lock().unwrap_or_else(PoisonError::into_inner) = config.clone();
        self.wake.notify_one();
    }

    fn publish(&self, active: bool, reason: String) {
        let next = State { active, reason };
        if *self.tx.borrow() != next {
            if next.active {
                tracing::info!(reason = %next.reason, "AutoPerf started.");
            } else {
                tracing::info!(reason = %next.reason, "AutoPerf stopped.");
            }
            self.tx.send_replace(next);
        }
    }

    /// Checks the licence now and every `check-interval` until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let config = self
                .config
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if config.enabled {
                match ask(&config.licensed_socket, FEATURE).await {
                    Some((enabled, why)) => {
                        *self.licensed.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(enabled);
                        let reason = if enabled {
                            format!("licensed: {why}")
                        } else {
                            format!("not licensed: {why}")
                        };
                        self.publish(enabled, reason);
                    }
                    None => {
                        let last = *self.licensed.lock().unwrap_or_else(PoisonError::into_inner);
                        match last {
                            Some(enabled) => {
                                let reason = format!(
                                    "licensed unreachable, keeping its last answer ({})",
                                    if enabled { "licensed" } else { "not licensed" }
                                );
                                self.publish(enabled, reason);
                            }
                            None => self.publish(
                                false,
                                format!(
                                    "licensed unreachable at {}; waiting for its answer",
                                    config.licensed_socket.display()
                                ),
                            ),
                        }
                    }
                }
            } else {
                self.publish(false, "disabled in the configuration".to_owned());
            }
            tokio::select! {
                () = tokio::time::sleep(config.check_interval) => {}
                () = self.wake.notified() => {}
                () = shutdown.cancelled() => break,
            }
        }
    }
}
