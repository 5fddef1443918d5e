#!/usr/bin/env bash
# API fuzzing of a live sandboxd from its own OpenAPI document.
#
# Installs schemathesis (pinned) into a throwaway venv, starts sandboxd on
# 127.0.0.1:0 with a session key and everything (state, work root, upload
# root) inside a temp dir, as uid 65534 when run as root (the generated
# requests start real runs with generated commands), runs schemathesis
# against GET /openapi.json with the key and the checks
# not_a_server_error, response_schema_conformance, status_code_conformance
# and content_type_conformance, and prints a Markdown section to stdout.
# Progress goes to stderr. Exits 0 when every check held: no failure, no
# 5xx, no hang, and the daemon still healthy at the end.
#
# Environment:
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 40)
#   SCHEMATHESIS_SEED          seed, for a reproducible run (default: random)
#   SCHEMATHESIS_VENV          where the venv goes (default target/schemathesis-venv)
#   SANDBOXD_BIN               the binary to test (default: cargo build, debug)
#   SCHEMATHESIS_KEEP          a dir to copy the reports and the daemon's log to
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=4.32.5
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-40}
REQUEST_TIMEOUT=20
VENV=$(realpath -m "${SCHEMATHESIS_VENV:-target/schemathesis-venv}")

log() { printf '%s\n' "$*" >&2; }

if [ -z "${SANDBOXD_BIN:-}" ]; then
  log "== building sandboxd"
  cargo build --quiet --bin sandboxd >&2
  SANDBOXD_BIN=target/debug/sandboxd
fi
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "version $VERSION\$"; then
  log "== installing schemathesis $VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION" >&2
fi

tmp=$(mktemp -d /tmp/sandboxd-schemathesis.XXXXXX)
daemon_pid=
cleanup() {
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$daemon_pid" 2>/dev/null || true
  fi
  if [ -n "${SCHEMATHESIS_KEEP:-}" ]; then
    mkdir -p "$SCHEMATHESIS_KEEP"
    cp "$tmp"/report.json "$tmp"/report.har "$tmp"/daemon.log "$SCHEMATHESIS_KEEP"/ 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp/state" "$tmp/work" "$tmp/files" "$tmp/home"
cp "$SANDBOXD_BIN" "$tmp/sandboxd"
key=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
printf '%s' "$key" > "$tmp/key"
as_user=()
user="uid $(id -u)"
if [ "$(id -u)" = 0 ]; then
  chown -R 65534:65534 "$tmp"
  as_user=(setpriv --reuid 65534 --regid 65534 --clear-groups --)
  user="uid 65534 (nobody)"
fi

log "== starting sandboxd as $user"
# A clean environment: no credential of the caller reaches the daemon or
# the generated runs.
"${as_user[@]}" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$tmp/home" LANG=C.UTF-8 \
  "$tmp/sandboxd" serve --listen 127.0.0.1:0 --log-format json \
  --state-dir "$tmp/state" --work-root "$tmp/work" \
  --upload-root "$tmp/work,$tmp/files" --session-key-file "$tmp/key" \
  --agent-server-url http://127.0.0.1:9 --cloud-api-url http://127.0.0.1:9 \
  --internal-server-url http://127.0.0.1:9 \
  --default-timeout 10 --kill-grace 1 --max-running 16 \
  --callback-max-age 5s --secret-timeout 2 --shutdown-grace 3 \
  > "$tmp/daemon.out" 2> "$tmp/daemon.log" &
daemon_pid=$!
url=
for _ in $(seq 300); do
  url=$(sed -n 's/.*"message":"listening","addr":"\([^"]*\)".*/\1/p' "$tmp/daemon.log" | head -1)
  [ -n "$url" ] && break
  kill -0 "$daemon_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$url" ]; then
  log "sandboxd did not start:"; cat "$tmp/daemon.log" >&2
  exit 1
fi
log "== schemathesis against $url/openapi.json (max examples $MAX_EXAMPLES)"

# The one 5xx the contract asks for: POST .../bundle answers 502
# bundle_fetch_failed when the URL's origin cannot be reached (a generated
# URL never can). Counted apart below; any other 5xx fails the run.
cat > "$tmp/schemathesis.toml" <<'TOML'
[[operations]]
include-path = "/v1/runs/{run_id}/bundle"
include-method = "POST"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "502"]
TOML

seed_args=()
[ -n "${SCHEMATHESIS_SEED:-}" ] && seed_args=(--seed "$SCHEMATHESIS_SEED")
started=$(date +%s)
set +e
# From inside the temp dir: schemathesis keeps a cache in its working dir.
(cd "$tmp" && "$VENV/bin/schemathesis" --config-file "$tmp/schemathesis.toml" run "$url/openapi.json" \
  -H "X-Session-API-Key: $key" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
  --max-examples "$MAX_EXAMPLES" --request-timeout "$REQUEST_TIMEOUT" \
  --continue-on-failure --workers 2 --suppress-health-check all "${seed_args[@]}" \
  --report json,har --report-json-path "$tmp/report.json" --report-har-path "$tmp/report.har" \
  --warnings off >&2)
