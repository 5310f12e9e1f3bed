#!/usr/bin/env bash
# Installs the peers `make bench` runs our daemons against: Debian's prometheus-blackbox-exporter
# (probed's peer), nginx (HTTP targets; apid's peer), wrk and python3 (load drivers), curl.
# Packaged services are not started: the benchmark starts its own instances.
# Idempotent: quiet and fast when all is present.
# Needs root the first time. `make bench` runs it.
set -euo pipefail

# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"

want /usr/sbin/nginx nginx
want /usr/bin/prometheus-blackbox-exporter prometheus-blackbox-exporter
want /usr/bin/python3 python3
want /usr/bin/wrk wrk
want /usr/bin/curl curl
apt_install_wanted install-bench-deps
