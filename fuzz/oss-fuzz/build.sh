#!/bin/bash -eu
# build.sh — build evpol's fuzz targets under the OSS-Fuzz / ClusterFuzzLite
# contract, so the same targets run there unchanged.
#
# Inputs (environment):  CC, CFLAGS (sanitizer and coverage flags),
#   LIB_FUZZING_ENGINE (e.g. -fsanitize=fuzzer, or an engine archive),
#   OUT (where binaries go); optionally CXX (used to link when set, as the
#   engines are C++), SRC (the checkout's parent, OSS-Fuzz style) and WORK.
# Outputs in $OUT, for each target T in ops, races, scenario:
#   T                  the fuzzer
#   T_seed_corpus.zip  fuzz/corpus/T
#   T.dict             fuzz/T.dict
#   T.options          libFuzzer options (dictionary, timeout)
#
# By hand, from the top of the tree:
#   CC=clang CFLAGS="-fsanitize=address,fuzzer-no-link" \
#   LIB_FUZZING_ENGINE=-fsanitize=fuzzer OUT=/tmp/out fuzz/oss-fuzz/build.sh
# `make fuzz-ossfuzz-check` runs it as the engines do (fuzz/oss-fuzz/check.sh).
#
# The engines copy this file to $SRC/build.sh and run it from the checkout
# ($SRC/evpol, the Dockerfiles' WORKDIR); run from inside a checkout, it
# builds that one.
#
# libevent is linked statically when its archives are there (the OSS-Fuzz
# runner image has no libevent); it is not instrumented, which only costs
# coverage inside libevent. The targets need the library's objects linked
# statically with the --wrap options fuzz/fakeexec.h explains.

here=$(cd "$(dirname "$0")" && pwd)
if [ -f "$here/../../lib/include/evpol.h" ]; then
    top=$(cd "$here/../.." && pwd)
elif [ -f "$PWD/lib/include/evpol.h" ]; then
    top=$PWD
else
    top=${SRC:?SRC is required when build.sh is not inside the checkout}/evpol
fi
: "${CC:?CC is required}" "${OUT:?OUT is required}"
: "${CFLAGS:=}" "${LIB_FUZZING_ENGINE:=-fsanitize=fuzzer}"
WORK=${WORK:-$(mktemp -d)}
LINK=${CXX:-$CC}
mkdir -p "$OUT" "$WORK/obj"
cd "$top"

ev_cflags=$(pkg-config --cflags libevent libevent_pthreads 2>/dev/null || true)
ev_libdir=$(pkg-config --variable=libdir libevent 2>/dev/null || echo /usr/lib/x86_64-linux-gnu)
if [ -f "$ev_libdir/libevent_pthreads.a" ] && [ -f "$ev_libdir/libevent.a" ]; then
    ev_libs="$ev_libdir/libevent_pthreads.a $ev_libdir/libevent.a"
else
    ev_libs=$(pkg-config --libs libevent libevent_pthreads 2>/dev/null || echo "-levent_pthreads -levent")
fi

std="-std=c11 -D_GNU_SOURCE -pthread -g"
inc="-Ilib/include -Ilib -Iconformance/support -Iscenarios -Ifuzz $ev_cflags"
wrap="-Wl,--wrap=poll -Wl,--wrap=evpol_loop_add_signal_handler -Wl,--wrap=evpol_loop_remove_signal_handler"
wrap="$wrap -Wl,--wrap=evpol__loop_post"

objs=""
compile() { # source object
    # shellcheck disable=SC2086
    $CC $CFLAGS $std $inc -c "$1" -o "$2"
    objs="$objs $2"
}
for src in lib/*.c; do
    name=$(basename "$src" .c)
    compile "$src" "$WORK/obj/lib_$name.o"
done
for src in fuzz/program.c fuzz/model.c fuzz/fakeexec.c fuzz/pool.c conformance/support/fake_kernel.c \
           scenarios/steps*.c; do
    compile "$src" "$WORK/obj/$(basename "$src" .c).o"
done

for t in ops races scenario; do
    # shellcheck disable=SC2086
    $CC $CFLAGS $std $inc -c "fuzz/target_$t.c" -o "$WORK/obj/target_$t.o"
    # shellcheck disable=SC2086
    $LINK $CFLAGS $LIB_FUZZING_ENGINE -o "$OUT/$t" "$WORK/obj/target_$t.o" $objs $wrap $ev_libs -pthread
    # The seed corpus: the committed one and the seeds kept elsewhere.
    rm -f "$OUT/${t}_seed_corpus.zip"
    seeds="$(find "fuzz/corpus/$t" -type f 2>/dev/null) $(fuzz/seeds.sh "$t")"
    # shellcheck disable=SC2086 # one path a word, none with blanks
    [ -n "${seeds// /}" ] && zip -q -j "$OUT/${t}_seed_corpus.zip" $seeds
    cp "fuzz/$t.dict" "$OUT/$t.dict"
    printf '[libfuzzer]\ndict = %s.dict\ntimeout = 30\n' "$t" >"$OUT/$t.options"
done
echo "build.sh: built ops races scenario in $OUT"
