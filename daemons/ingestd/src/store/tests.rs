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

/// Submits log records and waits for their commit.
async fn commit_logs(store: &Store, records: Vec<LogRecord>) {
    store
        .submit(records)
        .await
        .unwrap()
        .committed()
        .await
        .unwrap();
}

/// Submits one series' samples and waits for their commit.
async fn commit_samples(store: &Store, labels: &[(String, String)], samples: Vec<(i64, f64)>) {
    store
        .submit_samples(vec![SeriesSamples {
            labels: labels.to_vec().into(),
            samples,
        }])
        .await
        .unwrap()
        .committed()
        .await
        .unwrap();
}

/// The samples of the one series named `name` from `start` to `end` (ms).
async fn series_samples(store: &Store, name: &str, start: i64, end: i64) -> Vec<(i64, f64)> {
    store
        .select_series(name.into(), Vec::new(), start, end)
        .await
        .unwrap()
        .remove(0)
        .samples
}

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

/// Records `first..first + n` of the model: hosts, apps, severities, facilities, words and
/// parse errors varied so that every filter splits them.
fn model_records(first: i64, n: i64) -> Vec<LogRecord> {
    (first..first + n)
        .map(|i| {
            let mut r = rec(
                i,
                &format!("host{}", i % 13),
                ["sshd", "kernel", "cron", "bgpd"][(i % 4) as usize],
                (i % 8) as u8,
                &format!("event {i} w{} link-{} state", i % 10, i % 3),
            );
            r.facility = (i % 5 != 0).then_some((i % 24) as u8);
            if i % 7 == 0 {
                r.severity = None;
            }
            if i % 11 == 0 {
                r.parse_error = Some("no PRI".into());
            }
            r
        })
        .collect()
}

#[tokio::test]
async fn queries_over_many_blocks_return_exactly_the_matching_records_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 10_000, KEEP);
    // Submissions of every size: large ones encoded by the submitter (one spans two blocks),
    // small ones (as UDP makes them) put into blocks by the writer.
    let mut all = Vec::new();
    let mut next = 0;
    for n in [5000, 1, 1, 31, 32, 700, 3, 4097] {
        let batch = model_records(next, n);
        next += n;
        all.extend(batch.clone());
        if n < 4 {
            for r in batch {
                store
                    .try_submit(vec![r])
                    .unwrap()
                    .committed()
                    .await
                    .unwrap();
            }
        } else {
            commit_logs(&store, batch).await;
        }
    }
    let blocks: i64 = Connection::open(store.path().unwrap())
        .unwrap()
        .query_row("SELECT count(*) FROM log_blocks", [], |r| r.get(0))
        .unwrap();
    assert!(blocks >= 8, "{blocks} blocks");
    // Ids are 1.. in submission order.
    let model: Vec<(i64, LogRecord)> = (1..).zip(all).collect();
    let has_word = |r: &LogRecord, w: &str| r.message.split([' ', '-']).any(|x| x == w);
    type Filter = (LogQuery, Box<dyn Fn(&LogRecord) -> bool>);
    let q = |f: fn(&mut LogQuery)| {
        let mut q = LogQuery {
            limit: 100_000,
            ..LogQuery::default()
        };
        f(&mut q);
        q
    };
    let cases: Vec<Filter> = vec![
        (q(|_| {}), Box::new(|_| true)),
        (
            q(|q| q.host = Some("host3".into())),
            Box::new(|r| r.host == "host3"),
        ),
        (
            q(|q| q.app = Some("bgpd".into())),
            Box::new(|r| r.app == "bgpd"),
        ),
        (q(|q| q.host = Some("nohost".into())), Box::new(|_| false)),
        (
            q(|q| q.max_severity = Some(2)),
            Box::new(|r| r.severity.is_some_and(|s| s <= 2)),
        ),
        (
            q(|q| q.facility = Some(23)),
            Box::new(|r| r.facility == Some(23)),
        ),
        (
            q(|q| q.parse_errors_only = true),
            Box::new(|r| r.parse_error.is_some()),
        ),
        (
            q(|q| {
                q.start_ns = Some(1_000 + 4_990);
                q.end_ns = Some(1_000 + 5_040);
            }),
            Box::new(|r| (1_000 + 4_990..1_000 + 5_040).contains(&r.timestamp_ns.unwrap_or(0))),
        ),
        (
            q(|q| q.text = Some("w7".into())),
            Box::new(move |r| has_word(r, "w7")),
        ),
        (
            q(|q| q.text = Some("w7 AND link NOT 2".into())),
            Box::new(move |r| has_word(r, "w7") && !has_word(r, "2")),
        ),
        (
            q(|q| q.text = Some("\"link 1\" OR 4999".into())),
            Box::new(move |r| r.message.contains("link-1") || has_word(r, "4999")),
        ),
        (q(|q| q.text = Some("even*".into())), Box::new(|_| true)),
        (
            q(|q| {
                q.text = Some("w3".into());
                q.host = Some("host5".into());
                q.max_severity = Some(5);
            }),
            Box::new(move |r| {
                has_word(r, "w3") && r.host == "host5" && r.severity.is_some_and(|s| s <= 5)
            }),
        ),
    ];
    for (query, keep) in &cases {
        let want: Vec<i64> = model
            .iter()
            .rev()
            .filter(|(_, r)| keep(r))
            .map(|(id, _)| *id)
            .collect();
        let got = store.query(query.clone()).await.unwrap();
        let ids: Vec<i64> = got.iter().map(|l| l.id).collect();
        assert_eq!(ids.len(), want.len(), "{query:?}");
        assert!(ids == want, "{query:?}");
        for l in &got {
            assert!(
                l.record == model[(l.id - 1) as usize].1,
                "record {} changed",
                l.id
            );
        }
        // Paging by id, 333 a page across block boundaries, gives the same records.
        let mut paged = Vec::new();
        let mut before = None;
        loop {
            let mut page_q = query.clone();
            page_q.limit = 333;
            page_q.before_id = before;
            let page = store.query(page_q).await.unwrap();
            let Some(last) = page.last() else { break };
            before = Some(last.id);
            paged.extend(page.iter().map(|l| l.id));
        }
        assert!(paged == want, "paging {query:?}");
    }
}

