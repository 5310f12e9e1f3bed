//! Forwarding out by Prometheus remote_write with an on-disk spool.
//!
//! When `[forward] remote-write-url` is set, the writer copies every committed sample into the
//! `forward_outbox` table in the same transaction, so the spool is as durable as the store.
//! This task sends the outbox in sequence order (snappy + protobuf, remote_write 1.0) and
//! deletes what the remote acknowledged with 2xx. A network error, 5xx or 429 keeps the batch
//! and retries with backoff: an uplink outage loses nothing (up to the retention bounds, past
//! which samples are dropped and counted). A 4xx other than 429 means the remote will never
//! take the batch: it is dropped and counted, so one bad batch cannot block the spool.
//!
//! Forwarding is the enterprise feature `central-forwarding`: licensed is asked at start and
//! every `licence-check-interval`. Until it says yes (always, with release mode off) the
//! samples stay spooled; an unreachable licensed keeps the last answer (DESIGN.md).

use std::time::Duration;

use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::events::Metrics;
use crate::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use crate::store::{SeriesSamples, Store};

/// Idle poll of an empty outbox.
const IDLE: Duration = Duration::from_millis(500);
/// Backoff bounds after a failed attempt.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Encodes series as a snappy-compressed remote_write body.
pub fn encode(series: &[SeriesSamples]) -> Vec<u8> {
    let req = WriteRequest {
        timeseries: series
            .iter()
            .map(|s| TimeSeries {
                labels: s
                    .labels
                    .iter()
                    .map(|(name, value)| Label {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                samples: s
                    .samples
                    .iter()
                    .map(|(timestamp, value)| Sample {
                        value: *value,
                        timestamp: *timestamp,
                    })
                    .collect(),
            })
            .collect(),
    };
    // Compressing a buffer we just encoded cannot fail (only oversized input can).
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap_or_default()
}

enum Outcome {
    Delivered,
    Refused(String),
    Retry(String),
}

async fn send(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Outcome {
    let resp = client
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await;
    match resp {
        Err(e) => Outcome::Retry(rookery_common::error_chain(&e)),
        Ok(r) if r.status().is_success() => Outcome::Delivered,
        Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            Outcome::Refused(format!("{status}: {text}"))
        }
        Ok(r) => Outcome::Retry(format!("HTTP {}", r.status())),
    }
}

/// Name of the licensed feature that gates forwarding.
pub const FEATURE: &str = "central-forwarding";

/// Name of the licensed feature that gates the PostgreSQL store.
pub const DATABASE_FEATURE: &str = "central-database";

/// How long the start waits for licensed to answer about the PostgreSQL store (licensed may
/// be starting at the same time at boot).
const GATE_WAIT: Duration = Duration::from_secs(10);

/// Asks licensed over `socket` whether `feature` is enabled: `Some((enabled, reason))`, or
/// `None` if it is unreachable.
pub async fn ask(socket: &std::path::Path, feature: &str) -> Option<(bool, String)> {
    use rookery_common::proto::CheckFeatureRequest;
    use rookery_common::proto::licensing_client::LicensingClient;
    let channel = rookery_common::grpc::connect(socket).await.ok()?;
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        LicensingClient::new(channel).check_feature(CheckFeatureRequest {
            name: feature.to_owned(),
        }),
    )
    .await
    .ok()?
    .ok()?
    .into_inner();
    Some((reply.enabled, reply.reason))
}

/// The start gate of the PostgreSQL store: licensed at `socket` must grant
/// [`DATABASE_FEATURE`] (it always does with its release mode off). Waits up to 10 s for an
/// answer; a refusal or no answer is an error naming the feature, so the start fails rather
/// than writing to a store the licence does not cover (or silently elsewhere).
pub async fn require_central_database(socket: &std::path::Path) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + GATE_WAIT;
    loop {
        match ask(socket, DATABASE_FEATURE).await {
            Some((true, reason)) => return Ok(reason),
            Some((false, reason)) => {
                return Err(format!(
                    "store.backend = \"postgres\" needs licensed's feature \"{DATABASE_FEATURE}\", which is off ({reason}); \
                     install a licence that grants it, or set store.backend = \"sqlite\""
                ));
            }
            None if tokio::time::Instant::now() >= deadline => {
                return Err(format!(
                    "store.backend = \"postgres\" needs licensed's feature \"{DATABASE_FEATURE}\", but licensed did not answer on {} within {} s",
                    socket.display(),
                    GATE_WAIT.as_secs()
                ));
            }
            None => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Sends the outbox per `cfg` until `shutdown`.
pub async fn run(
    store: Store,
    metrics: Metrics,
    cfg: crate::config::ForwardSection,
    shutdown: CancellationToken,
) {
    let crate::config::ForwardSection {
        remote_write_url: url,
        batch_samples: batch,
        timeout,
        licensed_socket,
        licence_check_interval,
    } = cfg;
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(error = %err, "Cannot build the forwarding HTTP client; forwarding is off.");
            return;
        }
    };
    let mut backoff = BACKOFF_MIN;
    let mut licensed: Option<bool> = None;
    let mut next_check = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_check {
            next_check = tokio::time::Instant::now() + licence_check_interval;
            match ask(&licensed_socket, FEATURE).await {
                Some((enabled, reason)) => {
                    if licensed != Some(enabled) {
                        tracing::info!(feature = FEATURE, enabled, reason = %reason, "Forwarding licence answer.");
                    }
                    licensed = Some(enabled);
                }
                // Unreachable: keep the last answer.
                None if licensed.is_none() => {
                    tracing::warn!(socket = %licensed_socket.display(), "licensed not reachable; samples stay spooled until it answers.");
                }
                None => {}
            }
            metrics
                .forward_licensed
                .set(i64::from(licensed == Some(true)));
        }
        if licensed != Some(true) {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(next_check) => continue,
            }
        }
        let wait = match store.outbox(batch).await {
            Ok(None) => IDLE,
            Ok(Some((seq, series))) => {
                let n: usize = series.iter().map(|s| s.samples.len()).sum();
                match send(&client, &url, encode(&series)).await {
                    Outcome::Delivered => {
                        metrics.forwarded.inc_by(n as u64);
                        backoff = BACKOFF_MIN;
                        match store.outbox_delivered(seq).await {
                            Ok(()) => Duration::ZERO,
                            Err(err) => {
                                tracing::error!(error = %err, "Cannot mark forwarded samples as delivered.");
                                IDLE
                            }
                        }
                    }
                    Outcome::Refused(why) => {
                        metrics.forward_dropped.inc_by(n as u64);
                        tracing::error!(url = %url, samples = n, reason = %why, "The remote refused forwarded samples; they are dropped.");
                        let _ = store.outbox_delivered(seq).await;
                        Duration::ZERO
                    }
                    Outcome::Retry(why) => {
                        metrics.forward_failures.inc();
                        tracing::warn!(url = %url, reason = %why, "Forwarding failed; retrying.");
                        let w = backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        w
                    }
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "Cannot read the forwarding outbox.");
                IDLE
            }
        };
        if wait.is_zero() {
            if shutdown.is_cancelled() {
                return;
            }
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
