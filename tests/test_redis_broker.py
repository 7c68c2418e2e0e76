"""
Tests for L{scserver.brokers.redis}.

Without Redis: the envelope, the jump consistent hash, the URLs, and the
broker's answers while it is not connected.

With real C{redis-server} processes (L{tests._redis}, skipped when
C{redis-server} cannot be found): two L{SCServer}s in this process, each with
its own L{RedisBroker}, listening on 127.0.0.1 on the real reactor, with
real clients (L{scserver.client}) over loopback sockets.  They wait on
Deferreds and log events with timeouts, never sleep.
"""

import hashlib
import math

import msgpack
from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from scserver import SCServer
from scserver.brokers.redis import (
    BIGINT_EXT_TYPE,
    DEFAULT_PREFIX,
    ENVELOPE_VERSION,
    EnvelopeError,
    RedisBroker,
    channel_key,
    decode_envelope,
    encode_envelope,
    jump_hash,
    parse_url,
    shard_index,
)
from scserver.client import connect
from scserver.codec import JSONCodec, MinBinCodec
from scserver.errors import BrokerError
from scserver.interfaces import IAttachableBroker, IBroker
from tests._redis import RedisServer, free_port, skip_reason

TIMEOUT = 5
"""Seconds any one wait of the integration tests may take."""


def roundtrip(value):
    return decode_envelope(encode_envelope(value))


class EnvelopeTests(unittest.SynchronousTestCase):
    """
    What travels through Redis: version byte 1, then MessagePack, with ext
    type 1 for the integers beyond 64 bits.
    """

    def assertSurvives(self, value):
        result = roundtrip(value)
        self.assertEqual(result, value)
        self.assertIs(type(result), type(value))
        return result

    def test_scalars(self):
        """
        str, int, float, bool and None come back as they went, type
        included.
        """
        for value in ("", "héllo ☃ 𝄞", 0, 1, -1, 2**63 - 1, -2**63, 2**64 - 1,
                      0.5, -1.25e300, 5e-324, float("inf"), float("-inf"), True, False, None):
            self.assertSurvives(value)

    def test_specialFloats(self):
        """
        NaN stays NaN, and -0.0 keeps its sign.
        """
        self.assertTrue(math.isnan(roundtrip(float("nan"))))
        self.assertEqual(math.copysign(1, roundtrip(-0.0)), -1)

    def test_bigIntegers(self):
        """
        Integers beyond 64 bits, which the JSON codec carries, come back
        exact, on both sides of the 64-bit limits.
        """
        for value in (2**64, -2**63 - 1, 2**64 + 1, -2**64, 2**100, -2**100, 10**400,
                      -(10**400), 2**127 - 1, -2**127):
            self.assertSurvives(value)

    def test_bigIntegerFormat(self):
        """
        An integer beyond 64 bits is ext type 1 holding its signed big-endian
        two's complement in the fewest bytes.
        """
        message = encode_envelope(2**64)
        self.assertEqual(message[:1], bytes([ENVELOPE_VERSION]))
        ext = msgpack.unpackb(message[1:])
        self.assertEqual(ext, msgpack.ExtType(BIGINT_EXT_TYPE, b"\x01" + b"\x00" * 8))
        ext = msgpack.unpackb(encode_envelope(-2**63 - 1)[1:])
        self.assertEqual(ext, msgpack.ExtType(BIGINT_EXT_TYPE, b"\xff\x7f" + b"\xff" * 7))

    def test_binary(self):
        """
        bytes come back as bytes; bytearray and memoryview as bytes too.
        """
        blob = bytes(range(256))
        self.assertSurvives(blob)
        self.assertSurvives(b"")
        self.assertEqual(roundtrip(bytearray(blob)), blob)
        self.assertEqual(roundtrip(memoryview(blob)), blob)
        self.assertIs(type(roundtrip({"b": memoryview(b"x")})["b"]), bytes)

    def test_containers(self):
        """
        dicts and lists, nested, with keys of other types than str (min-bin
        may decode those); tuples come back as lists.
        """
        value = {"a": [1, 2.5, None, {"b": [b"\x00", "x", 2**70]}], 1: "one", "": {},
                 "l": [[], [[]]], b"k": -2**80}
        self.assertSurvives(value)
        self.assertEqual(roundtrip((1, (2, 3))), [1, [2, 3]])

    def test_loneSurrogates(self):
        """
        A str with a lone surrogate, which the JSON codec decodes from
        C{"\\ud800"}, comes back as it was.
        """
        decoded = JSONCodec().decode('{"s":"a\\ud800b","k\\udfff":1}')
        self.assertEqual(roundtrip(decoded), decoded)

    def test_whatTheCodecsDecode(self):
        """
        Whatever the JSON and min-bin codecs decode survives.
        """
        json_codec = JSONCodec()
        text = ('{"event":"#publish","data":{"channel":"c","data":{"n":123456789012345678901234567890,'
                '"m":-123456789012345678901234567890,"f":1.5e-7,"l":[true,false,null,"\\u00e9"]}}}')
        packet = json_codec.decode(text)
        self.assertEqual(roundtrip(packet), packet)
        minbin = MinBinCodec()
        original = {"event": "x", "data": {"b": b"\x00\x01\xfe\xff", "n": -2**63,
                                           "u": 2**64 - 1, "f": 0.1, "s": "ß"}}
        packet = minbin.decode(minbin.encode(original))
        self.assertEqual(roundtrip(packet), packet)
        self.assertIs(type(roundtrip(packet)["data"]["b"]), bytes)

    def test_unsupported(self):
        """
        Values of other types cannot travel: TypeError (publish turns it
        into a BrokerError).
        """
        for value in ({1, 2}, object(), {"a": frozenset()}, 1j):
            self.assertRaises(TypeError, encode_envelope, value)

    def test_versionByte(self):
        """
        The first byte is the version; a message of another version, an
        empty message or one that is not MessagePack is an EnvelopeError.
        """
        self.assertEqual(encode_envelope("x"), b"\x01\xa1x")
        self.assertEqual(decode_envelope(b"\x01\xa1x"), "x")
        error = self.assertRaises(EnvelopeError, decode_envelope, b"\x02\xa1x")
        self.assertIn("envelope version 2", str(error))
        self.assertRaises(EnvelopeError, decode_envelope, b"")
        self.assertRaises(EnvelopeError, decode_envelope, b"\x01\xc1")
        self.assertRaises(EnvelopeError, decode_envelope, b"\x01\xa3x")
        self.assertRaises(EnvelopeError, decode_envelope, b"\x01" + msgpack.packb(
            msgpack.ExtType(99, b"")))


