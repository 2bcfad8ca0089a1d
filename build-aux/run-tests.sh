#!/usr/bin/env bash
# run-tests.sh BUILD_DIR CMOCKA_PROGRAM... [-- PLAIN_PROGRAM...]
#
# Runs each cmocka program (and, after --, each plain program: pass = exit 0)
# with a time limit, keeps its output in BUILD_DIR/test-logs/, shows the
# output of failures, and ends with the closing line "N passed, N failed".
set -u
build=$1; shift
limit=${EVPOL_TEST_TIMEOUT:-300}
logs="$build/test-logs"
mkdir -p "$logs"

passed=0 failed=0 plain=0
failed_names=()
for prog in "$@"; do
    if [ "$prog" = "--" ]; then plain=1; continue; fi
    name=$(basename "$prog")
    log="$logs/$name.log"
    start=$(date +%s)
    CMOCKA_MESSAGE_OUTPUT=stdout timeout --kill-after=10 "$limit" "$prog" >"$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    if [ $plain = 1 ]; then
        if [ $rc = 0 ]; then p=1 f=0; else p=0 f=1; fi
    else
        p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
        f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
        # A crash or timeout counts as a failure even when cmocka said nothing.
        if [ $rc != 0 ] && [ "$f" = 0 ]; then f=1; fi
    fi
    passed=$((passed + p)); failed=$((failed + f))
    if [ "$f" != 0 ] || [ $rc != 0 ]; then
        [ $rc = 124 ] && echo "TIMEOUT after ${limit}s: $name"
        echo "---- $name failed (exit $rc), output:"
        tail -n 60 "$log"
        echo "----"
        failed_names+=("$name")
    fi
    printf '%-40s %4d passed %4d failed %4ds\n' "$name" "$p" "$f" "$secs"
done

[ ${#failed_names[@]} -gt 0 ] && echo "failing programs: ${failed_names[*]}"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
