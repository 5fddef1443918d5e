"""Typed models of the daemon's answers (pydantic).

Answers may gain fields in later daemon versions: the models keep unknown
fields (``extra="allow"``) instead of failing on them.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AttachMessage",
    "BundleInfo",
    "Callback",
    "CallbackStatus",
    "DaemonStatus",
    "DirPage",
    "FileInfo",
    "FileStat",
    "PathInfo",
    "Report",
    "Run",
    "RunPage",
    "RunState",
]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class RunState(str, Enum):
    """Where a run is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"

    @property
    def ended(self) -> bool:
        """Whether the run has ended (every state but starting and running)."""
        return self not in (RunState.STARTING, RunState.RUNNING)


class Report(_Answer):
    """What the run reported about itself."""

    conversation_id: str | None = None
    cost: float | None = None


class CallbackStatus(_Answer):
    """Delivery of the run's completion callback."""

    state: str = "none"
    attempts: int = 0
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None


class Run(_Answer):
    """A run's status (``GET /v1/runs/{run_id}``).

    ``stdout`` and ``stderr`` are set only by a start with ``wait=True``.
    """

    run_id: str
    state: RunState
    pid: int | None = None
    exit_code: int | None = None
    signal: str | None = None
    error: str | None = None
    command: list[str] = Field(default_factory=list)
    cwd: str = ""
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    timeout_s: float | None = None
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    stdout_truncated_bytes: int = 0
    stderr_truncated_bytes: int = 0
    truncation: str | None = None
    bundle: bool = False
    stdin: str | None = None
    report: Report = Field(default_factory=Report)
    callback: CallbackStatus = Field(default_factory=CallbackStatus)
    stdout: str | None = None
    stderr: str | None = None

    @property
    def ended(self) -> bool:
        """Whether the run has ended."""
        return self.state.ended


class RunPage(_Answer):
    """One page of ``GET /v1/runs``; ``next`` is the cursor of the next one."""

    runs: list[Run]
    next: str | None = None


class BundleInfo(_Answer):
    """Answer of a bundle upload or fetch."""

    run_id: str
    dir: str
    entries: int
    bytes: int


class FileInfo(_Answer):
    """Answer of ``PUT /v1/files``."""

    path: str
    bytes: int


class FileStat(_Answer):
    """``GET /v1/files/stat``, and one entry of a directory listing.

    ``type`` is ``file``, ``dir``, ``symlink`` (with ``target``) or ``other``;
    ``mode`` is octal text (``"0644"``)."""

    name: str
    type: str
    size: int
    mode: str
    mtime: datetime
    target: str | None = None


class DirPage(_Answer):
    """One page of ``GET /v1/files/list``; ``next`` is the ``after`` of the next one."""

    entries: list[FileStat]
    next: str | None = None


class PathInfo(_Answer):
    """Answer of a delete, mkdir (``created``) or move (the new path)."""

    path: str
    created: bool | None = None


class AttachMessage(_Answer):
    """A control message of an attach WebSocket: ``attached`` (``writer``,
    ``stdin``), ``read_only`` (``reason``), ``skipped`` (``bytes``),
    ``error`` (``message``) or, last, ``exit`` (``state``, ``exit_code``,
    ``signal``, ``error``). Its other fields are kept as extras."""

    type: str


class DaemonStatus(_Answer):
    """``GET /v1/status``: version, runs by state, outbox, containment..."""

    version: str
    pid: int
    uptime_s: float
    runs: dict[str, int] = Field(default_factory=dict)
    outbox: dict[str, Any] = Field(default_factory=dict)
    agent_server: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    work_root: dict[str, Any] | None = None
    containment: dict[str, Any] | None = None
    retention: dict[str, Any] | None = None


class Callback(BaseModel):
    """A run's completion callback: sandboxd POSTs the run's end to ``url``
    with ``Authorization: Bearer <token>``; ``run_id`` is the receiver's id
    of the run; ``phases`` forwards the run's phase reports too."""

    model_config = ConfigDict(extra="forbid")

    url: str
    token: str | None = Field(default=None, repr=False)
    run_id: str | None = None
    phases: bool | None = None
