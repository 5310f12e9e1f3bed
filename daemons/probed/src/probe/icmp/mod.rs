//! ICMP echo, IPv4 and IPv6: `count` requests `interval` apart, replies matched by a per-probe
//! token in the payload, RTT min/avg/max/stddev and loss in [`IcmpFacts`].
//!
//! Sockets: an unprivileged ICMP socket (`SOCK_DGRAM`, `IPPROTO_ICMP`) when the process's group
//! is inside `net.ipv4.ping_group_range`, else a raw socket (needs `CAP_NET_RAW`, which the
//! unit grants). Packet building and parsing ([`echo_request`], [`parse_reply`]) are pure.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::{Address, Failure, IcmpFacts, Phase, Run, net};
use crate::config::{IcmpSocket, Module};

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
/// Bytes of the payload that carry the probe's token (the rest is padding).
const TOKEN_LEN: usize = 8;

/// Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request with `id`, `seq` and a payload of `size` bytes starting with `token`.
pub fn echo_request(v6: bool, id: u16, seq: u16, token: u64, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; 8 + size.max(TOKEN_LEN)];
    p[0] = if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 };
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(&token.to_be_bytes());
    for (i, b) in p[16..].iter_mut().enumerate() {
        *b = (i & 0xff) as u8;
    }
    if !v6 {
        // ICMPv6 checksums cover a pseudo-header; the kernel fills them in for us.
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// The sequence number of `packet` if it is an echo reply carrying `token`. Raw IPv4 sockets
/// deliver the IP header too (`has_ip_header`).
pub fn parse_reply(packet: &[u8], v6: bool, has_ip_header: bool, token: u64) -> Option<u16> {
    let icmp = if has_ip_header {
        let ihl = usize::from(packet.first()? & 0x0f) * 4;
        packet.get(ihl..)?
    } else {
        packet
    };
    let want = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
    if *icmp.first()? != want || icmp.len() < 8 + TOKEN_LEN {
        return None;
    }
    let got = u64::from_be_bytes(icmp[8..16].try_into().ok()?);
    (got == token).then(|| u16::from_be_bytes([icmp[6], icmp[7]]))
}

fn new_token() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // splitmix64 of time and counter: distinct per probe, unlikely to collide with others.
    let mut z = nanos ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn open(v6: bool, kind: IcmpSocket) -> Result<(Socket, bool), Failure> {
    let (domain, proto) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let dgram = || Socket::new(domain, Type::DGRAM, Some(proto));
    let raw = || Socket::new(domain, Type::RAW, Some(proto));
    let socket = match kind {
        IcmpSocket::Unprivileged => dgram().map(|s| (s, false)),
        IcmpSocket::Raw => raw().map(|s| (s, true)),
        IcmpSocket::Auto => dgram()
            .map(|s| (s, false))
            .or_else(|_| raw().map(|s| (s, true))),
    };
    let (socket, is_raw) = socket.map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => Failure::Permission(format!(
            "cannot open an ICMP socket ({e}); grant CAP_NET_RAW or widen net.ipv4.ping_group_range"
        )),
        _ => net::io_failure(&e),
    })?;
    socket
        .set_nonblocking(true)
        .map_err(|e| net::io_failure(&e))?;
    Ok((socket, is_raw))
}

