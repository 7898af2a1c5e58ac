#!/bin/bash
# Session 6's GPU runs (issue #5): scripts/gpu_speed.sh with results under $OUT/s6 (see that file for the phases).
SESSION=s6 exec bash "$(dirname "$0")/gpu_speed.sh" "$@"
