// Shared queries (TanStack Query keys in one place).
import { useQuery } from "@tanstack/react-query";
import { api, unwrap, type Schemas } from "./api/client";

export type Target = Schemas["TargetView"];
export type ProbeResult = Schemas["ResultView"];

export function useSystem() {
  return useQuery({
    queryKey: ["system"],
    queryFn: () => unwrap(api.GET("/api/v1/system")),
    refetchInterval: 10_000,
  });
}

export function useLicence() {
  return useQuery({
    queryKey: ["licence"],
    queryFn: () => unwrap(api.GET("/api/v1/licence")),
    retry: false,
  });
}

export function useTargets() {
  return useQuery({
    queryKey: ["probes", "targets"],
    queryFn: () => unwrap(api.GET("/api/v1/probes/targets")),
    refetchInterval: 5_000,
    retry: false,
  });
}

/** Recent results, newest first; of one target when `target` is set. */
export function useResults(target: string | undefined, limit: number, enabled = true) {
  return useQuery({
    queryKey: ["probes", "results", target ?? "*", limit],
    queryFn: () =>
      unwrap(api.GET("/api/v1/probes/results", { params: { query: { target, limit } } })),
    refetchInterval: 5_000,
    retry: false,
    enabled,
  });
}

/** Results grouped by target, oldest first within each (for sparklines). */
export function byTarget(results: readonly ProbeResult[]): Map<string, ProbeResult[]> {
  const out = new Map<string, ProbeResult[]>();
  for (const r of results) {
    const list = out.get(r.target);
    if (list) list.push(r);
    else out.set(r.target, [r]);
  }
  for (const list of out.values()) list.sort((a, b) => a.started_unix_ms - b.started_unix_ms);
  return out;
}
