//! Wiring of probed into the shared daemon runner: opens the results store in the state
//! directory, registers the metrics, adds `/probe` to the loopback metrics listener, starts
//! the scheduler and swaps its targets on reload.

use std::collections::BTreeMap;
use std::sync::Arc;

use rookery_common::config::Sources;
use rookery_common::daemon::{self, BoxError, Control, Daemon, RunError, StartContext};

use crate::autoperf::Gate;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::scheduler::{Scheduler, Sink};
use crate::store::Store;

/// The running prober.
pub struct Probed {
    scheduler: Arc<Scheduler>,
    gate: Arc<Gate>,
}

impl Probed {
    /// The scheduler (tests and the gRPC service use it).
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }
}

impl Daemon for Probed {
    type Config = Config;

    async fn start(ctx: StartContext<'_, Config>) -> Result<Self, BoxError> {
        let dir = &ctx.config.state.directory;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create state directory {}: {e}", dir.display()))?;
        let store = Store::open_configured(&ctx.config.store, dir, ctx.shutdown.clone()).await?;
        tracing::info!(store = %store.describe(), "Results store open.");
        let metrics = Metrics::default();
        metrics.register(ctx.registry);
        let sink = Sink::new(metrics, store);
        let gate = Gate::new(&ctx.config.autoperf);
        tokio::spawn(gate.clone().run(ctx.shutdown.clone()));
        let scheduler = Arc::new(Scheduler::new(
            sink,
            ctx.config.scheduler.max_concurrency as usize,
            gate.clone(),
            ctx.shutdown.clone(),
        ));
        scheduler.apply(ctx.config)?;
        ctx.routes
            .add_service(crate::grpc::server(scheduler.clone()));
        let routes = std::mem::take(ctx.http_routes);
        *ctx.http_routes = routes.merge(crate::blackbox::router(scheduler.clone()));
        tracing::info!(
            targets = ctx.config.targets.len(),
            modules = ctx.config.modules.len(),
            "Scheduler started."
        );
        release_code_later();
        Ok(Self { scheduler, gate })
    }

    async fn apply(&self, config: &Config) -> Result<(), BoxError> {
        self.scheduler.apply(config)?;
        self.scheduler
            .sink()
            .store
            .set_retention(config.store.retention);
        tracing::info!(targets = config.targets.len(), "Targets applied.");
        release_code_later();
        Ok(())
    }

    fn status_text(&self) -> String {
        let targets = self.scheduler.target_count();
        let failing = self.scheduler.sink().metrics.failing();
        let autoperf = if self.gate.state().active {
            ", autoperf on"
        } else {
            ""
        };
        format!("probing {targets} targets, {failing} failing{autoperf}")
    }

    fn details(&self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::new();
        d.insert(
            "targets".to_owned(),
            self.scheduler.target_count().to_string(),
        );
        d.insert(
            "modules".to_owned(),
            self.scheduler.module_names().join(","),
        );
        d.insert("store".to_owned(), self.scheduler.sink().store.describe());
        d
    }

    async fn drain(&self) {
        self.scheduler.drain().await;
    }
}

/// Runs probed in-process until `control.shutdown` is cancelled (tests use this; the binary
/// goes through `rookery_common::daemon::main`).
pub async fn run(sources: Sources, control: Control) -> Result<(), RunError> {
    daemon::run::<Probed>(sources, control).await
}

/// How long after a start or reload probed's code is released ([`release_code`]): the
/// daemon runner finishes starting (listeners, readiness) within it.
const RELEASE_CODE_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// [`release_code`] after [`RELEASE_CODE_AFTER`] (a task; gone with the runtime).
fn release_code_later() {
    tokio::spawn(async {
        tokio::time::sleep(RELEASE_CODE_AFTER).await;
        match release_code() {
            Ok(bytes) => tracing::debug!(bytes, "Released the code mappings."),
            Err(err) => tracing::debug!(error = %err, "Cannot release the code mappings."),
        }
    });
}

/// Drops this process's page mappings of its own executable's machine code
/// (`madvise(MADV_DONTNEED)` on the executable's `r-x` mappings). Code run only to start or
/// reload (configuration parsing, the store's schema, TLS and gRPC setup) then no longer
/// counts as probed's resident memory; code in use is mapped again at its next call from the
/// page cache, where the file's pages stay (a minor fault, no disk read). The kernel maps up
/// to 64 KiB around each page faulted in, so this saves ~1 MiB of the ~8 MiB of code
/// resident with 10,000 targets (docs/benchmarks.md). `MADV_PAGEOUT` would save ~5 MiB but
/// only acts on file pages of files the process may write: not the daemon's, whose binary
/// belongs to root. Returns the bytes of the mappings released.
pub fn release_code() -> std::io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let exe = exe.to_string_lossy();
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut released = 0;
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let mut fields = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(path)) = (fields.next(), fields.next(), fields.nth(3))
        else {
            continue;
        };
        if !perms.starts_with("r-x") || path.trim_start() != exe {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        let Some(addr) = std::ptr::NonNull::new(start as *mut std::ffi::c_void) else {
            continue;
        };
        // SAFETY: the range is a read-only, executable, private mapping of the executable
        // file, as the kernel lists it. MADV_DONTNEED on a private file mapping only drops the
        // page table entries: the next access maps the file's page again, with the same
        // contents (code is never written), so no memory that Rust code refers to changes.
        unsafe {
            nix::sys::mman::madvise(addr, end - start, nix::sys::mman::MmapAdvise::MADV_DONTNEED)
        }
        .map_err(std::io::Error::from)?;
        released += end - start;
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    /// The sizes of this process's mappings of its own binary with `r-x` permissions, in
    /// bytes, read from `/proc/self/maps` here independently of `release_code`.
    fn exe_code_bytes() -> usize {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 6 && f[1].starts_with("r-x") && f[5] == exe).then(|| {
                    let (a, b) = f[0].split_once('-').unwrap();
                    usize::from_str_radix(b, 16).unwrap() - usize::from_str_radix(a, 16).unwrap()
                })
            })
            .sum()
    }

    /// Every code mapping of the binary is released, and the code keeps running (it is mapped
    /// again as it runs: this test goes on after the call). What that saves in a running
    /// probed is measured by `make bench` (docs/benchmarks.md), not asserted here: how much
    /// comes back depends on the kernel mapping pages around each fault (fault-around), which
    /// in a small test process can map in more than was released.
    #[test]
    fn releasing_the_code_unmaps_every_code_mapping_and_code_still_runs() {
        let text: String = (0..1000).map(|i| format!("{i:x}")).collect();
        let code = exe_code_bytes();
        let released = release_code().unwrap();
        assert!(code > 0, "no code mapping of the binary in /proc/self/maps");
        assert_eq!(
            released, code,
            "released bytes vs the binary's r-x mappings"
        );
        let again: String = (0..1000).map(|i| format!("{i:x}")).collect();
        assert_eq!(text, again);
    }
}
