"""The async client against a real daemon: the same calls, awaited."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from conftest import Daemon, tarball

from sandboxd import (
    AsyncClient,
    Attachment,
    AttachMessage,
    RunState,
    SandboxdError,
    SandboxdUnavailable,
)


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


async def drive_terminal(attached: Attachment) -> tuple[bytes, list[AttachMessage]]:
    """Types a line into ``cat`` on a terminal, then Ctrl-D at the start of
    the next line (a terminal's end of input); the output and messages."""
    output = b""
    messages: list[AttachMessage] = []
    ended_input = False
    async for item in attached:
        if isinstance(item, AttachMessage):
            messages.append(item)
            if item.type == "attached":
                await attached.resize(120, 40)
                await attached.send(b"abc\r")
            continue
        output += item
        if output.count(b"abc") >= 2 and not ended_input:
            await attached.eof()
            ended_input = True
    return output, messages


async def test_attach_drives_a_terminal_run(daemon: Daemon) -> None:
    async with AsyncClient(daemon.url, daemon.key) as client:
        run = await client.start_run(["cat"], run_id="t1", stdin="pty", cols=100, rows=30)
        assert run.stdin == "pty"
        async with client.attach("t1") as attached:
            output, messages = await asyncio.wait_for(drive_terminal(attached), 20)
        # The terminal echoes the typed line, then cat writes it back.
        assert output == b"abc\r\nabc\r\n"
        assert [m.type for m in messages] == ["attached", "exit"]
        assert attached.attached is not None
        assert attached.attached.model_extra == {"writer": True, "stdin": "pty"}
        assert attached.exit is not None and attached.exit.model_extra is not None
        assert attached.exit.model_extra["state"] == "succeeded"
        assert (await client.wait("t1", timeout=10)).state == RunState.SUCCEEDED

        # Attaching to the ended run replays its output, then `exit`.
        async def replay_all() -> list[bytes | AttachMessage]:
            async with client.attach("t1", write=False) as replay:
                return [item async for item in replay]

        items = await asyncio.wait_for(replay_all(), 20)
        assert b"".join(i for i in items if isinstance(i, bytes)) == b"abc\r\nabc\r\n"
        last = items[-1]
        assert isinstance(last, AttachMessage) and last.type == "exit"


async def test_attach_and_files_errors(daemon: Daemon, tmp_path: Path) -> None:
    async with AsyncClient(daemon.url, daemon.key) as client:
        with pytest.raises(SandboxdError) as missing:
            async with client.attach("nope"):
                pass
        assert (missing.value.status, missing.value.code) == (404, "run_not_found")

        await client.start_run("cat > out.txt", run_id="t2", stdin="pipe")
        await client.write_stdin("t2", b"piped\n", close=True)
        assert (await client.wait("t2", timeout=10)).state == RunState.SUCCEEDED
        assert await client.run_file("t2", "out.txt") == b"piped\n"

        root = str(tmp_path / "work" / "afiles")
        await client.mkdir(root)
        await client.put_file(root + "/x.txt", b"x" * 70000)
        dest = tmp_path / "x.txt"
        dest.write_bytes(b"x" * 10)
        assert await client.download(root + "/x.txt", dest) == 70000
        assert await client.download(root + "/x.txt") == b"x" * 70000
        assert (await client.stat(root + "/x.txt")).size == 70000
        assert [e.name async for e in client.list_dir(root)] == ["x.txt"]
        await client.delete(root, recursive=True)
