//! apid over real HTTPS on loopback: the error body and headers everywhere, the redirect,
//! the first-boot admin, login/lockout/refresh/logout, user management, the RBAC matrix of
//! every route in the table, and the audit trail with its export.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::net::SocketAddr;
use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use rookery_apid::api::{Access, ROUTES, now};
use rookery_apid::app::Running;
use rookery_apid::config::Config;
use rookery_apid::crypto::{self, Claims};
use rookery_apid::store::Role;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ADMIN_PW: &str = "first-boot-Secret-42";
const GOOD_PW: &str = "a-much-better-passphrase-7";

struct Server {
    _dir: tempfile::TempDir,
    running: Running,
    client: reqwest::Client,
    base: String,
    stop: CancellationToken,
    key: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.http.redirect_listen = "127.0.0.1:0".parse().unwrap();
    c.http.body_limit = 4096;
    c.tls.cert = dir.join("tls/apid.crt");
    c.tls.key = dir.join("tls/apid.key");
    c.auth.signing_key = dir.join("state/token-signing.key");
    c.auth.initial_admin = dir.join("initial-admin");
    c.auth.lockout_threshold = 3;
    c.auth.lockout_base = std::time::Duration::from_secs(60);
    c.state.directory = dir.join("state");
    c.daemons.run_dir = dir.join("run");
    c.daemons.config_dir = dir.join("etc");
    c
}

async fn start_with(initial_admin: Option<&str>, tweak: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    if let Some(text) = initial_admin {
        std::fs::write(dir.path().join("initial-admin"), text).unwrap();
    }
    let mut cfg = config(dir.path());
    tweak(&mut cfg);
    let stop = CancellationToken::new();
    let running = Running::start(&cfg, stop.clone()).await.unwrap();
    let pem = std::fs::read(&cfg.tls.cert).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .resolve("localhost", running.https)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Server {
        base: format!("https://localhost:{}", running.https.port()),
        key: cfg.auth.signing_key.clone(),
        _dir: dir,
        running,
        client,
        stop,
    }
}

async fn start() -> Server {
    start_with(Some(&format!("{ADMIN_PW}\n")), |_| {}).await
}

struct Resp {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    /// Asserts the DESIGN.md error shape and returns the code.
    fn error(&self) -> String {
        let v = self.json();
        let o = v.as_object().unwrap_or_else(|| panic!("{}", self.text));
        let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["correlation_id", "error", "message", "status", "timestamp"],
            "{}",
            self.text
        );
        assert_eq!(v["status"], self.status.as_u16(), "{}", self.text);
        assert!(
            chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).is_ok(),
            "{}",
            self.text
        );
        assert_eq!(
            self.headers["x-request-id"].to_str().unwrap(),
            v["correlation_id"].as_str().unwrap(),
            "x-request-id and correlation_id agree"
        );
        assert!(!v["message"].as_str().unwrap().is_empty());
        assert!(self.status.is_client_error() || self.status == StatusCode::SERVICE_UNAVAILABLE);
        v["error"].as_str().unwrap().to_owned()
    }
}

