"""
The publish path: L{scserver.exchange.Exchange.publish_now}, a client's
C{#publish} answered without Deferred machinery when the broker accepts at
once, and the per-delivery L{scserver.exchange.Publication} framing.
"""

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from scserver.brokers.memory import MemoryBroker
from scserver.errors import BrokerError, InvalidActionError, InvalidArgumentsError
from scserver.exchange import Publication
from scserver.testing import connect, make_server
from tests._helpers import publications


class Sealed(Deferred):
    """A Deferred that records every callback added to it."""

    def __init__(self, touched):
        Deferred.__init__(self)
        self.touched = touched

    def addCallbacks(self, *args, **kwargs):
        self.touched.append("addCallbacks")
        return Deferred.addCallbacks(self, *args, **kwargs)

    def addCallback(self, *args, **kwargs):
        self.touched.append("addCallback")
        return Deferred.addCallback(self, *args, **kwargs)

    def addErrback(self, *args, **kwargs):
        self.touched.append("addErrback")
        return Deferred.addErrback(self, *args, **kwargs)

    def addBoth(self, *args, **kwargs):
        self.touched.append("addBoth")
        return Deferred.addBoth(self, *args, **kwargs)


class ScriptedBroker(MemoryBroker):
    """
    A memory broker (it delivers) whose C{publish} then returns what
    C{self.result()} makes, or raises it when it is an exception.
    """

    def __init__(self, result):
        MemoryBroker.__init__(self)
        self.result = result
        self.published = []

    def publish(self, channel, data):
        MemoryBroker.publish(self, channel, data)
        self.published.append((channel, data))
        outcome = self.result()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


class PublishNowTests(SynchronousTestCase):
    """L{Exchange.publish_now} against brokers of every kind of answer."""

    def exchange_with(self, result):
        self.broker = ScriptedBroker(result)
        self.server = make_server(broker=self.broker)
        self.server.startService()
        self.got = []
        self.server.exchange.watch("news", self.got.append)
        self.server.exchange.subscribe("news")
        return self.server.exchange

    def test_memoryBrokerAcceptsAtOnce(self):
        """The in-process broker delivers inside the call; no Deferred comes back."""
        server = make_server()
        server.startService()
        got = []
        server.exchange.watch("news", got.append)
        server.exchange.subscribe("news")
        self.assertIsNone(server.exchange.publish_now("news", {"n": 1}))
        self.assertEqual(got, [{"n": 1}])

    def test_firedSuccess(self):
        exchange = self.exchange_with(lambda: succeed("ignored"))
        self.assertIsNone(exchange.publish_now("news", 1))
        self.assertEqual(self.got, [1])

    def test_plainValue(self):
        """A broker returning a plain value accepted it (as maybeDeferred has it)."""
        exchange = self.exchange_with(lambda: 42)
        self.assertIsNone(exchange.publish_now("news", 1))

    def test_pending(self):
        """A pending Deferred is handed back as it is."""
        pending = Deferred()
        exchange = self.exchange_with(lambda: pending)
        self.assertIs(exchange.publish_now("news", 1), pending)

    def test_chained(self):
        """A fired Deferred waiting on another one is not taken as accepted."""
        inner = Deferred()
        outer = succeed(None)
        outer.addCallback(lambda _: inner)
        exchange = self.exchange_with(lambda: outer)
        d = exchange.publish_now("news", 1)
        self.assertIs(d, outer)
        self.assertNoResult(d)
        inner.callback("done")
        self.assertEqual(self.successResultOf(d), "done")

    def test_paused(self):
        """A fired Deferred that is paused is handed back, not taken as accepted."""
        paused = succeed(None)
        paused.pause()
        exchange = self.exchange_with(lambda: paused)
        d = exchange.publish_now("news", 1)
        self.assertIs(d, paused)
        paused.unpause()
        self.assertIsNone(self.successResultOf(d))

    def test_failedDeferred(self):
        exchange = self.exchange_with(lambda: fail(BrokerError("down")))
        failure = self.failureResultOf(exchange.publish_now("news", 1), BrokerError)
        self.assertEqual(failure.getErrorMessage(), "down")

    def test_failureValue(self):
        exchange = self.exchange_with(lambda: Failure(BrokerError("down")))
        self.failureResultOf(exchange.publish_now("news", 1), BrokerError)

    def test_raises(self):
        exchange = self.exchange_with(lambda: BrokerError("raised"))
        failure = self.failureResultOf(exchange.publish_now("news", 1), BrokerError)
        self.assertEqual(failure.getErrorMessage(), "raised")

    def test_coroutine(self):
        """An C{async def} publish is run as maybeDeferred would."""
        pending = Deferred()

        async def publish():
            return await pending

        exchange = self.exchange_with(publish)
        d = exchange.publish_now("news", 1)
        self.assertIsInstance(d, Deferred)
        self.assertNoResult(d)
        pending.callback("later")
        self.assertEqual(self.successResultOf(d), "later")

    def test_invalidChannel(self):
        exchange = self.exchange_with(lambda: None)
        self.failureResultOf(exchange.publish_now(12, 1), InvalidArgumentsError)
        self.assertEqual(self.broker.published, [])

    def test_historyChannel(self):
        """A channel with history takes the history store's path (a Deferred)."""
        server = make_server()
        server.startService()
        server.exchange.configure_channel("kept", 10)
        got = []
        server.exchange.watch("kept", got.append)
        server.exchange.subscribe("kept")
        d = server.exchange.publish_now("kept", 1)
        self.assertIsInstance(d, Deferred)
        self.successResultOf(d)
        self.assertEqual(got, [1])
        page = self.successResultOf(server.exchange.history("kept"))
        self.assertEqual([data for _, data in page.publications], [1])
        # Other channels of the same exchange keep the direct path.
        server.exchange.subscribe("plain")
        self.assertIsNone(server.exchange.publish_now("plain", 2))


