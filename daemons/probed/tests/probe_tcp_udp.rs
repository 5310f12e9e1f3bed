//! TCP and UDP probes against servers this test runs on loopback: success with a timing
//! breakdown, `refused` on a closed port, send/expect matching and mismatching, and timeouts
//! that are enforced and name the phase they hit.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::time::{Duration, Instant};

use rookery_probed::probe::{Failure, Phase};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const TCP: &str = "prober = \"tcp\"\ntimeout = \"2s\"\n";

#[tokio::test]
async fn tcp_connect_succeeds_on_a_listening_port_and_is_refused_on_a_closed_one() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        // Two connections at most: the probe and nothing else.
        for _ in 0..2 {
            let Ok((s, _)) = listener.accept().await else {
                break;
            };
            drop(s);
        }
    });
    let ok = support::probe(TCP, &addr.to_string()).await;
    assert!(ok.success, "{ok:?}");
    assert_eq!(ok.reason(), "ok");
    assert!(ok.phase(Phase::Connect).is_some(), "{ok:?}");
    assert_eq!(ok.facts.ip, Some(addr.ip()));

    let closed = support::free_port();
    let refused = support::probe(TCP, &format!("127.0.0.1:{closed}")).await;
    assert!(!refused.success);
    assert_eq!(refused.failure, Some(Failure::Refused), "{refused:?}");
    assert_eq!(refused.reason(), "refused");
    server.abort();
}

#[tokio::test]
async fn tcp_send_expect_matches_a_banner_and_reports_a_mismatch() {
    let listener = TcpListener::bind("[::1]:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let Ok((mut s, _)) = listener.accept().await else {
                break;
            };
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let reply = if &buf[..n] == b"PING\r\n" {
                "+PONG\r\n"
            } else {
                "-ERR\r\n"
            };
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    let m = format!("{TCP}[tcp]\nsend = \"PING\\r\\n\"\nexpect = \"^\\\\+PONG\"\n");
    let ok = support::probe(&m, &format!("[::1]:{}", addr.port())).await;
    assert!(ok.success, "{ok:?}");
    assert!(ok.phase(Phase::FirstByte).is_some(), "{ok:?}");

    let m = format!("{TCP}[tcp]\nsend = \"HELLO\\r\\n\"\nexpect = \"^\\\\+PONG\"\n");
    let bad = support::probe(&m, &format!("[::1]:{}", addr.port())).await;
    assert_eq!(bad.failure, Some(Failure::BodyMismatch), "{bad:?}");
    server.abort();
}

#[tokio::test]
async fn a_silent_tcp_server_times_out_within_the_timeout_in_the_processing_phase() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..1 {
            if let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let m = "prober = \"tcp\"\ntimeout = \"300ms\"\n[tcp]\nexpect = \"never\"\n";
    let t0 = Instant::now();
    let out = support::probe(m, &addr.to_string()).await;
    let took = t0.elapsed();
    assert_eq!(
        out.failure,
        Some(Failure::Timeout(Some(Phase::FirstByte))),
        "{out:?}"
    );
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(600),
        "{took:?}"
    );
    assert!(out.total < Duration::from_millis(600), "{:?}", out.total);
    server.abort();
}

#[tokio::test]
async fn udp_send_expect_against_an_echo_server_closed_port_and_silence() {
    let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = echo.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        for _ in 0..2 {
            let Ok((n, peer)) = echo.recv_from(&mut buf).await else {
                break;
            };
            let _ = echo.send_to(&buf[..n], peer).await;
        }
    });
    let m = "prober = \"udp\"\ntimeout = \"1s\"\n[udp]\nsend = \"rookery-echo 1\"\nexpect = \"^rookery-echo 1$\"\n";
    let ok = support::probe(m, &addr.to_string()).await;
    assert!(ok.success, "{ok:?}");
    assert!(ok.phase(Phase::FirstByte).is_some());

    let m2 = "prober = \"udp\"\ntimeout = \"1s\"\n[udp]\nsend = \"abc\"\nexpect = \"^xyz\"\n";
    let bad = support::probe(m2, &addr.to_string()).await;
    assert_eq!(bad.failure, Some(Failure::BodyMismatch), "{bad:?}");

    // Nothing bound: the kernel answers with ICMP port unreachable.
    let closed = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let refused = support::probe(m, &closed_addr.to_string()).await;
    assert_eq!(refused.failure, Some(Failure::Refused), "{refused:?}");

    // Bound but silent: the deadline ends the probe.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let m3 = "prober = \"udp\"\ntimeout = \"200ms\"\n[udp]\nsend = \"x\"\n";
    let t0 = Instant::now();
    let out = support::probe(m3, &silent.local_addr().unwrap().to_string()).await;
    assert_eq!(
        out.failure,
        Some(Failure::Timeout(Some(Phase::FirstByte))),
        "{out:?}"
    );
    assert!(t0.elapsed() < Duration::from_millis(500));
    server.abort();
}
