#!/usr/bin/env bash
# Installs the real clients that rookery-ingestd's tests run against the daemon on loopback:
# util-linux `logger` (syslog RFC 5424/3164 over UDP/TCP), Debian's `prometheus` (remote_write)
# and `rsyslog` (omfwd forwarding), and a Python virtualenv with the OpenTelemetry SDK and
# its OTLP/HTTP exporter (PyPI) in /opt/rookery-test-venv. The tests start their own
# instances with their own configs; the packaged services are kept from starting and
# disabled, so nothing runs on the host.
# Idempotent: quiet and fast when all is present. Needs root the first time (CI runs as root).
# `make test` runs it from `deps`.
set -euo pipefail

# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"

# util-linux is essential in Debian; bsdutils carries logger.
want /usr/bin/logger bsdutils
want /usr/bin/prometheus prometheus
want /usr/sbin/rsyslogd rsyslog

VENV=/opt/rookery-test-venv
# Pinned: the test's client script uses the SDK's logs API, which is still marked unstable.
OTEL_PKGS=(opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-http==1.45.2)
venv_ok() {
  local installed
  "$VENV/bin/python3" -c 'import opentelemetry.sdk._logs, opentelemetry.exporter.otlp.proto.http' 2>/dev/null || return 1
  # Captured first: `pip freeze | grep -q` fails under pipefail when grep stops reading early.
  installed=$("$VENV/bin/pip" freeze --disable-pip-version-check 2>/dev/null) || return 1
  grep -qx 'opentelemetry-sdk==1.45.2' <<<"$installed"
}
# Debian's python3 creates venvs only with python3-venv (it carries ensurepip's wheels).
if ! venv_ok && ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q 'ok installed'; then
  need_pkgs+=(python3-venv)
fi

apt_install_wanted install-ingestd-test-deps
disable_services_of_new prometheus prometheus.service
disable_services_of_new rsyslog rsyslog.service syslog.socket

if ! venv_ok; then
  if [[ $(id -u) -ne 0 && ! -w $(dirname "$VENV") ]]; then
    echo "install-ingestd-test-deps: missing $VENV (run as root to create it)" >&2
    exit 1
  fi
  echo "install-ingestd-test-deps: creating $VENV with ${OTEL_PKGS[*]}"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${OTEL_PKGS[@]}"
  venv_ok
fi
