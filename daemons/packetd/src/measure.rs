//! Per-session measurement of a STAMP Session-Sender: round-trip time (RFC 8762 §4: the
//! reflector's residence time t3 − t2 removed), loss, duplicates, reordering (RFC 4737 §4.1:
//! a packet is reordered when its sequence number is below the next expected one), jitter
//! (RFC 3550 §6.4.1 interarrival jitter, and RFC 5481 IPDV between consecutive sequence
//! numbers, both over the round-trip time so unsynchronised clocks cancel out), one-way delays
//! (only meaningful when both clocks are synchronised: flagged otherwise) and throughput.
//! Percentiles come from an HDR histogram (1 ns to 60 s, 3 significant digits).

use hdrhistogram::Histogram;

/// One reply as received: sequence number and the four STAMP timestamps in UTC ns.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// Session-Sender Sequence Number echoed by the reflector.
    pub seq: u32,
    /// t1: when the sender sent it (from the sender's own record).
    pub t1_ns: i128,
    /// t2: the reflector's Receive Timestamp.
    pub t2_ns: i128,
    /// t3: the reflector's (transmit) Timestamp.
    pub t3_ns: i128,
    /// t4: when the reply arrived.
    pub t4_ns: i128,
    /// S bit of the reflector's Error Estimate: its clock is synchronised.
    pub reflector_synced: bool,
    /// Reply length in bytes (UDP payload).
    pub bytes: usize,
}

/// The summary of a session so far.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Test packets sent.
    pub sent: u64,
    /// Distinct test packets answered.
    pub received: u64,
    /// Replies for a sequence number already answered.
    pub duplicates: u64,
    /// Sent but (so far) unanswered: `sent - received`.
    pub lost: u64,
    /// Replies that arrived with a sequence number below the next expected (RFC 4737).
    pub reordered: u64,
    /// Round-trip time: minimum, mean, maximum and percentiles (ns).
    pub rtt_min_ns: u64,
    /// Mean round-trip time (ns).
    pub rtt_mean_ns: u64,
    /// Maximum round-trip time (ns).
    pub rtt_max_ns: u64,
    /// Median round-trip time (ns).
    pub rtt_p50_ns: u64,
    /// 90th percentile round-trip time (ns).
    pub rtt_p90_ns: u64,
    /// 99th percentile round-trip time (ns).
    pub rtt_p99_ns: u64,
    /// RFC 3550 interarrival jitter over the round-trip time (ns).
    pub jitter_ns: u64,
    /// RFC 5481 IPDV: mean of |RTT(n) − RTT(n−1)| over consecutive sequence numbers (ns).
    pub ipdv_mean_abs_ns: u64,
    /// RFC 5481 IPDV: largest |RTT(n) − RTT(n−1)| (ns).
    pub ipdv_max_abs_ns: u64,
    /// Mean forward one-way delay t2 − t1 (ns; may be negative with unsynchronised clocks).
    pub owd_forward_mean_ns: i64,
    /// Mean backward one-way delay t4 − t3 (ns).
    pub owd_backward_mean_ns: i64,
    /// True only when the reflector (S bit of every reply) and this host (adjtimex) say their
    /// clocks are synchronised; otherwise the one-way delays are not to be trusted.
    pub owd_synchronized: bool,
    /// Reply bytes received per second of session so far.
    pub throughput_bps: u64,
    /// Packets per second actually sent: sent packets over the time from the first to the
    /// last send.
    pub achieved_pps: f64,
    /// Bits per second of IP packets (payload + UDP + IP header) actually sent, over the same
    /// time as `achieved_pps`.
    pub achieved_bps: u64,
    /// Packets the kernel refused to send (raw sessions; a STAMP session counts them as lost).
    pub send_errors: u64,
    /// How the packets were sent: `udp-socket` (STAMP sessions), `af-xdp` or `sendmmsg` (raw
    /// sessions).
    pub backend: String,
    /// Raw sessions: the AF_XDP mode and interface, or why AF_XDP was not used.
    pub backend_detail: String,
}

/// Sequence numbers remembered: a reply for a packet sent more than `WINDOW` packets ago is
/// no longer matched (it counts as lost), which bounds a session's memory whatever its length.
pub const WINDOW: u32 = 65_536;

#[derive(Clone, Copy, Default)]
struct Slot {
    seq: Option<u32>,
    t1_ns: i128,
    received: bool,
    rtt: Option<i128>,
}

