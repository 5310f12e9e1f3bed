#!/usr/bin/env bash
# Installs the peers `make bench` runs our daemons against: Debian's prometheus-blackbox-exporter
# (probed's peer), nginx (HTTP targets; apid's peer), rsyslog and victoria-metrics (ingestd's
# peers), wrk, python3 and python3-snappy (load drivers), curl.
# Packaged services are not started: the benchmark starts its own instances.
# Idempotent: quiet and fast when all is present.
# Needs root the first time. `make bench` runs it.
set -euo pipefail

need_pkgs=()
# want BINARY PACKAGE...: the first package that apt knows is installed when BINARY is missing.
want() {
  local bin=$1
  shift
  [[ -x $bin ]] && return 0
  need_pkgs+=("$@")
}

want /usr/sbin/nginx nginx
want /usr/bin/prometheus-blackbox-exporter prometheus-blackbox-exporter
want /usr/bin/python3 python3
want /usr/bin/wrk wrk
want /usr/bin/curl curl
want /usr/sbin/rsyslogd rsyslog
want /usr/bin/victoria-metrics victoria-metrics
# The remote_write driver compresses its bodies with snappy (Debian's binding, no venv).
if ! /usr/bin/python3 -c 'import snappy' 2>/dev/null; then
  need_pkgs+=(python3-snappy)
fi

if ((${#need_pkgs[@]})); then
  mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | sort -u)
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-bench-deps: missing Debian packages: ${need_pkgs[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "install-bench-deps: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The benchmark starts its own instances; the packaged services must not start (nor hold
  # ports 80/9115), so policy-rc.d refuses service starts meanwhile.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    created_policy=1
  fi
  trap '[[ $created_policy -eq 1 ]] && rm -f "$policy"' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  # The packages enable their services for the next boot: undo that (works without a running
  # systemd too; only for what this run installed, so a host's own syslog stays).
  for pkg in "${need_pkgs[@]}"; do
    case $pkg in
      rsyslog) units=(rsyslog.service syslog.socket) ;;
      victoria-metrics) units=(victoria-metrics.service) ;;
      *) units=() ;;
    esac
    for unit in "${units[@]}"; do
      if [[ -d /run/systemd/system ]]; then
        systemctl disable --now "$unit" >/dev/null 2>&1 || true
      else
        systemctl disable "$unit" >/dev/null 2>&1 || true
      fi
    done
  done
fi
