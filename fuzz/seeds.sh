#!/bin/sh
# seeds.sh TARGET — the seed inputs of TARGET that live outside
# fuzz/corpus/TARGET, one path a line (relative to the top of the tree).
#
# The scenario target's seeds are the scenario files themselves
# (scenarios/*.scn and scenarios/regressions/*.scn): copies of them in
# fuzz/corpus/scenario would only drift. Every consumer of a seed corpus
# takes this list as well: the replay (replay.sh), `make fuzz` (run.sh), the
# OSS-Fuzz seed zip (oss-fuzz/build.sh) and the minimization (cmin.sh).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
case "${1:?usage: seeds.sh TARGET}" in
scenario)
    for f in scenarios/*.scn scenarios/regressions/*.scn; do
        [ -f "$f" ] && echo "$f"
    done
    ;;
esac
exit 0
