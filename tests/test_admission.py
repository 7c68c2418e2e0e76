"""
Admission and fairness: the connection limits (C{max_connections},
C{max_connections_per_ip}), the inbound budget of a socket
(C{max_messages_per_second}, C{max_bytes_per_second}), the requests in
flight (C{max_inflight_requests}), the batch size (C{max_batch_size}) and
the channel name length (C{max_channel_name_length}).
"""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from scserver import SCServer
from scserver._engine import CLOSE_BATCH_TOO_LARGE, CLOSE_RATE_LIMIT
from scserver._metrics import render
from scserver.errors import InvalidOptionsError, ResourceLimitError
from scserver._transport import client_address
from scserver.options import DEFAULTS, validate_options
from scserver.testing import FakeConnection, MemoryNetwork, make_server
from tests.test_hardening_transport import REQUEST, RawFactory


class DefaultsTests(SynchronousTestCase):
    """
    The defaults never bite a normal application, and bound the abuses.
    """

    def test_defaults(self):
        self.assertIsNone(DEFAULTS["max_connections"])
        self.assertIsNone(DEFAULTS["max_connections_per_ip"])
        self.assertEqual(DEFAULTS["max_messages_per_second"], 2000)
        self.assertEqual(DEFAULTS["max_bytes_per_second"], 8 * 1024 * 1024)
        self.assertEqual(DEFAULTS["max_inflight_requests"], 2000)
        self.assertEqual(DEFAULTS["max_batch_size"], 2000)
        self.assertEqual(DEFAULTS["max_channel_name_length"], 256)
        self.assertEqual(DEFAULTS["max_messages_per_turn"], 100)
        # A client resubscribing to every channel it may hold, in one batch
        # or one request each, stays within the defaults.
        self.assertGreater(DEFAULTS["max_batch_size"], DEFAULTS["socket_channel_limit"])
        self.assertGreater(DEFAULTS["max_inflight_requests"], DEFAULTS["socket_channel_limit"])
        self.assertGreater(DEFAULTS["max_messages_per_second"], DEFAULTS["socket_channel_limit"])
        # The largest message allowed always fits in the byte budget.
        self.assertGreaterEqual(DEFAULTS["max_bytes_per_second"], DEFAULTS["max_payload"])

    def test_badValues(self):
        for name in ("max_connections", "max_connections_per_ip", "max_messages_per_second",
                     "max_bytes_per_second", "max_inflight_requests", "max_batch_size",
                     "max_messages_per_turn", "max_channel_name_length"):
            for value in (0, -1, "many"):
                self.assertRaises(InvalidOptionsError, make_server, **{name: value})
        server = make_server(max_connections="10", max_messages_per_second="2.5",
                             max_batch_size=None)
        self.assertEqual(server.options["max_connections"], 10)
        self.assertEqual(server.options["max_messages_per_second"], 2.5)
        self.assertIsNone(server.options["max_batch_size"])
        self.assertRaises(InvalidOptionsError, make_server, max_channel_name_length=None)

    def test_limitsOff(self):
        """
        With every limit off, the engine's per-message checks are one
        attribute each.
        """
        server = make_server(max_messages_per_second=None, max_bytes_per_second=None,
                             max_inflight_requests=None, max_batch_size=None)
        conn = FakeConnection(server)
        conn.handshake()
        engine = conn.socket._engine
        self.assertIsNone(engine._budget)
        self.assertIsNone(engine._inflight)
        self.assertIsNone(engine.max_batch_size)
        conn.send([{"event": "x"}] * 5000)
        self.assertIsNone(conn.closed)


