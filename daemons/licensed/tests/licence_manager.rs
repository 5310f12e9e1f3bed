//! The licensing state machine against the reference licence server (HTTPS with its own CA):
//! valid keys, rejections, offline grace with simulated time, clocks set back, keepalives
//! carrying usage counts pushed over gRPC, signed offline licences, release mode.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rookery_common::proto::LicenseState;
use rookery_licensed::Config;
use rookery_licensed::grace::ManualClock;
use rookery_licensed::manager::Manager;
use rookery_licensed::offline::{self, OfflinePayload};
use rookery_licensed::refserver::{Mode, RefServer, test_key};

const DAY: Duration = Duration::from_secs(86_400);
const T0: i64 = 1_800_000_000;

fn test_verify_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[42u8; 32])
}

struct Setup {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
}

impl Setup {
    fn new() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            dir: tempfile::tempdir().unwrap(),
            clock: Arc::new(ManualClock::new(T0)),
        }
    }

    fn config(&self, server: Option<&RefServer>, key: &str, release: bool) -> Config {
        let mut c = Config::default();
        c.licence.release_mode = release;
        c.licence.key = key.to_owned();
        c.licence.max_attempts = 1;
        c.licence.request_timeout = Duration::from_secs(5);
        c.licence.offline_file = self.dir.path().join("licence.json");
        match server {
            Some(s) => {
                let ca = self.dir.path().join("ca.pem");
                std::fs::write(&ca, &s.ca_pem).unwrap();
                c.licence.server_url = s.url.clone();
                c.licence.ca_file = Some(ca);
            }
            // A closed port on loopback: connection refused at once.
            None => c.licence.server_url = "https://127.0.0.1:9".into(),
        }
        c.state.directory = self.dir.path().join("state");
        std::fs::create_dir_all(&c.state.directory).unwrap();
        c
    }

    fn manager(&self, cfg: &Config) -> Manager {
        Manager::with_verify_key(
            cfg,
            &cfg.state.directory,
            self.clock.clone(),
            test_verify_key().verifying_key(),
            "machine-1".into(),
        )
        .unwrap()
    }
}

fn feature(m: &Manager, name: &str) -> bool {
    m.check_feature(name).0
}

#[tokio::test]
async fn valid_key_lists_its_features_and_enterprise_follows_the_grant() {
    let s = Setup::new();
    let server = RefServer::start().await;
    let m = s.manager(&s.config(Some(&server), test_key().as_str(), true));
    assert_eq!(m.licence_state(), LicenseState::Pending);
    m.cycle().await;
    let st = m.status();
    assert_eq!(st.state, LicenseState::Valid as i32, "{st:?}");
    assert_eq!(st.customer, "Test Customer");
    assert_eq!(st.source, "server");
    assert_eq!(st.key_masked, test_key().masked());
    let on: Vec<&str> = st
        .features
        .iter()
        .filter(|f| f.enabled)
        .map(|f| f.name.as_str())
        .collect();
    assert!(
        on.contains(&"autoperf") && on.contains(&"sso") && on.contains(&"probes"),
        "{on:?}"
    );
    assert!(!feature(&m, "central-forwarding"), "not granted");
    assert_eq!(
        m.check_feature("autoperf"),
        (true, "entitled by licence".into())
    );
    assert_eq!(server.hits("validate"), 1);

    // The server changes the grant: the next keepalive round picks it up.
    server.set_features(&[("autoperf", false), ("central-forwarding", true)]);
    m.cycle().await;
    assert_eq!(server.hits("keepalive"), 1);
    assert!(!feature(&m, "autoperf"));
    assert!(feature(&m, "central-forwarding"));
}

#[tokio::test]
async fn server_down_uses_the_cache_for_the_grace_period_then_drops_it() {
    let s = Setup::new();
    let mut server = RefServer::start().await;
    let cfg = s.config(Some(&server), test_key().as_str(), true);
    let m = s.manager(&cfg);
    m.cycle().await;
    assert_eq!(m.licence_state(), LicenseState::Valid);
    server.stop().await;

    s.clock.advance(3 * DAY);
    m.cycle().await;
    let st = m.status();
    assert_eq!(st.state, LicenseState::Grace as i32, "{st:?}");
    assert!(st.last_error.contains("unreachable"), "{}", st.last_error);
    assert_eq!(
        st.grace_until_unix,
        T0 + 7 * 86_400,
        "grace counts from the last success"
    );
    assert!(
        feature(&m, "autoperf"),
        "cached entitlements honoured in grace"
    );

    // A restart in the middle of the outage keeps the evidence (persisted cache).
    drop(m);
    let m = s.manager(&cfg);
    s.clock.advance(3 * DAY);
    m.cycle().await;
    assert_eq!(m.licence_state(), LicenseState::Grace);

    s.clock.advance(DAY + Duration::from_secs(1));
    m.cycle().await;
    assert_eq!(m.licence_state(), LicenseState::GraceExpired);
    assert!(!feature(&m, "autoperf"), "enterprise off after grace");
    assert!(feature(&m, "probes"), "community stays on");
    assert!(
        m.summary().contains("community features only"),
        "{}",
        m.summary()
    );

    // The server comes back: valid again.
    server.restart().await;
    m.cycle().await;
    assert_eq!(m.licence_state(), LicenseState::Valid);
    assert!(feature(&m, "autoperf"));
}

