"""
End-to-end tests of the C{twistd scserver} command: a real C{twistd}
process running L{tests.interop_app}, driven by the official SocketCluster
clients (socketcluster-client 14.3.2 and 20.0.2, see C{tests/interop}).

The process is started with C{reactor.spawnProcess} (nothing blocks), on
C{tcp:0:interface=127.0.0.1}; the port is read from twistd's log line
C{"SCServerFactory starting on <port>"}.  Every wait is bounded, and the
process is killed in the cleanup if a test leaves it running.

Needs Node.js and C{npm ci --prefix tests/interop} for the client part.
"""

import os
import re
import signal
import sys
import time

from twisted.internet import defer, error, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial import unittest

from scserver.auth import JWTAuthEngine

from tests._node import check_node, run_node

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

AUTH_KEY = "twistd-test-auth-key-0123456789abcdefghij"

TWISTD = "from twisted.scripts.twistd import run; run()"

PORT_LINE = re.compile(r"SCServerFactory starting on (\d+)")


class _Twistd(protocol.ProcessProtocol):
    """
    A twistd child process: collects stdout and stderr, lets a test wait for
    a line of output, and fires C{ended} with the exit reason.
    """

    def __init__(self, reactor):
        self.reactor = reactor
        self.output = []
        self.ended = defer.Deferred()
        self.reason = None
        self._waiters = []

    @property
    def text(self):
        return b"".join(self.output).decode("utf-8", "replace")

    def outReceived(self, data):
        self._received(data)

    def errReceived(self, data):
        self._received(data)

    def _received(self, data):
        self.output.append(data)
        for waiter in list(self._waiters):
            self._check(waiter)

    def _check(self, waiter):
        pattern, d, timer = waiter
        match = pattern.search(self.text)
        if match is not None:
            self._waiters.remove(waiter)
            timer.cancel()
            d.callback(match)

    def wait_for(self, pattern, timeout):
        """
        @return: a Deferred firing with the first match of C{pattern} in
            the output, failing after C{timeout} seconds or when the process
            ends first.
        """
        d = defer.Deferred()

        def expire():
            self._waiters.remove(waiter)
            d.errback(AssertionError(
                "twistd did not print %r within %s s; output:\n%s"
                % (pattern.pattern, timeout, self.text)))

        timer = self.reactor.callLater(timeout, expire)
        waiter = (pattern, d, timer)
        self._waiters.append(waiter)
        self._check(waiter)
        return d

    def processEnded(self, reason):
        self.reason = reason
        for pattern, d, timer in self._waiters:
            timer.cancel()
            d.errback(AssertionError(
                "twistd ended (%s) before printing %r; output:\n%s"
                % (reason.value, pattern.pattern, self.text)))
        self._waiters = []
        self.ended.callback(reason.value)

    def wait_ended(self, timeout):
        """
        @return: a Deferred firing with the exit reason
            (L{error.ProcessDone} or L{error.ProcessTerminated}), failing
            after C{timeout} seconds.
        """
        if self.reason is not None:
            return defer.succeed(self.reason.value)
        d = defer.Deferred()
        timer = self.reactor.callLater(
            timeout, lambda: d.errback(AssertionError(
                "twistd did not exit within %s s; output:\n%s" % (timeout, self.text))))

        def fired(result):
            if timer.active():
                timer.cancel()
                d.callback(result)
            return result

        self.ended.addBoth(fired)
        return d


