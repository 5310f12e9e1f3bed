//! The `rookery_probed_*` metrics of scheduled probes. Labels: `target`, `module`, the
//! target's own labels, plus `phase`, `result`, `stat` or `to` where a family needs them.
//!
//! Nothing is kept per series: each target has one compact `TargetState` (its shared
//! [`Target`], its last [`Outcome`], its counters) and a [`Collector`] writes the families
//! from those states at each scrape. Gauges describe the target's last probe; counters
//! accumulate. A removed target's series are gone at the next scrape; a probe of a removed
//! or replaced target that finishes late changes nothing here.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::config::Target;
use crate::probe::Outcome;

/// What is kept of one scheduled target (cloned cheaply for a scrape: two `Arc`s, counters,
/// and lists that are empty unless the target failed or escalated).
#[derive(Debug, Clone)]
struct TargetState {
    /// The target as scheduled now (its labels); shared with the scheduler.
    target: Arc<Target>,
    /// The last probe.
    last: Option<Arc<Outcome>>,
    /// Successful probes.
    ok: u64,
    /// Failed probes by reason, in order of first use (most targets never fail: no
    /// allocation).
    failed: Vec<(&'static str, u64)>,
    /// Escalation tier, once the target's policy has judged a probe.
    tier: Option<u8>,
    /// Tier changes by destination tier.
    transitions: Vec<(u8, u64)>,
}

impl TargetState {
    fn new(target: Arc<Target>) -> Self {
        Self {
            target,
            last: None,
            ok: 0,
            failed: Vec::new(),
            tier: None,
            transitions: Vec::new(),
        }
    }
}

/// The metrics of scheduled probes (cheap to clone: one shared state).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// One state per target, sorted by name (exactly sized: no hash table slack).
    targets: Arc<Mutex<Vec<TargetState>>>,
}

/// The state of the target named `name` in `states` (sorted by name).
fn find<'a>(states: &'a mut [TargetState], name: &str) -> Option<&'a mut TargetState> {
    let i = states
        .binary_search_by(|s| s.target.name.as_str().cmp(name))
        .ok()?;
    states.get_mut(i)
}

impl Metrics {
    fn lock(&self) -> MutexGuard<'_, Vec<TargetState>> {
        self.targets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the families in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.clone()));
    }

    /// Makes `targets` the scheduled set. A target whose name, module and labels are
    /// unchanged keeps its last result and counters; the others start afresh, and targets
    /// not in the set are forgotten.
    pub fn set_targets(&self, targets: &[Arc<Target>]) {
        let mut states = self.lock();
        let mut old: HashMap<String, TargetState> = std::mem::take(&mut *states)
            .into_iter()
            .map(|s| (s.target.name.clone(), s))
            .collect();
        let mut new = Vec::with_capacity(targets.len());
        for t in targets {
            let state = match old.remove(&t.name) {
                Some(mut s) if s.target.module == t.module && s.target.labels == t.labels => {
                    s.target = t.clone();
                    s
                }
                _ => TargetState::new(t.clone()),
            };
            new.push(state);
        }
        new.sort_unstable_by(|a, b| a.target.name.cmp(&b.target.name));
        *states = new;
    }

    /// Number of scheduled targets.
    pub fn target_count(&self) -> usize {
        self.lock().len()
    }

    /// Records `outcome` of `target`, if `target` is still the scheduled one of that name.
    pub fn observe(&self, target: &Arc<Target>, mut outcome: Outcome) {
        let mut states = self.lock();
        let Some(s) = find(&mut states, &target.name).filter(|s| Arc::ptr_eq(&s.target, target))
        else {
            return;
        };
        match &outcome.failure {
            None => s.ok += 1,
            Some(f) => {
                let reason = f.code();
                match s.failed.iter_mut().find(|(r, _)| *r == reason) {
                    Some((_, n)) => *n += 1,
                    None => s.failed.push((reason, 1)),
                }
            }
        }
        outcome.phases.shrink_to_fit();
        s.last = Some(Arc::new(outcome));
    }

    /// Records that `target` is now in `tier` (after a change, `changed`).
    pub fn set_tier(&self, target: &Arc<Target>, tier: u8, changed: bool) {
        let mut states = self.lock();
        let Some(s) = find(&mut states, &target.name).filter(|s| Arc::ptr_eq(&s.target, target))
        else {
            return;
        };
        s.tier = Some(tier);
        if changed {
            match s.transitions.iter_mut().find(|(t, _)| *t == tier) {
                Some((_, n)) => *n += 1,
                None => s.transitions.push((tier, 1)),
            }
        }
    }

    /// The last outcome of the target named `name`.
    pub fn latest(&self, name: &str) -> Option<Outcome> {
        find(&mut self.lock(), name)?.last.as_deref().cloned()
    }

    /// How many targets failed their last probe.
    pub fn failing(&self) -> usize {
        self.lock()
            .iter()
            .filter(|s| s.last.as_ref().is_some_and(|o| !o.success))
            .count()
    }
}

