"""The async client against a real daemon: the same calls, awaited."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import pytest
from conftest import Daemon

from sandboxd import AsyncClient, RunState, SandboxdError, SandboxdUnavailable


def tarball(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


async def test_async_upload_run_follow_and_cancel(daemon: Daemon, tmp_path: Path) -> None:
    async with AsyncClient(daemon.url, daemon.key) as client:
        assert await client.healthz()
        assert (await client.daemon_status()).pid == daemon.process.pid
        await client.upload_bundle("a1", tarball({"main.sh": "echo one; sleep 0.3; echo two\n"}))
        archive = tmp_path / "b.tar.gz"
        archive.write_bytes(tarball({"main.sh": "echo from-path\n"}))
        await client.upload_bundle("a2", archive)
        project = tmp_path / "p"
        project.mkdir()
        (project / "main.sh").write_text("echo from-dir\n")
        await client.upload_bundle("a3", project)

        await client.start_run(["bash", "main.sh"], run_id="a1")
        chunks = [text async for text in client.follow_logs("a1")]
        assert "".join(chunks) == "one\ntwo\n"
        assert (await client.wait("a1", timeout=10)).state == RunState.SUCCEEDED
        assert (await client.start_run(["bash", "main.sh"], run_id="a2", wait=True)).stdout == (
            "from-path\n"
        )
        done = await client.start_run(["bash", "main.sh"], run_id="a3", wait=True)
        assert done.stdout == "from-dir\n"
        assert await client.logs("a3") == "from-dir\n"
        assert {run.run_id async for run in client.runs()} == {"a1", "a2", "a3"}

        await client.start_run(["sleep", "60"], run_id="a4")
        deadline = time.monotonic() + 10
        while (await client.status("a4")).state != RunState.RUNNING:
            assert time.monotonic() < deadline
        await client.signal("SIGTERM", "a4")
        assert (await client.wait("a4", timeout=10)).signal == "SIGTERM"
        await client.start_run(["sleep", "60"], run_id="a5")
        while (await client.status("a5")).state != RunState.RUNNING:
            assert time.monotonic() < deadline
        await client.cancel("a5", grace_s=1)
        assert (await client.wait("a5", timeout=10)).state == RunState.CANCELLED


async def test_async_errors(daemon: Daemon) -> None:
    async with AsyncClient(daemon.url, daemon.key) as client:
        with pytest.raises(SandboxdError) as missing:
            await client.status("nope")
        assert (missing.value.status, missing.value.code) == (404, "run_not_found")
        values = await client.resolve_sources({"X": "value-x"})
        assert values == {"X": "value-x"}
    async with AsyncClient("http://127.0.0.1:9", "k") as down:
        with pytest.raises(SandboxdUnavailable, match="sandboxd serve"):
            await down.status("x")
