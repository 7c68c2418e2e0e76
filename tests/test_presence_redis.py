"""
Presence on the Redis broker, with a real C{redis-server} (L{tests._redis}):
several servers of one application (in this process, and a real
C{twistd scserver} process) see each other's members and join/leave events;
the members of a process that died disappear after C{presence_expiry}; a
Redis outage fails C{presence()} with C{BrokerError} and the members are
written again once Redis is back.

Redis expiries are real time: the tests use an expiry of one second and
poll with a bounded deadline.
"""

from twisted.internet import defer, task
from twisted.trial import unittest

from scserver import SCServer
from scserver.errors import BrokerError
from scserver.testing import connect
from tests._redis import RedisServer, skip_reason
from tests.test_twistd import PORT_LINE, TwistdProcessMixin

EXPIRY = 1.0

OPTIONS = dict(presence_channels="room.*", presence_expiry=EXPIRY,
               auth_key="presence-redis-test-key-0123456789abcdef")


def _reactor():
    from twisted.internet import reactor

    return reactor


@defer.inlineCallbacks
def poll(predicate, timeout=5.0, interval=0.05):
    """
    Call C{predicate()} (it may return a Deferred) until it is true, at most
    C{timeout} seconds; fail the test when it never is.
    """
    reactor = _reactor()
    deadline = reactor.seconds() + timeout
    while True:
        value = yield defer.maybeDeferred(predicate)
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError("condition not met within {} s".format(timeout))
        yield task.deferLater(reactor, interval, lambda: None)


