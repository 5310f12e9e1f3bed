use super::*;

fn rec(i: i64, host: &str, app: &str, sev: u8, msg: &str) -> LogRecord {
    LogRecord {
        received_ns: crate::now_ns(),
        timestamp_ns: Some(1_000 + i),
        host: host.into(),
        app: app.into(),
        severity: Some(sev),
        facility: Some(1),
        message: msg.into(),
        format: "rfc5424".into(),
        input: "tcp".into(),
        peer: "127.0.0.1:1".into(),
        ..LogRecord::default()
    }
}

fn open(dir: &Path, queue: usize, r: Retention) -> Store {
    Store::open(dir, queue, 100, r, Metrics::default()).unwrap()
}

const KEEP: Retention = Retention {
    max_bytes: u64::MAX,
    max_age: Duration::from_secs(3600),
    interval: Duration::from_secs(3600),
    downsample_after: Duration::from_secs(7 * 24 * 3600),
    downsample_step: Duration::from_secs(300),
};

#[tokio::test]
async fn committed_records_are_queried_by_every_filter() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 100, KEEP);
    let batch = vec![
        rec(1, "a", "sshd", 3, "login failed for root"),
        rec(2, "b", "sshd", 6, "login ok for alice"),
        rec(3, "a", "nginx", 4, "upstream timed out"),
    ];
    store
        .submit(batch)
        .await
        .unwrap()
        .committed()
        .await
        .unwrap();
    let q = |f: fn(&mut LogQuery)| {
        let mut q = LogQuery {
            limit: 10,
            ..LogQuery::default()
        };
        f(&mut q);
        let store = store.clone();
        async move {
            store
                .query(q)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.record.message)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(q(|_| {}).await.len(), 3);
    assert_eq!(
        q(|q| q.host = Some("a".into())).await,
        ["upstream timed out", "login failed for root"]
    );
    assert_eq!(
        q(|q| q.app = Some("sshd".into())).await,
        ["login ok for alice", "login failed for root"]
    );
    assert_eq!(
        q(|q| q.max_severity = Some(4)).await,
        ["upstream timed out", "login failed for root"]
    );
    assert_eq!(
        q(|q| q.text = Some("login AND root".into())).await,
        ["login failed for root"]
    );
    assert_eq!(
        q(|q| {
            q.start_ns = Some(1_002);
            q.end_ns = Some(1_003);
        })
        .await,
        ["login ok for alice"]
    );
    let bad = store
        .query(LogQuery {
            text: Some("\"unbalanced".into()),
            limit: 1,
            ..LogQuery::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(bad, StoreError::BadText(_)), "{bad:?}");
}

#[tokio::test]
async fn an_oversized_submission_is_refused_and_room_returns_after_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 2, KEEP);
    let err = store
        .try_submit(vec![rec(1, "h", "a", 1, "x"); 3])
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::TooLarge(3, 2)), "{err:?}");
    let ack = store.try_submit(vec![rec(1, "h", "a", 1, "x"); 2]).unwrap();
    // The room comes back only after the commit.
    ack.committed().await.unwrap();
    assert_eq!(store.queue_depth(), 0);
    store
        .try_submit(vec![rec(1, "h", "a", 1, "x")])
        .unwrap()
        .committed()
        .await
        .unwrap();
}

