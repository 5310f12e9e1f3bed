#!/usr/bin/env bash
# Installs ansible-core and ansible-lint from PyPI into the project's test virtualenv
# /opt/rookery-test-venv (made by install-ingestd-test-deps.sh, which `make deps` runs first;
# created here too when missing). ansible/ (the `rookery` role and its playbooks) is linted by
# `make ansible-lint` and run against the QEMU VM by tests/qemu/run.sh.
# Pinned: ansible-core 2.19 runs on the venv's Python (>= 3.11) and manages targets with
# Python 3.8-3.14 (the image has Debian trixie's 3.13); ansible-lint 26.10 supports it.
# Idempotent: quiet and fast when all is present. Needs root the first time (CI runs as root).
set -euo pipefail

VENV=/opt/rookery-test-venv
PKGS=(ansible-core==2.19.14 ansible-lint==26.10.1)

venv_ok() {
  local frozen
  frozen=$("$VENV/bin/pip" freeze 2>/dev/null) || return 1
  grep -qx 'ansible-core==2.19.14' <<<"$frozen" && grep -qx 'ansible-lint==26.10.1' <<<"$frozen" &&
    [ -x "$VENV/bin/ansible-playbook" ] && [ -x "$VENV/bin/ansible-lint" ]
}

if ! venv_ok; then
  if [[ $(id -u) -ne 0 && ! -w $(dirname "$VENV") ]]; then
    echo "install-ansible-deps: $VENV lacks ${PKGS[*]} (run as root to install them)" >&2
    exit 1
  fi
  if [ ! -x "$VENV/bin/pip" ]; then
    echo "install-ansible-deps: creating $VENV"
    python3 -m venv "$VENV"
  fi
  echo "install-ansible-deps: installing ${PKGS[*]} into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PKGS[@]}"
  venv_ok
fi
