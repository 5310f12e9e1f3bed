#!/usr/bin/env bash
# Benchmark: rookery-probed vs Debian's prometheus-blackbox-exporter, probing the same
# HTTP targets on loopback (one nginx, one URL per target) at the same rate.
#
#   probed, scheduled  probed's own scheduler, BENCH_TARGETS targets every BENCH_INTERVAL,
#                      results stored in SQLite and exported as metrics (how it runs on the box)
#   probed, /probe     probed with no targets, driven through its blackbox-compatible /probe
#   blackbox, /probe   blackbox_exporter driven through /probe, as Prometheus drives it
#
# Both /probe rows get the same fixed-rate load (bench/fixed_rate_get.py, BENCH_TARGETS per
# BENCH_INTERVAL). Measured per daemon process: CPU seconds (utime+stime from /proc) per
# completed probe over BENCH_SECONDS, and peak RSS (VmHWM). The driver's own CPU is not counted.
# For the scheduled run also: the peak when probed is ready, VmRSS sampled every second over
# the measured run, and the load average (it decides how many probes are in flight at once).
# Prints a markdown table and the ratios; docs/benchmarks.md records the results.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=${BENCH_TARGETS:-10000}
INTERVAL_S=${BENCH_INTERVAL_SECONDS:-10}
SECONDS_RUN=${BENCH_SECONDS:-60}
TIMEOUT_S=$((INTERVAL_S < 5 ? INTERVAL_S : 5))
RATE=$(python3 -c "print($TARGETS / $INTERVAL_S)")
HZ=$(getconf CLK_TCK)
PROBED=${PROBED_BIN:-target/release/rookery-probed}
BLACKBOX=/usr/bin/prometheus-blackbox-exporter

# Ports: nginx, probed's metrics (scheduled and /probe instances), blackbox.
NGINX_PORT=18480
PROBED_PORT=18481
PROBED2_PORT=18482
BLACKBOX_PORT=18483

work=$(mktemp -d /tmp/rookery-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n ${BENCH_KEEP:-} ]] && echo "bench: kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

die() { echo "bench: $*" >&2; exit 1; }

[[ -x $BLACKBOX ]] || die "$BLACKBOX missing (run scripts/install-bench-deps.sh)"
if [[ -z ${PROBED_BIN:-} ]]; then
  cargo build --release --locked -p rookery-probed >&2