/// A target's labels, plus one more where the family has one.
struct Labels<'a> {
    target: &'a Target,
    extra: Option<(&'a str, &'a str)>,
}

/// Writes `value` as a label value in the text format (backslash, quote and newline escaped).
fn escaped(out: &mut impl std::fmt::Write, value: &str) -> std::fmt::Result {
    let mut rest = value;
    while let Some(i) = rest.find(['\\', '"', '\n']) {
        out.write_str(&rest[..i])?;
        out.write_str(match rest.as_bytes()[i] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        })?;
        rest = &rest[i + 1..];
    }
    out.write_str(rest)
}

fn label(set: &mut LabelSetEncoder<'_>, key: &str, value: &str) -> std::fmt::Result {
    let mut label = set.encode_label();
    let mut k = label.encode_label_key()?;
    k.write_str(key)?;
    let mut v = k.encode_label_value()?;
    escaped(&mut v, value)?;
    v.finish()
}

impl EncodeLabelSet for Labels<'_> {
    fn encode(&self, mut set: LabelSetEncoder<'_>) -> std::fmt::Result {
        label(&mut set, "target", &self.target.name)?;
        label(&mut set, "module", &self.target.module)?;
        for (k, v) in &self.target.labels {
            label(&mut set, k, v)?;
        }
        if let Some((k, v)) = self.extra {
            label(&mut set, k, v)?;
        }
        Ok(())
    }
}

/// One family: name, help, type, and how each target contributes its series.
type Emit = fn(
    &TargetState,
    &mut dyn FnMut(Option<(&str, &str)>, Value) -> std::fmt::Result,
) -> std::fmt::Result;

/// A sample value.
#[derive(Clone, Copy)]
enum Value {
    Int(i64),
    Float(f64),
    Count(u64),
}

