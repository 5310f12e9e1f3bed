//! The `rookery.v1.Probing` gRPC service on `/run/rookery/probed.sock`
//! (`proto/rookery/v1/probed.proto`): `ListTargets`, `GetResults` and `GetTierEvents` (from
//! the store), `WatchResults` (live) and `RunNow` (an ad-hoc probe under the scheduler's
//! concurrency bound). Entry point: [`server`].

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use rookery_common::proto::probing_server::{Probing, ProbingServer};
use rookery_common::proto::{
    GetResultsRequest, GetResultsResponse, GetTierEventsRequest, GetTierEventsResponse,
    ListTargetsRequest, ListTargetsResponse, PhaseTiming, ProbeResult, RunNowRequest, TargetInfo,
    TierEvent, WatchResultsRequest,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::probe::{Outcome, address};
use crate::scheduler::Scheduler;
use crate::store::Row;

/// Results returned by `GetResults` when the request sets no limit.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most results one `GetResults` returns (bounds the answer's size).
pub const MAX_LIMIT: u32 = 10_000;

/// The service, ready to add to the daemon's routes.
pub fn server(scheduler: Arc<Scheduler>) -> ProbingServer<Service> {
    ProbingServer::new(Service { scheduler })
}

/// Implementation of `rookery.v1.Probing`.
pub struct Service {
    scheduler: Arc<Scheduler>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The gRPC form of `outcome`.
pub fn result_of(target: &str, module: &str, outcome: &Outcome) -> ProbeResult {
    let row = Row::from_outcome(target, module, outcome);
    result_of_row(row)
}

/// Results queued per watcher between the broadcast and the gRPC stream.
const WATCH_QUEUE: usize = 64;

fn result_of_row(row: Row) -> ProbeResult {
    ProbeResult {
        phases: row
            .phase_list()
            .into_iter()
            .map(|(phase, seconds)| PhaseTiming { phase, seconds })
            .collect(),
        target: row.target,
        module: row.module,
        started_unix_ms: row.started_ms,
        success: row.success,
        reason: row.reason,
        detail: row.detail,
        total_seconds: row.total_s,
        facts: row.facts.into_iter().collect(),
    }
}

#[tonic::async_trait]
impl Probing for Service {
    type WatchResultsStream = ReceiverStream<Result<ProbeResult, Status>>;

    async fn watch_results(
        &self,
        request: Request<WatchResultsRequest>,
    ) -> Result<Response<Self::WatchResultsStream>, Status> {
        let target = request.into_inner().target;
        let mut rx = self.scheduler.sink().watch.subscribe();
        let (tx, out) = mpsc::channel(WATCH_QUEUE);
        tokio::spawn(async move {
            // Ends when the client goes away or the prober stops.
            loop {
                match rx.recv().await {
                    Ok(row) => {
                        if !target.is_empty() && row.target != target {
                            continue;
                        }
                        if tx.send(Ok(result_of_row((*row).clone()))).await.is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "A results watcher is too slow, results skipped."
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }

    async fn list_targets(
        &self,
        _: Request<ListTargetsRequest>,
    ) -> Result<Response<ListTargetsResponse>, Status> {
        let metrics = &self.scheduler.sink().metrics;
        let tiers = self
            .scheduler
            .sink()
            .tiers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let targets = self
            .scheduler
            .targets()
            .into_iter()
            .map(|(t, interval, timeout)| TargetInfo {
                tier: tiers.get(&t.name).map_or(1, |(tier, _)| u32::from(*tier)),
                tier_reason: tiers
                    .get(&t.name)
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default(),
                prober: self
                    .scheduler
                    .module(&t.module)
                    .map(|m| m.module.prober.as_str().to_owned())
                    .unwrap_or_default(),
                last: metrics
                    .latest(&t.name)
                    .map(|o| result_of(&t.name, &t.module, &o)),
                interval_ms: millis(interval),
                timeout_ms: millis(timeout),
                labels: t.labels.clone().into_iter().collect(),
                name: t.name,
                module: t.module,
                address: t.address,
            })
            .collect();
        Ok(Response::new(ListTargetsResponse { targets }))
    }

    async fn get_results(
        &self,
        request: Request<GetResultsRequest>,
    ) -> Result<Response<GetResultsResponse>, Status> {
        let r = request.into_inner();
        let limit = match r.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        let target = (!r.target.is_empty()).then_some(r.target);
        let rows = self
            .scheduler
            .sink()
            .store
            .recent(target, limit as usize)
            .await
            .map_err(|e| Status::unavailable(format!("cannot read the results store: {e}")))?;
        Ok(Response::new(GetResultsResponse {
            results: rows.into_iter().map(result_of_row).collect(),
        }))
    }

    async fn get_tier_events(
        &self,
        request: Request<GetTierEventsRequest>,
    ) -> Result<Response<GetTierEventsResponse>, Status> {
        let r = request.into_inner();
        let limit = match r.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        let target = (!r.target.is_empty()).then_some(r.target);
        let events = self
            .scheduler
            .sink()
            .store
            .tier_events(target, limit as usize)
            .await
            .map_err(|e| Status::unavailable(format!("cannot read the results store: {e}")))?;
        Ok(Response::new(GetTierEventsResponse {
            events: events
                .into_iter()
                .map(|e| TierEvent {
                    target: e.target,
                    at_unix_ms: e.at_ms,
                    from_tier: u32::from(e.from_tier),
                    to_tier: u32::from(e.to_tier),
                    reason: e.reason,
                    diagnostics: e.diagnostics,
                })
                .collect(),
        }))
    }

    async fn run_now(
        &self,
        request: Request<RunNowRequest>,
    ) -> Result<Response<ProbeResult>, Status> {
        let r = request.into_inner();
        let (name, module, address, timeout) = if r.target.is_empty() {
            (String::new(), r.module, r.address, None)
        } else {
            let (t, _, timeout) = self
                .scheduler
                .targets()
                .into_iter()
                .find(|(t, _, _)| t.name == r.target)
                .ok_or_else(|| Status::not_found(format!("no target \"{}\"", r.target)))?;
            (t.name, t.module, t.address, Some(timeout))
        };
        let prepared = self.scheduler.module(&module).ok_or_else(|| {
            Status::invalid_argument(format!(
                "no module \"{module}\" (configured: {})",
                self.scheduler.module_names().join(", ")
            ))
        })?;
        address::parse(prepared.module.prober, &address)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut timeout = timeout.unwrap_or(prepared.module.timeout);
        if r.timeout_ms > 0 {
            timeout = timeout.min(Duration::from_millis(r.timeout_ms));
        }
        let outcome = self
            .scheduler
            .run_with(&prepared, &address, timeout)
            .await
            .ok_or_else(|| Status::unavailable("probed is shutting down"))?;
        Ok(Response::new(result_of(&name, &module, &outcome)))
    }
}
