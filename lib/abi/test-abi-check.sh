#!/usr/bin/env bash
# test-abi-check.sh — `make abi-check` tells compatible from incompatible.
#
# A copy of the tree builds the library three times (-O0, so it is quick),
# and abi-check must:
#   - pass, listing it, when a public function is added;
#   - fail when a public function is no longer exported, or no longer
#     in the version a program linked against the release is bound to;
#   - pass when a member is appended to evpol_sys (its size versions it);
#   - fail when one is inserted before its end;
#   - fail when a public struct (evpol_spawn_options) changes its layout;
# and the tree as it is passes, with evpol_sys_real in two versions
# (lib/evpol.map): a program bound to the 0.1.0 one (EVPOL_0) gets a table
# of the 0.1.0 size, which it can copy whole into its own table and
# install; a program built now gets the full table.
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

expect PASS "the tree as it is" 'abi-check: libevpol.so.0 has the ABI of\|compatible additions'
lib=$tmp/build/abi
cat >"$tmp/sys_real_0_1.c" <<'C'
/* Built as a program linked against 0.1.0 was: evpol_sys_real bound to
 * its EVPOL_0 version, which 0.1.0's header declared with a table that
 * ends at `free`. It copies the table whole into a table of that size,
 * placed against an inaccessible page, and installs it without setting
 * `size`: evpol_sys_set must read no further. */
#include <evpol.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
__asm__(".symver evpol_sys_real, evpol_sys_real@EVPOL_0");
int main(void)
{
    const evpol_sys *real = evpol_sys_real();
    if (real->size != EVPOL_SYS_SIZE_0_1) {
        printf("evpol_sys_real@EVPOL_0: size %zu, expected %zu\n", real->size,
               (size_t)EVPOL_SYS_SIZE_0_1);
        return 1;
    }
    long page = sysconf(_SC_PAGESIZE);
    char *p = mmap(NULL, 2 * (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || mprotect(p + page, (size_t)page, PROT_NONE) != 0)
        return 2;
    evpol_sys *mine = (evpol_sys *)(p + page - EVPOL_SYS_SIZE_0_1);
    memcpy(mine, real, EVPOL_SYS_SIZE_0_1);
    evpol_error err;
    memset(&err, 0, sizeof err);
    if (evpol_sys_set(mine, &err) != 0 || evpol_sys_set(NULL, &err) != 0) {
        printf("evpol_sys_set: %s\n", err.message);
        return 1;
    }
    printf("evpol_sys_real@EVPOL_0: size %zu, installed\n", real->size);
    return 0;
}
C
cat >"$tmp/sys_real_now.c" <<'C'
#include <evpol.h>
#include <stdio.h>
int main(void)
{
    const evpol_sys *real = evpol_sys_real();
    printf("evpol_sys_real: size %zu, sizeof(evpol_sys) %zu\n", real->size, sizeof(evpol_sys));
    return real->size == sizeof(evpol_sys) ? 0 : 1;
}
C
for prog in sys_real_0_1 sys_real_now; do
    cc -std=c11 -D_GNU_SOURCE -Wall -Werror -I"$tmp/lib/include" -o "$tmp/$prog" "$tmp/$prog.c" \
        -L"$lib" -levpol -Wl,-rpath,"$lib"
done
# The programs are bound as they say (else the test proves nothing).
nm -D "$tmp/sys_real_0_1" | grep -q ' U evpol_sys_real@EVPOL_0$' ||
    { nm -D "$tmp/sys_real_0_1" >&2; echo "abi-check test: sys_real_0_1 is not bound to evpol_sys_real@EVPOL_0" >&2; exit 1; }
nm -D "$tmp/sys_real_now" | grep -q ' U evpol_sys_real@EVPOL_0\.2$' ||
    { nm -D "$tmp/sys_real_now" >&2; echo "abi-check test: sys_real_now is not bound to evpol_sys_real@EVPOL_0.2" >&2; exit 1; }
# Each runs against the copy's library, which its rpath names: not the one
# LD_LIBRARY_PATH may name (`make check` sets it to the tree's build, which
# under SANITIZE is a sanitized library these plain programs cannot load).
for prog in sys_real_0_1 sys_real_now; do
    if ! env -u LD_LIBRARY_PATH "$tmp/$prog"; then
        echo "abi-check test: $prog failed" >&2
        exit 1
    fi
done
echo "abi-check test: evpol_sys_real: the 0.1.0 size for a program bound to EVPOL_0, the full one otherwise"

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

plant lib/sys.c 's/__asm__\("\.symver evpol__sys_real_0_1, evpol_sys_real\@EVPOL_0"\);\n//'
expect FAIL "the released version of a function versioned since, removed" 'evpol_sys_real@EVPOL_0$'
unplant lib/sys.c

plant lib/include/evpol.h 's/(    int \(\*thread_detach\)\(pthread_t thread\);\n)/$1    int (*abi_test_appended)(void);\n/'
expect PASS "a member appended to evpol_sys, which its size versions" 'evpol_sys: .* appended after the baseline: accepted'
unplant lib/include/evpol.h

plant lib/include/evpol.h 's/(typedef struct evpol_sys \{\n    size_t size;[^\n]*\n)/$1    int abi_test_inserted;\n/'
expect FAIL "a member inserted inside evpol_sys" 'evpol_sys'
unplant lib/include/evpol.h

plant lib/include/evpol.h 's/(typedef struct evpol_spawn_options \{\n)/$1    int abi_test_first;\n/'
expect FAIL "a public struct laid out differently" 'evpol_spawn_options'
