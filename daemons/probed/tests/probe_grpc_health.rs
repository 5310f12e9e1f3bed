//! gRPC health probes against a tonic health server the test runs on loopback: SERVING,
//! NOT_SERVING and an unknown service each with their reason, a refused port, and a server
//! that does not speak gRPC.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use rookery_probed::probe::{Failure, Phase};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

#[tokio::test]
async fn grpc_health_checks_with_their_reasons() {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("db", ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status("api", ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            ),
    );
    let m =
        |svc: &str| format!("prober = \"grpc\"\ntimeout = \"2s\"\n[grpc]\nservice = \"{svc}\"\n");

    let whole = support::probe(&m(""), &addr).await;
    assert!(whole.success, "{whole:?}");
    assert!(whole.phase(Phase::Connect).is_some() && whole.phase(Phase::FirstByte).is_some());
    let api = support::probe(&m("api"), &addr).await;
    assert!(api.success, "{api:?}");

    let db = support::probe(&m("db"), &addr).await;
    assert_eq!(
        db.failure,
        Some(Failure::GrpcNotServing("NOT_SERVING".into())),
        "{db:?}"
    );
    assert_eq!(db.reason(), "grpc_not_serving");

    let ghost = support::probe(&m("ghost"), &addr).await;
    assert_eq!(
        ghost.failure,
        Some(Failure::GrpcStatus("NotFound".into())),
        "{ghost:?}"
    );

    let closed = support::free_port();
    let refused = support::probe(&m(""), &format!("127.0.0.1:{closed}")).await;
    assert_eq!(refused.failure, Some(Failure::Refused), "{refused:?}");

    // A TCP server that answers garbage is not a gRPC server.
    let junk = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let junk_addr = junk.local_addr().unwrap().to_string();
    let junk_task = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        if let Ok((mut s, _)) = junk.accept().await {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let bad = support::probe(&m(""), &junk_addr).await;
    assert!(!bad.success);
    assert!(
        matches!(
            bad.failure,
            Some(Failure::Protocol(_) | Failure::GrpcStatus(_))
        ),
        "{bad:?}"
    );
    junk_task.abort();
    stop.cancel();
    server.await.unwrap().unwrap();
}
