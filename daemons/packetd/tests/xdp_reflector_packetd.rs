//! Privileged: the XDP STAMP reflector and echo across a veth pair between two network
//! namespaces this test creates (and removes through a Drop guard). Every field of the reflected
//! STAMP packet is checked; the UDP checksum is verified by the receiving kernel (the sender
//! side has TX checksum offload off, so what it receives carries a full checksum that the
//! stack checks, and a wrong one is dropped: the test then times out and fails).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rookery_packetd::allow::Allowlist;
use rookery_packetd::xdp::{ModePolicy, Reflector};

mod netns;
use netns::{Pair, peer_pass, require_root};

const NTP_EPOCH_OFFSET: u64 = 2_208_988_800;

fn now_ntp() -> (u32, u32) {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let secs = u32::try_from((d.as_secs() + NTP_EPOCH_OFFSET) & 0xffff_ffff).unwrap();
    let frac = u32::try_from((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000).unwrap();
    (secs, frac)
}

fn ntp_ns(b: &[u8]) -> i128 {
    let secs = i128::from(u32::from_be_bytes(b[0..4].try_into().unwrap()));
    let frac = i128::from(u32::from_be_bytes(b[4..8].try_into().unwrap()));
    secs * 1_000_000_000 + ((frac * 1_000_000_000) >> 32)
}

fn stamp_request(seq: u32, ssid: u16, err: u16, len: usize) -> Vec<u8> {
    let mut p = vec![0_u8; len];
    let (s, f) = now_ntp();
    p[0..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&s.to_be_bytes());
    p[8..12].copy_from_slice(&f.to_be_bytes());
    p[12..14].copy_from_slice(&err.to_be_bytes());
    p[14..16].copy_from_slice(&ssid.to_be_bytes());
    for (i, b) in p.iter_mut().enumerate().skip(44) {
        *b = u8::try_from(i & 0xff).unwrap();
    }
    p
}

fn set_ttl(sock: &UdpSocket, v6: bool, ttl: i32) {
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS)
    } else {
        (libc::IPPROTO_IP, libc::IP_TTL)
    };
    // SAFETY: valid socket fd and a valid i32 option value of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&raw const ttl).cast(),
            u32::try_from(std::mem::size_of::<i32>()).unwrap(),
        )
    };
    assert_eq!(rc, 0, "setsockopt ttl");
}

/// Sends one STAMP request and checks every byte of the reply.
fn check_stamp(sock: &UdpSocket, to: SocketAddr, seq: u32, len: usize, ttl: u8, refl_err: u16) {
    let req = stamp_request(seq, 0xbeef, 0x8123, len);
    sock.send_to(&req, to).unwrap();
    let mut buf = [0_u8; 2048];
    let (n, from) = sock
        .recv_from(&mut buf)
        .expect("a STAMP reply within the timeout");
    let (s4, f4) = now_ntp();
    let t4 = ntp_ns(&[s4.to_be_bytes(), f4.to_be_bytes()].concat());
    let r = &buf[..n];
    assert_eq!(from, to, "reply comes from the reflector address and port");
    assert_eq!(n, len, "reply is exactly as long as the request");
    assert_eq!(
        &r[0..4],
        &req[0..4],
        "stateless: Sequence Number = the sender's"
    );
    assert_eq!(
        u16::from_be_bytes([r[12], r[13]]),
        refl_err,
        "reflector Error Estimate"
    );
    assert_eq!(&r[14..16], &[0xbe, 0xef], "SSID returned");
    assert_eq!(&r[24..28], &req[0..4], "Session-Sender Sequence Number");
    assert_eq!(&r[28..36], &req[4..12], "Session-Sender Timestamp");
    assert_eq!(&r[36..38], &req[12..14], "Session-Sender Error Estimate");
    assert_eq!(&r[38..40], &[0, 0], "MBZ");
    assert_eq!(r[40], ttl, "Ses-Sender TTL from the received IP header");
    assert_eq!(&r[41..44], &[0, 0, 0], "MBZ");
    assert_eq!(
        &r[44..],
        &req[44..],
        "bytes after the STAMP header unchanged"
    );
    let t1 = ntp_ns(&req[4..12]);
    let t2 = ntp_ns(&r[16..24]);
    let t3 = ntp_ns(&r[4..12]);
    let slack = 2_000_000; // 2 ms: different reads of the same clock
    assert!(t1 - slack <= t2, "receive timestamp {t2} before send {t1}");
    assert!(t2 <= t3, "transmit timestamp {t3} before receive {t2}");
    assert!(
        t3 - t2 < 1_000_000,
        "reflector residence {} ns implausible",
        t3 - t2
    );
    assert!(
        t3 <= t4 + slack,
        "transmit timestamp {t3} after the reply arrived {t4}"
    );
}

