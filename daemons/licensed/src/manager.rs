//! The licensing state machine: which key, what the server last said, what is cached, how
//! much grace is left, and therefore which features are on.
//!
//! [`Manager`] is cheap to clone. [`Manager::run`] validates at start, then sends a keepalive
//! (with the usage counts daemons pushed) and refreshes features every `keepalive-interval`;
//! feature checks never wait on the network, they read the last known state. Time comes
//! from a [`Clock`] so tests simulate days of outage without sleeping.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rookery_common::logging::{AaaKind, aaa};
use rookery_common::proto::{Entitlements, Feature, LicenseState, LicenseStatus};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cache::{Cache, Entitlement, Store};
use crate::client::{Client, ClientError, Settings};
use crate::config::{Config, LicenceSection};
use crate::features::{self, Tier};
use crate::grace::{Clock, Evidence};
use crate::key::{KeyError, LicenceKey};
use crate::offline::{self, OfflinePayload};
use crate::protocol::{
    self, Identity, KeepaliveRequest, KeepaliveResponse, ValidateRequest, ValidateResponse,
};

/// How often grace evidence is observed and persisted between keepalives: bounds how much
/// offline time a crash can lose from the monotonic witness.
pub const EVIDENCE_TICK: Duration = Duration::from_secs(60);

/// Opening the manager failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The licence client could not be built (e.g. unreadable `ca-file`).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// `ca-file` could not be read.
    #[error("cannot read licence.ca-file {path}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The compiled-in verification key is unusable.
    #[error(transparent)]
    VerifyKey(#[from] offline::OfflineError),
}

/// Installing a key failed.
#[derive(Debug, thiserror::Error)]
pub enum SetKeyError {
    /// Not a well-formed key.
    #[error(transparent)]
    Format(#[from] KeyError),
    /// It could not be persisted.
    #[error("cannot save the key in the state directory")]
    Save(#[source] std::io::Error),
}

/// The last thing the server said about the current key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Unknown,
    Accepted,
    Invalid(String),
    Expired(Option<i64>),
}

struct Inner {
    licence: LicenceSection,
    key: Option<LicenceKey>,
    client: Client,
    cache: Cache,
    verdict: Verdict,
    reachable: bool,
    last_error: String,
    offline: Option<OfflinePayload>,
    offline_error: String,
    usage: BTreeMap<String, BTreeMap<String, u64>>,
    last_mono: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    result: String,
}

#[derive(Default)]
struct Metrics {
    state: Gauge,
    requests: Family<RequestLabels, Counter>,
    grace_left: Gauge,
    enterprise_enabled: Gauge,
}

struct Shared {
    clock: Arc<dyn Clock>,
    store: Store,
    verify_key: VerifyingKey,
    machine_id: String,
    started: Duration,
    inner: Mutex<Inner>,
    cycle_lock: tokio::sync::Mutex<()>,
    wake: Notify,
    metrics: Metrics,
}

/// The licensing agent's state. Cheap to clone.
#[derive(Clone)]
pub struct Manager(Arc<Shared>);

/// Where the state is at one instant.
struct View {
    state: LicenseState,
    source: &'static str,
    customer: String,
    tier: String,
    expires: Option<i64>,
    grace_until: i64,
    granted: Vec<String>,
}

fn read_machine_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn client_for(l: &LicenceSection) -> Result<Client, OpenError> {
    let ca_pem = match &l.ca_file {
        Some(p) => Some(std::fs::read(p).map_err(|source| OpenError::CaFile {
            path: p.display().to_string(),
            source,
        })?),
        None => None,
    };
    Ok(Client::new(Settings {
        server_url: l.server_url.clone(),
        timeout: l.request_timeout,
        max_attempts: l.max_attempts,
        ca_pem,
    })?)
}

impl Manager {
    /// Opens the manager on `state_dir` with the compiled-in offline-licence key.
    pub fn new(cfg: &Config, state_dir: &Path, clock: Arc<dyn Clock>) -> Result<Self, OpenError> {
        Self::with_verify_key(
            cfg,
            state_dir,
            clock,
            offline::production_key()?,
            read_machine_id(),
        )
    }

