#!/usr/bin/env bash
# ARCHITECTURE.md must not drift: every path in its repository table must exist, and every
# top-level directory tracked by git must be in that table.
set -u
cd "$(dirname "$0")/../.."
fail=0
paths=$(sed -n 's/^| `\([^`]*\)` |.*/\1/p' ARCHITECTURE.md)
[ -n "$paths" ] || { echo "FAIL: no paths found in ARCHITECTURE.md's table"; exit 1; }
for p in $paths; do
  if [ ! -e "$p" ]; then echo "FAIL: ARCHITECTURE.md names $p, which does not exist"; fail=1; fi
done
for d in $(git ls-files | cut -d/ -f1 | sort -u); do
  [ -d "$d" ] || continue
  grep -q "^| \`$d/" ARCHITECTURE.md || { echo "FAIL: top-level directory $d/ is not in ARCHITECTURE.md"; fail=1; }
done
[ $fail -eq 0 ] && echo "ok: ARCHITECTURE.md names $(wc -w <<<"$paths") paths, all present; every top-level directory listed"
exit $fail
