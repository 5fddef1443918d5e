# ruff: noqa: E501
"""Drives the real automation service (running with ``python -m
sandboxd.automation`` and a real sandboxd) through its REST API and prints
one JSON line per scenario: final status, when the script ended, when the
service knew. The scenarios of one call run in parallel.

Usage: ``drive.py SERVICE_URL SERVICE_KEY [--check] [SCENARIO...]``, or
``drive.py SERVICE_URL SERVICE_KEY down-start|down-check ID|sbd-start|sbd-check ID``.
``SANDBOXD_URL`` and ``SANDBOXD_SESSION_KEY_FILE`` name the daemon, whose
logs show what a run printed.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from judge import URL_PATHS, judge

from sandboxd import Client

END = "date +%s.%N > /tmp/sbd-e2e-end-$AUTOMATION_RUN_ID"
PHASE = "cloning the repo"
SCRIPTS = {
    "exit0": f"echo hello; {END}",
    "exit3": f"echo broken-stderr >&2; {END}; exit 3",
    "callback": (
        'curl -s -X POST -H "Authorization: Bearer $AUTOMATION_CALLBACK_API_KEY" '
        "-H 'Content-Type: application/json' "
        '-d \'{"status":"COMPLETED","conversation_id":"0123456789abcdef0123456789abcdef",'
        f'"cost":0.42}}\' "$AUTOMATION_CALLBACK_URL"; {END}'
    ),
    "cancel": "echo $$ > /tmp/sbd-e2e-pid-$AUTOMATION_RUN_ID; exec sleep 60",
    "timeout": "echo $$ > /tmp/sbd-e2e-pid-$AUTOMATION_RUN_ID; exec sleep 60",
    "env": "env | cut -d= -f1 | sort | tr '\\n' ' ' >&2; env | grep -c -e svc-key-abc -e sd-key-0123 >&2; exit 5",
    # With SANDBOXD_ALLOW_SENSITIVE_ENV=1: what an SDK script needs, and
    # still neither the service's key nor sandboxd's session key.
    "sensitive": (
        'echo "SESSION_API_KEY=${SESSION_API_KEY:-} AGENT_SERVER_URL=${AGENT_SERVER_URL:-}"; '
        f"env | grep -c -e svc-key-abc -e sd-key-0123; {END}"
    ),
    "phase": (
        "sleep 1; date +%s.%N > /tmp/sbd-e2e-phase-$AUTOMATION_RUN_ID; "
        'curl -s -o /dev/null -X POST -H "Authorization: Bearer $AUTOMATION_CALLBACK_API_KEY" '
        f'-H \'Content-Type: application/json\' -d \'{{"phase":"{PHASE}"}}\' "$AUTOMATION_PHASE_URL"; '
        f"sleep 3; {END}"
    ),
    # The bundle of the URL scenarios: main.sh reads a file beside it.
    "url": f"cat data.txt; {END}",
}
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
# What one call runs when it names none ("sensitive" needs the service
# started with SANDBOXD_ALLOW_SENSITIVE_ENV=1).
DEFAULT = [n for n in SCRIPTS if n != "sensitive"] + [n for n in URL_PATHS if n not in SCRIPTS]


def tarball(script: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, text in (("main.sh", script), ("data.txt", "from-the-url\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class Origin:
    """The bundles' http server: the url scenario's tarball, ``/not-a-tar``
    (a page), ``/flaky.tar.gz`` (503 until ``heal``), 404 otherwise."""

    def __init__(self) -> None:
        self.healed = threading.Event()
        bundle, healed = tarball(SCRIPTS["url"]), self.healed

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = 404, b""
                if self.path == "/url.tar.gz" or (self.path == "/flaky.tar.gz" and healed.is_set()):
                    status, body = 200, bundle
                elif self.path == "/flaky.tar.gz":
                    status = 503
                elif self.path == "/not-a-tar":
                    status, body = 200, b"<html>sign in</html>\n" * 50
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def create(api: httpx.Client, name: str, timeout: int = 60, url: str | None = None) -> str:
    """An automation running ``bash main.sh``, its bundle uploaded or at
    ``url``; its id. The create route takes only https/s3/gs URLs, so an
    http:// one goes in by the update route (which takes http:// too)."""
    if url is None:
        upload = api.post(
            "/v1/uploads",
            params={"name": name},
            content=tarball(SCRIPTS[name]),
            headers={"Content-Type": "application/gzip"},
        )
        upload.raise_for_status()
        tarball_path = upload.json()["tarball_path"]
    else:
        tarball_path = "https://bundles.invalid/placeholder.tar.gz"
    created = api.post(
        "/v1",
        json={
            "name": name,
            "trigger": {"type": "cron", "schedule": "0 0 1 1 *"},
            "tarball_path": tarball_path,
            "entrypoint": "bash main.sh",
            "timeout": timeout,
        },
    )
    created.raise_for_status()
    automation_id: str = created.json()["id"]
    if url is not None:
        api.patch(f"/v1/{automation_id}", json={"tarball_path": url}).raise_for_status()
    return automation_id


