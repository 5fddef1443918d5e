"""A small client of the sandboxd HTTP API, standard library only.

Two kinds of callers use it:

* An automation script running *inside* a sandboxd run. sandboxd gives every
  run ``SANDBOXD_URL``, ``SANDBOXD_RUN_ID`` and ``SANDBOXD_RUN_TOKEN``; the
  token is valid only for that run and only while it runs, and only for
  ``report``, ``resolve_secrets`` and ``status``::

      from sandboxd_client import SandboxdClient
      client = SandboxdClient.from_env()
      token = client.resolve("GITHUB_TOKEN")       # one of the run's own secrets
      client.report(conversation_id="c0ffee", cost=0.42)
      print(client.status()["state"])               # "running"

* A dispatcher *outside* the run, holding the session key: it uploads
  bundles, starts runs, reads and cancels them::

      client = SandboxdClient("http://127.0.0.1:60001", token=session_key)
      client.upload_bundle("r1", open("bundle.tar.gz", "rb"))
      client.start_run(["python", "main.py"], run_id="r1")

Errors from the daemon raise :class:`SandboxdError` with the daemon's
``status``, ``code`` and ``message``; an unreachable daemon raises
:class:`SandboxdUnavailable`. Secret values are never put into an error or a
log line by this module.

``SANDBOXD_URL`` may also be ``unix:/path.sock`` (a daemon on a Unix socket).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, BinaryIO, Dict, Iterable, List, Optional, Union

DEFAULT_URL = "http://127.0.0.1:60001"

__all__ = ["SandboxdClient", "SandboxdError", "SandboxdUnavailable", "DEFAULT_URL"]


class SandboxdError(Exception):
    """The daemon answered with an error: ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str):
        # status 0: no HTTP answer at all (SandboxdUnavailable).
        where = f"{code}, HTTP {status}" if status else code
        super().__init__(f"{message} ({where})")
        self.status = status
        self.code = code
        self.message = message


class SandboxdUnavailable(SandboxdError):
    """Nothing answered at the daemon's address."""

    def __init__(self, url: str, reason: str):
        super().__init__(
            0,
            "unreachable",
            f"cannot reach sandboxd at {url} ({reason}); is `sandboxd serve` running "
            "and SANDBOXD_URL right?",
        )


