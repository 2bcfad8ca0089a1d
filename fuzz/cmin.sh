#!/bin/sh
# cmin.sh TARGET... — `make fuzz-cmin`: minimize the committed corpora
# fuzz/corpus/TARGET, keeping what they cover.
#
# Inputs with a name (seed-*, regress-*, anything not a libFuzzer content
# hash) stay: they were written or kept on purpose. The hash-named ones are
# what campaigns merged in; libFuzzer's -merge=1 keeps, of those, only the
# ones that add coverage (features: edges with hit counts) to the named
# inputs and the seeds kept elsewhere (seeds.sh). The result replaces the
# corpus only when replaying it covers at least the edges the old corpus
# covered (libFuzzer's "cov" after -runs=0 over corpus and seeds); both
# figures are printed either way. CMIN_APPLY=0 only measures.
# Environment: FUZZ_BIN (the libFuzzer builds), FUZZ_BUILD.
set -u
: "${FUZZ_BIN:?}" "${FUZZ_BUILD:?}" "${CMIN_APPLY:=1}"
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
cd "$top"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
rc=0

# "cov ft" of one replay (-runs=0) of the given corpus directories.
coverage() { # bin dir...
    b=$1
    shift
    "$b" -runs=0 "$@" 2>&1 | sed -n 's/^#[0-9]*[[:space:]]*INITED cov: \([0-9]*\) ft: \([0-9]*\).*/\1 \2/p'
}

for t in "$@"; do
    bin="$FUZZ_BIN/$t"
    corpus="fuzz/corpus/$t"
    work="$FUZZ_BUILD/cmin/$t"
    rm -rf "$work"
    mkdir -p "$work/named" "$work/hashed" "$work/seeds" "$work/merged" "$work/old"
    "$here/seeds.sh" "$t" | while read -r f; do cp "$f" "$work/seeds/"; done
    for f in "$corpus"/*; do
        [ -f "$f" ] || continue
        cp "$f" "$work/old/"
        if basename "$f" | grep -Eq '^[0-9a-f]{40}$'; then
            cp "$f" "$work/hashed/"
        else
            cp "$f" "$work/named/"
        fi
    done
    # What the kept inputs cover, then the hashed inputs that add to it.
    "$bin" -merge=1 "$work/merged" "$work/named" "$work/seeds" >"$work/merge1.log" 2>&1 &&
        ls "$work/merged" | sort >"$work/before" &&
        "$bin" -merge=1 "$work/merged" "$work/hashed" >"$work/merge2.log" 2>&1 || {
        echo "fuzz-cmin: $t: libFuzzer -merge failed, see $work/merge*.log" >&2
        rc=1
        continue
    }
    rm -rf "$work/new"
    mkdir -p "$work/new"
    cp "$work/named"/* "$work/new/" 2>/dev/null
    # -merge names what it adds by content hash, as the hashed inputs are.
    ls "$work/merged" | sort | comm -13 "$work/before" - | while read -r h; do
        cp "$work/merged/$h" "$work/new/$h"
    done
    old_n=$(ls "$work/old" | wc -l) new_n=$(ls "$work/new" | wc -l)
    old_b=$(cat "$work/old"/* | wc -c) new_b=$(cat "$work/new"/* 2>/dev/null | wc -c)
    set -- $(coverage "$bin" "$work/old" "$work/seeds") $(coverage "$bin" "$work/new" "$work/seeds")
    old_cov=${1:-0} old_ft=${2:-0} new_cov=${3:-0} new_ft=${4:-0}
    shift $#
    echo "fuzz-cmin: $t: $old_n inputs ($old_b bytes), cov $old_cov ft $old_ft ->" \
        "$new_n inputs ($new_b bytes), cov $new_cov ft $new_ft"
    if [ "$new_cov" -lt "$old_cov" ]; then
        echo "fuzz-cmin: $t: the minimized corpus covers fewer edges: kept the old one (see $work)" >&2
    elif [ "$CMIN_APPLY" = 1 ] && [ "$new_n" -lt "$old_n" ]; then
        rm -f "$corpus"/*
        cp "$work/new"/* "$corpus/"
        echo "fuzz-cmin: $t: $corpus replaced (git shows what went)"
    fi
done
exit $rc
