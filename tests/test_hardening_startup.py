"""
Production hardening of C{twistd scserver}:

- the token keys can be given without showing in the process list
  (C{--auth-key @path}, C{--auth-key env:NAME}, the C{SCSERVER_AUTH_KEY}
  environment variable; C{env:NAME} for the PEM keys too), and reach the
  workers of C{--workers} through their environment, not their command
  line; a key shorter than 32 bytes is warned about at start-up;
- a start-up failure ends the process with a non-zero exit status and one
  log line: an endpoint that cannot be listened on (with and without
  C{--workers}), a broker not ready within C{--startup-timeout}.

The end-to-end tests run real C{twistd} processes (L{TwistdProcessMixin}),
with bounded waits.
"""

import os
import re
import socket

from twisted.internet import defer, error
from twisted.internet.defer import fail
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.trial import unittest
from zope.interface import implementer
from twisted.internet.interfaces import IStreamServerEndpoint

from scserver import _workers, tap
from scserver.options import OPTIONS

from tests._helpers import running
from tests.test_twistd import PORT_LINE, TwistdProcessMixin
from tests.test_workers import SHARED, WORKER_LISTENING

LONG_KEY = "hardening-test-auth-key-0123456789abcdefghij"


def parse(*args):
    config = tap.Options()
    config.parseOptions(list(args))
    return config


def _captured_log(test):
    events = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


class _Environment:
    """Patch C{os.environ} with a copy, without the variables under test."""

    def setUp(self):
        self.patch(os, "environ", dict(os.environ))
        for name in ("SCSERVER_AUTH_KEY", "SCSERVER_AUTH_PRIVATE_KEY",
                     "SCSERVER_AUTH_PUBLIC_KEY", "HARDENING_KEY", _workers.WORKER_FDS_ENV):
            os.environ.pop(name, None)


