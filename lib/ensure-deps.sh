#!/bin/sh
# ensure-deps.sh PACKAGE... — make sure the named Debian packages are installed.
#
# Packages already installed are not touched. Missing ones are installed with
# apt-get when we are root, or through sudo when it works without a password;
# otherwise we stop with the one command that would install them.
set -eu

missing=""
for pkg in "$@"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "installed" ] || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0

echo "evpol: installing missing Debian packages:$missing" >&2
if [ "$(id -u)" = 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root="sudo -n"
else
    echo "evpol: missing packages:$missing" >&2
    echo "evpol: run: sudo apt-get update && sudo apt-get install -y$missing" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have no package lists at all; a stale list is refreshed
# only when an install fails with it.
if ! $as_root apt-get install -y --no-install-recommends $missing >&2; then
    $as_root apt-get update >&2
    $as_root apt-get install -y --no-install-recommends $missing >&2
fi
