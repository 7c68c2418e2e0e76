"""
Codec engines: how SocketCluster packets become WebSocket payloads.

Two engines provide L{ICodecEngine}; client and server must use the same one.

L{JSONCodec} (the default) matches C{sc-formatter}, the codec of the
SocketCluster Node server and client:

    - the heartbeat strings C{'#1'} and C{'#2'} travel as they are, in text
      frames (the protocol-v2 heartbeat, an empty text frame, is sent raw and
      never goes through a codec);
    - every other packet is compact JSON text, as C{JSON.stringify} writes it:
      C{{"rid":2,"data":{"echoed":{"msg":"hi","n":1}}}};
    - C{bytes}, C{bytearray} and C{memoryview} values anywhere in a packet are
      written as C{{"base64":true,"data":"AQID/w=="}} (standard base64 with
      padding).  Decoding does I{not} undo this: a handler receives the
      C{{"base64": True, "data": ...}} dict, as it does in Node;
    - decoding accepts text and binary frames (binary frames are read as UTF-8
      text) and never raises: a payload that is not JSON is returned as the
      string itself, and the server treats it as a C{raw} message.

L{MinBinCodec} matches C{sc-codec-min-bin} 3.0.0: every payload, the
heartbeat strings included, is MessagePack in a binary frame (C{'#1'} is
C{a2 23 31}), and packet headers are compressed::

    {"event": E, "data": D, "cid": C}                  <-> {"e": [E, D, C]}
    {"event": E, "data": D}                            <-> {"e": [E, D]}
    {"event": "#publish",
     "data": {"channel": CH, "data": D}, "cid": C}     <-> {"p": [CH, D, C]}
    {"rid": R, "error": ERR, "data": D}                <-> {"r": [R, ERR, D]}

A batch (a list of packets) is compressed element by element.  A missing
field is written as MessagePack C{nil} (JavaScript's C{undefined} is written
as C{nil} too), so C{{"rid": 4}} goes out as C{{"r": [4, nil, nil]}}.
Decoding leaves out a field whose value is C{nil}: C{{"r": [4, nil, nil]}}
becomes C{{"rid": 4}}, just as the JSON codec sees C{{"rid":4}}.  Binary
values travel as MessagePack C{bin} and decode to C{bytes}.
"""

import binascii
import enum
import importlib
import json
import math
import re
import uuid
from typing import Any, Optional, Union

import msgpack
from zope.interface import implementer

from .errors import InvalidMessageError
from .interfaces import ICodecEngine

# orjson: installed on CPython (setup.cfg), optional.
_orjson: Any
try:  # pragma: no cover - depends on the environment
    _orjson = importlib.import_module("orjson")
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

__all__ = ["JSONCodec", "MinBinCodec"]


_PING = "#1"
_PONG = "#2"


# --------------------------------------------------------------------------
# JSON (sc-formatter)
# --------------------------------------------------------------------------


def _binary_to_base64(value):
    """
    Wrap a bytes-like value the way sc-formatter does.

    @param value: C{bytes}, C{bytearray} or C{memoryview}.
    @return: C{{"base64": True, "data": <standard base64 with padding>}}.
    """
    return {
        "base64": True,
        "data": binascii.b2a_base64(value, newline=False).decode("ascii"),
    }


