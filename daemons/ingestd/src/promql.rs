//! The metrics query subset: a selector `name{label="v", l2!="v", l3=~"re", l4!~"re"}`,
//! optionally inside `rate(…[range])`, `avg_over_time`, `min_over_time`, `max_over_time`,
//! optionally wrapped in `sum by (labels) (…)`; evaluated over a range with a step. Pure:
//! parsing and evaluation take values and return values.
//!
//! Semantics follow Prometheus where they overlap: a plain selector takes, at each step, the
//! newest sample within the 5-minute lookback; `rate` is the per-second increase between the
//! first and last samples inside the range window, counter resets included, without
//! Prometheus' extrapolation to the window edges.

use std::collections::BTreeMap;

use crate::store::SeriesSamples;

/// Prometheus' default lookback of a plain selector.
pub const LOOKBACK_MS: i64 = 5 * 60 * 1000;
/// Most points one query may produce per series: bounds memory and response size.
pub const MAX_POINTS: i64 = 11_000;

/// How a label is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~` (anchored regex)
    Re,
    /// `!~`
    NotRe,
}

/// One label matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Operator.
    pub op: MatchOp,
    /// Value or regex source.
    pub value: String,
    re: Option<regex::Regex>,
}

impl Matcher {
    /// A matcher; regexes are anchored like Prometheus'.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, String> {
        let re = match op {
            MatchOp::Re | MatchOp::NotRe => Some(
                regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("bad regex for label {name}: {e}"))?,
            ),
            _ => None,
        };
        Ok(Self {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            re,
        })
    }

    /// Whether `labels` pass (an absent label matches as "").
    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        let v = labels
            .iter()
            .find(|(k, _)| *k == self.name)
            .map_or("", |(_, v)| v.as_str());
        match (self.op, &self.re) {
            (MatchOp::Eq, _) => v == self.value,
            (MatchOp::Ne, _) => v != self.value,
            (MatchOp::Re, Some(re)) => re.is_match(v),
            (MatchOp::NotRe, Some(re)) => !re.is_match(v),
            _ => false,
        }
    }
}

/// What is computed per series and step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// The newest sample within the lookback.
    Last,
    /// Per-second increase over the range.
    Rate,
    /// Mean of the samples in the range.
    Avg,
    /// Smallest sample in the range.
    Min,
    /// Largest sample in the range.
    Max,
}

/// A parsed query.
#[derive(Debug, Clone)]
pub struct Query {
    /// Metric name (required).
    pub name: String,
    /// Other matchers.
    pub matchers: Vec<Matcher>,
    /// Function.
    pub function: Function,
    /// Range of the function's window in ms (lookback for `Last`).
    pub range_ms: i64,
    /// `sum by (these)` when set.
    pub sum_by: Option<Vec<String>>,
}

/// One output series.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Labels (without `__name__` once a function or sum applied).
    pub labels: Vec<(String, String)>,
    /// (timestamp ms, value).
    pub points: Vec<(i64, f64)>,
}

/// Parses a duration like `30s`, `5m`, `1h`, `2d` into ms.
pub fn parse_range(text: &str) -> Result<i64, String> {
    let bad = || format!("bad range \"{text}\" (expected e.g. \"30s\", \"5m\", \"1h\")");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let mul = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mul).filter(|v| *v > 0).ok_or_else(bad)
}

struct P<'a> {
    s: &'a str,
}

impl<'a> P<'a> {
    fn ws(&mut self) {
        self.s = self.s.trim_start();
    }
    fn eat(&mut self, t: &str) -> bool {
        self.ws();
        if let Some(r) = self.s.strip_prefix(t) {
            self.s = r;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, t: &str) -> Result<(), String> {
        if self.eat(t) {
            Ok(())
        } else {
            Err(format!("expected '{t}' at \"{}\"", self.s))
        }
    }
    fn ident(&mut self) -> Result<&'a str, String> {
        self.ws();
        let end = self
            .s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(self.s.len());
        if end == 0 || self.s.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("expected a name at \"{}\"", self.s));
        }
        let (id, rest) = self.s.split_at(end);
        self.s = rest;
        Ok(id)
    }
    fn string(&mut self) -> Result<String, String> {
        self.ws();
        let q = self
            .s
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
            .ok_or_else(|| format!("expected a quoted string at \"{}\"", self.s))?;
        let mut out = String::new();
        let mut chars = self.s[1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, e)) => out.push(e),
                    None => break,
                },
                c if c == q => {
                    self.s = &self.s[1 + i + 1..];
                    return Ok(out);
                }
                c => out.push(c),
            }
        }
        Err("unterminated string".to_owned())
    }
    fn selector(&mut self) -> Result<(String, Vec<Matcher>), String> {
        let name = self.ident()?.to_owned();
        let mut matchers = Vec::new();
        if self.eat("{") {
            while !self.eat("}") {
                let label = self.ident()?.to_owned();
                self.ws();
                let op = if self.eat("=~") {
                    MatchOp::Re
                } else if self.eat("!~") {
                    MatchOp::NotRe
                } else if self.eat("!=") {
                    MatchOp::Ne
                } else if self.eat("=") {
                    MatchOp::Eq
                } else {
                    return Err(format!("expected =, !=, =~ or !~ at \"{}\"", self.s));
                };
                let value = self.string()?;
                matchers.push(Matcher::new(&label, op, &value)?);
                if !self.eat(",") {
                    self.expect("}")?;
                    break;
                }
            }
        }
        Ok((name, matchers))
    }
}

