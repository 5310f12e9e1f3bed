//! Privileged: the raw rate generator's AF_XDP transmit path, through the real
//! `rookery-packetd` binary (as uid 65534 with the unit's capabilities, in the sender namespace
//! of a veth pair this test creates). In the other namespace an `AF_PACKET` socket on the veth
//! captures every frame, and the test checks each one itself: Ethernet addresses (the veth's
//! MACs, i.e. the neighbour lookup worked), IPv4 header checksum, UDP checksum recomputed over
//! the pseudo-header (IPv4 and IPv6; IPv6 never 0), DSCP, TTL / hop limit, size, ports and the
//! sequence numbers 0..N exactly once, in order. The session must report `backend = "af-xdp"`
//! (copy mode on `vs`), and its IPv4 packets carry Identification 0, which only the AF_XDP
//! template sends (the kernel numbers a connected UDP socket's packets): a generator that
//! silently used its socket fails here twice. Two sessions at once take queues 0 and 1; an
//! AF_XDP session's echoed packets are counted as received on its UDP socket. Also: a destination that is a local address
//! falls back to `sendmmsg` naming why; without `CAP_NET_RAW` the kernel refuses the AF_XDP
//! socket and the session falls back naming that; `[generator] backend = "af-xdp"` makes a
//! session that cannot use AF_XDP fail instead; `backend = "socket"` never tries it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use rookery_common::proto::packet_testing_client::PacketTestingClient;
use rookery_common::proto::{
    GetSessionRequest, Session, SessionKind, SessionSpec, StartSessionRequest,
};

mod netns;
use netns::{Pair, require_root};

const PORT: u16 = 9000;

/// An `AF_PACKET` socket capturing every frame arriving on one interface.
struct Capture {
    fd: OwnedFd,
}

impl Capture {
    /// Opens it in the calling thread's namespace on interface `dev`.
    fn new(dev: &str) -> Self {
        let proto = u16::try_from(libc::ETH_P_ALL).unwrap().to_be();
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(dev).unwrap();
        // SAFETY: a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(index > 0, "no interface {dev}");
        // SAFETY: sockaddr_ll is plain old data; all zeroes is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = u16::try_from(libc::AF_PACKET).unwrap();
        sll.sll_protocol = proto;
        sll.sll_ifindex = i32::try_from(index).unwrap();
        // SAFETY: binds to a sockaddr_ll of the right length that outlives the call.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast(),
                u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap(),
            )
        };
        assert_eq!(r, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
        let big: libc::c_int = 32 << 20;
        // SAFETY: an int option that outlives the call (SO_RCVBUFFORCE: root may exceed rmem_max).
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const big).cast(),
                4,
            );
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: a timeval option that outlives the call.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                u32::try_from(std::mem::size_of::<libc::timeval>()).unwrap(),
            );
        }
        Self { fd }
    }

    /// UDP frames to port [`PORT`] until `n` arrived or none came for 3 s.
    fn frames(&self, n: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0_u8; 16_384];
        let mut last = Instant::now();
        while out.len() < n && last.elapsed() < Duration::from_secs(3) {
            // SAFETY: recv into a buffer of the length passed, which outlives the call.
            let r =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(len) = usize::try_from(r) else {
                continue;
            };
            let f = &buf[..len];
            if udp_offset(f).is_some_and(|u| f[u + 2..u + 4] == PORT.to_be_bytes()) {
                out.push(f.to_vec());
                last = Instant::now();
            }
        }
        out
    }
}

/// Offset of the UDP header of an IPv4 (without options) or IPv6 (no extension header) frame.
fn udp_offset(f: &[u8]) -> Option<usize> {
    match (f.get(12..14)?, f.get(14)?) {
        ([0x08, 0x00], 0x45) if f.get(23) == Some(&17) => Some(34),
        ([0x86, 0xdd], v) if v >> 4 == 6 && f.get(20) == Some(&17) => Some(54),
        _ => None,
    }
}

fn sum16(b: &[u8]) -> u64 {
    b.chunks(2)
        .map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    u16::try_from(s).unwrap()
}

