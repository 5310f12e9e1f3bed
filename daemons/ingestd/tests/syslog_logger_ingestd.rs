//! util-linux `logger` sends RFC 5424 and RFC 3164 over UDP and TCP (LF and octet-counted) to
//! the real `rookery-ingestd` on loopback; every message is queried back over gRPC with its
//! exact fields. A line that is not syslog is stored raw with the parse-error flag, and an
//! oversized message is a counted rejection.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::io::Write;
use std::process::Command;

use common::{Ingestd, write_config};
use rookery_common::proto::{LogRecord, QueryLogsRequest};

fn logger(args: &[&str]) {
    let out = Command::new("logger")
        .args(args)
        .output()
        .expect("logger (util-linux) is installed by scripts/install-ingestd-test-deps.sh");
    assert!(
        out.status.success(),
        "logger {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

async fn by_app(d: &Ingestd, app: &str) -> LogRecord {
    let mut got = d
        .wait_for(
            QueryLogsRequest {
                app: Some(app.into()),
                ..QueryLogsRequest::default()
            },
            1,
        )
        .await;
    assert_eq!(got.len(), 1, "{got:#?}");
    got.remove(0)
}

fn assert_recent(r: &LogRecord) {
    let ts = r
        .timestamp_unix_nanos
        .expect("the sender's timestamp is kept");
    let skew = (ts - r.received_unix_nanos).abs();
    // logger stamps microseconds (RFC 5424) or seconds (RFC 3164).
    assert!(
        skew < 5_000_000_000,
        "timestamp {ts} vs received {}",
        r.received_unix_nanos
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logger_rfc5424_and_rfc3164_over_udp_and_tcp_are_queried_back_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), "", "");
    let d = Ingestd::start(tmp.path()).await;
    let udp = d.addr("syslog-udp-0");
    let tcp = d.addr("syslog-tcp-0");
    let (uport, tport) = (udp.port().to_string(), tcp.port().to_string());
    let host = hostname();
    let short = host.split('.').next().unwrap().to_owned();

    // RFC 5424 over UDP, with structured data, MSGID and PROCID.
    logger(&[
        "--server",
        "127.0.0.1",
        "--port",
        &uport,
        "--udp",
        "--rfc5424=notq",
        "--tag",
        "app5424udp",
        "--id=4242",
        "--priority",
        "local3.warning",
        "--msgid",
        "M1",
        "--sd-id",
        "ex@32473",
        "--sd-param",
        "k=\"v w\"",
        "disk /var is 91% full",
    ]);
    // RFC 5424 over TCP, octet counting.
    logger(&[
        "--server",
        "127.0.0.1",
        "--port",
        &tport,
        "--tcp",
        "--octet-count",
        "--rfc5424=notq",
        "--tag",
        "app5424tcp",
        "--priority",
        "auth.err",
        "login failed for root",
    ]);
    // RFC 3164 over UDP and over TCP (LF framing).
    logger(&[
        "--server",
        "127.0.0.1",
        "--port",
        &uport,
        "--udp",
        "--rfc3164",
        "--tag",
        "app3164udp",
        "--id=77",
        "--priority",
        "daemon.notice",
        "link eth0 up",
    ]);
    logger(&[
        "--server",
        "127.0.0.1",
        "--port",
        &tport,
        "--tcp",
        "--rfc3164",
        "--tag",
        "app3164tcp",
        "--priority",
        "cron.debug",
        "job 7 done",
    ]);

    let r = by_app(&d, "app5424udp").await;
    assert_eq!(
        (&*r.format, &*r.input, &*r.host, &*r.procid, &*r.msgid),
        ("rfc5424", "udp", &*host, "4242", "M1")
    );
    assert_eq!((r.facility, r.severity), (Some(19), Some(4)));
    assert_eq!(r.structured_data, "[ex@32473 k=\"v w\"]");
    assert_eq!(r.message, "disk /var is 91% full");
    assert_eq!(r.parse_error, None);
    assert_recent(&r);

    let r = by_app(&d, "app5424tcp").await;
    assert_eq!(
        (&*r.format, &*r.input, &*r.host, &*r.message),
        ("rfc5424", "tcp", &*host, "login failed for root")
    );
    assert_eq!((r.facility, r.severity), (Some(4), Some(3)));
    assert_eq!(r.parse_error, None);
    assert_recent(&r);

    let r = by_app(&d, "app3164udp").await;
    assert_eq!(
        (&*r.format, &*r.input, &*r.host, &*r.procid, &*r.message),
        ("rfc3164", "udp", &*short, "77", "link eth0 up")
    );
    assert_eq!((r.facility, r.severity), (Some(3), Some(5)));
    assert_recent(&r);

    let r = by_app(&d, "app3164tcp").await;
    assert_eq!(
        (&*r.format, &*r.input, &*r.host, &*r.message),
        ("rfc3164", "tcp", &*short, "job 7 done")
    );
    assert_eq!((r.facility, r.severity), (Some(9), Some(7)));

    // Query filters: severity "err or worse" and full text.
    let bad = d
        .query(QueryLogsRequest {
            max_severity: Some(3),
            ..QueryLogsRequest::default()
        })
        .await;
    let apps: Vec<&str> = bad.iter().map(|r| &*r.app).collect();
    assert_eq!(apps, ["app5424tcp"]);
    let text = d
        .query(QueryLogsRequest {
            text: Some("eth0 AND up".into()),
            ..QueryLogsRequest::default()
        })
        .await;
    assert_eq!(text.len(), 1);
    assert_eq!(text[0].app, "app3164udp");
    let cron = d
        .query(QueryLogsRequest {
            facility: Some(9),
            ..QueryLogsRequest::default()
        })
        .await;
    let apps: Vec<&str> = cron.iter().map(|r| &*r.app).collect();
    assert_eq!(apps, ["app3164tcp"]);
    // A time range that ends before the records were sent holds none of them.
    let past = d
        .query(QueryLogsRequest {
            end_unix_nanos: Some(1_000_000_000),
            ..QueryLogsRequest::default()
        })
        .await;
    assert!(past.is_empty(), "{past:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_line_is_stored_raw_with_the_flag_and_an_oversized_one_is_counted() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), "max-message-bytes = 1024\n", "");
    let d = Ingestd::start(tmp.path()).await;
    let tcp = d.addr("syslog-tcp-0");
    let mut s = std::net::TcpStream::connect(tcp).unwrap();
    let long = format!("<13>1 - h big - - - {}\n", "x".repeat(2000));
    s.write_all(b"this is not syslog at all\n").unwrap();
    s.write_all(long.as_bytes()).unwrap();
    s.write_all(b"<13>1 - h after - - - still in sync\n")
        .unwrap();
    drop(s);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"<13>Foo 99 99:99:99 broken date", d.addr("syslog-udp-0"))
        .unwrap();

    let raw = d
        .wait_for(
            QueryLogsRequest {
                parse_errors_only: true,
                ..QueryLogsRequest::default()
            },
            2,
        )
        .await;
    let mut raw: Vec<(String, String, String, String)> = raw
        .into_iter()
        .map(|r| {
            (
                r.input,
                r.format,
                r.message,
                r.parse_error.expect("flagged"),
            )
        })
        .collect();
    raw.sort();
    assert_eq!(raw[0].0, "tcp");
    assert_eq!(raw[0].1, "raw");
    assert_eq!(raw[0].2, "this is not syslog at all");
    assert!(raw[0].3.starts_with("missing PRI"), "{}", raw[0].3);
    assert_eq!(
        (&*raw[1].0, &*raw[1].1, &*raw[1].2),
        ("udp", "raw", "<13>Foo 99 99:99:99 broken date")
    );
    assert!(raw[1].3.contains("RFC 3164 TIMESTAMP"), "{}", raw[1].3);
    let after = d
        .wait_for(
            QueryLogsRequest {
                app: Some("after".into()),
                ..QueryLogsRequest::default()
            },
            1,
        )
        .await;
    assert_eq!(after[0].message, "still in sync");
    assert!(
        d.query(QueryLogsRequest {
            app: Some("big".into()),
            ..QueryLogsRequest::default()
        })
        .await
        .is_empty()
    );
    let metrics = d.metrics();
    assert!(
        metrics.contains("rookery_ingestd_rejected_total{input=\"tcp\",reason=\"too_long\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rookery_ingestd_parse_errors_total{input=\"tcp\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn more_oversized_messages_than_the_read_ahead_do_not_stall_the_connection() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), "max-message-bytes = 1024\n", "");
    let d = Ingestd::start(tmp.path()).await;
    let tcp = d.addr("syslog-tcp-0");
    let mut s = std::net::TcpStream::connect(tcp).unwrap();
    // 400 skipped messages of 2 KiB: 800 KiB that give no record, over three times the
    // 256 KiB a connection reads ahead of its commit.
    let long = format!("<13>1 - h big - - - {}\n", "x".repeat(2000));
    for _ in 0..400 {
        s.write_all(long.as_bytes()).unwrap();
    }
    s.write_all(b"<13>1 - h after - - - after the oversized ones\n")
        .unwrap();
    let after = d
        .wait_for(
            QueryLogsRequest {
                app: Some("after".into()),
                ..QueryLogsRequest::default()
            },
            1,
        )
        .await;
    assert_eq!(after[0].message, "after the oversized ones");
    let metrics = d.metrics();
    assert!(
        metrics.contains("rookery_ingestd_rejected_total{input=\"tcp\",reason=\"too_long\"} 400"),
        "{metrics}"
    );
}
