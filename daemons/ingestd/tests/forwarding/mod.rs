//! What the forwarding tests (OTLP/HTTP and QUIC) share: ingestd A is fed NDJSON log
//! pushes and remote_write bodies in rounds, and ingestd B's SQLite store is read back.

use std::path::Path;
use std::time::{Duration, Instant};

use rookery_ingestd::store::SeriesSamples;

use crate::common::{Ingestd, post};

pub const SERIES: usize = 5;
pub const PER_SERIES: usize = 20;
pub const LOGS: usize = 40;

/// `LOGS` NDJSON records of round `round`.
pub fn push_logs(d: &Ingestd, round: usize) {
    let body: String = (0..LOGS)
        .map(|i| {
            format!(
                "{{\"message\":\"fwd round {round} line {i}\",\"host\":\"dev-a\",\"app\":\"fwdapp\",\"severity\":\"warning\",\"facility\":\"local3\",\"timestamp\":\"2026-11-23T10:00:{:02}.{:03}Z\",\"attributes\":{{\"round\":\"{round}\"}}}}\n",
                i % 60,
                round
            )
        })
        .collect();
    let (status, text) = post(
        d.addr("http-0"),
        "/v1/logs",
        "application/x-ndjson",
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(&format!("\"accepted\":{LOGS}")), "{text}");
}

pub fn push_samples(d: &Ingestd, round: i64) {
    let base = rookery_ingestd::now_ns() / 1_000_000 - 60_000;
    let series: Vec<SeriesSamples> = (0..SERIES)
        .map(|i| SeriesSamples {
            labels: vec![
                ("__name__".into(), "otlp_fwd_total".into()),
                ("i".into(), i.to_string()),
                ("job".into(), "dev".into()),
            ],
            samples: (0..PER_SERIES)
                .map(|k| {
                    (
                        base + round * 1000 + i64::try_from(k).unwrap(),
                        round as f64,
                    )
                })
                .collect(),
        })
        .collect();
    let body = rookery_ingestd::forward::encode(&series);
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(d.addr("http-0")).unwrap();
    let head = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Encoding: snappy\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 204"), "{out}");
}

pub fn db(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        dir.join("state/logs.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap()
}

pub fn count(dir: &Path, sql: &str) -> i64 {
    db(dir).query_row(sql, [], |r| r.get(0)).unwrap()
}

pub fn logs_in_b(dir: &Path) -> i64 {
    count(dir, "SELECT count(*) FROM logs WHERE app = 'fwdapp'")
}

pub fn samples_in_b(dir: &Path) -> i64 {
    count(
        dir,
        "SELECT count(*) FROM samples s JOIN series r ON r.id = s.series_id WHERE r.name = 'otlp_fwd_total'",
    )
}

pub fn metric(d: &Ingestd, name: &str) -> u64 {
    d.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map_or(0, |v| v.trim().parse().unwrap())
}

pub async fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "not within 60 s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
