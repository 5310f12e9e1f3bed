//! The AF_XDP transmit path of the raw rate generator ([`crate::generator`]).
//!
//! [`plan`] finds out whether a session can send through an AF_XDP socket and what its frames
//! look like: the route to the destination (`rookery_common::netlink::route_to`, the route the
//! generator's UDP socket uses), the egress interface and its MAC address, and the next hop's
//! (gateway's or destination's) MAC address from the neighbour cache. An unresolved neighbour is
//! resolved by sending one empty UDP datagram to the next hop's discard port (9) from an
//! ordinary socket (the kernel queues it and resolves the address, ARP or NDP) and looking again
//! every 10 ms for up to [`RESOLVE_FOR`]. Every reason AF_XDP cannot be used is an
//! [`Unavailable`] naming it: loopback or another non-unicast route, no route, an interface
//! without an Ethernet address, a packet larger than the MTU or than a UMEM frame, an
//! unresolved neighbour, or a socket the kernel refuses (no `CAP_NET_RAW`, `RLIMIT_MEMLOCK`,
//! a queue the interface does not have).
//!
//! [`Tx`] is the socket: a UMEM of [`UMEM_BYTES`] in 2048- or 4096-byte frames, each filled once
//! with the whole Ethernet + IPv4/IPv6 + UDP frame ([`Template`]: IPv4 header checksum, DSCP,
//! TTL / hop limit 64, DF set, IPv4 Identification 0 as RFC 6864 allows for atomic datagrams).
//! Per packet only the 8-byte sequence number and the UDP checksum change: the checksum's sum
//! over everything else is computed once, and the sequence number's four 16-bit words are added
//! to it for each packet. A TX ring as large as the UMEM, a completion ring that returns sent
//! frames to the free list, and `XDP_USE_NEED_WAKEUP`: the kernel is kicked (`sendto`) only
//! when it asks. The bind asks for no mode: the kernel uses zero-copy where the driver supports
//! it and copy mode otherwise (veth: copy); [`Tx::zero_copy`] says which (`XDP_OPTIONS`).
//!
//! Counting: a packet is sent when its frame comes back on the completion ring and the kernel
//! did not report it dropped (`EBUSY` from the kick: the driver refused the frame in copy
//! mode); dropped ones are `send_errors`.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::num::NonZeroU32;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use rookery_common::netlink::{self, RouteKind};
use xdpilone::xdp::XdpDesc;
use xdpilone::{CompletionQueue, IfInfo, RingTx, Socket, SocketConfig, Umem, UmemConfig, User};

/// Bytes of packet memory (UMEM) per session. The kernel counts it against `RLIMIT_MEMLOCK`
/// of the daemon's user (the unit raises it: `LimitMEMLOCK=`).
pub const UMEM_BYTES: usize = 2 << 20;
/// How long an unresolved next hop is waited for before the session falls back.
pub const RESOLVE_FOR: Duration = Duration::from_secs(1);
/// Most frames handed to the kernel per [`Tx::send`].
pub const BATCH: usize = 256;
/// A transmit path that completes nothing for this long while frames are outstanding has
/// stalled (interface down, queue stopped): the session fails.
pub const STALL: Duration = Duration::from_secs(1);

const ETH_LEN: usize = 14;
const UDP_LEN: usize = 8;
/// `SOL_XDP` and its `XDP_OPTIONS` option (`<linux/if_xdp.h>`).
const SOL_XDP: libc::c_int = 283;
const XDP_OPTIONS: libc::c_int = 8;
const XDP_OPTIONS_ZEROCOPY: u32 = 1;

/// Why a session does not send through AF_XDP (it uses the socket path instead, or fails when
/// AF_XDP was required).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

fn unavailable(msg: impl Into<String>) -> Unavailable {
    Unavailable(msg.into())
}

