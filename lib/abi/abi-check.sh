#!/bin/sh
# abi-check.sh LIBRARY BASELINE — is LIBRARY compatible with the released ABI?
#
#   - every symbol LIBRARY exports is public (evpol_ and a letter, never an
#     internal evpol__ one) and carries a version node (lib/evpol.map);
#     a name may have older versions beside its default one;
#   - its soname is the baseline's: a new soname needs a new baseline
#     (`make abi-baseline`), written on purpose;
#   - abidiff, limited to the types of the public header, finds nothing
#     removed or changed. Added functions are compatible: printed, accepted;
#     so are members appended to a struct its `size` versions
#     (lib/abi/appendable lists them).
#
# ABIDW (the abidw command line) comes from the Makefile, so that the baseline
# and the build are read the same way. Exit 0: compatible; 1: not (or the
# check could not run).
set -u
lib=$1 baseline=$2
: "${ABIDW:?}"
[ -f "$lib" ] || { echo "abi-check: no library at $lib" >&2; exit 1; }
[ -f "$baseline" ] || { echo "abi-check: no baseline at $baseline (make abi-baseline)" >&2; exit 1; }

# A name's default version (@@) and, for a function versioned since
# (lib/evpol.map), its older ones (@) are all public.
bad=$(nm -D --defined-only "$lib" | awk '$2 != "A" && $3 !~ /^evpol_[^_][^@]*@@?EVPOL_[0-9]+(\.[0-9]+)*$/ { print $3 }')
if [ -n "$bad" ]; then
    echo "abi-check: $lib exports symbols outside the public, versioned set (lib/evpol.map):" >&2
    echo "$bad" | sed 's/^/    /' >&2
    exit 1
fi

# Every name@version of the baseline is still there, default or not: a
# program linked against the released library asks for exactly that pair
# (a function versioned since keeps its released version beside the new
# default one; abidiff compares default versions and does not see it go).
exported=$(nm -D --defined-only "$lib" | awk '$2 != "A" { sub(/@@/, "@", $3); print $3 }')
missing=$(sed -n "s/.*<elf-symbol name='\([^']*\)' version='\([^']*\)'.*/\1@\2/p" "$baseline" |
    while read -r sym; do echo "$exported" | grep -qxF "$sym" || echo "$sym"; done)
if [ -n "$missing" ]; then
    echo "abi-check: $lib no longer exports these versions of the baseline (programs linked against it need them):" >&2
    echo "$missing" | sed 's/^/    /' >&2
    exit 1
fi

soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
base_soname=$(sed -n "1s/.* soname='\([^']*\)'.*/\1/p" "$baseline")
if [ "$soname" != "$base_soname" ]; then
    echo "abi-check: $lib has soname $soname, the baseline $base_soname:" \
         "a new soname needs a new baseline (make abi-baseline)" >&2
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/evpol-abi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2086 # ABIDW is a command line
if ! $ABIDW --out-file "$tmp/build.abi" "$lib"; then
    echo "abi-check: abidw could not read $lib" >&2
    exit 1
fi
# A struct that its `size` versions may grow at its end (lib/abi/appendable):
# compare the build with those appended members cut off, at the baseline's
# size, so that anything else changed in the struct still shows.
for s in $(sed -e 's/#.*//' "$(dirname "$0")/appendable"); do
    base_bits=$(sed -n "s/.*<class-decl name='$s' size-in-bits='\([0-9]*\)'.*/\1/p" "$baseline" | head -1)
    [ -n "$base_bits" ] || continue
    S=$s B=$base_bits perl -0pi -e '
        s{(<class-decl name=\x27$ENV{S}\x27 size-in-bits=\x27)(\d+)(\x27.*?</class-decl>)}{
            my ($head, $body) = ($1, $3);
            my $cut = 0;
            $body =~ s{\s*<data-member [^>]*layout-offset-in-bits=\x27(\d+)\x27>.*?</data-member>}{
                $1 >= $ENV{B} ? do { $cut++; "" } : $&
            }gse;
            print STDERR "abi-check: $ENV{S}: $cut member(s) appended after the baseline: accepted\n" if $cut;
            $head . $ENV{B} . $body
        }se' "$tmp/build.abi"
done
abidiff "$baseline" "$tmp/build.abi" >"$tmp/diff.txt" 2>&1
rc=$?
# abidiff's exit status is a bit set: 1 error, 2 usage error, 4 some ABI
# change, 8 an incompatible one. Bit 8 covers removed symbols only: a public
# struct laid out differently, or a function whose parameters changed, is
# bit 4 with a "Changed" count in the summary, and is just as incompatible.
# What passes is additions alone.
if [ $((rc & 3)) -ne 0 ]; then
    cat "$tmp/diff.txt" >&2
    echo "abi-check: abidiff could not compare (exit $rc)" >&2
    exit 1
fi
if [ $((rc & 8)) -ne 0 ] || grep -Eq 'summary: .*(^|[^0-9])[1-9][0-9]* (Removed|Changed)' "$tmp/diff.txt"; then
    cat "$tmp/diff.txt" >&2
    echo "abi-check: INCOMPATIBLE with $baseline ($soname). Keep the ABI, or change the soname" \
         "(VERSION_MAJOR, the node in lib/evpol.map) and run make abi-baseline, on purpose." >&2
    exit 1
fi
if [ $((rc & 4)) -ne 0 ]; then
    cat "$tmp/diff.txt"
    echo "abi-check: compatible additions to $baseline (listed above): accepted"
else
    echo "abi-check: $soname has the ABI of $baseline"
fi
