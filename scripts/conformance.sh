#!/usr/bin/env bash
# WebSocket conformance of scserver: the Autobahn TestSuite fuzzingclient
# cases (1.* to 13.*), run by kosoku (https://pypi.org/project/kosoku/, the
# Autobahn case files driven by a native runner, no Python 2 nor Docker),
# against scserver's WebSocket layer as a raw echo server
# (tests/conformance/echo_server.py explains why an echo server, and what it
# shares with scserver: the SCServer factory's options and SCServerProtocol).
#
#   bash scripts/conformance.sh                 # every case
#   bash scripts/conformance.sh -i '9.*'        # kosoku's own flags (-i/-x CASE, -p N)
#   PARALLELISM=4 OUT=/tmp/reports bash scripts/conformance.sh   # cases at once (default: nproc), reports
#
# kosoku is installed in a scratch virtualenv, build/conformance-venv
# (Python >= 3.10; KOSOKU=/path/to/kosoku uses another).  The reports (HTML
# and index.json) go to build/conformance/; the last lines summarise
# index.json.  Exits non-zero if a case FAILED or kosoku could not run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
OUT=${OUT:-$ROOT/build/conformance}
KOSOKU=${KOSOKU:-}
if [ -z "$KOSOKU" ]; then
    VENV=$ROOT/build/conformance-venv
    if [ ! -x "$VENV/bin/kosoku" ]; then
        BASE=$(command -v python3.11 || command -v python3)
        "$BASE" -m venv "$VENV"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check 'kosoku>=0.1.0'
    fi
    KOSOKU=$VENV/bin/kosoku
fi

log=$(mktemp)
"$PYTHON" tests/conformance/echo_server.py 0 >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$log"' EXIT
port=""
for _ in $(seq 100); do
    port=$(sed -n 's/^listening on \([0-9]*\)$/\1/p' "$log")
    [ -n "$port" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$port" ] || { echo "the echo server did not start" >&2; cat "$log" >&2; exit 1; }
echo "scserver echo server on 127.0.0.1:$port; kosoku: $KOSOKU"

rm -rf "$OUT"
status=0
"$KOSOKU" -o "$OUT" -p "${PARALLELISM:-$(nproc 2>/dev/null || echo 2)}" "$@" "127.0.0.1:$port" || status=$?

"$PYTHON" - "$OUT/index.json" <<'PY' || status=1
import collections, json, sys
index = json.load(open(sys.argv[1]))
for agent, cases in index.items():
    behaviors = collections.Counter(case["behavior"] for case in cases.values())
    closes = collections.Counter(case["behaviorClose"] for case in cases.values())
    print("%s: %d cases; behavior %s; close %s" % (
        agent, len(cases), dict(sorted(behaviors.items())), dict(sorted(closes.items()))))
    def key(case):
        return [int(part) for part in case.split(".")]
    for name in sorted(cases, key=key):
        case = cases[name]
        if case["behavior"] != "OK" or case["behaviorClose"] != "OK":
            print("  %-8s %-13s close %-13s remote close code %s" % (
                name, case["behavior"], case["behaviorClose"], case.get("remoteCloseCode")))
    if behaviors.get("FAILED") or closes.get("FAILED"):
        sys.exit(1)
PY
exit "$status"
