#!/bin/sh
# replay.sh TARGET... — run every committed corpus file (fuzz/corpus/TARGET)
# and the target's other seeds (seeds.sh: the scenario files for `scenario`)
# through the plain build of each target (FUZZ_BIN, from `make fuzz-replay`).
# A finding aborts the target with its trace; the script then names the file
# that did it and fails. Every ops input runs on every watcher here
# (EVPOL_FUZZ_ALL_KINDS), not only on the one its first byte picks.
set -u
: "${FUZZ_BIN:?}"
export EVPOL_FUZZ_ALL_KINDS=1
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
rc=0
for t in "$@"; do
    dir="$here/corpus/$t"
    [ -d "$dir" ] || continue
    seeds=$("$here/seeds.sh" "$t" | sed "s|^|$top/|")
    n=$(( $(find "$dir" -type f | wc -l) + $(echo "$seeds" | grep -c .) ))
    start=$(date +%s)
    # One process for everything: fast. If it fails, find the file.
    # shellcheck disable=SC2086 # seeds: paths without blanks, one a word
    if ! "$FUZZ_BIN/$t" "$dir" $seeds >"$FUZZ_BIN/replay-$t.log" 2>&1; then
        rc=1
        for f in $(find "$dir" -type f | sort) $seeds; do
            if ! "$FUZZ_BIN/$t" "$f" >"$FUZZ_BIN/replay-$t-one.log" 2>&1; then
                cat "$FUZZ_BIN/replay-$t-one.log" >&2
                echo "fuzz-replay: $t: FAILED on $f" >&2
                echo "fuzz-replay: replay it alone: $FUZZ_BIN/$t $f" >&2
                break
            fi
        done
        continue
    fi
    echo "fuzz-replay: $t: $n input(s) replayed in $(( $(date +%s) - start ))s"
done
exit $rc
