#!/usr/bin/env bash
# File download benchmark, side by side in one run: `cat FILE > /dev/null`
# (the limit), `GET /v1/files` of a release sandboxd over loopback (curl
# to /dev/null), and the agent-server's own file download
# (`GET /api/file/download?path=<path>`) when bench/install-peer.sh can install
# it (otherwise its row says why it is missing). Prints the median MiB/s
# of RUNS runs of each and sandboxd's peak RSS (VmHWM) before and after.
#
#   bench/download.sh                  # RUNS=5 SIZE_MIB=1024, file under /tmp (page cache warm;
#                                      # not /dev/shm: sandboxd never serves below /dev)
#   RUNS=3 WORK=/var/tmp/b bench/download.sh
#   SANDBOXD_BIN=path/to/sandboxd bench/download.sh
#
# Needs bash, python3, curl. Builds `cargo build --release`.
set -euo pipefail

RUNS=${RUNS:-5}
SIZE_MIB=${SIZE_MIB:-1024}
WORK=${WORK:-${TMPDIR:-/tmp}/sandboxd-dl-bench-$$}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KEY=bench-key-$$

cleanup() {
    for pid in ${DAEMON_PID:-} ${PEER_PID:-}; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            wait "$pid" 2>/dev/null || true
        fi
    done
    [[ "${KEEP:-0}" == 1 ]] || rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z "${SANDBOXD_BIN:-}" ]]; then
    echo "== building release"
    (cd "$ROOT" && cargo build --release --quiet)
fi
BIN="${SANDBOXD_BIN:-$ROOT/target/release/sandboxd}"

mkdir -p "$WORK/files"
FILE="$WORK/files/big.bin"
echo "== writing $FILE ($SIZE_MIB MiB of random bytes)"
head -c "$((SIZE_MIB << 20))" /dev/urandom > "$FILE"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

echo "$KEY" > "$WORK/key"
PORT=$(free_port)
"$BIN" serve --listen "127.0.0.1:$PORT" --session-key-file "$WORK/key" \
    --state-dir "$WORK/state" --work-root "$WORK/work" --upload-root "$WORK/files" \
    --agent-server-url http://127.0.0.1:9 --log-format json 2> "$WORK/sandboxd.log" &
DAEMON_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && break; sleep 0.05; done
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$DAEMON_PID/status"; }
HWM_BEFORE=$(hwm)

PEER_URL=""
PEER_NOTE=""
if PY=$("$ROOT/bench/install-peer.sh" 2> "$WORK/peer-install.log"); then
    PEER_PORT=$(free_port)
    # exec: PEER_PID is the agent-server itself, which cleanup stops.
    (cd "$WORK" && exec env -u SESSION_API_KEY OH_SESSION_API_KEYS_0="$KEY" LITELLM_LOCAL_MODEL_COST_MAP=True \
        "$PY" -m openhands.agent_server --host 127.0.0.1 --port "$PEER_PORT" > "$WORK/peer.log" 2>&1) &
    PEER_PID=$!
    for _ in $(seq 600); do curl -sf "http://127.0.0.1:$PEER_PORT/health" > /dev/null && break; sleep 0.1; done
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Session-API-Key: $KEY" \
        "http://127.0.0.1:$PEER_PORT/api/file/download?path=$FILE" || true)
    if [[ "$code" == 200 ]]; then
        PEER_URL="http://127.0.0.1:$PEER_PORT/api/file/download?path=$FILE"
    else
        PEER_NOTE="agent-server answered $code to its file download; see $WORK/peer.log"
    fi
else
    PEER_NOTE="agent-server not installed: $(tail -1 "$WORK/peer-install.log")"
fi

# Seconds of one command, to the millisecond.
timed() { local s e; s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
rate() { echo "scale=1; $SIZE_MIB / $1" | bc -l; }

declare -A SECS
run_case() {
    local name=$1; shift
    local all=()
    for _ in $(seq "$RUNS"); do all+=("$(timed "$@")"); done
    SECS[$name]=$(printf '%s\n' "${all[@]}" | median)
}
# One checked download first: a refused request must not pass for a fast one.
got=$(curl -sf -o /dev/null -w '%{size_download}' -H "X-Session-API-Key: $KEY" \
    "http://127.0.0.1:$PORT/v1/files?path=$FILE") || true
if [[ "$got" != "$((SIZE_MIB << 20))" ]]; then
    echo "sandboxd's download gave ${got:-nothing} bytes, not $((SIZE_MIB << 20)); see $WORK/sandboxd.log" >&2
    exit 1
fi
run_case cat cat "$FILE"
run_case sandboxd curl -sf -o /dev/null -H "X-Session-API-Key: $KEY" \
    "http://127.0.0.1:$PORT/v1/files?path=$FILE"
[[ -n "$PEER_URL" ]] && run_case agent-server curl -sf -o /dev/null -H "X-Session-API-Key: $KEY" "$PEER_URL"

echo "== $SIZE_MIB MiB, median of $RUNS runs"
printf '%-14s %10s %10s\n' what seconds MiB/s
for name in cat sandboxd agent-server; do
    if [[ -n "${SECS[$name]:-}" ]]; then
        printf '%-14s %10.3f %10s\n' "$name" "${SECS[$name]}" "$(rate "${SECS[$name]}")"
    fi
done
[[ -n "$PEER_NOTE" ]] && echo "agent-server: $PEER_NOTE"
echo "sandboxd VmHWM: ${HWM_BEFORE} kB before, $(hwm) kB after"
