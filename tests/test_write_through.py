"""
Write-through in L{scserver._transport.SCServerProtocol}: over plain TCP,
a fast-lane frame is sent on the socket at once when Twisted has nothing
buffered for it, the frames written while a connection reads are sent as
one, and whatever the kernel does not take goes to Twisted's buffer.  Real
connections on 127.0.0.1: bytes must arrive complete and in order however
full the kernel's buffers are; TLS and C{twisted.web} keep
C{transport.write}; the slow-consumer cut-off still happens.
"""

import errno
import json
import socket as socket_module
import struct

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from scserver import SCServer, _transport
from tests.test_fast_lane import server_frames, text

UPGRADE = (b"GET /socketcluster/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")


class Client(Protocol):
    """A raw WebSocket client: sends the upgrade, gathers what comes back."""

    def connectionMade(self):
        self.received = bytearray()
        self.lost = defer.Deferred()
        self.waiting = None
        self.transport.write(UPGRADE)

    def dataReceived(self, data):
        self.received += data
        self._check()

    def connectionLost(self, reason):
        self.lost.callback(None)

    def wait_for(self, size):
        """A Deferred that fires once C{size} bytes arrived in all."""
        self.waiting = (size, defer.Deferred())
        result = self.waiting[1]
        self._check()
        return result

    def _check(self):
        if self.waiting is not None and len(self.received) >= self.waiting[0]:
            waiting, self.waiting = self.waiting[1], None
            waiting.callback(None)

    def frames(self):
        """The server frames after the upgrade response."""
        head = self.received.index(b"\r\n\r\n") + 4
        return server_frames(bytes(self.received[head:]))


class FlakySocket:
    """
    A socket whose C{send} takes only C{take} bytes, or raises C{error},
    the first C{times} calls; the real socket otherwise.
    """

    def __init__(self, real, take=None, error=None, times=1):
        self.real = real
        self.take = take
        self.error = error
        self.times = times
        self.sends = []

    def send(self, data):
        self.sends.append(bytes(data))
        if self.times > 0:
            self.times -= 1
            if self.error is not None:
                raise self.error
            return self.real.send(memoryview(data)[:self.take])
        return self.real.send(data)

    def __getattr__(self, name):
        return getattr(self.real, name)


def drain():
    """Let the reactor run a few turns."""
    return deferLater(reactor, 0.01, lambda: None)


class _Base:
    """A server on 127.0.0.1 whose protocols are kept in C{self.protocols}."""

    @defer.inlineCallbacks
    def start(self, site=False, **options):
        self.server = SCServer(reactor=reactor, auth_key="k", **options)
        self.server.factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
        self.protocols = []
        build = self.server.factory.buildProtocol

        def record(addr):
            protocol = build(addr)
            self.protocols.append(protocol)
            return protocol

        self.server.factory.buildProtocol = record
        if site:
            root = Resource()
            root.putChild(b"socketcluster", self.server.resource)
            port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
            self.addCleanup(port.stopListening)
        else:
            port = yield self.server.listen("tcp:0:interface=127.0.0.1")
        self.addCleanup(self.server.close)
        self.port = port.getHost().port

    @defer.inlineCallbacks
    def open(self):
        """Connect a L{Client}; fires with it and the server's protocol once open."""
        client = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), Client())
        self.addCleanup(self._close, client)
        for _ in range(500):
            if b"\r\n\r\n" in client.received and self.protocols \
                    and self.protocols[-1].sc_socket is not None:
                break
            yield drain()
        self.assertTrue(client.received.startswith(b"HTTP/1.1 101 "), client.received)
        return client, self.protocols[-1]

    @defer.inlineCallbacks
    def _close(self, client):
        if client.transport.connected:
            client.transport.resumeProducing()
            client.transport.abortConnection()
            yield client.lost

    @defer.inlineCallbacks
    def handshake(self, client, protocol):
        """The SocketCluster handshake; forget the frames it got."""
        client.transport.write(text({"event": "#handshake", "data": {}, "cid": 1}))
        yield client.wait_for(self.head_size(client) + 2)
        for _ in range(100):
            if client.frames() and protocol.sc_socket.state == "open":
                break
            yield drain()
        del client.received[self.head_size(client):]

    def head_size(self, client):
        return client.received.index(b"\r\n\r\n") + 4


