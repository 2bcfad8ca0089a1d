#!/usr/bin/env bash
# test-abi-check.sh — `make abi-check` tells compatible from incompatible.
#
# A copy of the tree builds the library three times (-O0, so it is quick),
# and abi-check must:
#   - pass, listing it, when a public function is added;
#   - fail when a public function is no longer exported;
#   - pass when a member is appended to evpol_sys (its size versions it);
#   - fail when one is inserted before its end;
#   - fail when a public struct (evpol_spawn_options) changes its layout.
set -euo pipefail
cd "$(dirname "$0")/../.."
lib/ensure-deps.sh abigail-tools
. lib/dist/planted-copy.sh

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

plant lib/include/evpol.h 's/(    int \(\*thread_detach\)\(pthread_t thread\);\n)/$1    int (*abi_test_appended)(void);\n/'
expect PASS "a member appended to evpol_sys, which its size versions" 'evpol_sys: .* appended after the baseline: accepted'
unplant lib/include/evpol.h

plant lib/include/evpol.h 's/(typedef struct evpol_sys \{\n    size_t size;[^\n]*\n)/$1    int abi_test_inserted;\n/'
expect FAIL "a member inserted inside evpol_sys" 'evpol_sys'
unplant lib/include/evpol.h

plant lib/include/evpol.h 's/(typedef struct evpol_spawn_options \{\n)/$1    int abi_test_first;\n/'
expect FAIL "a public struct laid out differently" 'evpol_spawn_options'
