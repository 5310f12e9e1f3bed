//! Prometheus remote_write 1.0 in (`POST /api/v1/write` on the HTTP ingest listener: snappy
//! block-compressed protobuf `prometheus.WriteRequest`), acknowledged with 204 after the
//! commit; and the Prometheus-compatible `GET|POST /api/v1/query_range` (the [`crate::promql`]
//! subset) on the loopback metrics listener, so Grafana can use ingestd as a data source.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rookery_common::http::ApiError;
use serde::Deserialize;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, PoisonError, RwLock};

use crate::events::Metrics;
use crate::store::{Labels, SeriesSamples, Store, StoreError};

/// Label sets the [`LabelInterner`] of the remote_write route keeps at most.
pub const INTERNED_LABEL_SETS: usize = 1_000_000;

/// Label sets already seen, shared by the remote_write handlers: a series seen before gets
/// the stored `Arc` (one hash of the borrowed labels, a content compare, a refcount
/// increment) instead of a `String` per label name and value.
///
/// Keyed by a hash of the sorted borrowed `(name, value)` pairs (foldhash, seeded per
/// process); every hit is verified by content, so a hash collision only costs a second
/// entry under the same key. A second table keys the same sets by the bytes of their label
/// fields as the sender encoded them (Prometheus sends a series' labels the same way every
/// time): a hit there skips decoding, UTF-8 checks, sorting and hashing the labels.
/// Bounded: when `cap` entries (label sets and encodings) are held, both tables are cleared
/// and refill from the following requests (series churn cannot pin them full of series that
/// are gone). Memory bound: `cap` entries plus the tables.
pub struct LabelInterner {
    hasher: foldhash::fast::RandomState,
    cap: usize,
    table: RwLock<InternTable>,
}

#[derive(Default)]
struct InternTable {
    sets: HashMap<u64, Vec<Labels>, foldhash::fast::RandomState>,
    /// The same sets by the bytes of their label fields as a sender encoded them: a series
    /// sent again the same way is found without decoding, checking or sorting its labels.
    encoded: Encodings,
    len: usize,
}

/// Label sets by a hash of their encoding, each with the encoding.
type Encodings = HashMap<u64, Vec<(Box<[u8]>, Labels)>, foldhash::fast::RandomState>;

impl LabelInterner {
    /// An empty interner holding at most `cap` label sets.
    pub fn new(cap: usize) -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            cap,
            table: RwLock::new(InternTable::default()),
        }
    }

    /// The shared label set equal to `labels` (sorted by name), allocated on first sight.
    pub fn intern(&self, labels: &[(&str, &str)]) -> Labels {
        self.intern_hashed(self.hasher.hash_one(labels), labels)
    }

    /// The label set whose label fields were encoded as `encoded` before, if it is held.
    fn by_encoding(&self, encoded: &[u8]) -> Option<Labels> {
        let hash = self.hasher.hash_one(encoded);
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        table
            .encoded
            .get(&hash)?
            .iter()
            .find(|(e, _)| **e == *encoded)
            .map(|(_, set)| Arc::clone(set))
    }

    /// Remembers that `set` was encoded as `encoded` (an entry counted against the cap like
    /// a label set).
    fn remember_encoding(&self, encoded: &[u8], set: &Labels) {
        if self.cap == 0 {
            return;
        }
        let hash = self.hasher.hash_one(encoded);
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        if table.len >= self.cap {
            table.sets.clear();
            table.encoded.clear();
            table.len = 0;
        }
        let entries = table.encoded.entry(hash).or_default();
        if entries.iter().any(|(e, _)| **e == *encoded) {
            return;
        }
        entries.push((encoded.into(), Arc::clone(set)));
        table.len += 1;
    }

    /// Label sets held now.
    pub fn len(&self) -> usize {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len
    }

    /// Whether no label set is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn intern_hashed(&self, hash: u64, labels: &[(&str, &str)]) -> Labels {
        let same = |set: &&Labels| {
            set.len() == labels.len()
                && set
                    .iter()
                    .zip(labels)
                    .all(|((k, v), (bk, bv))| k == bk && v == bv)
        };
        {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(set) = table.sets.get(&hash).and_then(|c| c.iter().find(same)) {
                return Arc::clone(set);
            }
        }
        let set: Labels = labels
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        // Another handler may have added it between the two locks.
        if let Some(found) = table.sets.get(&hash).and_then(|c| c.iter().find(same)) {
            return Arc::clone(found);
        }
        if table.len >= self.cap {
            table.sets.clear();
            table.encoded.clear();
            table.len = 0;
        }
        if self.cap > 0 {
            table.sets.entry(hash).or_default().push(Arc::clone(&set));
            table.len += 1;
        }
        set
    }
}

