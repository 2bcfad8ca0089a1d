#!/bin/sh
# selftest.sh — checks that the scenario runner fails what it must fail, with
# a message that shows the step, the expected and the actual outcome (the
# scenarios under scenarios/selftest/ are deliberately wrong and are not part
# of the suite). Run by `make scenarios`; RUNNER is the runner command line
# (default: build/default/scenarios/runner).
set -u
here=$(cd "$(dirname "$0")" && pwd)
RUNNER=${RUNNER:-build/default/scenarios/runner}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
failures=0

# run FILE: run the runner on one selftest scenario; it must exit non-zero.
run() {
    # shellcheck disable=SC2086
    $RUNNER "$here/selftest/$1" >"$out" 2>&1
    rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "selftest: $1: the runner passed a wrong scenario" >&2
        failures=$((failures + 1))
    fi
}

# expect FILE PATTERN: the output of the last run matches PATTERN (grep -E).
expect() {
    if ! grep -Eq -- "$2" "$out"; then
        echo "selftest: $1: output lacks /$2/; it was:" >&2
        sed 's/^/    /' "$out" >&2
        failures=$((failures + 1))
    fi
}

run wrong-returncode.scn
expect wrong-returncode.scn '^FAIL  selftest-wrong-returncode@threaded'
expect wrong-returncode.scn 'step [0-9]+ \(line 14\): expect C1 exit 4 on main loop L0'
expect wrong-returncode.scn 'expected: C1 \(pid [0-9]+\): one callback, returncode 4, on main, in loop L0'
expect wrong-returncode.scn 'actual:   C1 \(pid [0-9]+\): 1 callback\(s\), returncode 3, on main, in loop L0'
expect wrong-returncode.scn '^0 passed, 1 failed$'

run wrong-error-code.scn
expect wrong-error-code.scn 'step [0-9]+ \(line 11\): spawn C1 exit 0 => ERUNTIME'
expect wrong-error-code.scn 'expected: ERUNTIME'
expect wrong-error-code.scn 'actual:   OK'

run hang.scn
expect hang.scn 'hung: killed after [0-9]+ s at step 2 \(line 8\): sleep 60000'

run zombie-leak.scn
expect zombie-leak.scn 'never reaped \(zombie or leaked\)'
expect zombie-leak.scn 'C1 \(pid [0-9]+\): exited, not reaped \(zombie\)'

# The vocabulary round-trips: every step of every scenario formats to a line
# that parses back to the same step, and scn_write output reads back.
# shellcheck disable=SC2086
if ! $RUNNER --roundtrip "$here" "$here/selftest" "$here/soak" "$here/regressions" >"$out" 2>&1; then
    echo "selftest: roundtrip:" >&2
    sed 's/^/    /' "$out" >&2
    failures=$((failures + 1))
fi

if [ "$failures" -ne 0 ]; then
    echo "scenario runner selftest: $failures check(s) failed" >&2
    exit 1
fi
echo "scenario runner selftest: ok (wrong expectations, hangs and leaks are caught; steps round-trip)"
