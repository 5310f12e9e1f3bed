//! kill -9 during sustained HTTP ingest: after a restart on the same state directory every
//! acknowledged record is present, counted exactly, and nothing is stored twice.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Ingestd, write_config};
use rookery_common::proto::QueryLogsRequest;

const CLIENTS: usize = 3;
/// Bound of the load: batches per client and lines per batch.
const MAX_BATCHES: usize = 300;
const LINES: usize = 50;

/// POSTs `body`; Some(status) when a full response came back, None when the connection broke.
fn try_post(addr: std::net::SocketAddr, body: &[u8]) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let head = format!(
        "POST /v1/logs HTTP/1.1\r\nHost: i\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split(' ').nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_record_survives_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), "", "batch-records = 500\n");
    let mut d = Ingestd::start(tmp.path()).await;
    let http = d.addr("http-0");
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let batches_acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for c in 0..CLIENTS {
        let (acked, n, stop) = (acked.clone(), batches_acked.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            for b in 0..MAX_BATCHES {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let ids: Vec<String> = (0..LINES).map(|l| format!("c{c}b{b}l{l}")).collect();
                let body: String = ids
                    .iter()
                    .map(|id| format!("{{\"message\":\"{id}\",\"app\":\"crash\"}}\n"))
                    .collect();
                match try_post(http, body.as_bytes()) {
                    Some(200) => {
                        acked.lock().unwrap().extend(ids);
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(other) => panic!("unexpected HTTP {other}"),
                    // The daemon was killed: this batch was not acknowledged.
                    None => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while batches_acked.load(Ordering::Relaxed) < 60 {
        assert!(
            Instant::now() < deadline,
            "ingest too slow: fewer than 60 batches in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    d.kill9();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let acked: Vec<String> = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() >= 60 * LINES);

    let d = Ingestd::start(tmp.path()).await;
    let mut stored = Vec::new();
    let mut before = None;
    loop {
        let page = d
            .query(QueryLogsRequest {
                app: Some("crash".into()),
                before_id: before,
                limit: 10_000,
                ..QueryLogsRequest::default()
            })
            .await;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        stored.extend(page.into_iter().map(|r| r.message));
    }
    let unique: HashSet<&str> = stored.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), stored.len(), "a record was stored twice");
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !unique.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged records lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    // At most the batches in flight at the kill (one per client) are stored unacknowledged.
    assert!(
        stored.len() <= acked.len() + CLIENTS * LINES,
        "stored {} > acked {} + in flight",
        stored.len(),
        acked.len()
    );
    // Whole batches only: a transaction is all or nothing.
    assert_eq!(stored.len() % LINES, 0, "a partial batch was stored");
}
