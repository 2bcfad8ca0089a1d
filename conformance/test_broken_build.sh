#!/usr/bin/env bash
# test_broken_build.sh — the conformance harness checks itself.
#
# A copy of the library is built with two planted bugs, and
# `make conformance EVPOL_LIB=<that copy>` must then fail exactly the clauses
# those bugs break, while unrelated clauses still pass:
#   - Threaded keeps the old callback when a handler is replaced -> CW-2@threaded
#   - MultiLoop does not restore the saved SIGCHLD handler on close -> MUL-4
set -euo pipefail
cd "$(dirname "$0")/.."
. lib/dist/planted-copy.sh

plant lib/watcher_threaded.c 's/evpol__child_replace\(c, h, loop, &old_loop\);/evpol__child_replace(c, &c->h, loop, &old_loop);/'
plant lib/watcher_multiloop.c 's/\} else if \(evpol__sys\.sigaction\(SIGCHLD, &m->saved, NULL\) != 0\)/} else if (0)/'

clean_make -C "$tmp" -s all BUILD=build/broken SANITIZE= >/dev/null
lib=$tmp/build/broken/libevpol.so.0.1.0

set +e
# The checks below read the conformance programs' clause matrix only, so
# the scenario step runs one story instead of the suite (it took half of
# this test's time, near the runner's limit on a loaded machine).
clean_make conformance EVPOL_LIB="$lib" BUILD="$tmp/verify" SANITIZE= \
    SCN_ARGS="--only handler-replace-before-exit" >"$tmp/out.log" 2>&1
rc=$?
set -e
tsv=$tmp/verify/reports/clauses.tsv
status() { awk -F'\t' -v c="$1" -v w="$2" '$1 == c && $2 == w { print $3 }' "$tsv"; }

fail=0
expect() {
    local got
    got=$(status "$1" "$2")
    if [ "$got" = "$3" ]; then
        echo "ok: $1 $2 is $3"
    else
        echo "FAILED: $1 $2 is '${got}', expected $3"
        fail=1
    fi
}
[ "$rc" != 0 ] && echo "ok: make conformance failed against the broken build (exit $rc)" ||
    { echo "FAILED: make conformance passed against the broken build"; fail=1; }
grep -q "library under test: $lib" "$tmp/out.log" && echo "ok: the broken build was the one tested" ||
    { echo "FAILED: the run did not test $lib"; fail=1; }
expect CW-2 threaded fail
expect MUL-4 multiloop fail
# Behaviour the bugs cannot reach still passes. (Other MultiLoop clauses
# fail too, rightly: a handler never restored breaks every later install.)
expect CW-2 pidfd pass
expect CW-2 safe pass
expect POL-1 - pass
expect SAF-3 safe pass
expect FST-1 fast pass
if [ $fail != 0 ]; then
    tail -n 40 "$tmp/out.log"
    exit 1
fi
echo "broken-build self-test: planted bugs failed exactly their clauses"