class ConnectionLimitTests(SynchronousTestCase):
    """
    C{max_connections} and C{max_connections_per_ip} refuse the upgrade
    (503, 429) before the WebSocket opens; a connection that is gone makes
    room.
    """

    def connect(self):
        connection = self.network.connect_protocol(RawFactory())
        connection.client_protocol.transport.write(REQUEST)
        self.network.flush()
        return connection

    def test_maxConnections(self):
        self.server = make_server(max_connections=2)
        self.network = MemoryNetwork(self.server)
        first, second = self.connect(), self.connect()
        for connection in (first, second):
            self.assertTrue(connection.client_protocol.received.startswith(b"HTTP/1.1 101 "))
        self.assertEqual(self.server.connections_count, 2)
        third = self.connect()
        received = third.client_protocol.received
        self.assertTrue(received.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), received)
        self.assertIn(b"connection limit (2)", received)
        self.assertIn(b"\r\nRetry-After: 5\r\n", received)
        self.assertEqual(self.server.stats.refused, {"503": 1})
        self.assertIn(b'scserver_upgrades_refused_total{status="503"} 1.0',
                      render(self.server.metrics_registry))
        self.assertTrue(third.client_protocol.lost)
        self.assertIsNone(third.server_protocol.sc_socket)
        self.assertEqual(len(self.server.pending_clients), 2)
        self.assertEqual(self.server.connections_count, 2)
        first.drop()
        self.network.flush()
        self.assertEqual(self.server.connections_count, 1)
        fourth = self.connect()
        self.assertTrue(fourth.client_protocol.received.startswith(b"HTTP/1.1 101 "))
        self.assertEqual(self.server.connections_count, 2)

    def test_maxConnectionsPerIp(self):
        self.server = make_server(max_connections_per_ip=1)
        self.network = MemoryNetwork(self.server)
        first = self.connect()
        self.assertTrue(first.client_protocol.received.startswith(b"HTTP/1.1 101 "))
        second = self.connect()
        received = second.client_protocol.received
        self.assertTrue(received.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), received)
        self.assertIn(b"Too many connections from 127.0.0.1", received)
        self.assertIn(b"\r\nRetry-After: 5\r\n", received)
        self.assertEqual(self.server.stats.refused, {"429": 1})
        first.drop()
        self.network.flush()
        third = self.connect()
        self.assertTrue(third.client_protocol.received.startswith(b"HTTP/1.1 101 "))

    def test_refusedByMiddlewareReleases(self):
        """A connection admitted, then refused by handshakeWS middleware, is given back."""
        self.server = make_server(max_connections=1)
        self.network = MemoryNetwork(self.server)
        self.server.add_middleware(SCServer.MIDDLEWARE_HANDSHAKE_WS,
                                   lambda req, next: next(Exception("no")))
        for _ in range(3):
            connection = self.connect()
            self.assertTrue(connection.client_protocol.received.startswith(b"HTTP/1.1 401 "))
        self.network.flush()
        self.assertEqual(self.server.connections_count, 0)

    def test_behindTwistedWeb(self):
        """The limits apply behind C{twisted.web} (L{SCServer.resource}) too."""
        self.network = MemoryNetwork(clock=Clock())
        self.server = make_server(self.network.reactor, max_connections=1)
        root = Resource()
        root.putChild(b"socketcluster", self.server.resource)
        port = self.network.reactor.listenTCP(0, Site(root, reactor=self.network.reactor))
        self.addCleanup(port.stopListening)
        connections = []
        for _ in range(2):
            connection = self.network.connect_protocol(RawFactory(port.getHost().port))
            connection.client_protocol.transport.write(REQUEST)
            self.network.flush()
            connections.append(connection)
        self.assertTrue(connections[0].client_protocol.received.startswith(b"HTTP/1.1 101 "))
        self.assertIn(b" 503 ", connections[1].client_protocol.received.split(b"\r\n")[0])
        self.assertEqual(self.server.connections_count, 1)
        connections[0].drop()
        self.network.flush()
        self.assertEqual(self.server.connections_count, 0)

    def test_perAddressCounts(self):
        """Each address has its own count; an unknown address counts only in the total."""
        server = make_server(max_connections=3, max_connections_per_ip=1)
        self.assertIsNone(server.admit_connection("10.0.0.1"))
        self.assertEqual(server.admit_connection("10.0.0.1")[0], 429)
        self.assertIsNone(server.admit_connection("10.0.0.2"))
        self.assertIsNone(server.admit_connection(None))
        self.assertEqual(server.admit_connection("10.0.0.3")[0], 503)
        server.release_connection("10.0.0.1")
        self.assertIsNone(server.admit_connection("10.0.0.3"))
        self.assertEqual(server.connections_count, 3)
        for address in ("10.0.0.2", "10.0.0.3", None, "10.0.0.9"):
            server.release_connection(address)
        self.assertEqual(server.connections_count, 0)


