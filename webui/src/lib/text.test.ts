import { describe, expect, it } from "vitest";
import { lineCount, offsetOf, pageOf, seconds, uptime } from "./text";

describe("offsetOf", () => {
  const text = "[a]\nkey = 1\n\nlast";
  it("maps 1-based line and column to an offset", () => {
    expect(offsetOf(text, 1, 1)).toBe(0);
    expect(offsetOf(text, 2, 7)).toBe(text.indexOf("1"));
    expect(offsetOf(text, 4, 1)).toBe(text.indexOf("last"));
  });
  it("clamps past the end of a line or of the text", () => {
    expect(offsetOf(text, 2, 99)).toBe(text.indexOf("\n\n"));
    expect(offsetOf(text, 40, 1)).toBe(text.length);
  });
});

describe("formatting", () => {
  it("counts lines", () => {
    expect(lineCount("")).toBe(1);
    expect(lineCount("a\nb\n")).toBe(3);
  });
  it("formats durations", () => {
    expect(seconds(0.0012)).toBe("1.20 ms");
    expect(seconds(0.34)).toBe("340 ms");
    expect(seconds(2.5)).toBe("2.50 s");
    expect(uptime(90061)).toBe("1d 1h");
    expect(uptime(3720)).toBe("1h 2m");
    expect(uptime(65)).toBe("1m 5s");
  });
});

describe("pageOf", () => {
  const items = Array.from({ length: 10_000 }, (_, i) => i);
  it("returns one page of a large list and clamps the page", () => {
    const p = pageOf(items, 3, 50);
    expect(p.rows).toHaveLength(50);
    expect(p.rows[0]).toBe(150);
    expect(p.pages).toBe(200);
    expect(pageOf(items, 999, 50).page).toBe(199);
    expect(pageOf([], 0, 50)).toEqual({ rows: [], pages: 1, page: 0 });
  });
});
