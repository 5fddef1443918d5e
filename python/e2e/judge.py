"""The bounds of the end-to-end scenarios (``drive.py``): what a
scenario's result gets wrong."""

from __future__ import annotations

from typing import Any

# Scenarios whose bundle the service names by an http:// URL on drive.py's
# origin, and its path there.
URL_PATHS = {
    "url": "/url.tar.gz",
    "url404": "/missing.tar.gz",
    "nottar": "/not-a-tar",
    "url503": "/flaky.tar.gz",
}


def judge(result: dict[str, Any]) -> list[str]:
    """What the scenario's result gets wrong, per the issue's bounds."""
    name, problems = result["scenario"], []
    lag = result.get("lag_s")
    error = str(result.get("error") or "")
    expected = {
        "exit3": "FAILED",
        "env": "FAILED",
        "cancel": "CANCELLED",
        "timeout": "FAILED",
        "url404": "FAILED",
        "nottar": "FAILED",
    }.get(name, "COMPLETED")
    if result["status"] != expected:
        problems.append(f"status {result['status']} ({error[:200]})")
    if name == "cancel":
        gone, at = result.get("process_gone_s"), result.get("cancelled_at_s")
        if gone is None or at is None or gone - at > 10 + 1:
            problems.append(f"process gone at {gone}s, cancelled at {at}s")
        return problems
    if name in ("url404", "nottar"):
        code = {"url404": "bundle_unavailable", "nottar": "bad_archive"}[name]
        if code not in error or URL_PATHS[name] not in error:
            problems.append(f"error {error!r}")
        if result.get("state") == "ACTIVE" or result.get("runs") != 1:
            problems.append(
                f"not permanent: state {result.get('state')}, {result.get('runs')} runs"
            )
        if result["service_knew_s"] > 5:
            problems.append(f"the service knew at {result['service_knew_s']}s")
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
    if name in ("url", "url503") and result.get("output") != "from-the-url\n":
        problems.append(f"output {result.get('output')!r}")
    if name == "url503":
        first = result.get("first") or {}
        if first.get("status") != "FAILED" or "bundle_fetch_failed" not in str(first.get("error")):
            problems.append(f"first run {first}")
        if result.get("state_after_first") != "ACTIVE":
            problems.append(f"state after the transient failure {result.get('state_after_first')}")
    if name == "phase" and (result.get("phase_lag_s") is None or result["phase_lag_s"] > 2):
        problems.append(f"phase seen {result.get('phase_lag_s')}s after it was posted")
    if name == "sensitive" and result.get("output") != (
        "SESSION_API_KEY=agent-key-xyz AGENT_SERVER_URL=http://127.0.0.1:9\n0\n"
    ):
        problems.append(f"output {result.get('output')!r}")
    return problems