/// Accumulates arrivals into [`Stats`].
pub struct Measurement {
    rtt: Histogram<u64>,
    slots: Vec<Slot>,
    sent: u64,
    received: u64,
    duplicates: u64,
    reordered: u64,
    next_expected: u32,
    last_rtt_by_arrival: Option<i128>,
    jitter: f64,
    ipdv_sum: i128,
    ipdv_n: i128,
    ipdv_max: i128,
    owd_fwd_sum: i128,
    owd_bwd_sum: i128,
    all_synced: bool,
    bytes: u64,
    first_t1: Option<i128>,
    last_t4: i128,
}

impl Default for Measurement {
    fn default() -> Self {
        Self::new()
    }
}

impl Measurement {
    /// An empty measurement.
    pub fn new() -> Self {
        Self {
            rtt: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .expect("constant histogram bounds are valid"),
            slots: vec![Slot::default(); WINDOW as usize],
            sent: 0,
            received: 0,
            duplicates: 0,
            reordered: 0,
            next_expected: 0,
            last_rtt_by_arrival: None,
            jitter: 0.0,
            ipdv_sum: 0,
            ipdv_n: 0,
            ipdv_max: 0,
            owd_fwd_sum: 0,
            owd_bwd_sum: 0,
            all_synced: true,
            bytes: 0,
            first_t1: None,
            last_t4: 0,
        }
    }

    /// Records that test packet `seq` (0, 1, 2, … in order) was sent at `t1_ns`.
    pub fn sent(&mut self, seq: u32, t1_ns: i128) {
        self.sent = self.sent.max(u64::from(seq) + 1);
        self.first_t1.get_or_insert(t1_ns);
        self.slots[(seq % WINDOW) as usize] = Slot {
            seq: Some(seq),
            t1_ns,
            received: false,
            rtt: None,
        };
    }

    fn slot(&self, seq: u32) -> Option<&Slot> {
        let s = &self.slots[(seq % WINDOW) as usize];
        (s.seq == Some(seq)).then_some(s)
    }

    /// When packet `seq` was sent, while it is still within the window.
    pub fn t1_of(&self, seq: u32) -> Option<i128> {
        self.slot(seq).map(|s| s.t1_ns)
    }

