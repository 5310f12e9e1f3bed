import { describe, expect, it } from "vitest";
import { align, logQuery, seriesLabel } from "./ingest";

describe("logs query", () => {
  it("sends only the filters that are set, trimmed, with the page cursor", () => {
    const empty = { q: "", host: "", app: "", severity: "", facility: "", since: "", until: "" };
    expect(logQuery(empty, undefined)).toEqual({ limit: 100 });
    const q = logQuery({ ...empty, q: ' "link down" ', app: "kernel", severity: "3", facility: "0" }, 42);
    expect(q).toEqual({ limit: 100, q: '"link down"', app: "kernel", severity: 3, facility: 0, before: 42 });
    const t = logQuery({ ...empty, since: "2026-01-31T12:00" }, undefined);
    expect(typeof t.since).toBe("string");
    expect(new Date(t.since as string).getTime()).toBe(new Date("2026-01-31T12:00").getTime());
  });
});

describe("metric series", () => {
  it("labels a series without its name", () => {
    expect(seriesLabel({ __name__: "up", job: "self", instance: "a:1" })).toBe('{job="self", instance="a:1"}');
  });

  it("aligns series on the union of their times, leaving gaps", () => {
    const { x, values } = align([
      { labels: {}, points: [{ unix_ms: 1000, value: 1 }, { unix_ms: 3000, value: 3 }] },
      { labels: {}, points: [{ unix_ms: 2000, value: 20 }] },
    ]);
    expect(x).toEqual([1, 2, 3]);
    expect(values).toEqual([[1, null, 3], [null, 20, null]]);
  });
});
