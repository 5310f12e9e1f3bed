//! Config editing against a real in-process `rookery-licensed` on a Unix socket in a temp
//! dir: validation issues with line:col as a 422, a valid PUT written + reloaded + in history,
//! diff, rollback, try-mode (kept when healthy; reverted against a daemon that never gets
//! healthy), the licence routes, and 503 `daemon_unavailable` for a daemon that is absent.
//! Also the probe routes against a real in-process `rookery-probed`, and the log and metric
//! routes against a real in-process `rookery-ingestd` (a syslog line over UDP; its own scrape).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use rookery_apid::api::now;
use rookery_apid::app::Running;
use rookery_apid::config::Config;
use rookery_apid::crypto;
use rookery_apid::store::Role;
use rookery_common::config::Sources;
use rookery_common::daemon::Control;
use rookery_common::proto;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const PW: &str = "a-much-better-passphrase-7";

struct Env {
    dir: tempfile::TempDir,
    running: Running,
    stop: CancellationToken,
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Env {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

async fn start_apid() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("etc")).unwrap();
    std::fs::create_dir_all(d.join("run")).unwrap();
    let mut c = Config::default();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.http.redirect = false;
    c.tls.cert = d.join("tls/apid.crt");
    c.tls.key = d.join("tls/apid.key");
    c.auth.signing_key = d.join("state/token-signing.key");
    c.auth.initial_admin = d.join("initial-admin");
    c.state.directory = d.join("state");
    c.daemons.run_dir = d.join("run");
    c.daemons.config_dir = d.join("etc");
    let stop = CancellationToken::new();
    let running = Running::start(&c, stop.clone()).await.unwrap();
    running
        .api
        .store
        .create_user(
            "mia",
            &crypto::hash_password(PW),
            Role::Maintainer,
            false,
            now(),
        )
        .unwrap();
    let pem = std::fs::read(&c.tls.cert).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .resolve("localhost", running.https)
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", running.https.port());
    let r: Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": "mia", "password": PW}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Env {
        token: r["access_token"].as_str().unwrap().to_owned(),
        dir,
        running,
        stop,
        client,
        base,
    }
}

fn licensed_base(dir: &Path) -> String {
    format!(
        "[grpc]\nsocket = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[state]\ndirectory = \"{}\"\n",
        dir.join("run/licensed.sock").display(),
        dir.join("licensed-state").display()
    )
}

