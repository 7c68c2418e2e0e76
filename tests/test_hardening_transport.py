"""
Production hardening of the transport: the bytes a client may send before
its WebSocket upgrade completes (C{max_handshake_size}), the open handshake
timeout against a client that trickles its request, and the listen backlog
of the endpoints scserver binds.
"""

from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from scserver import SCServer
from scserver._endpoints import DEFAULT_BACKLOG, with_default_backlog
from scserver._workers import WorkerPool
from scserver.errors import InvalidOptionsError
from scserver.testing import MemoryNetwork, make_server
from tests.test_workers import PoolReactor

REQUEST = (b"GET /socketcluster/ HTTP/1.1\r\n"
           b"Host: localhost\r\n"
           b"Upgrade: websocket\r\n"
           b"Connection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n"
           b"\r\n")
"""A valid WebSocket upgrade request."""


class RawClient(Protocol):
    """Writes what it is told to, records what it receives."""

    def connectionMade(self):
        self.received = b""
        self.lost = False

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.lost = True


class RawFactory(ClientFactory):
    protocol = RawClient

    def __init__(self, port=None):
        if port is not None:
            self.host, self.port = "127.0.0.1", port


class HandshakeSizeTests(SynchronousTestCase):
    """
    The C{max_handshake_size} option bounds what a connection buffers
    before its upgrade; the end of the request head is looked for only in
    the new bytes.
    """

    def setUp(self):
        from twisted.internet import reactor

        before = set(reactor.getDelayedCalls())
        self.addCleanup(lambda: self.assertEqual(
            [call for call in reactor.getDelayedCalls() if call not in before], []))

    def connect(self, **options):
        self.server = make_server(**options)
        self.network = MemoryNetwork(self.server)
        connection = self.network.connect_protocol(RawFactory())
        return connection

    def test_default(self):
        self.assertEqual(make_server().options["max_handshake_size"], 16384)

    def test_badValues(self):
        for value in (0, -1, "many"):
            self.assertRaises(InvalidOptionsError, make_server, max_handshake_size=value)
        self.assertEqual(make_server(max_handshake_size="2048").factory.max_handshake_size, 2048)
        self.assertIsNone(make_server(max_handshake_size=None).factory.max_handshake_size)

    def test_headThatNeverEnds(self):
        """
        A request head that never ends is answered 431 and closed once it
        passes the limit; the server buffered no more than the limit.
        """
        connection = self.connect(max_handshake_size=4096)
        client, server = connection.client_protocol, connection.server_protocol
        client.transport.write(b"GET /socketcluster/ HTTP/1.1\r\nHost: localhost\r\n")
        sent = 0
        while not client.lost and sent < 1024 * 1024:
            client.transport.write(b"X-Padding: " + b"a" * 1000 + b"\r\n")
            sent += 1013
            self.network.flush()
            self.assertLessEqual(len(getattr(server, "_head", None) or b"") + len(server.data), 4096)
        self.assertTrue(client.lost)
        self.assertLess(sent, 8192)
        self.assertTrue(client.received.startswith(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), client.received)
        self.assertIsNone(server.sc_socket)
        self.assertEqual(self.server.pending_clients, {})
        self.assertEqual(self.network.clock.getDelayedCalls(), [])

    def test_limitCountsEveryByte(self):
        """
        A head of exactly the limit is accepted; one byte more is not.
        """
        connection = self.connect(max_handshake_size=len(REQUEST))
        connection.client_protocol.transport.write(REQUEST)
        self.network.flush()
        self.assertTrue(connection.client_protocol.received.startswith(b"HTTP/1.1 101 "))
        self.assertEqual(len(self.server.pending_clients), 1)
        connection.drop()

        connection = self.network.connect_protocol(RawFactory())
        connection.client_protocol.transport.write(b" " + REQUEST)
        self.network.flush()
        self.assertTrue(connection.client_protocol.received.startswith(b"HTTP/1.1 431 "))

    def test_headScannedOnce(self):
        """
        autobahn parses the head once, when it is complete, not on every
        read (it searched its whole buffer for the blank line each time:
        quadratic); a head split anywhere, even inside its blank line,
        still upgrades.
        """
        for split in (1, 7, len(REQUEST) - 3, len(REQUEST) - 2, len(REQUEST) - 1):
            connection = self.connect()
            server = connection.server_protocol
            calls = []
            process = server.processHandshake

            def counting(process=process):
                calls.append(len(server.data))
                return process()

            server.processHandshake = counting
            client = connection.client_protocol
            for start in range(0, len(REQUEST), split):
                client.transport.write(REQUEST[start:start + split])
                self.network.flush()
            self.assertTrue(client.received.startswith(b"HTTP/1.1 101 "), (split, client.received))
            self.assertEqual(calls, [len(REQUEST)], split)
            self.assertEqual(len(self.server.pending_clients), 1)
            self.server.pending_clients.clear()

    def test_bytesWhileHandshakeMiddlewareRuns(self):
        """
        What a client sends after its head, while C{handshakeWS} middleware
        has not answered, counts against the limit (it was buffered
        without one); once allowed, the bytes that fit are frames the
        socket reads.
        """
        connection = self.connect(max_handshake_size=len(REQUEST) + 4096)
        waiting = []
        self.server.add_middleware(
            SCServer.MIDDLEWARE_HANDSHAKE_WS, lambda req, next: waiting.append(next))
        client = connection.client_protocol
        client.transport.write(REQUEST)
        self.network.flush()
        self.assertEqual(len(waiting), 1)
        self.assertEqual(client.received, b"")
        for _ in range(8):
            client.transport.write(b"\r\n\r\n" + b"x" * 1000)
            self.network.flush()
        self.assertTrue(client.lost)
        self.assertTrue(client.received.startswith(b"HTTP/1.1 431 "), client.received)
        # The middleware allows the connection once it is gone: nothing opens.
        waiting[0]()
        self.network.flush()
        self.assertEqual(self.server.pending_clients, {})
        self.assertEqual(connection.server_protocol.state, connection.server_protocol.STATE_CLOSED)
        self.assertEqual(self.network.clock.getDelayedCalls(), [])

    def test_clientLeavesWhileHandshakeMiddlewareRuns(self):
        """
        A client gone before C{handshakeWS} middleware allowed it leaves no
        socket behind.
        """
        connection = self.connect()
        waiting = []
        self.server.add_middleware(
            SCServer.MIDDLEWARE_HANDSHAKE_WS, lambda req, next: waiting.append(next))
        connection.client_protocol.transport.write(REQUEST)
        self.network.flush()
        connection.drop()
        waiting[0]()
        self.network.flush()
        self.assertEqual(self.server.pending_clients, {})
        self.assertEqual(self.network.clock.getDelayedCalls(), [])

    def test_oneRequestPerConnection(self):
        """
        Bytes after the head that look like another head are not parsed as
        a second upgrade while the middleware runs.
        """
        connection = self.connect()
        waiting = []
        self.server.add_middleware(
            SCServer.MIDDLEWARE_HANDSHAKE_WS, lambda req, next: waiting.append(next))
        client = connection.client_protocol
        client.transport.write(REQUEST)
        self.network.flush()
        client.transport.write(REQUEST)
        self.network.flush()
        self.assertEqual(len(waiting), 1)
        waiting[0]()
        self.network.flush()
        self.assertTrue(client.received.startswith(b"HTTP/1.1 101 "), client.received)
        self.assertEqual(client.received.count(b"HTTP/1.1"), 1)

    def test_slowloris(self):
        """
        A client that sends one byte a second never completes its head
        within the opening handshake timeout (C{handshake_timeout}): the
        connection is dropped then.
        """
        connection = self.connect(handshake_timeout=6)
        client = connection.client_protocol
        head = b"GET /socketcluster/ HTTP/1.1\r\nX-Slow: " + b"a" * 100
        for second, byte in enumerate(head):
            if client.lost:
                break
            client.transport.write(bytes([byte]))
            self.network.advance(1)
        self.assertTrue(client.lost)
        self.assertLessEqual(second, 7)
        self.assertEqual(self.network.clock.getDelayedCalls(), [])

    def test_behindTwistedWeb(self):
        """
        Behind C{twisted.web} (L{SCServer.resource}), the HTTP channel reads
        the head and refuses one over 16 KiB itself (400); the limit
        applies to the head it hands on.
        """
        network = MemoryNetwork(clock=Clock())
        server = make_server(network.reactor, max_handshake_size=len(REQUEST) - 1)
        root = Resource()
        root.putChild(b"socketcluster", server.resource)
        port = network.reactor.listenTCP(0, Site(root, reactor=network.reactor))
        self.addCleanup(port.stopListening)
        connection = network.connect_protocol(RawFactory(port.getHost().port))
        client = connection.client_protocol
        client.transport.write(b"GET /socketcluster/ HTTP/1.1\r\nHost: localhost\r\n")
        for _ in range(40):
            if client.lost:
                break
            client.transport.write(b"X-Padding: " + b"a" * 1000 + b"\r\n")
            network.flush()
        self.assertTrue(client.lost)
        self.assertTrue(client.received.startswith(b"HTTP/1.1 400 "), client.received)

        connection = network.connect_protocol(RawFactory(port.getHost().port))
        connection.client_protocol.transport.write(REQUEST)
        network.flush()
        self.assertTrue(connection.client_protocol.received.startswith(b"HTTP/1.1 431 "),
                        connection.client_protocol.received)


