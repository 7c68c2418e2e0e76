"""
Tests for L{scserver._engine}: the sans-I/O SocketCluster protocol engine,
driven frame by frame with a recording handler/output and a
L{twisted.internet.task.Clock}, largely from the recorded transcripts in
C{tests/fixtures} (v14 and v20).
"""

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from scserver import errors
from scserver._engine import (
    CLIENT,
    CLOSED,
    CONNECTING,
    OPEN,
    ProtocolEngine,
    close_frame_code,
    close_frame_reason,
    valid_cid,
)
from scserver.codec import JSONCodec, MinBinCodec
from tests._transcripts import advance_until, frames, load_transcript

HANDSHAKE = '{"event":"#handshake","data":{"authToken":null},"cid":1}'


class Recorder:
    """
    The handler and the output of an engine under test: records every call.

    @ivar calls: handler calls, as tuples, in order (C{engine_message} is
        kept apart in L{messages}).
    @ivar written: payloads the engine wrote and no test consumed yet.
    @ivar closes: the C{(code, reason)} of every C{output.close}.
    """

    def __init__(self):
        self.calls = []
        self.messages = []
        self.written = []
        self.closes = []
        self.on_handshake = None
        self.on_event = None

    # output
    def write(self, payload):
        self.written.append(payload)

    def close(self, code, reason):
        self.closes.append((code, reason))

    # handler
    def engine_message(self, message):
        self.messages.append(message)

    def engine_handshake(self, cid, data):
        self.calls.append(("handshake", cid, data))
        if self.on_handshake is not None:
            self.on_handshake(cid, data)

    def engine_event(self, event, data, cid):
        self.calls.append(("event", event, data, cid))
        if self.on_event is not None:
            self.on_event(event, data, cid)

    def engine_raw(self, message):
        self.calls.append(("raw", message))

    def engine_pong(self):
        self.calls.append(("pong",))

    def engine_error(self, error):
        self.calls.append(("error", error))

    def engine_closed(self, code, reason, was_open):
        self.calls.append(("closed", code, reason, was_open))

    def kinds(self):
        return [call[0] for call in self.calls]

    def take(self):
        written, self.written = self.written, []
        return written


class EngineTestCase(SynchronousTestCase):
    """Builds an engine with a L{Recorder} and a L{Clock}."""

    status_id = "Y7Uw-jHCJP_gld4QAAAA"

    def make(self, codec=None, **options):
        options.setdefault("ping_interval", 8.0)
        options.setdefault("ping_timeout", 20.0)
        options.setdefault("handshake_timeout", 10.0)
        options.setdefault("ack_timeout", 10.0)
        self.clock = Clock()
        self.rec = Recorder()
        self.engine = ProtocolEngine(codec or JSONCodec(), self.clock, self.rec, self.rec,
                                     **options)
        self.rec.on_handshake = self.answer_handshake
        return self.engine

    def answer_handshake(self, cid, data):
        """Play the socket's part of a successful handshake."""
        self.engine.handshake_done()
        status = {"id": self.status_id,
                  "pingTimeout": int(round(self.engine.ping_timeout * 1000)),
                  "isAuthenticated": False}
        self.engine.respond(cid, None, status)

    def open(self):
        """Complete the handshake; forget what was recorded so far."""
        self.engine.receive(HANDSHAKE)
        self.assertEqual(self.engine.state, OPEN)
        self.rec.take()
        del self.rec.calls[:]

    def tick(self, *amounts):
        """
        Advance the clock by each amount in turn (a timer scheduled while
        the clock advances counts from the end of that advance).
        """
        for amount in amounts:
            self.clock.advance(amount)

    def replay(self, transcript, conn="c0", exact_close_reason=True):
        """
        Replay the frames of C{conn}: feed every inbound frame, and check
        every outbound one, byte for byte, advancing the clock to the next
        timer while the engine has not written the expected frame yet.
        The handshake answer uses the transcript's socket id.
        """
        steps = frames(load_transcript(transcript), conn)
        for direction, payload in steps:
            if direction == "out" and payload.startswith('{"rid":1,"data":{"id":"'):
                self.status_id = json.loads(payload)["data"]["id"]
        for index, (direction, payload) in enumerate(steps):
            where = "{} frame {}: {} {!r}".format(transcript, index, direction, payload)
            if direction == "in":
                self.assertEqual(self.rec.written, [], where)
                self.engine.receive(payload)
            elif direction == "out":
                advance_until(self, self.clock, lambda: self.rec.written or self.rec.closes)
                self.assertTrue(self.rec.written, where)
                self.assertEqual(self.rec.written.pop(0), payload, where)
            elif direction == "close-out":
                if self.engine.state == CLOSED and not self.rec.closes:
                    # The transport's answer to the client's close frame.
                    continue
                advance_until(self, self.clock, lambda: self.rec.written or self.rec.closes)
                self.assertEqual(self.rec.written, [], where)
                self.assertEqual(len(self.rec.closes), 1, where)
                code, reason = self.rec.closes[0]
                self.assertEqual(code, payload[0], where)
                if exact_close_reason:
                    self.assertEqual(reason, payload[1], where)
            elif direction == "close-in":
                if self.engine.state != CLOSED:
                    self.engine.connection_lost(*payload)
        self.assertEqual(self.rec.written, [])