class HashTests(unittest.SynchronousTestCase):
    """
    Channels are spread over the shards by jump consistent hash of
    BLAKE2b-64 of the channel name.
    """

    def test_vectors(self):
        """
        The reference implementation's test vectors.
        """
        for key, buckets, expected in [(1, 1, 0), (42, 57, 43), (0xDEAD10CC, 1, 0),
                                       (0xDEAD10CC, 666, 361), (256, 1024, 520)]:
            self.assertEqual(jump_hash(key, buckets), expected)
        self.assertRaises(ValueError, jump_hash, 1, 0)

    def test_channelKey(self):
        """
        The key of a channel is fixed, for every process and Python version
        must agree: the BLAKE2b digest (8 bytes) of the UTF-8 name,
        big-endian.  These values must never change (they decide where
        the channels of running deployments are).
        """
        self.assertEqual(channel_key("news"), 0xAD662ED3DC9273D1)
        self.assertEqual(channel_key(""), 0xE4A6A0577479B2B4)
        for name in ("news", "é", "a\ud800"):
            digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"),
                                     digest_size=8).digest()
            self.assertEqual(channel_key(name), int.from_bytes(digest, "big"))
        self.assertEqual([shard_index("channel-{}".format(i), 3) for i in range(10)],
                         [1, 0, 0, 0, 1, 0, 1, 0, 0, 2])

    def test_oneShard(self):
        """
        With one shard every channel is on it.
        """
        self.assertEqual({shard_index(str(i), 1) for i in range(100)}, {0})

    def test_addingAShard(self):
        """
        Going from 2 to 3 shards moves about a third of 1000 channels, all
        to the new shard: never between the two old ones.
        """
        names = ["channel-{}".format(i) for i in range(1000)]
        before = {name: shard_index(name, 2) for name in names}
        after = {name: shard_index(name, 3) for name in names}
        moved = [name for name in names if before[name] != after[name]]
        self.assertTrue(280 <= len(moved) <= 390, len(moved))
        self.assertEqual({after[name] for name in moved}, {2})
        counts = [list(after.values()).count(i) for i in range(3)]
        for count in counts:
            self.assertTrue(280 <= count <= 390, counts)

    def test_spread(self):
        """
        Over 10 shards, 10000 channels land roughly evenly.
        """
        counts = [0] * 10
        for i in range(10000):
            counts[shard_index("room:{}".format(i), 10)] += 1
        self.assertTrue(all(850 <= count <= 1150 for count in counts), counts)


