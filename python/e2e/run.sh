#!/usr/bin/env bash
# End-to-end: the real automation service (openhands-automation 1.26.0,
# SQLite, started by `python -m sandboxd.automation`) and a real sandboxd,
# driven through the service's REST API by drive.py. Skips (exit 0, with a
# message) only when PyPI cannot be reached to install the service.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="$(mktemp -d)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work" /tmp/sbd-e2e-*; }
trap cleanup EXIT
export UV_PYTHON_DOWNLOADS=never
command -v uv >/dev/null 2>&1 || python3 -m pip install -q uv
root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
python=$(ls "$root"/versions/3.12.*/bin/python3.12 2>/dev/null | head -1 || true)
python=${python:-$(command -v python3.12 || command -v python3)}
venv="$repo/target/py-automation-venv"
echo 'certifi>=2026.10.18' > "$work/overrides.txt"
[ -x "$venv/bin/python" ] || uv venv -q --python "$python" "$venv"
if ! uv pip install -q --python "$venv/bin/python" --override "$work/overrides.txt" \
    --reinstall-package sandboxd openhands-automation==1.26.0 "$repo/python[test]" 2>"$work/pip.log"; then
  if grep -qiE "connect|dns|network|resolve" "$work/pip.log"; then
    echo "e2e skipped: PyPI is unreachable, openhands-automation cannot be installed"; exit 0
  fi
  cat "$work/pip.log" >&2; exit 1
fi
echo "sd-key-0123456789abcdef" > "$work/key"
start_sandboxd() {
"$repo/target/debug/sandboxd" serve --listen "$1" --log-format json --state-dir "$work/state" \
  --work-root "$work/work" --session-key-file "$work/key" --agent-server-url http://127.0.0.1:9 \
  --callback-backoff 0.2 >/dev/null 2>>"$work/sd.log" &
sandboxd=$!
pids+=($sandboxd)
for _ in $(seq 50); do [ "$(grep -c '"addr"' "$work/sd.log" 2>/dev/null)" -ge "$2" ] && break; sleep 0.1; done
}
start_sandboxd 127.0.0.1:0 1
sdurl=$(grep -o '"addr":"[^"]*"' "$work/sd.log" | head -1 | cut -d'"' -f4)
export SANDBOXD_URL="$sdurl" SANDBOXD_SESSION_KEY_FILE="$work/key"
port=$("$venv/bin/python" -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
# start_service [NAME=VALUE...]: the service, with the extra env given.
start_service() {
env LITELLM_LOCAL_MODEL_COST_MAP=True OPENHANDS_SUPPRESS_BANNER=1 \
  AUTOMATION_DB_URL="sqlite+aiosqlite:///$work/a.db" AUTOMATION_AGENT_SERVER_URL=http://127.0.0.1:9 \
  AUTOMATION_AGENT_SERVER_API_KEY=agent-key-xyz AUTOMATION_LOCAL_API_KEY=svc-key-abc \
  AUTOMATION_SERVER_PORT="$port" AUTOMATION_WORKSPACE_BASE="$work/ws" \
  AUTOMATION_DISPATCHER_INTERVAL_SECONDS=1 AUTOMATION_WATCHDOG_INTERVAL_SECONDS=5 \
  AUTOMATION_SANDBOX_PROVISION_RETRY_DELAY=1 AUTOMATION_SANDBOX_PROVISION_MAX_ATTEMPTS=5 "$@" \
  "$venv/bin/python" -m sandboxd.automation >>"$work/svc.log" 2>&1 &
service=$!
pids+=($service)
for _ in $(seq 450); do
  curl -sf -o /dev/null "http://127.0.0.1:$port/api/automation/openapi.json" && break; sleep 0.2
done
}
# The backend's own tests (real daemons of their own) while the service starts.
(cd "$repo/python" && "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_automation_backend.py) \
  >"$work/pytest.log" 2>&1 &
pytest_pid=$!
pids+=($pytest_pid)
start_service
drive() { "$venv/bin/python" "$here/drive.py" "http://127.0.0.1:$port" svc-key-abc "$@"; }
echo "== [${SECONDS}s] the service is up; the scenarios, in parallel"
drive --check
# The service is down when the run ends; the completion comes once it is
# back. It comes back with SANDBOXD_ALLOW_SENSITIVE_ENV=1: runs then get the
# agent-server's key.
automation=$(drive down-start)
kill "$service"; wait "$service" 2>/dev/null || true
sleep 6
start_service SANDBOXD_ALLOW_SENSITIVE_ENV=1
echo "== [${SECONDS}s] the service is back, with SANDBOXD_ALLOW_SENSITIVE_ENV=1"
drive down-check "$automation" & down=$!
drive --check sensitive
wait "$down"
echo "== [${SECONDS}s] sandboxd down at dispatch"
# sandboxd is down at dispatch: the service retries, sandboxd comes back.
kill "$sandboxd"; wait "$sandboxd" 2>/dev/null || true
retries() { grep -c "Sandbox failed to start" "$work/svc.log" || true; }
before=$(retries)
read -r automation since < <(drive sbd-start)
for _ in $(seq 100); do [ "$(retries)" -gt "$before" ] && break; sleep 0.1; done
start_sandboxd "${sdurl#http://}" 2
back=$(date +%s.%N)
echo "the service's failed attempts while sandboxd was down: $(($(retries) - before))"
drive sbd-check "$automation" "$since" "$back"
echo "== the backend's tests (tests/test_automation_backend.py)"
wait "$pytest_pid" && tail -1 "$work/pytest.log" || { cat "$work/pytest.log"; exit 1; }
echo "== [${SECONDS}s] end-to-end passed"