/// Where and how a session's frames go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The egress interface's index and name.
    pub ifindex: u32,
    /// Its name.
    pub ifname: String,
    /// Its MAC address: the frames' source.
    pub src_mac: [u8; 6],
    /// The next hop's MAC address: the frames' destination.
    pub dst_mac: [u8; 6],
    /// The next hop (the gateway, or the destination when it is on-link).
    pub next_hop: IpAddr,
    /// Source address and port of the packets (those of the session's UDP socket).
    pub source: SocketAddr,
    /// Destination address and port.
    pub destination: SocketAddr,
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0_u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Finds the egress interface and the MAC addresses for packets from `source` (the session's
/// bound and connected UDP socket's address) to `destination` of `ip_bytes`-byte IP packets.
///
/// Blocking: up to [`RESOLVE_FOR`] when the next hop must be resolved first.
///
/// # Errors
/// [`Unavailable`] naming why AF_XDP cannot send these packets.
pub fn plan(
    source: SocketAddr,
    destination: SocketAddr,
    ip_bytes: usize,
) -> Result<Plan, Unavailable> {
    let dest = destination.ip();
    let route = netlink::route_to(dest, Some(source.ip())).map_err(|e| {
        unavailable(format!(
            "no route to {dest}: {}",
            rookery_common::error_chain(&e)
        ))
    })?;
    match route.kind {
        RouteKind::Unicast => {}
        RouteKind::Local => {
            return Err(unavailable(format!(
                "{dest} is a local address (the packets would go over loopback, which has no AF_XDP transmit)"
            )));
        }
        RouteKind::Other(kind) => {
            return Err(unavailable(format!(
                "the route to {dest} is of type {kind}, not unicast"
            )));
        }
    }
    let ifindex = route
        .oif
        .ok_or_else(|| unavailable(format!("the route to {dest} names no output interface")))?;
    let links = netlink::interfaces().map_err(|e| {
        unavailable(format!(
            "cannot read the interfaces: {}",
            rookery_common::error_chain(&e)
        ))
    })?;
    let link = links
        .iter()
        .find(|l| l.index == ifindex)
        .ok_or_else(|| unavailable(format!("the output interface {ifindex} vanished")))?;
    let ifname = link.name.clone();
    if link.flags.loopback {
        return Err(unavailable(format!(
            "the route to {dest} leaves by the loopback interface {ifname}"
        )));
    }
    let src_mac = link
        .mac
        .as_deref()
        .and_then(parse_mac)
        .filter(|m| m.iter().any(|b| *b != 0))
        .ok_or_else(|| {
            unavailable(format!(
                "the output interface {ifname} has no Ethernet address (not an Ethernet link)"
            ))
        })?;
    if let Some(mtu) = link.mtu
        && ip_bytes > usize::try_from(mtu).unwrap_or(usize::MAX)
    {
        return Err(unavailable(format!(
            "{ip_bytes}-byte IP packets exceed the MTU {mtu} of {ifname} (the socket path fragments them)"
        )));
    }
    if ETH_LEN + ip_bytes > 4096 {
        return Err(unavailable(format!(
            "{}-byte frames exceed the 4096-byte UMEM frame",
            ETH_LEN + ip_bytes
        )));
    }
    let next_hop = route.gateway.unwrap_or(dest);
    let dst_mac = resolve(ifindex, &ifname, next_hop, source.ip())?;
    Ok(Plan {
        ifindex,
        ifname,
        src_mac,
        dst_mac,
        next_hop,
        source,
        destination,
    })
}

/// The MAC address of `next_hop` on interface `ifindex`, resolving it first when needed.
fn resolve(
    ifindex: u32,
    ifname: &str,
    next_hop: IpAddr,
    source: IpAddr,
) -> Result<[u8; 6], Unavailable> {
    let lookup = || {
        netlink::neighbour(ifindex, next_hop).map_err(|e| {
            unavailable(format!(
                "cannot read the neighbour cache: {}",
                rookery_common::error_chain(&e)
            ))
        })
    };
    let mac = |n: &netlink::Neighbour| {
        n.lladdr
            .as_deref()
            .and_then(|l| <[u8; 6]>::try_from(l).ok())
    };
    let mut entry = lookup()?;
    if let Some(m) = entry.as_ref().filter(|n| n.usable()).and_then(mac) {
        return Ok(m);
    }
    // An empty datagram to the next hop's discard port makes the kernel resolve it (the
    // datagram waits in the neighbour's queue and is sent once resolved).
    if let Ok(s) = UdpSocket::bind(SocketAddr::new(source, 0)) {
        let _ = s.send_to(&[], SocketAddr::new(next_hop, 9));
    }
    let until = Instant::now() + RESOLVE_FOR;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
        entry = lookup()?;
        if let Some(m) = entry.as_ref().filter(|n| n.usable()).and_then(mac) {
            return Ok(m);
        }
    }
    Err(unavailable(format!(
        "the next hop {next_hop} on {ifname} is not resolved ({}) after {} ms",
        entry.map_or_else(
            || "no neighbour entry".to_owned(),
            |n| format!("{:?}", n.state).to_lowercase()
        ),
        RESOLVE_FOR.as_millis()
    )))
}