class URLTests(unittest.SynchronousTestCase):
    """
    L{parse_url}: one URL or a comma-separated list of shards.
    """

    def one(self, url):
        [address] = parse_url(url)
        return address

    def test_redis(self):
        address = self.one("redis://:s%40cret@10.0.0.5:6380/3")
        self.assertEqual((address.scheme, address.host, address.port, address.db,
                          address.username, address.password),
                         ("redis", "10.0.0.5", 6380, 3, None, "s@cret"))
        self.assertFalse(address.tls)
        self.assertEqual(str(address), "redis://:***@10.0.0.5:6380/3")

    def test_defaults(self):
        address = self.one("redis://localhost")
        self.assertEqual((address.host, address.port, address.db, address.password),
                         ("localhost", 6379, 0, None))
        self.assertEqual(self.one("REDIS://h/").db, 0)
        self.assertEqual(self.one("redis://h?db=2").db, 2)

    def test_userAndPassword(self):
        address = self.one("redis://alice:pw@h:1/0")
        self.assertEqual((address.username, address.password), ("alice", "pw"))
        self.assertEqual(str(address), "redis://alice:***@h:1/0")

    def test_tls(self):
        address = self.one("rediss://redis.example.com:6380/1")
        self.assertTrue(address.tls)
        self.assertEqual(str(address), "rediss://redis.example.com:6380/1")

    def test_ipv6(self):
        address = self.one("redis://[::1]:7000")
        self.assertEqual((address.host, address.port), ("::1", 7000))
        self.assertEqual(str(address), "redis://[::1]:7000/0")

    def test_unix(self):
        address = self.one("unix:///run/redis/redis.sock?db=4")
        self.assertEqual((address.scheme, address.path, address.db, address.host),
                         ("unix", "/run/redis/redis.sock", 4, None))
        self.assertEqual(self.one("unix://:pw@/tmp/r.sock").password, "pw")
        self.assertEqual(str(address), "unix:///run/redis/redis.sock?db=4")

    def test_shards(self):
        addresses = parse_url("redis://a:6379, redis://b:6379/0,unix:///r.sock")
        self.assertEqual([str(a) for a in addresses],
                         ["redis://a:6379/0", "redis://b:6379/0", "unix:///r.sock"])

    def test_malformed(self):
        for url, fragment in [
            ("http://h", "expected redis://"),
            ("redis:/h", "expected redis://"),
            ("redis://h:abc", "bad port"),
            ("redis://h:0", "bad port"),
            ("redis://h:70000", "bad port"),
            ("redis://h:", "empty port"),
            ("redis://h/x", "db"),
            ("redis://h/-1", "db"),
            ("redis://h/1/2", "db"),
            ("redis://h/1?db=2", "given twice"),
            ("redis://h?database=2", "unknown or repeated parameter 'database'"),
            ("redis://h?db=1&db=2", "repeated"),
            ("redis://:6379", "no host"),
            ("redis://alice@h", "needs a password"),
            ("redis://h#x", "fragment"),
            ("unix://host/r.sock", "names a path"),
            ("unix://", "no socket path"),
            ("unix:///r.sock?db=x", "db"),
            ("redis://a,,redis://b", "shard 2 of 3 is empty"),
            ("redis://a,", "shard 2 of 2 is empty"),
            ("", "shard 1 of 1 is empty"),
            ("redis://a:1,redis://a:1/2", "listed twice"),
            ("redis://a,http://b", "expected redis://"),
        ]:
            error = self.assertRaises(ValueError, parse_url, url)
            self.assertIn(fragment, str(error), url)


