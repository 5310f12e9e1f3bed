import { NavLink } from "react-router";
import type { Role } from "../api/client";
import { navFor } from "../lib/roles";

/** The main navigation: only the pages the role may open. */
export function Nav({ role }: { role: Role | undefined }) {
  return (
    <nav aria-label="Main">
      <ul>
        {navFor(role).map((n) => (
          <li key={n.to}>
            <NavLink to={n.to} end={n.to === "/"}>
              {n.label}
            </NavLink>
          </li>
        ))}
      </ul>
    </nav>
  );
}