const FAMILIES: [(&str, &str, MetricType, Emit); 9] = [
    (
        "rookery_probed_probe_success",
        "Whether the last probe of the target succeeded (1) or failed (0)",
        MetricType::Gauge,
        |s, emit| match &s.last {
            Some(o) => emit(None, Value::Int(i64::from(o.success))),
            None => Ok(()),
        },
    ),
    (
        "rookery_probed_probe_duration_seconds",
        "Duration of the last probe of the target by phase (total = whole probe)",
        MetricType::Gauge,
        |s, emit| {
            let Some(o) = &s.last else { return Ok(()) };
            for (phase, d) in &o.phases {
                emit(
                    Some(("phase", phase.as_str())),
                    Value::Float(d.as_secs_f64()),
                )?;
            }
            emit(
                Some(("phase", "total")),
                Value::Float(o.total.as_secs_f64()),
            )
        },
    ),
    (
        "rookery_probed_probes",
        "Probes run by result (ok or the failure reason)",
        MetricType::Counter,
        |s, emit| {
            if s.ok > 0 {
                emit(Some(("result", "ok")), Value::Count(s.ok))?;
            }
            for (result, n) in &s.failed {
                emit(Some(("result", result)), Value::Count(*n))?;
            }
            Ok(())
        },
    ),
    (
        "rookery_probed_http_status_code",
        "HTTP status of the last probe",
        MetricType::Gauge,
        |s, emit| match s.last.as_ref().and_then(|o| o.facts.http_status) {
            Some(status) => emit(None, Value::Int(i64::from(status))),
            None => Ok(()),
        },
    ),
    (
        "rookery_probed_ssl_earliest_cert_expiry",
        "Earliest notAfter of the presented chain, Unix seconds",
        MetricType::Gauge,
        |s, emit| {
            let expiry = s
                .last
                .as_ref()
                .and_then(|o| o.facts.tls.as_ref())
                .and_then(|t| t.earliest_expiry);
            match expiry {
                Some(e) => emit(None, Value::Int(e)),
                None => Ok(()),
            }
        },
    ),
    (
        "rookery_probed_icmp_rtt_seconds",
        "ICMP round-trip time of the last probe by statistic (min, avg, median, max, stddev)",
        MetricType::Gauge,
        |s, emit| {
            let Some(icmp) = s.last.as_ref().and_then(|o| o.facts.icmp.as_ref()) else {
                return Ok(());
            };
            if let (Some((min, avg, max, sd)), Some(median)) = (icmp.stats(), icmp.median()) {
                for (stat, v) in [
                    ("min", min),
                    ("avg", avg),
                    ("median", median),
                    ("max", max),
                    ("stddev", sd),
                ] {
                    emit(Some(("stat", stat)), Value::Float(v))?;
                }
            }
            Ok(())
        },
    ),
    (
        "rookery_probed_icmp_loss_ratio",
        "ICMP echo loss of the last probe, 0 to 1",
        MetricType::Gauge,
        |s, emit| match s.last.as_ref().and_then(|o| o.facts.icmp.as_ref()) {
            Some(icmp) => emit(None, Value::Float(icmp.loss())),
            None => Ok(()),
        },
    ),
    (
        "rookery_probed_target_tier",
        "Escalation tier of the target (1 scheduled, 2 diagnostics, 3 critical)",
        MetricType::Gauge,
        |s, emit| match s.tier {
            Some(t) => emit(None, Value::Int(i64::from(t))),
            None => Ok(()),
        },
    ),
    (
        "rookery_probed_tier_transitions",
        "Tier changes of the target by destination tier",
        MetricType::Counter,
        |s, emit| {
            for (to, n) in &s.transitions {
                emit(Some(("to", &to.to_string())), Value::Count(*n))?;
            }
            Ok(())
        },
    ),
];

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        // A copy (about 80 bytes per target), so that the text is written without the lock:
        // `/metrics` streams it at the client's pace, and probes record meanwhile.
        let map = self.lock().clone();
        for (name, help, kind, each) in FAMILIES {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for s in map.iter() {
                each(s, &mut |extra, value| {
                    let labels = Labels {
                        target: &s.target,
                        extra,
                    };
                    let metric = family.encode_family(&labels)?;
                    match value {
                        Value::Int(v) => ConstGauge::new(v).encode(metric),
                        Value::Float(v) => ConstGauge::new(v).encode(metric),
                        Value::Count(v) => ConstCounter::new(v).encode(metric),
                    }
                })?;
            }
        }
        let targets = i64::try_from(map.len()).unwrap_or(i64::MAX);
        let family = encoder.encode_descriptor(
            "rookery_probed_targets",
            "Targets scheduled",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(targets).encode(family)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use std::time::Duration;

    use super::*;
    use crate::probe::{Failure, Run};

    fn target(name: &str, labels: &[(&str, &str)]) -> Arc<Target> {
        Arc::new(Target {
            name: name.to_owned(),
            module: "http".to_owned(),
            address: "http://127.0.0.1/".to_owned(),
            interval: None,
            timeout: None,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            tiers: None,
        })
    }

    fn outcome(failure: Option<Failure>) -> Outcome {
        let mut run = Run::new(Duration::from_secs(1));
        run.facts.http_status = Some(200);
        run.finish(failure.map_or(Ok(()), Err))
    }

    fn scrape(metrics: &Metrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn series_come_from_the_last_outcome_and_the_counters() {
        let m = Metrics::default();
        let a = target("a", &[("site", "lab \"1\"")]);
        let b = target("b", &[]);
        m.set_targets(&[a.clone(), b.clone()]);
        m.observe(&a, outcome(None));
        m.observe(&a, outcome(Some(Failure::Refused)));
        m.observe(&a, outcome(None));
        m.set_tier(&a, 2, true);
        let text = scrape(&m);
        assert!(
            text.contains("rookery_probed_probe_success{target=\"a\",module=\"http\",site=\"lab \\\"1\\\"\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("rookery_probed_probes_total{target=\"a\",module=\"http\",site=\"lab \\\"1\\\"\",result=\"ok\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("rookery_probed_probes_total{target=\"a\",module=\"http\",site=\"lab \\\"1\\\"\",result=\"refused\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("rookery_probed_http_status_code{target=\"a\",module=\"http\",site=\"lab \\\"1\\\"\"} 200\n"),
            "{text}"
        );
        assert!(
            text.contains("rookery_probed_tier_transitions_total{target=\"a\",module=\"http\",site=\"lab \\\"1\\\"\",to=\"2\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("rookery_probed_targets 2\n"), "{text}");
        // "b" was never probed: no series yet.
        assert!(!text.contains("target=\"b\""), "{text}");
        assert_eq!(m.failing(), 0);
        assert!(m.latest("a").unwrap().success);
    }

    #[test]
    fn a_replaced_or_removed_target_no_longer_changes_the_metrics() {
        let m = Metrics::default();
        let old = target("a", &[]);
        m.set_targets(&[old.clone(), target("gone", &[])]);
        m.observe(&old, outcome(None));
        // Same labels: the counters carry over to the new definition.
        let new = target("a", &[]);
        m.set_targets(std::slice::from_ref(&new));
        // A probe of the old definition (or of a removed target) finishing late is ignored.
        m.observe(&old, outcome(Some(Failure::Refused)));
        m.observe(&target("gone", &[]), outcome(None));
        let text = scrape(&m);
        assert!(text.contains("result=\"ok\"} 1\n"), "{text}");
        assert!(!text.contains("refused"), "{text}");
        assert!(!text.contains("gone"), "{text}");
        // New labels: a fresh state.
        m.set_targets(&[target("a", &[("site", "x")])]);
        let text = scrape(&m);
        assert!(!text.contains("target=\"a\""), "{text}");
        assert!(text.contains("rookery_probed_targets 1\n"), "{text}");
    }
}