class BrokerWithoutRedisTests(unittest.SynchronousTestCase):
    """
    The broker before it connects.
    """

    def test_interfaces(self):
        broker = RedisBroker.from_url("redis://127.0.0.1:1", reactor)
        self.assertTrue(verifyObject(IBroker, broker))
        self.assertTrue(verifyObject(IAttachableBroker, broker))

    def test_notStarted(self):
        """
        Before start, publish fails with BrokerError; a subscription waits
        for the connection (an application subscribes at start-up), and
        can be taken back.
        """
        broker = RedisBroker.from_url("redis://127.0.0.1:1", reactor)
        self.failureResultOf(broker.publish("a", 1), BrokerError)
        self.assertNoResult(broker.subscribe("a"))
        self.assertEqual(broker.subscriptions, {"a"})
        self.successResultOf(broker.unsubscribe("a"))
        self.assertEqual(broker.subscriptions, set())
        self.successResultOf(broker.stop())

    def test_prefix(self):
        """
        The prefix is the server's C{broker_prefix} unless the constructor
        was given one.
        """
        broker = RedisBroker.from_url("redis://h", reactor)
        self.assertEqual(broker.prefix, DEFAULT_PREFIX)
        self.assertEqual(broker.prefix, "scserver:")
        server = SCServer(reactor=reactor, auth_key="k", broker=broker, broker_prefix="chat:")
        self.assertIs(server.broker, broker)
        self.assertEqual(broker.prefix, "chat:")
        self.assertEqual(broker.key("room"), b"chat:room")
        fixed = RedisBroker.from_url("redis://h", reactor, prefix="")
        SCServer(reactor=reactor, auth_key="k", broker=fixed, broker_prefix="chat:")
        self.assertEqual(fixed.key("room"), b"room")

    def test_serverMakesIt(self):
        """
        The server makes a RedisBroker of a URL, with its prefix.
        """
        server = SCServer(reactor=reactor, auth_key="k", broker="redis://h:1,redis://g:2",
                          broker_prefix="x:")
        self.assertIsInstance(server.broker, RedisBroker)
        self.assertEqual([str(a) for a in server.broker.addresses],
                         ["redis://h:1/0", "redis://g:2/0"])
        self.assertEqual(server.broker.prefix, "x:")

    def test_retryDelay(self):
        """
        The reconnection delay doubles from the initial delay up to the
        maximum, drawn between half of it and all of it.
        """
        broker = RedisBroker.from_url("redis://h", reactor, reconnect_initial_delay=0.5,
                                      reconnect_max_delay=4)
        for attempt, base in [(0, 0.5), (1, 1), (2, 2), (3, 4), (4, 4), (500, 4)]:
            for _ in range(20):
                delay = broker.retry_delay(attempt)
                self.assertTrue(base / 2 <= delay <= base, (attempt, delay))


# --------------------------------------------------------------------------
# With Redis
# --------------------------------------------------------------------------


class Collector:
    """Collects what a watcher gets; L{wait_for} waits for a count."""

    def __init__(self):
        self.items = []
        self._waiting = []

    def __call__(self, item):
        self.items.append(item)
        for count, d in list(self._waiting):
            if len(self.items) >= count:
                self._waiting.remove((count, d))
                d.callback(self.items)

    def wait_for(self, count):
        if len(self.items) >= count:
            return defer.succeed(self.items)
        d = defer.Deferred()
        self._waiting.append((count, d))
        return d.addTimeout(TIMEOUT, reactor)


class LogWatcher:
    """Records the log events whose format starts with a text."""

    def __init__(self, case, start):
        self.start = start
        self.events = []
        self._waiting = []
        globalLogPublisher.addObserver(self)
        case.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event):
        text = event.get("log_format") or ""
        if text.startswith(self.start):
            self.events.append(event)
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(event)

    def next(self):
        d = defer.Deferred()
        self._waiting.append(d)
        return d.addTimeout(TIMEOUT, reactor)


