//! `/api/v1/packet/sessions`: STAMP Session-Sender sessions (RFC 8762 test packets to a
//! reflector) and their results, through packetd's `rookery.v1.PacketTesting` service on
//! `packetd.sock`. Without packetd the routes answer 503 `daemon_unavailable` naming it and its
//! socket. `GET …/{id}/watch` relays packetd's `WatchSession` progress as Server-Sent Events.
//!
//! The body of a start is checked here first ([`StartRequest::spec`]), so a bad field is a
//! 422 `invalid_body` naming it; what only packetd knows (its `[sessions] max-pps`) is its
//! 422 `invalid_argument`, and `max-concurrent` sessions already running is a 409.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rookery_common::http::ApiError;
use rookery_common::logging::AaaKind;
use rookery_common::proto;
use rookery_common::proto::packet_testing_client::PacketTestingClient;
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::ReceiverStream;

use super::extract::{JsonBody, QueryParams};
use super::{Api, Principal, Source};

const PACKETD: &str = "packetd";
/// Most sessions one list returns (packetd's own cap).
pub const MAX_LIMIT: u32 = 1000;
/// Default reflector port: STAMP's well-known UDP port (RFC 8762).
pub const DEFAULT_PORT: u16 = 862;
/// Smallest and largest UDP payload packetd sends: the STAMP test packet, and a 9000-byte
/// jumbo frame less the IPv4 and UDP headers.
pub const PACKET_SIZE: (u32, u32) = (44, 8972);
/// Longest a watch stream lasts; a longer session is watched again by the client.
const MAX_WATCH: Duration = Duration::from_secs(3600);
/// packetd sends progress about every 100 ms; this long without a message ends the stream.
const WATCH_IDLE: Duration = Duration::from_secs(15);
/// Most events one watch stream carries (an hour at packetd's 10 per second, plus slack).
const MAX_EVENTS: u32 = 40_000;

/// Body of `POST /api/v1/packet/sessions`. Give `count`, `duration_ms` or both (the session
/// ends at whichever comes first), and `rate_pps` or `rate_bps`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Reflector address, an IPv4 or IPv6 literal.
    destination: String,
    /// Reflector UDP port; absent: 862.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    port: Option<u32>,
    /// Address to send from; absent: chosen by routing.
    #[serde(default)]
    source: Option<String>,
    /// DSCP of the test packets; absent: 0.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 63)]
    dscp: Option<u32>,
    /// UDP payload bytes per packet; absent: 44.
    #[serde(default)]
    #[schema(minimum = 44, maximum = 8972)]
    packet_size: Option<u32>,
    /// Packets per second (the interval between packets is 1/rate), at most packetd's
    /// `[sessions] max-pps`. Absent with `rate_bps` absent: 10.
    #[serde(default)]
    #[schema(minimum = 1)]
    rate_pps: Option<u32>,
    /// Bits per second of IP packets instead of `rate_pps` (set one of the two).
    #[serde(default)]
    #[schema(minimum = 1)]
    rate_bps: Option<u64>,
    /// Packets to send.
    #[serde(default)]
    #[schema(minimum = 1)]
    count: Option<u64>,
    /// How long to send, in milliseconds.
    #[serde(default)]
    #[schema(minimum = 1)]
    duration_ms: Option<u64>,
    /// RFC 8972 Session-Sender Identifier; absent: 0.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 65535)]
    ssid: Option<u32>,
}

/// Packets per second when the body gives no rate.
pub const DEFAULT_RATE_PPS: u32 = 10;

fn invalid(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    v: Option<T>,
    lo: T,
    hi: T,
) -> Result<Option<T>, ApiError> {
    match v {
        Some(n) if n < lo || n > hi => Err(invalid(format!(
            "{name}: {n} is out of range (expected {lo} to {hi})"
        ))),
        other => Ok(other),
    }
}

fn address(name: &str, v: &str) -> Result<IpAddr, ApiError> {
    v.trim().parse().map_err(|_| {
        invalid(format!(
            "{name}: \"{v}\" is not an IP address (expected e.g. 192.0.2.1 or 2001:db8::1)"
        ))
    })
}

