//! The PostgreSQL backend against a real server started by the test (rookery-pgtest): the
//! real `rookery-ingestd` with `store.backend = "postgres"` takes syslog from util-linux
//! `logger` (RFC 5424 over TCP, RFC 3164 over UDP), an HTTP NDJSON push and a Prometheus
//! remote_write body; everything is queried back over gRPC (every filter, PostgreSQL full
//! text) and `/api/v1/query_range`, acknowledged pushes are there at once (ack after
//! commit), and the rows are in the server's tables, none in a local SQLite file. An
//! unreachable server stops the start with an error naming it. The backend is licensed's
//! `central-database` feature: the real licensed (in-process) grants it with release mode
//! off; with release mode on and no key the start fails naming the feature.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Ingestd, Licensed, post, write_config};
use prost::Message as _;
use rookery_common::proto::QueryLogsRequest;
use rookery_ingestd::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use rookery_pgtest::PgServer;

fn logger(args: &[&str]) {
    let out = Command::new("logger")
        .args(args)
        .output()
        .expect("logger (util-linux) is installed by scripts/install-ingestd-test-deps.sh");
    assert!(
        out.status.success(),
        "logger {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn now_ms() -> i64 {
    rookery_ingestd::now_ns() / 1_000_000
}

fn http(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    (
        status,
        out.split_once("\r\n\r\n")
            .map(|b| b.1.to_owned())
            .unwrap_or_default(),
    )
}

fn store_config(url: &str, licensed: &std::path::Path) -> String {
    format!(
        "backend = \"postgres\"\nlicensed-socket = \"{}\"\n[store.postgres]\nurl = \"{url}\"\n",
        licensed.display()
    )
}

/// Runs ingestd on `dir`'s config, which must fail to start; returns its stderr.
fn failed_start(dir: &std::path::Path) -> String {
    let mut child = Command::new(common::BIN)
        .args(["run", "--config"])
        .arg(dir.join("ingestd.toml"))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "still running 30 s later");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    assert_ne!(status.code(), Some(78), "not a configuration error");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn syslog_http_and_remote_write_into_postgres_are_queried_back() {
    let pg = tokio::task::spawn_blocking(|| PgServer::start().expect("start PostgreSQL"))
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let licensed = Licensed::start(tmp.path(), false).await;
    write_config(
        tmp.path(),
        "",
        &store_config(&format!("{}?sslmode=disable", pg.url()), &licensed.socket),
    );
    let d = Ingestd::start(tmp.path()).await;
    assert!(
        d.addrs["database"]
            .starts_with(&format!("postgres://rookery:***@127.0.0.1:{}/", pg.port())),
        "{:?}",
        d.addrs
    );
    let (uport, tport) = (
        d.addr("syslog-udp-0").port().to_string(),
        d.addr("syslog-tcp-0").port().to_string(),
    );

    // Syslog from logger: RFC 5424 over TCP (octet counting), RFC 3164 over UDP.
    let before = rookery_ingestd::now_ns();
    logger(&[
        "--server",
        "127.0.0.1",
        "--port",
        &tport,
        "--tcp",
        "--octet-count",
        "--rfc5424=notq",
        "--tag",
        "pg5424tcp",
        "--id=4242",
        "--priority",
        "auth.err",
        "--msgid",
        "M1",
        "disk /var is 91% full",
    ]);
    logger(&[
        "--server",
        "127.0.0.1",
        "--port",
        &uport,
        "--udp",
        "--rfc3164",
        "--tag",
        "pg3164udp",
        "--priority",
        "daemon.notice",
        "link eth0 down",
    ]);
    let tcp = d
        .wait_for(
            QueryLogsRequest {
                app: Some("pg5424tcp".into()),
                ..Default::default()
            },
            1,
        )
        .await;
    assert_eq!(tcp.len(), 1, "{tcp:#?}");
    let r = &tcp[0];
    assert_eq!(
        (&*r.format, &*r.input, &*r.procid, &*r.msgid, &*r.message),
        ("rfc5424", "tcp", "4242", "M1", "disk /var is 91% full")
    );
    assert_eq!((r.facility, r.severity), (Some(4), Some(3)));
    let udp = d
        .wait_for(
            QueryLogsRequest {
                app: Some("pg3164udp".into()),
                ..Default::default()
            },
            1,
        )
        .await;
    assert_eq!(
        (&*udp[0].format, &*udp[0].input),
        ("rfc3164", "udp"),
        "{udp:#?}"
    );
    assert_eq!((udp[0].facility, udp[0].severity), (Some(3), Some(5)));
    let host = r.host.clone();

    // HTTP NDJSON: acknowledged means committed, so the records are there at once.
    let body = concat!(
        "{\"message\":\"upstream timed out\",\"app\":\"pusher\",\"host\":\"web1\",\"severity\":\"warning\"}\n",
        "{\"message\":\"request served\",\"app\":\"pusher\",\"host\":\"web1\",\"severity\":\"info\"}\n",
        "{\"message\":\"disk full on web2\",\"app\":\"pusher\",\"host\":\"web2\",\"severity\":\"crit\"}\n",
    );
    let (status, resp) = post(
        d.addr("http-0"),
        "/v1/logs",
        "application/x-ndjson",
        body.as_bytes(),
    );
    assert_eq!((status, &*resp), (200, "{\"accepted\":3}"));
    let pushed = d
        .query(QueryLogsRequest {
            app: Some("pusher".into()),
            ..Default::default()
        })
        .await;
    let msgs: Vec<&str> = pushed.iter().map(|r| &*r.message).collect();
    assert_eq!(
        msgs,
        ["disk full on web2", "request served", "upstream timed out"],
        "newest first"
    );

    // Every filter, as over SQLite.
    let q = |f: fn(&mut QueryLogsRequest)| {
        let mut req = QueryLogsRequest::default();
        f(&mut req);
        let d = &d;
        async move {
            let mut m: Vec<String> = d.query(req).await.into_iter().map(|r| r.message).collect();
            m.sort();
            m
        }
    };
    assert_eq!(
        q(|r| r.host = Some("web1".into())).await,
        ["request served", "upstream timed out"]
    );
    assert_eq!(
        q(|r| {
            r.app = Some("pusher".into());
            r.max_severity = Some(4)
        })
        .await,
        ["disk full on web2", "upstream timed out"]
    );
    assert_eq!(q(|r| r.facility = Some(4)).await, ["disk /var is 91% full"]);
    assert_eq!(
        q(|r| r.text = Some("disk full".into())).await,
        ["disk /var is 91% full", "disk full on web2"]
    );
    assert_eq!(
        q(|r| r.text = Some("\"full on\"".into())).await,
        ["disk full on web2"]
    );
    assert_eq!(
        q(|r| r.text = Some("disk -web2".into())).await,
        ["disk /var is 91% full"]
    );
    assert_eq!(
        q(|r| r.text = Some("timed or link".into())).await,
        ["link eth0 down", "upstream timed out"]
    );
    let mut req = QueryLogsRequest {
        start_unix_nanos: Some(before),
        host: Some(host.clone()),
        ..Default::default()
    };
    let mut got: Vec<String> = d
        .query(req.clone())
        .await
        .into_iter()
        .map(|r| r.message)
        .collect();
    got.sort();
    assert!(got.contains(&"disk /var is 91% full".to_owned()), "{got:?}");
    req.end_unix_nanos = Some(before);
    assert!(d.query(req).await.is_empty(), "nothing before the start");
    let page = d
        .query(QueryLogsRequest {
            app: Some("pusher".into()),
            limit: 2,
            ..Default::default()
        })
        .await;
    assert_eq!(page.len(), 2);
    let rest = d
        .query(QueryLogsRequest {
            app: Some("pusher".into()),
            before_id: Some(page[1].id),
            ..Default::default()
        })
        .await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].message, "upstream timed out");

    // remote_write: acknowledged (204) means committed; query_range reads it back at once.
    let t = now_ms() / 1000 * 1000;
    let series = |instance: &str, base: f64| TimeSeries {
        labels: vec![
            Label {
                name: "__name__".into(),
                value: "pg_test_total".into(),
            },
            Label {
                name: "instance".into(),
                value: instance.into(),
            },
            Label {
                name: "job".into(),
                value: "pg".into(),
            },
        ],
        samples: (0..3)
            .map(|i| Sample {
                value: base + f64::from(i) * 10.0,
                timestamp: t - 2000 + i64::from(i) * 1000,
            })
            .collect(),
    };
    let req = WriteRequest {
        timeseries: vec![series("a", 100.0), series("b", 0.0)],
    };
    let raw = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    let head = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\n\
         X-Prometheus-Remote-Write-Version: 0.1.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        raw.len()
    );
    let (status, resp) = http(d.addr("http-0"), &head, &raw);
    assert_eq!(status, 204, "{resp}");
    let metrics: std::net::SocketAddr = d.addrs["metrics"].parse().unwrap();
    let get = |query: &str| {
        let path = format!(
            "/api/v1/query_range?query={query}&start={}&end={}&step=1s",
            (t - 2000) / 1000,
            t / 1000
        );
        http(
            metrics,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            b"",
        )
    };
    let (status, body) = get("pg_test_total%7Binstance%3D%22a%22%7D");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{body}");
    assert_eq!(result[0]["metric"]["instance"], "a");
    let values: Vec<&str> = result[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_str().unwrap())
        .collect();
    assert_eq!(values, ["100", "110", "120"], "{body}");
    let (status, body) = get("rate(pg_test_total%5B5s%5D)");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 2, "both series: {body}");
    let last = result[0]["values"].as_array().unwrap().last().unwrap()[1]
        .as_str()
        .unwrap()
        .parse::<f64>()
        .unwrap();
    assert!((last - 10.0).abs() < 1e-9, "10 per second: {body}");

    // The rows are in PostgreSQL, none in a local SQLite file.
    assert_eq!(pg.psql("SELECT count(*) FROM ingestd_logs").unwrap(), "5");
    assert_eq!(
        pg.psql("SELECT count(*) FROM ingestd_samples").unwrap(),
        "6"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM ingestd_series WHERE name = 'pg_test_total'")
            .unwrap(),
        "2"
    );
    assert!(!tmp.path().join("state/logs.sqlite").exists());
    assert!(
        d.metrics()
            .contains("rookery_ingestd_stored_samples_total 6"),
        "counted"
    );
    drop(d);
    licensed.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_stops_the_start_with_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let licensed = Licensed::start(tmp.path(), false).await;
    let port = common::free_port();
    write_config(
        tmp.path(),
        "",
        &format!(
            "{}connect-timeout = \"2s\"\n",
            store_config(
                &format!("postgres://ingestd:secret@127.0.0.1:{port}/logs"),
                &licensed.socket
            )
        ),
    );
    let err = failed_start(tmp.path());
    assert!(
        err.contains(&format!(
            "cannot connect to PostgreSQL at postgres://ingestd:***@127.0.0.1:{port}/logs"
        )),
        "{err}"
    );
    assert!(!err.contains("secret"), "the password is not shown: {err}");
    licensed.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_central_database_the_postgres_backend_does_not_start() {
    let pg = tokio::task::spawn_blocking(|| PgServer::start().expect("start PostgreSQL"))
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("{}?sslmode=disable", pg.url());
    // Nobody answers on the socket: the start waits 10 s for licensed, then fails.
    let nobody = tmp.path().join("nobody.sock");
    write_config(tmp.path(), "", &store_config(&url, &nobody));
    let err = failed_start(tmp.path());
    assert!(
        err.contains(&format!(
            "store.backend = \"postgres\" needs licensed's feature \"central-database\", but licensed did not answer on {} within 10 s",
            nobody.display()
        )),
        "{err}"
    );
    // Release mode on, no licence key: the enterprise feature is off.
    let licensed = Licensed::start(tmp.path(), true).await;
    write_config(tmp.path(), "", &store_config(&url, &licensed.socket));
    let err = failed_start(tmp.path());
    assert!(
        err.contains(
            "store.backend = \"postgres\" needs licensed's feature \"central-database\", which is off ("
        ) && err.contains("set store.backend = \"sqlite\""),
        "{err}"
    );
    // Nothing was written to the server: the gate comes before the schema.
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'ingestd_%'")
            .unwrap(),
        "0"
    );
    licensed.stop().await;
}

#[test]
fn store_config_errors_name_file_line_col_and_key() {
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
    let lines = check(
        "[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = \"http://db/x\"\npassword-file = \"pw\"\n",
    );
    let all = lines.join("\n");
    assert!(
        lines.contains(&format!(
            "{p}:4:7: store.postgres.url: \"http://db/x\" is not a PostgreSQL URL (expected postgres://USER@HOST:PORT/DATABASE)"
        )),
        "{all}"
    );
    assert!(
        lines.contains(&format!(
            "{p}:5:17: store.postgres.password-file: \"pw\" is not an absolute path"
        )),
        "{all}"
    );
    let lines = check("[store]\nlicensed-socket = \"licensed.sock\"\n");
    assert_eq!(
        lines,
        [format!(
            "{p}:2:19: store.licensed-socket: \"licensed.sock\" is not an absolute path"
        )]
    );
    let lines = check("[store]\nbackend = \"postgres\"\n");
    assert!(
        lines.iter().any(|l| l.starts_with(&format!("{p}:"))
            && l.contains(
                "store.postgres.url: is required when the store backend is \"postgres\""
            )),
        "{lines:?}"
    );
}