/// One's-complement sum of `bytes` as big-endian 16-bit words (an odd last byte padded).
fn sum16(bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    let mut s: u32 = chunks
        .by_ref()
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .fold(0_u32, u32::wrapping_add);
    if let [last] = chunks.remainder() {
        s = s.wrapping_add(u32::from(*last) << 8);
    }
    s
}

/// Folds a 32-bit sum into 16 bits (end-around carry).
fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    u16::try_from(s).unwrap_or(0xffff)
}

/// One frame of a session, built once; [`Template::stamp`] writes a packet's sequence number
/// and UDP checksum into a copy of it.
#[derive(Debug, Clone)]
pub struct Template {
    /// The whole frame with sequence number 0 and its checksum.
    pub bytes: Vec<u8>,
    /// Where the sequence number and checksum go.
    pub stamp: Stamp,
}

/// What changes from packet to packet: where a frame's sequence number and UDP checksum are,
/// and the checksum's sum over everything else.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    /// Offset of the UDP payload (the sequence number) in the frame.
    pub payload_off: usize,
    /// Offset of the UDP checksum in the frame.
    pub csum_off: usize,
    /// Unfolded sum of the pseudo-header, UDP header (checksum 0) and payload with
    /// sequence number 0.
    base: u64,
}

impl Template {
    /// The frame of `payload_len`-byte UDP packets of `plan` with DSCP `dscp`.
    pub fn new(plan: &Plan, dscp: u8, payload_len: usize) -> Self {
        let udp_len = UDP_LEN + payload_len;
        let mut f = Vec::with_capacity(ETH_LEN + 40 + udp_len);
        f.extend_from_slice(&plan.dst_mac);
        f.extend_from_slice(&plan.src_mac);
        let tos = dscp << 2;
        let udp_len16 = u16::try_from(udp_len).unwrap_or(u16::MAX);
        let mut pseudo = Vec::with_capacity(40);
        match (plan.source.ip(), plan.destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&0x0800_u16.to_be_bytes());
                let total = u16::try_from(20 + udp_len).unwrap_or(u16::MAX);
                let mut ip = [0_u8; 20];
                ip[0] = 0x45;
                ip[1] = tos;
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                // Identification 0, DF set (RFC 6864: atomic datagrams).
                ip[6] = 0x40;
                ip[8] = 64;
                ip[9] = 17;
                ip[12..16].copy_from_slice(&s.octets());
                ip[16..20].copy_from_slice(&d.octets());
                let c = !fold(u64::from(sum16(&ip)));
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&ip);
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&[0, 17]);
                pseudo.extend_from_slice(&udp_len16.to_be_bytes());
            }
            (s, d) => {
                let (s, d) = (ipv6(s), ipv6(d));
                f.extend_from_slice(&0x86dd_u16.to_be_bytes());
                let first = (6_u32 << 28) | (u32::from(tos) << 20);
                f.extend_from_slice(&first.to_be_bytes());
                f.extend_from_slice(&udp_len16.to_be_bytes());
                f.extend_from_slice(&[17, 64]);
                f.extend_from_slice(&s);
                f.extend_from_slice(&d);
                pseudo.extend_from_slice(&s);
                pseudo.extend_from_slice(&d);
                pseudo.extend_from_slice(&u32::try_from(udp_len).unwrap_or(0).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, 17]);
            }
        }
        let udp_off = f.len();
        f.extend_from_slice(&plan.source.port().to_be_bytes());
        f.extend_from_slice(&plan.destination.port().to_be_bytes());
        f.extend_from_slice(&udp_len16.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.resize(udp_off + udp_len, 0);
        let stamp = Stamp {
            payload_off: udp_off + UDP_LEN,
            csum_off: udp_off + 6,
            base: u64::from(sum16(&pseudo)) + u64::from(sum16(&f[udp_off..])),
        };
        stamp.write(&mut f, 0);
        Self { bytes: f, stamp }
    }

    /// Writes `seq` and its checksum into `frame` (a copy of [`Template::bytes`]).
    pub fn stamp(&self, frame: &mut [u8], seq: u64) {
        self.stamp.write(frame, seq);
    }
}

