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

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::autoperf::{self, Gate};
use crate::config::{Config, Module, Target};
use crate::metrics::Metrics;
use crate::probe::{self, Outcome, Prepared};
use crate::store::{Row, Store, TierEvent};
use crate::tiers::{self, TierState, Transition};

/// Where results go.
#[derive(Debug, Clone)]
pub struct Sink {
    /// Prometheus families.
    pub metrics: Arc<Metrics>,
    /// The results store.
    pub store: Store,
    /// Latest outcome per target.
    pub latest: Arc<Mutex<HashMap<String, Outcome>>>,
    /// Current tier and the reason of its last change, per target that escalated.
    pub tiers: Arc<Mutex<HashMap<String, (u8, String)>>>,
    /// Every scheduled result, for watchers (gRPC `WatchResults`).
    pub watch: tokio::sync::broadcast::Sender<Arc<Row>>,
}

/// Results buffered per watcher before a slow one starts missing some.
pub const WATCH_BUFFER: usize = 1024;

impl Sink {
    /// A sink over `metrics` and `store`.
    pub fn new(metrics: Arc<Metrics>, store: Store) -> Self {
        Self {
            metrics,
            store,
            latest: Arc::default(),
            tiers: Arc::default(),
            watch: tokio::sync::broadcast::channel(WATCH_BUFFER).0,
        }
    }
}

impl Sink {
    async fn tier_changed(&self, target: &Target, t: &Transition, diagnostics: String) {
        if t.to > t.from {
            tracing::warn!(target = %target.name, from = t.from, to = t.to, reason = %t.reason, diagnostics = %diagnostics, "Target escalated.");
        } else {
            tracing::info!(target = %target.name, from = t.from, to = t.to, reason = %t.reason, "Target back to tier 1.");
        }
        self.metrics.set_tier(target, t.to, true);
        lock(&self.tiers).insert(target.name.clone(), (t.to, t.reason.clone()));
        let event = TierEvent {
            target: target.name.clone(),
            at_ms: 0,
            from_tier: t.from,
            to_tier: t.to,
            reason: t.reason.clone(),
            diagnostics,
        };
        if let Err(err) = self.store.record_tier_event(event).await {
            tracing::error!(target = %target.name, error = %err, "Cannot record a tier change.");
        }
    }

    fn record(&self, target: &Target, outcome: Outcome) {
        self.metrics.observe(target, &outcome);
        let row = Row::from_outcome(&target.name, &target.module, &outcome);
        if self.watch.receiver_count() > 0 {
            // No receiver is not an error: nobody watches.
            let _ = self.watch.send(Arc::new(row.clone()));
        }
        if !self.store.record(row) {
            tracing::warn!(target = %target.name, "Result queue full, a result was not stored.");
        }
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(target.name.clone(), outcome);
    }
}

/// Probes repeated by tier 2 diagnostics: enough to tell a blip from an outage.
const DIAGNOSTIC_REPEATS: usize = 3;
/// Path trace of tier 2 diagnostics: hops, requests per hop, wait per request, whole trace.
/// 16 hops cover nearly every Internet path; two requests per hop show loss; the bound keeps
/// a dead path from stalling the target's schedule.
const TRACE_HOPS: u8 = 16;
const TRACE_PER_HOP: u32 = 2;
const TRACE_WAIT: Duration = Duration::from_millis(300);
const TRACE_BUDGET: Duration = Duration::from_secs(10);

/// What DNS server `server` answers for `host` (A record): `NOERROR 192.0.2.1` or the
/// failure.
async fn resolver_check(host: &str, server: &str, timeout: Duration) -> String {
    let module = Module {
        prober: crate::config::Prober::Dns,
        timeout,
        ip_version: crate::config::IpVersion::Any,
        tcp: None,
        udp: None,
        http: None,
        tls: None,
        dns: Some(crate::config::DnsModule {
            query_name: host.to_owned(),
            ..Default::default()
        }),
        icmp: None,
        grpc: None,
        ssh: None,
    };
    let Ok(prepared) = Prepared::new(&module) else {
        return "cannot build the query".to_owned();
    };
    let o = probe::run(&prepared, server, timeout).await;
    match (&o.failure, &o.facts.dns) {
        (None, Some(d)) => format!("{} {}", d.rcode, d.answers.join(",")),
        (Some(f), _) => f.code().to_owned(),
        (None, None) => "no answer".to_owned(),
    }
}

