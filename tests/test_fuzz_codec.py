"""
Property tests (fuzzing, with hypothesis) of L{scserver.codec}: decoding
arbitrary text and bytes never raises anything but the documented errors,
and generated packets survive an encode/decode round trip.

The strategies and the hypothesis profiles live here and are shared with
L{tests.test_fuzz_engine}.  Two profiles:

 - C{ci} (the default, in C{trial tests}): a few dozen examples per test,
   derandomized, so the run is short and the same on every machine;
 - C{long}: C{SCSERVER_FUZZ_EXAMPLES} examples per test (default 20000),
   randomized; selected with C{SCSERVER_FUZZ_PROFILE=long}, as
   C{scripts/fuzz.sh} does.

Neither profile keeps an example database (nothing is written to the
checkout); a failure prints the C{@reproduce_failure} blob to replay it.
"""

import atexit
import collections
import math
import os
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from scserver.codec import JSONCodec, MinBinCodec
from scserver.errors import InvalidMessageError

PROFILE = os.environ.get("SCSERVER_FUZZ_PROFILE", "ci")

settings.register_profile(
    "ci", max_examples=int(os.environ.get("SCSERVER_FUZZ_CI_EXAMPLES", "40")),
    derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "long", max_examples=int(os.environ.get("SCSERVER_FUZZ_EXAMPLES", "20000")),
    derandomize=False, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FUZZ = settings.get_profile(PROFILE)
"""The settings every fuzz test runs with (see the module docstring)."""

COUNTS = collections.Counter()
"""Examples run per test, printed at exit in the C{long} profile."""


def count(name):
    COUNTS[name] += 1


def _report():
    total = sum(COUNTS.values())
    if total:
        for name, n in sorted(COUNTS.items()):
            sys.stderr.write("fuzz: %-45s %8d inputs\n" % (name, n))
        sys.stderr.write("fuzz: total %d inputs (profile %s)\n" % (total, PROFILE))


if PROFILE != "ci":
    atexit.register(_report)


# -- strategies ----------------------------------------------------------

ints64 = st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), finite_floats, st.text(max_size=40))
"""Values JSON carries exactly (an integral float comes back as an int, equal)."""

json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=10), children, max_size=5)),
    max_leaves=20)

msgpack_scalars = st.one_of(
    st.none(), st.booleans(), ints64, finite_floats, st.text(max_size=40),
    st.binary(max_size=40))
"""Values MessagePack carries exactly."""

msgpack_values = st.recursive(
    msgpack_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=10), children, max_size=5)),
    max_leaves=20)

odd_cids = st.one_of(
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.integers(min_value=1, max_value=2 ** 53),
    st.floats(), st.text(max_size=200), st.none(), st.booleans(),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                         max_size=2))
"""Call ids, valid or not: huge, negative, fractional, long strings, containers."""

event_names = st.one_of(
    st.sampled_from(["#handshake", "#disconnect", "#publish", "#subscribe", "#unsubscribe",
                     "#authenticate", "#removeAuthToken", "echo", "x", ""]),
    st.text(max_size=20), st.integers(), st.none(), st.lists(st.integers(), max_size=2))


def _without(packet, missing):
    return {key: value for key, value in packet.items() if value is not missing}


_MISSING = object()
maybe = lambda strategy: st.one_of(st.just(_MISSING), strategy)  # noqa: E731


def packets(values):
    """
    Inbound packets, well formed or not: events (odd names, data, cids),
    replies (odd rids, errors), C{#disconnect} with odd codes, C{#publish},
    and dicts that are neither.
    """
    event = st.builds(
        lambda e, d, c: _without({"event": e, "data": d, "cid": c}, _MISSING),
        event_names, maybe(values), maybe(odd_cids))
    reply = st.builds(
        lambda r, err, d: _without({"rid": r, "error": err, "data": d}, _MISSING),
        odd_cids, maybe(st.one_of(
            values, st.fixed_dictionaries({"name": st.text(max_size=10),
                                           "message": st.text(max_size=10)}))),
        maybe(values))
    disconnect = st.builds(
        lambda code, d: {"event": "#disconnect", "data": _without({"code": code, "data": d},
                                                                  _MISSING)},
        maybe(st.one_of(st.integers(min_value=-5, max_value=70000), st.text(max_size=5),
                        st.none(), finite_floats)),
        maybe(values))
    publish = st.builds(
        lambda ch, d, c: _without({"event": "#publish", "data": {"channel": ch, "data": d},
                                   "cid": c}, _MISSING),
        st.text(max_size=10), values, maybe(odd_cids))
    other = st.dictionaries(st.text(max_size=5), values, max_size=4)
    return st.one_of(event, reply, disconnect, publish, other)


