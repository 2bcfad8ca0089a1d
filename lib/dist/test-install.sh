#!/bin/sh
# test-install.sh [BUILD_DIR] — install into a temporary prefix, build
# examples/minimal.c against it with pkg-config alone, run it, uninstall.
# Under `make check` the build dir and the sanitizer flags of the build come
# from EVPOL_BUILD and EVPOL_SANFLAGS (a sanitized library needs its runtime).
set -eu
build=${1:-${EVPOL_BUILD:-build/default}}
sanflags=${EVPOL_SANFLAGS:-}
prefix=$(mktemp -d "${TMPDIR:-/tmp}/evpol-install.XXXXXX")
trap 'rm -rf "$prefix"' EXIT
make -s BUILD="$build" install PREFIX="$prefix" >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
flags=$(pkg-config --cflags --libs evpol)
# shellcheck disable=SC2086 # word splitting of the flag lists is wanted
cc -std=c11 -Wall -Werror $sanflags -o "$prefix/minimal" examples/minimal.c $flags
LD_LIBRARY_PATH="$prefix/lib" "$prefix/minimal"
# The shared library carries its soname, and the installed links resolve.
readelf -d "$prefix/lib/libevpol.so" | grep -q 'SONAME.*libevpol.so.0'
make -s BUILD="$build" uninstall PREFIX="$prefix" >/dev/null
test ! -e "$prefix/lib/libevpol.so" && test ! -e "$prefix/include/evpol.h"
echo "install test: pkg-config build against $prefix ran"
