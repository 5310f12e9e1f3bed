//! Network interfaces and their addresses, read from the kernel over rtnetlink.
//!
//! Entry points: [`interfaces`] dumps every link of the caller's network namespace with its
//! IPv4/IPv6 addresses (a blocking call of a few hundred microseconds: call it from
//! `spawn_blocking` in async code), and [`Watch`] subscribes to the kernel's link and address
//! notifications (`RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR`, `RTNLGRP_IPV6_IFADDR`) and yields each
//! [`Change`] as it happens. A consumer that keeps a picture of the interfaces opens the
//! [`Watch`] first and dumps second, so no change falls between the two; on
//! [`Change::Overrun`] (the kernel dropped notifications) it dumps again. [`route_to`] asks the
//! kernel where it would send a packet (`ip route get`) and [`neighbour`] reads one entry of the
//! neighbour (ARP / NDP) cache: what a sender that builds its own Ethernet frames needs.
//!
//! Sockets belong to the network namespace of the thread that opens them, which is how the
//! privileged tests look at a namespace they made (see [`crate::netns`]).

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia,
};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};
use serde::Serialize;
use tokio::io::unix::AsyncFd;

/// Receive buffer of one datagram. The kernel sizes dump datagrams to at most 32 KiB and a
/// notification carries one message (a link with all its stats is ~2 KiB), so 64 KiB always
/// holds a whole datagram; a larger one is reported as [`NetlinkError::Truncated`], never
/// parsed half.
const RECV_BUFFER: usize = 64 * 1024;

/// Kernel-side socket buffer of a [`Watch`]: room for a burst of a few hundred notifications
/// (e.g. a bridge with many ports coming up) before the kernel drops and reports an overrun.
const WATCH_SOCKET_BUFFER: usize = 1024 * 1024;

/// A dump is restarted when the kernel flags it as interrupted (the table changed while it
/// was being read); after this many interrupted attempts in a row the caller gets an error.
const DUMP_ATTEMPTS: usize = 5;

/// Why reading interfaces or changes from the kernel failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// Opening, binding, configuring or using the `NETLINK_ROUTE` socket failed.
    #[error("netlink socket: cannot {op}")]
    Socket {
        /// What was being done, e.g. `bind`, `receive`.
        op: &'static str,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The kernel answered a request with an error.
    #[error("the kernel refused the {what} dump")]
    Kernel {
        /// `link` or `address`.
        what: &'static str,
        /// The kernel's errno.
        #[source]
        source: io::Error,
    },
    /// The kernel answered a single request (not a dump) with an error, e.g.
    /// `ENETUNREACH` for a route to a destination it has no route to.
    #[error("the kernel refused the {what} request")]
    Refused {
        /// `route`.
        what: &'static str,
        /// The kernel's errno.
        #[source]
        source: io::Error,
    },
    /// A message from the kernel could not be decoded.
    #[error("cannot decode a netlink message")]
    Decode(#[source] netlink_packet_core::DecodeError),
    /// A datagram was larger than the receive buffer.
    #[error("a netlink datagram of {len} bytes does not fit the {RECV_BUFFER}-byte buffer")]
    Truncated {
        /// The datagram's length.
        len: usize,
    },
    /// Every attempt of a dump was interrupted by concurrent changes.
    #[error("the {what} dump was interrupted by changes {DUMP_ATTEMPTS} times in a row")]
    Interrupted {
        /// `link` or `address`.
        what: &'static str,
    },
}

fn sock_err(op: &'static str) -> impl FnOnce(io::Error) -> NetlinkError {
    move |source| NetlinkError::Socket { op, source }
}

/// A network interface (a link) and its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    /// The kernel's interface index (`ifindex`).
    pub index: u32,
    /// The interface name, e.g. `eth0`.
    pub name: String,
    /// The link-layer address as lowercase `aa:bb:cc:dd:ee:ff`, when the link has one.
    pub mac: Option<String>,
    /// The MTU in bytes.
    pub mtu: Option<u32>,
    /// RFC 2863 operational state.
    pub oper_state: OperState,
    /// The `IFF_*` flags that matter to an operator.
    pub flags: Flags,
    /// The driver kind for virtual links (`veth`, `bridge`, `vlan`, `bond`, …); `None` for
    /// physical NICs and loopback, which report none.
    pub kind: Option<String>,
    /// Traffic counters since the link was created; `None` when the kernel reports none.
    pub counters: Option<Counters>,
    /// IPv4 and IPv6 addresses, IPv4 first, each in the kernel's order.
    pub addresses: Vec<Address>,
}

