/** Offset in `text` of 1-based `line` and `column` (clamped to the text). */
export function offsetOf(text: string, line: number, column: number): number {
  let offset = 0;
  for (let l = 1; l < line; l++) {
    const nl = text.indexOf("\n", offset);
    if (nl < 0) return text.length;
    offset = nl + 1;
  }
  const end = text.indexOf("\n", offset);
  const lineEnd = end < 0 ? text.length : end;
  return Math.min(offset + Math.max(column, 1) - 1, lineEnd);
}

/** Number of lines of `text` (an empty text has one). */
export function lineCount(text: string): number {
  let n = 1;
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) n++;
  return n;
}

/** "1.2 ms", "340 ms", "2.5 s" for a duration in seconds. */
export function seconds(s: number): string {
  if (!Number.isFinite(s)) return "–";
  if (s < 0.01) return `${(s * 1000).toFixed(2)} ms`;
  if (s < 1) return `${(s * 1000).toFixed(0)} ms`;
  return `${s.toFixed(2)} s`;
}

/** "3d 4h", "5h 2m", "7m 3s" for an uptime in seconds. */
export function uptime(total: number): string {
  const d = Math.floor(total / 86400);
  const h = Math.floor((total % 86400) / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = Math.floor(total % 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  return `${m}m ${s}s`;
}

/** A Unix time in seconds as local date and time, or "never" for 0. */
export function unixTime(sec: number): string {
  if (!sec) return "never";
  return new Date(sec * 1000).toLocaleString();
}

/** The slice of `items` shown on `page` (0-based) of `size`, and the number of pages. */
export function pageOf<T>(items: readonly T[], page: number, size: number): { rows: T[]; pages: number; page: number } {
  const pages = Math.max(1, Math.ceil(items.length / size));
  const p = Math.min(Math.max(0, page), pages - 1);
  return { rows: items.slice(p * size, p * size + size), pages, page: p };
}
