#!/usr/bin/env bash
# Installs the real servers that rookery-probed's tests start on loopback and in network
# namespaces they create: nginx (HTTP/1.1, HTTP/2, TLS), unbound (DNS), OpenSSH's sshd and
# ssh-keygen, iproute2 (ip netns, tc). Idempotent: quiet and fast when all is present.
# Needs root the first time (CI runs as root). `make test` runs it from `deps`.
set -euo pipefail

# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"

want /usr/sbin/nginx nginx
want /usr/sbin/unbound unbound
want /usr/sbin/sshd openssh-server
want /usr/bin/ssh-keygen openssh-client
want /usr/sbin/ip iproute2
want /usr/sbin/tc iproute2
apt_install_wanted install-probed-test-deps
