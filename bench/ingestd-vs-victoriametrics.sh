#!/usr/bin/env bash
# Benchmark: rookery-ingestd vs Debian's victoria-metrics, Prometheus remote_write on loopback.
#
#   ingestd          POST /api/v1/write → SQLite store (WAL, synchronous=FULL); 204 after the
#                    commit
#   victoria-metrics POST /api/v1/write → its storage; answers once the rows are in its
#                    in-memory buffers (flushed to disk within about a second)
#
# The same pre-built requests (bench/remote_write.py: BENCH_RW_SAMPLES samples over
# BENCH_RW_SERIES series, BENCH_RW_PER_REQUEST per request, snappy + protobuf as Prometheus
# sends them) are posted by the same driver to each, as fast as answered, over each count of
# connections in BENCH_RW_CONNECTIONS. Each run gets a fresh instance. Every request must be
# answered 2xx, and each daemon's own counter must show every sample stored
# (rookery_ingestd_stored_samples_total, vm_rows_inserted_total{type="promremotewrite"}).
# Measured per daemon process: samples/s (first request → last answer), CPU seconds
# (utime+stime from /proc) and peak RSS (VmHWM).
# Prints a markdown table and the ratios; docs/benchmarks.md records the results.
set -euo pipefail
cd "$(dirname "$0")/.."

SAMPLES=${BENCH_RW_SAMPLES:-1000000}
SERIES=${BENCH_RW_SERIES:-2000}
PER_REQUEST=${BENCH_RW_PER_REQUEST:-2000}
CONNECTIONS=${BENCH_RW_CONNECTIONS:-1 4}
HZ=$(getconf CLK_TCK)
INGESTD=${INGESTD_BIN:-target/release/rookery-ingestd}
VM=/usr/bin/victoria-metrics
PY=/usr/bin/python3

# Ports: ingestd HTTP (remote_write), ingestd metrics, victoria-metrics.
INGESTD_HTTP=18780
INGESTD_METRICS=18781
VM_PORT=18782

