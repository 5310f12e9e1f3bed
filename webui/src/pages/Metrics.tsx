// Metric series from ingestd over a range: name, label matchers, function, range; one uPlot
// chart of the series picked from the answer.
import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { useMemo, useState, type FormEvent } from "react";
import { api, unwrap } from "../api/client";
import { PALETTE, TimeChart, type Series } from "../components/Chart";
import { ErrorNote, Field, Loading } from "../components/ui";
import { align, seriesLabel } from "../lib/ingest";

type Fn = "last" | "rate" | "avg_over_time" | "min_over_time" | "max_over_time";

/** Ranges offered, in minutes. */
const RANGES: [string, number][] = [["15 minutes", 15], ["1 hour", 60], ["6 hours", 360], ["24 hours", 1440], ["7 days", 10080]];
/** About this many points across the chart. */
const POINTS = 240;
/** Most series drawn at once. */
const MAX_DRAWN = 12;

interface Form {
  name: string;
  match: string;
  fn: Fn;
  minutes: number;
}

export function Metrics() {
  const [draft, setDraft] = useState<Form>({ name: "up", match: "", fn: "last", minutes: 60 });
  const [form, setForm] = useState<Form | null>(null);
  const [end, setEnd] = useState(0);
  const [hidden, setHidden] = useState<Set<string>>(new Set());
  const query = useQuery({
    queryKey: ["metrics", form, end],
    enabled: form !== null,
    queryFn: () => {
      const f = form as Form;
      const start = end - f.minutes * 60_000;
      const step = Math.max(1000, Math.round((end - start) / POINTS));
      return unwrap(
        api.GET("/api/v1/metrics/query_range", {
          params: {
            query: {
              name: f.name.trim(),
              match: f.match.trim() || undefined,
              function: f.fn,
              start_ms: start,
              end_ms: end,
              step_ms: step,
            },
          },
        }),
      );
    },
    placeholderData: keepPreviousData,
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setForm(draft);
    setEnd(Date.now());
    setHidden(new Set());
  };
  const chart = useMemo(() => {
    const all = query.data ?? [];
    const shown = all.filter((s) => !hidden.has(seriesLabel(s.labels))).slice(0, MAX_DRAWN);
    const { x, values } = align(shown);
    const series: Series[] = shown.map((s, i) => ({
      label: seriesLabel(s.labels),
      values: values[i] ?? [],
      color: PALETTE[i % PALETTE.length] ?? "#1d4e89",
    }));
    return { x, series };
  }, [query.data, hidden]);
  const toggle = (label: string) => {
    const next = new Set(hidden);
    if (next.has(label)) next.delete(label);
    else next.add(label);
    setHidden(next);
  };

  return (
    <>
      <h1>Metrics</h1>
      <form onSubmit={submit} aria-label="Query a metric" className="filters">
        <Field label="Metric name">
          {(id) => <input id={id} required value={draft.name} onChange={(e) => setDraft({ ...draft, name: e.target.value })} />}
        </Field>
        <Field label="Label matchers">
          {(id) => (
            <input id={id} value={draft.match} placeholder='job="ingestd", instance=~"127.*"' onChange={(e) => setDraft({ ...draft, match: e.target.value })} />
          )}
        </Field>
        <Field label="Function">
          {(id) => (
            <select id={id} value={draft.fn} onChange={(e) => setDraft({ ...draft, fn: e.target.value as Fn })}>
              <option value="last">last value</option>
              <option value="rate">rate (per second)</option>
              <option value="avg_over_time">average over 5 min</option>
              <option value="min_over_time">minimum over 5 min</option>
              <option value="max_over_time">maximum over 5 min</option>
            </select>
          )}
        </Field>
        <Field label="Range">
          {(id) => (
            <select id={id} value={draft.minutes} onChange={(e) => setDraft({ ...draft, minutes: Number(e.target.value) })}>
              {RANGES.map(([label, m]) => <option key={m} value={m}>last {label}</option>)}
            </select>
          )}
        </Field>
        <div className="actions"><button type="submit" className="primary">Show</button></div>
      </form>
      <p className="muted">
        ingestd stores what it scrapes from the daemons' /metrics and what Prometheus remote_write or OTLP send it; it
        does not list metric names, so type one (e.g. <code>up</code>).
      </p>
      {form && query.isPending && <Loading what="the series" />}
      <ErrorNote error={query.error} />
      {query.data && (
        <>
          <p className="muted" role="status">
            {query.data.length} series of {form?.name}
            {query.data.length > MAX_DRAWN ? ` (the first ${MAX_DRAWN} shown ones are drawn)` : ""}
          </p>
          {chart.series.length > 0 && chart.x.length > 0 && (
            <TimeChart x={chart.x} series={chart.series} title={`${form?.name ?? ""} over the last ${form?.minutes ?? 0} minutes`} />
          )}
          {query.data.length > 0 && (
            <fieldset>
              <legend>Series</legend>
              {query.data.map((s) => {
                const label = seriesLabel(s.labels);
                return (
                  <label key={label} className="series-pick">
                    <input type="checkbox" checked={!hidden.has(label)} onChange={() => toggle(label)} /> {label}{" "}
                    <span className="muted">({s.points.length} points)</span>
                  </label>
                );
              })}
            </fieldset>
          )}
        </>
      )}
    </>
  );
}
