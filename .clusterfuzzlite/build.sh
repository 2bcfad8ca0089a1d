#!/bin/bash -eu
# ClusterFuzzLite: the one build script, shared with OSS-Fuzz.
exec "$SRC/evpol/fuzz/oss-fuzz/build.sh"
