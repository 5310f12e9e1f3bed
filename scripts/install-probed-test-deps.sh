#!/usr/bin/env bash
# Installs the real servers that rookery-probed's tests start on loopback and in network
# namespaces they create: nginx (HTTP/1.1, HTTP/2, TLS), unbound (DNS), OpenSSH's sshd and
# ssh-keygen, iproute2 (ip netns, tc). Idempotent: quiet and fast when all is present.
# Needs root the first time (CI runs as root). `make test` runs it from `deps`.
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
want /usr/sbin/unbound unbound
want /usr/sbin/sshd openssh-server
want /usr/bin/ssh-keygen openssh-client
want /usr/sbin/ip iproute2
want /usr/sbin/tc iproute2

if ((${#need_pkgs[@]})); then
  mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | sort -u)
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-probed-test-deps: missing Debian packages: ${need_pkgs[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "install-probed-test-deps: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Tests start their own server instances with their own configs; the packaged services
  # must not start (nor hold ports 80/53/22), so policy-rc.d refuses service starts meanwhile.
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
