"""Fixtures: a real ``sandboxd serve`` on a free port with a temp state dir.

The binary is ``$SANDBOXD_BIN``, else the repository's ``target/debug``
(or ``target/release``) build.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sandboxd import Client

REPO = Path(__file__).resolve().parents[2]
KEY = "python-test-session-key-0123456789"


def daemon_binary() -> str:
    if os.environ.get("SANDBOXD_BIN"):
        return os.environ["SANDBOXD_BIN"]
    for profile in ("debug", "release"):
        candidate = REPO / "target" / profile / "sandboxd"
        if candidate.exists():
            return str(candidate)
    pytest.fail("no sandboxd binary: run `cargo build` or set SANDBOXD_BIN")


@dataclass
class Daemon:
    """A running ``sandboxd serve``."""

    url: str
    key: str
    process: subprocess.Popen[bytes]
    log: list[str] = field(default_factory=list)

    def client(self, **kwargs: object) -> Client:
        return Client(self.url, self.key, **kwargs)  # type: ignore[arg-type]


def start_daemon(tmp: Path, *extra: str) -> Daemon:
    key_file = tmp / "key"
    key_file.write_text(KEY)
    env = {k: v for k, v in os.environ.items() if k not in ("SESSION_API_KEY", "OPENHANDS_API_KEY")}
    # Runs start the test's own interpreter, which has the package.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    process = subprocess.Popen(
        [
            daemon_binary(),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--state-dir",
            str(tmp / "state"),
            "--work-root",
            str(tmp / "work"),
            "--session-key-file",
            str(key_file),
            "--agent-server-url",
            "http://127.0.0.1:9",
            *extra,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    log: list[str] = []
    ready = threading.Event()
    address: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode(errors="replace")
            log.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("message") == "listening" and not ready.is_set():
                address.append(str(event.get("addr")))
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(20):
        process.kill()
        pytest.fail("sandboxd did not start:\n" + "".join(log))
    return Daemon(address[0], KEY, process, log)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = start_daemon(tmp_path)
    yield running
    running.process.terminate()
    try:
        running.process.wait(10)
    except subprocess.TimeoutExpired:
        running.process.kill()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Client]:
    with daemon.client() as opened:
        yield opened


def tarball(files: dict[str, str]) -> bytes:
    """A gzipped tar of ``files`` (name to text)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
