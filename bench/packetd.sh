#!/usr/bin/env bash
# Benchmark: rookery-packetd's XDP reflector against a bare XDP_TX program and a userspace
# recvmmsg/sendmmsg echo, and packetd's raw rate generator, on one veth pair with 2 queues
# between two network namespaces this script creates (10.88.0.1 reflector, 10.88.0.2 load).
#
#   bare XDP_TX     bench/packetd/xdp_swap.c (xdp_swap): swaps addresses and ports, XDP_TX
#   bare + clock    the same plus one bpf_ktime_get_tai_ns() per frame (xdp_swap_clock): the
#                   part of STAMP's cost that no reflector timestamping each packet avoids
#   packetd STAMP   the rookery-packetd daemon, native XDP: RFC 8762 replies with timestamps
#   packetd echo    the same daemon's XDP UDP echo (port 2000)
#   userspace echo  bench/packetd/udp_echo.c, one process per CPU (SO_REUSEPORT)
#
# Load: a closed loop. The far end of the veth (vs) runs xdp_swap too, so every reply comes
# straight back as a new request; packetd's generator (daemons/packetd/examples/generate.rs,
# one per CPU, pinned, sendmmsg, each on its own TX queue via XPS) seeds 2,000 packets per queue and
# the loop then runs at whatever rate the slower side allows. Measured: replies arriving at
# vs per second (`ethtool -S vs` rx_queue_*_xdp_packets) over BENCH_SECONDS; BENCH_REPEAT
# rounds of all configurations, medians printed. The bouncer's cost is in every row alike, so ratios between XDP rows
# understate the reflectors' own differences (the rows share the same CPUs with it).
# STAMP requests carry at least 44 bytes of payload: their frames are 86 bytes, the others'
# 60 (18-byte payloads); the bare program is measured at both sizes.
# Profile: right after each XDP measurement, the loop runs BENCH_PROFILE_SECONDS (1) more with
# kernel.bpf_stats_enabled=1, and the kernel's run count and run time of the program on vr
# (daemons/packetd/examples/xdp_runtime.rs) give the nanoseconds it spends per packet. That is
# the reflector's own cost, without the veth, the bouncer or the machine's other load; the
# stats cost two clock reads per run themselves, so they are off while the rates are measured.
# Generator: one session (one thread) at an unreachable rate for BENCH_SECONDS into an XDP_DROP
# sink on vr, once per transmit path, alternating for BENCH_REPEAT rounds: sendmmsg on a UDP
# socket and AF_XDP (copy mode on veth, queue 0); the medians of their achieved packets/s, the
# frames that reached the sink, and the ratio. Prints a markdown table and the ratios;
# docs/benchmarks.md records the results. Needs root (namespaces, XDP).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_RUN=${BENCH_SECONDS:-3}
REPEAT=${BENCH_REPEAT:-5}
PACKETD=${PACKETD_BIN:-target/release/rookery-packetd}
GENERATE=${GENERATE_BIN:-target/release/examples/generate}
RUNTIME=${XDP_RUNTIME_BIN:-target/release/examples/xdp_runtime}
PROFILE_SECONDS=${BENCH_PROFILE_SECONDS:-1}
NS_R=rookery-bench-r-$$
NS_S=rookery-bench-s-$$
METRICS_PORT=18491

