// The audit log (admin): filtered, paginated by apid (limit/offset), exportable.
import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { api, unwrap } from "../api/client";
import { ErrorNote, Field, Loading, Pager } from "../components/ui";

const PAGE = 50;
const KINDS = ["", "AUTH", "AUTHZ", "AUDIT", "ERROR", "SYSTEM"];

interface Filter {
  kind: string;
  user: string;
  action: string;
  result: string;
}

const EMPTY: Filter = { kind: "", user: "", action: "", result: "" };

function query(f: Filter): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(f)) if (v.trim()) out[k] = v.trim();
  return out;
}

export function Audit() {
  const [draft, setDraft] = useState<Filter>(EMPTY);
  const [filter, setFilter] = useState<Filter>(EMPTY);
  const [page, setPage] = useState(0);
  const audit = useQuery({
    queryKey: ["audit", filter, page],
    queryFn: () =>
      unwrap(api.GET("/api/v1/audit", { params: { query: { ...query(filter), limit: PAGE, offset: page * PAGE } } })),
    placeholderData: keepPreviousData,
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setFilter(draft);
    setPage(0);
  };
  const exportQuery = new URLSearchParams(query(filter));
  const pages = audit.data ? Math.max(1, Math.ceil(audit.data.total / PAGE)) : 1;
  const set = (k: keyof Filter) => (e: { target: { value: string } }) => setDraft({ ...draft, [k]: e.target.value });

  return (
    <>
      <h1>Audit log</h1>
      <form onSubmit={submit} aria-label="Filter the audit log" className="filters">
        <Field label="Kind">
          {(id) => (
            <select id={id} value={draft.kind} onChange={set("kind")}>
              {KINDS.map((k) => <option key={k} value={k}>{k || "any"}</option>)}
            </select>
          )}
        </Field>
        <Field label="User">{(id) => <input id={id} value={draft.user} onChange={set("user")} />}</Field>
        <Field label="Action">{(id) => <input id={id} value={draft.action} onChange={set("action")} />}</Field>
        <Field label="Result">{(id) => <input id={id} value={draft.result} onChange={set("result")} />}</Field>
        <div className="actions"><button type="submit" className="primary">Filter</button></div>
      </form>
      <p>
        Export: <a href={`/api/v1/audit/export?${new URLSearchParams({ ...Object.fromEntries(exportQuery), format: "csv" })}`} download="audit.csv">CSV</a>{" "}
        · <a href={`/api/v1/audit/export?${new URLSearchParams({ ...Object.fromEntries(exportQuery), format: "json" })}`} download="audit.json">JSON</a>
      </p>
      {audit.isPending && <Loading what="the audit log" />}
      <ErrorNote error={audit.error} />
      {audit.data && (
        <>
          <p className="muted">{audit.data.total} entries</p>
          <table>
            <thead>
              <tr><th scope="col">When</th><th scope="col">Kind</th><th scope="col">User</th><th scope="col">Action</th><th scope="col">Result</th><th scope="col">From</th><th scope="col">Detail</th></tr>
            </thead>
            <tbody>
              {audit.data.items.map((e) => (
                <tr key={e.id}>
                  <td>{new Date(e.ts).toLocaleString()}</td>
                  <td>{e.kind}</td>
                  <td>{e.user}</td>
                  <td>{e.action}</td>
                  <td>{e.result}</td>
                  <td>{e.source}</td>
                  <td className="wrap">{e.detail}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {pages > 1 && <Pager label="Audit log" page={page} pages={pages} onPage={setPage} />}
        </>
      )}
    </>
  );
}
