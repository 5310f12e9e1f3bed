import { cleanup, render, screen } from "@testing-library/react";
import { MemoryRouter } from "react-router";
import { afterEach, describe, expect, it } from "vitest";
import { Nav } from "../components/Nav";
import { atLeast, navFor } from "./roles";

afterEach(cleanup);

describe("roles", () => {
  it("orders viewer < maintainer < admin", () => {
    expect(atLeast("admin", "maintainer")).toBe(true);
    expect(atLeast("maintainer", "maintainer")).toBe(true);
    expect(atLeast("viewer", "maintainer")).toBe(false);
    expect(atLeast(undefined, "viewer")).toBe(false);
  });

  it("shows admin pages to admins only", () => {
    const labels = (r: "viewer" | "maintainer" | "admin") => navFor(r).map((n) => n.label);
    expect(labels("admin")).toContain("Users");
    expect(labels("admin")).toContain("Audit log");
    expect(labels("maintainer")).not.toContain("Users");
    expect(labels("viewer")).not.toContain("Audit log");
    expect(labels("viewer")).toContain("Config");
  });

  it("renders the navigation a viewer may use", () => {
    render(
      <MemoryRouter>
        <Nav role="viewer" />
      </MemoryRouter>,
    );
    const links = screen.getAllByRole("link").map((a) => a.textContent);
    expect(links).toEqual(["Dashboard", "Probes", "Packet tests", "Logs", "Metrics", "Config", "Licence", "API keys", "Account"]);
  });
});