#[tokio::test]
async fn a_submission_is_committed_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::default();
    let store = Store::open(dir.path(), 10_000, 1_000, KEEP, metrics.clone()).unwrap();
    for (n, first) in [(500, 0), (31, 500), (1, 531)] {
        commit_logs(&store, model_records(first, n)).await;
    }
    // One commit per submission (large, small, one record), not one per record.
    assert_eq!(metrics.commits.get(), 3);
    let stored = metrics
        .stored
        .get_or_create(&InputLabels {
            input: "tcp".into(),
        })
        .get();
    assert_eq!(stored, 532);
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
    for i in 0..20 {
        // Words that do not repeat: they neither compress nor share index entries.
        let batch = (0..500)
            .map(|j| {
                let n = i * 500 + j;
                let body: String = (0..40).map(|w| format!("w{n}x{w} ")).collect();
                rec(n, "h", "a", 1, &format!("{n} {body}"))
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
    commit_logs(&store, vec![rec(99_999, "h", "a", 1, "after")]).await;
    let after = used_bytes(&conn).unwrap();
    assert!(after <= max + 64 * 1024, "{after} > {max}");
    let left = store
        .query(LogQuery {
            limit: 100_000,
            ..LogQuery::default()
        })
        .await
        .unwrap();
    let oldest = left.iter().filter_map(|l| l.record.timestamp_ns).min();
    assert!(
        oldest > Some(1_000) && left.len() < 10_000,
        "oldest {oldest:?}, count {}",
        left.len()
    );
    assert_eq!(left[0].record.message, "after");
    // The newest stay, in one run: only the oldest went.
    let ts: Vec<i64> = left[1..]
        .iter()
        .filter_map(|l| l.record.timestamp_ns)
        .collect();
    let want: Vec<i64> = (0..ts.len() as i64).map(|k| 1_000 + 9_999 - k).collect();
    assert_eq!(ts, want);
}

#[tokio::test]
async fn retention_deletes_records_older_than_max_age() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 100, KEEP);
    let mut old = rec(1, "h", "a", 1, "old");
    old.received_ns -= 7_200_000_000_000;
    // Retention deletes whole blocks, each the records of one commit (received together).
    commit_logs(&store, vec![old]).await;
    commit_logs(&store, vec![rec(2, "h", "a", 1, "new")]).await;
    store.retain_now();
    commit_logs(&store, vec![rec(3, "h", "a", 1, "newer")]).await;
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
    commit_samples(&store, &labels, samples).await;
    store.set_retention(Retention {
        downsample_after: Duration::from_secs(86_400),
        max_age: Duration::from_secs(30 * 86_400),
        ..KEEP
    });
    store.retain_now();
    commit_logs(&store, vec![rec(1, "h", "a", 1, "sync")]).await;
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
        commit_logs(&store, vec![rec(9, "h", "sync", 1, "sync")]).await;
    };
    let mut old_log = rec(1, "h", "a", 1, "received two days ago");
    old_log.received_ns -= 2 * 86_400 * 1_000_000_000;
    commit_logs(&store, vec![old_log, rec(2, "h", "a", 1, "received now")]).await;
    let now_ms = crate::now_ns() / 1_000_000;
    let start = (now_ms - 2 * 86_400_000) / 300_000 * 300_000;
    let old: Vec<(i64, f64)> = (0..360).map(|i| (start + i * 10_000, i as f64)).collect();
    let recent: Vec<(i64, f64)> = (0..30)
        .map(|i| (now_ms - 300_000 + i * 10_000, 1.0))
        .collect();
    let labels = vec![("__name__".to_owned(), "c_total".to_owned())];
    let mut samples = old.clone();
    samples.extend(&recent);
    commit_samples(&store, &labels, samples.clone()).await;

    // The outbox holds every committed sample until it is delivered.
    let (seq, out) = store.outbox(1_000).await.unwrap().unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(*out[0].labels, *labels);
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
    commit_logs(&store, vec![rec(0, "h", "sync", 1, "sync")]).await;
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
    commit_logs(&store, vec![old]).await;
    commit_logs(&store, vec![rec(2, "h", "a", 1, "new")]).await;
    store.set_retention(Retention {
        max_age: Duration::from_secs(86_400),
        ..KEEP
    });
    store.retain_now();
    commit_logs(&store, vec![rec(3, "h", "a", 1, "sync")]).await;
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
    let store = open(dir.path(), 300_000, KEEP);
    // Recent times (retention by max age keeps them): b + 1, b + 2, …
    let b = crate::now_ns() / 1_000_000 - 600_000;
    let labels = vec![("__name__".to_owned(), "h_total".to_owned())];
    let other = vec![("__name__".to_owned(), "other".to_owned())];
    let read = |start, end| series_samples(&store, "h_total", start, end);
    // Before any merge: 1..=5, then 3 and 4 written again (new values), and another series.
    commit_samples(
        &store,
        &labels,
        (1..=5).map(|t| (b + t, t as f64)).collect(),
    )
    .await;
    commit_samples(&store, &labels, vec![(b + 3, 30.0), (b + 4, 40.0)]).await;
    commit_samples(&store, &other, vec![(b + 2, 9.0)]).await;
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
    commit_samples(&store, &other, vec![(b + 3, 9.0)]).await;
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let head =
        |conn: &Connection| -> i64 { i64::try_from(head_samples(conn).unwrap().len()).unwrap() };
    assert_eq!(
        head(&conn),
        1,
        "only the sample after the merge is in the head"
    );
    assert_eq!(read(b, b + 10).await, want);
    // Written again after the merge: the head's value wins over the merged one.
    commit_samples(&store, &labels, vec![(b + 5, 50.0)]).await;
    assert_eq!(read(b, b + 10).await[4], (b + 5, 50.0));
    // The writer merges by itself once the head holds HEAD_MERGE_ROWS samples.
    let many: Vec<(i64, f64)> = (100..100 + HEAD_MERGE_ROWS as i64)
        .map(|t| (b + t, 1.0))
        .collect();
    commit_samples(&store, &labels, many).await;
    // The merge runs after the acknowledgement; the next commit comes after it.
    commit_logs(&store, vec![rec(1, "h", "a", 1, "barrier")]).await;
    assert_eq!(head(&conn), 0);
    let all = read(0, i64::MAX).await;
    assert_eq!(all.len(), 5 + HEAD_MERGE_ROWS as usize);
    assert_eq!(all[4], (b + 5, 50.0));
}

