#!/usr/bin/env bash
# Proves that .ci/run exits non-zero when a make step fails and zero when it passes.
set -u
cd "$(dirname "$0")/../.."
fail=0
if ROOKERY_CI_TARGET=ci-selftest-fail bash .ci/run >/dev/null 2>&1; then
  echo "FAIL: .ci/run exited 0 although its make target failed"; fail=1
else
  echo "ok: .ci/run fails when a step fails"
fi
if ROOKERY_CI_TARGET=ci-selftest-pass bash .ci/run >/dev/null 2>&1; then
  echo "ok: .ci/run passes when all steps pass"
else
  echo "FAIL: .ci/run failed although its make target passed"; fail=1
fi
exit $fail
