// The signed-in user's own account: password and second factor (TOTP).
import { useMutation } from "@tanstack/react-query";
import { useState, type FormEvent } from "react";
import { api, unwrap } from "../api/client";
import { useAuth } from "../auth";
import { ErrorNote, Field } from "../components/ui";
import { PasswordForm } from "./Login";

export function Account() {
  const { user, changePassword } = useAuth();
  const [pwError, setPwError] = useState<unknown>(null);
  const [pwBusy, setPwBusy] = useState(false);
  const [pwDone, setPwDone] = useState(false);
  return (
    <>
      <h1>Account</h1>
      <p>
        Signed in as <strong>{user?.username}</strong> ({user?.role}).
      </p>
      <div className="panel">
        <PasswordForm
          username={user?.username ?? ""}
          title="Change password"
          busy={pwBusy}
          error={pwError}
          onSubmit={async (current, next) => {
            setPwBusy(true);
            setPwError(null);
            setPwDone(false);
            try {
              await changePassword(current, next);
              setPwDone(true);
            } catch (err) {
              setPwError(err);
            } finally {
              setPwBusy(false);
            }
          }}
        />
        {pwDone && <p role="status" className="ok-note">Password changed; other sessions were signed out.</p>}
      </div>
      <Totp />
    </>
  );
}

function Totp() {
  const [code, setCode] = useState("");
  const [password, setPassword] = useState("");
  const enrol = useMutation({ mutationFn: () => unwrap(api.POST("/api/v1/auth/totp/enrol")) });
  const verify = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/auth/totp/verify", { body: { code: code.trim() } })),
    onSuccess: () => setCode(""),
  });
  const disable = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/auth/totp/disable", { body: { password } })),
    onSuccess: () => setPassword(""),
  });
  const submitVerify = (e: FormEvent) => {
    e.preventDefault();
    verify.mutate();
  };
  const submitDisable = (e: FormEvent) => {
    e.preventDefault();
    disable.mutate();
  };
  return (
    <section className="panel" aria-labelledby="totp-h">
      <h2 id="totp-h">Two-factor sign-in (TOTP)</h2>
      <p>Enrol an authenticator app; every sign-in then asks for its 6-digit code.</p>
      <div className="actions">
        <button type="button" onClick={() => enrol.mutate()} disabled={enrol.isPending}>Start enrolment</button>
      </div>
      <ErrorNote error={enrol.error} />
      {enrol.data && !verify.isSuccess && (
        <form onSubmit={submitVerify} aria-label="Confirm the authenticator">
          <p>Add this secret to the app (or open the link on the phone), then type the code it shows.</p>
          <dl className="facts">
            <dt>Secret</dt><dd><code className="secret" data-testid="totp-secret">{enrol.data.secret}</code></dd>
            <dt>Link</dt><dd><a href={enrol.data.otpauth_uri}>otpauth link</a></dd>
          </dl>
          <Field label="Code from the app">
            {(id) => <input id={id} required inputMode="numeric" pattern="[0-9]{6}" autoComplete="one-time-code" value={code} onChange={(e) => setCode(e.target.value)} />}
          </Field>
          <ErrorNote error={verify.error} />
          <div className="actions"><button type="submit" className="primary" disabled={verify.isPending}>Confirm</button></div>
        </form>
      )}
      {verify.data && (
        <div role="status" className="ok-note">
          <p>Two-factor sign-in is on. Save these recovery codes; each works once and they are not shown again.</p>
          <ul className="codes">{verify.data.recovery_codes.map((c) => <li key={c}><code>{c}</code></li>)}</ul>
        </div>
      )}
      <form onSubmit={submitDisable} aria-label="Turn off two-factor sign-in">
        <h3>Turn off</h3>
        <Field label="Password to turn off two-factor sign-in">
          {(id) => <input id={id} type="password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.target.value)} />}
        </Field>
        <ErrorNote error={disable.error} />
        {disable.isSuccess && <p role="status" className="ok-note">Two-factor sign-in is off.</p>}
        <div className="actions"><button type="submit" disabled={disable.isPending}>Turn off</button></div>
      </form>
    </section>
  );
}
