import type { Role } from "../api/client";

const RANK: Record<Role, number> = { viewer: 0, maintainer: 1, admin: 2 };

/** Whether `role` is at least `min` (viewer < maintainer < admin, as apid's route table). */
export function atLeast(role: Role | undefined, min: Role): boolean {
  return role !== undefined && RANK[role] >= RANK[min];
}

export function isRole(v: unknown): v is Role {
  return v === "viewer" || v === "maintainer" || v === "admin";
}

export interface NavItem {
  to: string;
  label: string;
  /** Least role that may open the page (apid enforces the same on its routes). */
  min: Role;
}

/** The console's pages. */
export const NAV: NavItem[] = [
  { to: "/", label: "Dashboard", min: "viewer" },
  { to: "/probes", label: "Probes", min: "viewer" },
  { to: "/packet-tests", label: "Packet tests", min: "viewer" },
  { to: "/logs", label: "Logs", min: "viewer" },
  { to: "/metrics", label: "Metrics", min: "viewer" },
  { to: "/config", label: "Config", min: "viewer" },
  { to: "/licence", label: "Licence", min: "viewer" },
  { to: "/api-keys", label: "API keys", min: "viewer" },
  { to: "/users", label: "Users", min: "admin" },
  { to: "/audit", label: "Audit log", min: "admin" },
  { to: "/account", label: "Account", min: "viewer" },
];

export function navFor(role: Role | undefined): NavItem[] {
  return NAV.filter((n) => atLeast(role, n.min));
}