fi
[[ -x $PROBED ]] || die "$PROBED missing"
# probed runs with the environment its systemd unit gives it (mimalloc settings).
UNIT=daemons/probed/systemd/rookery-probed.service
read -r -a PROBED_ENV <<<"$(sed -n 's/^Environment=//p' "$UNIT" | tr '\n' ' ')"
((${#PROBED_ENV[@]} > 0)) || die "no Environment= in $UNIT"

# cpu_seconds PID: user+system CPU time of the process so far.
cpu_seconds() {
  awk -v hz="$HZ" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"
}
# hwm_mib PID: peak resident set size in MiB.
hwm_mib() {
  awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}
# sample_rss PID FILE: appends "VmRSS RssAnon RssFile" (KiB) of PID to FILE every second
# until PID exits.
sample_rss() {
  while kill -0 "$1" 2>/dev/null; do
    awk '/^VmRSS:/ { r = $2 } /^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 }
      END { if (r) print r, a, f }' "/proc/$1/status" >>"$2" 2>/dev/null || true
    sleep 1
  done
}
wait_http() { # URL [PID]: until URL answers; fails at once if PID exits
  local url=$1 pid=${2:-}
  for _ in $(seq 1 300); do
    [[ -z $pid ]] || kill -0 "$pid" 2>/dev/null || die "process $pid exited before $url answered"
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  die "$url did not answer"
}

# --- the targets: one nginx worker answering 200 on every path ---------------------------
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { return 200 "ok\n"; }
  }
}
EOF
/usr/sbin/nginx -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
pids+=($!)
wait_http "http://127.0.0.1:$NGINX_PORT/t/0"

# --- probed, scheduled --------------------------------------------------------------------
probed_config() { # FILE PORT STATE TARGETS
  {
    # [scheduler] max-concurrency: the shipped default (256), as the appliance runs.
    printf '[modules.http]\nprober = "http"\ntimeout = "%ss"\n\n' "$TIMEOUT_S"
    printf '[grpc]\nsocket = "%s/%s.sock"\n\n' "$work" "$3"
    printf '[metrics]\nlisten = "127.0.0.1:%s"\n\n' "$2"
    printf '[state]\ndirectory = "%s/%s"\n\n' "$work" "$3"
    for ((i = 0; i < $4; i++)); do
      printf '[[targets]]\nname = "t%d"\nmodule = "http"\naddress = "http://127.0.0.1:%d/t/%d"\ninterval = "%ds"\n' \
        "$i" "$NGINX_PORT" "$i" "$INTERVAL_S"
    done
  } >"$1"
  mkdir -p "$work/$3"
}
probes_done() { # PORT: sum of rookery_probed_probes_total over every target
  curl -fsS "http://127.0.0.1:$1/metrics" |
    awk '/^rookery_probed_probes_total/ { n += $NF } END { printf "%d", n }'
}

probed_config "$work/probed.toml" "$PROBED_PORT" probed "$TARGETS"
env "${PROBED_ENV[@]}" "$PROBED" run --config "$work/probed.toml" 2>"$work/probed.log" &
probed_pid=$!
pids+=("$probed_pid")
wait_http "http://127.0.0.1:$PROBED_PORT/healthz" "$probed_pid" ||
  { tail -5 "$work/probed.log" >&2; exit 1; }
hwm_start=$(hwm_mib "$probed_pid") # peak while loading the configuration and starting
load0=$(cut -d' ' -f1 /proc/loadavg)
sample_rss "$probed_pid" "$work/rss.txt" &
pids+=($!)
sleep "$INTERVAL_S" # every target has started its schedule (starts are spread over one interval)
c0=$(probes_done "$PROBED_PORT")
t0=$(cpu_seconds "$probed_pid")
: >"$work/rss.txt" # steady state: from here on
sleep "$SECONDS_RUN"
c1=$(probes_done "$PROBED_PORT")
t1=$(cpu_seconds "$probed_pid")
load1=$(cut -d' ' -f1 /proc/loadavg)
# VmRSS over the measured run (KiB samples): min, median, max; anonymous and file-backed at the max.
rss_steady=$(sort -n "$work/rss.txt" | awk '{ r[NR] = $1; a[NR] = $2; f[NR] = $3 }
  END { if (NR) printf "VmRSS %.1f / %.1f / %.1f MiB (min / median / max of %d samples; at the max %.1f anonymous + %.1f file)",
    r[1] / 1024, r[int((NR + 1) / 2)] / 1024, r[NR] / 1024, NR, a[NR] / 1024, f[NR] / 1024 }')
sched_probes=$((c1 - c0))
sched_cpu=$(python3 -c "print($t1 - $t0)")
sched_rss=$(hwm_mib "$probed_pid")
failed=$(curl -fsS "http://127.0.0.1:$PROBED_PORT/metrics" |
  awk '/^rookery_probed_probes_total/ && !/result="ok"/ { n += $NF } END { printf "%d", n }')
kill "$probed_pid"
wait "$probed_pid" 2>/dev/null || true
((sched_probes > 0)) || die "probed completed no probes (see its log: $(tail -5 "$work/probed.log"))"

# --- /probe driven, probed and blackbox ---------------------------------------------------
drive() { # PORT PATH_TEMPLATE -> JSON stats
  python3 bench/fixed_rate_get.py --port "$1" --path-template "$2" --count "$TARGETS" \
    --rate "$RATE" --seconds "$SECONDS_RUN"
}
measure_driven() { # NAME PID PORT PATH_TEMPLATE -> "probes cpu rss failed"
  local pid=$2 port=$3 tmpl=$4
  # Warm up (connections, caches) for a few seconds, then measure.
  python3 bench/fixed_rate_get.py --port "$port" --path-template "$tmpl" --count "$TARGETS" \
    --rate "$RATE" --seconds 3 >/dev/null
  local c0 c1 stats
  c0=$(cpu_seconds "$pid")
  stats=$(drive "$port" "$tmpl")
  c1=$(cpu_seconds "$pid")
  python3 - "$stats" "$c0" "$c1" "$(hwm_mib "$pid")" <<'EOF'
import json, sys
s = json.loads(sys.argv[1])
print(s["ok"] + s["failed"], float(sys.argv[3]) - float(sys.argv[2]), sys.argv[4], s["failed"], s["late"])
EOF
}

probed_config "$work/probed2.toml" "$PROBED2_PORT" probed2 0
env "${PROBED_ENV[@]}" "$PROBED" run --config "$work/probed2.toml" 2>"$work/probed2.log" &
probed2_pid=$!
pids+=("$probed2_pid")
wait_http "http://127.0.0.1:$PROBED2_PORT/healthz" "$probed2_pid"
read -r p_probes p_cpu p_rss p_failed p_late < <(measure_driven probed "$probed2_pid" "$PROBED2_PORT" \
  "/probe?module=http&target=http://127.0.0.1:$NGINX_PORT/t/{i}")
kill "$probed2_pid"

cat >"$work/blackbox.yml" <<EOF
modules:
  http_2xx:
    prober: http
    timeout: ${TIMEOUT_S}s
EOF
"$BLACKBOX" --config.file="$work/blackbox.yml" --web.listen-address="127.0.0.1:$BLACKBOX_PORT" \
  2>"$work/blackbox.log" &
bb_pid=$!
pids+=("$bb_pid")
wait_http "http://127.0.0.1:$BLACKBOX_PORT/metrics" "$bb_pid"
read -r b_probes b_cpu b_rss b_failed b_late < <(measure_driven blackbox "$bb_pid" "$BLACKBOX_PORT" \
  "/probe?module=http_2xx&target=http://127.0.0.1:$NGINX_PORT/t/{i}")
kill "$bb_pid"

python3 - <<EOF
rows = [
    ("probed, scheduled (stored + exported)", $sched_probes, $sched_cpu, $sched_rss, $failed, 0),
    ("probed, /probe", $p_probes, $p_cpu, $p_rss, $p_failed, $p_late),
    ("blackbox_exporter, /probe", $b_probes, $b_cpu, $b_rss, $b_failed, $b_late),
]
print("probed vs blackbox_exporter: $TARGETS HTTP targets on loopback, one probe each per ${INTERVAL_S}s ($RATE/s), ${SECONDS_RUN}s measured")
print()
print("| run | probes | failed | CPU s | CPU µs/probe | peak RSS MiB |")
print("|---|---:|---:|---:|---:|---:|")
per = {}
for name, n, cpu, rss, failed, late in rows:
    per[name] = cpu / n * 1e6 if n else float("nan")
    print(f"| {name} | {n} | {failed} | {cpu:.2f} | {per[name]:.1f} | {rss} |")
bb = per["blackbox_exporter, /probe"]
print()
print(f"CPU per probe, probed scheduled / blackbox: {per['probed, scheduled (stored + exported)'] / bb:.2f}x (goal <= 0.5x)")
print(f"CPU per probe, probed /probe / blackbox:   {per['probed, /probe'] / bb:.2f}x")
print(f"peak RSS, probed scheduled: {rows[0][3]} MiB (goal <= 30 MiB); blackbox: {rows[2][3]} MiB")
print("probed scheduled: peak RSS when ready $hwm_start MiB; measured run: $rss_steady")
print("load average (1 min) at the scheduled run's start / end: $load0 / $load1")
late = $p_late + $b_late
if late:
    print(f"note: the driver fell behind on {late} requests (machine saturated); rates are then lower than asked")
EOF
