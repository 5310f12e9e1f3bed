// Daemon health, licence and probe status with a sparkline per target.
import { useQuery } from "@tanstack/react-query";
import { useMemo, useState } from "react";
import { api, unwrap } from "../api/client";
import { Link } from "react-router";
import { Sparkline } from "../components/Chart";
import { ErrorNote, Loading, Pager, StatusBadge } from "../components/ui";
import { pageOf, seconds, unixTime, uptime } from "../lib/text";
import { byTarget, useLicence, useResults, useSystem, useTargets } from "../queries";

const SPARK_RESULTS = 2000;
const PAGE = 20;

export function Dashboard() {
  const system = useSystem();
  const licence = useLicence();
  const targets = useTargets();
  const results = useResults(undefined, SPARK_RESULTS);
  const escalations = useQuery({
    queryKey: ["probes", "tier-events", "*"],
    queryFn: () => unwrap(api.GET("/api/v1/probes/tier-events", { params: { query: { limit: 10 } } })),
    refetchInterval: 10_000,
    retry: false,
  });
  const [page, setPage] = useState(0);
  const grouped = useMemo(() => byTarget(results.data ?? []), [results.data]);
  const list = targets.data ?? [];
  const up = list.filter((t) => t.last?.success).length;
  const down = list.filter((t) => t.last && !t.last.success).length;
  const pending = list.length - up - down;
  const shown = pageOf(list, page, PAGE);

  return (
    <>
      <h1>Dashboard</h1>
      <section aria-labelledby="daemons-h">
        <h2 id="daemons-h">Daemons</h2>
        {system.isPending && <Loading what="daemon health" />}
        <ErrorNote error={system.error} />
        {system.data && (
          <>
            <p className="muted">
              Rookery {system.data.version}, apid up {uptime(system.data.uptime_seconds)}
            </p>
            <table>
              <thead>
                <tr><th scope="col">Daemon</th><th scope="col">Health</th><th scope="col">State</th><th scope="col">Version</th><th scope="col">Uptime</th><th scope="col">Status</th></tr>
              </thead>
              <tbody>
                {system.data.daemons.map((d) => (
                  <tr key={d.name}>
                    <th scope="row">{d.name}</th>
                    <td><StatusBadge ok={d.health === "serving"} text={d.health} /></td>
                    <td>{d.state}</td>
                    <td>{d.version || "–"}</td>
                    <td>{d.health === "unavailable" ? "–" : uptime(d.uptime_seconds)}</td>
                    <td className="wrap">{d.error || d.last_reload_error || d.status_text}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        )}
      </section>

      <section aria-labelledby="licence-h">
        <h2 id="licence-h">Licence</h2>
        {licence.isPending && <Loading what="the licence" />}
        <ErrorNote error={licence.error} />
        {licence.data && (
          <p>
            <StatusBadge ok={licence.data.state === "valid" || !licence.data.release_mode} text={licence.data.state} />{" "}
            {licence.data.release_mode ? `${licence.data.tier || "no tier"}, expires ${unixTime(licence.data.expires_unix)}` : "release mode off: every feature on"}{" "}
            <Link to="/licence">Details</Link>
          </p>
        )}
      </section>

      <section aria-labelledby="probes-h">
        <h2 id="probes-h">Probes</h2>
        {targets.isPending && <Loading what="probe targets" />}
        <ErrorNote error={targets.error} />
        {targets.data && (
          <>
            <p>
              <StatusBadge ok={true} text={`${up} up`} /> <StatusBadge ok={false} text={`${down} down`} />{" "}
              <StatusBadge ok={null} text={`${pending} not probed yet`} /> of {list.length} targets
            </p>
            <table>
              <thead>
                <tr><th scope="col">Target</th><th scope="col">Last</th><th scope="col">Total time</th><th scope="col">Tier</th><th scope="col">Recent results</th></tr>
              </thead>
              <tbody>
                {shown.rows.map((t) => {
                  const hist = grouped.get(t.name) ?? [];
                  return (
                    <tr key={t.name}>
                      <th scope="row"><Link to={`/probes?target=${encodeURIComponent(t.name)}`}>{t.name}</Link></th>
                      <td>{t.last ? <StatusBadge ok={t.last.success} text={t.last.reason} /> : "–"}</td>
                      <td>{t.last ? seconds(t.last.total_seconds) : "–"}</td>
                      <td>{t.tier}</td>
                      <td>
                        <Sparkline
                          label={`${t.name}: last ${hist.length} probe times`}
                          values={hist.map((r) => r.total_seconds)}
                          failed={hist.map((r) => !r.success)}
                        />
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
            {shown.pages > 1 && <Pager label="Targets" page={shown.page} pages={shown.pages} onPage={setPage} />}
          </>
        )}
      </section>

      <section aria-labelledby="escalations-h">
        <h2 id="escalations-h">Recent escalations</h2>
        <ErrorNote error={escalations.error} />
        {escalations.data && escalations.data.length === 0 && <p className="muted">No tier change recorded.</p>}
        {escalations.data && escalations.data.length > 0 && (
          <table>
            <thead>
              <tr><th scope="col">When</th><th scope="col">Target</th><th scope="col">Tier</th><th scope="col">Reason</th></tr>
            </thead>
            <tbody>
              {escalations.data.map((e) => (
                <tr key={`${e.target}-${e.at_unix_ms}-${e.to_tier}`}>
                  <td>{new Date(e.at_unix_ms).toLocaleString()}</td>
                  <th scope="row"><Link to={`/probes?target=${encodeURIComponent(e.target)}`}>{e.target}</Link></th>
                  <td>{e.from_tier} → {e.to_tier}</td>
                  <td>{e.reason}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </>
  );
}