def runs(api: httpx.Client, automation_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get(f"/v1/{automation_id}/runs").json()["runs"]
    return sorted(items, key=lambda run: str(run["created_at"]))


def wait_end(
    api: httpx.Client, automation_id: str, limit: float, count: int = 1
) -> tuple[dict[str, Any], float] | None:
    """The ``count``-th run once it has ended, and when that was seen."""
    deadline = time.time() + limit
    while time.time() < deadline:
        items = runs(api, automation_id)
        if len(items) >= count and items[count - 1]["status"] in TERMINAL:
            return items[count - 1], time.time()
        time.sleep(0.1)
    return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch_pid(run_id: str, started: float, deadline: float) -> float | None:
    """Seconds from ``started`` when the run's process was gone."""
    path = f"/tmp/sbd-e2e-pid-{run_id}"
    while time.time() < deadline and not os.path.exists(path):
        time.sleep(0.05)
    try:
        with open(path) as f:
            pid = int(f.read())
    except (OSError, ValueError):
        return None
    while time.time() < deadline:
        if not alive(pid):
            return round(time.time() - started, 2)
        time.sleep(0.05)
    return None


def stamp(kind: str, run_id: str) -> float | None:
    try:
        with open(f"/tmp/sbd-e2e-{kind}-{run_id}") as f:
            return float(f.read())
    except (OSError, ValueError):
        return None


def output(run_id: str) -> str:
    """What the run printed, from sandboxd (the run's id is the service's)."""
    with open(os.environ["SANDBOXD_SESSION_KEY_FILE"]) as f:
        key = f.read().strip()
    with Client(os.environ["SANDBOXD_URL"], key) as sandboxd:
        return sandboxd.logs(run_id)


def first_run_id(api: httpx.Client, automation_id: str) -> str:
    while not (items := runs(api, automation_id)):
        time.sleep(0.05)
    return str(items[0]["id"])


def watch_phase(api: httpx.Client, automation_id: str, deadline: float) -> float | None:
    """When the service's run showed the script's phase."""
    while time.time() < deadline:
        items = runs(api, automation_id)
        if items and items[0].get("current_phase") == PHASE:
            return time.time()
        if items and items[0]["status"] in TERMINAL:
            return None
        time.sleep(0.05)
    return None


def scenario(api: httpx.Client, name: str, origin: Origin | None) -> dict[str, Any]:
    timeout = 10 if name == "timeout" else 60
    url = origin.url + URL_PATHS[name] if name in URL_PATHS and origin else None
    automation_id = create(api, name, timeout, url)
    started = time.time()
    api.post(f"/v1/{automation_id}/dispatch").raise_for_status()
    extra: dict[str, Any] = {}
    if name == "cancel":
        time.sleep(3)
        run_id = first_run_id(api, automation_id)
        api.post(f"/v1/runs/{run_id}/cancel").raise_for_status()
        extra["cancelled_at_s"] = round(time.time() - started, 2)
        extra["process_gone_s"] = watch_pid(run_id, started, started + 40)
    elif name == "timeout":
        run_id = first_run_id(api, automation_id)
        extra["process_gone_s"] = watch_pid(run_id, started, started + 40)
    elif name == "phase":
        seen = watch_phase(api, automation_id, started + 20)
        posted = stamp("phase", first_run_id(api, automation_id))
        extra["phase_seen_s"] = None if seen is None else round(seen - started, 2)
        extra["phase_lag_s"] = None if seen is None or posted is None else round(seen - posted, 2)
    ended = wait_end(api, automation_id, timeout + 60)
    if ended is None:
        return {"scenario": name, "status": "no end seen"}
    run, knew = ended
    if name == "url503" and origin is not None:
        # A transient failure leaves the automation on; the next dispatch
        # (as the next trigger would) fetches the healed URL.
        extra["first"] = summary(run, started, knew)
        extra["state_after_first"] = api.get(f"/v1/{automation_id}").json().get("state")
        origin.healed.set()
        started = time.time()
        api.post(f"/v1/{automation_id}/dispatch").raise_for_status()
        ended = wait_end(api, automation_id, 60, count=2)
        if ended is None:
            return {"scenario": name, "status": "no end of the second run seen", **extra}
        run, knew = ended
    if name in ("url404", "nottar"):
        # The service marks the run FAILED, then turns the automation off;
        # a retry would show up as a second run within these 2 s.
        for _ in range(20):
            extra["state"] = api.get(f"/v1/{automation_id}").json().get("state")
            time.sleep(0.1)
        extra["runs"] = len(runs(api, automation_id))
    if name in ("url", "url503", "sensitive") and run["status"] == "COMPLETED":
        extra["output"] = output(str(run["id"]))
    gone = extra.get("process_gone_s")
    end = started + gone if gone is not None else stamp("end", str(run["id"]))
    return {"scenario": name, **summary(run, started, knew, end), **extra}


def shown(result: dict[str, Any]) -> dict[str, Any]:
    """The result as printed: errors cut at 300 characters, the service's
    status detail down to its kind, transience and code."""
    out = dict(result)
    for key in ("first", "run"):
        if isinstance(out.get(key), dict):
            out[key] = shown(out[key])
    if isinstance(out.get("error"), str):
        out["error"] = out["error"][:300]
    detail = out.get("status_detail")
    if isinstance(detail, dict):
        out["status_detail"] = {k: detail.get(k) for k in ("kind", "transient", "code")}
    return out


def summary(
    run: dict[str, Any], started: float, knew: float, end: float | None = None
) -> dict[str, Any]:
    return {
        "status": run["status"],
        "error": run.get("error_detail") or run.get("error"),
        "run": {k: run.get(k) for k in ("conversation_id", "cost", "status_detail")},
        "script_ended_s": None if end is None else round(end - started, 2),
        "service_knew_s": round(knew - started, 2),
        "lag_s": None if end is None else round(knew - end, 2),
    }


def down_start(api: httpx.Client) -> None:
    """Dispatches a script that ends 4 s later; prints its automation id
    once the run is RUNNING."""
    SCRIPTS["down"] = f"sleep 4; {END}"
    automation_id = create(api, "down")
    api.post(f"/v1/{automation_id}/dispatch").raise_for_status()
    while (items := runs(api, automation_id)) == [] or items[0]["status"] != "RUNNING":
        time.sleep(0.1)
    print(automation_id)


def sbd_start(api: httpx.Client) -> None:
    """Dispatches (sandboxd is down); prints the automation id and the time."""
    SCRIPTS["sbd"] = f"echo dispatched-after-a-retry; {END}"
    automation_id = create(api, "sbd")
    api.post(f"/v1/{automation_id}/dispatch").raise_for_status()
    print(automation_id, time.time())


def end_check(
    api: httpx.Client, name: str, automation_id: str, since: float, back: float | None = None
) -> None:
    """The run's end as the service shows it (COMPLETED expected): seconds
    after ``since``, and after ``back`` (when sandboxd was back)."""
    ended = wait_end(api, automation_id, 90)
    if ended is None:
        print(f"FAILED {name}: no end seen within 90 s\n0 passed, 1 failed")
        sys.exit(1)
    run, knew = ended
    ok = run["status"] == "COMPLETED"
    if name == "down":
        # sandboxd retries an unreachable service within 10 s.
        ok = ok and knew - since <= 15
    print(
        json.dumps(
            {
                "scenario": name,
                "status": run["status"],
                "error": run.get("error_detail"),
                "known_after_s": round(knew - since, 2),
                **({} if back is None else {"back_at_s": round(back - since, 2)}),
            }
        )
    )
    print(f"{int(ok)} passed, {int(not ok)} failed")
    sys.exit(0 if ok else 1)


def main() -> None:
    url, key, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    with httpx.Client(
        base_url=url + "/api/automation", headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as api:
        single: dict[str, Callable[[], None]] = {
            "down-start": lambda: down_start(api),
            "down-check": lambda: end_check(api, "down", args[1], time.time()),
            "sbd-start": lambda: sbd_start(api),
            "sbd-check": lambda: end_check(api, "sbd", args[1], float(args[2]), float(args[3])),
        }
        if args and args[0] in single:
            single[args[0]]()
            return
    check = "--check" in args
    which = [a for a in args if a != "--check"] or DEFAULT
    origin = Origin() if set(which) & URL_PATHS.keys() else None

    def one(name: str) -> dict[str, Any]:
        with httpx.Client(
            base_url=url + "/api/automation", headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as api:
            result = scenario(api, name, origin)
        print(json.dumps(shown(result)), flush=True)
        return result

    with ThreadPoolExecutor(len(which)) as pool:
        results = list(pool.map(one, which))
    failures = [f"{r['scenario']}: {problem}" for r in results for problem in judge(r)]
    if check:
        for failure in failures:
            print("FAILED " + failure)
        failed = len({f.split(":")[0] for f in failures})
        print(f"{len(which) - failed} passed, {failed} failed")
        sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
