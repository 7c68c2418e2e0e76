"""
End-to-end tests of C{twistd scserver --workers N} and of systemd socket
activation: real C{twistd} processes running L{tests.workers_app} on
127.0.0.1, driven by L{scserver.client}.

The parent is started with C{reactor.spawnProcess} on
C{tcp:0:interface=127.0.0.1}; the port is read from its log line
C{"... bound on 127.0.0.1:<port>, shared by N workers"}.  Connections made
before the workers listen wait in the shared socket's backlog, so the tests
connect at once.  Every wait is bounded (a deadline, polling where there
is nothing to wait on), and every process is killed in the cleanup if a
test leaves it running.

For socket activation the test binds the socket, as systemd would, and
starts twistd with it as descriptor 3, C{LISTEN_FDS=1},
C{LISTEN_FDNAMES} and C{LISTEN_PID} set to the pid of twistd itself: a
C{/bin/sh} wrapper exports C{LISTEN_PID=$$} and C{exec}s twistd, which
keeps the shell's pid.
"""

import io
import os
import re
import signal
import socket
import sys
import time

from twisted.internet import defer, error, task
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from scserver import _workers
from scserver.client import SCClientSocket

from tests._helpers import running
from tests.test_twistd import TwistdProcessMixin

AUTH_KEY = "workers-test-auth-key-0123456789abcdefghij"

BOUND = re.compile(r"bound on 127\.0\.0\.1:(\d+), shared by (\d+) workers")

WORKER_LISTENING = re.compile(r"\[worker \d+ pid (\d+)\] \[-\] SCServerFactory.* starting on")

SHARED = ["--app", "tests.workers_app:setup", "--broker", "tests.workers_app:make_broker",
          "--auth-key", AUTH_KEY]
"""The options every --workers test passes (besides --listen)."""


def sleep(seconds):
    from twisted.internet import reactor

    return task.deferLater(reactor, seconds, lambda: None)


