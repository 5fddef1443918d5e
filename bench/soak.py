#!/usr/bin/env python3
"""Soak: 100,000 mixed runs against one daemon with retention on (issue 15).

Starts SANDBOXD_BIN (default target/release/sandboxd) on a free loopback
port with a session key, a fresh state dir and work root under a temp dir
(SOAK_DIR, default the system's temp dir) and `--retain-runs 1000`
(default `--retain-for`), plus a local completion-callback receiver. Then
SOAK_WORKERS (4) clients, each on one kept-alive connection, drive
SOAK_RUNS (100000) runs with unique run ids, by run number modulo 10:

  0-7  exec-and-wait of `sh -c 'echo x'`               (expects stdout "x\\n")
  8    async `for i in 1 2 3; do echo $i; done`, polled (expects "1\\n2\\n3\\n")
       to its end, then its stdout read through /logs
  9    exec-and-wait of `echo x` with a completion callback to the receiver
       (expects one POST {"status":"COMPLETED","run_id":...} at its URL)

Every SOAK_EVERY (10000) runs it samples the daemon: RSS (VmRSS), threads,
open descriptors (/proc/PID/fd), state-dir bytes and inodes, work-root
inodes, the ended runs kept (/v1/status) and the rate since the sample
before; once more when everything is done (idle). At the end it checks every
run's final state and that every callback arrived exactly once, prints a
Markdown section on stdout (progress on stderr) and, with SOAK_WRITE set to
a file, puts the section into it (replacing a section with the same
heading). Exits 0 only when every check holds.

Python 3.11, standard library only. See bench/soak.sh.
"""

import hashlib
import http.client
import http.server
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SANDBOXD_BIN", os.path.join(REPO, "target/release/sandboxd"))
RUNS = int(os.environ.get("SOAK_RUNS", "100000"))
WORKERS = int(os.environ.get("SOAK_WORKERS", "4"))
EVERY = int(os.environ.get("SOAK_EVERY", "10000"))
RETAIN = int(os.environ.get("SOAK_RETAIN", "1000"))
SOAK_DIR = os.environ.get("SOAK_DIR") or None
WRITE = os.environ.get("SOAK_WRITE", "")
COMMAND = os.environ.get("SOAK_COMMAND", "python3 bench/soak.py")
KEY = "soak-key-" + os.urandom(8).hex()
HEADING = "## Soak: 100,000 runs with retention"
RSS_SLACK_MIB = 4.0
ENDED = ("succeeded", "failed", "timed_out", "cancelled", "lost")


def say(*words):
    print("soak:", *words, file=sys.stderr, flush=True)


