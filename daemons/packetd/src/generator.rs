//! The raw rate generator: a session of plain UDP packets (not STAMP) sent at a fixed rate.
//! Each payload starts with the packet's sequence number (big-endian `u64`, from 0) and is zero
//! after it. The result is what was actually sent: packets and IP bits per second over the
//! time from the first to the last send, and the packets the kernel refused (`send_errors`).
//! Datagrams coming back to the session's UDP socket (e.g. from a UDP echo) are counted, not
//! matched.
//!
//! Two transmit paths (the `backend` of the result; `[generator] backend` chooses):
//! - `af-xdp` ([`crate::afxdp`]): frames built once into the UMEM of an AF_XDP socket on the
//!   egress interface (queue `[generator] queue`), only the sequence number and the UDP
//!   checksum rewritten per packet; zero-copy where the driver allows, copy mode otherwise.
//!   Used when the route leaves by an Ethernet interface, the next hop's MAC address is known
//!   (or resolves within a second) and the kernel grants the socket (`CAP_NET_RAW`).
//! - `sendmmsg`: one connected UDP socket, up to [`BATCH`] packets per `sendmmsg(2)` call.
//!   `auto` (the default) falls back to it, logging why AF_XDP is not used and reporting the
//!   reason in `backend_detail`; `af-xdp` fails the session instead.
//!
//! Both send from the address and port of the same UDP socket (bound, connected to the
//! destination): replies are counted on it either way (an AF_XDP socket that only transmits
//! receives nothing; the kernel's stack delivers the replies to the UDP socket).
//!
//! Pacing (both paths): the thread sends whatever `rate × elapsed` says is due (in batches),
//! then sleeps until the next packet is due when that is more than [`SLEEP_ABOVE`] away and
//! yields the CPU otherwise; a sender that falls behind catches up in batches. A session with a
//! duration sends the packets due within it (late by at most one batch at its end, it sends the
//! rest then) and ends when it is over even if the rate was not reached. It runs on a blocking
//! thread of its own (tokio's `spawn_blocking`) and checks for cancellation between batches.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::afxdp;
use crate::config::{Backend, GeneratorSection};
use crate::measure::Stats;
use crate::sender::SessionSpec;

/// Most packets one `sendmmsg` call sends.
pub const BATCH: usize = 64;
/// When the next packet is due further away than this, the generator sleeps; closer, it yields.
pub const SLEEP_ABOVE: Duration = Duration::from_micros(200);
/// How long replies are still counted after the last packet.
pub const GRACE: Duration = Duration::from_millis(200);
/// How often the AF_XDP queues are scanned again when all were busy (a queue is free again a
/// moment after the session holding it closed its socket).
const BUSY_RESCANS: u32 = 10;
/// The wait before each of those scans.
const BUSY_RESCAN_WAIT: Duration = Duration::from_millis(100);
/// Socket send buffer asked for (the kernel caps it at `net.core.wmem_max`).
const SNDBUF: usize = 4 << 20;

fn socket(spec: &SessionSpec) -> io::Result<Socket> {
    let dest = spec.destination;
    let sock = Socket::new(Domain::for_address(dest), Type::DGRAM, Some(Protocol::UDP))?;
    let local = spec.source.unwrap_or(if dest.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    });
    sock.bind(&SocketAddr::new(local, 0).into())?;
    let tos = i32::from(spec.dscp) << 2;
    if dest.is_ipv4() {
        setsockopt(&sock, sockopt::Ipv4Tos, &tos)
    } else {
        setsockopt(&sock, sockopt::Ipv6TClass, &tos)
    }
    .map_err(io::Error::from)?;
    // A smaller buffer than asked for only means earlier back-pressure.
    let _ = sock.set_send_buffer_size(SNDBUF);
    sock.connect(&dest.into())?;
    Ok(sock)
}

/// Counters of a running generator.
struct Run<'a> {
    spec: &'a SessionSpec,
    start: Instant,
    sent: u64,
    send_errors: u64,
    received: u64,
    received_bytes: u64,
    first_send: Option<Instant>,
    last_send: Instant,
    backend: &'static str,
    backend_detail: String,
}

/// How a session's packets leave.
enum Path {
    /// `sendmmsg` on the session's UDP socket, from these buffers.
    Socket(Vec<Vec<u8>>),
    /// An AF_XDP socket.
    AfXdp(Box<afxdp::Tx>),
}

impl Path {
    /// Most packets handed to the kernel at once.
    fn batch(&self) -> usize {
        match self {
            Self::Socket(_) => BATCH,
            Self::AfXdp(_) => afxdp::BATCH,
        }
    }
}

