//! The web console served by apid over real HTTPS on loopback: files with their content
//! types, a year's cache for hashed assets, the SPA fallback to `index.html` for console
//! routes, 404 for missing assets and for a console that is not installed, the console's CSP,
//! and the API untouched. Also: `webui/openapi.json`, from which the console's types are
//! generated, is apid's OpenAPI document (set `ROOKERY_UPDATE_OPENAPI=1` to rewrite it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::{Path, PathBuf};

use rookery_apid::app::Running;
use rookery_apid::config::Config;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

struct Server {
    _dir: tempfile::TempDir,
    _running: Running,
    client: reqwest::Client,
    base: String,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(webui: impl FnOnce(&Path) -> PathBuf) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
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
    c.webui.directory = webui(d);
    let stop = CancellationToken::new();
    let running = Running::start(&c, stop.clone()).await.unwrap();
    let pem = std::fs::read(&c.tls.cert).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .resolve("localhost", running.https)
        .build()
        .unwrap();
    Server {
        base: format!("https://localhost:{}", running.https.port()),
        _dir: dir,
        _running: running,
        client,
        stop,
    }
}

const INDEX: &str = "<!doctype html><title>Rookery</title><script type=module src=/assets/index-0a1b2c.js></script>";
const SCRIPT: &str = "console.log('rookery')";

fn console_dir(d: &Path) -> PathBuf {
    let root = d.join("webui");
    std::fs::create_dir_all(root.join("assets")).unwrap();
    std::fs::write(root.join("index.html"), INDEX).unwrap();
    std::fs::write(root.join("assets/index-0a1b2c.js"), SCRIPT).unwrap();
    std::fs::write(root.join("assets/index-0a1b2c.css"), "body{}").unwrap();
    std::fs::write(root.join("favicon.svg"), "<svg/>").unwrap();
    std::fs::write(d.join("secret.txt"), "outside").unwrap();
    root
}

struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

async fn get(s: &Server, path: &str) -> Got {
    let r = s
        .client
        .get(format!("{}{path}", s.base))
        .send()
        .await
        .unwrap();
    Got {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        text: r.text().await.unwrap(),
    }
}

#[tokio::test]
async fn serves_files_with_types_caching_and_the_spa_fallback() {
    let s = start(console_dir).await;

    for path in ["/", "/index.html", "/probes", "/config/licensed", "/assets"] {
        let r = get(&s, path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(r.text, INDEX, "{path}");
        assert_eq!(
            r.header("content-type"),
            "text/html; charset=utf-8",
            "{path}"
        );
        assert_eq!(r.header("cache-control"), "no-cache", "{path}");
        let csp = r.header("content-security-policy");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(r.header("x-content-type-options"), "nosniff");
        assert_eq!(r.header("x-frame-options"), "DENY");
    }

    let r = get(&s, "/assets/index-0a1b2c.js").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text, SCRIPT);
    assert_eq!(r.header("content-type"), "text/javascript; charset=utf-8");
    assert_eq!(
        r.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    let r = get(&s, "/assets/index-0a1b2c.css").await;
    assert_eq!(r.header("content-type"), "text/css; charset=utf-8");
    let r = get(&s, "/favicon.svg").await;
    assert_eq!(r.header("content-type"), "image/svg+xml");
    assert_eq!(r.header("cache-control"), "no-cache");

    // A missing asset is a 404 with the error body, not the index page.
    let r = get(&s, "/assets/index-old.js").await;
    assert_eq!(r.status, 404, "{}", r.text);
    let v: Value = serde_json::from_str(&r.text).unwrap();
    assert_eq!(v["error"], "not_found");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("/assets/index-old.js")
    );

    // Nothing outside the directory, and no hidden files.
    for path in [
        "/../secret.txt",
        "/assets/../../secret.txt",
        "/%2e%2e/secret.txt",
    ] {
        let r = get(&s, path).await;
        assert!(!r.text.contains("outside"), "{path}: {}", r.text);
    }

    // Files are only read.
    let r = s
        .client
        .post(format!("{}/probes", s.base))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    // The API keeps its own answers, CSP and no-store.
    let r = get(&s, "/api/v1/nope").await;
    assert_eq!(r.status, 404);
    let v: Value = serde_json::from_str(&r.text).unwrap();
    assert_eq!(v["message"], "no such route");
    assert_eq!(
        r.header("content-security-policy"),
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert_eq!(r.header("cache-control"), "no-store");
    let r = get(&s, "/api/v1/system").await;
    assert_eq!(r.status, 401);
    let r = get(&s, "/api/v1/openapi.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/json");
}

#[tokio::test]
async fn a_console_that_is_not_installed_is_a_clear_404() {
    let s = start(|d| d.join("no-such-dir")).await;
    let r = get(&s, "/").await;
    assert_eq!(r.status, 404, "{}", r.text);
    let v: Value = serde_json::from_str(&r.text).unwrap();
    assert_eq!(v["error"], "not_found");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("web console is not installed"), "{msg}");
    assert!(msg.contains("no-such-dir/index.html"), "{msg}");
    // The API works without it.
    assert_eq!(get(&s, "/api/v1/openapi.json").await.status, 200);
}

/// The console's TypeScript types are generated from `webui/openapi.json`; this keeps that
/// file equal to the document apid serves (the version in `info` aside).
#[test]
fn webui_openapi_json_is_apids_document() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../webui/openapi.json");
    let mut doc = serde_json::to_value(rookery_apid::api::openapi::document()).unwrap();
    if std::env::var_os("ROOKERY_UPDATE_OPENAPI").is_some() {
        let text = serde_json::to_string_pretty(&doc).unwrap();
        std::fs::write(&file, text + "\n").unwrap();
    }
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run ROOKERY_UPDATE_OPENAPI=1 cargo test -p rookery-apid --test webui_apid",
            file.display()
        )
    });
    let mut committed: Value = serde_json::from_str(&text).unwrap();
    doc["info"]["version"] = Value::Null;
    committed["info"]["version"] = Value::Null;
    assert!(
        doc == committed,
        "webui/openapi.json is stale: run ROOKERY_UPDATE_OPENAPI=1 cargo test -p rookery-apid \
         --test webui_apid, then npm run gen:api in webui/"
    );
}
