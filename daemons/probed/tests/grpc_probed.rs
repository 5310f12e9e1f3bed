//! The `rookery.v1.Probing` service over probed's Unix socket, with probed run in-process:
//! ListTargets (with the last result), GetResults from the store, RunNow by target and by
//! module + address, and argument errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::time::{Duration, Instant};

use rookery_common::config::Sources;
use rookery_common::daemon::Control;
use rookery_common::proto::probing_client::ProbingClient;
use rookery_common::proto::{GetResultsRequest, ListTargetsRequest, RunNowRequest};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_targets_get_results_and_run_now() {
    let dir = tempfile::tempdir().unwrap();
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_port = up.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = up.accept().await {
            drop(s);
        }
    });
    let down_port = support::free_port();
    let sock = dir.path().join("probed.sock");
    let path = dir.path().join("probed.toml");
    std::fs::write(
        &path,
        format!(
            "[grpc]\nsocket = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{}\"\n[state]\ndirectory = \"{}\"\n\
             [modules.tcp]\nprober = \"tcp\"\ntimeout = \"1s\"\n\
             [[targets]]\nname = \"up\"\nmodule = \"tcp\"\naddress = \"127.0.0.1:{up_port}\"\ninterval = \"1s\"\nlabels = {{ site = \"lab\" }}\n",
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

    // ListTargets: settings at once, the last result after the first probe (within 1 s + 1 s).
    let until = Instant::now() + Duration::from_secs(5);
    let target = loop {
        let list = client
            .list_targets(ListTargetsRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.targets.len(), 1);
        let t = list.targets.into_iter().next().unwrap();
        if t.last.is_some() || Instant::now() > until {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(target.name, "up");
    assert_eq!(target.prober, "tcp");
    assert_eq!(target.interval_ms, 1000);
    assert_eq!(target.timeout_ms, 1000);
    assert_eq!(target.labels.get("site").map(String::as_str), Some("lab"));
    let last = target.last.expect("probed within its interval");
    assert!(last.success, "{last:?}");
    assert!(last.phases.iter().any(|p| p.phase == "connect"), "{last:?}");
    assert_eq!(
        last.facts.get("ip").map(String::as_str),
        Some("127.0.0.1"),
        "{last:?}"
    );

    // GetResults: from the store (written in batches; poll briefly).
    let until = Instant::now() + Duration::from_secs(5);
    let results = loop {
        let r = client
            .get_results(GetResultsRequest {
                target: "up".into(),
                limit: 5,
            })
            .await
            .unwrap()
            .into_inner()
            .results;
        if !r.is_empty() || Instant::now() > until {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!results.is_empty());
    assert!(results.len() <= 5);
    assert!(
        results
            .iter()
            .all(|r| r.target == "up" && r.success && r.reason == "ok")
    );
    assert!(results[0].facts.contains_key("ip"), "{:?}", results[0]);
    let none = client
        .get_results(GetResultsRequest {
            target: "nope".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.results.is_empty());

    // RunNow by target, and ad hoc with a module and an address.
    let by_target = client
        .run_now(RunNowRequest {
            target: "up".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(by_target.success, "{by_target:?}");
    assert_eq!(by_target.target, "up");
    let adhoc = client
        .run_now(RunNowRequest {
            module: "tcp".into(),
            address: format!("127.0.0.1:{down_port}"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!adhoc.success);
    assert_eq!(adhoc.reason, "refused", "{adhoc:?}");
    assert_eq!(adhoc.detail, "connection refused");

    let err = client
        .run_now(RunNowRequest {
            module: "nope".into(),
            address: "127.0.0.1:1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let err = client
        .run_now(RunNowRequest {
            module: "tcp".into(),
            address: "no-port".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("has no port"), "{err}");
    let err = client
        .run_now(RunNowRequest {
            target: "ghost".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");

    // WatchResults: the next scheduled results arrive live (one per second).
    let mut stream = client
        .watch_results(rookery_common::proto::WatchResultsRequest {
            target: "up".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let t0 = Instant::now();
    for _ in 0..2 {
        let r = tokio::time::timeout(Duration::from_secs(3), stream.message())
            .await
            .expect("a result within the 1 s interval")
            .unwrap()
            .unwrap();
        assert_eq!(r.target, "up");
        assert!(r.success, "{r:?}");
        assert!(r.started_unix_ms > 0);
    }
    assert!(t0.elapsed() < Duration::from_secs(4));

    control.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_escalates_to_tier_2_and_3_and_returns_when_it_recovers() {
    use rookery_common::proto::GetTierEventsRequest;
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let sock = dir.path().join("probed.sock");
    let path = dir.path().join("probed.toml");
    let metrics_port = support::free_port();
    std::fs::write(
        &path,
        format!(
            "[grpc]\nsocket = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[state]\ndirectory = \"{}\"\n\
             [modules.tcp]\nprober = \"tcp\"\ntimeout = \"500ms\"\n\
             [[targets]]\nname = \"flaky\"\nmodule = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ninterval = \"1s\"\n\
             tiers = {{ failures = 2, window = 3, critical-failures = 3, recover-after = 2, escalated-interval = \"1s\" }}\n",
            sock.display(),
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
    let events = |mut client: ProbingClient<tonic::transport::Channel>| async move {
        let mut e = client
            .get_tier_events(GetTierEventsRequest {
                target: "flaky".into(),
                limit: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        e.reverse();
        e
    };

    // Refused every second: tier 2 after 2 probes, tier 3 after 3 (within ~4 s + diagnostics).
    let until = Instant::now() + Duration::from_secs(10);
    let escalated = loop {
        let e = events(client.clone()).await;
        if e.len() >= 2 || Instant::now() > until {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(escalated.len(), 2, "{escalated:?}");
    assert_eq!((escalated[0].from_tier, escalated[0].to_tier), (1, 2));
    assert!(
        escalated[0]
            .reason
            .starts_with("2 of the last 2 probes breached"),
        "{escalated:?}"
    );
    assert!(
        escalated[0].reason.contains("connection refused"),
        "{escalated:?}"
    );
    assert!(
        escalated[0]
            .diagnostics
            .starts_with("repeat x3: refused, refused, refused; path: 1 127.0.0.1 0% "),
        "{escalated:?}"
    );
    assert_eq!((escalated[1].from_tier, escalated[1].to_tier), (2, 3));
    assert!(
        escalated[1].diagnostics.contains("timing run: refused"),
        "{escalated:?}"
    );
    let list = client
        .list_targets(ListTargetsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.targets[0].tier, 3, "{list:?}");
    assert_eq!(list.targets[0].tier_reason, escalated[1].reason);

    // The service comes back: two healthy probes return the target to tier 1.
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    let until = Instant::now() + Duration::from_secs(10);
    let all = loop {
        let e = events(client.clone()).await;
        if e.len() >= 3 || Instant::now() > until {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!((all[2].from_tier, all[2].to_tier), (3, 1));
    assert_eq!(all[2].reason, "recovered: 2 healthy probes in a row");
    assert!(all[2].diagnostics.is_empty());
    let list = client
        .list_targets(ListTargetsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.targets[0].tier, 1, "{list:?}");

    // The tier is exported too.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", metrics_port))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(
        body.contains("rookery_probed_target_tier{target=\"flaky\",module=\"tcp\"} 1"),
        "{body}"
    );
    assert!(
        body.contains(
            "rookery_probed_tier_transitions_total{target=\"flaky\",module=\"tcp\",to=\"3\"} 1"
        ),
        "{body}"
    );

    control.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