/// Whether TCP `port` of `host` accepts a connection: `ok 0.3ms` or the failure.
async fn port_check(host: &str, port: u16, timeout: Duration) -> String {
    let module = Module {
        prober: crate::config::Prober::Tcp,
        timeout,
        ip_version: crate::config::IpVersion::Any,
        tcp: None,
        udp: None,
        http: None,
        tls: None,
        dns: None,
        icmp: None,
        grpc: None,
        ssh: None,
    };
    let Ok(prepared) = Prepared::new(&module) else {
        return "cannot build the probe".to_owned();
    };
    let address = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let o = probe::run(&prepared, &address, timeout).await;
    match &o.failure {
        None => format!("ok {:.1}ms", o.total.as_secs_f64() * 1000.0),
        Some(f) => f.code().to_owned(),
    }
}

/// The path to the target's host, as a one-line summary.
async fn path_summary(module: &Prepared, address: &str) -> String {
    let host = match probe::address::parse(module.module.prober, address) {
        Ok(a) => a.host().to_owned(),
        Err(e) => return format!("unavailable ({e})"),
    };
    let ip = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip,
        Err(_) => match tokio::net::lookup_host((host.as_str(), 0)).await {
            Ok(mut addrs) => match addrs.find(|a| match module.module.ip_version {
                crate::config::IpVersion::Any => true,
                crate::config::IpVersion::Ip4 => a.is_ipv4(),
                crate::config::IpVersion::Ip6 => a.is_ipv6(),
            }) {
                Some(a) => a.ip(),
                None => return format!("unavailable ({host} has no address)"),
            },
            Err(e) => return format!("unavailable (cannot resolve {host}: {e})"),
        },
    };
    let deadline = tokio::time::Instant::now() + TRACE_BUDGET;
    match probe::trace::trace(ip, TRACE_HOPS, TRACE_PER_HOP, TRACE_WAIT, deadline).await {
        Ok(hops) => probe::trace::summary(&hops),
        Err(f) => format!("unavailable ({f})"),
    }
}

/// Diagnostics on entering `tier`: tier 2 repeats the probe right away, asks the policy's
/// other resolvers for the host's name, tries its alternate ports and traces the path to the
/// host (per-hop loss and latency); tier 3 also runs one more full timing run and reports its
/// phases. Returns a one-line summary.
async fn diagnose(module: &Prepared, s: &Spec, tier: u8, semaphore: &Arc<Semaphore>) -> String {
    let mut results = Vec::new();
    let mut last = None;
    let runs = if tier >= 3 {
        DIAGNOSTIC_REPEATS + 1
    } else {
        DIAGNOSTIC_REPEATS
    };
    for _ in 0..runs {
        let Ok(_permit) = semaphore.clone().acquire_owned().await else {
            break;
        };
        let o = probe::run(module, &s.target.address, s.timeout).await;
        results.push(o.reason());
        last = Some(o);
    }
    let mut summary = format!("repeat x{}: {}", results.len(), results.join(", "));
    if let Some(policy) = &s.target.tiers {
        let host = probe::address::parse(module.module.prober, &s.target.address)
            .map(|a| a.host().to_owned())
            .unwrap_or_default();
        if !host.is_empty() && host.parse::<std::net::IpAddr>().is_err() {
            for server in &policy.resolvers {
                summary.push_str(&format!(
                    "; resolver {server}: {}",
                    resolver_check(&host, server, s.timeout).await
                ));
            }
        }
        for port in &policy.alternate_ports {
            summary.push_str(&format!(
                "; port {port}: {}",
                port_check(&host, *port, s.timeout).await
            ));
        }
    }
    summary.push_str("; path: ");
    summary.push_str(&path_summary(module, &s.target.address).await);
    if tier >= 3
        && let Some(o) = last
    {
        let phases: Vec<String> = o
            .phases
            .iter()
            .map(|(p, d)| format!("{}={:.1}ms", p.as_str(), d.as_secs_f64() * 1000.0))
            .collect();
        summary.push_str(&format!(
            "; timing run: {} in {:.1}ms ({})",
            o.reason(),
            o.total.as_secs_f64() * 1000.0,
            phases.join(" ")
        ));
    }
    summary
}