class AuthKeySourceTests(_Environment, unittest.SynchronousTestCase):
    """
    C{--auth-key} as C{@path}, C{env:NAME} or from C{SCSERVER_AUTH_KEY}.
    """

    def keyFile(self, content):
        path = FilePath(self.mktemp())
        path.setContent(content)
        return path.path

    def test_fromFile(self):
        """
        C{--auth-key @path} is the file's content without one trailing
        newline.
        """
        config = parse("--auth-key", "@" + self.keyFile(LONG_KEY.encode() + b"\n"))
        self.assertEqual(config["server_options"]["auth_key"], LONG_KEY)
        config = parse("--auth-key", "@" + self.keyFile(b"a key\n\n"))
        self.assertEqual(config["server_options"]["auth_key"], "a key\n")
        config = parse("--auth-key", "@" + self.keyFile(b"crlf\r\n"))
        self.assertEqual(config["server_options"]["auth_key"], "crlf")
        config = parse("--auth-key", "@" + self.keyFile(b"no newline"))
        self.assertEqual(config["server_options"]["auth_key"], "no newline")

    def test_fileErrors(self):
        """
        A missing or empty key file is a usage error naming the flag.
        """
        e = self.assertRaises(usage.UsageError, parse, "--auth-key", "@/nonexistent/key")
        self.assertIn("--auth-key @/nonexistent/key: cannot read /nonexistent/key", str(e))
        empty = self.keyFile(b"\n")
        e = self.assertRaises(usage.UsageError, parse, "--auth-key", "@" + empty)
        self.assertIn("is empty", str(e))

    def test_fromEnvironment(self):
        """
        C{--auth-key env:NAME} is the value of C{NAME}; an unset or empty
        variable is a usage error.
        """
        os.environ["HARDENING_KEY"] = LONG_KEY
        config = parse("--auth-key", "env:HARDENING_KEY")
        self.assertEqual(config["server_options"]["auth_key"], LONG_KEY)
        del os.environ["HARDENING_KEY"]
        e = self.assertRaises(usage.UsageError, parse, "--auth-key", "env:HARDENING_KEY")
        self.assertEqual(
            str(e), "--auth-key env:HARDENING_KEY: the environment variable HARDENING_KEY is"
            " not set")
        os.environ["HARDENING_KEY"] = ""
        e = self.assertRaises(usage.UsageError, parse, "--auth-key", "env:HARDENING_KEY")
        self.assertIn("HARDENING_KEY is empty", str(e))

    def test_defaultEnvironmentVariable(self):
        """
        Without C{--auth-key} (nor a key pair) the key is read from
        C{SCSERVER_AUTH_KEY}, when it is set and not empty; C{--auth-key}
        or a key pair wins over it.
        """
        self.assertNotIn("auth_key", parse()["server_options"])
        os.environ["SCSERVER_AUTH_KEY"] = ""
        self.assertNotIn("auth_key", parse()["server_options"])
        os.environ["SCSERVER_AUTH_KEY"] = LONG_KEY
        self.assertEqual(parse()["server_options"]["auth_key"], LONG_KEY)
        self.assertEqual(parse("--auth-key", "other")["server_options"]["auth_key"], "other")
        config = parse("--auth-private-key", "PRIVATE", "--auth-public-key", "PUBLIC")
        self.assertNotIn("auth_key", config["server_options"])

    def test_pemFromEnvironment(self):
        """
        The PEM keys take C{env:NAME} too.
        """
        os.environ["SCSERVER_AUTH_PRIVATE_KEY"] = "PRIVATE PEM"
        os.environ["HARDENING_KEY"] = "PUBLIC PEM"
        config = parse("--auth-private-key", "env:SCSERVER_AUTH_PRIVATE_KEY",
                       "--auth-public-key", "env:HARDENING_KEY")
        self.assertEqual(config["server_options"]["auth_private_key"], "PRIVATE PEM")
        self.assertEqual(config["server_options"]["auth_public_key"], "PUBLIC PEM")

    def test_documented(self):
        """
        The C{--help} text of C{--auth-key} names the forms.
        """
        option = [o for o in OPTIONS if o.name == "auth_key"][0]
        self.assertIn("@path", option.doc)
        self.assertIn("env:NAME", option.doc)


