//! Forwarding by remote_write with an on-disk spool: ingestd A forwards every sample it
//! stores to ingestd B. B goes down (an uplink outage), A keeps acknowledging and spooling,
//! A is even killed with -9 and restarted; when B is back, every sample arrives, exactly once.
//! Forwarding waits until the real licensed (in-process) grants `central-forwarding`: not
//! while it is unreachable, nor while its release mode is on without a key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Ingestd, free_port, write_config};
use rookery_ingestd::store::SeriesSamples;

const SERIES: usize = 10;
const PER_SERIES: usize = 10;

fn batch(round: i64) -> Vec<u8> {
    let base = rookery_ingestd::now_ns() / 1_000_000 - 60_000;
    let series: Vec<SeriesSamples> = (0..SERIES)
        .map(|i| SeriesSamples {
            labels: vec![
                ("__name__".into(), "fwd_test".into()),
                ("i".into(), i.to_string()),
            ]
            .into(),
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
    rookery_ingestd::forward::encode(&series)
}

fn post_rw(d: &Ingestd, body: &[u8]) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(d.addr("http-0")).unwrap();
    let head = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Encoding: snappy\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 204"), "{out}");
}

fn samples_in(dir: &Path) -> i64 {
    common::samples_named(dir, "fwd_test")
}

fn metric(d: &Ingestd, name: &str) -> u64 {
    d.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map_or(0, |v| v.trim().parse().unwrap())
}

async fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uplink_outage_and_a_kill_9_lose_no_forwarded_sample() {
    let b_dir = tempfile::tempdir().unwrap();
    write_config(b_dir.path(), "", "");
    let b_port = free_port();
    let cfg = std::fs::read_to_string(b_dir.path().join("ingestd.toml")).unwrap();
    std::fs::write(
        b_dir.path().join("ingestd.toml"),
        cfg.replace(
            "[http]\nlisten = [\"127.0.0.1:0\"]",
            &format!("[http]\nlisten = [\"127.0.0.1:{b_port}\"]"),
        ),
    )
    .unwrap();
    let mut b = Ingestd::start(b_dir.path()).await;

    let a_dir = tempfile::tempdir().unwrap();
    let lic_sock = a_dir.path().join("licensed.sock");
    write_config(a_dir.path(), "", "");
    let cfg = std::fs::read_to_string(a_dir.path().join("ingestd.toml")).unwrap();
    std::fs::write(
        a_dir.path().join("ingestd.toml"),
        format!(
            "{cfg}\n[forward]\nremote-write-url = \"http://127.0.0.1:{b_port}/api/v1/write\"\nbatch-samples = 30\n\
             licensed-socket = \"{}\"\nlicence-check-interval = \"1s\"\n",
            lic_sock.display()
        ),
    )
    .unwrap();
    let mut a = Ingestd::start(a_dir.path()).await;

    // No licensed yet: nothing says forwarding is licensed, so the samples stay spooled.
    post_rw(&a, &batch(1));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(samples_in(b_dir.path()), 0);
    assert_eq!(metric(&a, "rookery_ingestd_forward_licensed"), 0);

    // The real licensed in release mode without a key: central-forwarding (enterprise) is
    // refused, so the samples still stay spooled.
    let lic_dir = a_dir.path().join("licensed");
    std::fs::create_dir(&lic_dir).unwrap();
    let lic_config = |release: bool| {
        format!(
            "[licence]\nrelease-mode = {release}\n[grpc]\nsocket = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[state]\ndirectory = \"{}\"\n",
            lic_sock.display(),
            lic_dir.join("state").display()
        )
    };
    std::fs::write(lic_dir.join("licensed.toml"), lic_config(true)).unwrap();
    let lic_control = rookery_common::daemon::Control::default();
    let licensed = tokio::spawn(rookery_licensed::run(
        rookery_common::config::Sources::new(
            "licensed",
            Some(&lic_dir.join("licensed.toml")),
            Vec::new(),
        ),
        lic_control.clone(),
    ));
    wait("licensed answers", || lic_sock.exists()).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(samples_in(b_dir.path()), 0, "forwarded without a licence");
    assert_eq!(metric(&a, "rookery_ingestd_forward_licensed"), 0);

    // Release mode off (every feature on), applied by a reload: forwarding starts.
    std::fs::write(lic_dir.join("licensed.toml"), lic_config(false)).unwrap();
    lic_control.reload.notify_one();
    let total = i64::try_from(SERIES * PER_SERIES).unwrap();
    wait("the first batch reaches B once licensed", || {
        samples_in(b_dir.path()) == total
    })
    .await;
    assert_eq!(metric(&a, "rookery_ingestd_forward_licensed"), 1);

    // Outage: B stops; A still acknowledges (commits locally) and keeps the samples spooled.
    b.stop();
    post_rw(&a, &batch(2));
    post_rw(&a, &batch(3));
    wait("A notices the outage", || {
        metric(&a, "rookery_ingestd_forward_failures_total") > 0
    })
    .await;
    // A dies hard in the middle of the outage and comes back: the spool is on disk.
    a.kill9();
    let a = Ingestd::start(a_dir.path()).await;
    post_rw(&a, &batch(4));

    let b = Ingestd::start(b_dir.path()).await;
    wait("every spooled sample reaches B", || {
        samples_in(b_dir.path()) == 4 * total
    })
    .await;
    // Exactly once in B's store (a batch resent after the kill overwrites, never duplicates).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(samples_in(b_dir.path()), 4 * total);
    wait("A's outbox drains", || {
        let conn = rusqlite::Connection::open_with_flags(
            a_dir.path().join("state/logs.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        conn.query_row("SELECT count(*) FROM forward_outbox", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
            == 0
    })
    .await;
    assert_eq!(
        metric(&a, "rookery_ingestd_forward_dropped_samples_total"),
        0
    );
    drop(b);
    lic_control.shutdown.cancel();
    licensed.await.unwrap().unwrap();
}