class ForwardedForTests(SynchronousTestCase):
    """
    C{trusted_proxies}: the client's address is read from
    C{X-Forwarded-For} when, and only as far as, the hops are trusted.
    """

    def test_clientAddress(self):
        trusted = validate_options({"trusted_proxies": "10.0.0.0/8, ::1"})["trusted_proxies"]
        cases = [
            # peer, X-Forwarded-For, expected
            ("10.1.1.1", "203.0.113.7", "203.0.113.7"),
            ("10.1.1.1", "198.51.100.1, 203.0.113.7", "203.0.113.7"),
            # A trusted hop in the chain vouches for the one before it.
            ("10.1.1.1", "198.51.100.1, 10.2.2.2", "198.51.100.1"),
            ("::1", "2001:db8::5", "2001:db8::5"),
            # An untrusted peer's header is ignored: anybody can send one.
            ("203.0.113.9", "198.51.100.1", "203.0.113.9"),
            # Garbage ends the walk at the last address vouched for.
            ("10.1.1.1", "198.51.100.1, nonsense", "10.1.1.1"),
            ("10.1.1.1", "", "10.1.1.1"),
            ("10.1.1.1", None, "10.1.1.1"),
            (None, "198.51.100.1", None),
        ]
        for peer, header, expected in cases:
            self.assertEqual(client_address(peer, header, trusted), expected, (peer, header))
        self.assertEqual(client_address("10.1.1.1", "198.51.100.1", None), "10.1.1.1")
        # Only the last MAX_FORWARDED_HOPS entries are read.
        header = ", ".join(["198.51.100.1"] + ["10.0.0.1"] * 40)
        self.assertEqual(client_address("10.1.1.1", header, trusted), "10.0.0.1")

    def test_badOption(self):
        self.assertRaises(InvalidOptionsError, make_server, trusted_proxies="not-an-address")
        self.assertIsNone(make_server(trusted_proxies="").options["trusted_proxies"])

    def test_perAddressLimit(self):
        """Behind a trusted proxy, max_connections_per_ip counts each client."""
        server = make_server(max_connections_per_ip=1, trusted_proxies="127.0.0.1")
        network = MemoryNetwork(server)

        def connect(client):
            connection = network.connect_protocol(RawFactory())
            connection.client_protocol.transport.write(REQUEST.replace(
                b"\r\n\r\n", b"\r\nX-Forwarded-For: " + client + b"\r\n\r\n"))
            network.flush()
            return connection.client_protocol.received.split(b"\r\n")[0]

        self.assertIn(b" 101 ", connect(b"198.51.100.1"))
        self.assertIn(b" 101 ", connect(b"198.51.100.2"))
        self.assertIn(b" 429 ", connect(b"198.51.100.1"))
        self.assertEqual(sorted(socket.remote_address for socket in server.pending_clients.values()),
                         ["198.51.100.1", "198.51.100.2"])


class BudgetTests(SynchronousTestCase):
    """
    A socket that sends more than C{max_messages_per_second} messages or
    C{max_bytes_per_second} bytes (one second's worth in a burst) is closed
    with 4100.
    """

    def setUp(self):
        self.clock = Clock()

    def test_messages(self):
        server = make_server(self.clock, max_messages_per_second=5)
        conn = FakeConnection(server)
        conn.handshake()
        for _ in range(4):
            conn.emit("x")
        self.assertIsNone(conn.closed)
        # The budget refills with time.
        self.clock.advance(0.4)
        conn.emit("x")
        conn.emit("x")
        self.assertIsNone(conn.closed)
        conn.emit("x")
        self.assertEqual(conn.closed, (CLOSE_RATE_LIMIT, "Inbound rate limit exceeded"))
        self.assertEqual(conn.state, "closed")

    def test_steadyRateWithin(self):
        """A socket sending at its rate for a long time is never closed."""
        server = make_server(self.clock, max_messages_per_second=10)
        conn = FakeConnection(server)
        conn.handshake()
        for _ in range(1000):
            self.clock.advance(0.1)
            conn.emit("x")
        self.assertIsNone(conn.closed)

    def test_bytes(self):
        server = make_server(self.clock, max_bytes_per_second=2000, max_payload=1000,
                             max_messages_per_second=None)
        conn = FakeConnection(server)
        conn.handshake()
        conn.emit("x", "a" * 1500)
        self.assertIsNone(conn.closed)
        conn.emit("x", "a" * 600)
        self.assertEqual(conn.closed[0], CLOSE_RATE_LIMIT)

    def test_burstAtLeastMaxPayload(self):
        """The byte bucket holds at least max_payload: the largest message fits."""
        server = make_server(self.clock, max_bytes_per_second=100, max_payload=5000)
        conn = FakeConnection(server)
        conn.handshake()
        conn.emit("x", "a" * 4000)
        self.assertIsNone(conn.closed)


