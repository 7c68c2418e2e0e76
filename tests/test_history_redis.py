"""
Channel history on a real C{redis-server} (L{scserver._history}): two
servers (as two processes) on one Redis agree on offsets, a client of one
recovers what was published on the other while it was away, with live
publications racing the recovery, and a trimmed or lost history gives
C{recovered: false}.
"""

from twisted.internet import defer, reactor

from scserver.client import connect
from tests.test_redis_broker import Collector, RedisCase


class HistoryRedisCase(RedisCase):
    """Two servers on one Redis, keeping the history of C{h.*}."""

    size = 10

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield self.start_redis()
        spec = "h.*={}/60".format(self.size)
        self.a = yield self.start_server(self.redis.url, history_channels=spec)
        self.b = yield self.start_server(self.redis.url, history_channels=spec)

    @defer.inlineCallbacks
    def recovering(self, server, channel):
        """A client subscribed with recovery, and a collector of C{(offset, data)}."""
        client = yield connect(server.url, reactor=reactor, auto_reconnect=False)
        self.addCleanup(client.disconnect)
        collector = Collector()
        sub = client.subscribe(channel, recover=True)
        sub.watch(lambda data: collector((sub.offset, data)))
        yield self.wait(sub.when_subscribed())
        return client, sub, collector

    def dropped(self, server, client):
        """Drop C{client}'s connection from the server; fires once it is closed."""
        closed = defer.Deferred()
        # Done on the next turn: the client has finished closing then.
        client.on("disconnect", lambda *a: reactor.callLater(
            0, lambda: closed.called or closed.callback(None)))
        for socket in list(server.clients.values()):
            socket.disconnect(4000, "dropped")
        return self.wait(closed)

    @defer.inlineCallbacks
    def back(self, client, name):
        """Connect C{client} again; fires once it subscribed to C{name} again."""
        resubscribed = self.resubscribed(client, name)
        yield self.wait(client.connect())
        yield resubscribed

    def resubscribed(self, client, name):
        d = defer.Deferred()

        def on_subscribe(channel, *args):
            if channel == name and not d.called:
                d.callback(None)

        client.on("subscribe", on_subscribe)
        return self.wait(d)



class OffsetsTests(HistoryRedisCase):
    """Both processes see one sequence."""

    @defer.inlineCallbacks
    def test_agree(self):
        """
        Publications from both servers, interleaved and unawaited, get the
        offsets 1..n once each; both opted-in subscribers see them in
        offset order; the history reads the same from both.
        """
        _, _, on_a = yield self.recovering(self.a, "h.x")
        _, _, on_b = yield self.recovering(self.b, "h.x")
        published = []
        for n in range(20):
            server = self.a if n % 2 else self.b
            published.append(server.exchange.publish("h.x", n))
        results = yield defer.gatherResults(published)
        self.assertEqual(sorted(offset for offset, _ in results), list(range(1, 21)))
        self.assertEqual(len({epoch for _, epoch in results}), 1)
        for collector in (on_a, on_b):
            items = yield collector.wait_for(20)
            self.assertEqual([offset for offset, _ in items], list(range(1, 21)))
        page_a = yield self.a.exchange.history("h.x", since=12)
        page_b = yield self.b.exchange.history("h.x", since=12)
        self.assertEqual(page_a.publications, page_b.publications)
        self.assertEqual([o for o, _ in page_a.publications], list(range(13, 21)))
        self.assertEqual((page_a.top, page_a.first, page_a.epoch), (20, 11, results[0][1]))
        self.assertEqual(self.a.warnings + self.b.warnings, [])

    @defer.inlineCallbacks
    def test_keys(self):
        """The stream and the meta hash under the prefix, with the TTL."""
        yield self.a.exchange.publish("h.k", {"n": 2 ** 70, "b": b"\x00"})
        ttl = yield self.redis.command("PTTL", "scserver:history:h.k")
        self.assertTrue(0 < int(ttl) <= 60000, ttl)
        ttl = yield self.redis.command("PTTL", "scserver:history-meta:h.k")
        self.assertTrue(0 < int(ttl) <= 60000, ttl)
        self.assertEqual(int((yield self.redis.command("XLEN", "scserver:history:h.k"))), 1)
        page = yield self.b.exchange.history("h.k")
        self.assertEqual(page.publications, [(1, {"n": 2 ** 70, "b": b"\x00"})])

    @defer.inlineCallbacks
    def test_plainSubscribersUnchanged(self):
        """A subscriber that did not opt in gets the data only."""
        client = yield self.client(self.b)
        collector = yield self.subscribed(client, "h.p")
        yield self.a.exchange.publish("h.p", "x")
        items = yield collector.wait_for(1)
        self.assertEqual(items, ["x"])

    @defer.inlineCallbacks
    def test_lostHistory(self):
        """The keys gone (evicted, flushed): a new epoch, offsets from 1, no recovery."""
        client, sub, _ = yield self.recovering(self.a, "h.l")
        first, epoch = yield self.b.exchange.publish("h.l", 1)
        yield self.redis.command("FLUSHALL")
        offset, new = yield self.b.exchange.publish("h.l", 2)
        self.assertEqual(offset, 1)
        self.assertNotEqual(new, epoch)
        sub.offset, sub.epoch = first, epoch
        yield self.dropped(self.a, client)
        yield self.back(client, "h.l")
        self.assertIs(sub.recovered, False)
        self.assertEqual((sub.offset, sub.epoch), (1, new))