class WorkersTests(TwistdProcessMixin, unittest.TestCase):
    """
    C{twistd -n scserver --workers N ...} and C{--listen systemd:...} as
    child processes.
    """

    timeout = 60

    @defer.inlineCallbacks
    def connect(self, url, closes=None, **options):
        """
        Connect a client (no reconnection) and disconnect it in the
        cleanup.  Its close codes are appended to C{closes}.
        """
        from twisted.internet import reactor

        client = SCClientSocket(url, reactor=reactor, auto_reconnect=False,
                                ack_timeout=10, connect_timeout=10, **options)
        if closes is not None:
            client.on("close", lambda code, reason: closes.append(code))
        yield client.connect()
        self.addCleanup(self._disconnect, client)
        return client

    def _disconnect(self, client):
        d = client.disconnect()
        from twisted.internet import reactor

        d.addTimeout(5, reactor)
        d.addErrback(lambda failure: None)
        return d

    @defer.inlineCallbacks
    def until(self, condition, timeout, message):
        """Poll C{condition()} until true, failing after C{timeout} seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                self.fail(message())
            yield sleep(0.05)

    @defer.inlineCallbacks
    def connect_until(self, url, wanted, process, limit=200, timeout=15, **options):
        """
        Open connections (kept open) until C{wanted(pid)} for the pid one
        of them answers C{pid} with.

        @return: a list of C{(client, pid, closes)}, the last one wanted.
        """
        opened = []
        deadline = time.monotonic() + timeout
        while True:
            if len(opened) >= limit or time.monotonic() > deadline:
                self.fail("no wanted worker after %d connections: %r; output:\n%s"
                          % (len(opened), [pid for _, pid, _ in opened], process.text))
            closes = []
            client = yield self.connect(url, closes, **options)
            pid = yield client.invoke("pid")
            opened.append((client, pid, closes))
            if wanted(pid):
                return opened

    def assertStopped(self, process, reason):
        """
        The parent stopped in order: exit status 0, without a traceback.
        """
        self.assertIsInstance(reason, error.ProcessDone, process.text)
        self.assertNotIn("Traceback", process.text)
        self.assertNotIn("Unhandled", process.text)

    @defer.inlineCallbacks
    def test_share_restart_and_stop(self):
        """
        With C{--workers 2}, connections land on both workers; a worker
        killed with SIGKILL is started again (logged, a new pid answers);
        SIGTERM to the parent closes every client of every worker with
        1001, and the parent exits within the shutdown timeout.
        """
        process, transport = self.spawn(
            "--workers", "2", "--listen", "tcp:0:interface=127.0.0.1",
            "--shutdown-timeout", "5", *SHARED)
        match = yield process.wait_for(BOUND, 15)
        self.assertEqual(match.group(2), "2")
        url = "ws://127.0.0.1:%s/socketcluster/" % (match.group(1),)

        seen = set()

        def new_worker(pid):
            seen.add(pid)
            return len(seen) == 2

        opened = yield self.connect_until(url, new_worker, process)
        first, second = sorted(seen)

        os.kill(first, signal.SIGKILL)
        yield process.wait_for(re.compile(
            r"Worker \d \(pid %d\) was killed by signal 9; restarting it in 1 s" % (first,)), 10)
        started = re.compile(r"Worker \d started \(pid (\d+)\)")
        yield self.until(lambda: len(started.findall(process.text)) == 3, 10,
                         lambda: "no worker was started again:\n" + process.text)
        third = int(started.findall(process.text)[-1])
        self.assertNotIn(third, (first, second))
        yield self.until(lambda: str(third) in WORKER_LISTENING.findall(process.text), 10,
                         lambda: "the new worker did not listen:\n" + process.text)
        more = yield self.connect_until(url, lambda pid: pid == third, process)

        alive = [(client, pid, closes) for client, pid, closes in opened + more
                 if pid != first]
        self.assertEqual({pid for _, pid, _ in alive}, {second, third})
        stopping = time.monotonic()
        transport.signalProcess("TERM")
        reason = yield process.wait_ended(10)
        self.assertLess(time.monotonic() - stopping, 5, process.text)
        self.assertStopped(process, reason)
        yield self.until(
            lambda: all(closes for _, _, closes in alive), 5,
            lambda: "clients not closed: %r" % ([(pid, c) for _, pid, c in alive],))
        self.assertEqual({(pid, tuple(closes)) for _, pid, closes in alive},
                         {(second, (1001,)), (third, (1001,))})
        for pid in (second, third):
            self.assertRegex(process.text, r"Worker \d \(pid %d\) was killed by signal 15\n"
                             % (pid,))
        self.assertNotIn("killing it", process.text)

    @defer.inlineCallbacks
    def test_shutdown_timeout(self):
        """
        Workers that do not stop within C{--shutdown-timeout} are killed,
        and the parent still exits.
        """
        process, transport = self.spawn(
            "--workers", "2", "--listen", "tcp:0:interface=127.0.0.1",
            "--shutdown-timeout", "0.5",
            "--app", "tests.workers_app:stubborn_setup",
            "--broker", "tests.workers_app:make_broker", "--auth-key", AUTH_KEY)
        yield self.until(lambda: len(WORKER_LISTENING.findall(process.text)) == 2, 15,
                         lambda: "the workers did not listen:\n" + process.text)
        transport.signalProcess("TERM")
        reason = yield process.wait_ended(10)
        self.assertStopped(process, reason)
        self.assertEqual(len(re.findall(
            r"Worker \d \(pid \d+\) did not stop within 0.5 s; killing it", process.text)), 2,
            process.text)
        self.assertEqual(len(re.findall(
            r"Worker \d \(pid \d+\) was killed by signal 9\n", process.text)), 2, process.text)

    @defer.inlineCallbacks
    def test_usage_errors(self):
        """
        C{--workers 2} with the in-process broker, or without a shared
        token key, is a usage error: one line, exit status 1, no worker.
        """
        cases = [
            (["--auth-key", AUTH_KEY],
             "--workers 2 needs a --broker that connects the processes"),
            (["--auth-key", AUTH_KEY, "--broker", "memory"],
             "--workers 2 needs a --broker that connects the processes"),
            (["--broker", "tests.workers_app:make_broker"],
             "--workers 2 needs --auth-key (or --auth-private-key and --auth-public-key)"),
        ]
        processes = [self.spawn("--workers", "2", "--listen", "tcp:0:interface=127.0.0.1",
                                *args)[0] for args, message in cases]
        for process, (args, message) in zip(processes, cases):
            reason = yield process.wait_ended(30)
            self.assertIsInstance(reason, error.ProcessTerminated, process.text)
            self.assertEqual(reason.exitCode, 1, process.text)
            self.assertIn(message, process.text)
            self.assertNotIn("Traceback", process.text)
            self.assertNotIn("Worker", process.text)

    @defer.inlineCallbacks
    def test_tls(self):
        """
        An C{ssl:} endpoint is shared too: each worker adopts the socket
        and speaks TLS with the certificate of the C{--listen} description.
        """
        from twisted.internet.endpoints import quoteStringArgument
        from twisted.internet.ssl import CertificateOptions

        from tests.test_interop_tls import make_self_signed

        key, cert = make_self_signed(os.path.abspath(self.mktemp()))
        process, transport = self.spawn(
            "--workers", "2",
            "--listen", "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s"
            % (quoteStringArgument(key), quoteStringArgument(cert)), *SHARED)
        match = yield process.wait_for(BOUND, 15)
        url = "wss://127.0.0.1:%s/socketcluster/" % (match.group(1),)
        seen = set()

        def new_worker(pid):
            seen.add(pid)
            return len(seen) == 2

        opened = yield self.connect_until(url, new_worker, process,
                                          ssl_context_factory=CertificateOptions())
        reply = yield opened[0][0].invoke("echo", {"over": "tls"})
        self.assertEqual(reply, {"over": "tls"})
        # The parent may relay the workers' log lines after they answered.
        yield self.until(
            lambda: len(re.findall(r"SCServerFactory \(TLS\) starting on", process.text)) == 2,
            5, lambda: "the workers did not log TLS ports:\n" + process.text)

    def systemd_socket(self):
        """A listening socket on 127.0.0.1, as systemd would pass it."""
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen(50)
        return listening

    @defer.inlineCallbacks
    def test_systemd(self):
        """
        C{--listen systemd:domain=INET:index=0} listens on the socket
        inherited as systemd passes it; a client gets an echo.
        """
        listening = self.systemd_socket()
        port = listening.getsockname()[1]
        process, transport = self.spawn(
            "--listen", "systemd:domain=INET:index=0", "--app", "tests.workers_app:setup",
            systemd_socket=listening)
        listening.close()
        client = yield self.connect("ws://127.0.0.1:%d/socketcluster/" % (port,))
        reply = yield client.invoke("echo", "activated")
        self.assertEqual(reply, "activated")
        pid = yield client.invoke("pid")
        self.assertEqual(pid, transport.pid)

    @defer.inlineCallbacks
    def test_systemd_workers(self):
        """
        With C{--workers 2}, the parent adopts the socket from systemd and
        shares it with its workers.
        """
        listening = self.systemd_socket()
        port = listening.getsockname()[1]
        process, transport = self.spawn(
            "--workers", "2", "--listen", "systemd:domain=INET:index=0", *SHARED,
            systemd_socket=listening)
        listening.close()
        match = yield process.wait_for(BOUND, 15)
        self.assertEqual(int(match.group(1)), port)
        url = "ws://127.0.0.1:%d/socketcluster/" % (port,)
        opened = yield self.connect_until(url, lambda pid: pid != transport.pid, process)
        reply = yield opened[-1][0].invoke("echo", "activated")
        self.assertEqual(reply, "activated")
        self.assertRegex(process.text, r"Worker \d started \(pid %d\)" % (opened[-1][1],))


class FakeProcess:
    """An C{IProcessTransport} stand-in: records signals, ends on demand."""

    def __init__(self, protocol, pid, argv, env, childFDs):
        self.protocol = protocol
        self.pid = pid
        self.argv = argv
        self.env = env
        self.childFDs = childFDs
        self.signals = []
        protocol.makeConnection(self)

    def signalProcess(self, name):
        if self.pid is None:
            raise error.ProcessExitedAlready()
        self.signals.append(name)

    def end(self, reason):
        self.pid = None
        self.protocol.processExited(Failure(reason))
        self.protocol.processEnded(Failure(reason))


class FakePort:
    """A listening port with a descriptor, as the parent's ports have."""

    def __init__(self, address):
        self.address = address
        self.reading = True
        self.listening = True

    def stopReading(self):
        self.reading = False

    def fileno(self):
        return 42

    def getHost(self):
        return self.address

    def stopListening(self):
        self.listening = False


