// Licence status and features; an admin sets the key.
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { api, unwrap } from "../api/client";
import { useAuth } from "../auth";
import { ErrorNote, Field, Loading, StatusBadge } from "../components/ui";
import { atLeast } from "../lib/roles";
import { unixTime } from "../lib/text";
import { useLicence } from "../queries";

export function Licence() {
  const { user } = useAuth();
  const licence = useLicence();
  const qc = useQueryClient();
  const [key, setKey] = useState("");
  const setLicence = useMutation({
    mutationFn: () => unwrap(api.PUT("/api/v1/licence/key", { body: { key: key.trim() } })),
    onSuccess: () => {
      setKey("");
      void qc.invalidateQueries({ queryKey: ["licence"] });
    },
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setLicence.mutate();
  };
  const l = licence.data;
  return (
    <>
      <h1>Licence</h1>
      {licence.isPending && <Loading what="the licence" />}
      <ErrorNote error={licence.error} />
      {l && (
        <>
          <dl className="facts">
            <dt>State</dt><dd><StatusBadge ok={l.state === "valid" || !l.release_mode} text={l.state} /></dd>
            <dt>Release mode</dt><dd>{l.release_mode ? "on: features follow the licence" : "off: every feature on"}</dd>
            <dt>Key</dt><dd>{l.key_masked || "none"}</dd>
            <dt>Product</dt><dd>{l.product || "–"}</dd>
            <dt>Customer</dt><dd>{l.customer || "–"}</dd>
            <dt>Tier</dt><dd>{l.tier || "–"}</dd>
            <dt>Source</dt><dd>{l.source || "–"}</dd>
            <dt>Expires</dt><dd>{unixTime(l.expires_unix)}</dd>
            <dt>Last validated</dt><dd>{unixTime(l.last_validated_unix)}</dd>
            <dt>Offline grace until</dt><dd>{unixTime(l.grace_until_unix)}</dd>
            {l.last_error && (<><dt>Last error</dt><dd className="error">{l.last_error}</dd></>)}
          </dl>
          <h2>Features</h2>
          {l.features.length === 0 ? (
            <p className="muted">No feature list (none received from the licence server yet).</p>
          ) : (
            <table>
              <thead><tr><th scope="col">Feature</th><th scope="col">Enabled</th><th scope="col">Tier</th></tr></thead>
              <tbody>
                {l.features.map((f) => (
                  <tr key={f.name}><th scope="row">{f.name}</th><td><StatusBadge ok={f.enabled} text={f.enabled ? "yes" : "no"} /></td><td>{f.tier}</td></tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
      {atLeast(user?.role, "admin") && (
        <form onSubmit={submit} aria-label="Set the licence key" className="panel">
          <h2>Set the licence key</h2>
          <Field label="Licence key" hint="PENG-XXXX-XXXX-XXXX-XXXX-ABCD">
            {(id, hint) => (
              <input id={id} required pattern="PENG(-[0-9A-Z]{4}){5}" aria-describedby={hint} autoComplete="off"
                value={key} onChange={(e) => setKey(e.target.value.toUpperCase())} />
            )}
          </Field>
          <ErrorNote error={setLicence.error} />
          {setLicence.isSuccess && <p role="status" className="ok-note">Key sent to licensed.</p>}
          <div className="actions"><button type="submit" className="primary" disabled={setLicence.isPending}>Set key</button></div>
        </form>
      )}
    </>
  );
}
