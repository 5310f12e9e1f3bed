// Helpers of the Packet tests page: the start form's body, the watch stream's events, the live
// chart's samples and the formatting of packetd's measurements.
import type { Schemas } from "../api/client";

export type Session = Schemas["SessionView"];
export type Stats = Schemas["StatsView"];
export type StartBody = Schemas["StartRequest"];

/** The start form's fields, as the inputs hold them. */
export interface StartForm {
  destination: string;
  port: string;
  count: string;
  duration_ms: string;
  rate_pps: string;
  packet_size: string;
  dscp: string;
  source: string;
  ssid: string;
}

export const DEFAULT_FORM: StartForm = {
  destination: "",
  port: "862",
  count: "100",
  duration_ms: "",
  rate_pps: "10",
  packet_size: "44",
  dscp: "0",
  source: "",
  ssid: "",
};

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Whether `s` is an IPv4 or IPv6 literal (what packetd accepts; names are not resolved). */
export function isIp(s: string): boolean {
  if (IPV4.test(s)) return true;
  if (!s.includes(":") || !/^[0-9a-fA-F:.]+$/.test(s)) return false;
  try {
    // The URL parser validates IPv6 literals.
    return new URL(`http://[${s}]/`).hostname.length > 2;
  } catch {
    return false;
  }
}

/** The integer in `raw` within `lo..hi`, undefined when empty, or the reason it is not. */
function integer(raw: string, lo: number, hi: number): number | undefined | string {
  const t = raw.trim();
  if (t === "") return undefined;
  if (!/^\d+$/.test(t)) return `expected a whole number from ${lo} to ${hi}`;
  const n = Number(t);
  if (n < lo || n > hi) return `expected ${lo} to ${hi}`;
  return n;
}

/**
 * The request body of the form, or the problems by field name (the names apid uses, so its
 * 422 and these agree). apid checks the same again; packetd checks its own max-pps.
 */
export function startBody(f: StartForm): { body: StartBody } | { errors: Partial<Record<keyof StartForm, string>> } {
  const errors: Partial<Record<keyof StartForm, string>> = {};
  const destination = f.destination.trim();
  if (!destination) errors.destination = "required";
  else if (!isIp(destination)) errors.destination = "expected an IPv4 or IPv6 address, e.g. 192.0.2.1";
  const source = f.source.trim();
  if (source && !isIp(source)) errors.source = "expected an IPv4 or IPv6 address, or empty";
  const fields: [keyof StartForm, number, number][] = [
    ["port", 1, 65535],
    ["count", 1, Number.MAX_SAFE_INTEGER],
    ["duration_ms", 1, Number.MAX_SAFE_INTEGER],
    ["rate_pps", 1, 1_000_000],
    ["packet_size", 44, 8972],
    ["dscp", 0, 63],
    ["ssid", 0, 65535],
  ];
  const n: Partial<Record<keyof StartForm, number>> = {};
  for (const [name, lo, hi] of fields) {
    const v = integer(f[name], lo, hi);
    if (typeof v === "string") errors[name] = v;
    else if (v !== undefined) n[name] = v;
  }
  if (n.count === undefined && n.duration_ms === undefined && !errors.count && !errors.duration_ms) {
    errors.count = "give a count, a duration or both";
  }
  if (Object.keys(errors).length > 0) return { errors };
  const body: StartBody = { destination };
  if (source) body.source = source;
  if (n.port !== undefined) body.port = n.port;
  if (n.count !== undefined) body.count = n.count;
  if (n.duration_ms !== undefined) body.duration_ms = n.duration_ms;
  if (n.rate_pps !== undefined) body.rate_pps = n.rate_pps;
  if (n.packet_size !== undefined) body.packet_size = n.packet_size;
  if (n.dscp !== undefined) body.dscp = n.dscp;
  if (n.ssid !== undefined) body.ssid = n.ssid;
  return { body };
}

