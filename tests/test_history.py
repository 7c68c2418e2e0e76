"""
Channel history and recovery in one process (L{scserver._history}): the
ring buffer, offsets and epochs, the TTL on a clock, recovery on subscribe
with live publications arriving while the history is read, and the frames
of the subscriptions that did not opt in.
"""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from scserver._history import (
    MAX_HELD_BACK,
    HistorySpec,
    HistoryUnsupportedError,
    MemoryHistoryStore,
    parse_history_channels,
)
from scserver.errors import InvalidArgumentsError, InvalidOptionsError
from scserver.testing import connect, make_server
from tests._helpers import publications


def positions(conn, channel=None):
    """The (offset, data) of the positioned publications C{conn} was sent."""
    return [(p["data"].get("offset"), p["data"]["data"]) for p in conn.sent_events("#publish")
            if channel is None or p["data"]["channel"] == channel]


class SpecTests(SynchronousTestCase):
    """Patterns, sizes and TTLs, and the C{history_channels} option."""

    def test_glob(self):
        spec = HistorySpec("chat.*", 10, 5)
        self.assertTrue(spec.matches("chat.room"))
        self.assertFalse(spec.matches("news"))
        self.assertEqual(spec.ttl, 5.0)

    def test_internalChannelsExcluded(self):
        """A pattern matching everything keeps no history of scserver's own channels."""
        server = make_server(history_channels="*=5")
        store = server.exchange.history_store
        self.assertIsNotNone(store.spec("chat"))
        self.assertIsNone(store.spec("#scserver/presence:chat"))
        self.assertIsNone(store.spec("#scserver/inspect"))

    def test_badSpecs(self):
        for args in [("", 1), ("x", 0), ("x", 1.5), ("x", True), ("x", 10 ** 9), ("x", 1, 0),
                     ("x", 1, "1"), ("x", 1, -2)]:
            self.assertRaises(InvalidArgumentsError, HistorySpec, *args)

    def test_parseCommandLine(self):
        specs = parse_history_channels("chat.*=100/300 news=20")
        self.assertEqual([(s.pattern, s.size, s.ttl) for s in specs],
                         [("chat.*", 100, 300.0), ("news", 20, None)])

    def test_parseMapping(self):
        specs = parse_history_channels({"a": 5, "b": (6, 7), "c": {"size": 8, "ttl": 9}})
        self.assertEqual([(s.pattern, s.size, s.ttl) for s in specs],
                         [("a", 5, None), ("b", 6, 7.0), ("c", 8, 9.0)])

    def test_parseErrors(self):
        for value in ["chat", "chat=x", "=5", "a=5/x", {"a": {"size": 1, "tll": 2}}, 5]:
            self.assertRaises(ValueError, parse_history_channels, value)

    def test_serverOption(self):
        """The option configures the exchange; a bad one is an InvalidOptionsError."""
        server = make_server(history_channels="h.*=3")
        self.assertEqual([(s.pattern, s.size) for s in server.exchange.history_store.specs],
                         [("h.*", 3)])
        self.assertRaises(InvalidOptionsError, make_server, history_channels="h.*")

    def test_twistdFlag(self):
        """C{--history-channels} reaches the server; a bad value is a usage error."""
        from twisted.python.usage import UsageError

        from scserver import tap

        config = tap.Options()
        config.parseOptions(["--history-channels", "a.*=5/2 b=3"])
        server = make_server(**config["server_options"])
        self.assertEqual([(s.pattern, s.size, s.ttl) for s in
                          server.exchange.history_store.specs],
                         [("a.*", 5, 2.0), ("b", 3, None)])
        self.assertRaises(UsageError, tap.Options().parseOptions,
                          ["--history-channels", "a.*=five"])

    def test_unsupportedBroker(self):
        """A broker other than memory or Redis keeps no history."""
        from scserver.brokers.memory import MemoryBroker

        Other = type("Other", (), dict(MemoryBroker.__dict__))
        server = make_server(broker=Other())
        self.assertRaises(HistoryUnsupportedError, server.exchange.configure_channel, "x", 1)


