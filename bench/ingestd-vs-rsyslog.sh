#!/usr/bin/env bash
# Benchmark: rookery-ingestd vs Debian's rsyslog, syslog over TCP on loopback.
#
#   ingestd  [syslog] tcp → parse (RFC 5424/3164) → SQLite store (WAL, synchronous=FULL; records
#            in compressed blocks, FTS5 index of each block's words); a connection reads at most
#            256 KiB ahead of its commit
#   rsyslog  imtcp → omfile (RSYSLOG_SyslogProtocol23Format: every field kept), no fsync; its
#            own instance (own config, pid file and work directory, `rsyslogd -n -f … -i …`),
#            never the system service
#
# The same pre-generated file of BENCH_MESSAGES RFC 5424 messages (octet-counting framing) is
# sent by the same sender (bench/syslog_tcp.py) to each, over each count of connections in
# BENCH_SYSLOG_CONNECTIONS; a run ends when the receiver has stored every message: ingestd's
# counter of committed records (rookery_ingestd_stored_records_total), rsyslog's output file
# line count. Each run gets a fresh instance. Measured per daemon process: messages/s (first
# byte sent → last message stored), CPU seconds (utime+stime from /proc) and peak RSS (VmHWM).
# Prints a markdown table and the ratios; docs/benchmarks.md records the results.
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${BENCH_MESSAGES:-200000}
CONNECTIONS=${BENCH_SYSLOG_CONNECTIONS:-1 4}
TIMEOUT_S=${BENCH_TIMEOUT_SECONDS:-300}
HZ=$(getconf CLK_TCK)
INGESTD=${INGESTD_BIN:-target/release/rookery-ingestd}
RSYSLOGD=/usr/sbin/rsyslogd
PY=/usr/bin/python3

# Ports: ingestd syslog TCP, ingestd metrics, rsyslog imtcp.
INGESTD_TCP=18680
INGESTD_METRICS=18681
RSYSLOG_TCP=18682

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