impl Server {
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        Resp {
            status: r.status(),
            headers: r.headers().clone(),
            text: r.text().await.unwrap(),
        }
    }

    async fn login(&self, user: &str, pw: &str) -> Resp {
        self.send(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": user, "password": pw})),
        )
        .await
    }

    async fn token(&self, user: &str, pw: &str) -> String {
        let r = self.login(user, pw).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()["access_token"].as_str().unwrap().to_owned()
    }

    /// Adds a user directly in the store (no password change required).
    fn add_user(&self, name: &str, role: Role) {
        self.running
            .api
            .store
            .create_user(name, &crypto::hash_password(GOOD_PW), role, false, now())
            .unwrap()
            .unwrap();
    }

    /// An admin who already changed the first-boot password.
    async fn admin_token(&self) -> String {
        let first = self.token("admin", ADMIN_PW).await;
        let r = self
            .send(
                Method::POST,
                "/api/v1/auth/change-password",
                Some(&first),
                Some(json!({"current_password": ADMIN_PW, "new_password": GOOD_PW})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()["access_token"].as_str().unwrap().to_owned()
    }

    fn expired_token(&self, user: &str) -> String {
        let key = std::fs::read(&self.key).unwrap();
        let u = self.running.api.store.user_by_name(user).unwrap().unwrap();
        crypto::sign_token(
            &key,
            &Claims {
                sub: u.id,
                name: u.username,
                r#gen: u.token_generation,
                iat: now() - 3600,
                exp: now() - 60,
            },
        )
    }

    async fn audit(&self, token: &str, query: &str) -> Vec<Value> {
        let r = self
            .send(
                Method::GET,
                &format!("/api/v1/audit?{query}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()["items"].as_array().unwrap().clone()
    }
}

#[tokio::test]
async fn errors_have_the_design_shape_ids_and_security_headers() {
    let s = start().await;
    let r = s.send(Method::GET, "/api/v1/nope", None, None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error(), "not_found");
    for h in [
        "strict-transport-security",
        "x-content-type-options",
        "x-frame-options",
        "content-security-policy",
        "referrer-policy",
    ] {
        assert!(r.headers.contains_key(h), "{h} missing");
    }

    // A sane incoming request ID is kept; a hostile one is replaced.
    let r = s
        .client
        .get(format!("{}/api/v1/system", s.base))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["correlation_id"], "trace-42");
    assert_eq!(v["error"], "missing_token");
    let r = s
        .client
        .get(format!("{}/api/v1/system", s.base))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["correlation_id"].as_str().unwrap().len(), 32);

    // Bad input is always a 4xx with the error body.
    let login = format!("{}/api/v1/auth/login", s.base);
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            s.client
                .post(&login)
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "bad_request",
        ),
        (
            s.client.post(&login).body("{}"),
            415,
            "unsupported_media_type",
        ),
        (
            s.client.post(&login).json(&json!({"username": "x"})),
            422,
            "invalid_body",
        ),
        (
            s.client
                .post(&login)
                .json(&json!({"username": "x", "password": "y", "extra": 1})),
            422,
            "invalid_body",
        ),
        (
            s.client
                .post(&login)
                .header("content-type", "application/json")
                .body(format!("{{\"username\":\"{}\"}}", "x".repeat(8192))),
            413,
            "payload_too_large",
        ),
        (s.client.delete(&login), 405, "method_not_allowed"),
        (
            s.client.get(format!("{}/api/v1/audit?limit=abc", s.base)),
            401,
            "missing_token",
        ),
    ];
    for (req, status, code) in cases {
        let r = req.send().await.unwrap();
        let resp = Resp {
            status: r.status(),
            headers: r.headers().clone(),
            text: r.text().await.unwrap(),
        };
        assert_eq!(resp.status, status, "{}", resp.text);
        assert_eq!(resp.error(), code, "{}", resp.text);
    }

    // CORS stays closed: a preflight gets no Access-Control-* header.
    let r = s
        .client
        .request(Method::OPTIONS, &login)
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    assert!(
        !r.headers()
            .keys()
            .any(|k| k.as_str().starts_with("access-control-")),
        "{:?}",
        r.headers()
    );
}

#[tokio::test]
async fn plain_http_redirects_to_https() {
    let s = start().await;
    let http: SocketAddr = s.running.http.unwrap();
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /api/v1/system?x=1 HTTP/1.1\r\nHost: probe.example:80\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 308"), "{out}");
    let want = format!(
        "location: https://probe.example:{}/api/v1/system?x=1",
        s.running.https.port()
    );
    assert!(out.to_lowercase().contains(&want), "{out}");
}