class ClassificationTests(EngineTestCase):
    """How inbound messages are classified."""

    def setUp(self):
        self.make(protocol_version=1)

    def test_message_hook_sees_every_payload(self):
        """C{engine_message} gets every payload as it came, before anything else."""
        self.engine.receive(HANDSHAKE)
        self.engine.receive(b'{"event":"x"}')
        self.engine.receive("#2")
        self.assertEqual(self.rec.messages, [HANDSHAKE, b'{"event":"x"}', "#2"])

    def test_handshake(self):
        """C{#handshake} goes to C{engine_handshake} with its cid and data."""
        self.engine.receive(HANDSHAKE)
        self.assertEqual(self.rec.calls[0], ("handshake", 1, {"authToken": None}))

    def test_handshake_in_binary_frame(self):
        """
        A JSON handshake in a binary frame is a handshake (v14/17, c1).
        """
        payload = frames(load_transcript("v14/17-binary"), "c1")[0][1]
        self.assertIsInstance(payload, bytes)
        self.engine.receive(payload)
        self.assertEqual(self.rec.calls, [("handshake", 1, {"authToken": None})])
        self.assertEqual(self.engine.state, OPEN)

    def test_pong_v1(self):
        """C{#2} after a ping is a pong."""
        self.open()
        self.clock.advance(8)
        self.engine.receive("#2")
        self.assertEqual(self.rec.calls, [("pong",)])

    def test_pong_v2(self):
        """An empty message after a ping is a pong (protocol v2)."""
        self.make(protocol_version=2)
        self.open()
        self.clock.advance(8)
        self.engine.receive("")
        self.assertEqual(self.rec.calls, [("pong",)])

    def test_client_ping_is_raw(self):
        """C{#1} from the client is a raw message (v14/16b)."""
        self.open()
        self.engine.receive("#1")
        self.assertEqual(self.rec.calls, [("raw", "#1")])
        self.assertEqual(self.rec.written, [])

    def test_non_json_text_is_raw(self):
        """Text that is not JSON is a raw message (v14/16b)."""
        self.open()
        self.engine.receive("hello raw text")
        self.assertEqual(self.rec.calls, [("raw", "hello raw text")])

    def test_json_values_that_are_not_packets_are_raw(self):
        """
        A JSON object without C{event} or C{rid}, and the elements of an
        array that are not objects, are raw messages; a JSON scalar is text
        that does not start with C{{} or C{[}, also raw.
        """
        self.open()
        self.engine.receive('{"foo":1}')
        self.engine.receive("[1,\"a\",null]")
        self.engine.receive("123")
        self.engine.receive('"quoted"')
        self.assertEqual(self.rec.calls, [
            ("raw", {"foo": 1}), ("raw", 1), ("raw", "a"), ("raw", None),
            ("raw", "123"), ("raw", '"quoted"')])

    def test_batch(self):
        """
        A JSON array is a batch: each element is handled in order
        (v14/16b).
        """
        self.open()
        batch = [p for d, p in frames(load_transcript("v14/16b-raw-misc")) if p and p[:1] == "["]
        self.engine.receive(batch[0])
        self.assertEqual(self.rec.calls, [("event", "e1", 1, 2), ("event", "e2", 2, 3)])

    def test_event_without_data_or_cid(self):
        """A missing C{data} is C{None}; a missing C{cid} is C{None}."""
        self.open()
        self.engine.receive('{"event":"noack"}')
        self.assertEqual(self.rec.calls, [("event", "noack", None, None)])

    def test_unknown_rid_ignored(self):
        """A response nobody waits for is ignored (v14/16b)."""
        self.open()
        self.engine.receive('{"rid":99,"data":"nobody asked"}')
        self.assertEqual(self.rec.calls, [])
        self.assertEqual(self.rec.written, [])

    def test_odd_rids_ignored(self):
        """Responses with rids of any JSON type are ignored without error."""
        self.open()
        for rid in ("null", "[1]", '{"a":1}', '"x"', "1.5", "-1"):
            self.engine.receive('{"rid":%s}' % (rid,))
        self.assertEqual(self.rec.calls, [])

    def test_event_name_not_a_string(self):
        """
        An event whose name is not a string is an C{InvalidMessageError}
        (reported to the handler) and gets an error reply when it has a cid.
        """
        self.open()
        self.engine.receive('{"event":42,"data":1,"cid":5}')
        self.engine.receive('{"event":null}')
        self.assertEqual(self.rec.kinds(), ["error", "error"])
        self.assertIsInstance(self.rec.calls[0][1], errors.InvalidMessageError)
        self.assertEqual(self.rec.take(), [
            '{"rid":5,"error":{"message":"Event name was malformatted",'
            '"name":"InvalidMessageError"}}'])

    def test_decode_error(self):
        """
        A codec that cannot decode a message reports an
        C{InvalidMessageError} and drops the message.
        """
        self.make(codec=MinBinCodec(), protocol_version=1)
        self.engine.receive(MinBinCodec().encode(
            {"event": "#handshake", "data": {"authToken": None}, "cid": 1}))
        self.assertEqual(self.engine.state, OPEN)
        self.rec.take()
        del self.rec.calls[:]
        self.engine.receive(b"\xc1\xc1garbage")
        self.assertEqual(self.rec.kinds(), ["error"])
        self.assertIsInstance(self.rec.calls[0][1], errors.InvalidMessageError)
        self.assertEqual(self.engine.state, OPEN)

    def test_second_handshake_ignored(self):
        """A second C{#handshake} is ignored: no call, no reply (v14/16b)."""
        self.open()
        self.engine.receive('{"event":"#handshake","data":{"authToken":null},"cid":7}')
        self.assertEqual(self.rec.calls, [])
        self.assertEqual(self.rec.written, [])

    def test_receive_after_close_ignored(self):
        """Nothing is handled once the engine is closed."""
        self.open()
        self.engine.close(1000)
        del self.rec.calls[:]
        self.rec.take()
        messages = len(self.rec.messages)
        self.engine.receive('{"event":"x","cid":3}')
        self.assertEqual(self.rec.calls, [])
        self.assertEqual(len(self.rec.messages), messages)
        self.assertEqual(self.rec.written, [])


