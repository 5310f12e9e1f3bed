//! The `rookery.v1.PacketTesting` gRPC service on `/run/rookery/packetd.sock`
//! (`proto/rookery/v1/packetd.proto`): StartSession, GetSession, StopSession, ListSessions and
//! WatchSession over [`Sessions`]. Entry point: [`server`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rookery_common::proto::packet_testing_server::{PacketTesting, PacketTestingServer};
use rookery_common::proto::{
    GetSessionRequest, ListSessionsRequest, ListSessionsResponse, Session, SessionKind,
    SessionSpec, SessionStats, StartSessionRequest, StopSessionRequest, WatchSessionRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::measure::Stats;
use crate::sender::Kind;
use crate::sessions::{Record, SessionError, Sessions};
use crate::wire::STAMP_LEN;

/// UDP payload of a raw session that asks for none: an IPv4 packet in a 60-byte Ethernet frame.
pub const DEFAULT_RAW_PACKET_SIZE: u32 = 18;

/// Sessions returned by `ListSessions` when the request sets no limit.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most sessions one `ListSessions` returns.
pub const MAX_LIMIT: u32 = 1000;

/// The service, ready to add to the daemon's routes.
pub fn server(sessions: Arc<Sessions>) -> PacketTestingServer<Service> {
    PacketTestingServer::new(Service { sessions })
}

/// Implementation of `rookery.v1.PacketTesting`.
pub struct Service {
    sessions: Arc<Sessions>,
}

fn status(e: SessionError) -> Status {
    match e {
        SessionError::Invalid(m) => Status::invalid_argument(m),
        SessionError::Busy(_) => Status::resource_exhausted(e.to_string()),
        SessionError::NotFound(_) => Status::not_found(e.to_string()),
        SessionError::Store(ref inner) => Status::internal(format!("{e}: {inner}")),
    }
}

/// The sender's spec from the request, with field names in every error.
pub fn spec_from(p: &SessionSpec) -> Result<crate::sender::SessionSpec, Status> {
    let ip: IpAddr = p.destination.parse().map_err(|_| {
        Status::invalid_argument(format!(
            "spec.destination \"{}\" is not an IP address (expected e.g. \"192.0.2.1\" or \"2001:db8::1\")",
            p.destination
        ))
    })?;
    let kind = match SessionKind::try_from(p.kind) {
        Ok(SessionKind::Stamp) => Kind::Stamp,
        Ok(SessionKind::Raw) => Kind::Raw,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "spec.kind {} is not a SessionKind (expected SESSION_KIND_STAMP or SESSION_KIND_RAW)",
                p.kind
            )));
        }
    };
    let port = match p.port {
        0 if kind == Kind::Raw => {
            return Err(Status::invalid_argument(
                "spec.port is required for a raw session (there is no default port)",
            ));
        }
        0 => crate::config::DEFAULT_STAMP_PORT,
        n => u16::try_from(n)
            .map_err(|_| Status::invalid_argument(format!("spec.port {n} must be 1 to 65535")))?,
    };
    let source = if p.source.is_empty() {
        None
    } else {
        Some(p.source.parse::<IpAddr>().map_err(|_| {
            Status::invalid_argument(format!("spec.source \"{}\" is not an IP address", p.source))
        })?)
    };
    let dscp = u8::try_from(p.dscp)
        .map_err(|_| Status::invalid_argument(format!("spec.dscp {} must be 0 to 63", p.dscp)))?;
    let ssid = u16::try_from(p.ssid).map_err(|_| {
        Status::invalid_argument(format!("spec.ssid {} must be 0 to 65535", p.ssid))
    })?;
    let packet_size = match (p.packet_size, kind) {
        (0, Kind::Stamp) => u32::try_from(STAMP_LEN).unwrap_or(44),
        (0, Kind::Raw) => DEFAULT_RAW_PACKET_SIZE,
        (n, _) => n,
    };
    let rate_pps = match (p.rate_pps, p.rate_bps) {
        (pps, 0) => pps,
        (0, bps) => {
            let ip_header = if ip.is_ipv4() { 20 } else { 40 };
            let bits = (u64::from(packet_size) + 8 + ip_header) * 8;
            u32::try_from((bps / bits).max(1)).unwrap_or(u32::MAX)
        }
        _ => {
            return Err(Status::invalid_argument(
                "set spec.rate_pps or spec.rate_bps, not both",
            ));
        }
    };
    Ok(crate::sender::SessionSpec {
        kind,
        destination: SocketAddr::new(ip, port),
        source,
        dscp,
        packet_size,
        rate_pps,
        count: p.count,
        duration: Duration::from_millis(p.duration_ms),
        ssid,
    })
}