# BENCH_DIR: where the temp dir (stores included) goes, e.g. /dev/shm to take the disk out.
work=$(mktemp -d "${BENCH_DIR:-/tmp}/rookery-bench.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n ${BENCH_KEEP:-} ]] && echo "bench: kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
die() { echo "bench: $*" >&2; exit 1; }

[[ -x $VM ]] || die "$VM missing (run scripts/install-bench-deps.sh)"
$PY -c 'import snappy' 2>/dev/null || die "python3-snappy missing (run scripts/install-bench-deps.sh)"
if [[ -z ${INGESTD_BIN:-} ]]; then
  cargo build --release --locked -p rookery-ingestd >&2
fi
[[ -x $INGESTD ]] || die "$INGESTD missing"

cpu_seconds() { # PID: user+system CPU time of the process (all its threads) so far
  awk -v hz="$HZ" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"
}
hwm_mib() { # PID: peak resident set size in MiB
  awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}
wait_http() { # URL PID: until URL answers; fails at once if PID exits
  for _ in $(seq 1 300); do
    kill -0 "$2" 2>/dev/null || die "process $2 exited before $1 answered"
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  die "$1 did not answer"
}
stop() { # PID
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
metric_sum() { # URL REGEX: sum of the samples whose line matches REGEX
  curl -fsS "$1" | awk -v re="$2" '$0 ~ re { n += $NF } END { printf "%d", n }'
}

gen=$($PY bench/remote_write.py gen --series "$SERIES" --samples "$SAMPLES" \
  --per-request "$PER_REQUEST" --out "$work/requests.bin")
total=$($PY -c "import json,sys; print(json.loads(sys.argv[1])['samples'])" "$gen")
per_req=$($PY -c "import json,sys; print(json.loads(sys.argv[1])['samples_per_request'])" "$gen")
body_mib=$($PY -c "import os; print(round(os.path.getsize('$work/requests.bin') / 1048576, 1))")

# measure NAME PID PORT COUNTER_URL COUNTER_REGEX CONNS: sets row to "seconds cpu rss"
measure() {
  local pid=$2 c0 c1 n0 n1 stats
  n0=$(metric_sum "$4" "$5")
  c0=$(cpu_seconds "$pid")
  stats=$($PY bench/remote_write.py post --port "$3" --file "$work/requests.bin" \
    --connections "$6") || die "$1: a remote_write request failed"
  c1=$(cpu_seconds "$pid")
  # victoria-metrics counts a request's rows as it answers; allow its counter a moment.
  for _ in $(seq 1 50); do
    n1=$(metric_sum "$4" "$5")
    ((n1 - n0 >= total)) && break
    sleep 0.1
  done
  ((n1 - n0 == total)) || die "$1 counted $((n1 - n0)) samples stored, $total sent"
  row=$($PY -c "import json,sys; print(json.loads(sys.argv[1])['seconds'], $c1 - $c0, '$(hwm_mib "$pid")')" "$stats")
}

run_ingestd() { # CONNS
  local d=$work/ingestd-$1
  mkdir -p "$d/state"
  cat >"$d/ingestd.toml" <<EOF
[syslog]
udp = []
tcp = []

[http]
listen = ["127.0.0.1:$INGESTD_HTTP"]

[otlp]
grpc = []
http = []

[scrape]
targets = []

[grpc]
socket = "$d/ingestd.sock"

[metrics]
listen = "127.0.0.1:$INGESTD_METRICS"

[state]
directory = "$d/state"
EOF
  "$INGESTD" run --config "$d/ingestd.toml" 2>"$d/ingestd.log" &
  local pid=$!
  pids+=("$pid")
  wait_http "http://127.0.0.1:$INGESTD_METRICS/healthz" "$pid"
  measure ingestd "$pid" "$INGESTD_HTTP" "http://127.0.0.1:$INGESTD_METRICS/metrics" \
    '^rookery_ingestd_stored_samples_total' "$1"
  stop "$pid"
  row="$row $(du -sm "$d/state" | cut -f1)"
  rm -rf "$d"
}

run_vm() { # CONNS
  local d=$work/vm-$1
  mkdir -p "$d"
  "$VM" -storageDataPath="$d/data" -httpListenAddr="127.0.0.1:$VM_PORT" -retentionPeriod=1 \
    >"$d/vm.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  wait_http "http://127.0.0.1:$VM_PORT/health" "$pid"
  measure victoria-metrics "$pid" "$VM_PORT" "http://127.0.0.1:$VM_PORT/metrics" \
    '^vm_rows_inserted_total[{]type="promremotewrite"[}]' "$1"
  stop "$pid"
  row="$row $(du -sm "$d/data" | cut -f1)"
  rm -rf "$d"
}

row=
results=()
for c in $CONNECTIONS; do
  run_ingestd "$c"
  ir=$row
  run_vm "$c"
  results+=("$c $ir $row")
done

$PY - "$total" "$SERIES" "$per_req" "$body_mib" "${results[@]}" <<'EOF'
import sys
n = int(sys.argv[1])
print(f"ingestd vs victoria-metrics: {n} remote_write samples over {sys.argv[2]} series, "
      f"{sys.argv[3]} per request ({sys.argv[4]} MiB snappy), loopback")
print()
print("| receiver | connections | seconds | samples/s | CPU s | CPU µs/sample | peak RSS MiB | on disk MiB |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
ratios = []
for row in sys.argv[5:]:
    c, is_, ic, ir, idb, vs, vc, vr, vdb = row.split()
    is_, ic, vs, vc = float(is_), float(ic), float(vs), float(vc)
    print(f"| ingestd (SQLite, synchronous=FULL) | {c} | {is_:.2f} | {n / is_:.0f} | {ic:.2f} | {ic / n * 1e6:.2f} | {ir} | {idb} |")
    print(f"| victoria-metrics | {c} | {vs:.2f} | {n / vs:.0f} | {vc:.2f} | {vc / n * 1e6:.2f} | {vr} | {vdb} |")
    ratios.append((c, vs / is_, ic / vc if vc else float("nan"), float(ir) / float(vr)))
print()
for c, r, cpu, rss in ratios:
    print(f"{c} connection(s): samples/s ingestd / victoria-metrics: {r:.2f}x (goal >= 0.5x); "
          f"CPU per sample: {cpu:.2f}x; peak RSS: {rss:.2f}x")
EOF
