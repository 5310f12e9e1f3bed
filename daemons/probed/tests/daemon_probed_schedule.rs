//! probed run in-process through the shared runner: scheduled targets show up in
//! `/metrics` (`rookery_probed_*`) and in the SQLite store, `/probe` answers like
//! blackbox_exporter, and a reload swaps the target set without dropping a probe in flight.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rookery_common::config::Sources;
use rookery_common::daemon::Control;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf[9..12].parse().unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls `/metrics` (bounded: `secs` seconds) until `pred` holds; returns the last body.
async fn metrics_until(addr: SocketAddr, secs: u64, pred: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        if pred(&body) || Instant::now() > until {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn config(dir: &std::path::Path, metrics: u16, up: u16, down: u16, slow: Option<u16>) -> String {
    let mut c = format!(
        "[grpc]\nsocket = \"{sock}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n[state]\ndirectory = \"{state}\"\n\
         [modules.tcp]\nprober = \"tcp\"\ntimeout = \"1s\"\n\
         [modules.slow]\nprober = \"tcp\"\ntimeout = \"2s\"\n[modules.slow.tcp]\nexpect = \"never\"\n\
         [[targets]]\nname = \"up\"\nmodule = \"tcp\"\naddress = \"127.0.0.1:{up}\"\ninterval = \"1s\"\nlabels = {{ site = \"lab\" }}\n\
         [[targets]]\nname = \"down\"\nmodule = \"tcp\"\naddress = \"127.0.0.1:{down}\"\ninterval = \"1s\"\n",
        sock = dir.join("probed.sock").display(),
        state = dir.join("state").display(),
    );
    if let Some(slow) = slow {
        c.push_str(&format!(
            "[[targets]]\nname = \"slow\"\nmodule = \"slow\"\naddress = \"127.0.0.1:{slow}\"\ninterval = \"3s\"\n"
        ));
    }
    c
}

fn store_rows(db: &PathBuf, target: &str) -> Vec<(bool, String)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT success, reason FROM results WHERE target = ?1 ORDER BY id")
        .unwrap();
    st.query_map([target], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_probes_feed_metrics_store_and_probe_endpoint_and_survive_reload() {
    let dir = tempfile::tempdir().unwrap();
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_port = up.local_addr().unwrap().port();
    tokio::spawn(async move {
        // Accepts and closes, bounded by the test's lifetime (the runtime ends with it).
        while let Ok((s, _)) = up.accept().await {
            drop(s);
        }
    });
    let slow = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_port = slow.local_addr().unwrap().port();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = slow.accept().await {
            held.push(s);
            let _ = accepted_tx.send(());
        }
    });
    let down_port = support::free_port();
    let metrics_port = support::free_port();
    let metrics: SocketAddr = ([127, 0, 0, 1], metrics_port).into();
    let path = dir.path().join("probed.toml");
    std::fs::write(
        &path,
        config(
            dir.path(),
            metrics_port,
            up_port,
            down_port,
            Some(slow_port),
        ),
    )
    .unwrap();

    let control = Control::default();
    let sources = Sources::new("probed", Some(&path), Vec::new());
    let daemon = tokio::spawn(rookery_probed::app::run(sources, control.clone()));
    support::wait_tcp(metrics);

    let body = metrics_until(metrics, 5, |b| {
        b.contains("rookery_probed_probe_success{target=\"up\"")
            && b.contains("rookery_probed_probe_success{target=\"down\"")
    })
    .await;
    assert!(
        body.contains("rookery_probed_probe_success{target=\"up\",module=\"tcp\",site=\"lab\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("rookery_probed_probe_success{target=\"down\",module=\"tcp\"} 0"),
        "{body}"
    );
    assert!(
        body.contains(
            "rookery_probed_probes_total{target=\"down\",module=\"tcp\",result=\"refused\"}"
        ),
        "{body}"
    );
    assert!(
        body.contains("rookery_probed_probe_duration_seconds{target=\"up\",module=\"tcp\",site=\"lab\",phase=\"connect\"}"),
        "{body}"
    );
    assert!(body.contains("rookery_probed_targets 3"), "{body}");

    // Blackbox-compatible /probe.
    let (status, text) = get(
        metrics,
        &format!("/probe?module=tcp&target=127.0.0.1:{up_port}"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\nprobe_success 1\n"), "{text}");
    assert!(
        text.contains("# TYPE probe_duration_seconds gauge"),
        "{text}"
    );
    let (_, text) = get(
        metrics,
        &format!("/probe?module=tcp&target=127.0.0.1:{down_port}"),
    )
    .await;
    assert!(text.contains("\nprobe_success 0\n"), "{text}");
    assert!(
        text.contains("probe_failure_info{reason=\"refused\""),
        "{text}"
    );
    let (status, text) = get(metrics, "/probe?module=nope&target=x").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("Unknown module"), "{text}");
    let (status, _) = get(metrics, "/probe?module=tcp").await;
    assert_eq!(status, 400);

    // The slow target's probe connects, then waits 2 s for a reply that never comes. Reload
    // without it (and without "down") while that probe is in flight: "up" keeps its series,
    // the removed targets lose theirs, and the probe in flight still lands in the store.
    tokio::time::timeout(Duration::from_secs(5), accepted.recv())
        .await
        .expect("the slow target is probed within its interval")
        .unwrap();
    let reloaded_at = Instant::now();
    std::fs::write(
        &path,
        config(dir.path(), metrics_port, up_port, down_port, None).replace(
            &format!(
                "[[targets]]\nname = \"down\"\nmodule = \"tcp\"\naddress = \"127.0.0.1:{down_port}\"\ninterval = \"1s\"\n"
            ),
            "",
        ),
    )
    .unwrap();
    control.reload.notify_one();
    let body = metrics_until(metrics, 5, |b| b.contains("rookery_probed_targets 1")).await;
    assert!(body.contains("rookery_probed_targets 1"), "{body}");
    assert!(!body.contains("target=\"down\""), "{body}");
    assert!(!body.contains("target=\"slow\""), "{body}");
    let before = body
        .lines()
        .find(|l| l.starts_with("rookery_probed_probes_total{target=\"up\""))
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse::<f64>()
        .unwrap();
    let after_body = metrics_until(metrics, 4, |b| {
        b.lines()
            .find(|l| l.starts_with("rookery_probed_probes_total{target=\"up\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .is_some_and(|n| n > before)
    })
    .await;
    assert!(
        !after_body.contains("target=\"down\""),
        "removed target came back: {after_body}"
    );

    // Give the slow probe in flight time to finish (2 s timeout), then stop.
    tokio::time::sleep(Duration::from_millis(2300).saturating_sub(reloaded_at.elapsed())).await;
    control.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let db = dir.path().join("state/results.sqlite");
    let up_rows = store_rows(&db, "up");
    assert!(up_rows.len() >= 3, "{up_rows:?}");
    assert!(
        up_rows.iter().all(|(ok, r)| *ok && r == "ok"),
        "{up_rows:?}"
    );
    let down_rows = store_rows(&db, "down");
    assert!(!down_rows.is_empty());
    assert!(
        down_rows.iter().all(|(ok, r)| !*ok && r == "refused"),
        "{down_rows:?}"
    );
    let slow_rows = store_rows(&db, "slow");
    assert!(
        !slow_rows.is_empty(),
        "the slow probe in flight was dropped"
    );
    assert!(
        slow_rows.iter().all(|(_, r)| r == "timeout"),
        "{slow_rows:?}"
    );
}