#[tokio::test]
async fn retention_keeps_the_store_under_max_bytes_deleting_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10_000, KEEP);
    let body = "x".repeat(500);
    for i in 0..20 {
        let batch = (0..500)
            .map(|j| rec(i * 500 + j, "h", "a", 1, &format!("{} {body}", i * 500 + j)))
            .collect();
        store
            .submit(batch)
            .await
            .unwrap()
            .committed()
            .await
            .unwrap();
    }
    let conn = Connection::open(store.path().unwrap()).unwrap();
    let before = used_bytes(&conn).unwrap();
    assert!(before > 4_000_000, "{before}");
    let max = 2 * 1024 * 1024;
    store.set_retention(Retention {
        max_bytes: max,
        ..KEEP
    });
    store.retain_now();
    // A write after the retention request is committed after it (one writer, in order).
    store
        .submit(vec![rec(99_999, "h", "a", 1, "after")])
        .await
        .unwrap()
        .committed()
        .await
        .unwrap();
    let after = used_bytes(&conn).unwrap();
    assert!(after <= max + 64 * 1024, "{after} > {max}");
    let oldest: i64 = conn
        .query_row("SELECT min(timestamp_ns) FROM logs", [], |r| r.get(0))
        .unwrap();
    let count: i64 = conn
        .query_row("SELECT count(*) FROM logs", [], |r| r.get(0))
        .unwrap();
    assert!(
        oldest > 1_000 && count < 10_000,
        "oldest {oldest}, count {count}"
    );
    let newest: String = conn
        .query_row(
            "SELECT message FROM logs ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(newest, "after");
}

#[tokio::test]
async fn retention_deletes_records_older_than_max_age() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 100, KEEP);
    let mut old = rec(1, "h", "a", 1, "old");
    old.received_ns -= 7_200_000_000_000;
    store
        .submit(vec![old, rec(2, "h", "a", 1, "new")])
        .await
        .unwrap()
        .committed()
        .await
        .unwrap();
    store.retain_now();
    store
        .submit(vec![rec(3, "h", "a", 1, "newer")])
        .await
        .unwrap()
        .committed()
        .await
        .unwrap();
    let got: Vec<String> = store
        .query(LogQuery {
            limit: 10,
            ..LogQuery::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.record.message)
        .collect();
    assert_eq!(got, ["newer", "new"]);
    let got = store
        .query(LogQuery {
            text: Some("old".into()),
            limit: 10,
            ..LogQuery::default()
        })
        .await
        .unwrap();
    assert!(got.is_empty(), "the FTS index forgot the deleted row");
}

