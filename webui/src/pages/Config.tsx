// The TOML file of each daemon: edit it, see the daemon's validation errors at line:col,
// compare with the file in place, apply (or try for N seconds), browse history, roll back.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect, useMemo, useRef, useState } from "react";
import { NavLink, useParams } from "react-router";
import { ApiFailure, api, unwrap, type ConfigIssue, type Schemas } from "../api/client";
import type { operations } from "../api/schema";
import { useAuth } from "../auth";
import { ErrorNote, Field, Loading } from "../components/ui";
import { changed, lineDiff, type DiffLine } from "../lib/diff";
import { atLeast } from "../lib/roles";
import { lineCount, offsetOf } from "../lib/text";
import { useSystem } from "../queries";

/** A daemon whose config apid edits (its `EDITABLE`, an enum in the OpenAPI document). */
export type Daemon = operations["get_config__daemon_"]["parameters"]["path"]["daemon"];
/** Every one of them, in tab order; the type check fails if apid's list changes. */
export const DAEMONS = ["probed", "licensed", "packetd", "ingestd"] as const satisfies readonly Daemon[];
type Missing = Exclude<Daemon, (typeof DAEMONS)[number]>;
const allListed: Missing extends never ? true : false = true;
void allListed;

function isDaemon(v: string | undefined): v is Daemon {
  return (DAEMONS as readonly string[]).includes(v ?? "");
}

export function Config() {
  const { daemon: param } = useParams();
  const daemon: Daemon = isDaemon(param) ? param : "probed";
  return (
    <>
      <h1>Configuration</h1>
      <nav aria-label="Daemon" className="tabs">
        {DAEMONS.map((d) => (
          <NavLink key={d} to={`/config/${d}`} className={({ isActive }) => (isActive || (d === "probed" && daemon === d) ? "active" : "")}>
            {d}
          </NavLink>
        ))}
      </nav>
      {param !== undefined && !isDaemon(param) && (
        <p className="error" role="alert">No editable config named {param}; showing probed.</p>
      )}
      <DaemonConfig key={daemon} daemon={daemon} />
    </>
  );
}