work=$(mktemp -d /tmp/rookery-bench.XXXXXX)
pids=()
stats_before=$(sysctl -n kernel.bpf_stats_enabled 2>/dev/null || echo 0)
cleanup() {
  sysctl -qw kernel.bpf_stats_enabled="$stats_before" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$NS_R" 2>/dev/null || true
  ip netns del "$NS_S" 2>/dev/null || true
  [[ -n ${BENCH_KEEP:-} ]] && echo "bench: kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

die() { echo "bench: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, XDP)"
if [[ -z ${PACKETD_BIN:-} || -z ${GENERATE_BIN:-} || -z ${XDP_RUNTIME_BIN:-} ]]; then
  cargo build --release --locked -p rookery-packetd --bin rookery-packetd --example generate \
    --example xdp_runtime >&2
fi
[[ -x $PACKETD ]] || die "$PACKETD missing"
[[ -x $GENERATE ]] || die "$GENERATE missing"
[[ -x $RUNTIME ]] || die "$RUNTIME missing"

# --- the baselines, built here ------------------------------------------------------------
asm=()
for dir in /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu; do
  [[ -e $dir/asm/types.h ]] && { asm=(-I"$dir"); break; }
done
clang -O2 -g -Wall -Werror -target bpf "${asm[@]}" -c bench/packetd/xdp_swap.c -o "$work/xdp_swap.o"
clang -O2 -Wall -Werror -o "$work/udp_echo" bench/packetd/udp_echo.c

# --- the veth pair ------------------------------------------------------------------------
ip netns add "$NS_R"
ip netns add "$NS_S"
ip -n "$NS_R" link add vr numtxqueues 2 numrxqueues 2 type veth peer name vs netns "$NS_S" \
  numtxqueues 2 numrxqueues 2
ip -n "$NS_R" addr add 10.88.0.1/24 dev vr
ip -n "$NS_S" addr add 10.88.0.2/24 dev vs
for ns in "$NS_R" "$NS_S"; do ip -n "$ns" link set lo up; done
ip -n "$NS_R" link set vr up
ip -n "$NS_S" link set vs up
# Full checksums on the wire (as a NIC delivers them): XDP rewrites checksums incrementally.
ip netns exec "$NS_R" ethtool -K vr tx off >/dev/null
ip netns exec "$NS_S" ethtool -K vs tx off >/dev/null
# No ARP: the bouncer would swap ARP frames' MACs too.
mac_r=$(ip netns exec "$NS_R" cat /sys/class/net/vr/address)
mac_s=$(ip netns exec "$NS_S" cat /sys/class/net/vs/address)
ip -n "$NS_R" neigh replace 10.88.0.2 lladdr "$mac_s" dev vr nud permanent
ip -n "$NS_S" neigh replace 10.88.0.1 lladdr "$mac_r" dev vs nud permanent
# One TX queue per CPU on the load side: each seeding generator (pinned) fills its own queue.
ip netns exec "$NS_S" sh -c 'echo 1 >/sys/class/net/vs/queues/tx-0/xps_cpus; echo 2 >/sys/class/net/vs/queues/tx-1/xps_cpus'

xdp() { # NS DEV PROGRAM|off
  if [[ $3 == off ]]; then
    ip -n "$1" link set dev "$2" xdpdrv off
  else
    ip -n "$1" link set dev "$2" xdpdrv obj "$work/xdp_swap.o" program "$3"
  fi
}
# vs_stat NAME: the sum over vs's RX queues of one ethtool counter (e.g. xdp_packets).
vs_stat() { ip netns exec "$NS_S" ethtool -S vs | awk -v k="_$1:" 'index($1, k) && /rx_queue_/ { s += $2 } END { print s + 0 }'; }
vr_stat() { ip netns exec "$NS_R" ethtool -S vr | awk -v k="_$1:" 'index($1, k) && /rx_queue_/ { s += $2 } END { print s + 0 }'; }
now() { date +%s.%N; }

# vr_prog: the id of the XDP program on vr (empty when none).
vr_prog() { ip -n "$NS_R" link show vr | sed -n 's/.*prog\/xdp id \([0-9]*\).*/\1/p'; }

# loop_rate PORT PAYLOAD: seeds the loop towards 10.88.0.1:PORT, then sets RATE to the
# replies per second arriving at vs, and NSPP to the nanoseconds per run of vr's program
# (measured afterwards, with the kernel's BPF stats on). (Globals, no subshells: the EXIT
# trap sees every process.)
RATE=0
NSPP=0
loop_rate() {
  local port=$1 size=$2 c seeds=()
  for c in 0 1; do
    ip netns exec "$NS_S" taskset -c "$c" "$GENERATE" "10.88.0.1:$port" --rate 100000 \
      --count 2000 --size "$size" --backend socket >/dev/null &
    seeds+=($!)
    pids+=($!)
  done
  for c in "${seeds[@]}"; do wait "$c"; done
  sleep 0.5
  local a0 t0 a1 t1
  a0=$(vs_stat xdp_packets)
  t0=$(now)
  sleep "$SECONDS_RUN"
  a1=$(vs_stat xdp_packets)
  t1=$(now)
  RATE=$(python3 -c "print(int(($a1 - $a0) / ($t1 - $t0)))")
  local id s0 s1
  id=$(vr_prog)
  [[ -n $id ]] || die "no XDP program on vr"
  sysctl -qw kernel.bpf_stats_enabled=1
  s0=$("$RUNTIME" "$id")
  sleep "$PROFILE_SECONDS"
  s1=$("$RUNTIME" "$id")
  sysctl -qw kernel.bpf_stats_enabled=0
  NSPP=$(python3 -c "a, b = '$s0'.split(), '$s1'.split(); n = int(b[1]) - int(a[1]); print(f'{(int(b[2]) - int(a[2])) / n:.1f}' if n > 0 else 'nan')")
}
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# measure NAME SETUP TEARDOWN PORT PAYLOAD [CHECK]: one loop-rate run, appended to the
# array runs_NAME; CHECK (if given) runs after the measurement, before TEARDOWN.
measure() {
  local name=$1 setup=$2 teardown=$3 port=$4 size=$5 check=${6:-}
  $setup
  loop_rate "$port" "$size"
  [[ -z $check ]] || $check
  $teardown
  eval "runs_$name+=(\"\$RATE\")"
  eval "ns_$name+=(\"\$NSPP\")"
  sleep 0.3
}

# --- the configurations -------------------------------------------------------------------
bare_up() { xdp "$NS_S" vs xdp_swap; xdp "$NS_R" vr xdp_swap; }
bare_down() { xdp "$NS_R" vr off; xdp "$NS_S" vs off; }
clock_up() { xdp "$NS_S" vs xdp_swap; xdp "$NS_R" vr xdp_swap_clock; }

packetd_pid=
packetd_up() {
  xdp "$NS_S" vs xdp_swap
  cat >"$work/packetd.toml" <<EOF
[xdp]
interfaces = ["vr"]
mode = "native"
allow-sources = ["10.88.0.0/24"]
max-pps-per-source = 0

[grpc]
socket = "$work/packetd.sock"

[state]
directory = "$work/state"

[metrics]
listen = "127.0.0.1:$METRICS_PORT"
EOF
  ip netns exec "$NS_R" "$PACKETD" run --config "$work/packetd.toml" >"$work/packetd.log" 2>&1 &
  packetd_pid=$!
  pids+=("$packetd_pid")
  local i
  for i in $(seq 1 100); do
    kill -0 "$packetd_pid" 2>/dev/null || { cat "$work/packetd.log" >&2; die "rookery-packetd exited"; }
    ip -n "$NS_R" link show vr | grep -q 'xdp' && return 0
    sleep 0.1
  done
  die "rookery-packetd did not attach to vr within 10 s"
}
packetd_down() {
  kill "$packetd_pid" 2>/dev/null || true
  wait "$packetd_pid" 2>/dev/null || true
  xdp "$NS_S" vs off
}
packetd_counter() { # RESULT: rookery_packetd_xdp_packets_total{result=RESULT}
  ip netns exec "$NS_R" curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" |
    awk -v r="result=\"$1\"" 'index($0, r) && /^rookery_packetd_xdp_packets_total/ { print $NF }'
}
# After a STAMP run: packetd's own counter says the loop was answered by the STAMP
# reflector (not dropped, passed or denied): at least half of the measured replies.
packetd_check_stamp() {
  sleep 1.2 # the metrics are refreshed every second
  local reflected
  reflected=$(packetd_counter reflected)
  reflected=${reflected%.*}
  ((${reflected:-0} >= RATE * SECONDS_RUN / 2)) ||
    die "packetd counted ${reflected:-0} reflected STAMP packets for $RATE replies/s"
}

echo_pids=()
user_up() {
  xdp "$NS_S" vs xdp_swap
  # vr needs NAPI to take the bounced frames: an XDP_PASS program hands them to the stack.
  xdp "$NS_R" vr xdp_pass
  local c
  for c in 0 1; do
    ip netns exec "$NS_R" "$work/udp_echo" 10.88.0.1 7 $((SECONDS_RUN + 10)) >"$work/echo.$c" &
    echo_pids+=($!)
    pids+=($!)
  done
  sleep 0.3
}
user_down() {
  local p
  for p in "${echo_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  echo_pids=()
  xdp "$NS_R" vr off
  xdp "$NS_S" vs off
}

echo "bench: packetd, $REPEAT runs of ${SECONDS_RUN}s each, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# Rounds: every configuration once per round, so that a change in the machine's load (other
# work on the same CPUs) hits all of them alike; ratios are the median of the rounds' ratios.
runs_bare60=() runs_bare86=() runs_clock86=() runs_stamp86=() runs_pecho60=() runs_user60=() runs_user86=()
ns_bare60=() ns_bare86=() ns_clock86=() ns_stamp86=() ns_pecho60=() ns_user60=() ns_user86=()
for ((round = 1; round <= REPEAT; round++)); do
  measure bare60 bare_up bare_down 7 18
  measure bare86 bare_up bare_down 7 44
  measure clock86 clock_up bare_down 7 44
  measure stamp86 packetd_up packetd_down 862 44 packetd_check_stamp
  measure pecho60 packetd_up packetd_down 2000 18
  measure user60 user_up user_down 7 18
  measure user86 user_up user_down 7 44
  echo "bench: round $round: bare ${runs_bare60[-1]} / ${runs_bare86[-1]}, bare + clock ${runs_clock86[-1]}, STAMP ${runs_stamp86[-1]}, packetd echo ${runs_pecho60[-1]}, userspace ${runs_user60[-1]} / ${runs_user86[-1]} replies/s; program on vr ${ns_bare60[-1]} / ${ns_bare86[-1]}, ${ns_clock86[-1]}, ${ns_stamp86[-1]}, ${ns_pecho60[-1]} ns/packet" >&2
done
bare60=$(median "${runs_bare60[@]}")
bare86=$(median "${runs_bare86[@]}")
clock86=$(median "${runs_clock86[@]}")
stamp86=$(median "${runs_stamp86[@]}")
pecho60=$(median "${runs_pecho60[@]}")
user60=$(median "${runs_user60[@]}")
user86=$(median "${runs_user86[@]}")
# ratio_of A B: the median over the rounds of runs_A[i] / runs_B[i].
ratio_of() {
  local -n a=runs_$1 b=runs_$2
  local r=() i
  for i in "${!a[@]}"; do r+=("$(python3 -c "print(f'{${a[$i]} / max(${b[$i]}, 1):.2f}')")"); done
  median "${r[@]}"
}

# --- the generator: one session into an XDP_DROP sink, per transmit path ------------------
xdp "$NS_R" vr xdp_drop
# gen BACKEND: one session; appends its achieved packets/s to runs_gen_BACKEND and the frames
# that reached the sink to sink_gen_BACKEND; fails unless the session used that backend.
runs_gen_socket=() runs_gen_afxdp=() sink_gen_socket=() sink_gen_afxdp=()
gen() {
  local backend=$1 key=${1//-/} json g0 g1 used
  g0=$(vr_stat xdp_packets)
  json=$(ip netns exec "$NS_S" taskset -c 0 "$GENERATE" 10.88.0.1:9 --rate 10000000 \
    --duration-ms $((SECONDS_RUN * 1000)) --size 18 --backend "$backend")
  g1=$(vr_stat xdp_packets)
  used=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['backend'])" "$json")
  [[ $backend == socket && $used == sendmmsg || $backend == "$used" ]] ||
    die "generator --backend $backend sent with $used"
  eval "runs_gen_$key+=(\"$(python3 -c "import json,sys; print(int(json.loads(sys.argv[1])['achieved_pps']))" "$json")\")"
  eval "sink_gen_$key+=(\"$((g1 - g0))\")"
  sleep 0.3
}
for ((round = 1; round <= REPEAT; round++)); do
  gen socket
  gen af-xdp
  echo "bench: generator round $round: sendmmsg ${runs_gen_socket[-1]}, AF_XDP ${runs_gen_afxdp[-1]} packets/s" >&2
done
xdp "$NS_R" vr off
gen_socket=$(median "${runs_gen_socket[@]}")
gen_afxdp=$(median "${runs_gen_afxdp[@]}")

fmt() { python3 -c "print(f'{$1 / 1e6:.3f}')"; }
nsmed() { local -n a=ns_$1; median "${a[@]}"; }
echo "| what | frame | packets/s (Mpps) | program on vr, ns/packet |"
echo "|---|---|---|---|"
echo "| bare XDP_TX swap | 60 B | $(fmt "$bare60") | $(nsmed bare60) |"
echo "| bare XDP_TX swap | 86 B | $(fmt "$bare86") | $(nsmed bare86) |"
echo "| bare XDP_TX swap + one clock read | 86 B | $(fmt "$clock86") | $(nsmed clock86) |"
echo "| packetd XDP STAMP reflector | 86 B | $(fmt "$stamp86") | $(nsmed stamp86) |"
echo "| packetd XDP echo | 60 B | $(fmt "$pecho60") | $(nsmed pecho60) |"
echo "| userspace recvmmsg/sendmmsg echo (2 processes) | 60 B | $(fmt "$user60") | (XDP_PASS: $(nsmed user60)) |"
echo "| userspace recvmmsg/sendmmsg echo (2 processes) | 86 B | $(fmt "$user86") | (XDP_PASS: $(nsmed user86)) |"
echo "| packetd generator, one session, sendmmsg | 60 B | $(fmt "$gen_socket") | |"
echo "| packetd generator, one session, AF_XDP (copy mode, 1 queue) | 60 B | $(fmt "$gen_afxdp") | |"
echo
echo "STAMP reflector / bare XDP_TX (86 B): $(ratio_of stamp86 bare86)x (goal >= 0.9)"
echo "bare + one clock read / bare XDP_TX (86 B): $(ratio_of clock86 bare86)x (the most any reflector timestamping each packet can reach)"
echo "STAMP reflector / bare + one clock read (86 B): $(ratio_of stamp86 clock86)x"
echo "STAMP reflector / userspace echo (86 B): $(ratio_of stamp86 user86)x (goal >= 40)"
echo "packetd XDP echo / bare XDP_TX (60 B): $(ratio_of pecho60 bare60)x"
echo "bare XDP_TX / userspace echo (60 B): $(ratio_of bare60 user60)x"
echo "generator AF_XDP / sendmmsg (60 B): $(ratio_of gen_afxdp gen_socket)x"
echo "generator: frames that reached the sink per ${SECONDS_RUN}s run: sendmmsg $(median "${sink_gen_socket[@]}"), AF_XDP $(median "${sink_gen_afxdp[@]}") (medians)"
