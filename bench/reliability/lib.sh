# Shared by the reliability scripts (sourced, not run): the binary, a
# daemon on a free loopback port with its state in a temp dir, cleanup.
# Progress goes to stderr; stdout is kept for the Markdown section.

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${SANDBOXD_BIN:-$repo/target/release/sandboxd}
case "$bin" in
*/release/*) build="a release build" ;;
*) build="\`$bin\`" ;;
esac
scratch=$(mktemp -d /tmp/sandboxd-reliability.XXXXXX)
key="reliability-key-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
daemon_pid=""
url=""

say() { echo "$(basename "$0"): $*" >&2; }

cleanup() {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null
        wait "$daemon_pid" 2>/dev/null
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT

need_bin() {
    if [ ! -x "$bin" ]; then
        say "$bin is missing: run cargo build --release --bin sandboxd (or set SANDBOXD_BIN)"
        exit 1
    fi
}

# start_daemon [serve flags...]: sets daemon_pid and url.
start_daemon() {
    printf %s "$key" >"$scratch/key"
    "$bin" serve --listen 127.0.0.1:0 --log-format json \
        --state-dir "$scratch/state" --work-root "$scratch/work" \
        --session-key-file "$scratch/key" --agent-server-url http://127.0.0.1:9 \
        "$@" 2>"$scratch/daemon.log" &
    daemon_pid=$!
    for _ in $(seq 400); do
        url=$(sed -n 's/.*"message":"listening".*"addr":"\([^"]*\)".*/\1/p' "$scratch/daemon.log" | head -n 1)
        [ -n "$url" ] && return 0
        kill -0 "$daemon_pid" 2>/dev/null || break
        sleep 0.05
    done
    say "sandboxd did not start; its log:"
    cat "$scratch/daemon.log" >&2
    return 1
}

# stop_daemon: SIGTERM and wait; returns its exit code.
stop_daemon() {
    kill -TERM "$daemon_pid"
    local code=0
    wait "$daemon_pid" || code=$?
    daemon_pid=""
    return "$code"
}

# api METHOD PATH [JSON]: curl with the key; prints the body.
api() {
    local method=$1 path=$2 data=${3-}
    if [ -n "$data" ]; then
        curl -sS -X "$method" -H "X-Session-API-Key: $key" \
            -H 'Content-Type: application/json' --data "$data" "$url$path"
    else
        curl -sS -X "$method" -H "X-Session-API-Key: $key" "$url$path"
    fi
}
