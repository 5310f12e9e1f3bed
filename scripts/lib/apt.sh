# Sourced by the scripts/install-*.sh installers: collect the Debian packages whose binaries
# are missing, then install them in one apt run without starting their services.
#
#   want BINARY PACKAGE...     PACKAGE(s) are needed when BINARY is not executable
#   apt_install_wanted NAME    install what was wanted (root only; NAME prefixes messages);
#                              nothing to do returns at once
#   disable_services_of_new PACKAGE UNIT...   after it: keep new packages' services off

need_pkgs=()

want() {
  local bin=$1
  shift
  [[ -x $bin ]] && return 0
  need_pkgs+=("$@")
}

apt_install_wanted() {
  local name=$1
  ((${#need_pkgs[@]})) || return 0
  mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | sort -u)
  if [[ $(id -u) -ne 0 ]]; then
    echo "$name: missing Debian packages: ${need_pkgs[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "$name: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Tests and benchmarks start their own instances with their own configs: the packaged
  # services must not start (nor hold their ports), so policy-rc.d refuses starts meanwhile.
  local policy=/usr/sbin/policy-rc.d created=0 rc=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    created=1
  fi
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null; } || rc=$?
  if ((created)); then rm -f "$policy"; fi
  return "$rc"
}

# disable_services_of_new PACKAGE UNIT...: when this run installed PACKAGE, disable its UNITs
# (packaged services enable themselves for the next boot; tests and benchmarks start their
# own instances). Works without a running systemd too. A host's own, earlier install stays.
disable_services_of_new() {
  local pkg=$1 unit
  shift
  printf '%s\n' "${need_pkgs[@]}" | grep -qx -- "$pkg" || return 0
  for unit in "$@"; do
    if [[ -d /run/systemd/system ]]; then
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    else
      systemctl disable "$unit" >/dev/null 2>&1 || true
    fi
  done
}
