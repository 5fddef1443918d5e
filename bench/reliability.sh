#!/usr/bin/env bash
# The one command behind RELIABILITY.md: builds the release binary, runs
# every bench/reliability/NN-*.sh in order (each prints one Markdown
# section on stdout and exits 0 only when its checks hold), and writes
# their sections under a header describing the machine into
# RELIABILITY.md at the repo root. Exits 1, naming them, when sections
# failed.
#
#   bench/reliability.sh          # every section
#   bench/reliability.sh 30 50    # only sections 30 and 50
#
# Needs: cargo, curl, python3, wrk (apt-get install wrk); root for the
# tmpfs and other-uid fault tests (they are skipped, and say so, without).
# Loopback only. Takes about 10-15 minutes on 2 cores.
set -uo pipefail
cd "$(dirname "$0")/.."

say() { echo "reliability: $*" >&2; }

say "cargo build --release --bin sandboxd"
if ! cargo build --release --bin sandboxd >&2; then
    say "the release build failed"
    exit 1
fi
export SANDBOXD_BIN=$PWD/target/release/sandboxd

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
body=$(mktemp)
trap 'rm -f "$body" "$body".*' EXIT
rows=()
failed=()
for script in bench/reliability/[0-9][0-9]-*.sh; do
    name=$(basename "$script" .sh)
    if [ $# -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "${name%%-*}"; then
        continue
    fi
    say "== $name"
    t0=$SECONDS
    bash "$script" >"$body.section"
    code=$?
    took=$((SECONDS - t0))
    if [ "$code" = 0 ]; then
        rows+=("| $name | passed | $took s |")
    else
        rows+=("| $name | **failed** (exit $code) | $took s |")
        failed+=("$name")
        say "$name failed (exit $code)"
    fi
    cat "$body.section" >>"$body"
    echo >>"$body"
done

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
memory=$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
{
    echo "# Reliability"
    echo
    echo "What sandboxd does under hostile input, faults and load, and what was"
    echo "lost (the answer must be: nothing). Regenerate with"
    echo "\`bench/reliability.sh\`; each section is one script in \`bench/reliability/\`."
    echo
    echo "- Run: $started, commit $commit"
    echo "- Machine: ${cpu:-unknown CPU}, $(nproc) cores, $memory RAM, Linux $(uname -r), load average $load_before at the start (shared machine)"
    echo "- Build: $(rustc --version), release profile for the daemon; the fault tests run the debug build through \`cargo test\`"
    echo "- As $(id -un) (uid $(id -u)); tmpfs and other-uid fault tests need root"
    echo
    echo "| section | result | time |"
    echo "|---|---|---:|"
    printf '%s\n' "${rows[@]}"
    echo
    if [ ${#failed[@]} -gt 0 ]; then
        echo "**Failed sections: ${failed[*]}.**"
        echo
    fi
    cat "$body"
} >RELIABILITY.md
say "wrote RELIABILITY.md"
if [ ${#failed[@]} -gt 0 ]; then
    say "failed sections: ${failed[*]}"
    exit 1
fi
