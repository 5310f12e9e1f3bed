//! Offline grace, as pure logic: how long licensed has gone without reaching the licence
//! server, measured so that setting the wall clock back cannot extend the grace period.
//!
//! Two witnesses are kept and persisted ([`Evidence`]): the highest wall-clock time ever seen,
//! and offline time accumulated from the monotonic clock. Time offline is the larger of
//! "highest wall time seen − last success" and the accumulated monotonic time. Setting the
//! clock back lowers neither; setting it forward shortens the grace (the conservative side).

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Wall and monotonic time, injectable so tests simulate days without sleeping.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time, seconds since the Unix epoch (may jump).
    fn wall(&self) -> i64;
    /// Monotonic time since an arbitrary origin (never goes back).
    fn mono(&self) -> Duration;
}

/// The system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn wall(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    fn mono(&self) -> Duration {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    inner: Mutex<(i64, Duration)>,
}

impl ManualClock {
    /// Starts at wall time `wall` (Unix seconds), monotonic zero.
    pub fn new(wall: i64) -> Self {
        Self {
            inner: Mutex::new((wall, Duration::ZERO)),
        }
    }

    /// Lets `d` pass on both clocks.
    pub fn advance(&self, d: Duration) {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        g.0 += i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        g.1 += d;
    }

    /// Sets the wall clock (as an operator or a bad NTP server would); monotonic unchanged.
    pub fn set_wall(&self, wall: i64) {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).0 = wall;
    }
}

impl Clock for ManualClock {
    fn wall(&self) -> i64 {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    fn mono(&self) -> Duration {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).1
    }
}

/// What licensed remembers about time, persisted with the entitlement cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Evidence {
    /// Wall time of the last successful contact with the server (0 = never).
    pub last_success: i64,
    /// Highest wall time ever observed.
    pub max_wall_seen: i64,
    /// Seconds offline accumulated from the monotonic clock since the last success.
    pub offline_mono_secs: u64,
}

impl Evidence {
    /// Records a successful contact at wall time `wall`.
    pub fn success(&mut self, wall: i64) {
        self.max_wall_seen = self.max_wall_seen.max(wall);
        self.last_success = self.max_wall_seen;
        self.offline_mono_secs = 0;
    }

    /// Records that `mono_elapsed` passed (monotonic) and the wall clock now reads `wall`.
    pub fn observe(&mut self, wall: i64, mono_elapsed: Duration) {
        self.max_wall_seen = self.max_wall_seen.max(wall);
        if self.last_success > 0 {
            self.offline_mono_secs = self
                .offline_mono_secs
                .saturating_add(mono_elapsed.as_secs());
        }
    }

    /// Seconds since the last success, by the more conservative witness.
    pub fn offline_secs(&self) -> u64 {
        let by_wall =
            u64::try_from(self.max_wall_seen.saturating_sub(self.last_success)).unwrap_or(0);
        by_wall.max(self.offline_mono_secs)
    }

    /// Seconds of grace left (None: never succeeded, or grace used up).
    pub fn grace_left(&self, grace: Duration) -> Option<u64> {
        if self.last_success == 0 {
            return None;
        }
        grace
            .as_secs()
            .checked_sub(self.offline_secs())
            .filter(|left| *left > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;
    const T0: i64 = 1_800_000_000;

    #[test]
    fn grace_runs_out_after_the_period() {
        let grace = Duration::from_secs(7 * DAY);
        let mut e = Evidence::default();
        assert_eq!(e.grace_left(grace), None, "never validated: no grace");
        e.success(T0);
        e.observe(T0 + 6 * DAY as i64, Duration::from_secs(6 * DAY));
        assert_eq!(e.grace_left(grace), Some(DAY));
        e.observe(T0 + 7 * DAY as i64, Duration::from_secs(DAY));
        assert_eq!(e.grace_left(grace), None);
    }

    #[test]
    fn clock_set_back_does_not_extend_grace() {
        let grace = Duration::from_secs(7 * DAY);
        let mut e = Evidence::default();
        e.success(T0);
        e.observe(T0 + 6 * DAY as i64, Duration::from_secs(6 * DAY));
        // Someone sets the clock back five days; another day passes.
        e.observe(T0 + DAY as i64, Duration::ZERO);
        e.observe(T0 + 2 * DAY as i64, Duration::from_secs(DAY));
        assert_eq!(e.grace_left(grace), None, "7 real days passed");
    }

    #[test]
    fn reboot_with_clock_set_back_is_caught_by_the_persisted_high_water_mark() {
        let grace = Duration::from_secs(7 * DAY);
        let mut e = Evidence::default();
        e.success(T0);
        e.observe(T0 + 5 * DAY as i64, Duration::from_secs(5 * DAY));
        // Process restarts (monotonic starts over) with the clock set back to T0.
        e.observe(T0, Duration::ZERO);
        e.observe(T0 + 2 * DAY as i64, Duration::from_secs(2 * DAY));
        assert_eq!(e.grace_left(grace), None);
    }

    #[test]
    fn success_resets() {
        let mut e = Evidence::default();
        e.success(T0);
        e.observe(T0 + 3 * DAY as i64, Duration::from_secs(3 * DAY));
        e.success(T0 + 3 * DAY as i64);
        assert_eq!(e.offline_secs(), 0);
    }
}