class TwistdProcessMixin:
    """
    For trial test cases that run C{twistd -n --pidfile= scserver ...}
    child processes: L{spawn} starts one, and the cleanup stops it.
    """

    def spawn(self, *args, **kwargs):
        """
        Start C{twistd -n --pidfile= scserver <args>} in a fresh directory,
        with the repository root on C{PYTHONPATH} (for C{scserver}, its
        twistd plugin and the test applications).

        @param kwargs: C{systemd_socket}: a listening socket to pass as
            descriptor 3 the way systemd does (C{LISTEN_FDS},
            C{LISTEN_FDNAMES}, and C{LISTEN_PID} set to twistd's own pid by
            a C{/bin/sh} wrapper that C{exec}s it).
        @return: C{(process protocol, process transport)}: an L{_Twistd}.
        """
        from twisted.internet import reactor

        cwd = self.mktemp()
        os.makedirs(cwd)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [REPO_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        env["PYTHONUNBUFFERED"] = "1"
        argv = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "scserver"] + list(args)
        child_fds = {0: "w", 1: "r", 2: "r"}
        executable = sys.executable
        inherited = kwargs.get("systemd_socket")
        if inherited is not None:
            os.set_inheritable(inherited.fileno(), True)
            child_fds[3] = inherited.fileno()
            env["LISTEN_FDS"] = "1"
            env["LISTEN_FDNAMES"] = "scserver"
            executable = "/bin/sh"
            argv = [executable, "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"',
                    "sh"] + argv
        process = _Twistd(reactor)
        transport = reactor.spawnProcess(process, executable, argv, env=env, path=cwd,
                                         childFDs=child_fds)
        self.addCleanup(self._stop_twistd, process, transport)
        return process, transport

    @defer.inlineCallbacks
    def _stop_twistd(self, process, transport):
        if process.reason is None:
            # A --workers parent stops its workers on SIGTERM; with SIGKILL
            # it cannot, and they stop when their pipe from it closes.
            for name in ("TERM", "KILL"):
                try:
                    transport.signalProcess(name)
                except error.ProcessExitedAlready:
                    break
                try:
                    yield process.wait_ended(10)
                    break
                except AssertionError:
                    continue