impl StartRequest {
    /// The gRPC spec, or a 422 naming the first bad field.
    pub fn spec(&self) -> Result<proto::SessionSpec, ApiError> {
        let destination = address("destination", &self.destination)?;
        let source = match self.source.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(address("source", s)?),
        };
        if let Some(src) = source
            && src.is_ipv4() != destination.is_ipv4()
        {
            return Err(invalid(format!(
                "source: {src} and destination {destination} are not the same IP version"
            )));
        }
        let port = in_range("port", self.port, 1, 65535)?.unwrap_or(u32::from(DEFAULT_PORT));
        let dscp = in_range("dscp", self.dscp, 0, 63)?.unwrap_or(0);
        let packet_size = in_range(
            "packet_size",
            self.packet_size,
            PACKET_SIZE.0,
            PACKET_SIZE.1,
        )?
        .unwrap_or(PACKET_SIZE.0);
        let ssid = in_range("ssid", self.ssid, 0, 65535)?.unwrap_or(0);
        let rate_pps = in_range("rate_pps", self.rate_pps, 1, u32::MAX)?;
        let rate_bps = in_range("rate_bps", self.rate_bps, 1, u64::MAX)?;
        let (rate_pps, rate_bps) = match (rate_pps, rate_bps) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "rate_bps: set rate_pps or rate_bps, not both".into(),
                ));
            }
            (None, None) => (DEFAULT_RATE_PPS, 0),
            (pps, bps) => (pps.unwrap_or(0), bps.unwrap_or(0)),
        };
        let count = in_range("count", self.count, 1, u64::MAX)?;
        let duration_ms = in_range("duration_ms", self.duration_ms, 1, u64::MAX)?;
        if count.is_none() && duration_ms.is_none() {
            return Err(invalid(
                "count: give count, duration_ms or both (a session must end)".into(),
            ));
        }
        Ok(proto::SessionSpec {
            destination: destination.to_string(),
            port,
            source: source.map(|s| s.to_string()).unwrap_or_default(),
            dscp,
            packet_size,
            rate_pps,
            count: count.unwrap_or(0),
            duration_ms: duration_ms.unwrap_or(0),
            ssid,
            rate_bps,
        })
    }
}

/// What a session sends.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SpecView {
    destination: String,
    port: u32,
    /// Empty: chosen by routing.
    source: String,
    dscp: u32,
    /// UDP payload bytes per packet.
    packet_size: u32,
    /// Packets per second (from `rate_bps` when that was given).
    rate_pps: u32,
    /// 0: as many as `duration_ms` allows.
    count: u64,
    /// 0: until `count` packets are sent.
    duration_ms: u64,
    ssid: u32,
}

/// Measurements of a session as packetd reports them (so far, while it runs). Times are
/// nanoseconds; round-trip times leave out the reflector's residence time.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatsView {
    sent: u64,
    received: u64,
    lost: u64,
    duplicates: u64,
    /// RFC 4737 reordered packets (sequence number below the next expected).
    reordered: u64,
    /// reordered / received.
    reordered_ratio: f64,
    rtt_min_ns: u64,
    rtt_mean_ns: u64,
    rtt_max_ns: u64,
    rtt_p50_ns: u64,
    rtt_p90_ns: u64,
    rtt_p99_ns: u64,
    /// RFC 3550 interarrival jitter over the round-trip time.
    jitter_ns: u64,
    /// RFC 5481 IPDV between consecutive sequence numbers: mean absolute value.
    ipdv_mean_abs_ns: u64,
    /// RFC 5481 IPDV: largest absolute value.
    ipdv_max_abs_ns: u64,
    /// Mean one-way delay there; trust it only when `owd_synchronized`.
    owd_forward_mean_ns: i64,
    /// Mean one-way delay back; trust it only when `owd_synchronized`.
    owd_backward_mean_ns: i64,
    /// Both clocks synchronised (reflector S bit on every reply and this host's clock).
    owd_synchronized: bool,
    /// Reply bits received per second.
    throughput_bps: u64,
}