/// RFC 2863 operational state of a link (`IFLA_OPERSTATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OperState {
    /// Unknown (loopback and many virtual links always report this).
    Unknown,
    /// Some component is missing.
    NotPresent,
    /// Down.
    Down,
    /// Down because the link below it is down.
    LowerLayerDown,
    /// In a test mode.
    Testing,
    /// Waiting for an external event (e.g. 802.1X).
    Dormant,
    /// Up and ready to pass packets.
    Up,
}

impl From<State> for OperState {
    fn from(s: State) -> Self {
        match s {
            State::NotPresent => Self::NotPresent,
            State::Down => Self::Down,
            State::LowerLayerDown => Self::LowerLayerDown,
            State::Testing => Self::Testing,
            State::Dormant => Self::Dormant,
            State::Up => Self::Up,
            _ => Self::Unknown,
        }
    }
}

/// Interface flags (`IFF_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Flags {
    /// `IFF_UP`: administratively up.
    pub up: bool,
    /// `IFF_RUNNING`: operationally up.
    pub running: bool,
    /// `IFF_LOWER_UP`: the carrier (L1) is up.
    pub lower_up: bool,
    /// `IFF_LOOPBACK`.
    pub loopback: bool,
    /// `IFF_POINTOPOINT`.
    pub point_to_point: bool,
    /// `IFF_BROADCAST`.
    pub broadcast: bool,
    /// `IFF_MULTICAST`.
    pub multicast: bool,
    /// `IFF_PROMISC`.
    pub promiscuous: bool,
    /// `IFF_NOARP`.
    pub no_arp: bool,
}

impl From<LinkFlags> for Flags {
    fn from(f: LinkFlags) -> Self {
        Self {
            up: f.contains(LinkFlags::Up),
            running: f.contains(LinkFlags::Running),
            lower_up: f.contains(LinkFlags::LowerUp),
            loopback: f.contains(LinkFlags::Loopback),
            point_to_point: f.contains(LinkFlags::Pointopoint),
            broadcast: f.contains(LinkFlags::Broadcast),
            multicast: f.contains(LinkFlags::Multicast),
            promiscuous: f.contains(LinkFlags::Promisc),
            no_arp: f.contains(LinkFlags::Noarp),
        }
    }
}

/// Traffic counters of a link (`IFLA_STATS64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counters {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Received packets dropped (no buffer, unknown protocol, …).
    pub rx_dropped: u64,
    /// Packets dropped on send.
    pub tx_dropped: u64,
}

/// An address of an interface with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Address {
    /// The local address.
    pub address: IpAddr,
    /// The on-link prefix length (`/24`, `/64`).
    pub prefix_len: u8,
    /// Where the address is valid.
    pub scope: Scope,
}

/// The scope of an address (`ifa_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Valid everywhere (the kernel's "universe").
    Global,
    /// Valid within the site (deprecated IPv6 site-local).
    Site,
    /// Valid on the link only (`169.254/16`, `fe80::/10`).
    Link,
    /// Valid on this host only (loopback).
    Host,
    /// A scope this module does not name.
    Other,
}

impl From<AddressScope> for Scope {
    fn from(s: AddressScope) -> Self {
        match s {
            AddressScope::Universe => Self::Global,
            AddressScope::Site => Self::Site,
            AddressScope::Link => Self::Link,
            AddressScope::Host => Self::Host,
            _ => Self::Other,
        }
    }
}

/// One change the kernel announced to a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A link appeared or changed (state, flags, MTU, name, …). Its `addresses` are empty:
    /// addresses come as their own changes.
    Link(Interface),
    /// A link was removed (with it, all its addresses).
    LinkRemoved {
        /// Its index.
        index: u32,
        /// Its name.
        name: String,
    },
    /// An address was added to (or its properties changed on) the link `index`.
    AddressAdded {
        /// The link's index.
        index: u32,
        /// The address.
        address: Address,
    },
    /// An address was removed from the link `index`.
    AddressRemoved {
        /// The link's index.
        index: u32,
        /// The address.
        address: Address,
    },
    /// The kernel dropped notifications (the socket buffer overflowed): what is known is
    /// stale, dump again with [`interfaces`].
    Overrun,
}