#[tokio::test]
async fn old_samples_are_downsampled_to_the_last_per_step_and_recent_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10_000, KEEP);
    let now_ms = crate::now_ns() / 1_000_000;
    // One hour of a counter every 10 s, two days old, aligned to 5 minutes; and recent samples.
    let start = (now_ms - 2 * 86_400_000) / 300_000 * 300_000;
    let old: Vec<(i64, f64)> = (0..360).map(|i| (start + i * 10_000, i as f64)).collect();
    let recent: Vec<(i64, f64)> = (0..30)
        .map(|i| (now_ms - 300_000 + i * 10_000, 1.0))
        .collect();
    let labels = vec![("__name__".to_owned(), "c_total".to_owned())];
    let mut samples = old.clone();
    samples.extend(&recent);
    store
        .submit_samples(vec![SeriesSamples { labels, samples }])
        .await
        .unwrap()
        .committed()
        .await
        .unwrap();
    store.set_retention(Retention {
        downsample_after: Duration::from_secs(86_400),
        max_age: Duration::from_secs(30 * 86_400),
        ..KEEP
    });
    store.retain_now();
    store
        .submit(vec![rec(1, "h", "a", 1, "sync")])
        .await
        .unwrap()
        .committed()
        .await
        .unwrap();
    let got = store
        .select_series("c_total".into(), Vec::new(), 0, i64::MAX)
        .await
        .unwrap();
    let got = &got[0].samples;
    // 12 five-minute steps, each keeping its last sample (29, 59, …, 359), then the recent 30.
    let want_old: Vec<(i64, f64)> = (0..12)
        .map(|k| (start + (k * 30 + 29) * 10_000, (k * 30 + 29) as f64))
        .collect();
    assert_eq!(&got[..12], &want_old[..]);
    assert_eq!(&got[12..], &recent[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_downsamples_retains_by_age_and_keeps_the_outbox() {
    let pg = tokio::task::spawn_blocking(|| rookery_pgtest::PgServer::start().unwrap())
        .await
        .unwrap();
    let section = rookery_common::postgres::PostgresSection {
        url: format!("{}?sslmode=disable", pg.url()),
        ..Default::default()
    };
    let store = Store::open_postgres(&section, 10_000, 100, KEEP, Metrics::default())
        .await
        .unwrap();
    assert!(store.path().is_none());
    store.set_forwarding(true);
    store.set_otlp_forwarding(true);
    store.set_quic_forwarding(true);
    let sync = |store: Store| async move {
        store
            .submit(vec![rec(9, "h", "sync", 1, "sync")])
            .await
            .unwrap()
            .committed()
            .await
            .unwrap();
    };
    let mut old_log = rec(1, "h", "a", 1, "received two days ago");
    old_log.received_ns -= 2 * 86_400 * 1_000_000_000;
    store
        .submit(vec![old_log, rec(2, "h", "a", 1, "received now")])
        .await
        .unwrap()
        .committed()
        .await
        .unwrap();
    let now_ms = crate::now_ns() / 1_000_000;
    let start = (now_ms - 2 * 86_400_000) / 300_000 * 300_000;
    let old: Vec<(i64, f64)> = (0..360).map(|i| (start + i * 10_000, i as f64)).collect();
    let recent: Vec<(i64, f64)> = (0..30)
        .map(|i| (now_ms - 300_000 + i * 10_000, 1.0))
        .collect();
    let labels = vec![("__name__".to_owned(), "c_total".to_owned())];
    let mut samples = old.clone();
    samples.extend(&recent);
    store
        .submit_samples(vec![SeriesSamples {
            labels: labels.clone(),
            samples: samples.clone(),
        }])
        .await
        .unwrap()
        .committed()
        .await
        .unwrap();

    // The outbox holds every committed sample until it is delivered.
    let (seq, out) = store.outbox(1_000).await.unwrap().unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].labels, labels);
    assert_eq!(out[0].samples, samples);
    store.outbox_delivered(seq).await.unwrap();
    assert!(store.outbox(1_000).await.unwrap().is_none());
    // The OTLP outboxes hold the same samples and the committed logs, in order.
    let (seq, out) = store
        .sample_outbox(Outbox::OtlpSamples, 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out[0].samples, samples);
    store.delivered(Outbox::OtlpSamples, seq).await.unwrap();
    let logs = store
        .log_outbox(Outbox::OtlpLogs, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(logs.missing, 0);
    assert_eq!(logs.logs.len(), 1);
    assert_eq!(logs.logs[0].record.message, "received two days ago");
    let logs = store
        .log_outbox(Outbox::OtlpLogs, 10)
        .await
        .unwrap()
        .unwrap();
    let msgs: Vec<&str> = logs.logs.iter().map(|l| &*l.record.message).collect();
    assert_eq!(msgs, ["received two days ago", "received now"]);
    store.delivered(Outbox::OtlpLogs, logs.seq).await.unwrap();
    // Both log outboxes were written in the same statement (one CTE per outbox).
    let quic = store
        .log_outbox(Outbox::QuicLogs, 10)
        .await
        .unwrap()
        .unwrap();
    let msgs: Vec<&str> = quic.logs.iter().map(|l| &*l.record.message).collect();
    assert_eq!(msgs, ["received two days ago", "received now"]);
    store.delivered(Outbox::QuicLogs, quic.seq).await.unwrap();
    let (seq, out) = store
        .sample_outbox(Outbox::QuicSamples, 1_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out[0].samples, samples);
    store.delivered(Outbox::QuicSamples, seq).await.unwrap();
    assert!(
        store
            .log_outbox(Outbox::OtlpLogs, 10)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .sample_outbox(Outbox::OtlpSamples, 10)
            .await
            .unwrap()
            .is_none()
    );

    // Downsampling keeps the last sample per step, as with SQLite.
    store.set_retention(Retention {
        downsample_after: Duration::from_secs(86_400),
        max_age: Duration::from_secs(30 * 86_400),
        ..KEEP
    });
    store.retain_now();
    sync(store.clone()).await;
    let got = store
        .select_series("c_total".into(), Vec::new(), 0, i64::MAX)
        .await
        .unwrap();
    let got = &got[0].samples;
    let want_old: Vec<(i64, f64)> = (0..12)
        .map(|k| (start + (k * 30 + 29) * 10_000, (k * 30 + 29) as f64))
        .collect();
    assert_eq!(&got[..12], &want_old[..]);
    assert_eq!(&got[12..], &recent[..]);

    // Max age: the old log and the old samples go, the recent ones stay.
    store.set_retention(Retention {
        max_age: Duration::from_secs(86_400),
        ..KEEP
    });
    store.retain_now();
    sync(store.clone()).await;
    let logs = store
        .query(LogQuery {
            app: Some("a".into()),
            limit: 10,
            ..LogQuery::default()
        })
        .await
        .unwrap();
    let msgs: Vec<&str> = logs.iter().map(|l| &*l.record.message).collect();
    assert_eq!(msgs, ["received now"]);
    let got = store
        .select_series("c_total".into(), Vec::new(), 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(got[0].samples, recent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_max_bytes_deletes_the_oldest_until_the_tables_fit() {
    let pg = tokio::task::spawn_blocking(|| rookery_pgtest::PgServer::start().unwrap())
        .await
        .unwrap();
    let section = rookery_common::postgres::PostgresSection {
        url: format!("{}?sslmode=disable", pg.url()),
        ..Default::default()
    };
    let metrics = Metrics::default();
    let store = Store::open_postgres(&section, 10_000, 1_000, KEEP, metrics.clone())
        .await
        .unwrap();
    let Reader::Postgres(db) = &store.reader else {
        panic!("not PostgreSQL")
    };
    let empty = db.size().await.unwrap();
    // About 8 MB of logs (messages of 1 KB of words the full-text index has to keep).
    let total = 8_000usize;
    for chunk in 0..8usize {
        let batch: Vec<LogRecord> = (0..1_000)
            .map(|i| {
                let n = chunk * 1_000 + i;
                let words: String = (0..100).map(|w| format!("w{n}x{w} ")).collect();
                rec(
                    i64::try_from(n).unwrap(),
                    "h",
                    "big",
                    6,
                    &format!("#{n} {words}"),
                )
            })
            .collect();
        store
            .submit(batch)
            .await
            .unwrap()
            .committed()
            .await
            .unwrap();
    }
    let full = db.size().await.unwrap();
    let bound = 4 * 1024 * 1024;
    assert!(full > 2 * bound, "{full} bytes after the inserts");
    store.set_retention(Retention {
        max_bytes: bound,
        ..KEEP
    });
    store.retain_now();
    // The sync record goes after the retention run in the writer's order.
    store
        .submit(vec![rec(0, "h", "sync", 1, "sync")])
        .await
        .unwrap()
        .committed()
        .await
        .unwrap();
    let after = db.size().await.unwrap();
    assert!(
        after <= bound,
        "{after} bytes over the bound {bound} (empty: {empty})"
    );
    let left = store
        .query(LogQuery {
            app: Some("big".into()),
            limit: 10_000,
            ..LogQuery::default()
        })
        .await
        .unwrap();
    assert!(
        !left.is_empty() && left.len() < total,
        "{} left",
        left.len()
    );
    // The newest stay, in one run up to the last: only the oldest went.
    let nums: Vec<usize> = left
        .iter()
        .map(|l| {
            l.record.message[1..]
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let want: Vec<usize> = (total - left.len()..total).rev().collect();
    assert_eq!(nums, want);
    let deleted = metrics.retention_deleted.get();
    assert_eq!(deleted, (total - left.len()) as u64);
}

#[tokio::test]
async fn the_otlp_log_outbox_reports_records_retention_deleted_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 100, KEEP);
    store.set_otlp_forwarding(true);
    let mut old = rec(1, "h", "a", 1, "old");
    old.received_ns -= 2 * 86_400 * 1_000_000_000;
    store
        .submit(vec![old, rec(2, "h", "a", 1, "new")])
        .await
        .unwrap()
        .committed()
        .await
        .unwrap();
    store.set_retention(Retention {
        max_age: Duration::from_secs(86_400),
        ..KEEP
    });
    store.retain_now();
    store
        .submit(vec![rec(3, "h", "a", 1, "sync")])
        .await
        .unwrap()
        .committed()
        .await
        .unwrap();
    let batch = store
        .log_outbox(Outbox::OtlpLogs, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.missing, 1);
    let msgs: Vec<&str> = batch.logs.iter().map(|l| &*l.record.message).collect();
    assert_eq!(msgs, ["new", "sync"]);
    store.delivered(Outbox::OtlpLogs, batch.seq).await.unwrap();
    assert!(
        store
            .log_outbox(Outbox::OtlpLogs, 10)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn samples_read_the_same_before_and_after_the_head_merges_and_the_last_write_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 100_000, KEEP);
    // Recent times (retention by max age keeps them): b + 1, b + 2, …
    let b = crate::now_ns() / 1_000_000 - 600_000;
    let labels = vec![("__name__".to_owned(), "h_total".to_owned())];
    let other = vec![("__name__".to_owned(), "other".to_owned())];
    let submit = |labels: &Vec<(String, String)>, samples: Vec<(i64, f64)>| {
        let store = store.clone();
        let labels = labels.clone();
        async move {
            store
                .submit_samples(vec![SeriesSamples { labels, samples }])
                .await
                .unwrap()
                .committed()
                .await
                .unwrap();
        }
    };
    let read = |start: i64, end: i64| {
        let store = store.clone();
        async move {
            store
                .select_series("h_total".into(), Vec::new(), start, end)
                .await
                .unwrap()
                .remove(0)
                .samples
        }
    };
    // Before any merge: 1..=5, then 3 and 4 written again (new values), and another series.
    submit(&labels, (1..=5).map(|t| (b + t, t as f64)).collect()).await;
    submit(&labels, vec![(b + 3, 30.0), (b + 4, 40.0)]).await;
    submit(&other, vec![(b + 2, 9.0)]).await;
    let want = vec![
        (b + 1, 1.0),
        (b + 2, 2.0),
        (b + 3, 30.0),
        (b + 4, 40.0),
        (b + 5, 5.0),
    ];
    assert_eq!(read(b, b + 10).await, want);
    assert_eq!(read(b + 2, b + 3).await, want[1..3].to_vec());
    // Retention merges the head first: the same answers from `samples` alone.
    store.retain_now();
    submit(&other, vec![(b + 3, 9.0)]).await;
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let head = |conn: &Connection| -> i64 {
        conn.query_row("SELECT count(*) FROM samples_head", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(
        head(&conn),
        1,
        "only the sample after the merge is in the head"
    );
    assert_eq!(read(b, b + 10).await, want);
    // Written again after the merge: the head's value wins over the merged one.
    submit(&labels, vec![(b + 5, 50.0)]).await;
    assert_eq!(read(b, b + 10).await[4], (b + 5, 50.0));
    // The writer merges by itself once the head holds HEAD_MERGE_ROWS samples.
    let many: Vec<(i64, f64)> = (100..100 + HEAD_MERGE_ROWS as i64)
        .map(|t| (b + t, 1.0))
        .collect();
    submit(&labels, many).await;
    // The merge runs after the acknowledgement; the next commit comes after it.
    store
        .submit(vec![rec(1, "h", "a", 1, "barrier")])
        .await
        .unwrap()
        .committed()
        .await
        .unwrap();
    assert_eq!(head(&conn), 0);
    let all = read(0, i64::MAX).await;
    assert_eq!(all.len(), 5 + HEAD_MERGE_ROWS as usize);
    assert_eq!(all[4], (b + 5, 50.0));
}