/// One STAMP session.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    id: u64,
    /// `running`, `done`, `stopped` or `failed`.
    state: String,
    /// Why a failed session failed; empty otherwise.
    error: String,
    started_unix_ms: i64,
    /// 0 while running.
    finished_unix_ms: i64,
    spec: SpecView,
    stats: StatsView,
}

impl From<proto::Session> for SessionView {
    fn from(s: proto::Session) -> Self {
        let spec = s.spec.unwrap_or_default();
        let st = s.stats.unwrap_or_default();
        Self {
            id: s.id,
            state: s.state,
            error: s.error,
            started_unix_ms: s.started_unix_ms,
            finished_unix_ms: s.finished_unix_ms,
            spec: SpecView {
                destination: spec.destination,
                port: spec.port,
                source: spec.source,
                dscp: spec.dscp,
                packet_size: spec.packet_size,
                rate_pps: spec.rate_pps,
                count: spec.count,
                duration_ms: spec.duration_ms,
                ssid: spec.ssid,
            },
            stats: StatsView {
                sent: st.sent,
                received: st.received,
                lost: st.lost,
                duplicates: st.duplicates,
                reordered: st.reordered,
                reordered_ratio: if st.reordered_ratio.is_finite() {
                    st.reordered_ratio
                } else {
                    0.0
                },
                rtt_min_ns: st.rtt_min_ns,
                rtt_mean_ns: st.rtt_mean_ns,
                rtt_max_ns: st.rtt_max_ns,
                rtt_p50_ns: st.rtt_p50_ns,
                rtt_p90_ns: st.rtt_p90_ns,
                rtt_p99_ns: st.rtt_p99_ns,
                jitter_ns: st.jitter_ns,
                ipdv_mean_abs_ns: st.ipdv_mean_abs_ns,
                ipdv_max_abs_ns: st.ipdv_max_abs_ns,
                owd_forward_mean_ns: st.owd_forward_mean_ns,
                owd_backward_mean_ns: st.owd_backward_mean_ns,
                owd_synchronized: st.owd_synchronized,
                throughput_bps: st.throughput_bps,
            },
        }
    }
}

/// `?limit=` of the session list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// 1..=1000; absent: 100.
    limit: Option<u32>,
}

async fn client(api: &Api) -> Result<PacketTestingClient<tonic::transport::Channel>, ApiError> {
    Ok(PacketTestingClient::new(api.channel(PACKETD).await?))
}

/// The session ID of a path, or a 400 naming it.
fn session_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "id: \"{raw}\" is not a session ID (expected a non-negative integer)"
        ))
    })
}

/// `api.call`, with packetd's RESOURCE_EXHAUSTED (`max-concurrent` sessions running) as a
/// 409 `too_many_sessions` instead of a 503.
async fn call<T, F>(api: &Api, fut: F) -> Result<T, ApiError>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let busy = std::sync::Mutex::new(None::<String>);
    let watched = async {
        let r = fut.await;
        if let Err(s) = &r
            && s.code() == tonic::Code::ResourceExhausted
        {
            *busy
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(s.message().to_owned());
        }
        r
    };
    let r = api.call(PACKETD, watched).await;
    let busy = busy
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match (r, busy) {
        (Err(_), Some(m)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_sessions",
            format!("{PACKETD}: {m}"),
        )),
        (r, _) => r,
    }
}

/// `GET /api/v1/packet/sessions?limit=`: newest first.
pub async fn list(
    State(api): State<Arc<Api>>,
    QueryParams(q): QueryParams<ListArgs>,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    let limit = match q.limit {
        None => 0,
        Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("limit={n} is out of range (expected 1 to {MAX_LIMIT})"),
            ));
        }
    };
    let mut c = client(&api).await?;
    let r = call(&api, c.list_sessions(proto::ListSessionsRequest { limit })).await?;
    Ok(Json(
        r.sessions.into_iter().map(SessionView::from).collect(),
    ))
}