/// Every interface of the calling thread's network namespace with its addresses, by index.
///
/// Blocking (two dumps over a fresh `NETLINK_ROUTE` socket); needs no privilege.
///
/// # Errors
/// The socket cannot be opened or used, the kernel refuses a dump or sends what cannot be
/// decoded, or a dump is interrupted five times in a row.
pub fn interfaces() -> Result<Vec<Interface>, NetlinkError> {
    let socket = request_socket()?;
    let mut buf = Vec::with_capacity(RECV_BUFFER);
    let mut by_index = BTreeMap::new();
    dump(
        &socket,
        &mut buf,
        "link",
        1,
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        |m| {
            if let RouteNetlinkMessage::NewLink(link) = m {
                let i = interface(&link);
                by_index.insert(i.index, i);
            }
        },
    )?;
    let mut addresses = Vec::new();
    dump(
        &socket,
        &mut buf,
        "address",
        2,
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        |m| {
            if let RouteNetlinkMessage::NewAddress(a) = m
                && let Some(pair) = address(&a)
            {
                addresses.push(pair);
            }
        },
    )?;
    // IPv4 first (stable sort keeps the kernel's order within a family).
    addresses.sort_by_key(|(_, a)| a.address.is_ipv6());
    for (index, a) in addresses {
        if let Some(i) = by_index.get_mut(&index) {
            i.addresses.push(a);
        }
    }
    Ok(by_index.into_values().collect())
}

/// What the kernel does with a packet to an address (`ip route get`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The route's type: only [`RouteKind::Unicast`] leaves the host.
    pub kind: RouteKind,
    /// The output interface's index.
    pub oif: Option<u32>,
    /// The gateway, when the destination is not on-link.
    pub gateway: Option<IpAddr>,
    /// The source address the kernel would choose.
    pub prefsrc: Option<IpAddr>,
}

/// The type of a [`Route`] (`rtm_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteKind {
    /// A gateway or direct route: the packet leaves by `oif`.
    Unicast,
    /// A local address: the packet never leaves the host (loopback).
    Local,
    /// Any other type (broadcast, multicast, blackhole, unreachable, …), by its name.
    Other(String),
}

/// Where the kernel sends a packet to `destination` from `source` (the route a socket would
/// use), like `ip route get DESTINATION [from SOURCE]`.
///
/// Blocking (one request over a fresh `NETLINK_ROUTE` socket); needs no privilege.
///
/// # Errors
/// The socket cannot be used, or the kernel has no route ([`NetlinkError::Refused`] with
/// `ENETUNREACH`, `EHOSTUNREACH`, …).
pub fn route_to(destination: IpAddr, source: Option<IpAddr>) -> Result<Route, NetlinkError> {
    let socket = request_socket()?;
    let mut msg = RouteMessage::default();
    let (family, len) = if destination.is_ipv4() {
        (AddressFamily::Inet, 32)
    } else {
        (AddressFamily::Inet6, 128)
    };
    msg.header.address_family = family;
    msg.header.destination_prefix_length = len;
    msg.attributes
        .push(RouteAttribute::Destination(route_address(destination)));
    if let Some(src) = source {
        msg.header.source_prefix_length = len;
        msg.attributes
            .push(RouteAttribute::Source(route_address(src)));
    }
    let answer = request(&socket, "route", RouteNetlinkMessage::GetRoute(msg))?;
    let RouteNetlinkMessage::NewRoute(r) = answer else {
        return Err(NetlinkError::Refused {
            what: "route",
            source: io::Error::other("the kernel answered with another message type"),
        });
    };
    let mut route = Route {
        kind: match r.header.kind {
            RouteType::Unicast => RouteKind::Unicast,
            RouteType::Local => RouteKind::Local,
            other => RouteKind::Other(format!("{other:?}").to_lowercase()),
        },
        oif: None,
        gateway: None,
        prefsrc: None,
    };
    for attr in &r.attributes {
        match attr {
            RouteAttribute::Oif(i) => route.oif = Some(*i),
            RouteAttribute::Gateway(a) => route.gateway = ip_of(a),
            RouteAttribute::Via(RouteVia::Inet(a)) => route.gateway = Some((*a).into()),
            RouteAttribute::Via(RouteVia::Inet6(a)) => route.gateway = Some((*a).into()),
            RouteAttribute::PrefSource(a) => route.prefsrc = ip_of(a),
            _ => {}
        }
    }
    Ok(route)
}