#[tokio::test]
async fn later_samples_win_across_head_blocks_and_merged_samples() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 100_000, KEEP);
    let b = crate::now_ns() / 1_000_000 - 600_000;
    let labels = vec![
        ("__name__".to_owned(), "dup_total".to_owned()),
        ("job".to_owned(), "a".to_owned()),
    ];
    let submit = |samples| commit_samples(&store, &labels, samples);
    let read = || series_samples(&store, "dup_total", b, b + 100);
    // Merged into the chunks first: times 1, 2, 3.
    submit(vec![(b + 1, 1.0), (b + 2, 2.0), (b + 3, 3.0)]).await;
    store.retain_now();
    // Then three head blocks that write time 2 again, and time 4 twice in one block.
    submit(vec![(b + 2, 20.0), (b + 4, 4.0), (b + 4, 40.0)]).await;
    submit(vec![(b + 2, 200.0)]).await;
    submit(vec![(b + 3, 30.0)]).await;
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let blocks: i64 = conn
        .query_row("SELECT count(*) FROM samples_head_blocks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(blocks, 3, "one block per commit");
    assert_eq!(head_samples(&conn).unwrap().len(), 5);
    let want = vec![(b + 1, 1.0), (b + 2, 200.0), (b + 3, 30.0), (b + 4, 40.0)];
    assert_eq!(read().await, want, "from samples and the head");
    store.retain_now();
    // A commit after the retention run: the merge is done once it is acknowledged.
    submit(vec![(b + 50, 5.0)]).await;
    assert_eq!(head_samples(&conn).unwrap().len(), 1);
    let merged: Vec<(i64, f64)> = merged_samples(&conn)
        .unwrap()
        .into_iter()
        .map(|(_, ts, v)| (ts, v))
        .collect();
    assert_eq!(merged, want, "the merge kept the last write of each time");
    let mut all = want;
    all.push((b + 50, 5.0));
    assert_eq!(read().await, all);
}