    /// Like [`Manager::new`] with a given offline-licence key and machine ID (tests).
    pub fn with_verify_key(
        cfg: &Config,
        state_dir: &Path,
        clock: Arc<dyn Clock>,
        verify_key: VerifyingKey,
        machine_id: String,
    ) -> Result<Self, OpenError> {
        let store = Store::new(state_dir);
        let cache = store.load();
        let client = client_for(&cfg.licence)?;
        let started = clock.mono();
        let inner = Inner {
            licence: cfg.licence.clone(),
            key: None,
            client,
            cache,
            verdict: Verdict::Unknown,
            reachable: false,
            last_error: String::new(),
            offline: None,
            offline_error: String::new(),
            usage: BTreeMap::new(),
            last_mono: started,
        };
        let m = Self(Arc::new(Shared {
            clock,
            store,
            verify_key,
            machine_id,
            started,
            inner: Mutex::new(inner),
            cycle_lock: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            metrics: Metrics::default(),
        }));
        {
            let mut g = m.lock();
            g.key = m.effective_key(&g.licence);
            m.load_offline(&mut g);
        }
        Ok(m)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A key installed with SetKey wins over `[licence] key`.
    fn effective_key(&self, l: &LicenceSection) -> Option<LicenceKey> {
        if let Some(stored) = self.0.store.load_key() {
            match stored.parse::<LicenceKey>() {
                Ok(k) => return Some(k),
                Err(err) => {
                    tracing::warn!(error = %err, "Stored licence key is invalid, ignoring it.")
                }
            }
        }
        (!l.key.is_empty()).then(|| l.key.parse().ok()).flatten()
    }

    fn load_offline(&self, g: &mut Inner) {
        g.offline = None;
        g.offline_error.clear();
        let path = &g.licence.offline_file;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
            Err(err) => {
                g.offline_error = format!("cannot read {}: {err}", path.display());
                return;
            }
        };
        let now = g.cache.evidence.max_wall_seen.max(self.0.clock.wall());
        match offline::verify(
            &text,
            &self.0.verify_key,
            &g.licence.product,
            &self.0.machine_id,
            now,
        ) {
            Ok(p) => {
                tracing::info!(customer = %p.customer, "Offline licence accepted.");
                g.offline = Some(p);
            }
            Err(err) => {
                tracing::warn!(file = %path.display(), error = %err, "Offline licence rejected.");
                g.offline_error = format!("{}: {err}", path.display());
            }
        }
    }

    /// Registers `rookery_licensed_*` metrics.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.0.metrics;
        registry.register(
            "rookery_licensed_state",
            "Licence state (LicenseState enum value)",
            m.state.clone(),
        );
        registry.register(
            "rookery_licensed_requests",
            "Requests to the licence server by endpoint and result",
            m.requests.clone(),
        );
        registry.register(
            "rookery_licensed_grace_remaining_seconds",
            "Seconds of offline grace left (0 when not in grace)",
            m.grace_left.clone(),
        );
        registry.register(
            "rookery_licensed_enterprise_features_enabled",
            "Enterprise features currently enabled",
            m.enterprise_enabled.clone(),
        );
        self.refresh_metrics();
    }

    /// Applies a reloaded configuration: new server, key, product or offline file take effect
    /// and the key is validated again soon.
    pub fn apply_config(&self, cfg: &Config) {
        let mut g = self.lock();
        match client_for(&cfg.licence) {
            Ok(c) => g.client = c,
            Err(err) => {
                tracing::warn!(error = %err, "Cannot rebuild the licence client, keeping the old one.")
            }
        }
        let changed = g.licence.server_url != cfg.licence.server_url
            || g.licence.product != cfg.licence.product
            || g.licence.key != cfg.licence.key;
        g.licence = cfg.licence.clone();
        let key = self.effective_key(&g.licence);
        if key != g.key || changed {
            g.key = key;
            g.verdict = Verdict::Unknown;
            g.reachable = false;
        }
        self.load_offline(&mut g);
        drop(g);
        self.0.wake.notify_one();
    }

    /// Installs `key`: checked, persisted atomically, then validated (bounded wait).
    pub async fn set_key(&self, key: &str) -> Result<LicenseStatus, SetKeyError> {
        let key: LicenceKey = key.parse()?;
        self.0
            .store
            .save_key(key.as_str())
            .map_err(SetKeyError::Save)?;
        let bound = {
            let mut g = self.lock();
            g.key = Some(key.clone());
            g.verdict = Verdict::Unknown;
            g.reachable = false;
            g.last_error.clear();
            g.licence.request_timeout * g.licence.max_attempts + Duration::from_secs(5)
        };
        aaa(
            AaaKind::Audit,
            "",
            "licence.set-key",
            "success",
            &[("key", &key.masked())],
        );
        if tokio::time::timeout(bound, self.cycle()).await.is_err() {
            tracing::warn!(
                "Validation of the new key is taking long, continuing in the background."
            );
            self.0.wake.notify_one();
        }
        Ok(self.status())
    }

