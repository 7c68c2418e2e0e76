"""
Run the interop scenarios of C{tests/interop} (the official SocketCluster
JavaScript clients, driven by C{tests/interop/run.js}) from trial tests.

The server under test runs in the same reactor as the test, so the Node
process is started with C{reactor.spawnProcess} and its result arrives as a
Deferred; nothing blocks.

The clients are installed with::

    npm ci --prefix tests/interop

If Node or those packages are missing, L{run_node} fails (it does not skip)
with a message saying so.
"""

import json
import os
import shutil

from twisted.internet import defer, error, protocol

__all__ = ["run_node", "NodeScenarioError", "INTEROP_DIR", "check_node", "InteropMixin"]

INTEROP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "interop")
RUN_JS = os.path.join(INTEROP_DIR, "run.js")
INSTALL_HINT = (
    "the interop tests need Node.js (>= 20.19) on PATH (or $SCSERVER_NODE) and the "
    "official clients installed: run `npm ci --prefix tests/interop` from the "
    "repository root (see the README's test command)"
)


class NodeScenarioError(Exception):
    """
    The scenario could not run to the end: Node is missing, the process
    crashed, timed out, or printed no result, or the scenario itself
    reported C{ok: false}.

    @ivar result: the parsed result when there was one, else C{None}.
    @ivar stderr: what the process wrote to stderr.
    """

    def __init__(self, message, result=None, stderr=""):
        super().__init__(message)
        self.result = result
        self.stderr = stderr


def _node_executable():
    return os.environ.get("SCSERVER_NODE") or shutil.which("node")


def check_node():
    """
    @return: the path of the C{node} executable.
    @raise NodeScenarioError: Node or the installed clients are missing.
    """
    node = _node_executable()
    if not node:
        raise NodeScenarioError("node not found. " + INSTALL_HINT)
    modules = os.path.join(INTEROP_DIR, "node_modules")
    for package in ("sc14", "sc20"):
        if not os.path.isfile(os.path.join(modules, package, "package.json")):
            raise NodeScenarioError(
                "%s is missing from %s. %s" % (package, modules, INSTALL_HINT)
            )
    return node


class _Collector(protocol.ProcessProtocol):
    def __init__(self, finished):
        self.finished = finished
        self.out = []
        self.err = []

    def outReceived(self, data):
        self.out.append(data)

    def errReceived(self, data):
        self.err.append(data)

    def processEnded(self, reason):
        self.finished.callback(reason.value)


def run_node(scenario, version, url, params=None, reactor=None, timeout=30, check=True):
    """
    Run one scenario with one client version.

    @param scenario: a scenario name from C{tests/interop/scenarios}.
    @param version: C{14} or C{20} (socketcluster-client 14.3.2 or 20.0.2).
    @param url: the server's WebSocket URL, e.g.
        C{"ws://127.0.0.1:1234/socketcluster/"}.
    @param params: a JSON-able dict of scenario parameters (see run.js).
    @param reactor: the reactor; L{None} for the global one.
    @param timeout: seconds after which the Node process is killed.  The
        scenario's own hard limit (C{params["timeout"]}, default 20 s) should
        be shorter.
    @param check: when true (the default), a result with C{ok: false} is a
        failure; when false it is returned like any other.
    @return: a Deferred firing with the scenario's result (a dict), or
        failing with L{NodeScenarioError}.
    """
    if reactor is None:
        from twisted.internet import reactor
    try:
        node = check_node()
    except NodeScenarioError:
        return defer.fail()

    params = dict(params or {})
    params.setdefault("timeout", max(1, timeout - 5))
    argv = [node, RUN_JS, scenario, str(version), url, json.dumps(params)]

    def finished(outcome):
        reason, stdout, stderr, timed_out = outcome
        where = "node run.js %s %s %s" % (scenario, version, url)
        if timed_out:
            raise NodeScenarioError(
                "%s: killed after %s s\nstdout: %s\nstderr: %s"
                % (where, timeout, stdout, stderr),
                stderr=stderr,
            )
        lines = [line for line in stdout.splitlines() if line.strip()]
        result = None
        if lines:
            try:
                result = json.loads(lines[-1])
            except ValueError:
                result = None
        if not isinstance(result, dict):
            raise NodeScenarioError(
                "%s: no JSON result (%s)\nstdout: %s\nstderr: %s"
                % (where, reason, stdout, stderr),
                stderr=stderr,
            )
        result.setdefault("stderr", stderr)
        if check and not result.get("ok"):
            raise NodeScenarioError(
                "%s: scenario failed: %s\n%s\nstderr: %s"
                % (where, result.get("error"), result.get("stack", ""), stderr),
                result=result,
                stderr=stderr,
            )
        return result

    return spawn_node(argv, INTEROP_DIR, timeout, reactor).addCallback(finished)


def spawn_node(argv, path, timeout, reactor, env=None):
    """
    Run C{argv} (a node command line) in C{path}, killed after C{timeout}
    seconds.

    @param env: the environment (C{os.environ} when C{None}).
    @return: a Deferred firing with C{(reason, stdout, stderr, timed_out)}:
        why the process ended, its output as text, and whether it was
        killed.
    """
    ended = defer.Deferred()
    collector = _Collector(ended)
    transport = reactor.spawnProcess(collector, argv[0], argv,
                                     env=dict(os.environ) if env is None else env, path=path)
    timed_out = []

    def kill():
        timed_out.append(True)
        try:
            transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass

    killer = reactor.callLater(timeout, kill)

    def finished(reason):
        if killer.active():
            killer.cancel()
        return (reason,
                b"".join(collector.out).decode("utf-8", "replace"),
                b"".join(collector.err).decode("utf-8", "replace"),
                bool(timed_out))

    return ended.addCallback(finished)


class InteropMixin:
    """
    For C{twisted.trial.unittest.TestCase} subclasses: start an C{SCServer}
    running L{tests.interop_app} on 127.0.0.1 and drive a client scenario
    against it.  Set C{version} (14 or 20) on the concrete class.
    """

    version = None

    @defer.inlineCallbacks
    def start_server(self, **options):
        """
        Start a server with these options (API names, seconds), listening on
        an ephemeral port of 127.0.0.1; it is closed in the test's cleanup.

        @return: a Deferred firing with the server; C{self.server} and
            C{self.url} are set.
        """
        from twisted.internet import reactor

        from scserver import SCServer

        from tests import interop_app

        check_node()
        server = SCServer(reactor=reactor, **options)
        interop_app.setup(server)
        port = yield server.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(server.close)
        self.server = server
        self.url = "ws://127.0.0.1:%d/socketcluster/" % (port.getHost().port,)
        return server

    def scenario(self, name, params=None, version=None, timeout=30):
        """
        Run scenario C{name} with this class's client version (or
        C{version}) against the server started by L{start_server}.

        @return: a Deferred firing with the scenario's result dict.
        """
        from twisted.internet import reactor

        return run_node(
            name,
            version or self.version,
            self.url,
            params=params,
            reactor=reactor,
            timeout=timeout,
        )
