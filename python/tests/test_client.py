"""The sync client against a real daemon: every call of the API."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import Daemon, tarball

from sandboxd import Client, RunState, SandboxdError, SandboxdUnavailable


@pytest.fixture
def archive_server() -> Iterator[str]:
    """An http server with ``/bundle.tar.gz`` (and 404 for anything else)."""
    body = tarball({"main.sh": "echo from-url\n"})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/bundle.tar.gz":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_daemon_calls(client: Client) -> None:
    assert client.healthz()
    status = client.daemon_status()
    assert status.pid > 0 and status.version
    assert "runs_pruned" in client.metrics() or "sandboxd" in client.metrics()
    assert "/v1/runs" in client.openapi()["paths"]


def test_upload_from_bytes_path_directory_and_url(
    client: Client, tmp_path: Path, archive_server: str
) -> None:
    info = client.upload_bundle("from-bytes", tarball({"main.sh": "echo from-bytes\n"}))
    assert (info.run_id, info.entries) == ("from-bytes", 1)

    archive = tmp_path / "b.tar.gz"
    archive.write_bytes(tarball({"main.sh": "echo from-path\n"}))
    client.upload_bundle("from-path", archive)
    client.upload_bundle("from-file", archive.open("rb"))

    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / "main.sh").write_text("cat sub/data.txt\n")
    (project / "sub" / "data.txt").write_text("from-dir\n")
    assert client.upload_bundle("from-dir", project).entries == 3

    client.upload_bundle("from-url", archive_server + "/bundle.tar.gz", timeout_s=10)

    outputs = {}
    for run_id in ("from-bytes", "from-path", "from-file", "from-dir", "from-url"):
        run = client.start_run(["bash", "main.sh"], run_id=run_id, wait=True)
        outputs[run_id] = (run.state, run.stdout)
    assert outputs == {
        "from-bytes": (RunState.SUCCEEDED, "from-bytes\n"),
        "from-path": (RunState.SUCCEEDED, "from-path\n"),
        "from-file": (RunState.SUCCEEDED, "from-path\n"),
        "from-dir": (RunState.SUCCEEDED, "from-dir\n"),
        "from-url": (RunState.SUCCEEDED, "from-url\n"),
    }


def test_bundle_errors_carry_code_and_permanence(client: Client, archive_server: str) -> None:
    with pytest.raises(SandboxdError) as missing:
        client.upload_bundle("gone", archive_server + "/nothing.tar.gz")
    assert (missing.value.status, missing.value.code) == (424, "bundle_unavailable")
    assert missing.value.permanent is True and not missing.value.retryable

    with pytest.raises(SandboxdError) as down:
        client.upload_bundle("down", "http://127.0.0.1:9/b.tar.gz", timeout_s=5)
    assert (down.value.code, down.value.permanent) == ("bundle_fetch_failed", False)
    assert down.value.retryable

    with pytest.raises(SandboxdError) as bad:
        client.upload_bundle("bad", b"this is not an archive")
    assert bad.value.code == "bad_archive"


def test_start_wait_status_logs_and_list(client: Client) -> None:
    run = client.start_run(
        "echo out; echo err >&2; exit 3",
        run_id="r1",
        env={"GREETING": "hi"},
        timeout_s="1m",
    )
    assert run.run_id == "r1"
    ended = client.wait("r1", timeout=20)
    assert (ended.state, ended.exit_code) == (RunState.FAILED, 3)
    assert ended.timeout_s == 60.0
    assert client.logs("r1") == "out\n"
    assert client.logs("r1", stream="stderr") == "err\n"
    assert client.logs("r1", offset=1) == "ut\n"
    assert client.status("r1").exit_code == 3
    # The same start again is the same run; a different one is refused.
    assert (
        client.start_run(
            "echo out; echo err >&2; exit 3", run_id="r1", env={"GREETING": "hi"}, timeout_s="1m"
        ).run_id
        == "r1"
    )
    with pytest.raises(SandboxdError) as exists:
        client.start_run("true", run_id="r1")
    assert (exists.value.status, exists.value.code) == (409, "run_exists")

    for n in range(3):
        client.start_run("true", run_id=f"page-{n}", wait=True)
    page = client.runs_page(limit=2)
    assert len(page.runs) == 2 and page.next
    assert {run.run_id for run in client.runs()} == {"r1", "page-0", "page-1", "page-2"}
    assert [run.run_id for run in client.runs(state="failed")] == ["r1"]

    client.delete_run("page-0")
    with pytest.raises(SandboxdError) as gone:
        client.status("page-0")
    assert (gone.value.status, gone.value.code) == (404, "run_not_found")


def test_follow_logs_yields_output_as_it_comes(client: Client) -> None:
    client.start_run("for i in 1 2 3; do echo line $i; sleep 0.3; done", run_id="f1")
    started = time.monotonic()
    seen: list[tuple[float, str]] = []
    for text in client.follow_logs("f1"):
        seen.append((time.monotonic() - started, text))
    assert "".join(text for _, text in seen) == "line 1\nline 2\nline 3\n"
    assert seen[0][0] < 0.5, seen  # the first line came before the run ended
    assert client.status("f1").state == RunState.SUCCEEDED


def test_cancel_and_signal(client: Client) -> None:
    client.start_run(["sleep", "60"], run_id="c1")
    client.start_run(["sleep", "60"], run_id="s1")
    _wait_running(client, "c1")
    _wait_running(client, "s1")
    started = time.monotonic()
    client.cancel("c1", grace_s=1)
    assert client.wait("c1", timeout=10).state == RunState.CANCELLED
    assert time.monotonic() - started < 3
    client.signal("SIGINT", "s1")
    signalled = client.wait("s1", timeout=10)
    assert (signalled.state, signalled.signal) == (RunState.FAILED, "SIGINT")
    with pytest.raises(SandboxdError) as ended:
        client.cancel("c1")
    assert ended.value.code == "run_ended"
    with pytest.raises(SandboxdError) as bad:
        client.signal("SIGNOPE", "c1")
    assert bad.value.code in ("bad_signal", "run_ended")


def test_report_and_resolve_from_inside_a_run(client: Client) -> None:
    script = """
