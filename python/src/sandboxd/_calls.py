"""The API's requests as data, shared by the sync and the async client.

Each function builds one :class:`Call` (method, path, query, body); the
clients send it with their own transport and parse the answer with
:func:`parse`. Keeping the calls here means both clients cover the same
API by construction.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter

from .errors import SandboxdError, SandboxdUnavailable, error_from_answer
from .models import Callback

DEFAULT_URL = "http://127.0.0.1:60001"
"""Where ``sandboxd serve`` listens unless told otherwise."""

Stream = Literal["stdout", "stderr", "both"]
StdinMode = Literal["pipe", "pty"]
"""What a run's command reads: a pipe, or a terminal (``None``: ``/dev/null``)."""
BundleSource = bytes | str | os.PathLike[str]
"""Bytes of an archive, the path of an archive or of a directory, or an http(s) URL."""

Model = TypeVar("Model", bound=BaseModel)

WAIT_TIMEOUT = httpx.Timeout(30.0, read=None)
"""For answers that come when a run ends: no limit on the wait for them."""


def transport_failure(url: str, err: httpx.TransportError) -> SandboxdError:
    """The exception for a request that got no answer: nothing listening is
    :class:`SandboxdUnavailable` (it says how to start the daemon)."""
    reason = str(err) or type(err).__name__
    if isinstance(err, httpx.ConnectError | httpx.ConnectTimeout):
        return SandboxdUnavailable(url, reason)
    return SandboxdError(0, "transport_error", f"no answer from sandboxd at {url}: {reason}")


@dataclass
class Call:
    """One request of the API."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def run_path(run_id: str, rest: str = "") -> str:
    """``/v1/runs/<run_id><rest>``, the id escaped."""
    if not run_id:
        raise ValueError("no run id: pass run_id or set SANDBOXD_RUN_ID")
    return "/v1/runs/" + quote(run_id, safe="") + rest


def drop_none(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body without the fields left ``None`` (the daemon's defaults apply)."""
    return {key: value for key, value in body.items() if value is not None}


def start_run(
    command: str | Sequence[str],
    *,
    run_id: str | None,
    cwd: str | None,
    env: Mapping[str, str] | None,
    allow_sensitive_env: Sequence[str] | None,
    inherit_env: bool | None,
    secrets: Mapping[str, Any] | None,
    setup: bool | None,
    timeout_s: float | str | None,
    callback: Callback | Mapping[str, Any] | None,
    wait: bool,
    stdin: StdinMode | None = None,
    cols: int | None = None,
    rows: int | None = None,
    term: str | None = None,
) -> Call:
    """``POST /v1/runs``."""
    if isinstance(callback, Callback):
        callback = callback.model_dump(exclude_none=True)
    body = drop_none(
        {
            "run_id": run_id,
            "command": command if isinstance(command, str) else list(command),
            "cwd": cwd,
            "env": dict(env) if env is not None else None,
            "allow_sensitive_env": list(allow_sensitive_env) if allow_sensitive_env else None,
            "inherit_env": inherit_env,
            "secrets": dict(secrets) if secrets is not None else None,
            "setup": setup,
            "timeout_s": timeout_s,
            "callback": dict(callback) if callback is not None else None,
            "wait": True if wait else None,
            "stdin": stdin,
            "cols": cols,
            "rows": rows,
            "term": term,
        }
    )
    return Call("POST", "/v1/runs", json=body)


def list_runs(
    state: str | None, created_since: datetime | str | None, limit: int | None, after: str | None
) -> Call:
    """``GET /v1/runs``."""
    if isinstance(created_since, datetime):
        created_since = created_since.isoformat()
    params = drop_none(
        {
            "state": state,
            "created_since": created_since,
            "limit": str(limit) if limit is not None else None,
            "after": after,
        }
    )
    return Call("GET", "/v1/runs", params=params)


def logs(run_id: str, stream: Stream, offset: int, follow: bool) -> Call:
    """``GET /v1/runs/{id}/logs``."""
    params = {"stream": stream, "offset": str(offset)}
    if follow:
        params["follow"] = "true"
    return Call("GET", run_path(run_id, "/logs"), params=params)


def report(run_id: str, conversation_id: str | None, cost: float | None) -> Call:
    """``POST /v1/runs/{id}/report``."""
    body = drop_none(
        {"conversation_id": conversation_id, "cost": float(cost) if cost is not None else None}
    )
    return Call("POST", run_path(run_id, "/report"), json=body)


