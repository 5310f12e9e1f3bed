//! apid through the shared runner: `check-config` of the real binary (exit 78 with
//! file:line:col), then the daemon run in-process: HTTPS answers, `Admin.Status` on apid's own
//! socket describes it, and shutdown drains and returns.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rookery_common::config::Sources;
use rookery_common::daemon::Control;
use rookery_common::proto::StatusRequest;
use rookery_common::proto::admin_client::AdminClient;

const BIN: &str = env!("CARGO_BIN_EXE_rookery-apid");

fn base(dir: &Path, port: u16) -> String {
    let p = |s: &str| dir.join(s).display().to_string();
    format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\nredirect = false\n\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n\
         [auth]\nsigning-key = \"{}\"\ninitial-admin = \"{}\"\n\n[daemons]\nrun-dir = \"{}\"\nconfig-dir = \"{}\"\n\n\
         [grpc]\nsocket = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[state]\ndirectory = \"{}\"\n",
        p("tls/apid.crt"),
        p("tls/apid.key"),
        p("state/key"),
        p("initial-admin"),
        p("run"),
        p("etc"),
        p("run/apid.sock"),
        p("state"),
    )
}

#[test]
fn check_config_reports_line_and_column_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apid.toml");
    std::fs::write(
        &file,
        base(dir.path(), 0).replace("[auth]\n", "[auth]\nlockout-threshold = \"five\"\n"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(78), "{stdout}");
    assert!(
        stdout.starts_with(&format!(
            "{}:10:21: auth.lockout-threshold: invalid type",
            file.display()
        )),
        "{stdout}"
    );
    std::fs::write(&file, base(dir.path(), 0)).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_under_the_shared_runner_and_drains_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    // A free port for HTTPS (the runner does not report the bound address).
    let port = rookery_pgtest::free_port();
    let mport = rookery_pgtest::free_port();
    let file = dir.path().join("apid.toml");
    std::fs::write(
        &file,
        base(dir.path(), port).replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{mport}\""),
        ),
    )
    .unwrap();
    let control = Control::default();
    let task = tokio::spawn(rookery_apid::app::run(
        Sources::new("apid", Some(&file), Vec::new()),
        control.clone(),
    ));
    let socket = dir.path().join("run/apid.sock");
    let mut channel = None;
    for _ in 0..200 {
        if let Ok(ch) = rookery_common::grpc::connect(&socket).await {
            channel = Some(ch);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = AdminClient::new(channel.expect("apid's socket answers"))
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.daemon, "apid");
    assert_eq!(status.state, "ready");
    assert!(
        status.status_text.contains("serving https on 127.0.0.1:"),
        "{}",
        status.status_text
    );
    // A fresh state: a generated certificate and signing key, no users (no initial-admin file).
    assert!(dir.path().join("tls/apid.key").exists());
    assert_eq!(
        std::fs::read(dir.path().join("state/key")).unwrap().len(),
        32
    );
    assert!(
        status.status_text.contains("0 users"),
        "{}",
        status.status_text
    );

    let pem = std::fs::read(dir.path().join("tls/apid.crt")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let r = client
        .get(format!("https://localhost:{port}/api/v1/system"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(format!("https://localhost:{port}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": "nobody", "password": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let metrics = reqwest::get(format!("http://127.0.0.1:{mport}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "rookery_apid_http_requests_total{class=\"4xx\"} 2",
        "rookery_apid_logins_total{result=\"failure\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }

    control.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("apid stops within the drain timeout")
        .unwrap()
        .unwrap();
}
