"""sandboxd's Python client: the sync :class:`Client` and the async
:class:`AsyncClient` over sandboxd's HTTP API, typed models of its answers
and :class:`SandboxdError` carrying the daemon's error code.

Inside a run, ``Client.from_env()`` talks with the run's own token
(``SANDBOXD_URL``, ``SANDBOXD_RUN_TOKEN``, ``SANDBOXD_RUN_ID``)::

    from sandboxd import Client
    with Client.from_env() as me:
        me.report(conversation_id="c0ffee", cost=0.42)

``sandboxd.automation`` (the ``[automation]`` extra) is the execution
backend of the OpenHands automation service.
"""

from ._calls import DEFAULT_URL, BundleSource, Destination, StdinMode, Stream
from .async_client import AsyncClient
from .attach import Attachment
from .client import Client
from .errors import SandboxdError, SandboxdUnavailable
from .models import (
    AttachMessage,
    BundleInfo,
    Callback,
    CallbackStatus,
    DaemonStatus,
    DirPage,
    FileInfo,
    FileStat,
    PathInfo,
    Report,
    Run,
    RunPage,
    RunState,
)

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "AttachMessage",
    "Attachment",
    "BundleInfo",
    "BundleSource",
    "Callback",
    "CallbackStatus",
    "Client",
    "DaemonStatus",
    "Destination",
    "DirPage",
    "FileInfo",
    "FileStat",
    "PathInfo",
    "Report",
    "Run",
    "RunPage",
    "RunState",
    "SandboxdError",
    "SandboxdUnavailable",
    "StdinMode",
    "Stream",
]

__version__ = "0.1.0"
