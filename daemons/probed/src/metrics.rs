//! The `rookery_probed_*` metric families of scheduled probes, and their update from an
//! [`Outcome`]. Labels: `target`, `module`, the target's own labels, plus `phase`, `result`
//! or `stat` where a family needs them. Series of a removed target are forgotten.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::Target;
use crate::probe::Outcome;

type Labels = Vec<(String, String)>;
type FGauge = Gauge<f64, AtomicU64>;

/// Which family a remembered label set belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fam {
    Success,
    Duration,
    Probes,
    Status,
    Expiry,
    Icmp,
    Loss,
    Tier,
    Transitions,
}

/// The metric families of scheduled probes.
#[derive(Debug, Default)]
pub struct Metrics {
    success: Family<Labels, Gauge>,
    duration: Family<Labels, FGauge>,
    probes: Family<Labels, Counter>,
    http_status: Family<Labels, Gauge>,
    cert_expiry: Family<Labels, Gauge>,
    icmp_rtt: Family<Labels, FGauge>,
    icmp_loss: Family<Labels, FGauge>,
    tier: Family<Labels, Gauge>,
    transitions: Family<Labels, Counter>,
    targets: Gauge,
    seen: Mutex<BTreeMap<String, BTreeSet<(Fam, Labels)>>>,
}

impl Metrics {
    /// Registers the families in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "rookery_probed_probe_success",
            "Whether the last probe of the target succeeded (1) or failed (0)",
            self.success.clone(),
        );
        registry.register(
            "rookery_probed_probe_duration_seconds",
            "Duration of the last probe of the target by phase (total = whole probe)",
            self.duration.clone(),
        );
        registry.register(
            "rookery_probed_probes",
            "Probes run by result (ok or the failure reason)",
            self.probes.clone(),
        );
        registry.register(
            "rookery_probed_http_status_code",
            "HTTP status of the last probe",
            self.http_status.clone(),
        );
        registry.register(
            "rookery_probed_ssl_earliest_cert_expiry",
            "Earliest notAfter of the presented chain, Unix seconds",
            self.cert_expiry.clone(),
        );
        registry.register(
            "rookery_probed_icmp_rtt_seconds",
            "ICMP round-trip time of the last probe by statistic (min, avg, median, max, stddev)",
            self.icmp_rtt.clone(),
        );
        registry.register(
            "rookery_probed_icmp_loss_ratio",
            "ICMP echo loss of the last probe, 0 to 1",
            self.icmp_loss.clone(),
        );
        registry.register(
            "rookery_probed_target_tier",
            "Escalation tier of the target (1 scheduled, 2 diagnostics, 3 critical)",
            self.tier.clone(),
        );
        registry.register(
            "rookery_probed_tier_transitions",
            "Tier changes of the target by destination tier",
            self.transitions.clone(),
        );
        registry.register(
            "rookery_probed_targets",
            "Targets scheduled",
            self.targets.clone(),
        );
    }

    /// Sets the number of scheduled targets.
    pub fn set_targets(&self, n: usize) {
        self.targets.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn base(target: &Target) -> Labels {
        let mut l = vec![
            ("target".to_owned(), target.name.clone()),
            ("module".to_owned(), target.module.clone()),
        ];
        l.extend(target.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        l
    }

    fn with(base: &Labels, k: &str, v: &str) -> Labels {
        let mut l = base.clone();
        l.push((k.to_owned(), v.to_owned()));
        l
    }

    /// Records `outcome` of `target`.
    pub fn observe(&self, target: &Target, outcome: &Outcome) {
        let base = Self::base(target);
        let mut used = Vec::new();
        self.success
            .get_or_create(&base)
            .set(i64::from(outcome.success));
        used.push((Fam::Success, base.clone()));
        for (phase, d) in &outcome.phases {
            let l = Self::with(&base, "phase", phase.as_str());
            self.duration.get_or_create(&l).set(d.as_secs_f64());
            used.push((Fam::Duration, l));
        }
        let l = Self::with(&base, "phase", "total");
        self.duration
            .get_or_create(&l)
            .set(outcome.total.as_secs_f64());
        used.push((Fam::Duration, l));
        let l = Self::with(&base, "result", outcome.reason());
        self.probes.get_or_create(&l).inc();
        used.push((Fam::Probes, l));
        if let Some(status) = outcome.facts.http_status {
            self.http_status.get_or_create(&base).set(i64::from(status));
            used.push((Fam::Status, base.clone()));
        }
        if let Some(exp) = outcome.facts.tls.as_ref().and_then(|t| t.earliest_expiry) {
            self.cert_expiry.get_or_create(&base).set(exp);
            used.push((Fam::Expiry, base.clone()));
        }
        if let Some(icmp) = &outcome.facts.icmp {
            self.icmp_loss.get_or_create(&base).set(icmp.loss());
            used.push((Fam::Loss, base.clone()));
            if let (Some((min, avg, max, sd)), Some(median)) = (icmp.stats(), icmp.median()) {
                for (stat, v) in [
                    ("min", min),
                    ("avg", avg),
                    ("median", median),
                    ("max", max),
                    ("stddev", sd),
                ] {
                    let l = Self::with(&base, "stat", stat);
                    self.icmp_rtt.get_or_create(&l).set(v);
                    used.push((Fam::Icmp, l));
                }
            }
        }
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(target.name.clone())
            .or_default()
            .extend(used);
    }

    /// Records that `target` is now in `tier` (after a change, `changed`).
    pub fn set_tier(&self, target: &Target, tier: u8, changed: bool) {
        let base = Self::base(target);
        self.tier.get_or_create(&base).set(i64::from(tier));
        let mut used = vec![(Fam::Tier, base.clone())];
        if changed {
            let l = Self::with(&base, "to", &tier.to_string());
            self.transitions.get_or_create(&l).inc();
            used.push((Fam::Transitions, l));
        }
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(target.name.clone())
            .or_default()
            .extend(used);
    }

    /// Drops every series of the target named `name`.
    pub fn forget(&self, name: &str) {
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        for (fam, labels) in seen.into_iter().flatten() {
            match fam {
                Fam::Success => self.success.remove(&labels),
                Fam::Duration => self.duration.remove(&labels),
                Fam::Probes => self.probes.remove(&labels),
                Fam::Status => self.http_status.remove(&labels),
                Fam::Expiry => self.cert_expiry.remove(&labels),
                Fam::Icmp => self.icmp_rtt.remove(&labels),
                Fam::Loss => self.icmp_loss.remove(&labels),
                Fam::Tier => self.tier.remove(&labels),
                Fam::Transitions => self.transitions.remove(&labels),
            };
        }
    }
}
