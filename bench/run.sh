#!/usr/bin/env bash
# THE benchmark command: from a fresh clone, install what the comparison
# needs and run it.
#
#   bash bench/run.sh [bench/compare.py options]     e.g. --rounds 5
#
# 1. the project's virtualenv .venv (CPython, made with python3.11 or python3
#    when missing, scserver installed editable), the driver's interpreter;
# 2. .venv-pypy (PyPy: `pypy3 -m venv .venv-pypy && .venv-pypy/bin/pip
#    install -e '.[test]'`; Debian's pypy3 is installed with apt-get when
#    missing and we are root);
# 3. node and npm (apt-get when missing and root), then `npm ci --prefix
#    bench/sc14`: socketcluster-server 14.7.2 and ws, pinned by
#    bench/sc14/package-lock.json;
# 4. bench/compare.py: scserver on CPython, scserver on PyPy and
#    socketcluster-server 14.7.2, alternately, 3 rounds (about 7 minutes),
#    ending with a Markdown table of the ratios to Node.
#
# Not part of the test command (scripts/test.sh): nothing here is timed by
# the tests.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PIP_DISABLE_PIP_VERSION_CHECK=1
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }
fingerprint() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }
apt_install() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq "$@"
    else
        return 1
    fi
}

step "CPython virtualenv (.venv)"
if ! .venv/bin/python -c 'import scserver, twisted, autobahn' 2>/dev/null; then
    PYTHON=""
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then PYTHON=$candidate; break; fi
    done
    [ -n "$PYTHON" ] || die "no python3 found"
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv \
        || { apt_install python3-venv && "$PYTHON" -m venv .venv; } \
        || die "could not make .venv"
    # editable_mode=compat, as scripts/test.sh installs it.
    .venv/bin/python -m pip install -q -e . --config-settings editable_mode=compat
fi
.venv/bin/python --version >&2

step "PyPy virtualenv (.venv-pypy)"
if ! .venv-pypy/bin/python -c 'import scserver, twisted, autobahn' 2>/dev/null; then
    command -v pypy3 >/dev/null 2>&1 || apt_install pypy3 || die "pypy3 is missing and could not be installed"
    [ -x .venv-pypy/bin/python ] || pypy3 -m venv .venv-pypy
    .venv-pypy/bin/python -m pip install -q -e '.[test]'
fi
.venv-pypy/bin/python --version >&2

step "node and npm; npm ci --prefix bench/sc14"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm || true
fi
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || die "node and npm are needed"
stamp=bench/sc14/node_modules/.scserver-install
want=$(fingerprint bench/sc14/package.json bench/sc14/package-lock.json)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    npm ci --prefix bench/sc14 --no-audit --no-fund >&2
    echo "$want" > "$stamp"
fi
echo "node $(node --version)" >&2

step "bench/compare.py $*"
exec .venv/bin/python bench/compare.py "$@"
