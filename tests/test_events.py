"""
Tests for L{scserver._events}: on/once/off/listeners, and handler errors.
"""

from twisted.trial.unittest import SynchronousTestCase

from scserver._events import EventEmitter


class EventEmitterTests(SynchronousTestCase):
    def setUp(self):
        self.emitter = EventEmitter()
        self.calls = []

    def test_onInOrder(self):
        self.emitter.on("e", lambda x: self.calls.append(("first", x)))
        self.emitter.on("e", lambda x: self.calls.append(("second", x)))
        self.assertTrue(self.emitter._emit("e", 1))
        self.assertFalse(self.emitter._emit("other", 1))
        self.assertEqual(self.calls, [("first", 1), ("second", 1)])

    def test_once(self):
        handler = self.emitter.once("e", self.calls.append)
        self.assertEqual(self.emitter.listeners("e"), [self.calls.append])
        self.emitter._emit("e", 1)
        self.emitter._emit("e", 2)
        self.assertEqual(self.calls, [1])
        self.assertEqual(self.emitter.listeners("e"), [])
        self.assertIsNotNone(handler)

    def test_offOneOnceHandler(self):
        self.emitter.once("e", self.calls.append)
        self.emitter.off("e", self.calls.append)
        self.emitter._emit("e", 1)
        self.assertEqual(self.calls, [])

    def test_offForms(self):
        first, second = [], []
        self.emitter.on("a", first.append)
        self.emitter.on("a", second.append)
        self.emitter.on("b", first.append)
        self.emitter.off("a", first.append)
        self.assertEqual(self.emitter.listeners("a"), [second.append])
        self.emitter.off("a")
        self.assertEqual(self.emitter.listeners("a"), [])
        self.emitter.off()
        self.assertEqual(self.emitter.listeners("b"), [])
        self.emitter.off("missing", first.append)

    def test_handlerErrorIsLoggedAndOthersRun(self):
        def broken(x):
            raise ValueError("bug")

        self.emitter.on("e", broken)
        self.emitter.on("e", self.calls.append)
        self.emitter._emit("e", 1)
        self.assertEqual(self.calls, [1])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
