#!/bin/sh
# Fuzzes a real rookery-apid against its own OpenAPI document with schemathesis (PyPI), twice:
# as an admin (an API key, so every route is reached past authentication) and anonymously.
# Fails on any 5xx other than 503 (the contract's answer for a daemon that is not running:
# packetd and ingestd are absent here; licensed and probed run for real), on any status,
# content type or body the document does not describe (errors included: they must be the
# DESIGN.md error JSON), and on a dropped connection. `make test-schemathesis` (part of
# `make test`) runs it; scripts/install-apid-test-deps.sh installs schemathesis into
# /opt/rookery-test-venv. Needs built binaries
# (cargo build -p rookery-apid -p rookery-licensed -p rookery-probed).
#
#   daemons/apid/scripts/schemathesis.sh [target/debug] [max-examples] [schemathesis args...]
#
# Environment: SCHEMATHESIS (the command; default the venv's, else PATH's), MAX_TIME (seconds
# of the main admin run, default 120; the others get 30), REPORT_DIR (keep schemathesis' HAR
# reports and the daemons' logs there).
set -eu
BINDIR=${1:-target/debug}
EXAMPLES=${2:-30}
shift $(( $# < 2 ? $# : 2 ))
MAX_TIME=${MAX_TIME:-120}
if [ -z "${SCHEMATHESIS:-}" ]; then
  if [ -x /opt/rookery-test-venv/bin/schemathesis ]; then
    SCHEMATHESIS=/opt/rookery-test-venv/bin/schemathesis
  else
    SCHEMATHESIS=schemathesis
  fi
fi
command -v "$SCHEMATHESIS" >/dev/null || {
  echo "schemathesis not found: bash scripts/install-apid-test-deps.sh" >&2; exit 2; }
BIN=$(realpath "$BINDIR/rookery-apid")
LICENSED=$(realpath "$BINDIR/rookery-licensed")
PROBED=$(realpath "$BINDIR/rookery-probed")
for b in "$BIN" "$LICENSED" "$PROBED"; do
  [ -x "$b" ] || { echo "$b not built: cargo build -p rookery-apid -p rookery-licensed -p rookery-probed" >&2; exit 2; }
done

DIR=$(mktemp -d)
PID=
LPID=
PPID_=
cleanup() {
  for p in $PID $LPID $PPID_; do kill "$p" 2>/dev/null || true; done
  # Wait for all to exit, so nothing still writes while the directory is removed.
  for p in $PID $LPID $PPID_; do wait "$p" 2>/dev/null || true; done
  # A panic or error line of any daemon is shown, whatever schemathesis said.
  grep -hE 'panicked|ERROR' "$DIR"/*.log >&2 || true
  if [ -n "${REPORT_DIR:-}" ]; then
    mkdir -p "$REPORT_DIR" && cp "$DIR"/*.log "$REPORT_DIR"/ || true
  fi
  rm -rf "$DIR" || true
}
trap cleanup EXIT
trap 'exit 1' INT TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$DIR/run" "$DIR/etc"
ADMIN_PW="Initial-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
NEW_PW="Fuzz-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf 'username=admin\npassword=%s\n' "$ADMIN_PW" > "$DIR/initial-admin"
cat > "$DIR/apid.toml" <<TOML
[http]
listen = "127.0.0.1:$PORT"
redirect = false
[tls]
cert = "$DIR/tls/apid.crt"
key = "$DIR/tls/apid.key"
[auth]
# Longer than the whole run: the admin-token run below uses the token from the start.
access-token-ttl = "30m"
signing-key = "$DIR/state/key"
initial-admin = "$DIR/initial-admin"
[daemons]
run-dir = "$DIR/run"
config-dir = "$DIR/etc"
[grpc]
socket = "$DIR/run/apid.sock"
[metrics]
listen = "127.0.0.1:0"
[state]
directory = "$DIR/state"
TOML

cat > "$DIR/etc/licensed.toml" <<TOML
[grpc]
socket = "$DIR/run/licensed.sock"
[metrics]
listen = "127.0.0.1:0"
[state]
directory = "$DIR/licensed-state"
TOML
"$LICENSED" --config "$DIR/etc/licensed.toml" > "$DIR/licensed.log" 2>&1 &
LPID=$!
# probed probes apid's own HTTPS port over TCP (always up while the run lasts).
cat > "$DIR/etc/probed.toml" <<TOML
[grpc]
socket = "$DIR/run/probed.sock"
[metrics]
listen = "127.0.0.1:0"
[state]
directory = "$DIR/probed-state"
[modules.tcp]
prober = "tcp"
timeout = "1s"
[[targets]]
name = "apid"
module = "tcp"
address = "127.0.0.1:$PORT"
interval = "2s"
TOML
"$PROBED" --config "$DIR/etc/probed.toml" > "$DIR/probed.log" 2>&1 &
PPID_=$!
"$BIN" --config "$DIR/apid.toml" > "$DIR/apid.log" 2>&1 &
PID=$!
BASE="https://127.0.0.1:$PORT"
i=0
until curl -ksf "$BASE/api/v1/openapi.json" -o /dev/null; do
  i=$((i + 1)); [ $i -lt 100 ] || { cat "$DIR/apid.log" >&2; exit 1; }
  sleep 0.1
done

json() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
TOKEN=$(curl -ksf "$BASE/api/v1/auth/login" -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$ADMIN_PW\"}" | json access_token)
TOKEN=$(curl -ksf "$BASE/api/v1/auth/change-password" -H 'content-type: application/json' \
  -H "authorization: Bearer $TOKEN" \
  -d "{\"current_password\":\"$ADMIN_PW\",\"new_password\":\"$NEW_PW\"}" | json access_token)
# An API key does not end when a fuzzed request logs out or rotates the signing generation.
KEY=$(curl -ksf "$BASE/api/v1/api-keys" -H 'content-type: application/json' \
  -H "authorization: Bearer $TOKEN" -d '{"name":"fuzz","role":"admin"}' | json key)

cat > "$DIR/schemathesis.toml" <<TOML
[auth]
# Users are made by an admin, not by signing up: no account bootstrap from the login route.
auto-signup = false
[checks.not_a_server_error]
# 503 daemon_unavailable is the contract for packetd and ingestd, absent here.
expected-statuses = ["2xx", "3xx", "4xx", "503"]
TOML
# Run from the temp dir: schemathesis writes its example database to the working directory.
cd "$DIR"
# fuzz LABEL SECONDS [schemathesis args...]: one bounded run; its exit status is the result.
fuzz() {
  label=$1
  seconds=$2
  shift 2
  echo "== schemathesis: $label"
  report=
  if [ -n "${REPORT_DIR:-}" ]; then
    mkdir -p "$REPORT_DIR"
    report="--report=har --report-har-path=$REPORT_DIR/$label.har"
  fi
  # shellcheck disable=SC2086 # $report is empty or two words
  "$SCHEMATHESIS" --config-file "$DIR/schemathesis.toml" run "$BASE/api/v1/openapi.json" \
    --tls-verify=false \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "$EXAMPLES" \
    --max-time "$seconds" \
    --workers 1 \
    --seed 1 \
    --no-color \
    $report \
    "$@"
}
# Routes that can take the fuzzing admin's own access away (a new password forces a change
# first, revoking key 1 is revoking this key, deleting users may delete this one once the
# fuzzer made another admin) run last, in a run of their own, so they cannot blind the rest.
SELF_ARGS="--include-operation-id patch_users__name_ --include-operation-id delete_api_keys__id_ --include-operation-id delete_users__name_"
EXCLUDE_SELF=$(echo "$SELF_ARGS" | sed 's/--include-/--exclude-/g')
# What an API key may not do (make keys, change the password, TOTP) runs with the admin's
# access token, which lives longer than this run.
TOKEN_ARGS="--include-operation-id post_api_keys --include-operation-id post_auth_change_password --include-operation-id post_auth_totp_enrol --include-operation-id post_auth_totp_verify --include-operation-id post_auth_totp_disable"
status=0
fuzz anonymous 30 "$@" || status=1
# shellcheck disable=SC2086 # word splitting of the option lists is wanted
fuzz admin "$MAX_TIME" -H "Authorization: Bearer $KEY" $EXCLUDE_SELF "$@" || status=1
# shellcheck disable=SC2086
fuzz admin-token 30 -H "Authorization: Bearer $TOKEN" $TOKEN_ARGS "$@" || status=1
# shellcheck disable=SC2086
fuzz admin-self 30 -H "Authorization: Bearer $KEY" $SELF_ARGS "$@" || status=1
if [ "$status" -ne 0 ]; then
  echo "schemathesis found failures; apid's log ends with:" >&2
  tail -n 40 "$DIR/apid.log" >&2
fi
exit "$status"