#[tokio::test]
async fn clock_set_back_does_not_extend_grace() {
    let s = Setup::new();
    let mut server = RefServer::start().await;
    let m = s.manager(&s.config(Some(&server), test_key().as_str(), true));
    m.cycle().await;
    server.stop().await;
    s.clock.advance(6 * DAY);
    m.cycle().await;
    assert_eq!(m.licence_state(), LicenseState::Grace);
    // Someone sets the clock back five days, then two real days pass.
    s.clock.set_wall(T0 + 86_400);
    s.clock.advance(2 * DAY);
    m.cycle().await;
    assert_eq!(
        m.licence_state(),
        LicenseState::GraceExpired,
        "{:?}",
        m.evidence()
    );
    assert!(!feature(&m, "autoperf"));
}

#[tokio::test]
async fn rejections_are_clear_and_not_retried() {
    let s = Setup::new();
    let server = RefServer::start().await;
    let unknown =
        rookery_licensed::key::LicenceKey::from_groups(["NOPE", "0000", "0000", "0000"]).unwrap();
    let mut cfg = s.config(Some(&server), unknown.as_str(), true);
    cfg.licence.max_attempts = 3;
    let m = s.manager(&cfg);
    m.cycle().await;
    let st = m.status();
    assert_eq!(st.state, LicenseState::Invalid as i32);
    assert_eq!(
        st.last_error,
        "licence server rejected the key: unknown licence key"
    );
    assert_eq!(server.hits("validate"), 1, "a 401 is not retried");

    let m = s.manager(&s.config(Some(&server), test_key().as_str(), true));
    server.set_mode(Mode::Forbidden);
    m.cycle().await;
    assert_eq!(m.licence_state(), LicenseState::Invalid);
    assert!(
        m.status().last_error.contains("403 forbidden"),
        "{}",
        m.status().last_error
    );

    server.set_mode(Mode::Expired);
    m.cycle().await;
    assert_eq!(m.licence_state(), LicenseState::Expired);
    assert!(!feature(&m, "autoperf"));
}

#[tokio::test]
async fn server_errors_and_slow_answers_are_retried_then_reported() {
    let s = Setup::new();
    let server = RefServer::start().await;
    let mut cfg = s.config(Some(&server), test_key().as_str(), true);
    cfg.licence.max_attempts = 2;
    let m = s.manager(&cfg);
    server.set_mode(Mode::ServerError);
    m.cycle().await;
    assert_eq!(server.hits("validate"), 2, "5xx is retried");
    let st = m.status();
    assert_eq!(
        st.state,
        LicenseState::Pending as i32,
        "never validated yet"
    );
    assert!(
        st.last_error
            .contains("unreachable after 2 attempt(s): HTTP 503"),
        "{}",
        st.last_error
    );

    server.set_mode(Mode::Normal);
    server.set_delay(Duration::from_secs(3));
    let mut cfg = s.config(Some(&server), test_key().as_str(), true);
    cfg.licence.request_timeout = Duration::from_millis(300);
    let m = s.manager(&cfg);
    let started = Instant::now();
    m.cycle().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout is enforced"
    );
    assert!(
        m.status().last_error.contains("unreachable"),
        "{}",
        m.status().last_error
    );
}

