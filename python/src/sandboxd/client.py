"""The synchronous client, :class:`Client`."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType
from typing import IO, Any, overload

import httpx

from . import _calls as calls
from ._calls import DEFAULT_URL, BundleSource, Destination, StdinMode, Stream
from .models import (
    BundleInfo,
    Callback,
    DaemonStatus,
    DirPage,
    FileInfo,
    FileStat,
    PathInfo,
    Run,
    RunPage,
)

__all__ = ["Client"]


class Client:
    """A connection to one sandboxd, with a credential.

    ``key`` is the session key (dispatchers, operators) or a run's
    ``SANDBOXD_RUN_TOKEN`` (a script inside that run: it may only read its
    own status, report and resolve its own secrets). ``run_id`` is the
    default run of the run-scoped calls. ``url`` may be ``unix:/path.sock``.
    The key is never shown by ``repr`` nor put into an error.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        run_id: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url
        self.run_id = run_id
        self._timeout = httpx.Timeout(timeout)
        base, socket_path = calls.transport_for(url)
        if transport is None:
            transport = httpx.HTTPTransport(uds=socket_path)
        self._http = httpx.Client(
            base_url=base,
            headers={"Accept": "application/json", **calls.auth_headers(key)},
            timeout=timeout,
            transport=transport,
            trust_env=False,  # the daemon is local: never send its key through a proxy
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Client:
        """The client of the run this process belongs to (``SANDBOXD_URL``,
        ``SANDBOXD_RUN_TOKEN``, ``SANDBOXD_RUN_ID``), or outside a run the
        session key's (``SANDBOXD_SESSION_KEY[_FILE]`` or ``SESSION_API_KEY``)."""
        url, key, run_id = calls.from_env_settings(environ)
        return cls(url, key, run_id=run_id, **kwargs)

    def __repr__(self) -> str:
        return f"Client(url={self.url!r}, run_id={self.run_id!r})"

    def close(self) -> None:
        """Closes the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # The daemon.

    def healthz(self) -> bool:
        """``GET /healthz``: whether the daemon answers."""
        return self._send(calls.Call("GET", "/healthz")).status_code == 200

    def daemon_status(self) -> DaemonStatus:
        """``GET /v1/status``."""
        return calls.parse(self._send(calls.Call("GET", "/v1/status")), DaemonStatus)

    def metrics(self) -> str:
        """``GET /metrics``: OpenMetrics text."""
        return self._text(calls.Call("GET", "/metrics"))

    def openapi(self) -> dict[str, Any]:
        """``GET /openapi.json``."""
        response = self._send(calls.Call("GET", "/openapi.json"))
        calls.check(response)
        document: dict[str, Any] = response.json()
        return document

    # Bundles and files.

    def upload_bundle(
        self,
        run_id: str,
        source: BundleSource | IO[bytes],
        *,
        replace: bool = False,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        sha256: str | None = None,
    ) -> BundleInfo:
        """Puts a bundle into the run's work dir, before the run starts.

        ``source``: archive bytes; an open binary file; the path of a tar,
        tar.gz or tar.zst archive; a directory (packed on the fly); or an
        http(s) URL, which the daemon downloads itself (``headers`` and
        ``timeout_s`` apply to that download; with ``sha256``, the bundle is
        kept only when the downloaded archive has that digest). Uploads are
        streamed.
        """
        if isinstance(source, str) and calls.is_url(source):
            call = calls.fetch_bundle(run_id, source, headers, timeout_s, sha256)
            answer = self._send(call, timeout=calls.fetch_timeout(timeout_s))
            return calls.parse(answer, BundleInfo)
        if isinstance(source, bytes | bytearray):
            call = calls.upload_call(run_id, replace, len(source))
            return calls.parse(self._send(call, content=bytes(source)), BundleInfo)
        if isinstance(source, str | os.PathLike):
            with calls.open_archive(source) as file:
                return self._upload_file(run_id, file, replace)
        return self._upload_file(run_id, source, replace)

    def _upload_file(self, run_id: str, file: IO[bytes], replace: bool) -> BundleInfo:
        call = calls.upload_call(run_id, replace, calls.file_size(file))
        return calls.parse(self._send(call, content=_chunks(file)), BundleInfo)

    def put_file(self, path: str, data: bytes | IO[bytes], *, mode: int | None = None) -> FileInfo:
        """``PUT /v1/files``: writes ``data`` atomically at the absolute ``path``."""
        if isinstance(data, bytes | bytearray):
            call = calls.put_file_call(path, mode, len(data))
            return calls.parse(self._send(call, content=bytes(data)), FileInfo)
        call = calls.put_file_call(path, mode, calls.file_size(data))
        return calls.parse(self._send(call, content=_chunks(data)), FileInfo)

    @overload
    def download(self, path: str, dest: None = None) -> bytes: ...
    @overload
    def download(self, path: str, dest: Destination) -> int: ...
    def download(self, path: str, dest: Destination | None = None) -> bytes | int:
        """``GET /v1/files``: the file at the absolute ``path``, streamed.

        ``dest`` is a file path (a partial file there is resumed with a
        ``Range`` request) or an open binary file; the answer is then the
        bytes at ``dest`` (for a path) or written (for a file). Without
        ``dest`` the answer is the content itself (for small files)."""
        return self._download(calls.read_file(path), dest)

    @overload
    def run_file(self, run_id: str | None, path: str, dest: None = None) -> bytes: ...
    @overload
    def run_file(self, run_id: str | None, path: str, dest: Destination) -> int: ...
    def run_file(
        self, run_id: str | None, path: str, dest: Destination | None = None
    ) -> bytes | int:
        """``GET /v1/runs/{id}/files``: ``path`` relative to the run's work
        dir (a run's own token may read its own run's), as :meth:`download`."""
        return self._download(calls.read_run_file(self._run(run_id), path), dest)

    def stat(self, path: str) -> FileStat:
        """``GET /v1/files/stat``: the entry at ``path`` (a symlink is not followed)."""
        return calls.parse(self._send(calls.stat(path)), FileStat)

    def list_dir_page(
        self, path: str, *, limit: int | None = None, after: str | None = None
    ) -> DirPage:
        """``GET /v1/files/list``: one page of the directory, sorted by name."""
        return calls.parse(self._send(calls.list_dir(path, limit, after)), DirPage)

    def list_dir(self, path: str, *, limit: int | None = None) -> Iterator[FileStat]:
        """Every entry of the directory, sorted by name, ``limit`` a page."""
        after: str | None = None
        while True:
            page = self.list_dir_page(path, limit=limit, after=after)
            yield from page.entries
            if page.next is None:
                return
            after = page.next

    def delete(self, path: str, *, recursive: bool = False) -> PathInfo:
        """``DELETE /v1/files``: a file, a symlink, an empty dir, or with
        ``recursive`` a dir and everything in it."""
        return calls.parse(self._send(calls.delete_file(path, recursive)), PathInfo)

    def mkdir(self, path: str) -> PathInfo:
        """``POST /v1/files/mkdir``: the dir and its missing parents
        (``created`` says whether it was made)."""
        return calls.parse(self._send(calls.mkdir(path)), PathInfo)

    def move(self, src: str, dst: str) -> PathInfo:
        """``POST /v1/files/move``: renames, never over an existing entry."""
        return calls.parse(self._send(calls.move(src, dst)), PathInfo)

    def _download(self, call: calls.Call, dest: Destination | None) -> bytes | int:
        if dest is None:
            response = self._send(call, timeout=calls.WAIT_TIMEOUT)
            calls.check(response)
            return response.content
        if not isinstance(dest, str | os.PathLike):
            with self._stream(call) as response:
                calls.check(response)
                return _write_all(response.iter_bytes(), dest)
        start = calls.resume_from(dest)
        with self._stream(calls.with_range(call, start)) as response:
            mode = calls.download_mode(response, start)
            if mode is not None:
                with open(dest, mode) as out:
                    _write_all(response.iter_bytes(), out)
        return os.path.getsize(dest)

    @contextmanager
    def _stream(self, call: calls.Call) -> Iterator[httpx.Response]:
        """The answer with its body unread (an error answer's body is read)."""
        request = self._http.build_request(
            call.method,
            call.path,
            params=call.params,
            headers=call.headers or None,
            timeout=calls.WAIT_TIMEOUT,
        )
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as err:
            raise calls.transport_failure(self.url, err) from None
        try:
            if response.status_code >= 400:
                response.read()
            yield response
        finally:
            response.close()

    # Runs.

    def start_run(
        self,
        command: str | Sequence[str],
        *,
        run_id: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        allow_sensitive_env: Sequence[str] | None = None,
        inherit_env: bool | None = None,
        secrets: Mapping[str, Any] | None = None,
        setup: bool | None = None,
        timeout_s: float | str | None = None,
        callback: Callback | Mapping[str, Any] | None = None,
        wait: bool = False,
        stdin: StdinMode | None = None,
        cols: int | None = None,
        rows: int | None = None,
        term: str | None = None,
    ) -> Run:
        """``POST /v1/runs``: starts ``command`` (an argv, or a string for
        ``bash -c``). The same ``run_id`` with the same request answers the
        existing run (a retried start never starts twice). ``wait=True``
        answers once the run has ended, with its ``stdout`` and ``stderr``.
        ``stdin`` gives the command an input: ``"pipe"``, or ``"pty"`` (a
        terminal of ``cols`` by ``rows``, ``TERM=term``); write it with
        :meth:`write_stdin` (or attach with :meth:`AsyncClient.attach`)."""
        call = calls.start_run(
            command,
            run_id=run_id,
            cwd=cwd,
            env=env,
            allow_sensitive_env=allow_sensitive_env,
            inherit_env=inherit_env,
            secrets=secrets,
            setup=setup,
            timeout_s=timeout_s,
            callback=callback,
            wait=wait,
            stdin=stdin,
            cols=cols,
            rows=rows,
            term=term,
        )
        return calls.parse(self._send(call, timeout=calls.WAIT_TIMEOUT if wait else None), Run)

    def status(self, run_id: str | None = None) -> Run:
        """``GET /v1/runs/{id}``: the run's status."""
        call = calls.Call("GET", calls.run_path(self._run(run_id)))
        return calls.parse(self._send(call), Run)

    def runs_page(
        self,
        *,
        state: str | None = None,
        created_since: datetime | str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> RunPage:
        """``GET /v1/runs``: one page, newest first."""
        call = calls.list_runs(state, created_since, limit, after)
        return calls.parse(self._send(call), RunPage)

    def runs(
        self, *, state: str | None = None, created_since: datetime | str | None = None
    ) -> Iterator[Run]:
        """Every run (newest first), page after page."""
        after: str | None = None
        while True:
            page = self.runs_page(state=state, created_since=created_since, after=after)
            yield from page.runs
            if page.next is None:
                return
            after = page.next

    def delete_run(self, run_id: str) -> None:
        """``DELETE /v1/runs/{id}``: removes an ended run."""
        calls.check(self._send(calls.Call("DELETE", calls.run_path(run_id))))

    def wait(
        self, run_id: str | None = None, *, timeout: float | None = None, poll: float = 0.1
    ) -> Run:
        """The run's status once it has ended; ``TimeoutError`` after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.status(run_id)
            if run.ended:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {run.run_id} still {run.state.value} after {timeout}s")
            time.sleep(poll)
            poll = min(poll * 1.5, 1.0)

    def logs(self, run_id: str | None = None, *, stream: Stream = "stdout", offset: int = 0) -> str:
        """The captured (masked) output so far."""
        return self._text(calls.logs(self._run(run_id), stream, offset, follow=False))

    def follow_logs(
        self, run_id: str | None = None, *, stream: Stream = "stdout", offset: int = 0
    ) -> Iterator[str]:
        """The output as it comes, until the run ends (the iterator then stops)."""
        call = calls.logs(self._run(run_id), stream, offset, follow=True)
        with self._stream(call) as response:
            calls.check(response)
            yield from response.iter_text()

    def write_stdin(
        self,
        run_id: str | None,
        data: bytes | IO[bytes] | Iterable[bytes],
        *,
        close: bool = False,
    ) -> None:
        """``POST /v1/runs/{id}/stdin``: ``data`` (bytes, an open binary file
        or chunks, streamed) into the input of a ``pipe`` or ``pty`` run;
        ``close`` ends the input after it. Returns once it is written (a
        command that reads slowly holds it back)."""
        call = calls.write_stdin(self._run(run_id), close)
        if isinstance(data, bytes | bytearray):
            content: bytes | Iterator[bytes] = bytes(data)
        elif hasattr(data, "read"):
            content = _chunks(data)  # type: ignore[arg-type]
        else:
            content = iter(data)
        calls.check(self._send(call, content=content, timeout=calls.WAIT_TIMEOUT))

    def cancel(self, run_id: str | None = None, *, grace_s: float | None = None) -> Run:
        """SIGTERM to the run's processes, SIGKILL after ``grace_s`` (default 10)."""
        body = calls.drop_none({"grace_s": grace_s})
        call = calls.Call("POST", calls.run_path(self._run(run_id), "/cancel"), json=body)
        return calls.parse(self._send(call), Run)

    def signal(self, signal: str | int, run_id: str | None = None) -> Run:
        """Sends a signal (``"SIGINT"``, ``"INT"`` or a number) to the run's process group."""
        call = calls.Call(
            "POST", calls.run_path(self._run(run_id), "/signal"), json={"signal": signal}
        )
        return calls.parse(self._send(call), Run)

    def report(
        self,
        *,
        conversation_id: str | None = None,
        cost: float | None = None,
        run_id: str | None = None,
    ) -> Run:
        """From inside a run: stores the conversation id and cost, which the
        run's completion callback carries. Fields left ``None`` keep their value."""
        return calls.parse(self._send(calls.report(self._run(run_id), conversation_id, cost)), Run)

    # Secrets.

    def resolve_secrets(self, names: Iterable[str]) -> dict[str, str]:
        """From inside a run: fresh values of the run's own secrets, by env var name."""
        return calls.parse_values(self._send(calls.resolve_names(names)))

    def resolve(self, name: str) -> str:
        """From inside a run: the fresh value of one of its own secrets."""
        return self.resolve_secrets([name])[name]

    def resolve_sources(self, sources: Mapping[str, Any]) -> dict[str, str]:
        """With the session key: resolves secret sources without starting anything."""
        return calls.parse_values(self._send(calls.resolve_sources(sources)))

    # Plumbing.

    def _run(self, run_id: str | None) -> str:
        found = run_id or self.run_id
        if not found:
            raise ValueError("no run id: pass run_id or set SANDBOXD_RUN_ID")
        return found

    def _text(self, call: calls.Call) -> str:
        response = self._send(call)
        calls.check(response)
        return response.text

    def _send(
        self,
        call: calls.Call,
        content: bytes | Iterator[bytes] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        try:
            return self._http.request(
                call.method,
                call.path,
                params=call.params or None,
                json=call.json,
                content=content,
                headers=call.headers or None,
                timeout=timeout or self._timeout,
            )
        except httpx.TransportError as err:
            raise calls.transport_failure(self.url, err) from None


def _write_all(chunks: Iterable[bytes], out: IO[bytes]) -> int:
    """Writes the chunks to ``out``; the bytes written."""
    written = 0
    for chunk in chunks:
        out.write(chunk)
        written += len(chunk)
    return written


def _chunks(file: IO[bytes], size: int = 1 << 16) -> Iterator[bytes]:
    """The file's bytes, piece by piece (streamed, never read whole)."""
    while chunk := file.read(size):
        yield chunk