class RedisCase(unittest.TestCase):
    """Two or more servers on real Redis, real clients on loopback."""

    skip = skip_reason
    timeout = 30

    @defer.inlineCallbacks
    def start_redis(self, port=None, password=None, tls=None):
        redis = RedisServer(reactor, password=password, tls=tls)
        redis.port = port
        self.addCleanup(redis.cleanup)
        yield redis.start()
        return redis

    def make_server(self, url, broker_options=None, **options):
        broker = RedisBroker.from_url(url, reactor, reconnect_initial_delay=0.05,
                                      reconnect_max_delay=0.25, wait_log_interval=60,
                                      **(broker_options or {}))
        server = SCServer(reactor=reactor, auth_key="test-key", broker=broker, **options)
        server.warnings = []
        server.on("warning", server.warnings.append)
        self.addCleanup(server.close)
        return server

    @defer.inlineCallbacks
    def start_server(self, url, broker_options=None, **options):
        """A server on C{url}, listening on 127.0.0.1, once C{ready}."""
        server = self.make_server(url, broker_options, **options)
        ready = self.when_ready(server)
        port = yield server.listen("tcp:0:interface=127.0.0.1")
        server.url = "ws://127.0.0.1:{}/socketcluster/".format(port.getHost().port)
        yield ready
        return server

    def when_ready(self, server):
        d = defer.Deferred()
        server.on("ready", lambda: d.called or d.callback(None))
        return d.addTimeout(TIMEOUT, reactor)

    def when_warned(self, server):
        d = defer.Deferred()
        server.on("warning", lambda error: d.called or d.callback(error))
        return d.addTimeout(TIMEOUT, reactor)

    @defer.inlineCallbacks
    def client(self, server, **options):
        client = yield connect(server.url, reactor=reactor, auto_reconnect=False, **options)
        self.addCleanup(client.disconnect)
        return client

    @defer.inlineCallbacks
    def subscribed(self, client, channel):
        """A collector of what C{client} gets on C{channel}, once subscribed."""
        collector = Collector()
        client_channel = client.subscribe(channel)
        client_channel.watch(collector)
        yield client_channel.when_subscribed().addTimeout(TIMEOUT, reactor)
        return collector

    @defer.inlineCallbacks
    def watched(self, server, channel):
        """A collector of what the watchers of C{server}'s channel get, once subscribed."""
        collector = Collector()
        server_channel = server.exchange.channel(channel)
        server_channel.watch(collector)
        yield server_channel.subscribe().addTimeout(TIMEOUT, reactor)
        return collector

    def wait(self, d):
        return d.addTimeout(TIMEOUT, reactor)


class TwoProcessesTests(RedisCase):
    """
    Two servers sharing one Redis, as two processes would.
    """

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = yield self.start_redis()
        self.a = yield self.start_server(self.redis.url)
        self.b = yield self.start_server(self.redis.url)

    @defer.inlineCallbacks
    def test_publicationReachesTheOtherServer(self):
        """
        A publication on one server reaches the subscribers of the other,
        the watchers of its exchange and the subscribers of its own.
        """
        client_a = yield self.client(self.a)
        client_b = yield self.client(self.b)
        on_a = yield self.subscribed(client_a, "news")
        on_b = yield self.subscribed(client_b, "news")
        watched_b = yield self.watched(self.b, "news")
        channels = yield self.redis.command("PUBSUB", "CHANNELS")
        self.assertEqual(channels, ["scserver:news"])

        result = yield self.a.exchange.publish("news", {"title": "hello", "n": 2**70})
        self.assertIsNone(result)
        yield client_a.publish("news", "from a client of a")
        for collector in (on_a, on_b, watched_b):
            items = yield collector.wait_for(2)
            self.assertEqual(items, [{"title": "hello", "n": 2**70}, "from a client of a"])
        self.assertEqual(self.a.warnings + self.b.warnings, [])

    @defer.inlineCallbacks
    def test_unsubscribeLast(self):
        """
        The Redis subscription goes when the last local subscriber leaves.
        """
        client_b = yield self.client(self.b)
        yield self.subscribed(client_b, "x")
        self.assertEqual((yield self.redis.command("PUBSUB", "NUMSUB", "scserver:x")),
                         ["scserver:x", 1])
        unsubscribed = defer.Deferred()
        unsubscribe = self.b.broker.unsubscribe

        def spy(channel):
            d = unsubscribe(channel)
            d.addCallback(unsubscribed.callback)
            return d

        self.patch(self.b.broker, "unsubscribe", spy)
        client_b.unsubscribe("x")
        yield self.wait(unsubscribed)
        self.assertEqual((yield self.redis.command("PUBSUB", "NUMSUB", "scserver:x")),
                         ["scserver:x", 0])
        self.assertEqual(self.b.broker.subscriptions, set())

    @defer.inlineCallbacks
    def test_orderPerPublisher(self):
        """
        Publications from one process on one channel arrive in the order
        they were published, in another process.
        """
        watched = yield self.watched(self.b, "ticks")
        published = [self.a.exchange.publish("ticks", i) for i in range(300)]
        yield self.wait(defer.gatherResults(published))
        items = yield watched.wait_for(300)
        self.assertEqual(items, list(range(300)))

    @defer.inlineCallbacks
    def test_cannotCarry(self):
        """
        Data the envelope cannot carry fails the publication with a
        BrokerError.
        """
        error = yield self.assertFailure(self.a.exchange.publish("x", {1, 2}), BrokerError)
        self.assertIn("cannot travel", str(error))

    @defer.inlineCallbacks
    def test_prefixSeparatesApplications(self):
        """
        Servers with another C{broker_prefix} share the Redis but not the
        channels.
        """
        other = yield self.start_server(self.redis.url, broker_prefix="other-app:")
        watched_b = yield self.watched(self.b, "news")
        watched_other = yield self.watched(other, "news")
        channels = yield self.redis.command("PUBSUB", "CHANNELS")
        self.assertEqual(sorted(channels), ["other-app:news", "scserver:news"])
        yield self.a.exchange.publish("news", "for scserver:")
        yield watched_b.wait_for(1)
        # Redis sends what it is given in order: had the first publication
        # reached the other application, it would come before this one.
        yield other.exchange.publish("news", "for other-app:")
        items = yield watched_other.wait_for(1)
        self.assertEqual(items, ["for other-app:"])
        self.assertEqual(watched_b.items, ["for scserver:"])


