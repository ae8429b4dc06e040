#!/usr/bin/env bash
# Runs the Criterion unit tests, showing failures and every SKIPPED test with
# its reason (Criterion's summary counts skipped tests as neither passed nor
# failed, and does not list them unless verbose).
# usage: tests/unit/run.sh BUILD/unit-tests [criterion options]
set -uo pipefail
bin=$1
shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$bin" --jobs 2 --verbose "$@" >"$log" 2>&1
rc=$?
grep -vE '^\[(RUN |PASS)\] ' "$log"
nskip=$(grep -c '^\[SKIP\]' "$log")
echo "unit: $nskip skipped (listed above with their reasons; skipped never counts as passed)"
exit $rc
