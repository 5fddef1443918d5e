#!/usr/bin/env python3
"""The dispatcher's side of an automation run, as the automation service
drives a sandbox through sandboxd:

1. pack a directory into a tar.gz bundle (a temp file, streamed up);
2. upload it into the run's work dir (``PUT /v1/runs/{id}/bundle``);
3. start the run with a completion callback (``POST /v1/runs``) that points
   at a tiny HTTP server this script runs itself on 127.0.0.1 (standing in
   for the service's ``.../runs/{id}/complete`` endpoint);
4. wait for sandboxd's callback and check its bearer token.

It uses the ``sandboxd`` package (``pip install ./python``).

Usage::

    SESSION_API_KEY=... python3 examples/dispatcher.py ./project -- python3 main.py

The last line printed is ``callback: <the JSON payload>``. Exits 0 when the
callback says COMPLETED, 1 when it says FAILED, 2 when none came in time.
"""

import argparse
import http.server
import json
import os
import queue
import secrets
import sys
import tarfile
import tempfile
import threading
import uuid

from sandboxd import DEFAULT_URL, Client, SandboxdError


class CallbackServer:
    """Receives completion callbacks: POST with ``Authorization: Bearer <token>``."""

    def __init__(self, token: str):
        self.token = token
        self.received: "queue.Queue[dict]" = queue.Queue()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Authorization") != f"Bearer {server.token}":
                    self._answer(401, {"detail": "bad token"})
                    return
                try:
                    payload = json.loads(body)
                except ValueError:
                    self._answer(422, {"detail": "not JSON"})
                    return
                if self.path.endswith("/complete"):
                    server.received.put(payload)
                self._answer(200, {})

            def _answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, run_id: str) -> str:
        return f"http://127.0.0.1:{self.port}/api/automation/v1/runs/{run_id}/complete"

    def wait(self, timeout: float):
        try:
            return self.received.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self):
        self.httpd.shutdown()


def pack(directory: str, out) -> None:
    """Writes ``directory``'s contents (not the directory itself) as tar.gz."""
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name in sorted(os.listdir(directory)):
            tar.add(os.path.join(directory, name), arcname=name)
    out.flush()
    out.seek(0)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", help="the directory to bundle")
    parser.add_argument("command", nargs="+", help="the command to run, after --")
    parser.add_argument("--url", default=os.environ.get("SANDBOXD_URL", DEFAULT_URL))
    parser.add_argument("--key-file", help="file with the session key [default: env SESSION_API_KEY]")
    parser.add_argument("--run-id", default=None, help="[default: a new UUID]")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the callback")
    args = parser.parse_args()

    key = os.environ.get("SESSION_API_KEY")
    if args.key_file:
        with open(args.key_file) as f:
            key = f.read().strip()
    client = Client(args.url, key)
    run_id = args.run_id or str(uuid.uuid4())
    callback_token = secrets.token_urlsafe(24)
    callbacks = CallbackServer(callback_token)
    try:
        with tempfile.TemporaryFile() as bundle:
            pack(args.directory, bundle)
            uploaded = client.upload_bundle(run_id, bundle)
        print(f"uploaded {uploaded.entries} entries ({uploaded.bytes} bytes) into {uploaded.dir}")

        run = client.start_run(
            args.command,
            run_id=run_id,
            timeout_s=args.timeout,
            callback={"url": callbacks.url(run_id), "token": callback_token, "run_id": run_id},
        )
        print(f"started run {run.run_id}: {' '.join(run.command)}")

        payload = callbacks.wait(args.timeout + 30)
        if payload is None:
            print(f"no callback within {args.timeout + 30:.0f}s; run is {client.status(run_id).state.value}",
                  file=sys.stderr)
            return 2
        final = client.status(run_id)
        print(f"run {run_id} ended {final.state.value}; output:")
        sys.stdout.write(client.logs(run_id, stream="both"))
        print("callback: " + json.dumps(payload, sort_keys=True))
        return 0 if payload.get("status") == "COMPLETED" else 1
    except SandboxdError as err:
        print(f"dispatcher: {err}", file=sys.stderr)
        return 1
    finally:
        callbacks.close()


if __name__ == "__main__":
    sys.exit(main())