/// `prometheus.WriteRequest` (remote.proto); metadata (field 3) is not kept.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`; exemplars and histograms are not kept.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// A protobuf reader over a byte slice, for [`decode`]: what it returns borrows the slice.
struct Wire<'a> {
    buf: &'a [u8],
}

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Ok(v);
            }
        }
        Err("a varint is truncated or longer than 10 bytes".into())
    }

    /// The next field's number and wire type, `None` at the end.
    fn key(&mut self) -> Result<Option<(u64, u8)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let k = self.varint()?;
        #[allow(clippy::cast_possible_truncation, reason = "masked to 3 bits")]
        Ok(Some((k >> 3, (k & 7) as u8)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err(format!(
                "a field of {n} bytes runs past the end of its message ({} bytes left)",
                self.buf.len()
            ));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()?;
        self.take(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn fixed64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        Ok(u64::from_le_bytes(w))
    }

    /// Skips a field this decoder does not keep.
    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.bytes().map(drop),
            5 => self.take(4).map(drop),
            w => Err(format!("wire type {w} is not supported")),
        }
    }

    /// Reads field `what` of wire type `want`, or fails naming it.
    fn expect(&self, wire: u8, want: u8, what: &str) -> Result<(), String> {
        if wire == want {
            Ok(())
        } else {
            Err(format!("{what} has wire type {wire}, not {want}"))
        }
    }
}

fn utf8<'a>(b: &'a [u8], what: &str) -> Result<&'a str, String> {
    std::str::from_utf8(b).map_err(|e| format!("{what} is not UTF-8: {e}"))
}

/// One `prometheus.Label`: (name, value).
fn decode_label(b: &[u8]) -> Result<(&str, &str), String> {
    let mut w = Wire { buf: b };
    let (mut name, mut value) = ("", "");
    while let Some((field, wire)) = w.key()? {
        match field {
            1 => {
                w.expect(wire, 2, "Label.name")?;
                name = utf8(w.bytes()?, "a label name")?;
            }
            2 => {
                w.expect(wire, 2, "Label.value")?;
                value = utf8(w.bytes()?, "a label value")?;
            }
            _ => w.skip(wire)?,
        }
    }
    Ok((name, value))
}

/// One `prometheus.Sample`: (ms, value).
fn decode_sample(b: &[u8]) -> Result<(i64, f64), String> {
    let mut w = Wire { buf: b };
    let (mut ts, mut value) = (0i64, 0f64);
    while let Some((field, wire)) = w.key()? {
        match field {
            1 => {
                w.expect(wire, 1, "Sample.value")?;
                value = f64::from_bits(w.fixed64()?);
            }
            2 => {
                w.expect(wire, 0, "Sample.timestamp")?;
                #[allow(
                    clippy::cast_possible_wrap,
                    reason = "int64 is sent as its two's complement"
                )]
                {
                    ts = w.varint()? as i64;
                }
            }
            _ => w.skip(wire)?,
        }
    }
    Ok((ts, value))
}

/// One `prometheus.TimeSeries`: its label messages (borrowed, replacing what `labels` held;
/// decoded later, and only for a label set not seen before) and samples (appended to
/// `samples`). Returns the bytes of its label fields when they are one run, as senders write
/// them: the key of [`LabelInterner::by_encoding`].
fn decode_series<'a>(
    b: &'a [u8],
    labels: &mut Vec<&'a [u8]>,
    samples: &mut Vec<(i64, f64)>,
) -> Result<Option<&'a [u8]>, String> {
    let mut ts = Wire { buf: b };
    labels.clear();
    // Offsets of the label fields' run in `b`, and whether another field split it.
    let (mut start, mut end, mut split) = (None, 0, false);
    loop {
        let at = b.len() - ts.buf.len();
        let Some((field, wire)) = ts.key()? else {
            break;
        };
        match field {
            1 => {
                ts.expect(wire, 2, "TimeSeries.labels")?;
                labels.push(ts.bytes()?);
                split |= start.is_some() && end != at;
                start.get_or_insert(at);
                end = b.len() - ts.buf.len();
            }
            2 => {
                ts.expect(wire, 2, "TimeSeries.samples")?;
                samples.push(decode_sample(ts.bytes()?)?);
            }
            _ => ts.skip(wire)?,
        }
    }
    Ok(start.filter(|_| !split).map(|s| &b[s..end]))
}

