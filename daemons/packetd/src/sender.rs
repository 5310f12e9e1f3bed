//! The STAMP Session-Sender (RFC 8762 §4.2.1, unauthenticated, RFC 8972 SSID): sends numbered
//! test packets from a UDP socket at a fixed rate, matches the reflector's replies by their
//! Session-Sender Sequence Number and feeds them to a [`Measurement`]. Any RFC 8762 reflector
//! answers these packets (packetd's own, XDP or userspace, or a third-party one).
//!
//! Sending is paced by a 1 ms tick that catches up to `rate × elapsed` (at most
//! [`MAX_BURST`] packets per tick); t1 is read just before each send, t4 just after each
//! receive, both from `CLOCK_REALTIME`. After the last packet the sender waits up to
//! [`SessionSpec::grace`] for late replies; what is still unanswered then is lost.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::measure::{Arrival, Measurement, Stats};
use crate::wire::{STAMP_LEN, ntp_bytes, ntp_to_unix_ns, utc_now_ns};

/// Most packets sent in one 1 ms tick when the sender has fallen behind.
pub const MAX_BURST: u64 = 1000;
/// Largest UDP payload a session may send (jumbo frames).
pub const MAX_PACKET_SIZE: u32 = 8972;

/// What a session sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// RFC 8762 STAMP test packets, replies matched and measured (this module).
    #[default]
    Stamp,
    /// The raw rate generator ([`crate::generator`]): numbered UDP payloads, not STAMP, sent
    /// at the rate; achieved rate and throughput measured, replies only counted.
    Raw,
}

impl Kind {
    /// The name used in the store and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stamp => "stamp",
            Self::Raw => "raw",
        }
    }

    /// The kind named `s` (unknown names are STAMP, the original and default kind).
    pub fn parse(s: &str) -> Self {
        if s == "raw" { Self::Raw } else { Self::Stamp }
    }

    /// Smallest UDP payload of this kind: the STAMP test packet, or the raw packet's 8-byte
    /// sequence number.
    pub fn min_packet_size(self) -> u32 {
        match self {
            Self::Stamp => 44,
            Self::Raw => 8,
        }
    }
}

/// What one session sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSpec {
    /// STAMP or raw.
    pub kind: Kind,
    /// The reflector's address and port.
    pub destination: SocketAddr,
    /// Source address to send from; `None` = chosen by routing.
    pub source: Option<IpAddr>,
    /// DSCP (0–63) of the test packets.
    pub dscp: u8,
    /// UDP payload bytes per packet ([`Kind::min_packet_size`] to [`MAX_PACKET_SIZE`]).
    pub packet_size: u32,
    /// Packets per second.
    pub rate_pps: u32,
    /// Packets to send; 0 = as many as `duration` allows.
    pub count: u64,
    /// How long to send; zero = until `count` packets are sent.
    pub duration: Duration,
    /// RFC 8972 Session-Sender Identifier.
    pub ssid: u16,
}

impl SessionSpec {
    /// The number of packets this session sends.
    pub fn total_packets(&self) -> u64 {
        let by_time =
            u64::try_from(self.duration.as_nanos() * u128::from(self.rate_pps) / 1_000_000_000)
                .unwrap_or(u64::MAX);
        match (self.count, self.duration.is_zero()) {
            (0, _) => by_time,
            (c, true) => c,
            (c, false) => c.min(by_time),
        }
    }

    /// How long to wait for late replies after the last packet.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(2)
    }

    /// Problems with this spec against the limits, each naming the field.
    pub fn problems(&self, max_pps: u32) -> Vec<String> {
        let mut out = Vec::new();
        if self.destination.port() == 0 {
            out.push("destination port must not be 0 (usually 862)".to_owned());
        }
        if self.destination.ip().is_unspecified() || self.destination.ip().is_multicast() {
            out.push(format!(
                "destination {} must be a unicast address",
                self.destination.ip()
            ));
        }
        if self.dscp > 63 {
            out.push(format!("dscp {} must be 0 to 63", self.dscp));
        }
        let min = self.kind.min_packet_size();
        if !(min..=MAX_PACKET_SIZE).contains(&self.packet_size) {
            out.push(format!(
                "packet_size {} must be {min} to {MAX_PACKET_SIZE} bytes for a {} session",
                self.packet_size,
                self.kind.as_str()
            ));
        }
        if self.rate_pps == 0 || self.rate_pps > max_pps {
            out.push(format!(
                "rate_pps {} must be 1 to {max_pps} ([sessions].max-pps)",
                self.rate_pps
            ));
        }
        if self.count == 0 && self.duration.is_zero() {
            out.push("set count or duration (both are 0)".to_owned());
        } else if self.total_packets() > u64::from(u32::MAX) {
            out.push(format!(
                "{} packets exceed the 32-bit STAMP sequence space; lower count, duration or rate_pps",
                self.total_packets()
            ));
        }
        if let Some(src) = self.source
            && src.is_ipv4() != self.destination.is_ipv4()
        {
            out.push(format!(
                "source {src} and destination {} are of different address families",
                self.destination.ip()
            ));
        }
        out
    }

    /// Bytes of one IP packet of this session: payload + UDP header + IP header.
    pub fn ip_packet_bytes(&self) -> u64 {
        let ip_header = if self.destination.is_ipv4() { 20 } else { 40 };
        u64::from(self.packet_size) + 8 + ip_header
    }

    /// The rate actually sent: `sent` packets whose sending took `span` (from the first to
    /// the last send) as packets/s and IP bits/s. One packet (or none) has no rate: 0.
    pub fn achieved(&self, sent: u64, span: Duration) -> (f64, u64) {
        let secs = span.as_secs_f64();
        if sent < 2 || secs <= 0.0 {
            return (0.0, 0);
        }
        // n packets over the n − 1 gaps between the first and the last send.
        let pps = (sent - 1) as f64 / secs;
        (pps, (pps * self.ip_packet_bytes() as f64 * 8.0) as u64)
    }
}

