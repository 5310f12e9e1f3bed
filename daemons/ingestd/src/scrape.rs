//! The scraper: every `scrape.interval` it fetches each `[scrape.targets]` URL (by default
//! the other daemons' loopback `/metrics`), parses the Prometheus text / OpenMetrics
//! exposition ([`parse_exposition`], pure) and stores every sample as a series with `job` (the
//! target's name) and `instance` labels, plus `up` (1 scraped, 0 failed), like Prometheus.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::events::Metrics;
use crate::store::{SeriesSamples, Store};

/// One parsed sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Metric name.
    pub name: String,
    /// Labels as written.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        v => v.parse().ok(),
    }
}

fn parse_line(line: &str) -> Result<Line, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() {
        return Err("no metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=').ok_or("label without '='")?;
            let key = rest[..eq].trim().to_owned();
            let r = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err("unterminated label value".into()),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            };
            labels.push((key, value));
            rest = &r[end + 1..];
        }
    }
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = parse_value(value).ok_or_else(|| format!("bad value \"{value}\""))?;
    Ok(Line {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses an exposition; lines that do not parse are returned as errors beside the samples.
pub fn parse_exposition(text: &str) -> (Vec<Line>, Vec<String>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Ok(l) => out.push(l),
            Err(e) => errors.push(format!("line {}: {e}", i + 1)),
        }
    }
    (out, errors)
}

/// The series of one scrape at `ts_ms`, `up` included.
pub fn to_series(
    job: &str,
    instance: &str,
    lines: Option<Vec<Line>>,
    ts_ms: i64,
) -> Vec<SeriesSamples> {
    let base = [
        ("job".to_owned(), job.to_owned()),
        ("instance".to_owned(), instance.to_owned()),
    ];
    let mut out = Vec::new();
    let up = if lines.is_some() { 1.0 } else { 0.0 };
    let mut by_key: BTreeMap<String, SeriesSamples> = BTreeMap::new();
    for l in lines.into_iter().flatten() {
        let mut labels: Vec<(String, String)> = l
            .labels
            .into_iter()
            .filter(|(k, _)| k != "job" && k != "instance" && k != "__name__")
            .collect();
        labels.extend(base.iter().cloned());
        labels.push(("__name__".to_owned(), l.name));
        labels.sort();
        let s = SeriesSamples {
            labels: labels.into(),
            samples: vec![(ts_ms, l.value)],
        };
        // A repeated series in one exposition keeps its last value.
        by_key.insert(s.key(), s);
    }
    out.extend(by_key.into_values());
    let mut labels: Vec<(String, String)> = base.to_vec();
    labels.push(("__name__".to_owned(), "up".to_owned()));
    labels.sort();
    out.push(SeriesSamples {
        labels: labels.into(),
        samples: vec![(ts_ms, up)],
    });
    out
}

/// Scrapes `targets` every `interval` until `shutdown`.
pub async fn run(
    store: Store,
    metrics: Metrics,
    targets: Vec<crate::config::ScrapeTarget>,
    interval: Duration,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let client = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(error = %err, "Cannot build the scrape HTTP client; scraping is off.");
            return;
        }
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ts_ms = crate::now_ns() / 1_000_000;
        let mut series = Vec::new();
        for crate::config::ScrapeTarget { job, url } in &targets {
            let instance = reqwest::Url::parse(url)
                .ok()
                .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
                .unwrap_or_else(|| url.clone());
            let body = async {
                client
                    .get(url)
                    .send()
                    .await?
                    .error_for_status()?
                    .text()
                    .await
            }
            .await;
            let lines = match body {
                Ok(text) => {
                    let (lines, errors) = parse_exposition(&text);
                    if !errors.is_empty() {
                        metrics.reject("scrape", "bad_line", errors.len() as u64);
                        tracing::debug!(job = %job, first = %errors[0], "Scrape had lines that do not parse.");
                    }
                    Some(lines)
                }
                Err(err) => {
                    metrics.reject("scrape", "scrape_failed", 1);
                    tracing::debug!(job = %job, error = %err, "Scrape failed.");
                    None
                }
            };
            series.extend(to_series(job, &instance, lines, ts_ms));
        }
        let n: usize = series.iter().map(|s| s.samples.len()).sum();
        metrics.receive("scrape", n as u64);
        // Chunks that fit the queue; a scrape waits for room like any other sender.
        let mut chunk = Vec::new();
        let mut size = 0;
        for s in series {
            if size + s.samples.len() > store.capacity() && !chunk.is_empty() {
                submit(&store, &metrics, std::mem::take(&mut chunk), size).await;
                size = 0;
            }
            size += s.samples.len();
            chunk.push(s);
        }
        if !chunk.is_empty() {
            submit(&store, &metrics, chunk, size).await;
        }
    }
}

async fn submit(store: &Store, metrics: &Metrics, series: Vec<SeriesSamples>, n: usize) {
    let result = match store.submit_samples(series).await {
        Ok(ack) => ack.committed().await,
        Err(e) => {
            metrics.reject("scrape", "store_error", n as u64);
            Err(e)
        }
    };
    if let Err(err) = result {
        tracing::warn!(error = %err, "Scraped samples not stored.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_text_and_openmetrics() {
        let text = "# HELP a_total x\n# TYPE a_total counter\na_total{code=\"200\",path=\"/a \\\"b\\\"\"} 12 1700000000000\nup 1\nb{le=\"+Inf\"} +Inf\nbroken{x=1} 2\n# EOF\n";
        let (lines, errors) = parse_exposition(text);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].name, "a_total");
        assert_eq!(
            lines[0].labels,
            [
                ("code".to_owned(), "200".to_owned()),
                ("path".to_owned(), "/a \"b\"".to_owned())
            ]
        );
        assert_eq!(lines[0].value, 12.0);
        assert!(lines[2].value.is_infinite());
        assert_eq!(errors, ["line 6: label value not quoted"]);
    }

    #[test]
    fn every_scrape_has_up_and_job_instance_labels() {
        let s = to_series("probed", "127.0.0.1:9115", None, 5);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name(), "up");
        assert_eq!(s[0].samples, [(5, 0.0)]);
        let (lines, _) = parse_exposition("x{job=\"spoof\"} 3\n");
        let s = to_series("probed", "127.0.0.1:9115", Some(lines), 5);
        assert_eq!(s.len(), 2);
        assert!(
            s[0].labels
                .contains(&("job".to_owned(), "probed".to_owned()))
        );
        assert_eq!(s[1].samples, [(5, 1.0)]);
    }
}