class WorkerKeyTests(_Environment, unittest.SynchronousTestCase):
    """
    With C{--workers}, a key given by file or environment variable reaches
    the workers in their environment, never on their command line.
    """

    SHARED = ("--workers", "2", "--broker", "tests.test_tap:FakeBroker")

    def test_keyFileNotOnCommandLine(self):
        path = FilePath(self.mktemp())
        path.setContent(LONG_KEY.encode() + b"\n")
        config = parse("--auth-key", "@" + path.path, *self.SHARED)
        arguments = tap.worker_arguments(config)
        self.assertNotIn(LONG_KEY, " ".join(arguments))
        self.assertIn("env:SCSERVER_AUTH_KEY", arguments)
        self.assertEqual(tap.worker_environment(config), {"SCSERVER_AUTH_KEY": LONG_KEY})

    def test_environmentKey(self):
        os.environ["HARDENING_KEY"] = LONG_KEY
        config = parse("--auth-key", "env:HARDENING_KEY", *self.SHARED)
        self.assertEqual(tap.worker_environment(config), {"SCSERVER_AUTH_KEY": LONG_KEY})
        self.assertNotIn(LONG_KEY, tap.worker_arguments(config))
        del os.environ["HARDENING_KEY"]
        os.environ["SCSERVER_AUTH_KEY"] = LONG_KEY
        config = parse(*self.SHARED)
        self.assertEqual(tap.worker_environment(config), {"SCSERVER_AUTH_KEY": LONG_KEY})
        self.assertIn("env:SCSERVER_AUTH_KEY", tap.worker_arguments(config))

    def test_pemKeys(self):
        private = FilePath(self.mktemp())
        private.setContent(b"PRIVATE PEM\n")
        os.environ["HARDENING_KEY"] = "PUBLIC PEM"
        config = parse("--auth-private-key", "@" + private.path,
                       "--auth-public-key", "env:HARDENING_KEY", *self.SHARED)
        self.assertEqual(tap.worker_environment(config), {
            "SCSERVER_AUTH_PRIVATE_KEY": "PRIVATE PEM\n",
            "SCSERVER_AUTH_PUBLIC_KEY": "PUBLIC PEM"})
        arguments = tap.worker_arguments(config)
        self.assertIn("env:SCSERVER_AUTH_PRIVATE_KEY", arguments)
        self.assertIn("env:SCSERVER_AUTH_PUBLIC_KEY", arguments)

    def test_inlineKeyAsGiven(self):
        """A key given inline is passed as it was (it is on the parent's command line)."""
        config = parse("--auth-key", LONG_KEY, *self.SHARED)
        self.assertEqual(tap.worker_environment(config), {})
        self.assertIn(LONG_KEY, tap.worker_arguments(config))

    def test_poolEnvironment(self):
        """
        The pool built for twistd gives its workers L{tap.worker_environment}.
        """
        from tests.test_workers import PoolReactor

        path = FilePath(self.mktemp())
        path.setContent(LONG_KEY.encode())
        config = parse("--auth-key", "@" + path.path, "--listen", "tcp:8001", *self.SHARED)
        reactor = PoolReactor()
        reactor.running = True
        service = tap.build_pool(config, reactor, executable="/usr/bin/python3")
        pool = service.getServiceNamed("workers")
        pool.handle_signals = False  # not in the test process
        self.assertEqual(pool.environment, {"SCSERVER_AUTH_KEY": LONG_KEY})
        service.privilegedStartService()
        service.startService()
        self.assertEqual(len(reactor.processes), 2)
        for process in reactor.processes:
            self.assertEqual(process.env["SCSERVER_AUTH_KEY"], LONG_KEY)
            self.assertNotIn(LONG_KEY, " ".join(process.argv))
        service.stopService()


class ShortKeyTests(_Environment, unittest.SynchronousTestCase):
    """
    A key shorter than 32 bytes is accepted (SocketCluster accepts any)
    but warned about.
    """

    def test_warns(self):
        events = _captured_log(self)
        self.assertTrue(tap._warn_short_key(parse("--auth-key", "testkey")))
        warnings = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["size"], 7)
        self.assertIn("INSECURE", warnings[0]["log_format"])

    def test_longEnough(self):
        events = _captured_log(self)
        self.assertFalse(tap._warn_short_key(parse("--auth-key", "k" * 32)))
        self.assertFalse(tap._warn_short_key(parse()))
        self.assertEqual([e for e in events if e.get("log_level") == LogLevel.warn], [])


@implementer(IStreamServerEndpoint)
class _Refusing:
    def listen(self, factory):
        return fail(CannotListenError("127.0.0.1", 8000, OSError(98, "Address already in use")))