class RedisPresenceTests(TwistdProcessMixin, unittest.TestCase):
    """Presence across servers sharing one real Redis."""

    skip = skip_reason
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = RedisServer(_reactor())
        self.addCleanup(self.redis.cleanup)
        yield self.redis.start()

    @defer.inlineCallbacks
    def server(self, **options):
        """A started server on the test's Redis (closed in the cleanup)."""
        merged = dict(OPTIONS, broker=self.redis.url)
        merged.update(options)
        server = SCServer(reactor=_reactor(), **merged)
        ready = defer.Deferred()
        server.on("ready", lambda: ready.called or ready.callback(None))
        server.startService()
        self.addCleanup(server.close)
        yield ready
        return server

    @defer.inlineCallbacks
    def member(self, server, channel, token=None):
        """A connected socket of C{server} subscribed to C{channel}."""
        conn = connect(server, clock=_reactor())
        conn.handshake()
        if token is not None:
            yield server.clients[conn.socket.id].set_auth_token(token)
        yield conn.subscribe(channel)
        self.addCleanup(lambda: conn.state != "closed" and conn.disconnect())
        return conn

    @defer.inlineCallbacks
    def test_members_across_servers(self):
        """
        The members of two servers on one Redis are seen by both, with
        the counts of connections and of distinct users (the C{sub} claim).
        """
        a = yield self.server()
        b = yield self.server()
        a1 = yield self.member(a, "room.1", {"sub": "alice"})
        b1 = yield self.member(b, "room.1", {"sub": "alice"})
        b2 = yield self.member(b, "room.1", {"sub": "bob"})
        yield self.member(b, "room.2")
        expected = {a1.socket.id, b1.socket.id, b2.socket.id}
        for server in (a, b):
            members = yield server.exchange.presence("room.1")
            self.assertEqual(set(members), expected)
            for member in members.values():
                self.assertEqual(set(member), {"joined"})
            stats = yield server.exchange.presence_stats("room.1")
            self.assertEqual(stats, {"connections": 3, "users": 2})
        limited = yield a.exchange.presence("room.1", limit=2)
        self.assertEqual(len(limited), 2)
        b2.disconnect()
        yield poll(lambda: a.exchange.presence("room.1").addCallback(
            lambda m: set(m) == {a1.socket.id, b1.socket.id}))
        # The hash is under the prefix, with a byte no channel name makes.
        keys = yield self.redis.command("KEYS", "*")
        self.assertIn(b"scserver:\xffpresence:room.1", keys)

    @defer.inlineCallbacks
    def test_join_leave_across_servers(self):
        """
        C{channel.on('join'/'leave')} on one server fires for the members
        of the other, with the socket id and what the member exposes.
        """
        a = yield self.server()
        b = yield self.server()
        events = []
        channel = b.exchange.channel("room.1")
        channel.on("join", lambda member_id, member: events.append(("join", member_id)))
        channel.on("leave", lambda member_id, member: events.append(("leave", member_id)))
        notices = b.exchange.channel("#scserver/presence:room.1")
        yield poll(lambda: notices.is_subscribed())
        conn = yield self.member(a, "room.1")
        yield poll(lambda: events == [("join", conn.socket.id)])
        conn.disconnect()
        yield poll(lambda: events == [("join", conn.socket.id), ("leave", conn.socket.id)])
        channel.off("join")
        channel.off("leave")
        self.assertFalse(b.exchange.channel("#scserver/presence:room.1").is_subscribed(True))

    @defer.inlineCallbacks
    def test_dead_server_members_expire(self):
        """
        A server that stops without telling (its heartbeats stop, its
        connections drop): after the expiry its members are gone for the
        others, removed from the hash, and reported as leaving once.
        """
        a = yield self.server()
        dying = yield self.server()
        left = []
        a.exchange.channel("room.1").on("leave", lambda member_id, m: left.append(member_id))
        mine = yield self.member(a, "room.1")
        ghost = yield self.member(dying, "room.1")
        members = yield a.exchange.presence("room.1")
        self.assertEqual(set(members), {mine.socket.id, ghost.socket.id})
        # Play a crash: the heartbeats stop and Redis loses the connections,
        # with no HDEL of the member.
        store = dying.exchange.presence_tracker.store
        store._loop.stop()
        store._loop = None
        yield dying.broker.stop()
        start = _reactor().seconds()
        yield poll(lambda: a.exchange.presence("room.1").addCallback(
            lambda m: set(m) == {mine.socket.id}), timeout=EXPIRY + 4)
        self.assertGreaterEqual(_reactor().seconds() - start, EXPIRY * 0.5)
        length = yield self.redis.command("HLEN", store.hash_key("room.1"))
        self.assertEqual(int(length), 1)
        yield poll(lambda: left == [ghost.socket.id])

    @defer.inlineCallbacks
    def test_killed_process_members_expire(self):
        """
        A real C{twistd scserver} process on the same Redis, killed with
        SIGKILL while a client is subscribed: its member disappears after
        the expiry (the member of the live server stays).
        """
        from scserver.client import connect as client_connect

        a = yield self.server()
        # A member of a live server keeps the channel's hash from expiring:
        # only the dead process's heartbeat tells.
        mine = yield self.member(a, "room.1")
        process, transport = self.spawn(
            "--listen", "tcp:0:interface=127.0.0.1", "--broker", self.redis.url,
            "--presence-channels", "room.*", "--presence-expiry", str(EXPIRY),
            "--auth-key", OPTIONS["auth_key"])
        match = yield process.wait_for(PORT_LINE, 30)
        url = "ws://127.0.0.1:{}/socketcluster/".format(match.group(1))
        client = yield client_connect(url, reactor=_reactor(), auto_reconnect=False)
        self.addCleanup(client.disconnect)
        yield client.subscribe("room.1").when_subscribed()
        members = yield a.exchange.presence("room.1")
        self.assertEqual(set(members), {mine.socket.id, client.id})
        transport.signalProcess("KILL")
        yield process.wait_ended(10)
        yield poll(lambda: a.exchange.presence("room.1").addCallback(
            lambda m: set(m) == {mine.socket.id}), timeout=EXPIRY + 4)

    @defer.inlineCallbacks
    def test_redis_outage(self):
        """
        While Redis is down, C{presence()} fails with C{BrokerError} (the
        server keeps running); once it is back (empty), each server writes
        its members again.
        """
        a = yield self.server()
        conn = yield self.member(a, "room.1")
        yield self.redis.kill()
        yield poll(lambda: not a.broker.connected)
        with self.assertRaises(BrokerError):
            yield a.exchange.presence("room.1")
        yield self.redis.start()
        yield poll(lambda: a.broker.connected)
        yield poll(lambda: a.exchange.presence("room.1").addCallbacks(
            lambda m: set(m) == {conn.socket.id}, lambda f: False), timeout=EXPIRY + 4)

    @defer.inlineCallbacks
    def test_shards(self):
        """
        With two Redis shards, each channel's hash is on the channel's
        shard, and every process's heartbeat is on both: the members are
        seen from the other server.
        """
        from scserver.brokers.redis import shard_index

        other = RedisServer(_reactor())
        self.addCleanup(other.cleanup)
        yield other.start()
        url = "{},{}".format(self.redis.url, other.url)
        a = yield self.server(broker=url)
        b = yield self.server(broker=url)
        channels = ["room.{}".format(n) for n in range(8)]
        ids = {}
        for channel in channels:
            conn = yield self.member(a, channel)
            ids[channel] = conn.socket.id
        shards = [self.redis, other]
        self.assertEqual({shard_index(c, 2) for c in channels}, {0, 1})
        store = a.exchange.presence_tracker.store
        for channel in channels:
            members = yield b.exchange.presence(channel)
            self.assertEqual(list(members), [ids[channel]])
            index = shard_index(channel, 2)
            here = yield shards[index].command("EXISTS", store.hash_key(channel))
            there = yield shards[1 - index].command("EXISTS", store.hash_key(channel))
            self.assertEqual((int(here), int(there)), (1, 0))
        for shard in shards:
            beat = yield shard.command("EXISTS", store.heartbeat_key(store.process_id))
            self.assertEqual(int(beat), 1)

