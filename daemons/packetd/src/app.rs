//! Wiring of packetd into the shared daemon runner: loads and attaches the XDP program to the
//! configured interfaces, keeps its clock offset fresh, exports its counters as metrics,
//! re-attaches on reload, and follows the served interfaces' addresses over netlink (the
//! on-link allowlist changes when the kernel announces an address change, without polling).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rookery_common::daemon::{BoxError, Daemon, StartContext};
use rookery_common::netlink::{Change, Watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::allow::Allowlist;
use crate::config::{Config, Mode, XdpSection};
use crate::sessions::Sessions;
use crate::userspace::{Settings, UserspaceReflector};
use crate::xdp::{AttachMode, Attached, Counters, Reflector, error_chain};

type Labels = Vec<(String, String)>;

#[derive(Default)]
struct Metrics {
    packets: Family<Labels, Counter>,
    attached: Family<Labels, Gauge>,
    sessions_running: Gauge,
}

/// What answers packets: the XDP program, the userspace reflector, or both (on different
/// interfaces), with the allowlist both enforce.
#[derive(Default)]
struct Backends {
    reflector: Option<Reflector>,
    userspace: Option<UserspaceReflector>,
    attached: Vec<Attached>,
    allow: Allowlist,
}

impl Backends {
    fn counters(&self) -> Result<Counters, crate::xdp::XdpError> {
        let x = match &self.reflector {
            Some(r) => r.counters()?,
            None => Counters::default(),
        };
        let u = self
            .userspace
            .as_ref()
            .map(UserspaceReflector::counters)
            .unwrap_or_default();
        Ok(Counters {
            reflected: x.reflected + u.reflected,
            echoed: x.echoed + u.echoed,
            malformed: x.malformed + u.malformed,
            passed: x.passed + u.passed,
            denied: x.denied + u.denied,
            rate_limited: x.rate_limited + u.rate_limited,
        })
    }
}

struct Running {
    section: XdpSection,
    backends: Backends,
    last: Counters,
}

struct Shared {
    running: Mutex<Running>,
    metrics: Metrics,
    sessions: Arc<Sessions>,
}

/// The running packet tester.
pub struct Packetd {
    shared: Arc<Shared>,
    sessions: Arc<Sessions>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Starts answering on every interface of `section` (none: nothing runs): XDP per the mode,
/// and the userspace reflector for `mode = "userspace"` or where `auto` could not attach XDP.
fn bring_up(section: &XdpSection) -> Result<Backends, BoxError> {
    if section.interfaces.is_empty() {
        return Ok(Backends::default());
    }
    let allow = Allowlist::effective(&section.allow_sources, &section.interfaces);
    let mut b = Backends {
        allow: allow.clone(),
        ..Backends::default()
    };
    let mut fallback: Vec<(String, Option<String>)> = Vec::new();
    match section.mode.policy() {
        None => fallback.extend(section.interfaces.iter().map(|i| (i.clone(), None))),
        Some(policy) => match Reflector::load(section.stamp_port, section.echo_port) {
            Ok(mut refl) => {
                refl.set_allowlist(&allow)?;
                refl.set_max_pps_per_source(section.max_pps_per_source)?;
                for iface in &section.interfaces {
                    match refl.attach(iface, policy) {
                        Ok(a) => {
                            crate::events::attached(&a);
                            b.attached.push(a);
                        }
                        Err(e) if section.mode == Mode::Auto => {
                            fallback.push((iface.clone(), Some(error_chain(&e))));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                if !b.attached.is_empty() {
                    b.reflector = Some(refl);
                }
            }
            Err(e) if section.mode == Mode::Auto => {
                let reason = error_chain(&e);
                fallback.extend(
                    section
                        .interfaces
                        .iter()
                        .map(|i| (i.clone(), Some(reason.clone()))),
                );
            }
            Err(e) => return Err(e.into()),
        },
    }
    if !fallback.is_empty() {
        let settings = Settings {
            interfaces: fallback.iter().map(|(i, _)| i.clone()).collect(),
            stamp_port: section.stamp_port,
            echo_port: section.echo_port,
            max_pps_per_source: section.max_pps_per_source,
        };
        b.userspace = Some(UserspaceReflector::start(&settings, allow)?);
        for (iface, reason) in fallback {
            let a = Attached {
                iface,
                mode: AttachMode::Userspace,
                native_error: reason,
            };
            crate::events::attached(&a);
            b.attached.push(a);
        }
    }
    Ok(b)
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refreshes the program's clock and moves counter deltas into the metrics.
    fn tick(&self) {
        self.metrics
            .sessions_running
            .set(i64::try_from(self.sessions.running()).unwrap_or(i64::MAX));
        let mut g = self.lock();
        if g.section.interfaces.is_empty() {
            return;
        }
        if let Some(refl) = g.backends.reflector.as_mut()
            && let Err(err) = refl.refresh_clock()
        {
            crate::events::clock_refresh_failed(&err);
        }
        match g.backends.counters() {
            Ok(now) => {
                for (result, n) in now.since(&g.last).labelled() {
                    self.metrics
                        .packets
                        .get_or_create(&vec![("result".to_owned(), result.to_owned())])
                        .inc_by(n);
                }
                g.last = now;
            }
            Err(err) => crate::events::counters_failed(&err),
        }
    }

    /// With no configured prefixes the allowlist is the served interfaces' on-link prefixes:
    /// read them again (a netlink dump, off the async threads) and apply any difference.
    async fn refresh_on_link(&self) {
        let interfaces = {
            let g = self.lock();
            if g.section.interfaces.is_empty() || !g.section.allow_sources.is_empty() {
                return;
            }
            g.section.interfaces.clone()
        };
        let Ok(now) = tokio::task::spawn_blocking(move || {
            (Allowlist(crate::allow::on_link(&interfaces)), interfaces)
        })
        .await
        else {
            return;
        };
        let (now, interfaces) = now;
        let mut g = self.lock();
        // A reload may have changed the section meanwhile; its own allowlist then stands.
        if g.section.interfaces != interfaces
            || !g.section.allow_sources.is_empty()
            || now == g.backends.allow
        {
            return;
        }
        crate::events::allowlist_changed(&now);
        if let Some(refl) = g.backends.reflector.as_mut()
            && let Err(err) = refl.set_allowlist(&now)
        {
            crate::events::allowlist_failed(&err);
        }
        if let Some(us) = g.backends.userspace.as_ref() {
            us.set_allowlist(now.clone());
        }
        g.backends.allow = now;
    }

    /// A served interface was removed: the kernel detached the program with it.
    fn link_removed(&self, name: &str) {
        let mut g = self.lock();
        let before = g.backends.attached.len();
        g.backends
            .attached
            .retain(|a| a.iface != name || a.mode == AttachMode::Userspace);
        if g.backends.attached.len() != before {
            crate::events::interface_removed(name);
            self.publish_attached(&g.backends.attached);
        }
    }

    /// A link appeared or changed: when it is a served interface without the XDP program (it
    /// was created or re-created after start), attach the program to it.
    fn link_appeared(&self, name: &str) {
        let mut g = self.lock();
        let Some(policy) = g.section.mode.policy() else {
            return;
        };
        if !g.section.interfaces.iter().any(|i| i == name)
            || g.backends
                .attached
                .iter()
                .any(|a| a.iface == name && a.mode != AttachMode::Userspace)
        {
            return;
        }
        let Some(refl) = g.backends.reflector.as_mut() else {
            return;
        };
        match refl.attach(name, policy) {
            Ok(a) => {
                crate::events::attached(&a);
                g.backends.attached.push(a);
                self.publish_attached(&g.backends.attached);
            }
            Err(e) => crate::events::attach_later_failed(name, &e),
        }
    }

    fn publish_attached(&self, attached: &[Attached]) {
        self.metrics.attached.clear();
        for a in attached {
            self.metrics
                .attached
                .get_or_create(&vec![
                    ("interface".to_owned(), a.iface.clone()),
                    ("mode".to_owned(), a.mode.as_str().to_owned()),
                ])
                .set(1);
        }
    }
}

fn register(registry: &mut Registry, m: &Metrics) {
    registry.register(
        "rookery_packetd_xdp_packets",
        "Packets seen by the reflector (XDP or userspace), by result (reflected, echoed, malformed, passed, denied, rate_limited)",
        m.packets.clone(),
    );
    registry.register(
        "rookery_packetd_xdp_attached",
        "1 per interface served, with the mode (native, skb or userspace)",
        m.attached.clone(),
    );
    registry.register(
        "rookery_packetd_sessions_running",
        "Sessions (STAMP Session-Sender or raw generator) running now",
        m.sessions_running.clone(),
    );
}

/// How long to wait before opening the netlink subscription again after it failed.
const WATCH_RETRY: Duration = Duration::from_secs(5);

/// Follows the kernel's link and address notifications: attaches the XDP program to a served
/// interface that appears (or is re-created) after start, notes one that is removed, and
/// refreshes the on-link allowlist on every change (any may concern a served interface; a
/// dump costs well under a millisecond).
/// The subscription is opened before the first dump, so no change falls between the two; after
/// an overrun (notifications lost) the dump is simply taken again.
async fn follow_addresses(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let mut watch = match Watch::new() {
            Ok(w) => w,
            Err(e) => {
                crate::events::netlink_watch_failed(&e, WATCH_RETRY);
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(WATCH_RETRY) => continue,
                }
            }
        };
        shared.refresh_on_link().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                change = watch.next() => match change {
                    Ok(change) => {
                        match &change {
                            Change::Link(link) => shared.link_appeared(&link.name),
                            Change::LinkRemoved { name, .. } => shared.link_removed(name),
                            _ => {}
                        }
                        shared.refresh_on_link().await;
                    }
                    Err(e) => {
                        crate::events::netlink_watch_failed(&e, WATCH_RETRY);
                        break;
                    }
                },
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(WATCH_RETRY) => {}
        }
    }
}

async fn ticker(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Reflector::CLOCK_REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = every.tick() => shared.tick(),
        }
    }
    shared.tick();
}

