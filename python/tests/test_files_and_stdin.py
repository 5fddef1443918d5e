"""Interactive input and the file calls against a real daemon (sync client)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from conftest import Daemon

from sandboxd import Client, RunState, SandboxdError


def test_pipe_run_reads_what_write_stdin_sends(client: Client) -> None:
    run = client.start_run(["cat"], run_id="p1", stdin="pipe")
    assert run.stdin == "pipe"
    client.write_stdin("p1", b"one\n")
    client.write_stdin("p1", io.BytesIO(b"two\n"), close=True)
    done = client.wait("p1", timeout=10)
    assert done.state == RunState.SUCCEEDED
    assert client.logs("p1") == "one\ntwo\n"
    with pytest.raises(SandboxdError) as ended:
        client.write_stdin("p1", b"late")
    assert ended.value.code == "run_ended"


def test_write_stdin_to_a_run_without_input_is_refused(client: Client) -> None:
    client.start_run(["sleep", "5"], run_id="p2")
    with pytest.raises(SandboxdError) as refused:
        client.write_stdin("p2", b"x")
    assert (refused.value.status, refused.value.code) == (409, "run_without_stdin")
    client.cancel("p2", grace_s=1)


def test_files_round_trip(client: Client, daemon: Daemon, tmp_path: Path) -> None:
    root = str(tmp_path / "work" / "files")
    assert client.mkdir(root + "/sub").created is True
    assert client.mkdir(root + "/sub").created is False
    content = bytes(range(256)) * 1000
    client.put_file(root + "/sub/data.bin", content, mode=0o600)
    client.put_file(root + "/sub/a.txt", b"abc")

    info = client.stat(root + "/sub/data.bin")
    assert (info.name, info.type, info.mode) == ("data.bin", "file", "0600")
    assert info.size == len(content)
    assert client.download(root + "/sub/a.txt") == b"abc"
    sink = io.BytesIO()
    assert client.download(root + "/sub/data.bin", sink) == len(content)
    assert sink.getvalue() == content

    fresh = tmp_path / "fresh.bin"
    assert client.download(root + "/sub/data.bin", fresh) == len(content)
    assert fresh.read_bytes() == content
    # A partial file at the destination is resumed, a complete one left as is.
    dest = tmp_path / "copy.bin"
    dest.write_bytes(content[:1000])
    assert client.download(root + "/sub/data.bin", dest) == len(content)
    assert dest.read_bytes() == content
    assert client.download(root + "/sub/data.bin", dest) == len(content)
    assert dest.read_bytes() == content

    names = [entry.name for entry in client.list_dir(root + "/sub", limit=1)]
    assert names == ["a.txt", "data.bin"]
    first = client.list_dir_page(root + "/sub", limit=1)
    assert [e.name for e in first.entries] == ["a.txt"] and first.next == "a.txt"

    assert client.move(root + "/sub/a.txt", root + "/b.txt").path == root + "/b.txt"
    with pytest.raises(SandboxdError) as missing:
        client.stat(root + "/sub/a.txt")
    assert (missing.value.status, missing.value.code) == (404, "file_not_found")
    with pytest.raises(SandboxdError) as not_empty:
        client.delete(root + "/sub")
    assert not_empty.value.code == "dir_not_empty"
    client.delete(root + "/sub", recursive=True)
    client.delete(root + "/b.txt")
    assert list(client.list_dir(root)) == []
    with pytest.raises(SandboxdError) as outside:
        client.download("/etc/hostname")
    assert outside.value.code == "path_not_allowed"


def test_run_file_reads_the_run_work_dir(client: Client) -> None:
    client.start_run("mkdir -p out && printf report > out/r.md", run_id="f1", wait=True)
    assert client.run_file("f1", "out/r.md") == b"report"
    with pytest.raises(SandboxdError) as absolute:
        client.run_file("f1", "/etc/passwd")
    assert absolute.value.code == "invalid_path"
