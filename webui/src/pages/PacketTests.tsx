// Packet tests: STAMP sessions run by packetd. Maintainers start and stop them; everyone sees
// the list, a selected session's live progress (uPlot, fed by apid's Server-Sent Events
// relaying packetd's WatchSession) and its results with percentiles.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect, useMemo, useState, type FormEvent } from "react";
import { useSearchParams } from "react-router";
import { api, isErrorBody, unwrap } from "../api/client";
import { useAuth } from "../auth";
import { PALETTE, TimeChart, type Series } from "../components/Chart";
import { ErrorNote, Field, Loading, StatusBadge } from "../components/ui";
import { atLeast } from "../lib/roles";
import {
  DEFAULT_FORM,
  addSample,
  bits,
  chartOf,
  endpoint,
  finished,
  lossPercent,
  nanos,
  parseSessionEvent,
  startBody,
  type Sample,
  type Session,
  type StartBody,
  type StartForm,
} from "../lib/packet";

const LIST_LIMIT = 50;

function stateBadge(s: Session) {
  const ok = s.state === "running" ? null : s.state === "done" && s.stats.lost === 0;
  return <StatusBadge ok={ok} text={s.state} />;
}

export function PacketTests() {
  const { user } = useAuth();
  const canEdit = atLeast(user?.role, "maintainer");
  const [params, setParams] = useSearchParams();
  const selected = Number(params.get("session") ?? "") || undefined;
  const list = useQuery({
    queryKey: ["packet", "sessions"],
    queryFn: () => unwrap(api.GET("/api/v1/packet/sessions", { params: { query: { limit: LIST_LIMIT } } })),
    refetchInterval: 3_000,
    retry: false,
  });

  return (
    <>
      <h1>Packet tests</h1>
      <p className="muted">
        STAMP (RFC 8762) sessions sent by packetd to a reflector: round-trip time, loss, duplicates, reordering and
        jitter.
      </p>
      {canEdit && <StartSession onStarted={(id) => setParams({ session: String(id) })} />}
      <section aria-labelledby="sessions-h">
        <h2 id="sessions-h">Sessions</h2>
        {list.isPending && <Loading what="sessions" />}
        <ErrorNote error={list.error} />
        {list.data && list.data.length === 0 && <p className="muted">No session yet.</p>}
        {list.data && list.data.length > 0 && (
          <table>
            <thead>
              <tr>
                <th scope="col">Session</th><th scope="col">Reflector</th><th scope="col">State</th><th scope="col">Started</th>
                <th scope="col">Sent</th><th scope="col">Received</th><th scope="col">Loss</th><th scope="col">RTT p50</th><th scope="col">RTT p99</th>
              </tr>
            </thead>
            <tbody>
              {list.data.map((s) => (
                <tr key={s.id} aria-selected={s.id === selected} className={s.id === selected ? "selected" : undefined}>
                  <th scope="row">
                    <button type="button" className="link" onClick={() => setParams({ session: String(s.id) })}>
                      #{s.id}
                    </button>
                  </th>
                  <td>{endpoint(s.spec.destination, s.spec.port)}</td>
                  <td>{stateBadge(s)}</td>
                  <td>{new Date(s.started_unix_ms).toLocaleString()}</td>
                  <td>{s.stats.sent}</td>
                  <td>{s.stats.received}</td>
                  <td>{lossPercent(s.stats)}</td>
                  <td>{s.stats.received ? nanos(s.stats.rtt_p50_ns) : "–"}</td>
                  <td>{s.stats.received ? nanos(s.stats.rtt_p99_ns) : "–"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      {selected !== undefined && <SessionDetail key={selected} id={selected} canEdit={canEdit} />}
    </>
  );
}

const FIELDS: { name: keyof StartForm; label: string; hint?: string; type?: string }[] = [
  { name: "destination", label: "Reflector address", hint: "IPv4 or IPv6 address of a STAMP reflector.", type: "text" },
  { name: "port", label: "Port", hint: "UDP port of the reflector (STAMP: 862)." },
  { name: "count", label: "Packets", hint: "How many to send; empty with a duration: as many as it allows." },
  { name: "duration_ms", label: "Duration (ms)", hint: "Optional; the session ends at whichever comes first." },
  { name: "rate_pps", label: "Rate (packets/s)", hint: "The interval between packets is 1/rate." },
  { name: "packet_size", label: "Packet size (bytes)", hint: "UDP payload, 44 to 8972." },
  { name: "dscp", label: "DSCP", hint: "0 to 63 (46 = EF)." },
  { name: "source", label: "Source address", hint: "Optional; empty: chosen by routing.", type: "text" },
  { name: "ssid", label: "SSID", hint: "Optional RFC 8972 Session-Sender Identifier, 0 to 65535." },
];

function StartSession({ onStarted }: { onStarted: (id: number) => void }) {
  const qc = useQueryClient();
  const [form, setForm] = useState<StartForm>(DEFAULT_FORM);
  const [errors, setErrors] = useState<Partial<Record<keyof StartForm, string>>>({});
  const start = useMutation({
    mutationFn: (body: StartBody) =>
      unwrap(api.POST("/api/v1/packet/sessions", { body })),
    onSuccess: (s) => {
      void qc.invalidateQueries({ queryKey: ["packet"] });
      onStarted(s.id);
    },
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const r = startBody(form);
    if ("errors" in r) {
      setErrors(r.errors);
      return;
    }
    setErrors({});
    start.mutate(r.body);
  };
  return (
    <form aria-label="New session" onSubmit={submit} noValidate>
      <h2>Start a STAMP session</h2>
      <div className="filters">
        {FIELDS.map((f) => (
          <Field key={f.name} label={f.label} hint={errors[f.name] ? `${f.label}: ${errors[f.name]}` : f.hint}>
            {(id, hint) => (
              <input
                id={id}
                name={f.name}
                type={f.type ?? "number"}
                inputMode={f.type ? undefined : "numeric"}
                aria-describedby={hint}
                aria-invalid={errors[f.name] ? true : undefined}
                className={errors[f.name] ? "invalid" : undefined}
                value={form[f.name]}
                required={f.name === "destination"}
                onChange={(e) => setForm({ ...form, [f.name]: e.target.value })}
              />
            )}
          </Field>
        ))}
      </div>
      {Object.keys(errors).length > 0 && (
        <p className="error" role="alert">
          Check {Object.keys(errors).map((k) => FIELDS.find((f) => f.name === k)?.label ?? k).join(", ")}.
        </p>
      )}
      <ErrorNote error={start.error} />
      <div className="actions">
        <button type="submit" className="primary" disabled={start.isPending}>
          {start.isPending ? "Starting…" : "Start session"}
        </button>
      </div>
    </form>
  );
}

type Stream = "connecting" | "live" | "ended" | "lost";

/** Follows a running session over `GET …/watch` (EventSource): its latest state and the chart's samples. */
function useWatch(id: number, running: boolean) {
  const qc = useQueryClient();
  const [live, setLive] = useState<Session>();
  const [samples, setSamples] = useState<Sample[]>([]);
  const [stream, setStream] = useState<Stream>();
  const [problem, setProblem] = useState<string>();
  useEffect(() => {
    if (!running) return;
    const es = new EventSource(`/api/v1/packet/sessions/${id}/watch`);
    setStream("connecting");
    es.addEventListener("session", (e) => {
      try {
        const s = parseSessionEvent((e as MessageEvent<string>).data);
        setStream("live");
        setLive(s);
        setSamples((prev) => addSample(prev, s, Date.now() / 1000));
      } catch (err) {
        setProblem(String(err));
      }
    });
    es.addEventListener("end", () => {
      es.close();
      setStream("ended");
      void qc.invalidateQueries({ queryKey: ["packet"] });
    });
    // A named `error` event carries apid's error body; a bare one is the connection failing
    // (EventSource would reconnect forever, and a finished session has nothing more to say).
    es.addEventListener("error", (e) => {
      const data = (e as MessageEvent<string>).data;
      let message = "the live progress stream was lost";
      if (typeof data === "string" && data) {
        try {
          const body: unknown = JSON.parse(data);
          if (isErrorBody(body)) message = body.message;
        } catch {
          // keep the generic message
        }
      }
      es.close();
      setStream("lost");
      setProblem(message);
      void qc.invalidateQueries({ queryKey: ["packet"] });
    });
    return () => es.close();
  }, [id, running, qc]);
  return { live, samples, stream, problem };
}

function SessionDetail({ id, canEdit }: { id: number; canEdit: boolean }) {
  const qc = useQueryClient();
  const one = useQuery({
    queryKey: ["packet", "session", id],
    queryFn: () => unwrap(api.GET("/api/v1/packet/sessions/{id}", { params: { path: { id } } })),
    retry: false,
  });
  const [watching, setWatching] = useState(false);
  useEffect(() => {
    if (one.data && !finished(one.data)) setWatching(true);
  }, [one.data]);
  const { live, samples, stream, problem } = useWatch(id, watching);
  const stop = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/packet/sessions/{id}/stop", { params: { path: { id } } })),
    onSuccess: () => void qc.invalidateQueries({ queryKey: ["packet"] }),
  });
  // The stream is newer than the stored state while it runs; the store has the last word.
  const s = one.data && finished(one.data) ? one.data : (live ?? one.data);
  const chart = useMemo(() => {
    const c = chartOf(samples);
    const series: Series[] = [
      { label: "RTT p50 (ms)", values: c.p50, color: PALETTE[0]! },
      { label: "RTT p90 (ms)", values: c.p90, color: PALETTE[2]! },
      { label: "RTT p99 (ms)", values: c.p99, color: PALETTE[1]! },
    ];
    return { x: c.x, series };
  }, [samples]);

  return (
    <section aria-labelledby="session-h" className="detail">
      <h2 id="session-h">Session #{id}</h2>
      {one.isPending && <Loading what={`session ${id}`} />}
      <ErrorNote error={one.error} />
      {s && (
        <>
          <p className="muted">
            {endpoint(s.spec.destination, s.spec.port)}
            {s.spec.source && ` from ${s.spec.source}`} · {s.spec.rate_pps} packets/s ·{" "}
            {s.spec.count ? `${s.spec.count} packets` : "no count"} ·{" "}
            {s.spec.duration_ms ? `${s.spec.duration_ms} ms` : "no time limit"} · {s.spec.packet_size} bytes · DSCP{" "}
            {s.spec.dscp} · SSID {s.spec.ssid} · started {new Date(s.started_unix_ms).toLocaleString()}
          </p>
          <p role="status" className="run-result">
            {stateBadge(s)} sent {s.stats.sent}, received {s.stats.received}, lost {s.stats.lost}
            {stream === "live" && " · live"}
            {stream === "connecting" && " · connecting to the live progress…"}
            {s.error && ` · ${s.error}`}
          </p>
          {problem && (
            <p className="error" role="alert">
              {problem}
            </p>
          )}
          {canEdit && !finished(s) && (
            <div className="actions">
              <button type="button" className="danger" onClick={() => stop.mutate()} disabled={stop.isPending}>
                {stop.isPending ? "Stopping…" : "Stop session"}
              </button>
            </div>
          )}
          <ErrorNote error={stop.error} />
          <h3>Live progress</h3>
          {samples.length > 0 ? (
            <TimeChart x={chart.x} series={chart.series} title={`Round-trip time of session ${id}, in milliseconds`} yLabel="ms" />
          ) : (
            <p className="muted">{finished(s) ? "The session had ended when it was opened; its results are below." : "Waiting for progress…"}</p>
          )}
          <Results s={s} />
        </>
      )}
    </section>
  );
}

function Results({ s }: { s: Session }) {
  const st = s.stats;
  const rtt = (ns: number) => (st.received ? nanos(ns) : "–");
  const rows: [string, string][] = [
    ["RTT min", rtt(st.rtt_min_ns)],
    ["RTT p50", rtt(st.rtt_p50_ns)],
    ["RTT p90", rtt(st.rtt_p90_ns)],
    ["RTT p99", rtt(st.rtt_p99_ns)],
    ["RTT max", rtt(st.rtt_max_ns)],
    ["RTT mean", rtt(st.rtt_mean_ns)],
    ["Loss", `${st.lost} of ${st.sent} (${lossPercent(st)})`],
    ["Duplicates", String(st.duplicates)],
    ["Reordered", `${st.reordered} (${(st.reordered_ratio * 100).toFixed(2)} % of received)`],
    ["Jitter (RFC 3550)", rtt(st.jitter_ns)],
    ["IPDV mean |Δ|", rtt(st.ipdv_mean_abs_ns)],
    ["IPDV max |Δ|", rtt(st.ipdv_max_abs_ns)],
    ["Throughput of replies", bits(st.throughput_bps)],
    [
      "One-way delay out / back",
      st.owd_synchronized
        ? `${nanos(st.owd_forward_mean_ns)} / ${nanos(st.owd_backward_mean_ns)}`
        : "clocks not synchronised: not measured",
    ],
  ];
  return (
    <>
      <h3>{finished(s) ? "Results" : "Results so far"}</h3>
      <table aria-label={`Results of session ${s.id}`}>
        <tbody>
          {rows.map(([k, v]) => (
            <tr key={k}>
              <th scope="row">{k}</th>
              <td>{v}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}
