//! ingestd's operator-visible metrics in one place (`rookery_ingestd_*`): what came in, what
//! was stored, what was rejected and why, and how full the write queue is. Nothing is dropped
//! without being counted here.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of per-input counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InputLabels {
    /// `udp`, `tcp`, `tls`, `http`.
    pub input: String,
}

/// Labels of rejections.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// `udp`, `tcp`, `tls`, `http`.
    pub input: String,
    /// `too_long`, `queue_full`, `bad_frame`, `bad_request`, `body_too_large`,
    /// `too_many_connections`, `tls_handshake`, `store_error`.
    pub reason: String,
}

/// The metric handles, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Records received (before the store).
    pub received: Family<InputLabels, Counter>,
    /// Records committed to the store.
    pub stored: Family<InputLabels, Counter>,
    /// Metric samples committed to the store (remote_write).
    pub stored_samples: Counter,
    /// Records stored raw because they did not parse.
    pub parse_errors: Family<InputLabels, Counter>,
    /// Records (or connections, for `too_many_connections`) refused, by reason.
    pub rejected: Family<RejectLabels, Counter>,
    /// Records waiting for the writer.
    pub queue_depth: Gauge,
    /// Capacity of the write queue in records.
    pub queue_capacity: Gauge,
    /// Transactions committed.
    pub commits: Counter,
    /// Records deleted by retention.
    pub retention_deleted: Counter,
    /// Open TCP/TLS syslog connections.
    pub connections: Gauge,
    /// Samples delivered by remote_write forwarding.
    pub forwarded: Counter,
    /// 1 while licensed grants `central-forwarding`.
    pub forward_licensed: Gauge,
    /// Failed forwarding attempts (retried).
    pub forward_failures: Counter,
    /// Samples dropped from the forwarding outbox: refused by the remote (4xx) or older than
    /// the retention bounds.
    pub forward_dropped: Counter,
    /// Forwarding by OTLP/HTTP.
    pub otlp: TargetMetrics,
    /// Forwarding to another Rookery over QUIC.
    pub quic: TargetMetrics,
}

impl Metrics {
    /// Registers every metric under `rookery_ingestd_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("rookery_ingestd");
        r.register(
            "received_records",
            "Log records received, by input",
            self.received.clone(),
        );
        r.register(
            "stored_records",
            "Log records committed to the store, by input",
            self.stored.clone(),
        );
        r.register(
            "stored_samples",
            "Metric samples committed to the store (remote_write)",
            self.stored_samples.clone(),
        );
        r.register(
            "parse_errors",
            "Log records stored raw because they did not parse, by input",
            self.parse_errors.clone(),
        );
        r.register(
            "rejected",
            "Records or connections refused, by input and reason",
            self.rejected.clone(),
        );
        r.register(
            "queue_depth_records",
            "Records waiting for the store writer",
            self.queue_depth.clone(),
        );
        r.register(
            "queue_capacity_records",
            "Capacity of the store write queue",
            self.queue_capacity.clone(),
        );
        r.register(
            "store_commits",
            "Store transactions committed",
            self.commits.clone(),
        );
        r.register(
            "retention_deleted_records",
            "Log records deleted by retention (age or size)",
            self.retention_deleted.clone(),
        );
        r.register(
            "forwarded_samples",
            "Samples delivered by remote_write forwarding",
            self.forwarded.clone(),
        );
        r.register(
            "forward_licensed",
            "1 while licensed grants central-forwarding, else 0 (samples stay spooled)",
            self.forward_licensed.clone(),
        );
        r.register(
            "forward_failures",
            "Failed forwarding attempts, retried",
            self.forward_failures.clone(),
        );
        r.register(
            "forward_dropped_samples",
            "Samples dropped from the forwarding outbox (refused by the remote or past retention)",
            self.forward_dropped.clone(),
        );
        self.otlp.register(r, "otlp", "OTLP");
        self.quic.register(r, "quic", "QUIC");
        r.register(
            "syslog_connections",
            "Open syslog TCP and TLS connections",
            self.connections.clone(),
        );
    }

    /// Counts `n` records refused on `input` for `reason`.
    pub fn reject(&self, input: &str, reason: &str, n: u64) {
        self.rejected
            .get_or_create(&RejectLabels {
                input: input.to_owned(),
                reason: reason.to_owned(),
            })
            .inc_by(n);
    }

    /// Counts `n` records received on `input`.
    pub fn receive(&self, input: &str, n: u64) {
        self.received
            .get_or_create(&InputLabels {
                input: input.to_owned(),
            })
            .inc_by(n);
    }
}

/// Counters of one forwarding target (OTLP, QUIC) that sends logs and samples.
#[derive(Debug, Clone, Default)]
pub struct TargetMetrics {
    /// Log records delivered.
    pub logs: Counter,
    /// Samples delivered.
    pub samples: Counter,
    /// Failed attempts (retried).
    pub failures: Counter,
    /// Log records and samples dropped from its outboxes: refused by the remote (4xx,
    /// partial success) or reached by retention before they were forwarded.
    pub dropped: Counter,
}

impl TargetMetrics {
    fn register(&self, r: &mut Registry, name: &str, what: &str) {
        r.register(
            format!("forwarded_{name}_logs"),
            format!("Log records delivered by {what} forwarding"),
            self.logs.clone(),
        );
        r.register(
            format!("forwarded_{name}_samples"),
            format!("Samples delivered by {what} forwarding"),
            self.samples.clone(),
        );
        r.register(
            format!("forward_{name}_failures"),
            format!("Failed {what} forwarding attempts, retried"),
            self.failures.clone(),
        );
        r.register(
            format!("forward_{name}_dropped_records"),
            format!("Log records and samples dropped from the {what} outboxes (refused by the remote or past retention)"),
            self.dropped.clone(),
        );
    }
}
