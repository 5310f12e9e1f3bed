#!/usr/bin/env bash
# Installs what building the appliance image and booting it in QEMU need on a fresh Debian
# bookworm (or newer) machine, as root: mkosi 24+ and systemd tools from bookworm-backports,
# QEMU with UEFI firmware for amd64 and arm64, binfmt for building the arm64 image, and the
# aarch64 cross toolchain for the daemons; the SSH client of the QEMU ansible check.
# Idempotent: quiet and fast when all is present.
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "install-image-deps: run as root (installs Debian packages and registers binfmt handlers)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")

# bookworm's mkosi (14) and systemd (252) are too old: take them from bookworm-backports.
backports=""
if [[ $codename == bookworm ]]; then
  backports="-t bookworm-backports"
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's|^URIs: *\(https\?://[^ ]*/debian\)/\?$|\1|p' | head -n1 || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" > /etc/apt/sources.list.d/bookworm-backports.sources
    apt-get update -qq
  fi
fi

need=()
want() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' || need+=("$1"); }
# QEMU 10 comes from backports too (qemu-utils here may already be the backports one).
for p in mkosi systemd-container systemd-boot systemd-boot-efi python3-pefile \
         qemu-system-x86 qemu-system-arm qemu-utils qemu-user-static; do want "$p"; done
if dpkg --compare-versions "$(dpkg-query -W -f='${Version}' systemd 2>/dev/null || echo 0)" lt 254; then
  need+=(systemd)
fi
bp=("${need[@]}")
need=()
# curl, openssh-client (ssh-keygen, ssh) and perl (tests/qemu/stamp.pl: Time::HiRes is in perl,
# not perl-base) are the QEMU runner's host side.
for p in apt dpkg debian-archive-keyring kmod cpio zstd e2fsprogs dosfstools mtools xz-utils \
         ovmf qemu-efi-aarch64 binfmt-support \
         gcc-aarch64-linux-gnu libc6-dev-arm64-cross openssl socat curl openssh-client perl; do
  want "$p"
done
if ((${#bp[@]} + ${#need[@]})); then
  echo "install-image-deps: installing ${bp[*]} ${need[*]}"
  apt-get update -qq
  if ((${#bp[@]})); then
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $backports "${bp[@]}" >/dev/null
  fi
  if ((${#need[@]})); then
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

# Building the arm64 image runs arm64 binaries (postinst scripts) through qemu-user.
if [[ $(uname -m) == x86_64 ]]; then
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  fi
  if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    # Register by hand with the F (fix binary) flag so it works inside mkosi's sandbox.
    echo ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
      > /proc/sys/fs/binfmt_misc/register
  fi
fi

# The daemons are cross-compiled for arm64 with the pinned toolchain.
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$(dirname "$0")/../rust-toolchain.toml")
if ! rustup target list --toolchain "$toolchain" --installed | grep -q '^aarch64-unknown-linux-gnu$'; then
  rustup target add --toolchain "$toolchain" aarch64-unknown-linux-gnu
fi
