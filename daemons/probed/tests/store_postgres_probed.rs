//! The PostgreSQL results store against a real server started by the test (rookery-pgtest):
//! probed run in-process with `store.backend = "postgres"` writes the results of running
//! probes and a tier escalation, GetResults and GetTierEvents read them back over gRPC, and
//! the rows are in the server's tables; a wrong password and an unreachable server stop the
//! start with an error naming the server; config checks name file:line:col and key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use rookery_common::config::{Sources, load};
use rookery_common::daemon::Control;
use rookery_common::proto::probing_client::ProbingClient;
use rookery_common::proto::{GetResultsRequest, GetTierEventsRequest};
use rookery_pgtest::PgServer;
use tokio::net::TcpListener;

fn config(dir: &Path, store: &str, targets: &str) -> std::path::PathBuf {
    let path = dir.join("probed.toml");
    std::fs::write(
        &path,
        format!(
            "[grpc]\nsocket = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{}\"\n[state]\ndirectory = \"{}\"\n\
             {store}\n[modules.tcp]\nprober = \"tcp\"\ntimeout = \"500ms\"\n{targets}",
            dir.join("probed.sock").display(),
            support::free_port(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

async fn start_pg() -> PgServer {
    tokio::task::spawn_blocking(|| PgServer::start().expect("start PostgreSQL"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_escalations_go_to_postgres_and_back_over_grpc() {
    let pg = start_pg().await;
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_port = up.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = up.accept().await {
            drop(s);
        }
    });
    let down_port = support::free_port();
    let dir = tempfile::tempdir().unwrap();
    // The password comes from a credentials file, not the URL.
    let pw = dir.path().join("pg-password");
    std::fs::write(&pw, format!("{}\n", rookery_pgtest::PASSWORD)).unwrap();
    let url = format!(
        "postgres://{}@127.0.0.1:{}/{}?sslmode=disable",
        rookery_pgtest::USER,
        pg.port(),
        rookery_pgtest::DATABASE
    );
    let path = config(
        dir.path(),
        &format!(
            "[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = \"{url}\"\npassword-file = \"{}\"\n",
            pw.display()
        ),
        &format!(
            "[[targets]]\nname = \"up\"\nmodule = \"tcp\"\naddress = \"127.0.0.1:{up_port}\"\ninterval = \"1s\"\n\
             [[targets]]\nname = \"down\"\nmodule = \"tcp\"\naddress = \"127.0.0.1:{down_port}\"\ninterval = \"1s\"\n\
             tiers = {{ failures = 2, window = 3, critical-failures = 3 }}\n"
        ),
    );
    let control = Control::default();
    let daemon = tokio::spawn(rookery_probed::app::run(
        Sources::new("probed", Some(&path), Vec::new()),
        control.clone(),
    ));
    let sock = dir.path().join("probed.sock");
    let until = Instant::now() + Duration::from_secs(15);
    let channel = loop {
        if let Ok(c) = rookery_common::grpc::connect(&sock).await {
            break c;
        }
        assert!(!daemon.is_finished(), "probed stopped: {:?}", daemon.await);
        assert!(Instant::now() < until, "probed socket never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut client = ProbingClient::new(channel);

    // Results of the running probes come back from PostgreSQL through GetResults.
    let until = Instant::now() + Duration::from_secs(15);
    let (ups, downs) = loop {
        let get = |target: &str| GetResultsRequest {
            target: target.into(),
            limit: 10,
        };
        let ups = client
            .get_results(get("up"))
            .await
            .unwrap()
            .into_inner()
            .results;
        let downs = client
            .get_results(get("down"))
            .await
            .unwrap()
            .into_inner()
            .results;
        if (ups.len() >= 3 && downs.len() >= 3) || Instant::now() > until {
            break (ups, downs);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(ups.len() >= 3, "{ups:?}");
    assert!(downs.len() >= 3, "{downs:?}");
    assert!(
        ups.iter()
            .all(|r| r.target == "up" && r.success && r.reason == "ok"),
        "{ups:?}"
    );
    assert!(
        ups[0].phases.iter().any(|p| p.phase == "connect"),
        "{ups:?}"
    );
    assert_eq!(
        ups[0].facts.get("ip").map(String::as_str),
        Some("127.0.0.1")
    );
    assert!(
        downs
            .iter()
            .all(|r| !r.success && r.reason == "refused" && r.detail == "connection refused"),
        "{downs:?}"
    );
    assert!(
        ups.windows(2)
            .all(|w| w[0].started_unix_ms >= w[1].started_unix_ms),
        "newest first: {ups:?}"
    );
    let limited = client
        .get_results(GetResultsRequest {
            target: String::new(),
            limit: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(limited.len(), 2, "the limit holds across targets");

    // The escalation of "down" is recorded in PostgreSQL too.
    let until = Instant::now() + Duration::from_secs(15);
    let events = loop {
        let e = client
            .get_tier_events(GetTierEventsRequest {
                target: "down".into(),
                limit: 10,
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        if !e.is_empty() || Instant::now() > until {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!events.is_empty(), "down escalated");
    let first = events.last().unwrap();
    assert_eq!((first.from_tier, first.to_tier), (1, 2), "{events:?}");
    assert!(!first.reason.is_empty(), "{events:?}");

    // The rows are in the server's tables, tagged with this probe's host name.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let counts = pg
        .psql(&format!(
            "SELECT count(*) FILTER (WHERE success), count(*) FILTER (WHERE NOT success), \
             count(DISTINCT probe), min(probe) FROM probed_results WHERE probe = '{}'",
            host.trim()
        ))
        .unwrap();
    let f: Vec<&str> = counts.split('|').collect();
    assert!(f[0].parse::<u32>().unwrap() >= 3, "{counts}");
    assert!(f[1].parse::<u32>().unwrap() >= 3, "{counts}");
    assert_eq!(f[2], "1", "{counts}");
    assert_eq!(
        pg.psql("SELECT count(*) FROM probed_tier_events WHERE target = 'down'")
            .unwrap()
            .parse::<u32>()
            .unwrap(),
        u32::try_from(events.len()).unwrap()
    );

    control.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_or_unreachable_server_stops_the_start_with_a_clear_error() {
    let pg = start_pg().await;
    let dir = tempfile::tempdir().unwrap();
    let start = |store: String| {
        let path = config(dir.path(), &store, "");
        async move {
            let control = Control::default();
            let run = rookery_probed::app::run(
                Sources::new("probed", Some(&path), Vec::new()),
                control.clone(),
            );
            let result = tokio::time::timeout(Duration::from_secs(30), run)
                .await
                .expect("start gives up within the connect timeout");
            control.shutdown.cancel();
            let err = result.expect_err("the start must fail");
            rookery_common::error_chain(&err)
        }
    };
    let wrong = start(format!(
        "[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = \"postgres://{}:not-the-password@127.0.0.1:{}/{}?sslmode=disable\"\n",
        rookery_pgtest::USER,
        pg.port(),
        rookery_pgtest::DATABASE
    ))
    .await;
    assert!(
        wrong.contains(&format!(
            "cannot connect to PostgreSQL at postgres://rookery:***@127.0.0.1:{}/",
            pg.port()
        )),
        "{wrong}"
    );
    assert!(wrong.contains("password authentication failed"), "{wrong}");
    assert!(
        !wrong.contains("not-the-password"),
        "the password is not shown: {wrong}"
    );

    let closed = support::free_port();
    let unreachable = start(format!(
        "[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = \"postgres://probed@127.0.0.1:{closed}/rookery?sslmode=disable\"\nconnect-timeout = \"2s\"\n"
    ))
    .await;
    assert!(
        unreachable.contains(&format!(
            "cannot connect to PostgreSQL at postgres://probed@127.0.0.1:{closed}/rookery"
        )),
        "{unreachable}"
    );
}

#[test]
fn store_config_errors_name_file_line_col_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probed.toml");
    let check = |text: &str| -> Vec<String> {
        std::fs::write(&path, text).unwrap();
        load::<rookery_probed::Config>(&Sources::new("probed", Some(&path), Vec::new()))
            .expect_err("config must be rejected")
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let p = path.display().to_string();
    let lines = check(
        "[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = \"mysql://x:secret@db/r\"\nmax-connections = 0\n",
    );
    let all = lines.join("\n");
    assert!(
        lines.contains(&format!(
            "{p}:4:7: store.postgres.url: \"mysql://x:***@db/r\" is not a PostgreSQL URL (expected postgres://USER@HOST:PORT/DATABASE)"
        )),
        "{all}"
    );
    assert!(
        lines.contains(&format!(
            "{p}:5:19: store.postgres.max-connections: 0 is out of range (expected 1 to 100)"
        )),
        "{all}"
    );
    let lines = check("[store]\nbackend = \"postgres\"\n");
    assert!(
        lines.iter().any(|l| l.starts_with(&format!("{p}:"))
            && l.contains(
                "store.postgres.url: is required when the store backend is \"postgres\""
            )),
        "{lines:?}"
    );
    let lines = check("[store]\nbackend = \"mysql\"\n");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{p}:2:11: store.backend:"))),
        "{lines:?}"
    );
    let lines = check("[store.postgres]\nurl = \"postgres://a@b/c\"\n");
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{p}:1:1: store.postgres: is set but store.backend is \"sqlite\""
        ))),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_full_trusts_the_configured_ca_only() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let file = dir.path().join(name);
        std::fs::write(&file, cert.pem()).unwrap();
        (Issuer::new(params, key), file)
    };
    let (issuer, ca_file) = ca("ca.pem");
    let (_, other_ca) = ca("other-ca.pem");
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let pg = tokio::task::spawn_blocking(move || {
        PgServer::start_with(rookery_pgtest::Options {
            tls: Some((leaf.pem(), key.serialize_pem())),
        })
        .expect("start PostgreSQL with TLS")
    })
    .await
    .unwrap();
    let section = |ca: &Path| rookery_common::postgres::PostgresSection {
        url: format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            pg.url(),
            ca.display()
        ),
        connect_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let store = rookery_probed::store::Store::open_postgres(
        &section(&ca_file),
        Duration::from_secs(3600),
        stop.clone(),
    )
    .await
    .expect("verify-full with the server's CA");
    let row = rookery_probed::store::Row {
        target: "tls".into(),
        module: "m".into(),
        started_ms: 1_700_000_000_000,
        success: true,
        reason: "ok".into(),
        detail: String::new(),
        total_s: 0.5,
        phases: "connect=0.001000".into(),
        facts: std::collections::BTreeMap::new(),
    };
    store.insert_now(vec![row.clone()]).await;
    assert_eq!(store.recent(None, 10).await.unwrap(), vec![row]);
    assert_eq!(
        pg.psql(
            "SELECT bool_and(s.ssl) AND count(*) > 0 FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name LIKE 'rookery-%'"
        )
        .unwrap(),
        "t",
        "probed's connections use TLS"
    );
    stop.cancel();

    let err = rookery_probed::store::Store::open_postgres(
        &section(&other_ca),
        Duration::from_secs(3600),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect_err("a server certificate from another CA is refused");
    let text = rookery_common::error_chain(&err);
    assert!(
        text.contains(&format!(
            "cannot connect to PostgreSQL at postgres://rookery:***@127.0.0.1:{}/",
            pg.port()
        )),
        "{text}"
    );
    assert!(text.to_lowercase().contains("certificate"), "{text}");
}
