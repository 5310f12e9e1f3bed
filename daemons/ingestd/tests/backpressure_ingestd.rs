//! Bounded memory, no silent drop: with a tiny write queue, a UDP burst overflows it; every
//! datagram ingestd received is either stored or counted as a `queue_full` rejection, exactly,
//! and the stored ones are all queryable.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Ingestd, write_config};
use rookery_common::proto::QueryLogsRequest;

const BURST: usize = 3000;

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_udp_burst_over_the_queue_is_stored_or_counted_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), "", "queue-records = 4\nbatch-records = 2\n");
    let d = Ingestd::start(tmp.path()).await;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = d.addr("syslog-udp-0");
    for i in 0..BURST {
        sock.send_to(format!("<13>1 - burst app - - - n{i}").as_bytes(), target)
            .unwrap();
    }
    // Wait until the queue is empty and the counters stop moving (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    let (received, stored, rejected) = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let m = d.metrics();
        let received = metric(&m, "rookery_ingestd_received_records_total{input=\"udp\"} ");
        let stored = metric(&m, "rookery_ingestd_stored_records_total{input=\"udp\"} ");
        let rejected = metric(
            &m,
            "rookery_ingestd_rejected_total{input=\"udp\",reason=\"queue_full\"} ",
        );
        let depth = metric(&m, "rookery_ingestd_queue_depth_records ");
        let key = format!("{received} {stored} {rejected}");
        if received > 0 && depth == 0 && key == last {
            break (received, stored, rejected);
        }
        last = key;
        assert!(
            Instant::now() < deadline,
            "counters still moving after 30 s: {m}"
        );
    };
    assert_eq!(
        stored + rejected,
        received,
        "a datagram was neither stored nor counted"
    );
    assert!(
        rejected > 0,
        "the burst never filled a 4-record queue ({received} received)"
    );
    assert!(stored > 0);
    let mut n = 0;
    let mut before = None;
    loop {
        let page = d
            .query(QueryLogsRequest {
                host: Some("burst".into()),
                before_id: before,
                limit: 10_000,
                ..QueryLogsRequest::default()
            })
            .await;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        n += page.len();
    }
    assert_eq!(n as u64, stored);
    let m = d.metrics();
    assert!(
        m.contains("rookery_ingestd_queue_capacity_records 4"),
        "{m}"
    );
}