st_exit=$?
set -e
elapsed=$(( $(date +%s) - started ))

# The daemon's own view: still alive, and its request counters by status.
healthy=no
fetch() {
  "$VENV/bin/python" -c 'import sys, urllib.request as u
req = u.Request(sys.argv[1], headers={"X-Session-API-Key": sys.argv[2]})
sys.stdout.write(u.urlopen(req, timeout=5).read().decode())' "$@"
}
if fetch "$url/healthz" "$key" >/dev/null 2>&1; then healthy=yes; fi
fetch "$url/metrics" "$key" > "$tmp/metrics.txt" 2>/dev/null || true

"$VENV/bin/python" - "$tmp" "$st_exit" "$elapsed" "$healthy" "$user" "$VERSION" "$MAX_EXAMPLES" <<'PY'
import json, re, sys
tmp, st_exit, elapsed, healthy, user, version, max_examples = sys.argv[1:]
report = json.load(open(f"{tmp}/report.json"))
har = json.load(open(f"{tmp}/report.har"))
entries = har["log"]["entries"]
CHECKS = {
    "ST101": "not_a_server_error",
    "ST103": "status_code_conformance",
    "ST104": "content_type_conformance", "ST105": "content_type_conformance",
    "ST106": "content_type_conformance",
    "ST108": "response_schema_conformance", "ST109": "response_schema_conformance",
    "ST110": "response_schema_conformance", "ST111": "response_schema_conformance",
}
by_check = {name: 0 for name in dict.fromkeys(CHECKS.values())}
failed_ops = {}
for failure in report.get("failures", []):
    name = CHECKS.get(failure.get("code"), failure.get("title", "other"))
    by_check[name] = by_check.get(name, 0) + failure.get("count", 1)
    for op in failure.get("operations", []):
        failed_ops.setdefault(op, set()).add(name)
errors = report.get("errors", [])
hangs = sum(1 for e in errors if re.search(r"time ?out|timed out", json.dumps(e), re.I))
other_errors = len(errors) - hangs
sent = len(entries)
def fetch_502(method, path, status):
    return method == "POST" and status == 502 and re.fullmatch(r"/v1/runs/[^/]+/bundle", path)
har_5xx = har_502 = 0
for e in entries:
    status = e["response"]["status"]
    path = re.sub(r"^https?://[^/]+", "", e["request"]["url"]).split("?")[0]
    if fetch_502(e["request"]["method"], path, status):
        har_502 += 1
    elif status >= 500:
        har_5xx += 1
served = served_5xx = 0
for line in open(f"{tmp}/metrics.txt", errors="replace"):
    m = re.match(r'sandboxd_http_requests_total\{method="(\w+)",route="([^"]*)",status="(\d+)"\} (\d+)', line)
    if m:
        method, route, status, count = m.group(1), m.group(2), int(m.group(3)), int(m.group(4))
        served += count
        if status >= 500 and not fetch_502(method, route.replace("{run_id}", "x"), status):
            served_5xx += count
fives = max(har_5xx, served_5xx)
ops = report["operations"]
failures = sum(by_check.values())
ok = failures == 0 and fives == 0 and hangs == 0 and other_errors == 0 and healthy == "yes"
print("## API fuzzing from the OpenAPI document (schemathesis)\n")
print(f"schemathesis {version} against a live sandboxd run as {user}, all four checks, "
      f"at most {max_examples} examples per operation and phase (coverage, fuzzing, stateful), "
      f"seed {report.get('seed')}; {elapsed} s. Regenerate: `bench/reliability/20-schemathesis.sh`.\n")
print("| endpoints | requests sent | requests served | " + " | ".join(f"failures: {c}" for c in by_check) + " | 5xx | hangs | daemon healthy after |")
print("|---:|---:|---:|" + "---:|" * len(by_check) + "---:|---:|---|")
print(f"| {ops['tested']} of {ops['total']} | {sent} | {served} | " + " | ".join(str(v) for v in by_check.values())
      + f" | {fives} | {hangs} | {healthy} |")
print()
print(f"5xx counts every 5xx answer but one the contract asks for: `502 bundle_fetch_failed` "
      f"from `POST /v1/runs/{{run_id}}/bundle` when a generated URL's origin cannot be reached "
      f"({har_502} such answers). Requests served are the daemon's own count (`/metrics`), "
      f"schemathesis's schema loads included.\n")
if failed_ops:
    print("Failing operations: " + "; ".join(f"`{op}` ({', '.join(sorted(c))})" for op, c in sorted(failed_ops.items())) + "\n")
if other_errors:
    print(f"Schemathesis errors other than timeouts: {other_errors} (see its output).\n")
print(f"Result: {'**pass**' if ok else '**FAIL**'} (schemathesis exit code {st_exit}).\n")
sys.exit(0 if ok else 1)
PY
