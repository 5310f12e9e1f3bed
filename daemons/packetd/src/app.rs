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
use crate::userspace::{Settings, UserspaceError, UserspaceReflector};
use crate::xdp::{AttachMode, Attached, Counters, Reflector, error_chain};

type Labels = Vec<(String, String)>;

#[derive(Default)]
struct Metrics {
    packets: Family<Labels, Counter>,
    attached: Family<Labels, Gauge>,
    unserved: Family<Labels, Gauge>,
    sessions_running: Gauge,
}

/// Why a configured interface is not served now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unserved {
    /// No interface of that name exists (yet): it is served as soon as the kernel announces it.
    Absent,
    /// It exists, but the XDP program could not be attached in the configured mode (or the
    /// userspace reflector could not start): tried again at the interface's next link change.
    Failed(String),
}

impl Unserved {
    /// The `reason` label of `rookery_packetd_xdp_unserved`.
    fn as_str(&self) -> &'static str {
        match self {
            Self::Absent => "absent",
            Self::Failed(_) => "attach_failed",
        }
    }
}

/// What answers packets: the XDP program, the userspace reflector, or both (on different
/// interfaces), with the allowlist both enforce, and the configured interfaces nothing serves.
#[derive(Default)]
struct Backends {
    reflector: Option<Reflector>,
    /// Why the XDP program could not be loaded (`auto`: every interface is then served by the
    /// userspace reflector).
    load_error: Option<String>,
    userspace: Option<UserspaceReflector>,
    /// What userspace reflectors stopped since the start counted (part of [`Backends::counters`]).
    retired: Counters,
    attached: Vec<Attached>,
    unserved: BTreeMap<String, Unserved>,
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
        Ok(x.plus(&u).plus(&self.retired))
    }

    /// The interfaces the userspace reflector serves.
    fn userspace_names(&self) -> Vec<String> {
        self.attached
            .iter()
            .filter(|a| a.mode == AttachMode::Userspace)
            .map(|a| a.iface.clone())
            .collect()
    }

    /// Whether the userspace reflector runs even while it serves no interface: the mode says
    /// so, or (`auto`) the XDP program could not be loaded, so every interface will need it.
    fn userspace_always(&self, section: &XdpSection) -> bool {
        section.mode == Mode::Userspace || self.load_error.is_some()
    }

    fn start_userspace(&mut self, section: &XdpSection) -> Result<(), UserspaceError> {
        if self.userspace.is_none() {
            let settings = Settings {
                interfaces: self.userspace_names(),
                stamp_port: section.stamp_port,
                echo_port: section.echo_port,
                max_pps_per_source: section.max_pps_per_source,
            };
            self.userspace = Some(UserspaceReflector::start(&settings, self.allow.clone())?);
        }
        Ok(())
    }

    /// Points the userspace reflector at the interfaces it serves now. In `auto` mode, once no
    /// interface falls back to it any more, it stops, so its ports are free again.
    fn sync_userspace(&mut self, section: &XdpSection) {
        let names = self.userspace_names();
        if names.is_empty() && !self.userspace_always(section) {
            if let Some(us) = self.userspace.take() {
                self.retired = self.retired.plus(&us.counters());
                drop(us);
                crate::events::userspace_retired();
            }
            return;
        }
        if let Some(us) = &self.userspace {
            us.set_interfaces(&names);
        }
    }

    /// Serves the configured interface `iface` when it exists, exactly as at start: the XDP
    /// program in the configured mode, in `auto` falling back to generic XDP and then to the
    /// userspace reflector. An interface that does not exist is marked absent (not an error);
    /// one that exists but cannot be served is marked failed and its error returned.
    fn serve(&mut self, section: &XdpSection, iface: &str) -> Result<(), BoxError> {
        let Some(ifindex) = crate::xdp::if_index(iface) else {
            self.unserved.insert(iface.to_owned(), Unserved::Absent);
            return Ok(());
        };
        let reason = match (section.mode.policy(), self.reflector.as_mut()) {
            (None, _) => None,
            (Some(_), None) => self.load_error.clone(),
            (Some(policy), Some(refl)) => match refl.attach(iface, policy) {
                Ok(a) => {
                    crate::events::attached(&a);
                    self.unserved.remove(iface);
                    self.attached.push(a);
                    return Ok(());
                }
                // Removed again between the look-up and the attach.
                Err(_) if crate::xdp::if_index(iface).is_none() => {
                    self.unserved.insert(iface.to_owned(), Unserved::Absent);
                    return Ok(());
                }
                Err(e) if section.mode == Mode::Auto => Some(error_chain(&e)),
                Err(e) => {
                    self.unserved
                        .insert(iface.to_owned(), Unserved::Failed(error_chain(&e)));
                    return Err(e.into());
                }
            },
        };
        if let Err(e) = self.start_userspace(section) {
            self.unserved
                .insert(iface.to_owned(), Unserved::Failed(error_chain(&e)));
            return Err(e.into());
        }
        let a = Attached {
            iface: iface.to_owned(),
            ifindex,
            mode: AttachMode::Userspace,
            native_error: reason,
        };
        crate::events::attached(&a);
        self.unserved.remove(iface);
        self.attached.push(a);
        self.sync_userspace(section);
        Ok(())
    }

    /// Brings the configured interface `iface` in line with the kernel: an attachment whose
    /// interface is gone, renamed or replaced by a new one of the same name is dropped (the
    /// program detached from a renamed one); an interface that exists and is not served is
    /// served, except one whose attach failed before, which is retried only when
    /// `retry_failed` (its own link changed). Returns whether anything changed.
    fn reconcile(&mut self, section: &XdpSection, iface: &str, retry_failed: bool) -> bool {
        let now = crate::xdp::if_index(iface);
        let served = self.attached.iter().find(|a| a.iface == iface);
        if let Some(a) = served {
            if Some(a.ifindex) == now {
                return false;
            }
            self.attached.retain(|a| a.iface != iface);
            if let Some(refl) = self.reflector.as_mut() {
                refl.detach(iface);
            }
            self.unserved.insert(iface.to_owned(), Unserved::Absent);
            self.sync_userspace(section);
            crate::events::interface_removed(iface);
        } else if now.is_none() {
            return self.unserved.insert(iface.to_owned(), Unserved::Absent)
                != Some(Unserved::Absent);
        } else if !retry_failed && matches!(self.unserved.get(iface), Some(Unserved::Failed(_))) {
            return false;
        }
        if now.is_some()
            && let Err(e) = self.serve(section, iface)
        {
            crate::events::attach_later_failed(iface, e.as_ref());
        }
        true
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
/// A configured interface that does not exist is not an error: it is logged, shown as
/// absent, and served when it appears ([`Shared::links_changed`]).
fn bring_up(section: &XdpSection) -> Result<Backends, BoxError> {
    if section.interfaces.is_empty() {
        return Ok(Backends::default());
    }
    let allow = Allowlist::effective(&section.allow_sources, &section.interfaces);
    let mut b = Backends {
        allow: allow.clone(),
        ..Backends::default()
    };
    if section.mode.policy().is_some() {
        match Reflector::load(section.stamp_port, section.echo_port) {
            Ok(mut refl) => {
                refl.set_allowlist(&allow)?;
                refl.set_max_pps_per_source(section.max_pps_per_source)?;
                b.reflector = Some(refl);
            }
            Err(e) if section.mode == Mode::Auto => b.load_error = Some(error_chain(&e)),
            Err(e) => return Err(e.into()),
        }
    }
    if b.userspace_always(section) {
        b.start_userspace(section)?;
    }
    for iface in &section.interfaces {
        b.serve(section, iface)?;
        if b.unserved.get(iface) == Some(&Unserved::Absent) {
            crate::events::interface_absent(iface);
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

    /// Follows a link change: every configured interface is checked against the kernel
    /// ([`Backends::reconcile`]). `changed` names the link the kernel announced (`None`: the
    /// subscription was just opened or lost notifications); only that one is retried when an
    /// earlier attach to it failed.
    fn links_changed(&self, changed: Option<&str>) {
        let mut g = self.lock();
        let r = &mut *g;
        let mut any = false;
        for iface in &r.section.interfaces {
            any |= r
                .backends
                .reconcile(&r.section, iface, changed == Some(iface.as_str()));
        }
        if any {
            self.publish(&r.backends);
        }
    }

    /// Sets `rookery_packetd_xdp_attached` and `rookery_packetd_xdp_unserved` from `b`.
    fn publish(&self, b: &Backends) {
        self.metrics.attached.clear();
        for a in &b.attached {
            self.metrics
                .attached
                .get_or_create(&vec![
                    ("interface".to_owned(), a.iface.clone()),
                    ("mode".to_owned(), a.mode.as_str().to_owned()),
                ])
                .set(1);
        }
        self.metrics.unserved.clear();
        for (iface, why) in &b.unserved {
            self.metrics
                .unserved
                .get_or_create(&vec![
                    ("interface".to_owned(), iface.clone()),
                    ("reason".to_owned(), why.as_str().to_owned()),
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
        "rookery_packetd_xdp_unserved",
        "1 per configured interface nothing serves now, with the reason (absent: no interface of that name exists; attach_failed: the program could not be attached in the configured mode)",
        m.unserved.clone(),
    );
    registry.register(
        "rookery_packetd_sessions_running",
        "Sessions (STAMP Session-Sender or raw generator) running now",
        m.sessions_running.clone(),
    );
}

/// How long to wait before opening the netlink subscription again after it failed.
const WATCH_RETRY: Duration = Duration::from_secs(5);

/// Follows the kernel's link and address notifications: serves a configured interface that
/// appears (or is re-created) after start, notes one that is removed or renamed, and
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
        // Whatever appeared or went while nothing was listening.
        shared.links_changed(None);
        shared.refresh_on_link().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                change = watch.next() => match change {
                    Ok(change) => {
                        match &change {
                            Change::Link(link) => shared.links_changed(Some(&link.name)),
                            Change::LinkRemoved { name, .. } => shared.links_changed(Some(name)),
                            Change::Overrun => shared.links_changed(None),
                            Change::AddressAdded { .. } | Change::AddressRemoved { .. } => {}
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
        sessions.set_generator(ctx.config.generator.clone());
        ctx.routes
            .add_service(crate::grpc::server(sessions.clone()));
        let backends = bring_up(&ctx.config.xdp)?;
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
        shared.publish(&shared.lock().backends);
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
        self.sessions.set_generator(config.generator.clone());
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
                self.shared.publish(&g.backends);
                Ok(())
            }
            Err(err) => {
                // Keep the old configuration running, as the reload contract requires.
                g.backends = bring_up(&old).map_err(|again| {
                    format!(
                        "{err}; re-attaching the previous [xdp] configuration also failed: {again}"
                    )
                })?;
                self.shared.publish(&g.backends);
                Err(err)
            }
        }
    }

    fn status_text(&self) -> String {
        let g = self.shared.lock();
        if g.backends.attached.is_empty() && g.backends.unserved.is_empty() {
            return "Reflector off (no [xdp] interfaces)".to_owned();
        }
        let list: Vec<String> = g
            .backends
            .attached
            .iter()
            .map(|a| format!("{} ({})", a.iface, a.mode.as_str()))
            .collect();
        let mut text = if list.is_empty() {
            "Reflector on no interface yet".to_owned()
        } else {
            format!("Reflector on {}", list.join(", "))
        };
        if !g.backends.unserved.is_empty() {
            let missing: Vec<String> = g
                .backends
                .unserved
                .iter()
                .map(|(i, why)| format!("{i} ({})", why.as_str()))
                .collect();
            text.push_str(&format!("; not served: {}", missing.join(", ")));
        }
        format!(
            "{text}; {} reflected, {} echoed",
            g.last.reflected, g.last.echoed
        )
    }

    fn details(&self) -> BTreeMap<String, String> {
        let g = self.shared.lock();
        let mut d = BTreeMap::new();
        for a in &g.backends.attached {
            d.insert(format!("xdp.{}", a.iface), a.mode.as_str().to_owned());
        }
        for (iface, why) in &g.backends.unserved {
            let text = match why {
                Unserved::Absent => "absent".to_owned(),
                Unserved::Failed(e) => format!("attach_failed: {e}"),
            };
            d.insert(format!("xdp.{iface}"), text);
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
