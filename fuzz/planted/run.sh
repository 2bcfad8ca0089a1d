#!/bin/sh
# planted/run.sh [NAME...] — prove that the fuzzers find bugs.
#
# Each fuzz/planted/NAME.patch is a small bug against lib/ (its header says
# which target should find it and which clause it breaks). For each: copy
# lib/ to a scratch directory, apply the patch, build the library and the
# target from the copy (make FUZZ_LIBSRC=...), then
#   1. replay the committed corpus (does the regression corpus catch it?);
#   2. PLANTED_RUNS times (default 5), each with its own seed, fuzz from an
#      empty corpus (only the dictionary) until the first crash, at most
#      PLANTED_SECONDS (default 60), and record the time it took (a TSan
#      target cannot run under libFuzzer: the standalone driver mutates the
#      committed corpus instead); the result is the median time to find;
#   3. replay each crashing input on the unpatched build (many times: races
#      are not deterministic), which must pass: the finding is the planted
#      bug, not something else.
# Results: $FUZZ_BUILD/planted/results.tsv and $FUZZ_REPORTS/fuzz.md.
# lib/ itself is never touched; normal builds never contain a planted bug.
set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top"
: "${FUZZ_BUILD:=build/fuzz}" "${FUZZ_REPORTS:=build/reports}" "${PLANTED_SECONDS:=60}" "${PLANTED_RUNS:=5}"
MAKE=${MAKE:-make}
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1}"

names="$*"
[ -n "$names" ] || names=$(cd "$here" && ls *.patch | sed 's/\.patch$//' | tr '\n' ' ')

out="$FUZZ_BUILD/planted"
mkdir -p "$out"
results="$out/results.tsv"
printf 'name\ttarget\tclauses\tfound\tmedian_seconds\tmedian_cpu_seconds\tseconds\tcpu_seconds\truns\tcorpus_catches\tconfirmed\tartifact\n' >"$results.new"

# CPU seconds of this shell's children between two outputs of `times`.
children_cpu() { # after before
    for f in "$1" "$2"; do
        tail -1 "$f" | awk '{split($1, u, "m"); split($2, s, "m"); printf "%.2f\n", u[1] * 60 + u[2] + s[1] * 60 + s[2]}'
    done | awk 'NR == 1 {a = $1} NR == 2 {printf "%.1f", a - $1}'
}

