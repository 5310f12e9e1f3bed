// API keys: the caller's own (an admin sees everyone's); the key is shown once at creation.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { api, unwrap, type Role } from "../api/client";
import { useAuth } from "../auth";
import { ErrorNote, Field, Loading, StatusBadge } from "../components/ui";
import { atLeast } from "../lib/roles";

const ROLES: Role[] = ["viewer", "maintainer", "admin"];

export function ApiKeys() {
  const { user } = useAuth();
  const qc = useQueryClient();
  const keys = useQuery({ queryKey: ["api-keys"], queryFn: () => unwrap(api.GET("/api/v1/api-keys")) });
  const revoke = useMutation({
    mutationFn: (id: number) => unwrap(api.DELETE("/api/v1/api-keys/{id}", { params: { path: { id: String(id) } } })),
    onSuccess: () => void qc.invalidateQueries({ queryKey: ["api-keys"] }),
  });
  const [name, setName] = useState("");
  const [role, setRole] = useState<Role>("viewer");
  const [days, setDays] = useState("90");
  const create = useMutation({
    mutationFn: () =>
      unwrap(api.POST("/api/v1/api-keys", { body: { name, role, expires_in_days: days === "" ? null : Number(days) } })),
    onSuccess: () => {
      setName("");
      void qc.invalidateQueries({ queryKey: ["api-keys"] });
    },
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    create.mutate();
  };
  const roles = ROLES.filter((r) => atLeast(user?.role, r));

  return (
    <>
      <h1>API keys</h1>
      <p className="muted">Send a key as <code>Authorization: Bearer rk_…</code>. Its role is capped by its owner's.</p>
      {keys.isPending && <Loading what="API keys" />}
      <ErrorNote error={keys.error ?? revoke.error} />
      {keys.data && keys.data.length === 0 && <p className="muted">No API key yet.</p>}
      {keys.data && keys.data.length > 0 && (
        <table>
          <thead>
            <tr><th scope="col">Name</th><th scope="col">Prefix</th><th scope="col">Role</th><th scope="col">Owner</th><th scope="col">Expires</th><th scope="col">Last used</th><th scope="col">Actions</th></tr>
          </thead>
          <tbody>
            {keys.data.map((k) => (
              <tr key={k.id}>
                <th scope="row">{k.name}</th>
                <td><code>{k.prefix}…</code></td>
                <td>{k.role}</td>
                <td>{k.owner}</td>
                <td>{k.expires_at ? new Date(k.expires_at).toLocaleDateString() : "never"}</td>
                <td>{k.last_used_at ? new Date(k.last_used_at).toLocaleString() : "never"}</td>
                <td>
                  {k.revoked ? (
                    <StatusBadge ok={false} text="revoked" />
                  ) : (
                    <button type="button" className="danger" onClick={() => revoke.mutate(k.id)}>Revoke {k.name}</button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <form onSubmit={submit} aria-label="New API key" className="panel">
        <h2>New API key</h2>
        <Field label="Name">{(id) => <input id={id} required maxLength={64} value={name} onChange={(e) => setName(e.target.value)} />}</Field>
        <Field label="Role">
          {(id) => (
            <select id={id} value={role} onChange={(e) => setRole(e.target.value as Role)}>
              {roles.map((r) => <option key={r} value={r}>{r}</option>)}
            </select>
          )}
        </Field>
        <Field label="Expires in (days)" hint="1 to 366; empty for never.">
          {(id, hint) => <input id={id} type="number" min={1} max={366} aria-describedby={hint} value={days} onChange={(e) => setDays(e.target.value)} />}
        </Field>
        <ErrorNote error={create.error} />
        {create.data && (
          <div role="status" className="ok-note">
            <p>Key created. Copy it now: it is not shown again.</p>
            <code className="secret">{create.data.key}</code>
          </div>
        )}
        <div className="actions"><button type="submit" className="primary" disabled={create.isPending}>Create key</button></div>
      </form>
    </>
  );
}
