#!/usr/bin/env python3
"""Soak: many mixed runs against one daemon with retention on.

Starts `SANDBOXD_BIN` (default target/release/sandboxd) on a free loopback
port with `--retain-runs 1000`, a callback receiver, and drives SOAK_RUNS
(default 100000) runs from SOAK_WORKERS (default 4) keep-alive clients:
exec-and-wait of `echo x` (most), async runs with output, and runs with a
completion callback. Every SOAK_EVERY (default 10000) runs it samples the
daemon's RSS, open descriptors, state-dir bytes and inodes, work-root
inodes and the rate, and prints a Markdown table at the end.
"""

import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

KEY = "soak-key-0123456789"
RUNS = int(os.environ.get("SOAK_RUNS", "100000"))
WORKERS = int(os.environ.get("SOAK_WORKERS", "4"))
EVERY = int(os.environ.get("SOAK_EVERY", "10000"))
BIN = os.environ.get("SANDBOXD_BIN", "target/release/sandboxd")


class Receiver(http.server.BaseHTTPRequestHandler):
    received = {}
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        with Receiver.lock:
            Receiver.received[self.path] = Receiver.received.get(self.path, 0) + 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
        del body

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(path):
    files, size = 0, 0
    for root, dirs, names in os.walk(path):
        files += len(dirs) + len(names)
        for name in names:
            try:
                size += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return files, size


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    scratch = tempfile.mkdtemp(prefix="sandboxd-soak-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    state, work = os.path.join(scratch, "state"), os.path.join(scratch, "work")
    port = free_port()
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    rport = receiver.server_address[1]
    env = dict(os.environ, SESSION_API_KEY=KEY)
    daemon = subprocess.Popen(
        [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--state-dir", state,
         "--work-root", work, "--retain-runs", "1000", "--max-running", "256"],
        env=env, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            break
        except OSError:
            time.sleep(0.05)
    headers = {"X-Session-API-Key": KEY, "Content-Type": "application/json"}
    counter = {"next": 0, "done": 0, "bad": 0, "callbacks": 0}
    lock = threading.Lock()
    samples = []
    started = time.time()
    last = [started, 0]

    def sample():
        files, size = tree(state)
        wfiles, _ = tree(work)
        now = time.time()
        rate = (counter["done"] - last[1]) / max(now - last[0], 1e-9)
        last[0], last[1] = now, counter["done"]
        samples.append((counter["done"], rss_kib(daemon.pid) / 1024, len(os.listdir(f"/proc/{daemon.pid}/fd")),
                        size / 1048576, files, wfiles, rate))
        print(f"{samples[-1]}", file=sys.stderr, flush=True)

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                i = counter["next"]
                if i >= RUNS:
                    return
                counter["next"] += 1
            run_id = f"s{i}"
            kind = i % 10
            body = {"run_id": run_id, "command": ["sh", "-c", "echo x"], "wait": True}
            if kind == 8:
                body = {"run_id": run_id, "command": "for i in 1 2 3; do echo $i; done"}
            elif kind == 9:
                body["callback"] = {"url": f"http://127.0.0.1:{rport}/api/automation/v1/runs/{run_id}/complete"}
            for _ in range(100):
                conn.request("POST", "/v1/runs", json.dumps(body), headers)
                resp = conn.getresponse()
                answer = json.loads(resp.read() or b"{}")
                if resp.status != 429:
                    break
                time.sleep(0.01)
            ok = resp.status in (200, 201)
            if ok and kind == 8:
                while answer.get("state") in ("starting", "running"):
                    time.sleep(0.005)
                    conn.request("GET", f"/v1/runs/{run_id}", headers=headers)
                    resp = conn.getresponse()
                    answer = json.loads(resp.read())
            ok = ok and answer.get("state") == "succeeded"
            with lock:
                counter["done"] += 1
                counter["bad"] += 0 if ok else 1
                counter["callbacks"] += 1 if kind == 9 else 0
                if counter["done"] % EVERY == 0:
                    sample()

    sample()
    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.time() + 30
    while sum(Receiver.received.values()) < counter["callbacks"] and time.time() < deadline:
        time.sleep(0.1)
    elapsed = time.time() - started
    dup = sum(1 for n in Receiver.received.values() if n > 1)
    daemon.terminate()
    daemon.wait()
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"Soak: {RUNS} runs ({WORKERS} clients) in {elapsed:.0f} s; "
          f"{counter['bad']} not succeeded; callbacks {sum(Receiver.received.values())}/{counter['callbacks']}, "
          f"{dup} duplicated. Machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}.\n")
    print("| runs done | RSS (MiB) | open fds | state dir (MiB) | state inodes | work-root inodes | runs/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for done, rss, fds, size, files, wfiles, rate in samples:
        print(f"| {done} | {rss:.1f} | {fds} | {size:.1f} | {files} | {wfiles} | {rate:.0f} |")


if __name__ == "__main__":
    main()