def resolve_names(names: Iterable[str]) -> Call:
    """``POST /v1/secrets/resolve`` with a run token: the run's own secrets by name."""
    return Call("POST", "/v1/secrets/resolve", json={"names": list(names)})


def resolve_sources(sources: Mapping[str, Any]) -> Call:
    """``POST /v1/secrets/resolve`` with the session key: any secret sources."""
    return Call("POST", "/v1/secrets/resolve", json={"secrets": dict(sources)})


def fetch_bundle(
    run_id: str,
    url: str,
    headers: Mapping[str, str] | None,
    timeout_s: float | None,
    sha256: str | None = None,
) -> Call:
    """``POST /v1/runs/{id}/bundle``: the daemon downloads the archive
    (and, with ``sha256``, keeps it only when its digest matches)."""
    body = drop_none(
        {
            "url": url,
            "headers": dict(headers) if headers else None,
            "timeout_s": timeout_s,
            "sha256": sha256,
        }
    )
    return Call("POST", run_path(run_id, "/bundle"), json=body)


FETCH_TIMEOUT_DEFAULT_S = 300.0
"""The daemon's own limit on a bundle download without ``timeout_s``."""


def fetch_timeout(timeout_s: float | None) -> httpx.Timeout:
    """How long a client waits for a bundle fetch's answer: the daemon's
    download limit and a margin (the answer comes once it is extracted)."""
    return httpx.Timeout(30.0, read=(timeout_s or FETCH_TIMEOUT_DEFAULT_S) + 30.0)


def is_url(source: str) -> bool:
    """Whether a bundle source is an http(s) URL for the daemon to fetch."""
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def pack_directory(directory: str | os.PathLike[str]) -> IO[bytes]:
    """The directory's contents (not the directory itself) as a tar.gz in a
    temp file, positioned at its start; the caller closes it."""
    if not os.path.isdir(directory):
        raise ValueError(f"{os.fspath(directory)!r} is not a directory")
    out = tempfile.TemporaryFile()  # noqa: SIM115 (returned open; the caller closes it)
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name in sorted(os.listdir(directory)):
            tar.add(os.path.join(directory, name), arcname=name)
    out.flush()
    out.seek(0)
    return out


def open_archive(source: str | os.PathLike[str]) -> IO[bytes]:
    """An archive file, or a directory packed on the fly, opened for upload."""
    if os.path.isdir(source):
        return pack_directory(source)
    return open(source, "rb")


def file_size(file: IO[bytes]) -> int:
    """Bytes from the file's position to its end; the position is kept."""
    start = file.tell()
    size = file.seek(0, os.SEEK_END) - start
    file.seek(start)
    return size


def upload_call(run_id: str, replace: bool, length: int | None) -> Call:
    """``PUT /v1/runs/{id}/bundle`` without its body."""
    call = Call("PUT", run_path(run_id, "/bundle"))
    call.headers["Content-Type"] = "application/octet-stream"
    if length is not None:
        call.headers["Content-Length"] = str(length)
    if replace:
        call.params["replace"] = "true"
    return call


def put_file_call(path: str, mode: int | None, length: int | None) -> Call:
    """``PUT /v1/files`` without its body."""
    call = Call("PUT", "/v1/files", params={"path": path})
    call.headers["Content-Type"] = "application/octet-stream"
    if mode is not None:
        call.params["mode"] = f"{mode:04o}"
    if length is not None:
        call.headers["Content-Length"] = str(length)
    return call


def write_stdin(run_id: str, close: bool) -> Call:
    """``POST /v1/runs/{id}/stdin`` without its body."""
    call = Call("POST", run_path(run_id, "/stdin"))
    call.headers["Content-Type"] = "application/octet-stream"
    # A refused write is answered before its body is read, and the daemon
    # then closes the connection: not one to hand back to the pool, where
    # the next request could meet the close.
    call.headers["Connection"] = "close"
    if close:
        call.params["close"] = "true"
    return call


def read_file(path: str) -> Call:
    """``GET /v1/files``: an absolute path."""
    return Call("GET", "/v1/files", params={"path": path})


def read_run_file(run_id: str, path: str) -> Call:
    """``GET /v1/runs/{id}/files``: a path relative to the run's work dir."""
    return Call("GET", run_path(run_id, "/files"), params={"path": path})


def stat(path: str) -> Call:
    """``GET /v1/files/stat``."""
    return Call("GET", "/v1/files/stat", params={"path": path})


def list_dir(path: str, limit: int | None, after: str | None) -> Call:
    """``GET /v1/files/list``: one page."""
    params = drop_none(
        {"path": path, "limit": str(limit) if limit is not None else None, "after": after}
    )
    return Call("GET", "/v1/files/list", params=params)