/// `POST /api/v1/packet/sessions`: starts a session; audited.
pub async fn start(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    Extension(p): Extension<Principal>,
    JsonBody(req): JsonBody<StartRequest>,
) -> Result<(StatusCode, Json<SessionView>), ApiError> {
    let spec = req.spec()?;
    // The reflector as `ip:port` or `[ip6]:port`, for the audit line.
    let target = if spec.destination.contains(':') {
        format!("[{}]:{}", spec.destination, spec.port)
    } else {
        format!("{}:{}", spec.destination, spec.port)
    };
    let mut c = client(&api).await?;
    let r = call(
        &api,
        c.start_session(proto::StartSessionRequest { spec: Some(spec) }),
    )
    .await;
    let id = r.as_ref().map(|s| s.id.to_string()).unwrap_or_default();
    let mut fields = vec![("destination", target.as_str())];
    if !id.is_empty() {
        fields.push(("session", id.as_str()));
    }
    api.audit(
        AaaKind::Audit,
        &p.username,
        "packet.session.start",
        if r.is_ok() { "success" } else { "failure" },
        &src.0,
        &fields,
    );
    Ok((StatusCode::CREATED, Json(r?.into())))
}

/// `GET /api/v1/packet/sessions/{id}`: running or finished.
pub async fn get_one(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let id = session_id(&id)?;
    let mut c = client(&api).await?;
    let s = call(&api, c.get_session(proto::GetSessionRequest { id })).await?;
    Ok(Json(s.into()))
}

/// `POST /api/v1/packet/sessions/{id}/stop`: stops a running session (a finished one is
/// returned as is); audited.
pub async fn stop(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    let id = session_id(&id)?;
    let mut c = client(&api).await?;
    let r = call(&api, c.stop_session(proto::StopSessionRequest { id })).await;
    api.audit(
        AaaKind::Audit,
        &p.username,
        "packet.session.stop",
        if r.is_ok() { "success" } else { "failure" },
        &src.0,
        &[("session", &id.to_string())],
    );
    Ok(Json(r?.into()))
}

fn event(name: &str, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(data).unwrap_or_default())
}