/// The label messages `fields` of timeseries `i` decoded (into `labels`, scratch space),
/// checked (UTF-8, the limit, no name twice, a `__name__`) and interned.
fn checked_labels<'a>(
    fields: &[&'a [u8]],
    labels: &mut Vec<(&'a str, &'a str)>,
    max_labels: usize,
    i: usize,
    interner: &LabelInterner,
) -> Result<Labels, String> {
    labels.clear();
    for f in fields {
        labels.push(
            decode_label(f).map_err(|e| format!("body is not a prometheus.WriteRequest: {e}"))?,
        );
    }
    if labels.len() > max_labels {
        return Err(format!(
            "timeseries {i}: {} labels exceed store.max-labels-per-series ({max_labels})",
            labels.len()
        ));
    }
    labels.sort_unstable();
    if let Some(w) = labels.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(format!("timeseries {i}: label {} appears twice", w[0].0));
    }
    if !labels
        .iter()
        .any(|(k, v)| *k == "__name__" && !v.is_empty())
    {
        return Err(format!("timeseries {i}: no __name__ label"));
    }
    Ok(interner.intern(labels))
}

/// Decodes a remote_write body into series; the error names what is wrong.
///
/// The protobuf is read in place: labels are borrowed from the decompressed body until their
/// series has passed its checks, then looked up in `interner`: a label set seen before is
/// shared, a new one is copied once at its exact size (prost built a `String` per name and
/// value, a `Vec` per series grown as it went, then a checked copy of both).
pub fn decode(
    body: &[u8],
    max_labels: usize,
    interner: &LabelInterner,
) -> Result<Vec<SeriesSamples>, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("body is not snappy block-compressed: {e}"))?;
    let bad = |e: String| format!("body is not a prometheus.WriteRequest: {e}");
    let mut out = Vec::new();
    let mut fields: Vec<&[u8]> = Vec::new();
    let mut labels: Vec<(&str, &str)> = Vec::new();
    let mut req = Wire { buf: &raw };
    let mut i = 0usize;
    while let Some((field, wire)) = req.key().map_err(bad)? {
        if field != 1 {
            req.skip(wire).map_err(bad)?;
            continue;
        }
        let mut samples: Vec<(i64, f64)> = Vec::new();
        let encoded = req
            .expect(wire, 2, "WriteRequest.timeseries")
            .and_then(|()| decode_series(req.bytes()?, &mut fields, &mut samples))
            .map_err(bad)?;
        // A label set sent the same way before passed every check below then, except the
        // limit, which a reload may have lowered since.
        let set = match encoded.and_then(|e| interner.by_encoding(e)) {
            Some(set) if set.len() <= max_labels => set,
            _ => {
                let set = checked_labels(&fields, &mut labels, max_labels, i, interner)?;
                if let Some(e) = encoded {
                    interner.remember_encoding(e, &set);
                }
                set
            }
        };
        i += 1;
        if samples.is_empty() {
            continue;
        }
        samples.sort_by_key(|s| s.0);
        out.push(SeriesSamples {
            labels: set,
            samples,
        });
    }
    Ok(out)
}

/// State of the remote_write route.
#[derive(Clone)]
pub struct WriteCtx {
    /// Where samples go.
    pub store: Store,
    /// Counters.
    pub metrics: Metrics,
    /// Labels per series at most.
    pub max_labels: usize,
    /// Label sets of series seen before.
    pub interner: Arc<LabelInterner>,
}