# The median of a list of figures where "-" is a run that found nothing
# (longer than any); prints $2 when the median is such a run.
median_of() { # "list" shown-when-not-found
    echo "$1" | tr ' ' '\n' | grep . | sed "s/^-$/inf/" | sort -g |
        awk -v none="$2" '{v[NR] = $1} END {m = v[int((NR + 1) / 2)]; print (m == "inf") ? none : m}'
}
# Keep earlier results of bugs not run this time.
[ -f "$results" ] && [ "$(head -1 "$results")" = "$(head -1 "$results.new")" ] &&
    tail -n +2 "$results" | while IFS="$(printf '\t')" read -r n rest; do
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
    # The corpus replay runs every ops input on every watcher, as
    # `make fuzz-replay` does; the fuzzing runs below do not.
    if [ "$flavour" = tsan ]; then
        "$bin" "fuzz/corpus/$base" >"$dir/replay.log" 2>&1 || catches=yes
    else
        # The crash it finds is written into $dir, not into the checkout.
        EVPOL_FUZZ_ALL_KINDS=1 "$bin" -runs=0 -artifact_prefix="$dir/replay-" "fuzz/corpus/$base" \
            >"$dir/replay.log" 2>&1 || catches=yes
    fi

    # PLANTED_RUNS runs, each from an empty corpus with its own seed
    # (libFuzzer -seed, the standalone driver's EVPOL_FUZZ_SEED).
    times="" cpus="" nfound=0 confirmed=yes artifact="" runs_list=""
    for seed in $(seq 1 "$PLANTED_RUNS"); do
        run="$dir/run-$seed"
        mkdir -p "$run/corpus"
        t0=$(date +%s.%N)
        times >"$run/times0" # the CPU time of this shell's children so far
        if [ "$flavour" = tsan ]; then
            # No libFuzzer under TSan (see fuzz/fuzz.mk): the standalone
            # driver mutates the committed corpus until TSan reports.
            EVPOL_FUZZ_SECONDS="$PLANTED_SECONDS" EVPOL_FUZZ_MUTATE=1 EVPOL_FUZZ_SEED="$seed" \
                EVPOL_FUZZ_ARTIFACT="$run/crash-tsan" "$bin" "fuzz/corpus/$base" >"$run/fuzz.log" 2>&1
            status=$?
            [ -f "$run/crash-tsan" ] && echo "Test unit written to $run/crash-tsan" >>"$run/fuzz.log"
            sed -n 's/.*: \([0-9]*\) input(s) ran.*/#\1/p' "$run/fuzz.log" >>"$run/fuzz.log"
        else
            "$bin" -seed="$seed" -max_total_time="$PLANTED_SECONDS" -timeout=30 -rss_limit_mb=4096 \
                -print_final_stats=1 -detect_leaks=0 $dict -artifact_prefix="$run/" "$run/corpus" >"$run/fuzz.log" 2>&1
            status=$?
        fi
        t1=$(date +%s.%N)
        times >"$run/times1"
        secs=$(echo "$t0 $t1" | awk '{printf "%.1f", $2 - $1}')
        cpu=$(children_cpu "$run/times1" "$run/times0")
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$run/fuzz.log" | tail -1)
        [ -n "$runs" ] || runs=$(grep -E '^#[0-9]+' "$run/fuzz.log" | tail -1 | sed 's/^#\([0-9]*\).*/\1/')
        [ -n "$runs" ] || runs=1 # the crash came with the very first input
        found_one=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$run/fuzz.log" | tail -1)
        if [ $status -ne 0 ] && [ -n "$found_one" ]; then
            nfound=$((nfound + 1))
            times="$times $secs"
            cpus="$cpus $cpu"
            runs_list="$runs_list $runs"
            [ -n "$artifact" ] || artifact=$found_one
            # Races are not deterministic: the clean build runs it many times.
            clean="$FUZZ_BUILD/$flavour/$base"
            if [ "$flavour" = tsan ]; then
                set -- env EVPOL_FUZZ_SECONDS=5 "$clean" "$found_one"
            else
                set -- "$clean" -runs=200 -artifact_prefix="$run/confirm-" "$found_one"
            fi
            if ! "$@" >"$run/confirm.log" 2>&1; then
                confirmed=no
                echo "planted: $name: seed $seed: the input also fails WITHOUT the patch: see $run/confirm.log" >&2
                rc=1
            fi
            echo "planted: $name: seed $seed: found in ${secs}s, ${cpu}s of CPU ($runs runs)"
        else
            times="$times -"
            cpus="$cpus -"
            runs_list="$runs_list -"
            echo "planted: $name: seed $seed: not found in ${PLANTED_SECONDS}s" >&2
        fi
    done
    # The median over the runs, a run that found nothing counting as longer
    # than any (the median is then "> cap" when half the runs or more missed).
    median=$(median_of "$times" ">$PLANTED_SECONDS")
    median_cpu=$(median_of "$cpus" "-")
    found="$nfound/$PLANTED_RUNS"
    [ "$nfound" -gt 0 ] || confirmed=-
    case "$median" in
    ">"*) echo "planted: $name: median time to find $median s (found in $found runs; corpus replay catches it: $catches)" >&2
          rc=1 ;;
    *) echo "planted: $name: median time to find ${median}s, ${median_cpu}s of CPU (found in $found runs; corpus replay catches it: $catches)" ;;
    esac
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$target" "$clauses" "$found" "$median" \
        "$median_cpu" "$(echo $times | tr ' ' ',')" "$(echo $cpus | tr ' ' ',')" "$(echo $runs_list | tr ' ' ',')" \
        "$catches" "$confirmed" "${artifact:-}" >>"$results.new"
done
mv "$results.new" "$results"
"$top/fuzz/report.sh" "$FUZZ_BUILD" "$FUZZ_REPORTS" || true
exit $rc
