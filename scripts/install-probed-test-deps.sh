#!/usr/bin/env bash
# Installs the real servers that rookery-probed's tests start on loopback: nginx (HTTP/1.1,
# HTTP/2, TLS), unbound (DNS), plus iproute2 for network namespaces. Idempotent: quiet and fast
# when all is present. Needs root the first time (CI runs as root).
set -euo pipefail

need_pkgs=()
want() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$1"); }

for p in nginx-light unbound openssh-server openssh-client iproute2; do
  want "$p"
done

if ((${#need_pkgs[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-probed-test-deps: missing Debian packages: ${need_pkgs[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "install-probed-test-deps: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Tests start their own server instances with their own configs; the packaged services
  # must not start (nor hold ports 80/53), so policy-rc.d refuses service starts meanwhile.
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
fi