    /// Records the usage counts of `daemon` (replacing its previous report).
    pub fn report_usage(&self, daemon: &str, counters: BTreeMap<String, u64>) {
        self.lock().usage.insert(daemon.to_owned(), counters);
    }

    /// Observes the clocks into the grace evidence.
    fn tick(&self, g: &mut Inner) {
        let mono = self.0.clock.mono();
        let delta = mono.saturating_sub(g.last_mono);
        g.last_mono = mono;
        g.cache.evidence.observe(self.0.clock.wall(), delta);
    }

    fn save(&self, g: &Inner) {
        if let Err(err) = self.0.store.save(&g.cache) {
            tracing::warn!(error = %err, "Cannot save the entitlement cache.");
        }
    }

    fn identity(&self, g: &Inner, key: &LicenceKey) -> Identity {
        Identity {
            product: g.licence.product.clone(),
            license_key: key.as_str().to_owned(),
            machine_id: self.0.machine_id.clone(),
            version: rookery_common::VERSION.to_owned(),
        }
    }

    fn count(&self, endpoint: &str, result: &str) {
        self.0
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.into(),
                result: result.into(),
            })
            .inc();
    }

    /// One round with the server: validate a key not yet accepted, otherwise keepalive and
    /// feature refresh. Updates the cache and the state.
    pub async fn cycle(&self) {
        let _serial = self.0.cycle_lock.lock().await;
        let (client, key, first, keepalive) = {
            let mut g = self.lock();
            self.tick(&mut g);
            let Some(key) = g.key.clone() else {
                self.save(&g);
                drop(g);
                self.refresh_metrics();
                return;
            };
            let first = g.verdict != Verdict::Accepted;
            let keepalive = KeepaliveRequest {
                identity: self.identity(&g, &key),
                usage: g.usage.clone(),
                uptime_seconds: self.0.clock.mono().saturating_sub(self.0.started).as_secs(),
            };
            (g.client.clone(), key, first, keepalive)
        };
        let request = ValidateRequest {
            identity: keepalive.identity.clone(),
        };
        let result = if first {
            let r = client
                .post::<_, ValidateResponse>(protocol::VALIDATE, &request)
                .await;
            self.count("validate", if r.is_ok() { "ok" } else { "error" });
            r
        } else {
            let k = client
                .post::<_, KeepaliveResponse>(protocol::KEEPALIVE, &keepalive)
                .await;
            self.count("keepalive", if k.is_ok() { "ok" } else { "error" });
            match k {
                Ok(_) => {
                    let r = client
                        .post::<_, ValidateResponse>(protocol::FEATURES, &request)
                        .await;
                    self.count("features", if r.is_ok() { "ok" } else { "error" });
                    r
                }
                Err(e) => Err(e),
            }
        };
        let mut g = self.lock();
        if g.key.as_ref() != Some(&key) {
            return; // the key changed meanwhile; the next cycle handles the new one
        }
        let before = self.view(&g).state;
        match result {
            Ok(resp) => {
                g.cache.entitlement = Some(Entitlement {
                    key_masked: key.masked(),
                    customer: resp.customer,
                    tier: resp.tier,
                    expires_at: resp.expires_at,
                    features: resp.features,
                });
                let now = self.0.clock.wall();
                g.cache.evidence.success(now);
                g.verdict = Verdict::Accepted;
                g.reachable = true;
                g.last_error.clear();
            }
            Err(err) => {
                g.last_error = err.to_string();
                match err {
                    ClientError::InvalidKey(_) | ClientError::Refused { .. } => {
                        g.verdict = Verdict::Invalid(g.last_error.clone());
                        g.cache.entitlement = None;
                        g.reachable = true;
                    }
                    ClientError::Expired { expires_at, .. } => {
                        g.verdict = Verdict::Expired(expires_at);
                        g.reachable = true;
                    }
                    _ => g.reachable = false,
                }
                tracing::warn!(error = %g.last_error, "Licence check failed.");
            }
        }
        self.save(&g);
        let after = self.view(&g).state;
        drop(g);
        if after != before {
            tracing::info!(from = ?before, to = ?after, "Licence state changed.");
            aaa(
                AaaKind::System,
                "",
                "licence.state",
                after.as_str_name(),
                &[],
            );
        }
        self.refresh_metrics();
    }

    /// Validates at start, then keepalive every interval, until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            // A cycle may wait on a slow server for several attempts; shutdown must not.
            // `cycle` only changes state after its last await, so dropping it is safe.
            tokio::select! {
                () = shutdown.cancelled() => {
                    let mut g = self.lock();
                    self.tick(&mut g);
                    self.save(&g);
                    return;
                }
                () = self.cycle() => {}
            }
            let interval = self.lock().licence.keepalive_interval;
            let deadline = tokio::time::Instant::now() + interval;
            loop {
                let next = deadline.min(tokio::time::Instant::now() + EVIDENCE_TICK);
                tokio::select! {
                    () = shutdown.cancelled() => {
                        let mut g = self.lock();
                        self.tick(&mut g);
                        self.save(&g);
                        return;
                    }
                    () = self.0.wake.notified() => break,
                    () = tokio::time::sleep_until(next) => {
                        if tokio::time::Instant::now() >= deadline {
                            break;
                        }
                        let mut g = self.lock();
                        self.tick(&mut g);
                        self.save(&g);
                        drop(g);
                        self.refresh_metrics();
                    }
                }
            }
        }
    }

    fn view(&self, g: &Inner) -> View {
        let now = g.cache.evidence.max_wall_seen.max(self.0.clock.wall());
        let none = |state, source| View {
            state,
            source,
            customer: String::new(),
            tier: String::new(),
            expires: None,
            grace_until: 0,
            granted: Vec::new(),
        };
        if let Some(p) = &g.offline {
            if p.expires_at > now {
                return View {
                    state: LicenseState::Valid,
                    source: "offline-file",
                    customer: p.customer.clone(),
                    tier: p.tier.clone(),
                    expires: Some(p.expires_at),
                    grace_until: 0,
                    granted: p.features.clone(),
                };
            }
            return View {
                expires: Some(p.expires_at),
                ..none(LicenseState::Expired, "offline-file")
            };
        }
        let Some(key) = &g.key else {
            if !g.offline_error.is_empty() {
                return none(LicenseState::Invalid, "offline-file");
            }
            return none(LicenseState::NoKey, "none");
        };
        match &g.verdict {
            Verdict::Invalid(_) => return none(LicenseState::Invalid, "server"),
            Verdict::Expired(at) => {
                return View {
                    expires: *at,
                    ..none(LicenseState::Expired, "server")
                };
            }
            Verdict::Unknown | Verdict::Accepted => {}
        }
        let Some(e) = g
            .cache
            .entitlement
            .as_ref()
            .filter(|e| e.key_masked == key.masked())
        else {
            return none(LicenseState::Pending, "none");
        };
        let granted: Vec<String> = e
            .features
            .iter()
            .filter(|f| f.enabled)
            .map(|f| f.name.clone())
            .collect();
        let base = View {
            state: LicenseState::Valid,
            source: "server",
            customer: e.customer.clone(),
            tier: e.tier.clone(),
            expires: e.expires_at,
            grace_until: 0,
            granted,
        };
        if e.expires_at.is_some_and(|at| at <= now) {
            return View {
                state: LicenseState::Expired,
                granted: Vec::new(),
                ..base
            };
        }
        if g.reachable && g.verdict == Verdict::Accepted {
            return base;
        }
        match g.cache.evidence.grace_left(g.licence.grace_period) {
            Some(left) => View {
                state: LicenseState::Grace,
                source: "cache",
                grace_until: self.0.clock.wall() + i64::try_from(left).unwrap_or(i64::MAX),
                ..base
            },
            None => View {
                state: LicenseState::GraceExpired,
                source: "cache",
                granted: Vec::new(),
                ..base
            },
        }
    }

    fn enabled(release_mode: bool, view: &View, name: &str) -> (bool, String) {
        if !release_mode {
            return (true, "release mode off: every feature is enabled".into());
        }
        match features::tier(name) {
            None if view.granted.iter().any(|g| g == name) => (true, "granted by licence".into()),
            None => (false, format!("unknown feature \"{name}\"")),
            Some(Tier::Community) => (true, "community feature".into()),
            Some(Tier::Enterprise) => {
                let usable = matches!(view.state, LicenseState::Valid | LicenseState::Grace);
                if usable && view.granted.iter().any(|g| g == name) {
                    (true, "entitled by licence".into())
                } else if usable {
                    (false, "not in licence".into())
                } else {
                    (
                        false,
                        format!(
                            "enterprise feature; licence state is {}",
                            state_word(view.state)
                        ),
                    )
                }
            }
        }
    }

    /// Whether feature `name` is on, and why. Never waits on the network.
    pub fn check_feature(&self, name: &str) -> (bool, String) {
        let mut g = self.lock();
        self.tick(&mut g);
        let view = self.view(&g);
        Self::enabled(g.licence.release_mode, &view, name)
    }

    fn feature_list(release_mode: bool, view: &View) -> Vec<Feature> {
        let mut out: Vec<Feature> = features::CATALOGUE
            .iter()
            .map(|(name, tier)| Feature {
                name: (*name).to_owned(),
                enabled: Self::enabled(release_mode, view, name).0,
                tier: tier.as_str().to_owned(),
            })
            .collect();
        for extra in &view.granted {
            if features::tier(extra).is_none() {
                out.push(Feature {
                    name: extra.clone(),
                    enabled: true,
                    tier: "licensed".into(),
                });
            }
        }
        out
    }

    /// Every feature and whether it is on.
    pub fn entitlements(&self) -> Entitlements {
        let mut g = self.lock();
        self.tick(&mut g);
        let view = self.view(&g);
        Entitlements {
            release_mode: g.licence.release_mode,
            features: Self::feature_list(g.licence.release_mode, &view),
            valid_until_unix: self.0.clock.wall()
                + i64::try_from(g.licence.keepalive_interval.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// The full status.
    pub fn status(&self) -> LicenseStatus {
        let mut g = self.lock();
        self.tick(&mut g);
        let view = self.view(&g);
        let release = g.licence.release_mode;
        let last_error = if g.last_error.is_empty() {
            g.offline_error.clone()
        } else {
            g.last_error.clone()
        };
        LicenseStatus {
            state: if release {
                view.state
            } else {
                LicenseState::Development
            } as i32,
            release_mode: release,
            key_masked: g.key.as_ref().map(LicenceKey::masked).unwrap_or_default(),
            product: g.licence.product.clone(),
            customer: view.customer.clone(),
            tier: view.tier.clone(),
            expires_unix: view.expires.unwrap_or(0),
            last_validated_unix: g.cache.evidence.last_success,
            grace_until_unix: view.grace_until,
            source: if release {
                view.source.to_owned()
            } else {
                "development".to_owned()
            },
            last_error,
            features: Self::feature_list(release, &view),
        }
    }

    /// The licence state as it would apply in release mode (what the server/file say).
    pub fn licence_state(&self) -> LicenseState {
        let mut g = self.lock();
        self.tick(&mut g);
        self.view(&g).state
    }

    /// One line for systemd's STATUS=.
    pub fn summary(&self) -> String {
        let mut g = self.lock();
        self.tick(&mut g);
        let view = self.view(&g);
        let licence = match view.state {
            LicenseState::Valid => match view
                .expires
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            {
                Some(t) => format!(
                    "licence valid ({}, expires {})",
                    view.tier,
                    t.format("%Y-%m-%d")
                ),
                None => format!("licence valid ({})", view.tier),
            },
            LicenseState::Grace => format!(
                "licence server unreachable, grace until {}",
                chrono::DateTime::from_timestamp(view.grace_until, 0)
                    .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            ),
            s => format!("licence {}", state_word(s)),
        };
        if g.licence.release_mode {
            if matches!(view.state, LicenseState::Valid | LicenseState::Grace) {
                licence
            } else {
                format!("{licence}: community features only")
            }
        } else {
            format!("release mode off: all features enabled; {licence}")
        }
    }

    fn refresh_metrics(&self) {
        let mut g = self.lock();
        self.tick(&mut g);
        let view = self.view(&g);
        let m = &self.0.metrics;
        m.state.set(i64::from(view.state as i32));
        m.grace_left.set(if view.state == LicenseState::Grace {
            (view.grace_until - self.0.clock.wall()).max(0)
        } else {
            0
        });
        let enterprise = features::CATALOGUE
            .iter()
            .filter(|(n, t)| {
                *t == Tier::Enterprise && Self::enabled(g.licence.release_mode, &view, n).0
            })
            .count();
        m.enterprise_enabled
            .set(i64::try_from(enterprise).unwrap_or(0));
    }

    /// Grace evidence as persisted (tests and diagnostics).
    pub fn evidence(&self) -> Evidence {
        self.lock().cache.evidence
    }
}

fn state_word(s: LicenseState) -> &'static str {
    match s {
        LicenseState::Valid => "valid",
        LicenseState::Grace => "in grace",
        LicenseState::GraceExpired => "grace period over",
        LicenseState::Expired => "expired",
        LicenseState::Invalid => "invalid",
        LicenseState::NoKey => "not set (no key)",
        LicenseState::Pending => "not validated yet",
        LicenseState::Development => "development",
        LicenseState::Unspecified => "unknown",
    }
}
