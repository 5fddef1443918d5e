"""``SandboxdBackend`` and ``execute_in_sandboxd`` for openhands-automation."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from openhands.automation.backends.base import ExecutionBackend, ExecutionContext
from openhands.automation.exceptions import PermanentDispatchError, SandboxProvisioningError
from openhands.automation.execution import DispatchResult
from openhands.automation.utils.agent_server import VerificationOutcome, VerificationResult

from .._calls import DEFAULT_URL, from_env_settings, is_url
from ..async_client import AsyncClient
from ..errors import SandboxdError, SandboxdUnavailable
from ..models import RunState

logger = logging.getLogger(__name__)

# Names of the dispatcher's env that only reach a run when configured.
AGENT_SERVER_ENV = ("AGENT_SERVER_URL", "SESSION_API_KEY")


@dataclass(frozen=True)
class SandboxdSettings:
    """Where sandboxd is and what runs may receive."""

    url: str
    session_key: str | None
    callback_key: str | None
    """The service's own key (``AUTOMATION_LOCAL_API_KEY``): sandboxd posts the
    completion with it; runs never see it (they get their own token)."""
    agent_server_url: str | None = None
    agent_server_key: str | None = None
    allow_sensitive_env: bool = False
    """Whether runs receive ``SESSION_API_KEY`` (the agent-server's key; an
    SDK script needs it to open conversations)."""
    grace_s: float = 10.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SandboxdSettings:
        """``SANDBOXD_URL``, ``SANDBOXD_SESSION_KEY[_FILE]``,
        ``SANDBOXD_ALLOW_SENSITIVE_ENV=1`` and the service's ``AUTOMATION_*``."""
        env = dict(os.environ if environ is None else environ)
        env.pop("SANDBOXD_RUN_TOKEN", None)
        url, key, _ = from_env_settings(env)
        return cls(
            url=env.get("SANDBOXD_URL", DEFAULT_URL) or url,
            session_key=key,
            callback_key=env.get("AUTOMATION_LOCAL_API_KEY") or None,
            agent_server_url=env.get("AUTOMATION_AGENT_SERVER_URL") or None,
            agent_server_key=env.get("AUTOMATION_AGENT_SERVER_API_KEY") or None,
            allow_sensitive_env=env.get("SANDBOXD_ALLOW_SENSITIVE_ENV", "") in ("1", "true"),
            grace_s=float(env.get("SANDBOXD_CANCEL_GRACE_S", "10")),
        )

    def client(self) -> AsyncClient:
        return AsyncClient(self.url, self.session_key)


class SandboxdBackend(ExecutionBackend):  # type: ignore[misc]
    """Runs go to sandboxd; the execution context names sandboxd itself."""

    def __init__(self, settings: SandboxdSettings, run: Any = None) -> None:
        self.settings = settings
        self._run = run

    @property
    def is_local_mode(self) -> bool:
        return True

    async def get_execution_context(self, client: httpx.AsyncClient) -> ExecutionContext:
        """sandboxd itself, once it answers: an unreachable daemon raises
        ``SandboxProvisioningError``, which the service retries (with its
        ``AUTOMATION_SANDBOX_PROVISION_*`` attempts and delay) before the
        run fails, and nothing has started yet."""
        try:
            async with self.settings.client() as sandboxd:
                await sandboxd.healthz()
        except SandboxdUnavailable as err:
            raise SandboxProvisioningError(
                err.message, sandbox_id="", status="UNREACHABLE", reason="sandboxd unreachable"
            ) from None
        return ExecutionContext(
            agent_url=self.settings.url, session_key=self.settings.session_key or ""
        )

    async def release_context(self, client: httpx.AsyncClient, ctx: ExecutionContext) -> None:
        """Nothing to release: sandboxd keeps running."""

    async def get_api_key(self) -> str:
        return self.settings.agent_server_key or ""

    def build_env_vars(self) -> dict[str, str]:
        """The agent-server's URL and key only when configured to pass them."""
        env: dict[str, str] = {}
        if self.settings.allow_sensitive_env and self.settings.agent_server_key:
            env["SESSION_API_KEY"] = self.settings.agent_server_key
            if self.settings.agent_server_url:
                env["AGENT_SERVER_URL"] = self.settings.agent_server_url
        return env

    async def verify_run(self, run_id: str) -> VerificationResult:
        """The run's state in sandboxd."""
        try:
            async with self.settings.client() as sandboxd:
                run = await sandboxd.status(run_id)
        except SandboxdError as err:
            if err.code == "run_not_found":
                return VerificationResult(
                    outcome=VerificationOutcome.ENVIRONMENT_UNAVAILABLE, error=err.message
                )
            return VerificationResult(transient=True, error=str(err))
        if not run.ended:
            return VerificationResult(
                outcome=VerificationOutcome.STILL_RUNNING, error="Command still running"
            )
        success = run.state == RunState.SUCCEEDED
        return VerificationResult(
            verified=True,
            success=success,
            exit_code=run.exit_code,
            error=None if success else (run.error or f"run {run.state.value}"),
        )

    async def cleanup_after_verification(self, run_id: str) -> None:
        """sandboxd's retention removes ended runs."""

    def get_work_dir(self, run_id: str) -> str:
        return ""


