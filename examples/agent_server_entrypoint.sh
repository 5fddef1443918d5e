#!/usr/bin/env bash
# Entrypoint mode with the real OpenHands agent-server, tried as a new user
# would: install openhands-agent-server in a throwaway venv, run
#
#   sandboxd serve -- <venv>/bin/python -m openhands.agent_server --host 127.0.0.1 --port 60000
#
# wait for `agent_server.healthy: true` in GET /v1/status, kill the
# agent-server and see sandboxd bring it back, then SIGTERM sandboxd and
# check that it exits cleanly: sandboxd exits with the agent-server's code,
# and uvicorn, after its graceful shutdown, re-raises the SIGTERM it got, so
# a clean stop is 143 (128+SIGTERM), as under tini; 0 is accepted too.
#
# Slow (the install takes minutes, the agent-server ~10 s to start), so it is
# not part of CI. Usage:
#
#   cargo build && examples/agent_server_entrypoint.sh
#
# Environment:
#   SANDBOXD      binary to use            [default: target/debug/sandboxd]
#   WORK          scratch dir              [default: a new temp dir, removed at the end]
#   VENV          reuse this venv instead of installing (it must hold the agent-server)
#   PYTHON        Python 3.12 to build the venv with [default: pyenv's 3.12.1]
#   CONSTRAINTS   pip constraints file     [default: ../shared/peers/peers-freeze.txt when present]
#   INSTALL_ONLY  set to 1 to stop after the install (prints the venv path)
#   PORT, LISTEN  agent-server port (60000) and sandboxd's address (127.0.0.1:60001)
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
SANDBOXD="${SANDBOXD:-$here/target/debug/sandboxd}"
PORT="${PORT:-60000}"
LISTEN="${LISTEN:-127.0.0.1:60001}"
KEY="example-session-key-$RANDOM$RANDOM"
if [[ -z "${WORK:-}" ]]; then
  WORK="$(mktemp -d /tmp/sandboxd-entrypoint.XXXXXX)"
  trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"
say() { printf '[%6.1fs] %s\n' "$(( $(date +%s%N) / 1000000 - t0 ))e-3" "$*"; }
t0=$(( $(date +%s%N) / 1000000 ))
fail() { say "FAILED: $*"; exit 1; }

install() {
  local python="${PYTHON:-$(PYENV_VERSION=3.12.1 pyenv which python3.12)}"
  local venv="$WORK/venv" uvenv="$WORK/uv"
  say "python: $python ($("$python" --version))"
  "$python" -m venv "$uvenv"
  "$uvenv/bin/pip" install -q uv
  "$python" -m venv "$venv"
  # The wheels ask for certifi>=2026.10.19, newer than the registry here has;
  # certifi is only the CA bundle, so the override is harmless.
  echo 'certifi>=2026.10.18' >"$WORK/override.txt"
  local constraints="${CONSTRAINTS:-$here/../shared/peers/peers-freeze.txt}"
  local extra=()
  if [[ -f "$constraints" ]]; then extra=(--constraint "$constraints"); fi
  "$uvenv/bin/uv" pip install -q --python "$venv/bin/python" \
    --override "$WORK/override.txt" "${extra[@]}" openhands-agent-server==1.58.2
  # Without precompiled bytecode the first start takes twice as long.
  "$venv/bin/python" -m compileall -q -j 0 "$venv/lib" >/dev/null 2>&1 || true
  VENV="$venv"
  say "installed into $VENV"
}

if [[ -z "${VENV:-}" ]]; then
  say "installing openhands-agent-server into $WORK/venv (takes a few minutes)"
  install
fi
[[ -x "$VENV/bin/python" ]] || fail "no python in VENV=$VENV"
if [[ "${INSTALL_ONLY:-}" == 1 ]]; then echo "$VENV"; trap - EXIT; exit 0; fi
[[ -x "$SANDBOXD" ]] || fail "no sandboxd binary at $SANDBOXD (cargo build first)"

status() { curl -fsS -H "X-Session-API-Key: $KEY" "http://$LISTEN/v1/status"; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
wait_until() { # wait_until SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  local until=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < until )) || fail "$what did not happen within ${limit}s"
    sleep 0.2
  done
  say "$what"
}
healthy() { [[ "$(status | field 'd["agent_server"]["healthy"]')" == True ]]; }

mkdir -p "$WORK/agent" "$WORK/state"
cd "$WORK/agent"   # the agent-server keeps its state relative to its CWD
say "starting sandboxd serve -- $VENV/bin/python -m openhands.agent_server"
SESSION_API_KEY="$KEY" LITELLM_LOCAL_MODEL_COST_MAP=True \
  "$SANDBOXD" serve --listen "$LISTEN" --state-dir "$WORK/state" \
  --work-root "$WORK/work" --agent-server-url "http://127.0.0.1:$PORT" \
  -- "$VENV/bin/python" -m openhands.agent_server --host 127.0.0.1 --port "$PORT" \
  >"$WORK/sandboxd.out" 2>"$WORK/sandboxd.err" &
sandboxd=$!

wait_until 10 "sandboxd answers /healthz" curl -fsS "http://$LISTEN/healthz"
wait_until 90 "agent_server.healthy is true" healthy
status | python3 -m json.tool | sed -n '/"service"/,/}/p'
pid1=$(status | field 'd["service"]["pid"]')
say "agent-server pid $pid1; killing it with SIGKILL"
kill -KILL "$pid1"
wait_until 10 "sandboxd sees it gone" bash -c "! kill -0 $pid1 2>/dev/null"
new_pid() { p=$(status | field 'd["service"]["pid"]'); [[ "$p" != None && "$p" != "$pid1" ]]; }
wait_until 30 "sandboxd restarted it" new_pid
wait_until 90 "agent_server.healthy is true again" healthy
status | field '(d["service"]["state"], d["service"]["restarts"], d["service"]["pid"])'

say "SIGTERM to sandboxd"
kill -TERM "$sandboxd"
code=0; wait "$sandboxd" || code=$?
say "sandboxd exited with $code"
grep -c . "$WORK/sandboxd.out" | xargs -I{} echo "  service stdout lines passed through: {}"
echo "  last daemon log lines:"; tail -n 5 "$WORK/sandboxd.err" | sed 's/^/    /'
grep -q "Application shutdown complete" "$WORK/sandboxd.out" "$WORK/sandboxd.err" \
  || fail "the agent-server did not shut down gracefully"
[[ $code == 0 || $code == 143 ]] || fail "sandboxd exited with $code, not 0 or 143"
if pgrep -f "openhands.agent_server --host 127.0.0.1 --port $PORT" >/dev/null; then
  fail "an agent-server is still running"
fi
say "OK: clean exit, nothing left running"
