#!/bin/sh
# Fuzzes a real rookery-apid against its own OpenAPI document with schemathesis (PyPI):
# fails on any 5xx other than 503 (the contract's answer for a daemon that is not running:
# packetd and ingestd are absent here; licensed and probed run for real), on any response that
# breaks the document, and on a dropped connection. Needs `schemathesis` on PATH
# (pip install schemathesis) and built binaries
# (cargo build -p rookery-apid -p rookery-licensed -p rookery-probed).
#
#   daemons/apid/scripts/schemathesis.sh [target/debug] [max-examples]
set -eu
BINDIR=${1:-target/debug}
EXAMPLES=${2:-30}
shift $(( $# < 2 ? $# : 2 ))
BIN=$(realpath "$BINDIR/rookery-apid")
LICENSED=$(realpath "$BINDIR/rookery-licensed")
PROBED=$(realpath "$BINDIR/rookery-probed")
command -v schemathesis >/dev/null || { echo "schemathesis not found: pip install schemathesis" >&2; exit 2; }
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
  # A panic or error line of either daemon is shown, whatever schemathesis said.
  grep -hE 'panicked|ERROR' "$DIR"/*.log >&2 || true
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
[checks.not_a_server_error]
# 503 daemon_unavailable is the contract for packetd and ingestd, absent here.
expected-statuses = ["2xx", "3xx", "4xx", "503"]
TOML
# Run from the temp dir: schemathesis writes its example database to the working directory.
cd "$DIR"
schemathesis --config-file "$DIR/schemathesis.toml" run "$BASE/api/v1/openapi.json" \
  --tls-verify=false \
  -H "Authorization: Bearer $KEY" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$EXAMPLES" \
  --workers 1 \
  --seed 1 \
  --no-color \
  "$@"
