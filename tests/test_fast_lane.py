"""
The fast lane of L{scserver._transport.SCServerProtocol}: the plain data
frames it reads and writes itself, without autobahn's per-frame machinery,
must be exactly what autobahn reads and writes; everything else still goes
through autobahn.
"""

import json
import struct

from autobahn.websocket.xormasker import create_xor_masker  # type: ignore[attr-defined]
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from scserver import _engine
from scserver._transport import server_frame, unmask
from scserver.testing import make_server as _make_server

UPGRADE = (b"GET /socketcluster/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")

MASK = b"\x37\xfa\x21\x3d"


def make_server(clock=None, **options):
    """
    A server on a clock whose connections set none of autobahn's own
    timers (they would run on txaio's loop, the global reactor).
    """
    server = _make_server(clock, **options)
    server.factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
    return server


def frame(payload, first=0x81, mask=MASK, length=None):
    """A masked client frame; C{length} forces the 16-bit length form."""
    size = len(payload)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    if length == 126 or 126 <= size < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, size)
    elif size < 126:
        header = struct.pack("!BB", first, 0x80 | size)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, size)
    return header + mask + masked


def text(packet):
    return frame(json.dumps(packet, separators=(",", ":")).encode("utf-8"))


def server_frames(raw):
    """Split unmasked server frames: a list of (first byte, payload)."""
    frames = []
    offset = 0
    while offset < len(raw):
        first, second = raw[offset], raw[offset + 1]
        length = second & 0x7F
        offset += 2
        if length == 126:
            (length,) = struct.unpack_from("!H", raw, offset)
            offset += 2
        elif length == 127:
            (length,) = struct.unpack_from("!Q", raw, offset)
            offset += 8
        frames.append((first, raw[offset:offset + length]))
        offset += length
    return frames


class FrameTests(SynchronousTestCase):
    """L{server_frame} and L{unmask} against autobahn."""

    def test_unmaskAsAutobahn(self):
        """Every size, on both sides of the integer/masker switch."""
        for size in (0, 1, 3, 4, 5, 125, 1023, 1024, 1025, 4099):
            payload = bytes((i * 7) & 0xFF for i in range(size))
            self.assertEqual(unmask(payload, MASK),
                             create_xor_masker(MASK, size).process(payload) if size else b"")

    def test_framesAsAutobahn(self):
        """
        A frame of every length form, text and binary, is byte for byte
        what autobahn's C{sendMessage} writes.
        """
        server = make_server()
        protocol, transport = connect(server)
        for size in (0, 1, 125, 126, 127, 65535, 65536, 70000):
            for binary in (False, True):
                payload = b"x" * size
                transport.clear()
                protocol.sendMessage(payload, binary)
                self.assertEqual(server_frame(0x82 if binary else 0x81, payload),
                                 transport.value(), (size, binary))


def connect(server, handshake=False):
    """An upgraded connection to C{server}, optionally past #handshake."""
    protocol = server.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(UPGRADE)
    assert b"101 Switching Protocols" in transport.value()
    transport.clear()
    if handshake:
        protocol.dataReceived(text({"event": "#handshake", "data": {}, "cid": 1}))
        assert b'"rid":1' in transport.value()
        transport.clear()
    return protocol, transport


