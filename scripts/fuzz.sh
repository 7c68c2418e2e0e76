#!/usr/bin/env bash
# The long fuzz run of scserver's codecs and protocol engine (hypothesis):
# the property tests of tests/test_fuzz_codec.py and tests/test_fuzz_engine.py
# with the "long" profile, randomized, EXAMPLES inputs per test (10 tests).
#
#   bash scripts/fuzz.sh                 # 20000 per test: 200000 inputs, a few minutes
#   EXAMPLES=100000 bash scripts/fuzz.sh # longer
#
# `trial tests` runs the same tests with the "ci" profile (40 inputs each,
# derandomized).  On a failure hypothesis prints the shrunk example and a
# @reproduce_failure blob; the last lines give the inputs run per test.
# Needs the [test] extra (hypothesis); uses .venv when present.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
export SCSERVER_FUZZ_PROFILE=long
export SCSERVER_FUZZ_EXAMPLES=${EXAMPLES:-20000}
exec "$PYTHON" -m twisted.trial --temp-directory=_trial_temp.fuzz \
    tests.test_fuzz_codec tests.test_fuzz_engine tests.test_fuzz_transport