def buffered(transport):
    """What Twisted holds for C{transport}, not sent yet."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class WriteThroughTests(_Base, TestCase):
    """Over plain TCP."""

    @defer.inlineCallbacks
    def test_sentAtOnce(self):
        """
        A frame written outside a read goes to the kernel in the call:
        nothing is left in Twisted's buffer, the socket is not registered
        for writing, and the client gets it.
        """
        yield self.start()
        client, protocol = yield self.open()
        self.assertTrue(_transport._writes_through(protocol.transport))
        head = self.head_size(client)
        protocol.write("hello")
        self.assertEqual(buffered(protocol.transport), 0)
        # Not waiting for the reactor to call doWrite either.
        self.assertNotIn(protocol.transport, reactor.getWriters())
        protocol.write(b"\x00\x01")
        self.assertEqual(buffered(protocol.transport), 0)
        yield client.wait_for(head + 7 + 4)
        self.assertEqual(client.frames(), [(0x81, b"hello"), (0x82, b"\x00\x01")])

    @defer.inlineCallbacks
    def test_fullKernelBuffer(self):
        """
        A client that stops reading: the kernel's buffers fill, the rest
        waits in Twisted's buffer, and once the client reads again every
        frame arrives, whole and in order (frames of every length form).
        """
        yield self.start(max_outbound_buffer=None)
        client, protocol = yield self.open()
        head = self.head_size(client)
        protocol.transport.socket.setsockopt(
            socket_module.SOL_SOCKET, socket_module.SO_SNDBUF, 4096)
        client.transport.pauseProducing()
        sizes = [1, 125, 126, 1000, 65535, 65536, 70000, 3, 5000] * 8
        expected = []
        fell_back = 0
        for index, size in enumerate(sizes):
            payload = bytes([index & 0xFF]) * size
            expected.append((0x82, payload))
            protocol.write(payload)
            if buffered(protocol.transport):
                fell_back += 1
        self.assertGreater(fell_back, 0)
        client.transport.resumeProducing()
        total = sum(len(_transport.server_frame(0x82, p)) for _, p in expected)
        yield client.wait_for(head + total)
        self.assertEqual(len(client.received), head + total)
        self.assertEqual(client.frames(), expected)

    @defer.inlineCallbacks
    def test_partialSend(self):
        """
        When the kernel takes only part of a frame, the rest goes to
        Twisted's buffer and follows it, before any later frame.
        """
        yield self.start()
        client, protocol = yield self.open()
        head = self.head_size(client)
        flaky = protocol.transport.socket = FlakySocket(protocol.transport.socket, take=3)
        protocol.write("x" * 200)
        self.assertEqual(flaky.sends[0], _transport.server_frame(0x81, b"x" * 200))
        self.assertEqual(buffered(protocol.transport), 204 - 3)
        protocol.write("after")
        self.assertEqual(len(flaky.sends), 1)  # behind the buffered bytes
        yield client.wait_for(head + 204 + 7)
        self.assertEqual(client.frames(), [(0x81, b"x" * 200), (0x81, b"after")])

    @defer.inlineCallbacks
    def test_wouldBlock(self):
        """C{EAGAIN}: the whole frame goes to Twisted's buffer."""
        yield self.start()
        client, protocol = yield self.open()
        head = self.head_size(client)
        protocol.transport.socket = FlakySocket(
            protocol.transport.socket, error=BlockingIOError(errno.EAGAIN, "again"))
        protocol.write("one")
        self.assertEqual(buffered(protocol.transport), 5)
        yield client.wait_for(head + 5)
        self.assertEqual(client.frames(), [(0x81, b"one")])

    @defer.inlineCallbacks
    def test_otherErrorToTwisted(self):
        """
        Any other error of the direct send is not raised: the frame goes to
        Twisted, which meets the error itself (here the error was
        transient: Twisted's own send delivers the frame).
        """
        yield self.start()
        client, protocol = yield self.open()
        head = self.head_size(client)
        protocol.transport.socket = FlakySocket(
            protocol.transport.socket, error=OSError(errno.ENOMEM, "no memory"))
        protocol.write("one")
        yield client.wait_for(head + 5)
        self.assertEqual(client.frames(), [(0x81, b"one")])

    @defer.inlineCallbacks
    def test_peerReset(self):
        """
        A peer that reset the connection: writing raises nothing and the
        connection is lost the normal way.
        """
        yield self.start()
        client, protocol = yield self.open()
        client.transport.socket.setsockopt(
            socket_module.SOL_SOCKET, socket_module.SO_LINGER, struct.pack("ii", 1, 0))
        closed = protocol.closed
        client.transport.abortConnection()  # with SO_LINGER 0: an RST
        yield client.lost
        for _ in range(50):
            if protocol.closed is None:
                break
            protocol.write("x" * 1000)
            yield drain()
        yield closed
        self.assertIsNone(protocol.closed)

    @defer.inlineCallbacks
    def test_repliesOfOneReadCoalesced(self):
        """
        The replies to the requests of one read are sent as one, after it,
        in order; a reply outside a read is sent at once.
        """
        yield self.start()

        def on_connection(socket, status):
            socket.on("echo", lambda data, respond: respond(None, data))

        self.server.on("connection", on_connection)
        client, protocol = yield self.open()
        yield self.handshake(client, protocol)
        flaky = protocol.transport.socket = FlakySocket(protocol.transport.socket, times=0)
        client.transport.write(b"".join(
            text({"event": "echo", "data": index, "cid": 2 + index}) for index in range(5)))
        for _ in range(100):
            if len(client.frames()) == 5:
                break
            yield drain()
        replies = [json.loads(payload) for _, payload in client.frames()]
        self.assertEqual(replies, [{"rid": 2 + index, "data": index} for index in range(5)])
        self.assertEqual(len(flaky.sends), 1)
        self.assertEqual(flaky.sends[0], bytes(client.received[self.head_size(client):]))

    @defer.inlineCallbacks
    def test_deliveriesOfOneReadCoalesced(self):
        """
        What one connection's read writes to another connection is gathered
        too: one send per connection, after the read.
        """
        yield self.start()
        first, first_protocol = yield self.open()
        first_head = self.head_size(first)

        def to_first(data, respond):
            first_protocol.write("for first %d" % (data,))
            respond(None, data)

        self.server.on("connection",
                       lambda socket, status: socket.on("to-first", to_first))
        second, second_protocol = yield self.open()
        yield self.handshake(second, second_protocol)
        flaky = first_protocol.transport.socket = FlakySocket(
            first_protocol.transport.socket, times=0)
        second.transport.write(b"".join(
            text({"event": "to-first", "data": index}) for index in range(3)))
        expected = [(0x81, b"for first %d" % (index,)) for index in range(3)]
        yield first.wait_for(first_head + sum(2 + len(p) for _, p in expected))
        self.assertEqual(first.frames(), expected)
        self.assertEqual(len(flaky.sends), 1)

    @defer.inlineCallbacks
    def test_coalescingBounded(self):
        """
        Frames gathered during a read go out once they reach
        C{_COALESCE_LIMIT} bytes, not only at its end; a frame autobahn
        writes (a control frame) follows those gathered before it.
        """
        yield self.start()
        client, protocol = yield self.open()
        head = self.head_size(client)
        flaky = protocol.transport.socket = FlakySocket(protocol.transport.socket, times=0)
        factory = protocol.factory
        factory._sc_written = []
        try:
            protocol.write("a" * 40000)
            protocol.write("b" * 40000)  # past 64 KiB: sent
            self.assertEqual(len(flaky.sends), 1)
            protocol.write("c")
            self.assertEqual(len(flaky.sends), 1)
            protocol.sendPing(b"p")  # autobahn's: the pending frame first
            self.assertEqual(len(flaky.sends), 2)
        finally:
            factory._sc_written = None
        size = head + 2 * (40000 + 4) + 3 + 3
        yield client.wait_for(size)
        self.assertEqual([first for first, _ in client.frames()], [0x81, 0x81, 0x81, 0x89])

    @defer.inlineCallbacks
    def test_slowConsumerCutOff(self):
        """
        A client that stops reading is still cut off at
        C{max_outbound_buffer}: once the kernel's buffers and Twisted's
        are full, the bytes queued past the limit close it (1008).
        """
        yield self.start(max_outbound_buffer=100000)
        client, protocol = yield self.open()
        client.transport.pauseProducing()
        closed = protocol.closed
        written = 0
        for _ in range(2000):
            if protocol.closed is None or protocol.state == protocol.STATE_CLOSED:
                break
            protocol.write(b"z" * 10000)
            written += 1
            if written % 50 == 0:
                yield drain()
        self.assertLess(written, 2000)
        yield closed
        self.assertEqual(self.server.stats.slow_consumers, 1)


