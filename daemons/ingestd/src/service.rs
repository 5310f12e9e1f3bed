//! The `rookery.v1.Logs` and `rookery.v1.Metrics` gRPC services: log and metric queries for
//! apid and rookeryctl.

use rookery_common::proto::logs_server::{Logs, LogsServer};
use rookery_common::proto::metrics_server::{Metrics, MetricsServer};
use rookery_common::proto::{
    self as pb, QueryLogsRequest, QueryLogsResponse, QueryMetricsRequest, QueryMetricsResponse,
};
use tonic::{Request, Response, Status};

use crate::store::{LogQuery, Store, StoreError};

/// Records returned when the request sets no limit.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most records one response may hold: bounds the response size (gRPC's default 4 MiB
/// message limit at a few hundred bytes a record).
pub const MAX_LIMIT: u32 = 10_000;

/// The service over the store.
pub struct Service(Store);

/// The tonic server of [`Service`].
pub fn server(store: Store) -> LogsServer<Service> {
    LogsServer::new(Service(store))
}

fn small(v: Option<u32>, max: u32, field: &str) -> Result<Option<u8>, Status> {
    v.map(|v| {
        u8::try_from(v)
            .ok()
            .filter(|v| u32::from(*v) <= max)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "{field}: {v} is out of range (expected 0 to {max})"
                ))
            })
    })
    .transpose()
}

/// Checks a request and turns it into a store query.
pub fn to_query(r: QueryLogsRequest) -> Result<LogQuery, Status> {
    if r.limit > MAX_LIMIT {
        return Err(Status::invalid_argument(format!(
            "limit: {} is out of range (expected 0 to {MAX_LIMIT})",
            r.limit
        )));
    }
    if let (Some(s), Some(e)) = (r.start_unix_nanos, r.end_unix_nanos)
        && e < s
    {
        return Err(Status::invalid_argument(
            "end_unix_nanos is before start_unix_nanos",
        ));
    }
    if r.text.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err(Status::invalid_argument(
            "text: must not be empty (leave it unset to match every message)",
        ));
    }
    Ok(LogQuery {
        start_ns: r.start_unix_nanos,
        end_ns: r.end_unix_nanos,
        host: r.host,
        app: r.app,
        max_severity: small(r.max_severity, 7, "max_severity")?,
        facility: small(r.facility, 23, "facility")?,
        text: r.text,
        parse_errors_only: r.parse_errors_only,
        before_id: r.before_id,
        limit: if r.limit == 0 { DEFAULT_LIMIT } else { r.limit },
    })
}

#[tonic::async_trait]
impl Logs for Service {
    async fn query_logs(
        &self,
        req: Request<QueryLogsRequest>,
    ) -> Result<Response<QueryLogsResponse>, Status> {
        let q = to_query(req.into_inner())?;
        let rows = self.0.query(q).await.map_err(|e| match e {
            StoreError::BadText(m) => Status::invalid_argument(format!("text: {m}")),
            other => Status::unavailable(rookery_common::error_chain(&other)),
        })?;
        let records = rows
            .into_iter()
            .map(|s| {
                let r = s.record;
                pb::LogRecord {
                    id: s.id,
                    received_unix_nanos: r.received_ns,
                    timestamp_unix_nanos: r.timestamp_ns,
                    host: r.host,
                    app: r.app,
                    procid: r.procid,
                    msgid: r.msgid,
                    facility: r.facility.map(u32::from),
                    severity: r.severity.map(u32::from),
                    message: r.message,
                    structured_data: r.structured_data,
                    format: r.format,
                    parse_error: r.parse_error,
                    input: r.input,
                    peer: r.peer,
                }
            })
            .collect();
        Ok(Response::new(QueryLogsResponse { records }))
    }
}

/// The `rookery.v1.Metrics` service over the store.
pub struct MetricsService(Store);

/// The tonic server of [`MetricsService`].
pub fn metrics_server(store: Store) -> MetricsServer<MetricsService> {
    MetricsServer::new(MetricsService(store))
}

/// Checks a metrics request and turns it into a query plus (start, end, step).
pub fn to_metrics_query(
    r: &QueryMetricsRequest,
) -> Result<(crate::promql::Query, i64, i64, i64), Status> {
    use crate::promql::{Function, LOOKBACK_MS, MatchOp, Matcher};
    if r.name.is_empty() {
        return Err(Status::invalid_argument("name: must not be empty"));
    }
    let mut matchers = Vec::new();
    for (i, m) in r.matchers.iter().enumerate() {
        let op = match pb::label_matcher::Op::try_from(m.op) {
            Ok(pb::label_matcher::Op::Eq) => MatchOp::Eq,
            Ok(pb::label_matcher::Op::Ne) => MatchOp::Ne,
            Ok(pb::label_matcher::Op::Re) => MatchOp::Re,
            Ok(pb::label_matcher::Op::NotRe) => MatchOp::NotRe,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "matchers[{i}].op: {} is not a known operator",
                    m.op
                )));
            }
        };
        matchers.push(
            Matcher::new(&m.name, op, &m.value)
                .map_err(|e| Status::invalid_argument(format!("matchers[{i}]: {e}")))?,
        );
    }
    let function = match pb::MetricFunction::try_from(r.function) {
        Ok(pb::MetricFunction::Last) => Function::Last,
        Ok(pb::MetricFunction::Rate) => Function::Rate,
        Ok(pb::MetricFunction::AvgOverTime) => Function::Avg,
        Ok(pb::MetricFunction::MinOverTime) => Function::Min,
        Ok(pb::MetricFunction::MaxOverTime) => Function::Max,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "function: {} is not a known function",
                r.function
            )));
        }
    };
    if r.range_ms < 0 {
        return Err(Status::invalid_argument("range_ms: must not be negative"));
    }
    let q = crate::promql::Query {
        name: r.name.clone(),
        matchers,
        function,
        range_ms: if r.range_ms == 0 {
            LOOKBACK_MS
        } else {
            r.range_ms
        },
        sum_by: r.sum.then(|| r.sum_by.clone()),
    };
    Ok((q, r.start_unix_ms, r.end_unix_ms, r.step_ms))
}

#[tonic::async_trait]
impl Metrics for MetricsService {
    async fn query_metrics(
        &self,
        req: Request<QueryMetricsRequest>,
    ) -> Result<Response<QueryMetricsResponse>, Status> {
        let (q, start, end, step) = to_metrics_query(req.get_ref())?;
        let series = self
            .0
            .select_series(q.name.clone(), q.matchers.clone(), start - q.range_ms, end)
            .await
            .map_err(|e| Status::unavailable(rookery_common::error_chain(&e)))?;
        let out =
            crate::promql::eval(&q, &series, start, end, step).map_err(Status::invalid_argument)?;
        Ok(Response::new(QueryMetricsResponse {
            series: out
                .into_iter()
                .map(|o| pb::MetricSeries {
                    labels: o.labels.into_iter().collect(),
                    points: o
                        .points
                        .into_iter()
                        .map(|(unix_ms, value)| pb::MetricPoint { unix_ms, value })
                        .collect(),
                })
                .collect(),
        }))
    }
}
