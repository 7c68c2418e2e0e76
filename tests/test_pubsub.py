"""
Pub/sub through sockets: subscribe, publish, fan-out, kick out, limits,
batching and the publishOut copy, without a network (L{scserver.testing}).
"""

from twisted.trial.unittest import SynchronousTestCase

from scserver.codec import JSONCodec
from scserver.errors import BrokerError, InvalidActionError
from scserver.testing import connect, make_server
from tests._helpers import publications


class CountingCodec(JSONCodec):
    """A JSON codec that counts the publications it encodes."""

    def __init__(self):
        JSONCodec.__init__(self)
        self.publications = 0

    def encode(self, obj):
        if type(obj) is dict and obj.get("event") == "#publish":
            self.publications += 1
        return JSONCodec.encode(self, obj)


class FanOutTests(SynchronousTestCase):
    def test_encodedOnceForThousandSubscribers(self):
        """
        One publication to 1000 local subscribers is encoded once, and every
        subscriber receives it.
        """
        codec = CountingCodec()
        server = make_server(codec_engine=codec)
        conns = []
        for _ in range(1000):
            conn = connect(server)
            conn.handshake()
            self.assertIsNone(self.successResultOf(conn.subscribe("crowd")))
            conns.append(conn)
        codec.publications = 0
        self.successResultOf(server.exchange.publish("crowd", {"n": 1}))
        self.assertEqual(codec.publications, 1)
        for conn in conns:
            self.assertEqual(publications(conn), [{"n": 1}])

    def test_clientPublishEncodedOnce(self):
        codec = CountingCodec()
        server = make_server(codec_engine=codec)
        conns = [connect(server) for _ in range(20)]
        for conn in conns:
            conn.handshake()
            conn.subscribe("room")
        codec.publications = 0
        self.successResultOf(conns[0].publish("room", "hi"))
        # One encode is the fake client's own #publish packet; the server
        # encodes the publication once for its 20 recipients.
        self.assertEqual(codec.publications, 2)
        self.assertEqual([publications(c) for c in conns], [["hi"]] * 20)

    def test_encodedOncePerCodec(self):
        """
        Sockets keep the codec they connected with: after set_codec_engine()
        a publication is encoded once per codec in use.
        """
        from scserver.codec import MinBinCodec
        server = make_server(codec_engine=CountingCodec())
        old = [connect(server) for _ in range(3)]
        first_codec = server.codec
        server.set_codec_engine(MinBinCodec())
        new = [connect(server) for _ in range(3)]
        for conn in old + new:
            conn.handshake()
            conn.subscribe("mixed")
        first_codec.publications = 0
        self.successResultOf(server.exchange.publish("mixed", {"n": 1}))
        self.assertEqual(first_codec.publications, 1)
        for conn in old:
            self.assertIsInstance(conn.payloads[-1], str)
        for conn in new:
            self.assertIsInstance(conn.payloads[-1], bytes)
            self.assertEqual(MinBinCodec().decode(conn.payloads[-1]),
                             {"event": "#publish", "data": {"channel": "mixed", "data": {"n": 1}}})

    def test_orderPerPublisher(self):
        server = make_server()
        subscribers = [connect(server) for _ in range(50)]
        for conn in subscribers:
            conn.handshake()
            conn.subscribe("seq")
        publisher = connect(server)
        publisher.handshake()
        for n in range(100):
            publisher.publish("seq", n)
        for conn in subscribers:
            self.assertEqual(publications(conn), list(range(100)))

    def test_publishOutGetsACopyPerRecipient(self):
        """
        A publishOut middleware that changes C{req.data} changes it for that
        recipient only; a block skips only that recipient.
        """
        server = make_server()
        conns = [connect(server) for _ in range(3)]
        for conn in conns:
            conn.handshake()
            conn.subscribe("news")
        marked, blocked = conns[0].socket, conns[1].socket
        seen = []

        def publish_out(req, next):
            seen.append(req.socket)
            if req.socket is marked:
                req.data["mark"] = True
                next()
            elif req.socket is blocked:
                next(True)
            else:
                next()

        server.add_middleware(server.MIDDLEWARE_PUBLISH_OUT, publish_out)
        original = {"text": "hello"}
        self.successResultOf(server.exchange.publish("news", original))
        self.assertEqual(len(seen), 3)
        self.assertEqual(publications(conns[0]), [{"text": "hello", "mark": True}])
        self.assertEqual(publications(conns[1]), [])
        self.assertEqual(publications(conns[2]), [{"text": "hello"}])
        self.assertEqual(original, {"text": "hello"})


