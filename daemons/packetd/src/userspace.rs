//! The userspace reflector: the XDP program's wire behaviour ([`crate::wire`]) on ordinary UDP
//! sockets, for interfaces where XDP cannot attach (`mode = "userspace"`, or `auto` after both
//! native and generic XDP failed). Replies are identical to the XDP ones apart from the
//! timestamps (and the IPv4 Identification, which the kernel stack chooses): same payload rules,
//! source address and port = the request's destination, TTL/hop limit 255 (STAMP) or 64 (echo),
//! the request's TOS / traffic class copied, Ses-Sender TTL from `IP_RECVTTL` /
//! `IPV6_RECVHOPLIMIT`, Receive Timestamp from the kernel's `SO_TIMESTAMPNS`, and the same source
//! allowlist and per-source rate bound.
//!
//! One thread per socket (STAMP and echo, IPv4 and IPv6), each polling a stop flag between
//! reads; dropping [`UserspaceReflector`] stops and joins them.

use std::collections::{BTreeSet, HashMap};
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg, setsockopt,
    sockopt,
};

use crate::allow::Allowlist;
use crate::wire::{ECHO_TTL, STAMP_TTL, reflect_stamp_in_place, utc_now_ns};
use crate::xdp::Counters;

/// Why the userspace reflector could not start.
#[derive(Debug, thiserror::Error)]
pub enum UserspaceError {
    /// A socket could not be bound (port in use, or CAP_NET_BIND_SERVICE missing for port < 1024).
    #[error("cannot bind the userspace reflector to {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A socket option could not be set.
    #[error("cannot set {option} on the userspace reflector socket")]
    Option {
        /// The option.
        option: &'static str,
        /// Why.
        #[source]
        source: nix::Error,
    },
}

/// Settings of the userspace reflector.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Interfaces whose packets are answered (by ingress interface index); one that does not
    /// exist yet is answered once [`UserspaceReflector::set_interfaces`] finds it.
    pub interfaces: Vec<String>,
    /// STAMP port (never 0).
    pub stamp_port: u16,
    /// Echo port; 0 = off.
    pub echo_port: u16,
    /// Replies per source per second; 0 = unbounded.
    pub max_pps_per_source: u32,
}

#[derive(Default)]
struct AtomicCounters {
    reflected: AtomicU64,
    echoed: AtomicU64,
    malformed: AtomicU64,
    passed: AtomicU64,
    denied: AtomicU64,
    rate_limited: AtomicU64,
}

struct Shared {
    stop: AtomicBool,
    ifindexes: RwLock<BTreeSet<u32>>,
    allow: Mutex<Allowlist>,
    max_pps: AtomicU32,
    rate: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    counters: AtomicCounters,
}

impl Shared {
    fn within_rate(&self, src: IpAddr) -> bool {
        let max_pps = self.max_pps.load(Ordering::Relaxed);
        if max_pps == 0 {
            return true;
        }
        let now = Instant::now();
        let mut map = self.rate.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= 16_384 {
            map.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(1));
        }
        let e = map.entry(src).or_insert((now, 0));
        if now.duration_since(e.0) >= Duration::from_secs(1) {
            *e = (now, 0);
        }
        if e.1 >= max_pps {
            return false;
        }
        e.1 += 1;
        true
    }
}

