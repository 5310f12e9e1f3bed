//! Loopback ports for servers a test starts on a port it must choose itself (a daemon's
//! metrics listener, nginx, sshd, PostgreSQL).
//!
//! Binding port 0 and releasing it races: the kernel hands the same number to the next
//! socket that asks for an ephemeral port, such as the source port of any outgoing
//! connection a test makes in the meantime. The ports here come from below the kernel's
//! ephemeral range (`net.ipv4.ip_local_port_range`), which neither port-0 binds nor outgoing
//! connections use, and are never handed out twice in one process.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out (above every well-known and registered service a test machine
/// might run on loopback, e.g. PostgreSQL's 5432).
const LOWEST: u32 = 10_000;
/// Kernel default start of the ephemeral range, if it cannot be read.
const EPHEMERAL_START: u32 = 32_768;

/// A loopback port that is free for TCP and UDP right now, outside the kernel's ephemeral
/// range and not returned before by this process.
///
/// # Panics
/// If no port in the range is free (thousands of ports in use at once).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (first, span) = range();
    // Processes start at different offsets, so test binaries running at once rarely try the
    // same port; the bind checks below catch the rest.
    let offset = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(first + (offset + n) % span).expect("ports fit in u16");
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
            && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free loopback port in {first}..{}", first + span);
}

/// The first port to hand out and how many there are: from [`LOWEST`] to the start of the
/// ephemeral range, or, where that range starts lower, from its end to 65535.
fn range() -> (u32, u32) {
    let (start, end) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut words = text.split_whitespace().map(str::parse::<u32>);
            Some((words.next()?.ok()?, words.next()?.ok()?))
        })
        .unwrap_or((EPHEMERAL_START, 60_999));
    if start > LOWEST + 1_000 {
        (LOWEST, start - LOWEST)
    } else {
        (end + 1, 65_535 - end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_outside_the_ephemeral_range_and_never_repeat() {
        let (first, span) = range();
        let ephemeral = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let p = free_port();
            assert!((first..first + span).contains(&u32::from(p)), "{p}");
            assert!(seen.insert(p), "{p} handed out twice");
            assert_ne!(p, ephemeral);
        }
        // The range is below (or above) what port 0 gives.
        assert!(!(first..first + span).contains(&u32::from(ephemeral)));
    }

    #[test]
    fn a_port_in_use_is_skipped() {
        let p = free_port();
        let _held = TcpListener::bind((Ipv4Addr::LOCALHOST, p.saturating_add(1))).ok();
        let _held_udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, p.saturating_add(2))).ok();
        let next = free_port();
        // Handed out in order from p: p+1 and p+2 are held, unless another test thread took
        // numbers in between; either way the port returned is bindable now.
        assert_ne!(next, p.saturating_add(1));
        assert_ne!(next, p.saturating_add(2));
        assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, next)).is_ok());
    }
}
