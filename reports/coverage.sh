#!/usr/bin/env bash
# coverage.sh — what `make coverage` runs (see reports/README.md).
#
# The Makefile passes, in the environment:
#   COV_MAKE      the make command for the instrumented build tree, e.g.
#                 "make BUILD=build/coverage CC=gcc OPT='-O0 -g' CFLAGS=--coverage ..."
#   COV_BUILD     that build tree            COV_SHIM   reports/cmocka-select.c, built
#   COV_REPORTS   where the reports go (build/reports/)
#   COV_MIN_LINES, COV_MIN_BRANCHES          the floors, in percent
#   COV_JOBS      tests run at once in the per-test pass
#   COV_MAKEFILES the makefiles, to learn whether `scenarios` and
#                 `fuzz-replay` exist yet
#
# Steps: build the instrumented tree; run the conformance suite, the scenarios
# and the fuzz-corpus replay against it (each when its target exists), with
# the shim preloaded so that forked children that _exit count too; capture
# lib/ with lcov (lines, functions, branches); write COV_REPORTS/coverage/
# (genhtml) and COV_REPORTS/coverage.txt; run each conformance test alone to
# learn which clause families reach which lines (coverage-clauses); check
# the floors. Every report is written before the exit status is decided:
# a failing run or a rate under its floor fails the target.
set -u
here=$(cd "$(dirname "$0")" && pwd)
: "${COV_MAKE:?}" "${COV_BUILD:?}" "${COV_SHIM:?}" "${COV_REPORTS:?}"
: "${COV_MIN_LINES:?}" "${COV_MIN_BRANCHES:?}" "${COV_JOBS:=2}" "${COV_MAKEFILES:=Makefile}"

LCOV=(lcov --quiet --rc lcov_branch_coverage=1)
# Debian's lcov 1.16 loads part of geninfo twice and says so on every run.
quiet_lcov() { "${LCOV[@]}" "$@" 2> >(grep -v '^Subroutine .* redefined at ' >&2); }

# COV_MAKE holds quoted words (OPT="-O0 -g"): let the shell parse it.
cov_make() { eval "$COV_MAKE" '"$@"'; }

has_target() {
    grep -Eq "^([^#=:]*[[:space:]])?$1([[:space:]][^=:]*)?:([^=]|\$)" $COV_MAKEFILES
}

start=$SECONDS
failed=()
runs=()
step() { printf '\n== coverage: %s\n' "$*"; }

step "instrumented build in $COV_BUILD"
# Counters of earlier runs (or of objects since rebuilt) must not mix in.
if [ -d "$COV_BUILD" ]; then
    find "$COV_BUILD" -name '*.gcda' -delete
fi
rm -rf "$COV_BUILD/pertest"
if ! cov_make all; then
    echo "coverage: the instrumented build failed" >&2
    exit 1
fi

run_suite() {   # NAME TARGET
    step "$1 ($COV_MAKE $2)"
    if LD_PRELOAD="$COV_SHIM${LD_PRELOAD:+:$LD_PRELOAD}" cov_make "$2"; then
        runs+=("$1=ok")
    else
        runs+=("$1=failed")
        failed+=("$1")
    fi
}
run_suite conformance conformance
for t in scenarios fuzz-replay; do
    if has_target "$t"; then
        run_suite "$t" "$t"
    else
        step "$t: no such target yet, skipped"
        runs+=("$t=absent")
    fi
done

step "lcov: lib/ only"
mkdir -p "$COV_REPORTS"
all_info="$COV_BUILD/coverage-all.info"
lib_info="$COV_BUILD/coverage-lib.info"
rm -f "$all_info" "$lib_info" "$COV_REPORTS/coverage.txt"
rm -rf "$COV_REPORTS/coverage"
if ! quiet_lcov --capture --directory "$COV_BUILD" --base-directory "$PWD" \
        --output-file "$all_info" ||
   ! quiet_lcov --extract "$all_info" "$PWD/lib/*" --output-file "$lib_info"; then
    echo "coverage: lcov could not read the counters" >&2
    exit 1
fi
ran=()
for r in "${runs[@]}"; do [ "${r#*=}" = absent ] || ran+=("${r%%=*}"); done
if ! genhtml --quiet --branch-coverage --function-coverage --legend \
        --title "evpol lib/: ${ran[*]}" \
        --prefix "$PWD" --output-directory "$COV_REPORTS/coverage" "$lib_info" \
        2> >(grep -v '^Subroutine .* redefined at ' >&2) >/dev/null; then
    echo "coverage: genhtml failed" >&2
    exit 1
fi
echo "coverage: $COV_REPORTS/coverage/index.html"

step "which clauses reach which code (each conformance test alone)"
progs=()
for src in conformance/test_*.c; do
    progs+=("$COV_BUILD/conformance/$(basename "$src" .c)")
done
if ! python3 "$here/coverage-clauses" --info "$lib_info" --shim "$COV_SHIM" \
        --build "$COV_BUILD" --out "$COV_REPORTS" --jobs "$COV_JOBS" "${progs[@]}"; then
    failed+=("per-test coverage")
fi

step "summary"
run_args=()
for r in "${runs[@]}"; do run_args+=(--run "$r"); done
floors_ok=1
python3 "$here/coverage-summary" "$lib_info" "$COV_REPORTS/coverage.txt" \
    --min-lines "$COV_MIN_LINES" --min-branches "$COV_MIN_BRANCHES" "${run_args[@]}" ||
    floors_ok=0
echo "coverage: $COV_REPORTS/coverage.txt, $COV_REPORTS/coverage-clauses.md ($((SECONDS - start)) s)"
for f in "${failed[@]}"; do
    echo "coverage: FAILED: $f (its log is above)" >&2
done
[ ${#failed[@]} = 0 ] && [ $floors_ok = 1 ]