class HandshakeTimerTests(EngineTestCase):
    """The handshake timer and the strict handshake."""

    def test_timeout_v14(self):
        """
        Without a handshake the engine sends C{#disconnect} 4005 and closes
        with 4005 (v14/14).
        """
        self.make(handshake_timeout=0.5, ping_interval=10, ping_timeout=20)
        self.replay("v14/14-handshake-timeout")
        self.assertEqual(self.clock.seconds(), 0.5)
        self.assertEqual(self.rec.calls, [("closed", 4005, None, False)])

    def test_timeout_v2(self):
        """
        With protocol version 2 the 4005 close comes without C{#disconnect}
        (v20/09).
        """
        self.make(handshake_timeout=0.5, ping_interval=10, ping_timeout=20, protocol_version=2)
        self.replay("v20/09-handshake-timeout")

    def test_no_timeout_after_handshake(self):
        """The handshake timer stops when C{#handshake} arrives."""
        self.make(handshake_timeout=0.5, ping_interval=10, ping_timeout=20)
        self.engine.receive(HANDSHAKE)
        self.clock.advance(5)
        self.assertEqual(self.engine.state, OPEN)
        self.assertEqual(self.rec.closes, [])

    def test_no_timeout_while_handshake_in_progress(self):
        """
        Once C{#handshake} arrived, a slow handshake (the socket has not
        called C{handshake_done} yet) is not cut by the handshake timer.
        """
        self.make(handshake_timeout=0.5, ping_interval=10, ping_timeout=20)
        self.rec.on_handshake = None
        self.engine.receive(HANDSHAKE)
        self.clock.advance(5)
        self.assertEqual(self.engine.state, CONNECTING)
        self.assertEqual(self.rec.closes, [])

    def _strict(self, transcript, conns, **options):
        for conn in conns:
            self.make(**options)
            self.replay(transcript, conn)
            self.assertEqual(self.rec.kinds(), ["closed"], conn)
            self.assertEqual(self.rec.calls[0][1], 4009)
            self.assertIs(self.rec.calls[0][3], False)

    def test_strict_v14(self):
        """
        An ordinary event, non-JSON text, or C{#2} as the first message
        closes with 4009 at once, with no C{#disconnect} (v14/15 c0-c2).
        """
        self._strict("v14/15-strict-handshake-violations", ["c0", "c1", "c2"])

    def test_strict_v20(self):
        """
        The same with the v2 pong C{''} (v20/10 c0-c2).
        """
        self._strict("v20/10-strict-handshake-violations", ["c0", "c1", "c2"],
                     protocol_version=2)

    def test_strict_auto(self):
        """With C{'auto'}, both C{''} and C{#2} first are violations."""
        for first in ("", "#2", "[]", '{"rid":1}', b"\xff\xfe"):
            self.make()
            self.engine.receive(first)
            self.assertEqual(self.rec.closes, [(4009, "")], first)
            self.assertEqual(self.rec.written, [], first)

    def test_strict_decode_error(self):
        """A message the codec cannot decode before the handshake is a violation."""
        self.make(codec=MinBinCodec())
        self.engine.receive(b"\xc1")
        self.assertEqual(self.rec.closes, [(4009, "")])
        self.assertEqual(self.rec.kinds(), ["closed"])

    def test_batch_starting_with_handshake_is_a_violation(self):
        """Only a C{#handshake} object may come first, not an array holding one."""
        self.make()
        self.engine.receive("[" + HANDSHAKE + "]")
        self.assertEqual(self.rec.closes, [(4009, "")])

    def test_handshake_without_cid(self):
        """
        C{#handshake} without a cid is accepted, and no reply is sent (v14/15 c3).
        """
        self.make()
        self.replay("v14/15-strict-handshake-violations", "c3")
        self.assertEqual(self.rec.calls[0], ("handshake", None, {"authToken": None}))
        self.assertEqual(self.rec.calls[1], ("closed", 1000, "", True))

    def test_not_strict(self):
        """With C{strict_handshake=False} events before the handshake are dispatched."""
        self.make(strict_handshake=False)
        self.engine.receive('{"event":"hello","data":1,"cid":1}')
        self.engine.receive("not json at all")
        self.assertEqual(self.rec.calls, [("event", "hello", 1, 1),
                                          ("raw", "not json at all")])
        self.assertEqual(self.engine.state, CONNECTING)