class StoreTests(SynchronousTestCase):
    """The in-process ring buffer."""

    def setUp(self):
        self.clock = Clock()
        self.server = make_server(self.clock)
        self.exchange = self.server.exchange
        self.exchange.configure_channel("h.*", 3, 10)

    def test_offsetsAndRing(self):
        """Offsets count from 1; the ring keeps the last C{size}."""
        results = [self.successResultOf(self.exchange.publish("h.a", n)) for n in range(5)]
        self.assertEqual([offset for offset, _ in results], [1, 2, 3, 4, 5])
        self.assertEqual(len({epoch for _, epoch in results}), 1)
        page = self.successResultOf(self.exchange.history("h.a"))
        self.assertEqual((page.top, page.first, page.epoch), (5, 3, results[0][1]))
        self.assertEqual(page.publications, [(3, 2), (4, 3), (5, 4)])
        page = self.successResultOf(self.exchange.history("h.a", since=3, limit=1))
        self.assertEqual(page.publications, [(4, 3)])
        page = self.successResultOf(self.exchange.history("h.a", limit=2))
        self.assertEqual(page.publications, [(4, 3), (5, 4)])

    def test_channelsApart(self):
        self.successResultOf(self.exchange.publish("h.a", 1))
        self.assertEqual(self.successResultOf(self.exchange.publish("h.b", 1))[0], 1)

    def test_noHistory(self):
        """A channel without history: publish as before, history() fails."""
        connect(self.server).handshake()  # starts the server
        self.successResultOf(self.exchange.publish("other", 1))
        self.failureResultOf(self.exchange.history("other"), InvalidArgumentsError)
        page = self.successResultOf(self.exchange.history("h.none"))
        self.assertEqual((page.epoch, page.top, page.publications), (None, 0, []))

    def test_ttlNewEpoch(self):
        """No publication for C{ttl} seconds: the history is gone, a new epoch starts."""
        _, epoch = self.successResultOf(self.exchange.publish("h.a", 1))
        self.clock.advance(9.5)
        self.assertEqual(self.successResultOf(self.exchange.publish("h.a", 2)), (2, epoch))
        self.clock.advance(10)
        page = self.successResultOf(self.exchange.history("h.a"))
        self.assertEqual((page.epoch, page.top), (None, 0))
        offset, new = self.successResultOf(self.exchange.publish("h.a", 3))
        self.assertEqual(offset, 1)
        self.assertNotEqual(new, epoch)

    def test_sweep(self):
        """Expired histories are dropped as new ones are made."""
        store = self.exchange.history_store.store
        for n in range(1023):
            self.exchange.publish("h.{}".format(n), n)
        self.clock.advance(11)
        self.exchange.publish("h.last", 0)
        self.assertEqual(len(store._rings), 1)

    def test_badArguments(self):
        self.failureResultOf(self.exchange.history("h.a", since=-1), InvalidArgumentsError)
        self.failureResultOf(self.exchange.history("h.a", limit="x"), InvalidArgumentsError)
        self.failureResultOf(self.exchange.history(5), InvalidArgumentsError)


class DelayedReads(MemoryHistoryStore):
    """A store whose reads happen when the test fires them."""

    def __init__(self, real):
        self.real = real
        self.pending = []

    def publish(self, *args):
        return self.real.publish(*args)

    def read(self, *args):
        d = Deferred()
        self.pending.append((d, args))
        return d

    def fire(self):
        pending, self.pending = self.pending, []
        for d, args in pending:
            self.real.read(*args).chainDeferred(d)


