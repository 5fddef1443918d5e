#!/usr/bin/env python3
"""Soak: thousands of runs back to back against one release sandboxd.

Every run is driven the way the dispatcher and SDK scripts drive them and
then deleted: nine in ten are exec-and-wait (`wait: true`), every tenth has
a completion callback to a local receiver (waited for, then the run is
deleted), and every tenth (offset by five) starts in the background with a
secret and is followed through `logs?follow=true`, its secret masked.

Samples the daemon's open descriptors, RSS and threads, its children
(shims) and zombies, and the run processes left anywhere, after a warm-up,
every 1000 runs and at the end. Prints a Markdown section on stdout
(progress on stderr) and exits 0 only when nothing leaked and no run went
wrong.

Usage: soak.py [RUNS]   (env SANDBOXD_BIN, default target/release/sandboxd)
"""

import http.client
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("SANDBOXD_BIN", os.path.join(REPO, "target/release/sandboxd"))
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
WARMUP = min(200, RUNS // 10)
MARK = f"sandboxd-soak-{os.getpid()}"
SECRET = "soak-secret-" + secrets.token_hex(8)


def say(*words):
    print("40-soak:", *words, file=sys.stderr, flush=True)


class Receiver(BaseHTTPRequestHandler):
    """The automation service's stand-in: 200 to every completion."""

    count = 0
    lock = threading.Lock()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        with Receiver.lock:
            Receiver.count += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class Api:
    """One kept-alive connection to the daemon."""

    def __init__(self, addr, key):
        self.addr, self.key = addr, key
        self.conn = http.client.HTTPConnection(addr, timeout=60)

    def call(self, method, path, body=None):
        headers = {"X-Session-API-Key": self.key}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, data, headers)
                res = self.conn.getresponse()
                text = res.read().decode()
                return res.status, text
            except (http.client.HTTPException, ConnectionError):
                # A kept-alive connection closed by the daemon's idle timeout.
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.addr, timeout=60)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return fields