async fn wait_for_socket(path: &Path) {
    for _ in 0..200 {
        if rookery_common::grpc::connect(path).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never answered", path.display());
}

async fn start_licensed(env: &Env) -> Control {
    let main = env.path("etc/licensed.toml");
    std::fs::write(&main, licensed_base(env.dir.path())).unwrap();
    let control = Control::default();
    let sources = Sources::new("licensed", Some(&main), Vec::new());
    tokio::spawn(rookery_licensed::app::run(sources, control.clone()));
    wait_for_socket(&env.path("run/licensed.sock")).await;
    control
}

fn digest_of(system: &Value, daemon: &str) -> String {
    system["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == daemon)
        .unwrap()["config_digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_put_validates_writes_reloads_diffs_and_rolls_back_with_licensed() {
    use reqwest::Method;
    let env = start_apid().await;
    let licensed = start_licensed(&env).await;
    let base = licensed_base(env.dir.path());
    let file = env.path("etc/licensed.toml");

    let (s, v) = env.send(Method::GET, "/api/v1/config/licensed", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["text"], base.as_str());
    assert_eq!(v["exists"], true);
    assert_eq!(v["parsed"]["metrics"]["listen"], "127.0.0.1:0");
    let (_, system) = env.send(Method::GET, "/api/v1/system", None).await;
    let first_digest = digest_of(&system, "licensed");
    assert_eq!(first_digest.len(), 64, "{system}");
    let view = system["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "licensed")
        .unwrap();
    assert_eq!(view["health"], "serving", "{system}");
    assert_eq!(view["state"], "ready", "{system}");

    // Rejected by licensed itself: every issue with line:col, nothing written.
    let bad = format!("{base}\n[licence]\nmax-attempts = \"four\"\nservr-url = \"x\"\n");
    let (s, v) = env
        .send(
            Method::PUT,
            "/api/v1/config/licensed",
            Some(json!({"text": bad})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"], "invalid_config");
    assert_eq!(v["status"], 422);
    assert!(v["correlation_id"].as_str().unwrap().len() >= 8);
    let issues = v["issues"].as_array().unwrap();
    assert_eq!(issues.len(), 2, "{v}");
    assert_eq!(
        (issues[0]["line"].as_u64(), issues[0]["column"].as_u64()),
        (Some(11), Some(16)),
        "{v}"
    );
    assert_eq!(issues[0]["key"], "licence.max-attempts");
    assert_eq!(issues[1]["line"], 12, "{v}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), base);

    // Valid: written, reloaded (new digest running), recorded.
    let good = format!("{base}\n[licence]\nmax-attempts = 7\n");
    let (s, v) = env
        .send(
            Method::PUT,
            "/api/v1/config/licensed",
            Some(json!({"text": good})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["applied"], true);
    let history_id = v["history_id"].as_i64().unwrap();
    let new_digest = v["config_digest"].as_str().unwrap().to_owned();
    assert_ne!(new_digest, first_digest);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), good);
    let (_, system) = env.send(Method::GET, "/api/v1/system", None).await;
    assert_eq!(digest_of(&system, "licensed"), new_digest);
    let (_, hist) = env
        .send(Method::GET, "/api/v1/config/licensed/history", None)
        .await;
    assert_eq!(hist.as_array().unwrap().len(), 1, "{hist}");
    assert_eq!(hist[0]["kind"], "apply");
    assert_eq!(hist[0]["user"], "mia");
    let (_, entry) = env
        .send(
            Method::GET,
            &format!("/api/v1/config/licensed/history/{history_id}"),
            None,
        )
        .await;
    assert_eq!(entry["before"], base.as_str());
    assert_eq!(entry["after"], good.as_str());
    let (s, diff) = env
        .send(
            Method::GET,
            &format!("/api/v1/config/licensed/diff?against={history_id}"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let diff = diff.as_str().unwrap();
    assert!(
        diff.contains("+max-attempts = 7\n") && diff.contains("+[licence]\n"),
        "{diff}"
    );

    // Try-mode against a healthy daemon keeps the change.
    let tried = format!("{base}\n[licence]\nmax-attempts = 9\n");
    let (s, v) = env
        .send(
            Method::PUT,
            "/api/v1/config/licensed",
            Some(json!({"text": tried, "try_seconds": 5})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["applied"].as_bool(), v["reverted"].as_bool()),
        (Some(true), Some(false)),
        "{v}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), tried);

    // Roll back to before the first change: validated, written, reloaded.
    let (s, v) = env
        .send(
            Method::POST,
            "/api/v1/config/licensed/rollback",
            Some(json!({"history_id": history_id})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), base);
    assert_eq!(v["config_digest"].as_str().unwrap(), first_digest);
    let (_, hist) = env
        .send(Method::GET, "/api/v1/config/licensed/history", None)
        .await;
    let kinds: Vec<&str> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["rollback", "try", "apply"]);

    // The licence through licensed.
    let (s, v) = env.send(Method::GET, "/api/v1/licence", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "development", "{v}");

    let trail = env
        .running
        .api
        .store
        .audit_query(
            &rookery_apid::store::AuditFilter {
                kind: Some("AUDIT".into()),
                ..Default::default()
            },
            50,
            0,
        )
        .unwrap()
        .0;
    let actions: Vec<(String, String)> = trail
        .iter()
        .map(|e| (e.action.clone(), e.result.clone()))
        .collect();
    assert_eq!(
        actions,
        [
            ("config.licensed.rollback".to_owned(), "success".to_owned()),
            ("config.licensed.try".to_owned(), "success".to_owned()),
            ("config.licensed.apply".to_owned(), "success".to_owned()),
            ("config.licensed.apply".to_owned(), "rejected".to_owned()),
        ]
    );
    licensed.shutdown.cancel();
}

/// A daemon that accepts every config and reloads, but never reports ready.
struct NeverHealthy;

#[tonic::async_trait]
impl proto::admin_server::Admin for NeverHealthy {
    async fn status(
        &self,
        _: tonic::Request<proto::StatusRequest>,
    ) -> Result<tonic::Response<proto::StatusResponse>, tonic::Status> {
        Ok(tonic::Response::new(proto::StatusResponse {
            daemon: "probed".into(),
            state: "reloading".into(),
            ..Default::default()
        }))
    }

    async fn validate_config(
        &self,
        _: tonic::Request<proto::ValidateConfigRequest>,
    ) -> Result<tonic::Response<proto::ValidateConfigResponse>, tonic::Status> {
        Ok(tonic::Response::new(proto::ValidateConfigResponse {
            ok: true,
            ..Default::default()
        }))
    }

    async fn reload(
        &self,
        _: tonic::Request<proto::ReloadRequest>,
    ) -> Result<tonic::Response<proto::ReloadResponse>, tonic::Status> {
        Ok(tonic::Response::new(proto::ReloadResponse {
            applied: true,
            config_digest: "new".into(),
            ..Default::default()
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_mode_reverts_when_the_daemon_is_not_healthy_in_time() {
    use reqwest::Method;
    let env = start_apid().await;
    let socket = env.path("run/probed.sock");
    let listener = rookery_common::grpc::bind(&socket).await.unwrap();
    let router = tonic::transport::Server::builder()
        .add_service(proto::admin_server::AdminServer::new(NeverHealthy));
    let stop = env.stop.clone();
    tokio::spawn(rookery_common::grpc::serve(listener, router, stop));
    wait_for_socket(&socket).await;
    let file = env.path("etc/probed.toml");
    std::fs::write(&file, "# old\n").unwrap();
    let (s, v) = env
        .send(
            Method::PUT,
            "/api/v1/config/probed",
            Some(json!({"text": "# new\n", "try_seconds": 1})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["applied"].as_bool(), v["reverted"].as_bool()),
        (Some(false), Some(true)),
        "{v}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "# old\n");
    let (_, hist) = env
        .send(Method::GET, "/api/v1/config/probed/history", None)
        .await;
    let kinds: Vec<&str> = hist
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["auto-revert", "try"]);
}

#[tokio::test]
async fn absent_daemons_answer_503_naming_daemon_and_socket() {
    use reqwest::Method;
    let env = start_apid().await;
    for (m, p, body) in [
        (
            Method::PUT,
            "/api/v1/config/packetd",
            Some(json!({"text": ""})),
        ),
        (
            Method::POST,
            "/api/v1/config/ingestd/rollback",
            Some(json!({"history_id": 1})),
        ),
        (Method::GET, "/api/v1/licence", None),
        (Method::GET, "/api/v1/probes/targets", None),
        (
            Method::POST,
            "/api/v1/probes/run",
            Some(json!({"target": "web"})),
        ),
    ] {
        let (s, v) = env.send(m, p, body).await;
        if p.ends_with("rollback") {
            // No history yet: the entry is looked up first.
            assert_eq!(s, 404, "{v}");
            continue;
        }
        assert_eq!(s, 503, "{p}: {v}");
        assert_eq!(v["error"], "daemon_unavailable");
        let msg = v["message"].as_str().unwrap();
        let daemon = if p.contains("packetd") {
            "packetd"
        } else if p.contains("probes") {
            "probed"
        } else {
            "licensed"
        };
        assert!(msg.contains(&format!("rookery-{daemon}")), "{msg}");
        assert!(
            msg.contains(
                &env.path(&format!("run/{daemon}.sock"))
                    .display()
                    .to_string()
            ),
            "{msg}"
        );
    }
    let (s, v) = env.send(Method::GET, "/api/v1/system", None).await;
    assert_eq!(s, 200, "{v}");
    for d in v["daemons"].as_array().unwrap() {
        assert_eq!(d["state"], "unavailable", "{d}");
        assert_eq!(d["health"], "unavailable", "{d}");
        assert!(
            d["error"].as_str().unwrap().contains("does not answer"),
            "{d}"
        );
    }
    let (s, v) = env.send(Method::GET, "/api/v1/config/apid", None).await;
    assert_eq!(s, 404, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_list_targets_results_and_run_now_through_a_real_probed() {
    use reqwest::Method;
    let env = start_apid().await;
    let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = up.accept().await {
            drop(s);
        }
    });
    let metrics_port = rookery_pgtest::free_port();
    let file = env.path("etc/probed.toml");
    std::fs::write(
        &file,
        format!(
            "[grpc]\nsocket = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
             [state]\ndirectory = \"{}\"\n[modules.tcp]\nprober = \"tcp\"\ntimeout = \"1s\"\n\
             [[targets]]\nname = \"up\"\nmodule = \"tcp\"\naddress = \"{up_addr}\"\ninterval = \"1s\"\n",
            env.path("run/probed.sock").display(),
            env.path("probed-state").display()
        ),
    )
    .unwrap();
    let control = Control::default();
    tokio::spawn(rookery_probed::app::run(
        Sources::new("probed", Some(&file), Vec::new()),
        control.clone(),
    ));
    wait_for_socket(&env.path("run/probed.sock")).await;

    // Targets, with the last result once probed (interval 1 s).
    let mut last = Value::Null;
    for _ in 0..50 {
        let (s, v) = env.send(Method::GET, "/api/v1/probes/targets", None).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v[0]["name"], "up", "{v}");
        assert_eq!(v[0]["prober"], "tcp", "{v}");
        last = v[0]["last"].clone();
        if !last.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last["success"], true, "{last}");

    // Stored results (written in batches), filtered by target.
    let mut found = false;
    for _ in 0..50 {
        let (s, v) = env
            .send(
                Method::GET,
                "/api/v1/probes/results?target=up&limit=5",
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        if let Some(first) = v.as_array().unwrap().first() {
            assert_eq!(first["target"], "up", "{v}");
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "no stored result");
    let (s, v) = env
        .send(Method::GET, "/api/v1/probes/results?limit=0", None)
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = env
        .send(Method::GET, "/api/v1/probes/tier-events", None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v.is_array(), "{v}");

    // Run now: by target, by module + address (refused), unknown target 404, bad module 422.
    let (s, v) = env
        .send(
            Method::POST,
            "/api/v1/probes/run",
            Some(json!({"target": "up"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["success"], true, "{v}");
    assert!(
        v["phases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["phase"] == "connect"),
        "{v}"
    );
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], rookery_pgtest::free_port()));
    let (s, v) = env
        .send(
            Method::POST,
            "/api/v1/probes/run",
            Some(json!({"module": "tcp", "address": closed.to_string()})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["success"], false, "{v}");
    let (s, v) = env
        .send(
            Method::POST,
            "/api/v1/probes/run",
            Some(json!({"target": "nope"})),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"], "not_found", "{v}");
    let (s, v) = env
        .send(
            Method::POST,
            "/api/v1/probes/run",
            Some(json!({"module": "nope", "address": "127.0.0.1:1"})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = env
        .send(Method::POST, "/api/v1/probes/run", Some(json!({})))
        .await;
    assert_eq!(s, 422, "{v}");
    // Every run is audited (the audit route is admin-only; mia is a maintainer).
    let runs = env
        .running
        .api
        .store
        .audit_query(&rookery_apid::store::AuditFilter::default(), 1000, 0)
        .unwrap()
        .0
        .into_iter()
        .filter(|e| e.action == "probes.run" && e.user == "mia")
        .count();
    assert_eq!(runs, 4);
    control.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_metrics_through_a_real_ingestd() {
    use reqwest::Method;
    use rookery_common::proto::admin_client::AdminClient;
    let env = start_apid().await;
    // ingestd is absent: 503 naming it.
    let (s, v) = env.send(Method::GET, "/api/v1/logs", None).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"], "daemon_unavailable", "{v}");
    assert!(v["message"].as_str().unwrap().contains("ingestd"), "{v}");

    let metrics_port = rookery_pgtest::free_port();
    let socket = env.path("run/ingestd.sock");
    let file = env.path("etc/ingestd.toml");
    std::fs::write(
        &file,
        format!(
            "[syslog]\nudp = [\"127.0.0.1:0\"]\ntcp = []\n[http]\nlisten = []\n\
             [otlp]\ngrpc = []\nhttp = []\n\
             [scrape]\ninterval = \"1s\"\ntimeout = \"1s\"\n\
             targets = [{{ job = \"self\", url = \"http://127.0.0.1:{metrics_port}/metrics\" }}]\n\
             [grpc]\nsocket = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
             [state]\ndirectory = \"{}\"\n",
            socket.display(),
            env.path("ingestd-state").display()
        ),
    )
    .unwrap();
    let control = Control::default();
    tokio::spawn(rookery_ingestd::app::run(
        Sources::new("ingestd", Some(&file), Vec::new()),
        control.clone(),
    ));
    let mut udp = String::new();
    for _ in 0..200 {
        if let Ok(ch) = rookery_common::grpc::connect(&socket).await
            && let Ok(st) = AdminClient::new(ch).status(proto::StatusRequest {}).await
            && let Some(a) = st.into_inner().details.get("syslog-udp-0")
        {
            udp = a.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!udp.is_empty(), "ingestd never reported its UDP listener");
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for (app, sev, msg) in [
        ("kernel", 3, "eth0 link down on the uplink"),
        ("cron", 6, "job finished"),
        ("cron", 6, "job started"),
    ] {
        let line = format!(
            "<{}>1 2026-01-31T12:00:00Z edge1 {app} 42 - - {msg}",
            8 * 3 + sev
        );
        sender.send_to(line.as_bytes(), &udp).unwrap();
    }

    // Full-text search finds the one line, with its fields.
    let mut page = Value::Null;
    for _ in 0..100 {
        let (s, v) = env
            .send(Method::GET, "/api/v1/logs?q=%22link%20down%22", None)
            .await;
        assert_eq!(s, 200, "{v}");
        if !v["records"].as_array().unwrap().is_empty() {
            page = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recs = page["records"].as_array().unwrap();
    assert_eq!(recs.len(), 1, "{page}");
    assert_eq!(recs[0]["host"], "edge1", "{page}");
    assert_eq!(recs[0]["app"], "kernel", "{page}");
    assert_eq!(recs[0]["severity"], 3, "{page}");
    assert_eq!(recs[0]["facility"], 3, "{page}");
    assert_eq!(
        recs[0]["timestamp"], "2026-01-31T12:00:00.000000000Z",
        "{page}"
    );
    assert!(page["next_before"].is_null(), "{page}");

    // Filters and paging: severity 3 or worse is the kernel line; two cron lines page by one.
    for _ in 0..100 {
        let (_, v) = env.send(Method::GET, "/api/v1/logs?app=cron", None).await;
        if v["records"].as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, v) = env
        .send(Method::GET, "/api/v1/logs?severity=3&host=edge1", None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["records"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["records"][0]["app"], "kernel", "{v}");
    let (s, v) = env
        .send(Method::GET, "/api/v1/logs?app=cron&limit=1", None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["records"][0]["message"], "job started", "{v}");
    let next = v["next_before"].as_i64().unwrap();
    let (s, v) = env
        .send(
            Method::GET,
            &format!("/api/v1/logs?app=cron&limit=1&before={next}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["records"][0]["message"], "job finished", "{v}");
    let (s, v) = env
        .send(
            Method::GET,
            "/api/v1/logs?since=2026-01-31T12:00:01Z&app=cron",
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["records"].as_array().unwrap().is_empty(), "{v}");

    // Bad input: 400 naming the parameter.
    for (query, name) in [
        ("severity=8", "severity"),
        ("facility=x", "facility"),
        ("since=yesterday", "since"),
        ("limit=0", "limit"),
        ("parse_errors=yes", "parse_errors"),
        ("q=%22unterminated", "q"),
        ("nope=1", "nope"),
    ] {
        let (s, v) = env
            .send(Method::GET, &format!("/api/v1/logs?{query}"), None)
            .await;
        assert_eq!(s, 400, "{query}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(name),
            "{query}: {v}"
        );
    }

    // Metrics: ingestd scrapes its own /metrics every second; `up` is 1.
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let mut series = Value::Null;
    for _ in 0..100 {
        let end = now_ms + 60_000;
        let (s, v) = env
            .send(
                Method::GET,
                &format!(
                    "/api/v1/metrics/query_range?name=up&match=job%3D%22self%22\
                     &start_ms={now_ms}&end_ms={end}&step_ms=1000"
                ),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        if v.as_array()
            .unwrap()
            .first()
            .is_some_and(|s| s["points"].as_array().is_some_and(|p| !p.is_empty()))
        {
            series = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(series.as_array().unwrap().len(), 1, "{series}");
    assert_eq!(series[0]["labels"]["job"], "self", "{series}");
    assert_eq!(
        series[0]["labels"]["__name__"].as_str().unwrap_or("up"),
        "up"
    );
    assert_eq!(series[0]["points"][0]["value"], 1.0, "{series}");
    // A job that does not exist has no series.
    let (s, v) = env
        .send(
            Method::GET,
            &format!(
                "/api/v1/metrics/query_range?name=up&match=job%3D%22nobody%22\
                 &start_ms={now_ms}&end_ms={now_ms}&step_ms=1000"
            ),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v.as_array().unwrap().is_empty(), "{v}");
    for (query, name) in [
        ("start_ms=0&end_ms=1&step_ms=1", "name"),
        ("name=up&end_ms=1&step_ms=1", "start_ms"),
        ("name=up&start_ms=5&end_ms=1&step_ms=1", "end_ms"),
        ("name=up&start_ms=0&end_ms=100000&step_ms=1", "step_ms"),
        (
            "name=up&start_ms=0&end_ms=1&step_ms=1&function=median",
            "function",
        ),
        ("name=up&start_ms=0&end_ms=1&step_ms=1&match=job", "match"),
        (
            "name=up&start_ms=0&end_ms=1&step_ms=1&match=job%3D~%22(%22",
            "match",
        ),
    ] {
        let (s, v) = env
            .send(
                Method::GET,
                &format!("/api/v1/metrics/query_range?{query}"),
                None,
            )
            .await;
        assert_eq!(s, 400, "{query}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(name),
            "{query}: {v}"
        );
    }
    control.shutdown.cancel();
}