class ClientPublishTests(SynchronousTestCase):
    """A client's C{#publish}, through L{scserver.testing} connections."""

    def open(self, broker=None, **options):
        self.server = make_server(broker=broker, **options)
        self.server.startService()
        self.subscriber = connect(self.server)
        self.subscriber.handshake()
        self.subscriber.subscribe("news")
        self.publisher = connect(self.server)
        self.publisher.handshake()
        self.subscriber.pop_sent()
        self.publisher.pop_sent()

    def test_noCallbacksWhenAcceptedAtOnce(self):
        """
        A broker answering with a fired Deferred: the socket adds no
        callback to it, and acks after the delivery.
        """
        touched = []

        def sealed():
            d = Sealed(touched)
            d.callback(None)
            return d

        self.open(ScriptedBroker(sealed))
        cid = self.publisher.emit("#publish", {"channel": "news", "data": 1}, cid=True)
        self.assertEqual(touched, [])
        self.assertEqual(publications(self.subscriber), [1])
        self.assertEqual(self.publisher.pop_sent(), [{"rid": cid}])
        self.assertEqual(self.server.stats.publishes, 1)

    def test_ackAfterDelivery(self):
        """With the memory broker, the delivery is written before the ack."""
        self.open()
        self.publisher.subscribe("news")
        self.publisher.pop_sent()
        cid = self.publisher.emit("#publish", {"channel": "news", "data": 2}, cid=True)
        self.assertEqual(self.publisher.pop_sent(), [
            {"event": "#publish", "data": {"channel": "news", "data": 2}}, {"rid": cid}])

    def test_publishEvent(self):
        """The socket's C{'#publish'} event follows the ack."""
        self.open()
        events = []
        self.publisher.socket.on("#publish", events.append)
        self.publisher.emit("#publish", {"channel": "news", "data": 3}, cid=True)
        self.assertEqual(events, [{"channel": "news", "data": 3}])

    def test_pendingBrokerAcksLater(self):
        pending = Deferred()
        self.open(ScriptedBroker(lambda: pending))
        cid = self.publisher.emit("#publish", {"channel": "news", "data": 4}, cid=True)
        self.assertEqual(publications(self.subscriber), [4])
        self.assertIsNone(self.publisher.reply_to(cid))
        self.assertEqual(self.server.stats.publishes, 0)
        pending.callback(None)
        self.assertEqual(self.publisher.reply_to(cid), {"rid": cid})
        self.assertEqual(self.server.stats.publishes, 1)

    def test_brokerFailure(self):
        """A broker failure is answered with a BrokerError and counted."""
        self.open(ScriptedBroker(lambda: fail(BrokerError("no room"))))
        cid = self.publisher.emit("#publish", {"channel": "news", "data": 5}, cid=True)
        reply = self.publisher.reply_to(cid)
        self.assertEqual(reply["error"]["name"], "BrokerError")
        self.assertEqual(reply["error"]["message"], "no room")
        self.assertEqual(self.server.stats.broker_errors, 1)
        self.assertEqual(self.server.stats.publishes, 0)

    def test_brokerRaises(self):
        self.open(ScriptedBroker(lambda: BrokerError("raised")))
        cid = self.publisher.emit("#publish", {"channel": "news", "data": 6}, cid=True)
        reply = self.publisher.reply_to(cid)
        self.assertEqual(reply["error"]["name"], "BrokerError")
        self.assertEqual(reply["error"]["message"], "raised")
        self.assertEqual(self.publisher.state, "open")

    def test_ackDataFromMiddleware(self):
        """publishIn middleware (a Deferred chain) still sets the ack data."""
        self.open()

        def publish_in(req, next):
            req.ack_data = {"seen": req.data}
            next()

        self.server.add_middleware(self.server.MIDDLEWARE_PUBLISH_IN, publish_in)
        cid = self.publisher.emit("#publish", {"channel": "news", "data": 7}, cid=True)
        self.assertEqual(self.publisher.reply_to(cid), {"rid": cid, "data": {"seen": 7}})
        self.assertEqual(publications(self.subscriber), [7])

    def test_ackDataReadWhenAcked(self):
        """
        With an asynchronous broker, the ack carries the request's
        C{ack_data} and the C{'#publish'} event its C{data} as they are
        when the broker answers.
        """
        pending = Deferred()
        self.open(ScriptedBroker(lambda: pending))
        requests = []

        def publish_in(req, next):
            requests.append(req)
            req.ack_data = "early"
            next()

        self.server.add_middleware(self.server.MIDDLEWARE_PUBLISH_IN, publish_in)
        events = []
        self.publisher.socket.on("#publish", events.append)
        cid = self.publisher.emit("#publish", {"channel": "news", "data": 10}, cid=True)
        self.assertIsNone(self.publisher.reply_to(cid))
        requests[0].ack_data = "late"
        requests[0].data = "changed"
        pending.callback(None)
        self.assertEqual(self.publisher.reply_to(cid), {"rid": cid, "data": "late"})
        self.assertEqual(events, [{"channel": "news", "data": "changed"}])

    def test_middlewareBlocks(self):
        """A blocking publishIn middleware stops the publication."""
        self.open()
        self.server.add_middleware(self.server.MIDDLEWARE_PUBLISH_IN,
                                   lambda req, next: next(InvalidActionError("no")))
        cid = self.publisher.emit("#publish", {"channel": "news", "data": 11}, cid=True)
        self.assertEqual(self.publisher.reply_to(cid)["error"]["message"], "no")
        self.assertEqual(publications(self.subscriber), [])
        self.assertEqual(self.server.stats.publishes, 0)

    def test_middlewareRemoved(self):
        """Once the last publishIn middleware is removed, the direct path is taken."""
        self.open()
        seen = []

        def publish_in(req, next):
            seen.append(req.data)
            next()

        self.server.add_middleware(self.server.MIDDLEWARE_PUBLISH_IN, publish_in)
        self.publisher.emit("#publish", {"channel": "news", "data": 12}, cid=True)
        self.server.middleware.remove(self.server.MIDDLEWARE_PUBLISH_IN, publish_in)
        cid = self.publisher.emit("#publish", {"channel": "news", "data": 13}, cid=True)
        self.assertEqual(self.publisher.reply_to(cid), {"rid": cid})
        self.assertEqual(seen, [12])
        self.assertEqual(publications(self.subscriber), [12, 13])

    def test_middlewareChannelChecked(self):
        """A channel a publishIn middleware made invalid is still refused."""
        self.open()

        def publish_in(req, next):
            req.channel = "#scserver/internal"
            next()

        self.server.add_middleware(self.server.MIDDLEWARE_PUBLISH_IN, publish_in)
        cid = self.publisher.emit("#publish", {"channel": "news", "data": 8}, cid=True)
        reply = self.publisher.reply_to(cid)
        self.assertEqual(reply["error"]["name"], "InvalidActionError")
        self.assertEqual(publications(self.subscriber), [])

    def test_invalidChannelWithoutMiddleware(self):
        self.open()
        cid = self.publisher.emit("#publish", {"channel": "#scserver/internal", "data": 9}, cid=True)
        self.assertEqual(self.publisher.reply_to(cid)["error"]["name"],
                         InvalidActionError.__name__)