/// Parses the supported subset (see the module documentation).
pub fn parse(text: &str) -> Result<Query, String> {
    let mut p = P { s: text };
    let mut sum_by = None;
    let mut wrapped = false;
    if p.eat("sum") {
        p.ws();
        let mut labels = Vec::new();
        if p.eat("by") {
            p.expect("(")?;
            while !p.eat(")") {
                labels.push(p.ident()?.to_owned());
                if !p.eat(",") {
                    p.expect(")")?;
                    break;
                }
            }
        }
        sum_by = Some(labels);
        p.expect("(")?;
        wrapped = true;
    }
    let save = p.s;
    let function = match p.ident()? {
        "rate" => Some(Function::Rate),
        "avg_over_time" => Some(Function::Avg),
        "min_over_time" => Some(Function::Min),
        "max_over_time" => Some(Function::Max),
        _ => None,
    };
    let (function, name, matchers, range_ms) = match function {
        Some(f) if p.eat("(") => {
            let (name, matchers) = p.selector()?;
            p.expect("[")?;
            p.ws();
            let end = p.s.find(']').ok_or("expected ']'")?;
            let range = parse_range(p.s[..end].trim())?;
            p.s = &p.s[end + 1..];
            p.expect(")")?;
            (f, name, matchers, range)
        }
        _ => {
            p.s = save;
            let (name, matchers) = p.selector()?;
            (Function::Last, name, matchers, LOOKBACK_MS)
        }
    };
    if wrapped {
        p.expect(")")?;
    }
    p.ws();
    if !p.s.is_empty() {
        return Err(format!(
            "unsupported query syntax at \"{}\" (supported: selector, rate/avg_over_time/min_over_time/max_over_time(selector[range]), sum by (labels) (…))",
            p.s
        ));
    }
    Ok(Query {
        name,
        matchers,
        function,
        range_ms,
        sum_by,
    })
}

fn apply(f: Function, window: &[(i64, f64)]) -> Option<f64> {
    let (first, last) = (window.first()?, window.last()?);
    match f {
        Function::Last => Some(last.1),
        Function::Rate => {
            if window.len() < 2 || last.0 == first.0 {
                return None;
            }
            let mut increase = 0.0;
            for w in window.windows(2) {
                let d = w[1].1 - w[0].1;
                // A drop is a counter reset: the counter restarted from zero.
                increase += if d < 0.0 { w[1].1 } else { d };
            }
            #[allow(
                clippy::cast_precision_loss,
                reason = "ms spans of a query range fit in f64"
            )]
            let secs = (last.0 - first.0) as f64 / 1000.0;
            Some(increase / secs)
        }
        Function::Avg => {
            #[allow(clippy::cast_precision_loss, reason = "window sizes fit in f64")]
            let n = window.len() as f64;
            Some(window.iter().map(|s| s.1).sum::<f64>() / n)
        }
        Function::Min => window.iter().map(|s| s.1).reduce(f64::min),
        Function::Max => window.iter().map(|s| s.1).reduce(f64::max),
    }
}

