/** One line of a line diff: `same`, `add` (only in the new text) or `del` (only in the old). */
export interface DiffLine {
  op: "same" | "add" | "del";
  text: string;
  /** 1-based line in the old text (same, del). */
  oldLine?: number;
  /** 1-based line in the new text (same, add). */
  newLine?: number;
}

/** Most lines compared with the full LCS table (config files are far smaller). */
export const MAX_DIFF_LINES = 5000;

function lines(text: string): string[] {
  if (text === "") return [];
  const l = text.split("\n");
  if (l[l.length - 1] === "") l.pop();
  return l;
}

/**
 * A line diff (longest common subsequence) from `oldText` to `newText`. The common prefix
 * and suffix are taken first so that the table covers only the changed middle.
 */
export function lineDiff(oldText: string, newText: string): DiffLine[] {
  const a = lines(oldText);
  const b = lines(newText);
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) {
    endA--;
    endB--;
  }
  const out: DiffLine[] = [];
  for (let i = 0; i < start; i++) out.push({ op: "same", text: a[i]!, oldLine: i + 1, newLine: i + 1 });
  const n = endA - start;
  const m = endB - start;
  if (n > MAX_DIFF_LINES || m > MAX_DIFF_LINES) {
    for (let i = start; i < endA; i++) out.push({ op: "del", text: a[i]!, oldLine: i + 1 });
    for (let j = start; j < endB; j++) out.push({ op: "add", text: b[j]!, newLine: j + 1 });
  } else {
    // lcs[i][j]: length of the LCS of a[start+i..endA] and b[start+j..endB].
    const lcs: Uint32Array[] = [];
    for (let i = 0; i <= n; i++) lcs.push(new Uint32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        lcs[i]![j] =
          a[start + i] === b[start + j]
            ? lcs[i + 1]![j + 1]! + 1
            : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
      }
    }
    let i = 0;
    let j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && a[start + i] === b[start + j]) {
        out.push({ op: "same", text: a[start + i]!, oldLine: start + i + 1, newLine: start + j + 1 });
        i++;
        j++;
      } else if (i < n && (j >= m || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) {
        out.push({ op: "del", text: a[start + i]!, oldLine: start + i + 1 });
        i++;
      } else {
        out.push({ op: "add", text: b[start + j]!, newLine: start + j + 1 });
        j++;
      }
    }
  }
  for (let k = 0; k < a.length - endA; k++) {
    out.push({ op: "same", text: a[endA + k]!, oldLine: endA + k + 1, newLine: endB + k + 1 });
  }
  return out;
}

/** Whether a diff changes anything. */
export function changed(d: DiffLine[]): boolean {
  return d.some((l) => l.op !== "same");
}