class TwistdTests(TwistdProcessMixin, unittest.TestCase):
    """
    C{twistd -n scserver ...} as a child process.
    """

    timeout = 180

    @defer.inlineCallbacks
    def wait_listening(self, port, timeout=10):
        """Connect to 127.0.0.1:C{port} until it accepts (bounded)."""
        from twisted.internet import reactor

        deadline = time.monotonic() + timeout
        while True:
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=2)
            try:
                connection = yield endpoint.connect(
                    protocol.Factory.forProtocol(protocol.Protocol))
            except error.ConnectError:
                if time.monotonic() > deadline:
                    raise
                yield deferLater(reactor, 0.1)
            else:
                connection.transport.loseConnection()
                return

    @defer.inlineCallbacks
    def test_serves_both_clients_and_stops_on_sigterm(self):
        """
        twistd listens on the port it logs; both official clients complete
        the handshake and echo through C{tests.interop_app}; a token signed
        with the C{--auth-key} authenticates; SIGTERM stops the process
        cleanly (it closes the port and logs its shutdown).
        """
        from twisted.internet import reactor

        check_node()
        process, transport = self.spawn(
            "--listen", "tcp:0:interface=127.0.0.1",
            "--app", "tests.interop_app:setup",
            "--auth-key", AUTH_KEY,
        )
        match = yield process.wait_for(PORT_LINE, 30)
        port = int(match.group(1))
        yield self.wait_listening(port)
        url = "ws://127.0.0.1:%d/socketcluster/" % (port,)

        for version in (14, 20):
            r = yield run_node("emitAck", version, url, params={"ackTimeout": 800},
                               reactor=reactor, timeout=30)
            self.assertEqual(r["echo"], {"data": {"msg": "hi", "n": 1}}, version)
            self.assertEqual(r["fail"]["error"]["name"], "CustomError", version)
            self.assertEqual(r["noackReceived"]["data"][-1], {"fire": "and forget", "n": 1})
            self.assertEqual(r["events"], ["connect"], version)

            now = int(time.time())
            token = JWTAuthEngine().sign_token(
                {"username": "v%d" % version, "iat": now, "exp": now + 600}, AUTH_KEY,
                {"algorithm": "HS256"})
            r = yield run_node("handshakeWithToken", version, url, params={"token": token},
                               reactor=reactor, timeout=30)
            self.assertIs(r["status"]["isAuthenticated"], True, version)
            self.assertEqual(r["server"]["authToken"]["username"], "v%d" % version)

        transport.signalProcess("TERM")
        reason = yield process.wait_ended(30)
        # After its orderly shutdown twistd re-raises the signal to itself,
        # so the exit is "by signal 15" (older Twisted: status 0).
        if isinstance(reason, error.ProcessTerminated):
            self.assertEqual(reason.signal, signal.SIGTERM, process.text)
        else:
            self.assertIsInstance(reason, error.ProcessDone, process.text)
        self.assertIn("Received SIGTERM", process.text)
        self.assertIn("Server Shut Down.", process.text)
        self.assertIn("(TCP Port %d Closed)" % (port,), process.text)
        self.assertNotIn("Traceback", process.text)
        self.assertNotIn("Unhandled", process.text)

    @defer.inlineCallbacks
    def _bad_app(self, spec, message):
        process, transport = self.spawn(
            "--listen", "tcp:0:interface=127.0.0.1", "--app", spec)
        reason = yield process.wait_ended(30)
        self.assertIsInstance(reason, error.ProcessTerminated, process.text)
        self.assertNotEqual(reason.exitCode, 0, process.text)
        self.assertIsNone(reason.signal, process.text)
        self.assertIn(message, process.text)
        self.assertNotIn("Traceback", process.text)
        self.assertIsNone(PORT_LINE.search(process.text), process.text)

    def test_bad_app_missing_module(self):
        """
        An C{--app} naming a module that does not exist: a one-line usage
        error, exit status 1, nothing listened on.
        """
        return self._bad_app(
            "tests.no_such_module:setup",
            "--app tests.no_such_module:setup: no module named 'tests.no_such_module'")

    def test_bad_app_missing_attribute(self):
        """
        An C{--app} naming a missing attribute of an existing module.
        """
        return self._bad_app(
            "tests.interop_app:no_such_setup",
            "--app tests.interop_app:no_such_setup: 'tests.interop_app' has no attribute "
            "'no_such_setup'")

    def test_bad_app_without_colon(self):
        """
        An C{--app} that is not C{pkg.module:name}.
        """
        return self._bad_app(
            "tests.interop_app", "--app expects pkg.module:name, got 'tests.interop_app'")


class _RawClient:
    """
    A raw autobahn WebSocket client of a twistd scserver: sends the
    C{#handshake} once open, records the handshake reply and the close code.
    With C{answer_close=False} it never answers the server's close frame
    (nor reads anything once it arrives).
    """

    def __init__(self, answer_close=True):
        self.answer_close = answer_close
        self.opened = defer.Deferred()
        self.closed = defer.Deferred()
        self.code = None

    def protocol(self):
        from autobahn.twisted.websocket import WebSocketClientProtocol

        client = self

        class Protocol(WebSocketClientProtocol):
            def onOpen(self):
                self.sendMessage(b'{"event":"#handshake","data":{},"cid":1}', False)

            def onMessage(self, payload, isBinary):
                if payload.startswith(b'{"rid":1') and not client.opened.called:
                    client.opened.callback(None)

            def onCloseFrame(self, code, reasonRaw):
                client.code = code
                if not client.answer_close:
                    self.transport.pauseProducing()
                    if not client.closed.called:
                        client.closed.callback(code)
                    return None
                return WebSocketClientProtocol.onCloseFrame(self, code, reasonRaw)

            def onClose(self, wasClean, code, reason):
                if not client.closed.called:
                    client.closed.callback(client.code)

        return Protocol


