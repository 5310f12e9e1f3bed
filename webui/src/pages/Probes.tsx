// Probe targets (filtered, paginated: thousands stay responsive), and per target its timing
// chart, recent results, escalation history and "run now".
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useMemo, useState } from "react";
import { useSearchParams } from "react-router";
import { api, unwrap } from "../api/client";
import { useAuth } from "../auth";
import { PALETTE, TimeChart, type Series } from "../components/Chart";
import { ErrorNote, Field, Loading, Pager, StatusBadge } from "../components/ui";
import { atLeast } from "../lib/roles";
import { pageOf, seconds } from "../lib/text";
import { useResults, useTargets, type ProbeResult, type Target } from "../queries";

const PAGE = 50;
const PHASES = ["resolve", "connect", "tls", "processing", "transfer"];

export function Probes() {
  const targets = useTargets();
  const [params, setParams] = useSearchParams();
  const selected = params.get("target") ?? undefined;
  const [filter, setFilter] = useState("");
  const [page, setPage] = useState(0);
  const filtered = useMemo(() => {
    const f = filter.trim().toLowerCase();
    const all = targets.data ?? [];
    if (!f) return all;
    return all.filter((t) =>
      [t.name, t.module, t.prober, t.address, ...Object.values(t.labels)].some((s) => s.toLowerCase().includes(f)),
    );
  }, [targets.data, filter]);
  const shown = pageOf(filtered, page, PAGE);
  const target = targets.data?.find((t) => t.name === selected);

  return (
    <>
      <h1>Probes</h1>
      {targets.isPending && <Loading what="probe targets" />}
      <ErrorNote error={targets.error} />
      {targets.data && (
        <section aria-labelledby="targets-h">
          <h2 id="targets-h">Targets ({targets.data.length})</h2>
          <Field label="Filter targets" hint="Matches name, module, prober, address or a label value.">
            {(id, hint) => (
              <input id={id} type="search" aria-describedby={hint} value={filter}
                onChange={(e) => { setFilter(e.target.value); setPage(0); }} />
            )}
          </Field>
          <table>
            <thead>
              <tr><th scope="col">Name</th><th scope="col">Module</th><th scope="col">Address</th><th scope="col">Interval</th><th scope="col">Last result</th><th scope="col">Total time</th><th scope="col">Tier</th></tr>
            </thead>
            <tbody>
              {shown.rows.map((t) => (
                <tr key={t.name} aria-selected={t.name === selected} className={t.name === selected ? "selected" : undefined}>
                  <th scope="row">
                    <button type="button" className="link" onClick={() => setParams({ target: t.name })}>
                      {t.name}
                    </button>
                  </th>
                  <td>{t.module} ({t.prober})</td>
                  <td className="wrap">{t.address}</td>
                  <td>{(t.interval_ms / 1000).toFixed(0)} s</td>
                  <td>{t.last ? <StatusBadge ok={t.last.success} text={t.last.reason} /> : "not probed yet"}</td>
                  <td>{t.last ? seconds(t.last.total_seconds) : "–"}</td>
                  <td>{t.tier}{t.tier_reason ? `: ${t.tier_reason}` : ""}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {filtered.length === 0 && <p className="muted">No target matches.</p>}
          {shown.pages > 1 && <Pager label="Targets" page={shown.page} pages={shown.pages} onPage={setPage} />}
        </section>
      )}
      {selected && <TargetDetail name={selected} target={target} />}
    </>
  );
}

function timing(results: ProbeResult[]): { x: number[]; series: Series[] } {
  const sorted = [...results].sort((a, b) => a.started_unix_ms - b.started_unix_ms);
  const x = sorted.map((r) => r.started_unix_ms / 1000);
  const ms = (v: number | undefined) => (v === undefined ? null : v * 1000);
  const present = PHASES.filter((p) => sorted.some((r) => r.phases.some((ph) => ph.phase === p)));
  const series: Series[] = [
    { label: "total (ms)", values: sorted.map((r) => ms(r.total_seconds)), color: PALETTE[0]! },
    ...present.map((p, i) => ({
      label: `${p} (ms)`,
      values: sorted.map((r) => ms(r.phases.find((ph) => ph.phase === p)?.seconds)),
      color: PALETTE[(i + 1) % PALETTE.length]!,
    })),
  ];
  return { x, series };
}

function TargetDetail({ name, target }: { name: string; target: Target | undefined }) {
  const { user } = useAuth();
  const qc = useQueryClient();
  const results = useResults(name, 300);
  const tiers = useQuery({
    queryKey: ["probes", "tier-events", name],
    queryFn: () => unwrap(api.GET("/api/v1/probes/tier-events", { params: { query: { target: name, limit: 50 } } })),
    refetchInterval: 10_000,
  });
  const run = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/probes/run", { body: { target: name } })),
    onSuccess: () => void qc.invalidateQueries({ queryKey: ["probes"] }),
  });
  const chart = useMemo(() => timing(results.data ?? []), [results.data]);
  const [page, setPage] = useState(0);
  const rows = pageOf(results.data ?? [], page, 20);

  return (
    <section aria-labelledby="target-h" className="detail">
      <h2 id="target-h">Target {name}</h2>
      {!target && <p className="error" role="alert">No configured target is named {name}.</p>}
      {target && (
        <p className="muted">
          {target.module} ({target.prober}) → {target.address}, every {(target.interval_ms / 1000).toFixed(0)} s, timeout{" "}
          {(target.timeout_ms / 1000).toFixed(1)} s
          {Object.entries(target.labels).map(([k, v]) => ` · ${k}=${v}`)}
        </p>
      )}
      {atLeast(user?.role, "maintainer") && target && (
        <div className="actions">
          <button type="button" className="primary" onClick={() => run.mutate()} disabled={run.isPending}>
            {run.isPending ? "Probing…" : "Run now"}
          </button>
        </div>
      )}
      <ErrorNote error={run.error} />
      {run.data && (
        <p role="status" className="run-result">
          Run now: <StatusBadge ok={run.data.success} text={run.data.reason} /> in {seconds(run.data.total_seconds)}
          {run.data.phases.map((p) => ` · ${p.phase} ${seconds(p.seconds)}`)}
          {run.data.detail && ` · ${run.data.detail}`}
        </p>
      )}
      <h3>Timing</h3>
      {results.isPending && <Loading what="results" />}
      <ErrorNote error={results.error} />
      {results.data && results.data.length > 0 && (
        <TimeChart x={chart.x} series={chart.series} title={`Probe timing of ${name}, per phase, in milliseconds`} yLabel="ms" />
      )}
      {results.data && results.data.length === 0 && <p className="muted">No stored result yet.</p>}
      <h3>Recent results</h3>
      <table>
        <thead>
          <tr><th scope="col">Started</th><th scope="col">Result</th><th scope="col">Total</th><th scope="col">Phases</th><th scope="col">Detail</th></tr>
        </thead>
        <tbody>
          {rows.rows.map((r) => (
            <tr key={`${r.started_unix_ms}-${r.module}`}>
              <td>{new Date(r.started_unix_ms).toLocaleString()}</td>
              <td><StatusBadge ok={r.success} text={r.reason} /></td>
              <td>{seconds(r.total_seconds)}</td>
              <td>{r.phases.map((p) => `${p.phase} ${seconds(p.seconds)}`).join(", ")}</td>
              <td className="wrap">{r.detail}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {rows.pages > 1 && <Pager label="Results" page={rows.page} pages={rows.pages} onPage={setPage} />}
      <h3>Escalation history</h3>
      <ErrorNote error={tiers.error} />
      {tiers.data && tiers.data.length === 0 && <p className="muted">No tier change recorded.</p>}
      {tiers.data && tiers.data.length > 0 && (
        <table>
          <thead>
            <tr><th scope="col">When</th><th scope="col">Tier</th><th scope="col">Reason</th><th scope="col">Diagnostics</th></tr>
          </thead>
          <tbody>
            {tiers.data.map((e) => (
              <tr key={`${e.at_unix_ms}-${e.to_tier}`}>
                <td>{new Date(e.at_unix_ms).toLocaleString()}</td>
                <td>{e.from_tier} → {e.to_tier}</td>
                <td>{e.reason}</td>
                <td className="wrap"><pre>{e.diagnostics}</pre></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