class MinBinTests(RedisCase):
    """
    Binary payloads of min-bin clients cross Redis intact.
    """

    @defer.inlineCallbacks
    def test_binaryEndToEnd(self):
        redis = yield self.start_redis()
        a = yield self.start_server(redis.url, codec_engine="min-bin")
        b = yield self.start_server(redis.url, codec_engine="min-bin")
        client_a = yield self.client(a, codec_engine=MinBinCodec())
        client_b = yield self.client(b, codec_engine=MinBinCodec())
        on_b = yield self.subscribed(client_b, "files")
        watched_b = yield self.watched(b, "files")
        payload = {"name": "blob", "data": bytes(range(256)) * 4, "empty": b"",
                   "n": -2**63, "u": 2**64 - 1, "list": [b"\x00", "\u00e9", 1.5]}
        yield client_a.publish("files", payload)
        [received] = yield on_b.wait_for(1)
        self.assertEqual(received, payload)
        self.assertIs(type(received["data"]), bytes)
        [watched] = yield watched_b.wait_for(1)
        self.assertEqual(watched, payload)


class ShardTests(RedisCase):
    """
    Two Redis servers as two shards.
    """

    @defer.inlineCallbacks
    def test_channelsSpreadOverShards(self):
        first = yield self.start_redis()
        second = yield self.start_redis()
        url = "redis://127.0.0.1:{},redis://127.0.0.1:{}".format(first.port, second.port)
        a = yield self.start_server(url)
        b = yield self.start_server(url)
        names = ["room-{}".format(i) for i in range(20)]
        collectors = {}
        for name in names:
            collectors[name] = yield self.watched(b, name)
        expected = [sorted("scserver:" + n for n in names if shard_index(n, 2) == i)
                    for i in range(2)]
        self.assertTrue(expected[0] and expected[1])
        for redis, channels in zip((first, second), expected):
            self.assertEqual(sorted((yield redis.command("PUBSUB", "CHANNELS"))), channels)
        yield defer.gatherResults([a.exchange.publish(n, n) for n in names])
        for name in names:
            items = yield collectors[name].wait_for(1)
            self.assertEqual(items, [name])


