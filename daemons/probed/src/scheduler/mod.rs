//! The scheduler: one task per target probing at its interval, start times spread over the
//! interval (a stable hash of the name) so thousands of targets do not fire together, all
//! probes (scheduled and ad hoc) sharing one semaphore of `[scheduler] max-concurrency`
//! permits, each bounded by its timeout.
//!
//! [`Scheduler::apply`] swaps the target set on reload: unchanged targets keep their task and
//! timing, removed or changed ones are cancelled between probes (a probe in flight finishes and
//! is recorded), new ones start. Results go to the [`Sink`]: metrics, store and the latest
//! outcome per target.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Module, Target};
use crate::metrics::Metrics;
use crate::probe::{self, Outcome, Prepared};
use crate::store::{Row, Store};

/// Where results go.
#[derive(Debug, Clone)]
pub struct Sink {
    /// Prometheus families.
    pub metrics: Arc<Metrics>,
    /// The results store.
    pub store: Store,
    /// Latest outcome per target.
    pub latest: Arc<Mutex<HashMap<String, Outcome>>>,
}

impl Sink {
    fn record(&self, target: &Target, outcome: Outcome) {
        self.metrics.observe(target, &outcome);
        if !self
            .store
            .record(Row::from_outcome(&target.name, &target.module, &outcome))
        {
            tracing::warn!(target = %target.name, "Result queue full, a result was not stored.");
        }
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(target.name.clone(), outcome);
    }
}

/// What a target task runs; a change of any part restarts the task.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    target: Target,
    module: Module,
    interval: Duration,
    timeout: Duration,
}

struct Task {
    spec: Spec,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

/// The running scheduler.
pub struct Scheduler {
    sink: Sink,
    semaphore: Arc<Semaphore>,
    permits: Mutex<usize>,
    modules: Mutex<BTreeMap<String, Arc<Prepared>>>,
    tasks: Mutex<BTreeMap<String, Task>>,
    shutdown: CancellationToken,
}

/// A module that could not be prepared (reported at apply).
#[derive(Debug, thiserror::Error)]
#[error("module \"{name}\" cannot be used")]
pub struct ModuleError {
    /// The module.
    pub name: String,
    /// Why.
    #[source]
    pub source: probe::PrepareError,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Offset of the first probe of `name` within `interval`: a stable hash, so restarts keep
/// the same spread and targets spread evenly.
pub fn spread(name: &str, interval: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    let ms = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(h.finish() % ms)
}

impl Scheduler {
    /// A scheduler with no targets yet; call [`Scheduler::apply`].
    pub fn new(sink: Sink, max_concurrency: usize, shutdown: CancellationToken) -> Self {
        Self {
            sink,
            semaphore: Arc::new(Semaphore::new(max_concurrency)),
            permits: Mutex::new(max_concurrency),
            modules: Mutex::new(BTreeMap::new()),
            tasks: Mutex::new(BTreeMap::new()),
            shutdown,
        }
    }

    /// The results sink.
    pub fn sink(&self) -> &Sink {
        &self.sink
    }

    /// The prepared module `name`.
    pub fn module(&self, name: &str) -> Option<Arc<Prepared>> {
        lock(&self.modules).get(name).cloned()
    }

    /// Names of the configured modules.
    pub fn module_names(&self) -> Vec<String> {
        lock(&self.modules).keys().cloned().collect()
    }

    /// The scheduled targets with their interval and timeout.
    pub fn targets(&self) -> Vec<(Target, Duration, Duration)> {
        lock(&self.tasks)
            .values()
            .map(|t| (t.spec.target.clone(), t.spec.interval, t.spec.timeout))
            .collect()
    }

    /// Prepares every module of `config` and swaps the target set. On error nothing changes.
    pub fn apply(&self, config: &Config) -> Result<(), ModuleError> {
        let mut prepared = BTreeMap::new();
        for (name, module) in &config.modules {
            let p = Prepared::new(module).map_err(|source| ModuleError {
                name: name.clone(),
                source,
            })?;
            prepared.insert(name.clone(), Arc::new(p));
        }
        let wanted = config.scheduler.max_concurrency as usize;
        {
            let mut permits = lock(&self.permits);
            if wanted > *permits {
                self.semaphore.add_permits(wanted - *permits);
                *permits = wanted;
            } else if wanted < *permits {
                // Only free permits can be forgotten; the rest shrink at a later apply.
                *permits -= self.semaphore.forget_permits(*permits - wanted);
            }
        }
        let mut tasks = lock(&self.tasks);
        let mut keep = BTreeMap::new();
        for target in &config.targets {
            let Some(module) = prepared.get(&target.module) else {
                continue;
            };
            let spec = Spec {
                target: target.clone(),
                module: module.module.clone(),
                interval: config.interval_of(target),
                timeout: config.timeout_of(target),
            };
            match tasks.remove(&target.name) {
                Some(task) if task.spec == spec => {
                    keep.insert(target.name.clone(), task);
                }
                old => {
                    if let Some(old) = old {
                        old.cancel.cancel();
                    }
                    keep.insert(target.name.clone(), self.spawn(spec, module.clone()));
                }
            }
        }
        for (name, task) in std::mem::take(&mut *tasks) {
            task.cancel.cancel();
            self.sink.metrics.forget(&name);
            lock(&self.sink.latest).remove(&name);
        }
        *tasks = keep;
        self.sink.metrics.set_targets(tasks.len());
        drop(tasks);
        *lock(&self.modules) = prepared;
        Ok(())
    }

    fn spawn(&self, spec: Spec, module: Arc<Prepared>) -> Task {
        let cancel = self.shutdown.child_token();
        let token = cancel.clone();
        let sink = self.sink.clone();
        let semaphore = self.semaphore.clone();
        let s = spec.clone();
        let handle = tokio::spawn(async move {
            let start = tokio::time::Instant::now() + spread(&s.target.name, s.interval);
            let mut ticks = tokio::time::interval_at(start, s.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = token.cancelled() => break,
                }
                let permit = tokio::select! {
                    p = semaphore.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = token.cancelled() => break,
                };
                // Not cancelled midway: a probe that started is finished and recorded.
                let outcome = probe::run(&module, &s.target.address, s.timeout).await;
                drop(permit);
                sink.record(&s.target, outcome);
            }
        });
        Task {
            spec,
            cancel,
            handle,
        }
    }

    /// Runs one ad-hoc probe of `address` with module `module` under the shared concurrency
    /// bound (gRPC `RunNow`, `/probe`). `timeout` overrides the module's if shorter.
    pub async fn run_now(
        &self,
        module: &str,
        address: &str,
        timeout: Option<Duration>,
    ) -> Option<Outcome> {
        let prepared = self.module(module)?;
        let timeout = match timeout {
            Some(t) => t.min(prepared.module.timeout),
            None => prepared.module.timeout,
        };
        self.run_with(&prepared, address, timeout).await
    }

    /// Runs one probe of `address` with `prepared` within `timeout`, under the shared
    /// concurrency bound. `None` once the scheduler is shutting down.
    pub async fn run_with(
        &self,
        prepared: &Prepared,
        address: &str,
        timeout: Duration,
    ) -> Option<Outcome> {
        let _permit = self.semaphore.clone().acquire_owned().await.ok()?;
        Some(probe::run(prepared, address, timeout).await)
    }

    /// Stops scheduling and waits for the probes in flight to finish.
    pub async fn drain(&self) {
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks.values() {
            task.cancel.cancel();
        }
        for (_, task) in tasks {
            let _ = task.handle.await;
        }
    }
}