class SubscribeTests(SynchronousTestCase):
    def setUp(self):
        self.server = make_server()
        self.conn = connect(self.server)
        self.conn.handshake()
        self.socket = self.conn.socket

    def test_subscribeEvents(self):
        events = []
        self.server.on("subscription", lambda s, ch, opts: events.append(("server", s, ch, opts)))
        self.socket.on("subscribe", lambda ch, opts: events.append(("socket", ch, opts)))
        self.conn.subscribe("room", data={"key": "abc"})
        self.assertEqual(events, [
            ("socket", "room", {"channel": "room", "data": {"key": "abc"}}),
            ("server", self.socket, "room", {"channel": "room", "data": {"key": "abc"}}),
        ])
        self.assertEqual(self.socket.subscriptions(), ["room"])
        self.assertTrue(self.socket.is_subscribed("room"))
        self.assertIn("room", self.server.broker.subscriptions)

    def test_subscribeMiddlewareReplacesData(self):
        def subscribe(req, next):
            req.data = {"replaced": req.data}
            next()

        self.server.add_middleware(self.server.MIDDLEWARE_SUBSCRIBE, subscribe)
        events = []
        self.server.on("subscription", lambda s, ch, opts: events.append(opts))
        self.conn.subscribe("room", data=1)
        self.assertEqual(events, [{"channel": "room", "data": {"replaced": 1}}])

    def test_bareStringSubscribe(self):
        cid = self.conn.emit("#subscribe", "plain", cid=True)
        self.assertEqual(self.conn.reply_to(cid), {"rid": cid})
        self.assertTrue(self.socket.is_subscribed("plain"))

    def test_subscribeWithoutCid(self):
        self.conn.emit("#subscribe", {"channel": "quiet"})
        self.assertTrue(self.socket.is_subscribed("quiet"))
        self.server.exchange.publish("quiet", 1)
        self.assertEqual(publications(self.conn), [1])

    def test_publishAckAfterDelivery(self):
        self.conn.subscribe("news")
        self.conn.pop_sent()
        d = self.conn.publish("news", {"hello": "world"})
        self.assertIsNone(self.successResultOf(d))
        sent = self.conn.pop_sent()
        self.assertEqual(sent[0], {"event": "#publish",
                                   "data": {"channel": "news", "data": {"hello": "world"}}})
        self.assertEqual(sent[1]["rid"], d and sent[1]["rid"])
        self.assertEqual(set(sent[1]), {"rid"})

    def test_unsubscribeStopsDelivery(self):
        events = []
        self.server.on("unsubscription", lambda s, ch: events.append(ch))
        self.conn.subscribe("news")
        self.conn.unsubscribe("news")
        self.server.exchange.publish("news", 1)
        self.assertEqual(publications(self.conn), [])
        self.assertEqual(events, ["news"])
        self.assertNotIn("news", self.server.broker.subscriptions)

    def test_unsubscribeNotSubscribed(self):
        errors = []
        self.socket.on("error", errors.append)
        cid = self.conn.emit("#unsubscribe", "nothing", cid=True)
        reply = self.conn.reply_to(cid)
        self.assertEqual(reply["error"]["name"], "BrokerError")
        self.assertIn("tried to unsubscribe from a channel which it is not subscribed to",
                      reply["error"]["message"])
        self.assertEqual([type(e) for e in errors], [BrokerError])

    def test_channelLimit(self):
        server = make_server(socket_channel_limit=2)
        conn = connect(server)
        conn.handshake()
        conn.subscribe("a")
        conn.subscribe("b")
        failure = self.failureResultOf(conn.subscribe("c"))
        self.assertEqual(failure.value.name, "BrokerError")
        self.assertIn("channel subscription limit of 2", failure.value.message)
        self.assertEqual(conn.state, "open")
        # Subscribing again to a channel it has is not over the limit.
        self.assertIsNone(self.successResultOf(conn.subscribe("a")))
        self.assertEqual(sorted(conn.socket.subscriptions()), ["a", "b"])

    def test_clientPublishDisabled(self):
        calls = []
        server = make_server(allow_client_publish=False)
        server.add_middleware(server.MIDDLEWARE_PUBLISH_IN, lambda req, next: calls.append(req))
        conn = connect(server)
        conn.handshake()
        failure = self.failureResultOf(conn.publish("news", 1))
        self.assertIsInstance(failure.value, InvalidActionError)
        self.assertEqual(failure.value.message, "Client publish feature is disabled")
        self.assertEqual(calls, [])

    def test_malformedRequests(self):
        for event, data in [
            ("#subscribe", None), ("#subscribe", [None]), ("#subscribe", {"channel": {"a": 1}}),
            ("#subscribe", {"channel": None}), ("#subscribe", {"channel": 12}),
            ("#subscribe", {"channel": "x" * 100000}), ("#unsubscribe", [None]),
            ("#unsubscribe", 12), ("#publish", None), ("#publish", {"channel": {"a": 1}}),
            ("#publish", {"channel": None}), ("#publish", [None]),
        ]:
            cid = self.conn.emit(event, data, cid=True)
            reply = self.conn.reply_to(cid)
            self.assertIsNotNone(reply, (event, data))
            self.assertIn("error", reply, (event, data))
        self.assertEqual(self.conn.state, "open")
        self.assertEqual(self.socket.subscriptions(), [])


