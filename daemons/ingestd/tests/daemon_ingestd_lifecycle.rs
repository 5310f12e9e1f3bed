//! The real binary as systemd drives it: `check-config` names every problem and exits 78; a
//! SIGHUP with a new retention applies it (new config digest); SIGTERM exits 0 after the drain
//! and what was acknowledged is still there at the next start.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, Ingestd, post, write_config};
use rookery_common::proto::admin_client::AdminClient;
use rookery_common::proto::{QueryLogsRequest, StatusRequest};

#[test]
fn check_config_names_each_problem_and_exits_78() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ingestd.toml");
    std::fs::write(
        &path,
        "[syslog]\ntls = [\"127.0.0.1:6514\"]\nmax-message-bytes = 10\n\n[store]\nmax-age = \"forever\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(78), "{text}");
    let p = path.display().to_string();
    assert!(
        text.contains(&format!("{p}:6:11: store.max-age:")),
        "{text}"
    );
    // Semantic problems are reported once the file parses: fix the type error and rerun.
    std::fs::write(
        &path,
        "[syslog]\ntls = [\"127.0.0.1:6514\"]\nmax-message-bytes = 10\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(78), "{text}");
    for want in [
        format!(
            "{p}:3:21: syslog.max-message-bytes: 10 is out of range (expected 480 to 16777216)"
        ),
        "syslog.tls-cert-file: is required when syslog.tls has listeners".to_owned(),
        "syslog.tls-key-file: is required when syslog.tls has listeners".to_owned(),
    ] {
        assert!(text.contains(&want), "{want:?} missing in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_retention_and_sigterm_drains() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path(), "", "max-age = \"30days\"\n");
    let mut d = Ingestd::start(tmp.path()).await;
    let status = async |d: &Ingestd| {
        let ch = rookery_common::grpc::connect(&d.socket()).await.unwrap();
        AdminClient::new(ch)
            .status(StatusRequest {})
            .await
            .unwrap()
            .into_inner()
    };
    let before = status(&d).await.config_digest;
    let path = tmp.path().join("ingestd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("max-age = \"30days\"", "max-age = \"2days\""),
    )
    .unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(d.child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(&d).await;
        if s.config_digest != before && s.state == "ready" {
            assert_eq!(s.last_reload_error, "");
            break;
        }
        assert!(Instant::now() < deadline, "reload not applied: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, body) = post(
        d.addr("http-0"),
        "/v1/logs",
        "application/x-ndjson",
        b"{\"message\":\"before stop\",\"app\":\"life\"}\n",
    );
    assert_eq!(code, 200, "{body}");
    d.stop();
    assert_eq!(d.child.wait().unwrap().code(), Some(0));
    let d = Ingestd::start(tmp.path()).await;
    let got = d
        .query(QueryLogsRequest {
            app: Some("life".into()),
            ..QueryLogsRequest::default()
        })
        .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, "before stop");
}