class CooldownTests(SynchronousTestCase):
    """
    After a socket was closed 4100, new sockets from its address start with
    1/20 of the burst for C{rate_limit_cooldown} seconds; other addresses,
    and the same address once cooled down, get the full burst.
    """

    def setUp(self):
        self.clock = Clock()
        self.server = make_server(self.clock, max_messages_per_second=100)

    def burst(self, address):
        """How many messages a new socket from C{address} may send at once."""
        conn = FakeConnection(self.server, remote_address=address)
        conn.handshake()
        sent = 0
        while conn.closed is None and sent < 1000:
            conn.emit("x")
            sent += 1
        self.assertEqual(conn.closed, (CLOSE_RATE_LIMIT, "Inbound rate limit exceeded"))
        # The last message did not fit; the #handshake counted too.
        return sent - 1

    def test_cooldown(self):
        self.assertEqual(DEFAULTS["rate_limit_cooldown"], 10.0)
        self.assertEqual(self.burst("10.0.0.1"), 99)
        # Cut off once: the next socket from there has 5 messages' worth.
        self.assertEqual(self.burst("10.0.0.1"), 4)
        self.assertEqual(self.burst("10.0.0.2"), 99)
        self.clock.advance(9.9)
        self.assertEqual(self.burst("10.0.0.1"), 4)
        # Each cut-off starts the cooldown again; past it, the full burst.
        self.clock.advance(10.0)
        self.assertEqual(self.burst("10.0.0.1"), 99)

    def test_steadyRateUnaffected(self):
        """A socket from a cooling address that keeps to the rate is not closed."""
        self.burst("10.0.0.1")
        conn = FakeConnection(self.server, remote_address="10.0.0.1")
        conn.handshake()
        for _ in range(500):
            self.clock.advance(0.011)
            conn.emit("x")
        self.assertIsNone(conn.closed)

    def test_off(self):
        for value in (None, 0):
            server = make_server(self.clock, max_messages_per_second=100,
                                 rate_limit_cooldown=value)
            self.server = server
            self.assertEqual(self.burst("10.0.0.1"), 99)
            self.assertEqual(self.burst("10.0.0.1"), 99)
        self.assertRaises(InvalidOptionsError, make_server, rate_limit_cooldown=-1)

    def test_bounded(self):
        """The table of cooling addresses forgets the oldest beyond its size."""
        from scserver import server as server_module
        self.patch(server_module, "MAX_COOLING_ADDRESSES", 3)
        for i in range(4):
            self.burst("10.0.0.{}".format(i))
        self.assertEqual(self.burst("10.0.0.0"), 99)
        self.assertEqual(self.burst("10.0.0.3"), 4)


class BatchSizeTests(SynchronousTestCase):
    """A batch of more than C{max_batch_size} packets closes the socket with 4101."""

    def test_batch(self):
        server = make_server(max_batch_size=10)
        conn = FakeConnection(server)
        conn.handshake()
        handled = []
        conn.socket.on("x", lambda data, respond: handled.append(data))
        conn.send([{"event": "x", "data": i} for i in range(10)])
        self.assertEqual(handled, list(range(10)))
        self.assertIsNone(conn.closed)
        conn.send([{"event": "x", "data": i} for i in range(11)])
        self.assertEqual(handled, list(range(10)))
        self.assertEqual(conn.closed, (CLOSE_BATCH_TOO_LARGE, "Batch too large"))

    def test_default(self):
        """The batch of the report (27,884 events) is refused before any is handled."""
        server = make_server()
        conn = FakeConnection(server)
        conn.handshake()
        handled = []
        conn.socket.on("x", lambda data, respond: handled.append(data))
        conn.send([{"event": "x", "data": 1}] * 27884)
        self.assertEqual(handled, [])
        self.assertEqual(conn.closed[0], CLOSE_BATCH_TOO_LARGE)