class StartupFailureTests(_Environment, unittest.SynchronousTestCase):
    """
    L{tap.build_service}: a start-up failure is one critical log line and
    exit status 1.
    """

    def test_startupTimeoutOption(self):
        self.assertEqual(parse()["startup_timeout"], tap.DEFAULT_STARTUP_TIMEOUT)
        self.assertEqual(parse("--startup-timeout", "2.5")["startup_timeout"], 2.5)
        self.assertIsNone(parse("--startup-timeout", "0")["startup_timeout"])
        for bad in ("-1", "soon", "inf"):
            e = self.assertRaises(usage.UsageError, parse, "--startup-timeout", bad)
            self.assertIn("--startup-timeout {}: expected".format(bad), str(e))

    def test_cannotListenBeforeReactorRuns(self):
        """
        An endpoint that fails at once while twistd starts the services
        raises L{tap.StartupError}, after logging one line.
        """
        events = _captured_log(self)
        startup = tap._Startup(MemoryReactor())
        listener = tap._Listener(_Refusing(), object(), "tcp:8000", startup)
        e = self.assertRaises(tap.StartupError, listener.privilegedStartService)
        self.assertIn("Cannot listen on --listen tcp:8000: Couldn't listen on 127.0.0.1:8000",
                      str(e))
        critical = [e for e in events if e.get("log_level") == LogLevel.critical]
        self.assertEqual(len(critical), 1)
        self.assertTrue(startup.failed)

    def test_cannotListenWhileRunning(self):
        """
        Once the reactor runs, a listening failure stops it and the exit
        status is set to 1.
        """
        reactor = running(MemoryReactor())
        statuses = []
        startup = tap._Startup(reactor, statuses.append)
        listener = tap._Listener(_Refusing(), object(), "tcp:8000", startup)
        listener.privilegedStartService()
        self.assertTrue(reactor.hasStopped)
        self.assertEqual(statuses, [1])

    def test_brokerTimeout(self):
        """
        A server not ready C{--startup-timeout} seconds after the reactor
        started: the reactor is stopped with exit status 1; a ready one is
        left alone.
        """
        for ready, stopped in ((False, True), (True, False)):
            reactor = running(MemoryReactorClock())
            statuses = []
            server = type("Server", (), {"is_ready": ready})()
            deadline = tap._BrokerDeadline(reactor, server, 5, tap._Startup(reactor,
                                                                            statuses.append))
            deadline.startService()
            reactor.advance(4.9)
            self.assertFalse(reactor.hasStopped)
            reactor.advance(0.2)
            self.assertEqual(reactor.hasStopped, stopped)
            self.assertEqual(statuses, [1] if stopped else [])

    def test_setupFailureExitStatus(self):
        """
        A failed C{--app} setup stops the reactor with exit status 1.
        """
        reactor = running(MemoryReactor())
        statuses = []
        d = defer.Deferred()
        tap._SetupGate(d, reactor, tap._Startup(reactor, statuses.append))
        d.errback(RuntimeError("no database"))
        self.assertTrue(reactor.hasStopped)
        self.assertEqual(statuses, [1])
        self.flushLoggedErrors(RuntimeError)

    def test_workersBindFailure(self):
        """
        With C{--workers}, a socket that cannot be bound is one line and a
        L{tap.StartupError}.
        """
        events = _captured_log(self)
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        from twisted.internet import reactor

        config = parse("--workers", "2", "--broker", "tests.test_tap:FakeBroker",
                       "--auth-key", LONG_KEY, "--listen",
                       "tcp:%d:interface=127.0.0.1" % (port,))
        service = tap.build_pool(config, reactor)
        e = self.assertRaises(tap.StartupError, service.privilegedStartService)
        self.assertIn("Cannot start the workers: Couldn't listen on 127.0.0.1:%d" % (port,),
                      str(e))
        self.assertEqual(len([e for e in events if e.get("log_level") == LogLevel.critical]),
                         1)