def processes():
    """(pid, ppid, state, cmdline) of every process."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()
        found.append((int(name), int(rest[1]), rest[0], cmdline))
    return found


def sample(pid):
    status = proc_status(pid)
    table = processes()
    children = [p for p in table if p[1] == pid]
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "rss_kib": int(status["VmRSS"].split()[0]),
        "threads": int(status["Threads"]),
        "children": len(children),
        "zombies": sum(1 for p in children if p[2] == "Z"),
        "shims": sum(1 for p in children if " shim" in p[3]),
        "run_processes": sum(1 for p in table if MARK in p[3] and p[0] != os.getpid()),
    }


def entries(path):
    try:
        return len(os.listdir(path))
    except FileNotFoundError:
        return 0


def main():
    if not os.access(BIN, os.X_OK):
        say(f"{BIN} is missing: run cargo build --release --bin sandboxd (or set SANDBOXD_BIN)")
        return 1
    scratch = tempfile.mkdtemp(prefix="sandboxd-soak.")
    key = "soak-key-" + secrets.token_hex(16)
    with open(os.path.join(scratch, "key"), "w") as f:
        f.write(key)
    state, work = os.path.join(scratch, "state"), os.path.join(scratch, "work")
    log = open(os.path.join(scratch, "daemon.log"), "w+")
    daemon = subprocess.Popen(
        [BIN, "serve", "--listen", "127.0.0.1:0", "--log-format", "json",
         "--state-dir", state, "--work-root", work,
         "--session-key-file", os.path.join(scratch, "key"),
         "--agent-server-url", "http://127.0.0.1:9"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    try:
        return soak(daemon, log, key, state, work)
    finally:
        if daemon.poll() is None:
            daemon.terminate()
            daemon.wait(30)
        subprocess.run(["rm", "-rf", scratch])


def listening_addr(daemon, log):
    for _ in range(400):
        log.seek(0)
        for line in log:
            if '"message":"listening"' in line:
                return json.loads(line)["addr"].removeprefix("http://")
        if daemon.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit("sandboxd did not start")


def soak(daemon, log, key, state, work):
    api = Api(listening_addr(daemon, log), key)
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    sink = f"http://127.0.0.1:{receiver.server_address[1]}"
    errors, problems = 0, []
    callbacks = 0
    samples = {}
    started = time.monotonic()

    def problem(text):
        nonlocal errors
        errors += 1
        if len(problems) < 5:
            problems.append(text)
        say("problem:", text)

    for i in range(RUNS + WARMUP):
        if i == WARMUP:
            time.sleep(1)
            samples["start"] = sample(daemon.pid)
            started = time.monotonic()
        n = i - WARMUP
        if n > 0 and n % 1000 == 0:
            samples[n] = sample(daemon.pid)
            say(f"{n} runs; {samples[n]}")
        run_id = f"soak-{i}"
        command = ["sh", "-c", 'echo "soak $1"', MARK, str(i)]
        if i % 10 == 0:
            callbacks += 1
            body = {"run_id": run_id, "command": command, "wait": True,
                    "callback": {"url": f"{sink}/runs/{run_id}/complete", "token": "soak-token"}}
            code, text = api.call("POST", "/v1/runs", body)
            if code != 200 or json.loads(text)["state"] != "succeeded":
                problem(f"{run_id}: {code} {text[:200]}")
            for _ in range(5000):
                code, text = api.call("GET", f"/v1/runs/{run_id}")
                if json.loads(text)["callback"]["state"] == "delivered":
                    break
                time.sleep(0.002)
            else:
                problem(f"{run_id}: callback not delivered: {text[:200]}")
        elif i % 10 == 5:
            command = ["sh", "-c", 'echo "soak $1 $TOKEN"', MARK, str(i)]
            body = {"run_id": run_id, "command": command,
                    "secrets": {"TOKEN": {"kind": "StaticSecret", "value": SECRET}}}
            code, text = api.call("POST", "/v1/runs", body)
            if code != 201:
                problem(f"{run_id}: {code} {text[:200]}")
            code, text = api.call("GET", f"/v1/runs/{run_id}/logs?follow=true")
            if code != 200 or text != f"soak {i} ****\n":
                problem(f"{run_id}: logs {code} {text[:200]!r}")
        else:
            code, text = api.call("POST", "/v1/runs", {"run_id": run_id, "command": command, "wait": True})
            if code != 200 or json.loads(text).get("stdout") != f"soak {i}\n":
                problem(f"{run_id}: {code} {text[:200]}")
        for _ in range(1000):
            code, text = api.call("DELETE", f"/v1/runs/{run_id}")
            if code != 409:
                break
            time.sleep(0.002)  # A followed run is deleted once it has ended.
        if code != 204:
            problem(f"{run_id}: DELETE {code} {text[:200]}")
    elapsed = time.monotonic() - started
    time.sleep(2)
    samples["end"] = sample(daemon.pid)
    api.conn.close()
    left = {"run dirs": entries(os.path.join(state, "runs")),
            "outbox files": entries(os.path.join(state, "outbox")),
            "bundle records": entries(os.path.join(state, "bundles")),
            "work dirs": entries(work)}
    daemon.terminate()
    exit_code = daemon.wait(30)
    log.seek(0)
    leaked_secret = sum(1 for line in log if SECRET in line)

    start, end, mid = samples["start"], samples["end"], samples.get(RUNS // 2 // 1000 * 1000)
    rss_growth = end["rss_kib"] - start["rss_kib"]
    # Flat: no growth proportional to the runs. Allocator noise and caches
    # filled once stay under these bounds; a leak of even 1 KiB per run
    # (10 MB per 10,000) does not.
    checks = {
        "no run failed": errors == 0,
        "callbacks delivered": Receiver.count >= callbacks,
        "descriptors flat (end ≤ start + 2)": end["fds"] <= start["fds"] + 2,
        "RSS flat (end ≤ start + 8 MiB)": rss_growth <= 8 * 1024,
        "RSS flat in the second half (≤ +2 MiB)": mid is None or end["rss_kib"] - mid["rss_kib"] <= 2 * 1024,
        "no zombie, no shim left": end["zombies"] == 0 and end["shims"] == 0,
        "no run process left": end["run_processes"] == 0,
        "state dir and work root empty": all(v == 0 for v in left.values()),
        "secret never in the log": leaked_secret == 0,
        "clean exit (0)": exit_code == 0,
    }
    series = [(k, v) for k, v in samples.items() if isinstance(k, int)]
    rss_series = ", ".join(f"{k}: {v['rss_kib'] / 1024:.1f}" for k, v in series)
    rows = [
        ("open descriptors", "fds"),
        ("RSS (KiB)", "rss_kib"),
        ("threads", "threads"),
        ("children (shims)", "children"),
        ("zombie children", "zombies"),
        ("run processes anywhere", "run_processes"),
    ]
    out = []
    out.append(f"## Soak: {RUNS:,} runs back to back\n")
    out.append(
        f"One daemon ({'release build' if '/release/' in BIN else BIN}), {RUNS:,} runs one after another after {WARMUP} warm-up runs, "
        f"each deleted when done: exec-and-wait, every tenth with a completion callback "
        f"(waited for), every tenth (offset 5) in the background with a secret, followed "
        f"through `logs?follow=true`. {elapsed:.0f} s, {RUNS / elapsed:.0f} runs/s, "
        f"{Receiver.count} callbacks received, {errors} problems.\n")
    out.append("| figure | start (after warm-up) | end (+2 s) |")
    out.append("|---|---:|---:|")
    for label, field in rows:
        out.append(f"| {label} | {start[field]} | {end[field]} |")
    out.append(f"\nRSS every 1,000 runs (MiB): {rss_series}. Left in the state dir and work root: "
               + ", ".join(f"{k} {v}" for k, v in left.items()) + ".\n")
    out.append("| check | holds |")
    out.append("|---|---|")
    for label, holds in checks.items():
        out.append(f"| {label} | {'yes' if holds else '**no**'} |")
    for text in problems:
        out.append(f"\n- {text}")
    print("\n".join(out))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