class InflightTests(SynchronousTestCase):
    """
    More than C{max_inflight_requests} requests not answered yet: the next
    one is answered with a ResourceLimitError, its handler does not run.
    """

    def setUp(self):
        self.clock = Clock()
        self.server = make_server(self.clock, max_inflight_requests=2)
        self.conn = FakeConnection(self.server)
        self.conn.handshake()
        self.calls = []

        def slow(data, respond):
            self.calls.append(respond)
            return Deferred()

        self.conn.socket.on("slow", slow)

    def test_limit(self):
        conn = self.conn
        first = conn.invoke("slow", 1)
        conn.invoke("slow", 2)
        self.assertEqual(len(self.calls), 2)
        refused = conn.invoke("slow", 3)
        self.assertEqual(len(self.calls), 2)
        error = self.failureResultOf(refused, ResourceLimitError).value
        self.assertIn("the limit is 2", str(error))
        self.assertIsNone(conn.closed)
        # An answer makes room.
        self.calls[0](None, "done")
        self.assertEqual(self.successResultOf(first), "done")
        conn.invoke("slow", 4)
        self.assertEqual(len(self.calls), 3)
        self.failureResultOf(conn.invoke("slow", 5), ResourceLimitError)

    def test_sameCidCountsEachTime(self):
        """A client that reuses one cid does not get past the limit."""
        for _ in range(2):
            self.conn.emit("slow", None, cid=7)
        self.conn.pop_sent()
        self.conn.emit("slow", None, cid=7)
        self.assertEqual(len(self.calls), 2)
        self.assertEqual(self.conn.pop_sent()[0]["error"]["name"], "ResourceLimitError")

    def test_unansweredExpire(self):
        """A request unanswered for ack_timeout no longer counts."""
        self.conn.invoke("slow")
        self.conn.invoke("slow")
        self.clock.advance(self.server.options["ack_timeout"])
        self.conn.invoke("slow")
        self.assertEqual(len(self.calls), 3)

    def test_noHandler(self):
        """A request nobody handles (no handler, a reserved event) does not count."""
        for event in ("nobody", "error", "nobody", "connect"):
            self.conn.invoke(event)
        self.conn.invoke("slow")
        self.conn.invoke("slow")
        self.assertEqual(len(self.calls), 2)
        self.assertEqual(self.conn.socket._engine.inflight_requests, 2)

    def test_notifications(self):
        """Events without a cid are not requests."""
        for _ in range(5):
            self.conn.emit("slow")
        self.assertEqual(len(self.calls), 5)

    def test_subscribe(self):
        """#subscribe is a request: one waiting for its middleware counts."""
        waiting = []
        self.server.add_middleware(SCServer.MIDDLEWARE_SUBSCRIBE,
                                   lambda req, next: waiting.append(next))
        self.conn.subscribe("a")
        self.conn.subscribe("b")
        refused = self.conn.subscribe("c")
        self.assertEqual(len(waiting), 2)
        self.failureResultOf(refused, ResourceLimitError)
        waiting[0]()
        self.assertEqual(self.conn.socket.subscriptions(), ["a"])
        self.conn.subscribe("d")
        self.assertEqual(len(waiting), 3)

    def test_closeForgets(self):
        d = self.conn.invoke("slow")
        self.conn.socket.disconnect()
        self.failureResultOf(d)
        self.assertEqual(self.conn.socket._engine.inflight_requests, 0)


class ChannelNameTests(SynchronousTestCase):
    """Channel names are at most C{max_channel_name_length} characters (256 by default)."""

    def test_default(self):
        conn = FakeConnection(make_server())
        conn.handshake()
        self.successResultOf(conn.subscribe("a" * 256))
        error = self.failureResultOf(conn.subscribe("a" * 257)).value
        self.assertIn("exceeds 256 characters", str(error))
        error = self.failureResultOf(conn.invoke("#publish", {"channel": "b" * 257})).value
        self.assertIn("exceeds 256 characters", str(error))

    def test_option(self):
        conn = FakeConnection(make_server(max_channel_name_length=4))
        conn.handshake()
        self.successResultOf(conn.subscribe("abcd"))
        self.failureResultOf(conn.subscribe("abcde"))