class PoolReactor(MemoryReactorClock):
    """A C{MemoryReactorClock} whose TCP ports have descriptors and that
    spawns L{FakeProcess}es."""

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.processes = []
        self.ports = []
        self.refuse = None

    def listenTCP(self, port, factory, backlog=50, interface=""):
        if self.refuse is not None and port == self.refuse:
            raise error.CannotListenError(interface, port, OSError("in use"))
        self.tcpServers.append((port, factory, backlog, interface))
        fake = FakePort(IPv4Address("TCP", interface or "0.0.0.0", port or 40000))
        self.ports.append(fake)
        return fake

    def spawnProcess(self, protocol, executable, args, env=None, path=None, uid=None,
                     gid=None, usePTY=False, childFDs=None):
        process = FakeProcess(protocol, 1000 + len(self.processes), args, env, childFDs)
        self.processes.append(process)
        return process

    def callWhenRunning(self, callable, *args, **kw):
        # A running reactor calls at once (as MemoryReactor does from
        # Twisted 24.7 on; older ones only keep the call).
        callable(*args, **kw)


class PoolTests(unittest.SynchronousTestCase):
    """
    L{_workers.WorkerPool} on a fake reactor: binding, the workers' command
    line, restarts with backoff, stopping.
    """

    def setUp(self):
        self.reactor = PoolReactor()
        self.reactor.running = True
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def pool(self, workers=2, listen=("tcp:0:interface=127.0.0.1",), timeout=5.0):
        pool = _workers.WorkerPool(self.reactor, list(listen), ["--listen", "x"], workers,
                                   shutdown_timeout=timeout, executable="/py")
        pool.privilegedStartService()
        pool.startService()
        return pool

    def messages(self):
        return [formatEvent(event) for event in self.events
                if event.get("log_namespace") == "scserver.workers"]

    def test_start(self):
        """
        The pool binds every endpoint (and does not accept on it), then
        starts the workers with the sockets as descriptors 3, 4, ...
        """
        pool = self.pool(listen=["tcp:8001:interface=127.0.0.1", "tcp:8002"])
        self.assertEqual([port.reading for port in self.reactor.ports], [False, False])
        self.assertEqual(len(self.reactor.processes), 2)
        process = self.reactor.processes[0]
        self.assertEqual(process.argv, [
            "/py", "-c", _workers.TWISTD, "-n", "--pidfile=",
            "--logger", "scserver._workers.worker_log_observer", "scserver", "--listen", "x"])
        self.assertEqual(process.env[_workers.WORKER_FDS_ENV], "3:INET,4:INET")
        self.assertEqual(process.childFDs, {0: "w", 1: "r", 2: "r", 3: 42, 4: 42})
        self.assertEqual(pool.pids, [1000, 1001])
        self.assertIn("tcp:8001:interface=127.0.0.1 bound on 127.0.0.1:8001, shared by 2"
                      " workers", self.messages())
        self.assertIn("Worker 2 started (pid 1001)", self.messages())

    def test_bindFailure(self):
        """
        When an endpoint cannot be listened on, starting fails (twistd
        exits) and the ports already bound are closed.
        """
        self.reactor.refuse = 8002
        pool = _workers.WorkerPool(self.reactor, ["tcp:8001", "tcp:8002"], [], 2)
        self.assertRaises(error.CannotListenError, pool.privilegedStartService)
        self.assertEqual([port.listening for port in self.reactor.ports], [False])
        self.assertEqual(self.reactor.processes, [])

    def test_restartBackoff(self):
        """
        A worker that ends is started again after 1 s, then 2, 4, ... up to
        L{_workers.MAX_DELAY}; once it stayed up L{_workers.STABLE_AFTER},
        after 1 s again.  The other worker is left alone.
        """
        self.pool()
        delays = []
        for i in range(8):
            process = self.reactor.processes[-1]
            process.end(error.ProcessTerminated(exitCode=1))
            count = len(self.reactor.processes)
            delay = self.reactor.getDelayedCalls()[0].getTime() - self.reactor.seconds()
            delays.append(delay)
            self.reactor.advance(delay - 0.5)
            self.assertEqual(len(self.reactor.processes), count)
            self.reactor.advance(0.5)
            self.assertEqual(len(self.reactor.processes), count + 1)
        self.assertEqual(delays, [1, 2, 4, 8, 16, 30, 30, 30])
        self.assertIn("Worker 2 (pid 1001) exited with status 1; restarting it in 1 s",
                      self.messages())
        self.assertIn("Worker 2 (pid 1008) exited with status 1; restarting it in 30 s",
                      self.messages())
        self.reactor.advance(_workers.STABLE_AFTER)
        self.reactor.processes[-1].end(error.ProcessTerminated(signal=9))
        self.assertIn("Worker 2 (pid 1009) was killed by signal 9; restarting it in 1 s",
                      self.messages())
        self.assertEqual(self.reactor.processes[0].signals, [])

    def test_stop(self):
        """
        Stopping sends SIGTERM to every worker, waits for them, then closes
        the shared sockets; no worker is started again.
        """
        pool = self.pool()
        stopped = pool.stopService()
        self.assertEqual([p.signals for p in self.reactor.processes], [["TERM"], ["TERM"]])
        self.assertNoResult(stopped)
        self.reactor.processes[0].end(error.ProcessTerminated(signal=15))
        self.assertNoResult(stopped)
        self.assertTrue(self.reactor.ports[0].listening)
        self.reactor.processes[1].end(error.ProcessDone(0))
        self.successResultOf(stopped)
        self.assertFalse(self.reactor.ports[0].listening)
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.processes), 2)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertIn("Worker 1 (pid 1000) was killed by signal 15", self.messages())

    def test_stopTimeout(self):
        """
        Workers still running after the shutdown timeout get SIGKILL.
        """
        pool = self.pool(timeout=3)
        self.reactor.processes[0].end(error.ProcessTerminated(signal=9))  # restart pending
        stopped = pool.stopService()
        self.assertEqual([p.signals for p in self.reactor.processes], [[], ["TERM"]])
        self.reactor.advance(2.9)
        self.assertEqual(self.reactor.processes[1].signals, ["TERM"])
        self.reactor.advance(0.1)
        self.assertEqual(self.reactor.processes[1].signals, ["TERM", "KILL"])
        self.assertIn("Worker 2 (pid 1001) did not stop within 3 s; killing it",
                      self.messages())
        self.assertNoResult(stopped)
        self.reactor.processes[1].end(error.ProcessTerminated(signal=9))
        self.successResultOf(stopped)
        self.assertEqual(len(self.reactor.processes), 2)

    def test_stopGivesUp(self):
        """
        A worker that does not even end after SIGKILL does not keep the
        parent from stopping.
        """
        pool = self.pool(workers=1, timeout=1)
        stopped = pool.stopService()
        self.reactor.advance(1)
        self.assertNoResult(stopped)
        self.reactor.advance(_workers.KILL_WAIT)
        self.successResultOf(stopped)
        self.assertFalse(self.reactor.ports[0].listening)

    def test_output(self):
        """
        A worker's output is logged line by line with its number and pid;
        a last line without a newline is logged when it ends.
        """
        pool = self.pool(workers=1)
        process = self.reactor.processes[0]
        process.protocol.childDataReceived(1, b"[-] one\n[-] t")
        process.protocol.childDataReceived(2, b"oops {not a format}\n")
        process.protocol.childDataReceived(1, b"wo\n\n[-] thr")
        process.protocol.childDataReceived(1, b"ee")
        stopped = pool.stopService()
        process.end(error.ProcessDone(0))
        self.successResultOf(stopped)
        relayed = [(event["log_system"], formatEvent(event)) for event in self.events
                   if "log_system" in event and event["log_system"].startswith("worker")]
        self.assertEqual(relayed, [
            ("worker 1 pid 1000", "[-] one"),
            ("worker 1 pid 1000", "oops {not a format}"),
            ("worker 1 pid 1000", "[-] two"),
            ("worker 1 pid 1000", "[-] three"),
        ])


