//! `rookeryctl licence show` / `set-key` against a real licensed (in-process) that validates
//! with the reference licence server over HTTPS.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::time::{Duration, Instant};

use rookery_common::config::Sources;
use rookery_common::daemon::Control;
use rookery_licensed::refserver::{RefServer, test_key};

mod support;
use support::rookeryctl;

#[test]
fn licence_show_lists_the_features_of_a_valid_key_and_set_key_checks_format() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(RefServer::start());
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::write(tmp.path().join("ca.pem"), &server.ca_pem).unwrap();
    let config = tmp.path().join("licensed.toml");
    std::fs::write(
        &config,
        format!(
            "[licence]\nkey = \"{}\"\nserver-url = \"{}\"\nca-file = \"{}\"\nrelease-mode = true\n\
             [grpc]\nsocket = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[state]\ndirectory = \"{}\"\n",
            test_key(),
            server.url,
            tmp.path().join("ca.pem").display(),
            run.join("licensed.sock").display(),
            tmp.path().join("state").display()
        ),
    )
    .unwrap();
    let control = Control::default();
    let c = control.clone();
    let sources = Sources::new("licensed", Some(&config), Vec::new());
    rt.spawn(async move {
        rookery_licensed::app::run(sources, c)
            .await
            .expect("licensed runs")
    });

    // Wait until licensed has validated with the server.
    let run_s = run.to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let (code, out, _) = rookeryctl(&["--run-dir", run_s, "licence", "show"]);
        if code == 0 && out.contains("state:          valid") {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "licence not valid within 30s: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        out.contains(&format!("key:            {}", test_key().masked())),
        "{out}"
    );
    assert!(out.contains("customer:       Test Customer"), "{out}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("autoperf").contains("enterprise") && line("autoperf").ends_with("enabled"),
        "{out}"
    );
    assert!(
        line("central-forwarding").ends_with("disabled"),
        "not granted: {out}"
    );
    assert!(line("probes").ends_with("enabled"), "{out}");

    let (code, _, err) = rookeryctl(&["--run-dir", run_s, "licence", "set-key", "PENG-ABCD"]);
    assert_eq!(code, 78);
    assert!(
        err.contains("invalid licence key: licence key has 2 groups"),
        "{err}"
    );

    let other =
        rookery_licensed::key::LicenceKey::from_groups(["ZZZZ", "0000", "0000", "0009"]).unwrap();
    let (code, out, _) = rookeryctl(&["--run-dir", run_s, "licence", "set-key", other.as_str()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("state:          invalid"),
        "the server does not know it: {out}"
    );
    assert!(out.contains("rejected the key"), "{out}");

    control.shutdown.cancel();
    rt.shutdown_timeout(Duration::from_secs(20));
}
