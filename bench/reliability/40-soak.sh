#!/usr/bin/env bash
# Soak: 10,000 runs back to back against a release daemon; its open
# descriptors, RSS and the process table (no zombies, no shim or run
# process left) must be flat at the end. See soak.py for what each run
# does. Prints a Markdown section on stdout; exits 0 only when the checks
# hold. Env: SANDBOXD_BIN, SOAK_RUNS (10000).
set -uo pipefail
exec python3 "$(dirname "$0")/soak.py" "${SOAK_RUNS:-10000}"