fn reflector_in(pair: &Pair) -> Reflector {
    Pair::enter(&pair.refl);
    let mut refl = Reflector::load(862, 2000).expect("XDP object loads");
    refl.set_allowlist(&pair.prefixes())
        .expect("allowlist written");
    let a = refl
        .attach("vr", ModePolicy::Native)
        .expect("native XDP attaches on veth");
    assert_eq!(a.iface, "vr");
    refl
}

#[test]
fn xdp_stamp_reflector_packetd_v4_v6_every_field() {
    require_root("xdp_stamp_reflector_packetd_v4_v6_every_field");
    let pair = Pair::new("stamp", 1);
    let refl = reflector_in(&pair);
    let err = refl.config().error_estimate;
    let _peer = peer_pass(&pair);
    for (v6, host) in [(false, pair.v4(2)), (true, pair.v6(2))] {
        let sock = UdpSocket::bind(SocketAddr::new(host, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        set_ttl(&sock, v6, 37);
        let to = SocketAddr::new(if v6 { pair.v6(1) } else { pair.v4(1) }, 862);
        check_stamp(&sock, to, 7, 44, 37, err);
        check_stamp(&sock, to, 0xfffffffe, 44, 37, err);
        set_ttl(&sock, v6, 200);
        check_stamp(&sock, to, 8, 112, 200, err);
    }
    let c = refl.counters().unwrap();
    assert_eq!(c.reflected, 6, "{c:?}");
    assert_eq!(c.malformed, 0, "{c:?}");
}

#[test]
fn xdp_echo_malformed_and_pass_packetd() {
    require_root("xdp_echo_malformed_and_pass_packetd");
    let pair = Pair::new("echo", 2);
    let refl = reflector_in(&pair);
    // Still in the reflector namespace: a listener for traffic that must pass untouched.
    let other = UdpSocket::bind(SocketAddr::new(pair.v4(1), 7000)).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let other6 = UdpSocket::bind(SocketAddr::new(pair.v6(1), 7000)).unwrap();
    other6
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let _peer = peer_pass(&pair);
    let before = refl.counters().unwrap();
    for (host, dst, listener) in [
        (pair.v4(2), pair.v4(1), &other),
        (pair.v6(2), pair.v6(1), &other6),
    ] {
        let sock = UdpSocket::bind(SocketAddr::new(host, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // Echo: payload back unchanged, from the echo port.
        let payload: Vec<u8> = (0..200_u8).collect();
        sock.send_to(&payload, SocketAddr::new(dst, 2000)).unwrap();
        let mut buf = [0_u8; 2048];
        let (n, from) = sock
            .recv_from(&mut buf)
            .expect("an echo within the timeout");
        assert_eq!(&buf[..n], &payload[..]);
        assert_eq!(from, SocketAddr::new(dst, 2000));
        // Other traffic passes to the stack untouched.
        sock.send_to(b"not for packetd", SocketAddr::new(dst, 7000))
            .unwrap();
        let (n, from) = listener
            .recv_from(&mut buf)
            .expect("passed traffic reaches the socket");
        assert_eq!(&buf[..n], b"not for packetd");
        assert_eq!(from, sock.local_addr().unwrap());
        // A STAMP packet shorter than 44 bytes is malformed and not answered.
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        sock.send_to(&[1_u8; 20], SocketAddr::new(dst, 862))
            .unwrap();
        assert!(
            sock.recv_from(&mut buf).is_err(),
            "a short STAMP packet must not be reflected"
        );
    }
    let after = refl.counters().unwrap();
    let d = after.since(&before);
    assert_eq!(d.reflected, 0, "{d:?}");
    assert_eq!(d.echoed, 2, "{d:?}");
    assert_eq!(d.malformed, 2, "{d:?}");
    // The two datagrams to port 7000 at least; ARP/NDP may add more.
    assert!(d.passed >= 2, "{d:?}");
}

/// Sends one STAMP request from `sock` and returns whether a reply came back.
fn answered(sock: &UdpSocket, to: SocketAddr, seq: u32) -> bool {
    sock.send_to(&stamp_request(seq, 1, 0, 44), to).unwrap();
    let mut buf = [0_u8; 256];
    sock.recv_from(&mut buf).is_ok()
}

#[test]
fn xdp_allowlist_packetd_answers_allowed_sources_only() {
    require_root("xdp_allowlist_packetd_answers_allowed_sources_only");
    let pair = Pair::new("allow", 4);
    let mut refl = reflector_in(&pair);
    // Only the sender's .2 / ::2 addresses; .3 / ::3 are on-link but not allowed.
    let allow = Allowlist(
        [format!("{}/32", pair.v4(2)), format!("{}", pair.v6(2))]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect(),
    );
    refl.set_allowlist(&allow).unwrap();
    assert_eq!(refl.allowlist(), &allow);
    netns::in_ns(
        &pair.send,
        &[
            "ip",
            "addr",
            "add",
            &format!("{}/24", pair.v4(3)),
            "dev",
            "vs",
        ],
    );
    netns::in_ns(
        &pair.send,
        &[
            "ip",
            "addr",
            "add",
            &format!("{}/64", pair.v6(3)),
            "dev",
            "vs",
            "nodad",
        ],
    );
    let _peer = peer_pass(&pair);
    let before = refl.counters().unwrap();
    for (ok, bad, dst) in [
        (pair.v4(2), pair.v4(3), pair.v4(1)),
        (pair.v6(2), pair.v6(3), pair.v6(1)),
    ] {
        let to = SocketAddr::new(dst, 862);
        let good = UdpSocket::bind(SocketAddr::new(ok, 0)).unwrap();
        good.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert!(
            answered(&good, to, 1),
            "allowed source {ok} must be answered"
        );
        let denied = UdpSocket::bind(SocketAddr::new(bad, 0)).unwrap();
        denied
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(
            !answered(&denied, to, 2),
            "source {bad} is not in the allowlist"
        );
        // Echo obeys the same list.
        denied
            .send_to(b"echo?", SocketAddr::new(dst, 2000))
            .unwrap();
        let mut buf = [0_u8; 64];
        assert!(
            denied.recv_from(&mut buf).is_err(),
            "echo to {bad} must not be answered"
        );
    }
    let d = refl.counters().unwrap().since(&before);
    assert_eq!((d.reflected, d.denied, d.echoed), (2, 4, 0), "{d:?}");
    // Replacing the list takes effect at once: now everything in the /24 and /64 is allowed.
    refl.set_allowlist(&pair.prefixes()).unwrap();
    let sock = UdpSocket::bind(SocketAddr::new(pair.v4(3), 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert!(answered(&sock, SocketAddr::new(pair.v4(1), 862), 3));
    // An empty list answers nobody.
    refl.set_allowlist(&Allowlist::default()).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(!answered(&sock, SocketAddr::new(pair.v4(1), 862), 4));
}

#[test]
fn xdp_rate_bound_packetd_limits_each_source() {
    require_root("xdp_rate_bound_packetd_limits_each_source");
    let pair = Pair::new("rate", 5);
    let mut refl = reflector_in(&pair);
    refl.set_max_pps_per_source(5).unwrap();
    let _peer = peer_pass(&pair);
    let sock = UdpSocket::bind(SocketAddr::new(pair.v4(2), 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let to = SocketAddr::new(pair.v4(1), 862);
    let start = std::time::Instant::now();
    for seq in 0..20 {
        sock.send_to(&stamp_request(seq, 1, 0, 44), to).unwrap();
    }
    let sent_in = start.elapsed();
    let mut replies = 0;
    let mut buf = [0_u8; 128];
    while sock.recv_from(&mut buf).is_ok() {
        replies += 1;
    }
    // 20 requests within well under a second: one window allows 5; a window boundary in the
    // middle of the burst could allow 10 at most.
    assert!(
        sent_in < Duration::from_millis(500),
        "burst took {sent_in:?}"
    );
    assert!(
        (5..=10).contains(&replies),
        "{replies} replies to 20 requests at 5 pps"
    );
    let c = refl.counters().unwrap();
    assert_eq!(c.reflected, replies, "{c:?}");
    assert_eq!(c.rate_limited, 20 - replies, "{c:?}");
}
