#!/usr/bin/env bash
# test-abi-check.sh — `make abi-check` tells compatible from incompatible.
#
# A copy of the tree builds the library three times (-O0, so it is quick),
# and abi-check must:
#   - pass, listing it, when a public function is added;
#   - fail when a public function is no longer exported;
#   - fail when a public struct (evpol_spawn_options) changes its layout.
set -euo pipefail
cd "$(dirname "$0")/.."
build-aux/ensure-deps.sh abigail-tools
tmp=$(mktemp -d "${TMPDIR:-/tmp}/evpol-abi-test.XXXXXX")
[ -n "${KEEP_TMP:-}" ] || trap 'rm -rf "$tmp"' EXIT
clean_make() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory "$@"; }
tar --exclude=./.git --exclude=./build --exclude=./reports --exclude='*/node_modules' \
    -cf - lib build-aux fuzz/fuzz.mk Makefile evpol.pc.in | tar -C "$tmp" -xf -

# expect PASS|FAIL WHAT PATTERN: run abi-check; its verdict and output must match.
expect() {
    local want=$1 what=$2 pattern=$3 got
    if clean_make -C "$tmp" abi-check BUILD=build/abi OPT="-O0 -g" SANITIZE= EVPOL_LIB= >"$tmp/out.log" 2>&1; then
        got=PASS
    else
        got=FAIL
    fi
    if [ "$got" != "$want" ] || ! grep -q -- "$pattern" "$tmp/out.log"; then
        cat "$tmp/out.log" >&2
        echo "abi-check test: $what: expected $want and '$pattern', got $got" >&2
        exit 1
    fi
    echo "abi-check test: $what: $got as expected"
}
# plant FILE PERL-SUBSTITUTION, insisting that it changed the file.
plant() {
    cp "$tmp/$1" "$tmp/$1.orig"
    perl -0pi -e "$2" "$tmp/$1"
    if cmp -s "$tmp/$1" "$tmp/$1.orig"; then
        echo "abi-check test: planting in $1 changed nothing: update $0" >&2
        exit 1
    fi
}
unplant() { mv "$tmp/$1.orig" "$tmp/$1"; }

cat >"$tmp/lib/abi_test_added.c" <<'C'
#include <evpol.h>
EVPOL_API int evpol_abi_test_added(void);
int evpol_abi_test_added(void) { return 0; }
C
expect PASS "a function added" 'evpol_abi_test_added'
rm "$tmp/lib/abi_test_added.c"

plant lib/evpol.map 's/local:\n/local:\n        evpol_loop_is_closed;\n/'
expect FAIL "a function removed" 'evpol_loop_is_closed'
unplant lib/evpol.map

plant lib/include/evpol.h 's/(typedef struct evpol_spawn_options \{\n)/$1    int abi_test_first;\n/'
expect FAIL "a public struct laid out differently" 'evpol_spawn_options'