impl<'a> Run<'a> {
    /// A session starting now, nothing sent yet.
    fn new(spec: &'a SessionSpec, backend: &'static str, backend_detail: String) -> Self {
        Self {
            spec,
            start: Instant::now(),
            sent: 0,
            send_errors: 0,
            received: 0,
            received_bytes: 0,
            first_send: None,
            last_send: Instant::now(),
            backend,
            backend_detail,
        }
    }

    /// Sends up to `want` packets numbered from `first` on `path`; returns how many sequence
    /// numbers were used (0 when an AF_XDP socket has every frame in flight).
    fn send_on(
        &mut self,
        path: &mut Path,
        sock: &Socket,
        first: u64,
        want: usize,
    ) -> io::Result<u64> {
        match path {
            Path::Socket(bufs) => Ok(self.send(sock, bufs, first, want)),
            Path::AfXdp(tx) => {
                let n = tx.send(first, want)?;
                if n > 0 {
                    self.last_send = Instant::now();
                    self.first_send.get_or_insert(self.last_send);
                }
                self.sent = tx.sent();
                self.send_errors = tx.dropped();
                Ok(n as u64)
            }
        }
    }

    /// Sends up to `want` packets numbered from `first` and accounts for them; returns how
    /// many sequence numbers were used: those sent, or the one a refused send (no route, a
    /// full device queue) skips.
    fn send(&mut self, sock: &Socket, bufs: &mut [Vec<u8>], first: u64, want: usize) -> u64 {
        let mut sent = send_batch(sock, bufs, first, want);
        if sent
            .as_ref()
            .is_err_and(|e| e.raw_os_error() == Some(libc::ECONNREFUSED))
        {
            // An ICMP port unreachable for an earlier packet (a destination with nothing
            // listening), reported once by the connected socket instead of sending this batch;
            // reporting it cleared it, so the batch goes now. Replies are not required.
            sent = send_batch(sock, bufs, first, want);
        }
        match sent {
            Ok(n) if n > 0 => {
                self.last_send = Instant::now();
                self.first_send.get_or_insert(self.last_send);
                self.sent += n as u64;
                n as u64
            }
            Ok(_) | Err(_) => {
                self.send_errors += 1;
                1
            }
        }
    }

    fn stats(&self) -> Stats {
        let span = self.first_send.map_or(Duration::ZERO, |f| {
            self.last_send.saturating_duration_since(f)
        });
        let (achieved_pps, achieved_bps) = self.spec.achieved(self.sent, span);
        let elapsed = self.start.elapsed().as_secs_f64();
        Stats {
            sent: self.sent,
            received: self.received,
            send_errors: self.send_errors,
            throughput_bps: if elapsed > 0.0 {
                (self.received_bytes as f64 * 8.0 / elapsed) as u64
            } else {
                0
            },
            achieved_pps,
            achieved_bps,
            backend: self.backend.to_owned(),
            backend_detail: self.backend_detail.clone(),
            ..Stats::default()
        }
    }
}

/// Counts what came back to the socket, without blocking (at most 256 datagrams per call).
fn drain(sock: &Socket, buf: &mut [u8], run: &mut Run<'_>) {
    for _ in 0..256 {
        match nix::sys::socket::recv(
            sock.as_raw_fd(),
            buf,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(n) => {
                run.received += 1;
                run.received_bytes += n as u64;
            }
            Err(_) => return,
        }
    }
}

/// Sends `count` packets (numbered from `first`) with one `sendmmsg`; returns how many the
/// kernel took, or the error of the first one.
fn send_batch(sock: &Socket, bufs: &mut [Vec<u8>], first: u64, count: usize) -> io::Result<usize> {
    let count = count.min(bufs.len());
    let mut iovs: Vec<libc::iovec> = Vec::with_capacity(count);
    for (i, b) in bufs.iter_mut().take(count).enumerate() {
        b[..8].copy_from_slice(&(first + i as u64).to_be_bytes());
        iovs.push(libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        });
    }
    let mut hdrs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is a plain C struct for which all-zero bytes are a valid value
            // (no name, no control data, no flags).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = std::ptr::from_mut(iov);
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let n = libc::c_uint::try_from(hdrs.len()).unwrap_or(0);
    // SAFETY: `hdrs` holds `n` initialised headers, each pointing at one iovec of `iovs`, which
    // points into a buffer of `bufs`; all three outlive the call and are not moved during it.
    let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), n, 0) };
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