impl Stamp {
    /// The UDP checksum of the packet with sequence number `seq`.
    pub fn checksum(self, seq: u64) -> u16 {
        let words = (seq >> 48) + ((seq >> 32) & 0xffff) + ((seq >> 16) & 0xffff) + (seq & 0xffff);
        match !fold(self.base + words) {
            // RFC 768: a computed 0 is sent as all ones (0 means "no checksum" in IPv4 and is
            // invalid in IPv6).
            0 => 0xffff,
            c => c,
        }
    }

    /// Writes `seq` and its checksum into `frame` (a copy of [`Template::bytes`]).
    pub fn write(self, frame: &mut [u8], seq: u64) {
        frame[self.payload_off..self.payload_off + 8].copy_from_slice(&seq.to_be_bytes());
        frame[self.csum_off..self.csum_off + 2].copy_from_slice(&self.checksum(seq).to_be_bytes());
    }
}

fn ipv6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// Anonymous, page-aligned memory for the UMEM; unmapped on drop.
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

impl Area {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; nothing refers to it any more (the
        // socket, which the kernel pinned it for, is closed before: `Tx` drops it first).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The kernel's error of step `what`; [`Tx::open`] keeps the raw errno (`EBUSY`: the queue
/// has a socket already) and names the step in [`StepError`].
fn errno(what: &str, e: &xdpilone::Errno) -> io::Error {
    let os = io::Error::from_raw_os_error(e.get_raw());
    io::Error::new(
        os.kind(),
        StepError {
            step: what.to_owned(),
            errno: e.get_raw(),
        },
    )
}

/// A refused step of opening an AF_XDP socket, with the kernel's errno.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {}", io::Error::from_raw_os_error(*errno))]
pub struct StepError {
    /// What was being done.
    pub step: String,
    /// The errno.
    pub errno: i32,
}

/// The errno of an error from [`Tx::open`], if the kernel gave one.
pub fn os_error(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<StepError>())
            .map(|s| s.errno)
    })
}

/// An AF_XDP socket sending one session's frames (TX only).
pub struct Tx {
    // Dropped in this order: the rings, the socket, the UMEM registration, then the memory.
    tx: RingTx,
    cq: CompletionQueue,
    _user: User,
    _umem: Umem,
    area: Area,
    template: Template,
    frame_size: usize,
    free: Vec<u32>,
    descs: Vec<XdpDesc>,
    outstanding: u64,
    completed: u64,
    dropped: u64,
    zero_copy: bool,
    queue: u32,
    last_progress: Instant,
}

