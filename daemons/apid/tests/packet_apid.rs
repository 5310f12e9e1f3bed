//! The packet-session routes against a real in-process `rookery-packetd` whose userspace
//! STAMP reflector answers on loopback (a free UDP port, sources 127.0.0.0/8 allowed): 503
//! `daemon_unavailable` naming packetd and its socket while it is absent; then a session
//! started over REST, its Server-Sent Events followed to the final state, its results with
//! zero loss, the list, `max-concurrent` as a 409, stop, bad input as 4xx naming the field,
//! and the audit trail of starts and stops.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use rookery_apid::api::now;
use rookery_apid::app::Running;
use rookery_apid::config::Config;
use rookery_apid::crypto;
use rookery_apid::store::Role;
use rookery_common::config::Sources;
use rookery_common::daemon::Control;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const PW: &str = "a-much-better-passphrase-7";

struct Env {
    dir: tempfile::TempDir,
    running: Running,
    stop: CancellationToken,
    client: reqwest::Client,
    base: String,
    maintainer: String,
    viewer: String,
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

    async fn send_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
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

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send_as(&self.maintainer, method, path, body).await
    }

    /// Follows `GET …/watch` to its end: the (event, data) pairs, within `limit`.
    async fn watch(&self, id: u64, limit: Duration) -> Vec<(String, Value)> {
        let mut r = self
            .client
            .get(format!("{}/api/v1/packet/sessions/{id}/watch", self.base))
            .bearer_auth(&self.viewer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let mut text = String::new();
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, r.chunk()).await {
                Ok(Ok(Some(bytes))) => text.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(Ok(None)) => break,
                Ok(Err(e)) => panic!("watch stream failed: {e}"),
                Err(_) => panic!("the watch did not end within {limit:?}:\n{text}"),
            }
        }
        text.split("\n\n")
            .filter(|block| !block.trim().is_empty())
            .filter_map(|block| {
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                // Keep-alive comments carry no data.
                (!data.is_empty()).then(|| (name, serde_json::from_str(&data).unwrap()))
            })
            .collect()
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
    for (name, role) in [("mia", Role::Maintainer), ("vic", Role::Viewer)] {
        running
            .api
            .store
            .create_user(name, &crypto::hash_password(PW), role, false, now())
            .unwrap();
    }
    let pem = std::fs::read(&c.tls.cert).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .resolve("localhost", running.https)
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", running.https.port());
    let mut tokens = Vec::new();
    for name in ["mia", "vic"] {
        let r: Value = client
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"username": name, "password": PW}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens.push(r["access_token"].as_str().unwrap().to_owned());
    }
    Env {
        viewer: tokens.pop().unwrap(),
        maintainer: tokens.pop().unwrap(),
        dir,
        running,
        stop,
        client,
        base,
    }
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

