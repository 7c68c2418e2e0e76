"""
Tests for L{scserver.codec}: the JSON (sc-formatter) and MinBin
(sc-codec-min-bin) codec engines, checked against the frames recorded from
the real Node servers in C{tests/fixtures}.
"""

import base64
import enum
import json
import random
import sys
import uuid

import msgpack
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from scserver import codec as _codec
from scserver.codec import JSONCodec, MinBinCodec
from scserver.errors import InvalidMessageError
from scserver.interfaces import ICodecEngine

from ._transcripts import frames, load_transcript, transcript_names


def _all_frames():
    """
    Every data frame of every recorded transcript.

    @return: a list of C{(name, conn, direction, payload)}.
    """
    result = []
    for folder in ("v14", "v20", "cross"):
        for name in transcript_names(folder):
            transcript = load_transcript(name)
            conns = sorted(
                {event["conn"] for event in transcript["events"] if "conn" in event}
            )
            for conn in conns:
                for direction, payload in frames(transcript, conn):
                    if direction in ("in", "out"):
                        result.append((name, conn, direction, payload))
    return result


def _unwrap_binary(value):
    """
    Replace every C{{"base64": true, "data": ...}} wrapper in C{value} with
    the bytes it stands for.
    """
    if isinstance(value, dict):
        if set(value) == {"base64", "data"} and value["base64"] is True:
            return base64.b64decode(value["data"])
        return {key: _unwrap_binary(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unwrap_binary(item) for item in value]
    return value


def _expand(compressed):
    """
    The SocketCluster packet a recorded sc-codec-min-bin C{decoded} value
    stands for, written independently of the code under test: nil fields
    are left out.
    """
    if isinstance(compressed, list):
        return [_expand(item) for item in compressed]
    if not isinstance(compressed, dict):
        return compressed
    if "e" in compressed:
        names = ("event", "data", "cid")
        values = compressed["e"]
        packet = {}
    elif "p" in compressed:
        channel, data, *cid = compressed["p"]
        packet = {"event": "#publish", "data": {"channel": channel}}
        if data is not None:
            packet["data"]["data"] = data
        names, values = ("cid",), cid
    elif "r" in compressed:
        names = ("rid", "error", "data")
        values = compressed["r"]
        packet = {}
    else:
        return compressed
    for key, value in zip(names, values):
        if value is not None:
            packet[key] = value
    return packet


class TranscriptHelperTests(SynchronousTestCase):
    """
    Tests for the C{tests._transcripts} helpers the codec tests rely on.
    """

    def test_names(self):
        """
        L{transcript_names} lists every fixture of a folder.
        """
        self.assertEqual(len(transcript_names("v14")), 24)
        self.assertEqual(len(transcript_names("v20")), 18)
        self.assertEqual(len(transcript_names("cross")), 4)
        self.assertIn("v14/02-emit-ack", transcript_names("v14"))

    def test_load(self):
        """
        L{load_transcript} accepts a name with or without C{.json}.
        """
        transcript = load_transcript("v14/02-emit-ack")
        self.assertEqual(transcript["scenario"], "02-emit-ack")
        self.assertEqual(load_transcript("v14/02-emit-ack.json"), transcript)

    def test_text_frames(self):
        """
        Text frames are L{str}, in recorded order, with their direction.
        """
        result = frames(load_transcript("v14/02-emit-ack"))
        self.assertEqual(
            result[0],
            ("in", '{"event":"#handshake","data":{"authToken":null},"cid":1}'),
        )
        self.assertEqual(result[1][0], "out")
        self.assertTrue(result[1][1].startswith('{"rid":1,"data":{"id":"'))

    def test_binary_and_close_frames(self):
        """
        Binary frames are L{bytes}; the server's close frames are
        C{("close-out" | "close-in", (code, reason))}.
        """
        result = frames(load_transcript("v14/19-codec-min-bin"))
        self.assertEqual(result[0][0], "in")
        self.assertEqual(result[0][1][:4], b"\x81\xa1e\x93")
        self.assertIn(("out", b"\xa2#1"), result)
        self.assertEqual(
            result[-2:], [("close-out", (1000, "")), ("close-in", (1000, ""))]
        )

    def test_other_connection(self):
        """
        C{conn} selects the frames of another connection.
        """
        result = frames(load_transcript("v14/17-binary"), "c1")
        self.assertIsInstance(result[0][1], bytes)
        self.assertEqual(result[0][0], "in")


class JSONCodecInterfaceTests(SynchronousTestCase):
    """
    L{JSONCodec} is an L{ICodecEngine}.
    """

    def test_interface(self):
        """
        L{JSONCodec} provides L{ICodecEngine}.
        """
        self.assertTrue(verifyObject(ICodecEngine, JSONCodec()))


class JSONCodecTranscriptTests(SynchronousTestCase):
    """
    L{JSONCodec} against the frames recorded from the Node servers.
    """

    def setUp(self):
        self.codec = JSONCodec()

    def test_every_recorded_text_frame(self):
        """
        Every JSON text frame of every transcript (except the MinBin one)
        decodes, and re-encodes to exactly the recorded text; the other
        frames (pings, pongs, empty and raw text) decode to themselves.
        """
        count = 0
        for name, conn, direction, payload in _all_frames():
            if name == "v14/19-codec-min-bin":
                continue
            if isinstance(payload, bytes):
                payload = payload.decode("utf-8")
            decoded = self.codec.decode(payload)
            if isinstance(decoded, str):
                self.assertEqual(decoded, payload, (name, conn, direction))
                continue
            self.assertEqual(
                self.codec.encode(decoded), payload, (name, conn, direction)
            )
            count += 1
        self.assertGreater(count, 400)

    def test_emit_ack_frames(self):
        """
        The v14/02 replies are written byte for byte from Python packets.
        """
        out = [p for d, p in frames(load_transcript("v14/02-emit-ack")) if d == "out"]
        packets = [
            {"rid": 2, "data": {"echoed": {"msg": "hi", "n": 1}}},
            {"rid": 3, "data": {"echoed": "(undefined)"}},
            {"rid": 4},
            {
                "rid": 5,
                "error": {
                    "message": "Something bad happened",
                    "name": "CustomError",
                    "code": 4242,
                    "details": {"field": "amount", "reason": "negative"},
                },
            },
            {
                "rid": 6,
                "error": {"message": "Partial failure", "name": "PartialError"},
                "data": {"partial": True},
            },
            {"rid": 7, "error": {"message": "plain Error, name not assigned"}},
            {"rid": 8, "error": "plain string error"},
            {"rid": 9, "error": True},
        ]
        self.assertEqual([self.codec.encode(p) for p in packets], out[1:])

    def test_emit_ack_inbound(self):
        """
        The v14/02 client frames decode to the expected packets; a missing
        C{data} stays missing.
        """
        inbound = [
            p for d, p in frames(load_transcript("v14/02-emit-ack")) if d == "in"
        ]
        decoded = [self.codec.decode(p) for p in inbound]
        self.assertEqual(
            decoded[0], {"event": "#handshake", "data": {"authToken": None}, "cid": 1}
        )
        self.assertEqual(decoded[2], {"event": "echo", "cid": 3})
        self.assertIn({"event": "noack", "data": {"fire": "and forget"}}, decoded)

    def test_binary_wrapping_recorded(self):
        """
        The v14/17 and v20/12 frames carrying binary data are what Python
        bytes encode to, and decoding does not unwrap them.
        """
        for name in ("v14/17-binary", "v20/12-binary"):
            for direction, payload in frames(load_transcript(name)):
                if direction not in ("in", "out"):
                    continue
                decoded = self.codec.decode(payload)
                if isinstance(decoded, str):
                    continue
                self.assertEqual(
                    self.codec.encode(_unwrap_binary(decoded)), payload, name
                )
        out = [p for d, p in frames(load_transcript("v14/17-binary")) if d == "out"]
        self.assertEqual(
            self.codec.encode({"event": "srvBin", "data": b"\x00\x01\x02\xfd\xfe\xff"}),
            out[0],
        )
        self.assertEqual(
            self.codec.encode({"rid": 2, "data": {"back": b"server bytes \x00\xff"}}),
            out[2],
        )
        inbound = [p for d, p in frames(load_transcript("v14/17-binary")) if d == "in"]
        self.assertEqual(
            self.codec.decode(inbound[1])["data"],
            {
                "buf": {"base64": True, "data": "AQID/w=="},
                "ab": {"base64": True, "data": "CQgH"},
            },
        )

    def test_binary_frame_handshake(self):
        """
        A JSON packet sent in a binary frame (v14/17, c1) decodes like the
        same text.
        """
        payload = frames(load_transcript("v14/17-binary"), "c1")[0][1]
        self.assertIsInstance(payload, bytes)
        self.assertEqual(
            self.codec.decode(payload),
            {"event": "#handshake", "data": {"authToken": None}, "cid": 1},
        )


class JSONCodecEncodeTests(SynchronousTestCase):
    """
    Tests for L{JSONCodec.encode}.
    """

    def setUp(self):
        self.encode = JSONCodec().encode

    def test_ping_pong(self):
        """
        C{'#1'} and C{'#2'} pass through; other strings are JSON strings.
        """
        self.assertEqual(self.encode("#1"), "#1")
        self.assertEqual(self.encode("#2"), "#2")
        self.assertEqual(self.encode("#3"), '"#3"')
        self.assertEqual(self.encode(""), '""')

    def test_compact(self):
        """
        Output is compact, keeps key order and returns L{str}.
        """
        result = self.encode({"b": [1, 2, {"c": None}], "a": True, "z": False})
        self.assertEqual(result, '{"b":[1,2,{"c":null}],"a":true,"z":false}')
        self.assertIsInstance(result, str)

    def test_non_ascii(self):
        """
        Non-ASCII text is written as is, control characters are escaped.
        """
        self.assertEqual(
            self.encode({"t": "\xe9\u2028\U0001f600"}), '{"t":"\xe9\u2028\U0001f600"}'
        )
        self.assertEqual(
            self.encode(['\x00\x1f\x7f"\\/\n\t']),
            '["\\u0000\\u001f\x7f\\"\\\\/\\n\\t"]',
        )

    def test_lone_surrogates(self):
        """
        Lone surrogates are escaped and surrogate pairs joined, as
        C{JSON.stringify} does, so the text is valid UTF-8.
        """
        self.assertEqual(self.encode(["\ud800"]), '["\\ud800"]')
        self.assertEqual(self.encode({"\udc00x": 1}), '{"\\udc00x":1}')
        self.assertEqual(self.encode(["\ud83d\ude00"]), '["\U0001f600"]')
        self.assertEqual(self.encode(["\ude00\ud83d"]), '["\\ude00\\ud83d"]')
        self.assertEqual(self.encode(["\xe9\ud800", 1.0]), '["\xe9\\ud800",1]')

    def test_bytes(self):
        """
        Bytes-like values anywhere become base64 wrappers with padding.
        """
        self.assertEqual(
            self.encode({"a": b"\x01\x02\x03\xff"}),
            '{"a":{"base64":true,"data":"AQID/w=="}}',
        )
        self.assertEqual(
            self.encode([bytearray(b"\t\x08\x07"), memoryview(b"ab"), b""]),
            '[{"base64":true,"data":"CQgH"},{"base64":true,"data":"YWI="},'
            '{"base64":true,"data":""}]',
        )
        self.assertEqual(self.encode(b"a"), '{"base64":true,"data":"YQ=="}')

    def test_integral_floats(self):
        """
        Integral floats are written without a fraction.
        """
        self.assertEqual(self.encode({"a": 1.0}), '{"a":1}')
        self.assertEqual(self.encode([-0.0, 0.0, -3.0]), "[0,0,-3]")
        self.assertEqual(self.encode(1.0), "1")
        self.assertEqual(self.encode([2.0**53]), "[9007199254740992]")
        self.assertEqual(self.encode([1e20]), "[100000000000000000000]")
        self.assertEqual(
            self.encode([123456789012345680000.0]), "[123456789012345680000]"
        )

    def test_js_number_layout(self):
        """
        Floats use JavaScript's positional and exponent layout (values from
        Node's C{JSON.stringify}).
        """
        cases = [
            (0.1, "0.1"),
            (1.5, "1.5"),
            (-2.25, "-2.25"),
            (0.30000000000000004, "0.30000000000000004"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (1e16, "10000000000000000"),
            (1e-6, "0.000001"),
            (1.234e-6, "0.000001234"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (1e-5, "0.00001"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (-1e-7, "-1e-7"),
            (4.35, "4.35"),
            (123.456, "123.456"),
        ]
        for value, text in cases:
            self.assertEqual(self.encode([value]), "[%s]" % (text,), value)
            self.assertEqual(self.encode({"v": value}), '{"v":%s}' % (text,))
            self.assertEqual(_codec._js_number(value), text)

    def test_nan_infinity(self):
        """
        NaN and the infinities are C{null}.
        """
        self.assertEqual(
            self.encode({"a": float("nan"), "b": [float("inf"), float("-inf")]}),
            '{"a":null,"b":[null,null]}',
        )
        self.assertEqual(self.encode(float("nan")), "null")

    def test_number_like_text_untouched(self):
        """
        Text that looks like a float is left alone, whichever encoder runs.
        """
        self.assertEqual(self.encode({"v": "1.0"}), '{"v":"1.0"}')
        self.assertEqual(
            self.encode({"a": "x,1.0]", "b": 2, "c": "1e+5"}),
            '{"a":"x,1.0]","b":2,"c":"1e+5"}',
        )
        self.assertEqual(self.encode({"a": "x,1.0]", "b": 2.0}), '{"a":"x,1.0]","b":2}')

    def test_huge_ints(self):
        """
        Integers of any size are written in full.
        """
        self.assertEqual(
            self.encode([2**64, -(10**30)]), "[18446744073709551616,-%s]" % (10**30,)
        )

    def test_other_types(self):
        """
        Tuples are arrays; non-string keys become strings; enums are their
        value and UUIDs their string.
        """

        class Colour(enum.Enum):
            RED = "red"

        class Level(enum.IntEnum):
            HIGH = 3

        self.assertEqual(self.encode((1, (2,))), "[1,[2]]")
        self.assertEqual(
            self.encode({1: "a", False: "b", None: "c"}),
            '{"1":"a","false":"b","null":"c"}',
        )
        self.assertEqual(
            self.encode([Colour.RED, Level.HIGH, uuid.UUID(int=1)]),
            '["red",3,"00000000-0000-0000-0000-000000000001"]',
        )

    def test_unserialisable(self):
        """
        Objects JSON cannot carry raise L{TypeError}.
        """
        self.assertRaises(TypeError, self.encode, {"a": object()})
        self.assertRaises(TypeError, self.encode, {"a": {1, 2}})
        self.assertRaises(TypeError, self.encode, {(1, 2): 3})
        self.assertRaises(TypeError, self.encode, [float("nan"), object()])

    def test_circular(self):
        """
        A circular structure raises L{ValueError}.
        """
        loop = {"a": []}
        loop["a"].append(loop)
        self.assertRaises(ValueError, self.encode, loop)

    def test_deep_nesting(self):
        """
        Nesting deeper than the recursion limit raises L{ValueError} (on
        CPython; PyPy's encoder may go deeper and then encodes it right),
        never a C{RecursionError}.
        """
        depth = sys.getrecursionlimit() * 3
        deep = []
        for _ in range(depth):
            deep = [deep]
        try:
            text = self.encode(deep)
        except ValueError:
            return
        self.assertEqual(text, "[" * (depth + 1) + "]" * (depth + 1))

    def test_fast_and_careful_encoders_agree(self):
        """
        On random structures the encoder gives what the careful encoder
        (L{_codec._js_dumps}) gives, or both refuse.
        """
        rng = random.Random(1234)
        atoms = [
            0,
            -1,
            2**63,
            10**25,
            1.0,
            0.5,
            -0.0,
            1e-7,
            1e16,
            1e300,
            float("nan"),
            float("inf"),
            True,
            False,
            None,
            "",
            "\xe9",
            "a.0",
            ":1.0,",
            "e+",
            b"\x00\xff",
            bytearray(b"x"),
            (1, 2.0),
        ]
        keys = ["a", "1", "\xe9", 1, 2.5, None]

        def build(depth):
            roll = rng.random()
            if depth > 3 or roll < 0.4:
                return rng.choice(atoms)
            if roll < 0.7:
                return [build(depth + 1) for _ in range(rng.randint(0, 4))]
            return {
                rng.choice(keys): build(depth + 1) for _ in range(rng.randint(0, 4))
            }

        for _ in range(2000):
            obj = build(0)
            expected = _codec._finish_text(_codec._js_dumps(obj))
            self.assertEqual(self.encode(obj), expected, obj)
            self.assertEqual(_codec._encode_stdlib(obj), expected, obj)

    def test_result_is_json(self):
        """
        The output parses back to the (JSON-normalised) input.
        """
        obj = {"event": "x", "data": {"list": [1, 2.5, "s", None], "n": -7}, "cid": 3}
        self.assertEqual(json.loads(self.encode(obj)), obj)


class JSONCodecDecodeTests(SynchronousTestCase):
    """
    Tests for L{JSONCodec.decode}.
    """

    def setUp(self):
        self.decode = JSONCodec().decode

    def test_ping_pong(self):
        """
        C{'#1'}, C{'#2'} and C{''} come back as they are, from text or bytes.
        """
        for text in ("#1", "#2", ""):
            self.assertEqual(self.decode(text), text)
            self.assertEqual(self.decode(text.encode("ascii")), text)

    def test_packet(self):
        """
        JSON objects and arrays are parsed.
        """
        self.assertEqual(
            self.decode('{"event":"e","data":[1,2.5,null,true],"cid":2}'),
            {"event": "e", "data": [1, 2.5, None, True], "cid": 2},
        )
        self.assertEqual(self.decode('[{"rid":1},{"rid":2}]'), [{"rid": 1}, {"rid": 2}])

    def test_leading_whitespace(self):
        """
        Spaces, tabs and line breaks may precede the C{{} or C{[}; other
        characters make the payload raw text.
        """
        self.assertEqual(self.decode(' \n\r\t{"a":1}'), {"a": 1})
        self.assertEqual(self.decode("\n[1] \n"), [1])
        for text in ("\x0b{}", "\ufeff{}", "\xa0[1]", "x{}"):
            self.assertEqual(self.decode(text), text)

    def test_non_json_text(self):
        """
        Text that does not start like an object or array is returned as is,
        even when it is valid JSON.
        """
        for text in ("hello raw text", "1", "true", "null", '"x"', "not json at all"):
            self.assertEqual(self.decode(text), text)

    def test_invalid_json(self):
        """
        Text that starts like JSON but does not parse is returned as is.
        """
        for text in (
            '{"a":',
            "{'a':1}",
            '{"a":1} x',
            "[1,]",
            "[01]",
            '["\t"]',
            "{",
            "[",
        ):
            self.assertEqual(self.decode(text), text)

    def test_js_constants_rejected(self):
        """
        C{NaN}, C{Infinity} and C{-Infinity} are not JSON: the text comes
        back.
        """
        for text in ("[NaN]", "[Infinity]", "[-Infinity]", '{"a":NaN}'):
            self.assertEqual(self.decode(text), text)

    def test_large_numbers(self):
        """
        Large integers are exact; exponents beyond the float range give an
        infinity (JavaScript's C{Infinity}).
        """
        self.assertEqual(self.decode('{"n":%d}' % (10**30,)), {"n": 10**30})
        self.assertEqual(self.decode("[1e400]"), [float("inf")])

    def test_integer_digit_limit(self):
        """
        An integer longer than Python's conversion limit does not raise: it
        is parsed (limit disabled) or the text comes back.
        """
        text = "[" + "9" * 10000 + "]"
        result = self.decode(text)
        if isinstance(result, list):
            self.assertEqual(len(result), 1)
            self.assertEqual(result[0] % 10**9, 10**9 - 1)
        else:
            self.assertEqual(result, text)

    def test_deep_nesting(self):
        """
        Nesting too deep to parse returns the text.
        """
        text = "[" * 100000 + "]" * 100000
        self.assertEqual(self.decode(text), text)

    def test_invalid_utf8(self):
        """
        Bytes are read as UTF-8 with invalid sequences replaced by U+FFFD.
        """
        self.assertEqual(self.decode(b'{"a":"\xff"}'), {"a": "\ufffd"})
        self.assertEqual(self.decode(b"\xff\xfe"), "\ufffd\ufffd")
        self.assertEqual(self.decode(b'["\xc3\xa9"]'), ["\xe9"])

    def test_bytes_like(self):
        """
        L{bytearray} and L{memoryview} are read like L{bytes}.
        """
        self.assertEqual(self.decode(bytearray(b'{"a":1}')), {"a": 1})
        self.assertEqual(self.decode(memoryview(b'{"a":1}')), {"a": 1})

    def test_surrogate_escapes(self):
        """
        Escaped lone surrogates parse, as in C{JSON.parse}.
        """
        self.assertEqual(self.decode('["\\ud800"]'), ["\ud800"])
        self.assertEqual(self.decode('["\\ud83d\\ude00"]'), ["\U0001f600"])

    def test_base64_not_unwrapped(self):
        """
        Base64 wrappers stay dicts.
        """
        self.assertEqual(
            self.decode('{"x":{"base64":true,"data":"AQID"}}'),
            {"x": {"base64": True, "data": "AQID"}},
        )

    def test_none_and_other_types(self):
        """
        L{None} gives L{None}; other non-text types raise L{TypeError}.
        """
        self.assertIsNone(self.decode(None))
        self.assertRaises(TypeError, self.decode, 5)

    def test_never_raises(self):
        """
        Random text and bytes never make decode raise.
        """
        rng = random.Random(99)
        alphabet = '{}[]",:0123456789.eE+-tfnrul \\\n\t\ud800\xe9'
        for _ in range(3000):
            text = rng.choice("{[") + "".join(
                rng.choice(alphabet) for _ in range(rng.randint(0, 20))
            )
            result = self.decode(text)
            self.assertTrue(result == text or not isinstance(result, str))
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 20)))
            self.decode(b"[" + data)

    def test_round_trip(self):
        """
        Packets survive encode then decode (bytes become wrappers).
        """
        codec = JSONCodec()
        packets = [
            {"event": "#handshake", "data": {"authToken": None}, "cid": 1},
            {
                "rid": 1,
                "data": {"id": "x", "pingTimeout": 20000, "isAuthenticated": False},
            },
            {
                "event": "#publish",
                "data": {"channel": "news", "data": {"\xe9": [1, 2.5]}},
            },
            [{"rid": 2}, {"rid": 3, "error": "e"}],
        ]
        for packet in packets:
            self.assertEqual(codec.decode(codec.encode(packet)), packet)
        self.assertEqual(
            codec.decode(codec.encode({"b": b"\x00"})),
            {"b": {"base64": True, "data": "AA=="}},
        )


class MinBinCodecTranscriptTests(SynchronousTestCase):
    """
    L{MinBinCodec} against the frames recorded with sc-codec-min-bin 3.0.0
    (v14/19).
    """

    def setUp(self):
        self.codec = MinBinCodec()
        self.transcript = load_transcript("v14/19-codec-min-bin")
        self.recorded = [
            (event["dir"], base64.b64decode(event["frameBase64"]), event["decoded"])
            for event in self.transcript["events"]
            if event.get("binary") and event.get("conn") == "c0"
        ]

    def test_interface(self):
        """
        L{MinBinCodec} provides L{ICodecEngine}.
        """
        self.assertTrue(verifyObject(ICodecEngine, self.codec))

    def test_every_frame_decodes(self):
        """
        Every recorded frame decodes to the packet its recorded
        (compressed) form stands for.
        """
        self.assertEqual(len(self.recorded), 14)
        for direction, payload, compressed in self.recorded:
            self.assertEqual(
                self.codec.decode(payload), _expand(compressed), (direction, compressed)
            )

    def test_every_frame_reencodes(self):
        """
        Every recorded frame, decoded and encoded again, is byte for byte
        what was recorded; so is its recorded compressed form packed.
        """
        for direction, payload, compressed in self.recorded:
            self.assertEqual(self.codec.encode(self.codec.decode(payload)), payload)
            self.assertEqual(self.codec.encode(_expand(compressed)), payload)
            self.assertEqual(msgpack.packb(compressed, use_bin_type=True), payload)

    def test_server_frames(self):
        """
        The server's frames are what these Python packets encode to.
        """
        out = [payload for d, payload, _ in self.recorded if d == "out"]
        socket_id = self.recorded[1][2]["r"][2]["id"]
        packets = [
            {
                "rid": 1,
                "data": {
                    "id": socket_id,
                    "pingTimeout": 2000,
                    "isAuthenticated": False,
                },
            },
            {"rid": 2, "data": {"echoed": {"hi": 1}}},
            {"rid": 3, "error": {"message": "nope", "name": "NopeError"}},
            {"rid": 4},
            {"event": "#publish", "data": {"channel": "mb", "data": "payload"}},
            {"rid": 5},
            "#1",
        ]
        self.assertEqual([self.codec.encode(p) for p in packets], out)
        self.assertEqual(self.codec.encode({"rid": 4}).hex(), "81a1729304c0c0")
        self.assertEqual(self.codec.encode("#1").hex(), "a22331")

    def test_client_frames(self):
        """
        The client's frames decode to these packets.
        """
        inbound = [payload for d, payload, _ in self.recorded if d == "in"]
        self.assertEqual(
            [self.codec.decode(p) for p in inbound],
            [
                {"event": "#handshake", "data": {"authToken": None}, "cid": 1},
                {"event": "echo", "data": {"hi": 1}, "cid": 2},
                {"event": "fail", "data": 1, "cid": 3},
                {"event": "#subscribe", "data": {"channel": "mb"}, "cid": 4},
                {
                    "event": "#publish",
                    "data": {"channel": "mb", "data": "payload"},
                    "cid": 5,
                },
                "#2",
                {"event": "#disconnect", "data": {"code": 1000, "data": None}},
            ],
        )


class MinBinCodecEncodeTests(SynchronousTestCase):
    """
    Tests for L{MinBinCodec.encode}.
    """

    def setUp(self):
        self.codec = MinBinCodec()

    def unpack(self, data):
        return msgpack.unpackb(data, raw=False)

    def test_bytes_output(self):
        """
        The output is L{bytes}.
        """
        self.assertIsInstance(self.codec.encode({"rid": 1}), bytes)
        self.assertEqual(self.codec.encode("#2"), b"\xa2#2")

    def test_event(self):
        """
        Events compress to C{e}; no C{cid} means a two-element array, no
        C{data} a nil.
        """
        self.assertEqual(
            self.unpack(self.codec.encode({"event": "x", "data": {"a": 1}, "cid": 7})),
            {"e": ["x", {"a": 1}, 7]},
        )
        self.assertEqual(
            self.unpack(self.codec.encode({"event": "x", "data": 1})), {"e": ["x", 1]}
        )
        self.assertEqual(
            self.unpack(self.codec.encode({"event": "x"})), {"e": ["x", None]}
        )

    def test_publish(self):
        """
        Publishes compress to C{p}, with the cid when there is one.
        """
        self.assertEqual(
            self.unpack(
                self.codec.encode(
                    {
                        "event": "#publish",
                        "data": {"channel": "c", "data": [1]},
                        "cid": 9,
                    }
                )
            ),
            {"p": ["c", [1], 9]},
        )
        self.assertEqual(
            self.unpack(
                self.codec.encode({"event": "#publish", "data": {"channel": "c"}})
            ),
            {"p": ["c", None]},
        )

    def test_publish_without_data(self):
        """
        A C{#publish} without data is compressed as an ordinary event, as
        sc-codec-min-bin does.
        """
        self.assertEqual(
            self.unpack(self.codec.encode({"event": "#publish", "cid": 2})),
            {"e": ["#publish", None, 2]},
        )

    def test_response(self):
        """
        Responses compress to a three-element C{r}.
        """
        self.assertEqual(
            self.unpack(
                self.codec.encode({"rid": 3, "error": "bad", "data": {"x": 1}})
            ),
            {"r": [3, "bad", {"x": 1}]},
        )
        self.assertEqual(
            self.unpack(self.codec.encode({"rid": "abc", "data": 5})),
            {"r": ["abc", None, 5]},
        )

    def test_extra_keys(self):
        """
        Keys outside the header are kept, before the compressed one.
        """
        self.assertEqual(
            self.codec.encode({"event": "x", "extra": 2, "data": 1}),
            msgpack.packb({"extra": 2, "e": ["x", 1]}),
        )

    def test_not_packets(self):
        """
        Dicts without event or rid, and other values, are packed as they are.
        """
        self.assertEqual(self.unpack(self.codec.encode({"a": 1})), {"a": 1})
        self.assertEqual(
            self.unpack(self.codec.encode({"event": None, "a": 1})),
            {"event": None, "a": 1},
        )
        self.assertEqual(self.unpack(self.codec.encode(5)), 5)

    def test_batch(self):
        """
        A list is compressed element by element.
        """
        self.assertEqual(
            self.unpack(
                self.codec.encode([{"rid": 2}, {"rid": 3}, {"event": "e", "cid": 4}])
            ),
            [{"r": [2, None, None]}, {"r": [3, None, None]}, {"e": ["e", None, 4]}],
        )

    def test_input_unchanged(self):
        """
        Encoding does not change the packet or batch it is given.
        """
        packet = {"event": "#publish", "data": {"channel": "c", "data": 1}, "cid": 1}
        batch = [dict(packet), {"rid": 1}]
        self.codec.encode(packet)
        self.codec.encode(batch)
        self.assertEqual(
            packet, {"event": "#publish", "data": {"channel": "c", "data": 1}, "cid": 1}
        )
        self.assertEqual(batch, [packet, {"rid": 1}])

    def test_binary(self):
        """
        Bytes-like values are MessagePack bin.
        """
        data = self.codec.encode(
            {"event": "b", "data": [b"\x00\xff", bytearray(b"a"), memoryview(b"z")]}
        )
        self.assertEqual(
            data, b"\x81\xa1e\x92\xa1b\x93\xc4\x02\x00\xff\xc4\x01a\xc4\x01z"
        )

    def test_integers(self):
        """
        Integers use the smallest MessagePack form, as msgpack-lite does for
        32-bit values; integers beyond 64 bits become float64.
        """
        self.assertEqual(
            self.codec.encode([1, -32, 128, -129, 65536]).hex(),
            "9501e0cc80d1ff7fce00010000",
        )
        self.assertEqual(self.codec.encode(2**64), msgpack.packb(float(2**64)))

    def test_unserialisable(self):
        """
        Values MessagePack cannot carry raise L{TypeError} or L{ValueError}.
        """
        self.assertRaises(
            TypeError, self.codec.encode, {"event": "x", "data": object()}
        )
        self.assertRaises(ValueError, self.codec.encode, {"rid": 1, "data": 10**400})
        self.assertRaises(ValueError, self.codec.encode, ["\ud800"])
        deep = []
        for _ in range(5000):
            deep = [deep]
        self.assertRaises(ValueError, self.codec.encode, deep)


class MinBinCodecDecodeTests(SynchronousTestCase):
    """
    Tests for L{MinBinCodec.decode}.
    """

    def setUp(self):
        self.codec = MinBinCodec()

    def decode_packed(self, obj):
        return self.codec.decode(msgpack.packb(obj, use_bin_type=True))

    def test_nil_fields_left_out(self):
        """
        Nil (or missing) header elements leave their field out.
        """
        self.assertEqual(self.decode_packed({"r": [4, None, None]}), {"rid": 4})
        self.assertEqual(self.decode_packed({"r": [4, None, 0]}), {"rid": 4, "data": 0})
        self.assertEqual(
            self.decode_packed({"r": [4, False]}), {"rid": 4, "error": False}
        )
        self.assertEqual(self.decode_packed({"e": ["x", None, None]}), {"event": "x"})
        self.assertEqual(self.decode_packed({"e": ["x"]}), {"event": "x"})
        self.assertEqual(
            self.decode_packed({"p": ["c", None]}),
            {"event": "#publish", "data": {"channel": "c"}},
        )
        self.assertEqual(
            self.decode_packed({"p": ["c", 0, None]}),
            {"event": "#publish", "data": {"channel": "c", "data": 0}},
        )

    def test_nested_nil_kept(self):
        """
        Nils inside the data are kept.
        """
        self.assertEqual(
            self.decode_packed({"e": ["#disconnect", {"code": 1000, "data": None}]}),
            {"event": "#disconnect", "data": {"code": 1000, "data": None}},
        )

    def test_other_values(self):
        """
        Values that are not compressed packets come back as they are.
        """
        self.assertEqual(self.decode_packed("#1"), "#1")
        self.assertEqual(self.decode_packed({"a": 1}), {"a": 1})
        self.assertEqual(self.decode_packed({"e": 5}), {"e": 5})
        self.assertEqual(self.decode_packed({"e": None, "a": 1}), {"e": None, "a": 1})
        self.assertEqual(self.decode_packed(7), 7)

    def test_batch(self):
        """
        Lists are expanded element by element.
        """
        self.assertEqual(
            self.decode_packed([{"r": [1, None, None]}, {"e": ["x", 2, 3]}, "s", None]),
            [{"rid": 1}, {"event": "x", "data": 2, "cid": 3}, "s", None],
        )

    def test_binary(self):
        """
        MessagePack bin decodes to L{bytes}, str to L{str}.
        """
        self.assertEqual(
            self.decode_packed({"e": ["b", {"x": b"\x00\xff", "s": "\xe9"}]}),
            {"event": "b", "data": {"x": b"\x00\xff", "s": "\xe9"}},
        )

    def test_str_input(self):
        """
        Text is encoded as UTF-8 first, so only ASCII text can carry
        MessagePack (a positive fixint here); other text is mostly garbage.
        """
        self.assertEqual(self.codec.decode("\x01"), 1)
        self.assertEqual(self.codec.decode("\x7f"), 127)
        # "\xa2" becomes c2 a2: true, then trailing bytes.
        self.assertRaises(InvalidMessageError, self.codec.decode, "\xa2#2")

    def test_bytes_like_input(self):
        """
        L{bytearray} and L{memoryview} are accepted.
        """
        packed = msgpack.packb({"r": [1, None, 2]})
        self.assertEqual(self.codec.decode(bytearray(packed)), {"rid": 1, "data": 2})
        self.assertEqual(self.codec.decode(memoryview(packed)), {"rid": 1, "data": 2})

    def test_garbage(self):
        """
        Payloads that are not exactly one MessagePack value raise
        L{InvalidMessageError} with the MessagePack error as its cause.
        """
        for data in (
            b"",
            b"\xc1",
            b"\x92\x01",
            b"\x01\x02",
            b"\xa2\xff\xfe",
            b"\x81\x01\x02",
            b"\x81\x91\x01\x02",
            b"\x91" * 5000,
            "#2",
        ):
            error = self.assertRaises(InvalidMessageError, self.codec.decode, data)
            self.assertIsNotNone(error.__cause__, data)
            self.assertIn("Invalid MessagePack message", str(error))

    def test_random_garbage(self):
        """
        Random bytes either decode or raise L{InvalidMessageError}.
        """
        rng = random.Random(7)
        for _ in range(3000):
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 16)))
            try:
                self.codec.decode(data)
            except InvalidMessageError:
                pass

    def test_round_trip(self):
        """
        Packets survive encode then decode.
        """
        packets = [
            {"event": "#handshake", "data": {"authToken": None}, "cid": 1},
            {"event": "echo", "data": {"b": b"\x00", "n": [1, 2.5, -3]}, "cid": 2},
            {"event": "noData"},
            {
                "event": "#publish",
                "data": {"channel": "news", "data": {"hello": "world"}},
                "cid": 3,
            },
            {"event": "#publish", "data": {"channel": "news", "data": "x"}},
            {
                "rid": 1,
                "data": {"id": "abc", "pingTimeout": 2000, "isAuthenticated": False},
            },
            {
                "rid": 2,
                "error": {"message": "m", "name": "N"},
                "data": {"partial": True},
            },
            {"rid": 3},
            [{"rid": 4}, {"event": "#unsubscribe", "data": "b2"}],
            "#1",
            "#2",
        ]
        for packet in packets:
            self.assertEqual(self.codec.decode(self.codec.encode(packet)), packet)