def rt_packets(values, cids):
    """Well-formed packets that a codec must carry exactly (no nil header fields)."""
    present = values.filter(lambda v: v is not None)
    return st.one_of(
        st.builds(lambda e, d, c: _without({"event": e, "data": d, "cid": c}, _MISSING),
                  st.text(max_size=20).filter(lambda e: e != "#publish"), maybe(present),
                  maybe(cids)),
        st.builds(lambda r, err, d: _without({"rid": r, "error": err, "data": d}, _MISSING),
                  cids, maybe(st.fixed_dictionaries({"name": st.text(max_size=10),
                                                     "message": st.text(max_size=20)})),
                  maybe(present)),
        st.builds(lambda ch, d, c: _without({"event": "#publish",
                                             "data": {"channel": ch, "data": d},
                                             "cid": c}, _MISSING),
                  st.text(max_size=10), present, maybe(cids)),
    )


def same(a, b):
    """
    Equality that also treats NaN as equal to NaN, tuples as lists, and an
    int as the float it rounds to.
    """
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if type(a) in (int, float) and type(b) in (int, float) and float in (type(a), type(b)):
        # JSON.stringify writes a float as its shortest digits, which JSON
        # reads back as an int when they are integral: the same double.
        return float(a) == float(b)
    return type(a) is type(b) and a == b


# -- tests ---------------------------------------------------------------


class JSONCodecFuzzTests(SynchronousTestCase):
    """L{JSONCodec} never raises on input, and round-trips JSON packets."""

    @FUZZ
    @given(st.one_of(st.text(), st.text(alphabet="[]{}\",:0123456789.eE+-tfnul \\"),
                     st.text().map(lambda t: "[" * 3000 + t)))
    def test_decode_text_never_raises(self, text):
        """Any text decodes to a value (the text itself when it is not JSON)."""
        count("json.decode(text)")
        result = JSONCodec().decode(text)
        if not text.lstrip(" \t\r\n").startswith(("{", "[")):
            self.assertEqual(result, text)

    @FUZZ
    @given(st.binary())
    def test_decode_bytes_never_raises(self, data):
        """Any binary frame decodes."""
        count("json.decode(bytes)")
        JSONCodec().decode(data)
        JSONCodec().decode(bytearray(data))
        JSONCodec().decode(memoryview(data))

    @FUZZ
    @given(st.one_of(rt_packets(json_values, st.one_of(st.integers(min_value=1),
                                                       st.text(min_size=1, max_size=128))),
                     st.lists(rt_packets(json_values, st.integers(min_value=1)), max_size=4)))
    def test_round_trip(self, packet):
        """A packet (or a batch) encodes to text and decodes back to itself."""
        count("json round trip")
        codec = JSONCodec()
        text = codec.encode(packet)
        self.assertIsInstance(text, str)
        text.encode("utf-8")  # a valid text frame
        self.assertTrue(same(codec.decode(text), packet), (packet, text))
        self.assertTrue(same(codec.decode(text.encode("utf-8")), packet))

    @FUZZ
    @given(json_values, st.binary(max_size=50))
    def test_binary_becomes_base64(self, value, blob):
        """Bytes anywhere encode as the sc-formatter base64 wrapper."""
        count("json base64")
        import base64

        codec = JSONCodec()
        decoded = codec.decode(codec.encode({"event": "e", "data": [value, blob]}))
        self.assertEqual(decoded["data"][1],
                         {"base64": True, "data": base64.b64encode(blob).decode("ascii")})


class MinBinCodecFuzzTests(SynchronousTestCase):
    """L{MinBinCodec} raises only InvalidMessageError, and round-trips packets."""

    @FUZZ
    @given(st.one_of(st.binary(), st.binary(max_size=8).map(lambda b: b"\xdd\xff\xff\xff\xff" + b),
                     st.binary(max_size=8).map(lambda b: b"\x91" * 2000 + b)))
    def test_decode_bytes_raises_only_invalid_message(self, data):
        """Arbitrary bytes: a value, or L{InvalidMessageError}."""
        count("minbin.decode(bytes)")
        try:
            MinBinCodec().decode(data)
        except InvalidMessageError:
            pass

    @FUZZ
    @given(st.text())
    def test_decode_text_raises_only_invalid_message(self, text):
        """Text (as UTF-8): a value, or L{InvalidMessageError}."""
        count("minbin.decode(text)")
        try:
            MinBinCodec().decode(text)
        except InvalidMessageError:
            pass

    @FUZZ
    @given(msgpack_values)
    def test_decode_any_msgpack_value(self, value):
        """Any MessagePack value decodes (its headers expanded when it has some)."""
        import msgpack

        count("minbin.decode(msgpack)")
        MinBinCodec().decode(msgpack.packb(value, use_bin_type=True))

    @FUZZ
    @given(st.one_of(rt_packets(msgpack_values, st.one_of(
        st.integers(min_value=1, max_value=2 ** 64 - 1), st.text(min_size=1, max_size=128))),
        st.lists(rt_packets(msgpack_values, st.integers(min_value=1, max_value=2 ** 63)),
                 max_size=4)))
    def test_round_trip(self, packet):
        """A packet (or a batch) packs to bytes and unpacks back to itself."""
        count("minbin round trip")
        codec = MinBinCodec()
        data = codec.encode(packet)
        self.assertIsInstance(data, bytes)
        self.assertTrue(same(codec.decode(data), packet), (packet, data))