/// Starts packetd in-process: sessions limited to 2000 pps and one at a time; its userspace
/// reflector on `lo` at `port` (no XDP, no privilege needed for a port above 1023).
async fn start_packetd(env: &Env, port: u16) -> Control {
    let file = env.path("etc/packetd.toml");
    std::fs::write(
        &file,
        format!(
            "[xdp]\ninterfaces = [\"lo\"]\nmode = \"userspace\"\nstamp-port = {port}\necho-port = 0\n\
             allow-sources = [\"127.0.0.0/8\", \"::1/128\"]\n\n\
             [sessions]\nmax-pps = 2000\nmax-concurrent = 1\n\n\
             [grpc]\nsocket = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[state]\ndirectory = \"{}\"\n",
            env.path("run/packetd.sock").display(),
            env.path("packetd-state").display()
        ),
    )
    .unwrap();
    let control = Control::default();
    tokio::spawn(
        rookery_common::daemon::run::<rookery_packetd::app::Packetd>(
            Sources::new("packetd", Some(&file), Vec::new()),
            control.clone(),
        ),
    );
    wait_for_socket(&env.path("run/packetd.sock")).await;
    control
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_sessions_start_watch_results_stop_through_a_real_packetd() {
    let env = start_apid().await;
    let port = rookery_pgtest::free_port();
    let good = json!({
        "destination": "127.0.0.1", "port": port, "count": 300, "rate_pps": 500,
        "dscp": 46, "packet_size": 100, "ssid": 3
    });

    // packetd is absent: every route is a 503 naming it and its socket.
    let socket = env.path("run/packetd.sock");
    for (method, path, body) in [
        (Method::GET, "/api/v1/packet/sessions", None),
        (Method::POST, "/api/v1/packet/sessions", Some(good.clone())),
        (Method::GET, "/api/v1/packet/sessions/1", None),
        (Method::POST, "/api/v1/packet/sessions/1/stop", None),
        (Method::GET, "/api/v1/packet/sessions/1/watch", None),
    ] {
        let (s, v) = env.send(method.clone(), path, body).await;
        assert_eq!(s, 503, "{method} {path}: {v}");
        assert_eq!(v["error"], "daemon_unavailable", "{v}");
        let m = v["message"].as_str().unwrap();
        assert!(m.contains("rookery-packetd"), "{v}");
        assert!(m.contains(&socket.display().to_string()), "{v}");
    }

    let packetd = start_packetd(&env, port).await;

    // Start, then follow the live progress to the end.
    let (s, started) = env
        .send(Method::POST, "/api/v1/packet/sessions", Some(good.clone()))
        .await;
    assert_eq!(s, 201, "{started}");
    assert_eq!(started["state"], "running", "{started}");
    assert_eq!(started["spec"]["port"], port, "{started}");
    assert_eq!(started["spec"]["dscp"], 46, "{started}");
    let id = started["id"].as_u64().unwrap();
    let events = env.watch(id, Duration::from_secs(20)).await;
    let (last_name, _) = events.last().unwrap();
    assert_eq!(last_name, "end", "{events:?}");
    let progress: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "session")
        .map(|(_, v)| v)
        .collect();
    assert!(
        progress.len() >= 3,
        "live progress expected, got {}: {events:?}",
        progress.len()
    );
    let sent: Vec<u64> = progress
        .iter()
        .map(|v| v["stats"]["sent"].as_u64().unwrap())
        .collect();
    assert!(sent.windows(2).all(|w| w[0] <= w[1]), "{sent:?}");
    let last = *progress.last().unwrap();
    assert_eq!(last["state"], "done", "{last}");
    assert!(
        progress[..progress.len() - 1]
            .iter()
            .all(|v| v["state"] == "running"),
        "{events:?}"
    );

    // The results: zero loss, percentiles in order, every measurement present.
    let (s, got) = env
        .send(Method::GET, &format!("/api/v1/packet/sessions/{id}"), None)
        .await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(&got, last, "GET equals the final event");
    let st = &got["stats"];
    assert_eq!(
        (
            st["sent"].as_u64(),
            st["received"].as_u64(),
            st["lost"].as_u64(),
            st["duplicates"].as_u64(),
            st["reordered"].as_u64()
        ),
        (Some(300), Some(300), Some(0), Some(0), Some(0)),
        "{st}"
    );
    let ns = |k: &str| st[k].as_u64().unwrap_or_else(|| panic!("{k}: {st}"));
    assert!(ns("rtt_min_ns") > 0, "{st}");
    assert!(ns("rtt_min_ns") <= ns("rtt_p50_ns"), "{st}");
    assert!(ns("rtt_p50_ns") <= ns("rtt_p90_ns"), "{st}");
    assert!(ns("rtt_p90_ns") <= ns("rtt_p99_ns"), "{st}");
    assert!(ns("rtt_p99_ns") <= ns("rtt_max_ns"), "{st}");
    for k in [
        "rtt_mean_ns",
        "jitter_ns",
        "ipdv_mean_abs_ns",
        "ipdv_max_abs_ns",
        "throughput_bps",
    ] {
        ns(k);
    }
    assert!(st["reordered_ratio"].is_f64(), "{st}");
    assert!(st["owd_synchronized"].is_boolean(), "{st}");
    assert!(got["finished_unix_ms"].as_i64() >= got["started_unix_ms"].as_i64());

    // The list, newest first, for a viewer too.
    let (s, list) = env
        .send_as(
            &env.viewer,
            Method::GET,
            "/api/v1/packet/sessions?limit=10",
            None,
        )
        .await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list[0]["id"], id, "{list}");

    // max-concurrent = 1: a second session while one runs is a 409; stop ends the first.
    let (s, long) = env
        .send(
            Method::POST,
            "/api/v1/packet/sessions",
            Some(json!({"destination": "127.0.0.1", "port": port, "duration_ms": 600_000, "rate_pps": 100})),
        )
        .await;
    assert_eq!(s, 201, "{long}");
    let long_id = long["id"].as_u64().unwrap();
    let (s, v) = env
        .send(Method::POST, "/api/v1/packet/sessions", Some(good.clone()))
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"], "too_many_sessions", "{v}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, stopped) = env
        .send(
            Method::POST,
            &format!("/api/v1/packet/sessions/{long_id}/stop"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{stopped}");
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(stopped["stats"]["sent"].as_u64().unwrap() > 0, "{stopped}");
    // Watching a finished session gives its final state, then the end.
    let again = env.watch(long_id, Duration::from_secs(5)).await;
    assert_eq!(again.len(), 2, "{again:?}");
    assert_eq!(again[0].1["state"], "stopped", "{again:?}");
    assert_eq!(again[1].0, "end", "{again:?}");
    // A viewer may watch but not stop.
    let (s, v) = env
        .send_as(
            &env.viewer,
            Method::POST,
            &format!("/api/v1/packet/sessions/{long_id}/stop"),
            None,
        )
        .await;
    assert_eq!(s, 403, "{v}");

    // Bad input: a 4xx with the error body naming what was wrong.
    for (body, status, needle) in [
        (
            json!({"destination": "not-an-ip", "count": 1}),
            422,
            "destination:",
        ),
        (json!({"destination": "127.0.0.1"}), 422, "count:"),
        (
            json!({"destination": "127.0.0.1", "count": 1, "dscp": 64}),
            422,
            "dscp:",
        ),
        (
            json!({"destination": "127.0.0.1", "count": 1, "packet_size": 20}),
            422,
            "packet_size:",
        ),
        (
            json!({"destination": "127.0.0.1", "count": 1, "rate_pps": 1, "rate_bps": 1000}),
            422,
            "rate_bps:",
        ),
        (
            json!({"destination": "127.0.0.1", "count": 1, "interval": 3}),
            422,
            "interval",
        ),
        (
            json!({"destination": "127.0.0.1", "count": "many"}),
            422,
            "count",
        ),
        // Only packetd knows its max-pps.
        (
            json!({"destination": "127.0.0.1", "port": port, "count": 10, "rate_pps": 5000}),
            422,
            "max-pps",
        ),
    ] {
        let (s, v) = env
            .send(Method::POST, "/api/v1/packet/sessions", Some(body.clone()))
            .await;
        assert_eq!(s, status, "{body}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
        assert_eq!(v["status"], status, "{v}");
    }
    for (path, status) in [
        ("/api/v1/packet/sessions/abc", 400),
        ("/api/v1/packet/sessions/999999", 404),
        ("/api/v1/packet/sessions/999999/watch", 404),
        ("/api/v1/packet/sessions?limit=0", 400),
        ("/api/v1/packet/sessions?limit=1001", 400),
        ("/api/v1/packet/sessions?what=1", 400),
    ] {
        let (s, v) = env.send(Method::GET, path, None).await;
        assert_eq!(s, status, "{path}: {v}");
        assert!(v["error"].is_string(), "{path}: {v}");
    }
    let (s, v) = env
        .send(Method::POST, "/api/v1/packet/sessions/999999/stop", None)
        .await;
    assert_eq!(s, 404, "{v}");

    // Starts and stops are audited, with who and what.
    let trail: Vec<_> = env
        .running
        .api
        .store
        .audit_query(&rookery_apid::store::AuditFilter::default(), 1000, 0)
        .unwrap()
        .0
        .into_iter()
        .filter(|e| e.kind == "AUDIT" && e.action.starts_with("packet.session."))
        .collect();
    let ok_starts = trail
        .iter()
        .filter(|e| e.action == "packet.session.start" && e.result == "success")
        .count();
    assert_eq!(ok_starts, 2, "{trail:?}");
    assert!(
        trail.iter().any(|e| e.action == "packet.session.start"
            && e.result == "failure"
            && e.user == "mia"),
        "{trail:?}"
    );
    assert!(
        trail.iter().any(|e| e.action == "packet.session.stop"
            && e.result == "success"
            && e.detail.contains(&format!("session={long_id}"))),
        "{trail:?}"
    );
    assert!(
        trail
            .iter()
            .any(|e| e.detail.contains(&format!("destination=127.0.0.1:{port}"))),
        "{trail:?}"
    );
    packetd.shutdown.cancel();
}