class PingTests(EngineTestCase):
    """The heartbeat: C{#1}/C{#2}, C{''}, C{'auto'}, the pong timer."""

    def test_v1_transcript(self):
        """
        Protocol version 1: C{#1} every interval, C{#2} pongs (v14/01).
        """
        self.make(protocol_version=1, ping_interval=0.25, ping_timeout=1)
        self.replay("v14/01-handshake-ping")
        self.assertEqual(self.rec.kinds(), ["handshake", "pong", "pong", "pong", "closed"])
        self.assertEqual(self.rec.calls[-1], ("closed", 1000, None, True))

    def test_v1_server_transcript_v20(self):
        """The v20 server with C{protocolVersion: 1} pings alike (v20/15)."""
        self.make(protocol_version=1, ping_interval=0.25, ping_timeout=1)
        self.replay("v20/15-protocol-v1-server")

    def test_v2_transcript(self):
        """Protocol version 2: C{''} pings, C{''} pongs (v20/01)."""
        self.make(protocol_version=2, ping_interval=0.25, ping_timeout=1)
        self.replay("v20/01-handshake-ping")
        self.assertEqual(self.rec.kinds(), ["handshake", "pong", "pong", "pong", "closed"])

    def test_pings_start_before_handshake(self):
        """The ping interval runs from the creation of the socket."""
        self.make(protocol_version=1, ping_interval=1, ping_timeout=5, handshake_timeout=10)
        self.clock.advance(1)
        self.assertEqual(self.rec.take(), ["#1"])

    def test_v1_ping_through_codec(self):
        """In protocol v1 the ping goes through the codec (min-bin: msgpack C{'#1'})."""
        self.make(codec=MinBinCodec(), protocol_version=1, ping_interval=1)
        self.clock.advance(1)
        self.assertEqual(self.rec.take(), [b"\xa2#1"])

    def test_v2_ping_raw(self):
        """In protocol v2 the ping is always an empty text frame, whatever the codec."""
        self.make(codec=MinBinCodec(), protocol_version=2, ping_interval=1)
        self.clock.advance(1)
        self.assertEqual(self.rec.take(), [""])

    def test_ping_timeout_v14(self):
        """
        A client that never pongs gets pings, then CLOSE 4001 with no
        C{#disconnect} (v14/16).
        """
        self.make(protocol_version=1, ping_interval=0.2, ping_timeout=0.7)
        self.replay("v14/16-ping-timeout")
        self.assertEqual(self.rec.calls[-1], ("closed", 4001, "", True))
        self.assertAlmostEqual(self.clock.seconds(), 0.7)

    def test_ping_timeout_v20(self):
        """The same with C{''} pings (v20/11)."""
        self.make(protocol_version=2, ping_interval=0.2, ping_timeout=0.7)
        self.replay("v20/11-ping-timeout")

    def test_ping_timeout_before_handshake(self):
        """The pong timer runs during the handshake too."""
        self.make(protocol_version=1, ping_interval=0.2, ping_timeout=0.7, handshake_timeout=5)
        self.clock.advance(0.7)
        self.assertEqual(self.rec.closes, [(4001, "")])
        self.assertEqual(self.rec.calls, [("closed", 4001, "", False)])

    def test_any_message_resets_pong_timer(self):
        """
        Any inbound message, not only a pong, resets the pong timer (v14
        behaviour, kept for every protocol version).
        """
        for version in (1, 2, "auto"):
            self.make(protocol_version=version, ping_interval=0.2, ping_timeout=0.7)
            self.open()
            for _ in range(20):
                self.clock.advance(0.5)
                self.engine.receive('{"event":"keepalive"}')
            self.assertEqual(self.rec.closes, [], version)
            self.clock.advance(0.69)
            self.assertEqual(self.rec.closes, [], version)
            self.clock.advance(0.01)
            self.assertEqual(self.rec.closes, [(4001, "")], version)

    def test_raw_message_resets_pong_timer(self):
        """Even a raw message resets the pong timer."""
        self.make(protocol_version=1, ping_interval=0.2, ping_timeout=0.7)
        self.open()
        self.clock.advance(0.6)
        self.engine.receive("whatever")
        self.clock.advance(0.6)
        self.assertEqual(self.rec.closes, [])

    def test_pongs_keep_v1_alive(self):
        """A v1 client that answers every C{#1} stays connected."""
        self.make(protocol_version=1, ping_interval=8, ping_timeout=20)
        self.open()
        for _ in range(100):
            self.clock.advance(8)
            self.assertEqual(self.rec.take(), ["#1"])
            self.engine.receive("#2")
        self.assertEqual(self.engine.state, OPEN)

    def test_ping_timeout_disabled(self):
        """With C{ping_timeout_disabled} there are no pings and no pong timer."""
        self.make(ping_timeout_disabled=True, ping_interval=1, ping_timeout=2)
        self.open()
        self.clock.advance(100)
        self.assertEqual(self.rec.written, [])
        self.assertEqual(self.engine.state, OPEN)

    def test_auto_sends_v2_then_v1_after_grace(self):
        """
        C{'auto'}: each cycle sends C{''}; without a C{''} pong within the
        grace (min(1 s, interval/4, timeout/4)), C{#1} follows.
        """
        self.make(ping_interval=8, ping_timeout=20)
        self.open()
        self.assertIsNone(self.engine.protocol_version)
        self.clock.advance(8)
        self.assertEqual(self.rec.take(), [""])
        self.clock.advance(0.999)
        self.assertEqual(self.rec.written, [])
        self.clock.advance(0.001)
        self.assertEqual(self.rec.take(), ["#1"])

    def test_auto_grace_short_interval(self):
        """The grace is a quarter of a short ping interval."""
        self.make(ping_interval=0.2, ping_timeout=0.7)
        self.clock.advance(0.2)
        self.assertEqual(self.rec.take(), [""])
        self.clock.advance(0.05)
        self.assertEqual(self.rec.take(), ["#1"])

    def test_auto_v1_client(self):
        """
        A v14 client (ignores C{''}, answers C{#1} with C{#2}) fixes
        version 1: afterwards only C{#1} is sent, and it stays connected.
        """
        self.make(ping_interval=8, ping_timeout=20)
        self.open()
        self.tick(8, 1)
        self.assertEqual(self.rec.take(), ["", "#1"])
        self.engine.receive("#2")
        self.assertEqual(self.engine.protocol_version, 1)
        self.assertEqual(self.rec.calls, [("pong",)])
        for _ in range(60):
            self.clock.advance(8)
            self.assertEqual(self.rec.take(), ["#1"])
            self.engine.receive("#2")
        self.clock.advance(1)
        self.assertEqual(self.rec.written, [])
        self.assertEqual(self.engine.state, OPEN)

    def test_auto_v2_client(self):
        """
        A v2 client (answers C{''}) fixes version 2 before the grace ends:
        no C{#1} is ever sent, and it stays connected.
        """
        self.make(ping_interval=8, ping_timeout=20)
        self.open()
        self.clock.advance(8)
        self.assertEqual(self.rec.take(), [""])
        self.engine.receive("")
        self.assertEqual(self.engine.protocol_version, 2)
        self.clock.advance(1)
        self.assertEqual(self.rec.written, [])
        for _ in range(60):
            self.clock.advance(8)
            self.assertEqual(self.rec.take(), [""])
            self.engine.receive("")
        self.assertEqual(self.engine.state, OPEN)

    def test_auto_v2_client_that_also_sees_v1_ping(self):
        """
        A v2 client whose C{''} pong arrives after the grace (so C{#1} was
        sent too, which it sees as raw) is still version 2 from then on.
        """
        self.make(ping_interval=8, ping_timeout=20)
        self.open()
        self.tick(8, 1)
        self.assertEqual(self.rec.take(), ["", "#1"])
        self.engine.receive("")
        self.assertEqual(self.engine.protocol_version, 2)
        self.clock.advance(8)
        self.assertEqual(self.rec.take(), [""])
        self.clock.advance(2)
        self.assertEqual(self.rec.written, [])

    def test_auto_first_pong_fixes_version(self):
        """
        After the version is fixed, the other dialect's pong form is a raw
        message and does not change it.
        """
        self.make(ping_interval=8, ping_timeout=20)
        self.open()
        self.clock.advance(8)
        self.engine.receive("")
        self.engine.receive("#2")
        self.assertEqual(self.engine.protocol_version, 2)
        self.assertEqual(self.rec.calls, [("pong",), ("raw", "#2")])

        self.make(ping_interval=8, ping_timeout=20)
        self.open()
        self.tick(8, 1)
        self.engine.receive("#2")
        self.engine.receive("")
        self.assertEqual(self.engine.protocol_version, 1)
        self.assertEqual(self.rec.calls, [("pong",), ("raw", "")])

    def test_auto_silent_client_times_out(self):
        """A client that answers neither form is closed with 4001."""
        self.make(ping_interval=8, ping_timeout=20)
        self.open()
        self.tick(8, 1, 7, 1, 2.9)
        self.assertEqual(self.rec.take(), ["", "#1", "", "#1"])
        self.clock.advance(0.1)
        self.assertEqual(self.rec.closes, [(4001, "")])
        self.assertEqual(self.rec.written, [])

    def test_forced_versions_ignore_other_form(self):
        """With a forced version the other form's pong is raw."""
        self.make(protocol_version=1)
        self.open()
        self.clock.advance(8)
        self.engine.receive("")
        self.assertEqual(self.rec.calls, [("raw", "")])
        self.make(protocol_version=2)
        self.open()
        self.clock.advance(8)
        self.engine.receive("#2")
        self.assertEqual(self.rec.calls, [("raw", "#2")])

    def test_timers_stop_on_close(self):
        """Once closed, nothing is left on the clock."""
        self.make(ack_timeout=3)
        self.open()
        self.engine.emit("x", 1, lambda e, d: None)
        self.clock.advance(8)
        self.engine.close(1000)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class CallTests(EngineTestCase):
    """Call ids in both directions."""

    def setUp(self):
        self.make(protocol_version=1, ack_timeout=2)

    def test_server_emits_v14(self):
        """
        Server events go out in v14's shape (C{event}, C{data}, C{cid}),
        the server's cids start at 1, the replies reach the callbacks, an
        error reply hydrated (v14/03).
        """
        results = []

        def handshake(cid, data):
            self.engine.handshake_done()
            self.engine.emit("srvNoAck", {"a": 1})
            self.engine.emit("srvNoData")
            self.assertEqual(
                self.engine.emit("srvAck", {"b": 2},
                                 lambda e, d: results.append(("srvAck", e, d))), 1)
            self.assertEqual(
                self.engine.emit("srvAckErr", {"c": 3},
                                 lambda e, d: results.append(("srvAckErr", e, d))), 2)
            self.engine.respond(cid, None, {"id": self.status_id, "pingTimeout": 20000,
                                            "isAuthenticated": False})

        self.make(protocol_version=1, ping_interval=10, ping_timeout=20, ack_timeout=2)
        self.rec.on_handshake = handshake
        self.replay("v14/03-server-emit")
        self.assertEqual(results[0], ("srvAck", None, {"got": {"b": 2}}))
        name, error, data = results[1]
        self.assertEqual(name, "srvAckErr")
        self.assertIsInstance(error, errors.RemoteError)
        self.assertEqual(error.name, "ClientRefusalError")
        self.assertEqual(error.message, "client refuses")
        self.assertEqual(error.extra, 42)
        self.assertIsNone(data)
        self.assertEqual(len(results), 2)

    def test_cids_increment(self):
        """Each emit with a callback takes the next cid; without one, none."""
        self.open()
        cids = [self.engine.emit("a", 1, lambda e, d: None) for _ in range(3)]
        self.assertIsNone(self.engine.emit("b", 1))
        self.assertEqual(cids, [1, 2, 3])
        self.assertEqual(self.rec.take(), [
            '{"event":"a","data":1,"cid":1}', '{"event":"a","data":1,"cid":2}',
            '{"event":"a","data":1,"cid":3}', '{"event":"b","data":1}'])

    def test_sc_error_hydrated(self):
        """An error reply named as a SocketCluster error becomes that class."""
        self.open()
        results = []
        self.engine.emit("x", None, lambda e, d: results.append((e, d)))
        self.engine.receive('{"rid":1,"error":{"message":"late","name":"TimeoutError"},'
                            '"data":5}')
        error, data = results[0]
        self.assertIsInstance(error, errors.TimeoutError)
        self.assertEqual(str(error), "late")
        self.assertEqual(data, 5)

    def test_string_error(self):
        """A string error reaches the callback as a string."""
        self.open()
        results = []
        self.engine.emit("x", None, lambda e, d: results.append((e, d)))
        self.engine.receive('{"rid":1,"error":"nope"}')
        self.assertEqual(results, [("nope", None)])

    def test_ack_timeout(self):
        """
        Without a reply within C{ack_timeout}, the callback gets
        C{TimeoutError("Event response for 'x' timed out")}; a late reply is
        ignored.
        """
        self.open()
        results = []
        self.engine.emit("x", 1, lambda e, d: results.append((e, d)))
        self.clock.advance(1.999)
        self.assertEqual(results, [])
        self.clock.advance(0.001)
        self.assertEqual(len(results), 1)
        error, data = results[0]
        self.assertIsInstance(error, errors.TimeoutError)
        self.assertEqual(str(error), "Event response for 'x' timed out")
        self.assertIsNone(data)
        self.engine.receive('{"rid":1,"data":"late"}')
        self.assertEqual(len(results), 1)

    def test_custom_timeout(self):
        """C{emit(..., timeout=)} overrides the ack timeout."""
        self.open()
        results = []
        self.engine.emit("x", 1, lambda e, d: results.append(e), timeout=0.5)
        self.clock.advance(0.5)
        self.assertIsInstance(results[0], errors.TimeoutError)

    def test_reply_once(self):
        """A callback fires once, for the first reply only."""
        self.open()
        results = []
        self.engine.emit("x", 1, lambda e, d: results.append(d))
        self.engine.receive('{"rid":1,"data":1}')
        self.engine.receive('{"rid":1,"data":2}')
        self.assertEqual(results, [1])

    def test_integral_float_rid(self):
        """A rid of C{1.0} is the number 1, as in JavaScript."""
        self.open()
        results = []
        self.engine.emit("x", 1, lambda e, d: results.append(d))
        self.engine.receive('{"rid":1.0,"data":"ok"}')
        self.assertEqual(results, ["ok"])

    def test_boolean_rid_is_not_a_number(self):
        """
        C{{"rid": true}} does not answer the request with cid 1 (Python's
        C{True == 1} must not leak into the protocol).
        """
        self.open()
        results = []
        self.engine.emit("x", 1, lambda e, d: results.append(d))
        self.engine.receive('{"rid":true,"data":"bogus"}')
        self.assertEqual(results, [])

    def test_close_fails_pending(self):
        """Closing fails the pending callbacks with C{BadConnectionError}."""
        self.open()
        results = []
        self.engine.emit("x", 1, lambda e, d: results.append(e))
        self.engine.close(1000)
        self.assertIsInstance(results[0], errors.BadConnectionError)
        self.assertEqual(results[0].type, "disconnect")
        self.engine.emit("y", 1, lambda e, d: results.append(e))
        self.assertIsInstance(results[1], errors.BadConnectionError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connection_lost_fails_pending(self):
        """A lost connection fails the pending callbacks too."""
        self.open()
        results = []
        self.engine.emit("x", 1, lambda e, d: results.append(e))
        self.engine.connection_lost(1006, None)
        self.assertIsInstance(results[0], errors.BadConnectionError)
        self.assertEqual(self.rec.calls, [("closed", 1006, None, True)])

    def test_unencodable_emit(self):
        """
        An event the codec cannot encode raises the codec's error to the
        caller; nothing is sent, no reply is awaited and the callback is
        not called.
        """
        self.open()
        timers = self.clock.getDelayedCalls()
        self.assertRaises(TypeError, self.engine.emit, "x", object())
        results = []
        self.assertRaises(TypeError, self.engine.emit, "y", object(),
                          lambda e, d: results.append(e))
        self.assertEqual(results, [])
        self.assertEqual(self.rec.calls, [])
        self.assertEqual(self.rec.written, [])
        self.assertEqual(self.clock.getDelayedCalls(), timers)

    def test_reply_shapes_v14(self):
        """
        C{respond} writes the reply shapes of v14, byte for byte (v14/02).
        """
        from tests.test_socket import CustomError, PartialError

        def on_event(event, data, cid):
            respond = self.engine.respond
            if event == "echo":
                respond(cid, None, {"echoed": "(undefined)" if data is None else data})
            elif event == "ackNoData":
                respond(cid)
            elif event == "fail":
                respond(cid, CustomError("Something bad happened"))
            elif event == "failWithData":
                respond(cid, PartialError("Partial failure"), {"partial": True})
            elif event == "failPlain":
                respond(cid, Exception("plain Error, name not assigned"))
            elif event == "failString":
                respond(cid, "plain string error")
            elif event == "failTrue":
                respond(cid, True)

        self.make(protocol_version=1, ping_interval=10, ping_timeout=20)
        self.rec.on_event = on_event
        self.replay("v14/02-emit-ack")

    def test_respond_without_cid(self):
        """C{respond(None, ...)} sends nothing."""
        self.open()
        self.engine.respond(None, None, 1)
        self.assertEqual(self.rec.written, [])

    def test_respond_after_close(self):
        """Nothing is sent after the close."""
        self.open()
        self.engine.close(1000)
        self.rec.take()
        self.engine.respond(3, None, 1)
        self.engine.emit("x", 1)
        self.engine.send_raw("raw")
        self.assertEqual(self.rec.written, [])

    def test_unencodable_reply(self):
        """
        A reply the codec cannot encode is reported, not raised, and the
        client gets an error reply instead.
        """
        self.open()
        self.engine.respond(2, None, {1j: 1})
        self.assertEqual(self.rec.kinds()[0], "error")
        self.assertEqual(self.rec.written, [
            '{"rid":2,"error":{"message":"The response could not be encoded",'
            '"name":"InvalidMessageError"}}'])


class CidValidationTests(EngineTestCase):
    """Which client cids get a reply."""

    def test_valid_cid(self):
        """L{valid_cid}: positive integers (any size) and short strings only."""
        self.assertEqual(valid_cid(1), 1)
        self.assertEqual(valid_cid(2 ** 53 - 1), 2 ** 53 - 1)
        for big in (2 ** 53, 2 ** 64, 10 ** 100):
            self.assertEqual(valid_cid(big), big)
        self.assertEqual(valid_cid("abc"), "abc")
        self.assertEqual(valid_cid("x" * 128), "x" * 128)
        self.assertEqual(valid_cid(2.0), 2)
        self.assertIs(type(valid_cid(2.0)), int)
        for cid in (0, -1, 1.5, float("inf"), float("nan"), -2.0,
                    True, False, "", "x" * 129, None, [], [1], {}, {"a": 1}):
            self.assertIsNone(valid_cid(cid), repr(cid))

    def test_cids_on_the_wire(self):
        """
        Events with cids that cannot be answered are dispatched without a
        cid, and never answered; a truthy invalid cid is reported.
        """
        self.make()
        self.open()
        replies = []
        self.rec.on_event = lambda event, data, cid: replies.append(
            self.engine.respond(cid, None, "ok"))
        cases = [
            ("0", None, False),
            ("1e400", None, True),
            ("-5", None, True),
            ("1.5", None, True),
            ("true", None, True),
            ("false", None, False),
            ("null", None, False),
            ('""', None, False),
            ('"' + "c" * 129 + '"', None, True),
            ("[1]", None, True),
            ('{"a":1}', None, True),
            ("[]", None, False),
            ("{}", None, False),
        ]
        for text, expected, reported in cases:
            del self.rec.calls[:]
            self.engine.receive('{"event":"e","data":1,"cid":%s}' % (text,))
            kinds = self.rec.kinds()
            self.assertEqual(kinds, (["error"] if reported else []) + ["event"], text)
            self.assertEqual(self.rec.calls[-1], ("event", "e", 1, expected), text)
            self.assertEqual(self.rec.written, [], text)
        self.engine.receive('{"event":"e","data":1,"cid":"abc"}')
        self.engine.receive('{"event":"e","data":1,"cid":7}')
        self.engine.receive('{"event":"e","data":1,"cid":7.0}')
        self.engine.receive('{"event":"e","data":1,"cid":9007199254740992}')
        self.engine.receive('{"event":"e","data":1,"cid":123456789012345678901234567890}')
        self.assertEqual(self.rec.take(), ['{"rid":"abc","data":"ok"}', '{"rid":7,"data":"ok"}',
                                           '{"rid":7,"data":"ok"}',
                                           '{"rid":9007199254740992,"data":"ok"}',
                                           '{"rid":123456789012345678901234567890,"data":"ok"}'])
        self.assertEqual(self.engine.state, OPEN)


class DisconnectTests(EngineTestCase):
    """C{#disconnect} from the client, and the server's close."""

    def test_client_disconnect_v14(self):
        """
        C{#disconnect} from the client closes with its code and nothing
        else sent (v14/13, v14/01).
        """
        for conn, code, reason in (("c0", 4100, "client bye"), ("c1", 1000, None)):
            self.make(protocol_version=1, ping_interval=10, ping_timeout=20)
            self.replay("v14/13-client-disconnect", conn, exact_close_reason=False)
            self.assertEqual(self.rec.calls[-1], ("closed", code, reason, True))

    def test_client_disconnect_malformed(self):
        """
        A C{#disconnect} whose data or code is malformed closes with 1000.
        """
        for data in ("null", '"x"', '{"code":"4100"}', '{"code":true}', '{"code":null}', "[]"):
            self.make()
            self.open()
            self.engine.receive('{"event":"#disconnect","data":%s}' % (data,))
            self.assertEqual(self.rec.closes, [(1000, "")], data)
            self.assertEqual(self.rec.calls[-1][:2], ("closed", 1000), data)
            self.assertEqual(self.rec.written, [], data)

    def test_client_disconnect_odd_codes(self):
        """
        Codes that may not go in a close frame are reported as they came but
        the close frame carries 1000; an unusable reason is left out.
        """
        self.make()
        self.open()
        self.engine.receive('{"event":"#disconnect","data":{"code":1006,"data":{"a":1}}}')
        self.assertEqual(self.rec.closes, [(1000, "")])
        self.assertEqual(self.rec.calls[-1], ("closed", 1006, {"a": 1}, True))

    def test_server_disconnect_v14(self):
        """
        The server's close sends C{#disconnect} with the code and the
        reason (v14/12, byte for byte), and the close frame carries the
        reason when it is text (the union dialect of v1 and v2).
        """
        transcript = load_transcript("v14/12-server-disconnect")
        for conn, args, reason in (("c0", (4321, "custom reason"), "custom reason"),
                                   ("c1", (), ""),
                                   ("c2", (4600, {"why": "object reason", "n": 1}), "")):
            self.make(protocol_version=1, ping_interval=10, ping_timeout=20)
            self.engine.receive(HANDSHAKE)
            self.rec.take()
            self.engine.close(*args)
            expected = [p for d, p in frames(transcript, conn) if d == "out"][1:]
            self.assertEqual(self.rec.take(), expected, conn)
            code = [p for d, p in frames(transcript, conn) if d == "close-out"][0][0]
            self.assertEqual(self.rec.closes, [(code, reason)], conn)
            self.assertEqual(self.rec.calls[-1], ("closed", code, args[1] if args else None, True))

    def test_server_disconnect_v2(self):
        """With protocol version 2 there is no C{#disconnect}: the reason is in the close frame."""
        self.make(protocol_version=2)
        self.open()
        self.engine.close(4321, "custom reason")
        self.assertEqual(self.rec.written, [])
        self.assertEqual(self.rec.closes, [(4321, "custom reason")])

    def test_close_frame_code_and_reason(self):
        """Close frames only carry codes a peer accepts, reasons of at most 123 bytes."""
        self.assertEqual(close_frame_code(1000), 1000)
        self.assertEqual(close_frame_code(4999), 4999)
        self.assertEqual(close_frame_code(3000), 3000)
        self.assertEqual(close_frame_code(1001), 1001)
        self.assertEqual(close_frame_code(1011), 1011)
        for code in (1004, 1005, 1006, 1010, 1015, 2999, 5000, -1, "4000", None, True):
            self.assertEqual(close_frame_code(code), 1000, repr(code))
        self.assertEqual(close_frame_reason("x" * 200), "x" * 123)
        self.assertEqual(close_frame_reason("é" * 100).encode("utf-8"), "é".encode("utf-8") * 61)
        self.assertEqual(close_frame_reason(None), "")
        self.assertEqual(close_frame_reason(5), "")

    def test_close_twice(self):
        """A second close does nothing."""
        self.make()
        self.open()
        self.engine.close(4000, "a")
        self.engine.close(4001, "b")
        self.engine.connection_lost(1006, None)
        self.assertEqual(self.rec.closes, [(4000, "a")])
        self.assertEqual(self.rec.kinds(), ["closed"])

    def test_close_before_handshake(self):
        """C{engine_closed} tells whether the connection was open."""
        self.make()
        self.engine.close(4008, None)
        self.assertEqual(self.rec.calls, [("closed", 4008, None, False)])
        self.assertEqual(self.rec.take(), ['{"event":"#disconnect","data":{"code":4008}}'])


class BatchTests(EngineTestCase):
    """Batched replies."""

    def test_batched_subscribe_replies_v14(self):
        """
        Replies to C{batch: true} subscribes go out in one array after the
        batch duration (v14/18).
        """
        def on_event(event, data, cid):
            if event == "#subscribe":
                self.engine.respond(cid, batch=bool(data.get("batch")))

        self.make(protocol_version=1, ping_interval=10, ping_timeout=20, batch_duration=0.1)
        self.rec.on_event = on_event
        steps = frames(load_transcript("v14/18-batching"))
        self.engine.receive(steps[0][1])
        self.rec.take()
        self.assertEqual(steps[2][0], "in")
        self.engine.receive(steps[2][1])
        self.assertEqual(self.rec.written, [])
        self.clock.advance(0.099)
        self.assertEqual(self.rec.written, [])
        self.clock.advance(0.001)
        self.assertEqual(steps[3][0], "out")
        self.assertEqual(self.rec.take(), [steps[3][1]])

    def test_batch_without_duration(self):
        """Without a batch duration, batched replies go out on the next tick."""
        self.make()
        self.open()
        self.engine.respond(2, batch=True)
        self.engine.respond(3, None, "x", batch=True)
        self.assertEqual(self.rec.written, [])
        self.clock.advance(0)
        self.assertEqual(self.rec.take(), ['[{"rid":2},{"rid":3,"data":"x"}]'])

    def test_close_flushes_batch_first(self):
        """
        Closing sends the queued batched replies, before the C{#disconnect}
        (a v1 client stops reading at C{#disconnect}).
        """
        self.make(batch_duration=1)
        self.open()
        self.engine.respond(2, batch=True)
        self.engine.close(1000)
        self.assertEqual(self.rec.take(), [
            '[{"rid":2}]', '{"event":"#disconnect","data":{"code":1000}}'])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ClientRoleTests(EngineTestCase):
    """
    The same engine in the client role: it answers pings, closes with 4000
    when they stop, announces a close in the client's dialect, echoes a
    server's C{#disconnect}, and shares everything else with the server.
    """

    def make_client(self, version=2, **options):
        options.setdefault("ping_timeout", 20.0)
        options.setdefault("ack_timeout", 10.0)
        self.clock = Clock()
        self.rec = Recorder()
        self.engine = ProtocolEngine(JSONCodec(), self.clock, self.rec, self.rec,
                                     role=CLIENT, protocol_version=version, **options)
        return self.engine

    def handshake(self, ping_timeout=None):
        replies = []
        self.engine.emit("#handshake", {"authToken": None}, lambda e, d: replies.append((e, d)))
        self.assertEqual(self.rec.take(),
                         ['{"event":"#handshake","data":{"authToken":null},"cid":1}'])
        self.engine.receive('{"rid":1,"data":{"id":"x","pingTimeout":20000}}')
        self.engine.handshake_done(ping_timeout=ping_timeout)
        self.assertEqual(replies, [(None, {"id": "x", "pingTimeout": 20000})])
        self.assertEqual(self.engine.state, OPEN)

    def test_client_needs_a_version(self):
        """A client engine speaks 1 or 2; 'auto' is for servers."""
        self.assertRaises(ValueError, self.make_client, "auto")
        self.assertRaises(ValueError, ProtocolEngine, JSONCodec(), Clock(), Recorder(),
                          Recorder(), role="peer")

    def test_no_timers_but_the_ping_timeout(self):
        """A client neither pings nor waits for #handshake: only the ping timeout runs."""
        self.make_client()
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [20.0])
        self.engine.receive('{"event":"#handshake","cid":5}')
        self.assertEqual(self.rec.calls, [("event", "#handshake", None, 5)])

    def test_answers_v2_pings(self):
        """v2: an empty ping gets an empty pong and resets the ping timeout."""
        self.make_client(2)
        self.handshake()
        self.clock.advance(15)
        self.engine.receive("")
        self.assertEqual(self.rec.take(), [""])
        self.clock.advance(15)
        self.assertEqual(self.engine.state, OPEN)
        self.engine.receive("#1")
        self.assertEqual(self.rec.take(), [])
        self.assertEqual(self.rec.calls[-1], ("raw", "#1"))

    def test_answers_v1_pings(self):
        """v1: C{#1} gets C{#2} through the codec; an empty frame is raw."""
        self.make_client(1)
        self.handshake()
        self.engine.receive("#1")
        self.assertEqual(self.rec.take(), ["#2"])
        self.engine.receive("")
        self.assertEqual(self.rec.take(), [])
        self.assertEqual(self.rec.calls[-1], ("raw", ""))

    def test_ping_timeout_closes_4000(self):
        """No ping for C{ping_timeout}: close 4000, no reason, no #disconnect."""
        self.make_client(1)
        self.handshake(ping_timeout=5.0)
        self.clock.advance(5)
        self.assertEqual(self.rec.closes, [(4000, "")])
        self.assertEqual(self.rec.take(), [])
        self.assertEqual(self.rec.calls[-1], ("closed", 4000, None, True))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_handshake_done_sets_the_servers_ping_timeout(self):
        """The server's pingTimeout replaces the initial one from the handshake on."""
        self.make_client(2, ping_timeout=3.0)
        self.clock.advance(2)
        self.handshake(ping_timeout=30.0)
        self.clock.advance(29)
        self.assertEqual(self.engine.state, OPEN)
        self.clock.advance(1)
        self.assertEqual(self.engine.state, CLOSED)

    def test_close_v1_announces(self):
        """An open v1 client sends #disconnect, then the bare code."""
        self.make_client(1)
        self.handshake()
        self.engine.close(4100, "bye")
        self.assertEqual(self.rec.take(),
                         ['{"event":"#disconnect","data":{"code":4100,"data":"bye"}}'])
        self.assertEqual(self.rec.closes, [(4100, "")])

    def test_close_v1_connecting_does_not_announce(self):
        """A v1 client that is not open yet closes without #disconnect."""
        self.make_client(1)
        self.engine.close(4100, "bye")
        self.assertEqual(self.rec.take(), [])
        self.assertEqual(self.rec.closes, [(4100, "")])

    def test_close_v2_reason_in_frame(self):
        """A v2 client puts a string reason in the close frame; a failure puts none."""
        self.make_client(2)
        self.handshake()
        self.engine.close(4100, "bye")
        self.assertEqual(self.rec.take(), [])
        self.assertEqual(self.rec.closes, [(4100, "bye")])
        self.make_client(2)
        self.engine.close(4003, "failed", notify_peer=False)
        self.assertEqual(self.rec.closes, [(4003, "")])

    def test_client_close_codes(self):
        """A client's close frame carries 1000 or 3000-4999 only."""
        for code, frame in ((1000, 1000), (1001, 1000), (1011, 1000), (3000, 3000),
                            (4999, 4999), (5000, 1000)):
            self.make_client(2)
            self.engine.close(code, None)
            self.assertEqual(self.rec.closes, [(frame, "")], code)

    def test_server_disconnect_is_echoed_v1(self):
        """A server's #disconnect: a v1 client echoes it, as socketcluster-client 14 does."""
        self.make_client(1)
        self.handshake()
        self.engine.receive('{"event":"#disconnect","data":{"code":4321,"data":"why"}}')
        self.assertEqual(self.rec.take(),
                         ['{"event":"#disconnect","data":{"code":4321,"data":"why"}}'])
        self.assertEqual(self.rec.closes, [(4321, "")])
        self.assertEqual(self.rec.calls[-1], ("closed", 4321, "why", True))

    def test_shared_cid_counter(self):
        """A client socket's counter numbers the requests of all its engines."""
        counter = iter(range(7, 100))
        self.make_client(2, next_cid=lambda: next(counter))
        self.engine.emit("a", 1, lambda e, d: None)
        self.engine.emit("b", 1, lambda e, d: None, cid=42)
        self.assertEqual(self.rec.take(), ['{"event":"a","data":1,"cid":7}',
                                           '{"event":"b","data":1,"cid":42}'])

    def test_no_timeout(self):
        """C{timeout=None}: the request waits as long as the connection lives."""
        self.make_client(2, ping_timeout_disabled=True)
        results = []
        self.engine.emit("#subscribe", {"channel": "x"}, lambda e, d: results.append(e),
                         timeout=None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.engine.connection_lost(1006, None)
        self.assertIsInstance(results[0], errors.BadConnectionError)
        self.assertEqual(results[0].type, "connectAbort")
        self.assertEqual((results[0].code, results[0].reason), (1006, None))

    def test_invoke(self):
        """C{invoke}: a Deferred for the reply; cancelling it forgets the request."""
        self.make_client(2)
        self.handshake()
        d = self.engine.invoke("echo", 1)
        self.engine.receive('{"rid":2,"data":"one"}')
        self.assertEqual(self.successResultOf(d), "one")
        d = self.engine.invoke("echo", 2)
        self.engine.receive('{"rid":3,"error":"plain"}')
        failure = self.failureResultOf(d, errors.RemoteError)
        self.assertEqual(failure.value.value, "plain")
        d = self.engine.invoke("echo", 3)
        d.cancel()
        self.failureResultOf(d)
        self.engine.receive('{"rid":4,"data":"late"}')
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [20.0])
        d = self.engine.invoke("echo", object())
        self.failureResultOf(d, TypeError)


class DeclaredInterfaceTests(SynchronousTestCase):
    """The engine's owners and outputs declare the interfaces they provide."""

    def test_owners_and_outputs(self):
        from zope.interface.verify import verifyClass

        from scserver._engine import IEngineOutput, IEngineOwner
        from scserver._transport import SCClientProtocol, SCServerProtocol
        from scserver.client import SCClientSocket
        from scserver.socket import IServerSocketOutput, SCServerSocket
        from scserver.testing import RecordingOutput

        for cls in (SCServerSocket, SCClientSocket):
            self.assertTrue(verifyClass(IEngineOwner, cls), cls)
        for cls in (SCServerProtocol, RecordingOutput):
            self.assertTrue(verifyClass(IServerSocketOutput, cls), cls)
        self.assertTrue(verifyClass(IEngineOutput, SCClientProtocol))