class RecoveryTests(SynchronousTestCase):
    """Subscribing with C{recover}."""

    def setUp(self):
        self.clock = Clock()
        self.server = make_server(self.clock)
        self.exchange = self.server.exchange
        self.exchange.configure_channel("h.*", 5)

    def client(self):
        conn = connect(self.server)
        conn.handshake()
        return conn

    def publish(self, *values, channel="h.a"):
        return [self.successResultOf(self.exchange.publish(channel, v)) for v in values]

    def test_firstSubscribe(self):
        """
        C{recover: true}: the reply gives the position; later publications
        carry theirs.
        """
        (_, epoch), = self.publish("old")
        conn = self.client()
        reply = self.successResultOf(conn.subscribe("h.a", {"recover": True}))
        self.assertEqual(reply, {"recovered": False, "offset": 1, "epoch": epoch})
        self.publish("new")
        self.assertEqual(conn.sent_events("#publish")[-1]["data"],
                         {"channel": "h.a", "data": "new", "offset": 2, "epoch": epoch})

    def test_recover(self):
        """The missed publications come in order, then live ones."""
        results = self.publish("a", "b", "c", "d")
        epoch = results[0][1]
        conn = self.client()
        reply = self.successResultOf(
            conn.subscribe("h.a", {"recover": {"offset": 1, "epoch": epoch}}))
        self.assertEqual(reply, {"recovered": True, "offset": 4, "epoch": epoch})
        self.publish("e")
        self.assertEqual(positions(conn), [(2, "b"), (3, "c"), (4, "d"), (5, "e")])

    def test_upToDate(self):
        (_, epoch), = self.publish("a")
        conn = self.client()
        reply = self.successResultOf(
            conn.subscribe("h.a", {"recover": {"offset": 1, "epoch": epoch}}))
        self.assertEqual(reply["recovered"], True)
        self.assertEqual(positions(conn), [])

    def test_trimmed(self):
        """The ring no longer reaches back: C{recovered: false}, nothing replayed."""
        results = self.publish(*range(8))
        conn = self.client()
        reply = self.successResultOf(
            conn.subscribe("h.a", {"recover": {"offset": 2, "epoch": results[0][1]}}))
        self.assertEqual(reply, {"recovered": False, "offset": 8, "epoch": results[0][1]})
        self.assertEqual(positions(conn), [])
        # The oldest offset still recoverable: 3 (4..8 held).
        conn = self.client()
        reply = self.successResultOf(
            conn.subscribe("h.a", {"recover": {"offset": 3, "epoch": results[0][1]}}))
        self.assertEqual(reply["recovered"], True)
        self.assertEqual([o for o, _ in positions(conn)], [4, 5, 6, 7, 8])

    def test_otherEpoch(self):
        self.publish("a", "b")
        conn = self.client()
        reply = self.successResultOf(
            conn.subscribe("h.a", {"recover": {"offset": 1, "epoch": "0123456789abcdef"}}))
        self.assertEqual(reply["recovered"], False)
        self.assertEqual(positions(conn), [])

    def test_offsetInTheFuture(self):
        (_, epoch), = self.publish("a")
        conn = self.client()
        reply = self.successResultOf(
            conn.subscribe("h.a", {"recover": {"offset": 7, "epoch": epoch}}))
        self.assertEqual(reply["recovered"], False)

    def test_malformedRecover(self):
        """A malformed position is a first subscribe."""
        self.publish("a")
        for bad in [{"offset": -1, "epoch": "x"}, {"offset": "1", "epoch": "x"},
                    {"offset": 1, "epoch": "x" * 65}, {"offset": 1},
                    {"offset": 2 ** 53 + 1, "epoch": "x"}, {"offset": True, "epoch": "x"}]:
            conn = self.client()
            reply = self.successResultOf(conn.subscribe("h.a", {"recover": bad}))
            self.assertEqual((reply["recovered"], reply["offset"]), (False, 1))

    def test_liveDuringRead(self):
        """
        Publications made while the history is read are held back, then
        sent after the history, each once: no gap, no duplicate.
        """
        store = self.exchange.history_store
        delayed = store.store = DelayedReads(store.store)
        results = self.publish("a", "b", "c")
        epoch = results[0][1]
        other = self.client()
        self.successResultOf(other.subscribe("h.a"))
        conn = self.client()
        d = conn.subscribe("h.a", {"recover": {"offset": 1, "epoch": epoch}})
        self.assertNoResult(d)
        # Published after the subscription took effect, before the read:
        # held back, and the read sees them too (offsets 4, 5): each is
        # sent once.
        self.publish("d", "e")
        self.assertEqual(positions(conn), [])
        delayed.fire()
        reply = self.successResultOf(d)
        self.assertEqual(reply, {"recovered": True, "offset": 5, "epoch": epoch})
        self.publish("f")
        self.assertEqual(positions(conn),
                         [(2, "b"), (3, "c"), (4, "d"), (5, "e"), (6, "f")])
        # The subscriber that did not opt in got the live ones as always.
        self.assertEqual([p["data"] for p in other.sent_events("#publish")],
                         [{"channel": "h.a", "data": v} for v in "def"])

    def test_liveAfterReadBeforeReply(self):
        """A publication the read missed but held back comes after the history."""
        store = self.exchange.history_store
        real = store.store
        results = self.publish("a", "b")
        epoch = results[0][1]
        conn = self.client()
        held = []

        class Snapshot(DelayedReads):
            def read(self, *args):
                page = self.real.read(*args)
                d = Deferred()
                held.append((d, page))
                return d

        store.store = Snapshot(real)
        d = conn.subscribe("h.a", {"recover": {"offset": 0, "epoch": epoch}})
        # The read's snapshot is taken (a, b); then c and d are published
        # and held back.
        store.store = real
        self.publish("c", "d")
        (waiting, page), = held
        page.chainDeferred(waiting)
        reply = self.successResultOf(d)
        self.assertEqual(reply["offset"], 2)
        self.assertEqual(positions(conn), [(1, "a"), (2, "b"), (3, "c"), (4, "d")])

    def test_heldBackBounded(self):
        """Too many publications while reading: the recovery gives up."""
        self.exchange.configure_channel("h.*", 5)
        store = self.exchange.history_store
        delayed = store.store = DelayedReads(store.store)
        (_, epoch), = self.publish("a")
        conn = self.client()
        d = conn.subscribe("h.a", {"recover": {"offset": 0, "epoch": epoch}})
        for n in range(MAX_HELD_BACK + 1):
            self.exchange.publish("h.a", n)
        self.assertEqual(len(store.opted["h.a"][conn.socket].held), MAX_HELD_BACK)
        delayed.fire()
        # The client starts again from the last publication, and gets the
        # next ones.
        self.assertEqual(self.successResultOf(d),
                         {"recovered": False, "offset": MAX_HELD_BACK + 2, "epoch": epoch})
        self.assertEqual(positions(conn), [])
        self.publish("next")
        self.assertEqual(positions(conn), [(MAX_HELD_BACK + 3, "next")])

    def test_unchangedFrames(self):
        """
        Subscribers that did not opt in get the same bytes as on a channel
        without history; the opted-in one gets the position too.
        """
        plain = self.client()
        self.successResultOf(plain.subscribe("h.a"))
        plain_other = self.client()
        self.successResultOf(plain_other.subscribe("other"))
        opted = self.client()
        self.successResultOf(opted.subscribe("h.a", {"recover": True}))
        for conn in (plain, plain_other, opted):
            conn.pop_sent()
        self.exchange.publish("h.a", {"x": [1, "é"]})
        self.exchange.publish("other", {"x": [1, "é"]})
        self.assertEqual(plain.pop_sent(raw=True), [x.replace('"other"', '"h.a"') for x in
                                                    plain_other.pop_sent(raw=True)])
        self.assertEqual(plain.pop_sent(raw=True), [])
        sent, = opted.pop_sent()
        self.assertEqual(set(sent["data"]), {"channel", "data", "offset", "epoch"})

    def test_clientPublishPositioned(self):
        """A client's publication goes into the history too."""
        conn = self.client()
        reply = self.successResultOf(conn.subscribe("h.a", {"recover": True}))
        self.successResultOf(conn.publish("h.a", "mine"))
        self.assertEqual(positions(conn), [(1, "mine")])
        self.assertEqual(reply["offset"], 0)

    def test_unsubscribeForgets(self):
        conn = self.client()
        self.successResultOf(conn.subscribe("h.a", {"recover": True}))
        self.assertIn("h.a", self.exchange.history_store.opted)
        conn.disconnect()
        self.assertEqual(self.exchange.history_store.opted, {})

    def test_noOptInNoReplyData(self):
        """A subscribe without C{recover} is answered as always (no data)."""
        conn = self.client()
        conn.subscribe("h.a", {"other": 1})
        reply = conn.reply_to(conn.next_cid() - 1)
        self.assertEqual(set(reply), {"rid"})

    def test_watchersGetData(self):
        got = []
        self.exchange.subscribe("h.a").watch(got.append)
        self.publish(1, 2)
        self.assertEqual(got, [1, 2])

    def test_publishOutMiddleware(self):
        """With publishOut middleware, an opted-in socket's publications go through it."""
        def middleware(req, next):
            req.data = {"wrapped": req.data}
            next()

        self.server.add_middleware(self.server.MIDDLEWARE_PUBLISH_OUT, middleware)
        conn = self.client()
        self.successResultOf(conn.subscribe("h.a", {"recover": True}))
        self.publish("x")
        self.assertEqual(publications(conn), [{"wrapped": "x"}])


class RecordedFramesTests(SynchronousTestCase):
    """
    The recorded pub/sub transcripts of the real SocketCluster servers
    (C{tests/fixtures}), replayed against a server keeping the history of
    every channel: clients that do not opt in get the recorded frames.
    """

    def replay(self, name):
        from tests._transcripts import frames, load_transcript

        server = make_server(history_channels="*=100/60")
        conn = connect(server)
        expected = []
        for direction, payload in frames(load_transcript(name)):
            if direction == "in":
                conn.send_raw(payload)
            elif direction == "out" and isinstance(payload, str):
                expected.append(payload)
                if '"from":"server"' in payload:
                    self.successResultOf(server.exchange.publish("news", {"from": "server"}))
        got = conn.pop_sent(raw=True)
        # The handshake reply holds the socket id.
        self.assertIn('"id":"{}"'.format(conn.socket.id), got[0])
        self.assertEqual(got[1:], expected[1:])
        self.assertGreater(sum('"#publish"' in frame for frame in got), 2)
        page = self.successResultOf(server.exchange.history("news"))
        self.assertGreater(page.top, 2)

    def test_v14(self):
        self.replay("v14/04-pubsub")

    def test_v20(self):
        self.replay("v20/04-pubsub")
