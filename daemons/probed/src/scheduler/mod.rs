//! The scheduler: one loop over a timer heap that starts each target's probe at its time,
//! start times spread over the interval (a stable hash of the name) so thousands of targets
//! do not fire together. A task exists only while a probe (and its tier diagnostics) runs;
//! all probes (scheduled and ad hoc) share one semaphore of `[scheduler] max-concurrency`
//! permits, each bounded by its timeout. An idle target costs its `Entry` and one heap
//! item, not a sleeping task.
//!
//! [`Scheduler::apply`] swaps the target set on reload: unchanged targets keep their timing
//! and tier, removed or changed ones are dropped between probes (a probe in flight finishes
//! and is stored, but no longer changes the metrics), new ones start. Results go to the
//! [`Sink`]: metrics (with the latest outcome per target) and store.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::autoperf::Gate;
use crate::config::{Config, Module, Target};
use crate::metrics::Metrics;
use crate::probe::{self, Outcome, Prepared};
use crate::store::{Row, Store, TierEvent};
use crate::tiers::{self, TierState, Transition};

/// Where results go.
#[derive(Debug, Clone)]
pub struct Sink {
    /// Prometheus families and the latest outcome per target.
    pub metrics: Metrics,
    /// The results store.
    pub store: Store,
    /// Current tier and the reason of its last change, per target that escalated.
    pub tiers: Arc<Mutex<HashMap<String, (u8, String)>>>,
    /// Every scheduled result, for watchers (gRPC `WatchResults`).
    pub watch: tokio::sync::broadcast::Sender<Arc<Row>>,
}

/// Results buffered per watcher before a slow one starts missing some.
pub const WATCH_BUFFER: usize = 1024;

impl Sink {
    /// A sink over `metrics` and `store`.
    pub fn new(metrics: Metrics, store: Store) -> Self {
        Self {
            metrics,
            store,
            tiers: Arc::default(),
            watch: tokio::sync::broadcast::channel(WATCH_BUFFER).0,
        }
    }
}

