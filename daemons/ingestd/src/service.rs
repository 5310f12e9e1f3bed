//! The `rookery.v1.Logs` gRPC service: log queries for apid and rookeryctl.

use rookery_common::proto::logs_server::{Logs, LogsServer};
use rookery_common::proto::{self as pb, QueryLogsRequest, QueryLogsResponse};
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
