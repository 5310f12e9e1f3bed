#!/usr/bin/env bash
# Benchmark: rookery-apid vs nginx, over HTTPS on loopback, with wrk (Debian's).
#
#   apid   GET /api/v1/auth/me with a bearer token: TLS, token check, role check, JSON answer
#   nginx  a static `return 200` over TLS with the same certificate (the floor of any HTTPS API)
#
# Same wrk settings for both (BENCH_CONNS connections, 2 threads, BENCH_SECONDS). Also records
# the cost of a login (argon2id verification + token issue): BENCH_LOGINS sequential logins.
# Prints a markdown table and the ratio; docs/benchmarks.md records the results.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_RUN=${BENCH_SECONDS:-20}
CONNS=${BENCH_CONNS:-32}
LOGINS=${BENCH_LOGINS:-20}
APID=${APID_BIN:-target/release/rookery-apid}
NGINX_PORT=18580
APID_PORT=18581
APID_METRICS=18582

work=$(mktemp -d /tmp/rookery-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n ${BENCH_KEEP:-} ]] && echo "bench: kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
die() { echo "bench: $*" >&2; exit 1; }

command -v wrk >/dev/null || die "wrk missing (run scripts/install-bench-deps.sh)"
if [[ -z ${APID_BIN:-} ]]; then
  cargo build --release --locked -p rookery-apid >&2
fi
[[ -x $APID ]] || die "$APID missing"

wait_https() { # URL PID
  for _ in $(seq 1 300); do
    kill -0 "$2" 2>/dev/null || die "process $2 exited before $1 answered"
    curl -ksS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  die "$1 did not answer"
}
# wrk_rps URL [HEADER]: requests/s of a wrk run, failing on any non-2xx answer or socket error.
wrk_rps() {
  local out
  out=$(wrk -t2 -c"$CONNS" -d"${SECONDS_RUN}s" ${2:+-H "$2"} "$1")
  if grep -q "Non-2xx" <<<"$out"; then die "wrk saw non-2xx answers from $1: $out"; fi
  awk '/^Requests\/sec:/ { print $2 }' <<<"$out"
}
hwm_mib() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# --- apid -------------------------------------------------------------------------------------
mkdir -p "$work/apid/tls" "$work/apid/run" "$work/apid/etc" "$work/apid/state"
admin_pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
new_pw="bench-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
printf 'username=admin\npassword=%s\n' "$admin_pw" >"$work/apid/initial-admin"
cat >"$work/apid/apid.toml" <<EOF
[http]
listen = "127.0.0.1:$APID_PORT"
redirect = false
[tls]
cert = "$work/apid/tls/apid.crt"
key = "$work/apid/tls/apid.key"
[auth]
signing-key = "$work/apid/state/token-signing.key"
initial-admin = "$work/apid/initial-admin"
[daemons]
run-dir = "$work/apid/run"
config-dir = "$work/apid/etc"
[grpc]
socket = "$work/apid/run/apid.sock"
[metrics]
listen = "127.0.0.1:$APID_METRICS"
[state]
directory = "$work/apid/state"
EOF
"$APID" run --config "$work/apid/apid.toml" 2>"$work/apid.log" &
apid_pid=$!
pids+=("$apid_pid")
base="https://127.0.0.1:$APID_PORT"
wait_https "$base/api/v1/openapi.json" "$apid_pid"

login() { # PASSWORD -> access token
  curl -ksS -H 'Content-Type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$1\"}" "$base/api/v1/auth/login" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
first=$(login "$admin_pw") || die "login failed: $(tail -3 "$work/apid.log")"
curl -ksS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $first" -H 'Content-Type: application/json' \
  -d "{\"current_password\":\"$admin_pw\",\"new_password\":\"$new_pw\"}" \
  "$base/api/v1/auth/change-password" | grep -q '^2' || die "password change failed"

start_ns=$(date +%s%N)
for ((i = 0; i < LOGINS; i++)); do token=$(login "$new_pw"); done
login_ms=$(( ($(date +%s%N) - start_ns) / LOGINS / 1000000 ))
code=$(curl -ksS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$base/api/v1/auth/me")
[[ $code == 200 ]] || die "GET /api/v1/auth/me answered $code"

apid_rps=$(wrk_rps "$base/api/v1/auth/me" "Authorization: Bearer $token")
apid_rss=$(hwm_mib "$apid_pid")
kill "$apid_pid"

# --- nginx, same certificate ----------------------------------------------------------------
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server {
    listen 127.0.0.1:$NGINX_PORT ssl;
    ssl_certificate $work/apid/tls/apid.crt;
    ssl_certificate_key $work/apid/tls/apid.key;
    location / { return 200 "{\"ok\":true}\n"; }
  }
}
EOF
/usr/sbin/nginx -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
nginx_pid=$!
pids+=("$nginx_pid")
wait_https "https://127.0.0.1:$NGINX_PORT/" "$nginx_pid"
nginx_rps=$(wrk_rps "https://127.0.0.1:$NGINX_PORT/")

python3 - <<EOF
apid, nginx = $apid_rps, $nginx_rps
print("apid vs nginx: HTTPS on loopback, wrk -t2 -c$CONNS -d${SECONDS_RUN}s")
print()
print("| server | request | requests/s |")
print("|---|---|---:|")
print(f"| rookery-apid | GET /api/v1/auth/me, bearer token | {apid:.0f} |")
print(f"| nginx | static return 200 | {nginx:.0f} |")
print()
print(f"apid / nginx: {apid / nginx:.2f}x (goal >= 0.5x)")
print(f"login (argon2id verify + token issue): {$login_ms} ms each, {$LOGINS} sequential")
print(f"apid peak RSS under load: $apid_rss MiB")
EOF