impl Daemon for Packetd {
    type Config = Config;

    async fn start(ctx: StartContext<'_, Config>) -> Result<Self, BoxError> {
        let sessions = Sessions::open(
            &ctx.config.state.directory,
            ctx.config.sessions.clone(),
            ctx.shutdown.clone(),
        )?;
        ctx.routes
            .add_service(crate::grpc::server(sessions.clone()));
        let backends = bring_up(&ctx.config.xdp)?;
        let attached = backends.attached.clone();
        let shared = Arc::new(Shared {
            running: Mutex::new(Running {
                section: ctx.config.xdp.clone(),
                backends,
                last: Counters::default(),
            }),
            metrics: Metrics::default(),
            sessions: sessions.clone(),
        });
        register(ctx.registry, &shared.metrics);
        shared.publish_attached(&attached);
        let tasks = vec![
            tokio::spawn(ticker(shared.clone(), ctx.shutdown.clone())),
            tokio::spawn(follow_addresses(shared.clone(), ctx.shutdown.clone())),
        ];
        Ok(Self {
            shared,
            sessions,
            tasks: Mutex::new(tasks),
        })
    }

    async fn apply(&self, config: &Config) -> Result<(), BoxError> {
        self.sessions.set_limits(config.sessions.clone());
        // Count what the old program saw before it goes away.
        self.shared.tick();
        let mut g = self.shared.lock();
        if g.section == config.xdp {
            return Ok(());
        }
        // Only the allowlist or the rate bound changed: update them in place, so reflection
        // never pauses for a reload.
        let (old_x, new_x) = (&g.section, &config.xdp);
        if old_x.interfaces == new_x.interfaces
            && old_x.mode == new_x.mode
            && old_x.stamp_port == new_x.stamp_port
            && old_x.echo_port == new_x.echo_port
        {
            let allow = Allowlist::effective(&new_x.allow_sources, &new_x.interfaces);
            if let Some(refl) = g.backends.reflector.as_mut() {
                refl.set_allowlist(&allow)?;
                refl.set_max_pps_per_source(new_x.max_pps_per_source)?;
            }
            if let Some(us) = g.backends.userspace.as_ref() {
                us.set_allowlist(allow.clone());
                us.set_max_pps_per_source(new_x.max_pps_per_source);
            }
            crate::events::allowlist_changed(&allow);
            g.backends.allow = allow;
            g.section = config.xdp.clone();
            return Ok(());
        }
        // An interface takes one XDP program: detach the old one before attaching the new.
        let old = g.section.clone();
        g.backends = Backends::default();
        g.last = Counters::default();
        match bring_up(&config.xdp) {
            Ok(backends) => {
                g.section = config.xdp.clone();
                g.backends = backends;
                self.shared.publish_attached(&g.backends.attached);
                Ok(())
            }
            Err(err) => {
                // Keep the old configuration running, as the reload contract requires.
                g.backends = bring_up(&old).map_err(|again| {
                    format!(
                        "{err}; re-attaching the previous [xdp] configuration also failed: {again}"
                    )
                })?;
                self.shared.publish_attached(&g.backends.attached);
                Err(err)
            }
        }
    }

