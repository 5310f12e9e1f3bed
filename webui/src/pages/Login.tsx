// Sign in: password, then the TOTP (or recovery) code when the account has a second factor,
// then a forced password change when apid asks for one.
import { useState, type FormEvent } from "react";
import { ApiFailure } from "../api/client";
import { useAuth } from "../auth";
import { ErrorNote, Field } from "../components/ui";

export function Login() {
  const { login } = useAuth();
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [step, setStep] = useState<"password" | "totp">("password");
  const [code, setCode] = useState("");
  const [useRecovery, setUseRecovery] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const second =
        step === "totp" ? (useRecovery ? { recovery_code: code } : { totp_code: code.trim() }) : {};
      await login({ username, password, ...second });
    } catch (err) {
      if (err instanceof ApiFailure && err.code === "totp_required") {
        setStep("totp");
        setCode("");
      } else setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="login">
      <h1>Rookery</h1>
      <form onSubmit={submit} aria-label="Sign in">
        <h2>Sign in</h2>
        {step === "password" ? (
          <>
            <Field label="Username">
              {(id) => (
                <input id={id} name="username" autoComplete="username" required autoFocus
                  value={username} onChange={(e) => setUsername(e.target.value)} />
              )}
            </Field>
            <Field label="Password">
              {(id) => (
                <input id={id} name="password" type="password" autoComplete="current-password" required
                  value={password} onChange={(e) => setPassword(e.target.value)} />
              )}
            </Field>
          </>
        ) : (
          <>
            <p>
              <strong>{username}</strong> has a second factor.
            </p>
            <Field
              label={useRecovery ? "Recovery code" : "Authenticator code"}
              hint={useRecovery ? "One of the codes saved at enrolment; each works once." : "The 6 digits your authenticator app shows now."}
            >
              {(id, hint) => (
                <input id={id} name="code" required autoFocus aria-describedby={hint}
                  autoComplete="one-time-code" inputMode={useRecovery ? "text" : "numeric"}
                  pattern={useRecovery ? undefined : "[0-9]{6}"}
                  value={code} onChange={(e) => setCode(e.target.value)} />
              )}
            </Field>
            <button type="button" className="link" onClick={() => { setUseRecovery(!useRecovery); setCode(""); }}>
              {useRecovery ? "Use the authenticator code" : "Use a recovery code instead"}
            </button>
          </>
        )}
        <ErrorNote error={error} />
        <div className="actions">
          {step === "totp" && (
            <button type="button" onClick={() => { setStep("password"); setError(null); }}>
              Back
            </button>
          )}
          <button type="submit" className="primary" disabled={busy}>
            {step === "totp" ? "Verify" : "Sign in"}
          </button>
        </div>
      </form>
    </main>
  );
}

/** Shown instead of the console while apid refuses everything but a password change. */
export function ForcedPasswordChange() {
  const { user, changePassword, logout } = useAuth();
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  return (
    <main className="login">
      <h1>Rookery</h1>
      <PasswordForm
        username={user?.username ?? ""}
        title="Choose a new password"
        intro={`${user?.username ?? "This account"} must change its password before using the console.`}
        busy={busy}
        error={error}
        onSubmit={async (current, next) => {
          setBusy(true);
          setError(null);
          try {
            await changePassword(current, next);
          } catch (err) {
            setError(err);
          } finally {
            setBusy(false);
          }
        }}
      />
      <button type="button" className="link" onClick={() => void logout()}>
        Sign out
      </button>
    </main>
  );
}

/** Current password, new password twice; checks the two match before calling `onSubmit`. */
export function PasswordForm({
  username,
  title,
  intro,
  busy,
  error,
  onSubmit,
}: {
  /** For password managers (a hidden username field beside the new password). */
  username: string;
  title: string;
  intro?: string;
  busy: boolean;
  error: unknown;
  onSubmit: (current: string, next: string) => void | Promise<void>;
}) {
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [again, setAgain] = useState("");
  const [mismatch, setMismatch] = useState(false);
  return (
    <form
      aria-label={title}
      onSubmit={(e) => {
        e.preventDefault();
        if (next !== again) {
          setMismatch(true);
          return;
        }
        setMismatch(false);
        void onSubmit(current, next);
      }}
    >
      <h2>{title}</h2>
      {intro && <p>{intro}</p>}
      <input type="text" name="username" autoComplete="username" value={username} readOnly hidden />
      <Field label="Current password">
        {(id) => (
          <input id={id} type="password" autoComplete="current-password" required
            value={current} onChange={(e) => setCurrent(e.target.value)} />
        )}
      </Field>
      <Field label="New password" hint="At least 12 characters, not containing the username.">
        {(id, hint) => (
          <input id={id} type="password" autoComplete="new-password" required aria-describedby={hint}
            value={next} onChange={(e) => setNext(e.target.value)} />
        )}
      </Field>
      <Field label="New password again">
        {(id) => (
          <input id={id} type="password" autoComplete="new-password" required
            value={again} onChange={(e) => setAgain(e.target.value)} />
        )}
      </Field>
      {mismatch && (
        <p className="error" role="alert">
          The two new passwords differ.
        </p>
      )}
      <ErrorNote error={error} />
      <div className="actions">
        <button type="submit" className="primary" disabled={busy}>
          Change password
        </button>
      </div>
    </form>
  );
}