class Receiver(http.server.BaseHTTPRequestHandler):
    """The automation service's stand-in: 200 to every completion."""

    protocol_version = "HTTP/1.1"
    received = {}  # path -> [payload, ...]
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {"unparsable": body[:200].decode(errors="replace")}
        with Receiver.lock:
            Receiver.received.setdefault(self.path, []).append(payload)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class Api:
    """One kept-alive connection to the daemon (reopened if it drops; every
    request the soak sends is safe to repeat: a POST of the same run_id and
    body answers the existing run)."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.reconnects = 0

    def call(self, method, path, body=None):
        headers = {"X-Session-API-Key": KEY}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2, 3):
            try:
                self.conn.request(method, path, data, headers)
                res = self.conn.getresponse()
                return res.status, res.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                self.reconnects += 1
                if attempt == 3:
                    raise
        raise AssertionError("unreachable")

    def json(self, method, path, body=None):
        status, data = self.call(method, path, body)
        try:
            return status, json.loads(data or b"{}")
        except ValueError:
            return status, {"unparsable": data[:200].decode(errors="replace")}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(path):
    """(inodes below path, apparent bytes of its files); tolerant of entries
    the daemon removes while the walk runs."""
    inodes, size = 0, 0
    for root, dirs, names in os.walk(path):
        inodes += len(dirs) + len(names)
        for name in names:
            try:
                size += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return inodes, size


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return fields


def fs_type(path):
    best, kind = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mount = parts[1]
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                best, kind = mount, parts[2]
    return kind


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / 1048576:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))}), {mem}, Linux {platform.release()}"


def load():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main():
    if not os.access(BIN, os.X_OK):
        say(f"{BIN} is missing: cargo build --release --bin sandboxd, or set SANDBOXD_BIN")
        return 2
    scratch = tempfile.mkdtemp(prefix="sandboxd-soak-", dir=SOAK_DIR)
    state, work = os.path.join(scratch, "state"), os.path.join(scratch, "work")
    log_path = os.path.join(scratch, "daemon.log")

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    receiver.daemon_threads = True
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    rport = receiver.server_address[1]

    port = free_port()
    env = dict(os.environ, SESSION_API_KEY=KEY)
    for name in list(env):
        if name.startswith("SANDBOXD_"):  # flags only, no settings from the caller's env
            del env[name]
    argv = [BIN, "serve", "--listen", f"127.0.0.1:{port}", "--state-dir", state,
            "--work-root", work, "--retain-runs", str(RETAIN)]
    log = open(log_path, "wb")
    daemon = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    ready = False
    for _ in range(200):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/healthz")
            ready = c.getresponse().status == 200
            c.close()
            if ready:
                break
        except OSError:
            pass
        time.sleep(0.05)
    if not ready:
        say("daemon did not become ready; log:", open(log_path).read()[-2000:])
        daemon.kill()
        return 2

    with open(BIN, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    version = subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.strip()
    load_start = load()
    say(f"{version} ({BIN}, sha256 {digest}) on 127.0.0.1:{port}, state in {scratch} "
        f"({fs_type(scratch)}); {RUNS} runs, {WORKERS} clients")

    lock = threading.Lock()
    counter = {"next": 0, "done": 0}
    problems = []  # (run_id, what) of every run that did not end as expected
    expected_callbacks = set()
    retried_429 = [0]
    samples = []
    sample_lock = threading.Lock()
    status_api = Api(port)
    last = [time.monotonic(), 0]
    started = time.monotonic()

    def take_sample(label, done, running=True):
        st = proc_status(daemon.pid)
        fds = len(os.listdir(f"/proc/{daemon.pid}/fd"))
        inodes, size = tree(state)
        winodes, _ = tree(work)
        code, status = status_api.json("GET", "/v1/status")
        kept = status.get("retention", {}).get("ended_runs", "?") if code == 200 else f"HTTP {code}"
        now = time.monotonic()
        rate = (done - last[1]) / (now - last[0]) if done > last[1] else None
        last[0], last[1] = now, done
        row = {
            "label": label, "done": done, "elapsed": now - started,
            "rss": int(st["VmRSS"].split()[0]) / 1024, "threads": int(st["Threads"]),
            "fds": fds, "bytes": size, "inodes": inodes, "winodes": winodes,
            "kept": kept, "rate": rate, "running": running,
        }
        samples.append(row)
        say(f"{label}: {done} runs, {row['elapsed']:.0f} s, RSS {row['rss']:.1f} MiB, fds {fds}, "
            f"threads {row['threads']}, state {size / 1024:.0f} KiB / {inodes} inodes, "
            f"work {winodes} inodes, kept {kept}, "
            f"{'' if rate is None else f'{rate:.0f} runs/s, '}load {load()}")

    def problem(run_id, what):
        with lock:
            problems.append((run_id, what))
            if len(problems) <= 20:
                say(f"PROBLEM {run_id}: {what}")

    def start(api, body):
        for _ in range(1000):
            code, answer = api.json("POST", "/v1/runs", body)
            if code != 429:
                return code, answer
            with lock:
                retried_429[0] += 1
            time.sleep(0.01)
        return code, answer

    def one(api, i):
        run_id = f"soak-{i:06d}"
        kind = i % 10
        if kind == 8:
            body = {"run_id": run_id, "command": "for i in 1 2 3; do echo $i; done"}
            code, answer = start(api, body)
            if code not in (200, 201):
                return problem(run_id, f"POST answered {code}: {answer}")
            polls = 0
            while answer.get("state") not in ENDED:
                time.sleep(0.005)
                polls += 1
                code, answer = api.json("GET", f"/v1/runs/{run_id}")
                if code != 200 or polls > 12000:
                    return problem(run_id, f"poll answered {code} after {polls} polls: {answer}")
            if answer.get("state") != "succeeded" or answer.get("exit_code") != 0 or answer.get("stdout_bytes") != 6:
                return problem(run_id, f"ended {answer}")
            code, out = api.call("GET", f"/v1/runs/{run_id}/logs")
            if code != 200 or out != b"1\n2\n3\n":
                return problem(run_id, f"logs answered {code}: {out[:100]!r}")
            return None
        body = {"run_id": run_id, "command": ["sh", "-c", "echo x"], "wait": True}
        if kind == 9:
            path = f"/api/automation/v1/runs/{run_id}/complete"
            body["callback"] = {"url": f"http://127.0.0.1:{rport}{path}"}
            with lock:
                expected_callbacks.add(path)
        code, answer = start(api, body)
        if code != 200:
            return problem(run_id, f"POST answered {code}: {answer}")
        if answer.get("state") != "succeeded" or answer.get("exit_code") != 0 or answer.get("stdout") != "x\n":
            return problem(run_id, f"ended {answer}")
        return None

    def worker():
        api = Api(port)
        while True:
            with lock:
                i = counter["next"]
                if i >= RUNS:
                    break
                counter["next"] += 1
            try:
                one(api, i)
            except Exception as e:  # noqa: BLE001 - counted, the soak goes on
                problem(f"soak-{i:06d}", f"client error {type(e).__name__}: {e}")
            with lock:
                counter["done"] += 1
                done = counter["done"]
            if done % EVERY == 0 and done < RUNS:
                with sample_lock:  # one sampler at a time; the other clients go on
                    take_sample(f"{done}", done)
        with lock:
            worker.reconnects += api.reconnects
    worker.reconnects = 0

    take_sample("start", 0)
    threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    drive_s = time.monotonic() - started
    take_sample(f"{RUNS}", RUNS, running=False)

    # Every callback, exactly once.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with Receiver.lock:
            got = sum(1 for p in expected_callbacks if p in Receiver.received)
        if got >= len(expected_callbacks):
            break
        time.sleep(0.2)
    time.sleep(2)  # a late duplicate would show here; also lets the pruner settle
    take_sample("end, idle (+2 s)", RUNS, running=False)
    with Receiver.lock:
        received = {p: list(v) for p, v in Receiver.received.items()}
    missing = sorted(p for p in expected_callbacks if p not in received)
    twice = sorted(p for p in expected_callbacks if len(received.get(p, [])) > 1)
    unexpected = sorted(p for p in received if p not in expected_callbacks)
    wrong_payload = 0
    for p in expected_callbacks:
        run_id = p.split("/")[-2]
        for payload in received.get(p, []):
            if payload.get("status") != "COMPLETED" or payload.get("run_id") != run_id:
                wrong_payload += 1
                if wrong_payload <= 5:
                    say(f"callback payload for {run_id}: {payload}")

    # What the daemon says it holds: the newest RETAIN runs, all succeeded.
    code, status = status_api.json("GET", "/v1/status")
    retention = status.get("retention", {})
    outbox = status.get("outbox", {})
    kept_ids, after = [], None
    while True:
        q = "/v1/runs?limit=1000" + (f"&after={after}" if after else "")
        c, page = status_api.json("GET", q)
        if c != 200:
            problems.append(("GET /v1/runs", f"answered {c}: {page}"))
            break
        kept_ids += [(r["run_id"], r["state"]) for r in page["runs"]]
        after = page.get("next")
        if not after:
            break
    # Retention goes by end time; with several clients the ends come a few
    # runs out of id order, so the kept runs are the newest RETAIN give or take
    # the runs that were in flight together.
    slack = 8 * WORKERS
    newest = {f"soak-{i:06d}" for i in range(max(0, RUNS - RETAIN - slack), RUNS)}
    kept_not_succeeded = sum(1 for _, s in kept_ids if s != "succeeded")
    kept_set = {r for r, _ in kept_ids}
    c_first, _ = status_api.call("GET", "/v1/runs/soak-000000")

    # Files per retained run, for the retention bound.
    per_run = {}
    runs_dir = os.path.join(state, "runs")
    for name in os.listdir(runs_dir) if os.path.isdir(runs_dir) else []:
        n, _ = tree(os.path.join(runs_dir, name))
        per_run[name] = n + 1
    for name in os.listdir(os.path.join(state, "outbox")) if os.path.isdir(os.path.join(state, "outbox")) else []:
        rid = name.split(".")[0]
        per_run[rid] = per_run.get(rid, 0) + 1
    histogram = {}
    for n_files in per_run.values():
        histogram[n_files] = histogram.get(n_files, 0) + 1
    worst_files = max(per_run.values()) if per_run else 4

    daemon.send_signal(signal.SIGTERM)
    try:
        exit_code = daemon.wait(30)
    except subprocess.TimeoutExpired:
        daemon.kill()
        exit_code = "killed after 30 s"
    receiver.shutdown()
    log.close()
    with open(log_path, errors="replace") as f:
        levels = {"WARN": 0, "ERROR": 0}
        odd = []
        for line in f:
            for lvl in levels:
                if f" {lvl} " in line:
                    levels[lvl] += 1
                    if len(odd) < 5:
                        odd.append(line.strip()[:300])
    total_s = time.monotonic() - started
    load_end = load()
    shutil.rmtree(scratch, ignore_errors=True)
    for line in odd:
        say("daemon log:", line)

    # Verdict.
    warm = [s for s in samples if s["done"] >= min(EVERY, RUNS)]
    first = warm[0] if warm else samples[-1]
    rss_max = max(s["rss"] for s in warm) if warm else 0
    rss_ok = rss_max <= first["rss"] + RSS_SLACK_MIB
    base_inodes = samples[0]["inodes"]
    inode_bound = base_inodes + (RETAIN + WORKERS) * worst_files
    inodes_max = max(s["inodes"] for s in warm) if warm else 0
    inodes_ok = inodes_max <= inode_bound
    # Idle against idle must match (+2: the sampler's own connection and the
    # daemon's kept-alive one to the receiver); while running, the spread is
    # what the runs in flight hold (a few descriptors each), not a trend.
    fds_warm = [s["fds"] for s in warm if s["running"]]
    fds_ok = (max(fds_warm) - min(fds_warm) <= 4 * WORKERS if fds_warm else True) and \
        samples[-1]["fds"] <= samples[0]["fds"] + 2
    winodes_ok = samples[-1]["winodes"] == 0
    rates = [s["rate"] for s in samples if s["rate"] is not None]
    rate_start, rate_end = (rates[0], rates[-1]) if rates else (0, 0)
    runs_ok = not problems
    callbacks_ok = not missing and not twice and not unexpected and not wrong_payload
    retention_ok = (retention.get("ended_runs") == min(RETAIN, RUNS)
                    and retention.get("ended_runs", 0) + retention.get("pruned_total", 0) == RUNS
                    and len(kept_set) == min(RETAIN, RUNS) and kept_set <= newest and kept_not_succeeded == 0
                    and (c_first == 404 or RUNS <= RETAIN) and outbox.get("pending") == 0)
    exit_ok = exit_code == 0
    say(f"retention: status {retention}, outbox {outbox}, kept {len(kept_set)} "
        f"(oldest {min(kept_set) if kept_set else None}, not in the newest {RETAIN}+{slack}: "
        f"{len(kept_set - newest)}, not succeeded {kept_not_succeeded}), first run answers {c_first}")
    checks = [
        ("every run ended as expected (state `succeeded`, exit 0, its output)", runs_ok),
        ("every callback arrived exactly once, `COMPLETED`, none unexpected", callbacks_ok),
        (f"RSS within +{RSS_SLACK_MIB:.0f} MiB of the first sample after warm-up", rss_ok),
        (f"state inodes within the retention bound ({inode_bound:,})", inodes_ok),
        ("descriptors flat", fds_ok),
        (f"retention holds: the newest {RETAIN:,} runs kept, the rest pruned, outbox empty", retention_ok),
        ("work root empty at the end", winodes_ok),
        ("clean exit on SIGTERM (0)", exit_ok),
    ]
    ok = all(v for _, v in checks)

    n = f"{RUNS:,}"
    out = []
    out.append(HEADING)
    out.append("")
    out.append(
        f"`bench/soak.sh` (`bench/soak.py`): one daemon with `--retain-runs {RETAIN}` (default "
        f"`--retain-for`, 7 d), a fresh state dir and work root, a local callback receiver, and "
        f"{WORKERS} clients on kept-alive connections driving {n} runs with unique run ids: "
        "80% exec-and-wait of `sh -c 'echo x'`, 10% async `for i in 1 2 3; do echo $i; done` "
        "polled to their end and their log read, 10% exec-and-wait with a completion callback. "
        f"Sampled every {EVERY:,} runs and once more when all was done; the first sample after "
        f"warm-up is the one at {min(EVERY, RUNS):,} runs."
        + ("" if RUNS == 100000 else f" **This run used {n} runs, not 100,000** (`SOAK_RUNS={RUNS}`).")
    )
    out.append("")
    out.append(f"- Command: `{COMMAND}`")
    out.append(f"- Run: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, {version}, "
               f"binary `{BIN}` (sha256 {digest}…)")
    out.append(f"- Machine: {machine()}; load average {load_start} at the start, {load_end} at the end "
               "(shared machine)")
    out.append(f"- State dir and work root on {fs_type(scratch)} (`{os.path.dirname(scratch)}`)")
    out.append(
        f"- Result: {n} runs in {drive_s:.0f} s ({RUNS / drive_s:.0f} runs/s), {total_s:.0f} s with "
        f"start and checks; runs not ended as expected: {len(problems)}; callbacks: "
        f"{len(expected_callbacks):,} expected, {sum(1 for p in expected_callbacks if p in received):,} "
        f"received, {len(twice)} twice, {len(missing)} missing, {len(unexpected)} unexpected, "
        f"{wrong_payload} wrong payloads; 429 answers retried: {retried_429[0]}; reconnects: "
        f"{worker.reconnects}; at the end `/v1/status` said ended_runs {retention.get('ended_runs')}, "
        f"pruned_total {retention.get('pruned_total')}, outbox pending {outbox.get('pending')}; "
        f"daemon log: {levels['WARN']} warnings, {levels['ERROR']} errors; exit code {exit_code}")
    out.append("")
    out.append("| runs done | elapsed (s) | RSS (MiB) | threads | open fds | state dir (KiB) | state inodes "
               "| work-root inodes | ended runs kept | runs/s |")
    out.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in samples:
        label = s["label"] if not s["label"].isdigit() else f"{int(s['label']):,}"
        rate = "" if s["rate"] is None else f"{s['rate']:.0f}"
        out.append(f"| {label} | {s['elapsed']:.0f} | {s['rss']:.1f} | {s['threads']} | {s['fds']} | "
                   f"{s['bytes'] / 1024:.0f} | {s['inodes']:,} | {s['winodes']} | {s['kept']} | {rate} |")
    out.append("")
    out.append(
        f"**Verdict: {'pass' if ok else 'FAIL'}.** RSS {first['rss']:.1f} → {samples[-1]['rss']:.1f} MiB "
        f"after warm-up (max {rss_max:.1f}, +{rss_max - first['rss']:.1f} MiB, bound +{RSS_SLACK_MIB:.0f}); "
        f"state inodes at most {inodes_max:,} against a bound of {inode_bound:,} "
        f"({base_inodes} + ({RETAIN:,} kept + {WORKERS} in flight) × {worst_files}, the most inodes "
        f"a kept run had; kept runs at the end by inodes: "
        + ", ".join(f"{histogram[k]:,} × {k}" for k in sorted(histogram))
        + "); "
        f"open fds {min(fds_warm) if fds_warm else '?'}–{max(fds_warm) if fds_warm else '?'} while running "
        f"(the runs in flight), {samples[0]['fds']} → {samples[-1]['fds']} idle; "
        f"runs/s {rate_start:.0f} in the first interval, {rate_end:.0f} in the last."
    )
    failed = [what for what, v in checks if not v]
    if failed:
        out.append("")
        out.append("Failed: " + "; ".join(failed) + ".")
        for run_id, what in problems[:10]:
            out.append(f"- `{run_id}`: {what[:300]}")
    section = "\n".join(out) + "\n"
    print(section)

    if WRITE:
        try:
            with open(WRITE) as f:
                text = f.read()
        except FileNotFoundError:
            text = "# Reliability\n"
        pattern = re.compile(r"^" + re.escape(HEADING) + r"\n.*?(?=^## |\Z)", re.S | re.M)
        if pattern.search(text):
            text = pattern.sub(lambda _: section + "\n", text, count=1)
        else:
            text = text.rstrip("\n") + "\n\n" + section
        with open(WRITE, "w") as f:
            f.write(text)
        say(f"wrote the section into {WRITE}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