fn route_address(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some((*a).into()),
        RouteAddress::Inet6(a) => Some((*a).into()),
        _ => None,
    }
}

/// An entry of the neighbour cache (ARP for IPv4, NDP for IPv6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// The link-layer address, when the entry has one.
    pub lladdr: Option<Vec<u8>>,
    /// The entry's state.
    pub state: NudState,
}

impl Neighbour {
    /// Whether `lladdr` may be used to send to this neighbour now: the entry is resolved
    /// (reachable, stale, being re-checked, permanent or needs no resolution) and has an
    /// address.
    pub fn usable(&self) -> bool {
        self.lladdr.is_some()
            && matches!(
                self.state,
                NudState::Reachable
                    | NudState::Stale
                    | NudState::Delay
                    | NudState::Probe
                    | NudState::Permanent
                    | NudState::Noarp
            )
    }
}

/// The state of a neighbour entry (`NUD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NudState {
    /// Resolution in progress.
    Incomplete,
    /// Confirmed recently.
    Reachable,
    /// Resolved, not confirmed recently (still used; the kernel re-checks on use).
    Stale,
    /// Waiting before a re-check.
    Delay,
    /// Being re-checked.
    Probe,
    /// Resolution failed.
    Failed,
    /// No resolution needed (e.g. a point-to-point link).
    Noarp,
    /// Configured statically.
    Permanent,
    /// Any other state.
    Other,
}

/// The neighbour cache entry of `address` on interface `index`, if there is one.
///
/// Blocking (a neighbour dump over a fresh `NETLINK_ROUTE` socket); needs no privilege.
///
/// # Errors
/// The socket cannot be used or the kernel refuses the dump.
pub fn neighbour(index: u32, address: IpAddr) -> Result<Option<Neighbour>, NetlinkError> {
    let socket = request_socket()?;
    let mut buf = Vec::with_capacity(RECV_BUFFER);
    let mut msg = NeighbourMessage::default();
    msg.header.family = if address.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let mut found = None;
    dump(
        &socket,
        &mut buf,
        "neighbour",
        1,
        RouteNetlinkMessage::GetNeighbour(msg),
        |m| {
            let RouteNetlinkMessage::NewNeighbour(n) = m else {
                return;
            };
            if n.header.ifindex != index {
                return;
            }
            let mut dst = None;
            let mut lladdr = None;
            for attr in &n.attributes {
                match attr {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                        dst = Some(IpAddr::from(*a));
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                        dst = Some(IpAddr::from(*a));
                    }
                    NeighbourAttribute::LinkLayerAddress(l) if !l.is_empty() => {
                        lladdr = Some(l.clone());
                    }
                    _ => {}
                }
            }
            if dst == Some(address) {
                found = Some(Neighbour {
                    lladdr,
                    state: match n.header.state {
                        NeighbourState::Incomplete => NudState::Incomplete,
                        NeighbourState::Reachable => NudState::Reachable,
                        NeighbourState::Stale => NudState::Stale,
                        NeighbourState::Delay => NudState::Delay,
                        NeighbourState::Probe => NudState::Probe,
                        NeighbourState::Failed => NudState::Failed,
                        NeighbourState::Noarp => NudState::Noarp,
                        NeighbourState::Permanent => NudState::Permanent,
                        _ => NudState::Other,
                    },
                });
            }
        },
    )?;
    Ok(found)
}

