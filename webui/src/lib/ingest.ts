// Helpers of the Logs and Metrics pages: query strings and series alignment.
import type { Schemas } from "../api/client";

type SeriesView = Schemas["SeriesView"];

const PAGE = 100;
/** Severity names, 0 (emergency) to 7 (debug). */
export const SEVERITIES = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];

export interface LogFilter {
  q: string;
  host: string;
  app: string;
  severity: string;
  facility: string;
  since: string;
  until: string;
}

export const EMPTY_FILTER: LogFilter = { q: "", host: "", app: "", severity: "", facility: "", since: "", until: "" };

/** A `datetime-local` value as RFC 3339 (the browser's zone), or undefined when empty. */
function rfc3339(local: string): string | undefined {
  if (!local) return undefined;
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

/** The query string of a filter and a page cursor. */
export function logQuery(f: LogFilter, before: number | undefined) {
  const out: Record<string, string | number> = { limit: PAGE };
  if (f.q.trim()) out.q = f.q.trim();
  if (f.host.trim()) out.host = f.host.trim();
  if (f.app.trim()) out.app = f.app.trim();
  if (f.severity) out.severity = Number(f.severity);
  if (f.facility.trim()) out.facility = Number(f.facility.trim());
  const since = rfc3339(f.since);
  const until = rfc3339(f.until);
  if (since) out.since = since;
  if (until) out.until = until;
  if (before !== undefined) out.before = before;
  return out;
}

/** `{job="x", instance="y"}` of a series (without `__name__`). */
export function seriesLabel(labels: Record<string, string>): string {
  const parts = Object.entries(labels)
    .filter(([k]) => k !== "__name__")
    .map(([k, v]) => `${k}="${v}"`);
  return `{${parts.join(", ")}}`;
}

/** The x axis (unix s) shared by every series, and each series' value at each x (null = gap). */
export function align(series: SeriesView[]): { x: number[]; values: (number | null)[][] } {
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p.unix_ms)))].sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const values = series.map((s) => {
    const v: (number | null)[] = xs.map(() => null);
    for (const p of s.points) v[at.get(p.unix_ms) ?? 0] = p.value;
    return v;
  });
  return { x: xs.map((x) => x / 1000), values };
}

