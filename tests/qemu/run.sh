#!/usr/bin/env bash
# Boots the built images under QEMU and checks them from outside.
#   tests/qemu/run.sh OUTPUT_DIR VERSION [ARCH...]      (default: x86-64 arm64)
#   ROOKERY_QEMU_MATCH=persist  only checks whose name contains the pattern
#   ROOKERY_QEMU_ANSIBLE_TIMEOUT=2400  hard timeout of the ansible boot (default 2400 s)
#   ROOKERY_QEMU_ANSIBLE_ARCHES="x86-64"  architectures whose fresh boot also runs the Ansible
#     playbooks (default: this machine's architecture only)
#   ROOKERY_QEMU_SERIAL=1  one architecture after the other (default: all at once, each VM
#     under TCG mostly keeps one core busy)
#   ROOKERY_QEMU_HOSTTESTS=1  also run the hosttests (below; `make test-qemu` sets it, and
#     `make test-qemu-netem` runs them alone)
#   ROOKERY_QEMU_HOSTTESTS_CARGO="--workspace"  the package selection of the
#     `cargo test --no-run` that finds the hosttests' binaries (must match the build that made
#     them, e.g. "-p rookery-probed -p rookery-packetd", or cargo rebuilds)
# Per architecture four boots: A1 (first boot: ready, reload, daemons, then a write and QEMU
# killed), A2 (the write survived; clean power-off), A3 (still there after the clean
# shutdown), B1 (a second pristine copy: ready, secrets differ from A1's; Ansible). Then, with
# ROOKERY_QEMU_HOSTTESTS=1, H1 on this machine's architecture, alone once the others are done:
# the cargo tests listed in tests/qemu/hosttests, which need the appliance kernel's sch_netem,
# run from the host's target/ shared over 9p.
# Each boot runs guest scenarios (image/mkosi.extra/usr/lib/rookery/tests/) chosen with the
# SMBIOS credential rookery.test.scenario; the guest reports "QEMU-TEST: pass|fail NAME" on
# the virtio-serial port org.rookery.test. Every boot has a hard timeout; on failure the
# guest's journal (sent after the marker) and the console log are printed.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
out=$1 version=$2; shift 2
arches=${*:-x86-64 arm64}
match=${ROOKERY_QEMU_MATCH:-}
timeout=${ROOKERY_QEMU_TIMEOUT:-600}
work=$(mktemp -d /var/tmp/rookery-qemu.XXXXXX)
host_arch=$(uname -m | sed 's/x86_64/x86-64/; s/aarch64/arm64/')
ansible_arches=${ROOKERY_QEMU_ANSIBLE_ARCHES-$host_arch}
# Guest reports (with the journal sent after a failure) and consoles of failed boots are kept here.
artifacts=${ROOKERY_QEMU_ARTIFACTS:-$out/qemu-logs}
qemu_pid=""
trap '[ -n "$qemu_pid" ] && kill -9 "$qemu_pid" 2>/dev/null; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
passed=0 failed=0

result() { # name ok|fail detail
  if [ "$2" = ok ]; then passed=$((passed + 1)); echo "PASS $1 $3"; else failed=$((failed + 1)); echo "FAIL $1 $3"; fi
}

# The daemons scenario's STAMP check: QEMU forwards this host UDP port to the guest's 862;
# when the guest says "QEMU-TEST: stamp-ready", stamp.pl sends from here (result in LOG.stamp).
# (run_arch adds an offset per architecture: the architectures' VMs run at the same time.)
base_port=$(( 20000 + $$ % 20000 ))
stamp_port=$base_port
# ... and this host TCP port to the guest's 443: on "QEMU-TEST: https-ready USER PASS" the
# runner logs in from here with curl (result in LOG.https).
https_port=$(( stamp_port + 1 ))
# ... and this host TCP port to the guest's 22, closed unless the ansible scenario opens it:
# on "QEMU-TEST: ansible-ready USER PASS" ansible.sh runs the playbooks of ansible/ over SSH
# with a key made here for this run (its public half goes in the SMBIOS credential
# rookery.test.ssh-key of that boot only) and checks through the forwarded 443 (LOG.ansible).
ssh_port=$(( stamp_port + 2 ))
boot_extra=()

