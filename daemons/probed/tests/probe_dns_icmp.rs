//! DNS probes against a real unbound started by the test on loopback (A record, expected
//! answers, NXDOMAIN, UDP and TCP), and ICMP echo to 127.0.0.1 and ::1 with RTT statistics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::time::Duration;

use rookery_probed::probe::{Failure, Phase};

#[tokio::test]
async fn dns_probes_against_unbound() {
    let port = support::free_port();
    let _unbound = support::unbound(
        port,
        &[
            "www.rookery.test. A 192.0.2.10",
            "www.rookery.test. A 192.0.2.11",
            "mail.rookery.test. MX 10 mx.rookery.test.",
        ],
    );
    let server = format!("127.0.0.1:{port}");
    let m = |extra: &str| {
        format!(
            "prober = \"dns\"\ntimeout = \"2s\"\n[dns]\nquery-name = \"www.rookery.test\"\n{extra}"
        )
    };

    let a = support::probe(
        &m("expect-answers = [\"192.0.2.10\", \"192.0.2.11\"]\n"),
        &server,
    )
    .await;
    assert!(a.success, "{a:?}");
    let dns = a.facts.dns.as_ref().unwrap();
    assert_eq!(dns.rcode, "NOERROR");
    assert_eq!(dns.counts[0], 2, "{dns:?}");
    assert!(a.phase(Phase::FirstByte).is_some());

    let tcp = support::probe(
        &m("transport = \"tcp\"\nexpect-answers = [\"192.0.2.10\"]\n"),
        &server,
    )
    .await;
    assert!(tcp.success, "{tcp:?}");
    assert!(tcp.phase(Phase::Connect).is_some());

    let missing = support::probe(&m("expect-answers = [\"192.0.2.99\"]\n"), &server).await;
    assert_eq!(
        missing.failure,
        Some(Failure::DnsAnswerMissing("192.0.2.99".to_owned())),
        "{missing:?}"
    );

    let mx = support::probe(
        "prober = \"dns\"\n[dns]\nquery-name = \"mail.rookery.test\"\nquery-type = \"MX\"\nexpect-answers = [\"10 mx.rookery.test.\"]\n",
        &server,
    )
    .await;
    assert!(mx.success, "{mx:?}");

    let nx_module = "prober = \"dns\"\n[dns]\nquery-name = \"nope.rookery.test\"\n";
    let nx = support::probe(nx_module, &server).await;
    assert_eq!(nx.failure, Some(Failure::Nxdomain), "{nx:?}");
    assert_eq!(nx.reason(), "nxdomain");
    let nx_ok = support::probe(
        &format!("{nx_module}expect-rcode = \"NXDOMAIN\"\n"),
        &server,
    )
    .await;
    assert!(nx_ok.success, "{nx_ok:?}");

    // A server that does not answer: the deadline ends the probe in the processing phase.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let out = support::probe(
        "prober = \"dns\"\ntimeout = \"200ms\"\n[dns]\nquery-name = \"www.rookery.test\"\n",
        &silent.local_addr().unwrap().to_string(),
    )
    .await;
    assert_eq!(
        out.failure,
        Some(Failure::Timeout(Some(Phase::FirstByte))),
        "{out:?}"
    );
}

async fn ping(address: &str, socket: &str) {
    let m = format!(
        "prober = \"icmp\"\ntimeout = \"2s\"\n[icmp]\ncount = 4\ninterval = \"20ms\"\nsocket = \"{socket}\"\n"
    );
    let out = support::probe(&m, address).await;
    assert!(out.success, "{address} ({socket}): {out:?}");
    let icmp = out.facts.icmp.as_ref().unwrap();
    assert_eq!((icmp.sent, icmp.received), (4, 4), "{icmp:?}");
    assert_eq!(icmp.loss(), 0.0);
    let (min, avg, max, sd) = icmp.stats().unwrap();
    assert!(
        min > 0.0 && min <= avg && avg <= max && sd >= 0.0,
        "{icmp:?}"
    );
    assert!(
        max < 0.1,
        "loopback RTT should be well under 100 ms: {icmp:?}"
    );
    // Four requests 20 ms apart take at least 60 ms, and the probe stops once all replied.
    assert!(out.total >= Duration::from_millis(60), "{:?}", out.total);
    assert!(out.total < Duration::from_millis(1000), "{:?}", out.total);
}

#[tokio::test]
async fn icmp_echo_to_loopback_v4_and_v6() {
    // `auto` picks the unprivileged socket where ping_group_range allows it, raw otherwise;
    // `raw` needs CAP_NET_RAW (tests run as root, like CI).
    ping("127.0.0.1", "auto").await;
    ping("::1", "auto").await;
    ping("127.0.0.1", "raw").await;
    ping("::1", "raw").await;
}