impl Tx {
    /// Opens an AF_XDP socket on `plan`'s interface, queue `queue`, with every frame of its
    /// UMEM holding `template`; in zero-copy mode when `zero_copy` and the driver supports it,
    /// else in copy mode.
    ///
    /// # Errors
    /// The kernel refuses a step (the error names it): no `CAP_NET_RAW` (`socket`), the UMEM
    /// over `RLIMIT_MEMLOCK` (`register the UMEM`), no such queue (`bind`), …
    pub fn open(plan: &Plan, queue: u32, template: Template, zero_copy: bool) -> io::Result<Self> {
        let frame_size: usize = if template.bytes.len() <= 2048 {
            2048
        } else {
            4096
        };
        let frames = UMEM_BYTES / frame_size;
        let frames32 = u32::try_from(frames).unwrap_or(512);
        let area = Area::new(UMEM_BYTES)?;
        let config = UmemConfig {
            fill_size: frames32,
            complete_size: frames32,
            frame_size: u32::try_from(frame_size).unwrap_or(2048),
            headroom: 0,
            flags: 0,
        };
        // SAFETY: `area` is page-aligned (mmap), `UMEM_BYTES` long, and outlives the UMEM and
        // every socket on it (`Tx` drops them before it).
        let umem = unsafe { Umem::new(config, NonNull::slice_from_raw_parts(area.ptr, area.len)) }
            .map_err(|e| {
                errno(
                    "register the UMEM (AF_XDP socket; needs CAP_NET_RAW and RLIMIT_MEMLOCK room)",
                    &e,
                )
            })?;
        let mut info = IfInfo::invalid();
        info.from_ifindex(plan.ifindex)
            .map_err(|e| errno(&format!("find interface {}", plan.ifindex), &e))?;
        info.set_queue(queue);
        let sock = Socket::with_shared(&info, &umem).map_err(|e| errno("open the socket", &e))?;
        let device = umem
            .fq_cq(&sock)
            .map_err(|e| errno("set up the completion ring", &e))?;
        let user = umem
            .rx_tx(
                &sock,
                &SocketConfig {
                    rx_size: None,
                    tx_size: NonZeroU32::new(frames32),
                    // Without XDP_COPY the kernel tries zero-copy and falls back to copy mode.
                    bind_flags: SocketConfig::XDP_BIND_NEED_WAKEUP
                        | if zero_copy {
                            0
                        } else {
                            SocketConfig::XDP_BIND_COPY
                        },
                },
            )
            .map_err(|e| errno("set up the TX ring", &e))?;
        let tx = user.map_tx().map_err(|e| errno("map the TX ring", &e))?;
        umem.bind(&user)
            .map_err(|e| errno(&format!("bind to {} queue {queue}", plan.ifname), &e))?;
        let (_fill, cq) = device.into_parts();
        let zero_copy = options(user.as_raw_fd()).is_ok_and(|o| o & XDP_OPTIONS_ZEROCOPY != 0);
        let mut tx = Self {
            tx,
            cq,
            _user: user,
            _umem: umem,
            area,
            template,
            frame_size,
            free: (0..frames32).rev().collect(),
            descs: Vec::with_capacity(BATCH),
            outstanding: 0,
            completed: 0,
            dropped: 0,
            zero_copy,
            queue,
            last_progress: Instant::now(),
        };
        let bytes = tx.template.bytes.clone();
        for i in 0..frames32 {
            tx.frame(i)[..bytes.len()].copy_from_slice(&bytes);
        }
        Ok(tx)
    }

    /// Whether the kernel runs this socket in zero-copy mode (else copy mode).
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The interface queue the socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Frames that came back from the kernel, minus those it reported dropped.
    pub fn sent(&self) -> u64 {
        self.completed.saturating_sub(self.dropped)
    }

    /// Frames the kernel reported dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Frames handed to the kernel that have not come back yet.
    pub fn outstanding(&self) -> u64 {
        self.outstanding
    }

    fn frame(&mut self, idx: u32) -> &mut [u8] {
        let off = usize::try_from(idx).unwrap_or(0) * self.frame_size;
        debug_assert!(off + self.frame_size <= self.area.len);
        // SAFETY: frame `idx` lies inside the area (`idx` < frames); only frames on the free list
        // (not in the kernel's hands) are written, and `&mut self` makes this the only slice.
        unsafe { std::slice::from_raw_parts_mut(self.area.ptr.as_ptr().add(off), self.frame_size) }
    }

    /// Takes back the frames the kernel has finished with.
    fn reap(&mut self) {
        let mut done = self.cq.complete(u32::try_from(BATCH * 4).unwrap_or(1024));
        let mut n = 0;
        while let Some(addr) = done.read() {
            let idx = u32::try_from(addr / self.frame_size as u64).unwrap_or(0);
            self.free.push(idx);
            n += 1;
        }
        done.release();
        drop(done);
        if n > 0 {
            self.completed += n;
            self.outstanding = self.outstanding.saturating_sub(n);
            self.last_progress = Instant::now();
        }
    }

