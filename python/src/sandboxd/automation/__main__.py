"""``python -m sandboxd.automation``: the automation service with its
execution going through sandboxd.

Configured by the service's usual ``AUTOMATION_*`` env plus ``SANDBOXD_URL``
and ``SANDBOXD_SESSION_KEY`` (or ``SANDBOXD_SESSION_KEY_FILE``). Listens on
``AUTOMATION_SERVER_PORT`` (default 8000) on ``AUTOMATION_HOST`` (127.0.0.1).
"""

from __future__ import annotations

import os
import re
from typing import Any

from .backend import SandboxdBackend, SandboxdSettings, execute_in_sandboxd

_CANCEL = re.compile(r"/v1/runs/([^/]+)/cancel$")


def install(settings: SandboxdSettings) -> Any:
    """Puts the backend in place in the service's modules; returns its app,
    wrapped so a cancel through the service's API cancels the sandboxd run."""
    from openhands.automation import dispatcher, watchdog
    from openhands.automation.app import app

    def get_backend(run: Any) -> SandboxdBackend:
        return SandboxdBackend(settings, run)

    async def execute_in_context(**kwargs: Any) -> Any:
        kwargs.pop("agent_url", None)
        kwargs.pop("session_key", None)
        return await execute_in_sandboxd(settings, **kwargs)

    dispatcher.get_backend = get_backend
    dispatcher.execute_in_context = execute_in_context
    watchdog.get_backend = get_backend

    async def with_cancel(scope: Any, receive: Any, send: Any) -> None:
        match = _CANCEL.search(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope.get("method") != "POST":
            await app(scope, receive, send)
            return
        status: list[int] = []

        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        await app(scope, receive, watch)
        if status and status[0] == 200:
            from ..errors import SandboxdError

            try:
                async with settings.client() as sandboxd:
                    await sandboxd.cancel(match.group(1), grace_s=settings.grace_s)
            except SandboxdError:
                pass  # ended already, or never started

    return with_cancel


def main() -> None:
    import uvicorn

    settings = SandboxdSettings.from_env()
    app = install(settings)
    port = int(os.environ.get("AUTOMATION_SERVER_PORT", "8000"))
    uvicorn.run(app, host=os.environ.get("AUTOMATION_HOST", "127.0.0.1"), port=port)


if __name__ == "__main__":
    main()