/// The running userspace reflector; dropping it stops its threads.
pub struct UserspaceReflector {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Service {
    Stamp,
    Echo,
}

fn opt<T>(option: &'static str, r: nix::Result<T>) -> Result<T, UserspaceError> {
    r.map_err(|source| UserspaceError::Option { option, source })
}

fn bind(addr: SocketAddr, service: Service) -> Result<UdpSocket, UserspaceError> {
    let sock = match addr {
        SocketAddr::V4(_) => socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        ),
        SocketAddr::V6(_) => socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        ),
    }
    .map_err(|source| UserspaceError::Bind { addr, source })?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)
            .map_err(|source| UserspaceError::Bind { addr, source })?;
    }
    sock.bind(&addr.into())
        .map_err(|source| UserspaceError::Bind { addr, source })?;
    let sock: UdpSocket = sock.into();
    let ttl = i32::from(if service == Service::Stamp {
        STAMP_TTL
    } else {
        ECHO_TTL
    });
    if addr.is_ipv4() {
        opt("IP_TTL", setsockopt(&sock, sockopt::Ipv4Ttl, &ttl))?;
        opt(
            "IP_PKTINFO",
            setsockopt(&sock, sockopt::Ipv4PacketInfo, &true),
        )?;
        opt("IP_RECVTTL", setsockopt(&sock, sockopt::Ipv4RecvTtl, &true))?;
        opt("IP_RECVTOS", setsockopt(&sock, sockopt::IpRecvTos, &true))?;
    } else {
        opt(
            "IPV6_UNICAST_HOPS",
            setsockopt(&sock, sockopt::Ipv6Ttl, &ttl),
        )?;
        opt(
            "IPV6_RECVPKTINFO",
            setsockopt(&sock, sockopt::Ipv6RecvPacketInfo, &true),
        )?;
        opt(
            "IPV6_RECVHOPLIMIT",
            setsockopt(&sock, sockopt::Ipv6RecvHopLimit, &true),
        )?;
        opt(
            "IPV6_RECVTCLASS",
            setsockopt(&sock, sockopt::Ipv6RecvTClass, &true),
        )?;
    }
    opt(
        "SO_TIMESTAMPNS",
        setsockopt(&sock, sockopt::ReceiveTimestampns, &true),
    )?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|source| UserspaceError::Bind { addr, source })?;
    Ok(sock)
}

impl UserspaceReflector {
    /// Binds the sockets and starts answering packets that arrive on `settings.interfaces`
    /// from sources in `allow`.
    pub fn start(settings: &Settings, allow: Allowlist) -> Result<Self, UserspaceError> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            ifindexes: RwLock::new(indexes(&settings.interfaces)),
            allow: Mutex::new(allow),
            max_pps: AtomicU32::new(settings.max_pps_per_source),
            rate: Mutex::new(HashMap::new()),
            counters: AtomicCounters::default(),
        });
        let mut sockets = Vec::new();
        let mut services = vec![(settings.stamp_port, Service::Stamp)];
        if settings.echo_port != 0 {
            services.push((settings.echo_port, Service::Echo));
        }
        for (port, service) in services {
            for ip in [
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ] {
                sockets.push((bind(SocketAddr::new(ip, port), service)?, service));
            }
        }
        let threads = sockets
            .into_iter()
            .map(|(sock, service)| {
                let shared = shared.clone();
                std::thread::spawn(move || serve(&sock, service, &shared))
            })
            .collect();
        Ok(Self { shared, threads })
    }

    /// Answers the interfaces named `names` from now on, looking their indexes up again (call
    /// it when interfaces appear, disappear or are re-created: a name that does not exist is
    /// skipped until the next call).
    pub fn set_interfaces(&self, names: &[String]) {
        *self
            .shared
            .ifindexes
            .write()
            .unwrap_or_else(PoisonError::into_inner) = indexes(names);
    }

    /// Replaces the allowlist (takes effect for the next packet).
    pub fn set_allowlist(&self, allow: Allowlist) {
        *self
            .shared
            .allow
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = allow;
    }

    /// Changes the per-source bound (replies per second; 0 = none).
    pub fn set_max_pps_per_source(&self, pps: u32) {
        self.shared.max_pps.store(pps, Ordering::Relaxed);
    }

    /// The counters since start.
    pub fn counters(&self) -> Counters {
        let c = &self.shared.counters;
        Counters {
            reflected: c.reflected.load(Ordering::Relaxed),
            echoed: c.echoed.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            passed: c.passed.load(Ordering::Relaxed),
            denied: c.denied.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
        }
    }
}