/// Chooses the transmit path for `spec` as `options` says; returns it with its backend name and
/// the detail (AF_XDP's mode and interface, or why AF_XDP is not used).
fn choose(
    spec: &SessionSpec,
    options: &GeneratorSection,
    sock: &Socket,
) -> io::Result<(Path, &'static str, String)> {
    let size = usize::try_from(spec.packet_size).unwrap_or(8).max(8);
    let socket_path = || Path::Socket(vec![vec![0_u8; size]; BATCH]);
    if options.backend == Backend::Socket {
        return Ok((
            socket_path(),
            "sendmmsg",
            "[generator] backend = \"socket\"".to_owned(),
        ));
    }
    match open_af_xdp(spec, options, sock, size) {
        Ok((tx, plan)) => {
            let detail = format!(
                "{} mode on {} queue {}, next hop {}",
                if tx.zero_copy() { "zero-copy" } else { "copy" },
                plan.ifname,
                tx.queue(),
                plan.next_hop
            );
            crate::events::generator_backend("af-xdp", &detail);
            Ok((Path::AfXdp(Box::new(tx)), "af-xdp", detail))
        }
        Err(why) if options.backend == Backend::AfXdp => Err(io::Error::other(format!(
            "AF_XDP is required ([generator] backend = \"af-xdp\") but cannot be used: {why}"
        ))),
        Err(why) => {
            let detail = format!("AF_XDP not used: {why}");
            crate::events::generator_fallback(&spec.destination, &why);
            Ok((socket_path(), "sendmmsg", detail))
        }
    }
}

fn open_af_xdp(
    spec: &SessionSpec,
    options: &GeneratorSection,
    sock: &Socket,
    size: usize,
) -> Result<(afxdp::Tx, afxdp::Plan), afxdp::Unavailable> {
    let local = sock
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| afxdp::Unavailable("the UDP socket has no local address".to_owned()))?;
    let ip_bytes = usize::try_from(spec.ip_packet_bytes()).unwrap_or(usize::MAX);
    let plan = afxdp::plan(local, spec.destination, ip_bytes)?;
    let template = afxdp::Template::new(&plan, spec.dscp, size);
    // One AF_XDP socket per queue: a queue another session holds is busy (EBUSY), the next one
    // is tried, up to the last queue the interface has (an error past it). When every queue
    // was busy, the scan is repeated a few times: a session that has just ended gives its
    // queue back a moment after its socket is closed (the kernel releases an AF_XDP socket's
    // UMEM in deferred work), and a session started right after it should not fall back.
    let queue = options.queue;
    let mut q = queue;
    let mut rescans = 0;
    loop {
        match afxdp::Tx::open(&plan, q, template.clone(), options.zero_copy) {
            Ok(tx) => return Ok((tx, plan)),
            Err(e) if afxdp::os_error(&e) == Some(libc::EBUSY) && q < queue.saturating_add(63) => {
                q += 1;
            }
            Err(_) if q > queue && rescans < BUSY_RESCANS => {
                rescans += 1;
                std::thread::sleep(BUSY_RESCAN_WAIT);
                q = queue;
            }
            Err(e) => {
                let busy = if q > queue {
                    format!(
                        " (queues {queue} to {} are busy with other sessions)",
                        q - 1
                    )
                } else {
                    String::new()
                };
                return Err(afxdp::Unavailable(format!(
                    "the kernel refused an AF_XDP socket on {} queue {q}{busy}: {e}",
                    plan.ifname
                )));
            }
        }
    }
}