class FallbackTests(_Base, TestCase):
    """Where write-through does not apply, frames go through C{transport.write}."""

    @defer.inlineCallbacks
    def test_behindTwistedWeb(self):
        yield self.start(site=True)
        client, protocol = yield self.open()
        head = self.head_size(client)
        self.assertFalse(_transport._writes_through(protocol.transport))
        protocol.write("hello")
        self.assertFalse(protocol._through)
        self.assertEqual(buffered(protocol.transport), 7)
        yield client.wait_for(head + 7)
        self.assertEqual(client.frames(), [(0x81, b"hello")])

    @defer.inlineCallbacks
    def test_overTLS(self):
        """Over an C{ssl:} endpoint the transport is TLS: no write-through."""
        try:
            from twisted.internet.ssl import CertificateOptions
        except ImportError:
            raise SkipTest("pyOpenSSL is needed for ssl: endpoints")
        from twisted.internet.endpoints import SSL4ClientEndpoint, quoteStringArgument

        from tests.test_interop_tls import make_self_signed

        key_path, cert_path = make_self_signed(self.mktemp())
        self.server = SCServer(reactor=reactor, auth_key="k")
        self.server.factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
        self.protocols = []
        build = self.server.factory.buildProtocol
        self.server.factory.buildProtocol = lambda addr: self.protocols.append(
            build(addr)) or self.protocols[-1]
        port = yield self.server.listen("ssl:0:interface=127.0.0.1:privateKey={}:certKey={}".format(
            quoteStringArgument(key_path), quoteStringArgument(cert_path)))
        self.addCleanup(self.server.close)
        client = yield connectProtocol(
            SSL4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, CertificateOptions()),
            Client())
        self.addCleanup(self._close, client)
        for _ in range(500):
            if self.protocols and self.protocols[-1].sc_socket is not None \
                    and b"\r\n\r\n" in client.received:
                break
            yield drain()
        protocol = self.protocols[-1]
        head = self.head_size(client)
        self.assertFalse(_transport._writes_through(protocol.transport))
        protocol.write("over tls")
        self.assertFalse(protocol._through)
        yield client.wait_for(head + 10)
        self.assertEqual(client.frames(), [(0x81, b"over tls")])


class DecisionTests(SynchronousTestCase):
    """L{_transport._writes_through} on transports that are not plain TCP."""

    def test_stringTransport(self):
        self.assertFalse(_transport._writes_through(StringTransport()))