/// `POST /api/v1/write`.
pub async fn write(State(ctx): State<WriteCtx>, headers: HeaderMap, body: Bytes) -> Response {
    const INPUT: &str = "remote_write";
    let enc = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !enc.eq_ignore_ascii_case("snappy") {
        ctx.metrics.reject(INPUT, "bad_request", 1);
        return ApiError::bad_request(format!(
            "Content-Encoding \"{enc}\" is not accepted (expected snappy)"
        ))
        .into_response();
    }
    let series = match decode(&body, ctx.max_labels, &ctx.interner) {
        Ok(s) => s,
        Err(msg) => {
            ctx.metrics.reject(INPUT, "bad_request", 1);
            return ApiError::bad_request(format!("{msg}; nothing of this request was stored"))
                .into_response();
        }
    };
    let n: usize = series.iter().map(|s| s.samples.len()).sum();
    ctx.metrics.receive(INPUT, n as u64);
    if n == 0 {
        return StatusCode::NO_CONTENT.into_response();
    }
    let result = match ctx.store.submit_samples(series).await {
        Ok(ack) => ack.committed().await,
        Err(e) => {
            ctx.metrics.reject(INPUT, "store_error", n as u64);
            Err(e)
        }
    };
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e @ StoreError::TooLarge(..)) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("{e}; lower queue_config.max_samples_per_send"),
        )
        .into_response(),
        // 5xx: Prometheus retries, so nothing is lost.
        Err(e) => ApiError::unavailable(format!("samples not stored: {e}")).into_response(),
    }
}

/// Parameters of `query_range`.
#[derive(Debug, Deserialize)]
pub struct RangeParams {
    query: String,
    start: String,
    end: String,
    step: String,
}

/// A Prometheus time parameter: RFC 3339 or (fractional) Unix seconds, in ms.
fn time_ms(v: &str, name: &str) -> Result<i64, String> {
    if let Ok(secs) = v.parse::<f64>() {
        #[allow(clippy::cast_possible_truncation, reason = "Unix ms fit in i64")]
        return Ok((secs * 1000.0).round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            format!("invalid parameter \"{name}\": \"{v}\" is not RFC 3339 or Unix seconds")
        })
}

fn step_ms(v: &str) -> Result<i64, String> {
    if let Ok(secs) = v.parse::<f64>() {
        #[allow(clippy::cast_possible_truncation, reason = "steps in ms fit in i64")]
        return Ok((secs * 1000.0).round() as i64);
    }
    crate::promql::parse_range(v).map_err(|e| format!("invalid parameter \"step\": {e}"))
}

fn prom_error(status: StatusCode, kind: &str, msg: String) -> Response {
    (
        status,
        Json(serde_json::json!({"status": "error", "errorType": kind, "error": msg})),
    )
        .into_response()
}