#[tokio::test]
async fn a_database_with_the_row_per_sample_head_is_merged_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let b = crate::now_ns() / 1_000_000 - 600_000;
    {
        // The layout before the packed head: `samples_head` with one row per sample.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE series (id INTEGER PRIMARY KEY, name TEXT NOT NULL, labels TEXT NOT NULL UNIQUE);
             CREATE TABLE samples (series_id INTEGER NOT NULL, ts_ms INTEGER NOT NULL, value REAL NOT NULL,
                 PRIMARY KEY (series_id, ts_ms)) WITHOUT ROWID;
             CREATE TABLE samples_head (series_id INTEGER NOT NULL, ts_ms INTEGER NOT NULL, value REAL NOT NULL);
             INSERT INTO series (id, name, labels) VALUES (7, 'old_total', '{\"__name__\":\"old_total\"}');",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO samples VALUES (7, ?1, 1.0), (7, ?2, 2.0)",
            params![b + 1, b + 2],
        )
        .unwrap();
        // Time 2 written again in the head (it wins), time 3 twice (the later row wins).
        conn.execute(
            "INSERT INTO samples_head VALUES (7, ?1, 20.0), (7, ?2, 3.0), (7, ?2, 30.0)",
            params![b + 2, b + 3],
        )
        .unwrap();
    }
    let store = open(dir.path(), 1000, KEEP);
    let conn = Connection::open(&path).unwrap();
    let old: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'samples_head'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old, 0, "the old head table is gone");
    let want = vec![(b + 1, 1.0), (b + 2, 20.0), (b + 3, 30.0)];
    let got = store
        .select_series("old_total".into(), Vec::new(), b, b + 100)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].samples, want);
    // The same series keeps its id for new samples, which go to the packed head.
    store
        .submit_samples(vec![SeriesSamples {
            labels: vec![("__name__".to_owned(), "old_total".to_owned())].into(),
            samples: vec![(b + 3, 300.0)],
        }])
        .await
        .unwrap()
        .committed()
        .await
        .unwrap();
    assert_eq!(head_samples(&conn).unwrap(), [(7, b + 3, 300.0)]);
    // The row-per-sample tables are gone; their samples are in the chunks.
    let old: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('samples', 'samples_head')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old, 0);
    assert!(!merged_samples(&conn).unwrap().is_empty());
}