/// What a target task runs; a change of any part restarts the task.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    target: Target,
    module: Module,
    interval: Duration,
    timeout: Duration,
    /// AutoPerf's interval, if this target is one of `[autoperf] targets`.
    autoperf: Option<Duration>,
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
    gate: Arc<Gate>,
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
    pub fn new(
        sink: Sink,
        max_concurrency: usize,
        gate: Arc<Gate>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            gate,
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
                autoperf: (config.autoperf.enabled
                    && config.autoperf.targets.contains(&target.name))
                .then_some(config.autoperf.interval),
            };
            match tasks.remove(&target.name) {
                Some(task) if task.spec == spec => {
                    keep.insert(target.name.clone(), task);
                }
                old => {
                    if let Some(old) = old {
                        old.cancel.cancel();
                        // The new task starts at tier 1.
                        lock(&self.sink.tiers).remove(&target.name);
                    }
                    keep.insert(target.name.clone(), self.spawn(spec, module.clone()));
                }
            }
        }
        for (name, task) in std::mem::take(&mut *tasks) {
            task.cancel.cancel();
            self.sink.metrics.forget(&name);
            lock(&self.sink.latest).remove(&name);
            lock(&self.sink.tiers).remove(&name);
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
        let mut gate = self.gate.subscribe();
        let handle = tokio::spawn(async move {
            let mut tier = TierState::default();
            let first = tokio::time::Instant::now() + spread(&s.target.name, s.interval);
            let mut next = first;
            let mut last_start: Option<tokio::time::Instant> = None;
            let mut interval = s.interval;
            let mut watching = s.autoperf.is_some();
            // The interval now: the target's (shortened while escalated), or AutoPerf's while
            // it runs for this target.
            let effective =
                |base: Duration, gate: &watch::Receiver<autoperf::State>| match s.autoperf {
                    Some(ap) if gate.borrow().active => ap.min(base),
                    _ => base,
                };
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(next) => {}
                    changed = gate.changed(), if watching => {
                        if changed.is_err() {
                            // The gate is gone (shutdown): stop watching it.
                            watching = false;
                        }
                        let iv = effective(interval, &gate);
                        let now = tokio::time::Instant::now();
                        next = match last_start {
                            Some(t) => (t + iv).max(now),
                            // Not probed yet: AutoPerf starts at once, else the spread start.
                            None if gate.borrow().active => now,
                            None => first,
                        };
                        continue;
                    }
                    () = token.cancelled() => break,
                }
                let permit = tokio::select! {
                    p = semaphore.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = token.cancelled() => break,
                };
                last_start = Some(tokio::time::Instant::now());
                // Not cancelled midway: a probe that started is finished and recorded.
                // Boxed (here and below): the probe's future is large (every prober's state)
                // and would otherwise be part of every idle target's task, ~10 KB each.
                let outcome = Box::pin(probe::run(&module, &s.target.address, s.timeout)).await;
                drop(permit);
                let verdict = s.target.tiers.as_ref().map(|p| tiers::breach(p, &outcome));
                sink.record(&s.target, outcome);
                interval = s.interval;
                if let (Some(policy), Some(verdict)) = (&s.target.tiers, verdict) {
                    if let Some(t) = tier.observe(policy, verdict.as_deref()) {
                        let diagnostics = if t.to > t.from {
                            Box::pin(diagnose(&module, &s, t.to, &semaphore)).await
                        } else {
                            String::new()
                        };
                        Box::pin(sink.tier_changed(&s.target, &t, diagnostics)).await;
                    } else {
                        sink.metrics.set_tier(&s.target, tier.tier(), false);
                    }
                    interval = tier.interval(policy, s.interval);
                }
                let iv = effective(interval, &gate);
                next += iv;
                let now = tokio::time::Instant::now();
                if next < now {
                    // Missed ticks are skipped, not bunched up.
                    next = now + iv;
                }
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