def _frame(text):
    """A masked (zero mask) WebSocket text frame, as a client sends it."""
    payload = text.encode("utf-8")
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def _close_frame(code):
    """A masked client close frame with C{code}."""
    payload = code.to_bytes(2, "big")
    mask = b"\x01\x02\x03\x04"
    return bytes([0x88, 0x80 | len(payload)]) + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))


class FairnessTests(SynchronousTestCase):
    """
    A connection handles at most C{max_messages_per_turn} messages in one
    reactor turn, then stops reading until the next: a flooding client
    does not keep the others waiting.
    """

    def open(self, handled, name):
        connection = self.network.connect_protocol(RawFactory())
        connection.client_protocol.transport.write(
            REQUEST + _frame('{"event":"#handshake","cid":1}'))
        self.network.flush()
        socket = connection.server_protocol.sc_socket
        socket.on("x", lambda data, respond: handled.append((name, data)))
        return connection

    def test_turns(self):
        self.server = make_server(max_messages_per_turn=100)
        self.network = MemoryNetwork(self.server)
        handled = []
        flood = self.open(handled, "flood")
        calm = self.open(handled, "calm")
        flood.client_protocol.transport.write(
            b"".join(_frame('{"event":"x","data":%d}' % i) for i in range(250)))
        calm.client_protocol.transport.write(_frame('{"event":"x","data":0}'))
        self.network.flush()
        self.assertIn(("calm", 0), handled)
        self.assertEqual(len([h for h in handled if h[0] == "flood"]), 100)
        self.assertTrue(flood.server_protocol.transport.paused)
        self.network.advance(0)
        self.assertEqual([h[1] for h in handled if h[0] == "flood"], list(range(250)))
        self.assertFalse(flood.server_protocol.transport.paused)
        self.assertEqual(self.network.clock.getDelayedCalls() and [
            c for c in self.network.clock.getDelayedCalls() if c.getTime() == 0], [])

    def test_off(self):
        self.server = make_server(max_messages_per_turn=None)
        self.network = MemoryNetwork(self.server)
        handled = []
        flood = self.open(handled, "flood")
        flood.client_protocol.transport.write(
            b"".join(_frame('{"event":"x","data":%d}' % i) for i in range(250)))
        self.network.flush()
        self.assertEqual(len(handled), 250)

    def test_lostWhileYielding(self):
        """A connection gone while it yields leaves no call behind."""
        self.server = make_server(max_messages_per_turn=10)
        self.network = MemoryNetwork(self.server)
        handled = []
        flood = self.open(handled, "flood")
        flood.client_protocol.transport.write(
            b"".join(_frame('{"event":"x","data":%d}' % i) for i in range(25)))
        self.network.flush()
        self.assertEqual(len(handled), 10)
        self.assertIsNotNone(flood.server_protocol._turn_call)
        flood.drop()
        self.network.flush()
        self.assertIsNone(flood.server_protocol._turn_call)
        self.network.advance(0)
        self.assertEqual(len(handled), 10)


    def test_closedFlooderIsCutOff(self):
        """
        A flooder closed by its rate limit (4100) that keeps sending: past
        64 KiB unread the server stops reading it and ends the connection,
        instead of parsing the rest of the flood while the others wait.
        """
        self.server = make_server(max_messages_per_turn=100, max_messages_per_second=50)
        self.network = MemoryNetwork(self.server)
        handled = []
        flood = self.open(handled, "flood")
        calm = self.open(handled, "calm")
        frames = [_frame('{"event":"x","data":%d}' % i) for i in range(20000)]
        flood.client_protocol.transport.write(b"".join(frames))
        calm.client_protocol.transport.write(_frame('{"event":"x","data":0}'))
        self.network.flush()
        self.assertEqual(flood.server_protocol.sc_socket.state, "closed")
        self.assertIn(("calm", 0), handled)
        self.network.advance(0)
        self.network.flush()
        self.assertTrue(flood.closed)
        self.assertLess(len([h for h in handled if h[0] == "flood"]), 100)

    def test_closedFlooderInSmallReads(self):
        """
        The same when the flood arrives after the close in reads of 16 KiB:
        the frames are skipped without being parsed (autobahn never sees
        them as messages), and the connection ends once 64 KiB came after
        the close.
        """
        self.server = make_server(max_messages_per_turn=100)
        self.network = MemoryNetwork(self.server)
        handled = []
        flood = self.open(handled, "flood")
        protocol = flood.server_protocol
        flood.server_protocol.sc_socket.disconnect(4100, "Inbound rate limit exceeded")
        self.network.flush()
        parsed = []
        self.patch(protocol, "onMessageBegin", lambda *args: parsed.append(args))
        chunk = b"".join(_frame('{"event":"x","data":%d}' % i) for i in range(500))[:16384]
        for n in range(3):
            flood.client_protocol.transport.write(chunk)
            self.network.flush()
            self.assertFalse(flood.closed, n)
        self.assertEqual(parsed, [])
        self.assertLess(len(protocol.data), 100)
        flood.client_protocol.transport.write(chunk * 2)
        self.network.flush()
        self.network.advance(0)
        self.network.flush()
        self.assertTrue(flood.closed)
        self.assertEqual(parsed, [])

    def test_closeReplyAfterSkippedFrames(self):
        """Behind skipped data frames, the peer's close reply completes the close."""
        self.server = make_server(max_messages_per_turn=100)
        self.network = MemoryNetwork(self.server)
        handled = []
        flood = self.open(handled, "flood")
        flood.server_protocol.sc_socket.disconnect(4000, "bye")
        self.network.flush()
        flood.client_protocol.transport.write(
            b"".join(_frame('{"event":"x","data":%d}' % i) for i in range(50))
            + _close_frame(4000))
        self.network.flush()
        self.network.advance(0)
        self.network.flush()
        self.assertTrue(flood.closed)
        self.assertTrue(flood.server_protocol.wasClean)
        self.assertEqual([h for h in handled if h[0] == "flood"], [])

    def test_closedWhileYielding(self):
        """
        A socket closed while its reading is paused for the turn still
        reads the peer's close reply: the closing handshake completes.
        """
        self.server = make_server(max_messages_per_turn=10)
        self.network = MemoryNetwork(self.server)
        handled = []
        flood = self.open(handled, "flood")
        flood.client_protocol.transport.write(
            b"".join(_frame('{"event":"x","data":%d}' % i) for i in range(25)))
        self.network.flush()
        self.assertTrue(flood.server_protocol.transport.paused)
        flood.server_protocol.sc_socket.disconnect(4000, "bye")
        self.network.advance(0)
        self.assertFalse(flood.server_protocol.transport.paused)


