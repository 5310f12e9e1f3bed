//! What the forwarding tests (OTLP over HTTP and gRPC, QUIC) share: ingestd A is fed NDJSON
//! log pushes and remote_write bodies in rounds, and ingestd B's SQLite store is read back;
//! [`otlp_outage_exactly_once`] is the whole OTLP outage scenario, run once per protocol.
#![allow(
    dead_code,
    reason = "each test file uses a different part of this helper"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rookery_common::proto::QueryLogsRequest;
use rookery_ingestd::store::{LogQuery, SeriesSamples, StoredLog, query_file};

use crate::common::{Ingestd, Licensed, free_port, post, samples_named, write_config};

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

/// The records of app `fwdapp` in the store of the ingestd in `dir`, oldest first.
pub fn fwd_logs(dir: &Path) -> Vec<StoredLog> {
    let mut logs = query_file(
        &dir.join("state/logs.sqlite"),
        &LogQuery {
            app: Some("fwdapp".into()),
            limit: u32::MAX,
            ..LogQuery::default()
        },
    )
    .unwrap();
    logs.reverse();
    logs
}

pub fn logs_in_b(dir: &Path) -> i64 {
    fwd_logs(dir).len() as i64
}

pub fn samples_in_b(dir: &Path) -> i64 {
    samples_named(dir, "otlp_fwd_total")
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

/// A self-signed CA named `name`, and its issuer for [`leaf`].
pub fn ca(name: &str) -> (rcgen::Certificate, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert, rcgen::Issuer::new(params, key))
}

/// A certificate for `names` signed by `issuer`: (cert PEM, key PEM).
pub fn leaf(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&key, issuer)
            .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Writes `text` to `dir/name`; returns the path.
pub fn write_pem(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// A TLS terminator (rustls, ALPN h2) for `cert_pem`/`key_pem` on a loopback port in front
/// of the plain TCP `upstream`, the way a receiver behind a TLS load balancer looks. Returns
/// its address and the count of failed handshakes; it runs until the test's runtime ends.
pub async fn tls_terminator(
    cert_pem: &str,
    key_pem: &str,
    upstream: SocketAddr,
) -> (SocketAddr, Arc<AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refused = Arc::new(AtomicUsize::new(0));
    let counter = refused.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counter) = (acceptor.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    counter.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                }
            });
        }
    });
    (addr, refused)
}

/// The OTLP transport of A's forwarding, with B's matching listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Otlp {
    /// `otlp-protocol = "http/protobuf"` to B's `[otlp] http`.
    Http,
    /// `otlp-protocol = "grpc"` to B's `[otlp] grpc`.
    Grpc,
}

impl Otlp {
    /// The `forward.otlp-protocol` value.
    pub fn protocol(self) -> &'static str {
        match self {
            Self::Http => "http/protobuf",
            Self::Grpc => "grpc",
        }
    }
}

/// Writes B's config in `dir`: its OTLP listener of `otlp` on `port` (fixed, so B comes
/// back on the same port after an outage), the other OTLP listener off, `store_extra` in
/// `[store]`.
pub fn write_otlp_receiver_config(dir: &Path, otlp: Otlp, port: u16, store_extra: &str) {
    write_config(dir, "", store_extra);
    let cfg = std::fs::read_to_string(dir.join("ingestd.toml")).unwrap();
    let listeners = match otlp {
        Otlp::Http => format!("grpc = []\nhttp = [\"127.0.0.1:{port}\"]"),
        Otlp::Grpc => format!("grpc = [\"127.0.0.1:{port}\"]\nhttp = []"),
    };
    let fixed = cfg.replace(
        "[otlp]\ngrpc = [\"127.0.0.1:0\"]\nhttp = [\"127.0.0.1:0\"]",
        &format!("[otlp]\n{listeners}"),
    );
    assert_ne!(fixed, cfg);
    std::fs::write(dir.join("ingestd.toml"), fixed).unwrap();
}

/// Writes A's config in `dir`: forwarding by `otlp` to `url`, small batches (so an outage
/// leaves many of them spooled), licensed at `licensed`.
pub fn write_otlp_sender_config(dir: &Path, otlp: Otlp, url: &str, licensed: &Path) {
    write_config(dir, "", "");
    let cfg = std::fs::read_to_string(dir.join("ingestd.toml")).unwrap();
    std::fs::write(
        dir.join("ingestd.toml"),
        format!(
            "{cfg}\n[forward]\notlp-url = \"{url}\"\notlp-protocol = \"{}\"\nbatch-logs = 15\nbatch-samples = 30\n\
             licensed-socket = \"{}\"\nlicence-check-interval = \"1s\"\n",
            otlp.protocol(),
            licensed.display()
        ),
    )
    .unwrap();
}