#[tokio::test]
async fn keepalives_go_out_on_their_interval_with_usage_pushed_over_grpc() {
    use rookery_common::proto::ReportUsageRequest;
    use rookery_common::proto::licensing_client::LicensingClient;

    let s = Setup::new();
    let server = RefServer::start().await;
    let mut cfg = s.config(Some(&server), test_key().as_str(), true);
    cfg.licence.keepalive_interval = Duration::from_millis(300);
    let m = s.manager(&cfg);

    let sock = s.dir.path().join("licensed.sock");
    let listener = rookery_common::grpc::bind(&sock).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let router = tonic::transport::Server::builder()
        .add_service(rookery_licensed::service::server(m.clone()));
    tokio::spawn(rookery_common::grpc::serve(listener, router, stop.clone()));
    let mut client = LicensingClient::new(rookery_common::grpc::connect(&sock).await.unwrap());
    client
        .report_usage(ReportUsageRequest {
            daemon: "probed".into(),
            counters: [("targets".to_owned(), 12u64)].into_iter().collect(),
        })
        .await
        .unwrap();
    let bad = client
        .report_usage(ReportUsageRequest {
            daemon: "no spaces".into(),
            counters: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let runner = m.clone();
    let run_stop = stop.clone();
    let task = tokio::spawn(async move { runner.run(run_stop).await });
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.keepalives().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "fewer than 3 keepalives in 15s: {}",
            server.keepalives().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    task.await.unwrap();
    let ka = server.keepalives();
    let mut expected = BTreeMap::new();
    expected.insert(
        "probed".to_owned(),
        [("targets".to_owned(), 12u64)]
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
    );
    assert_eq!(ka[0].usage, expected);
    assert_eq!(ka[0].identity.machine_id, "machine-1");
    assert_eq!(
        server.hits("validate"),
        1,
        "validated once, then keepalives"
    );
}

fn offline_payload(expires_at: i64) -> OfflinePayload {
    OfflinePayload {
        product: "rookery".into(),
        customer: "Air-gapped Ltd".into(),
        tier: "enterprise".into(),
        issued_at: T0,
        expires_at,
        features: vec!["autoperf".into()],
        machine_id: Some("machine-1".into()),
    }
}

#[tokio::test]
async fn signed_offline_licence_is_accepted_and_a_tampered_one_rejected() {
    let s = Setup::new();
    let cfg = s.config(None, "", true);
    let signed = offline::sign(&offline_payload(T0 + 30 * 86_400), &test_verify_key());
    std::fs::write(&cfg.licence.offline_file, &signed).unwrap();
    let m = s.manager(&cfg);
    let st = m.status();
    assert_eq!(st.state, LicenseState::Valid as i32, "{st:?}");
    assert_eq!(st.source, "offline-file");
    assert_eq!(st.customer, "Air-gapped Ltd");
    assert!(feature(&m, "autoperf"));
    assert!(!feature(&m, "sso"), "not in the offline licence");

    // Tamper: same signature, different payload (a later expiry).
    let forged = offline::sign(
        &offline_payload(T0 + 3650 * 86_400),
        &ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
    );
    let good: serde_json::Value = serde_json::from_str(&signed).unwrap();
    let bad: serde_json::Value = serde_json::from_str(&forged).unwrap();
    let tampered = serde_json::json!({ "payload": bad["payload"], "signature": good["signature"] })
        .to_string();
    std::fs::write(&cfg.licence.offline_file, tampered).unwrap();
    m.apply_config(&cfg);
    let st = m.status();
    assert_eq!(st.state, LicenseState::Invalid as i32, "{st:?}");
    assert!(
        st.last_error.contains("signature does not verify"),
        "{}",
        st.last_error
    );
    assert!(!feature(&m, "autoperf"));
    assert!(feature(&m, "probes"));
}

#[tokio::test]
async fn release_mode_off_enables_everything_even_without_a_server() {
    let s = Setup::new();
    let m = s.manager(&s.config(None, test_key().as_str(), false));
    m.cycle().await; // server unreachable
    for (name, _) in rookery_licensed::features::CATALOGUE {
        assert_eq!(
            m.check_feature(name),
            (true, "release mode off: every feature is enabled".into())
        );
    }
    assert!(m.check_feature("anything-at-all").0, "no check ever fails");
    let st = m.status();
    assert_eq!(st.state, LicenseState::Development as i32);
    assert!(st.features.iter().all(|f| f.enabled));
    assert!(
        m.summary().starts_with("release mode off"),
        "{}",
        m.summary()
    );
}

#[tokio::test]
async fn release_mode_without_key_keeps_community_features_only() {
    let s = Setup::new();
    let m = s.manager(&s.config(None, "", true));
    m.cycle().await;
    assert_eq!(m.licence_state(), LicenseState::NoKey);
    assert!(feature(&m, "probes"));
    assert!(feature(&m, "packet.stamp-reflector"));
    let (on, why) = m.check_feature("autoperf");
    assert!(!on);
    assert!(why.contains("no key"), "{why}");
    assert_eq!(
        m.check_feature("warp-drive"),
        (false, "unknown feature \"warp-drive\"".into())
    );
}

#[tokio::test]
async fn set_key_persists_and_validates() {
    let s = Setup::new();
    let server = RefServer::start().await;
    let cfg = s.config(Some(&server), "", true);
    let m = s.manager(&cfg);
    assert!(
        m.set_key("PENG-1234").await.is_err(),
        "format checked first"
    );
    let st = m
        .set_key(&test_key().as_str().to_ascii_lowercase())
        .await
        .unwrap();
    assert_eq!(st.state, LicenseState::Valid as i32, "{st:?}");
    // A restart finds the key in the state directory.
    drop(m);
    let m = s.manager(&cfg);
    assert_eq!(m.status().key_masked, test_key().masked());
    assert!(Path::new(&cfg.state.directory.join("key")).exists());
}

#[tokio::test]
async fn run_returns_promptly_on_shutdown_while_the_server_is_slow() {
    let s = Setup::new();
    let server = RefServer::start().await;
    server.set_delay(Duration::from_secs(30));
    let mut cfg = s.config(Some(&server), test_key().as_str(), true);
    cfg.licence.request_timeout = Duration::from_secs(60);
    let m = s.manager(&cfg);
    let stop = tokio_util::sync::CancellationToken::new();
    let runner = m.clone();
    let run_stop = stop.clone();
    let task = tokio::spawn(async move { runner.run(run_stop).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.hits("validate") == 0 {
        assert!(
            Instant::now() < deadline,
            "run never sent the first validation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("run returns within 2s of shutdown even with a validation in flight")
        .expect("run does not panic");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        m.licence_state(),
        LicenseState::Pending,
        "an interrupted cycle changes nothing"
    );
}

#[tokio::test]
async fn grpc_set_key_checks_format_and_an_installed_key_wins_over_the_config() {
    use rookery_common::proto::licensing_client::LicensingClient;
    use rookery_common::proto::{CheckFeatureRequest, GetEntitlementsRequest, SetKeyRequest};

    let s = Setup::new();
    let server = RefServer::start().await;
    let other =
        rookery_licensed::key::LicenceKey::from_groups(["OTHR", "0000", "0000", "0000"]).unwrap();
    let cfg = s.config(Some(&server), other.as_str(), true);
    let m = s.manager(&cfg);
    let sock = s.dir.path().join("licensed.sock");
    let listener = rookery_common::grpc::bind(&sock).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let router = tonic::transport::Server::builder()
        .add_service(rookery_licensed::service::server(m.clone()));
    tokio::spawn(rookery_common::grpc::serve(listener, router, stop.clone()));
    let mut client = LicensingClient::new(rookery_common::grpc::connect(&sock).await.unwrap());

    let bad = client
        .set_key(SetKeyRequest {
            key: "PENG-ABCD-EFGH".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    assert!(
        bad.message().contains("3 groups, expected 6"),
        "the message says what is wrong: {}",
        bad.message()
    );
    let bad = client
        .check_feature(CheckFeatureRequest {
            name: "no spaces".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");

    let st = client
        .set_key(SetKeyRequest {
            key: test_key().to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.state, LicenseState::Valid as i32, "{st:?}");
    assert_eq!(st.key_masked, test_key().masked());
    let ent = client
        .get_entitlements(GetEntitlementsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        ent.features
            .iter()
            .any(|f| f.name == "autoperf" && f.enabled),
        "{ent:?}"
    );
    let on = client
        .check_feature(CheckFeatureRequest {
            name: "autoperf".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(on.enabled, "{on:?}");
    stop.cancel();

    // After a restart the installed key wins over `licence.key` of the config.
    drop(m);
    let m = s.manager(&cfg);
    assert_eq!(m.status().key_masked, test_key().masked());
    m.cycle().await;
    assert_eq!(m.licence_state(), LicenseState::Valid, "{:?}", m.status());
}

#[tokio::test]
async fn reload_with_a_new_server_revalidates_at_once() {
    let s = Setup::new();
    let server = RefServer::start().await;
    let down = s.config(None, test_key().as_str(), true);
    let m = s.manager(&down);
    let stop = tokio_util::sync::CancellationToken::new();
    let runner = m.clone();
    let run_stop = stop.clone();
    let task = tokio::spawn(async move { runner.run(run_stop).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !m.status().last_error.contains("unreachable") {
        assert!(
            Instant::now() < deadline,
            "no failed first check: {:?}",
            m.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(m.licence_state(), LicenseState::Pending);

    // keepalive-interval is an hour: only the reload can bring the next check forward.
    m.apply_config(&s.config(Some(&server), test_key().as_str(), true));
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.licence_state() != LicenseState::Valid {
        assert!(
            Instant::now() < deadline,
            "reload did not revalidate: {:?}",
            m.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.hits("validate"), 1);
    stop.cancel();
    task.await.unwrap();
}
