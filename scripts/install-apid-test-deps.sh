#!/usr/bin/env bash
# Installs what apid's API fuzzing (`make test-schemathesis`, daemons/apid/scripts/schemathesis.sh)
# needs: curl (the script logs in with it) and schemathesis from PyPI, pinned, in the test
# virtualenv /opt/rookery-test-venv (shared with ingestd's OpenTelemetry client; created here
# too when missing, so the order of the installers does not matter).
# Idempotent: quiet and fast when all is present. Needs root the first time (CI runs as root).
# `make test` runs it from `deps`.
set -euo pipefail

# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"

want /usr/bin/curl curl
want /usr/bin/python3 python3

VENV=/opt/rookery-test-venv
# Pinned: the fuzzing script uses schemathesis 4's command line and config file.
SCHEMATHESIS=schemathesis==4.32.5
venv_ok() {
  local installed
  [[ -x $VENV/bin/schemathesis ]] || return 1
  # Captured first: `pip freeze | grep -q` fails under pipefail when grep stops reading early.
  installed=$("$VENV/bin/pip" freeze --disable-pip-version-check 2>/dev/null) || return 1
  grep -qx "$SCHEMATHESIS" <<<"$installed"
}
# Debian's python3 creates venvs only with python3-venv (it carries ensurepip's wheels).
if ! venv_ok && [[ ! -x $VENV/bin/pip ]] &&
  ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q 'ok installed'; then
  need_pkgs+=(python3-venv)
fi

apt_install_wanted install-apid-test-deps

if ! venv_ok; then
  if [[ $(id -u) -ne 0 && ! -w $(dirname "$VENV") ]]; then
    echo "install-apid-test-deps: missing $SCHEMATHESIS in $VENV (run as root to install it)" >&2
    exit 1
  fi
  echo "install-apid-test-deps: installing $SCHEMATHESIS into $VENV"
  [[ -x $VENV/bin/pip ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "$SCHEMATHESIS"
  venv_ok
fi