function DaemonConfig({ daemon }: { daemon: Daemon }) {
  const { user } = useAuth();
  const canEdit = atLeast(user?.role, "maintainer");
  const qc = useQueryClient();
  const file = useQuery({
    queryKey: ["config", daemon],
    queryFn: () => unwrap(api.GET("/api/v1/config/{daemon}", { params: { path: { daemon } } })),
  });
  const history = useQuery({
    queryKey: ["config", daemon, "history"],
    queryFn: () => unwrap(api.GET("/api/v1/config/{daemon}/history", { params: { path: { daemon } } })),
  });
  const system = useSystem();
  const status = system.data?.daemons.find((d) => d.name === daemon);
  const [text, setText] = useState<string | null>(null);
  const [issues, setIssues] = useState<ConfigIssue[]>([]);
  const [showDiff, setShowDiff] = useState(false);
  const [trySeconds, setTrySeconds] = useState(30);
  const [outcome, setOutcome] = useState<Schemas["ApplyOutcome"] | null>(null);
  const editor = useRef<HTMLTextAreaElement>(null);
  const running = file.data?.text ?? "";
  const current = text ?? running;
  const diff = useMemo(() => lineDiff(running, current), [running, current]);
  const dirty = changed(diff);

  useEffect(() => {
    if (file.data && text === null) setText(file.data.text);
  }, [file.data, text]);

  const refresh = () => {
    void qc.invalidateQueries({ queryKey: ["config", daemon] });
    void qc.invalidateQueries({ queryKey: ["system"] });
  };
  const onFailure = (err: unknown) => {
    setIssues(err instanceof ApiFailure ? (err.body?.issues ?? []) : []);
  };
  const apply = useMutation({
    mutationFn: (trySecs: number | null) =>
      unwrap(
        api.PUT("/api/v1/config/{daemon}", {
          params: { path: { daemon } },
          body: { text: current, try_seconds: trySecs },
        }),
      ),
    onMutate: () => {
      setOutcome(null);
      setIssues([]);
    },
    onSuccess: (o) => {
      setOutcome(o);
      setText(null);
      refresh();
    },
    onError: onFailure,
  });
  const rollback = useMutation({
    mutationFn: (id: number) =>
      unwrap(api.POST("/api/v1/config/{daemon}/rollback", { params: { path: { daemon } }, body: { history_id: id } })),
    onMutate: () => setOutcome(null),
    onSuccess: (o) => {
      setOutcome(o);
      setText(null);
      refresh();
    },
    onError: onFailure,
  });

  const goTo = (issue: ConfigIssue) => {
    const el = editor.current;
    if (!el) return;
    const at = offsetOf(el.value, issue.line, issue.column);
    el.focus();
    el.setSelectionRange(at, at);
  };
  const badLines = new Map<number, ConfigIssue[]>();
  for (const i of issues) if (i.line > 0) badLines.set(i.line, [...(badLines.get(i.line) ?? []), i]);

  if (file.isPending) return <Loading what={`${daemon}.toml`} />;
  if (file.error) return <ErrorNote error={file.error} />;
  const lines = lineCount(current);

  return (
    <section aria-labelledby="file-h">
      <h2 id="file-h">
        {file.data.path} {file.data.exists ? "" : <span className="muted">(absent: compiled defaults apply)</span>}
      </h2>
      {status && (
        <p className="muted">
          rookery-{daemon}: {status.state}
          {status.config_digest && `, running config ${status.config_digest.slice(0, 12)}`}. Changes are compared with
          the file in place, which is what the daemon runs unless a reload was refused.
        </p>
      )}
      {status?.last_reload_error && (
        <p className="error" role="alert">
          The daemon refused the last reload and runs an older config: {status.last_reload_error}
        </p>
      )}
      {!canEdit && <p className="muted">Your role can read this file; a maintainer or admin can change it.</p>}
      <div className="editor">
        <div className="gutter" aria-hidden="true">
          {Array.from({ length: lines }, (_, i) => {
            const bad = badLines.get(i + 1);
            return (
              <div key={i} className={bad ? "bad" : undefined} title={bad?.map((b) => b.message).join("\n")} data-line={i + 1}>
                {i + 1}
              </div>
            );
          })}
        </div>
        <textarea
          ref={editor}
          aria-label={`${daemon}.toml`}
          aria-invalid={issues.length > 0}
          aria-describedby={issues.length > 0 ? "config-issues" : undefined}
          spellCheck={false}
          readOnly={!canEdit}
          rows={Math.min(Math.max(lines + 1, 12), 40)}
          value={current}
          onChange={(e) => setText(e.target.value)}
          onScroll={(e) => {
            const g = e.currentTarget.previousElementSibling;
            if (g) g.scrollTop = e.currentTarget.scrollTop;
          }}
        />
      </div>
      {issues.length > 0 && (
        <div id="config-issues" role="alert" className="issues">
          <h3>{daemon} rejected this file</h3>
          <ul>
            {issues.map((i, n) => (
              <li key={n}>
                <button type="button" className="link" onClick={() => goTo(i)}>
                  line {i.line}, column {i.column}
                </button>
                {i.key && <code> {i.key}</code>}: {i.message}
              </li>
            ))}
          </ul>
        </div>
      )}
      {issues.length === 0 && <ErrorNote error={apply.error ?? rollback.error} />}
      {outcome && (
        <p role="status" className={outcome.applied ? "ok-note" : "error"}>
          {outcome.applied ? "Applied" : outcome.reverted ? "Reverted" : "Not applied"} (history #{outcome.history_id}):{" "}
          {outcome.message}
        </p>
      )}
      <div className="actions">
        <button type="button" onClick={() => setShowDiff(!showDiff)} aria-expanded={showDiff}>
          {showDiff ? "Hide changes" : "Show changes"}
        </button>
        {canEdit && (
          <>
            <button type="button" onClick={() => { setText(null); setIssues([]); }} disabled={!dirty}>
              Discard edits
            </button>
            <button type="button" className="primary" disabled={!dirty || apply.isPending} onClick={() => apply.mutate(null)}>
              {apply.isPending ? "Applying…" : "Apply"}
            </button>
            <Field label="Try for (seconds)" hint="Reverts unless the daemon reports healthy on the new file in time.">
              {(id, hint) => (
                <input id={id} type="number" min={1} max={600} value={trySeconds} aria-describedby={hint}
                  onChange={(e) => setTrySeconds(Number(e.target.value))} />
              )}
            </Field>
            <button type="button" disabled={!dirty || apply.isPending} onClick={() => apply.mutate(trySeconds)}>
              Try
            </button>
          </>
        )}
      </div>
      {showDiff && (
        <>
          <h3>Changes against the file in place</h3>
          {dirty ? <DiffView diff={diff} label="edits against the running file" /> : <p className="muted">No changes.</p>}
        </>
      )}
      <History daemon={daemon} items={history.data ?? []} error={history.error} canEdit={canEdit}
        onRollback={(id) => rollback.mutate(id)} busy={rollback.isPending} />
    </section>
  );
}

export function DiffView({ diff, label }: { diff: DiffLine[]; label: string }) {
  return (
    <pre className="diff" aria-label={label}>
      {diff.map((l, i) => (
        <div key={i} className={l.op}>
          <span className="mark" aria-hidden="true">{l.op === "add" ? "+" : l.op === "del" ? "-" : " "}</span>
          <span className="sr-only">{l.op === "add" ? "added: " : l.op === "del" ? "removed: " : ""}</span>
          {l.text}
        </div>
      ))}
    </pre>
  );
}

function History({
  daemon,
  items,
  error,
  canEdit,
  onRollback,
  busy,
}: {
  daemon: Daemon;
  items: Schemas["HistoryItem"][];
  error: unknown;
  canEdit: boolean;
  onRollback: (id: number) => void;
  busy: boolean;
}) {
  const [open, setOpen] = useState<number | null>(null);
  const entry = useQuery({
    queryKey: ["config", daemon, "history", open],
    queryFn: () =>
      unwrap(api.GET("/api/v1/config/{daemon}/history/{id}", { params: { path: { daemon, id: String(open ?? 0) } } })),
    enabled: open !== null,
  });
  return (
    <section aria-labelledby="history-h">
      <h3 id="history-h">History</h3>
      <ErrorNote error={error} />
      {items.length === 0 && <p className="muted">No change made through apid yet.</p>}
      {items.length > 0 && (
        <table>
          <thead>
            <tr><th scope="col">#</th><th scope="col">When</th><th scope="col">Who</th><th scope="col">Kind</th><th scope="col">Actions</th></tr>
          </thead>
          <tbody>
            {items.map((h) => (
              <tr key={h.id}>
                <td>{h.id}</td>
                <td>{new Date(h.ts).toLocaleString()}</td>
                <td>{h.user}</td>
                <td>{h.kind}</td>
                <td>
                  <button type="button" onClick={() => setOpen(open === h.id ? null : h.id)} aria-expanded={open === h.id}>
                    {open === h.id ? "Hide" : "View"} #{h.id}
                  </button>{" "}
                  {canEdit && (
                    <button type="button" disabled={busy} onClick={() => onRollback(h.id)}>
                      Restore the file before #{h.id}
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {open !== null && entry.isPending && <Loading what={`change #${open}`} />}
      <ErrorNote error={entry.error} />
      {entry.data && open !== null && (
        <DiffView diff={lineDiff(entry.data.before, entry.data.after)} label={`change #${open}`} />
      )}
    </section>
  );
}