/** A `session` event's data from the watch stream, checked for the fields the page uses. */
export function parseSessionEvent(data: string): Session {
  const v: unknown = JSON.parse(data);
  if (
    typeof v !== "object" ||
    v === null ||
    typeof (v as Session).id !== "number" ||
    typeof (v as Session).state !== "string" ||
    typeof (v as Session).stats !== "object" ||
    (v as Session).stats === null ||
    typeof (v as Session).stats.sent !== "number"
  ) {
    throw new Error(`not a session: ${data.slice(0, 200)}`);
  }
  return v as Session;
}

/** Whether a session has ended (its last event). */
export const finished = (s: Pick<Session, "state">) => s.state !== "running";

/** One point of the live chart: when it arrived and the session's state then. */
export interface Sample {
  /** Unix seconds. */
  t: number;
  sent: number;
  received: number;
  lost: number;
  p50: number;
  p90: number;
  p99: number;
}

/** Most points kept per chart; older ones are thinned (every other one dropped) beyond this. */
export const MAX_SAMPLES = 1200;

/**
 * `samples` with `s` appended at time `t` (Unix seconds). A running session's message closer
 * than `minGap` seconds to the previous point is skipped (its counters are cumulative, so the
 * next point carries it), so the chart stays cheap at packetd's 10 messages per second; the
 * final message is always kept.
 */
export function addSample(samples: readonly Sample[], s: Session, t: number, minGap = 0.25): Sample[] {
  const prev = samples[samples.length - 1];
  if (prev && t - prev.t < minGap && !finished(s)) return samples as Sample[];
  const st = s.stats;
  let out = [
    ...samples,
    { t, sent: st.sent, received: st.received, lost: st.lost, p50: st.rtt_p50_ns, p90: st.rtt_p90_ns, p99: st.rtt_p99_ns },
  ];
  if (out.length > MAX_SAMPLES) out = out.filter((_, i) => i % 2 === 1 || i === out.length - 1);
  return out;
}

/** The live chart's data: RTT percentiles in milliseconds (null until a reply came back). */
export function chartOf(samples: readonly Sample[]): { x: number[]; p50: (number | null)[]; p90: (number | null)[]; p99: (number | null)[] } {
  const ms = (ns: number, received: number) => (received > 0 ? ns / 1e6 : null);
  return {
    x: samples.map((s) => s.t),
    p50: samples.map((s) => ms(s.p50, s.received)),
    p90: samples.map((s) => ms(s.p90, s.received)),
    p99: samples.map((s) => ms(s.p99, s.received)),
  };
}

/** "850 µs", "1.23 ms", "12.3 ms", "1.20 s" for nanoseconds. */
export function nanos(ns: number): string {
  if (!Number.isFinite(ns)) return "–";
  const a = Math.abs(ns);
  if (a < 1_000) return `${ns} ns`;
  if (a < 1_000_000) return `${(ns / 1_000).toFixed(a < 10_000 ? 1 : 0)} µs`;
  if (a < 1_000_000_000) return `${(ns / 1_000_000).toFixed(a < 10_000_000 ? 2 : 1)} ms`;
  return `${(ns / 1_000_000_000).toFixed(2)} s`;
}

/** Lost packets as a share of those sent: "0 %", "1.25 %", or "–" before any was sent. */
export function lossPercent(st: Pick<Stats, "sent" | "lost">): string {
  if (st.sent === 0) return "–";
  const p = (st.lost / st.sent) * 100;
  return `${p === 0 ? "0" : p.toFixed(2)} %`;
}

/** "950 bit/s", "12.3 kbit/s", "1.50 Mbit/s", "2.00 Gbit/s". */
export function bits(bps: number): string {
  if (bps < 1_000) return `${bps} bit/s`;
  if (bps < 1_000_000) return `${(bps / 1_000).toFixed(1)} kbit/s`;
  if (bps < 1_000_000_000) return `${(bps / 1_000_000).toFixed(2)} Mbit/s`;
  return `${(bps / 1_000_000_000).toFixed(2)} Gbit/s`;
}

/** "192.0.2.1:862" or "[2001:db8::1]:862". */
export function endpoint(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}