class BacklogTests(SynchronousTestCase):
    """
    C{tcp:}, C{tcp6:} and C{ssl:} descriptions get a backlog of 1024
    unless they name one.
    """

    def test_helper(self):
        self.assertEqual(DEFAULT_BACKLOG, 1024)
        cases = {
            "tcp:8000": "tcp:8000:backlog=1024",
            "tcp:0:interface=127.0.0.1": "tcp:0:interface=127.0.0.1:backlog=1024",
            "tcp6:8000:interface=\\:\\:1": "tcp6:8000:interface=\\:\\:1:backlog=1024",
            "ssl:8443:privateKey=k.pem:certKey=c.pem":
                "ssl:8443:privateKey=k.pem:certKey=c.pem:backlog=1024",
            "tcp:8000:backlog=10": "tcp:8000:backlog=10",
            "tcp:8000:interface=127.0.0.1: backlog=10": "tcp:8000:interface=127.0.0.1: backlog=10",
            "tcp:8000:127.0.0.1:10": "tcp:8000:127.0.0.1:10",
            "ssl:1:k.pem:c.pem:SSLv23_METHOD::10": "ssl:1:k.pem:c.pem:SSLv23_METHOD::10",
            "unix:/run/sc.sock": "unix:/run/sc.sock",
            "systemd:domain=INET:index=0": "systemd:domain=INET:index=0",
        }
        for description, expected in cases.items():
            self.assertEqual(with_default_backlog(description), expected, description)
        self.assertEqual(with_default_backlog("tcp:1", 7), "tcp:1:backlog=7")

    def listened(self, endpoint):
        reactor = MemoryReactor()
        server = SCServer(reactor=reactor, auth_key="k")
        server.listen(endpoint)
        return reactor

    def test_listenString(self):
        reactor = self.listened("tcp:0:interface=127.0.0.1")
        self.assertEqual(reactor.tcpServers[0][2], 1024)
        reactor = self.listened("tcp:0:interface=127.0.0.1:backlog=64")
        self.assertEqual(reactor.tcpServers[0][2], 64)
        reactor = self.listened("unix:/nonexistent/sc.sock")
        self.assertEqual(reactor.unixServers[0][2], 50)

    def test_listenPortNumber(self):
        self.assertEqual(self.listened(0).tcpServers[0][2], 1024)

    def test_listenEndpointObject(self):
        from twisted.internet.endpoints import TCP4ServerEndpoint

        reactor = MemoryReactor()
        server = SCServer(reactor=reactor, auth_key="k")
        server.listen(TCP4ServerEndpoint(reactor, 0))
        self.assertEqual(reactor.tcpServers[0][2], 50)

    def test_workersBind(self):
        """The parent of C{--workers} binds with the backlog its workers inherit."""
        reactor = PoolReactor()
        pool = WorkerPool(reactor, ["tcp:0:interface=127.0.0.1", "tcp:0:backlog=8"],
                          ["--listen", "x"], 2, executable="/py")
        pool.privilegedStartService()
        self.assertEqual([entry[2] for entry in reactor.tcpServers], [1024, 8])
