"""
The live inspection page in a real browser: Debian's headless chromium,
driven by playwright-core from C{tests/browser/inspect.js}, against a real
server on 127.0.0.1, while official SocketCluster clients (npm
socketcluster-client 14 and 20, from C{tests/interop}) connect, subscribe
and unsubscribe.

Needs C{/usr/bin/chromium} (or C{$SCSERVER_CHROMIUM}): without it the tests
are skipped (C{scripts/test.sh} installs it with apt-get as root).  Needs
Node and C{npm ci --prefix tests/browser} (and C{tests/interop}): without
them the tests fail with a hint, as the interop tests do.  The screenshot
is written to C{inspect-page.png} in trial's
working directory (C{_trial_temp}, ignored by git).
"""

import json
import os
import shutil

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, TestCase

from scserver import SCServer

from tests._node import INTEROP_DIR, check_node, spawn_node

BROWSER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "browser")
INSPECT_JS = os.path.join(BROWSER_DIR, "inspect.js")
TOKEN = "browser-test-token-0123456789abcdef"
TIMEOUT = 60


def chromium_path():
    """The chromium executable, or C{None}."""
    path = os.environ.get("SCSERVER_CHROMIUM") or shutil.which("chromium") \
        or "/usr/bin/chromium"
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def run_inspect_js(reactor, params):
    """
    Run C{inspect.js} with C{params}; a Deferred firing with its one-line
    JSON result (and C{"stderr"}), killed after L{TIMEOUT} seconds.
    """
    node = check_node()
    if not os.path.isfile(os.path.join(BROWSER_DIR, "node_modules", "playwright-core",
                                       "package.json")):
        raise AssertionError(
            "playwright-core is missing from tests/browser/node_modules: run"
            " `npm ci --prefix tests/browser` (scripts/test.sh does)")
    env = dict(os.environ)
    env["SCSERVER_CHROMIUM"] = chromium_path()

    def done(outcome):
        _, stdout, stderr, _ = outcome
        lines = [line for line in stdout.splitlines() if line.strip()]
        try:
            result = json.loads(lines[-1])
        except (IndexError, ValueError):
            raise AssertionError("inspect.js printed no result\nstdout: {}\nstderr: {}".format(
                stdout, stderr))
        result["stderr"] = stderr
        return result

    return spawn_node([node, INSPECT_JS, json.dumps(params)], BROWSER_DIR, TIMEOUT, reactor,
                      env).addCallback(done)


class BrowserTests(TestCase):
    """
    The page in chromium, with clients of both generations
    (socketcluster-client 14, protocol 1, and 20, protocol 2).
    """

    def setUp(self):
        if chromium_path() is None:
            raise SkipTest(
                "chromium is not installed (/usr/bin/chromium, or $SCSERVER_CHROMIUM):"
                " the browser tests of the inspection page need it; as root,"
                " `apt-get install -y chromium` (scripts/test.sh does)")
        check_node()
        if not os.path.isdir(os.path.join(INTEROP_DIR, "node_modules")):
            raise AssertionError("run `npm ci --prefix tests/interop` first")

    @defer.inlineCallbacks
    def test_page(self):
        """
        Refused without the token; with it, the page shows a connecting
        client, and a channel's subscriber count rising to N and falling
        back as N clients subscribe and unsubscribe.
        """
        from twisted.internet import reactor

        server = SCServer(reactor=reactor, inspect_path="/inspect", inspect_token=TOKEN)
        port = yield server.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(server.close)
        number = port.getHost().port
        screenshot = os.path.abspath("inspect-page.png")
        result = yield run_inspect_js(reactor, {
            "base": "http://127.0.0.1:{}/inspect".format(number),
            "ws": "ws://127.0.0.1:{}/socketcluster/".format(number),
            "token": TOKEN, "versions": [14, 20], "subscribers": 3,
            "channel": "room <&\"'>", "screenshot": screenshot, "timeout": TIMEOUT - 5,
        })
        self.assertTrue(result.get("ok"), "inspect.js failed: {}\n{}\nsteps: {}\nstderr: {}".format(
            result.get("error"), result.get("stack", ""), result.get("steps"),
            result.get("stderr")))
        names = [step["step"] for step in result["steps"]]
        self.assertEqual(names[:4], ["browser started", "refused without the token",
                                     "page loaded", "client shown"])
        counts = [step["count"] for step in result["steps"] if step["step"] == "channel count"]
        self.assertEqual(counts, ["1", "3", "1", ""])
        self.assertTrue(os.path.getsize(screenshot) > 1000)
