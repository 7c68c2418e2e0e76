"""
Production hardening of errors: the shared generic error
(L{scserver.errors.server_error}) and the rate-limited logging of
unexpected failures (L{scserver._events.FailureLog}), on a L{Clock}.
"""

from twisted.internet.task import Clock
from twisted.logger import Logger, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from scserver import SCServer, errors
from scserver._events import FAILURE_LOG_LIMIT, FAILURE_LOG_PERIOD, FailureLog, failure_log_for
from scserver.testing import connect, make_server


class ServerErrorTests(SynchronousTestCase):
    def test_generic(self):
        error = errors.server_error()
        self.assertIsInstance(error, errors.UnknownError)
        self.assertEqual(errors.dehydrate_error(error),
                         {"message": "Server error", "name": "UnknownError"})
        self.assertIsNot(error, errors.server_error())


class FailureLogTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.log = Logger(namespace="tests.hardening")

    def fail_once(self, flog):
        try:
            raise RuntimeError("secret internals")
        except RuntimeError:
            return flog.failure(self.log, "boom")

    def suppressed(self):
        return [e for e in self.events if e.get("log_namespace") == "tests.hardening"
                and "count" in e]

    def test_limitPerWindow(self):
        flog = FailureLog(self.clock, limit=3, period=10)
        logged = [self.fail_once(flog) for _ in range(5)]
        self.assertEqual(logged, [True, True, True, False, False])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)
        self.assertEqual(self.suppressed(), [])
        self.clock.advance(10)
        [report] = self.suppressed()
        self.assertEqual(report["count"], 2)
        # A new window logs again.
        self.assertTrue(self.fail_once(flog))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_noReportWithoutSuppression(self):
        flog = FailureLog(self.clock, limit=3, period=10)
        self.fail_once(flog)
        self.flushLoggedErrors(RuntimeError)
        self.clock.advance(20)
        self.assertEqual(self.suppressed(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sharedPerClock(self):
        self.assertIs(failure_log_for(self.clock), failure_log_for(self.clock))
        self.assertIsNot(failure_log_for(self.clock), failure_log_for(Clock()))
        self.assertEqual((FAILURE_LOG_LIMIT, FAILURE_LOG_PERIOD),
                         (failure_log_for(self.clock).limit, failure_log_for(self.clock).period))


class SocketFloodTests(SynchronousTestCase):
    """A flood of continuation failures: generic replies, a bounded log."""

    def test_floodIsRateLimited(self):
        clock = Clock()
        server = make_server(clock, auth_key="k", ping_timeout_disabled=True)

        def later(req, next):
            clock.callLater(0, next)

        server.add_middleware(SCServer.MIDDLEWARE_EMIT, later)
        conn = connect(server)
        conn.handshake()
        conn.socket.on("chat", lambda data, respond: None)

        def boom(*args, **kwargs):
            raise RuntimeError("secret internals: postgres://user:pw@db/app")

        conn.socket._dispatch_event = boom
        cids = [conn.emit("chat", i, cid=True) for i in range(FAILURE_LOG_LIMIT + 5)]
        clock.advance(0)
        for cid in cids:
            self.assertEqual(conn.reply_to(cid)["error"],
                             {"message": "Server error", "name": "UnknownError"})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), FAILURE_LOG_LIMIT)


class AuthEngineFailureTests(SynchronousTestCase):
    """An auth engine that fails (not a token error) tells the client nothing of why."""

    def test_verify_raises(self):
        class BrokenEngine:
            def sign_token(self, payload, key, options):
                return "a.b.c"

            def verify_token(self, signed, key, options):
                raise RuntimeError("key store at redis://:hunter2@10.0.0.9 is down")

        server = make_server()
        server.set_auth_engine(BrokenEngine())
        conn = connect(server)
        status = conn.handshake("a.b.c")
        self.assertFalse(status["isAuthenticated"])
        self.assertEqual(status["authError"],
                         {"message": "The token could not be verified", "name": "AuthTokenError"})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