def shown_url(source: str) -> str:
    """A tarball URL as errors may show it: no credentials, query or fragment
    (a signed URL's token stays out of the run's error)."""
    parts = urlsplit(source)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def download_timeout_s() -> float:
    """The service's limit on a tarball URL download
    (``AUTOMATION_EXTERNAL_DOWNLOAD_TIMEOUT``, 120 s by default)."""
    from openhands.automation.config import get_config

    return float(get_config().sandbox.external_download_timeout)


def command_env(env_vars: dict[str, str], allow_sensitive: bool) -> dict[str, str]:
    """The dispatcher's env as a sandboxd run takes it: the completion
    variables are sandboxd's own (the relay), the service's key never goes."""
    env = {k: v for k, v in env_vars.items() if k != "AUTOMATION_CALLBACK_API_KEY"}
    if not allow_sensitive:
        for name in AGENT_SERVER_ENV:
            env.pop(name, None)
    return env


async def execute_in_sandboxd(
    settings: SandboxdSettings,
    *,
    entrypoint: str,
    tarball_source: bytes | str,
    env_vars: dict[str, str] | None = None,
    timeout: int | None = None,
    run_id: str | None = None,
    sandbox_id: str | None = None,
    **_: Any,
) -> DispatchResult:
    """Uploads the tarball and starts the entrypoint as the run ``run_id``.

    A permanent bundle error (the URL answered 4xx, a broken archive)
    raises ``PermanentDispatchError``; anything worth retrying answers an
    unsuccessful ``DispatchResult``. A retried dispatch finds the same run
    (same id, same request) and never starts it twice.
    """
    if not run_id:
        raise PermanentDispatchError("sandboxd needs the automation run id")
    if isinstance(tarball_source, str) and not is_url(tarball_source):
        raise PermanentDispatchError(f"not an http(s) tarball URL: {shown_url(tarball_source)}")
    env = command_env(dict(env_vars or {}), settings.allow_sensitive_env)
    callback: dict[str, Any] = {"url": env.get("AUTOMATION_CALLBACK_URL", ""), "run_id": run_id}
    if settings.callback_key:
        callback["token"] = settings.callback_key
    try:
        async with settings.client() as sandboxd:
            try:
                await sandboxd.upload_bundle(run_id, tarball_source, timeout_s=download_timeout_s())
            except SandboxdError as err:
                if err.code not in ("bundle_exists", "run_started"):
                    raise
            await sandboxd.start_run(
                entrypoint,
                run_id=run_id,
                env=env,
                allow_sensitive_env=[n for n in AGENT_SERVER_ENV if n in env] or None,
                setup=True,
                timeout_s=timeout,
                callback=callback if callback["url"] else None,
            )
    except SandboxdError as err:
        reason = str(err)
        if isinstance(tarball_source, str) and shown_url(tarball_source) not in reason:
            reason = f"tarball {shown_url(tarball_source)}: {reason}"
        if err.permanent or (err.status in (400, 413) and err.code != "upload_incomplete"):
            raise PermanentDispatchError(reason) from None
        logger.warning("sandboxd dispatch of %s failed: %s", run_id, reason)
        return DispatchResult(success=False, sandbox_id=sandbox_id, error=reason)
    return DispatchResult(success=True, sandbox_id=sandbox_id, bash_command_id=run_id)
