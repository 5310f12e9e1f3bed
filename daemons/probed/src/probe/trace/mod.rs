//! Path trace, MTR style: ICMP echo requests with TTL (hop limit) 1, 2, 3, … until the
//! destination answers; each hop's address, loss and round-trip times. Used by tier 2
//! diagnostics. Needs a raw ICMP socket (CAP_NET_RAW): only raw sockets see the
//! Time Exceeded messages of the routers on the way.
//!
//! Packet parsing ([`classify`]) is pure; [`trace`] does the I/O within a deadline.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::icmp::{echo_request, parse_reply};
use super::{Failure, net};

/// One hop of a path.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop {
    /// TTL / hop limit of the requests.
    pub ttl: u8,
    /// Who answered (a router's Time Exceeded, or the destination); `None` = nobody.
    pub addr: Option<IpAddr>,
    /// Requests sent.
    pub sent: u32,
    /// Answers received.
    pub received: u32,
    /// Round-trip times of the answers.
    pub rtts: Vec<Duration>,
}

impl Hop {
    /// Loss as a fraction.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            1.0 - f64::from(self.received) / f64::from(self.sent)
        }
    }

    /// Mean RTT in milliseconds, if any answer came.
    pub fn avg_ms(&self) -> Option<f64> {
        (!self.rtts.is_empty()).then(|| {
            self.rtts.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0
                / self.rtts.len() as f64
        })
    }
}

/// What an ICMP packet read from the raw socket means for our trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The destination's echo reply to our request `seq`.
    Reached(u16),
    /// A router's Time Exceeded for our request `seq`.
    Expired(u16),
    /// A Destination Unreachable for our request `seq`.
    Unreachable(u16),
}

/// Classifies `packet` (raw IPv4 includes the IP header; raw ICMPv6 does not) as an answer
/// to our requests (identifier `id`, payload token `token`), if it is one.
pub fn classify(packet: &[u8], v6: bool, id: u16, token: u64) -> Option<Answer> {
    if let Some(seq) = parse_reply(packet, v6, !v6, token) {
        return Some(Answer::Reached(seq));
    }
    let icmp = if v6 {
        packet
    } else {
        packet.get(usize::from(packet.first()? & 0x0f) * 4..)?
    };
    let (time_exceeded, unreachable, inner) = if v6 {
        // ICMPv6: 8-byte header, then the original IPv6 header (40 bytes), then our request.
        (3u8, 1u8, icmp.get(8 + 40..)?)
    } else {
        let orig = icmp.get(8..)?;
        let ihl = usize::from(orig.first()? & 0x0f) * 4;
        (11u8, 3u8, orig.get(ihl..)?)
    };
    let request_type = if v6 { 128 } else { 8 };
    if *inner.first()? != request_type || inner.len() < 8 {
        return None;
    }
    if u16::from_be_bytes([inner[4], inner[5]]) != id {
        return None;
    }
    let seq = u16::from_be_bytes([inner[6], inner[7]]);
    match icmp.first()? {
        t if *t == time_exceeded => Some(Answer::Expired(seq)),
        t if *t == unreachable => Some(Answer::Unreachable(seq)),
        _ => None,
    }
}