#[tokio::test]
async fn sample_retention_by_age_and_by_bytes_deletes_the_oldest_of_every_series() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 100_000, KEEP);
    let now_ms = crate::now_ns() / 1_000_000;
    // Two series, a sample a second each over the last 20,000 s (the second series offset by
    // half a second), and one sample of each eight hours old.
    let series = |name: &str, off: i64| SeriesSamples {
        labels: vec![("__name__".to_owned(), name.to_owned())].into(),
        samples: std::iter::once((now_ms - 28_800_000 + off, -1.0))
            .chain((0..20_000).map(|i| (now_ms - 20_000_000 + i * 1000 + off, i as f64)))
            .collect(),
    };
    store
        .submit_samples(vec![series("a_total", 0), series("b_total", 500)])
        .await
        .unwrap()
        .committed()
        .await
        .unwrap();
    let sync = || {
        let store = store.clone();
        async move {
            commit_logs(&store, vec![rec(1, "h", "a", 1, "sync")]).await;
        }
    };
    let read = |name: &'static str| {
        let store = store.clone();
        async move {
            store
                .select_series(name.into(), Vec::new(), 0, i64::MAX)
                .await
                .unwrap()
                .remove(0)
                .samples
        }
    };
    // Max age 6 hours: the samples eight hours old go, of both series.
    store.set_retention(Retention {
        max_age: Duration::from_secs(6 * 3600 - 1),
        ..KEEP
    });
    store.retain_now();
    sync().await;
    let a = read("a_total").await;
    let b = read("b_total").await;
    assert_eq!((a.len(), a[0]), (20_000, (now_ms - 20_000_000, 0.0)));
    assert_eq!((b.len(), b[0]), (20_000, (now_ms - 20_000_000 + 500, 0.0)));
    // Max bytes below what is in use: the oldest samples go first, of both series.
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let used = used_bytes(&conn).unwrap();
    store.set_retention(Retention {
        max_bytes: used / 2,
        max_age: Duration::from_secs(6 * 3600),
        ..KEEP
    });
    store.retain_now();
    sync().await;
    assert!(used_bytes(&conn).unwrap() <= used / 2);
    let a2 = read("a_total").await;
    let b2 = read("b_total").await;
    assert!(!a2.is_empty() && !b2.is_empty());
    assert!(a2.len() < a.len() && b2.len() < b.len());
    // What is left of each series is its newest samples, and nothing left is older than
    // anything deleted.
    assert_eq!(a2[..], a[a.len() - a2.len()..]);
    assert_eq!(b2[..], b[b.len() - b2.len()..]);
    let kept_from = a2[0].0.min(b2[0].0);
    let deleted_to = a[a.len() - a2.len() - 1].0.max(b[b.len() - b2.len() - 1].0);
    assert!(deleted_to < kept_from);
}

/// The log tables of a store written before blocks (a row per record).
const ROW_LOGS_SCHEMA: &str = "
CREATE TABLE logs (
    id INTEGER PRIMARY KEY, received_ns INTEGER NOT NULL, timestamp_ns INTEGER,
    ts_ns INTEGER NOT NULL, host TEXT NOT NULL, app TEXT NOT NULL, procid TEXT NOT NULL,
    msgid TEXT NOT NULL, facility INTEGER, severity INTEGER, message TEXT NOT NULL,
    structured_data TEXT NOT NULL, format TEXT NOT NULL, parse_error TEXT,
    input TEXT NOT NULL, peer TEXT NOT NULL
);
CREATE INDEX logs_ts ON logs(ts_ns);
CREATE VIRTUAL TABLE logs_fts USING fts5(message, content='logs', content_rowid='id');
CREATE TRIGGER logs_ai AFTER INSERT ON logs BEGIN
    INSERT INTO logs_fts(rowid, message) VALUES (new.id, new.message);