def _taken_port(test):
    """A listening socket on 127.0.0.1 (closed in the cleanup); its port."""
    taken = socket.socket()
    test.addCleanup(taken.close)
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    return taken.getsockname()[1]


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class TwistdStartupTests(TwistdProcessMixin, unittest.TestCase):
    """
    Real C{twistd scserver} processes that cannot start exit non-zero with
    one clear line.
    """

    timeout = 120

    @defer.inlineCallbacks
    def assertFailsWith(self, process, pattern):
        reason = yield process.wait_ended(60)
        self.assertIsInstance(reason, error.ProcessTerminated, process.text)
        self.assertEqual(reason.exitCode, 1, process.text)
        self.assertIsNone(reason.signal, process.text)
        self.assertEqual(len(re.findall(pattern, process.text)), 1, process.text)
        self.assertNotIn("Traceback", process.text)
        self.assertNotIn("Unhandled", process.text)

    def test_portTaken(self):
        """
        A C{--listen} port in use: exit status 1, one line naming it.
        """
        port = _taken_port(self)
        process, _ = self.spawn("--listen", "tcp:%d:interface=127.0.0.1" % (port,),
                                "--auth-key", LONG_KEY)
        return self.assertFailsWith(process, re.escape(
            "Cannot listen on --listen tcp:%d:interface=127.0.0.1: Couldn't listen on"
            " 127.0.0.1:%d" % (port, port)))

    def test_secondPortTaken(self):
        """
        The second C{--listen} in use: the first is given up too.
        """
        port = _taken_port(self)
        process, _ = self.spawn("--listen", "tcp:0:interface=127.0.0.1",
                                "--listen", "tcp:%d:interface=127.0.0.1" % (port,),
                                "--auth-key", LONG_KEY)
        return self.assertFailsWith(process, re.escape(
            "Cannot listen on --listen tcp:%d:interface=127.0.0.1" % (port,)))

    def test_portTakenWithWorkers(self):
        """
        With C{--workers} the same: exit status 1, one line, no worker.
        """
        port = _taken_port(self)
        process, _ = self.spawn("--workers", "2",
                                "--listen", "tcp:%d:interface=127.0.0.1" % (port,), *SHARED)

        @defer.inlineCallbacks
        def check():
            yield self.assertFailsWith(process, re.escape(
                "Cannot start the workers: Couldn't listen on 127.0.0.1:%d" % (port,)))
            self.assertNotIn("Worker 1", process.text)

        return check()

    def test_brokerStartupTimeout(self):
        """
        A Redis broker that cannot be reached within C{--startup-timeout}:
        exit status 1 with one line.
        """
        process, _ = self.spawn("--listen", "tcp:0:interface=127.0.0.1",
                                "--auth-key", LONG_KEY, "--startup-timeout", "1",
                                "--broker", "redis://127.0.0.1:%d/0" % (_free_port(),))
        return self.assertFailsWith(process, re.escape(
            "The broker did not become ready within 1 s (--startup-timeout); exiting"))

    @defer.inlineCallbacks
    def test_shortKeyWarning(self):
        """
        A short C{--auth-key} is accepted, with one warning at start-up.
        """
        process, _ = self.spawn("--listen", "tcp:0:interface=127.0.0.1",
                                "--auth-key", "testkey")
        yield process.wait_for(PORT_LINE, 30)
        self.assertEqual(len(re.findall(r"INSECURE: --auth-key is 7 bytes long",
                                        process.text)), 1, process.text)

    @defer.inlineCallbacks
    def test_workersKeyFromFile(self):
        """
        C{--workers 2 --auth-key @path}: the workers start, and the key is
        on no worker's command line.
        """
        path = FilePath(self.mktemp())
        path.setContent(LONG_KEY.encode() + b"\n")
        shared = [a if a != SHARED[-1] else "@" + path.path for a in SHARED]
        process, _ = self.spawn("--workers", "2", "--listen", "tcp:0:interface=127.0.0.1",
                                *shared)
        yield process.wait_for(re.compile(
            WORKER_LISTENING.pattern + r"[\s\S]*" + WORKER_LISTENING.pattern), 30)
        pids = {int(pid) for pid in WORKER_LISTENING.findall(process.text)}
        self.assertEqual(len(pids), 2, process.text)
        for pid in pids:
            try:
                with open("/proc/%d/cmdline" % (pid,), "rb") as handle:
                    argv = handle.read().split(b"\0")
            except OSError:
                raise unittest.SkipTest("no /proc/PID/cmdline")
            self.assertNotIn(LONG_KEY.encode(), b" ".join(argv))
            self.assertIn(b"env:SCSERVER_AUTH_KEY", argv)