class InflightSweepTests(SynchronousTestCase):
    """Refusals at the limit do not sweep the requests again and again."""

    def test_sweepOnlyWhenOneCanExpire(self):
        clock = Clock()
        server = make_server(clock, max_inflight_requests=3, max_messages_per_second=None)
        conn = FakeConnection(server)
        conn.handshake()
        conn.socket.on("slow", lambda data, respond: Deferred())
        engine = conn.socket._engine
        conn.emit("slow", None, cid=1)
        clock.advance(1)
        conn.emit("slow", None, cid=2)
        conn.emit("slow", None, cid=3)
        conn.emit("slow", None, cid=4)
        self.assertEqual(engine._inflight_sweep, server.options["ack_timeout"])
        sweeps = []
        real = engine._inflight

        class Counting(dict):
            def items(self):
                sweeps.append(1)
                return dict.items(self)

        engine._inflight = Counting(real)
        for cid in range(5, 105):
            conn.emit("slow", None, cid=cid)
        self.assertEqual(sweeps, [])
        clock.advance(server.options["ack_timeout"] - 0.5)
        conn.emit("slow", None, cid=200)
        self.assertEqual(sweeps, [1])
        self.assertEqual(engine.inflight_requests, 3)
        self.assertEqual(sorted(engine._inflight), [2, 3, 200])