class WorkerSideTests(unittest.SynchronousTestCase):
    """
    What runs in a worker: the inherited endpoints, the watch on the
    parent, the log format.
    """

    def test_inheritedFormat(self):
        """
        L{_workers.format_inherited} and L{_workers.parse_inherited} agree.
        """
        text = _workers.format_inherited(["INET", "INET6", "UNIX"])
        self.assertEqual(text, "3:INET,4:INET6,5:UNIX")
        self.assertEqual(_workers.parse_inherited(text),
                         [(3, socket.AF_INET), (4, socket.AF_INET6), (5, socket.AF_UNIX)])
        for bad in ("", "3", "x:INET", "3:INET,", "3:IPX"):
            self.assertRaises(ValueError, _workers.parse_inherited, bad)

    def listening(self):
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen(5)
        return os.dup(listening.fileno())

    def test_tls(self):
        """
        For an C{ssl:} description the adopted port's factory is the
        server's factory wrapped in a C{TLSMemoryBIOFactory} with the
        description's certificate; a C{tcp:} one is adopted as it is.
        """
        from twisted.internet.endpoints import quoteStringArgument
        from twisted.protocols.tls import TLSMemoryBIOFactory

        from tests.test_interop_tls import make_self_signed

        key, cert = make_self_signed(os.path.abspath(self.mktemp()))
        description = "ssl:8443:privateKey=%s:certKey=%s" % (
            quoteStringArgument(key), quoteStringArgument(cert))
        self.assertIsNotNone(_workers.tls_context_factory(description))
        self.assertIsNone(_workers.tls_context_factory("tcp:8000"))
        self.assertIsNone(_workers.tls_context_factory("systemd:domain=INET:index=0"))

        reactor = MemoryReactor()
        factory = Factory()
        fd = self.listening()
        endpoint = _workers.InheritedEndpoint(reactor, description, fd, socket.AF_INET)
        self.successResultOf(endpoint.listen(factory))
        [(adopted, family, tls)] = reactor.adoptedPorts
        self.assertEqual((adopted, family), (fd, socket.AF_INET))
        self.assertIsInstance(tls, TLSMemoryBIOFactory)
        self.assertIs(tls.wrappedFactory, factory)

        fd = self.listening()
        _workers.InheritedEndpoint(reactor, "tcp:8000", fd, socket.AF_INET).listen(factory)
        self.assertEqual(reactor.adoptedPorts[1], (fd, socket.AF_INET, factory))

    def test_badCertificate(self):
        """
        An C{ssl:} description whose certificate cannot be read fails the
        listening; the descriptor is left alone.
        """
        fd = self.listening()
        self.addCleanup(os.close, fd)
        endpoint = _workers.InheritedEndpoint(
            MemoryReactor(), "ssl:8443:privateKey=/nonexistent.pem", fd, socket.AF_INET)
        self.failureResultOf(endpoint.listen(Factory()))

    def test_parentWatch(self):
        """
        L{_workers.ParentWatch} moves the worker to a process group of its
        own and stops the reactor when the parent's end of the pipe
        closes (not before, and not once the service stopped).
        """
        groups = []
        self.patch(os, "setpgid", lambda pid, pgid: groups.append((pid, pgid)))
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        reactor = running(MemoryReactor())
        watch = _workers.ParentWatch(reactor, read)
        watch.startService()
        self.assertEqual(groups, [(0, 0)])
        [pipe] = reactor.getReaders()
        self.assertEqual(pipe.fileno(), read)
        self.assertIsNone(pipe.doRead())  # nothing to read yet
        os.write(write, b"x")
        self.assertIsNone(pipe.doRead())
        os.close(write)
        reason = pipe.doRead()
        self.assertIsInstance(reason, error.ConnectionDone)
        reactor.removeReader(pipe)
        pipe.connectionLost(Failure(reason))
        self.assertFalse(reactor.running)
        self.assertTrue(reactor.hasStopped)
        watch.stopService()

    def test_stopSignalsIgnored(self):
        """
        Once a worker is stopping, SIGTERM and SIGINT are ignored: the
        worker stops once, whoever signals it again.
        """
        self.patch(os, "setpgid", lambda pid, pgid: None)
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        self.addCleanup(os.close, write)
        reactor = MemoryReactor()
        _workers.ParentWatch(reactor, read).startService()
        [(trigger, args, kwargs)] = reactor.triggers["before"]["shutdown"]
        handlers = []
        self.patch(signal, "signal", lambda number, handler: handlers.append((number, handler)))
        trigger(*args, **kwargs)
        self.assertEqual(handlers, [(signal.SIGTERM, signal.SIG_IGN),
                                    (signal.SIGINT, signal.SIG_IGN)])

    def test_logObserver(self):
        """
        A worker logs C{"[system] message"} lines, without timestamps.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        observer = _workers.worker_log_observer()
        observer({"log_format": "hello {who}", "who": "parent", "log_system": "sys",
                  "log_time": 0})
        self.assertEqual(out.getvalue(), "[sys] hello parent\n")


if not hasattr(signal, "SIGKILL") or os.name != "posix":  # pragma: no cover
    WorkersTests.skip = "needs POSIX signals and descriptor passing"
