#!/usr/bin/env bash
# THE test command of scserver: from a fresh clone, install everything the
# tests need and run them all.
#
#   bash scripts/test.sh
#
# 1. a virtualenv in .venv (made with python3.11 or python3, reused when
#    present), with scserver installed editable plus its [test] and [docs]
#    extras;
# 2. node and npm (installed from Debian with apt-get when missing and we
#    are root), then `npm ci` for the interop helpers in tests/interop;
# 3. the Sphinx docs with the pydoctor API reference, built with warnings
#    as errors;
# 4. mypy (configured in setup.cfg);
# 5. scripts/check_private.py: no module reads another's private names;
# 6. the trial test suite.
#
# Exits non-zero if any step fails.  The last line is trial's summary in the
# form "trial: N passed, N failed, N skipped".
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n== %s\n' "$*"; }
die() { printf 'scripts/test.sh: %s\n' "$*" >&2; exit 1; }

# Hash of the files that decide what an install step installs, so that a
# second run skips the step when nothing changed.
fingerprint() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }

apt_install() {
    # apt_install PACKAGE...: install Debian packages when we can.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq "$@"
    else
        return 1
    fi
}

# --- Python ---------------------------------------------------------------
step "python virtualenv ($VENV)"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys; assert sys.version_info >= (3, 9)' 2>/dev/null; then
    echo "reusing $VENV"
else
    rm -rf "$VENV"
    PYTHON=""
    for candidate in ${PYTHON_FOR_VENV:-} python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; assert sys.version_info >= (3, 9)' 2>/dev/null; then
            PYTHON=$candidate
            break
        fi
    done
    [ -n "$PYTHON" ] || die "no python3 (>= 3.9) found; install python3.11 first"
    if ! "$PYTHON" -m venv "$VENV"; then
        rm -rf "$VENV"
        echo "venv failed; trying to install python3-venv"
        apt_install python3-venv python3.11-venv || apt_install python3-venv \
            || die "'$PYTHON -m venv' failed and python3-venv could not be installed"
        "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi
"$VENV/bin/python" --version

step "pip install -e .[test,docs]"
stamp="$VENV/.scserver-install"
want=$(fingerprint setup.cfg pyproject.toml)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && "$VENV/bin/python" -c 'import scserver, twisted, autobahn, sphinx' 2>/dev/null; then
    echo "up to date"
else
    # editable_mode=compat puts the repository itself on sys.path, which is
    # what lets twistd find the twisted/plugins/ drop-in of an editable
    # install (setuptools' default editable finder would not).
    "$VENV/bin/python" -m pip install -q -e '.[test,docs]' --config-settings editable_mode=compat
    echo "$want" > "$stamp"
fi

# --- Node (interop tests with the official SocketCluster client) -----------
step "node and npm"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "node/npm missing; trying apt-get install nodejs npm"
    apt_install nodejs npm || true
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    die "node and npm are needed for the interop tests (tests/interop) and could not be installed; install Node.js 18+ with npm and run again"
fi
echo "node $(node --version), npm $(npm --version)"

if [ -f tests/interop/package.json ]; then
    step "npm ci --prefix tests/interop"
    stamp=tests/interop/node_modules/.scserver-install
    want=$(fingerprint tests/interop/package.json tests/interop/package-lock.json)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "up to date"
    else
        npm ci --prefix tests/interop --no-audit --no-fund
        echo "$want" > "$stamp"
    fi
fi

# --- Redis (tests/test_redis_broker.py) -------------------------------------
# The Redis broker tests start their own redis-server, on free loopback ports
# with their own configuration and temporary data directories, and stop it;
# nothing is started here.  A system-wide service that apt may start (port
# 6379) does not get in their way.  Without redis-server they are skipped.
step "redis-server"
redis_server=$(command -v redis-server || true)
if [ -z "$redis_server" ]; then
    echo "redis-server missing; trying apt-get install redis-server"
    apt_install redis-server || true
    redis_server=$(command -v redis-server || true)
fi
if [ -n "$redis_server" ]; then
    "$redis_server" --version
else
    echo "redis-server could not be installed: the Redis broker tests will be skipped"
fi

status=0

# --- Docs ----------------------------------------------------------------
# Sphinx runs pydoctor (pydoctor.sphinx_ext.build_apidocs, see docs/conf.py)
# for the API reference in docs/_build/html/api/.  Every line pydoctor prints
# becomes a Sphinx warning, so with -W a docstring that pydoctor warns about
# fails this step as a Sphinx warning does.
step "sphinx-build -W -b html docs docs/_build/html (with pydoctor)"
docs="built (docs/_build/html, API reference in docs/_build/html/api)"
if ! "$VENV/bin/sphinx-build" -q -W --keep-going -b html docs docs/_build/html; then
    docs="FAILED (Sphinx or pydoctor warnings; warnings are errors)"
    status=1
fi

# --- Types ---------------------------------------------------------------
# mypy with the configuration in setup.cfg ([mypy] sections): which files,
# the mypy-zope plugin, and how strict each module is checked.
step "mypy"
types="passed"
if ! "$VENV/bin/mypy"; then
    types="FAILED (mypy errors)"
    status=1
fi

# --- Module boundaries ---------------------------------------------------
# No module of scserver/ reads another module's private (_underscore) names.
step "scripts/check_private.py scserver"
private="passed"
if ! "$VENV/bin/python" scripts/check_private.py scserver; then
    private="FAILED (a module reads another module's private names)"
    status=1
fi

# --- Tests ---------------------------------------------------------------
step "trial tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# `python -m` puts the repository first on sys.path: the tests run against
# this checkout, and the twisted/plugins drop-in is found as twistd would.
if ! "$VENV/bin/python" -m twisted.trial tests 2>&1 | tee "$log"; then
    status=1
fi
verdict=$(grep -E '^(PASSED|FAILED)( \(.*\))?$' "$log" | tail -n 1 || true)
count() {
    # count NAME: the NAME=N of trial's verdict line, 0 when absent.
    local n
    n=$(printf '%s' "$verdict" | grep -oE "\b$1=[0-9]+" | cut -d= -f2 | head -n 1 || true)
    echo "${n:-0}"
}
passed=$(count successes)
failed=$(( $(count failures) + $(count errors) + $(count unexpectedSuccesses) ))
skipped=$(( $(count skips) + $(count expectedFailures) ))
if [ -z "$verdict" ]; then
    failed=$((failed + 1))
    status=1
fi
if [ "$failed" -gt 0 ] || [ "$passed" -eq 0 ]; then
    status=1
fi

step "summary"
echo "docs: $docs"
echo "mypy: $types"
echo "private names: $private"
echo "trial: ${verdict:-no result (trial did not finish)}"
echo "trial: $passed passed, $failed failed, $skipped skipped"
exit "$status"
