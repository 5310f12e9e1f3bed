//! Privileged: the userspace reflector answers exactly like the XDP program. The same STAMP
//! request (same sequence number, timestamp, SSID, padding, TTL and TOS) is sent to packetd's
//! XDP reflector across one veth pair and to its userspace reflector across another; the two
//! replies must be identical byte for byte except the two reflector timestamps, and arrive with
//! the same TTL and TOS from the address the request was sent to. The userspace reflector also
//! enforces the allowlist, echoes, and ignores short STAMP packets (counted as malformed).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use rookery_packetd::allow::Allowlist;
use rookery_packetd::userspace::{Settings, UserspaceReflector};
use rookery_packetd::wire::{ntp_bytes, utc_now_ns};
use rookery_packetd::xdp::{ModePolicy, Reflector};

mod netns;
use netns::{Pair, peer_pass, require_root};

struct Reply {
    payload: Vec<u8>,
    from: SocketAddr,
    ttl: i32,
    tos: i32,
}

fn sender(host: IpAddr) -> UdpSocket {
    let sock = UdpSocket::bind(SocketAddr::new(host, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    if host.is_ipv4() {
        setsockopt(&sock, sockopt::Ipv4Ttl, &37).unwrap();
        setsockopt(&sock, sockopt::Ipv4Tos, &0x28).unwrap();
        setsockopt(&sock, sockopt::Ipv4RecvTtl, &true).unwrap();
        setsockopt(&sock, sockopt::IpRecvTos, &true).unwrap();
    } else {
        setsockopt(&sock, sockopt::Ipv6Ttl, &37).unwrap();
        setsockopt(&sock, sockopt::Ipv6TClass, &0x28).unwrap();
        setsockopt(&sock, sockopt::Ipv6RecvHopLimit, &true).unwrap();
        setsockopt(&sock, sockopt::Ipv6RecvTClass, &true).unwrap();
    }
    sock
}

fn exchange(sock: &UdpSocket, req: &[u8], to: SocketAddr) -> Option<Reply> {
    sock.send_to(req, to).unwrap();
    let mut buf = vec![0_u8; 2048];
    let mut cmsg = nix::cmsg_space!(libc::c_int, libc::c_int);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .ok()?;
    let n = msg.bytes;
    let a = msg.address.unwrap();
    let from = if let Some(v4) = a.as_sockaddr_in() {
        SocketAddr::new(IpAddr::V4(v4.ip()), v4.port())
    } else {
        let v6 = a.as_sockaddr_in6().unwrap();
        SocketAddr::new(IpAddr::V6(v6.ip()), v6.port())
    };
    let (mut ttl, mut tos) = (-1, -1);
    for c in msg.cmsgs().unwrap() {
        match c {
            ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => ttl = t,
            ControlMessageOwned::Ipv4Tos(t) => tos = i32::from(t),
            ControlMessageOwned::Ipv6TClass(t) => tos = t,
            _ => {}
        }
    }
    Some(Reply {
        payload: buf[..n].to_vec(),
        from,
        ttl,
        tos,
    })
}

fn request(seq: u32, len: usize) -> Vec<u8> {
    let mut p = vec![0_u8; len];
    p[0..4].copy_from_slice(&seq.to_be_bytes());
    p[4..12].copy_from_slice(&ntp_bytes(utc_now_ns()));
    p[12..14].copy_from_slice(&0x8123_u16.to_be_bytes());
    p[14..16].copy_from_slice(&0xbeef_u16.to_be_bytes());
    for (i, b) in p.iter_mut().enumerate().skip(44) {
        *b = u8::try_from(i & 0xff).unwrap();
    }
    p
}

/// The reply with both reflector timestamps blanked.
fn without_timestamps(p: &[u8]) -> Vec<u8> {
    let mut v = p.to_vec();
    v[4..12].fill(0);
    v[16..24].fill(0);
    v
}

#[test]
fn userspace_reflector_packetd_matches_xdp_byte_for_byte() {
    require_root("userspace_reflector_packetd_matches_xdp_byte_for_byte");
    let xpair = Pair::new("usx", 8);
    let upair = Pair::new("usu", 9);

    Pair::enter(&xpair.refl);
    let mut xdp = Reflector::load(862, 2000).unwrap();
    xdp.set_allowlist(&xpair.prefixes()).unwrap();
    xdp.attach("vr", ModePolicy::Native).unwrap();
    let _xpeer = peer_pass(&xpair);

    Pair::enter(&upair.refl);
    let settings = Settings {
        interfaces: vec!["vr".into()],
        stamp_port: 862,
        echo_port: 2000,
        max_pps_per_source: 0,
    };
    let us = UserspaceReflector::start(&settings, upair.prefixes()).unwrap();

    for v6 in [false, true] {
        let host = |p: &Pair, h| if v6 { p.v6(h) } else { p.v4(h) };
        Pair::enter(&xpair.send);
        let xsock = sender(host(&xpair, 2));
        Pair::enter(&upair.send);
        let usock = sender(host(&upair, 2));
        for (seq, len) in [(7_u32, 44_usize), (0xffff_fffe, 44), (9, 300)] {
            let req = request(seq, len);
            let xto = SocketAddr::new(host(&xpair, 1), 862);
            let uto = SocketAddr::new(host(&upair, 1), 862);
            let x = exchange(&xsock, &req, xto).expect("XDP reflector answers");
            let u = exchange(&usock, &req, uto).expect("userspace reflector answers");
            assert_eq!(x.payload.len(), len);
            assert_eq!(
                without_timestamps(&x.payload),
                without_timestamps(&u.payload),
                "v6={v6} seq={seq}: replies differ outside the timestamps"
            );
            assert_eq!(x.payload[40], 37, "Ses-Sender TTL from the request");
            assert_eq!(
                (x.from, u.from),
                (xto, uto),
                "reply source = request destination"
            );
            assert_eq!(
                (x.ttl, u.ttl),
                (255, 255),
                "STAMP replies leave with TTL 255"
            );
            assert_eq!((x.tos, u.tos), (0x28, 0x28), "TOS / traffic class kept");
            // The userspace timestamps are sane: t1 <= t2 <= t3, from a real clock.
            let ts =
                |b: &[u8]| rookery_packetd::wire::ntp_to_unix_ns(&<[u8; 8]>::try_from(b).unwrap());
            let (t1, t2, t3) = (
                ts(&req[4..12]),
                ts(&u.payload[16..24]),
                ts(&u.payload[4..12]),
            );
            assert!(t1 - 2_000_000 <= t2 && t2 <= t3, "{t1} {t2} {t3}");
            assert!(t3 - t2 < 50_000_000, "userspace residence {} ns", t3 - t2);
        }
        // Echo: payload back unchanged from the echo port, TTL 64, in both.
        let payload: Vec<u8> = (0..100_u8).collect();
        let x = exchange(&xsock, &payload, SocketAddr::new(host(&xpair, 1), 2000)).unwrap();
        let u = exchange(&usock, &payload, SocketAddr::new(host(&upair, 1), 2000)).unwrap();
        assert_eq!((&x.payload, &u.payload), (&payload, &payload));
        assert_eq!((x.ttl, u.ttl), (64, 64));
        assert_eq!(u.from, SocketAddr::new(host(&upair, 1), 2000));
        // A short STAMP packet is not answered by either.
        xsock
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        usock
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(exchange(&xsock, &[1; 20], SocketAddr::new(host(&xpair, 1), 862)).is_none());
        assert!(exchange(&usock, &[1; 20], SocketAddr::new(host(&upair, 1), 862)).is_none());
    }
    let (xc, uc) = (xdp.counters().unwrap(), us.counters());
    assert_eq!((xc.reflected, xc.echoed, xc.malformed), (6, 2, 2), "{xc:?}");
    assert_eq!((uc.reflected, uc.echoed, uc.malformed), (6, 2, 2), "{uc:?}");

    // The same allowlist rules: an empty list answers nobody and counts the packet as denied.
    us.set_allowlist(Allowlist::default());
    Pair::enter(&upair.send);
    let usock = sender(upair.v4(2));
    usock
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(exchange(&usock, &request(1, 44), SocketAddr::new(upair.v4(1), 862)).is_none());
    assert_eq!(us.counters().denied, 1, "{:?}", us.counters());
}