/// Round `round`'s log records, read back from B over its query API (the way apid asks),
/// with their fields as A received them.
pub async fn query_round_in_b(b: &Ingestd, round: usize) {
    let got = b
        .wait_for(
            QueryLogsRequest {
                app: Some("fwdapp".into()),
                text: Some(format!("\"fwd round {round}\"")),
                limit: 1000,
                ..QueryLogsRequest::default()
            },
            LOGS,
        )
        .await;
    let mut messages: Vec<String> = got
        .iter()
        .map(|r| {
            assert_eq!(
                (r.host.as_str(), r.severity, r.format.as_str()),
                ("dev-a", Some(4), "otlp"),
                "{r:?}"
            );
            r.message.clone()
        })
        .collect();
    messages.sort();
    let mut want: Vec<String> = (0..LOGS)
        .map(|i| format!("fwd round {round} line {i}"))
        .collect();
    want.sort();
    assert_eq!(messages, want);
}

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

/// Forwarding by `otlp` with an on-disk spool: ingestd A forwards every log record and metric
/// sample it stores to ingestd B's OTLP listener; round 1 is queried back from B. B goes
/// down (an uplink outage) while A keeps acknowledging HTTP log pushes and remote_write
/// bodies; A is even killed with -9 and restarted meanwhile. When B is back, every record
/// and sample arrives, each log record exactly once (checked by its `rookery.record_id`
/// attribute), with its fields intact, and A's outboxes drain.
pub async fn otlp_outage_exactly_once(otlp: Otlp) {
    let b_dir = tempfile::tempdir().unwrap();
    let b_port = free_port();
    write_otlp_receiver_config(b_dir.path(), otlp, b_port, "");
    let mut b = Ingestd::start(b_dir.path()).await;

    let a_dir = tempfile::tempdir().unwrap();
    let licensed = Licensed::start(a_dir.path(), false).await;
    let url = format!("http://127.0.0.1:{b_port}/");
    write_otlp_sender_config(a_dir.path(), otlp, &url, &licensed.socket);
    let mut a = Ingestd::start(a_dir.path()).await;

    // Uplink up: records flow, and B answers queries about them.
    push_logs(&a, 1);
    push_samples(&a, 1);
    let per_round = i64::try_from(SERIES * PER_SERIES).unwrap();
    let logs_round = i64::try_from(LOGS).unwrap();
    wait("round 1 reaches B", || {
        logs_in_b(b_dir.path()) == logs_round && samples_in_b(b_dir.path()) == per_round
    })
    .await;
    query_round_in_b(&b, 1).await;

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
    for round in 2..=4 {
        query_round_in_b(&b, round).await;
    }

    // Exactly once: one row per record id, every record id of A's store, fields intact.
    let rows: Vec<Row> = fwd_logs(b_dir.path())
        .into_iter()
        .map(|l| {
            let r = l.record;
            (
                r.host,
                r.app,
                r.severity,
                r.timestamp_ns,
                r.message,
                r.structured_data,
                r.format,
            )
        })
        .collect();
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
    let a_ids: Vec<i64> = fwd_logs(a_dir.path()).iter().map(|l| l.id).collect();
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
    // The restarted A delivered rounds 2 to 4 (logs) and 2 to 3 (samples), each once.
    assert_eq!(
        metric(&a, "rookery_ingestd_forwarded_otlp_logs_total"),
        3 * LOGS as u64
    );
    assert_eq!(
        metric(&a, "rookery_ingestd_forwarded_otlp_samples_total"),
        2 * (SERIES * PER_SERIES) as u64
    );
    drop(b);
    drop(a);
    licensed.stop().await;
}

/// A batch the receiver will never take is dropped and counted, and the spool moves on: B
/// allows 2 labels per series, so it refuses A's samples (3 labels) as a bad request (HTTP
/// 400, gRPC INVALID_ARGUMENT); A drops every sample batch, counts them, empties its sample
/// outbox, and its log records still arrive.
pub async fn otlp_refused_batches_are_dropped(otlp: Otlp) {
    let b_dir = tempfile::tempdir().unwrap();
    let b_port = free_port();
    write_otlp_receiver_config(b_dir.path(), otlp, b_port, "max-labels-per-series = 2\n");
    let b = Ingestd::start(b_dir.path()).await;
    let a_dir = tempfile::tempdir().unwrap();
    let licensed = Licensed::start(a_dir.path(), false).await;
    let url = format!("http://127.0.0.1:{b_port}");
    write_otlp_sender_config(a_dir.path(), otlp, &url, &licensed.socket);
    let a = Ingestd::start(a_dir.path()).await;

    push_samples(&a, 1);
    push_logs(&a, 1);
    let samples = (SERIES * PER_SERIES) as u64;
    wait("A drops the refused samples and delivers the logs", || {
        metric(&a, "rookery_ingestd_forward_otlp_dropped_records_total") == samples
            && logs_in_b(b_dir.path()) == i64::try_from(LOGS).unwrap()
    })
    .await;
    query_round_in_b(&b, 1).await;
    assert_eq!(samples_in_b(b_dir.path()), 0);
    assert_eq!(
        count(a_dir.path(), "SELECT count(*) FROM forward_otlp_samples"),
        0
    );
    assert_eq!(
        metric(&a, "rookery_ingestd_forwarded_otlp_samples_total"),
        0
    );
    // Refusals are not failures: nothing was retried.
    assert_eq!(metric(&a, "rookery_ingestd_forward_otlp_failures_total"), 0);
    drop((a, b));
    licensed.stop().await;
}