END;
CREATE TABLE forward_otlp_logs (seq INTEGER PRIMARY KEY, log_id INTEGER NOT NULL);
";

#[tokio::test]
async fn a_store_with_a_row_per_record_moves_its_records_into_blocks_keeping_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let now = crate::now_ns();
    let mut want = Vec::new();
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(ROW_LOGS_SCHEMA).unwrap();
        let mut add = conn
            .prepare(
                "INSERT INTO logs (id, received_ns, timestamp_ns, ts_ns, host, app, procid, msgid, facility, severity, message, structured_data, format, parse_error, input, peer)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )
            .unwrap();
        // Ids 3..=5002 with a gap (retention deleted 1000..1100 once), two hours of records,
        // a record that did not parse, one without severity or timestamp.
        for id in (3..=5002).filter(|i| !(1000..1100).contains(i)) {
            let mut r = rec(
                id,
                &format!("h{}", id % 3),
                "app",
                (id % 8) as u8,
                &format!("message {id} word{}", id % 10),
            );
            r.received_ns = now - (5002 - id) * 1_500_000_000;
            if id == 7 {
                r.parse_error = Some("no PRI".into());
                r.format = "raw".into();
                r.severity = None;
                r.timestamp_ns = None;
            }
            add.execute(params![
                id,
                r.received_ns,
                r.timestamp_ns,
                r.timestamp_ns.unwrap_or(r.received_ns),
                r.host,
                r.app,
                r.procid,
                r.msgid,
                r.facility,
                r.severity,
                r.message,
                r.structured_data,
                r.format,
                r.parse_error,
                r.input,
                r.peer,
            ])
            .unwrap();
            want.push(StoredLog { id, record: r });
        }
        conn.execute(
            "INSERT INTO forward_otlp_logs (log_id) VALUES (4999), (5000)",
            [],
        )
        .unwrap();
    }
    let store = open(dir.path(), 100, KEEP);
    let conn = Connection::open(&path).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('logs', 'logs_fts', 'logs_ai')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "the old tables are gone");
    let mut got = store
        .query(LogQuery {
            limit: 10_000,
            ..LogQuery::default()
        })
        .await
        .unwrap();
    got.reverse();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "records or ids changed");
    // Full text and the other filters work on the moved records.
    let got = store
        .query(LogQuery {
            text: Some("word7 AND message".into()),
            host: Some("h1".into()),
            limit: 10_000,
            ..LogQuery::default()
        })
        .await
        .unwrap();
    let ids: Vec<i64> = got.iter().map(|l| l.id).collect();
    let want_ids: Vec<i64> = (3..=5002)
        .rev()
        .filter(|i| !(1000..1100).contains(i) && i % 10 == 7 && i % 3 == 1)
        .collect();
    assert_eq!(ids, want_ids);
    let got = store
        .query(LogQuery {
            parse_errors_only: true,
            limit: 10,
            ..LogQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(got.iter().map(|l| l.id).collect::<Vec<_>>(), [7]);
    // The outbox still points at the same records; new records get ids past the old ones.
    let batch = store
        .log_outbox(Outbox::OtlpLogs, 10)
        .await
        .unwrap()
        .unwrap();
    let msgs: Vec<&str> = batch.logs.iter().map(|l| &*l.record.message).collect();
    assert_eq!(msgs, ["message 4999 word9", "message 5000 word0"]);
    commit_logs(&store, vec![rec(1, "h", "a", 1, "after")]).await;
    let got = store
        .query(LogQuery {
            limit: 1,
            ..LogQuery::default()
        })
        .await
        .unwrap();
    assert_eq!((got[0].id, got[0].record.message.as_str()), (5003, "after"));
    // Two hours of records, a block per minute at most: retention by age keeps precision.
    let blocks: i64 = conn
        .query_row("SELECT count(*) FROM log_blocks", [], |r| r.get(0))
        .unwrap();
    assert!(blocks >= 120, "{blocks} blocks");
}