/// Checks one captured frame of packet `seq` byte by byte.
fn check_frame(
    f: &[u8],
    seq: u64,
    size: usize,
    dscp: u8,
    macs: ([u8; 6], [u8; 6]),
    src: IpAddr,
    dst: IpAddr,
) {
    assert_eq!(&f[0..6], &macs.0, "destination MAC of packet {seq}");
    assert_eq!(&f[6..12], &macs.1, "source MAC of packet {seq}");
    let u = udp_offset(f).unwrap();
    let udp = &f[u..];
    assert_eq!(udp.len(), 8 + size, "UDP length of packet {seq}");
    assert_eq!(usize::from(u16::from_be_bytes([udp[4], udp[5]])), 8 + size);
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), PORT);
    assert_eq!(&udp[8..16], &seq.to_be_bytes(), "sequence number");
    assert!(
        udp[16..].iter().all(|b| *b == 0),
        "payload after the sequence number of {seq}"
    );
    let pseudo: Vec<u8> = if u == 34 {
        let ip = &f[14..34];
        assert_eq!(
            fold(sum16(ip)),
            0xffff,
            "IPv4 header checksum of packet {seq}"
        );
        assert_eq!(ip[1], dscp << 2, "TOS of packet {seq}");
        assert_eq!(ip[8], 64, "TTL");
        assert_eq!(
            u16::from_be_bytes([ip[2], ip[3]]),
            u16::try_from(28 + size).unwrap()
        );
        assert_eq!(
            &ip[4..6],
            &[0, 0],
            "IPv4 Identification 0: sent by the AF_XDP template"
        );
        assert_eq!(ip[6] & 0x40, 0x40, "DF");
        assert_eq!(IpAddr::from(<[u8; 4]>::try_from(&ip[12..16]).unwrap()), src);
        assert_eq!(IpAddr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap()), dst);
        let mut p = ip[12..20].to_vec();
        p.extend_from_slice(&[0, 17]);
        p.extend_from_slice(&udp[4..6]);
        p
    } else {
        let ip = &f[14..54];
        let first = u32::from_be_bytes([ip[0], ip[1], ip[2], ip[3]]);
        assert_eq!(
            (first >> 20) & 0xff,
            u32::from(dscp) << 2,
            "traffic class of packet {seq}"
        );
        assert_eq!(ip[7], 64, "hop limit");
        assert_ne!(
            &udp[6..8],
            &[0, 0],
            "IPv6 UDP checksum present on packet {seq}"
        );
        assert_eq!(IpAddr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap()), src);
        assert_eq!(
            IpAddr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap()),
            dst
        );
        let mut p = ip[8..40].to_vec();
        p.extend_from_slice(&u32::try_from(udp.len()).unwrap().to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 17]);
        p
    };
    // A correct UDP checksum makes the sum over the pseudo-header and datagram all ones.
    assert_eq!(
        fold(sum16(&pseudo) + sum16(udp)),
        0xffff,
        "UDP checksum of packet {seq}"
    );
}

fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "cat",
            &format!("/sys/class/net/{dev}/address"),
        ])
        .output()
        .unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn raw(dest: IpAddr, size: u32, dscp: u32, count: u64, rate: u32) -> SessionSpec {
    SessionSpec {
        kind: SessionKind::Raw.into(),
        destination: dest.to_string(),
        port: u32::from(PORT),
        dscp,
        packet_size: size,
        rate_pps: rate,
        count,
        ..SessionSpec::default()
    }
}