/// `GET /api/v1/query_range` (Prometheus HTTP API, the [`crate::promql`] subset).
pub async fn query_range(State(store): State<Store>, Query(p): Query<RangeParams>) -> Response {
    let parsed = (|| {
        let q = crate::promql::parse(&p.query)?;
        Ok::<_, String>((
            q,
            time_ms(&p.start, "start")?,
            time_ms(&p.end, "end")?,
            step_ms(&p.step)?,
        ))
    })();
    let (q, start, end, step) = match parsed {
        Ok(v) => v,
        Err(e) => return prom_error(StatusCode::BAD_REQUEST, "bad_data", e),
    };
    let series = match store
        .select_series(q.name.clone(), q.matchers.clone(), start - q.range_ms, end)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            return prom_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                rookery_common::error_chain(&e),
            );
        }
    };
    match crate::promql::eval(&q, &series, start, end, step) {
        Ok(out) => {
            let result: Vec<serde_json::Value> = out
                .into_iter()
                .map(|o| {
                    let metric: serde_json::Map<String, serde_json::Value> = o
                        .labels
                        .into_iter()
                        .map(|(k, v)| (k, serde_json::Value::String(v)))
                        .collect();
                    #[allow(clippy::cast_precision_loss, reason = "Unix ms fit in f64")]
                    let values: Vec<serde_json::Value> = o
                        .points
                        .into_iter()
                        .map(|(t, v)| serde_json::json!([t as f64 / 1000.0, v.to_string()]))
                        .collect();
                    serde_json::json!({"metric": metric, "values": values})
                })
                .collect();
            Json(serde_json::json!({
                "status": "success",
                "data": {"resultType": "matrix", "result": result}
            }))
            .into_response()
        }
        Err(e) => prom_error(StatusCode::BAD_REQUEST, "bad_data", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(req: &WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&prost::Message::encode_to_vec(req))
            .unwrap()
    }

    fn series(labels: &[(&str, &str)]) -> TimeSeries {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            samples: vec![Sample {
                value: 1.5,
                timestamp: 1000,
            }],
        }
    }

    #[test]
    fn decodes_and_checks_series() {
        let ok = WriteRequest {
            timeseries: vec![series(&[("job", "a"), ("__name__", "up")])],
        };
        let got = decode(&body(&ok), 8, &LabelInterner::new(16)).unwrap();
        assert_eq!(got[0].name(), "up");
        assert_eq!(got[0].labels[0].0, "__name__");
        assert_eq!(got[0].samples, [(1000, 1.5)]);
        let many = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "up")]),
                series(&[("__name__", "x"), ("a", "1"), ("b", "2")]),
            ],
        };
        assert_eq!(
            decode(&body(&many), 2, &LabelInterner::new(16)).unwrap_err(),
            "timeseries 1: 3 labels exceed store.max-labels-per-series (2)"
        );
        let noname = WriteRequest {
            timeseries: vec![series(&[("job", "a")])],
        };
        assert_eq!(
            decode(&body(&noname), 8, &LabelInterner::new(16)).unwrap_err(),
            "timeseries 0: no __name__ label"
        );
        assert!(
            decode(b"not snappy", 8, &LabelInterner::new(16))
                .unwrap_err()
                .starts_with("body is not snappy")
        );
        let twice = WriteRequest {
            timeseries: vec![series(&[("__name__", "up"), ("job", "a"), ("job", "b")])],
        };
        assert_eq!(
            decode(&body(&twice), 8, &LabelInterner::new(16)).unwrap_err(),
            "timeseries 0: label job appears twice"
        );
    }

    fn snappy(raw: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(raw).unwrap()
    }

    #[test]
    fn reads_what_prost_writes_and_skips_unknown_fields() {
        let mut req = WriteRequest {
            timeseries: vec![
                TimeSeries {
                    labels: vec![
                        Label {
                            name: "zone".into(),
                            value: "ü-1".into(),
                        },
                        Label {
                            name: "__name__".into(),
                            value: "temp".into(),
                        },
                    ],
                    samples: vec![
                        Sample {
                            value: -2.5,
                            timestamp: 2000,
                        },
                        Sample {
                            value: f64::INFINITY,
                            timestamp: -5,
                        },
                    ],
                },
                // No samples: checked, then left out.
                series(&[("__name__", "empty")]),
            ],
        };
        req.timeseries[1].samples.clear();
        let mut raw = prost::Message::encode_to_vec(&req);
        // Fields this decoder does not keep: metadata (3, a message), a varint (9), a
        // fixed32 (10), a fixed64 (11).
        raw.extend_from_slice(&[0x1a, 0x02, 0x08, 0x01]);
        raw.extend_from_slice(&[0x48, 0x96, 0x01]);
        raw.extend_from_slice(&[0x55, 1, 2, 3, 4]);
        raw.extend_from_slice(&[0x59, 1, 2, 3, 4, 5, 6, 7, 8]);
        let got = decode(&snappy(&raw), 8, &LabelInterner::new(16)).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            *got[0].labels,
            [
                ("__name__".to_owned(), "temp".to_owned()),
                ("zone".to_owned(), "ü-1".to_owned())
            ]
        );
        assert_eq!(got[0].samples, [(-5, f64::INFINITY), (2000, -2.5)]);
    }

    #[test]
    fn broken_protobuf_is_named() {
        let ok = prost::Message::encode_to_vec(&WriteRequest {
            timeseries: vec![series(&[("__name__", "up")])],
        });
        let cut = &ok[..ok.len() - 3];
        let err = decode(&snappy(cut), 8, &LabelInterner::new(16)).unwrap_err();
        assert!(
            err.starts_with("body is not a prometheus.WriteRequest: a field of"),
            "{err}"
        );
        // Field 1 as a varint instead of a message.
        let err = decode(&snappy(&[0x08, 0x01]), 8, &LabelInterner::new(16)).unwrap_err();
        assert_eq!(
            err,
            "body is not a prometheus.WriteRequest: WriteRequest.timeseries has wire type 0, not 2"
        );
        // A label name that is not UTF-8.
        let bad = [0x0a, 0x06, 0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe];
        let err = decode(&snappy(&bad), 8, &LabelInterner::new(16)).unwrap_err();
        assert!(
            err.starts_with("body is not a prometheus.WriteRequest: a label name is not UTF-8"),
            "{err}"
        );
        // Wire type 3 (a group).
        let err = decode(&snappy(&[0x1b]), 8, &LabelInterner::new(16)).unwrap_err();
        assert_eq!(
            err,
            "body is not a prometheus.WriteRequest: wire type 3 is not supported"
        );
    }

    #[test]
    fn interner_shares_equal_label_sets_and_keeps_its_bound() {
        let i = LabelInterner::new(4);
        let up = [("__name__", "up"), ("job", "a")];
        let a = i.intern(&up);
        let b = i.intern(&up);
        assert!(
            Arc::ptr_eq(&a, &b),
            "the same labels must give the same Arc"
        );
        assert_eq!(
            *a,
            [
                ("__name__".to_owned(), "up".to_owned()),
                ("job".to_owned(), "a".to_owned())
            ]
        );
        assert_eq!(i.len(), 1);
        // A forced hash collision: different content under one key stays apart.
        let down = [("__name__", "up"), ("job", "b")];
        let c = i.intern_hashed(7, &up);
        let d = i.intern_hashed(7, &down);
        assert!(!Arc::ptr_eq(&c, &d));
        assert_eq!(d[1].1, "b");
        assert!(Arc::ptr_eq(&c, &i.intern_hashed(7, &up)));
        assert!(Arc::ptr_eq(&d, &i.intern_hashed(7, &down)));
        // Pairs that concatenate alike are still different label sets.
        let e = i.intern_hashed(7, &[("__name__", "upjob"), ("", "b")]);
        assert!(!Arc::ptr_eq(&e, &d));
        assert_eq!(i.len(), 4);
        // Full: the next new label set clears the table and starts it again.
        let f = i.intern(&[("__name__", "other")]);
        assert_eq!(i.len(), 1);
        assert!(Arc::ptr_eq(&f, &i.intern(&[("__name__", "other")])));
        let a2 = i.intern(&up);
        assert!(!Arc::ptr_eq(&a, &a2), "cleared sets are allocated again");
        assert_eq!(*a, *a2);
        assert_eq!(i.len(), 2);
        // A zero bound keeps nothing but still answers.
        let none = LabelInterner::new(0);
        assert_eq!(*none.intern(&up), *a);
        assert!(none.is_empty());
    }

    #[test]
    fn decode_shares_labels_of_known_series() {
        let req = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "up"), ("job", "a")]),
                series(&[("job", "a"), ("__name__", "up")]),
            ],
        };
        let i = LabelInterner::new(16);
        let got = decode(&body(&req), 8, &i).unwrap();
        let again = decode(&body(&req), 8, &i).unwrap();
        assert!(Arc::ptr_eq(&got[0].labels, &got[1].labels));
        assert!(Arc::ptr_eq(&got[0].labels, &again[0].labels));
        // One label set, remembered under its two encodings.
        assert_eq!(i.len(), 3);
        assert_eq!(got, again);
        // A limit lowered since (a reload) still applies to a series known by its encoding.
        assert_eq!(
            decode(&body(&req), 1, &i).unwrap_err(),
            "timeseries 0: 2 labels exceed store.max-labels-per-series (1)"
        );
    }

    #[test]
    fn labels_split_by_samples_decode_the_same_and_are_not_remembered_by_encoding() {
        // Label, sample, label: the label fields are not one run of bytes.
        let mut raw = Vec::new();
        let field = |out: &mut Vec<u8>, n: u8, payload: &[u8]| {
            out.push(n << 3 | 2);
            out.push(u8::try_from(payload.len()).unwrap());
            out.extend_from_slice(payload);
        };
        let label = |name: &str, value: &str| {
            let mut l = Vec::new();
            field(&mut l, 1, name.as_bytes());
            field(&mut l, 2, value.as_bytes());
            l
        };
        let mut sample = vec![0x09];
        sample.extend_from_slice(&2.5_f64.to_le_bytes());
        sample.extend_from_slice(&[0x10, 0x05]);
        let mut ts = Vec::new();
        field(&mut ts, 1, &label("job", "x"));
        field(&mut ts, 2, &sample);
        field(&mut ts, 1, &label("__name__", "up"));
        field(&mut raw, 1, &ts);
        let i = LabelInterner::new(16);
        for _ in 0..2 {
            let got = decode(&snappy(&raw), 8, &i).unwrap();
            assert_eq!(
                got,
                [SeriesSamples {
                    labels: vec![
                        ("__name__".to_owned(), "up".to_owned()),
                        ("job".to_owned(), "x".to_owned())
                    ]
                    .into(),
                    samples: vec![(5, 2.5)],
                }]
            );
        }
        assert_eq!(i.len(), 1, "the label set only");
    }
}