/// A `NETLINK_ROUTE` socket connected to the kernel, for requests and dumps.
fn request_socket() -> Result<Socket, NetlinkError> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(sock_err("open"))?;
    socket.bind_auto().map_err(sock_err("bind"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(sock_err("connect"))?;
    Ok(socket)
}

/// Sends one (non-dump) request and returns the kernel's answer.
fn request(
    socket: &Socket,
    what: &'static str,
    request: RouteNetlinkMessage,
) -> Result<RouteNetlinkMessage, NetlinkError> {
    const SEQ: u32 = 1;
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(request));
    packet.header.flags = NLM_F_REQUEST;
    packet.header.sequence_number = SEQ;
    packet.finalize();
    let mut out = vec![0; packet.buffer_len()];
    packet.serialize(&mut out);
    socket.send(&out, 0).map_err(sock_err("send"))?;
    let mut buf = Vec::with_capacity(RECV_BUFFER);
    loop {
        let n = receive(socket, &mut buf)?;
        let mut answer = None;
        for_each_message(&buf[..n], |msg| {
            if msg.header.sequence_number != SEQ {
                return Ok(());
            }
            match msg.payload {
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(NetlinkError::Refused {
                        what,
                        source: e.to_io(),
                    });
                }
                NetlinkPayload::InnerMessage(m) if answer.is_none() => answer = Some(m),
                _ => {}
            }
            Ok(())
        })?;
        if let Some(a) = answer {
            return Ok(a);
        }
    }
}

/// Sends one dump request and hands every answer to `each`, restarting when interrupted.
fn dump(
    socket: &Socket,
    buf: &mut Vec<u8>,
    what: &'static str,
    seq: u32,
    request: RouteNetlinkMessage,
    mut each: impl FnMut(RouteNetlinkMessage),
) -> Result<(), NetlinkError> {
    for _ in 0..DUMP_ATTEMPTS {
        let mut answers = Vec::new();
        let mut packet = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(request.clone()),
        );
        packet.header.flags = NLM_F_DUMP | NLM_F_REQUEST;
        packet.header.sequence_number = seq;
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        socket.send(&out, 0).map_err(sock_err("send"))?;
        let mut interrupted = false;
        'recv: loop {
            let n = receive(socket, buf)?;
            let mut done = false;
            for_each_message(&buf[..n], |msg| {
                if msg.header.sequence_number != seq {
                    return Ok(());
                }
                interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
                match msg.payload {
                    NetlinkPayload::Done(_) => done = true,
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        return Err(NetlinkError::Kernel {
                            what,
                            source: e.to_io(),
                        });
                    }
                    NetlinkPayload::InnerMessage(m) => answers.push(m),
                    _ => {}
                }
                Ok(())
            })?;
            if done {
                break 'recv;
            }
        }
        if !interrupted {
            answers.into_iter().for_each(&mut each);
            return Ok(());
        }
    }
    Err(NetlinkError::Interrupted { what })
}

/// Reads one datagram into `buf` (cleared first) and returns its length.
fn receive(socket: &Socket, buf: &mut Vec<u8>) -> Result<usize, NetlinkError> {
    buf.clear();
    buf.reserve(RECV_BUFFER);
    // MSG_TRUNC: the return value is the datagram's real length, so truncation is seen.
    let n = socket
        .recv(buf, libc::MSG_TRUNC)
        .map_err(sock_err("receive"))?;
    if n > buf.len() {
        return Err(NetlinkError::Truncated { len: n });
    }
    Ok(n)
}

/// Decodes every netlink message of one datagram.
fn for_each_message(
    mut bytes: &[u8],
    mut f: impl FnMut(NetlinkMessage<RouteNetlinkMessage>) -> Result<(), NetlinkError>,
) -> Result<(), NetlinkError> {
    while !bytes.is_empty() {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
            .map_err(NetlinkError::Decode)?;
        // Messages are aligned to 4 bytes (NLMSG_ALIGN); a zero length would never advance.
        let len = (msg.header.length as usize).next_multiple_of(4);
        if len == 0 {
            break;
        }
        f(msg)?;
        bytes = bytes.get(len..).unwrap_or_default();
    }
    Ok(())
}