impl Drop for UserspaceReflector {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The indexes of the interfaces in `names` that exist now.
fn indexes(names: &[String]) -> BTreeSet<u32> {
    names
        .iter()
        .filter_map(|n| crate::xdp::if_index(n))
        .collect()
}

/// What one received datagram carried besides its payload.
#[derive(Default)]
struct RxMeta {
    ttl: Option<u8>,
    tos: u8,
    rx_ns: Option<u64>,
    ifindex: u32,
    dst: Option<IpAddr>,
}

fn serve(sock: &UdpSocket, service: Service, shared: &Shared) {
    let fd = sock.as_raw_fd();
    let mut buf = vec![0_u8; 65_536];
    let mut cmsg = nix::cmsg_space!(
        libc::in6_pktinfo,
        libc::c_int,
        libc::c_int,
        libc::c_int,
        libc::timespec
    );
    let c = &shared.counters;
    while !shared.stop.load(Ordering::Relaxed) {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let Ok(msg) = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
        else {
            continue; // timeout (checks the stop flag) or a transient error
        };
        let n = msg.bytes;
        let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
        let Some(src) = msg.address.as_ref().and_then(to_socket_addr) else {
            continue;
        };
        let mut meta = RxMeta::default();
        if let Ok(cmsgs) = msg.cmsgs() {
            for m in cmsgs {
                match m {
                    ControlMessageOwned::Ipv4Ttl(t) => meta.ttl = u8::try_from(t).ok(),
                    ControlMessageOwned::Ipv6HopLimit(t) => meta.ttl = u8::try_from(t).ok(),
                    ControlMessageOwned::Ipv4Tos(t) => meta.tos = t,
                    ControlMessageOwned::Ipv6TClass(t) => meta.tos = u8::try_from(t).unwrap_or(0),
                    ControlMessageOwned::ScmTimestampns(ts) => {
                        meta.rx_ns = u64::try_from(ts.tv_sec())
                            .ok()
                            .zip(u64::try_from(ts.tv_nsec()).ok())
                            .map(|(s, ns)| s * 1_000_000_000 + ns);
                    }
                    ControlMessageOwned::Ipv4PacketInfo(pi) => {
                        meta.ifindex = u32::try_from(pi.ipi_ifindex).unwrap_or(0);
                        meta.dst =
                            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(pi.ipi_addr.s_addr))));
                    }
                    ControlMessageOwned::Ipv6PacketInfo(pi) => {
                        meta.ifindex = pi.ipi6_ifindex;
                        meta.dst = Some(IpAddr::V6(Ipv6Addr::from(pi.ipi6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
        }
        let Some(dst) = meta.dst else { continue };
        let served = shared
            .ifindexes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&meta.ifindex);
        if !served
            || dst.is_multicast()
            || dst == IpAddr::V4(Ipv4Addr::BROADCAST)
            || src.port() == sock.local_addr().map(|a| a.port()).unwrap_or(0)
        {
            c.passed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let pkt = &mut buf[..n];
        if truncated || (service == Service::Stamp && n < crate::wire::STAMP_LEN) {
            c.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let allowed = shared
            .allow
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allows(src.ip());
        if !allowed {
            c.denied.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if !shared.within_rate(src.ip().to_canonical()) {
            c.rate_limited.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if service == Service::Stamp {
            let rx_ns = meta.rx_ns.unwrap_or_else(utc_now_ns);
            let err = crate::clock::now_state().error_estimate;
            reflect_stamp_in_place(pkt, meta.ttl.unwrap_or(0), rx_ns, utc_now_ns(), err);
        }
        if send_reply(fd, pkt, src, dst, meta.ifindex, meta.tos).is_ok() {
            let counter = if service == Service::Stamp {
                &c.reflected
            } else {
                &c.echoed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn to_socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::new(IpAddr::V4(v4.ip()), v4.port()));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::new(IpAddr::V6(v6.ip()), v6.port()))
}

/// Sends `pkt` back to `to` from `from` (the request's destination) with the request's TOS.
fn send_reply(
    fd: i32,
    pkt: &[u8],
    to: SocketAddr,
    from: IpAddr,
    ifindex: u32,
    tos: u8,
) -> nix::Result<usize> {
    let iov = [IoSlice::new(pkt)];
    let dest = SockaddrStorage::from(to);
    match from {
        IpAddr::V4(a) => {
            let pi = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(a).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            let cm = [
                ControlMessage::Ipv4PacketInfo(&pi),
                ControlMessage::Ipv4Tos(&tos),
            ];
            sendmsg(fd, &iov, &cm, MsgFlags::empty(), Some(&dest))
        }
        IpAddr::V6(a) => {
            let pi = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                ipi6_ifindex: ifindex,
            };
            let tclass = i32::from(tos);
            let cm = [
                ControlMessage::Ipv6PacketInfo(&pi),
                ControlMessage::Ipv6TClass(&tclass),
            ];
            sendmsg(fd, &iov, &cm, MsgFlags::empty(), Some(&dest))
        }
    }
}
