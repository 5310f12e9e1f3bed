// The typed API client: every path, parameter and body is checked at build time against
// `schema.d.ts`, which is generated from apid's OpenAPI document (`openapi.json`).
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type Role = Schemas["Role"];

/** One problem apid reports with a rejected config (`issues` of a 422 `invalid_config`). */
export interface ConfigIssue {
  location: string;
  line: number;
  column: number;
  key: string;
  message: string;
  rendered: string;
}

/** The DESIGN.md error body, plus `issues` on a rejected config. */
export type ErrorBody = Schemas["Error"] & { issues?: ConfigIssue[] };

/** A refused or failed API call. */
export class ApiFailure extends Error {
  readonly status: number;
  readonly code: string;
  readonly body: ErrorBody | undefined;

  constructor(status: number, body: ErrorBody | undefined, fallback: string) {
    super(body?.message ?? fallback);
    this.name = "ApiFailure";
    this.status = status;
    this.code = body?.error ?? "error";
    this.body = body;
  }
}

const CSRF_KEY = "rookery.csrf";

/** The session's CSRF token (kept for the tab's life, so a reload stays signed in). */
export const csrf = {
  get: (): string | null => sessionStorage.getItem(CSRF_KEY),
  set: (token: string) => sessionStorage.setItem(CSRF_KEY, token),
  clear: () => sessionStorage.removeItem(CSRF_KEY),
};

const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

/** Listeners told when apid says the session has ended (401). */
const expiredListeners = new Set<() => void>();
export function onSessionExpired(fn: () => void): () => void {
  expiredListeners.add(fn);
  return () => expiredListeners.delete(fn);
}

const session: Middleware = {
  onRequest({ request }) {
    const token = csrf.get();
    if (token && !SAFE.has(request.method)) request.headers.set("x-csrf-token", token);
    return request;
  },
  onResponse({ response, request }) {
    const url = new URL(request.url);
    if (response.status === 401 && !url.pathname.startsWith("/api/v1/auth/session")) {
      expiredListeners.forEach((fn) => fn());
    }
    return response;
  },
};

export const api = createClient<paths>({
  baseUrl: typeof window === "undefined" ? "http://localhost" : window.location.origin,
  credentials: "same-origin",
});
api.use(session);

/** The data of a call, or throws [`ApiFailure`]. */
export async function unwrap<T>(
  call: Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  const { data, error, response } = await call;
  if (!response.ok) {
    const body = isErrorBody(error) ? error : undefined;
    throw new ApiFailure(response.status, body, `${response.status} ${response.statusText}`);
  }
  return data as T;
}

export function isErrorBody(v: unknown): v is ErrorBody {
  return (
    typeof v === "object" &&
    v !== null &&
    typeof (v as { error?: unknown }).error === "string" &&
    typeof (v as { message?: unknown }).message === "string"
  );
}

/** Text for an error shown to the user. */
export function describe(err: unknown): string {
  if (err instanceof ApiFailure) return `${err.message} (${err.code}, HTTP ${err.status})`;
  if (err instanceof Error) return err.message;
  return String(err);
}
