#!/usr/bin/env bash
# Installs what building packetd's XDP program (C, compiled by clang from daemons/packetd/build.rs)
# and running its privileged tests (network namespaces, veth, XDP) need on a fresh Debian bookworm
# machine, as root. Idempotent: quiet and fast when all is present. `make test` runs it before cargo.
set -euo pipefail

need_pkgs=()
want() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$1"); }

# clang/llvm: compiles ebpf/packetd/packetd.bpf.c for the bpf target; libbpf-dev: bpf_helpers.h,
# bpf_endian.h; linux-libc-dev + libc6-dev: <linux/bpf.h>, the packet headers and the
# multiarch <asm/types.h>; iproute2 + ethtool: the privileged tests create namespaces and veth
# pairs and switch off TX checksum offload on the sender side.
for p in clang llvm libbpf-dev linux-libc-dev libc6-dev iproute2 ethtool; do
  want "$p"
done

if ((${#need_pkgs[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-packetd-build-deps: missing Debian packages: ${need_pkgs[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "install-packetd-build-deps: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
