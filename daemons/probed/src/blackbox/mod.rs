//! The blackbox_exporter-compatible `/probe?module=&target=` endpoint: runs one probe now and
//! answers in the Prometheus text format with blackbox's metric names (`probe_success`,
//! `probe_duration_seconds`, `probe_http_status_code`, `probe_ssl_earliest_cert_expiry`, …),
//! so an existing scrape config can point at probed instead. Like blackbox, the probe timeout
//! follows `X-Prometheus-Scrape-Timeout-Seconds` (minus half a second) when it is shorter.
//!
//! [`render`] is pure (outcome in, text out); [`router`] wires it into the metrics listener.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::config::Prober;
use crate::probe::{Outcome, Phase};
use crate::scheduler::Scheduler;

/// Content type of the Prometheus text format, as blackbox answers.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Margin kept below Prometheus' scrape timeout, as blackbox does.
const SCRAPE_MARGIN: Duration = Duration::from_millis(500);

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn labelled(out: &mut String, name: &str, help: &str, rows: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, v) in rows {
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `/probe` answer body for `outcome` of a `prober` probe.
pub fn render(prober: Prober, outcome: &Outcome) -> String {
    let mut out = String::new();
    let f = &outcome.facts;
    let phase = |p: Phase| outcome.phase(p).map_or(0.0, |d| d.as_secs_f64());
    if outcome.phases.iter().any(|(p, _)| *p == Phase::Resolve) {
        gauge(
            &mut out,
            "probe_dns_lookup_time_seconds",
            "Returns the time taken for probe dns lookup in seconds",
            phase(Phase::Resolve),
        );
    }
    gauge(
        &mut out,
        "probe_duration_seconds",
        "Returns how long the probe took to complete in seconds",
        outcome.total.as_secs_f64(),
    );
    if let Some(ip) = f.ip {
        gauge(
            &mut out,
            "probe_ip_protocol",
            "Specifies whether probe ip protocol is IP4 or IP6",
            if ip.is_ipv4() { 4.0 } else { 6.0 },
        );
    }
    match prober {
        Prober::Http | Prober::Http3 => {
            let rows: Vec<(String, f64)> = [
                ("resolve", Phase::Resolve),
                ("connect", Phase::Connect),
                ("tls", Phase::Tls),
                ("processing", Phase::FirstByte),
                ("transfer", Phase::Transfer),
            ]
            .iter()
            .map(|(n, p)| (format!("phase=\"{n}\""), phase(*p)))
            .collect();
            labelled(
                &mut out,
                "probe_http_duration_seconds",
                "Duration of http request by phase, summed over all redirects",
                &rows,
            );
            gauge(
                &mut out,
                "probe_http_status_code",
                "Response HTTP status code",
                f64::from(f.http_status.unwrap_or(0)),
            );
            gauge(
                &mut out,
                "probe_http_version",
                "Returns the version of HTTP of the probe response",
                f.http_version.unwrap_or(0.0),
            );
            gauge(
                &mut out,
                "probe_http_redirects",
                "The number of redirects",
                f64::from(f.redirects),
            );
            gauge(
                &mut out,
                "probe_http_ssl",
                "Indicates if SSL was used for the final redirect",
                if f.tls.is_some() { 1.0 } else { 0.0 },
            );
            if let Some(n) = f.body_bytes {
                gauge(
                    &mut out,
                    "probe_http_uncompressed_body_length",
                    "Length of uncompressed response body",
                    n as f64,
                );
            }
        }
        Prober::Dns => {
            if let Some(d) = &f.dns {
                gauge(
                    &mut out,
                    "probe_dns_answer_rrs",
                    "Returns number of entries in the answer resource record list",
                    d.counts[0] as f64,
                );
                gauge(
                    &mut out,
                    "probe_dns_authority_rrs",
                    "Returns number of entries in the authority resource record list",
                    d.counts[1] as f64,
                );
                gauge(
                    &mut out,
                    "probe_dns_additional_rrs",
                    "Returns number of entries in the additional resource record list",
                    d.counts[2] as f64,
                );
            }
        }
        Prober::Icmp => {
            let mut rows = vec![
                ("phase=\"resolve\"".to_owned(), phase(Phase::Resolve)),
                ("phase=\"setup\"".to_owned(), phase(Phase::Connect)),
            ];
            if let Some(i) = &f.icmp {
                if let Some((min, avg, max, sd)) = i.stats() {
                    rows.push(("phase=\"rtt\"".to_owned(), avg));
                    labelled(
                        &mut out,
                        "probe_icmp_rtt_seconds",
                        "Round-trip time statistics of the echo replies (rookery extension)",
                        &[
                            ("stat=\"min\"".to_owned(), min),
                            ("stat=\"avg\"".to_owned(), avg),
                            ("stat=\"max\"".to_owned(), max),
                            ("stat=\"stddev\"".to_owned(), sd),
                        ],
                    );
                }
                gauge(
                    &mut out,
                    "probe_icmp_loss_ratio",
                    "Fraction of echo requests without reply (rookery extension)",
                    i.loss(),
                );
            }
            labelled(
                &mut out,
                "probe_icmp_duration_seconds",
                "Duration of icmp request by phase",
                &rows,
            );
        }
        _ => {}
    }
    if let Some(t) = &f.tls {
        if let Some(exp) = t.earliest_expiry {
            gauge(
                &mut out,
                "probe_ssl_earliest_cert_expiry",
                "Returns last SSL chain expiry in unixtime",
                exp as f64,
            );
        }
        if !t.version.is_empty() {
            labelled(
                &mut out,
                "probe_tls_version_info",
                "Returns the TLS version used or NaN when unknown",
                &[(format!("version=\"{}\"", escape(&t.version)), 1.0)],
            );
            if !t.cipher.is_empty() {
                labelled(
                    &mut out,
                    "probe_tls_cipher_info",
                    "Returns the TLS cipher negotiated during handshake",
                    &[(format!("cipher=\"{}\"", escape(&t.cipher)), 1.0)],
                );
            }
        }
    }
    if let Some(failure) = &outcome.failure {
        let regex = matches!(failure, crate::probe::Failure::BodyMismatch);
        if matches!(
            prober,
            Prober::Http | Prober::Http3 | Prober::Tcp | Prober::Udp
        ) {
            gauge(
                &mut out,
                "probe_failed_due_to_regex",
                "Indicates if probe failed due to regex",
                if regex { 1.0 } else { 0.0 },
            );
        }
        labelled(
            &mut out,
            "probe_failure_info",
            "Why the probe failed (rookery extension)",
            &[(
                format!(
                    "reason=\"{}\",message=\"{}\"",
                    failure.code(),
                    escape(&failure.to_string())
                ),
                1.0,
            )],
        );
    } else if matches!(
        prober,
        Prober::Http | Prober::Http3 | Prober::Tcp | Prober::Udp
    ) {
        gauge(
            &mut out,
            "probe_failed_due_to_regex",
            "Indicates if probe failed due to regex",
            0.0,
        );
    }
    gauge(
        &mut out,
        "probe_success",
        "Displays whether or not the probe was a success",
        if outcome.success { 1.0 } else { 0.0 },
    );
    out
}

/// The `/probe` route, to merge into the metrics listener's router.
pub fn router(scheduler: Arc<Scheduler>) -> axum::Router {
    axum::Router::new()
        .route("/probe", get(probe))
        .with_state(scheduler)
}

async fn probe(
    State(scheduler): State<Arc<Scheduler>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let text = |status: StatusCode, body: String| {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    };
    let Some(target) = q.get("target").filter(|t| !t.is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "Target parameter is missing\n".to_owned(),
        );
    };
    let module_name = q.get("module").map_or("http_2xx", String::as_str);
    let Some(module) = scheduler.module(module_name) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "Unknown module \"{module_name}\" (configured: {})\n",
                scheduler.module_names().join(", ")
            ),
        );
    };
    let scrape_timeout = headers
        .get("x-prometheus-scrape-timeout-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64(s).saturating_sub(SCRAPE_MARGIN))
        .filter(|d| !d.is_zero());
    match scheduler.run_now(module_name, target, scrape_timeout).await {
        Some(outcome) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)],
            render(module.module.prober, &outcome),
        )
            .into_response(),
        None => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "probed is shutting down\n".to_owned(),
        ),
    }
}
