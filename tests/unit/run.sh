#!/usr/bin/env bash
# Runs the Criterion unit tests, showing failures and every SKIPPED test with
# its reason (Criterion's summary counts skipped tests as neither passed nor
# failed, and does not list them unless verbose).
#
# Under the sanitizers it also fails the run on any AddressSanitizer or
# UBSan report, and on any LeakSanitizer report with a frame in forge's own
# code (src/ or tests/): Criterion runs each test in a child process whose
# leak report does not change the test's result, and its runner itself keeps
# a few bytes per skipped test, which is not ours to fix.
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

# One sanitizer report runs from its "==PID==ERROR:" line to "SUMMARY:".
ours=$(awk '
    /==[0-9]+==ERROR: (AddressSanitizer|LeakSanitizer)/ { inrep = 1; rep = ""; mine = ($0 ~ /AddressSanitizer/) }
    inrep { rep = rep "\n" $0; if ($0 ~ / (src|tests)\//) mine = 1 }
    inrep && /^SUMMARY:/ { inrep = 0; if (mine) { print rep; n++ } }
    /runtime error:/ { print; n++ }
    END { exit n > 0 }' "$log")
if [ $? -ne 0 ]; then
    echo "unit: FAIL: sanitizer reports in forge code:$ours"
    rc=1
fi
exit $rc
