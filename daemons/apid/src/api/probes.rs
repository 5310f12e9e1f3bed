//! `/api/v1/probes`: probed's scheduled targets, stored results and tier events, and ad-hoc
//! probes, through its `rookery.v1.Probing` service on `probed.sock`. Without probed the
//! routes answer 503 `daemon_unavailable` naming it and its socket.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use rookery_common::http::ApiError;
use rookery_common::logging::AaaKind;
use rookery_common::proto;
use rookery_common::proto::probing_client::ProbingClient;
use serde::{Deserialize, Serialize};

use super::extract::{JsonBody, QueryParams};
use super::{Api, Principal, Source};

const PROBED: &str = "probed";
/// Most results or events one request returns (probed's own cap).
pub const MAX_LIMIT: u32 = 10_000;

/// One phase of a probe.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PhaseView {
    /// `resolve`, `connect`, `tls`, `processing` or `transfer`.
    phase: String,
    seconds: f64,
}

/// One probe result.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResultView {
    target: String,
    module: String,
    started_unix_ms: i64,
    success: bool,
    /// `ok` or the failure reason (`refused`, `timeout`, …).
    reason: String,
    detail: String,
    total_seconds: f64,
    phases: Vec<PhaseView>,
    /// What the probe learned (`http_status`, `tls_days_left`, `ip`, …).
    facts: BTreeMap<String, String>,
}

impl From<proto::ProbeResult> for ResultView {
    fn from(r: proto::ProbeResult) -> Self {
        Self {
            target: r.target,
            module: r.module,
            started_unix_ms: r.started_unix_ms,
            success: r.success,
            reason: r.reason,
            detail: r.detail,
            total_seconds: r.total_seconds,
            phases: r
                .phases
                .into_iter()
                .map(|p| PhaseView {
                    phase: p.phase,
                    seconds: p.seconds,
                })
                .collect(),
            facts: r.facts.into_iter().collect(),
        }
    }
}

/// One scheduled target.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TargetView {
    name: String,
    module: String,
    /// `icmp`, `tcp`, `udp`, `dns`, `http` or `tls`.
    prober: String,
    address: String,
    interval_ms: u64,
    timeout_ms: u64,
    labels: BTreeMap<String, String>,
    /// Absent until the target was probed once.
    last: Option<ResultView>,
    /// 1 (scheduled), 2 (diagnostics) or 3 (critical).
    tier: u32,
    tier_reason: String,
}

/// A move between tiers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TierEventView {
    target: String,
    at_unix_ms: i64,
    from_tier: u32,
    to_tier: u32,
    reason: String,
    diagnostics: String,
}

/// `?target=&limit=` of the result and tier-event lists.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Empty or absent: every target.
    target: Option<String>,
    /// 1..=10000; absent: 100.
    limit: Option<u32>,
}

impl ListArgs {
    fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(0),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::bad_request(format!(
                "limit={n} is out of range (expected 1 to {MAX_LIMIT})"
            ))),
        }
    }
}

/// Body of `POST /api/v1/probes/run`: a configured target, or a module and an address.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// A configured target; when set, module and address are ignored.
    #[serde(default)]
    target: Option<String>,
    /// A configured module.
    #[serde(default)]
    module: Option<String>,
    /// An address the module accepts (URL, host:port, host).
    #[serde(default)]
    address: Option<String>,
    /// Absent: the module's timeout; a longer one is capped to it.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 600_000)]
    timeout_ms: Option<u64>,
}

async fn client(api: &Api) -> Result<ProbingClient<tonic::transport::Channel>, ApiError> {
    Ok(ProbingClient::new(api.channel(PROBED).await?))
}

/// `GET /api/v1/probes/targets`.
pub async fn targets(State(api): State<Arc<Api>>) -> Result<Json<Vec<TargetView>>, ApiError> {
    let mut c = client(&api).await?;
    let list = api
        .call(PROBED, c.list_targets(proto::ListTargetsRequest {}))
        .await?;
    Ok(Json(
        list.targets
            .into_iter()
            .map(|t| TargetView {
                name: t.name,
                module: t.module,
                prober: t.prober,
                address: t.address,
                interval_ms: t.interval_ms,
                timeout_ms: t.timeout_ms,
                labels: t.labels.into_iter().collect(),
                last: t.last.map(ResultView::from),
                tier: t.tier,
                tier_reason: t.tier_reason,
            })
            .collect(),
    ))
}

/// `GET /api/v1/probes/results?target=&limit=`: newest first.
pub async fn results(
    State(api): State<Arc<Api>>,
    QueryParams(q): QueryParams<ListArgs>,
) -> Result<Json<Vec<ResultView>>, ApiError> {
    let req = proto::GetResultsRequest {
        limit: q.limit()?,
        target: q.target.unwrap_or_default(),
    };
    let mut c = client(&api).await?;
    let r = api.call(PROBED, c.get_results(req)).await?;
    Ok(Json(r.results.into_iter().map(ResultView::from).collect()))
}

/// `GET /api/v1/probes/tier-events?target=&limit=`: newest first.
pub async fn tier_events(
    State(api): State<Arc<Api>>,
    QueryParams(q): QueryParams<ListArgs>,
) -> Result<Json<Vec<TierEventView>>, ApiError> {
    let req = proto::GetTierEventsRequest {
        limit: q.limit()?,
        target: q.target.unwrap_or_default(),
    };
    let mut c = client(&api).await?;
    let r = api.call(PROBED, c.get_tier_events(req)).await?;
    Ok(Json(
        r.events
            .into_iter()
            .map(|e| TierEventView {
                target: e.target,
                at_unix_ms: e.at_unix_ms,
                from_tier: e.from_tier,
                to_tier: e.to_tier,
                reason: e.reason,
                diagnostics: e.diagnostics,
            })
            .collect(),
    ))
}

/// `POST /api/v1/probes/run`: one probe now (not stored); audited.
pub async fn run(
    State(api): State<Arc<Api>>,
    Extension(src): Extension<Source>,
    Extension(p): Extension<Principal>,
    JsonBody(req): JsonBody<RunRequest>,
) -> Result<Json<ResultView>, ApiError> {
    let target = req.target.unwrap_or_default();
    let module = req.module.unwrap_or_default();
    let address = req.address.unwrap_or_default();
    if target.is_empty() && (module.is_empty() || address.is_empty()) {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "give a target, or a module and an address",
        ));
    }
    let what = if target.is_empty() {
        format!("{module} {address}")
    } else {
        target.clone()
    };
    let mut c = client(&api).await?;
    let r = api
        .call(
            PROBED,
            c.run_now(proto::RunNowRequest {
                target,
                module,
                address,
                timeout_ms: req.timeout_ms.unwrap_or(0),
            }),
        )
        .await;
    api.audit(
        AaaKind::Audit,
        &p.username,
        "probes.run",
        if r.is_ok() { "success" } else { "failure" },
        &src.0,
        &[("probe", &what)],
    );
    Ok(Json(r?.into()))
}
