#!/usr/bin/env bash
# Bundle upload benchmark: PUT of a ~200 MiB gzip bundle of ~5,000 files to
# a release sandboxd over loopback (curl), against `tar xzf` of the same
# file from local disk, the limit. Both extract onto the same file system
# (a tmpfs under /dev/shm by default). Prints the median of RUNS runs of
# each, their ratio, and sandboxd's peak RSS (VmHWM) before and after the
# uploads.
#
#   bench/upload.sh                 # RUNS=5 FILES=5000 TARGET_MIB=200
#   RUNS=3 WORK=/var/tmp/b bench/upload.sh
#   SANDBOXD_BIN=path/to/sandboxd bench/upload.sh   # another build
#
# Needs bash, python3, curl, tar, gzip. Builds `cargo build --release`.
set -euo pipefail

RUNS=${RUNS:-5}
FILES=${FILES:-5000}
TARGET_MIB=${TARGET_MIB:-200}
WORK=${WORK:-/dev/shm/sandboxd-bench-$$}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KEY=bench-key-$$

cleanup() {
    if [[ -n "${DAEMON_PID:-}" ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill "$DAEMON_PID"
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    [[ "${KEEP:-0}" == 1 ]] || rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building release"
if [[ -z "${SANDBOXD_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --release --quiet)
fi
BIN="${SANDBOXD_BIN:-$ROOT/target/release/sandboxd}"

mkdir -p "$WORK"
BUNDLE="$WORK/bundle.tar.gz"
echo "== making $BUNDLE: $FILES files, ~$TARGET_MIB MiB compressed"
python3 - "$WORK/bundle.tar" "$FILES" "$TARGET_MIB" <<'PY'
import io, os, random, sys, tarfile
path, files, target_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(42)
words = [''.join(random.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(random.randint(2, 10)))
         for _ in range(2000)]
text = ' '.join(random.choice(words) for _ in range(300_000)).encode()
# Half incompressible bytes, half word soup: gzip -6 keeps ~0.76 of it.
uncompressed = int(target_mib * 2**20 / 0.76)
avg = uncompressed // files
with tarfile.open(path, 'w', format=tarfile.GNU_FORMAT) as tar:
    for d in range(files // 100 + 1):
        info = tarfile.TarInfo(f'pkg{d:03}')
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_600_000_000
        tar.addfile(info)
    for i in range(files):
        size = random.randint(avg // 8, 2 * avg - avg // 8)
        half = size // 2
        start = random.randint(0, len(text) - half - 1)
        data = os.urandom(size - half) + text[start:start + half]
        info = tarfile.TarInfo(f'pkg{i // 100:03}/file{i:05}.dat')
        info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
        tar.addfile(info, io.BytesIO(data))
PY
gzip -6 -c "$WORK/bundle.tar" > "$BUNDLE"
rm "$WORK/bundle.tar"
BYTES=$(stat -c %s "$BUNDLE")
echo "   $(( BYTES / 1048576 )) MiB compressed"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "$KEY" > "$WORK/key"
"$BIN" serve --listen "127.0.0.1:$PORT" --session-key-file "$WORK/key" \
    --state-dir "$WORK/state" --work-root "$WORK/work" \
    --agent-server-url http://127.0.0.1:9 --log-format json 2> "$WORK/sandboxd.log" &
DAEMON_PID=$!
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$DAEMON_PID/status"; }
HWM_IDLE=$(hwm)

now() { date +%s.%N; }
upload_times=()
tar_times=()
for i in $(seq "$RUNS"); do
    # Alternate which goes first, so neither always gets the warmer cache.
    for what in $( (( i % 2 )) && echo "upload tar" || echo "tar upload"); do
        if [[ $what == upload ]]; then
            t0=$(now)
            code=$(curl -sS -o "$WORK/answer.json" -w '%{http_code}' -T "$BUNDLE" -H 'Expect:' \
                -H "X-Session-API-Key: $KEY" "http://127.0.0.1:$PORT/v1/runs/bench-$i/bundle")
            t1=$(now)
            if [[ $code != 201 ]]; then
                echo "upload $i answered $code: $(cat "$WORK/answer.json")" >&2
                exit 1
            fi
            upload_times+=("$(echo "$t1 - $t0" | bc -l)")
            ANSWER=$(cat "$WORK/answer.json")
            rm -rf "$WORK/work/bench-$i" "$WORK/state/bundles/bench-$i.json"
        else
            mkdir -p "$WORK/tar-$i"
            t0=$(now)
            tar xzf "$BUNDLE" -C "$WORK/tar-$i"
            t1=$(now)
            tar_times+=("$(echo "$t1 - $t0" | bc -l)")
            rm -rf "$WORK/tar-$i"
        fi
    done
done
HWM_AFTER=$(hwm)
echo "last answer: $ANSWER"
t0=$(now); gzip -dc "$BUNDLE" > /dev/null; t1=$(now)
echo "gzip -dc alone (tar xzf's decompressor): $(echo "$t1 - $t0" | bc -l | cut -c1-5) s"

python3 - "$BYTES" "$HWM_IDLE" "$HWM_AFTER" "${upload_times[*]}" "${tar_times[*]}" <<'PY'
import statistics, sys
size, idle, after = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
up = [float(x) for x in sys.argv[4].split()]
tar = [float(x) for x in sys.argv[5].split()]
mu, mt = statistics.median(up), statistics.median(tar)
mib = size / 2**20
print(f"bundle: {mib:.0f} MiB gzip")
print(f"sandboxd PUT (curl, loopback): median {mu:.2f} s  ({mib / mu:.0f} MiB/s)  runs: {' '.join(f'{x:.2f}' for x in up)}")
print(f"tar xzf (local):               median {mt:.2f} s  ({mib / mt:.0f} MiB/s)  runs: {' '.join(f'{x:.2f}' for x in tar)}")
print(f"ratio sandboxd / tar: {mu / mt:.2f}x")
print(f"sandboxd VmHWM: {idle / 1024:.1f} MiB idle, {after / 1024:.1f} MiB after the uploads (+{(after - idle) / 1024:.1f} MiB)")
PY
