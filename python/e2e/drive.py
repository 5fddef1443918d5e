# ruff: noqa: E501
"""Drives the real automation service (running with ``python -m
sandboxd.automation`` and a real sandboxd) through its REST API and prints
one JSON line per scenario: final status, when the script ended, when the
service knew. Usage: ``drive.py SERVICE_URL SERVICE_KEY``."""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import time
from typing import Any

import httpx

SCRIPTS = {
    "exit0": "echo hello; date +%s.%N > /tmp/sbd-e2e-end-$AUTOMATION_RUN_ID",
    "exit3": "echo broken-stderr >&2; date +%s.%N > /tmp/sbd-e2e-end-$AUTOMATION_RUN_ID; exit 3",
    "callback": (
        'curl -s -X POST -H "Authorization: Bearer $AUTOMATION_CALLBACK_API_KEY" '
        "-H 'Content-Type: application/json' "
        '-d \'{"status":"COMPLETED","conversation_id":"0123456789abcdef0123456789abcdef",'
        '"cost":0.42}\' "$AUTOMATION_CALLBACK_URL"; date +%s.%N > /tmp/sbd-e2e-end-$AUTOMATION_RUN_ID'
    ),
    "cancel": "echo $$ > /tmp/sbd-e2e-pid-$AUTOMATION_RUN_ID; exec sleep 60",
    "timeout": "echo $$ > /tmp/sbd-e2e-pid-$AUTOMATION_RUN_ID; exec sleep 60",
    "env": "env | cut -d= -f1 | sort | tr '\\n' ' ' >&2; env | grep -c -e svc-key-abc -e sd-key-0123 >&2; exit 5",
}


