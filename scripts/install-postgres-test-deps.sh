#!/usr/bin/env bash
# Installs Debian's PostgreSQL server for the tests of the PostgreSQL stores of probed and
# ingestd (sqlx). The tests never use the packaged cluster: rookery-pgtest (daemons/pgtest)
# runs initdb into a temporary directory and starts its own server on loopback as the
# `postgres` user, then stops it. The packaged service is kept from starting and disabled,
# so nothing runs on the host.
# Idempotent: quiet and fast when all is present. Needs root the first time (CI runs as root).
# `make test` runs it from `deps`.
set -euo pipefail

# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"

# The server binaries live under a versioned directory (bookworm: 15).
if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null ||
  ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  need_pkgs+=(postgresql)
fi
apt_install_wanted install-postgres-test-deps
disable_services_of_new postgresql postgresql.service