def _json_default(value):
    """
    The C{default} hook of the JSON encoders: wrap binary values, write an
    C{enum.Enum} as its value and a C{uuid.UUID} as its canonical string (as
    C{orjson} does natively), refuse everything else.

    @raise TypeError: C{value} is of another type.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _binary_to_base64(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(
        "Object of type %s is not JSON serializable" % (type(value).__name__,)
    )


def _js_number(value):
    """
    Write a float as JavaScript's C{JSON.stringify} writes a number.

    Integral values have no fraction (C{1.0} is C{1}, C{-0.0} is C{0}),
    positional notation is used for magnitudes from 1e-6 to below 1e21 and
    exponent notation (C{1e+21}, C{1.5e-7}) outside it; NaN and the
    infinities are C{null}.

    @type value: C{float}
    @rtype: C{str}
    """
    if math.isnan(value) or math.isinf(value):
        return "null"
    if value == 0:
        return "0"
    if value.is_integer() and -(2**53) < value < 2**53:
        # Every integer below 2**53 is exact, and its shortest round-trip
        # digits are its own digits.
        return int.__repr__(int(value))
    # float.__repr__ gives the shortest digits that round-trip, as
    # ECMAScript's Number::toString does; only the layout differs.
    text = float.__repr__(value)
    sign = ""
    if text[0] == "-":
        sign = "-"
        text = text[1:]
    mantissa, _, exponent = text.partition("e")
    integer, _, fraction = mantissa.partition(".")
    digits = integer + fraction
    # The decimal point sits after `point` characters of `digits`.
    point = len(integer) + (int(exponent) if exponent else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    n = point
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        esign = "+" if e >= 0 else "-"
        if k == 1:
            body = "%se%s%d" % (digits, esign, abs(e))
        else:
            body = "%s.%se%s%d" % (digits[0], digits[1:], esign, abs(e))
    return sign + body


_encode_string = json.encoder.encode_basestring


def _key_text(key):
    """
    Convert a dict key to the string JSON uses, as C{json} does.

    @raise TypeError: the key is not a str, int, float, bool or None.
    """
    if isinstance(key, str):
        return key
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        if math.isnan(key):
            return "NaN"
        if math.isinf(key):
            return "Infinity" if key > 0 else "-Infinity"
        return float.__repr__(key)
    raise TypeError(
        "keys must be str, int, float, bool or None, not %s" % (type(key).__name__,)
    )


def _js_dumps(obj):
    """
    The careful (slow) JSON encoder: everything C{JSON.stringify} would write.

    Used when the fast encoder's output holds a number that JavaScript writes
    differently (C{1.0}, C{1e+16}, C{1e-05}), a NaN or an infinity, or when
    the fast encoder refuses the object.

    @raise TypeError: an object cannot be serialised.
    @raise ValueError: the structure is circular.
    @raise RecursionError: the structure is nested too deeply.
    """
    chunks = []
    append = chunks.append
    active = set()

    def write(o):
        if isinstance(o, str):
            append(_encode_string(o))
        elif o is None:
            append("null")
        elif o is True:
            append("true")
        elif o is False:
            append("false")
        elif isinstance(o, int):
            append(int.__repr__(o))
        elif isinstance(o, float):
            append(_js_number(o))
        elif isinstance(o, (dict, list, tuple)):
            marker = id(o)
            if marker in active:
                raise ValueError("Circular reference detected")
            active.add(marker)
            if isinstance(o, dict):
                append("{")
                first = True
                for key, value in o.items():
                    if first:
                        first = False
                    else:
                        append(",")
                    append(_encode_string(_key_text(key)))
                    append(":")
                    write(value)
                append("}")
            else:
                append("[")
                first = True
                for value in o:
                    if first:
                        first = False
                    else:
                        append(",")
                    write(value)
                append("]")
            active.discard(marker)
        else:
            write(_json_default(o))

    write(obj)
    return "".join(chunks)


def _make_stdlib_fast_encoder():
    """
    Build the fastest available stdlib encoder with the sc-formatter layout.

    C{allow_nan} is off so that NaN and the infinities raise and are then
    written by L{_js_dumps}.

    @return: a one-argument callable returning C{str}.
    """
    try:
        from json.encoder import c_make_encoder

        if c_make_encoder is None:
            raise ImportError("no C encoder")
        # The C encoder built once, without the per-call set-up of
        # json.dumps.  A circular structure then recurses until
        # RecursionError, and the careful encoder reports it.
        iterencode = c_make_encoder(
            None,
            _json_default,
            _encode_string,
            None,
            ":",
            ",",
            False,
            False,
            False,
        )
        join = "".join

        def encode(obj):
            return join(iterencode(obj, 0))

        if encode({"a": [1, "\xe9", None, True]}) != '{"a":[1,"\xe9",null,true]}':
            raise ValueError("unexpected C encoder behaviour")
        return encode
    except Exception:  # pragma: no cover - depends on the Python build
        return json.JSONEncoder(
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
            default=_json_default,
        ).encode


_stdlib_fast_encode = _make_stdlib_fast_encoder()

# Python (repr) and orjson write a float as JavaScript does unless it is
# integral ("1.0", "1e+16") or has an exponent ("1e-05", "1.5e-07"); such a
# number always contains ".0", "e+" or "e-".  Those substrings are cheap to
# look for; only when one is there is this pattern (a number token after a
# separator) searched, and only when it matches is the careful encoder run.
_NUMBER_HINT = re.compile(r"[:,\[]-?[0-9]+(?:\.0(?![0-9])|(?:\.[0-9]+)?e)")

# Lone surrogates (and pairs given as two code points) are what
# JSON.stringify escapes or joins; a UTF-8 text frame cannot carry them raw.
_SURROGATES = re.compile("[\ud800-\udbff][\udc00-\udfff]|[\ud800-\udfff]")
_ANY_SURROGATE = re.compile("[\ud800-\udfff]")


def _fix_surrogate(match):
    """
    Replace one L{_SURROGATES} match: a pair by the character it encodes, a
    lone surrogate by its C{\\uXXXX} escape.
    """
    text = match.group()
    if len(text) == 2:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    return "\\u%04x" % (ord(text),)


def _numbers_differ(text):
    """
    Whether the fast encoders' C{text} may hold a number that JavaScript
    writes differently.
    """
    if text[0] not in '{["':
        # A bare number, true, false or null at the top level.
        return True
    return (".0" in text or "e+" in text or "e-" in text) and _NUMBER_HINT.search(
        text
    ) is not None


def _finish_text(text):
    """
    Escape lone surrogates and join surrogate pairs in encoded C{text}, as
    C{JSON.stringify} does.
    """
    if not text.isascii() and _ANY_SURROGATE.search(text) is not None:
        return _SURROGATES.sub(_fix_surrogate, text)
    return text


def _encode_stdlib(obj):
    """
    Encode with the stdlib C encoder, falling back to L{_js_dumps}.
    """
    try:
        text = _stdlib_fast_encode(obj)
    except (ValueError, RecursionError):
        # NaN/Infinity (allow_nan is off), a circular or a deep structure.
        # The careful encoder runs outside the except clause: there, PyPy
        # cannot chain a second RecursionError to the first.
        text = None
    if text is None or _numbers_differ(text):
        return _finish_text(_js_dumps(obj))
    return _finish_text(text)


if _orjson is not None:  # pragma: no cover - depends on the environment
    _orjson_dumps = _orjson.dumps
    # Datetimes and dataclasses reach `default` (and are refused) so that
    # orjson accepts exactly what the stdlib encoder accepts.
    _ORJSON_OPTIONS = (
        _orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_PASSTHROUGH_DATACLASS
    )

    def _encode_fast(obj):
        try:
            text = _orjson_dumps(
                obj, default=_json_default, option=_ORJSON_OPTIONS
            ).decode("utf-8")
        except (TypeError, ValueError):
            # Non-str keys, ints beyond 64 bits, lone surrogates, deep
            # nesting, unsupported types: let the stdlib encoder decide.
            return _encode_stdlib(obj)
        # orjson refuses lone surrogates, so there are none to escape.
        if _numbers_differ(text):
            return _js_dumps(obj)
        return text

else:
    _encode_fast = _encode_stdlib


_JSON_START = re.compile(r"[ \n\r\t]*[{\[]").match


def _reject_constant(name):
    """
    C{JSON.parse} knows no C{NaN}, C{Infinity} or C{-Infinity}.

    @raise ValueError: always.
    """
    raise ValueError("invalid JSON constant %s" % (name,))


_stdlib_decode = json.JSONDecoder(parse_constant=_reject_constant).decode

if _orjson is not None:  # pragma: no cover - depends on the environment
    _orjson_loads = _orjson.loads
    _orjson_error = _orjson.JSONDecodeError

    # orjson reads an integer beyond the 64-bit range as a float; the
    # stdlib keeps it an int.  Such an integer has at least 19 digits.
    _LONG_DIGITS = re.compile(r"[0-9]{19}").search

    def _json_decode(text):
        """
        Parse JSON text as the stdlib decoder does, with C{orjson} when
        that gives the same value: otherwise (long digit runs, and whatever
        orjson refuses: lone surrogates, infinite numbers, deep nesting)
        with the stdlib.

        @raise ValueError: the text is not JSON.
        @raise RecursionError: it is nested too deeply.
        """
        if _LONG_DIGITS(text) is None:
            try:
                return _orjson_loads(text)
            except _orjson_error:
                pass
        return _stdlib_decode(text)

else:
    _json_decode = _stdlib_decode


@implementer(ICodecEngine)
class JSONCodec:
    """
    The default codec, compatible with C{sc-formatter} (SocketCluster's JSON
    codec): packets are compact JSON text, binary values become
    C{{"base64": true, "data": ...}}.

    L{encode} returns C{str} (text frames).  It uses C{orjson} when that is
    installed, and the stdlib C{json} otherwise; the output is the same.
    """

    def encode(self, obj: Any) -> str:
        """
        Encode a packet as C{JSON.stringify} would.

        C{'#1'} and C{'#2'} are returned unchanged.  Anything else becomes
        compact JSON (no spaces, non-ASCII text written as is).  Bytes-like
        values become C{{"base64":true,"data":...}}; integral floats are
        written without a fraction (C{1.0} as C{1}), other floats in
        JavaScript's layout (C{1e-7}, C{1e+21}); NaN and the infinities
        become C{null}; lone surrogates are escaped (C{\\ud800}).  Lists and
        tuples are arrays; dict keys that are int, float, bool or None are
        converted to strings as C{json} does.

        @param obj: the packet: a dict, a list (a batch) or a ping string.
        @rtype: C{str}
        @raise TypeError: C{obj} holds a value that cannot be serialised.
        @raise ValueError: C{obj} is circular or nested too deeply.
        """
        if obj.__class__ is str and (obj == _PING or obj == _PONG):
            return obj
        try:
            return _encode_fast(obj)
        except RecursionError as e:
            raise ValueError("Object nested too deeply to encode") from e

    def decode(
        self, data: Optional[Union[str, bytes, bytearray, memoryview]]
    ) -> Any:
        """
        Decode a payload as C{sc-formatter} does.

        Bytes-like input (a binary frame) is first read as UTF-8, invalid
        sequences replaced with U+FFFD.  C{'#1'} and C{'#2'} are returned
        unchanged; so is any text that does not start (after spaces, tabs
        and line breaks) with C{E{lb}} or C{[}.  Otherwise the text is parsed as
        JSON; if that fails (invalid JSON, C{NaN}/C{Infinity} constants,
        nesting too deep, integers beyond Python's digit limit) the text
        itself is returned.  Base64 wrappers are I{not} unwrapped.

        @param data: C{str}, C{bytes}, C{bytearray} or C{memoryview};
            C{None} gives C{None}.
        @return: the parsed JSON value, or the text.
        @raise TypeError: C{data} is of another type.  Never raises for
            text or bytes.
        """
        if not isinstance(data, str):
            if isinstance(data, (bytes, bytearray, memoryview)):
                data = bytes(data).decode("utf-8", "replace")
            elif data is None:
                return None
            else:
                raise TypeError(
                    "Cannot decode a payload of type %s" % (type(data).__name__,)
                )
        if _JSON_START(data) is None:
            return data
        try:
            return _json_decode(data)
        except (ValueError, RecursionError):
            return data


# --------------------------------------------------------------------------
# MessagePack (sc-codec-min-bin)
# --------------------------------------------------------------------------


def _compress_packet(packet):
    """
    Compress one packet's header as sc-codec-min-bin does.

    Fields other than C{event}, C{data}, C{cid}, C{rid} and C{error} are
    kept, before the compressed one.  The input is not changed.

    @param packet: anything; only a dict is compressed.
    """
    if not isinstance(packet, dict):
        return packet
    out = dict(packet)
    if out.get("event") == "#publish" and out.get("data") is not None:
        data = out["data"]
        if isinstance(data, dict):
            _compress_event(out, "p", [data.get("channel"), data.get("data")])
        else:
            _compress_event(out, "p", [None, None])
    if out.get("event") is not None:
        _compress_event(out, "e", [out["event"], out.get("data")])
    if out.get("rid") is not None:
        entry = [out["rid"], out.get("error"), out.get("data")]
        for key in ("rid", "error", "data"):
            out.pop(key, None)
        out["r"] = entry
    return out


def _compress_event(out, key, entry):
    """Replace C{event}, C{data} and C{cid} of C{out} by C{out[key] = entry (+ cid)}."""
    cid = out.get("cid")
    if cid is not None:
        entry.append(cid)
    for name in ("event", "data", "cid"):
        out.pop(name, None)
    out[key] = entry


def _item(entry, index):
    """
    C{entry[index]}, or C{None} past its end.
    """
    return entry[index] if len(entry) > index else None


def _expand_packet(packet):
    """
    Undo L{_compress_packet}; a field whose value is nil is left out.

    @param packet: anything; only a dict holding a list under C{e}, C{p} or
        C{r} is expanded, into a new dict.
    """
    if not isinstance(packet, dict):
        return packet
    e = packet.get("e")
    p = packet.get("p")
    r = packet.get("r")
    if not (isinstance(e, list) or isinstance(p, list) or isinstance(r, list)):
        return packet
    out = dict(packet)
    if isinstance(e, list):
        del out["e"]
        for key, index in (("event", 0), ("data", 1), ("cid", 2)):
            if key != "cid":
                out.pop(key, None)
            value = _item(e, index)
            if value is not None:
                out[key] = value
    if isinstance(p, list):
        del out["p"]
        out["event"] = "#publish"
        data = {}
        channel = _item(p, 0)
        if channel is not None:
            data["channel"] = channel
        value = _item(p, 1)
        if value is not None:
            data["data"] = value
        out["data"] = data
        cid = _item(p, 2)
        if cid is not None:
            out["cid"] = cid
    if isinstance(r, list):
        del out["r"]
        for key, index in (("rid", 0), ("error", 1), ("data", 2)):
            out.pop(key, None)
            value = _item(r, index)
            if value is not None:
                out[key] = value
    return out


def _msgpack_default(value):
    """
    The C{default} hook of the MessagePack packer.

    An integer beyond the 64-bit range becomes a float, the number
    JavaScript would hold and send for it; memoryviews become bin;
    everything else is refused.

    @raise TypeError: C{value} cannot be serialised.
    @raise OverflowError: C{value} is an integer too large even for a float.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, memoryview):
        return value.tobytes()
    raise TypeError(
        "Object of type %s is not MessagePack serializable" % (type(value).__name__,)
    )


@implementer(ICodecEngine)
class MinBinCodec:
    """
    A codec compatible with C{sc-codec-min-bin} 3.0.0: MessagePack in binary
    frames, with the packet headers compressed into C{e}, C{p} and C{r}
    arrays (see the module docstring).

    L{encode} returns C{bytes} (binary frames).
    """

    def encode(self, obj: Any) -> bytes:
        """
        Compress and pack a packet.

        A dict with a non-None C{event} or C{rid} is compressed, a list is
        compressed element by element, anything else (the ping strings
        included) is packed as it is.  Missing fields in the compressed
        arrays are nil.  Bytes-like values are packed as bin (a JavaScript
        C{ArrayBuffer} on the other side), strings as str, integers beyond
        the 64-bit range as float64.  The input is not changed.

        @param obj: the packet.
        @rtype: C{bytes}
        @raise TypeError: C{obj} holds a value MessagePack cannot carry.
        @raise ValueError: C{obj} holds an integer too large for a float or
            text that is not valid Unicode (a lone surrogate), or is nested
            too deeply or circular.
        """
        if isinstance(obj, list):
            obj = [_compress_packet(packet) for packet in obj]
        elif isinstance(obj, dict) and (
            obj.get("event") is not None or obj.get("rid") is not None
        ):
            obj = _compress_packet(obj)
        try:
            return msgpack.packb(obj, use_bin_type=True, default=_msgpack_default)
        except (OverflowError, RecursionError) as e:
            raise ValueError("Cannot encode as MessagePack: %s" % (e,)) from e

    def decode(self, data: Union[str, bytes, bytearray, memoryview]) -> Any:
        """
        Unpack a payload and expand its packet headers.

        C{{"e": [E, D, C]}} becomes C{{"event": E, "data": D, "cid": C}},
        C{{"p": [CH, D, C]}} becomes C{{"event": "#publish", "data":
        {"channel": CH, "data": D}, "cid": C}}, C{{"r": [R, ERR, D]}}
        becomes C{{"rid": R, "error": ERR, "data": D}}; in each a nil (or
        missing) element leaves its field out, so C{{"r": [4, nil, nil]}}
        is C{{"rid": 4}} and C{{"e": ["x", nil]}} is C{{"event": "x"}}.
        A list is expanded element by element; anything else (the ping
        strings C{'#1'} and C{'#2'}) is returned as it is.  MessagePack
        bin values decode to C{bytes}.

        @param data: C{bytes}, C{bytearray} or C{memoryview}; C{str} is
            encoded as UTF-8 first.
        @raise InvalidMessageError: C{data} is not exactly one valid
            MessagePack value (truncated, trailing bytes, reserved type
            bytes, invalid UTF-8 in a str, a map key that is not str or
            bin, nesting too deep); the MessagePack error is its
            C{__cause__}.
        """
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        try:
            obj = msgpack.unpackb(data, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as e:
            raise InvalidMessageError(
                "Invalid MessagePack message: %s: %s" % (type(e).__name__, e)
            ) from e
        if isinstance(obj, list):
            return [_expand_packet(packet) for packet in obj]
        return _expand_packet(obj)