class RecoveryTests(HistoryRedisCase):
    """A client away while the other server publishes."""

    @defer.inlineCallbacks
    def test_recoverAcrossServers(self):
        """
        Dropped by server A, the client misses what B publishes; when its
        automatic reconnection subscribes again, it gets every missed
        publication once, in order, then live ones.
        """
        client, sub, collector = yield self.recovering(self.a, "h.r")
        yield self.b.exchange.publish("h.r", "before")
        yield collector.wait_for(1)
        yield self.dropped(self.a, client)
        for n in range(5):
            yield self.b.exchange.publish("h.r", n)
        yield self.back(client, "h.r")
        self.assertIs(sub.recovered, True)
        yield self.b.exchange.publish("h.r", "after")
        items = yield collector.wait_for(7)
        self.assertEqual(items, [(1, "before")] + [(n + 2, n) for n in range(5)] + [(7, "after")])

    @defer.inlineCallbacks
    def test_trimmed(self):
        """More missed than the history holds: C{recovered} is false, nothing replayed."""
        client, sub, collector = yield self.recovering(self.a, "h.t")
        yield self.b.exchange.publish("h.t", "before")
        yield collector.wait_for(1)
        yield self.dropped(self.a, client)
        for n in range(self.size + 1):
            yield self.b.exchange.publish("h.t", n)
        yield self.back(client, "h.t")
        self.assertIs(sub.recovered, False)
        self.assertEqual(sub.offset, self.size + 2)
        yield self.b.exchange.publish("h.t", "after")
        items = yield collector.wait_for(2)
        self.assertEqual(items, [(1, "before"), (self.size + 3, "after")])

    @defer.inlineCallbacks
    def test_liveRace(self):
        """
        Publications keep coming from B while the client recovers on A:
        the client ends with every offset once, in order.
        """
        client, sub, collector = yield self.recovering(self.a, "h.race")
        yield self.b.exchange.publish("h.race", -1)
        yield collector.wait_for(1)
        yield self.dropped(self.a, client)
        yield self.b.exchange.publish("h.race", 0)
        publishing = []
        store = self.a.exchange.history_store.store
        read = store.read

        def racing_read(*args):
            # Unawaited publications through B as A starts reading.
            for n in range(1, 6):
                publishing.append(self.b.exchange.publish("h.race", n))
            return read(*args)

        self.patch(store, "read", racing_read)
        yield self.back(client, "h.race")
        items = yield collector.wait_for(7)
        yield self.wait(defer.gatherResults(publishing))
        self.assertEqual(len(publishing), 5)
        self.assertEqual([offset for offset, _ in items], list(range(1, 8)))
        self.assertEqual([data for _, data in items], list(range(-1, 6)))
        self.assertEqual(len(collector.items), 7)
