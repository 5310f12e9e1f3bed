#!/usr/bin/env bash
# Installs what `make test` needs to build and test the Rust workspace on a fresh Debian
# (bookworm or newer) machine, as root. Idempotent: quiet and fast when all is present.
set -euo pipefail

need_pkgs=()
want() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$1"); }

# protoc for tonic-prost-build; openssl for test certificates; iproute2/util-linux for tests.
for p in protobuf-compiler libprotobuf-dev pkg-config gcc libc6-dev make ca-certificates curl \
         iproute2 util-linux openssl; do
  want "$p"
done

if ((${#need_pkgs[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-build-deps: missing Debian packages: ${need_pkgs[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "install-build-deps: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if ! command -v rustup >/dev/null 2>&1; then
  echo "install-build-deps: rustup not found; install Rust with rustup first" >&2
  exit 1
fi
# The toolchain and its components come from rust-toolchain.toml.
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$(dirname "$0")/../rust-toolchain.toml")
if ! rustup toolchain list | grep -q "^${toolchain}"; then
  rustup toolchain install "$toolchain" --profile minimal -c rustfmt -c clippy
fi
installed=$(rustup component list --toolchain "$toolchain" --installed)
for c in rustfmt clippy; do
  grep -q "^${c}" <<<"$installed" || rustup component add --toolchain "$toolchain" "$c"
done
