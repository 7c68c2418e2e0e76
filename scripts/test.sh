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
#    chromium (apt-get, when missing and we are root) and `npm ci` for
#    playwright-core in tests/browser (the inspection page's browser test);
# 3. the Sphinx docs with the pydoctor API reference, built with warnings
#    as errors;
# 4. mypy (configured in setup.cfg);
# 5. scripts/check_private.py: no module reads another's private names;
# 6. the trial test suite;
# 7. the PyPy job: when pypy3 is available (installed from Debian with
#    apt-get, with pypy3-venv, when missing and we are root), a second
#    virtualenv .venv-pypy with scserver and its [test] extra, and trial on
#    PyPy, in the background from before the docs step on (the machine's
#    other core), its output printed after the CPython trial's.  It runs
#    the suite but the modules in PYPY_EXCLUDED below (or the test names in
#    $SCSERVER_PYPY_TESTS, e.g. "tests" for all).  Without pypy3 it prints
#    "PyPy job skipped: <reason>" and does not fail.
#
# Exits non-zero if any step fails (a PyPy test too).  The last line is
# trial's summary in the form "trial: N passed, N failed, N skipped"; the
# "pypy:" lines before it are the PyPy job's: its trial verdict and
# "pypy: N passed, N failed, N skipped (...)", or "pypy: skipped (<reason>)".
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PYPY_VENV="$ROOT/.venv-pypy"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n== %s\n' "$*"; }
die() { printf 'scripts/test.sh: %s\n' "$*" >&2; exit 1; }

# Hash of the files that decide what an install step installs, so that a
# second run skips the step when nothing changed.
fingerprint() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }

# The background PyPy job and the logs, ended and removed however we exit.
pypy_pid=""
log=""
pypy_log=""
cleanup() {
    if [ -n "$pypy_pid" ]; then
        kill -- "-$pypy_pid" 2>/dev/null || true
    fi
    rm -f "$log" "$pypy_log"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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

# --- Chromium and playwright-core (tests/test_inspect_browser.py) ----------
# The inspection page's browser test drives Debian's chromium
# (/usr/bin/chromium) with playwright-core from npm; no browser is ever
# downloaded (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD).  Without chromium the
# browser test is skipped.
step "chromium (browser test of the inspection page)"
chromium=$(command -v chromium || true)
if [ -z "$chromium" ]; then
    echo "chromium missing; trying apt-get install chromium"
    apt_install chromium || true
    chromium=$(command -v chromium || true)
fi
if [ -n "$chromium" ]; then
    "$chromium" --version 2>/dev/null || echo "$chromium"
else
    echo "chromium could not be installed: the browser test of the inspection page will be skipped"
fi
if [ -f tests/browser/package.json ]; then
    step "npm ci --prefix tests/browser"
    stamp=tests/browser/node_modules/.scserver-install
    want=$(fingerprint tests/browser/package.json tests/browser/package-lock.json)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "up to date"
    else
        PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/browser --no-audit --no-fund
        echo "$want" > "$stamp"
    fi
fi

# --- PyPy (the PyPy job) ---------------------------------------------------
# The tests run on PyPy too (docs/pypy.rst), in .venv-pypy, in the
# background: they start here and run beside the docs, mypy and the CPython
# trial, on the other core; their output is printed after the CPython
# trial's.  Debian's pypy3 is PyPy 3.9: setup.cfg pins what must be pinned
# for it (cryptography<44, the last release with PyPy 3.9 wheels), and
# --only-binary cryptography makes pip fail at once rather than try to
# build it (which would need a Rust toolchain).
#
# Left out of the PyPy job, for time (9 to 30 s each on PyPy, where the
# rest takes about as long as the CPython steps beside it), as what they
# test does not depend on the interpreter beyond what the rest tests:
# test_workers and test_interop_scale (several twistd processes supervised,
# each a PyPy to start and warm up; test_twistd and test_hardening_startup
# still run twistd on PyPy), test_fanout_sockets (1000 real sockets: a load
# test; bench/ measures PyPy's throughput) and test_inspect_browser (a
# headless browser).  SCSERVER_PYPY_TESTS="tests" runs them all.
PYPY_EXCLUDED="test_workers test_interop_scale test_fanout_sockets test_inspect_browser"
pypy_tests=()
if [ -n "${SCSERVER_PYPY_TESTS:-}" ]; then
    read -r -a pypy_tests <<< "$SCSERVER_PYPY_TESTS"
else
    for module in tests/test_*.py; do
        module=$(basename "$module" .py)
        case " $PYPY_EXCLUDED " in
            *" $module "*) ;;
            *) pypy_tests+=("tests.$module") ;;
        esac
    done
fi

pypy_job() {
    # The PyPy job, run in the background: install scserver with its [test]
    # extra when setup.cfg or pyproject.toml changed, then trial, in
    # _trial_temp.pypy (not the CPython trial's _trial_temp).  Exit status:
    # trial's, or 90 when pip failed.
    local stamp="$PYPY_VENV/.scserver-install" want
    want=$(fingerprint setup.cfg pyproject.toml)
    printf '== pip install -e .[test] on PyPy\n'
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
        && "$PYPY_VENV/bin/python" -c 'import scserver, twisted, autobahn, hypothesis' 2>/dev/null; then
        echo "up to date"
    else
        # PyPy 3.9's venv comes with an old pip: upgrade it first.
        "$PYPY_VENV/bin/python" -m pip install -q --upgrade pip || return 90
        "$PYPY_VENV/bin/python" -m pip install -q -e '.[test]' \
            --config-settings editable_mode=compat --only-binary cryptography || return 90
        echo "$want" > "$stamp"
    fi
    printf '\n== trial on PyPy: %s\n' "${pypy_tests[*]}"
    "$PYPY_VENV/bin/python" -m twisted.trial --temp-directory=_trial_temp.pypy "${pypy_tests[@]}"
}