class SandboxdClient:
    """A connection to one sandboxd, with a credential.

    ``token`` is either the session key (dispatchers, operators) or a run's
    ``SANDBOXD_RUN_TOKEN`` (scripts inside that run); both are sent the same
    way. ``run_id`` is the default run of the run-scoped calls.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: Optional[str] = None,
        run_id: Optional[str] = None,
        timeout: float = 30.0,
    ):
        self.url = url.rstrip("/")
        self.run_id = run_id
        self.timeout = timeout
        self._token = token

    def __repr__(self) -> str:  # never shows the token
        return f"SandboxdClient(url={self.url!r}, run_id={self.run_id!r})"

    @classmethod
    def from_env(cls, environ: Optional[Dict[str, str]] = None) -> "SandboxdClient":
        """The client of the run this process belongs to.

        Reads ``SANDBOXD_URL``, ``SANDBOXD_RUN_ID`` and ``SANDBOXD_RUN_TOKEN``
        (set by sandboxd for every run). Outside a run, ``SESSION_API_KEY``
        is used as the credential instead.
        """
        env = os.environ if environ is None else environ
        token = env.get("SANDBOXD_RUN_TOKEN") or env.get("SESSION_API_KEY")
        if not token:
            raise SandboxdError(
                0,
                "no_credentials",
                "neither SANDBOXD_RUN_TOKEN (inside a run) nor SESSION_API_KEY is set",
            )
        return cls(
            env.get("SANDBOXD_URL") or DEFAULT_URL,
            token=token,
            run_id=env.get("SANDBOXD_RUN_ID"),
        )

    # Calls a run may make about itself (run token or session key).

    def status(self, run_id: Optional[str] = None) -> Dict[str, Any]:
        """``GET /v1/runs/{id}``: the run's status (state, pid, exit code, report...)."""
        return self._json("GET", self._run_path(run_id))

    def report(
        self,
        conversation_id: Optional[str] = None,
        cost: Optional[float] = None,
        run_id: Optional[str] = None,
    ) -> Dict[str, Any]:
        """``POST /v1/runs/{id}/report``: store the conversation id and cost.

        They are carried by the run's completion callback. Fields left
        ``None`` keep their earlier value. Returns the run's status.
        """
        body: Dict[str, Any] = {}
        if conversation_id is not None:
            body["conversation_id"] = conversation_id
        if cost is not None:
            body["cost"] = float(cost)
        return self._json("POST", self._run_path(run_id, "/report"), body)

    def resolve_secrets(self, names: Iterable[str]) -> Dict[str, str]:
        """``POST /v1/secrets/resolve {"names": [...]}``: fresh values of the
        run's own secrets, by their env var names. Returns name -> value."""
        answer = self._json("POST", "/v1/secrets/resolve", {"names": list(names)})
        return dict(answer.get("values", {}))

    def resolve(self, name: str) -> str:
        """The fresh value of one of the run's own secrets."""
        return self.resolve_secrets([name])[name]

    # Calls that need the session key (dispatchers and operators).

    def daemon_status(self) -> Dict[str, Any]:
        """``GET /v1/status``."""
        return self._json("GET", "/v1/status")

    def upload_bundle(
        self,
        run_id: str,
        data: Union[bytes, BinaryIO],
        replace: bool = False,
        content_type: str = "application/gzip",
    ) -> Dict[str, Any]:
        """``PUT /v1/runs/{id}/bundle``: a tar, tar.gz or tar.zst archive
        (bytes or a binary file, streamed) extracted into the run's work dir.
        Returns ``{"run_id", "dir", "entries", "bytes"}``."""
        path = self._run_path(run_id, "/bundle") + ("?replace=true" if replace else "")
        headers = {"Content-Type": content_type}
        if not isinstance(data, (bytes, bytearray)):
            start = data.tell()
            size = data.seek(0, os.SEEK_END) - start
            data.seek(start)
            headers["Content-Length"] = str(size)
        return self._json("PUT", path, raw=data, headers=headers)

    def start_run(
        self,
        command: Union[str, List[str]],
        run_id: Optional[str] = None,
        cwd: Optional[str] = None,
        env: Optional[Dict[str, str]] = None,
        secrets: Optional[Dict[str, Dict[str, Any]]] = None,
        callback: Optional[Dict[str, Any]] = None,
        timeout_s: Optional[float] = None,
        setup: Optional[bool] = None,
        wait: bool = False,
    ) -> Dict[str, Any]:
        """``POST /v1/runs``. ``command`` is an argv list, or a string run by
        ``bash -c``. With ``wait=True`` the answer comes when the run has
        ended and carries its ``stdout`` and ``stderr``."""
        body: Dict[str, Any] = {"command": command}
        for key, value in (
            ("run_id", run_id),
            ("cwd", cwd),
            ("env", env),
            ("secrets", secrets),
            ("callback", callback),
            ("timeout_s", timeout_s),
            ("setup", setup),
        ):
            if value is not None:
                body[key] = value
        if wait:
            body["wait"] = True
        return self._json("POST", "/v1/runs", body)

    def runs(self, state: Optional[str] = None) -> List[Dict[str, Any]]:
        """``GET /v1/runs[?state=...]``."""
        query = "?" + urllib.parse.urlencode({"state": state}) if state else ""
        return self._json("GET", "/v1/runs" + query)["runs"]

    def logs(self, run_id: Optional[str] = None, stream: str = "stdout", offset: int = 0) -> str:
        """``GET /v1/runs/{id}/logs``: the captured (masked) output so far."""
        query = urllib.parse.urlencode({"stream": stream, "offset": offset})
        status, body = self._request("GET", self._run_path(run_id, "/logs") + "?" + query)
        return body.decode("utf-8", "replace")

    def cancel(self, run_id: Optional[str] = None, grace_s: Optional[float] = None) -> Dict[str, Any]:
        """``POST /v1/runs/{id}/cancel``: SIGTERM, SIGKILL after ``grace_s``."""
        body = {} if grace_s is None else {"grace_s": grace_s}
        return self._json("POST", self._run_path(run_id, "/cancel"), body)

    # Plumbing.

    def _run_path(self, run_id: Optional[str], rest: str = "") -> str:
        run_id = run_id or self.run_id
        if not run_id:
            raise ValueError("no run id: pass run_id or set SANDBOXD_RUN_ID")
        return "/v1/runs/" + urllib.parse.quote(run_id, safe="") + rest

    def _json(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: Union[None, bytes, BinaryIO] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> Dict[str, Any]:
        headers = dict(headers or {})
        if body is not None:
            raw = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        status, data = self._request(method, path, raw, headers)
        if not data:
            return {}
        try:
            return json.loads(data)
        except ValueError:
            raise SandboxdError(status, "bad_answer", f"{method} {path}: the answer is not JSON")

    def _request(
        self,
        method: str,
        path: str,
        data: Union[None, bytes, BinaryIO] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> "tuple[int, bytes]":
        headers = dict(headers or {})
        headers.setdefault("Accept", "application/json")
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if self.url.startswith("unix:"):
            return self._request_unix(method, path, data, headers)
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        # The daemon is local: never send its credential through a proxy.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            raise _api_error(err.code, err.read()) from None
        except urllib.error.URLError as err:
            raise SandboxdUnavailable(self.url, str(err.reason)) from None

    def _request_unix(self, method, path, data, headers):
        conn = _UnixConnection(self.url[len("unix:"):], timeout=self.timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            body = response.read()
        except OSError as err:
            raise SandboxdUnavailable(self.url, err.strerror or str(err)) from None
        finally:
            conn.close()
        if response.status >= 400:
            raise _api_error(response.status, body)
        return response.status, body


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (urllib has no such transport)."""

    def __init__(self, socket_path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._socket_path)
        self.sock = sock


def _api_error(status: int, body: bytes) -> SandboxdError:
    try:
        error = json.loads(body)["error"]
        return SandboxdError(status, str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        return SandboxdError(status, "http_error", f"HTTP {status} without a sandboxd error body")