fn interface(link: &LinkMessage) -> Interface {
    let mut i = Interface {
        index: link.header.index,
        name: String::new(),
        mac: None,
        mtu: None,
        oper_state: OperState::Unknown,
        flags: link.header.flags.into(),
        kind: None,
        counters: None,
        addresses: Vec::new(),
    };
    for attr in &link.attributes {
        match attr {
            LinkAttribute::IfName(n) => i.name.clone_from(n),
            LinkAttribute::Address(mac) if !mac.is_empty() => {
                i.mac = Some(
                    mac.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                );
            }
            LinkAttribute::Mtu(m) => i.mtu = Some(*m),
            LinkAttribute::OperState(s) => i.oper_state = (*s).into(),
            LinkAttribute::LinkInfo(infos) => {
                i.kind = infos.iter().find_map(|info| match info {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                });
            }
            LinkAttribute::Stats64(s) => {
                i.counters = Some(Counters {
                    rx_bytes: s.rx_bytes,
                    tx_bytes: s.tx_bytes,
                    rx_packets: s.rx_packets,
                    tx_packets: s.tx_packets,
                    rx_errors: s.rx_errors,
                    tx_errors: s.tx_errors,
                    rx_dropped: s.rx_dropped,
                    tx_dropped: s.tx_dropped,
                });
            }
            LinkAttribute::Stats(s) if i.counters.is_none() => {
                i.counters = Some(Counters {
                    rx_bytes: s.rx_bytes.into(),
                    tx_bytes: s.tx_bytes.into(),
                    rx_packets: s.rx_packets.into(),
                    tx_packets: s.tx_packets.into(),
                    rx_errors: s.rx_errors.into(),
                    tx_errors: s.tx_errors.into(),
                    rx_dropped: s.rx_dropped.into(),
                    tx_dropped: s.tx_dropped.into(),
                });
            }
            _ => {}
        }
    }
    i
}

/// The link index and address of an address message; `None` for one without an address.
fn address(msg: &AddressMessage) -> Option<(u32, Address)> {
    // IFA_LOCAL is the local address; IFA_ADDRESS is the peer's on a point-to-point link and
    // the only one IPv6 sends.
    let mut local = None;
    let mut addr = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => addr = Some(*ip),
            _ => {}
        }
    }
    Some((
        msg.header.index,
        Address {
            address: local.or(addr)?,
            prefix_len: msg.header.prefix_len,
            scope: msg.header.scope.into(),
        },
    ))
}

/// The change a notification announces, if it is one this module reports.
fn change(msg: RouteNetlinkMessage) -> Option<Change> {
    Some(match msg {
        RouteNetlinkMessage::NewLink(l) => Change::Link(interface(&l)),
        RouteNetlinkMessage::DelLink(l) => {
            let i = interface(&l);
            Change::LinkRemoved {
                index: i.index,
                name: i.name,
            }
        }
        RouteNetlinkMessage::NewAddress(a) => {
            let (index, address) = address(&a)?;
            Change::AddressAdded { index, address }
        }
        RouteNetlinkMessage::DelAddress(a) => {
            let (index, address) = address(&a)?;
            Change::AddressRemoved { index, address }
        }
        _ => return None,
    })
}