    /// Kicks the kernel when it asks to be (`XDP_USE_NEED_WAKEUP`): in copy mode each kick sends
    /// up to 32 frames, so it is repeated while frames wait in the TX ring (at most 64 times).
    fn kick(&mut self) -> io::Result<()> {
        for _ in 0..64 {
            if self.tx.pending() == 0 || !self.tx.needs_wakeup() {
                return Ok(());
            }
            // SAFETY: a zero-length sendto on the socket's own descriptor, as the kernel's
            // AF_XDP documentation prescribes for a TX wake-up; no buffers are passed.
            let r = unsafe {
                libc::sendto(
                    self.tx.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r >= 0 {
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // The kernel's per-call budget was used up: more to send.
                Some(libc::EAGAIN) => {}
                // The driver refused one frame (it still completes): a dropped packet.
                Some(libc::EBUSY) => self.dropped += 1,
                // The device queue is full: try again on the next round.
                Some(libc::ENOBUFS) => return Ok(()),
                _ if self.zero_copy && self.completed == 0 => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "the zero-copy AF_XDP socket sent nothing ({e}); some drivers send in zero-copy mode only with an XDP program on the interface: set [generator] zero-copy = false for copy mode"
                        ),
                    ));
                }
                _ => return Err(e),
            }
        }
        Ok(())
    }

    /// Hands up to `want` packets, numbered from `first`, to the kernel; returns how many it
    /// took (0 while every frame is in flight: the caller waits and tries again).
    ///
    /// # Errors
    /// The kernel refuses the kick (e.g. `ENETDOWN`), or nothing came back for [`STALL`]
    /// while frames were outstanding.
    pub fn send(&mut self, first: u64, want: usize) -> io::Result<usize> {
        self.reap();
        // The TX ring has a slot for every frame, so it has room for every free one.
        let want = want.min(BATCH).min(self.free.len());
        self.descs.clear();
        for i in 0..want {
            let Some(idx) = self.free.pop() else { break };
            let seq = first + i as u64;
            let stamp = self.template.stamp;
            stamp.write(self.frame(idx), seq);
            self.descs.push(XdpDesc {
                addr: u64::from(idx) * self.frame_size as u64,
                len: u32::try_from(self.template.bytes.len()).unwrap_or(0),
                options: 0,
            });
        }
        let mut w = self
            .tx
            .transmit(u32::try_from(self.descs.len()).unwrap_or(0));
        let n = usize::try_from(w.insert(self.descs.iter().copied())).unwrap_or(0);
        w.commit();
        drop(w);
        // Frames reserved but not inserted (cannot happen: the ring had room) go back.
        for d in self.descs.iter().skip(n) {
            self.free
                .push(u32::try_from(d.addr / self.frame_size as u64).unwrap_or(0));
        }
        if n > 0 && self.outstanding == 0 {
            self.last_progress = Instant::now();
        }
        self.outstanding += n as u64;
        self.kick()?;
        self.check_stall()?;
        Ok(n)
    }

    fn check_stall(&self) -> io::Result<()> {
        if self.outstanding > 0 && self.last_progress.elapsed() > STALL {
            return Err(io::Error::other(format!(
                "AF_XDP transmit stalled: {} frames not sent back by the kernel for {} ms (interface down?)",
                self.outstanding,
                STALL.as_millis()
            )));
        }
        Ok(())
    }

    /// Waits (kicking) until every frame handed to the kernel came back, at most [`STALL`]
    /// without progress; what never comes back is returned as not sent.
    pub fn flush(&mut self) -> u64 {
        let until = Instant::now() + STALL;
        while self.outstanding > 0 && Instant::now() < until {
            let _ = self.kick();
            self.reap();
            if self.outstanding > 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        self.outstanding
    }
}

