//! The systemd service protocol (`Type=notify`): `READY=1` once sockets are bound, `STATUS=`
//! on every state change, `RELOADING=1` … `READY=1` around a reload, `STOPPING=1` before the
//! drain, and `WATCHDOG=1` at half of `WatchdogSec=` when the unit sets one.
//!
//! Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op, so the daemons run the same way
//! in tests and by hand.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// Sends state changes to systemd. Cheap to copy; safe to call from any task.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifier;

impl Notifier {
    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `RELOADING=1` (with the monotonic timestamp systemd 253+ expects) and a status line.
    pub fn reloading(&self, status: &str) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now, NotifyState::Status(status)]),
            Err(_) => self.send(&[NotifyState::Reloading, NotifyState::Status(status)]),
        }
    }

    /// `STOPPING=1` and a status line.
    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// `STATUS=` only.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(err) = sd_notify::notify(false, states) {
            tracing::warn!(error = %err, "Cannot notify systemd.");
        }
    }

    /// The keep-alive interval systemd asked for (half of `WatchdogSec=`), if any.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        let mut usec = 0u64;
        sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
    }

    /// Spawns the task that sends `WATCHDOG=1` until `stop` is cancelled, when the unit has
    /// `WatchdogSec=`. It runs on the same runtime as the daemon's work, so a wedged runtime
    /// stops the pings and systemd restarts the daemon.
    pub fn spawn_watchdog(&self, stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
        let interval = self.watchdog_interval()?;
        let this = *self;
        tracing::debug!(
            interval_ms = interval.as_millis() as u64,
            "Watchdog enabled."
        );
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => this.send(&[NotifyState::Watchdog]),
                }
            }
        }))
    }
}
