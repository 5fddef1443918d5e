"""Exceptions: the daemon's error answers and an unreachable daemon.

Every error the daemon answers is JSON, ``{"error": {"code", "message"}}``
(bundle fetch errors also carry ``permanent``). :class:`SandboxdError`
carries them as they came; no secret value is ever put into one.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["SandboxdError", "SandboxdUnavailable"]


class SandboxdError(Exception):
    """The daemon answered with an error.

    ``status`` is the HTTP status (0 when there was no answer), ``code`` the
    daemon's stable error code (``run_not_found``, ``bundle_fetch_failed``...)
    and ``message`` its explanation. ``permanent`` is the daemon's verdict
    on bundle fetch errors (``True``: the URL is wrong; ``False``: worth
    retrying) and ``None`` for every other error.
    """

    def __init__(self, status: int, code: str, message: str, permanent: bool | None = None) -> None:
        where = f"{code}, HTTP {status}" if status else code
        super().__init__(f"{message} ({where})")
        self.status = status
        self.code = code
        self.message = message
        self.permanent = permanent

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later."""
        if self.permanent is not None:
            return not self.permanent
        return self.status in (0, 408, 429, 502, 503, 504, 507)


class SandboxdUnavailable(SandboxdError):
    """Nothing answered at the daemon's address."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            0,
            "unreachable",
            f"cannot reach sandboxd at {url} ({reason}); start it with "
            "`sandboxd serve --session-key-file FILE` (it listens on 127.0.0.1:60001 "
            "by default) or point SANDBOXD_URL at the running daemon",
        )
        self.url = url


def error_from_answer(status: int, body: bytes) -> SandboxdError:
    """The exception for an error answer of the daemon."""
    try:
        document: Any = json.loads(body)
        error = document["error"]
        permanent = error.get("permanent")
        return SandboxdError(
            status,
            str(error["code"]),
            str(error["message"]),
            permanent if isinstance(permanent, bool) else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return SandboxdError(status, "http_error", f"HTTP {status} without a sandboxd error body")
