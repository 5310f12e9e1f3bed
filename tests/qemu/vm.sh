#!/usr/bin/env bash
# make vm: boots the appliance image in QEMU on this machine, with the console's HTTPS port
# forwarded to 127.0.0.1, and prints how to reach it and the one-time admin password.
#   tests/qemu/vm.sh IMAGE ARCH        (ROOKERY_VM_PORT, default 8443; ROOKERY_VM_DISK)
# The VM's disk is a copy of the image kept beside it (state persists between `make vm`
# runs; delete it for a fresh first boot). Quit QEMU with Ctrl-a x.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
image=$1 arch=$2
port=${ROOKERY_VM_PORT:-8443}
disk=${ROOKERY_VM_DISK:-${image%.raw}-vm.raw}
vars=${disk%.raw}.vars
if [ ! -f "$disk" ] || [ "$image" -nt "$disk" ]; then
  cp --sparse=always "$image" "$disk"
  truncate -s 8G "$disk"
  cp "$(firmware "$arch" | cut -d' ' -f2)" "$vars"
  echo "vm: fresh disk $disk (first boot generates new secrets)"
fi
serial=${disk%.raw}.console.log
: > "$serial"
cat <<MSG
vm: booting $(basename "$image") under QEMU (TCG: allow about a minute).
vm: console (HTTPS, self-signed first-boot certificate): https://127.0.0.1:$port/
MSG
# Print the one-time admin password when first boot shows it on the console, then say when
# the console answers on the forwarded port.
( shown=""
  for _ in $(seq 900); do
    if [ -z "$shown" ] && line=$(grep -a -m1 'One-time admin login:' "$serial" 2>/dev/null); then
      echo; echo "vm: one-time admin password: ${line##*admin / }  (user admin; change it at first login)"; echo
      shown=1
    fi
    # A real TLS handshake and an HTTP status line (QEMU's port forward alone accepts any
    # connection).
    if [ -n "$shown" ] && printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' |
         timeout 20 openssl s_client -connect "127.0.0.1:$port" -quiet 2>/dev/null | head -n1 | grep -q '^HTTP/1'; then
      echo; echo "vm: the console answers on https://127.0.0.1:$port/ (log in as admin with the password above)"; echo
      exit 0
    fi
    sleep 1
  done
  echo "vm: the console did not answer on port $port within 15 minutes; see $serial" ) &
watcher=$!
trap 'kill $watcher 2>/dev/null || true' EXIT
# shellcheck disable=SC2046
$(qemu_cmd "$arch" "$disk" "$vars") -nographic \
  -chardev "stdio,id=con,mux=on,signal=off,logfile=$serial" -serial chardev:con -mon chardev=con \
  -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:443" -device virtio-net-pci,netdev=n0