/// The test packet with sequence number `seq`, sent at `t1_ns`.
pub fn test_packet(seq: u32, t1_ns: u64, error_estimate: u16, ssid: u16, size: usize) -> Vec<u8> {
    let mut p = vec![0_u8; size.max(STAMP_LEN)];
    p[0..4].copy_from_slice(&seq.to_be_bytes());
    p[4..12].copy_from_slice(&ntp_bytes(t1_ns));
    p[12..14].copy_from_slice(&error_estimate.to_be_bytes());
    p[14..16].copy_from_slice(&ssid.to_be_bytes());
    p
}

async fn socket(spec: &SessionSpec) -> std::io::Result<UdpSocket> {
    let local = spec.source.unwrap_or(if spec.destination.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    });
    let sock = UdpSocket::bind(SocketAddr::new(local, 0)).await?;
    let tos = i32::from(spec.dscp) << 2;
    let r = if spec.destination.is_ipv4() {
        setsockopt(&sock, sockopt::Ipv4Tos, &tos)
    } else {
        setsockopt(&sock, sockopt::Ipv6TClass, &tos)
    };
    r.map_err(std::io::Error::from)?;
    sock.connect(spec.destination).await?;
    Ok(sock)
}

fn to_i128(ns: u64) -> i128 {
    i128::from(ns)
}

/// Runs a session to its end (or until `cancel`), publishing progress on `progress` about
/// every 100 ms, and returns the final statistics.
pub async fn run(
    spec: &SessionSpec,
    progress: &watch::Sender<Stats>,
    cancel: &CancellationToken,
) -> std::io::Result<Stats> {
    let sock = socket(spec).await?;
    let total = spec.total_packets();
    let size = usize::try_from(spec.packet_size).unwrap_or(STAMP_LEN);
    let mut m = Measurement::new();
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut report = tokio::time::interval(Duration::from_millis(100));
    let mut buf = vec![0_u8; 65_536];
    let mut sent: u64 = 0;
    let mut first_send: Option<std::time::Instant> = None;
    let mut last_send = std::time::Instant::now();
    let mut grace_until: Option<tokio::time::Instant> = None;
    let local_synced = || crate::clock::now_state().error_estimate & 0x8000 != 0;
    loop {
        if sent >= total && grace_until.is_none() {
            grace_until = Some(tokio::time::Instant::now() + spec.grace());
        }
        let grace_sleep = async {
            match grace_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            () = grace_sleep => break,
            _ = tick.tick(), if sent < total => {
                let due = u64::try_from(
                    start.elapsed().as_nanos() * u128::from(spec.rate_pps) / 1_000_000_000,
                )
                .unwrap_or(u64::MAX)
                .saturating_add(1)
                .min(total);
                let err = crate::clock::now_state().error_estimate;
                let mut burst = 0;
                while sent < due && burst < MAX_BURST {
                    let seq = u32::try_from(sent).unwrap_or(u32::MAX);
                    let t1 = utc_now_ns();
                    let pkt = test_packet(seq, t1, err, spec.ssid, size);
                    // A send error (e.g. no route yet, ICMP unreachable reported) still counts
                    // the packet as sent: it is then lost, as on the wire.
                    let _ = sock.send(&pkt).await;
                    m.sent(seq, to_i128(t1));
                    last_send = std::time::Instant::now();
                    first_send.get_or_insert(last_send);
                    sent += 1;
                    burst += 1;
                }
            }
            r = sock.recv(&mut buf) => {
                let t4 = to_i128(utc_now_ns());
                let Ok(n) = r else { continue };
                if n < STAMP_LEN {
                    continue;
                }
                let r = &buf[..n];
                let seq = u32::from_be_bytes([r[24], r[25], r[26], r[27]]);
                let Some(t1) = m.t1_of(seq) else {
                    continue; // not ours, or older than the measurement window
                };
                let ts = |o: usize| {
                    let mut b = [0_u8; 8];
                    b.copy_from_slice(&r[o..o + 8]);
                    ntp_to_unix_ns(&b)
                };
                m.arrival(&Arrival {
                    seq,
                    t1_ns: t1,
                    t2_ns: ts(16),
                    t3_ns: ts(4),
                    t4_ns: t4,
                    reflector_synced: r[12] & 0x80 != 0,
                    bytes: n,
                });
                if sent >= total && m.received() >= total {
                    // Everything answered: a short wait still catches duplicates in flight.
                    let soon = tokio::time::Instant::now() + Duration::from_millis(100);
                    grace_until = Some(grace_until.map_or(soon, |g| g.min(soon)));
                }
            }
            _ = report.tick() => {
                progress.send_replace(finish(m.stats(local_synced()), spec, first_send, last_send));
            }
        }
    }
    let stats = finish(m.stats(local_synced()), spec, first_send, last_send);
    progress.send_replace(stats.clone());
    Ok(stats)
}

/// The measurement's statistics with the achieved send rate and the backend filled in.
fn finish(
    mut stats: Stats,
    spec: &SessionSpec,
    first: Option<std::time::Instant>,
    last: std::time::Instant,
) -> Stats {
    let span = first.map_or(Duration::ZERO, |f| last.saturating_duration_since(f));
    (stats.achieved_pps, stats.achieved_bps) = spec.achieved(stats.sent, span);
    "udp-socket".clone_into(&mut stats.backend);
    stats
}
