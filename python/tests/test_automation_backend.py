"""The automation backend (``sandboxd.automation``) against a real daemon:
how sandboxd's answers become the service's dispatch outcomes, and what a
run's env holds. Needs the ``[automation]`` extra (openhands-automation);
skipped without it. ``python/e2e/run.sh`` runs it in the service's venv.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import Daemon, tarball

pytest.importorskip("openhands.automation")

from openhands.automation.exceptions import (
    PermanentDispatchError,
    SandboxProvisioningError,
)

from sandboxd import AsyncClient
from sandboxd.automation import (
    SandboxdBackend,
    SandboxdSettings,
    execute_in_sandboxd,
)

AGENT_KEY = "agent-server-key-0123"
SERVICE_KEY = "service-key-4567"


class Origin:
    """An http server for bundles: ``/ok.tar.gz``, ``/not-a-tar``,
    ``/flaky.tar.gz`` (503 until ``heal()``) and 404 for anything else."""

    def __init__(self) -> None:
        self.healed = threading.Event()
        bundle = tarball({"main.sh": "cat data.txt\n", "data.txt": "from-the-url\n"})
        healed = self.healed

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body, path = 404, b"", self.path.split("?")[0]
                if path == "/ok.tar.gz" or (path == "/flaky.tar.gz" and healed.is_set()):
                    status, body = 200, bundle
                elif path == "/flaky.tar.gz":
                    status = 503
                elif path == "/not-a-tar":
                    status, body = 200, b"<html>a login page</html>\n" * 40
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def heal(self) -> None:
        self.healed.set()


@pytest.fixture
def origin() -> Iterator[Origin]:
    served = Origin()
    threading.Thread(target=served.server.serve_forever, daemon=True).start()
    yield served
    served.server.shutdown()


def closed_url() -> str:
    """An address where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def settings(url: str, key: str | None, **kwargs: Any) -> SandboxdSettings:
    return SandboxdSettings(
        url=url,
        session_key=key,
        callback_key=SERVICE_KEY,
        agent_server_url="http://127.0.0.1:9",
        agent_server_key=AGENT_KEY,
        **kwargs,
    )


async def output(daemon: Daemon, run_id: str) -> tuple[str, str]:
    async with AsyncClient(daemon.url, daemon.key) as sandboxd:
        run = await sandboxd.wait(run_id, timeout=20)
        return run.state.value, await sandboxd.logs(run_id)


async def test_unreachable_sandboxd_is_a_provisioning_error(daemon: Daemon) -> None:
    """The service retries ``SandboxProvisioningError`` before failing the run."""
    down = SandboxdBackend(settings(closed_url(), daemon.key))
    with pytest.raises(SandboxProvisioningError, match="cannot reach sandboxd"):
        await down.get_execution_context(None)  # type: ignore[arg-type]
    up = SandboxdBackend(settings(daemon.url, daemon.key))
    ctx = await up.get_execution_context(None)  # type: ignore[arg-type]
    assert ctx.agent_url == daemon.url
    assert ctx.sandbox_id is None


async def test_unreachable_sandboxd_at_dispatch_is_transient() -> None:
    result = await execute_in_sandboxd(
        settings(closed_url(), "k"), entrypoint="true", tarball_source=b"", run_id="t-down"
    )
    assert not result.success
    assert "cannot reach sandboxd" in (result.error or "")


@pytest.mark.parametrize(
    ("path", "code"),
    [("/missing.tar.gz", "bundle_unavailable"), ("/not-a-tar", "bad_archive")],
)
async def test_bad_bundle_url_is_permanent(
    daemon: Daemon, origin: Origin, path: str, code: str
) -> None:
    with pytest.raises(PermanentDispatchError, match=code) as raised:
        await execute_in_sandboxd(
            settings(daemon.url, daemon.key),
            entrypoint="bash main.sh",
            tarball_source=origin.url + path + "?signature=s3cr3t",
            run_id="t-perm",
        )
    assert f"{origin.url}{path}: " in str(raised.value)
    assert "s3cr3t" not in str(raised.value)
    async with AsyncClient(daemon.url, daemon.key) as sandboxd:
        assert [run async for run in sandboxd.runs()] == []


async def test_bundle_url_503_is_transient_and_a_retry_succeeds(
    daemon: Daemon, origin: Origin
) -> None:
    sbd = settings(daemon.url, daemon.key)
    first = await execute_in_sandboxd(
        sbd, entrypoint="bash main.sh", tarball_source=origin.url + "/flaky.tar.gz", run_id="t-503"
    )
    assert not first.success
    assert "bundle_fetch_failed" in (first.error or "")
    assert "503" in (first.error or "")
    origin.heal()
    again = await execute_in_sandboxd(
        sbd, entrypoint="bash main.sh", tarball_source=origin.url + "/flaky.tar.gz", run_id="t-503"
    )
    assert again.success
    assert await output(daemon, "t-503") == ("succeeded", "from-the-url\n")


async def test_bundle_url_dispatch_runs_the_fetched_script(daemon: Daemon, origin: Origin) -> None:
    result = await execute_in_sandboxd(
        settings(daemon.url, daemon.key),
        entrypoint="bash main.sh",
        tarball_source=origin.url + "/ok.tar.gz",
        run_id="t-url",
    )
    assert result.success and result.bash_command_id == "t-url"
    assert await output(daemon, "t-url") == ("succeeded", "from-the-url\n")


@pytest.mark.parametrize("source", ["/etc/passwd", "s3://bucket/b.tar.gz?X-Amz-Signature=s3cr3t"])
async def test_a_tarball_source_that_is_not_an_http_url_is_permanent(
    daemon: Daemon, source: str
) -> None:
    """Never read as a path on the service's host; a query stays out."""
    with pytest.raises(PermanentDispatchError, match="not an http") as raised:
        await execute_in_sandboxd(
            settings(daemon.url, daemon.key),
            entrypoint="true",
            tarball_source=source,
            run_id="t-path",
        )
    assert source.split("?")[0] in str(raised.value)
    assert "s3cr3t" not in str(raised.value)


@pytest.mark.parametrize("allow", [True, False])
async def test_agent_server_key_reaches_runs_only_when_allowed(daemon: Daemon, allow: bool) -> None:
    """The dispatcher's env starts with the backend's ``build_env_vars()``."""
    sbd = settings(daemon.url, daemon.key, allow_sensitive_env=allow)
    env = SandboxdBackend(sbd).build_env_vars()
    env["AUTOMATION_CALLBACK_API_KEY"] = SERVICE_KEY
    run_id = f"t-env-{allow}"
    script = 'echo "key=${SESSION_API_KEY:-} url=${AGENT_SERVER_URL:-}"; env | grep -c -e '
    script += f"{SERVICE_KEY} -e {daemon.key} || true"
    result = await execute_in_sandboxd(
        sbd,
        entrypoint="bash main.sh",
        tarball_source=tarball({"main.sh": script}),
        env_vars=env,
        run_id=run_id,
    )
    assert result.success
    state, text = await output(daemon, run_id)
    assert state == "succeeded"
    seen = f"key={AGENT_KEY} url=http://127.0.0.1:9\n" if allow else "key= url=\n"
    assert text == seen + "0\n"
