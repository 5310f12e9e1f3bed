//! gRPC health: `grpc.health.v1.Health/Check` over HTTP/2 (cleartext or TLS with ALPN h2).
//! Resolve, connect and TLS are timed like every other probe, on a connection this module
//! opens and then hands to tonic; the call itself is the `processing` phase. SERVING is
//! success; any other status, or a failed call (e.g. `Unimplemented` when the server has no
//! health service), is a failure with that status.

use std::sync::{Arc, Mutex, PoisonError};

use hyper_util::rt::TokioIo;
use tonic::transport::{Endpoint, Uri};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::net::{self, Stream};
use super::{Address, Failure, Phase, Prepared, Run};
use crate::config::Module;

/// The `grpc` probe.
pub async fn probe(
    run: &mut Run,
    addr: &Address,
    module: &Module,
    prepared: &Prepared,
) -> Result<(), Failure> {
    let Address::HostPort { host, port } = addr else {
        return Err(Failure::Protocol("grpc probes need host:port".to_owned()));
    };
    let opts = module.grpc.clone().unwrap_or_default();
    let sa = net::resolve(run, host, *port, module.ip_version).await?;
    let tcp = net::connect(run, sa).await?;
    let stream: Box<dyn Stream> = match (&prepared.tls, opts.tls) {
        (Some(client), true) => {
            let tls = client.handshake(run, tcp, host, &[b"h2"]).await?;
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(Failure::Protocol(
                    "server did not agree to HTTP/2 (ALPN)".to_owned(),
                ));
            }
            Box::new(tls)
        }
        _ => Box::new(tcp),
    };
    // tonic dials through a connector; this one hands over the connection opened above, once.
    let slot = Arc::new(Mutex::new(Some(stream)));
    let connector = tower::service_fn(move |_: Uri| {
        let taken = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        async move {
            taken.map(TokioIo::new).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotConnected, "connection already used")
            })
        }
    });
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    // TLS, if any, is already done on the stream: tonic sees plain HTTP/2 either way.
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|e| Failure::Protocol(format!("bad endpoint: {e}")))?;
    let service = opts.service.clone();
    run.phase(Phase::FirstByte, async move {
        let channel = endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|e| Failure::Protocol(format!("HTTP/2 setup failed: {e}")))?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest { service })
            .await
            .map_err(|s| Failure::GrpcStatus(format!("{:?}", s.code())))?
            .into_inner();
        match ServingStatus::try_from(reply.status) {
            Ok(ServingStatus::Serving) => Ok(()),
            Ok(other) => Err(Failure::GrpcNotServing(other.as_str_name().to_owned())),
            Err(_) => Err(Failure::GrpcNotServing(format!("status {}", reply.status))),
        }
    })
    .await
}
