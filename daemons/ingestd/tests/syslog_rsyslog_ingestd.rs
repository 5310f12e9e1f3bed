//! rsyslog forwards to ingestd with omfwd over octet-counted TCP (RFC 6587): messages sent to
//! the test's own rsyslogd (imudp on loopback) all arrive, counted exactly, fields intact.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::process::{Child, Command, Stdio};

use common::{Ingestd, write_config};
use rookery_common::proto::QueryLogsRequest;

struct Rsyslog(Child);

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const MESSAGES: usize = 50;

#[tokio::test(flavor = "multi_thread")]
async fn rsyslog_omfwd_octet_counted_tcp_delivers_every_message() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), "", "");
    let d = Ingestd::start(tmp.path()).await;
    let tcp = d.addr("syslog-tcp-0");
    let udp_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let work = tmp.path().join("rsyslog");
    std::fs::create_dir(&work).unwrap();
    let conf = tmp.path().join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{}\")\n\
             module(load=\"imudp\")\n\
             input(type=\"imudp\" address=\"127.0.0.1\" port=\"{udp_port}\")\n\
             action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{}\" protocol=\"tcp\" \
             TCP_Framing=\"octet-counted\" template=\"RSYSLOG_SyslogProtocol23Format\" \
             action.resumeRetryCount=\"-1\" action.resumeInterval=\"1\")\n",
            work.display(),
            tcp.port()
        ),
    )
    .unwrap();
    let _rsyslog = Rsyslog(
        Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(tmp.path().join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("rsyslog.err")).unwrap())
            .spawn()
            .expect("rsyslogd is installed by scripts/install-ingestd-test-deps.sh"),
    );
    // rsyslog binds its UDP input asynchronously: send a probe until one arrives (bounded).
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = ("127.0.0.1", udp_port);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        sock.send_to(b"<14>1 - fwd probe - - - ready?", target)
            .unwrap();
        let got = d
            .query(QueryLogsRequest {
                app: Some("probe".into()),
                limit: 1,
                ..QueryLogsRequest::default()
            })
            .await;
        if !got.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rsyslog forwarded nothing in 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for i in 0..MESSAGES {
        let msg = format!(
            "<{}>1 2026-11-23T10:00:{:02}.000Z sw{} fwdtest 12 ID{i} [x@1 n=\"{i}\"] message number {i}",
            8 + 3,
            i % 60,
            i % 3
        );
        sock.send_to(msg.as_bytes(), target).unwrap();
    }
    let got = d
        .wait_for(
            QueryLogsRequest {
                app: Some("fwdtest".into()),
                ..QueryLogsRequest::default()
            },
            MESSAGES,
        )
        .await;
    assert_eq!(got.len(), MESSAGES);
    let mut seen: Vec<usize> = got
        .iter()
        .map(|r| {
            let i: usize = r
                .message
                .strip_prefix("message number ")
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(r.format, "rfc5424", "{r:?}");
            assert_eq!(r.input, "tcp");
            assert_eq!(r.host, format!("sw{}", i % 3));
            assert_eq!(r.msgid, format!("ID{i}"));
            assert_eq!(r.procid, "12");
            assert_eq!(r.structured_data, format!("[x@1 n=\"{i}\"]"));
            assert_eq!((r.facility, r.severity), (Some(1), Some(3)));
            i
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..MESSAGES).collect::<Vec<_>>());
}
