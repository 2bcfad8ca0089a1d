#!/usr/bin/env bash
# distcheck.sh TARBALL — is the release tarball a complete project?
#
# Unpacks TARBALL alone into a fresh temporary folder (no checkout, no
# sibling folder, nothing beside it) and there, each step failing the check:
#   1. the README's two commands, `make conformance` and `make check`, with
#      SIGHUP, SIGINT, SIGQUIT and SIGPIPE ignored (as nohup and CI runners
#      leave them: the suites must not depend on it);
#   2. `make install DESTDIR=... PREFIX=/usr`, then examples/minimal.c built
#      with nothing but pkg-config pointed at that install, and run;
#   3. `make abi-check` against the baseline in the tarball;
#   4. `make clean`, after which the tree must hold exactly the tarball's
#      files: a build that writes into the source tree is a failure.
# The folder is removed on success and kept (its path printed) on failure.
set -euo pipefail
tarball=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/evpol-distcheck.XXXXXX")
ok=0
trap '[ $ok = 1 ] && rm -rf "$tmp" || echo "distcheck: FAILED; the tree is kept in $tmp" >&2' EXIT

tar -xzf "$tarball" -C "$tmp"
top=$(ls "$tmp")
src=$tmp/$top
[ "$(echo "$top" | wc -l)" = 1 ] && [ -d "$src" ] || { echo "distcheck: $tarball has more than one top folder" >&2; exit 1; }
tar -tzf "$tarball" | grep -v '/$' | sed "s,^$top/,," | sort >"$tmp/files.txt"
cd "$src"

# Sub-makes start clean: nothing of the calling make (SANITIZE, -j, -k ...).
clean_make() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory "$@"; }
step() { echo "==== distcheck: $* ($(date -u +%H:%M:%S))"; }
ignoring() { (trap '' HUP INT QUIT PIPE; "$@"); }

step "make conformance, SIGHUP SIGINT SIGQUIT SIGPIPE ignored"
ignoring clean_make conformance
step "make check, SIGHUP SIGINT SIGQUIT SIGPIPE ignored"
ignoring clean_make check

step "make install DESTDIR=$tmp/inst PREFIX=/usr; examples/minimal.c through pkg-config"
clean_make -s install DESTDIR="$tmp/inst" PREFIX=/usr >/dev/null
flags=$(PKG_CONFIG_SYSROOT_DIR="$tmp/inst" PKG_CONFIG_PATH="$tmp/inst/usr/lib/pkgconfig" \
        pkg-config --cflags --libs evpol)
echo "pkg-config: $flags"
# shellcheck disable=SC2086 # word splitting of the flag list is wanted
cc -std=c11 -Wall -Werror -o "$tmp/minimal" examples/minimal.c $flags
LD_LIBRARY_PATH="$tmp/inst/usr/lib" "$tmp/minimal"
readelf -d "$tmp/minimal" | grep -q 'NEEDED.*\[libevpol.so.0\]'

step "make abi-check"
clean_make abi-check

step "make clean leaves exactly the tarball's files"
clean_make -s clean
find . -type f -o -type l | sed 's,^\./,,' | sort >"$tmp/after.txt"
if ! diff -u "$tmp/files.txt" "$tmp/after.txt"; then
    echo "distcheck: the tree after make clean differs from the tarball (+ written by the build, - deleted)" >&2
    exit 1
fi

ok=1
echo "distcheck: $(basename "$tarball") passed ($(wc -l <"$tmp/files.txt") files)"
