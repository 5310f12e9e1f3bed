//! AutoPerf against a stand-in licensed on a Unix socket (the real `rookery.v1.Licensing`
//! service definition): licensed grants `autoperf` → the listed target runs continuously;
//! licensed goes away → the last answer is kept; licensed refuses → back to the target's own
//! interval.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rookery_common::config::Sources;
use rookery_common::daemon::Control;
use rookery_common::proto::licensing_server::{Licensing, LicensingServer};
use rookery_common::proto::{
    CheckFeatureRequest, CheckFeatureResponse, Entitlements, GetEntitlementsRequest,
    GetLicenseRequest, LicenseStatus, ReportUsageRequest, ReportUsageResponse, SetKeyRequest,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

struct FakeLicensed {
    autoperf: Arc<AtomicBool>,
    asked: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl Licensing for FakeLicensed {
    async fn get_license(
        &self,
        _: Request<GetLicenseRequest>,
    ) -> Result<Response<LicenseStatus>, Status> {
        Err(Status::unimplemented("not in this stand-in"))
    }
    async fn check_feature(
        &self,
        request: Request<CheckFeatureRequest>,
    ) -> Result<Response<CheckFeatureResponse>, Status> {
        assert_eq!(request.into_inner().name, "autoperf");
        self.asked.fetch_add(1, Ordering::SeqCst);
        let enabled = self.autoperf.load(Ordering::SeqCst);
        Ok(Response::new(CheckFeatureResponse {
            enabled,
            reason: if enabled {
                "entitled"
            } else {
                "not in licence"
            }
            .to_owned(),
        }))
    }
    async fn get_entitlements(
        &self,
        _: Request<GetEntitlementsRequest>,
    ) -> Result<Response<Entitlements>, Status> {
        Err(Status::unimplemented("not in this stand-in"))
    }
    async fn set_key(&self, _: Request<SetKeyRequest>) -> Result<Response<LicenseStatus>, Status> {
        Err(Status::unimplemented("not in this stand-in"))
    }
    async fn report_usage(
        &self,
        _: Request<ReportUsageRequest>,
    ) -> Result<Response<ReportUsageResponse>, Status> {
        Err(Status::unimplemented("not in this stand-in"))
    }
}

async fn serve_licensed(
    path: &std::path::Path,
    autoperf: Arc<AtomicBool>,
    asked: Arc<AtomicU64>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = rookery_common::grpc::bind(path).await.unwrap();
    let stop = CancellationToken::new();
    let router = tonic::transport::Server::builder()
        .add_service(LicensingServer::new(FakeLicensed { autoperf, asked }));
    let s = stop.clone();
    let task = tokio::spawn(async move {
        let _ = rookery_common::grpc::serve(listener, router, s).await;
    });
    (stop, task)
}

/// Connections the probed target received so far.
fn count(c: &AtomicU64) -> u64 {
    c.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoperf_follows_the_licence_and_keeps_the_last_answer() {
    let dir = tempfile::tempdir().unwrap();
    let licensed_sock = dir.path().join("licensed.sock");
    let granted = Arc::new(AtomicBool::new(true));
    let asked = Arc::new(AtomicU64::new(0));
    let (lic_stop, lic_task) = serve_licensed(&licensed_sock, granted.clone(), asked.clone()).await;

    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = target.local_addr().unwrap().port();
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = target.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    let path = dir.path().join("probed.toml");
    std::fs::write(
        &path,
        format!(
            "[grpc]\nsocket = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{}\"\n[state]\ndirectory = \"{}\"\n\
             [autoperf]\nenabled = true\ntargets = [\"fast\"]\ninterval = \"200ms\"\ncheck-interval = \"1s\"\nlicensed-socket = \"{}\"\n\
             [modules.tcp]\nprober = \"tcp\"\ntimeout = \"1s\"\n\
             [[targets]]\nname = \"fast\"\nmodule = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ninterval = \"1h\"\n",
            dir.path().join("probed.sock").display(),
            support::free_port(),
            dir.path().join("state").display(),
            licensed_sock.display(),
        ),
    )
    .unwrap();
    let control = Control::default();
    let daemon = tokio::spawn(rookery_probed::app::run(
        Sources::new("probed", Some(&path), Vec::new()),
        control.clone(),
    ));

    // Granted: every 200 ms instead of hourly.
    let until = Instant::now() + Duration::from_secs(5);
    while count(&hits) < 6 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        count(&hits) >= 6,
        "continuous mode did not run: {}",
        count(&hits)
    );
    assert!(asked.load(Ordering::SeqCst) >= 1);

    // licensed goes away: the last answer (granted) is kept.
    lic_stop.cancel();
    lic_task.await.unwrap();
    let before = count(&hits);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        count(&hits) >= before + 6,
        "AutoPerf stopped although licensed only became unreachable: {before} -> {}",
        count(&hits)
    );

    // licensed is back and refuses: the target returns to its hourly interval.
    granted.store(false, Ordering::SeqCst);
    let (lic_stop, lic_task) = serve_licensed(&licensed_sock, granted, asked.clone()).await;
    let asked_then = asked.load(Ordering::SeqCst);
    let until = Instant::now() + Duration::from_secs(5);
    while asked.load(Ordering::SeqCst) == asked_then && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped_at = count(&hits);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        count(&hits) <= stopped_at + 1,
        "continuous mode went on without a licence: {stopped_at} -> {}",
        count(&hits)
    );

    control.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), daemon)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    lic_stop.cancel();
    lic_task.await.unwrap();
}