/// The `icmp` probe.
pub async fn probe(run: &mut Run, addr: &Address, module: &Module) -> Result<(), Failure> {
    let host = addr.host().to_owned();
    let opts = module.icmp.clone().unwrap_or_default();
    let dest = net::resolve(run, &host, 0, module.ip_version).await?;
    let v6 = dest.is_ipv6();
    let (socket, is_raw) = run
        .phase(Phase::Connect, async { open(v6, opts.socket) })
        .await?;
    // SAFETY: `socket` is an open descriptor owned by the AsyncFd from here on; socket2's
    // `Socket` returns that same descriptor from every `as_raw_fd()` call until dropped.
    let fd = unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
        .map_err(|e| net::io_failure(&std::io::Error::from(e)))?;
    let token = new_token();
    let id = (token >> 48) as u16;
    let count = opts.count.min(u32::from(u16::MAX)) as usize;
    let mut facts = IcmpFacts {
        raw_socket: is_raw,
        ..IcmpFacts::default()
    };
    let target = SockAddr::from(SocketAddr::new(dest.ip(), 0));
    let mut sent_at: Vec<Option<Instant>> = vec![None; count];
    let mut got: Vec<bool> = vec![false; count];
    let start = tokio::time::Instant::now();
    let deadline = run.deadline();
    let mut next = 0usize;
    let mut buf = vec![0u8; 2048];
    let has_ip_header = is_raw && !v6;
    // Bounded by `count` sends and by the deadline; each reply is counted once.
    while (facts.received as usize) < count {
        let send_at = (next < count).then(|| start + opts.interval * (next as u32));
        tokio::select! {
            () = async {
                match send_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                let pkt = echo_request(v6, id, next as u16, token, opts.payload_size);
                sent_at[next] = Some(Instant::now());
                facts.sent += 1;
                if let Err(e) = fd.get_ref().send_to(&pkt, &target) {
                    // A send error is loss of that request, except for the first one.
                    if facts.sent == 1 {
                        return Err(net::io_failure(&e));
                    }
                }
                next += 1;
            }
            r = fd.readable() => {
                let mut guard = r.map_err(|e| net::io_failure(&e))?;
                match guard.try_io(|inner| inner.get_ref().read(&mut buf)) {
                    Ok(Ok(n)) => {
                        if let Some(seq) = parse_reply(&buf[..n], v6, has_ip_header, token) {
                            let seq = usize::from(seq);
                            if let (Some(Some(t)), Some(false)) = (sent_at.get(seq), got.get(seq)) {
                                facts.rtts.push(t.elapsed());
                                got[seq] = true;
                                facts.received += 1;
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        if matches!(net::io_failure(&e), Failure::Unreachable) && facts.received == 0 && next == count {
                            run.facts.icmp = Some(Box::new(facts));
                            return Err(Failure::Unreachable);
                        }
                    }
                    Err(_would_block) => {}
                }
            }
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    if let Some((_, avg, _, _)) = facts.stats() {
        run.add(Phase::FirstByte, Duration::from_secs_f64(avg));
    }
    let received = facts.received;
    run.facts.ip = Some(dest.ip());
    run.facts.icmp = Some(Box::new(facts));
    if received == 0 {
        return Err(Failure::PacketLoss);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn request_checksum_verifies_and_reply_parses() {
        let p = echo_request(false, 0x1234, 7, 42, 56);
        assert_eq!(p.len(), 64);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
        let mut reply = p.clone();
        reply[0] = ECHO_REPLY_V4;
        assert_eq!(parse_reply(&reply, false, false, 42), Some(7));
        assert_eq!(parse_reply(&reply, false, false, 43), None);
        assert_eq!(
            parse_reply(&p, false, false, 42),
            None,
            "a request is no reply"
        );
        let mut with_ip = vec![0x45u8];
        with_ip.extend_from_slice(&[0; 19]);
        with_ip.extend_from_slice(&reply);
        assert_eq!(parse_reply(&with_ip, false, true, 42), Some(7));
    }

    #[test]
    fn stats_and_loss() {
        let f = IcmpFacts {
            sent: 4,
            received: 2,
            rtts: vec![Duration::from_millis(10), Duration::from_millis(30)],
            raw_socket: false,
        };
        let (min, avg, max, sd) = f.stats().unwrap();
        assert!((min - 0.010).abs() < 1e-9 && (max - 0.030).abs() < 1e-9);
        assert!((avg - 0.020).abs() < 1e-9 && (sd - 0.010).abs() < 1e-9);
        assert!((f.loss() - 0.5).abs() < 1e-9);
        assert!((f.median().unwrap() - 0.020).abs() < 1e-9);
        let odd = IcmpFacts {
            rtts: vec![
                Duration::from_millis(40),
                Duration::from_millis(10),
                Duration::from_millis(20),
            ],
            ..f
        };
        assert!((odd.median().unwrap() - 0.020).abs() < 1e-9);
    }
}