def tarball(script: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        data = script.encode()
        info = tarfile.TarInfo("main.sh")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


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


def scenario(api: httpx.Client, name: str, script: str, timeout: int = 60) -> dict[str, Any]:
    upload = api.post(
        "/v1/uploads",
        params={"name": name},
        content=tarball(script),
        headers={"Content-Type": "application/gzip"},
    )
    upload.raise_for_status()
    created = api.post(
        "/v1",
        json={
            "name": name,
            "trigger": {"type": "cron", "schedule": "0 0 1 1 *"},
            "tarball_path": upload.json()["tarball_path"]
            if "tarball_path" in upload.json()
            else f"oh-internal://uploads/{upload.json()['id']}",
            "entrypoint": "bash main.sh",
            "timeout": timeout,
        },
    )
    created.raise_for_status()
    automation_id = created.json()["id"]
    started = time.time()
    api.post(f"/v1/{automation_id}/dispatch").raise_for_status()
    extra: dict[str, Any] = {}
    if name == "cancel":
        time.sleep(3)
        run_id = api.get(f"/v1/{automation_id}/runs").json()["runs"][0]["id"]
        api.post(f"/v1/runs/{run_id}/cancel").raise_for_status()
        extra["cancelled_at_s"] = round(time.time() - started, 2)
        extra["process_gone_s"] = watch_pid(run_id, started, started + 40)
    elif name == "timeout":
        time.sleep(1)
        run_id = api.get(f"/v1/{automation_id}/runs").json()["runs"][0]["id"]
        extra["process_gone_s"] = watch_pid(run_id, started, started + 40)
    while time.time() - started < timeout + 60:
        runs = api.get(f"/v1/{automation_id}/runs").json()
        items = runs["runs"]
        if items and items[0]["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
            knew = time.time()
            run = items[0]
            try:
                with open(f"/tmp/sbd-e2e-end-{run['id']}") as f:
                    ended: float | None = float(f.read())
            except OSError:
                ended = None
            if extra.get("process_gone_s") is not None:
                ended = started + extra["process_gone_s"]
            return {
                "scenario": name,
                "status": run["status"],
                "error": run.get("error_detail") or run.get("error"),
                "run": {k: run.get(k) for k in ("conversation_id", "cost", "status_detail")},
                "script_ended_s": None if ended is None else round(ended - started, 2),
                "service_knew_s": round(knew - started, 2),
                "lag_s": None if ended is None else round(knew - ended, 2),
                **extra,
            }
        time.sleep(0.1)
    return {"scenario": name, "status": "no end seen"}


def down_start(api: httpx.Client) -> None:
    """Dispatches a script that ends 4 s later; prints its automation id."""
    script = "sleep 4; date +%s.%N > /tmp/sbd-e2e-end-$AUTOMATION_RUN_ID"
    upload = api.post(
        "/v1/uploads",
        params={"name": "down"},
        content=tarball(script),
        headers={"Content-Type": "application/gzip"},
    )
    upload.raise_for_status()
    created = api.post(
        "/v1",
        json={
            "name": "down",
            "trigger": {"type": "cron", "schedule": "0 0 1 1 *"},
            "tarball_path": upload.json()["tarball_path"],
            "entrypoint": "bash main.sh",
            "timeout": 60,
        },
    )
    created.raise_for_status()
    automation_id = created.json()["id"]
    api.post(f"/v1/{automation_id}/dispatch").raise_for_status()
    while api.get(f"/v1/{automation_id}/runs").json()["runs"][0]["status"] != "RUNNING":
        time.sleep(0.1)
    print(automation_id)


def down_check(api: httpx.Client, automation_id: str) -> None:
    """The run's end as the service shows it once it is back."""
    back = time.time()
    while time.time() - back < 90:
        run = api.get(f"/v1/{automation_id}/runs").json()["runs"][0]
        if run["status"] != "RUNNING":
            ok = run["status"] == "COMPLETED"
            print(
                json.dumps(
                    {
                        "scenario": "down",
                        "status": run["status"],
                        "known_after_back_s": round(time.time() - back, 2),
                    }
                )
            )
            print(f"{int(ok)} passed, {int(not ok)} failed")
            sys.exit(0 if ok else 1)
        time.sleep(0.2)
    print("FAILED down: no end seen 90 s after the service came back\n0 passed, 1 failed")
    sys.exit(1)


def main() -> None:
    url, key = sys.argv[1], sys.argv[2]
    if sys.argv[3:4] in (["down-start"], ["down-check"]):
        with httpx.Client(
            base_url=url + "/api/automation", headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as api:
            if sys.argv[3] == "down-start":
                down_start(api)
            else:
                down_check(api, sys.argv[4])
        return
    check = "--check" in sys.argv[3:]
    which = [a for a in sys.argv[3:] if a != "--check"] or list(SCRIPTS)
    failures = []
    with httpx.Client(
        base_url=url + "/api/automation", headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as api:
        for name in which:
            result = scenario(api, name, SCRIPTS[name], timeout=10 if name == "timeout" else 60)
            print(json.dumps(result)[:600], flush=True)
            failures += [f"{name}: {problem}" for problem in judge(result)]
    if check:
        for failure in failures:
            print("FAILED " + failure)
        print(
            f"{len(which) - len({f.split(':')[0] for f in failures})} passed, "
            f"{len({f.split(':')[0] for f in failures})} failed"
        )
        sys.exit(1 if failures else 0)


def judge(result: dict[str, Any]) -> list[str]:
    """What the scenario's result gets wrong, per the issue's bounds."""
    name, problems = result["scenario"], []
    lag = result.get("lag_s")
    error = str(result.get("error") or "")
    expected = {
        "exit0": "COMPLETED",
        "exit3": "FAILED",
        "callback": "COMPLETED",
        "env": "FAILED",
        "cancel": "CANCELLED",
        "timeout": "FAILED",
    }
    if result["status"] != expected[name]:
        problems.append(f"status {result['status']}")
    if name == "cancel":
        gone, at = result.get("process_gone_s"), result.get("cancelled_at_s")
        if gone is None or at is None or gone - at > 10 + 1:
            problems.append(f"process gone at {gone}s, cancelled at {at}s")
        return problems
    if name == "timeout":
        gone = result.get("process_gone_s")
        if gone is None or gone > 10 + 10 + 2:
            problems.append(f"process gone at {gone}s")
        if "time" not in error.lower():
            problems.append(f"error {error!r}")
    if name != "env" and (lag is None or lag > 2):
        problems.append(f"the service knew {lag}s after the script ended")
    if name == "exit3" and not ("exit_code=3" in error and "broken-stderr" in error):
        problems.append(f"error {error!r}")
    if name == "callback" and (
        result["run"]["conversation_id"] is None or result["run"]["cost"] != 0.42
    ):
        problems.append(f"run {result['run']}")
    if name == "env" and (
        "SESSION_API_KEY " in error
        or (not error.rstrip().endswith("0\n\nstdout:") and " 0\n" not in error)
    ):
        problems.append("the script saw a key")
    return problems


if __name__ == "__main__":
    main()