/// Runs a raw session to its end (or until `cancel`) on the calling thread, publishing
/// progress on `progress` about every 100 ms, and returns the final statistics.
///
/// # Errors
/// The UDP socket cannot be opened, AF_XDP is required by `options` but cannot be used, or the
/// AF_XDP transmit path fails or stalls (interface down).
pub fn run(
    spec: &SessionSpec,
    options: &GeneratorSection,
    progress: &watch::Sender<Stats>,
    cancel: &CancellationToken,
) -> io::Result<Stats> {
    let sock = socket(spec)?;
    let (mut path, backend, backend_detail) = choose(spec, options, &sock)?;
    let batch = path.batch();
    let total = spec.total_packets();
    let mut rbuf = vec![0_u8; 65_536];
    let rate = u128::from(spec.rate_pps.max(1));
    let mut run = Run::new(spec, backend, backend_detail);
    progress.send_replace(run.stats());
    // Packets handed to the kernel or refused by it: the next sequence number.
    let mut attempted: u64 = 0;
    let mut next_report = run.start + Duration::from_millis(100);
    // A duration bounds the time as well as the count: a generator slower than its rate
    // stops at the end of the duration with fewer packets (its achieved rate says so).
    let stop_at = (!spec.duration.is_zero()).then(|| run.start + spec.duration);
    while attempted < total && !cancel.is_cancelled() && stop_at.is_none_or(|t| Instant::now() < t)
    {
        let elapsed = run.start.elapsed().as_nanos();
        let due = u64::try_from(elapsed * rate / 1_000_000_000)
            .unwrap_or(u64::MAX)
            .saturating_add(1)
            .min(total);
        if attempted < due {
            let want = usize::try_from(due - attempted).unwrap_or(batch).min(batch);
            let used = run.send_on(&mut path, &sock, attempted, want)?;
            attempted += used;
            if used == 0 {
                // Every AF_XDP frame is in flight: let the kernel catch up.
                std::thread::yield_now();
            }
            continue;
        }
        drain(&sock, &mut rbuf, &mut run);
        let now = Instant::now();
        if now >= next_report {
            progress.send_replace(run.stats());
            next_report = now + Duration::from_millis(100);
        }
        let next_due_ns = u128::from(attempted) * 1_000_000_000 / rate;
        let wait = Duration::from_nanos(
            u64::try_from(next_due_ns.saturating_sub(run.start.elapsed().as_nanos()))
                .unwrap_or(u64::MAX),
        );
        if wait > SLEEP_ABOVE {
            std::thread::sleep((wait - SLEEP_ABOVE / 2).min(Duration::from_millis(10)));
        } else {
            std::thread::yield_now();
        }
    }
    // The duration is over: packets due before its end that a late wake-up left unsent (a
    // sender behind by at most one batch) still go, so a generator that keeps up sends
    // exactly rate × duration. One further behind stops here (its achieved rate says so).
    if let Some(stop) = stop_at {
        let owed = u64::try_from((spec.duration.as_nanos() * rate).div_ceil(1_000_000_000))
            .unwrap_or(u64::MAX)
            .min(total);
        let mut rounds = 0;
        while Instant::now() >= stop
            && !cancel.is_cancelled()
            && attempted < owed
            && owed - attempted <= batch as u64
            && rounds < 1000
        {
            let want = usize::try_from(owed - attempted).unwrap_or(batch);
            attempted += run.send_on(&mut path, &sock, attempted, want)?;
            rounds += 1;
        }
    }
    if let Path::AfXdp(tx) = &mut path {
        // What the kernel never sent back within a second counts as refused.
        let lost = tx.flush();
        run.sent = tx.sent();
        run.send_errors = tx.dropped() + lost;
    }
    let grace_end = Instant::now() + GRACE;
    while Instant::now() < grace_end && !cancel.is_cancelled() {
        drain(&sock, &mut rbuf, &mut run);
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = run.stats();
    progress.send_replace(stats.clone());
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sender::Kind;

    fn spec(dest: SocketAddr, rate_pps: u32, count: u64) -> SessionSpec {
        SessionSpec {
            kind: Kind::Raw,
            destination: dest,
            source: None,
            dscp: 10,
            packet_size: 18,
            rate_pps,
            count,
            duration: Duration::ZERO,
            ssid: 0,
        }
    }

    #[test]
    fn sends_numbered_payloads_at_the_rate_on_loopback() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        rx.set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("{e}"));
        let dest = rx.local_addr().unwrap_or_else(|e| panic!("{e}"));
        // The receiver reads while the generator sends (a socket buffer holds fewer than 500).
        let reader = std::thread::spawn(move || {
            let mut buf = [0_u8; 64];
            let mut got = Vec::new();
            while let Ok(n) = rx.recv(&mut buf) {
                got.push(buf[..n].to_vec());
                if got.len() == 500 {
                    break;
                }
            }
            got
        });
        let (tx, _rx) = watch::channel(Stats::default());
        let s = spec(dest, 2000, 500);
        let t = Instant::now();
        let stats = run(
            &s,
            &GeneratorSection::default(),
            &tx,
            &CancellationToken::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let took = t.elapsed();
        let got = reader.join().unwrap_or_default();
        assert_eq!((stats.sent, stats.send_errors), (500, 0));
        // Loopback has no AF_XDP transmit: the socket path, saying why.
        assert_eq!(stats.backend, "sendmmsg");
        assert!(
            stats
                .backend_detail
                .starts_with("AF_XDP not used: 127.0.0.1 is a local address"),
            "{}",
            stats.backend_detail
        );
        // 500 packets at 2000/s: 249.5 ms of sending, plus the 200 ms grace.
        assert!(took >= Duration::from_millis(440), "{took:?}");
        assert!(
            (1800.0..=2200.0).contains(&stats.achieved_pps),
            "{}",
            stats.achieved_pps
        );
        // (18 + 8 + 20) bytes = 368 bits per packet.
        let bps = stats.achieved_bps as f64 / stats.achieved_pps;
        assert!((367.0..=369.0).contains(&bps), "{bps}");
        assert_eq!(got.len(), 500);
        for (want, p) in (0..500_u64).zip(&got) {
            assert_eq!(p.len(), 18);
            assert_eq!(p[..8], want.to_be_bytes());
            assert!(p[8..18].iter().all(|b| *b == 0));
        }
    }

    #[test]
    fn an_icmp_port_unreachable_for_an_earlier_packet_refuses_nothing() {
        // A port nobody listens on: the first packet draws an ICMP port unreachable, which the
        // connected socket reports on its next send.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let dest = closed.local_addr().unwrap_or_else(|e| panic!("{e}"));
        drop(closed);
        let s = spec(dest, 1000, 4);
        let sock = socket(&s).unwrap_or_else(|e| panic!("{e}"));
        let mut run = Run::new(&s, "sendmmsg", String::new());
        let mut bufs = vec![vec![0_u8; 18]; BATCH];
        // Waits until the socket holds an error, without taking it (SO_ERROR would clear it).
        let wait_for_error = |sock: &Socket| {
            let mut fd = libc::pollfd {
                fd: sock.as_raw_fd(),
                events: 0,
                revents: 0,
            };
            // SAFETY: one pollfd that outlives the call.
            let r = unsafe { libc::poll(&raw mut fd, 1, 2000) };
            assert!(
                r == 1 && fd.revents & libc::POLLERR != 0,
                "no ICMP error arrived"
            );
        };
        assert_eq!(run.send(&sock, &mut bufs, 0, 1), 1);
        wait_for_error(&sock);
        // What a plain send makes of it: the batch is not sent.
        let refused = send_batch(&sock, &mut bufs, 1, 1).map_err(|e| e.raw_os_error());
        assert_eq!(refused, Err(Some(libc::ECONNREFUSED)));
        assert_eq!(run.send(&sock, &mut bufs, 1, 1), 1);
        wait_for_error(&sock);
        assert_eq!(run.send(&sock, &mut bufs, 2, 1), 1);
        assert_eq!(run.send(&sock, &mut bufs, 3, 1), 1);
        assert_eq!((run.sent, run.send_errors), (4, 0));
    }

    #[test]
    fn a_duration_ends_on_time_even_when_the_rate_is_out_of_reach() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let dest = rx.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (tx, _rx) = watch::channel(Stats::default());
        let mut s = spec(dest, 2_000_000_000, 0);
        s.duration = Duration::from_millis(300);
        let t = Instant::now();
        let stats = run(
            &s,
            &GeneratorSection::default(),
            &tx,
            &CancellationToken::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // 300 ms of sending and the 200 ms grace; 600 million packets were never possible.
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        assert!(
            stats.sent > 0 && stats.sent < s.total_packets(),
            "{stats:?}"
        );
    }

    #[test]
    fn a_required_af_xdp_that_cannot_be_used_fails_the_session_naming_why() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let dest = rx.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (tx, _rx) = watch::channel(Stats::default());
        let options = GeneratorSection {
            backend: Backend::AfXdp,
            ..GeneratorSection::default()
        };
        let err = run(
            &spec(dest, 1000, 10),
            &options,
            &tx,
            &CancellationToken::new(),
        )
        .err()
        .unwrap_or_else(|| panic!("a loopback session ran with backend = af-xdp"));
        let msg = err.to_string();
        assert!(
            msg.starts_with("AF_XDP is required ([generator] backend = \"af-xdp\")")
                && msg.contains("local address"),
            "{msg}"
        );
        let options = GeneratorSection {
            backend: Backend::Socket,
            ..GeneratorSection::default()
        };
        let stats = run(
            &spec(dest, 1000, 10),
            &options,
            &tx,
            &CancellationToken::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((stats.sent, stats.backend.as_str()), (10, "sendmmsg"));
    }

    #[test]
    fn stops_when_cancelled() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let dest = rx.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let (tx, _rx) = watch::channel(Stats::default());
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            c.cancel();
        });
        let t = Instant::now();
        let stats = run(
            &spec(dest, 100, 100_000),
            &GeneratorSection::default(),
            &tx,
            &cancel,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let _ = stopper.join();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!((5..=20).contains(&stats.sent), "{}", stats.sent);
    }
}
