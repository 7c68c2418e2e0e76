"""
Differential fuzzing of the server's inbound fast lane
(L{scserver._transport.SCServerProtocol}): any stream of client frames,
cut into reads anywhere, must give the socket the same messages, and the
client the same bytes (pongs, close frames) and the same end, whether the
fast lane reads the plain data frames or autobahn reads every frame.

The frames are drawn from everything a hostile client can send: text and
binary frames with valid and invalid UTF-8, fragments and continuations,
pings, pongs and close frames (with good and bad codes and reasons),
reserved opcodes and bits, unmasked frames, non-minimal length encodings,
frames over the message limit.  The socket is replaced by a recorder, so
that only the WebSocket layer is compared.

Profiles as in L{tests.test_fuzz_codec} (C{ci} in the suite, C{long} in
C{scripts/fuzz.sh}).
"""

import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.test_fast_lane import connect, make_server
from tests.test_fuzz_codec import FUZZ, count

MAX_PAYLOAD = 2000
"""The server's C{max_payload} here: some frames are drawn beyond it."""


class Recorder:
    """Stands in for the SocketCluster socket: records what it is given."""

    def __init__(self):
        self.events = []

    def receive(self, payload):
        self.events.append(("message", type(payload).__name__, payload))

    def connection_lost(self, code, reason):
        self.events.append(("lost", code, reason))


@st.composite
def frames(draw):
    """One client frame, as bytes: mostly well-formed, sometimes not."""
    opcode = draw(st.sampled_from([1, 1, 1, 2, 2, 0, 9, 10, 8, 3, 11]))
    fin = draw(st.sampled_from([True, True, True, False]))
    rsv = draw(st.sampled_from([0, 0, 0, 0, 0, 0, 1, 2, 4, 7]))
    masked = draw(st.sampled_from([True] * 9 + [False]))
    kind = draw(st.sampled_from(["text", "text", "bytes", "bad-utf8", "long", "close"]))
    if kind == "text":
        payload = draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    elif kind == "bytes":
        payload = draw(st.binary(max_size=300))
    elif kind == "bad-utf8":
        payload = draw(st.binary(max_size=20)) + draw(st.sampled_from(
            [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80"]))
    elif kind == "long":
        payload = b"a" * draw(st.sampled_from([125, 126, 127, 1023, 1025, MAX_PAYLOAD,
                                               MAX_PAYLOAD + 1, 70000]))
    else:
        code = draw(st.sampled_from([1000, 1001, 1002, 1005, 1006, 1015, 999, 3000, 4100,
                                     5000, 65535]))
        payload = struct.pack("!H", code) + draw(st.sampled_from(
            [b"", b"bye", b"\xff\xfe", b"r" * 123, b"r" * 124]))
        payload = draw(st.sampled_from([payload, payload, b"", b"\x03"]))
    size = len(payload)
    form = draw(st.sampled_from(["minimal", "minimal", "minimal", "16", "64"]))
    if form == "16" and size < 65536:
        length = struct.pack("!BH", 126 | (0x80 if masked else 0), size)
    elif form == "64" or size >= 65536:
        length = struct.pack("!BQ", 127 | (0x80 if masked else 0), size)
    elif size < 126:
        length = bytes([size | (0x80 if masked else 0)])
    else:
        length = struct.pack("!BH", 126 | (0x80 if masked else 0), size)
    first = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    if not masked:
        return first + length + payload
    mask = draw(st.binary(min_size=4, max_size=4))
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return first + length + mask + body


def run(stream, cuts, fast):
    """
    Feed C{stream}, cut at C{cuts}, to a new connection with the fast lane
    on or off; the socket's record, the bytes written and the end.
    """
    clock = Clock()
    server = make_server(clock, ping_timeout_disabled=True, max_payload=MAX_PAYLOAD,
                         max_messages_per_turn=5)
    protocol, transport = connect(server)
    protocol.sc_socket.connection_lost(1000, None)
    recorder = protocol.sc_socket = Recorder()
    if not fast:
        protocol._fast = False
    start = 0
    for cut in sorted(set(cuts)) + [len(stream)]:
        if cut > start and not transport.disconnecting:
            protocol.dataReceived(stream[start:cut])
            start = cut
        for _ in range(50):
            clock.advance(0)
    return recorder.events, transport.value(), transport.disconnecting, protocol.state


class FastLaneDifferentialTests(SynchronousTestCase):
    """The fast lane on and off give the same outcome for any input."""

    @FUZZ
    @given(st.lists(frames(), min_size=1, max_size=12),
           st.lists(st.integers(min_value=0, max_value=100000), max_size=6))
    def test_sameOutcome(self, stream, cuts):
        count("transport: fast lane against autobahn")
        data = b"".join(stream)
        cuts = [cut % (len(data) + 1) for cut in cuts]
        fast = run(data, cuts, fast=True)
        slow = run(data, cuts, fast=False)
        self.assertEqual(fast, slow)

    def test_fastLaneUsed(self):
        """The comparison is not vacuous: the fast lane is on by default here."""
        clock = Clock()
        server = make_server(clock, max_payload=MAX_PAYLOAD)
        protocol, _ = connect(server)
        self.assertTrue(protocol._fast)