class KickOutTests(SynchronousTestCase):
    def setUp(self):
        self.server = make_server()
        self.conn = connect(self.server)
        self.conn.handshake()
        self.socket = self.conn.socket
        self.conn.subscribe("news")
        self.conn.subscribe("sports")
        self.conn.pop_sent()

    def test_kickOutOne(self):
        self.socket.kick_out("news", "You are kicked")
        self.assertEqual(self.conn.pop_sent(), [
            {"event": "#kickOut", "data": {"message": "You are kicked", "channel": "news"}}])
        self.assertEqual(self.socket.subscriptions(), ["sports"])
        self.server.exchange.publish("news", 1)
        self.assertEqual(publications(self.conn), [])
        self.assertNotIn("news", self.server.broker.subscriptions)

    def test_kickOutAllUnsubscribesAtTheBroker(self):
        self.socket.kick_out()
        self.assertEqual(self.conn.pop_sent(), [
            {"event": "#kickOut", "data": {"channel": "news"}},
            {"event": "#kickOut", "data": {"channel": "sports"}}])
        self.assertEqual(self.socket.subscriptions(), [])
        self.assertEqual(self.server.broker.subscriptions, set())
        self.server.exchange.publish("news", 1)
        self.server.exchange.publish("sports", 2)
        self.assertEqual(publications(self.conn), [])

    def test_kickOutUnknownChannel(self):
        self.socket.kick_out("nothing")
        self.assertEqual(self.conn.pop_sent(), [])


class CloseTests(SynchronousTestCase):
    def test_unsubscribedBeforeDisconnect(self):
        server = make_server()
        conn = connect(server)
        conn.handshake()
        conn.subscribe("a")
        conn.subscribe("b")
        events = []
        conn.socket.on("unsubscribe", lambda ch: events.append(("unsubscribe", ch)))
        server.on("unsubscription", lambda s, ch: events.append(("unsubscription", ch)))
        conn.socket.on("disconnect", lambda code, reason: events.append(("disconnect", code)))
        conn.lose_connection(1006)
        self.assertEqual(events, [
            ("unsubscribe", "a"), ("unsubscription", "a"),
            ("unsubscribe", "b"), ("unsubscription", "b"),
            ("disconnect", 1006)])
        self.assertEqual(server.broker.subscriptions, set())
        self.assertEqual(server.exchange._sockets, {})


class BatchingTests(SynchronousTestCase):
    def test_batchedSubscribeReplies(self):
        """
        Replies to C{{batch: true}} subscribes go out together, in one array,
        after C{pub_sub_batch_duration} (as v14/18-batching).
        """
        server = make_server(pub_sub_batch_duration=0.1)
        conn = connect(server)
        conn.handshake()
        conn.pop_sent()
        conn.send([{"event": "#subscribe", "data": {"channel": name, "batch": True}, "cid": cid}
                   for cid, name in [(2, "b1"), (3, "b2"), (4, "b3")]])
        self.assertEqual(conn.pop_sent(), [])
        conn.advance(0.1)
        self.assertEqual(conn.pop_sent(raw=True), ['[{"rid":2},{"rid":3},{"rid":4}]'])
        # Publications are never batched.
        for n in range(3):
            server.exchange.publish("b1", n)
        self.assertEqual(len(conn.pop_sent(raw=True)), 3)

    def test_unbatchedRepliesAreImmediate(self):
        server = make_server(pub_sub_batch_duration=0.1)
        conn = connect(server)
        conn.handshake()
        self.assertIsNone(self.successResultOf(conn.subscribe("now")))
