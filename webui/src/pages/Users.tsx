// Users (admin): list, create, change role, force a password change, delete.
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { api, unwrap, type Role } from "../api/client";
import { useAuth } from "../auth";
import { ErrorNote, Field, Loading, StatusBadge } from "../components/ui";

const ROLES: Role[] = ["viewer", "maintainer", "admin"];

export function Users() {
  const { user: me } = useAuth();
  const qc = useQueryClient();
  const users = useQuery({ queryKey: ["users"], queryFn: () => unwrap(api.GET("/api/v1/users")) });
  const done = () => void qc.invalidateQueries({ queryKey: ["users"] });
  const update = useMutation({
    mutationFn: (v: { name: string; role?: Role; must_change_password?: boolean }) =>
      unwrap(
        api.PATCH("/api/v1/users/{name}", {
          params: { path: { name: v.name } },
          body: { role: v.role ?? null, must_change_password: v.must_change_password ?? null },
        }),
      ),
    onSuccess: done,
  });
  const remove = useMutation({
    mutationFn: (name: string) => unwrap(api.DELETE("/api/v1/users/{name}", { params: { path: { name } } })),
    onSuccess: done,
  });

  return (
    <>
      <h1>Users</h1>
      {users.isPending && <Loading what="users" />}
      <ErrorNote error={users.error ?? update.error ?? remove.error} />
      {users.data && (
        <table>
          <thead>
            <tr><th scope="col">User</th><th scope="col">Role</th><th scope="col">State</th><th scope="col">Created</th><th scope="col">Actions</th></tr>
          </thead>
          <tbody>
            {users.data.map((u) => (
              <tr key={u.username}>
                <th scope="row">{u.username}</th>
                <td>
                  <select aria-label={`Role of ${u.username}`} value={u.role} disabled={u.username === me?.username}
                    onChange={(e) => update.mutate({ name: u.username, role: e.target.value as Role })}>
                    {ROLES.map((r) => <option key={r} value={r}>{r}</option>)}
                  </select>
                </td>
                <td>
                  {u.locked && <StatusBadge ok={false} text="locked" />} {u.must_change_password && <StatusBadge ok={null} text="must change password" />}
                </td>
                <td>{new Date(u.created_at).toLocaleString()}</td>
                <td>
                  <button type="button" disabled={u.must_change_password}
                    onClick={() => update.mutate({ name: u.username, must_change_password: true })}>
                    Force password change for {u.username}
                  </button>{" "}
                  <button type="button" className="danger" disabled={u.username === me?.username}
                    onClick={() => { if (window.confirm(`Delete ${u.username}?`)) remove.mutate(u.username); }}>
                    Delete {u.username}
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <CreateUser onDone={done} />
    </>
  );
}

function CreateUser({ onDone }: { onDone: () => void }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [role, setRole] = useState<Role>("viewer");
  const [mustChange, setMustChange] = useState(true);
  const create = useMutation({
    mutationFn: () =>
      unwrap(api.POST("/api/v1/users", { body: { username, password, role, must_change_password: mustChange } })),
    onSuccess: () => {
      setUsername("");
      setPassword("");
      onDone();
    },
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    create.mutate();
  };
  return (
    <form onSubmit={submit} aria-label="New user" className="panel">
      <h2>New user</h2>
      <Field label="Username" hint="Lower case: letters, digits, _ . - (up to 32).">
        {(id, hint) => <input id={id} required pattern="[a-z][a-z0-9_.\-]{0,31}" aria-describedby={hint} value={username} onChange={(e) => setUsername(e.target.value)} />}
      </Field>
      <Field label="Initial password" hint="At least 12 characters.">
        {(id, hint) => <input id={id} type="password" autoComplete="new-password" required aria-describedby={hint} value={password} onChange={(e) => setPassword(e.target.value)} />}
      </Field>
      <Field label="Role">
        {(id) => (
          <select id={id} value={role} onChange={(e) => setRole(e.target.value as Role)}>
            {ROLES.map((r) => <option key={r} value={r}>{r}</option>)}
          </select>
        )}
      </Field>
      <div className="field check">
        <input id="new-user-must-change" type="checkbox" checked={mustChange} onChange={(e) => setMustChange(e.target.checked)} />
        <label htmlFor="new-user-must-change">Must change the password at first sign-in</label>
      </div>
      <ErrorNote error={create.error} />
      {create.isSuccess && <p role="status" className="ok-note">User {create.data.username} created.</p>}
      <div className="actions">
        <button type="submit" className="primary" disabled={create.isPending}>Create user</button>
      </div>
    </form>
  );
}
