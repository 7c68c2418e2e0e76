"""
Tests for L{scserver.exchange} and L{scserver.brokers.memory}.
"""

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from scserver import SCChannel, SCServer
from scserver.brokers.memory import MemoryBroker
from scserver.errors import BrokerError, InvalidArgumentsError
from scserver.interfaces import IBroker


@implementer(IBroker)
class ControlledBroker(MemoryBroker):
    """
    A memory broker whose subscribe calls wait for the test to fire them.
    """

    def __init__(self):
        MemoryBroker.__init__(self)
        self.pending = []
        self.calls = []

    def subscribe(self, channel):
        self.calls.append(("subscribe", channel))
        d = Deferred()
        self.pending.append((channel, d))
        d.addCallback(lambda _: self.subscriptions.add(channel))
        return d

    def unsubscribe(self, channel):
        self.calls.append(("unsubscribe", channel))
        return MemoryBroker.unsubscribe(self, channel)


class FailingBroker(MemoryBroker):
    """A memory broker that refuses every subscription."""

    def subscribe(self, channel):
        return fail(BrokerError("no subscriptions today"))


def make_server(broker=None):
    server = SCServer(reactor=Clock(), auth_key="k", broker=broker)
    server.startService()
    return server


class MemoryBrokerTests(SynchronousTestCase):
    def test_interface(self):
        self.assertTrue(verifyObject(IBroker, MemoryBroker()))

    def test_deliversOnlySubscribed(self):
        delivered = []
        broker = MemoryBroker()
        broker.start(lambda channel, data: delivered.append((channel, data)))
        broker.subscribe("a")
        broker.publish("a", 1)
        broker.publish("b", 2)
        broker.unsubscribe("a")
        broker.publish("a", 3)
        self.assertEqual(delivered, [("a", 1)])

    def test_publishBeforeStart(self):
        self.assertRaises(BrokerError, MemoryBroker().publish, "a", 1)


class ExchangeTests(SynchronousTestCase):
    def setUp(self):
        self.server = make_server()
        self.exchange = self.server.exchange

    def test_subscribeAndWatch(self):
        channel = self.exchange.subscribe("news")
        self.assertIsInstance(channel, SCChannel)
        self.assertEqual(channel.state, SCChannel.SUBSCRIBED)
        got = []
        channel.watch(got.append)
        d = self.exchange.publish("news", {"n": 1})
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(got, [{"n": 1}])
        self.assertEqual(self.exchange.subscriptions(), ["news"])
        self.assertTrue(self.exchange.is_subscribed("news"))
        self.assertIn("news", self.server.broker.subscriptions)

    def test_channelStartsUnsubscribed(self):
        channel = self.exchange.channel("later")
        got = []
        channel.watch(got.append)
        self.assertEqual(channel.state, SCChannel.UNSUBSCRIBED)
        self.exchange.publish("later", 1)
        self.assertEqual(got, [])
        self.assertIs(self.successResultOf(channel.subscribe()), channel)
        channel.publish(2)
        self.assertEqual(got, [2])
        self.assertIs(self.exchange.channel("later"), channel)

    def test_unsubscribeKeepsWatchers(self):
        channel = self.exchange.subscribe("a")
        got = []
        channel.watch(got.append)
        events = []
        channel.on("unsubscribe", events.append)
        channel.unsubscribe()
        self.exchange.publish("a", 1)
        self.assertEqual(got, [])
        self.assertEqual(events, ["a"])
        self.assertEqual(channel.watchers(), [got.append])
        self.assertNotIn("a", self.server.broker.subscriptions)
        channel.subscribe()
        self.exchange.publish("a", 2)
        self.assertEqual(got, [2])

    def test_unwatch(self):
        channel = self.exchange.subscribe("a")
        first, second = [], []
        channel.watch(first.append)
        channel.watch(second.append)
        channel.unwatch(first.append)
        channel.publish(1)
        channel.unwatch()
        channel.publish(2)
        self.assertEqual((first, second), ([], [1]))

    def test_destroyChannel(self):
        channel = self.exchange.subscribe("a")
        got = []
        channel.watch(got.append)
        self.exchange.destroy_channel("a")
        self.exchange.publish("a", 1)
        self.assertEqual(got, [])
        self.assertEqual(self.exchange.subscriptions(), [])
        self.assertIsNot(self.exchange.channel("a"), channel)
        self.assertNotIn("a", self.server.broker.subscriptions)
        # Destroying an unknown channel is harmless.
        self.exchange.destroy_channel("nothing")

    def test_watcherErrorDoesNotStopOthers(self):
        channel = self.exchange.subscribe("a")
        got = []

        def broken(data):
            raise ValueError("watcher bug")

        channel.watch(broken)
        channel.watch(got.append)
        channel.publish(1)
        self.assertEqual(got, [1])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_badChannelNames(self):
        self.failureResultOf(self.exchange.publish(None, 1), InvalidArgumentsError)
        self.assertRaises(InvalidArgumentsError, self.exchange.channel, 12)


