// Stored log records from ingestd: filters, full-text search, paging by id, live tail by polling.
import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { api, unwrap } from "../api/client";
import { ErrorNote, Field, Loading } from "../components/ui";
import { EMPTY_FILTER, SEVERITIES, logQuery, type LogFilter } from "../lib/ingest";

/** Live tail refresh. */
const TAIL_MS = 2000;


export function Logs() {
  const [draft, setDraft] = useState<LogFilter>(EMPTY_FILTER);
  const [filter, setFilter] = useState<LogFilter>(EMPTY_FILTER);
  // Cursors of the pages before this one (newest first); empty on the first page.
  const [cursors, setCursors] = useState<number[]>([]);
  const [tail, setTail] = useState(false);
  const before = cursors.at(-1);
  const logs = useQuery({
    queryKey: ["logs", filter, before],
    queryFn: () => unwrap(api.GET("/api/v1/logs", { params: { query: logQuery(filter, before) } })),
    placeholderData: keepPreviousData,
    refetchInterval: tail && before === undefined ? TAIL_MS : false,
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setFilter(draft);
    setCursors([]);
  };
  const set = (k: keyof LogFilter) => (e: { target: { value: string } }) => setDraft({ ...draft, [k]: e.target.value });
  const next = logs.data?.next_before ?? undefined;

  return (
    <>
      <h1>Logs</h1>
      <form onSubmit={submit} aria-label="Log filters" className="filters">
        <Field label="Full-text search">
          {(id) => <input id={id} type="search" value={draft.q} onChange={set("q")} placeholder='words, "a phrase", AND, OR, NOT' />}
        </Field>
        <Field label="Host">{(id) => <input id={id} value={draft.host} onChange={set("host")} />}</Field>
        <Field label="App">{(id) => <input id={id} value={draft.app} onChange={set("app")} />}</Field>
        <Field label="Severity at most">
          {(id) => (
            <select id={id} value={draft.severity} onChange={set("severity")}>
              <option value="">any</option>
              {SEVERITIES.map((s, i) => <option key={s} value={i}>{i} {s}</option>)}
            </select>
          )}
        </Field>
        <Field label="Facility">
          {(id) => <input id={id} type="number" min={0} max={23} value={draft.facility} onChange={set("facility")} />}
        </Field>
        <Field label="Since">{(id) => <input id={id} type="datetime-local" value={draft.since} onChange={set("since")} />}</Field>
        <Field label="Until">{(id) => <input id={id} type="datetime-local" value={draft.until} onChange={set("until")} />}</Field>
        <div className="actions">
          <button type="submit" className="primary">Search</button>
          <label>
            <input type="checkbox" checked={tail} onChange={(e) => { setTail(e.target.checked); setCursors([]); }} /> Live tail
          </label>
        </div>
      </form>
      {logs.isPending && <Loading what="the logs" />}
      <ErrorNote error={logs.error} />
      {logs.data && (
        <>
          <p className="muted" role="status">
            {logs.data.records.length} records{cursors.length > 0 ? ` (page ${cursors.length + 1})` : ""}
            {tail && before === undefined ? " · refreshing every 2 s" : ""}
          </p>
          <table>
            <thead>
              <tr><th scope="col">Time</th><th scope="col">Host</th><th scope="col">App</th><th scope="col">Severity</th><th scope="col">Facility</th><th scope="col">Message</th></tr>
            </thead>
            <tbody>
              {logs.data.records.map((r) => (
                <tr key={r.id}>
                  <td title={`received ${r.received} from ${r.peer} over ${r.input}`}>{new Date(r.timestamp ?? r.received).toLocaleString()}</td>
                  <td>{r.host}</td>
                  <td>{r.app}</td>
                  <td>{r.severity == null ? "" : SEVERITIES[r.severity] ?? r.severity}</td>
                  <td>{r.facility ?? ""}</td>
                  <td className="wrap">
                    {r.message}
                    {r.parse_error && <span className="error"> (not parsed: {r.parse_error})</span>}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <nav aria-label="Log pages" className="pager">
            <button type="button" disabled={cursors.length === 0} onClick={() => setCursors(cursors.slice(0, -1))}>Newer</button>{" "}
            <button type="button" disabled={next === undefined} onClick={() => next !== undefined && setCursors([...cursors, next])}>Older</button>
          </nav>
        </>
      )}
    </>
  );
}
