#!/bin/sh
# run.sh TARGET... [-- LIBFUZZER-ARGS] — what `make fuzz` runs.
#
# Each TARGET (ops, races, scenario) runs FUZZ_SECONDS under libFuzzer;
# races-tsan is races built with TSan, which cannot run under libFuzzer: the
# standalone driver replays and mutates the races corpus for FUZZ_SECONDS. New inputs go to a scratch corpus,
# $FUZZ_BUILD/corpus/TARGET; the committed corpus fuzz/corpus/TARGET is only
# read (see fuzz/README.md to merge findings into it). A crash leaves its
# reproducer in $FUZZ_BUILD/artifacts/TARGET/ and this prints the commands
# that replay it and turn it into a scenario. The figures of each run
# (executions per second, corpus size, coverage) go to
# $FUZZ_BUILD/stats/TARGET.txt and into $FUZZ_REPORTS/fuzz.md.
#
# Environment: FUZZ_BIN (the libFuzzer builds), FUZZ_TSAN_BIN, FUZZ_BUILD,
# FUZZ_SECONDS, FUZZ_REPORTS.
set -u
: "${FUZZ_BIN:?}" "${FUZZ_BUILD:?}" "${FUZZ_SECONDS:=60}" "${FUZZ_REPORTS:=build/reports}"
: "${FUZZ_TSAN_BIN:=}"
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)

targets=""
while [ $# -gt 0 ]; do
    case "$1" in
    --) shift; break ;;
    -*) break ;;
    *) targets="$targets $1"; shift ;;
    esac
done

# Under TSan, report races as crashes; under ASan, leaks too, at the end of
# the run (LSan at exit). libFuzzer's own check after an input
# (-detect_leaks=1, its default: an input that ends with more allocations
# than it began with runs again under a stop-the-world leak scan) is off,
# for throughput (THROUGHPUT.md); a leak is then reported without the
# input that made it.
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

mkdir -p "$FUZZ_BUILD/stats"
rc=0
for t in $targets; do
    base=${t%-tsan}
    bin="$FUZZ_BIN/$base"
    [ "$t" != "$base" ] && bin="${FUZZ_TSAN_BIN:-$FUZZ_BUILD/tsan}/$base"
    corpus="$FUZZ_BUILD/corpus/$t"
    artifacts="$FUZZ_BUILD/artifacts/$t"
    mkdir -p "$corpus" "$artifacts" "$FUZZ_BUILD/corpus/$base"
    dict=""
    [ -f "$here/$base.dict" ] && dict="-dict=$here/$base.dict"
    # The seeds kept outside fuzz/corpus (seeds.sh), staged as one more
    # corpus directory: libFuzzer takes directories only.
    seeds="$FUZZ_BUILD/seeds/$base"
    rm -rf "$seeds"
    mkdir -p "$seeds"
    (cd "$top" && "$here/seeds.sh" "$base" | while read -r f; do cp "$f" "$seeds/"; done)
    log="$FUZZ_BUILD/stats/$t.log"
    echo "fuzz: $t for ${FUZZ_SECONDS}s ($bin)"
    start=$(date +%s)
    times >"$FUZZ_BUILD/stats/$t.times0" # CPU time of this shell's children so far
    if [ "$t" != "$base" ]; then
        # TSan: the standalone driver replays the corpus (committed and
        # scratch) over and over, mutating it, for FUZZ_SECONDS.
        EVPOL_FUZZ_SECONDS="$FUZZ_SECONDS" EVPOL_FUZZ_MUTATE=1 \
            EVPOL_FUZZ_ARTIFACT="$artifacts/crash-tsan-$$" \
            "$bin" "$here/corpus/$base" "$FUZZ_BUILD/corpus/$base" "$seeds" >"$log" 2>&1
        status=$?
        secs=$(( $(date +%s) - start ))
        n=$(sed -n 's/.*: \([0-9]*\) input(s) ran.*/\1/p' "$log" | tail -1)
        [ -f "$artifacts/crash-tsan-$$" ] && echo "Test unit written to $artifacts/crash-tsan-$$" >>"$log"
        echo "#${n:-0} DONE" >>"$log"
        echo "stat::number_of_executed_units: ${n:-?}" >>"$log"
        echo "stat::average_exec_per_sec: $(( ${n:-0} / (secs > 0 ? secs : 1) ))" >>"$log"
    else
        "$bin" -max_total_time="$FUZZ_SECONDS" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 -detect_leaks=0 \
            $dict -artifact_prefix="$artifacts/" "$@" "$corpus" "$here/corpus/$base" "$seeds" >"$log" 2>&1
        status=$?
        secs=$(( $(date +%s) - start ))
    fi
    times >"$FUZZ_BUILD/stats/$t.times1"
    # The fuzzer's own CPU time (user+system): on a shared machine, runs per
    # CPU second say what the target costs; runs per second also say how
    # busy the machine was.
    cpu=$(for f in "$FUZZ_BUILD/stats/$t.times1" "$FUZZ_BUILD/stats/$t.times0"; do
        tail -1 "$f" | awk '{split($1, u, "m"); split($2, s, "m"); printf "%.2f\n", u[1] * 60 + u[2] + s[1] * 60 + s[2]}'
    done | awk 'NR == 1 {a = $1} NR == 2 {printf "%.1f", a - $1}')
    # The last status line: "#N DONE|pulse|NEW cov: C ft: F corp: U/Sb ... exec/s: E"
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    execs=$(grep '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    eps=$(grep '^stat::average_exec_per_sec' "$log" | awk '{print $2}')
    cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    corp=$(echo "$last" | sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p')
    crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if [ "$t" != "$base" ]; then
        # no coverage feedback under TSan: the corpus is replayed, not grown
        cov=n/a ft=n/a corp="replayed $(find "$here/corpus/$base" "$FUZZ_BUILD/corpus/$base" -type f 2>/dev/null | wc -l)"
    fi
    {
        echo "target=$t"
        echo "seconds=$secs"
        echo "execs=${execs:-?}"
        echo "execs_per_sec=${eps:-?}"
        echo "cpu_seconds=$cpu"
        echo "execs_per_cpu_sec=$(echo "${execs:-0} $cpu" | awk '$2 > 0 {printf "%d", $1 / $2}')"
        echo "loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
        echo "cov=${cov:-?}"
        echo "ft=${ft:-?}"
        echo "corpus=${corp:-?}"
        echo "committed_corpus=$(find "$here/corpus/$base" -type f 2>/dev/null | wc -l)"
        echo "crash=${crash:-}"
        echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
    } >"$FUZZ_BUILD/stats/$t.txt"
    if [ $status -ne 0 ]; then
        rc=1
        # The trace the target printed, then libFuzzer's summary.
        sed -n '/^==== evpol fuzz/,/^watcher under test\|^callbacks:\|^-------------$/p' "$log" >&2
        grep -E '^(SUMMARY|==[0-9]+==ERROR|WARNING: ThreadSanitizer)' "$log" | head -5 >&2
        echo "fuzz: $t FAILED after ${secs}s; full log: $log" >&2
        if [ -n "$crash" ]; then
            echo "fuzz: reproducer: $crash" >&2
            echo "fuzz: replay it:  $bin $crash" >&2
            [ "$base" = ops ] &&
                echo "fuzz: as a scenario:  fuzz/to-scenario $crash > scenarios/regressions/NAME.scn" >&2
        fi
    else
        echo "fuzz: $t: ${execs:-?} runs, ${eps:-?}/s, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}"
    fi
done
"$here/report.sh" "$FUZZ_BUILD" "$FUZZ_REPORTS" || true
exit $rc