    /// Accounts one reply. Replies for sequence numbers never sent are ignored (returns false).
    pub fn arrival(&mut self, a: &Arrival) -> bool {
        let Some(slot) = self.slot(a.seq) else {
            return false; // never sent, or older than the window
        };
        if slot.received {
            self.duplicates += 1;
            return true;
        }
        self.received += 1;
        self.bytes += u64::try_from(a.bytes).unwrap_or(0);
        self.last_t4 = self.last_t4.max(a.t4_ns);
        // RFC 4737 §4.1.1: reordered if below the next expected sequence number.
        if a.seq < self.next_expected {
            self.reordered += 1;
        } else {
            self.next_expected = a.seq.saturating_add(1);
        }
        let residence = (a.t3_ns - a.t2_ns).max(0);
        let rtt = (a.t4_ns - a.t1_ns - residence).max(1);
        self.rtt
            .saturating_record(u64::try_from(rtt).unwrap_or(u64::MAX));
        // RFC 3550 §6.4.1: J += (|D| - J) / 16, D the change in transit time between arrivals.
        if let Some(prev) = self.last_rtt_by_arrival {
            let d = (rtt - prev).abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_rtt_by_arrival = Some(rtt);
        let idx = (a.seq % WINDOW) as usize;
        self.slots[idx].received = true;
        self.slots[idx].rtt = Some(rtt);
        // RFC 5481 IPDV for the pairs (seq-1, seq) and (seq, seq+1) this reply completes:
        // each pair is counted once, by whichever of its two replies arrives second.
        let neighbours = [a.seq.checked_sub(1), a.seq.checked_add(1)];
        for n in neighbours.into_iter().flatten() {
            if let Some(other) = self.slot(n).and_then(|s| s.rtt) {
                let d = (rtt - other).abs();
                self.ipdv_sum += d;
                self.ipdv_n += 1;
                self.ipdv_max = self.ipdv_max.max(d);
            }
        }
        self.owd_fwd_sum += a.t2_ns - a.t1_ns;
        self.owd_bwd_sum += a.t4_ns - a.t3_ns;
        self.all_synced &= a.reflector_synced;
        true
    }

    /// Distinct test packets answered so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The summary now; `local_synced` is this host's clock state (adjtimex).
    pub fn stats(&self, local_synced: bool) -> Stats {
        let q = |p: f64| {
            if self.rtt.is_empty() {
                0
            } else {
                self.rtt.value_at_quantile(p)
            }
        };
        let (ipdv_sum, ipdv_n, ipdv_max) = (self.ipdv_sum, self.ipdv_n, self.ipdv_max);
        let n = i128::from(self.received.max(1));
        let to_u = |v: i128| u64::try_from(v.max(0)).unwrap_or(u64::MAX);
        let to_i = |v: i128| i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX });
        let span = self
            .first_t1
            .map(|f| self.last_t4 - f)
            .filter(|s| *s > 0)
            .unwrap_or(0);
        Stats {
            sent: self.sent,
            received: self.received,
            duplicates: self.duplicates,
            lost: self.sent - self.received,
            reordered: self.reordered,
            rtt_min_ns: if self.rtt.is_empty() {
                0
            } else {
                self.rtt.min()
            },
            rtt_mean_ns: if self.rtt.is_empty() {
                0
            } else {
                self.rtt.mean() as u64
            },
            rtt_max_ns: if self.rtt.is_empty() {
                0
            } else {
                self.rtt.max()
            },
            rtt_p50_ns: q(0.5),
            rtt_p90_ns: q(0.9),
            rtt_p99_ns: q(0.99),
            jitter_ns: self.jitter as u64,
            ipdv_mean_abs_ns: if ipdv_n == 0 {
                0
            } else {
                to_u(ipdv_sum / ipdv_n)
            },
            ipdv_max_abs_ns: to_u(ipdv_max),
            owd_forward_mean_ns: if self.received == 0 {
                0
            } else {
                to_i(self.owd_fwd_sum / n)
            },
            owd_backward_mean_ns: if self.received == 0 {
                0
            } else {
                to_i(self.owd_bwd_sum / n)
            },
            owd_synchronized: local_synced && self.all_synced && self.received > 0,
            throughput_bps: if span == 0 {
                0
            } else {
                to_u(i128::from(self.bytes) * 8 * 1_000_000_000 / span)
            },
            ..Stats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(seq: u32, t1: i128, rtt: i128) -> Arrival {
        Arrival {
            seq,
            t1_ns: t1,
            t2_ns: t1 + rtt / 2,
            t3_ns: t1 + rtt / 2 + 1000,
            t4_ns: t1 + rtt + 1000,
            reflector_synced: false,
            bytes: 44,
        }
    }

    #[test]
    fn loss_duplicates_reordering_and_rtt() {
        let mut m = Measurement::new();
        for s in 0..10 {
            m.sent(s, i128::from(s) * 1_000_000);
        }
        // 3 lost (7, 8, 9), 2 swapped with 1, one duplicate of 4.
        for s in [0_u32, 2, 1, 3, 4, 4, 5, 6] {
            let rtt = if s == 6 { 3_000_000 } else { 1_000_000 };
            assert!(m.arrival(&arr(s, i128::from(s) * 1_000_000, rtt)));
        }
        assert!(!m.arrival(&arr(99, 0, 1)), "never sent");
        assert_eq!(m.t1_of(3), Some(3_000_000));
        let st = m.stats(true);
        assert_eq!((st.sent, st.received, st.lost), (10, 7, 3));
        assert_eq!((st.duplicates, st.reordered), (1, 1));
        assert!((999_000..=1_001_000).contains(&st.rtt_p50_ns), "{st:?}");
        assert!((2_990_000..=3_010_000).contains(&st.rtt_max_ns), "{st:?}");
        assert_eq!(st.ipdv_max_abs_ns, 2_000_000);
        assert!(!st.owd_synchronized, "reflector not synchronised");
        assert!(st.jitter_ns > 0);
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;

    #[test]
    fn memory_is_bounded_by_the_window() {
        let mut m = Measurement::new();
        let n = WINDOW + 10;
        for s in 0..n {
            m.sent(s, i128::from(s));
        }
        let a = |seq: u32| Arrival {
            seq,
            t1_ns: i128::from(seq),
            t2_ns: i128::from(seq) + 10,
            t3_ns: i128::from(seq) + 10,
            t4_ns: i128::from(seq) + 100,
            reflector_synced: true,
            bytes: 44,
        };
        assert!(!m.arrival(&a(0)), "slot reused: too old to match");
        assert!(m.arrival(&a(n - 1)));
        assert!(m.arrival(&a(n - 2)));
        let st = m.stats(true);
        assert_eq!((st.received, st.lost), (2, u64::from(n) - 2));
        assert!(st.owd_synchronized);
        assert_eq!(st.ipdv_max_abs_ns, 0);
        assert_eq!(m.slots.len(), WINDOW as usize);
    }
}