fn stats_of(s: &Stats) -> SessionStats {
    SessionStats {
        sent: s.sent,
        received: s.received,
        lost: s.lost,
        duplicates: s.duplicates,
        reordered: s.reordered,
        reordered_ratio: if s.received == 0 {
            0.0
        } else {
            s.reordered as f64 / s.received as f64
        },
        rtt_min_ns: s.rtt_min_ns,
        rtt_mean_ns: s.rtt_mean_ns,
        rtt_max_ns: s.rtt_max_ns,
        rtt_p50_ns: s.rtt_p50_ns,
        rtt_p90_ns: s.rtt_p90_ns,
        rtt_p99_ns: s.rtt_p99_ns,
        jitter_ns: s.jitter_ns,
        ipdv_mean_abs_ns: s.ipdv_mean_abs_ns,
        ipdv_max_abs_ns: s.ipdv_max_abs_ns,
        owd_forward_mean_ns: s.owd_forward_mean_ns,
        owd_backward_mean_ns: s.owd_backward_mean_ns,
        owd_synchronized: s.owd_synchronized,
        throughput_bps: s.throughput_bps,
        achieved_pps: s.achieved_pps,
        achieved_bps: s.achieved_bps,
        send_errors: s.send_errors,
        backend: s.backend.clone(),
        backend_detail: s.backend_detail.clone(),
    }
}

/// The gRPC form of a session.
pub fn session_of(r: &Record) -> Session {
    Session {
        id: r.id,
        spec: Some(SessionSpec {
            destination: r.spec.destination.ip().to_string(),
            port: u32::from(r.spec.destination.port()),
            source: r.spec.source.map(|s| s.to_string()).unwrap_or_default(),
            dscp: u32::from(r.spec.dscp),
            packet_size: r.spec.packet_size,
            rate_pps: r.spec.rate_pps,
            count: r.spec.count,
            duration_ms: u64::try_from(r.spec.duration.as_millis()).unwrap_or(u64::MAX),
            ssid: u32::from(r.spec.ssid),
            // A session reports the packet rate it runs at, whichever rate it was asked for.
            rate_bps: 0,
            kind: match r.spec.kind {
                Kind::Stamp => SessionKind::Stamp,
                Kind::Raw => SessionKind::Raw,
            }
            .into(),
        }),
        state: r.state.as_str().to_owned(),
        error: r.error.clone(),
        started_unix_ms: r.started_ms,
        finished_unix_ms: r.finished_ms,
        stats: Some(stats_of(&r.stats)),
    }
}

#[tonic::async_trait]
impl PacketTesting for Service {
    type WatchSessionStream = ReceiverStream<Result<Session, Status>>;

    async fn start_session(
        &self,
        request: Request<StartSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let req = request.into_inner();
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("spec is required"))?;
        let spec = spec_from(&spec)?;
        let r = self.sessions.start(spec).map_err(status)?;
        Ok(Response::new(session_of(&r)))
    }

    async fn get_session(
        &self,
        request: Request<GetSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let r = self.sessions.get(request.into_inner().id).map_err(status)?;
        Ok(Response::new(session_of(&r)))
    }

    async fn stop_session(
        &self,
        request: Request<StopSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let r = self
            .sessions
            .stop(request.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(session_of(&r)))
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        let list = self.sessions.list(limit).map_err(status)?;
        Ok(Response::new(ListSessionsResponse {
            sessions: list.iter().map(session_of).collect(),
        }))
    }

    async fn watch_session(
        &self,
        request: Request<WatchSessionRequest>,
    ) -> Result<Response<Self::WatchSessionStream>, Status> {
        let id = request.into_inner().id;
        // Fails with NOT_FOUND for an unknown id.
        let first = self.sessions.get(id).map_err(status)?;
        let progress = self.sessions.watch(id);
        let sessions = self.sessions.clone();
        let (tx, out) = mpsc::channel(16);
        tokio::spawn(async move {
            if tx.send(Ok(session_of(&first))).await.is_err() {
                return;
            }
            let Some(mut progress) = progress else {
                return; // already finished: the one message is final
            };
            // Ends when the session ends (its sender is dropped) or the client goes away.
            while progress.changed().await.is_ok() {
                let Ok(r) = sessions.get(id) else { return };
                if tx.send(Ok(session_of(&r))).await.is_err() {
                    return;
                }
            }
            if let Ok(r) = sessions.get(id) {
                let _ = tx.send(Ok(session_of(&r))).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_rates_become_packet_rates_and_bad_fields_are_named() {
        let mut p = SessionSpec {
            destination: "10.0.0.1".into(),
            packet_size: 72,
            rate_bps: 1_000_000,
            ..SessionSpec::default()
        };
        // (72 + 8 + 20) bytes = 800 bits per packet.
        let s = spec_from(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s.rate_pps, s.destination.port()), (1250, 862));
        p.destination = "fd00::1".into();
        // (72 + 8 + 40) bytes = 960 bits per packet.
        assert_eq!(spec_from(&p).map(|s| s.rate_pps).ok(), Some(1041));
        p.rate_pps = 10;
        let e = spec_from(&p).err().map(|e| e.message().to_owned());
        assert_eq!(
            e.as_deref(),
            Some("set spec.rate_pps or spec.rate_bps, not both")
        );
        p.rate_bps = 0;
        p.dscp = 300;
        let e = spec_from(&p).err().map(|e| e.message().to_owned());
        assert!(e.is_some_and(|m| m.contains("spec.dscp")));
        p.dscp = 0;
        p.destination = "host.example".into();
        let e = spec_from(&p).err().map(|e| e.message().to_owned());
        assert!(e.is_some_and(|m| m.contains("spec.destination")));
    }
}
