//! Forwarding by OTLP/HTTP protobuf with an on-disk spool: ingestd A forwards every log record
//! and metric sample it stores to ingestd B's OTLP/HTTP input. B goes down (an uplink
//! outage) while A keeps acknowledging HTTP log pushes and remote_write bodies; A is even
//! killed with -9 and restarted meanwhile. When B is back, every record and sample arrives,
//! each log record exactly once (checked by its `rookery.record_id` attribute), with its
//! fields intact, and A's outboxes drain.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;
mod forwarding;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Ingestd, Licensed, free_port, write_config};
use forwarding::{
    LOGS, PER_SERIES, SERIES, count, db, logs_in_b, metric, push_logs, push_samples, samples_in_b,
    wait,
};

/// host, app, severity, timestamp_ns, message, structured_data, format
type Row = (
    String,
    String,
    Option<u8>,
    Option<i64>,
    String,
    String,
    String,
);

#[tokio::test(flavor = "multi_thread")]
async fn an_uplink_outage_and_a_kill_9_lose_no_record_forwarded_by_otlp() {
    let b_dir = tempfile::tempdir().unwrap();
    write_config(b_dir.path(), "", "");
    let b_port = free_port();
    let cfg = std::fs::read_to_string(b_dir.path().join("ingestd.toml")).unwrap();
    let fixed = cfg.replace(
        "[otlp]\ngrpc = [\"127.0.0.1:0\"]\nhttp = [\"127.0.0.1:0\"]",
        &format!("[otlp]\ngrpc = []\nhttp = [\"127.0.0.1:{b_port}\"]"),
    );
    assert_ne!(fixed, cfg);
    std::fs::write(b_dir.path().join("ingestd.toml"), fixed).unwrap();
    let mut b = Ingestd::start(b_dir.path()).await;

    let a_dir = tempfile::tempdir().unwrap();
    let licensed = Licensed::start(a_dir.path(), false).await;
    write_config(a_dir.path(), "", "");
    let cfg = std::fs::read_to_string(a_dir.path().join("ingestd.toml")).unwrap();
    std::fs::write(
        a_dir.path().join("ingestd.toml"),
        format!(
            "{cfg}\n[forward]\notlp-url = \"http://127.0.0.1:{b_port}/\"\nbatch-logs = 15\nbatch-samples = 30\n\
             licensed-socket = \"{}\"\nlicence-check-interval = \"1s\"\n",
            licensed.socket.display()
        ),
    )
    .unwrap();
    let mut a = Ingestd::start(a_dir.path()).await;

    // Uplink up: records flow.
    push_logs(&a, 1);
    push_samples(&a, 1);
    let per_round = i64::try_from(SERIES * PER_SERIES).unwrap();
    let logs_round = i64::try_from(LOGS).unwrap();
    wait("round 1 reaches B", || {
        logs_in_b(b_dir.path()) == logs_round && samples_in_b(b_dir.path()) == per_round
    })
    .await;

    // Outage: B stops; A acknowledges and spools.
    b.stop();
    push_logs(&a, 2);
    push_samples(&a, 2);
    wait("A notices the outage", || {
        metric(&a, "rookery_ingestd_forward_otlp_failures_total") > 0
    })
    .await;
    push_logs(&a, 3);
    // A dies hard in the middle of the outage and comes back: the spool is on disk.
    a.kill9();
    let a = Ingestd::start(a_dir.path()).await;
    push_logs(&a, 4);
    push_samples(&a, 3);
    assert_eq!(logs_in_b(b_dir.path()), logs_round, "B was down");

    let b = Ingestd::start(b_dir.path()).await;
    wait("every spooled record reaches B", || {
        logs_in_b(b_dir.path()) >= 4 * logs_round && samples_in_b(b_dir.path()) == 3 * per_round
    })
    .await;
    wait("A's outboxes drain", || {
        count(a_dir.path(), "SELECT count(*) FROM forward_otlp_logs") == 0
            && count(a_dir.path(), "SELECT count(*) FROM forward_otlp_samples") == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Exactly once: one row per record id, every record id of A's store, fields intact.
    let conn = db(b_dir.path());
    let mut stmt = conn
        .prepare(
            "SELECT host, app, severity, timestamp_ns, message, structured_data, format FROM logs WHERE app = 'fwdapp'",
        )
        .unwrap();
    let rows: Vec<Row> = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 4 * LOGS, "each record exactly once");
    let mut by_id: BTreeMap<String, String> = BTreeMap::new();
    for (host, app, sev, ts, message, sd, format) in &rows {
        assert_eq!(
            (host.as_str(), app.as_str(), *sev, format.as_str()),
            ("dev-a", "fwdapp", Some(4), "otlp")
        );
        let attrs: serde_json::Map<String, serde_json::Value> = serde_json::from_str(sd).unwrap();
        let round = message.split(' ').nth(2).unwrap();
        assert_eq!(attrs["round"], round, "{sd}");
        assert_eq!(attrs["syslog.facility"], "19", "{sd}");
        let line: i64 = message.rsplit(' ').next().unwrap().parse().unwrap();
        let want_ts = chrono::DateTime::parse_from_rfc3339(&format!(
            "2026-11-23T10:00:{:02}.{:03}Z",
            line % 60,
            round.parse::<u32>().unwrap()
        ))
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap();
        assert_eq!(*ts, Some(want_ts), "{message}");
        let id = attrs["rookery.record_id"].as_str().unwrap().to_owned();
        assert!(
            by_id.insert(id, message.clone()).is_none(),
            "repeated {message}"
        );
    }
    let a_ids: Vec<i64> = {
        let conn = db(a_dir.path());
        let mut stmt = conn
            .prepare("SELECT id FROM logs WHERE app = 'fwdapp' ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let got_ids: Vec<i64> = {
        let mut v: Vec<i64> = by_id
            .keys()
            .map(|k| k.rsplit('/').next().unwrap().parse().unwrap())
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(got_ids, a_ids);
    for round in 1..=4 {
        for i in 0..LOGS {
            let m = format!("fwd round {round} line {i}");
            assert!(by_id.values().any(|v| *v == m), "missing {m}");
        }
    }
    // Samples: every one, under the same labels (job from service.name).
    assert_eq!(
        count(
            b_dir.path(),
            "SELECT count(*) FROM series WHERE name = 'otlp_fwd_total' AND labels LIKE '%\"job\":\"dev\"%'"
        ),
        i64::try_from(SERIES).unwrap()
    );
    assert_eq!(samples_in_b(b_dir.path()), 3 * per_round);
    assert_eq!(
        metric(&a, "rookery_ingestd_forward_otlp_dropped_records_total"),
        0
    );
    drop(b);
    drop(a);
    licensed.stop().await;
}

#[test]
fn forward_otlp_config_errors_name_file_line_col_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ingestd.toml");
    let check = |text: &str| -> Vec<String> {
        std::fs::write(&path, text).unwrap();
        rookery_common::config::load::<rookery_ingestd::config::Config>(
            &rookery_common::config::Sources::new("ingestd", Some(&path), Vec::new()),
        )
        .expect_err("config must be rejected")
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
    };
    let p = path.display().to_string();
    assert_eq!(
        check("[forward]\notlp-url = \"otel:4318\"\nbatch-logs = 0\n"),
        [
            format!(
                "{p}:2:12: forward.otlp-url: \"otel:4318\" is not an http(s) URL (expected the receiver's base URL, e.g. \"https://otel.example.com:4318\")"
            ),
            format!("{p}:3:14: forward.batch-logs: 0 is out of range (expected 1 to 100000)"),
        ]
    );
    assert_eq!(
        check("[forward]\notlp-url = \"http://otel:4318/v1/logs\"\n"),
        [format!(
            "{p}:2:12: forward.otlp-url: \"http://otel:4318/v1/logs\" names a signal path; give the base URL (\"/v1/logs\" and \"/v1/metrics\" are appended)"
        )]
    );
}