class BrokerInterestTests(SynchronousTestCase):
    """
    The exchange subscribes the broker once per channel per process and
    unsubscribes it when the last local subscriber leaves.
    """

    def test_oncePerChannel(self):
        broker = ControlledBroker()
        server = make_server(broker)
        exchange = server.exchange
        first = exchange.subscribe("a")
        second_wait = exchange._acquire("a")
        self.assertEqual(broker.calls, [("subscribe", "a")])
        self.assertEqual(first.state, SCChannel.PENDING)
        self.assertNoResult(second_wait)
        broker.pending[0][1].callback(None)
        self.assertEqual(first.state, SCChannel.SUBSCRIBED)
        self.successResultOf(second_wait)
        exchange._release("a")
        self.assertEqual(broker.calls, [("subscribe", "a")])
        first.unsubscribe()
        self.assertEqual(broker.calls, [("subscribe", "a"), ("unsubscribe", "a")])

    def test_releaseWhilePending(self):
        broker = ControlledBroker()
        server = make_server(broker)
        channel = server.exchange.subscribe("a")
        channel.unsubscribe()
        self.assertEqual(broker.calls, [("subscribe", "a")])
        broker.pending[0][1].callback(None)
        self.assertEqual(broker.calls, [("subscribe", "a"), ("unsubscribe", "a")])
        self.assertEqual(channel.state, SCChannel.UNSUBSCRIBED)
        self.assertNotIn("a", broker.subscriptions)

    def test_subscribeFailure(self):
        server = make_server(FailingBroker())
        channel = server.exchange.channel("a")
        self.failureResultOf(channel.subscribe(), BrokerError)
        self.assertEqual(channel.state, SCChannel.UNSUBSCRIBED)
        self.assertEqual(server.exchange._broker_channels, {})


class PublicationTests(SynchronousTestCase):
    """
    The fan-out: a L{scserver.exchange.Publication} is encoded once per
    codec, and one codec that cannot encode it costs only its own sockets
    their copy.
    """

    def test_encodingErrorSkipsOnlyThatCodec(self):
        """
        A publication one codec cannot encode still reaches the sockets on
        the other codec, before and after them; the warning comes once.
        (The fan-out used to stop at the first encoding error.)
        """
        from scserver.codec import JSONCodec
        from scserver.testing import connect, make_server

        class Refusing(JSONCodec):
            def encode(self, obj):
                if type(obj) is dict and obj.get("event") == "#publish":
                    raise ValueError("cannot encode this publication")
                return JSONCodec.encode(self, obj)

        server = make_server()
        warnings = []
        server.on("warning", warnings.append)
        conns = [connect(server)]
        server.set_codec_engine(Refusing())
        conns += [connect(server), connect(server)]
        server.set_codec_engine(JSONCodec())
        conns.append(connect(server))
        for conn in conns:
            conn.handshake()
            self.successResultOf(conn.subscribe("news"))
            conn.pop_sent()
        self.successResultOf(server.exchange.publish("news", "hello"))
        got = [[p for p in conn.pop_sent() if type(p) is dict] for conn in conns]
        expected = [{"event": "#publish", "data": {"channel": "news", "data": "hello"}}]
        self.assertEqual(got, [expected, [], [], expected])
        self.assertEqual([str(w) for w in warnings], ["cannot encode this publication"])

    def test_framedOncePerCodec(self):
        """Every socket on one codec is given the same prepared message."""
        from scserver.exchange import Publication

        prepared = []

        def prepare(payload):
            prepared.append(payload)
            return object()

        class Codec:
            def encode(self, obj):
                return "x"

        publication = Publication("news", 1, prepare, lambda e: None)
        codec, other = Codec(), Codec()
        first = publication.frame(codec)
        self.assertIs(publication.frame(codec), first)
        self.assertIsNot(publication.frame(other), first)
        self.assertEqual(prepared, ["x", "x"])
