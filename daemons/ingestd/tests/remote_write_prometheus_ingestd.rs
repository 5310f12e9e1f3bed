//! Debian's `prometheus` scrapes ingestd's own /metrics and remote-writes into ingestd; the
//! series are then queried back over gRPC (`rookery.v1.Metrics`) and through the
//! Prometheus-compatible `/api/v1/query_range`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Ingestd, free_port, write_config};
use rookery_common::proto::metrics_client::MetricsClient;
use rookery_common::proto::{LabelMatcher, MetricFunction, QueryMetricsRequest};

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    (status, out.split_once("\r\n\r\n").unwrap().1.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_remote_writes_its_scrape_of_ingestd_and_the_series_come_back() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), "", "");
    let d = Ingestd::start(tmp.path()).await;
    let metrics = d.addrs["metrics"].clone();
    let http = d.addr("http-0");
    let prom_cfg = tmp.path().join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: ingestd\n    static_configs:\n      - targets: ['{metrics}']\n\
             remote_write:\n  - url: http://{http}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n      min_backoff: 100ms\n      max_backoff: 1s\n"
        ),
    )
    .unwrap();
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", free_port()))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed by scripts/install-ingestd-test-deps.sh"),
    );
    let start = now_ms();
    let ch = rookery_common::grpc::connect(&d.socket()).await.unwrap();
    let mut client = MetricsClient::new(ch);
    let deadline = Instant::now() + Duration::from_secs(60);
    let up = loop {
        let resp = client
            .query_metrics(QueryMetricsRequest {
                name: "up".into(),
                matchers: vec![LabelMatcher {
                    name: "job".into(),
                    op: 0,
                    value: "ingestd".into(),
                }],
                start_unix_ms: start,
                end_unix_ms: now_ms(),
                step_ms: 1000,
                ..QueryMetricsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        if resp.series.first().is_some_and(|s| s.points.len() >= 3) {
            break resp;
        }
        assert!(
            Instant::now() < deadline,
            "no remote-written `up` after 60 s: {resp:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(up.series.len(), 1);
    let s = &up.series[0];
    assert_eq!(s.labels.get("instance"), Some(&metrics));
    assert_eq!(s.labels.get("__name__").map(String::as_str), Some("up"));
    assert!(s.points.iter().all(|p| p.value == 1.0), "{s:?}");

    // Stored samples increase: a positive rate of ingestd's own counter, from ingestd's store.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = client
            .query_metrics(QueryMetricsRequest {
                name: "rookery_ingestd_stored_samples_total".into(),
                start_unix_ms: now_ms() - 1000,
                end_unix_ms: now_ms(),
                step_ms: 1000,
                function: MetricFunction::Rate.into(),
                range_ms: 10_000,
                sum: true,
                ..QueryMetricsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        if resp
            .series
            .first()
            .and_then(|s| s.points.last())
            .is_some_and(|p| p.value > 0.0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no positive rate: {resp:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let end = now_ms() / 1000;
    let (status, body) = get(
        &metrics,
        &format!(
            "/api/v1/query_range?query=up%7Bjob%3D%22ingestd%22%7D&start={}&end={end}&step=1s",
            start / 1000
        ),
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["resultType"], "matrix");
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{body}");
    assert_eq!(result[0]["metric"]["job"], "ingestd");
    assert_eq!(result[0]["values"][0][1], "1");
    let (status, body) = get(
        &metrics,
        "/api/v1/query_range?query=up%2B1&start=0&end=1&step=1s",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"errorType\":\"bad_data\""), "{body}");
}
