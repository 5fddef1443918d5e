#!/usr/bin/env bash
# Secrets benchmark: run-start cost of resolving 50 LookupSecrets and the
# capture-throughput cost of masking 50 secrets, on the release binary.
# Usage: bench/secrets.sh  (SECRETS_BENCH_BYTES=268435456 for a shorter run)
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --bench secrets
