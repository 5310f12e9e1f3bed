// The console's shell: sign-in gate, role-aware navigation, and the routes.
import type { ReactNode } from "react";
import { Navigate, Route, Routes } from "react-router";
import type { Role } from "./api/client";
import { useAuth } from "./auth";
import { Loading } from "./components/ui";
import { Nav } from "./components/Nav";
import { atLeast } from "./lib/roles";
import { Account } from "./pages/Account";
import { ApiKeys } from "./pages/ApiKeys";
import { Audit } from "./pages/Audit";
import { Config } from "./pages/Config";
import { Dashboard } from "./pages/Dashboard";
import { Licence } from "./pages/Licence";
import { Logs } from "./pages/Logs";
import { ForcedPasswordChange, Login } from "./pages/Login";
import { Metrics } from "./pages/Metrics";
import { PacketTests } from "./pages/PacketTests";
import { Probes } from "./pages/Probes";
import { Users } from "./pages/Users";

function Need({ role, min, children }: { role: Role | undefined; min: Role; children: ReactNode }) {
  if (!atLeast(role, min)) {
    return (
      <p className="error" role="alert">
        This page needs the {min} role.
      </p>
    );
  }
  return <>{children}</>;
}

export function App() {
  const { user, checking, logout } = useAuth();
  if (checking) return <Loading what="your session" />;
  if (!user) return <Login />;
  if (user.mustChangePassword) return <ForcedPasswordChange />;
  const role = user.role;
  return (
    <div className="shell">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header>
        <span className="brand">Rookery</span>
        <Nav role={role} />
        <span className="who">
          {user.username} ({role}){" "}
          <button type="button" onClick={() => void logout()}>
            Sign out
          </button>
        </span>
      </header>
      <main id="main" tabIndex={-1}>
        <Routes>
          <Route path="/" element={<Dashboard />} />
          <Route path="/probes" element={<Probes />} />
          <Route path="/packet-tests" element={<PacketTests />} />
          <Route path="/logs" element={<Logs />} />
          <Route path="/metrics" element={<Metrics />} />
          <Route path="/config" element={<Config />} />
          <Route path="/config/:daemon" element={<Config />} />
          <Route path="/licence" element={<Licence />} />
          <Route path="/api-keys" element={<ApiKeys />} />
          <Route path="/users" element={<Need role={role} min="admin"><Users /></Need>} />
          <Route path="/audit" element={<Need role={role} min="admin"><Audit /></Need>} />
          <Route path="/account" element={<Account />} />
          <Route path="*" element={<Navigate to="/" replace />} />
        </Routes>
      </main>
    </div>
  );
}