((MESSAGES >= 1 && MESSAGES <= 5000000)) || die "BENCH_MESSAGES must be 1 to 5000000"
[[ -x $RSYSLOGD ]] || die "$RSYSLOGD missing (run scripts/install-bench-deps.sh)"
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
wait_tcp() { # PORT PID: until PORT accepts connections; fails at once if PID exits
  for _ in $(seq 1 300); do
    kill -0 "$2" 2>/dev/null || die "process $2 exited before port $1 listened"
    $PY -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 1).close()" 2>/dev/null &&
      return 0
    sleep 0.1
  done
  die "port $1 did not listen"
}
stop() { # PID
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

$PY bench/syslog_tcp.py gen --count "$MESSAGES" --out "$work/messages.syslog"
input_mib=$($PY -c "import os; print(round(os.path.getsize('$work/messages.syslog') / 1048576, 1))")

# run_ingestd CONNS: sets row to "seconds cpu rss parse_errors db_mib"
run_ingestd() {
  local d=$work/ingestd-$1
  mkdir -p "$d/state"
  cat >"$d/ingestd.toml" <<EOF
[syslog]
udp = []
tcp = ["127.0.0.1:$INGESTD_TCP"]

[http]
listen = []

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
  wait_tcp "$INGESTD_METRICS" "$pid"
  wait_tcp "$INGESTD_TCP" "$pid"
  local c0 c1 stats
  c0=$(cpu_seconds "$pid")
  stats=$($PY bench/syslog_tcp.py send --port "$INGESTD_TCP" --file "$work/messages.syslog" \
    --connections "$1" --timeout "$TIMEOUT_S" \
    --count-url "http://127.0.0.1:$INGESTD_METRICS/metrics") ||
    die "ingestd did not store every message (log: $(tail -3 "$d/ingestd.log"))"
  c1=$(cpu_seconds "$pid")
  local rss perr
  rss=$(hwm_mib "$pid")
  perr=$(curl -fsS "http://127.0.0.1:$INGESTD_METRICS/metrics" |
    awk '/^rookery_ingestd_parse_errors_total/ { n += $NF } END { printf "%d", n }')
  stop "$pid"
  local db
  db=$(du -sm "$d/state" | cut -f1)
  rm -rf "$d"
  row=$($PY -c "import json,sys; s=json.loads(sys.argv[1]); print(s['seconds'], $c1 - $c0, '$rss', '$perr', '$db')" "$stats")
}

# run_rsyslog CONNS: sets row to "seconds cpu rss - out_mib"
run_rsyslog() {
  local d=$work/rsyslog-$1
  mkdir -p "$d/work"
  cat >"$d/rsyslog.conf" <<EOF
global(workDirectory="$d/work")
module(load="imtcp" maxSessions="1024")
input(type="imtcp" address="127.0.0.1" port="$RSYSLOG_TCP")
action(type="omfile" file="$d/out.log" template="RSYSLOG_SyslogProtocol23Format")
EOF
  "$RSYSLOGD" -n -f "$d/rsyslog.conf" -i "$d/rsyslog.pid" >/dev/null 2>"$d/rsyslog.err" &
  local pid=$!
  pids+=("$pid")
  wait_tcp "$RSYSLOG_TCP" "$pid"
  # The readiness probe connection sends nothing: the output file stays empty until the run.
  local c0 c1 stats
  c0=$(cpu_seconds "$pid")
  stats=$($PY bench/syslog_tcp.py send --port "$RSYSLOG_TCP" --file "$work/messages.syslog" \
    --connections "$1" --timeout "$TIMEOUT_S" --count-file "$d/out.log") ||
    die "rsyslog did not store every message (stderr: $(tail -3 "$d/rsyslog.err"))"
  c1=$(cpu_seconds "$pid")
  local rss out
  rss=$(hwm_mib "$pid")
  stop "$pid"
  # The line count may include rsyslog's own start message: every bench message must be there.
  local got
  got=$(grep -c 'bench@32473 seq=' "$d/out.log" || true)
  ((got == MESSAGES)) || die "rsyslog wrote $got of $MESSAGES messages"
  out=$(du -sm "$d/out.log" | cut -f1)
  rm -rf "$d"
  row=$($PY -c "import json,sys; s=json.loads(sys.argv[1]); print(s['seconds'], $c1 - $c0, '$rss', '-', '$out')" "$stats")
}

row=
results=()
for c in $CONNECTIONS; do
  run_ingestd "$c"
  read -r is ic ir ip idb <<<"$row"
  run_rsyslog "$c"
  read -r rs rc rr _ rout <<<"$row"
  results+=("$c $is $ic $ir $ip $idb $rs $rc $rr $rout")
done

$PY - "$MESSAGES" "$input_mib" "${results[@]}" <<'EOF'
import sys
n = int(sys.argv[1])
print(f"ingestd vs rsyslog: {n} RFC 5424 messages ({sys.argv[2]} MiB, octet-counted) over TCP on loopback")
print()
print("| receiver | connections | seconds | messages/s | CPU s | CPU µs/message | peak RSS MiB | on disk MiB |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
ratios = []
for row in sys.argv[3:]:
    c, is_, ic, ir, ip, idb, rs, rc, rr, rout = row.split()
    is_, ic, rs, rc = float(is_), float(ic), float(rs), float(rc)
    print(f"| ingestd (SQLite + FTS, synchronous=FULL) | {c} | {is_:.2f} | {n / is_:.0f} | {ic:.2f} | {ic / n * 1e6:.1f} | {ir} | {idb} |")
    print(f"| rsyslog (imtcp → omfile) | {c} | {rs:.2f} | {n / rs:.0f} | {rc:.2f} | {rc / n * 1e6:.1f} | {rr} | {rout} |")
    ratios.append((c, rs / is_, ic / rc if rc else float("nan"), ip))
print()
for c, r, cpu, perr in ratios:
    print(f"{c} connection(s): messages/s ingestd / rsyslog: {r:.2f}x (goal >= 0.5x); "
          f"CPU per message ingestd / rsyslog: {cpu:.2f}x; ingestd parse errors: {perr}")
EOF
