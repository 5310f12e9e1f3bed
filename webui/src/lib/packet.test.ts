import { describe, expect, it } from "vitest";
import {
  DEFAULT_FORM,
  MAX_SAMPLES,
  addSample,
  bits,
  chartOf,
  endpoint,
  isIp,
  lossPercent,
  nanos,
  parseSessionEvent,
  startBody,
  type Session,
} from "./packet";

function session(state: string, sent: number, received: number, p50 = 1_000_000): Session {
  return {
    id: 7,
    state,
    error: "",
    started_unix_ms: 1_700_000_000_000,
    finished_unix_ms: state === "running" ? 0 : 1_700_000_001_000,
    spec: { destination: "192.0.2.1", port: 862, source: "", dscp: 0, packet_size: 44, rate_pps: 10, count: 10, duration_ms: 0, ssid: 0 },
    stats: {
      sent, received, lost: sent - received, duplicates: 0, reordered: 0, reordered_ratio: 0,
      rtt_min_ns: p50 / 2, rtt_mean_ns: p50, rtt_max_ns: p50 * 3, rtt_p50_ns: p50, rtt_p90_ns: p50 * 2, rtt_p99_ns: p50 * 3,
      jitter_ns: 10_000, ipdv_mean_abs_ns: 5_000, ipdv_max_abs_ns: 20_000, owd_forward_mean_ns: 0, owd_backward_mean_ns: 0,
      owd_synchronized: false, throughput_bps: 1000,
    },
  };
}

describe("packet start form", () => {
  it("builds the body from the defaults and a destination", () => {
    const r = startBody({ ...DEFAULT_FORM, destination: " 192.0.2.1 " });
    expect(r).toEqual({ body: { destination: "192.0.2.1", port: 862, count: 100, rate_pps: 10, packet_size: 44, dscp: 0 } });
  });

  it("passes IPv6, duration, source and SSID", () => {
    const r = startBody({ ...DEFAULT_FORM, destination: "2001:db8::1", source: "2001:db8::2", count: "", duration_ms: "5000", ssid: "9" });
    expect(r).toEqual({
      body: { destination: "2001:db8::1", source: "2001:db8::2", port: 862, duration_ms: 5000, rate_pps: 10, packet_size: 44, dscp: 0, ssid: 9 },
    });
  });

  it("names every bad field", () => {
    const r = startBody({ ...DEFAULT_FORM, destination: "example.com", port: "0", dscp: "64", packet_size: "20", rate_pps: "1.5", source: "nope" });
    expect("errors" in r && Object.keys(r.errors).sort()).toEqual(["destination", "dscp", "packet_size", "port", "rate_pps", "source"]);
    expect(startBody({ ...DEFAULT_FORM, destination: "" })).toEqual({ errors: { destination: "required" } });
    expect(startBody({ ...DEFAULT_FORM, destination: "192.0.2.1", count: "" })).toEqual({
      errors: { count: "give a count, a duration or both" },
    });
  });

  it("tells IP literals from names", () => {
    for (const ok of ["127.0.0.1", "255.255.255.255", "::1", "2001:db8::1", "::ffff:192.0.2.1"]) expect(isIp(ok), ok).toBe(true);
    for (const bad of ["256.1.1.1", "1.2.3", "example.com", "", "2001:db8:::1:", "1.2.3.4:80", "[::1]"]) expect(isIp(bad), bad).toBe(false);
  });
});

describe("packet watch stream", () => {
  it("parses session events and refuses other data", () => {
    const s = session("running", 3, 3);
    expect(parseSessionEvent(JSON.stringify(s))).toEqual(s);
    expect(() => parseSessionEvent('{"id": 1}')).toThrow(/not a session/);
    expect(() => parseSessionEvent("[]")).toThrow(/not a session/);
    expect(() => parseSessionEvent("nope")).toThrow();
  });

  it("keeps a point per quarter second and always the final one", () => {
    let samples = addSample([], session("running", 1, 0), 100);
    samples = addSample(samples, session("running", 2, 1), 100.1);
    expect(samples.length).toBe(1);
    samples = addSample(samples, session("running", 3, 2), 100.3);
    samples = addSample(samples, session("done", 4, 4), 100.35);
    expect(samples.map((s) => s.sent)).toEqual([1, 3, 4]);
    const c = chartOf(samples);
    expect(c.x).toEqual([100, 100.3, 100.35]);
    // No reply yet: a gap, not a zero RTT.
    expect(c.p50).toEqual([null, 1, 1]);
    expect(c.p99).toEqual([null, 3, 3]);
  });

  it("thins long sessions to a bounded number of points", () => {
    let samples: ReturnType<typeof addSample> = [];
    for (let i = 0; i < MAX_SAMPLES * 3; i++) samples = addSample(samples, session("running", i, i), i);
    expect(samples.length).toBeLessThanOrEqual(MAX_SAMPLES);
    expect(samples[samples.length - 1]!.sent).toBe(MAX_SAMPLES * 3 - 1);
    const xs = samples.map((s) => s.t);
    expect([...xs].sort((a, b) => a - b)).toEqual(xs);
  });
});

describe("packet formatting", () => {
  it("formats nanoseconds, loss, bit rates and endpoints", () => {
    expect(nanos(850)).toBe("850 ns");
    expect(nanos(8_500)).toBe("8.5 µs");
    expect(nanos(85_000)).toBe("85 µs");
    expect(nanos(1_234_000)).toBe("1.23 ms");
    expect(nanos(12_340_000)).toBe("12.3 ms");
    expect(nanos(1_200_000_000)).toBe("1.20 s");
    expect(lossPercent({ sent: 0, lost: 0 })).toBe("–");
    expect(lossPercent({ sent: 300, lost: 0 })).toBe("0 %");
    expect(lossPercent({ sent: 400, lost: 5 })).toBe("1.25 %");
    expect(bits(950)).toBe("950 bit/s");
    expect(bits(12_300)).toBe("12.3 kbit/s");
    expect(bits(1_500_000)).toBe("1.50 Mbit/s");
    expect(bits(2_000_000_000)).toBe("2.00 Gbit/s");
    expect(endpoint("192.0.2.1", 862)).toBe("192.0.2.1:862");
    expect(endpoint("2001:db8::1", 862)).toBe("[2001:db8::1]:862");
  });
});
