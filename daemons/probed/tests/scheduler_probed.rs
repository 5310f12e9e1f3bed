//! The scheduler at scale, in-process: 2,000 targets at a 1 s interval are all probed every
//! second with their starts spread over the interval (no burst), and the shared semaphore
//! bounds the probes in flight (`[scheduler] max-concurrency`) against a server that never
//! answers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rookery_common::config::Sources;
use rookery_common::daemon::Control;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

fn config(
    dir: &std::path::Path,
    max: u32,
    module: &str,
    targets: &[(String, String, &str)],
) -> String {
    let mut c = format!(
        "[grpc]\nsocket = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{}\"\n[state]\ndirectory = \"{}\"\n\
         [scheduler]\nmax-concurrency = {max}\n{module}\n",
        dir.join("probed.sock").display(),
        support::free_port(),
        dir.join("state").display()
    );
    for (name, addr, interval) in targets {
        let _ = write!(
            c,
            "[[targets]]\nname = \"{name}\"\nmodule = \"m\"\naddress = \"{addr}\"\ninterval = \"{interval}\"\n"
        );
    }
    c
}

async fn run_for(dir: &std::path::Path, text: &str, secs: f64) {
    let path = dir.join("probed.toml");
    std::fs::write(&path, text).unwrap();
    let control = Control::default();
    let daemon = tokio::spawn(rookery_probed::app::run(
        Sources::new("probed", Some(&path), Vec::new()),
        control.clone(),
    ));
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    control.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_targets_are_probed_every_second_without_bursts() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let t0 = Instant::now();
    let accepts = Arc::new(std::sync::Mutex::new(Vec::<Duration>::new()));
    let a = accepts.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            a.lock().unwrap().push(t0.elapsed());
            drop(s);
        }
    });
    let targets: Vec<(String, String, &str)> = (0..2000)
        .map(|i| (format!("t{i}"), addr.clone(), "1s"))
        .collect();
    let text = config(
        dir.path(),
        256,
        "[modules.m]\nprober = \"tcp\"\ntimeout = \"1s\"\n",
        &targets,
    );
    run_for(dir.path(), &text, 3.5).await;
    let times = accepts.lock().unwrap().clone();
    // Three full intervals: every target at least twice (start offsets lie within the first).
    assert!(times.len() >= 2000 * 2, "only {} probes", times.len());
    // Spread: in the steady second (1.5 s to 2.5 s) no 100 ms window holds more than 3x its
    // fair share (200) of the 2,000 probes; without spreading they would all land at once.
    let busiest = (15..25)
        .map(|w| {
            let (lo, hi) = (
                Duration::from_millis(w * 100),
                Duration::from_millis(w * 100 + 100),
            );
            times.iter().filter(|t| **t >= lo && **t < hi).count()
        })
        .max()
        .unwrap();
    assert!(busiest <= 600, "a 100 ms window held {busiest} probes");

    let db = dir.path().join("state/results.sqlite");
    let c = rusqlite::Connection::open(db).unwrap();
    let (rows, distinct, failed): (i64, i64, i64) = c
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT target), SUM(success = 0) FROM results",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(distinct, 2000);
    assert!(rows >= 4000, "{rows}");
    assert_eq!(failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_bounds_the_probes_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let open = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let (o, p, t) = (open.clone(), peak.clone(), total.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let now = o.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            t.fetch_add(1, Ordering::SeqCst);
            let o = o.clone();
            // Never answers; counts the connection as open until the prober closes it.
            tokio::spawn(async move {
                let mut buf = [0u8; 16];
                let _ = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    let targets: Vec<(String, String, &str)> = (0..40)
        .map(|i| (format!("slow{i}"), addr.clone(), "1s"))
        .collect();
    let text = config(
        dir.path(),
        5,
        "[modules.m]\nprober = \"tcp\"\ntimeout = \"300ms\"\n[modules.m.tcp]\nexpect = \"never\"\n",
        &targets,
    );
    run_for(dir.path(), &text, 2.5).await;
    let peak = peak.load(Ordering::SeqCst);
    // The server sees a close a moment after the prober released its slot (and started the
    // next probe), so it may count one or two extra; without the bound it would see 40.
    assert!(peak <= 7, "{peak} probes in flight with max-concurrency 5");
    assert!(
        peak >= 4,
        "the bound was never reached ({peak}): the test proves nothing"
    );
    // 5 slots of 300 ms probes for about 2.5 s: roughly 40 probes, all of them timeouts.
    let total = total.load(Ordering::SeqCst);
    assert!((20..=50).contains(&total), "{total}");
}