/// `GET /api/v1/packet/sessions/{id}/watch`: Server-Sent Events, one `session` event (a
/// [`SessionView`]) per packetd progress message, about every 100 ms; the last one is final
/// (state other than `running`), then an `end` event, then the stream closes. If packetd
/// goes away mid-stream, an `error` event (the DESIGN.md error body) ends it. Bounded by
/// [`MAX_WATCH`], [`WATCH_IDLE`] and [`MAX_EVENTS`].
pub async fn watch(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = session_id(&id)?;
    let mut c = client(&api).await?;
    let updates = call(&api, c.watch_session(proto::WatchSessionRequest { id })).await?;
    // A small buffer: a slow client slows the relay; a gone client ends it (send fails).
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(relay(id, updates, tx));
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Why a watch ended: the session ended (`None`) or something else did (the reason).
type Ended = Option<String>;

/// Moves packetd's progress messages into SSE events until the session or the bounds end.
async fn relay(
    id: u64,
    mut updates: tonic::Streaming<proto::Session>,
    tx: tokio::sync::mpsc::Sender<Result<Event, Infallible>>,
) {
    let until = Instant::now() + MAX_WATCH;
    let mut sent = 0_u32;
    let ended: Ended = loop {
        let left = until
            .saturating_duration_since(Instant::now())
            .min(WATCH_IDLE);
        match tokio::time::timeout(left, updates.message()).await {
            Ok(Ok(Some(s))) => {
                let last = s.state != "running";
                if tx
                    .send(Ok(event("session", &SessionView::from(s))))
                    .await
                    .is_err()
                {
                    // The client went away.
                    return;
                }
                sent += 1;
                if last {
                    break None;
                }
                if sent >= MAX_EVENTS {
                    break Some(format!(
                        "the watch carried its most events, {MAX_EVENTS}; watch again"
                    ));
                }
            }
            // packetd closed the stream: the session ended.
            Ok(Ok(None)) => break None,
            Ok(Err(status)) => {
                break Some(format!("{PACKETD} stopped the watch: {}", status.message()));
            }
            Err(_) if Instant::now() >= until => {
                break Some(format!(
                    "the watch lasted its longest, {} s; watch again",
                    MAX_WATCH.as_secs()
                ));
            }
            Err(_) => {
                break Some(format!(
                    "{PACKETD} sent no progress for {} s",
                    WATCH_IDLE.as_secs()
                ));
            }
        }
    };
    let last = match ended {
        None => event("end", &serde_json::json!({ "id": id })),
        Some(why) => event(
            "error",
            &ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "watch_ended", why),
        ),
    };
    // Nobody to tell if the client has gone.
    let _ = tx.send(Ok(last)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: serde_json::Value) -> StartRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_fill_the_spec() {
        let s = req(serde_json::json!({"destination": "192.0.2.1", "count": 5}))
            .spec()
            .unwrap();
        assert_eq!(s.destination, "192.0.2.1");
        assert_eq!(s.port, 862);
        assert_eq!(s.packet_size, 44);
        assert_eq!(s.rate_pps, DEFAULT_RATE_PPS);
        assert_eq!((s.count, s.duration_ms, s.rate_bps), (5, 0, 0));
        let s = req(serde_json::json!({
            "destination": " 2001:db8::1 ", "port": 4000, "source": "2001:db8::2", "dscp": 46,
            "packet_size": 1400, "rate_bps": 1_000_000, "duration_ms": 2000, "ssid": 7
        }))
        .spec()
        .unwrap();
        assert_eq!(
            (s.destination.as_str(), s.port, s.source.as_str(), s.dscp),
            ("2001:db8::1", 4000, "2001:db8::2", 46)
        );
        assert_eq!(
            (s.packet_size, s.rate_pps, s.rate_bps),
            (1400, 0, 1_000_000)
        );
        assert_eq!((s.count, s.duration_ms, s.ssid), (0, 2000, 7));
    }

    #[test]
    fn bad_fields_are_named() {
        for (body, field) in [
            (
                serde_json::json!({"destination": "example.com", "count": 1}),
                "destination:",
            ),
            (serde_json::json!({"destination": "192.0.2.1"}), "count:"),
            (
                serde_json::json!({"destination": "192.0.2.1", "count": 0}),
                "count:",
            ),
            (
                serde_json::json!({"destination": "192.0.2.1", "count": 1, "port": 0}),
                "port:",
            ),
            (
                serde_json::json!({"destination": "192.0.2.1", "count": 1, "port": 70000}),
                "port:",
            ),
            (
                serde_json::json!({"destination": "192.0.2.1", "count": 1, "dscp": 64}),
                "dscp:",
            ),
            (
                serde_json::json!({"destination": "192.0.2.1", "count": 1, "packet_size": 43}),
                "packet_size:",
            ),
            (
                serde_json::json!({"destination": "192.0.2.1", "count": 1, "packet_size": 9000}),
                "packet_size:",
            ),
            (
                serde_json::json!({"destination": "192.0.2.1", "count": 1, "ssid": 65536}),
                "ssid:",
            ),
            (
                serde_json::json!({"destination": "192.0.2.1", "count": 1, "rate_pps": 0}),
                "rate_pps:",
            ),
            (
                serde_json::json!({"destination": "192.0.2.1", "count": 1, "rate_pps": 5, "rate_bps": 5}),
                "rate_bps:",
            ),
            (
                serde_json::json!({"destination": "192.0.2.1", "duration_ms": 0}),
                "duration_ms:",
            ),
            (
                serde_json::json!({"destination": "192.0.2.1", "count": 1, "source": "::1"}),
                "source:",
            ),
            (
                serde_json::json!({"destination": "192.0.2.1", "count": 1, "source": "x"}),
                "source:",
            ),
        ] {
            let e = req(body.clone()).spec().unwrap_err();
            assert_eq!(e.status, 422, "{body}");
            assert_eq!(e.error, "invalid_body", "{body}");
            assert!(e.message.starts_with(field), "{body}: {}", e.message);
        }
    }

    #[test]
    fn session_ids_are_integers() {
        assert_eq!(session_id("42").unwrap(), 42);
        let e = session_id("x").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.starts_with("id:"), "{}", e.message);
    }
}