def delete_file(path: str, recursive: bool) -> Call:
    """``DELETE /v1/files``."""
    call = Call("DELETE", "/v1/files", params={"path": path})
    if recursive:
        call.params["recursive"] = "true"
    return call


def mkdir(path: str) -> Call:
    """``POST /v1/files/mkdir``."""
    return Call("POST", "/v1/files/mkdir", json={"path": path})


def move(src: str, dst: str) -> Call:
    """``POST /v1/files/move``."""
    return Call("POST", "/v1/files/move", json={"from": src, "to": dst})


def resume_from(dest: str | os.PathLike[str]) -> int:
    """Bytes already in a partial download at ``dest`` (0 when none)."""
    try:
        return os.path.getsize(dest)
    except FileNotFoundError:
        return 0


def with_range(call: Call, start: int) -> Call:
    """The call asking for the bytes from ``start`` on (a resumed download)."""
    if start > 0:
        call.headers["Range"] = f"bytes={start}-"
    return call


def already_complete(response: httpx.Response, start: int) -> bool:
    """Whether a resumed download's answer says the file is all there
    (``416`` with ``Content-Range: bytes */SIZE`` and SIZE == ``start``)."""
    if response.status_code != 416 or start == 0:
        return False
    content_range: str | None = response.headers.get("Content-Range")
    return content_range == f"bytes */{start}"


Destination = str | os.PathLike[str] | IO[bytes]
"""Where a download goes: a file path (resumed when partly there) or an open binary file."""


def download_mode(response: httpx.Response, start: int) -> str | None:
    """How to open a download's file for this answer: ``"ab"`` to append
    to a resumed one, ``"wb"`` to write it whole, ``None`` when it is
    already complete. Raises the daemon's error for other answers (their
    body already read)."""
    if already_complete(response, start):
        return None
    check(response)
    if start > 0 and response.status_code == 206:
        if not response.headers.get("Content-Range", "").startswith(f"bytes {start}-"):
            raise SandboxdError(206, "bad_answer", "the daemon answered another range")
        return "ab"
    return "wb"


def check(response: httpx.Response) -> None:
    """Raises the daemon's error for an error answer (its body already read)."""
    if response.status_code >= 400:
        raise error_from_answer(response.status_code, response.content)


def parse(response: httpx.Response, model: type[Model]) -> Model:
    """The answer as ``model``; an answer that is not one is a ``bad_answer`` error."""
    check(response)
    try:
        return model.model_validate_json(response.content)
    except ValueError as err:
        raise SandboxdError(
            response.status_code,
            "bad_answer",
            f"{response.request.method} {response.request.url.path}: unexpected answer ({err})",
        ) from None


_VALUES = TypeAdapter(dict[str, dict[str, str]])


def parse_values(response: httpx.Response) -> dict[str, str]:
    """The ``values`` of a secrets answer."""
    check(response)
    return _VALUES.validate_json(response.content)["values"]


def auth_headers(key: str | None) -> dict[str, str]:
    """The credential (session key or run token) as the daemon takes it."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def transport_for(url: str) -> tuple[str, str | None]:
    """``(base_url, unix_socket_path)``: ``unix:/path.sock`` talks over a socket."""
    if url.startswith("unix:"):
        return "http://localhost", url[len("unix:") :]
    return url.rstrip("/"), None


def from_env_settings(environ: Mapping[str, str] | None) -> tuple[str, str | None, str | None]:
    """``(url, credential, run_id)`` from the environment.

    Inside a run: ``SANDBOXD_URL``, ``SANDBOXD_RUN_TOKEN`` and
    ``SANDBOXD_RUN_ID`` (sandboxd sets them). Outside: the session key from
    ``SANDBOXD_SESSION_KEY``, ``SANDBOXD_SESSION_KEY_FILE`` or
    ``SESSION_API_KEY``.
    """
    env = os.environ if environ is None else environ
    key = env.get("SANDBOXD_RUN_TOKEN") or env.get("SANDBOXD_SESSION_KEY")
    if not key and env.get("SANDBOXD_SESSION_KEY_FILE"):
        with open(env["SANDBOXD_SESSION_KEY_FILE"], encoding="utf-8") as file:
            key = file.read().strip()
    key = key or env.get("SESSION_API_KEY")
    return env.get("SANDBOXD_URL") or DEFAULT_URL, key or None, env.get("SANDBOXD_RUN_ID")
