#!/usr/bin/env bash
# run-tests.sh [OPTIONS] CMOCKA_PROGRAM... [-- PLAIN_PROGRAM...]
#
# Runs each cmocka program (and, after --, each plain program: pass = exit 0)
# one after the other, each under a time limit, then hands the results to
# conformance/tools/clause-matrix, which prints the failures, the per-family clause
# table and the closing line "N passed, N failed", and writes the matrix.
#
# Options:
#   --reports DIR    where results go (default: reports):
#                      DIR/junit/PROG--GROUP.xml  cmocka's JUnit XML
#                      DIR/logs/PROG.log          stdout+stderr of PROG
#                      DIR/runs.tsv               how each program ended
#                      DIR/conformance.xml, clauses.tsv, clauses.html
#   --sources DIR    the test_*.c sources (default: conformance)
#   --clauses FILE   the spec (conformance/SPEC.md)   --na FILE   the n/a rows
#   --allow-gaps     a clause without test does not fail the run
#
# Environment: EVPOL_TEST_TIMEOUT (seconds per program, default 300);
# LD_LIBRARY_PATH is passed through unchanged to every program, so the
# caller chooses which libevpol the programs load.
#
# A program that is missing (it did not build), crashes or times out counts
# as the failure of every test its source registers. A hung program is
# killed with its whole process group (timeout(1) runs it in its own group),
# so stray grandchildren die with it.
set -u
here=$(cd "$(dirname "$0")" && pwd)
matrix="$here/clause-matrix"

reports=reports
matrix_args=()
while [ $# -gt 0 ]; do
    case $1 in
        --reports) reports=$2; shift 2 ;;
        --sources|--clauses|--na) matrix_args+=("$1" "$2"); shift 2 ;;
        --allow-gaps) matrix_args+=("$1"); shift ;;
        --) break ;;
        -*) echo "run-tests.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
sources=conformance
for ((i = 0; i < ${#matrix_args[@]}; i++)); do
    [ "${matrix_args[i]}" = --sources ] && sources=${matrix_args[i + 1]}
done

limit=${EVPOL_TEST_TIMEOUT:-300}
mkdir -p "$reports"
reports=$(cd "$reports" && pwd)   # tests may chdir before cmocka writes XML
rm -rf "$reports/junit" "$reports/logs"
rm -f "$reports/runs.tsv" "$reports/clauses.tsv" "$reports/clauses.html" "$reports/conformance.xml"
mkdir -p "$reports/junit" "$reports/logs"
manifest="$reports/runs.tsv"
printf 'program\tkind\tpath\trc\toutcome\tseconds\tlog\n' >"$manifest"

now() {
    if [ -n "${EPOCHREALTIME:-}" ]; then echo "${EPOCHREALTIME/,/.}"; else date +%s.%N; fi
}

# Ctrl-C reaches make and this script, not the test (timeout(1) put it in a
# process group of its own): end the test with
# SIGTERM (which background jobs of a shell do not ignore), then stop.
interrupted=0 tpid=
trap 'interrupted=1; [ -n "$tpid" ] && kill -TERM "$tpid" 2>/dev/null' INT TERM

ncmocka=0 nplain=0 seen_sep=0
for prog in "$@"; do
    if [ "$prog" = -- ]; then seen_sep=1; elif [ $seen_sep = 1 ]; then nplain=$((nplain + 1)); else ncmocka=$((ncmocka + 1)); fi
done
if [ $nplain = 0 ]; then plain_note=; else plain_note=" and $nplain plain programs"; fi
echo "Running $ncmocka conformance programs$plain_note (time limit ${limit}s each):"

kind=cmocka
for prog in "$@"; do
    [ $interrupted = 1 ] && break
    if [ "$prog" = -- ]; then kind=plain; continue; fi
    name=$(basename "$prog")
    log="$reports/logs/$name.log"
    rc='' outcome='' secs=0
    if [ ! -f "$prog" ] || [ ! -x "$prog" ]; then
        outcome=unbuilt
        : >"$log"
    else
        start=$(now)
        if [ $kind = cmocka ]; then
            CMOCKA_MESSAGE_OUTPUT=xml CMOCKA_XML_FILE="$reports/junit/$name--%g.xml" \
                timeout --kill-after=10 "$limit" "$prog" </dev/null >"$log" 2>&1 &
        else
            timeout --kill-after=10 "$limit" "$prog" </dev/null >"$log" 2>&1 &
        fi
        tpid=$!
        wait $tpid 2>/dev/null; rc=$?
        # An interrupted wait returns early: wait again for the real status.
        while kill -0 "$tpid" 2>/dev/null; do wait $tpid 2>/dev/null; rc=$?; done
        tpid=
        secs=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
        if [ $rc = 0 ]; then
            outcome=ok
        elif [ $rc = 124 ] || { [ $rc = 137 ] && awk -v s="$secs" -v l="$limit" 'BEGIN { exit !(s >= l) }'; }; then
            outcome=timeout
        elif [ $rc -gt 128 ]; then
            outcome=signal
        else
            outcome="exit"
        fi
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$kind" "$prog" "$rc" "$outcome" "$secs" "$log" >>"$manifest"
    "$matrix" --results "$reports" --sources "$sources" --program "$name" ||
        printf '  ????  %-32s %s (exit %s)\n' "$name" "$outcome" "$rc"
done

if [ $interrupted = 1 ]; then
    echo "interrupted" >&2
    exit 130
fi
"$matrix" --results "$reports" --out "$reports" "${matrix_args[@]}"
