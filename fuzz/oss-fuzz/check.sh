#!/bin/sh
# check.sh — `make fuzz-ossfuzz-check`: build the fuzzers the way OSS-Fuzz and
# ClusterFuzzLite build them, then check $OUT the way their runner uses it.
#
# No container runs here, so this gives build.sh what the engines give it:
# a clean environment with CC/CXX clang, their ASan+libFuzzer CFLAGS,
# LIB_FUZZING_ENGINE=-fsanitize=fuzzer, and fresh SRC, WORK and OUT, with
# the checkout's tracked files at $SRC/evpol (so a build that needs
# something untracked fails here too). It runs both flows: OSS-Fuzz's
# (fuzz/oss-fuzz/build.sh copied to $SRC/build.sh) and ClusterFuzzLite's
# (.clusterfuzzlite/build.sh). Then, for each fuzzer in $OUT:
#   - its seed corpus zip unpacks, and it runs every input of it with the
#     options of its .options file (-runs=0), then fuzzes a few hundred
#     inputs from it, and exits 0;
#   - its .dict parses (libFuzzer -dict= reads it and counts its entries);
# and the project files are there and name what the build needs.
# Environment: FUZZ_BUILD (default build/fuzz), OSSFUZZ_RUNS (default 300).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top"
: "${FUZZ_BUILD:=build/fuzz}" "${OSSFUZZ_RUNS:=300}"
targets="ops races scenario"
root="$top/$FUZZ_BUILD/ossfuzz-check"
rm -rf "$root"
mkdir -p "$root"
fail() {
    echo "fuzz-ossfuzz-check: FAILED: $*" >&2
    exit 1
}

# ---- the project files ----
for f in .clusterfuzzlite/Dockerfile .clusterfuzzlite/build.sh .clusterfuzzlite/project.yaml \
         fuzz/oss-fuzz/Dockerfile fuzz/oss-fuzz/build.sh fuzz/oss-fuzz/project.yaml \
         .github/workflows/cflite_pr.yml .github/workflows/cflite_batch.yml; do
    [ -s "$f" ] || fail "$f is missing"
done
for d in .clusterfuzzlite/Dockerfile fuzz/oss-fuzz/Dockerfile; do
    grep -q '^FROM gcr.io/oss-fuzz-base/base-builder$' "$d" || fail "$d: not FROM the base-builder image"
    for pkg in libevent-dev pkg-config zip; do
        grep -q "apt-get install.* $pkg" "$d" || fail "$d does not install $pkg"
    done
done
for y in .clusterfuzzlite/project.yaml fuzz/oss-fuzz/project.yaml; do
    grep -q '^language: c$' "$y" || fail "$y: language is not c"
done
grep -q "mode: 'code-change'" .github/workflows/cflite_pr.yml || fail "cflite_pr.yml: no code-change mode"
grep -q "mode: 'batch'" .github/workflows/cflite_batch.yml || fail "cflite_batch.yml: no batch mode"
for key in homepage main_repo primary_contact; do
    grep -q "^$key: \"\"" fuzz/oss-fuzz/project.yaml &&
        echo "fuzz-ossfuzz-check: note: fuzz/oss-fuzz/project.yaml: $key is empty (fill it in when submitting)"
done

