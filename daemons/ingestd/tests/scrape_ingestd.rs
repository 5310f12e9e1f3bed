//! The scraper: ingestd scrapes its own loopback /metrics and a port where nothing listens;
//! the samples come back over gRPC with job and instance labels, and `up` is 1 and 0.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::{Ingestd, free_port, write_config};
use rookery_common::proto::QueryMetricsRequest;
use rookery_common::proto::metrics_client::MetricsClient;

#[tokio::test(flavor = "multi_thread")]
async fn scrapes_store_samples_with_job_instance_and_up() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), "", "");
    let path = tmp.path().join("ingestd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let cfg: toml::Table = toml::from_str(&text).unwrap();
    let own = cfg["metrics"]["listen"].as_str().unwrap().to_owned();
    let dead = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        &path,
        text.replace(
            "targets = []",
            &format!(
                "targets = [{{ job = \"self\", url = \"http://{own}/metrics\" }}, {{ job = \"gone\", url = \"http://{dead}/metrics\" }}]"
            ),
        ),
    )
    .unwrap();
    let d = Ingestd::start(tmp.path()).await;
    let ch = rookery_common::grpc::connect(&d.socket()).await.unwrap();
    let mut client = MetricsClient::new(ch);
    let now = || {
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let up = client
            .query_metrics(QueryMetricsRequest {
                name: "up".into(),
                start_unix_ms: now(),
                end_unix_ms: now(),
                step_ms: 1000,
                ..QueryMetricsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut got: Vec<(String, String, f64)> = up
            .series
            .iter()
            .map(|s| {
                (
                    s.labels["job"].clone(),
                    s.labels["instance"].clone(),
                    s.points[0].value,
                )
            })
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        if got.len() == 2 {
            assert_eq!(
                got,
                [
                    ("gone".to_owned(), dead.clone(), 0.0),
                    ("self".to_owned(), own.clone(), 1.0)
                ]
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no up series in 20 s: {got:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // ingestd's own counter, scraped: it counts the scrape's own samples, so it grows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let resp = client
            .query_metrics(QueryMetricsRequest {
                name: "rookery_ingestd_stored_samples_total".into(),
                start_unix_ms: now(),
                end_unix_ms: now(),
                step_ms: 1000,
                ..QueryMetricsRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        if let Some(s) = resp.series.first()
            && s.points[0].value > 0.0
        {
            assert_eq!(s.labels["job"], "self");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{resp:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