class OtherConnectionsTests(RedisCase):
    """
    UNIX sockets, databases and passwords.
    """

    @defer.inlineCallbacks
    def test_unixSocketAndTCP(self):
        """
        A server on the UNIX socket (and a db, which pub/sub ignores) and
        one on TCP share the channels.
        """
        redis = yield self.start_redis()
        a = yield self.start_server("unix://{}?db=3".format(redis.unix_socket))
        b = yield self.start_server(redis.url + "/5")
        watched = yield self.watched(b, "c")
        yield a.exchange.publish("c", "over unix")
        self.assertEqual((yield watched.wait_for(1)), ["over unix"])

    @defer.inlineCallbacks
    def test_password(self):
        """
        A password in the URL authenticates both connections.
        """
        redis = yield self.start_redis(password="s3cr@t")
        url = "redis://:s3cr%40t@127.0.0.1:{}/1".format(redis.port)
        a = yield self.start_server(url)
        b = yield self.start_server(url)
        watched = yield self.watched(b, "c")
        yield a.exchange.publish("c", "authenticated")
        self.assertEqual((yield watched.wait_for(1)), ["authenticated"])

    @defer.inlineCallbacks
    def test_tls(self):
        """
        C{rediss://}: TLS, the certificate checked as C{tls_options} says
        (here: against a test certificate authority).  A server on TLS and
        one on plain TCP share the channels.
        """
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        from tests.test_interop_tls import make_self_signed

        key, cert = make_self_signed(self.mktemp())
        redis = yield self.start_redis(tls=(key, cert))
        with open(cert) as f:
            authority = Certificate.loadPEM(f.read())
        url = "rediss://localhost:{}/0".format(redis.tls_port)
        a = yield self.start_server(url, broker_options={
            "tls_options": lambda host: optionsForClientTLS(host, trustRoot=authority)})
        b = yield self.start_server(redis.url)
        watched = yield self.watched(b, "c")
        yield a.exchange.publish("c", "over TLS")
        self.assertEqual((yield watched.wait_for(1)), ["over TLS"])

    @defer.inlineCallbacks
    def test_tlsVerified(self):
        """
        By default the certificate is checked against the system's trust
        store: a self-signed one is refused, and the server is not ready.
        """
        from tests.test_interop_tls import make_self_signed

        key, cert = make_self_signed(self.mktemp())
        redis = yield self.start_redis(tls=(key, cert))
        log = LogWatcher(self, "Waiting for")
        server = self.make_server("rediss://localhost:{}".format(redis.tls_port))
        waiting = log.next()
        yield server.listen("tcp:0:interface=127.0.0.1")
        event = yield waiting
        self.assertIn("certificate", event["reason"])
        self.assertFalse(server.is_ready)

    @defer.inlineCallbacks
    def test_wrongPassword(self):
        """
        A wrong password: the server is not ready, and the log says why.
        """
        redis = yield self.start_redis(password="right")
        log = LogWatcher(self, "Waiting for")
        server = self.make_server("redis://:wrong@127.0.0.1:{}".format(redis.port))
        waiting = log.next()
        yield server.listen("tcp:0:interface=127.0.0.1")
        event = yield waiting
        self.assertIn("WRONGPASS", event["reason"])
        self.assertFalse(server.is_ready)


