"""Attaching to a run over its WebSocket (``GET /v1/runs/{id}/attach``):
:class:`Attachment`, opened by :meth:`sandboxd.AsyncClient.attach`.

The WebSocket protocol is the ``websockets`` package's (typed, asyncio),
not hand-written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import TracebackType
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus

from .errors import SandboxdError, error_from_answer
from .models import AttachMessage

__all__ = ["Attachment"]


class Attachment:
    """An attached run: iterate it (``async for``) for the run's output
    (``bytes``) and control messages (:class:`AttachMessage`); the
    iteration ends after the ``exit`` message, kept as :attr:`exit`.
    :meth:`send`, :meth:`resize` and :meth:`eof` drive the run's input.
    Use it as an async context manager (``async with client.attach(...)``)."""

    def __init__(
        self, url: str, headers: Mapping[str, str], socket_path: str | None, open_timeout: float
    ) -> None:
        self._url = url
        self._headers = dict(headers)
        self._socket_path = socket_path
        self._open_timeout = open_timeout
        self._socket: ClientConnection | None = None
        self.attached: AttachMessage | None = None
        """The first message: whether this client's input reaches the run."""
        self.exit: AttachMessage | None = None
        """The ``exit`` message, once the run has ended and its output is read."""

    async def __aenter__(self) -> Attachment:
        try:
            self._socket = await self._open()
        except InvalidStatus as refused:
            answer = refused.response
            raise error_from_answer(answer.status_code, bytes(answer.body or b"")) from None
        except OSError as err:
            raise SandboxdError(0, "transport_error", f"attach {self._url}: {err}") from None
        return self

    async def _open(self) -> ClientConnection:
        # max_size=None: output frames are the daemon's to size.
        if self._socket_path is None:
            return await connect(
                self._url,
                additional_headers=self._headers,
                max_size=None,
                open_timeout=self._open_timeout,
            )
        return await unix_connect(
            self._socket_path,
            self._url,
            additional_headers=self._headers,
            max_size=None,
            open_timeout=self._open_timeout,
        )

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Detaches (the run goes on)."""
        if self._socket is not None:
            await self._socket.close()

    def __aiter__(self) -> Attachment:
        return self

    async def __anext__(self) -> bytes | AttachMessage:
        if self.exit is not None:
            raise StopAsyncIteration
        try:
            frame = await self._connection().recv()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None
        except ConnectionClosedError as err:
            raise SandboxdError(0, "transport_error", f"attach {self._url}: {err}") from None
        if isinstance(frame, bytes):
            return frame
        message = AttachMessage.model_validate_json(frame)
        if message.type == "attached" and self.attached is None:
            self.attached = message
        elif message.type == "exit":
            self.exit = message
        return message

    async def send(self, data: bytes) -> None:
        """Input for the run (typed into its terminal for a ``pty`` run)."""
        await self._connection().send(data)

    async def resize(self, cols: int, rows: int) -> None:
        """The terminal's new size (the command gets SIGWINCH)."""
        await self._control({"type": "resize", "cols": cols, "rows": rows})

    async def eof(self) -> None:
        """Ends the input (a pipe is closed; a terminal gets Ctrl-D)."""
        await self._control({"type": "eof"})

    async def _control(self, message: dict[str, object]) -> None:
        await self._connection().send(json.dumps(message))

    def _connection(self) -> ClientConnection:
        if self._socket is None:
            raise RuntimeError("not attached: use `async with client.attach(...)`")
        return self._socket


def attach_url(base_url: str, path: str, offset: int, write: bool) -> str:
    """The ``ws://`` URL of a run's attach endpoint."""
    query: dict[str, str] = {}
    if offset:
        query["offset"] = str(offset)
    if not write:
        query["write"] = "false"
    ws_base = "ws" + base_url[len("http") :] if base_url.startswith("http") else base_url
    return ws_base + path + ("?" + urlencode(query) if query else "")