# host_https_login PORT USER PASS -> one line "ok ..." or "failed ..."; exit 0 when ok.
host_https_login() {
  local port=$1 user=$2 pass=$3 resp code token
  resp=$(curl -sk --max-time 60 -w '\n%{http_code}' -H 'Content-Type: application/json' \
    -d "{\"username\":\"$user\",\"password\":\"$pass\"}" "https://127.0.0.1:$port/api/v1/auth/login") ||
    { echo "failed: no HTTPS answer on 127.0.0.1:$port"; return 1; }
  code=$(tail -n1 <<<"$resp")
  [ "$code" = 200 ] || { echo "failed: login answered $code: $(head -n1 <<<"$resp" | head -c 300)"; return 1; }
  token=$(head -n1 <<<"$resp" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
  [ -n "$token" ] || { echo "failed: login answer has no access_token"; return 1; }
  resp=$(curl -sk --max-time 60 -w '\n%{http_code}' -H "Authorization: Bearer $token" \
    "https://127.0.0.1:$port/api/v1/auth/me") || { echo "failed: auth/me got no answer"; return 1; }
  code=$(tail -n1 <<<"$resp")
  [ "$code" = 200 ] && grep -q "\"username\":\"$user\"" <<<"$resp" ||
    { echo "failed: auth/me answered $code: $(head -n1 <<<"$resp" | head -c 300)"; return 1; }
  echo "ok login as $user over https://127.0.0.1:$port (forwarded to the guest's 443), auth/me 200"
}

# boot ARCH DISK VARS SCENARIOS MODE LOG [TIMEOUT] -> 0 when every scenario passed.
# MODE: poweroff (wait for the guest to power off) or kill (kill -9 QEMU at the pass marker).
# QEMU gets the arguments in boot_extra (e.g. more SMBIOS credentials) too.
boot() {
  local arch=$1 disk=$2 vars=$3 scenarios=$4 mode=$5 log=$6 start pid deadline last stamp="" https=""
  local ansible="" ansible_done=""
  : > "$log"
  rm -f "$log.stamp" "$log.https" "$log.ansible"
  start=$(date +%s.%N)
  # shellcheck disable=SC2046
  $(qemu_cmd "$arch" "$disk" "$vars") -display none -monitor none \
    -serial "file:$log.console" \
    -device virtio-serial-pci -chardev "file,id=tst,path=$log" \
    -device virtserialport,chardev=tst,name=org.rookery.test \
    -netdev "user,id=n0,hostfwd=udp:127.0.0.1:$stamp_port-:862,hostfwd=tcp:127.0.0.1:$https_port-:443,hostfwd=tcp:127.0.0.1:$ssh_port-:22" -device virtio-net-pci,netdev=n0 \
    -smbios "type=11,value=io.systemd.credential:rookery.test.scenario=$scenarios" "${boot_extra[@]}" &
  pid=$! qemu_pid=$!
  deadline=$(( $(date +%s) + ${7:-$timeout} ))
  last=${scenarios##*+}
  while kill -0 "$pid" 2>/dev/null; do
    if [ -z "$stamp" ] && grep -q '^QEMU-TEST: stamp-ready' "$log"; then
      perl "$here/stamp.pl" 127.0.0.1 "$stamp_port" 150 > "$log.stamp" 2>&1 &
      stamp=$!
    fi
    if [ -z "$https" ] && grep -q '^QEMU-TEST: https-ready ' "$log"; then
      # shellcheck disable=SC2046
      host_https_login "$https_port" $(sed -n 's/^QEMU-TEST: https-ready //p' "$log" | head -n1) > "$log.https" 2>&1 &
      https=$!
    fi
    if [ -z "$ansible" ] && grep -q '^QEMU-TEST: ansible-ready ' "$log"; then
      # shellcheck disable=SC2046
      bash "$here/ansible.sh" "$ssh_port" "$https_port" "$work/$arch-ssh-key" \
        $(sed -n 's/^QEMU-TEST: ansible-ready //p' "$log" | head -n1) "$work/$arch-ansible" > "$log.ansible" 2>&1 &
      ansible=$!
    fi
    # ansible.sh hands its verdict to the guest over SSH; without SSH the guest would wait
    # for it until its own bound: give it 120 s after ansible.sh ended.
    if [ -n "$ansible" ] && [ -z "$ansible_done" ] && ! kill -0 "$ansible" 2>/dev/null; then
      ansible_done=$(( $(date +%s) + 120 ))
    fi
    if [ -n "$ansible_done" ] && [ "$(date +%s)" -ge "$ansible_done" ]; then
      echo "guest did not finish within 120 s of ansible.sh's end" >> "$log"; kill -9 "$pid"; break
    fi
    if [ "$mode" = kill ] && grep -q "QEMU-TEST: pass $last" "$log"; then
      # The host's own checks of this boot (HTTPS login, STAMP) finish first (bounded by
      # their own timeouts), then the power goes: QEMU killed, no sync, no shutdown.
      for job in $stamp $https; do wait "$job" 2>/dev/null; done
      kill -9 "$pid"; break
    fi
    if grep -q "QEMU-TEST: end $last" "$log" && [ "$mode" = poweroff ]; then
      # Give the guest 90 s to power off cleanly.
      for _ in $(seq 90); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -0 "$pid" 2>/dev/null && { echo "guest did not power off" >> "$log"; kill -9 "$pid"; }
      break
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "TIMEOUT after ${timeout}s" >> "$log"; kill -9 "$pid"; break
    fi
    sleep 1
  done
  wait "$pid" 2>/dev/null
  if [ -n "$stamp" ]; then
    kill "$stamp" 2>/dev/null; wait "$stamp" 2>/dev/null
    echo "HOST stamp: $(cat "$log.stamp")" >> "$log"
  fi
  if [ -n "$https" ]; then
    wait "$https" 2>/dev/null
    echo "HOST https: $(cat "$log.https")" >> "$log"
  fi
  if [ -n "$ansible" ]; then
    kill "$ansible" 2>/dev/null; wait "$ansible" 2>/dev/null
    echo "HOST ansible: $(tail -n1 "$log.ansible")" >> "$log"
  fi
  echo "boot took $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }')s" >> "$log"
  local ok=0 s
  for s in ${scenarios//+/ }; do grep -q "QEMU-TEST: pass $s\$" "$log" || ok=1; done
  if [ $ok -ne 0 ]; then
    echo "---- $log (guest report) ----"; grep -v '^JOURNAL ' "$log"
    echo "---- guest journal (last lines) ----"; grep '^JOURNAL ' "$log" | tail -n 150
    echo "---- console (last lines) ----"; tail -n 60 "$log.console"
    mkdir -p "$artifacts" && cp "$log" "$log.console" "$artifacts/" &&
      echo "---- saved: $artifacts/$(basename "$log") (guest report + journal) and .console ----"
  fi
  if [ -f "$log.ansible" ] && ! grep -q '^HOST ansible: ok ' "$log"; then
    echo "---- $log.ansible (host: ansible-playbook runs, last lines) ----"; tail -n 120 "$log.ansible"
    mkdir -p "$artifacts" && cp "$log.ansible" "$artifacts/" && echo "---- saved: $artifacts/$(basename "$log").ansible ----"
  fi
  return $ok
}

fresh_disk() { # ARCH NAME -> creates $work/NAME.raw and $work/NAME.vars
  cp --sparse=always "$out/rookery-$version-$1.raw" "$work/$2.raw"
  truncate -s 4G "$work/$2.raw"
  cp "$(firmware "$1" | cut -d' ' -f2)" "$work/$2.vars"
}

want() { [ -z "$match" ] || [[ $1 == *$match* ]]; }

# hosttests_cred -> "TARGET_DIR BIN:TEST ..." for the credential rookery.test.hosttests: the
# workspace's target directory (shared with the guest over 9p at the same path) and the test
# binaries of the tests listed in tests/qemu/hosttests, as `cargo test --no-run` reports them
# (already built by `make test-bins`; cargo only checks they are fresh).
hosttests_cred() {
  local root json
  root=$(cd "$here/../.." && pwd)
  # shellcheck disable=SC2086
  json=$(cd "$root" && nice -n 19 cargo test ${ROOKERY_QEMU_HOSTTESTS_CARGO:---workspace} --no-run --locked \
    --message-format=json 2> "$work/hosttests-cargo.log") ||
    { echo "hosttests: cargo test --no-run failed:" >&2; tail -n 40 "$work/hosttests-cargo.log" >&2; return 1; }
  python3 -c '
import json, sys
tests = [l.split() for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
bins, target_dir = {}, None
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["kind"] == ["test"] and m.get("executable"):
        bins.setdefault(m["target"]["name"], set()).add(m["executable"])
out = []
for target, name in tests:
    found = sorted(bins.get(target, ()))
    if len(found) != 1:
        sys.exit(f"hosttests: test target {target} has {len(found)} binaries: {found}")
    out.append(f"{found[0]}:{name}")
dirs = {b.split("/debug/deps/")[0] for b in out}
if len(dirs) != 1 or any("," in b or " " in b for b in out):
    sys.exit(f"hosttests: binaries not in one target/debug/deps without commas or spaces: {out}")
print(dirs.pop(), *out)
' "$here/hosttests" <<<"$json"
}

# run_arch ARCH: every check of one architecture; prints PASS/FAIL lines.
run_arch() {
  local arch=$1 image first persist="" mode a1=fail ak s1 s2 differ a b k
  case $arch in x86-64) stamp_port=$base_port ;; *) stamp_port=$(( base_port + 10 )) ;; esac
  https_port=$(( stamp_port + 1 )) ssh_port=$(( stamp_port + 2 ))
  image="$out/rookery-$version-$arch.raw"
  [ -f "$image" ] || { result "$arch/image" fail "($image missing)"; return; }
  echo "== $arch: $(du -h --apparent-size "$image" | cut -f1) raw, $(du -h "$image.zst" 2>/dev/null | cut -f1) compressed"
  fresh_disk "$arch" "$arch-a"
  # A1, the first boot: daemons needs it (the one-time admin password); persist-write last,
  # as QEMU is killed at its pass marker.
  first=""
  for s in ready reload daemons; do want "$s" && first=${first:+$first+}$s; done
  want persist && persist=1
  if [ -n "$persist" ]; then first=${first:+$first+}persist-write mode=kill; else mode=poweroff; fi
  if [ -n "$first" ]; then
    if boot "$arch" "$work/$arch-a.raw" "$work/$arch-a.vars" "$first" "$mode" "$work/$arch-a1.log"; then a1=ok; else a1=fail; fi
    grep '^INFO ' "$work/$arch-a1.log" | sed "s/^INFO /  $arch: /"
    grep '^boot took' "$work/$arch-a1.log" | sed "s/^/  $arch: first /"
    scenario_ok() { grep -q "QEMU-TEST: pass $1\$" "$work/$arch-a1.log"; }
    verdict() { if scenario_ok "$1"; then echo ok; else echo fail; fi; }
    want ready && result "$arch/ready" "$(verdict ready)" "(units active and READY, exposure within limits, first-boot secrets present)"
    want reload && result "$arch/reload" "$(verdict reload)" "(good edit applied, broken file rejected, old config kept; a start with it exits 78, not restarted)"
    want daemons && result "$arch/daemons" "$(verdict daemons)" "(apid login + forced password change + console, ingestd syslog stored and queried, packetd reflected the host's STAMP)"
    if want daemons; then
      if grep -q '^HOST https: ok ' "$work/$arch-a1.log"; then
        result "$arch/https-from-host" ok "($(sed -n 's/^HOST https: ok //p' "$work/$arch-a1.log"))"
      else
        result "$arch/https-from-host" fail "($(sed -n 's/^HOST https: //p' "$work/$arch-a1.log" | head -n1))"
      fi
      if grep -q '^HOST stamp: ok ' "$work/$arch-a1.log"; then
        result "$arch/stamp-from-host" ok "($(sed -n 's/^HOST stamp: ok //p' "$work/$arch-a1.log"))"
      else
        result "$arch/stamp-from-host" fail "($(sed -n 's/^HOST stamp: //p' "$work/$arch-a1.log" | head -n1))"
      fi
    fi
  fi
  if [ -n "$persist" ]; then
    if [ "$a1" = ok ] &&
       boot "$arch" "$work/$arch-a.raw" "$work/$arch-a.vars" persist-check poweroff "$work/$arch-a2.log"; then
      grep '^INFO ' "$work/$arch-a2.log" | sed "s/^INFO /  $arch: after power loss: /"
      result "$arch/power-loss" ok "(key written before QEMU was killed is intact)"
      if boot "$arch" "$work/$arch-a.raw" "$work/$arch-a.vars" persist-check poweroff "$work/$arch-a3.log"; then
        result "$arch/clean-reboot" ok "(state intact after a clean shutdown and boot)"
      else
        result "$arch/clean-reboot" fail ""
      fi
    else
      result "$arch/power-loss" fail ""
      result "$arch/clean-reboot" fail "(not run: the power-loss boot failed)"
    fi
  fi
  rm -f "$work/$arch-a.raw"
  # B1: a second pristine copy. ready (the secrets to compare with A1's) and, on the
  # architectures in ROOKERY_QEMU_ANSIBLE_ARCHES, the Ansible playbooks over SSH.
  ak=""
  want ansible && [[ " $ansible_arches " == *" $arch "* ]] && ak=1
  if want secrets || [ -n "$ak" ]; then
    fresh_disk "$arch" "$arch-b"
    boot_extra=()
    if [ -n "$ak" ]; then
      rm -f "$work/$arch-ssh-key" "$work/$arch-ssh-key.pub"
      ssh-keygen -q -t ed25519 -N '' -C rookery-qemu-test -f "$work/$arch-ssh-key"
      boot_extra+=(-smbios "type=11,value=io.systemd.credential:rookery.test.ssh-key=$(cat "$work/$arch-ssh-key.pub")")
    fi
    boot "$arch" "$work/$arch-b.raw" "$work/$arch-b.vars" "ready${ak:++ansible}" poweroff "$work/$arch-b1.log" \
      "${ak:+${ROOKERY_QEMU_ANSIBLE_TIMEOUT:-2400}}"
    boot_extra=()
    grep '^boot took' "$work/$arch-b1.log" | sed "s/^/  $arch: second fresh /"
    if want secrets; then
      if grep -q 'QEMU-TEST: pass ready$' "$work/$arch-b1.log"; then
        s1=$(sed -n 's/^INFO secret //p' "$work/$arch-a1.log" 2>/dev/null)
        s2=$(sed -n 's/^INFO secret //p' "$work/$arch-b1.log")
        echo "  $arch: boot A secrets: ${s1:-?}"
        echo "  $arch: boot B secrets: $s2"
        differ=ok
        for k in cert admin token machine-id; do
          a=$(tr ' ' '\n' <<<"$s1" | sed -n "s/^$k=//p"); b=$(tr ' ' '\n' <<<"$s2" | sed -n "s/^$k=//p")
          if [ -z "$a" ] || [ -z "$b" ] || [ "$a" = "$b" ]; then differ=fail; echo "  $arch: $k is the same (or missing) in two fresh boots"; fi
        done
        result "$arch/unique-secrets" $differ "(two fresh boots of one image: different cert, admin password, token key, machine-id)"
      else
        result "$arch/unique-secrets" fail "(second fresh boot failed)"
      fi
    fi
    if [ -n "$ak" ]; then
      if grep -q 'QEMU-TEST: pass ansible$' "$work/$arch-b1.log" && grep -q '^HOST ansible: ok ' "$work/$arch-b1.log"; then
        grep '^INFO ansible' "$work/$arch-b1.log" | sed "s/^INFO /  $arch: /"
        result "$arch/ansible" ok "($(sed -n 's/^HOST ansible: ok //p' "$work/$arch-b1.log"); $(grep '^boot took' "$work/$arch-b1.log"))"
      else
        result "$arch/ansible" fail "($(sed -n 's/^HOST ansible: //p' "$work/$arch-b1.log" | head -n1))"
      fi
    fi
    rm -f "$work/$arch-b.raw"
  fi
}

# run_hosttests ARCH: H1, a pristine copy booted alone (after the other architectures' boots
# are done) that runs the cargo tests listed in tests/qemu/hosttests from the host's target/
# (9p, read-only): their timing tolerances (netem's 20 ms within 2 ms) hold under TCG only
# while the emulated CPUs have the host's cores to themselves.
run_hosttests() {
  local arch=$1 htcred log
  log="$work/$arch-h1.log"
  htcred=$(hosttests_cred) || { result "$arch/hosttests" fail "(test binaries not found)"; return; }
  fresh_disk "$arch" "$arch-h"
  boot_extra=(-virtfs "local,path=${htcred%% *},mount_tag=rookery-host,security_model=none,readonly=on"
    -smbios "type=11,value=io.systemd.credential:rookery.test.hosttests=$htcred")
  boot "$arch" "$work/$arch-h.raw" "$work/$arch-h.vars" hosttests poweroff "$log"
  boot_extra=()
  grep '^boot took' "$log" | sed "s/^/  $arch: hosttests /"
  grep '^INFO hosttests' "$log" | sed "s/^INFO /  $arch: /"
  if grep -q 'QEMU-TEST: pass hosttests$' "$log"; then
    result "$arch/hosttests" ok "($(grep -c '^INFO hosttests pass' "$log") cargo tests of tests/qemu/hosttests (tc netem accuracy) in $(sed -n 's/^INFO hosttests took //p' "$log"))"
  else
    result "$arch/hosttests" fail "($(grep -c '^INFO hosttests FAIL' "$log") failed: $(sed -n 's/^INFO hosttests FAIL \([^ ]*\).*/\1/p' "$log" | paste -sd' '))"
  fi
  rm -f "$work/$arch-h.raw"
}

start_all=$(date +%s)
if [ -n "${ROOKERY_QEMU_SERIAL:-}" ] || [ "$(wc -w <<<"$arches")" -eq 1 ]; then
  for arch in $arches; do run_arch "$arch"; done
else
  # Each architecture in its own subshell (its own QEMU, ports and files); the output of
  # each is printed whole once all are done.
  pids=()
  for arch in $arches; do
    ( qemu_pid=""; trap '[ -n "$qemu_pid" ] && kill -9 "$qemu_pid" 2>/dev/null' EXIT
      run_arch "$arch" ) > "$work/$arch.out" 2>&1 &
    pids+=("$!")
  done
  trap 'kill "${pids[@]}" 2>/dev/null; exit 130' INT TERM
  wait "${pids[@]}"
  for arch in $arches; do cat "$work/$arch.out"; done
  passed=$(cat "$work"/*.out | grep -c '^PASS ')
  failed=$(cat "$work"/*.out | grep -c '^FAIL ')
fi
# The host's test binaries run in a guest of this machine's architecture only, alone.
if [ -n "${ROOKERY_QEMU_HOSTTESTS:-}" ] && want hosttests && [[ " $arches " == *" $host_arch "* ]]; then
  run_hosttests "$host_arch"
fi
echo "qemu: $passed passed, $failed failed ($(( $(date +%s) - start_all ))s)"
[ "$failed" -eq 0 ]