class FaultTests(RedisCase):
    """
    Redis going away and coming back, at start-up and while serving.
    """

    @defer.inlineCallbacks
    def test_startupWaitsForRedis(self):
        """
        With Redis down the server is not ready, and the log says what it
        waits for; it is ready once Redis is up.
        """
        port = free_port()
        log = LogWatcher(self, "Waiting for")
        server = self.make_server("redis://127.0.0.1:{}".format(port))
        ready = self.when_ready(server)
        waiting = log.next()
        yield server.listen("tcp:0:interface=127.0.0.1")
        event = yield waiting
        self.assertEqual(event["shard"], "Redis redis://127.0.0.1:{}/0".format(port))
        self.assertFalse(server.is_ready)
        self.assertFalse(ready.called)
        yield self.start_redis(port=port)
        yield ready
        self.assertTrue(server.is_ready)
        self.assertEqual(server.warnings, [])

    @defer.inlineCallbacks
    def test_subscribeBeforeConnected(self):
        """
        A server-side channel subscribed at start-up, before the broker
        connected (as an C{--app} setup does, with Redis still down),
        is subscribed once Redis is up and sees publications.
        """
        port = free_port()
        server = self.make_server("redis://127.0.0.1:{}".format(port))
        seen = Collector()
        channel = server.exchange.subscribe("early")
        channel.watch(seen)
        ready = self.when_ready(server)
        yield server.listen("tcp:0:interface=127.0.0.1")
        self.assertEqual(channel.state, channel.PENDING)
        redis = yield self.start_redis(port=port)
        yield ready
        self.assertEqual(channel.state, channel.SUBSCRIBED)
        subscribed = yield redis.command("PUBSUB", "CHANNELS", "*")
        self.assertIn("scserver:early", subscribed)
        other = yield self.start_server(redis.url)
        yield other.exchange.publish("early", "hello")
        got = yield seen.wait_for(1)
        self.assertEqual(got, ["hello"])

    @defer.inlineCallbacks
    def test_outage(self):
        """
        Redis killed: publications fail with BrokerError, each server warns
        once and logs once; Redis back: the subscriptions are restored and
        publications flow again.
        """
        redis = yield self.start_redis()
        a = yield self.start_server(redis.url)
        b = yield self.start_server(redis.url)
        client_b = yield self.client(b)
        on_b = yield self.subscribed(client_b, "news")
        watched_b = yield self.watched(b, "watched")
        yield a.exchange.publish("news", "before")
        yield on_b.wait_for(1)
        lost = LogWatcher(self, "Lost the")
        back = LogWatcher(self, "{shard} is back")

        warned = [self.when_warned(a), self.when_warned(b)]
        yield redis.kill()
        errors = yield defer.gatherResults(warned)
        for error in errors:
            self.assertIsInstance(error, BrokerError)
            self.assertIn("Lost the", str(error))
        yield self.assertFailure(a.exchange.publish("news", "during"), BrokerError)
        yield self.assertFailure(b.exchange.channel("new").subscribe(), BrokerError)
        error = yield self.assertFailure(client_b.publish("news", "during"), Exception)
        self.assertEqual(getattr(error, "name", None), "BrokerError")
        self.assertFalse(a.broker.connected)

        yield redis.start()
        yield self.wait(defer.gatherResults([a.broker.when_connected(),
                                             b.broker.when_connected()]))
        channels = yield redis.command("PUBSUB", "CHANNELS")
        self.assertEqual(sorted(channels), ["scserver:news", "scserver:watched"])
        yield a.exchange.publish("news", "after")
        yield a.exchange.publish("watched", "after")
        self.assertEqual((yield on_b.wait_for(2)), ["before", "after"])
        self.assertEqual((yield watched_b.wait_for(1)), ["after"])
        self.assertEqual(len(a.warnings), 1)
        self.assertEqual(len(b.warnings), 1)
        self.assertEqual(len(lost.events), 2)
        self.assertEqual(len(back.events), 2)
        self.assertEqual(sorted(event["count"] for event in back.events), [0, 2])

    @defer.inlineCallbacks
    def test_closeAndListenAgain(self):
        """
        A server closed and listening again connects again, and its
        server-side channels are subscribed again.
        """
        redis = yield self.start_redis()
        a = yield self.start_server(redis.url)
        b = yield self.start_server(redis.url)
        watched = yield self.watched(b, "c")
        yield b.close()
        self.assertEqual((yield redis.command("PUBSUB", "CHANNELS")), [])
        ready = self.when_ready(b)
        yield b.listen("tcp:0:interface=127.0.0.1")
        yield ready
        self.assertEqual((yield redis.command("PUBSUB", "CHANNELS")), ["scserver:c"])
        yield a.exchange.publish("c", "again")
        self.assertEqual((yield watched.wait_for(1)), ["again"])

    @defer.inlineCallbacks
    def test_closedBeforeConnected(self):
        """
        A server closed while it waited for Redis does not become ready
        when Redis comes; listening again, it becomes ready once.
        """
        port = free_port()
        log = LogWatcher(self, "Waiting for")
        server = self.make_server("redis://127.0.0.1:{}".format(port))
        readies = []
        server.on("ready", lambda: readies.append(server.running))
        waiting = log.next()
        yield server.listen("tcp:0:interface=127.0.0.1")
        yield waiting
        yield server.close()
        redis = yield self.start_redis(port=port)
        ready = self.when_ready(server)
        yield server.listen("tcp:0:interface=127.0.0.1")
        yield ready
        # One more round trip through Redis: a second "ready" would be out.
        yield redis.command("PING")
        yield server.broker.when_connected()
        self.assertEqual(readies, [True])


class StartupLogTests(unittest.SynchronousTestCase):
    """
    While the broker waits for Redis at start-up the log says so every
    C{wait_log_interval} seconds, not at every attempt (on a memory
    reactor whose dials the test refuses).
    """

    def test_everyFewSeconds(self):
        from twisted.internet.error import ConnectionRefusedError
        from twisted.internet.testing import MemoryReactorClock
        from twisted.python.failure import Failure

        clock = MemoryReactorClock()
        log = LogWatcher(self, "Waiting for")
        broker = RedisBroker.from_url("unix:///nonexistent/redis.sock", clock,
                                      reconnect_initial_delay=0.1, reconnect_max_delay=1,
                                      wait_log_interval=5)
        started = broker.start(lambda channel, data: None)
        refused = 0
        for _ in range(130):  # 13 s of refused dials, both connections
            while len(clock.unixClients) > refused:
                factory = clock.unixClients[refused][1]
                refused += 1
                factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
            clock.advance(0.1)
        self.assertNoResult(started)
        self.assertGreater(refused, 20)
        self.assertEqual(len(log.events), 3)  # at 0 s, 5 s and 10 s
        self.assertEqual(log.events[0]["shard"], "Redis unix:///nonexistent/redis.sock")
        self.successResultOf(broker.stop())
        self.assertEqual(clock.getDelayedCalls(), [])
