#!/bin/sh
# replay.sh TARGET... — run every committed corpus file (fuzz/corpus/TARGET)
# through the plain build of each target (FUZZ_BIN, from `make fuzz-replay`).
# A finding aborts the target with its trace; the script then names the file
# that did it and fails.
set -u
: "${FUZZ_BIN:?}"
here=$(cd "$(dirname "$0")" && pwd)
rc=0
for t in "$@"; do
    dir="$here/corpus/$t"
    [ -d "$dir" ] || continue
    n=$(find "$dir" -type f | wc -l)
    start=$(date +%s)
    # One process for the whole directory: fast. If it fails, find the file.
    if ! "$FUZZ_BIN/$t" "$dir" >"$FUZZ_BIN/replay-$t.log" 2>&1; then
        rc=1
        for f in $(find "$dir" -type f | sort); do
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
