//! Tier 2 diagnostics with a real DNS server: a target whose service is down escalates, and
//! its diagnostics ask the policy's other resolver (unbound, started by the test) for the
//! name and try an alternate port that is up, telling "host fine, service down" apart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::time::{Duration, Instant};

use rookery_common::config::Sources;
use rookery_common::daemon::Control;
use rookery_common::proto::GetTierEventsRequest;
use rookery_common::proto::probing_client::ProbingClient;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_asks_other_resolvers_and_alternate_ports() {
    let dns_port = support::free_port();
    let _unbound = support::unbound(dns_port, &["www.rookery.test. A 192.0.2.10"]);
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_port = up.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = up.accept().await {
            drop(s);
        }
    });
    let down = support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("probed.sock");
    let path = dir.path().join("probed.toml");
    std::fs::write(
        &path,
        format!(
            "[grpc]\nsocket = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{}\"\n[state]\ndirectory = \"{}\"\n\
             [modules.tcp]\nprober = \"tcp\"\ntimeout = \"500ms\"\nip-version = \"ip4\"\n\
             [[targets]]\nname = \"svc\"\nmodule = \"tcp\"\naddress = \"localhost:{down}\"\ninterval = \"1s\"\n\
             tiers = {{ failures = 2, window = 3, critical-failures = 3, resolvers = [\"127.0.0.1:{dns_port}\"], alternate-ports = [{up_port}] }}\n",
            sock.display(),
            support::free_port(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let control = Control::default();
    let daemon = tokio::spawn(rookery_probed::app::run(
        Sources::new("probed", Some(&path), Vec::new()),
        control.clone(),
    ));
    let until = Instant::now() + Duration::from_secs(10);
    let channel = loop {
        if let Ok(c) = rookery_common::grpc::connect(&sock).await {
            break c;
        }
        assert!(Instant::now() < until, "probed socket never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut client = ProbingClient::new(channel);
    let until = Instant::now() + Duration::from_secs(10);
    let event = loop {
        let e = client
            .get_tier_events(GetTierEventsRequest {
                target: "svc".into(),
                limit: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        if let Some(first) = e.last() {
            break first.clone();
        }
        assert!(Instant::now() < until, "no escalation");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((event.from_tier, event.to_tier), (1, 2), "{event:?}");
    let d = &event.diagnostics;
    assert!(d.starts_with("repeat x3: refused, refused, refused"), "{d}");
    // unbound answers `localhost` from its built-in local zone.
    assert!(
        d.contains(&format!(
            "; resolver 127.0.0.1:{dns_port}: NOERROR 127.0.0.1"
        )),
        "{d}"
    );
    assert!(d.contains(&format!("; port {up_port}: ok ")), "{d}");
    assert!(d.contains("; path: 1 127.0.0.1 0% "), "{d}");
    control.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
