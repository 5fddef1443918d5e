#!/usr/bin/env bash
# The one benchmark command: sandboxd side by side with the real OpenHands
# agent-server and the machine's limits. Builds sandboxd in release mode,
# installs the agent-server into a throwaway venv under bench/out/, runs
# the driver (bench/compare/) which starts both daemons on loopback and
# runs every scenario, then rewrites BENCHMARKS.md and bench/plots/.
# Everything it starts is stopped on exit, also on Ctrl-C.
#
#   bench/run.sh                 full run (about 10 minutes plus the install)
#   BENCH_QUICK=1 bench/run.sh   few rounds, to try it out
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="$root/bench/out"
mkdir -p "$out"
pids="$out/pids"
: >"$pids"
export BENCH_OUT="$out"
export BENCH_PIDS="$pids"
export BENCH_SCRATCH="${BENCH_SCRATCH:-$([[ -d /dev/shm ]] && echo /dev/shm || echo "$out")/sandboxd-bench-$$}"

install_pid=""
driver_pid=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "$driver_pid" "$install_pid"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    # The daemons the driver started, each its own process group.
    if [[ -s "$pids" ]]; then
        while read -r group; do
            [[ -n "$group" ]] && kill -TERM -- "-$group" 2>/dev/null || true
        done <"$pids"
        sleep 3
        while read -r group; do
            [[ -n "$group" ]] && kill -KILL -- "-$group" 2>/dev/null || true
        done <"$pids"
        : >"$pids"
    fi
    rm -rf "$BENCH_SCRATCH"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== installing openhands-agent-server into bench/out/peer (in the background)"
bench/install-peer.sh >"$out/peer-install.out" 2>"$out/peer-install.err" &
install_pid=$!

echo "== building sandboxd as images ship it (static, Dockerfile.fragment) and the driver"
# The build measured is the one Dockerfile.fragment makes: glibc linked
# statically, sandboxd and sandboxd-shim side by side.
target="$(uname -m)-unknown-linux-gnu"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target" --bins
export SANDBOXD_BIN="$root/target/$target/release/sandboxd"
export BENCH_BUILD="static release build (glibc linked in, as Dockerfile.fragment builds it)"
cargo build --release --bin sandboxd
driver="$(cargo bench --bench compare --no-run --message-format=json 2>/dev/null |
    grep '"name":"compare"' | grep -o '"executable":"[^"]*"' | tail -n 1 |
    sed 's/^"executable":"//; s/"$//')"
if [[ -z "$driver" || ! -x "$driver" ]]; then
    echo "could not build the benchmark driver; run: cargo bench --bench compare --no-run" >&2
    exit 1
fi

echo "== waiting for the agent-server install"
if wait "$install_pid"; then
    export PEER_PYTHON="$(tail -n 1 "$out/peer-install.out")"
    echo "agent-server: $PEER_PYTHON"
else
    export PEER_SKIP="$(head -n 1 "$out/peer-install.err")"
    echo "agent-server columns skipped: $PEER_SKIP" >&2
    cat "$out/peer-install.err" >&2
fi
install_pid=""

rev="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# Uncommitted changes other than this command's own outputs.
if [[ -n "$(git status --porcelain --untracked-files=no -- . ':!BENCHMARKS.md' ':!bench/plots' 2>/dev/null)" ]]; then
    rev="$rev+changes"
fi
export BENCH_REV="$rev"

echo "== the exec path alone and the attach latency (cargo bench)"
rm -f "$out/daemon.md" "$out/attach.md"
BENCH_EXEC_ONLY=1 BENCH_OUT="$out/daemon.md" cargo bench --bench daemon >/dev/null ||
    echo "cargo bench --bench daemon failed; its section is left out" >&2
BENCH_OUT="$out/attach.md" cargo bench --bench attach >/dev/null ||
    echo "cargo bench --bench attach failed; its section is left out" >&2

rm -f "$out/download.txt"
bench/download.sh 2>/dev/null | grep -v '^== ' >"$out/download.txt" ||
    echo "bench/download.sh failed; its section is left out" >&2

echo "== running the scenarios"
"$driver" &
driver_pid=$!
wait "$driver_pid"
driver_pid=""