#[tokio::test]
async fn first_boot_admin_must_change_the_password_first() {
    let s = start_with(
        Some(&format!("username=admin\npassword={ADMIN_PW}\n")),
        |_| {},
    )
    .await;
    let r = s.login("admin", ADMIN_PW).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["must_change_password"], true);
    let first = r.json()["access_token"].as_str().unwrap().to_owned();
    for (m, p) in [
        (Method::GET, "/api/v1/system"),
        (Method::GET, "/api/v1/users"),
        (Method::GET, "/api/v1/auth/me"),
    ] {
        let r = s.send(m, p, Some(&first), None).await;
        assert_eq!(r.status, 403, "{p}: {}", r.text);
        assert_eq!(r.error(), "password_change_required");
    }
    let change = |cur: &str, new: &str| json!({"current_password": cur, "new_password": new});
    let r = s
        .send(
            Method::POST,
            "/api/v1/auth/change-password",
            Some(&first),
            Some(change(ADMIN_PW, "short")),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.error(), "weak_password");
    let r = s
        .send(
            Method::POST,
            "/api/v1/auth/change-password",
            Some(&first),
            Some(change("wrong-one-xx", GOOD_PW)),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.error(), "invalid_credentials");
    let r = s
        .send(
            Method::POST,
            "/api/v1/auth/change-password",
            Some(&first),
            Some(change(ADMIN_PW, GOOD_PW)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["must_change_password"], false);
    let fresh = r.json()["access_token"].as_str().unwrap().to_owned();
    // The token issued before the change is void; the new one works.
    let r = s
        .send(Method::GET, "/api/v1/system", Some(&first), None)
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error(), "invalid_token");
    let r = s
        .send(Method::GET, "/api/v1/system", Some(&fresh), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["version"], rookery_common::VERSION);
    // The one-time password is gone.
    assert_eq!(s.login("admin", ADMIN_PW).await.status, 401);
    let trail = s.audit(&fresh, "action=password.change").await;
    assert_eq!(trail.len(), 2, "{trail:?}");
    assert_eq!(trail[0]["result"], "success");
    assert_eq!(trail[1]["result"], "failure");
}

#[tokio::test]
async fn without_the_file_there_is_no_user_and_no_default_password() {
    let s = start_with(None, |_| {}).await;
    assert_eq!(s.running.api.store.user_count().unwrap(), 0);
    for pw in ["admin", "rookery", "password", ""] {
        let r = s.login("admin", pw).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.error(), "invalid_credentials");
    }
}