    fn status_text(&self) -> String {
        let g = self.shared.lock();
        if g.backends.attached.is_empty() {
            return "Reflector off (no [xdp] interfaces)".to_owned();
        }
        let list: Vec<String> = g
            .backends
            .attached
            .iter()
            .map(|a| format!("{} ({})", a.iface, a.mode.as_str()))
            .collect();
        format!(
            "Reflector on {}; {} reflected, {} echoed",
            list.join(", "),
            g.last.reflected,
            g.last.echoed
        )
    }

    fn details(&self) -> BTreeMap<String, String> {
        let g = self.shared.lock();
        let mut d = BTreeMap::new();
        for a in &g.backends.attached {
            d.insert(format!("xdp.{}", a.iface), a.mode.as_str().to_owned());
        }
        d.insert("xdp.reflected".into(), g.last.reflected.to_string());
        d.insert("xdp.echoed".into(), g.last.echoed.to_string());
        d.insert("xdp.malformed".into(), g.last.malformed.to_string());
        d.insert("xdp.denied".into(), g.last.denied.to_string());
        d.insert("xdp.rate_limited".into(), g.last.rate_limited.to_string());
        d.insert(
            "sessions.running".into(),
            self.sessions.running().to_string(),
        );
        d.insert("xdp.allow".into(), {
            let v: Vec<String> = g.backends.allow.0.iter().map(ToString::to_string).collect();
            v.join(",")
        });
        d
    }

    async fn drain(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        // Sessions stop at shutdown; wait for their final rows.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.sessions.running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
