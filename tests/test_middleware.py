"""
Tests for L{scserver.middleware.MiddlewareChain}: the semantics of C{next}.
"""

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from scserver import SCServer
from scserver.errors import (
    InvalidActionError,
    InvalidArgumentsError,
    SCError,
    SilentMiddlewareBlockedError,
    UnknownError,
)
from scserver.middleware import (
    MIDDLEWARE_EMIT,
    MIDDLEWARE_HANDSHAKE_SC,
    MIDDLEWARE_TYPES,
    Blocked,
    MiddlewareChain,
    Request,
)


class CustomError(SCError):
    """An application's error: it blocks with itself, raised or not."""


class ChainTests(SynchronousTestCase):
    def setUp(self):
        self.warnings = []
        self.chain = MiddlewareChain(self.warnings.append)
        self.req = Request(MIDDLEWARE_EMIT, event="e", data=1)

    def run_chain(self):
        return self.chain.run(MIDDLEWARE_EMIT, self.req)

    def test_types(self):
        self.assertEqual(set(MIDDLEWARE_TYPES), {
            "handshakeWS", "handshakeSC", "authenticate", "subscribe",
            "publishIn", "publishOut", "emit", "presence"})
        for name in MIDDLEWARE_TYPES:
            self.assertEqual(getattr(SCServer, "MIDDLEWARE_" + {
                "handshakeWS": "HANDSHAKE_WS", "handshakeSC": "HANDSHAKE_SC",
                "authenticate": "AUTHENTICATE", "subscribe": "SUBSCRIBE",
                "publishIn": "PUBLISH_IN", "publishOut": "PUBLISH_OUT",
                "emit": "EMIT", "presence": "PRESENCE"}[name]), name)

    def test_unknownType(self):
        self.assertRaises(InvalidArgumentsError, self.chain.add, "nope", lambda r, n: n())
        self.assertRaises(InvalidArgumentsError, self.chain.remove, "nope", lambda r, n: n())
        self.assertRaises(InvalidArgumentsError, self.chain.add, MIDDLEWARE_EMIT, 42)

    def test_noMiddlewareIsImmediate(self):
        self.assertIsNone(self.run_chain())
        self.assertFalse(self.chain.has(MIDDLEWARE_EMIT))

    def test_allowInOrder(self):
        calls = []

        def first(req, next):
            calls.append("first")
            req.data = 2
            next()

        def second(req, next):
            calls.append(("second", req.data))
            next()

        self.chain.add(MIDDLEWARE_EMIT, first)
        self.chain.add(MIDDLEWARE_EMIT, second)
        self.assertIsNone(self.successResultOf(self.run_chain()))
        self.assertEqual(calls, ["first", ("second", 2)])

    def test_blockStopsChain(self):
        calls = []
        error = CustomError("no")
        self.chain.add(MIDDLEWARE_EMIT, lambda req, next: next(error))
        self.chain.add(MIDDLEWARE_EMIT, lambda req, next: calls.append("second"))
        blocked = self.successResultOf(self.run_chain())
        self.assertIsInstance(blocked, Blocked)
        self.assertIs(blocked.error, error)
        self.assertFalse(blocked.silent)
        self.assertEqual(calls, [])
        self.assertEqual(self.warnings, [error])

    def test_stringError(self):
        self.chain.add(MIDDLEWARE_EMIT, lambda req, next: next("refused"))
        self.assertEqual(self.successResultOf(self.run_chain()).error, "refused")

    def test_silentTrue(self):
        self.chain.add(MIDDLEWARE_EMIT, lambda req, next: next(True))
        blocked = self.successResultOf(self.run_chain())
        self.assertIsInstance(blocked.error, SilentMiddlewareBlockedError)
        self.assertEqual(blocked.error.message, "Action was silently blocked by emit middleware")
        self.assertEqual(blocked.error.type, "emit")
        self.assertTrue(blocked.silent)
        self.assertEqual(self.warnings, [])

    def test_silentAttribute(self):
        error = CustomError("hush")
        error.silent = True
        self.chain.add(MIDDLEWARE_EMIT, lambda req, next: next(error))
        blocked = self.successResultOf(self.run_chain())
        self.assertIsInstance(blocked.error, SilentMiddlewareBlockedError)
        self.assertEqual(self.warnings, [])

    def test_warningsDisabled(self):
        self.chain.emit_warnings = False
        self.chain.add(MIDDLEWARE_EMIT, lambda req, next: next(CustomError("x")))
        self.assertIsInstance(self.successResultOf(self.run_chain()).error, CustomError)
        self.assertEqual(self.warnings, [])

    def test_secondValue(self):
        self.chain.add(MIDDLEWARE_HANDSHAKE_SC, lambda req, next: next(CustomError("x"), 4555))
        blocked = self.successResultOf(self.chain.run(MIDDLEWARE_HANDSHAKE_SC, self.req))
        self.assertEqual(blocked.value, 4555)

    def test_raiseBlocks(self):
        def broken(req, next):
            raise CustomError("raised")

        self.chain.add(MIDDLEWARE_EMIT, broken)
        self.assertIsInstance(self.successResultOf(self.run_chain()).error, CustomError)

    def test_unexpectedErrorsAreKeptFromTheClient(self):
        """
        A middleware that raises, or whose Deferred or coroutine fails,
        with an exception that is not a SocketCluster error (a bug) blocks
        with the generic C{UnknownError("Server error")}; the failure is
        logged, with its traceback.
        """
        async def coroutine(req, next):
            raise KeyError("password=hunter2")

        def raising(req, next):
            raise KeyError("password=hunter2")

        for fn in (raising, lambda req, next: fail(KeyError("password=hunter2")), coroutine):
            chain = MiddlewareChain(self.warnings.append)
            chain.add(MIDDLEWARE_EMIT, fn)
            error = self.successResultOf(chain.run(MIDDLEWARE_EMIT, self.req)).error
            self.assertIsInstance(error, UnknownError)
            self.assertEqual(str(error), "Server error")
            self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_deferredSuccessAllows(self):
        d = Deferred()
        self.chain.add(MIDDLEWARE_EMIT, lambda req, next: d)
        result = self.run_chain()
        self.assertNoResult(result)
        d.callback("ignored")
        self.assertIsNone(self.successResultOf(result))

    def test_deferredFailureBlocks(self):
        self.chain.add(MIDDLEWARE_EMIT, lambda req, next: fail(CustomError("async no")))
        self.assertIsInstance(self.successResultOf(self.run_chain()).error, CustomError)

    def test_coroutine(self):
        async def allow(req, next):
            req.data = "changed"

        async def block(req, next):
            raise CustomError("coroutine no")

        self.chain.add(MIDDLEWARE_EMIT, allow)
        self.assertIsNone(self.successResultOf(self.run_chain()))
        self.assertEqual(self.req.data, "changed")
        self.chain.add(MIDDLEWARE_EMIT, block)
        self.assertIsInstance(self.successResultOf(self.run_chain()).error, CustomError)

    def test_nextBeforeDeferredWins(self):
        def both(req, next):
            next(CustomError("first"))
            return succeed(None)

        self.chain.add(MIDDLEWARE_EMIT, both)
        self.assertIsInstance(self.successResultOf(self.run_chain()).error, CustomError)

    def test_nextTwiceWarns(self):
        def twice(req, next):
            next()
            next(CustomError("too late"))

        self.chain.add(MIDDLEWARE_EMIT, twice)
        self.assertIsNone(self.successResultOf(self.run_chain()))
        self.assertEqual(len(self.warnings), 1)
        self.assertIsInstance(self.warnings[0], InvalidActionError)
        self.assertEqual(self.warnings[0].message,
                         "Callback for emit middleware was already invoked")

    def test_falsyErrorsAllow(self):
        for value in (None, False, 0, ""):
            chain = MiddlewareChain(self.warnings.append)
            chain.add(MIDDLEWARE_EMIT, lambda req, next, value=value: next(value))
            self.assertIsNone(self.successResultOf(chain.run(MIDDLEWARE_EMIT, self.req)))

    def test_pendingUntilNext(self):
        saved = []
        self.chain.add(MIDDLEWARE_EMIT, lambda req, next: saved.append(next))
        result = self.run_chain()
        self.assertNoResult(result)
        saved[0]()
        self.assertIsNone(self.successResultOf(result))

    def test_remove(self):
        def block(req, next):
            next(CustomError("x"))

        self.chain.add(MIDDLEWARE_EMIT, block)
        self.chain.remove(MIDDLEWARE_EMIT, block)
        self.assertIsNone(self.run_chain())
        self.chain.remove(MIDDLEWARE_EMIT, block)
