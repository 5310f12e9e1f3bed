import { describe, expect, it } from "vitest";
import { changed, lineDiff } from "./diff";

describe("lineDiff", () => {
  it("marks an edited line as removed then added, keeping line numbers", () => {
    const d = lineDiff("a\nb\nc\n", "a\nB\nc\n");
    expect(d.map((l) => `${l.op}:${l.text}`)).toEqual(["same:a", "del:b", "add:B", "same:c"]);
    expect(d[1]).toMatchObject({ oldLine: 2 });
    expect(d[2]).toMatchObject({ newLine: 2 });
    expect(changed(d)).toBe(true);
  });

  it("finds insertions in the middle without touching common lines", () => {
    const d = lineDiff("x\ny\nz", "x\nnew1\ny\nnew2\nz");
    expect(d.filter((l) => l.op !== "same").map((l) => l.text)).toEqual(["new1", "new2"]);
    expect(d.find((l) => l.text === "z")).toMatchObject({ op: "same", oldLine: 3, newLine: 5 });
  });

  it("handles empty texts and identical texts", () => {
    expect(lineDiff("", "a\n").map((l) => l.op)).toEqual(["add"]);
    expect(lineDiff("a\n", "").map((l) => l.op)).toEqual(["del"]);
    expect(changed(lineDiff("same\n", "same\n"))).toBe(false);
  });
});
