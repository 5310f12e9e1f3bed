#!/usr/bin/env bash
# Installs the peers `make bench` runs our daemons against: Debian's prometheus-blackbox-exporter
# (probed's peer), nginx (HTTP targets; apid's peer), rsyslog and victoria-metrics (ingestd's
# peers), wrk, python3 and python3-snappy (load drivers), curl.
# packetd's baselines (bench/packetd/*.c) are built with clang against libbpf-dev and the
# kernel headers, and the bench needs iproute2 and ethtool: install-packetd-build-deps.sh.
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
want /usr/sbin/rsyslogd rsyslog
want /usr/bin/victoria-metrics victoria-metrics
# The remote_write driver compresses its bodies with snappy (Debian's binding, no venv).
if ! /usr/bin/python3 -c 'import snappy' 2>/dev/null; then
  need_pkgs+=(python3-snappy)
fi
apt_install_wanted install-bench-deps
bash "$(dirname "$0")/install-packetd-build-deps.sh"
disable_services_of_new rsyslog rsyslog.service syslog.socket
disable_services_of_new victoria-metrics victoria-metrics.service