/// Evaluates `q` over `series` (already selected, samples sorted by time) at
/// `start, start+step, … ≤ end` (ms).
pub fn eval(
    q: &Query,
    series: &[SeriesSamples],
    start: i64,
    end: i64,
    step: i64,
) -> Result<Vec<Output>, String> {
    if step <= 0 {
        return Err("step must be positive".to_owned());
    }
    if end < start {
        return Err("end is before start".to_owned());
    }
    if (end - start) / step + 1 > MAX_POINTS {
        return Err(format!(
            "more than {MAX_POINTS} points per series; increase the step"
        ));
    }
    let mut out = Vec::new();
    for s in series {
        let mut points = Vec::new();
        let mut t = start;
        while t <= end {
            let lo = s.samples.partition_point(|(ts, _)| *ts <= t - q.range_ms);
            let hi = s.samples.partition_point(|(ts, _)| *ts <= t);
            if let Some(v) = apply(q.function, &s.samples[lo..hi]) {
                points.push((t, v));
            }
            t += step;
        }
        if points.is_empty() {
            continue;
        }
        let labels = if q.function == Function::Last {
            s.labels.to_vec()
        } else {
            s.labels
                .iter()
                .filter(|(k, _)| k != "__name__")
                .cloned()
                .collect()
        };
        out.push(Output { labels, points });
    }
    let Some(by) = &q.sum_by else {
        return Ok(out);
    };
    let mut groups: BTreeMap<Vec<(String, String)>, BTreeMap<i64, f64>> = BTreeMap::new();
    for o in out {
        let key: Vec<(String, String)> = o
            .labels
            .iter()
            .filter(|(k, _)| by.contains(k))
            .cloned()
            .collect();
        let g = groups.entry(key).or_default();
        for (t, v) in o.points {
            *g.entry(t).or_insert(0.0) += v;
        }
    }
    Ok(groups
        .into_iter()
        .map(|(labels, points)| Output {
            labels,
            points: points.into_iter().collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> SeriesSamples {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        SeriesSamples {
            labels: labels.into(),
            samples: samples.to_vec(),
        }
    }

    #[test]
    fn parses_selectors_functions_and_sum_by() {
        let q =
            parse(r#"sum by (job) (rate(http_total{code=~"5..", method!="GET"}[5m]))"#).unwrap();
        assert_eq!(q.name, "http_total");
        assert_eq!(q.function, Function::Rate);
        assert_eq!(q.range_ms, 300_000);
        assert_eq!(q.sum_by, Some(vec!["job".to_owned()]));
        assert_eq!(q.matchers.len(), 2);
        assert!(q.matchers[0].matches(&[("code".into(), "503".into())]));
        assert!(!q.matchers[0].matches(&[("code".into(), "5030".into())]));
        let q = parse("up").unwrap();
        assert_eq!((q.function, q.matchers.len()), (Function::Last, 0));
        for bad in ["rate(up)", "up{a=b}", "up[5m]", "up + 1", "rate(up[5x])"] {
            assert!(parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn rate_handles_counter_resets_and_sum_by_groups() {
        let a = series(
            &[("__name__", "c"), ("job", "x"), ("i", "1")],
            &[(0, 0.0), (10_000, 10.0), (20_000, 2.0), (30_000, 12.0)],
        );
        let b = series(
            &[("__name__", "c"), ("job", "x"), ("i", "2")],
            &[(0, 0.0), (30_000, 30.0)],
        );
        let q = parse("rate(c[1m])").unwrap();
        let out = eval(&q, &[a.clone(), b.clone()], 30_000, 30_000, 1000).unwrap();
        // a: 10 + reset(2) + 10 = 22 over 30 s; b: 30 over 30 s.
        assert_eq!(out[0].points, [(30_000, 22.0 / 30.0)]);
        assert_eq!(out[1].points, [(30_000, 1.0)]);
        let q = parse("sum by (job) (rate(c[1m]))").unwrap();
        let out = eval(&q, &[a.clone(), b], 30_000, 30_000, 1000).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].labels, [("job".to_owned(), "x".to_owned())]);
        assert!((out[0].points[0].1 - (22.0 / 30.0 + 1.0)).abs() < 1e-9);
        let q = parse("max_over_time(c[15s])").unwrap();
        let out = eval(&q, std::slice::from_ref(&a), 10_000, 30_000, 10_000).unwrap();
        assert_eq!(
            out[0].points,
            [(10_000, 10.0), (20_000, 10.0), (30_000, 12.0)]
        );
        // The same windows: {0, 10}, {10, 2}, {2, 12}.
        let q = parse("min_over_time(c[15s])").unwrap();
        let out = eval(&q, std::slice::from_ref(&a), 10_000, 30_000, 10_000).unwrap();
        assert_eq!(out[0].points, [(10_000, 0.0), (20_000, 2.0), (30_000, 2.0)]);
        let q = parse("avg_over_time(c[15s])").unwrap();
        let out = eval(&q, &[a], 10_000, 30_000, 10_000).unwrap();
        assert_eq!(out[0].points, [(10_000, 5.0), (20_000, 6.0), (30_000, 7.0)]);
    }
}