import os
from sandboxd import Client, SandboxdError
with Client.from_env() as me:
    print("state", me.status().state.value)
    print("same", me.resolve("DEMO_TOKEN") == os.environ["DEMO_TOKEN"])
    print("reported", me.report(conversation_id="conv-1", cost=0.5).report.cost)
    try:
        me.daemon_status()
    except SandboxdError as err:
        print("daemon status", err.status, err.code)
    print(repr(me))
"""
    run = client.start_run(
        [sys.executable, "-c", script],
        run_id="inside",
        secrets={"DEMO_TOKEN": {"kind": "StaticSecret", "value": "demo-value-123"}},
        wait=True,
    )
    assert run.state == RunState.SUCCEEDED, run
    assert run.stdout is not None
    lines = run.stdout.splitlines()
    assert lines[:4] == [
        "state running",
        "same True",
        "reported 0.5",
        "daemon status 403 forbidden",
    ]
    assert "Client(url=" in lines[4] and "inside" in lines[4]
    assert run.report.conversation_id == "conv-1" and run.report.cost == 0.5


def test_secrets_and_files_with_the_session_key(client: Client, tmp_path: Path) -> None:
    values = client.resolve_sources({"A": {"kind": "StaticSecret", "value": "value-a"}, "B": "b-b"})
    assert values == {"A": "value-a", "B": "b-b"}
    target = tmp_path / "dir" / "f.txt"
    info = client.put_file(str(target), b"hello", mode=0o600)
    assert (info.bytes, target.read_text(), target.stat().st_mode & 0o777) == (5, "hello", 0o600)
    with pytest.raises(SandboxdError) as refused:
        client.put_file("/etc/nope", b"x")
    assert (refused.value.status, refused.value.code) == (403, "path_not_allowed")


def test_errors_carry_the_daemons_code(daemon: Daemon) -> None:
    with pytest.raises(SandboxdError) as wrong:
        Client(daemon.url, "wrong-key").daemon_status()
    assert (wrong.value.status, wrong.value.code) == (401, "unauthorized")
    assert "wrong-key" not in str(wrong.value)
    with pytest.raises(SandboxdUnavailable) as down:
        Client("http://127.0.0.1:9", "k").status("x")
    assert "sandboxd serve" in str(down.value) and "SANDBOXD_URL" in str(down.value)
    assert "secret-key" not in repr(Client(daemon.url, "secret-key"))
    with pytest.raises(ValueError, match="SANDBOXD_RUN_ID"):
        Client(daemon.url, "k").status()


def test_from_env_reads_the_session_key_file(daemon: Daemon, tmp_path: Path) -> None:
    key_file = tmp_path / "session-key"
    key_file.write_text(daemon.key + "\n")
    env = {"SANDBOXD_URL": daemon.url, "SANDBOXD_SESSION_KEY_FILE": str(key_file)}
    with Client.from_env(env) as client:
        assert client.daemon_status().pid == daemon.process.pid


def _wait_running(client: Client, run_id: str) -> None:
    deadline = time.monotonic() + 10
    while client.status(run_id).state != RunState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_bundle_url_checked_against_its_sha256(client: Client, archive_server: str) -> None:
    url = archive_server + "/bundle.tar.gz"
    digest = hashlib.sha256(httpx.get(url).content).hexdigest()
    with pytest.raises(SandboxdError) as mismatch:
        client.upload_bundle("sum-bad", url, sha256="0" * 64)
    assert (mismatch.value.status, mismatch.value.code) == (424, "bundle_checksum_mismatch")
    assert mismatch.value.permanent is True
    assert client.upload_bundle("sum-ok", url, sha256=digest).entries == 1
    done = client.start_run(["bash", "main.sh"], run_id="sum-ok", wait=True)
    assert done.stdout == "from-url\n"
