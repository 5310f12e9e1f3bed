//! Wiring of packetd into the shared daemon runner: loads and attaches the XDP program to the
//! configured interfaces, keeps its clock offset fresh, exports its counters as metrics and
//! re-attaches on reload.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rookery_common::daemon::{BoxError, Daemon, StartContext};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, XdpSection};
use crate::xdp::{Attached, Counters, Reflector};

type Labels = Vec<(String, String)>;

#[derive(Default)]
struct Metrics {
    packets: Family<Labels, Counter>,
    attached: Family<Labels, Gauge>,
}

struct Running {
    section: XdpSection,
    reflector: Option<Reflector>,
    attached: Vec<Attached>,
    last: Counters,
}

struct Shared {
    running: Mutex<Running>,
    metrics: Metrics,
}

/// The running packet tester.
pub struct Packetd {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Loads the program and attaches it to every interface of `section` (none: nothing loaded).
fn bring_up(section: &XdpSection) -> Result<(Option<Reflector>, Vec<Attached>), BoxError> {
    if section.interfaces.is_empty() {
        return Ok((None, Vec::new()));
    }
    let mut refl = Reflector::load(section.stamp_port, section.echo_port)?;
    let mut attached = Vec::new();
    for iface in &section.interfaces {
        let a = refl.attach(iface, section.mode.policy())?;
        crate::events::attached(&a);
        attached.push(a);
    }
    Ok((Some(refl), attached))
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refreshes the program's clock and moves counter deltas into the metrics.
    fn tick(&self) {
        let mut g = self.lock();
        let Some(refl) = g.reflector.as_mut() else {
            return;
        };
        if let Err(err) = refl.refresh_clock() {
            crate::events::clock_refresh_failed(&err);
        }
        match refl.counters() {
            Ok(now) => {
                let last = g.last;
                for (result, n, l) in [
                    ("reflected", now.reflected, last.reflected),
                    ("echoed", now.echoed, last.echoed),
                    ("malformed", now.malformed, last.malformed),
                    ("passed", now.passed, last.passed),
                ] {
                    self.metrics
                        .packets
                        .get_or_create(&vec![("result".to_owned(), result.to_owned())])
                        .inc_by(n.saturating_sub(l));
                }
                g.last = now;
            }
            Err(err) => crate::events::counters_failed(&err),
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
        "Packets seen by the XDP program, by result (reflected, echoed, malformed, passed)",
        m.packets.clone(),
    );
    registry.register(
        "rookery_packetd_xdp_attached",
        "1 per interface the XDP program is attached to, with the attach mode",
        m.attached.clone(),
    );
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
        let (reflector, attached) = bring_up(&ctx.config.xdp)?;
        let shared = Arc::new(Shared {
            running: Mutex::new(Running {
                section: ctx.config.xdp.clone(),
                reflector,
                attached: attached.clone(),
                last: Counters::default(),
            }),
            metrics: Metrics::default(),
        });
        register(ctx.registry, &shared.metrics);
        shared.publish_attached(&attached);
        let task = tokio::spawn(ticker(shared.clone(), ctx.shutdown.clone()));
        Ok(Self {
            shared,
            task: Mutex::new(Some(task)),
        })
    }

    async fn apply(&self, config: &Config) -> Result<(), BoxError> {
        // Count what the old program saw before it goes away.
        self.shared.tick();
        let mut g = self.shared.lock();
        if g.section == config.xdp {
            return Ok(());
        }
        // An interface takes one XDP program: detach the old one before attaching the new.
        let old = g.section.clone();
        g.reflector = None;
        g.attached.clear();
        g.last = Counters::default();
        match bring_up(&config.xdp) {
            Ok((reflector, attached)) => {
                g.section = config.xdp.clone();
                g.reflector = reflector;
                g.attached = attached;
                self.shared.publish_attached(&g.attached);
                Ok(())
            }
            Err(err) => {
                // Keep the old configuration running, as the reload contract requires.
                let (reflector, attached) = bring_up(&old).map_err(|again| {
                    format!(
                        "{err}; re-attaching the previous [xdp] configuration also failed: {again}"
                    )
                })?;
                g.reflector = reflector;
                g.attached = attached;
                self.shared.publish_attached(&g.attached);
                Err(err)
            }
        }
    }

    fn status_text(&self) -> String {
        let g = self.shared.lock();
        if g.attached.is_empty() {
            return "XDP reflector off (no [xdp] interfaces)".to_owned();
        }
        let list: Vec<String> = g
            .attached
            .iter()
            .map(|a| format!("{} ({})", a.iface, a.mode.as_str()))
            .collect();
        format!(
            "XDP reflector on {}; {} reflected, {} echoed",
            list.join(", "),
            g.last.reflected,
            g.last.echoed
        )
    }

    fn details(&self) -> BTreeMap<String, String> {
        let g = self.shared.lock();
        let mut d = BTreeMap::new();
        for a in &g.attached {
            d.insert(format!("xdp.{}", a.iface), a.mode.as_str().to_owned());
        }
        d.insert("xdp.reflected".into(), g.last.reflected.to_string());
        d.insert("xdp.echoed".into(), g.last.echoed.to_string());
        d.insert("xdp.malformed".into(), g.last.malformed.to_string());
        d
    }

    async fn drain(&self) {
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}
