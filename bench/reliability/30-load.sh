#!/usr/bin/env bash
# Load: wrk on GET /v1/status and GET /v1/runs/{id} while 50 runs stream
# their output to 50 clients following their logs. Loopback only, bounded
# in time (about 2 × LOAD_SECONDS + 20 s). Prints a Markdown section on
# stdout; exits 0 only when no request failed and no log line was lost.
#
# Env: SANDBOXD_BIN (default target/release/sandboxd), LOAD_SECONDS per
# endpoint (15), LOAD_CONNECTIONS (32), LOAD_RUNS (50), LOAD_P99_MAX_MS (1000).
set -uo pipefail
source "$(dirname "$0")/lib.sh"

seconds=${LOAD_SECONDS:-15}
connections=${LOAD_CONNECTIONS:-32}
runs=${LOAD_RUNS:-50}
p99_max=${LOAD_P99_MAX_MS:-1000}
interval=0.02
stream_s=$((2 * seconds + 10))
lines=$(awk -v s="$stream_s" -v i="$interval" 'BEGIN { printf "%d", s / i }')

need_bin
command -v wrk >/dev/null || { say "wrk is not installed (apt-get install wrk)"; exit 1; }
command -v python3 >/dev/null || { say "python3 is needed for the runs"; exit 1; }
start_daemon --max-running 64 || exit 1
say "daemon $daemon_pid at $url"

# Each run prints `lines` lines of ~100 bytes, one every 20 ms.
printer="import time
for i in range($lines):
    print('line %06d ' % i + 'x' * 88, flush=True)
    time.sleep($interval)"
body=$(python3 -c 'import json,sys; print(json.dumps({"command": ["python3", "-c", sys.argv[1]], "timeout_s": 600}))' "$printer")
for i in $(seq 0 $((runs - 1))); do
    api POST /v1/runs "$(echo "$body" | sed "s/^{/{\"run_id\": \"load-$i\", /")" >/dev/null
done
followers=()
for i in $(seq 0 $((runs - 1))); do
    curl -sN --max-time $((stream_s + 60)) -H "X-Session-API-Key: $key" \
        "$url/v1/runs/load-$i/logs?follow=true" >"$scratch/follow-$i.txt" &
    followers+=($!)
done
say "$runs runs streaming, $runs followers; wrk ${seconds}s × 2"

# wrk_row LABEL OUTPUT: a table row; errors go to $scratch/errors.
wrk_row() {
    awk -v label="$1" -v errfile="$scratch/errors" '
        function ms(v) {
            if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
            if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
            if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
            return v + 0
        }
        /^ *Latency +[0-9]/ { max = ms($4) }
        /^ *50%/ { p50 = ms($2) }
        /^ *90%/ { p90 = ms($2) }
        /^ *99%/ { p99 = ms($2) }
        / requests in / { requests = $1 }
        /Socket errors:/ { gsub(/,/, ""); errors += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { errors += $NF }
        /^Requests\/sec:/ { rps = $2 }
        END {
            printf "| %s | %d | %.0f | %.2f | %.2f | %.2f | %.2f | %d |\n", label, requests, rps, p50, p90, p99, max, errors
            printf "%s %d %.2f\n", label, errors, p99 >> errfile
        }' "$2"
}

wrk -t2 -c"$connections" -d"${seconds}s" --latency -H "X-Session-API-Key: $key" \
    "$url/v1/status" >"$scratch/wrk-status.txt" 2>&1
wrk -t2 -c"$connections" -d"${seconds}s" --latency -H "X-Session-API-Key: $key" \
    "$url/v1/runs/load-0" >"$scratch/wrk-run.txt" 2>&1
cat "$scratch/wrk-status.txt" "$scratch/wrk-run.txt" >&2

say "waiting for the runs and their followers to end"
deadline=$((SECONDS + stream_s + 60))
while [ $SECONDS -lt $deadline ]; do
    left=$(api GET '/v1/runs?state=running' | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["runs"]))')
    [ "$left" = 0 ] && break
    sleep 1
done
for pid in "${followers[@]}"; do wait "$pid"; done
runs_json=$(api GET /v1/runs)
succeeded=$(echo "$runs_json" | python3 -c 'import json,sys; print(sum(r["state"] == "succeeded" for r in json.load(sys.stdin)["runs"]))')
received=0
complete=0
for i in $(seq 0 $((runs - 1))); do
    n=$(grep -c '^line ' "$scratch/follow-$i.txt")
    received=$((received + n))
    # Every line, in order, exactly once.
    if [ "$n" = "$lines" ] && awk '{ if ($2 + 0 != NR - 1) exit 1 }' "$scratch/follow-$i.txt"; then
        complete=$((complete + 1))
    fi
done
expected=$((runs * lines))
alive=yes
kill -0 "$daemon_pid" 2>/dev/null || alive=no
stop_daemon || alive="no (exit code $?)"

status_row=$(wrk_row "GET /v1/status" "$scratch/wrk-status.txt")
run_row=$(wrk_row "GET /v1/runs/{id}" "$scratch/wrk-run.txt")
cpu=$(nproc)
cat <<MD
## Load: API reads while $runs runs stream their logs

\`wrk -t2 -c$connections -d${seconds}s --latency\` per endpoint over loopback
against $build, while $runs runs each print a ~100-byte line every
20 ms ($lines lines) and $runs clients follow their logs
(\`GET /v1/runs/{id}/logs?follow=true\`). $cpu cores shared with the runs,
the followers and wrk. Latencies in milliseconds.

| endpoint | requests | req/s | p50 | p90 | p99 | max | errors |
|---|---:|---:|---:|---:|---:|---:|---:|
$status_row
$run_row

| log streams | lines expected | lines received | streams complete and in order | runs succeeded | daemon alive, clean exit |
|---:|---:|---:|---:|---:|---|
| $runs | $expected | $received | $complete / $runs | $succeeded / $runs | $alive |
MD

ok=0
while read -r errors p99; do
    [ "$errors" = 0 ] || { say "requests failed: $errors"; ok=1; }
    awk -v p="$p99" -v m="$p99_max" 'BEGIN { exit !(p <= m) }' || { say "p99 $p99 ms over $p99_max ms"; ok=1; }
done < <(sed 's/^GET [^ ]* //' "$scratch/errors")
[ "$complete" = "$runs" ] || { say "log streams incomplete: $complete of $runs"; ok=1; }
[ "$succeeded" = "$runs" ] || { say "runs succeeded: $succeeded of $runs"; ok=1; }
[ "$alive" = yes ] || { say "daemon: $alive"; ok=1; }
exit $ok