# ---- the builds ----
# The checkout's tracked files, as the Dockerfiles copy or clone them.
stage() { # dir
    mkdir -p "$1/evpol"
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files | while IFS= read -r f; do [ -e "$f" ] && printf '%s\n' "$f"; done >"$root/files"
    else
        find . -path ./build -prune -o -path ./reports -prune -o -type f -print >"$root/files"
    fi
    tar -cf - -T "$root/files" | tar -xf - -C "$1/evpol"
}
cflags="-O1 -fno-omit-frame-pointer -gline-tables-only -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION"
cflags="$cflags -fsanitize=address -fsanitize-address-use-after-scope -fsanitize=fuzzer-no-link"
build() { # flow build-script
    src="$root/$1/src" work="$root/$1/work" out="$root/$1/out"
    mkdir -p "$work" "$out"
    stage "$src"
    cp "$2" "$src/build.sh"
    echo "fuzz-ossfuzz-check: $1: building (log: $root/$1/build.log)"
    if ! (cd "$src/evpol" && env -i PATH="$PATH" HOME="${HOME:-/root}" \
            CC=clang CXX=clang++ CFLAGS="$cflags" CXXFLAGS="$cflags" \
            LIB_FUZZING_ENGINE=-fsanitize=fuzzer SANITIZER=address FUZZING_ENGINE=libfuzzer \
            FUZZING_LANGUAGE=c ARCHITECTURE=x86_64 SRC="$src" WORK="$work" OUT="$out" \
            bash -eu "$src/build.sh") >"$root/$1/build.log" 2>&1; then
        tail -20 "$root/$1/build.log" >&2
        fail "$1: build.sh failed"
    fi
}
build oss-fuzz fuzz/oss-fuzz/build.sh
build clusterfuzzlite .clusterfuzzlite/build.sh
a=$(cd "$root/oss-fuzz/out" && ls | sort | tr '\n' ' ')
b=$(cd "$root/clusterfuzzlite/out" && ls | sort | tr '\n' ' ')
[ "$a" = "$b" ] || fail "the two flows put different files in \$OUT: [$a] vs [$b]"

# ---- $OUT as the runner uses it ----
out="$root/oss-fuzz/out"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
for t in $targets; do
    [ -x "$out/$t" ] || fail "$t: no fuzzer in \$OUT"
    for f in "${t}_seed_corpus.zip" "$t.dict" "$t.options"; do
        [ -s "$out/$f" ] || fail "$t: no $f in \$OUT"
    done
    corpus="$root/run/$t/corpus"
    mkdir -p "$corpus" "$root/run/$t/empty"
    unzip -q -o "$out/${t}_seed_corpus.zip" -d "$corpus" || fail "$t: the seed corpus zip does not unpack"
    nseeds=$(find "$corpus" -type f | wc -l)
    want=$(( $(find "fuzz/corpus/$t" -type f 2>/dev/null | wc -l) + $(fuzz/seeds.sh "$t" | wc -l) ))
    [ "$nseeds" -eq "$want" ] || fail "$t: the seed zip holds $nseeds inputs, the tree $want"
    # The [libfuzzer] section of the options file, as flags (paths in it
    # are relative to $OUT, where the runner starts the fuzzer).
    opts=$(sed -n '/^\[libfuzzer\]/,/^\[/{/^[a-z_]* *= */{s/^\([a-z_]*\) *= *\(.*\)$/-\1=\2/;p}}' "$out/$t.options" | tr '\n' ' ')
    case "$opts" in *-dict=*) ;; *) fail "$t: $t.options names no dictionary" ;; esac
    log="$root/run/$t"
    (cd "$out" && "./$t" -dict="$t.dict" -runs=0 "$root/run/$t/empty") >"$log/dict.log" 2>&1 ||
        fail "$t: the fuzzer does not start with $t.dict (see $log/dict.log)"
    entries=$(sed -n 's/^Dictionary: \([0-9]*\) entries$/\1/p' "$log/dict.log")
    [ "${entries:-0}" -gt 0 ] || fail "$t: $t.dict gives no dictionary entries (see $log/dict.log)"
    # shellcheck disable=SC2086 # the options, one flag a word
    (cd "$out" && "./$t" $opts -rss_limit_mb=2560 -runs=0 "$corpus") >"$log/seeds.log" 2>&1 ||
        fail "$t: running its seed corpus failed (see $log/seeds.log)"
    grep -q 'INITED' "$log/seeds.log" || fail "$t: the seed corpus run did not finish (see $log/seeds.log)"
    # shellcheck disable=SC2086
    (cd "$out" && "./$t" $opts -rss_limit_mb=2560 -seed=1 -runs="$OSSFUZZ_RUNS" "$corpus") \
        >"$log/fuzz.log" 2>&1 || fail "$t: fuzzing from its seeds failed (see $log/fuzz.log)"
    cov=$(sed -n 's/^#[0-9]*[[:space:]]*INITED cov: \([0-9]*\) ft: \([0-9]*\).*/cov \1, ft \2/p' "$log/seeds.log")
    echo "fuzz-ossfuzz-check: $t: $nseeds seeds ran ($cov), $entries dictionary entries, options:$opts then $OSSFUZZ_RUNS fuzzing runs: ok"
done
echo "fuzz-ossfuzz-check: passed (\$OUT: $out)"
