#!/usr/bin/env bash
# Installs what webui/ needs to build and test: the machine's Node.js (>= 20.19, for Vite) and
# npm, Debian's chromium (driven by playwright-core: no browser is ever downloaded), and the
# npm packages pinned in webui/package-lock.json (`npm ci`). Idempotent: quiet and fast when
# all is present (npm ci runs again only when package-lock.json changed).
# Needs root the first time (CI runs as root). `make test` runs it from `deps`.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
[[ -x /usr/bin/chromium ]] || need_pkgs+=(chromium)
command -v node >/dev/null || need_pkgs+=(nodejs)
command -v npm >/dev/null || need_pkgs+=(npm)
if ((${#need_pkgs[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-webui-deps: missing Debian packages: ${need_pkgs[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "install-webui-deps: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi

version=$(node --version)
IFS=. read -r major minor _ <<<"${version#v}"
if ((major < 20 || (major == 20 && minor < 19))); then
  echo "install-webui-deps: node $version is too old: Vite needs 20.19 or later" >&2
  exit 1
fi

stamp=webui/node_modules/.rookery-lock.sha256
want=$(sha256sum webui/package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "install-webui-deps: npm ci in webui/"
  (cd webui && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi
