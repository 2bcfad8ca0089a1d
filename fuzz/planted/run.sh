#!/bin/sh
# planted/run.sh [NAME...] — prove that the fuzzers find bugs.
#
# Each fuzz/planted/NAME.patch is a small bug against lib/ (its header says
# which target should find it and which clause it breaks). For each: copy
# lib/ to a scratch directory, apply the patch, build the library and the
# target from the copy (make FUZZ_LIBSRC=...), then
#   1. replay the committed corpus (does the regression corpus catch it?);
#   2. fuzz from an empty corpus (only the dictionary) until the first crash,
#      at most PLANTED_SECONDS (default 300), and record the time it took
#      (a TSan target cannot run under libFuzzer: the standalone driver
#      mutates the committed corpus instead);
#   3. replay the crashing input on the unpatched build (many times: races
#      are not deterministic), which must pass: the finding is the planted
#      bug, not something else.
# Results: $FUZZ_BUILD/planted/results.tsv and $FUZZ_REPORTS/fuzz.md.
# lib/ itself is never touched; normal builds never contain a planted bug.
set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top"
: "${FUZZ_BUILD:=build/fuzz}" "${FUZZ_REPORTS:=reports}" "${PLANTED_SECONDS:=300}"
MAKE=${MAKE:-make}
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1}"

names="$*"
[ -n "$names" ] || names=$(cd "$here" && ls *.patch | sed 's/\.patch$//' | tr '\n' ' ')

out="$FUZZ_BUILD/planted"
mkdir -p "$out"
results="$out/results.tsv"
printf 'name\ttarget\tclauses\tfound\tseconds\truns\tcorpus_catches\tconfirmed\tartifact\n' >"$results.new"
# Keep earlier results of bugs not run this time.
[ -f "$results" ] && tail -n +2 "$results" | while IFS="$(printf '\t')" read -r n rest; do
    case " $names " in *" $n "*) ;; *) printf '%s\t%s\n' "$n" "$rest" ;; esac
done >>"$results.new"

# The unpatched builds, to confirm findings.
$MAKE -s --no-print-directory FUZZ_BUILD="$FUZZ_BUILD" fuzz-build "$FUZZ_BUILD/tsan/races" \
    >"$out/clean-build.log" 2>&1 || { cat "$out/clean-build.log" >&2; exit 1; }

rc=0
for name in $names; do
    patch="$here/$name.patch"
    [ -f "$patch" ] || { echo "planted: no $patch" >&2; rc=1; continue; }
    target=$(sed -n 's/^# target: //p' "$patch")
    clauses=$(sed -n 's/^# clauses: //p' "$patch")
    base=${target%-tsan}
    flavour=libfuzzer
    [ "$base" != "$target" ] && flavour=tsan
    dir="$out/$name"
    rm -rf "$dir"
    mkdir -p "$dir/corpus"
    cp -r lib "$dir/lib"
    if ! patch -s -p1 -d "$dir/lib" <"$patch"; then
        echo "planted: $name: the patch no longer applies to lib/" >&2
        rc=1
        continue
    fi
    echo "planted: $name: building ($flavour $base)"
    if ! $MAKE -s --no-print-directory FUZZ_LIBSRC="$dir/lib" FUZZ_BUILD="$dir/build" \
            "$dir/build/$flavour/$base" >"$dir/build.log" 2>&1; then
        echo "planted: $name: build failed, see $dir/build.log" >&2
        rc=1
        continue
    fi
    bin="$dir/build/$flavour/$base"
    dict=""
    [ -f "fuzz/$base.dict" ] && dict="-dict=fuzz/$base.dict"

    catches=no
    if [ "$flavour" = tsan ]; then
        "$bin" "fuzz/corpus/$base" >"$dir/replay.log" 2>&1 || catches=yes
    else
        # The crash it finds is written into $dir, not into the checkout.
        "$bin" -runs=0 -artifact_prefix="$dir/replay-" "fuzz/corpus/$base" >"$dir/replay.log" 2>&1 ||
            catches=yes
    fi

    t0=$(date +%s.%N)
    if [ "$flavour" = tsan ]; then
        # No libFuzzer under TSan (see fuzz/fuzz.mk): the standalone driver
        # mutates the committed corpus until TSan reports.
        echo "planted: $name: TSan stress on the mutated corpus (at most ${PLANTED_SECONDS}s)"
        EVPOL_FUZZ_SECONDS="$PLANTED_SECONDS" EVPOL_FUZZ_MUTATE=1 EVPOL_FUZZ_ARTIFACT="$dir/crash-tsan" \
            "$bin" "fuzz/corpus/$base" >"$dir/fuzz.log" 2>&1
        status=$?
        [ -f "$dir/crash-tsan" ] && echo "Test unit written to $dir/crash-tsan" >>"$dir/fuzz.log"
        sed -n 's/.*: \([0-9]*\) input(s) ran.*/#\1/p' "$dir/fuzz.log" >>"$dir/fuzz.log"
    else
        echo "planted: $name: fuzzing $base from an empty corpus (at most ${PLANTED_SECONDS}s)"
        "$bin" -max_total_time="$PLANTED_SECONDS" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
            $dict -artifact_prefix="$dir/" "$dir/corpus" >"$dir/fuzz.log" 2>&1
        status=$?
    fi
    t1=$(date +%s.%N)
    secs=$(echo "$t0 $t1" | awk '{printf "%.1f", $2 - $1}')
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/fuzz.log" | tail -1)
    [ -n "$runs" ] || runs=$(grep -E '^#[0-9]+' "$dir/fuzz.log" | tail -1 | sed 's/^#\([0-9]*\).*/\1/')
    [ -n "$runs" ] || runs=1 # the crash came with the very first input
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$dir/fuzz.log" | tail -1)
    found=no
    confirmed=-
    if [ $status -ne 0 ] && [ -n "$artifact" ]; then
        found=yes
        # Races are not deterministic: the clean build runs it many times.
        clean="$FUZZ_BUILD/$flavour/$base"
        if [ "$flavour" = tsan ]; then
            set -- env EVPOL_FUZZ_SECONDS=5 "$clean" "$artifact"
        else
            set -- "$clean" -runs=200 -artifact_prefix="$dir/confirm-" "$artifact"
        fi
        if "$@" >"$dir/confirm.log" 2>&1; then
            confirmed=yes
        else
            confirmed=no
            echo "planted: $name: the input also fails WITHOUT the patch: see $dir/confirm.log" >&2
            rc=1
        fi
        echo "planted: $name: found in ${secs}s (${runs:-?} runs); corpus replay catches it: $catches"
    else
        echo "planted: $name: NOT found in ${PLANTED_SECONDS}s (corpus replay catches it: $catches)" >&2
        rc=1
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$target" "$clauses" "$found" "$secs" \
        "${runs:-?}" "$catches" "$confirmed" "${artifact:-}" >>"$results.new"
done
mv "$results.new" "$results"
"$top/fuzz/report.sh" "$FUZZ_BUILD" "$FUZZ_REPORTS" || true
exit $rc