/// `getsockopt(SOL_XDP, XDP_OPTIONS)`: the socket's `XDP_OPTIONS_*` flags.
fn options(fd: libc::c_int) -> io::Result<u32> {
    let mut flags: u32 = 0;
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<u32>()).unwrap_or(4);
    // SAFETY: getsockopt writes at most `len` (4) bytes into `flags`, which outlives the call.
    let r = unsafe {
        libc::getsockopt(
            fd,
            SOL_XDP,
            XDP_OPTIONS,
            (&raw mut flags).cast(),
            &raw mut len,
        )
    };
    if r == 0 {
        Ok(flags)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(src: &str, dst: &str) -> Plan {
        Plan {
            ifindex: 2,
            ifname: "vs".into(),
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            next_hop: dst
                .parse::<SocketAddr>()
                .map(|a| a.ip())
                .unwrap_or_else(|e| panic!("{e}")),
            source: src.parse().unwrap_or_else(|e| panic!("{e}")),
            destination: dst.parse().unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// The UDP checksum computed from scratch over the pseudo-header and the datagram.
    fn full_udp_checksum(frame: &[u8]) -> u16 {
        let (pseudo, udp) = if frame[12..14] == [0x08, 0x00] {
            let ip = &frame[14..34];
            let udp = &frame[34..];
            let mut p = Vec::new();
            p.extend_from_slice(&ip[12..20]);
            p.extend_from_slice(&[0, 17]);
            p.extend_from_slice(&u16::try_from(udp.len()).unwrap_or(0).to_be_bytes());
            (p, udp)
        } else {
            let ip = &frame[14..54];
            let udp = &frame[54..];
            let mut p = Vec::new();
            p.extend_from_slice(&ip[8..40]);
            p.extend_from_slice(&u32::try_from(udp.len()).unwrap_or(0).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 17]);
            (p, udp)
        };
        let mut u = udp.to_vec();
        u[6] = 0;
        u[7] = 0;
        let c = !fold(u64::from(sum16(&pseudo)) + u64::from(sum16(&u)));
        if c == 0 { 0xffff } else { c }
    }

    #[test]
    fn ipv4_frames_carry_valid_checksums_for_every_sequence_number() {
        let p = plan("10.1.2.3:40000", "10.1.2.4:9000");
        let t = Template::new(&p, 46, 18);
        assert_eq!(t.bytes.len(), 60);
        assert_eq!(&t.bytes[0..6], &[2, 0, 0, 0, 0, 2]);
        assert_eq!(&t.bytes[6..12], &[2, 0, 0, 0, 0, 1]);
        let ip = &t.bytes[14..34];
        assert_eq!((ip[0], ip[1], ip[8], ip[9]), (0x45, 46 << 2, 64, 17));
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 46);
        // A valid IPv4 header sums to all ones.
        assert_eq!(fold(u64::from(sum16(ip))), 0xffff);
        assert_eq!(&t.bytes[34..38], &[0x9c, 0x40, 0x23, 0x28]);
        assert_eq!(u16::from_be_bytes([t.bytes[38], t.bytes[39]]), 26);
        let mut f = t.bytes.clone();
        for seq in [0, 1, 2, 0xffff, 0x1_0000, 0xdead_beef_0000_0001, u64::MAX] {
            t.stamp(&mut f, seq);
            assert_eq!(&f[42..50], &seq.to_be_bytes());
            assert!(f[50..].iter().all(|b| *b == 0));
            let got = u16::from_be_bytes([f[40], f[41]]);
            assert_eq!(got, full_udp_checksum(&f), "seq {seq}");
        }
    }

    #[test]
    fn ipv6_frames_carry_valid_checksums_and_the_traffic_class() {
        let p = plan("[fd00::2]:40000", "[fd00::1]:9000");
        let t = Template::new(&p, 10, 100);
        assert_eq!(t.bytes.len(), 14 + 40 + 8 + 100);
        assert_eq!(&t.bytes[12..14], &[0x86, 0xdd]);
        let first = u32::from_be_bytes([t.bytes[14], t.bytes[15], t.bytes[16], t.bytes[17]]);
        assert_eq!(first >> 28, 6);
        assert_eq!((first >> 20) & 0xff, 10 << 2);
        assert_eq!(u16::from_be_bytes([t.bytes[18], t.bytes[19]]), 108);
        assert_eq!((t.bytes[20], t.bytes[21]), (17, 64));
        let mut f = t.bytes.clone();
        for seq in 0..2000_u64 {
            t.stamp(&mut f, seq * 7919);
            let got = u16::from_be_bytes([f[60], f[61]]);
            assert_ne!(got, 0, "IPv6 UDP always carries a checksum");
            assert_eq!(got, full_udp_checksum(&f), "seq {}", seq * 7919);
        }
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(parse_mac("02:00:0a:ff:00:01"), Some([2, 0, 10, 255, 0, 1]));
        assert_eq!(parse_mac("02:00:0a:ff:00"), None);
        assert_eq!(parse_mac("02:00:0a:ff:00:01:02"), None);
        assert_eq!(parse_mac("zz:00:0a:ff:00:01"), None);
    }
}