class PublicationFrameTests(SynchronousTestCase):
    """L{Publication.frame}: once per codec, the first without a look-up."""

    def setUp(self):
        self.prepared = []
        self.warnings = []

    def prepare(self, payload):
        self.prepared.append(payload)
        return ("frame", payload)

    def codec(self, name, fails=False):
        class Codec:
            def encode(self, obj):
                if fails:
                    raise ValueError(name)
                return "{}:{}".format(name, obj["data"]["data"])
        return Codec()

    def test_oneCodec(self):
        publication = Publication("news", 1, self.prepare, self.warnings.append)
        codec = self.codec("a")
        self.assertEqual(publication.frame(codec), ("frame", "a:1"))
        self.assertIs(publication.frame(codec), publication.frame(codec))
        self.assertEqual(self.prepared, ["a:1"])

    def test_alternatingCodecs(self):
        """Going back to an earlier codec reuses its frame."""
        publication = Publication("news", 1, self.prepare, self.warnings.append)
        a, b = self.codec("a"), self.codec("b")
        first = publication.frame(a)
        second = publication.frame(b)
        self.assertIs(publication.frame(a), first)
        self.assertIs(publication.frame(b), second)
        self.assertEqual(self.prepared, ["a:1", "b:1"])

    def test_firstCodecFails(self):
        """A codec that cannot encode gets None, once warned, and is remembered."""
        publication = Publication("news", 1, self.prepare, self.warnings.append)
        bad, good = self.codec("bad", fails=True), self.codec("good")
        self.assertIsNone(publication.frame(bad))
        self.assertEqual(publication.frame(good), ("frame", "good:1"))
        self.assertIsNone(publication.frame(bad))
        self.assertEqual([str(w) for w in self.warnings], ["bad"])
        self.assertEqual(self.prepared, ["good:1"])
