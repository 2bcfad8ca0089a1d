# planted-copy.sh — sourced by the self-tests that build a copy of the tree
# with something planted in it (conformance/test_broken_build.sh,
# lib/abi/test-abi-check.sh), from the top of the tree.
#
# Sets tmp: a fresh folder holding the source tree without build output,
# removed on exit unless KEEP_TMP is set. Defines:
#   clean_make ARGS...    make, without the calling make's variables (SANITIZE, -j ...)
#   plant FILE PERL-SUBST apply the substitution to $tmp/FILE (keeping
#                         FILE.orig) and insist it changed the file, so that a
#                         test fails loudly, not vacuously, when the code moves
tmp=$(mktemp -d "${TMPDIR:-/tmp}/evpol-planted.XXXXXX")
[ -n "${KEEP_TMP:-}" ] || trap 'rm -rf "$tmp"' EXIT
# The whole tree: the Makefile includes files from several directories.
tar --exclude=./.git --exclude=./build --exclude='*/node_modules' \
    -cf - . | tar -C "$tmp" -xf -

clean_make() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory "$@"; }

plant() {
    local file=$tmp/$1
    cp "$file" "$file.orig"
    perl -0pi -e "$2" "$file"
    if cmp -s "$file" "$file.orig"; then
        echo "planting in $1 changed nothing: update $0" >&2
        exit 1
    fi
}
