#!/usr/bin/env bash
# Soak (issue 15): SOAK_RUNS (100000) mixed runs against one release daemon
# with --retain-runs 1000; RSS, descriptors, state-dir bytes and inodes,
# work-root inodes and runs/s sampled every SOAK_EVERY (10000) runs; every
# run's end and every callback checked. Prints a Markdown section and puts
# it into RELIABILITY.md ("Soak: 100,000 runs with retention"); exits 0 only
# when every check holds. See bench/soak.py for what the runs do.
#
#   bench/soak.sh                                   # target/release/sandboxd
#   SANDBOXD_BIN=/path/to/sandboxd bench/soak.sh
#   SOAK_RUNS=2000 SOAK_EVERY=500 SOAK_WRITE= bench/soak.sh   # quick, no write
#
# Env: SANDBOXD_BIN, SOAK_RUNS, SOAK_WORKERS (4), SOAK_EVERY, SOAK_RETAIN
# (1000), SOAK_DIR (parent of the temp state dir; default $TMPDIR or /tmp),
# SOAK_WRITE (file to write the section into; default RELIABILITY.md; empty:
# print only). Needs python3 (3.11, stdlib only). Does not build anything.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
cd "$repo"
export SANDBOXD_BIN="${SANDBOXD_BIN:-target/release/sandboxd}"
export SOAK_WRITE="${SOAK_WRITE-$repo/RELIABILITY.md}"
cmd="bench/soak.sh"
for v in SOAK_RUNS SOAK_WORKERS SOAK_EVERY SOAK_RETAIN SOAK_DIR; do
  if [ -n "${!v:-}" ]; then cmd="$v=${!v} $cmd"; fi
done
export SOAK_COMMAND="SANDBOXD_BIN=$SANDBOXD_BIN $cmd"
exec python3 "$here/soak.py"