/// Starts `spec` and waits (up to 30 s) until it is no longer running.
async fn session(
    c: &mut PacketTestingClient<tonic::transport::Channel>,
    spec: SessionSpec,
) -> Session {
    let s = c
        .start_session(StartSessionRequest { spec: Some(spec) })
        .await
        .unwrap()
        .into_inner();
    let t = Instant::now();
    loop {
        let g = c
            .get_session(GetSessionRequest { id: s.id })
            .await
            .unwrap()
            .into_inner();
        if g.state != "running" {
            return g;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "still running: {g:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn afxdp_generator_packetd_sends_exact_frames_over_ipv4_and_ipv6() {
    require_root("afxdp_generator_packetd_sends_exact_frames_over_ipv4_and_ipv6");
    let pair = Pair::new("afx", 19);
    let macs = (mac_of(&pair.refl, "vr"), mac_of(&pair.send, "vs"));
    // The capture and a UDP socket on the port (no ICMP port unreachable back) live in the
    // receiver namespace; sockets keep it wherever they are read.
    Pair::enter(&pair.refl);
    let capture = Capture::new("vr");
    let _sink4 = std::net::UdpSocket::bind((pair.v4(1), PORT)).unwrap();
    let _sink6 = std::net::UdpSocket::bind((pair.v6(1), PORT)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, sock) = netns::spawn_packetd(
        &pair.send,
        dir.path(),
        "[sessions]\nmax-pps = 100000\n",
        "127.0.0.1:9133",
    );
    rt().block_on(async {
        let mut c = PacketTestingClient::new(rookery_common::grpc::connect(&sock).await.unwrap());
        for (dst, src, size, dscp) in [
            (pair.v4(1), pair.v4(2), 18_u32, 46_u8),
            (pair.v6(1), pair.v6(2), 1000, 10),
        ] {
            let n = 3000_u64;
            let done = session(&mut c, raw(dst, size, u32::from(dscp), n, 20_000)).await;
            let st = done.stats.clone().unwrap();
            assert_eq!(done.state, "done", "{done:?}");
            assert_eq!(st.backend, "af-xdp", "AF_XDP was not used: {st:?}");
            assert!(
                st.backend_detail.starts_with("copy mode on vs queue 0"),
                "{st:?}"
            );
            assert_eq!((st.sent, st.send_errors), (n, 0), "{st:?}");
            let frames = capture.frames(usize::try_from(n).unwrap() + 1);
            assert_eq!(
                frames.len(),
                usize::try_from(n).unwrap(),
                "frames captured on vr to {dst}"
            );
            for (seq, f) in frames.iter().enumerate() {
                check_frame(
                    f,
                    seq as u64,
                    usize::try_from(size).unwrap(),
                    dscp,
                    macs,
                    src,
                    dst,
                );
            }
        }
        // Two sessions at once: one AF_XDP socket per queue, so the second takes queue 1.
        let mut ids = Vec::new();
        for _ in 0..2 {
            let s = c
                .start_session(StartSessionRequest {
                    spec: Some(raw(pair.v4(1), 18, 0, 2000, 2000)),
                })
                .await
                .unwrap()
                .into_inner();
            ids.push(s.id);
        }
        let mut queues = Vec::new();
        for id in ids {
            let t = Instant::now();
            let done = loop {
                let g = c
                    .get_session(GetSessionRequest { id })
                    .await
                    .unwrap()
                    .into_inner();
                if g.state != "running" {
                    break g;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "still running: {g:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let st = done.stats.unwrap();
            assert_eq!((st.backend.as_str(), st.sent), ("af-xdp", 2000), "{st:?}");
            queues.push(st.backend_detail);
        }
        queues.sort();
        assert!(
            queues[0].starts_with("copy mode on vs queue 0")
                && queues[1].starts_with("copy mode on vs queue 1"),
            "{queues:?}"
        );

        // Replies: an echo in the receiver namespace answers every packet; the session counts
        // them on its UDP socket, whose address and port the AF_XDP frames carry.
        let echo = std::net::UdpSocket::bind((pair.v4(1), 2000)).unwrap();
        echo.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let echoer = std::thread::spawn(move || {
            let mut buf = [0_u8; 2048];
            let mut n = 0;
            while let Ok((len, from)) = echo.recv_from(&mut buf) {
                echo.send_to(&buf[..len], from).unwrap();
                n += 1;
            }
            n
        });
        let mut spec = raw(pair.v4(1), 18, 0, 500, 2000);
        spec.port = 2000;
        let done = session(&mut c, spec).await;
        let st = done.stats.unwrap();
        assert_eq!(
            (st.backend.as_str(), st.sent, st.received),
            ("af-xdp", 500, 500),
            "{st:?}"
        );
        assert_eq!(echoer.join().unwrap(), 500);
    });
}

#[test]
fn afxdp_generator_packetd_falls_back_naming_why() {
    require_root("afxdp_generator_packetd_falls_back_naming_why");
    let pair = Pair::new("afb", 20);
    let dir = tempfile::tempdir().unwrap();
    // Without CAP_NET_RAW: the kernel refuses the AF_XDP socket.
    let (daemon, sock) = netns::spawn_packetd_caps(
        &pair.send,
        dir.path(),
        "",
        "127.0.0.1:9134",
        "-all,+bpf,+net_admin,+net_bind_service",
    );
    rt().block_on(async {
        let mut c = PacketTestingClient::new(rookery_common::grpc::connect(&sock).await.unwrap());
        let done = session(&mut c, raw(pair.v4(1), 18, 0, 20, 1000)).await;
        let st = done.stats.unwrap();
        assert_eq!(
            (done.state.as_str(), st.backend.as_str(), st.sent),
            ("done", "sendmmsg", 20),
            "{st:?}"
        );
        assert!(
            st.backend_detail.contains("refused an AF_XDP socket on vs")
                && st.backend_detail.contains("Operation not permitted"),
            "{st:?}"
        );
    });
    drop(daemon);

    // With the unit's capabilities: a local destination (the sender's own address) goes over
    // loopback, where AF_XDP cannot send.
    let dir = tempfile::tempdir().unwrap();
    let (daemon, sock) = netns::spawn_packetd(&pair.send, dir.path(), "", "127.0.0.1:9134");
    rt().block_on(async {
        let mut c = PacketTestingClient::new(rookery_common::grpc::connect(&sock).await.unwrap());
        let done = session(&mut c, raw(pair.v4(2), 18, 0, 20, 1000)).await;
        let st = done.stats.unwrap();
        assert_eq!((st.backend.as_str(), st.sent), ("sendmmsg", 20), "{st:?}");
        assert!(st.backend_detail.contains("is a local address"), "{st:?}");
        // An on-link address nobody answers: the next hop never resolves.
        let done = session(&mut c, raw("10.77.20.99".parse().unwrap(), 18, 0, 5, 1000)).await;
        let st = done.stats.unwrap();
        assert_eq!(st.backend, "sendmmsg", "{st:?}");
        assert!(
            st.backend_detail
                .contains("the next hop 10.77.20.99 on vs is not resolved"),
            "{st:?}"
        );
    });
    drop(daemon);

    // backend = "af-xdp": a session that cannot use it fails, naming why.
    let dir = tempfile::tempdir().unwrap();
    let (daemon, sock) = netns::spawn_packetd(
        &pair.send,
        dir.path(),
        "[generator]\nbackend = \"af-xdp\"\nzero-copy = false\n",
        "127.0.0.1:9134",
    );
    rt().block_on(async {
        let mut c = PacketTestingClient::new(rookery_common::grpc::connect(&sock).await.unwrap());
        let done = session(&mut c, raw(pair.v4(2), 18, 0, 20, 1000)).await;
        assert_eq!(done.state, "failed", "{done:?}");
        assert!(
            done.error.contains("AF_XDP is required") && done.error.contains("local address"),
            "{done:?}"
        );
        // And one that can still does.
        let done = session(&mut c, raw(pair.v4(1), 18, 0, 20, 1000)).await;
        assert_eq!(
            (done.state.as_str(), done.stats.unwrap().backend.as_str()),
            ("done", "af-xdp")
        );
    });
    drop(daemon);

    // backend = "socket": AF_XDP is not tried.
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, sock) = netns::spawn_packetd(
        &pair.send,
        dir.path(),
        "[generator]\nbackend = \"socket\"\n",
        "127.0.0.1:9134",
    );
    rt().block_on(async {
        let mut c = PacketTestingClient::new(rookery_common::grpc::connect(&sock).await.unwrap());
        let done = session(&mut c, raw(pair.v4(1), 18, 0, 20, 1000)).await;
        let st = done.stats.unwrap();
        assert_eq!((st.backend.as_str(), st.sent), ("sendmmsg", 20), "{st:?}");
        assert_eq!(st.backend_detail, "[generator] backend = \"socket\"");
    });
}
