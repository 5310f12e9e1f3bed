//! Tiered escalation (WaddlePerf): tier 1 is the scheduled probe; a target whose probes
//! breach its thresholds (failure, latency, ICMP loss) in N of the last M probes escalates to
//! tier 2 (diagnostics: repeated probes and a path trace, a shorter interval); enough
//! breaches (critical) escalate to tier 3. After a run of healthy probes it returns to tier 1.
//! Every transition carries its reason and is recorded by the scheduler.
//!
//! This module is pure: [`breach`] judges one outcome, [`TierState::observe`] is the state
//! machine. The scheduler does the I/O.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::TierPolicy;
use crate::probe::Outcome;

/// Why `outcome` breaches `policy`, if it does.
pub fn breach(policy: &TierPolicy, outcome: &Outcome) -> Option<String> {
    if let Some(f) = &outcome.failure {
        return Some(format!("probe failed: {f}"));
    }
    if !policy.max_latency.is_zero() && outcome.total > policy.max_latency {
        return Some(format!(
            "took {} ms (threshold {} ms)",
            outcome.total.as_millis(),
            policy.max_latency.as_millis()
        ));
    }
    if let Some(icmp) = &outcome.facts.icmp {
        let loss = icmp.loss();
        if loss > policy.max_loss {
            return Some(format!(
                "{:.0}% loss (threshold {:.0}%)",
                loss * 100.0,
                policy.max_loss * 100.0
            ));
        }
    }
    None
}

/// A change of tier with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Tier before.
    pub from: u8,
    /// Tier after.
    pub to: u8,
    /// Why, in words.
    pub reason: String,
}

/// The escalation state of one target.
#[derive(Debug, Clone)]
pub struct TierState {
    tier: u8,
    recent: VecDeque<bool>,
    healthy_streak: u32,
}

impl Default for TierState {
    fn default() -> Self {
        Self {
            tier: 1,
            recent: VecDeque::new(),
            healthy_streak: 0,
        }
    }
}

impl TierState {
    /// The current tier (1, 2 or 3).
    pub fn tier(&self) -> u8 {
        self.tier
    }

    /// The probe interval in this tier.
    pub fn interval(&self, policy: &TierPolicy, base: Duration) -> Duration {
        if self.tier > 1 {
            policy.escalated_interval.min(base)
        } else {
            base
        }
    }

    /// Takes one probe's verdict (`Some(reason)` = it breached) and returns the transition it
    /// causes, if any. Escalation only goes up; the way back is straight to tier 1 after
    /// `recover-after` healthy probes in a row.
    pub fn observe(&mut self, policy: &TierPolicy, breach: Option<&str>) -> Option<Transition> {
        let window = policy.window.max(1) as usize;
        self.recent.push_back(breach.is_some());
        while self.recent.len() > window {
            self.recent.pop_front();
        }
        let count = self.recent.iter().filter(|b| **b).count() as u32;
        match breach {
            Some(why) => {
                self.healthy_streak = 0;
                let wanted = if count >= policy.critical_failures {
                    3
                } else if count >= policy.failures {
                    2
                } else {
                    1
                };
                if wanted > self.tier {
                    let from = self.tier;
                    self.tier = wanted;
                    return Some(Transition {
                        from,
                        to: wanted,
                        reason: format!(
                            "{count} of the last {} probes breached (tier {wanted} at {}); last: {why}",
                            self.recent.len(),
                            if wanted == 3 {
                                policy.critical_failures
                            } else {
                                policy.failures
                            }
                        ),
                    });
                }
                None
            }
            None => {
                self.healthy_streak += 1;
                if self.tier > 1 && self.healthy_streak >= policy.recover_after {
                    let from = self.tier;
                    *self = Self::default();
                    return Some(Transition {
                        from,
                        to: 1,
                        reason: format!(
                            "recovered: {} healthy probes in a row",
                            policy.recover_after
                        ),
                    });
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn policy() -> TierPolicy {
        TierPolicy {
            failures: 2,
            window: 4,
            critical_failures: 4,
            recover_after: 2,
            ..TierPolicy::default()
        }
    }

    #[test]
    fn escalates_on_n_of_m_then_critical_then_recovers() {
        let p = policy();
        let mut s = TierState::default();
        assert_eq!(s.observe(&p, Some("refused")), None);
        assert_eq!(s.observe(&p, None), None);
        let t = s.observe(&p, Some("refused")).unwrap();
        assert_eq!((t.from, t.to), (1, 2));
        assert!(
            t.reason.starts_with("2 of the last 3 probes breached"),
            "{}",
            t.reason
        );
        assert!(t.reason.ends_with("last: refused"), "{}", t.reason);
        assert_eq!(
            s.observe(&p, Some("refused")),
            None,
            "still tier 2 at 3 of 4"
        );
        assert_eq!(
            s.observe(&p, Some("refused")),
            None,
            "the healthy probe is still in the window"
        );
        let t = s.observe(&p, Some("timeout")).unwrap();
        assert_eq!((t.from, t.to), (2, 3), "{t:?}");
        assert!(t.reason.starts_with("4 of the last 4"), "{}", t.reason);
        // One healthy probe is not enough, a breach resets the streak.
        assert_eq!(s.observe(&p, None), None);
        assert_eq!(s.observe(&p, Some("refused")), None);
        assert_eq!(s.observe(&p, None), None);
        let t = s.observe(&p, None).unwrap();
        assert_eq!((t.from, t.to), (3, 1));
        assert_eq!(t.reason, "recovered: 2 healthy probes in a row");
        assert_eq!(s.tier(), 1);
        // History was cleared: a single new breach does not escalate again.
        assert_eq!(s.observe(&p, Some("refused")), None);
    }

    #[test]
    fn escalated_interval_only_shortens() {
        let p = TierPolicy {
            escalated_interval: Duration::from_secs(10),
            ..policy()
        };
        let mut s = TierState::default();
        assert_eq!(
            s.interval(&p, Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        s.observe(&p, Some("x"));
        s.observe(&p, Some("x"));
        assert_eq!(s.tier(), 2);
        assert_eq!(
            s.interval(&p, Duration::from_secs(60)),
            Duration::from_secs(10)
        );
        assert_eq!(
            s.interval(&p, Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn latency_and_loss_thresholds_breach() {
        let mut run = crate::probe::Run::new(Duration::from_secs(1));
        run.facts.icmp = Some(Box::new(crate::probe::IcmpFacts {
            sent: 10,
            received: 7,
            rtts: vec![Duration::from_millis(1); 7],
            raw_socket: true,
        }));
        let outcome = run.finish(Ok(()));
        let p = TierPolicy {
            max_loss: 0.2,
            ..policy()
        };
        assert_eq!(breach(&p, &outcome).unwrap(), "30% loss (threshold 20%)");
        let p = TierPolicy {
            max_loss: 0.5,
            ..policy()
        };
        assert_eq!(breach(&p, &outcome), None);
        let mut slow = outcome.clone();
        slow.total = Duration::from_millis(900);
        let p = TierPolicy {
            max_latency: Duration::from_millis(500),
            max_loss: 1.0,
            ..policy()
        };
        assert_eq!(breach(&p, &slow).unwrap(), "took 900 ms (threshold 500 ms)");
    }
}