/// A subscription to the kernel's link and address notifications of the network namespace
/// of the thread that opened it.
pub struct Watch {
    fd: AsyncFd<Socket>,
    buf: Vec<u8>,
    pending: VecDeque<Change>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// Joins `RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR` and `RTNLGRP_IPV6_IFADDR`.
    ///
    /// # Panics
    /// Outside a tokio runtime with I/O enabled (the socket is driven by its reactor).
    ///
    /// # Errors
    /// The socket cannot be opened, bound, joined to the groups or registered with tokio.
    pub fn new() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(sock_err("open"))?;
        socket.bind_auto().map_err(sock_err("bind"))?;
        for group in [
            libc::RTNLGRP_LINK,
            libc::RTNLGRP_IPV4_IFADDR,
            libc::RTNLGRP_IPV6_IFADDR,
        ] {
            socket
                .add_membership(group)
                .map_err(sock_err("join a notification group"))?;
        }
        // A larger buffer only makes overruns rarer; without it they are still reported.
        let _ = socket.set_rx_buf_sz(WATCH_SOCKET_BUFFER);
        socket
            .set_non_blocking(true)
            .map_err(sock_err("set non-blocking"))?;
        // SAFETY: `Socket` owns its file descriptor and closes it only when dropped; the
        // `AsyncFd` owns the socket and never replaces it, so the descriptor stays the
        // registered one until the registration ends.
        let fd = unsafe { AsyncFd::register(socket) }
            .map_err(|e| sock_err("register with tokio")(e.into()))?;
        Ok(Self {
            fd,
            buf: Vec::with_capacity(RECV_BUFFER),
            pending: VecDeque::new(),
        })
    }

    /// The next change. Cancel-safe: a change is never lost when the future is dropped.
    ///
    /// # Errors
    /// Reading from the socket fails (other than an overrun, which is [`Change::Overrun`]),
    /// or the kernel sends what cannot be decoded.
    pub async fn next(&mut self) -> Result<Change, NetlinkError> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Ok(c);
            }
            let mut guard = self
                .fd
                .readable()
                .await
                .map_err(sock_err("wait for notifications"))?;
            let n = match guard.try_io(|fd| {
                let socket = fd.get_ref();
                self.buf.clear();
                self.buf.reserve(RECV_BUFFER);
                socket.recv(&mut self.buf, libc::MSG_TRUNC)
            }) {
                Err(_would_block) => continue,
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Ok(Change::Overrun);
                }
                Ok(Err(e)) => return Err(sock_err("receive")(e)),
                Ok(Ok(n)) => n,
            };
            if n > self.buf.len() {
                // A lost notification is an overrun to the consumer: re-read everything.
                return Ok(Change::Overrun);
            }
            let pending = &mut self.pending;
            for_each_message(&self.buf[..n], |msg| {
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => pending.extend(change(m)),
                    NetlinkPayload::Overrun(_) => pending.push_back(Change::Overrun),
                    _ => {}
                }
                Ok(())
            })?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_with_its_addresses() {
        // Every namespace has `lo`, and the test's namespace has it up with 127.0.0.1/8.
        let all = interfaces().unwrap_or_else(|e| panic!("{}", crate::error_chain(&e)));
        let lo = all
            .iter()
            .find(|i| i.name == "lo")
            .unwrap_or_else(|| panic!("no lo in {all:?}"));
        assert!(lo.flags.loopback, "{lo:?}");
        assert!(lo.mtu.is_some_and(|m| m > 0), "{lo:?}");
        assert!(lo.counters.is_some(), "{lo:?}");
        if lo.flags.up {
            assert!(
                lo.addresses
                    .iter()
                    .any(|a| a.address == IpAddr::from([127, 0, 0, 1])
                        && a.prefix_len == 8
                        && a.scope == Scope::Host),
                "{lo:?}"
            );
        }
    }

    #[test]
    fn a_route_to_a_loopback_address_is_local() {
        let r = route_to(IpAddr::from([127, 0, 0, 1]), None)
            .unwrap_or_else(|e| panic!("{}", crate::error_chain(&e)));
        assert_eq!(r.kind, RouteKind::Local, "{r:?}");
        assert!(r.oif.is_some(), "{r:?}");
        // No neighbour entry is ever made for a loopback address.
        let n = neighbour(r.oif.unwrap_or(1), IpAddr::from([127, 0, 0, 1]))
            .unwrap_or_else(|e| panic!("{}", crate::error_chain(&e)));
        assert!(n.as_ref().is_none_or(|n| !n.usable()), "{n:?}");
    }

    #[test]
    fn messages_in_one_datagram_are_all_decoded() {
        let mut bytes = Vec::new();
        for index in [3_u32, 7] {
            let mut link = LinkMessage::default();
            link.header.index = index;
            link.attributes
                .push(LinkAttribute::IfName(format!("if{index}")));
            let mut m = NetlinkMessage::new(
                NetlinkHeader::default(),
                NetlinkPayload::from(RouteNetlinkMessage::NewLink(link)),
            );
            m.finalize();
            let mut out = vec![0; m.buffer_len()];
            m.serialize(&mut out);
            // Pad to the 4-byte alignment the kernel uses between messages.
            out.resize(out.len().next_multiple_of(4), 0);
            bytes.extend(out);
        }
        let mut seen = Vec::new();
        for_each_message(&bytes, |m| {
            if let NetlinkPayload::InnerMessage(m) = m.payload {
                seen.extend(change(m));
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<_> = seen
            .iter()
            .map(|c| match c {
                Change::Link(i) => (i.index, i.name.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(names, [(3, "if3".to_owned()), (7, "if7".to_owned())]);
        let garbage = [0xff_u8; 7];
        assert!(matches!(
            for_each_message(&garbage, |_| Ok(())),
            Err(NetlinkError::Decode(_))
        ));
    }
}