#[tokio::test]
async fn lockout_backs_off_and_is_audited() {
    let s = start().await;
    let admin = s.admin_token().await;
    s.add_user("ann", Role::Viewer);
    for _ in 0..3 {
        let r = s.login("ann", "wrong-password-1").await;
        assert_eq!(r.status, 401);
        assert_eq!(r.error(), "invalid_credentials");
    }
    // Locked now, even with the right password; Retry-After says for how long.
    let r = s.login("ann", GOOD_PW).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.error(), "account_locked");
    let wait: i64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((55..=60).contains(&wait), "{wait}");
    // Another account is unaffected; an unknown user is a plain 401.
    s.add_user("bob", Role::Viewer);
    assert_eq!(s.login("bob", GOOD_PW).await.status, 200);
    assert_eq!(s.login("nobody", GOOD_PW).await.status, 401);
    // The next failure doubles the lock (checked in the store, where the clock is a parameter).
    let trail = s.audit(&admin, "user=ann&kind=auth").await;
    let results: Vec<(&str, &str)> = trail
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        results,
        [
            ("login", "failure"),
            ("lockout", "locked"),
            ("login", "failure"),
            ("login", "failure"),
            ("login", "failure"),
        ]
    );
    assert!(
        trail[0]["detail"]
            .as_str()
            .unwrap()
            .contains("reason=locked")
    );
    assert!(!trail[0]["source"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn refresh_rotates_reuse_revokes_and_logout_ends_the_session() {
    let s = start().await;
    let admin = s.admin_token().await;
    s.add_user("ann", Role::Viewer);
    let r = s.login("ann", GOOD_PW).await;
    let r1 = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |t: &str| json!({"refresh_token": t});
    let r = s
        .send(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(refresh(&r1)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r2 = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let access = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    assert_eq!(
        s.send(Method::GET, "/api/v1/auth/me", Some(&access), None)
            .await
            .json()["username"],
        "ann"
    );
    // r1 again: theft signal, the whole family (r2 too) is revoked.
    let r = s
        .send(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(refresh(&r1)),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error(), "invalid_token");
    let r = s
        .send(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(refresh(&r2)),
        )
        .await;
    assert_eq!(r.status, 401);
    // Logout revokes a fresh session.
    let r3 = s.login("ann", GOOD_PW).await.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .send(
            Method::POST,
            "/api/v1/auth/logout",
            None,
            Some(refresh(&r3)),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = s
        .send(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(refresh(&r3)),
        )
        .await;
    assert_eq!(r.status, 401);
    let trail = s.audit(&admin, "user=ann&action=refresh").await;
    let results: Vec<&str> = trail
        .iter()
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["failure", "failure", "failure", "success"]);
    assert!(trail[2]["detail"].as_str().unwrap().contains("reused"));
}

#[tokio::test]
async fn users_crud_with_policy_and_last_admin_guard() {
    let s = start().await;
    let admin = s.admin_token().await;
    let create =
        |name: &str, pw: &str, role: &str| json!({"username": name, "password": pw, "role": role});
    let r = s
        .send(
            Method::POST,
            "/api/v1/users",
            Some(&admin),
            Some(create("carl", GOOD_PW, "maintainer")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["role"], "maintainer");
    assert_eq!(r.json()["must_change_password"], true);
    assert!(!r.text.contains("argon2"), "hash leaked: {}", r.text);
    for (body, status, code) in [
        (create("carl", GOOD_PW, "viewer"), 409, "conflict"),
        (create("Carl!", GOOD_PW, "viewer"), 422, "invalid_username"),
        (
            create("dora", "dora-dora-dora-1", "viewer"),
            422,
            "weak_password",
        ),
        (create("dora", GOOD_PW, "root"), 422, "invalid_body"),
    ] {
        let r = s
            .send(Method::POST, "/api/v1/users", Some(&admin), Some(body))
            .await;
        assert_eq!(r.status, status, "{}", r.text);
        assert_eq!(r.error(), code);
    }
    let r = s
        .send(Method::GET, "/api/v1/users", Some(&admin), None)
        .await;
    let names: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["admin", "carl"]);
    // carl changes his password, then loses write role: his token is void at once.
    let carl = s.token("carl", GOOD_PW).await;
    let r = s
        .send(
            Method::POST,
            "/api/v1/auth/change-password",
            Some(&carl),
            Some(json!({"current_password": GOOD_PW, "new_password": "my-own-passphrase-9x"})),
        )
        .await;
    let carl = r.json()["access_token"].as_str().unwrap().to_owned();
    let r = s
        .send(
            Method::PATCH,
            "/api/v1/users/carl",
            Some(&admin),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["role"], "viewer");
    assert_eq!(
        s.send(Method::GET, "/api/v1/system", Some(&carl), None)
            .await
            .status,
        401
    );
    let r = s
        .send(
            Method::PATCH,
            "/api/v1/users/carl",
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 422);
    let r = s
        .send(
            Method::PATCH,
            "/api/v1/users/admin",
            Some(&admin),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error(), "last_admin");
    let r = s
        .send(Method::DELETE, "/api/v1/users/admin", Some(&admin), None)
        .await;
    assert_eq!(r.error(), "last_admin");
    let r = s
        .send(Method::DELETE, "/api/v1/users/carl", Some(&admin), None)
        .await;
    assert_eq!(r.status, 204);
    let r = s
        .send(Method::GET, "/api/v1/users/carl", Some(&admin), None)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error(), "not_found");
    let trail = s.audit(&admin, "kind=audit&user=admin").await;
    let actions: Vec<&str> = trail
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "user.delete",
            "user.role.set",
            "user.create",
            "password.change"
        ]
    );
    assert!(trail[0]["detail"].as_str().unwrap().contains("target=carl"));
}

fn sample_body(method: &Method, path: &str) -> Option<Value> {
    match (method.as_str(), path) {
        ("POST", "/api/v1/auth/login" | "/api/v1/auth/session") => {
            Some(json!({"username": "nobody", "password": "x"}))
        }
        ("POST", "/api/v1/auth/refresh" | "/api/v1/auth/logout") => {
            Some(json!({"refresh_token": "x"}))
        }
        ("POST", "/api/v1/auth/change-password") => {
            Some(json!({"current_password": "wrong-xxxxxxx", "new_password": GOOD_PW}))
        }
        ("POST", "/api/v1/users") => {
            Some(json!({"username": "newbie", "password": GOOD_PW, "role": "viewer"}))
        }
        ("PATCH", _) => Some(json!({"role": "viewer"})),
        ("POST", "/api/v1/auth/totp/verify") => Some(json!({"code": "000000"})),
        ("POST", "/api/v1/auth/totp/disable") => Some(json!({"password": "wrong-password"})),
        ("PUT", "/api/v1/config/{daemon}") => Some(json!({"text": ""})),
        ("POST", "/api/v1/config/{daemon}/rollback") => Some(json!({"history_id": 1})),
        ("PUT", "/api/v1/licence/key") => Some(json!({"key": "PENG-0000-0000-0000-0000-0000"})),
        ("POST", "/api/v1/api-keys") => Some(json!({"name": "ci", "role": "viewer"})),
        ("POST", "/api/v1/probes/run") => Some(json!({"target": "web"})),
        ("POST", "/api/v1/packet/sessions") => {
            Some(json!({"destination": "192.0.2.1", "count": 10}))
        }
        _ => None,
    }
}

#[tokio::test]
async fn rbac_matrix_every_route_every_role_anonymous_and_expired() {
    let s = start().await;
    let admin = s.admin_token().await;
    s.add_user("mia", Role::Maintainer);
    s.add_user("vic", Role::Viewer);
    let maintainer = s.token("mia", GOOD_PW).await;
    let viewer = s.token("vic", GOOD_PW).await;
    let expired = s.expired_token("admin");
    let callers: [(&str, Option<&str>, Option<Role>); 5] = [
        ("anonymous", None, None),
        ("expired", Some(&expired), None),
        ("viewer", Some(&viewer), Some(Role::Viewer)),
        ("maintainer", Some(&maintainer), Some(Role::Maintainer)),
        ("admin", Some(&admin), Some(Role::Admin)),
    ];
    let mut checked = 0;
    for (method, path, access) in ROUTES {
        // `{name}` routes target a user that does not exist, so nothing is changed.
        let url = path
            .replace("{name}", "nobody")
            .replace("{id}", "999999")
            .replace("{daemon}", "licensed");
        for (who, token, role) in &callers {
            let r = s
                .send(method.clone(), &url, *token, sample_body(method, path))
                .await;
            let what = format!("{method} {path} as {who}: {} {}", r.status, r.text);
            // No daemon runs here: their routes may only answer 503 daemon_unavailable.
            assert!(
                r.status.as_u16() < 500 || r.text.contains("\"daemon_unavailable\""),
                "{what}"
            );
            assert_ne!(r.status, 405, "{what}");
            if r.status.is_client_error() {
                let code = r.error();
                assert!(
                    code != "not_found"
                        || r.text.contains("no user")
                        || r.text.contains("no API key")
                        || r.text.contains("no history entry"),
                    "{what}"
                );
            }
            match (access, role) {
                (Access::Public, _) => {
                    let code = if r.text.is_empty() {
                        String::new()
                    } else {
                        r.json()["error"].as_str().unwrap_or("").to_owned()
                    };
                    assert!(
                        !["missing_token", "token_expired", "forbidden"].contains(&code.as_str()),
                        "{what}"
                    );
                }
                (Access::Min(_), None) => {
                    assert_eq!(r.status, 401, "{what}");
                    let want = if *who == "expired" {
                        "token_expired"
                    } else {
                        "missing_token"
                    };
                    assert_eq!(r.json()["error"], want, "{what}");
                }
                (Access::Min(min), Some(role)) if role < min => {
                    assert_eq!(r.status, 403, "{what}");
                    assert_eq!(r.json()["error"], "forbidden", "{what}");
                }
                (Access::Min(_), Some(_)) => {
                    // Allowed through: any refusal is the handler's (wrong password), not RBAC's.
                    assert_ne!(r.status, 401, "{what}");
                    if r.status == 403 {
                        assert_eq!(r.json()["error"], "invalid_credentials", "{what}");
                    }
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUTES.len() * 5);
    // HEAD follows GET's rule.
    assert_eq!(
        s.send(Method::HEAD, "/api/v1/users", Some(&viewer), None)
            .await
            .status,
        403
    );
    assert_eq!(
        s.send(Method::HEAD, "/api/v1/users", Some(&admin), None)
            .await
            .status,
        200
    );
    let denied = s.audit(&admin, "kind=authz&result=denied&limit=1000").await;
    assert!(
        denied
            .iter()
            .any(|e| e["user"] == "vic" && e["action"] == "GET /api/v1/users"),
        "{denied:?}"
    );
}

#[tokio::test]
async fn audit_query_pages_filters_and_exports() {
    let s = start().await;
    let admin = s.admin_token().await;
    for _ in 0..3 {
        s.login("ghost", "whatever-pass").await;
    }
    let r = s
        .send(
            Method::GET,
            "/api/v1/audit?user=ghost&limit=2&offset=1",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["total"], 3);
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    for bad in [
        "limit=0",
        "limit=5000",
        "offset=-1",
        "since=yesterday",
        "bogus=1",
        "format=csv",
    ] {
        let r = s
            .send(
                Method::GET,
                &format!("/api/v1/audit?{bad}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert_eq!(r.error(), "invalid_query");
    }
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let r = s
        .client
        .get(format!("{}/api/v1/audit/export", s.base))
        .query(&[
            ("format", "csv"),
            ("user", "ghost"),
            ("since", since.as_str()),
        ])
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "id,ts,kind,user,action,result,source,detail");
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[1].contains(",AUTH,ghost,login,failure,"), "{csv}");
    let r = s
        .send(
            Method::GET,
            "/api/v1/audit/export?format=json&user=ghost",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.json().as_array().unwrap().len(), 3);
    let r = s
        .send(
            Method::GET,
            "/api/v1/audit/export?format=xml",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn api_key_lifecycle_prefix_role_cap_expiry_last_use_and_revocation() {
    let s = start().await;
    let admin = s.admin_token().await;
    s.add_user("mia", Role::Maintainer);
    let mia = s.token("mia", GOOD_PW).await;
    let r = s
        .send(
            Method::POST,
            "/api/v1/api-keys",
            Some(&mia),
            Some(json!({"name": "ci", "role": "admin"})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.error(), "forbidden");
    let r = s
        .send(
            Method::POST,
            "/api/v1/api-keys",
            Some(&mia),
            Some(json!({"name": "ci", "role": "maintainer", "expires_in_days": 30})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let created = r.json();
    let key = created["key"].as_str().unwrap().to_owned();
    let prefix = created["prefix"].as_str().unwrap();
    assert!(key.starts_with(&format!("rk_{prefix}_")), "{key}");
    assert!(created["expires_at"].is_string());
    assert!(created["last_used_at"].is_null());
    // The key works as a bearer credential, with the maintainer role (not admin routes).
    let r = s
        .send(Method::GET, "/api/v1/system", Some(&key), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.send(Method::GET, "/api/v1/users", Some(&key), None).await;
    assert_eq!(r.status, 403);
    // A key cannot mint keys or change its owner's password.
    let r = s
        .send(
            Method::POST,
            "/api/v1/api-keys",
            Some(&key),
            Some(json!({"name": "x", "role": "viewer"})),
        )
        .await;
    assert_eq!(r.status, 403);
    // Listing shows the prefix and last use, never the key or its hash.
    let r = s
        .send(Method::GET, "/api/v1/api-keys", Some(&mia), None)
        .await;
    assert!(!r.text.contains(&key[12..]), "{}", r.text);
    let listed = &r.json()[0];
    assert_eq!(listed["prefix"], prefix);
    assert_eq!(listed["owner"], "mia");
    assert!(listed["last_used_at"].is_string(), "{}", r.text);
    // The owner's role caps the key: demote mia, the key becomes a viewer.
    let r = s
        .send(
            Method::PATCH,
            "/api/v1/users/mia",
            Some(&admin),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .send(Method::POST, "/api/v1/auth/totp/enrol", Some(&key), None)
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    // Revoke: the admin can, the key stops working at once.
    let id = created["id"].as_i64().unwrap();
    let r = s
        .send(
            Method::DELETE,
            &format!("/api/v1/api-keys/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s
        .send(Method::GET, "/api/v1/system", Some(&key), None)
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error(), "invalid_api_key");
    // Expired keys are refused too.
    let u = s.running.api.store.user_by_name("admin").unwrap().unwrap();
    let old = "rk_deadbeef_expired";
    s.running
        .api
        .store
        .add_api_key(
            u.id,
            "old",
            "deadbeef",
            &crypto::sha256_hex(old),
            Role::Admin,
            now() - 100,
            now() - 1,
        )
        .unwrap();
    assert_eq!(
        s.send(Method::GET, "/api/v1/system", Some(old), None)
            .await
            .status,
        401
    );
    let trail = s.audit(&admin, "kind=audit&action=api_key.create").await;
    assert_eq!(trail.len(), 1);
    assert!(trail[0]["detail"].as_str().unwrap().contains(prefix));
    assert_eq!(s.audit(&admin, "action=api_key.revoke").await.len(), 1);
}

#[tokio::test]
async fn browser_session_cookie_needs_csrf_for_changes() {
    let s = start().await;
    let admin = s.admin_token().await;
    let _ = admin;
    let r = s
        .client
        .post(format!("{}/api/v1/auth/session", s.base))
        .json(&json!({"username": "admin", "password": GOOD_PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/api/v1"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let v: Value = r.json().await.unwrap();
    let csrf = v["csrf_token"].as_str().unwrap().to_owned();
    let with_cookie = |m: Method, p: &str| {
        s.client
            .request(m, format!("{}{p}", s.base))
            .header("cookie", cookie.clone())
    };
    // Reads need only the cookie.
    let r = with_cookie(Method::GET, "/api/v1/users")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Changes without (or with a wrong) CSRF token are refused.
    let body = json!({"username": "newbie", "password": GOOD_PW, "role": "viewer"});
    for token in [None, Some("0000")] {
        let mut req = with_cookie(Method::POST, "/api/v1/users").json(&body);
        if let Some(t) = token {
            req = req.header("x-csrf-token", t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "csrf_failed");
    }
    let r = with_cookie(Method::POST, "/api/v1/users")
        .header("x-csrf-token", &csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Logout clears the cookie and ends the session.
    let r = with_cookie(Method::DELETE, "/api/v1/auth/session")
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let r = with_cookie(Method::GET, "/api/v1/users")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_session");
    let denied = s.audit(&admin, "kind=authz").await;
    assert_eq!(
        denied
            .iter()
            .filter(|e| e["detail"] == "reason=csrf")
            .count(),
        2,
        "{denied:?}"
    );
}

#[tokio::test]
async fn totp_enrol_verify_login_replay_recovery_and_disable() {
    let s = start().await;
    let admin = s.admin_token().await;
    s.add_user("ann", Role::Viewer);
    let ann = s.token("ann", GOOD_PW).await;
    let r = s
        .send(
            Method::POST,
            "/api/v1/auth/totp/verify",
            Some(&ann),
            Some(json!({"code": "123456"})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    let r = s
        .send(Method::POST, "/api/v1/auth/totp/enrol", Some(&ann), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let e = r.json();
    let secret = crypto::base32_decode(e["secret"].as_str().unwrap()).unwrap();
    assert!(
        e["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/Rookery:ann?secret=")
    );
    let code_at = |step: i64| format!("{:06}", crypto::totp(&secret, step));
    let step = now() / 30;
    let r = s
        .send(
            Method::POST,
            "/api/v1/auth/totp/verify",
            Some(&ann),
            Some(json!({"code": code_at(step + 5)})),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.error(), "invalid_totp");
    // Enabled with the code one step back; the current step is then still usable once.
    let r = s
        .send(
            Method::POST,
            "/api/v1/auth/totp/verify",
            Some(&ann),
            Some(json!({"code": code_at(step - 1)})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let codes: Vec<String> = r.json()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    // Password alone no longer logs in.
    let r = s.login("ann", GOOD_PW).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error(), "totp_required");
    let login = |extra: Value| {
        let mut body = json!({"username": "ann", "password": GOOD_PW});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        s.send(Method::POST, "/api/v1/auth/login", None, Some(body))
    };
    let r = login(json!({"totp_code": "000000"})).await;
    assert_eq!(r.status, 401);
    let r = login(json!({"totp_code": code_at(step)})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The same code again is a replay.
    let r = login(json!({"totp_code": code_at(step)})).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error(), "invalid_totp");
    // A recovery code works once (dashes and case do not matter).
    let r = login(json!({"recovery_code": codes[0].to_uppercase()})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ann = r.json()["access_token"].as_str().unwrap().to_owned();
    let r = login(json!({"recovery_code": codes[0].clone()})).await;
    assert_eq!(r.status, 401);
    // Disable needs the password.
    let r = s
        .send(
            Method::POST,
            "/api/v1/auth/totp/disable",
            Some(&ann),
            Some(json!({"password": "nope"})),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = s
        .send(
            Method::POST,
            "/api/v1/auth/totp/disable",
            Some(&ann),
            Some(json!({"password": GOOD_PW})),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(s.login("ann", GOOD_PW).await.status, 200);
    let trail = s.audit(&admin, "user=ann&kind=audit").await;
    let actions: Vec<(&str, &str)> = trail
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("totp.disable", "success"),
            ("totp.disable", "failure"),
            ("totp.enable", "success"),
            ("totp.enable", "failure"),
        ]
    );
}

#[tokio::test]
async fn openapi_document_covers_every_route_in_the_table() {
    let s = start_with(None, |_| {}).await;
    let r = s
        .send(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    assert_eq!(doc["info"]["version"], rookery_common::VERSION);
    for (method, path, access) in ROUTES {
        let op = &doc["paths"][*path][method.as_str().to_lowercase()];
        assert!(op.is_object(), "{method} {path} missing from the document");
        assert!(op["responses"]["400"].is_object(), "{method} {path}");
        match access {
            Access::Public => assert!(op["security"].is_null(), "{method} {path}"),
            Access::Min(_) => assert_eq!(
                op["security"].as_array().unwrap().len(),
                2,
                "{method} {path}"
            ),
        }
        if let Some(body) =
            op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
        {
            let name = body.trim_start_matches("#/components/schemas/");
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{name} not in components"
            );
        }
        for seg in path.split('/').filter(|s| s.starts_with('{')) {
            let name = seg.trim_matches(['{', '}']);
            assert!(
                op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == name && p["in"] == "path"),
                "{method} {path}: parameter {name}"
            );
        }
    }
    let login = &doc["components"]["schemas"]["LoginRequest"];
    let mut required: Vec<&str> = login["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort_unstable();
    assert_eq!(required, ["password", "username"], "{login}");
    assert_eq!(
        doc["components"]["schemas"]["Role"]["enum"],
        json!(["viewer", "maintainer", "admin"])
    );
    assert!(doc["components"]["securitySchemes"]["session"].is_object());
}

#[tokio::test]
async fn one_address_is_throttled_after_too_many_failures() {
    let s = start_with(Some(&format!("{ADMIN_PW}\n")), |c| {
        c.auth.ip_failure_limit = 3
    })
    .await;
    for user in ["x1", "x2", "x3"] {
        assert_eq!(s.login(user, "nope-nope-nope").await.status, 401);
    }
    // Even the right password waits now: the address, not the account, is throttled.
    let r = s.login("admin", ADMIN_PW).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.error(), "too_many_attempts");
    let u = s.running.api.store.user_by_name("admin").unwrap().unwrap();
    assert_eq!(u.failed_logins, 0, "the account itself is not charged");
}