impl Sink {
    async fn tier_changed(&self, target: &Arc<Target>, t: &Transition, diagnostics: String) {
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

    fn record(&self, target: &Arc<Target>, outcome: Outcome) {
        let row = Row::from_outcome(&target.name, &target.module, &outcome);
        if self.watch.receiver_count() > 0 {
            // No receiver is not an error: nobody watches.
            let _ = self.watch.send(Arc::new(row.clone()));
        }
        if !self.store.record(row) {
            tracing::warn!(target = %target.name, "Result queue full, a result was not stored.");
        }
        self.metrics.observe(target, outcome);
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
        dns: Some(crate::config::DnsModule {
            query_name: host.to_owned(),
            ..Default::default()
        }),
        ..Module::bare(crate::config::Prober::Dns, timeout)
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
    let module = Module::bare(crate::config::Prober::Tcp, timeout);
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

/// What a target runs; a change of any part restarts its schedule (and its tier).
#[derive(Debug)]
struct Spec {
    target: Arc<Target>,
    /// The prepared module, shared by every target of the module.
    module: Arc<Prepared>,
    interval: Duration,
    timeout: Duration,
    /// AutoPerf's interval, if this target is one of `[autoperf] targets`.
    autoperf: Option<Duration>,
}

impl Spec {
    fn same(&self, other: &Spec) -> bool {
        self.target == other.target
            && self.module.module == other.module.module
            && self.interval == other.interval
            && self.timeout == other.timeout
            && self.autoperf == other.autoperf
    }

    /// The interval now: `base` (the target's, shortened while escalated), or AutoPerf's
    /// while it runs for this target.
    fn effective(&self, base: Duration, autoperf_active: bool) -> Duration {
        match self.autoperf {
            Some(ap) if autoperf_active => ap.min(base),
            _ => base,
        }
    }
}

/// The schedule of one target.
#[derive(Debug)]
struct Entry {
    spec: Arc<Spec>,
    /// First probe (the spread start).
    first: Instant,
    /// When the next probe is due (while busy: when the running one was due).
    next: Instant,
    /// When the last probe started.
    last_start: Option<Instant>,
    /// The target's interval in its current tier.
    interval: Duration,
    /// Escalation state (lent to the probe task while it runs).
    tier: TierState,
    /// A probe of this target is running (or waiting for a permit).
    busy: bool,
}

/// A heap item: `spec`'s probe is due at `at`. Stale once the entry is replaced, busy or
/// rescheduled (checked when it is popped).
#[derive(Debug)]
struct Due {
    at: Instant,
    spec: Arc<Spec>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at.cmp(&other.at)
    }
}

/// The schedules, sorted by target name and found by binary search: about half the memory
/// of a `BTreeMap<String, Entry>` (no copy of the name as key, no half-full nodes), ~1 MiB
/// less with 10,000 targets. Only [`Scheduler::apply`] adds or removes entries.
#[derive(Debug, Default)]
struct Entries(Vec<Entry>);

impl Entries {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0
            .binary_search_by(|e| e.spec.target.name.as_str().cmp(name))
    }

    fn get(&self, name: &str) -> Option<&Entry> {
        self.find(name).ok().and_then(|i| self.0.get(i))
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Entry> {
        self.find(name).ok().and_then(|i| self.0.get_mut(i))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn values(&self) -> impl Iterator<Item = &Entry> {
        self.0.iter()
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.0.iter_mut()
    }

    /// The entries of `list`, sorted; of entries with the same name the last is kept (as
    /// inserting them into a map one by one would).
    fn from_list(mut list: Vec<Entry>) -> Self {
        list.sort_by(|a, b| a.spec.target.name.cmp(&b.spec.target.name));
        list.dedup_by(|later, kept| {
            let same = later.spec.target.name == kept.spec.target.name;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        list.shrink_to_fit();
        Self(list)
    }
}

/// The targets and their timer heap.
#[derive(Debug, Default)]
struct Plan {
    entries: Entries,
    heap: BinaryHeap<Reverse<Due>>,
}

impl Plan {
    /// Queues `spec`'s next probe at `at`; true if it is now the earliest.
    fn push(&mut self, at: Instant, spec: Arc<Spec>) -> bool {
        let earliest = self.heap.peek().is_none_or(|Reverse(d)| at < d.at);
        self.heap.push(Reverse(Due { at, spec }));
        earliest
    }

    /// Drops stale items when they outnumber the targets (many reschedules between probes).
    fn compact(&mut self) {
        if self.heap.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.heap.retain(|Reverse(d)| {
                entries
                    .get(&d.spec.target.name)
                    .is_some_and(|e| Arc::ptr_eq(&e.spec, &d.spec) && !e.busy && e.next == d.at)
            });
        }
    }
}

/// What the scheduler loop and the probe tasks share.
struct Shared {
    sink: Sink,
    semaphore: Arc<Semaphore>,
    plan: Mutex<Plan>,
    /// Wakes the loop when an earlier probe was queued.
    wake: Notify,
    gate: Arc<Gate>,
    /// Cancelled by shutdown or [`Scheduler::drain`]: no new probe starts.
    stop: CancellationToken,
    /// Probe tasks running; [`Scheduler::drain`] waits for zero.
    running: watch::Sender<usize>,
}

/// The running scheduler.
pub struct Scheduler {
    shared: Arc<Shared>,
    permits: Mutex<usize>,
    modules: Mutex<BTreeMap<String, Arc<Prepared>>>,
    looping: Mutex<Option<tokio::task::JoinHandle<()>>>,
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
    /// A scheduler with no targets yet, its loop running; call [`Scheduler::apply`].
    /// Must be called within a tokio runtime.
    pub fn new(
        sink: Sink,
        max_concurrency: usize,
        gate: Arc<Gate>,
        shutdown: CancellationToken,
    ) -> Self {
        let shared = Arc::new(Shared {
            sink,
            semaphore: Arc::new(Semaphore::new(max_concurrency)),
            plan: Mutex::new(Plan::default()),
            wake: Notify::new(),
            gate,
            stop: shutdown.child_token(),
            running: watch::channel(0).0,
        });
        let handle = tokio::spawn(shared.clone().run());
        Self {
            shared,
            permits: Mutex::new(max_concurrency),
            modules: Mutex::new(BTreeMap::new()),
            looping: Mutex::new(Some(handle)),
        }
    }

    /// The results sink.
    pub fn sink(&self) -> &Sink {
        &self.shared.sink
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
        lock(&self.shared.plan)
            .entries
            .values()
            .map(|e| ((*e.spec.target).clone(), e.spec.interval, e.spec.timeout))
            .collect()
    }

    /// Number of scheduled targets.
    pub fn target_count(&self) -> usize {
        lock(&self.shared.plan).entries.len()
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
                self.shared.semaphore.add_permits(wanted - *permits);
                *permits = wanted;
            } else if wanted < *permits {
                // Only free permits can be forgotten; the rest shrink at a later apply.
                *permits -= self.shared.semaphore.forget_permits(*permits - wanted);
            }
        }
        let now = Instant::now();
        let mut plan = lock(&self.shared.plan);
        // The current entries, each taken out when its target is still configured.
        let mut old: Vec<(Arc<Target>, Option<Entry>)> = std::mem::take(&mut plan.entries.0)
            .into_iter()
            .map(|e| (e.spec.target.clone(), Some(e)))
            .collect();
        let mut take_old = |name: &str| {
            old.binary_search_by(|(t, _)| t.name.as_str().cmp(name))
                .ok()
                .and_then(|i| old.get_mut(i))
                .and_then(|(_, e)| e.take())
        };
        let mut entries = Vec::with_capacity(config.targets.len());
        let mut earliest = false;
        let mut scheduled = Vec::with_capacity(config.targets.len());
        for target in &config.targets {
            let Some(module) = prepared.get(&target.module) else {
                continue;
            };
            let spec = Spec {
                target: target.clone(),
                module: module.clone(),
                interval: config.interval_of(target),
                timeout: config.timeout_of(target),
                autoperf: (config.autoperf.enabled
                    && config.autoperf.targets.contains(&target.name))
                .then_some(config.autoperf.interval),
            };
            let entry = match take_old(&target.name) {
                Some(entry) if entry.spec.same(&spec) => entry,
                old => {
                    if old.is_some() {
                        // The new schedule starts at tier 1.
                        lock(&self.shared.sink.tiers).remove(&target.name);
                    }
                    let spec = Arc::new(spec);
                    let first = now + spread(&target.name, spec.interval);
                    let next = if spec.autoperf.is_some() && self.shared.gate.active() {
                        now
                    } else {
                        first
                    };
                    earliest |= plan.push(next, spec.clone());
                    Entry {
                        interval: spec.interval,
                        spec,
                        first,
                        next,
                        last_start: None,
                        tier: TierState::default(),
                        busy: false,
                    }
                }
            };
            scheduled.push(entry.spec.target.clone());
            entries.push(entry);
        }
        plan.entries = Entries::from_list(entries);
        for (target, _) in old.into_iter().filter(|(_, e)| e.is_some()) {
            lock(&self.shared.sink.tiers).remove(&target.name);
        }
        plan.compact();
        // Under the plan's lock: a probe finishing now sees either the old set or the new.
        self.shared.sink.metrics.set_targets(&scheduled);
        drop(plan);
        if earliest {
            self.shared.wake.notify_one();
        }
        *lock(&self.modules) = prepared;
        Ok(())
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
        let _permit = self.shared.semaphore.clone().acquire_owned().await.ok()?;
        Some(probe::run(prepared, address, timeout).await)
    }

    /// Stops scheduling and waits for the probes in flight to finish (and be recorded).
    pub async fn drain(&self) {
        self.shared.stop.cancel();
        let handle = lock(&self.looping).take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
        let mut running = self.shared.running.subscribe();
        let _ = running.wait_for(|n| *n == 0).await;
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

/// Counts a probe task as running until dropped.
struct Running(Arc<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.send_modify(|n| *n -= 1);
    }
}

impl Shared {
    /// The scheduler loop: sleeps until the earliest due probe, starts every due probe in a
    /// task of its own, follows AutoPerf's gate, until stopped.
    async fn run(self: Arc<Self>) {
        let mut gate = self.gate.subscribe();
        let mut watching = true;
        loop {
            let wake_at = lock(&self.plan).heap.peek().map(|Reverse(d)| d.at);
            let sleep = async {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = sleep => {}
                () = self.wake.notified() => continue,
                changed = gate.changed(), if watching => {
                    if changed.is_err() {
                        // The gate is gone (shutdown): stop watching it.
                        watching = false;
                    }
                    self.regate(gate.borrow().active);
                    continue;
                }
                () = self.stop.cancelled() => break,
            }
            let now = Instant::now();
            let mut due = Vec::new();
            {
                let mut plan = lock(&self.plan);
                while plan.heap.peek().is_some_and(|Reverse(d)| d.at <= now) {
                    let Some(Reverse(d)) = plan.heap.pop() else {
                        break;
                    };
                    if let Some(e) = plan.entries.get_mut(&d.spec.target.name)
                        && Arc::ptr_eq(&e.spec, &d.spec)
                        && !e.busy
                        && e.next == d.at
                    {
                        e.busy = true;
                        due.push((d.spec, std::mem::take(&mut e.tier)));
                    }
                }
            }
            for (spec, tier) in due {
                self.running.send_modify(|n| *n += 1);
                let running = Running(self.clone());
                tokio::spawn(probe_target(running, spec, tier));
            }
        }
    }

    /// AutoPerf started or stopped: reschedules its idle targets (busy ones reschedule when
    /// their probe ends). The loop looks at the heap again right after.
    fn regate(&self, active: bool) {
        let now = Instant::now();
        let mut plan = lock(&self.plan);
        let plan = &mut *plan;
        for e in plan.entries.values_mut() {
            if e.spec.autoperf.is_none() || e.busy {
                continue;
            }
            let iv = e.spec.effective(e.interval, active);
            e.next = match e.last_start {
                Some(t) => (t + iv).max(now),
                // Not probed yet: AutoPerf starts at once, else the spread start.
                None if active => now,
                None => e.first,
            };
            plan.heap.push(Reverse(Due {
                at: e.next,
                spec: e.spec.clone(),
            }));
        }
        plan.compact();
    }
}

/// One scheduled probe of `spec` (and the diagnostics of a tier change), then its next time.
async fn probe_target(running: Running, s: Arc<Spec>, mut tier: TierState) {
    let shared = &running.0;
    let permit = tokio::select! {
        p = shared.semaphore.clone().acquire_owned() => p.ok(),
        () = shared.stop.cancelled() => None,
    };
    let current = |shared: &Shared| {
        lock(&shared.plan)
            .entries
            .get(&s.target.name)
            .is_some_and(|e| Arc::ptr_eq(&e.spec, &s))
    };
    // Stopped, or removed or changed while waiting for a permit: no probe.
    let Some(permit) = permit.filter(|_| current(shared)) else {
        return;
    };
    let started = Instant::now();
    // Not cancelled midway: a probe that started is finished and recorded. Boxed (here and
    // below): the probe's future is large (every prober's state) and would otherwise be part
    // of the task from its start, also while it waits for a permit.
    let outcome = Box::pin(probe::run(&s.module, &s.target.address, s.timeout)).await;
    drop(permit);
    let verdict = s.target.tiers.as_ref().map(|p| tiers::breach(p, &outcome));
    shared.sink.record(&s.target, outcome);
    let mut interval = s.interval;
    if let (Some(policy), Some(verdict)) = (&s.target.tiers, verdict) {
        if let Some(t) = tier.observe(policy, verdict.as_deref()) {
            let diagnostics = if t.to > t.from {
                Box::pin(diagnose(&s.module, &s, t.to, &shared.semaphore)).await
            } else {
                String::new()
            };
            shared.sink.tier_changed(&s.target, &t, diagnostics).await;
        } else {
            shared.sink.metrics.set_tier(&s.target, tier.tier(), false);
        }
        interval = tier.interval(policy, s.interval);
    }
    let active = shared.gate.active();
    let mut plan = lock(&shared.plan);
    let Some(e) = plan
        .entries
        .get_mut(&s.target.name)
        .filter(|e| Arc::ptr_eq(&e.spec, &s))
    else {
        // Removed or replaced meanwhile: its schedule ended with this probe.
        return;
    };
    e.busy = false;
    e.tier = tier;
    e.interval = interval;
    e.last_start = Some(started);
    let iv = s.effective(interval, active);
    let now = Instant::now();
    e.next += iv;
    if e.next < now {
        // Missed ticks are skipped, not bunched up.
        e.next = now + iv;
    }
    let at = e.next;
    if plan.push(at, s.clone()) {
        drop(plan);
        shared.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn entry(name: &str, address: &str, prepared: &Arc<Prepared>) -> Entry {
        let target: Target = toml::from_str(&format!(
            "name = \"{name}\"\nmodule = \"m\"\naddress = \"{address}\""
        ))
        .unwrap();
        let now = Instant::now();
        Entry {
            spec: Arc::new(Spec {
                target: Arc::new(target),
                module: prepared.clone(),
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                autoperf: None,
            }),
            first: now,
            next: now,
            last_start: None,
            interval: Duration::from_secs(1),
            tier: TierState::default(),
            busy: false,
        }
    }

    /// The schedules are found by name in any insertion order; of two with one name the
    /// later is kept, as a map would.
    #[test]
    fn entries_are_found_by_name_and_the_last_of_a_name_wins() {
        let module: crate::config::Module =
            toml::from_str("prober = \"tcp\"\ntimeout = \"1s\"").unwrap();
        let prepared = Arc::new(Prepared::new(&module).unwrap());
        let names = ["t5", "t10", "a", "t1", "zz", "t10", "b"];
        let list = names
            .iter()
            .enumerate()
            .map(|(i, n)| entry(n, &format!("h{i}:1"), &prepared))
            .collect();
        let mut entries = Entries::from_list(list);
        assert_eq!(entries.len(), 6);
        let sorted: Vec<&str> = entries
            .values()
            .map(|e| e.spec.target.name.as_str())
            .collect();
        assert_eq!(sorted, ["a", "b", "t1", "t10", "t5", "zz"]);
        assert_eq!(entries.get("t10").unwrap().spec.target.address, "h5:1");
        assert_eq!(entries.get("zz").unwrap().spec.target.address, "h4:1");
        assert!(entries.get("t2").is_none() && entries.get("").is_none());
        entries.get_mut("b").unwrap().busy = true;
        assert!(entries.get("b").unwrap().busy);
        assert_eq!(entries.values_mut().filter(|e| e.busy).count(), 1);
    }
}