class GracefulShutdownTests(TwistdProcessMixin, unittest.TestCase):
    """
    C{twistd -n scserver} (one process) on SIGTERM or SIGINT: it stops
    accepting, closes every socket with 1001, waits at most
    C{--shutdown-timeout} for the closing handshakes and exits with status 0.
    """

    timeout = 60

    @defer.inlineCallbacks
    def start(self, *args):
        process, transport = self.spawn(
            "--listen", "tcp:0:interface=127.0.0.1", "--app", "tests.interop_app:setup",
            *args)
        match = yield process.wait_for(PORT_LINE, 30)
        return process, transport, int(match.group(1))

    @defer.inlineCallbacks
    def connect(self, port, count, answer_close=True):
        from autobahn.twisted.websocket import WebSocketClientFactory
        from twisted.internet import reactor

        clients = []
        for _ in range(count):
            client = _RawClient(answer_close)
            factory = WebSocketClientFactory("ws://127.0.0.1:%d/socketcluster/" % (port,))
            factory.protocol = client.protocol()
            factory.setProtocolOptions(closeHandshakeTimeout=30, autoPingInterval=0)
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
            protocol = yield endpoint.connect(factory)
            self.addCleanup(protocol.transport.abortConnection)
            clients.append(client)
        for client in clients:
            yield _within(client.opened, 10, "no handshake reply")
        return clients

    @defer.inlineCallbacks
    def stop(self, transport, process, name, limit):
        started = time.monotonic()
        transport.signalProcess(name)
        reason = yield process.wait_ended(limit + 10)
        elapsed = time.monotonic() - started
        self.assertIsInstance(reason, error.ProcessDone, process.text)
        self.assertLess(elapsed, limit, process.text)
        self.assertNotIn("Traceback", process.text)
        self.assertNotIn("Unhandled", process.text)
        return elapsed

    @defer.inlineCallbacks
    def test_sigterm_closes_every_client_with_1001_and_exits_0(self):
        """
        SIGTERM: every connected client gets a close frame with 1001, the
        listening port is closed, and twistd exits with status 0 well
        within C{--shutdown-timeout}.
        """
        process, transport, port = yield self.start("--shutdown-timeout", "8")
        clients = yield self.connect(port, 4)
        yield self.stop(transport, process, "TERM", 8)
        codes = yield defer.gatherResults([_within(c.closed, 5, "no close") for c in clients])
        self.assertEqual(codes, [1001] * 4)
        self.assertIn("Received SIGTERM, shutting down.", process.text)
        self.assertIn("(TCP Port %d Closed)" % (port,), process.text)
        self.assertIn("Server Shut Down.", process.text)
        self.assertNotIn("--shutdown-timeout", process.text)

    @defer.inlineCallbacks
    def test_sigint_and_shutdown_timeout(self):
        """
        SIGINT does the same; a client that never answers the close frame
        does not hold the process past C{--shutdown-timeout}: it exits with
        status 0 after about that long, logging why.
        """
        process, transport, port = yield self.start("--shutdown-timeout", "1")
        clients = yield self.connect(port, 2, answer_close=False)
        elapsed = yield self.stop(transport, process, "INT", 4)
        self.assertGreater(elapsed, 0.9, process.text)
        codes = yield defer.gatherResults([_within(c.closed, 5, "no close") for c in clients])
        self.assertEqual(codes, [1001, 1001])
        self.assertIn("Received SIGINT, shutting down.", process.text)
        self.assertIn("did not close within 1 s (--shutdown-timeout)", process.text)


def _within(d, seconds, message):
    """C{d}, failing with C{message} when it has not fired after C{seconds}."""
    from twisted.internet import reactor

    waiter = defer.Deferred()
    timer = reactor.callLater(seconds, lambda: waiter.called or waiter.errback(
        AssertionError(message)))

    def fired(result):
        if timer.active():
            timer.cancel()
        if not waiter.called:
            waiter.callback(result)
        return result

    d.addBoth(fired)
    return waiter


def deferLater(reactor, seconds):
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


# The process is stopped with SIGTERM, which needs POSIX signals.
if not hasattr(signal, "SIGTERM") or os.name != "posix":  # pragma: no cover
    TwistdTests.skip = "needs POSIX signals"
    GracefulShutdownTests.skip = "needs POSIX signals"