/// A one-line summary: `1 10.0.0.1 0% 0.3ms; 2 * 100%; 3 192.0.2.1 0% 1.2ms`.
pub fn summary(hops: &[Hop]) -> String {
    hops.iter()
        .map(|h| match (h.addr, h.avg_ms()) {
            (Some(a), Some(ms)) => {
                format!("{} {a} {:.0}% {ms:.1}ms", h.ttl, h.loss() * 100.0)
            }
            (Some(a), None) => format!("{} {a} {:.0}%", h.ttl, h.loss() * 100.0),
            (None, _) => format!("{} * 100%", h.ttl),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Traces the path to `dest`: up to `max_hops` hops, `per_hop` requests each, waiting at
/// most `wait` per request, and never past `deadline`. Stops at the destination or at a
/// Destination Unreachable.
pub async fn trace(
    dest: IpAddr,
    max_hops: u8,
    per_hop: u32,
    wait: Duration,
    deadline: tokio::time::Instant,
) -> Result<Vec<Hop>, Failure> {
    let v6 = dest.is_ipv6();
    let (domain, proto) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let socket = Socket::new(domain, Type::RAW, Some(proto)).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => Failure::Permission(format!(
            "a path trace needs a raw ICMP socket (CAP_NET_RAW): {e}"
        )),
        _ => net::io_failure(&e),
    })?;
    socket
        .set_nonblocking(true)
        .map_err(|e| net::io_failure(&e))?;
    // SAFETY: `socket` is an open descriptor owned by the AsyncFd from here on; socket2's
    // `Socket` returns that same descriptor from every `as_raw_fd()` call until dropped.
    let fd = unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
        .map_err(|e| net::io_failure(&std::io::Error::from(e)))?;
    let token = u64::from(std::process::id()) << 32 | u64::from(rand_u32());
    let id = (token >> 16) as u16;
    let target = SockAddr::from(SocketAddr::new(dest, 0));
    let mut hops = Vec::new();
    let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 2048];
    'hops: for ttl in 1..=max_hops {
        if v6 {
            fd.get_ref().set_unicast_hops_v6(u32::from(ttl))
        } else {
            fd.get_ref().set_ttl_v4(u32::from(ttl))
        }
        .map_err(|e| net::io_failure(&e))?;
        let mut hop = Hop {
            ttl,
            addr: None,
            sent: 0,
            received: 0,
            rtts: Vec::new(),
        };
        let mut done = false;
        for i in 0..per_hop {
            if tokio::time::Instant::now() >= deadline {
                if hop.sent > 0 {
                    hops.push(hop);
                }
                break 'hops;
            }
            let seq = u16::from(ttl) << 8 | (i as u16 & 0xff);
            let pkt = echo_request(v6, id, seq, token, 16);
            let sent_at = Instant::now();
            hop.sent += 1;
            if let Err(e) = fd.get_ref().send_to(&pkt, &target) {
                let f = net::io_failure(&e);
                if hop.ttl == 1 && i == 0 {
                    return Err(f);
                }
                continue;
            }
            let until = (tokio::time::Instant::now() + wait).min(deadline);
            // Reads until our answer arrives or the wait ends; others' packets are skipped.
            loop {
                let ready = tokio::select! {
                    r = fd.readable() => r,
                    () = tokio::time::sleep_until(until) => break,
                };
                let mut guard = ready.map_err(|e| net::io_failure(&e))?;
                let got = guard.try_io(|inner| inner.get_ref().recv_from(&mut buf));
                let (n, from) = match got {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) | Err(_) => continue,
                };
                // SAFETY: recv_from initialised the first `n` bytes of `buf` (n <= its length).
                let packet = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
                let Some(answer) = classify(packet, v6, id, token) else {
                    continue;
                };
                let (s, reached, stop) = match answer {
                    Answer::Reached(s) => (s, true, true),
                    Answer::Expired(s) => (s, false, false),
                    Answer::Unreachable(s) => (s, false, true),
                };
                if s != seq {
                    continue;
                }
                hop.received += 1;
                hop.rtts.push(sent_at.elapsed());
                hop.addr = if reached {
                    Some(dest)
                } else {
                    from.as_socket().map(|a| a.ip()).or(hop.addr)
                };
                done |= stop;
                break;
            }
        }
        hops.push(hop);
        if done {
            break;
        }
    }
    Ok(hops)
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn ipv4_header(src: [u8; 4]) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        h.extend_from_slice(&src);
        h.extend_from_slice(&[10, 0, 0, 1]);
        h
    }

    #[test]
    fn time_exceeded_and_echo_reply_are_classified() {
        let req = echo_request(false, 0x4242, 0x0301, 7, 16);
        // Router 10.0.0.254 says the request expired: IP | ICMP 11 | original IP | request.
        let mut pkt = ipv4_header([10, 0, 0, 254]);
        pkt.extend_from_slice(&[11, 0, 0, 0, 0, 0, 0, 0]);
        pkt.extend_from_slice(&ipv4_header([10, 0, 0, 1]));
        pkt.extend_from_slice(&req[..8]);
        assert_eq!(
            classify(&pkt, false, 0x4242, 7),
            Some(Answer::Expired(0x0301))
        );
        assert_eq!(
            classify(&pkt, false, 0x4243, 7),
            None,
            "someone else's trace"
        );
        let mut reply = ipv4_header([192, 0, 2, 1]);
        let mut r = req.clone();
        r[0] = 0;
        reply.extend_from_slice(&r);
        assert_eq!(
            classify(&reply, false, 0x4242, 7),
            Some(Answer::Reached(0x0301))
        );
        // ICMPv6 Time Exceeded: header | original IPv6 header | request.
        let req6 = echo_request(true, 0x4242, 0x0200, 7, 16);
        let mut pkt6 = vec![3, 0, 0, 0, 0, 0, 0, 0];
        pkt6.extend_from_slice(&[0u8; 40]);
        pkt6.extend_from_slice(&req6[..8]);
        assert_eq!(
            classify(&pkt6, true, 0x4242, 7),
            Some(Answer::Expired(0x0200))
        );
    }

    #[test]
    fn summary_shows_address_loss_and_latency() {
        let hops = vec![
            Hop {
                ttl: 1,
                addr: Some(IpAddr::from([10, 0, 0, 254])),
                sent: 2,
                received: 1,
                rtts: vec![Duration::from_micros(300)],
            },
            Hop {
                ttl: 2,
                addr: None,
                sent: 2,
                received: 0,
                rtts: vec![],
            },
        ];
        assert_eq!(summary(&hops), "1 10.0.0.254 50% 0.3ms; 2 * 100%");
    }
}
