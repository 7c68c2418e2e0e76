"""
autobahn's per-connection timers of an L{scserver.SCServer} (the opening
and closing handshake timeouts): plain C{callLater}s on the server's
reactor (L{scserver._transport._ReactorTimer}), to the exact time, and
gone once a connection ends.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from scserver._transport import _ReactorTimer, _TimerCall
from scserver.testing import MemoryNetwork, make_server

UPGRADE = (b"GET /socketcluster/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")

MASK = b"\x37\xfa\x21\x3d"

EPSILON = 2 ** -10
"""A step of the clock that adds to the times used here without rounding."""


class Transport(StringTransport):
    """
    A C{StringTransport} that, as a TCP transport, lets autobahn
    unregister a producer it never registered (dropping a connection
    before its upgrade).
    """

    def unregisterProducer(self):
        self.producer = None
        self.streaming = None


def client_close_frame(code=1000):
    """A masked close frame from the client with C{code}."""
    payload = code.to_bytes(2, "big")
    return bytes([0x88, 0x80 | len(payload)]) + MASK + bytes(
        b ^ MASK[i % 4] for i, b in enumerate(payload))


def timer_calls(clock, name):
    """The pending calls of C{clock} that run the protocol method C{name}."""
    return [call for call in clock.getDelayedCalls()
            if getattr(call.func, "__name__", None) == name]


class ReactorTimerTests(SynchronousTestCase):
    """L{_ReactorTimer} and its calls."""

    def test_callLaterExact(self):
        """A call runs at exactly C{now + delay}, with its arguments."""
        clock = Clock()
        clock.advance(0.5)
        ran = []
        _ReactorTimer(clock).call_later(2.5, lambda *a, **k: ran.append((a, k)), 1, x=2)
        clock.advance(2.5 - EPSILON)
        self.assertEqual(ran, [])
        clock.advance(EPSILON)
        self.assertEqual(ran, [((1,), {"x": 2})])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancelLenient(self):
        """
        C{cancel()} removes a pending call, and may be called again, or
        after the call ran, without an error (as txaio's batched calls).
        """
        clock = Clock()
        ran = []
        timer = _ReactorTimer(clock)
        call = timer.call_later(1, ran.append, 1)
        self.assertIsInstance(call, _TimerCall)
        call.cancel()
        call.cancel()
        self.assertEqual(clock.getDelayedCalls(), [])
        done = timer.call_later(1, ran.append, 2)
        clock.advance(1)
        done.cancel()
        self.assertEqual(ran, [2])

    def test_factoryTimer(self):
        """An L{scserver.SCServer}'s factory schedules on the server's reactor."""
        server = make_server()
        timer = server.factory._batched_timer
        self.assertIsInstance(timer, _ReactorTimer)
        self.assertIs(timer.clock, server.reactor)


class OpeningHandshakeTimeoutTests(SynchronousTestCase):
    """A connection that does not complete its upgrade in time is dropped on time."""

    def connect(self, **options):
        self.clock = Clock()
        # Not on a whole second: txaio's timer rounded the deadline down.
        self.clock.advance(100.5)
        server = make_server(self.clock, **options)
        protocol = server.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = Transport()
        protocol.makeConnection(transport)
        self.addCleanup(self.end, protocol)
        return protocol, transport

    def end(self, protocol):
        if protocol.closed is not None:
            protocol.connectionLost(Failure(ConnectionDone()))

    def test_silentDroppedOnTime(self):
        """
        A connection that never sends a byte is dropped (reset, no
        answer) at exactly C{handshake_timeout} seconds, not earlier; once
        it is gone, nothing is left in the reactor.
        """
        protocol, transport = self.connect(handshake_timeout=7.5)
        self.assertEqual(len(timer_calls(self.clock, "onOpenHandshakeTimeout")), 1)
        self.clock.advance(7.5 - EPSILON)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(EPSILON)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(transport.disconnected)  # aborted
        self.assertEqual(transport.value(), b"")
        self.assertTrue(protocol.wasOpenHandshakeTimeout)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_minimumFive(self):
        """A C{handshake_timeout} under 5 gives the upgrade 5 s, exactly."""
        protocol, transport = self.connect(handshake_timeout=2)
        self.clock.advance(5 - EPSILON)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(EPSILON)
        self.assertTrue(transport.disconnecting)

    def test_partialHeadDroppedOnTime(self):
        """A request head that never ends is dropped at the timeout."""
        protocol, transport = self.connect()
        self.clock.advance(9)
        protocol.dataReceived(UPGRADE[:-2])
        self.clock.advance(1 - EPSILON)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(EPSILON)
        self.assertTrue(transport.disconnecting)
        self.assertNotIn(b"101", transport.value())

    def test_cancelledOnOpen(self):
        """The upgrade completes: the timer is gone, the connection stays."""
        protocol, transport = self.connect()
        protocol.dataReceived(UPGRADE)
        self.assertIn(b"101 Switching Protocols", transport.value())
        self.assertEqual(timer_calls(self.clock, "onOpenHandshakeTimeout"), [])
        self.assertIsNone(protocol.openHandshakeTimeoutCall)
        # Up to the socket's own #handshake timeout (10 s, then 4005).
        self.clock.advance(10 - EPSILON)
        self.assertFalse(transport.disconnecting)
        self.assertFalse(protocol.wasOpenHandshakeTimeout)

    def test_cancelledOnConnectionLost(self):
        """The client leaves before its upgrade: nothing is left in the reactor."""
        protocol, transport = self.connect()
        protocol.dataReceived(UPGRADE[:20])
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelledOnRefusal(self):
        """A refused upgrade (bad path): the timer goes with the connection."""
        protocol, transport = self.connect()
        protocol.dataReceived(UPGRADE.replace(b"/socketcluster/", b"/other/"))
        self.assertIn(b"400 Bad Request", transport.value())
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_memoryNetwork(self):
        """
        Through a L{MemoryNetwork}, the server's timers are on its clock at
        the exact time too: a raw TCP client that never upgrades is
        dropped at exactly 5 s.
        """
        clock = Clock()
        clock.advance(0.5)
        server = make_server(clock, handshake_timeout=1)
        network = MemoryNetwork(server)
        self.assertIsInstance(server.factory._batched_timer, _ReactorTimer)
        lost = []

        class Silent(Protocol):
            def connectionLost(self, reason):
                lost.append(clock.seconds())

        connection = network.connect_protocol(ClientFactory.forProtocol(Silent))
        network.advance(5 - EPSILON)
        self.assertEqual(lost, [])
        network.advance(EPSILON)
        network.flush()
        self.assertEqual(lost, [5.5])
        self.assertTrue(connection.server_protocol.wasOpenHandshakeTimeout)
        self.assertEqual(clock.getDelayedCalls(), [])


class ClosingHandshakeTimeoutTests(SynchronousTestCase):
    """The server closes: the client has exactly 5 s to answer its close frame."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(0.25)
        self.server = make_server(self.clock, ping_timeout_disabled=True)
        self.protocol = self.server.factory.buildProtocol(
            IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = Transport()
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(UPGRADE)
        self.assertIn(b"101 Switching Protocols", self.transport.value())
        self.transport.clear()
        self.protocol.close(1000, "bye")
        self.assertEqual(self.transport.value()[:1], b"\x88")
        self.assertEqual(len(timer_calls(self.clock, "onCloseHandshakeTimeout")), 1)

    def test_droppedOnTime(self):
        """No close reply: the connection is reset at exactly 5 s."""
        self.clock.advance(5 - EPSILON)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(EPSILON)
        self.assertTrue(self.transport.disconnected)
        self.assertTrue(self.protocol.wasCloseHandshakeTimeout)
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(timer_calls(self.clock, "onCloseHandshakeTimeout"), [])

    def test_cancelledOnReply(self):
        """The client answers: the timer is cancelled, the TCP connection dropped."""
        self.protocol.dataReceived(client_close_frame())
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(self.protocol.wasClean)
        self.assertEqual(timer_calls(self.clock, "onCloseHandshakeTimeout"), [])
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelledOnConnectionLost(self):
        """The TCP connection goes before the reply: nothing is left in the reactor."""
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
