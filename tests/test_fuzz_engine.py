"""
Property tests (fuzzing, with hypothesis) of L{scserver._engine.ProtocolEngine}
in both roles and with both codecs, driven by a L{Clock} and a recording
owner/output (as in L{tests.test_engine}).

Each example is a sequence of steps: inbound frames (valid packets, batches,
garbage text and bytes, pings and pongs, C{#disconnect}, odd and huge cids),
clock advances, requests of our own (C{emit} with a callback), the
handshake completing, and at the end a close from either side.  Checked:

 - no exception escapes the engine;
 - every payload written is a heartbeat or a well-formed packet: a reply
   is a dict with a positive int or a short str C{rid}, an event a dict
   with a str C{event} (a batch: a list of those); every close frame has a
   code the role may send and a reason of at most 123 bytes;
 - after the close nothing is left: no pending timer on the clock, no
   pending acknowledgement, and every callback was called exactly once.

Profiles: see L{tests.test_fuzz_codec}.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from scserver._engine import CLIENT, CLOSED, SERVER, ProtocolEngine, close_frame_code
from scserver.codec import JSONCodec, MinBinCodec
from tests.test_fuzz_codec import (
    FUZZ,
    count,
    json_values,
    msgpack_values,
    packets,
)

_HEARTBEATS = ("#1", "#2", "")


class FuzzOwner:
    """
    The owner and output of an engine under fuzz: answers the handshake and
    every event with a cid (echoing the data, an error for events starting
    with C{"e"}, batched for those starting with C{"b"}), and records every
    write and close.
    """

    def __init__(self, test):
        self.test = test
        self.engine = None
        self.written = []
        self.closes = []
        self.closed = []
        self.errors = []

    # output
    def write(self, payload):
        self.test.assertIsInstance(payload, (str, bytes))
        self.written.append(payload)

    def close(self, code, reason):
        self.closes.append((code, reason))

    # owner
    def engine_message(self, payload):
        pass

    def engine_handshake(self, cid, data):
        self.engine.handshake_done()
        self.engine.respond(cid, None, {"id": "x", "pingTimeout": 20000})

    def engine_event(self, event, data, cid):
        if cid is None:
            return
        if event.startswith("e"):
            self.engine.respond(cid, ValueError("no"), None)
        else:
            self.engine.respond(cid, None, data, batch=event.startswith("b"))

    def engine_raw(self, message):
        pass

    def engine_pong(self):
        pass

    def engine_error(self, error):
        self.errors.append(error)

    def engine_closed(self, code, reason, was_open):
        self.closed.append((code, reason, was_open))


def _frames(codec_name):
    """Inbound payloads for an engine using the codec C{codec_name}."""
    if codec_name == "json":
        codec, values = JSONCodec(), json_values
    else:
        codec, values = MinBinCodec(), msgpack_values

    def encode(packet):
        try:
            return codec.encode(packet)
        except (TypeError, ValueError):
            return "unencodable"

    def as_binary(payload):
        return payload.encode("utf-8") if isinstance(payload, str) else payload

    encoded = st.one_of(packets(values), st.lists(packets(values), max_size=4)).map(encode)
    return st.one_of(
        encoded,
        encoded.map(as_binary),
        st.sampled_from(_HEARTBEATS + (b"", b"#2")),
        st.sampled_from(_HEARTBEATS).map(encode),
        st.text(max_size=60),
        st.binary(max_size=60),
        st.sampled_from(['{"event":"#handshake","cid":1}', '[{"event":"#handshake"}]',
                         '{"event":"#handshake","data":{},"cid":"1"}']).map(
            lambda text: text if codec_name == "json"
            else encode(JSONCodec().decode(text))),
    )


def _steps(codec_name):
    return st.lists(st.one_of(
        st.tuples(st.just("receive"), _frames(codec_name)),
        st.tuples(st.just("advance"), st.sampled_from([0, 0.25, 1, 5, 8, 10, 20, 30])),
        st.tuples(st.just("emit"), st.text(max_size=8),
                  st.sampled_from([None, 0.5, 10, "default"])),
        st.tuples(st.just("handshake_done"), st.sampled_from([None, 5.0, 30.0])),
    ), max_size=25)


_ENGINES = st.one_of(
    st.fixed_dictionaries({"role": st.just(SERVER),
                           "protocol_version": st.sampled_from([1, 2, "auto"]),
                           "strict_handshake": st.booleans(),
                           "ping_timeout_disabled": st.booleans(),
                           "batch_duration": st.sampled_from([None, 0, 0.5])}),
    st.fixed_dictionaries({"role": st.just(CLIENT),
                           "protocol_version": st.sampled_from([1, 2]),
                           "ping_timeout_disabled": st.booleans()}),
)

_ENDINGS = st.one_of(
    st.tuples(st.just("close"), st.sampled_from([1000, 1001, 4000, 4999, 1005, 999, 70000]),
              st.sampled_from([None, "", "bye", "\xe9" * 100])),
    st.tuples(st.just("connection_lost"), st.sampled_from([1000, 1006, 4001]), st.none()),
)


class EngineFuzzTests(SynchronousTestCase):
    """Arbitrary traffic and time never break the engine."""

    def check_payload(self, codec, codec_name, payload):
        """A written payload is a heartbeat or a well-formed packet."""
        if payload in _HEARTBEATS:
            return
        decoded = codec.decode(payload)
        if decoded in ("#1", "#2"):
            return
        for packet in decoded if isinstance(decoded, list) else [decoded]:
            self.assertIsInstance(packet, dict, payload)
            if "rid" in packet:
                rid = packet["rid"]
                if type(rid) is float and codec_name == "minbin":
                    # A cid of 2**64 or more (sent as an integral float64):
                    # MessagePack has no such int, so the echo is the float
                    # the client sent, the same JavaScript number.
                    self.assertTrue(rid.is_integer() and rid >= 2.0 ** 64, payload)
                    continue
                self.assertIn(type(rid), (int, str), payload)
                if type(rid) is int:
                    self.assertGreater(rid, 0, payload)
                else:
                    self.assertTrue(0 < len(rid) <= 128, payload)
            else:
                self.assertIsInstance(packet.get("event"), str, payload)
                if packet["event"] == "#disconnect":
                    self.assertIsInstance(packet["data"]["code"], int, payload)

    def run_engine(self, codec_name, options, steps, ending):
        codec = JSONCodec() if codec_name == "json" else MinBinCodec()
        clock = Clock()
        owner = FuzzOwner(self)
        engine = owner.engine = ProtocolEngine(
            codec, clock, owner, owner, ping_interval=8.0, ping_timeout=20.0,
            handshake_timeout=10.0, ack_timeout=10.0, **options)
        replies = []
        for step in steps:
            kind = step[0]
            if kind == "receive":
                engine.receive(step[1])
            elif kind == "advance":
                clock.advance(step[1])
            elif kind == "emit":
                calls = []
                replies.append(calls)
                timeout = step[2]
                kwargs = {} if timeout == "default" else {"timeout": timeout}
                engine.emit(step[1], {"n": len(replies)},
                            lambda error, data, calls=calls: calls.append((error, data)),
                            **kwargs)
            elif kind == "handshake_done":
                engine.handshake_done(step[1])
        if ending[0] == "close":
            engine.close(ending[1], ending[2])
        else:
            engine.connection_lost(ending[1], ending[2])
        # Time goes on after the close: nothing may fire.
        clock.advance(100)

        self.assertEqual(engine.state, CLOSED)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(engine._pending, {})
        self.assertEqual(len(owner.closed), 1)
        for calls in replies:
            self.assertEqual(len(calls), 1, calls)
        for payload in owner.written:
            self.check_payload(codec, codec_name, payload)
        self.assertLessEqual(len(owner.closes), 1)
        for code, reason in owner.closes:
            self.assertEqual(close_frame_code(code, options["role"]), code)
            self.assertIsInstance(reason, str)
            self.assertLessEqual(len(reason.encode("utf-8")), 123)
        # Closed: more traffic is ignored.
        written = len(owner.written)
        engine.receive('{"event":"x","cid":1}')
        engine.respond(1, None, "late")
        self.assertEqual(len(owner.written), written)

    @FUZZ
    @given(_ENGINES, _steps("json"), _ENDINGS)
    def test_json(self, options, steps, ending):
        """The engine on the JSON codec."""
        count("engine %s json" % (options["role"],))
        self.run_engine("json", options, steps, ending)

    @FUZZ
    @given(_ENGINES, _steps("minbin"), _ENDINGS)
    def test_minbin(self, options, steps, ending):
        """The engine on the min-bin codec."""
        count("engine %s min-bin" % (options["role"],))
        self.run_engine("minbin", options, steps, ending)