class FastLaneTests(SynchronousTestCase):
    """Inbound frames in one read, split reads, control frames, violations."""

    def setUp(self):
        self.server = make_server(ping_timeout_disabled=True)
        self.server.startService()
        self.addCleanup(self.server.stopService)
        self.received = []

        def on_connection(socket, status):
            socket.on("echo", lambda data, respond: respond(None, data))
            socket.on("message", self.received.append)

        self.server.on("connection", on_connection)
        self.protocol, self.transport = connect(self.server, handshake=True)

    def replies(self):
        frames = server_frames(self.transport.value())
        self.transport.clear()
        return frames

    def test_manyFramesOneRead(self):
        """
        Many frames in one read are handled in order, text and binary, each
        reply written as a text frame; the buffer is left empty.
        """
        data = b"".join(text({"event": "echo", "data": n, "cid": n + 2}) for n in range(20))
        self.protocol.dataReceived(data + frame(b"\x01\x02", first=0x82))
        self.assertEqual(
            [json.loads(payload) for _, payload in self.replies()],
            [{"rid": n + 2, "data": n} for n in range(20)])
        self.assertEqual(self.received[-1], b"\x01\x02")
        self.assertEqual(self.protocol.data, b"")

    def test_splitReads(self):
        """A frame split anywhere, the 16-bit length form included, arrives whole."""
        big = {"event": "echo", "data": "y" * 300, "cid": 7}
        data = text({"event": "echo", "data": 1, "cid": 5}) + text(big)
        for cut in (1, 2, 5, 7, 8, 30, len(data) - 1):
            self.protocol.dataReceived(data[:cut])
            self.protocol.dataReceived(data[cut:])
            self.assertEqual([json.loads(p) for _, p in self.replies()],
                             [{"rid": 5, "data": 1}, {"rid": 7, "data": "y" * 300}], cut)

    def test_controlFrameBetween(self):
        """A ping between two data frames is answered by autobahn, in order."""
        self.protocol.dataReceived(
            text({"event": "echo", "data": 1, "cid": 2}) + frame(b"hi", first=0x89)
            + text({"event": "echo", "data": 2, "cid": 3}))
        frames = self.replies()
        self.assertEqual([first for first, _ in frames], [0x81, 0x8A, 0x81])
        self.assertEqual(frames[1][1], b"hi")

    def test_fragmentedMessage(self):
        """A message in two fragments goes through autobahn, and the next frame is fast again."""
        payload = json.dumps({"event": "echo", "data": 1, "cid": 2}).encode("utf-8")
        self.protocol.dataReceived(
            frame(payload[:10], first=0x01) + frame(payload[10:], first=0x80)
            + text({"event": "echo", "data": 2, "cid": 3}))
        self.assertEqual([json.loads(p) for _, p in self.replies()],
                         [{"rid": 2, "data": 1}, {"rid": 3, "data": 2}])

    def closed_with(self):
        frames = server_frames(self.transport.value())
        self.assertEqual(frames[-1][0], 0x88)
        return struct.unpack("!H", frames[-1][1][:2])[0]

    def test_invalidUTF8(self):
        """Invalid UTF-8 (a surrogate) in a text frame: 1007, as autobahn does."""
        self.protocol.dataReceived(text({"event": "echo", "data": 1, "cid": 2})
                                   + frame(b'"\xed\xa0\x80"'))
        self.assertEqual(self.closed_with(), 1007)
        self.assertEqual(self.received[0], '{"event":"echo","data":1,"cid":2}')
        self.assertEqual(len(self.received), 1)

    def test_nonMinimalLength(self):
        """A short payload in the 16-bit length form is a protocol violation (1002)."""
        self.protocol.dataReceived(frame(b'"x"', length=126))
        self.assertEqual(self.closed_with(), 1002)
        self.assertEqual(self.received, [])

    def test_unmasked(self):
        """An unmasked client frame is a protocol violation (1002)."""
        self.protocol.dataReceived(b"\x81\x03\"x\"")
        self.assertEqual(self.closed_with(), 1002)

    def test_tooBig(self):
        """A frame over max_payload is refused (1009) before its payload arrives."""
        server = make_server(max_payload=100, ping_timeout_disabled=True)
        protocol, transport = connect(server, handshake=True)
        protocol.dataReceived(frame(b"x" * 101)[:20])
        frames = server_frames(transport.value())
        self.assertEqual(struct.unpack("!H", frames[-1][1][:2])[0], 1009)

    def test_closeStopsReading(self):
        """
        Frames after one whose handling closed the socket are not handed
        to it.
        """
        self.protocol.sc_socket.on("bye", lambda data, respond: self.protocol.sc_socket.disconnect(4321))
        self.protocol.dataReceived(text({"event": "bye"}) + text({"event": "echo", "data": 1, "cid": 9}))
        self.assertEqual(self.received, ['{"event":"bye"}'])
        self.assertEqual(self.closed_with(), 4321)

    def test_reentrantRead(self):
        """
        Bytes that arrive while a message is being handled (a loopback
        peer answering at once) wait for the read under way: every message
        is handled once, in order.
        """
        later = text({"event": "echo", "data": 3, "cid": 4})

        def first(data, respond):
            respond(None, data)
            self.protocol.dataReceived(later)

        self.protocol.sc_socket.on("first", first)
        self.protocol.dataReceived(text({"event": "first", "data": 1, "cid": 2})
                                   + text({"event": "echo", "data": 2, "cid": 3}))
        self.assertEqual([json.loads(p) for _, p in self.replies()],
                         [{"rid": 2, "data": 1}, {"rid": 3, "data": 2}, {"rid": 4, "data": 3}])
        self.assertEqual(self.protocol.data, b"")

    def test_turnLimit(self):
        """
        Past C{max_messages_per_turn} the fast lane stops too, and goes on
        in a later turn.
        """
        clock = Clock()
        server = make_server(clock, max_messages_per_turn=3, ping_timeout_disabled=True)
        protocol, transport = connect(server, handshake=True)
        received = []
        protocol.sc_socket.on("message", received.append)
        protocol.dataReceived(b"".join(text({"event": "n", "data": n}) for n in range(7)))
        self.assertEqual(len(received), 3)
        self.assertEqual(transport.producerState, "paused")
        clock.advance(0)  # the Clock runs the turns scheduled meanwhile too
        self.assertEqual(received, [json.dumps({"event": "n", "data": n}, separators=(",", ":"))
                                    for n in range(7)])
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(protocol.data, b"")

    def test_deflateTakesAutobahnsWay(self):
        """With permessage-deflate, frames go through autobahn."""
        server = make_server(per_message_deflate=True, ping_timeout_disabled=True)
        protocol = server.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(UPGRADE.replace(
            b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"))
        self.assertIn(b"permessage-deflate", transport.value())
        self.assertFalse(protocol._fast)
        self.assertTrue(self.protocol._fast)


class DirectWriteTests(SynchronousTestCase):
    """The socket's writes, framed directly, and their accounting."""

    def setUp(self):
        self.server = make_server(ping_timeout_disabled=True)
        self.protocol, self.transport = connect(self.server, handshake=True)

    def test_queuedSendsKeepOrder(self):
        """
        While autobahn has sends queued, a write goes behind them, through
        autobahn.
        """
        self.protocol.send_queue.append((server_frame(0x81, b"first"), False))
        self.protocol.triggered = True  # autobahn is writing its queue out
        self.protocol.write("second")
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual([data for data, _ in self.protocol.send_queue],
                         [server_frame(0x81, b"first"), server_frame(0x81, b"second")])

    def test_tooBigRaises(self):
        """An outbound payload over max_payload raises as autobahn's does."""
        server = make_server(max_payload=10, ping_timeout_disabled=True)
        protocol, transport = connect(server)
        self.assertRaises(Exception, protocol.write, "x" * 11)
        protocol.write("x" * 10)
        self.assertEqual(server_frames(transport.value()), [(0x81, b"x" * 10)])

    def test_binary(self):
        """Bytes go out as a binary frame, counted in the stats."""
        before = self.server.stats.bytes_out
        self.protocol.write(b"\x00\xff")
        self.assertEqual(server_frames(self.transport.value()), [(0x82, b"\x00\xff")])
        self.assertEqual(self.server.stats.bytes_out, before + 2)

    def test_backpressure(self):
        """While the transport is paused, the bytes written are counted."""
        self.protocol._paused_bytes = 0
        self.protocol.write("abc")
        self.assertEqual(self.protocol._paused_bytes, 3)


class LazyHeartbeatTests(SynchronousTestCase):
    """A message pushes the 4001 close back without resetting a timer."""

    def test_closesPingTimeoutAfterLastMessage(self):
        clock = Clock()
        closed = []

        class Owner:
            def __getattr__(self, name):
                if name == "engine_closed":
                    return lambda code, reason, was_open: closed.append((clock.seconds(), code))
                return lambda *args: None

        class Output:
            def write(self, payload):
                pass

            def close(self, code, reason):
                pass

        engine = _engine.ProtocolEngine(
            _engine_codec(), clock, Owner(), Output(), ping_interval=100.0, ping_timeout=20.0,
            strict_handshake=False, handshake_timeout=1000.0)
        clock.advance(4)
        engine.receive('{"event":"x"}')
        clock.advance(8)
        engine.receive('{"event":"x"}')
        clock.advance(19.75)
        self.assertEqual(closed, [])
        clock.advance(0.25)
        self.assertEqual(closed, [(32.0, 4001)])


def _engine_codec():
    from scserver.codec import JSONCodec
    return JSONCodec()


class HeartbeatTimerTests(SynchronousTestCase):
    """
    A server engine sets its heartbeat timer only when the deadline comes
    before its next ping, and still closes exactly C{ping_timeout} after the
    latest message.
    """

    def setUp(self):
        self.clock = Clock()
        self.closed = []
        clock, closed = self.clock, self.closed

        class Owner:
            def __getattr__(self, name):
                if name == "engine_closed":
                    return lambda code, reason, was_open: closed.append((clock.seconds(), code))
                return lambda *args: None

        class Output:
            def write(self, payload):
                pass

            def close(self, code, reason):
                pass

        self.engine = _engine.ProtocolEngine(
            _engine_codec(), clock, Owner(), Output(), ping_interval=8.0, ping_timeout=20.0,
            strict_handshake=False, handshake_timeout=1000.0)

    def timers(self):
        return sorted(call.getTime() for call in self.clock.getDelayedCalls())

    def test_liveSocketOneTimer(self):
        """
        A socket that keeps talking has its ping loop (and the handshake
        timer here) only.
        """
        for _ in range(10):
            self.clock.advance(4)
            self.engine.receive("#2")
            self.assertEqual(len(self.timers()), 2, self.clock.seconds())
        self.assertEqual(self.closed, [])

    def test_silentAfterMessage(self):
        """Silent after a message at 13: the timer is set at the ping of 32, for 33."""
        self.clock.advance(13)
        self.engine.receive("#2")
        self.clock.advance(19)
        self.assertEqual(self.timers(), [33.0, 40.0, 1000.0])
        self.clock.advance(0.75)
        self.assertEqual(self.closed, [])
        self.clock.advance(0.25)
        self.assertEqual(self.closed, [(33.0, 4001)])

    def test_silentFromTheStart(self):
        """Nothing ever arrives: 4001 at 20, as when the timer was set at the start."""
        self.clock.advance(19.5)
        self.assertEqual(self.closed, [])
        self.clock.advance(0.5)
        self.assertEqual(self.closed, [(20.0, 4001)])
