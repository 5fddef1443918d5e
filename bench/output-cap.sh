#!/usr/bin/env bash
# Output cap bench (issue 15): one run writes SIZE to stdout, once with
# --max-output-bytes CAP and once without a cap; prints the run dir's disk
# use and the capture rate (MiB/s of the run's duration) of each.
#   bench/output-cap.sh [SIZE_MIB=10240] [CAP=100MiB]
# Needs a release build (cargo build --release) and jq, curl.
set -euo pipefail
size_mib=${1:-10240}
cap=${2:-100MiB}
bin=${SANDBOXD_BIN:-$(dirname "$0")/../target/release/sandboxd}
key=bench-key-0123456789abcdef

one() { # $1: --max-output-bytes value
    local dir port pid run
    dir=$(mktemp -d)
    port=$((20000 + RANDOM % 20000))
    SESSION_API_KEY=$key "$bin" serve --listen "127.0.0.1:$port" \
        --state-dir "$dir/state" --work-root "$dir/work" \
        --max-output-bytes "$1" --default-timeout 1h >"$dir/log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
    run=$(curl -sf -H "X-Session-API-Key: $key" -H 'Content-Type: application/json' \
        -d "{\"run_id\":\"big\",\"wait\":true,\"timeout_s\":3600,\"command\":\"head -c $((size_mib << 20)) /dev/zero\"}" \
        "http://127.0.0.1:$port/v1/runs")
    local dur used
    dur=$(jq -r .duration_s <<<"$run")
    used=$(du -sb "$dir/state/runs/big" | cut -f1)
    printf '%-8s %8s MiB written  %8.1f MiB on disk  %7.2f s  %8.0f MiB/s  truncated %s bytes\n' \
        "$1" "$size_mib" "$(bc -l <<<"$used/1048576")" "$dur" "$(bc -l <<<"$size_mib/$dur")" \
        "$(jq -r .stdout_truncated_bytes <<<"$run")"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}

one "$cap"
one 0