step "pypy3 and its virtualenv ($PYPY_VENV)"
pypy_skip=""
pypy3=$(command -v pypy3 || true)
if [ -z "$pypy3" ]; then
    echo "pypy3 missing; trying apt-get install pypy3 pypy3-venv"
    apt_install pypy3 pypy3-venv || true
    pypy3=$(command -v pypy3 || true)
fi
is_pypy='import platform, sys; assert platform.python_implementation() == "PyPy" and sys.version_info >= (3, 9)'
if [ -z "$pypy3" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        pypy_skip="pypy3 is not installed and apt-get install pypy3 pypy3-venv failed"
    else
        pypy_skip="pypy3 is not installed, and installing it (apt-get install pypy3 pypy3-venv) needs root on Debian"
    fi
elif ! "$pypy3" -c "$is_pypy" 2>/dev/null; then
    pypy_skip="$pypy3 is not a PyPy for Python 3.9 or newer: $("$pypy3" --version 2>&1 | head -n 1)"
elif [ -x "$PYPY_VENV/bin/python" ] && "$PYPY_VENV/bin/python" -c "$is_pypy" 2>/dev/null; then
    echo "reusing $PYPY_VENV"
else
    rm -rf "$PYPY_VENV"
    if ! "$pypy3" -m venv "$PYPY_VENV"; then
        rm -rf "$PYPY_VENV"
        # Debian ships pypy3's ensurepip, which venv needs, in pypy3-venv.
        echo "pypy3 -m venv failed; trying apt-get install pypy3-venv"
        if ! { apt_install pypy3-venv && "$pypy3" -m venv "$PYPY_VENV"; }; then
            rm -rf "$PYPY_VENV"
            pypy_skip="'pypy3 -m venv' failed and pypy3-venv could not be installed"
        fi
    fi
fi
if [ -n "$pypy_skip" ]; then
    echo "PyPy job skipped: $pypy_skip"
    pypy="skipped ($pypy_skip)"
else
    pypy_version=$("$PYPY_VENV/bin/python" -c 'import platform, sys; print("PyPy %s, Python %s" % (".".join(map(str, sys.pypy_version_info[:3])), platform.python_version()))')
    echo "$pypy_version"
    pypy_log=$(mktemp)
    pypy_start=$SECONDS
    # A process group of its own (set -m), so that cleanup ends its trial
    # and what trial started, should this script stop early.
    set -m
    pypy_job > "$pypy_log" 2>&1 &
    pypy_pid=$!
    set +m
    echo "PyPy job started in the background: trial of ${#pypy_tests[@]} test module(s); its output follows the CPython trial's"
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
trial_result() {
    # trial_result LOG: read trial's verdict line in LOG into verdict, and
    # its counts into passed, failed and skipped; a run without a verdict
    # (trial did not finish) or without a passed test counts as failed.
    verdict=$(grep -E '^(PASSED|FAILED)( \(.*\))?$' "$1" | tail -n 1 || true)
    passed=$(count successes)
    failed=$(( $(count failures) + $(count errors) + $(count unexpectedSuccesses) ))
    skipped=$(( $(count skips) + $(count expectedFailures) ))
    if [ -z "$verdict" ]; then
        failed=$((failed + 1))
    fi
    [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
}
count() {
    # count NAME: the NAME=N of trial's verdict line, 0 when absent.
    local n
    n=$(printf '%s' "$verdict" | grep -oE "\b$1=[0-9]+" | cut -d= -f2 | head -n 1 || true)
    echo "${n:-0}"
}

step "trial tests"
log=$(mktemp)
trial_start=$SECONDS
# `python -m` puts the repository first on sys.path: the tests run against
# this checkout, and the twisted/plugins drop-in is found as twistd would.
if ! "$VENV/bin/python" -m twisted.trial tests 2>&1 | tee "$log"; then
    status=1
fi
trial_seconds=$((SECONDS - trial_start))
if ! trial_result "$log"; then
    status=1
fi

# --- PyPy job: its output and result --------------------------------------
if [ -n "$pypy_pid" ]; then
    step "trial tests on PyPy ($pypy_version; the background job's output)"
    pypy_status=0
    wait "$pypy_pid" || pypy_status=$?
    pypy_pid=""
    pypy_seconds=$((SECONDS - pypy_start))
    cat "$pypy_log"
    if [ "$pypy_status" -eq 90 ]; then
        pypy="FAILED (pip install -e .[test] failed on PyPy, see above)"
        status=1
    else
        # Keep the CPython trial's figures for the trial: lines.
        cpython=("$verdict" "$passed" "$failed" "$skipped")
        if ! trial_result "$pypy_log" || [ "$pypy_status" -ne 0 ]; then
            status=1
        fi
        pypy_verdict=${verdict:-no result (trial did not finish)}
        pypy="$passed passed, $failed failed, $skipped skipped ($pypy_version; ${#pypy_tests[@]} test module(s); ${pypy_seconds} s, in the background)"
        verdict=${cpython[0]} passed=${cpython[1]} failed=${cpython[2]} skipped=${cpython[3]}
    fi
fi

step "summary"
echo "docs: $docs"
echo "mypy: $types"
echo "private names: $private"
if [ -n "${pypy_verdict:-}" ]; then
    echo "pypy: $pypy_verdict"
fi
echo "pypy: $pypy"
echo "time: ${SECONDS} s in all; CPython trial ${trial_seconds} s"
echo "trial: ${verdict:-no result (trial did not finish)}"
echo "trial: $passed passed, $failed failed, $skipped skipped"
exit "$status"
