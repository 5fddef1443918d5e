#!/usr/bin/env bash
# Hostile input: runs the cargo-fuzz targets of fuzz/ for a bounded time
# each, then the hostile-archive corpus against a real daemon
# (tests/it/hostile.rs), and prints a Markdown section to stdout: input
# class, inputs tried, finds, what was lost. Progress goes to stderr.
# Exits 0 when nothing was found and every corpus archive was refused or
# safely extracted.
#
# cargo fuzz needs nightly compiler flags (-Zsanitizer=address); the
# stable toolchain takes them with RUSTC_BOOTSTRAP=1, which this script
# sets for the fuzz build only. cargo-fuzz itself is installed with
# `cargo install` when missing.
#
# Environment:
#   FUZZ_SECONDS   seconds per fuzz target (default 30)
#   FUZZ_TARGETS   which targets (default: extract run_spec secret_source masker)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

SECONDS_EACH=${FUZZ_SECONDS:-30}
TARGETS=${FUZZ_TARGETS:-"extract run_spec secret_source masker"}

log() { printf '%s\n' "$*" >&2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "== installing cargo-fuzz"
  cargo install --locked cargo-fuzz >&2
fi
export RUSTC_BOOTSTRAP=1
fuzz_flags=(-O --debug-assertions)
log "== building the fuzz targets"
(cd fuzz && cargo fuzz build "${fuzz_flags[@]}" >&2)

tmp=$(mktemp -d /tmp/sandboxd-hostile.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

declare -A execs finds lost_note what
what[extract]="archive extraction: arbitrary bytes (plain, gzip, zstd tar) into a fresh dir"
what[run_spec]="run spec JSON: the parsing and validation of \`POST /v1/runs\`"
what[secret_source]="secret source JSON: every source form, values marked to catch echoes"
what[masker]="masker, differential: arbitrary secrets, inputs and chunking against a reference"
status=0
for target in $TARGETS; do
  log "== fuzzing $target for ${SECONDS_EACH}s"
  corpus="$tmp/corpus-$target"
  artifacts="$tmp/artifacts-$target"
  mkdir -p "$corpus" "$artifacts"
  seeds=("fuzz/corpus/$target")
  extra=()
  if [ "$target" = extract ]; then
    seeds+=(tests/data/hostile tests/data/corpus)
    extra=(-max_len=65536)
  fi
  set +e
  (cd fuzz && cargo fuzz run "${fuzz_flags[@]}" "$target" "$corpus" "${seeds[@]/#/$root/}" -- \
    -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "${extra[@]}") > "$tmp/$target.log" 2>&1
  rc=$?
  set -e
  tail -n 3 "$tmp/$target.log" >&2
  execs[$target]=$(sed -n 's/^stat::number_of_executed_units: *//p' "$tmp/$target.log" | tail -1)
  found=$(find "$artifacts" -type f | wc -l)
  finds[$target]=$found
  if [ "$rc" != 0 ] || [ "$found" != 0 ]; then
    status=1
    lost_note[$target]="**see the artifact** ($(find "$artifacts" -type f -printf '%f ' | head -c 200))"
    mkdir -p fuzz/artifacts/"$target"
    cp "$artifacts"/* fuzz/artifacts/"$target"/ 2>/dev/null || true
    grep -m 5 -E "panicked|ERROR|SUMMARY" "$tmp/$target.log" >&2 || true
    [ "$found" = 0 ] && finds[$target]="exit $rc"
  else
    lost_note[$target]=nothing
  fi
done

log "== the hostile-archive corpus against a real daemon"
set +e
cargo test --quiet --test it hostile:: > "$tmp/corpus.log" 2>&1
corpus_rc=$?
set -e
tail -n 5 "$tmp/corpus.log" >&2
[ "$corpus_rc" = 0 ] || status=1

{
  echo "## Hostile input"
  echo
  echo "Fuzzing (cargo fuzz, libFuzzer with AddressSanitizer and debug assertions, ${SECONDS_EACH} s per"
  echo "target, seeds from \`fuzz/corpus/\`, for extraction also \`tests/data/hostile/\` and"
  echo "\`tests/data/corpus/\`) and the hostile-archive corpus uploaded to a real daemon."
  echo "Regenerate: \`FUZZ_SECONDS=$SECONDS_EACH bench/reliability/10-hostile.sh\`."
  echo
  echo "| input class | inputs tried | finds | what was lost |"
  echo "|---|---:|---:|---|"
  for target in $TARGETS; do
    echo "| ${what[$target]} (\`fuzz/fuzz_targets/$target.rs\`) | ${execs[$target]:-0} executions | ${finds[$target]} | ${lost_note[$target]} |"
  done
  python3 - "$corpus_rc" <<'PY'
import collections, json, sys
ok = sys.argv[1] == "0"
cases = json.load(open("tests/data/hostile/cases.json"))["cases"]
by_class = collections.OrderedDict()
for case in cases:
    entry = by_class.setdefault(case["class"], [0, 0])
    entry[0 if case["expect"]["status"] != 201 else 1] += 1
for cls, (refused, extracted) in by_class.items():
    how = f"{refused} refused" + (f", {extracted} safely extracted" if extracted else "")
    print(f"| hostile archives: {cls} (`tests/it/hostile.rs`) | {refused + extracted} corpus files ({how}) "
          f"| {0 if ok else 'test failed'} | {'nothing' if ok else '**see the test output**'} |")
PY
  echo
  echo "Checked after every fuzz input: extraction never panics and writes nothing outside its"
  echo "dir (the parent is scanned: only the dir and an unchanged sentinel), and what it keeps"
  echo "holds only files, dirs and symlinks resolving inside it, without setuid/setgid bits; run"
  echo "spec and secret parsing never panic, refuse with a 4xx naming the field, and never echo a"
  echo "secret value or the session key; the streamed masker equals a plain leftmost-longest"
  echo "reference for any chunking and leaves no secret in its output. Each corpus archive is"
  echo "refused with the JSON error \`tests/data/hostile/cases.json\` names, or extracted with"
  echo "exactly the listed files, with no staging dir, work dir or bundle record left by a"
  echo "refusal and nothing written outside the run dirs. The plainer unsafe archives (\`..\`,"
  echo "absolute names, symlink and hardlink escapes by name, devices and FIFOs, cut streams,"
  echo "the size and entry limits, the real-world corpus) are covered by \`tests/it/upload.rs\`."
  echo
  if [ "$status" = 0 ]; then echo "Result: **pass**."; else echo "Result: **FAIL**."; fi
  echo
}
exit "$status"
