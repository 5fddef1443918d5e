#!/usr/bin/env bash
# Installs the real peer, openhands-agent-server, into a throwaway venv under
# bench/out/peer. Idempotent: a finished install (marker file) is reused.
# Exit status 0 and the venv's python path on stdout on success; non-zero
# with the reason on stderr when no Python 3.12 exists or the install fails.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${BENCH_OUT:-$here/out}"
peer="$out/peer"
version="${PEER_VERSION:-1.58.2}"
marker="$peer/.installed-$version"

if [[ -f "$marker" ]]; then
    echo "$peer/venv/bin/python"
    exit 0
fi

py="$(PYENV_VERSION=3.12.1 pyenv which python3.12 2>/dev/null || true)"
if [[ -z "$py" ]]; then
    py="$(command -v python3.12 || true)"
fi
if [[ -z "$py" ]]; then
    echo "no Python 3.12 found (tried PYENV_VERSION=3.12.1 pyenv which python3.12, then python3.12)" >&2
    exit 2
fi

rm -rf "$peer"
mkdir -p "$peer"
{
    echo "python: $py"
    "$py" -m venv "$peer/uv-venv"
    "$peer/uv-venv/bin/python" -m pip install -q --disable-pip-version-check uv
    "$py" -m venv "$peer/venv"
    # The registry here holds certifi only up to 2026.10.18 while the wheels
    # ask for >=2026.10.19; certifi is only the CA bundle.
    echo 'certifi>=2026.10.18' > "$peer/override.txt"
    "$peer/uv-venv/bin/uv" pip install --python "$peer/venv/bin/python" \
        --override "$peer/override.txt" \
        --constraint "$here/peers-constraints.txt" \
        "openhands-agent-server==$version"
    site="$("$peer/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    "$peer/venv/bin/python" -m compileall -q -j 0 "$site" >/dev/null || true
} >"$peer/install.log" 2>&1 || {
    echo "peer install failed; see $peer/install.log (last lines below)" >&2
    tail -n 15 "$peer/install.log" >&2
    exit 3
}
touch "$marker"
echo "$peer/venv/bin/python"
