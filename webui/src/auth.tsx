// The signed-in user: a browser session (HttpOnly cookie set by apid) plus its CSRF token.
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from "react";
import { ApiFailure, api, csrf, onSessionExpired, unwrap, type Role } from "./api/client";
import { isRole } from "./lib/roles";

export interface User {
  username: string;
  role: Role;
  mustChangePassword: boolean;
}

interface Credentials {
  username: string;
  password: string;
  totp_code?: string;
  recovery_code?: string;
}

interface AuthState {
  user: User | null;
  /** Still asking apid whether the stored session is alive. */
  checking: boolean;
  login(c: Credentials): Promise<User>;
  logout(): Promise<void>;
  /** Changes the password, then signs in again with it (apid ends all sessions on a change). */
  changePassword(current: string, next: string): Promise<User>;
}

const AuthContext = createContext<AuthState | null>(null);
const USER_KEY = "rookery.user";

function stored(): User | null {
  try {
    const v = JSON.parse(sessionStorage.getItem(USER_KEY) ?? "null") as User | null;
    return v && typeof v.username === "string" && isRole(v.role) ? v : null;
  } catch {
    return null;
  }
}

export function AuthProvider({ children }: { children: ReactNode }) {
  const [user, setUserState] = useState<User | null>(() => (csrf.get() ? stored() : null));
  const [checking, setChecking] = useState<boolean>(() => csrf.get() !== null && stored() !== null);

  const setUser = useCallback((u: User | null) => {
    if (u) sessionStorage.setItem(USER_KEY, JSON.stringify(u));
    else {
      sessionStorage.removeItem(USER_KEY);
      csrf.clear();
    }
    setUserState(u);
  }, []);

  useEffect(() => onSessionExpired(() => setUser(null)), [setUser]);

  useEffect(() => {
    if (!checking) return;
    let live = true;
    unwrap(api.GET("/api/v1/auth/me"))
      .then((me) => {
        if (live) setUser({ username: me.username, role: me.role, mustChangePassword: false });
      })
      .catch((err: unknown) => {
        if (!live) return;
        if (err instanceof ApiFailure && err.code === "password_change_required") {
          const s = stored();
          setUser(s ? { ...s, mustChangePassword: true } : null);
        } else setUser(null);
      })
      .finally(() => live && setChecking(false));
    return () => {
      live = false;
    };
  }, [checking, setUser]);

  const login = useCallback(
    async (c: Credentials) => {
      const r = await unwrap(api.POST("/api/v1/auth/session", { body: c }));
      csrf.set(r.csrf_token);
      const role = isRole(r.role) ? r.role : "viewer";
      const u = { username: r.username, role, mustChangePassword: r.must_change_password };
      setUser(u);
      return u;
    },
    [setUser],
  );

  const logout = useCallback(async () => {
    try {
      await unwrap(api.DELETE("/api/v1/auth/session"));
    } finally {
      setUser(null);
    }
  }, [setUser]);

  const changePassword = useCallback(
    async (current: string, next: string) => {
      if (!user) throw new Error("not signed in");
      await unwrap(
        api.POST("/api/v1/auth/change-password", {
          body: { current_password: current, new_password: next },
        }),
      );
      // The change ended every session of the user; open a new one with the new password.
      csrf.clear();
      return login({ username: user.username, password: next });
    },
    [user, login],
  );

  const value = useMemo(
    () => ({ user, checking, login, logout, changePassword }),
    [user, checking, login, logout, changePassword],
  );
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}

export function useAuth(): AuthState {
  const v = useContext(AuthContext);
  if (!v) throw new Error("useAuth outside AuthProvider");
  return v;
}
