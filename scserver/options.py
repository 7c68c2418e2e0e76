"""
The options of L{scserver.SCServer}: names, defaults, validation.

One table serves the server and the C{twistd scserver} plugin, so every
option is also a command-line flag (C{ping_interval} → C{--ping-interval}).
Durations are seconds.

The C{codec_engine} and C{broker} options name objects; L{resolve_codec_engine}
and L{resolve_broker} turn them into those objects, for the server and the
C{twistd} plugin alike, so that both accept the same spellings.
"""

import importlib
import inspect
import ipaddress
import os
from typing import Any, Callable, Mapping, Optional, Union, cast

from .errors import InvalidOptionsError
from .interfaces import IBroker, ICodecEngine

__all__ = [
    "Option",
    "OPTIONS",
    "DEFAULTS",
    "validate_options",
    "load_object",
    "resolve_codec_engine",
    "check_broker",
    "resolve_broker",
]


class Option:
    """
    One server option.

    @ivar name: the keyword name.
    @ivar default: the default value.
    @ivar parse: converts a command-line string to the value.
    @ivar doc: one line of help.
    """

    def __init__(self, name: str, default: Any, parse: Callable[[Any], Any], doc: str) -> None:
        self.name = name
        self.default = default
        self.parse = parse
        self.doc = doc

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. C{ping-interval}."""
        return self.name.replace("_", "-")


def _bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected a boolean, got {!r}".format(text))


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def parse_optional(text: Any) -> Any:
        if text is None or (isinstance(text, str) and text.strip().lower() in ("", "none", "null")):
            return None
        return parse(text)
    return parse_optional


def _protocol_version(text: Any) -> Union[int, str]:
    if str(text).strip().lower() == "auto":
        return "auto"
    value = int(text)
    if value not in (1, 2):
        raise ValueError("protocol_version must be 1, 2 or 'auto'")
    return value


def _origins(text: Any) -> list[str]:
    if isinstance(text, (list, tuple)):
        return list(text)
    return [part for part in str(text).replace(",", " ").split() if part]


def _algorithms(text: Any) -> Optional[Union[list[Any], tuple[Any, ...]]]:
    if text is None or isinstance(text, (list, tuple)):
        return text
    return [part for part in str(text).replace(",", " ").split() if part]


def _from_environment(text: str) -> str:
    """The value of the environment variable named by C{"env:NAME"}."""
    name = text[len("env:"):].strip()
    if not name:
        raise ValueError("env: needs the name of an environment variable (env:NAME)")
    value = os.environ.get(name)
    if value is None:
        raise ValueError("the environment variable {} is not set".format(name))
    if not value:
        raise ValueError("the environment variable {} is empty".format(name))
    return value


def _text_or_file(text: Any) -> Any:
    """A PEM key given inline, as C{@path} or as C{env:NAME}."""
    if isinstance(text, str) and text.startswith("@"):
        with open(text[1:], "r") as handle:
            return handle.read()
    if isinstance(text, str) and text.startswith("env:"):
        return _from_environment(text)
    return text


def _secret(text: Any) -> Any:
    """
    The C{auth_key} given on the command line: the key itself, C{@path}
    (the file's content, without one trailing newline) or C{env:NAME} (the
    value of the environment variable C{NAME}), so that the key need not
    show in the process list.
    """
    if not isinstance(text, str):
        return text
    if text.startswith("env:"):
        return _from_environment(text)
    if text.startswith("@"):
        with open(text[1:], "r") as handle:
            value = handle.read()
        if value.endswith("\n"):
            value = value[:-2] if value.endswith("\r\n") else value[:-1]
        if not value:
            raise ValueError("the file {} is empty".format(text[1:]))
        return value
    return text


def _networks(text: Any) -> Optional[tuple[Union[ipaddress.IPv4Network, ipaddress.IPv6Network], ...]]:
    """
    Trusted proxies: addresses or networks (CIDR), separated by commas in a
    string, or a sequence of them.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    networks = tuple(ipaddress.ip_network(str(item).strip(), strict=False)
                     for item in items if str(item).strip())
    return networks or None


OPTIONS = [
    Option("path", "/socketcluster/", str, "URL path of the WebSocket endpoint"),
    Option("protocol_version", "auto", _protocol_version,
           "1 (pings #1/#2), 2 (pings ''), or auto (per socket)"),
    Option("ack_timeout", 10.0, float, "seconds to wait for a client's reply"),
    Option("handshake_timeout", 10.0, float, "seconds to wait for #handshake"),
    Option("ping_interval", 8.0, float, "seconds between pings"),
    Option("ping_timeout", 20.0, float, "seconds without a pong before close 4001"),
    Option("ping_timeout_disabled", False, _bool, "no pings and no pong timer"),
    Option("strict_handshake", True, _bool, "close 4009 on a message before #handshake"),
    Option("origins", "*:*", _origins, "allowed Origin patterns (host:port, * wildcards)"),
    Option("allow_client_publish", True, _bool, "may clients publish"),
    Option("auth_key", None, _optional(_secret),
           "HMAC secret for auth tokens: the key, @path (a file holding it) or env:NAME"
           " (an environment variable holding it)"),
    Option("auth_private_key", None, _optional(_text_or_file),
           "PEM private key (or @file, env:NAME)"),
    Option("auth_public_key", None, _optional(_text_or_file),
           "PEM public key (or @file, env:NAME)"),
    Option("auth_algorithm", "HS256", str, "token signing algorithm"),
    Option("auth_verify_algorithms", None, _optional(_algorithms),
           "accepted algorithms (within the configured family)"),
    Option("auth_default_expiry", 86400.0, float, "seconds a token from set_auth_token lives"),
    Option("auth_leeway", 0.0, float, "seconds of clock skew allowed on exp/nbf"),
    Option("auth_require_expiry", False, _bool,
           "refuse auth tokens without exp (AuthTokenInvalidError)"),
    Option("socket_channel_limit", 1000, _optional(int), "channels one socket may subscribe to"),
    Option("max_payload", 1048576, int, "largest inbound message in bytes"),
    Option("max_handshake_size", 16384, _optional(int),
           "bytes a client may send before its WebSocket upgrade completes (request line,"
           " headers, anything sent before the answer); beyond, 431 and close"),
    Option("max_outbound_buffer", 16777216, _optional(int),
           "bytes queued for a client that stopped reading before it is cut off (its"
           " server socket closes with 1008, the client sees the connection reset, 1006;"
           " not applied behind twisted.web)"),
    Option("trusted_proxies", None, _optional(_networks),
           "addresses or networks (CIDR, comma-separated) of reverse proxies whose"
           " X-Forwarded-For header gives the client's address (for the per-address"
           " limits and socket.remote_address); none: the peer's address is the client's"),
    Option("max_connections", None, _optional(int),
           "open WebSocket connections this process accepts; beyond, the upgrade is"
           " refused with 503 (none: no limit)"),
    Option("max_connections_per_ip", None, _optional(int),
           "open WebSocket connections from one remote address; beyond, the upgrade is"
           " refused with 429 (none: no limit; behind a proxy every client has its address)"),
    Option("max_messages_per_second", 2000, _optional(float),
           "inbound messages a socket may send per second (a burst of one second's worth);"
           " beyond, close 4100 (none: no limit)"),
    Option("max_bytes_per_second", 8388608, _optional(float),
           "inbound bytes (characters of text messages) a socket may send per second (a"
           " burst of one second's worth, at least max_payload); beyond, close 4100"
           " (none: no limit)"),
    Option("rate_limit_cooldown", 10.0, _optional(float),
           "seconds during which new sockets from an address whose socket was closed"
           " 4100 start with 1/20 of the inbound budget's burst (none or 0: always the"
           " full burst)"),
    Option("max_inflight_requests", 2000, _optional(int),
           "requests (events with a cid) of one socket not answered yet; beyond, the"
           " request is answered with a ResourceLimitError (none: no limit)"),
    Option("max_batch_size", 2000, _optional(int),
           "packets in one inbound batch (a JSON array); beyond, close 4101 (none: no"
           " limit)"),
    Option("max_messages_per_turn", 100, _optional(int),
           "inbound messages of one connection handled in one reactor turn; then it"
           " stops reading until the next turn, so that others get theirs (none: no"
           " limit)"),
    Option("max_channel_name_length", 256, int,
           "longest channel name (in characters) a client may subscribe or publish to"),
    Option("per_message_deflate", False, _bool, "negotiate permessage-deflate"),
    Option("pub_sub_batch_duration", None, _optional(float),
           "seconds to batch {batch: true} subscribe replies"),
    Option("codec_engine", None, _optional(str),
           "codec: json, min-bin (or minbin, msgpack), or pkg.module:Name"),
    Option("broker", None, _optional(str),
           "broker: memory (in-process), redis://[:password@]host:port/db, rediss://...,"
           " unix:///path/redis.sock, several Redis URLs separated by commas (shards),"
           " or pkg.module:factory"),
    Option("broker_prefix", "scserver:", str,
           "prefix of the Redis channel names (one per application sharing a Redis)"),
    Option("history_channels", None, _optional(str),
           "channels keeping a history for recovery: PATTERN=SIZE[/TTL] separated by"
           " spaces, e.g. 'chat.*=100/300 news=20' (glob patterns, TTL in seconds; in"
           " Python also a dict pattern -> size, (size, ttl) or {size, ttl})"),
    Option("presence_channels", None, _optional(str),
           "channels keeping presence (who is subscribed, in every process): glob"
           " patterns separated by spaces or commas, e.g. 'room.* lobby'; none (the"
           " default): no channel"),
    Option("presence_user_claim", "sub", _optional(str),
           "auth token claim whose distinct values presence_stats counts as users"),
    Option("presence_expiry", 30.0, float,
           "seconds after which the members of a process that stopped (Redis broker)"
           " are gone; it refreshes them every third of it"),
    Option("presence_max_members", 1000, int,
           "most members one presence() call or #presence request returns"),
    Option("presence_notices_per_second", 1000.0, _optional(float),
           "join/leave notices a process publishes per second; beyond, they are dropped"
           " (none: no limit)"),
    Option("presence_info", None, _optional(str),
           "what a member exposes besides joined: pkg.module:name of a callable"
           " socket -> dict (default: nothing; scserver._presence:token_presence_info"
           " exposes the auth token)"),
    Option("allow_client_presence", False, _bool,
           "may clients invoke #presence on a channel they are subscribed to (presence"
           " middleware decides further)"),
    Option("middleware_emit_warnings", True, _bool, "emit 'warning' on middleware blocks"),
    Option("health_path", "/health", _optional(str),
           "path of the plain HTTP health check on the WebSocket port (200 once ready,"
           " else 503); empty or none disables it"),
    Option("metrics_path", "/metrics", _optional(str),
           "path of the Prometheus metrics on the WebSocket port; empty or none disables it"),
    Option("inspect_path", None, _optional(str),
           "path of the live inspection page on the WebSocket port (e.g. /inspect); none"
           " (the default) disables it; it needs inspect_token or inspect_user and"
           " inspect_password"),
    Option("inspect_token", None, _optional(_secret),
           "bearer token of the inspection page (Authorization: Bearer, ?token= or its"
           " cookie): the token, @path (a file holding it) or env:NAME"),
    Option("inspect_user", None, _optional(str),
           "HTTP Basic user name of the inspection page (with inspect_password)"),
    Option("inspect_password", None, _optional(_secret),
           "HTTP Basic password of the inspection page: the password, @path or env:NAME"),
]
"""Every server option, in documentation order."""

DEFAULTS = {option.name: option.default for option in OPTIONS}
"""Option name → default value."""

_BY_NAME = {option.name: option for option in OPTIONS}

_NUMBERS_POSITIVE = ("ack_timeout", "handshake_timeout", "ping_interval", "ping_timeout")

_LIMITS_POSITIVE: dict[str, Callable[[Any], Any]] = {
    "max_connections": int,
    "max_connections_per_ip": int,
    "max_messages_per_second": float,
    "max_bytes_per_second": float,
    "max_inflight_requests": int,
    "max_batch_size": int,
    "max_messages_per_turn": int,
}
"""The admission and fairness limits: positive, or C{None} for no limit."""


def validate_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """
    Merge C{options} over the defaults and check them.

    @param options: a dict of option name → value.
    @return: a new dict with every option.
    @raise InvalidOptionsError: for an unknown option or a bad value.
    """
    unknown = sorted(set(options) - set(_BY_NAME))
    if unknown:
        raise InvalidOptionsError("Unknown option(s): {}".format(", ".join(unknown)))
    merged = dict(DEFAULTS)
    merged.update(options)
    try:
        merged["protocol_version"] = _protocol_version(merged["protocol_version"])
        merged["origins"] = _origins(merged["origins"])
        merged["trusted_proxies"] = _optional(_networks)(merged["trusted_proxies"])
        for name in _NUMBERS_POSITIVE:
            merged[name] = float(merged[name])
            if merged[name] <= 0:
                raise ValueError("{} must be positive".format(name))
        merged["max_payload"] = int(merged["max_payload"])
        if merged["max_payload"] <= 0:
            raise ValueError("max_payload must be positive")
        if merged["max_outbound_buffer"] is not None:
            merged["max_outbound_buffer"] = int(merged["max_outbound_buffer"])
            if merged["max_outbound_buffer"] <= 0:
                raise ValueError("max_outbound_buffer must be positive (or None)")
        for name in _LIMITS_POSITIVE:
            if merged[name] is not None:
                merged[name] = _LIMITS_POSITIVE[name](merged[name])
                if merged[name] <= 0:
                    raise ValueError("{} must be positive (or None)".format(name))
        merged["max_channel_name_length"] = int(merged["max_channel_name_length"])
        if merged["max_channel_name_length"] <= 0:
            raise ValueError("max_channel_name_length must be positive")
        if merged["socket_channel_limit"] is not None:
            merged["socket_channel_limit"] = int(merged["socket_channel_limit"])
        merged["auth_default_expiry"] = float(merged["auth_default_expiry"])
        if merged["rate_limit_cooldown"] is not None:
            merged["rate_limit_cooldown"] = float(merged["rate_limit_cooldown"])
            if merged["rate_limit_cooldown"] < 0:
                raise ValueError("rate_limit_cooldown must not be negative")
        merged["auth_leeway"] = float(merged["auth_leeway"])
        if merged["auth_leeway"] < 0:
            raise ValueError("auth_leeway must not be negative")
        from ._history import parse_history_channels
        merged["history_channels"] = parse_history_channels(merged["history_channels"]) or None
        from ._presence import validate_presence_options
        validate_presence_options(merged)
        if not isinstance(merged["broker_prefix"], str):
            raise TypeError("broker_prefix must be a string, not {}".format(
                type(merged["broker_prefix"]).__name__))
    except (TypeError, ValueError) as e:
        raise InvalidOptionsError(str(e))
    path = merged["path"]
    if not path.startswith("/"):
        path = "/" + path
    if not path.endswith("/"):
        path = path + "/"
    merged["path"] = path
    if (merged["auth_private_key"] is None) != (merged["auth_public_key"] is None):
        raise InvalidOptionsError(
            "The auth_private_key and auth_public_key options must be given together")
    from ._inspect import check_options as check_inspect_options
    check_inspect_options(merged)
    return merged


# --------------------------------------------------------------------------
# codec_engine and broker: the objects named by an option's value
# --------------------------------------------------------------------------

_CODEC_NAMES = {
    "json": "json",
    "min-bin": "min-bin",
    "minbin": "min-bin",
    "msgpack": "min-bin",
}
"""The codec names (lower case) and the codec each one means."""

_BROKER_URL_SCHEMES = ("redis", "rediss", "unix")
"""The URL schemes of the Redis broker."""

_BROKER_METHODS = ("start", "subscribe", "unsubscribe", "publish", "stop")
"""The methods of L{IBroker}, for brokers that do not declare it."""


def load_object(spec: str, label: str) -> Any:
    """
    Import the object named by C{spec}, C{"pkg.module:name"}.

    The name after the colon may be dotted (C{"pkg.module:App.setup"}).  The
    module is looked up on C{sys.path} as it is.

    @param spec: C{"pkg.module:name"}.
    @param label: what C{spec} was given as (an option name or a
        command-line flag), to start the error messages with.
    @return: the object.
    @raise InvalidOptionsError: with a one-line explanation when C{spec} has
        no colon, the module cannot be imported or the name is missing.
    """
    moduleName, sep, attributes = spec.partition(":")
    moduleName = moduleName.strip()
    attributes = attributes.strip()
    if not sep or not moduleName or not attributes:
        raise InvalidOptionsError(
            "{} expects pkg.module:name, got {!r}".format(label, spec))
    try:
        obj: Any = importlib.import_module(moduleName)
    except ImportError as e:
        missing = e.name
        if missing is not None and (
            moduleName == missing or moduleName.startswith(missing + ".")
        ):
            raise InvalidOptionsError(
                "{} {}: no module named {!r}".format(label, spec, missing)) from e
        raise InvalidOptionsError(
            "{} {}: importing {!r} failed: {}".format(label, spec, moduleName, e)) from e
    except Exception as e:
        raise InvalidOptionsError(
            "{} {}: importing {!r} raised {}: {}".format(
                label, spec, moduleName, type(e).__name__, e)) from e
    path = moduleName
    for attribute in attributes.split("."):
        try:
            obj = getattr(obj, attribute)
        except AttributeError:
            raise InvalidOptionsError(
                "{} {}: {!r} has no attribute {!r}".format(label, spec, path, attribute)
            ) from None
        path = path + "." + attribute
    return obj


def _is_codec_engine(obj: object) -> bool:
    """
    Is C{obj} a codec engine: an L{ICodecEngine} provider, or an instance
    (not a class) with callable C{encode} and C{decode}?
    """
    if isinstance(obj, type):
        return False
    if ICodecEngine.providedBy(obj):
        return True
    return callable(getattr(obj, "encode", None)) and callable(getattr(obj, "decode", None))


def resolve_codec_engine(value: object = None, label: str = "codec_engine") -> ICodecEngine:
    """
    Turn a value of the C{codec_engine} option into a codec engine.

    The accepted values, in L{scserver.server.SCServer}, its
    C{set_codec_engine} and C{twistd scserver --codec-engine} alike:

        - C{None} or C{"json"}: a new L{scserver.codec.JSONCodec};
        - C{"min-bin"} (also C{"minbin"} and C{"msgpack"}): a new
          L{scserver.codec.MinBinCodec};
        - C{"pkg.module:Name"}: C{Name} is imported; a codec engine instance
          is used as it is, a class or another callable is called without
          arguments to make one;
        - an L{ICodecEngine} provider, or any object with C{encode} and
          C{decode} methods: used as it is.

    Names are case-insensitive and surrounding spaces are ignored.

    @param value: the option's value.
    @param label: what C{value} was given as, to start error messages
        with (C{"--codec-engine"} on the command line).
    @return: the codec engine.
    @raise InvalidOptionsError: when C{value} names no codec engine.
    """
    if value is None:
        value = "json"
    if isinstance(value, str):
        spec = value.strip()
        codecName = _CODEC_NAMES.get(spec.lower())
        if codecName == "json":
            from .codec import JSONCodec

            return JSONCodec()
        if codecName == "min-bin":
            from .codec import MinBinCodec

            return MinBinCodec()
        if ":" not in spec:
            raise InvalidOptionsError(
                "{} expects json, min-bin or pkg.module:Name, got {!r}".format(label, value))
        obj = load_object(spec, label)
        if _is_codec_engine(obj):
            codec: ICodecEngine = obj
            return codec
        if not callable(obj):
            raise InvalidOptionsError(
                "{} {}: not a codec engine (no encode/decode methods)".format(label, spec))
        try:
            codec = obj()
        except Exception as e:
            raise InvalidOptionsError(
                "{} {}: creating the codec raised {}: {}".format(
                    label, spec, type(e).__name__, e)) from e
        if not _is_codec_engine(codec):
            raise InvalidOptionsError(
                "{} {}: not a codec engine (it made a {} without encode/decode"
                " methods)".format(label, spec, type(codec).__name__))
        return codec
    if isinstance(value, type):
        raise InvalidOptionsError(
            "{} takes a codec engine instance, not the class {}: pass {}() or the"
            " string 'pkg.module:{}'".format(
                label, value.__name__, value.__name__, value.__name__))
    if _is_codec_engine(value):
        return cast(ICodecEngine, value)
    raise InvalidOptionsError(
        "{} expects json, min-bin or pkg.module:Name, or an ICodecEngine provider"
        " (with encode() and decode() methods), got a {}".format(label, type(value).__name__))


def _is_broker(obj: object) -> bool:
    """
    Is C{obj} a broker: an L{IBroker} provider, or an instance (not a
    class) with every method of L{IBroker}?
    """
    if isinstance(obj, type):
        return False
    if IBroker.providedBy(obj):
        return True
    return all(callable(getattr(obj, name, None)) for name in _BROKER_METHODS)


def _check_redis_url(label: str, url: str) -> None:
    """
    Check a Redis URL of the C{broker} option (see
    L{scserver.brokers.redis.parse_url}) without connecting.

    @param label: see L{resolve_broker}.
    @param url: the URL, or several separated by commas.
    @raise InvalidOptionsError: for a malformed URL, or when the Redis
        client library is not installed.
    """
    from .brokers import redis

    try:
        redis.parse_url(url)
    except ValueError as e:
        raise InvalidOptionsError("{} {}: {}".format(label, url, e)) from None
    if not redis.client_available():
        raise InvalidOptionsError(
            "{} {}: the Redis broker needs the txredisapi package, which is not"
            " installed".format(label, url))


def _parse_broker(value: object, label: str) -> tuple[str, Any]:
    """
    Check a value of the C{broker} option and say what it is.

    @return: C{("memory", None)}, C{("url", url)}, C{("broker", broker)} or
        C{("factory", callable)}.
    @raise InvalidOptionsError: see L{resolve_broker}.
    """
    if value is None:
        return ("memory", None)
    if isinstance(value, str):
        spec = value.strip()
        if spec.lower() == "memory":
            return ("memory", None)
        scheme, colon, _ = spec.partition(":")
        scheme = scheme.lower()
        if "://" in spec or (colon and scheme in _BROKER_URL_SCHEMES):
            if scheme not in _BROKER_URL_SCHEMES:
                raise InvalidOptionsError(
                    "{} {}: unknown broker URL scheme {!r} (expected redis://,"
                    " rediss:// or unix://)".format(label, value, scheme))
            _check_redis_url(label, spec)
            return ("url", spec)
        if ":" not in spec:
            raise InvalidOptionsError(
                "{} expects memory, a URL (redis://host:port/db) or pkg.module:factory,"
                " got {!r}".format(label, value))
        obj = load_object(spec, label)
        if _is_broker(obj):
            return ("broker", obj)
        if not callable(obj):
            raise InvalidOptionsError(
                "{} {}: neither an IBroker nor a factory of one (got a {} object)".format(
                    label, spec, type(obj).__name__))
        return ("factory", obj)
    if isinstance(value, type):
        raise InvalidOptionsError(
            "{} takes a broker instance, not the class {}: pass an instance or the"
            " string 'pkg.module:{}'".format(label, value.__name__, value.__name__))
    if _is_broker(value):
        return ("broker", value)
    raise InvalidOptionsError(
        "{} expects memory, a URL (redis://host:port/db), pkg.module:factory or an"
        " IBroker provider, got a {} (missing {})".format(
            label, type(value).__name__,
            ", ".join(name for name in _BROKER_METHODS
                      if not callable(getattr(value, name, None)))))


def check_broker(value: object, label: str = "broker") -> None:
    """
    Check a value of the C{broker} option without making the broker.

    For where the reactor is not known yet (C{twistd} parses its options
    before it installs the reactor): when this passes, L{resolve_broker}
    given the same value fails only if a broker factory fails.  A
    C{"pkg.module:name"} is imported; a Redis URL is parsed (nothing
    connects).

    @raise InvalidOptionsError: as L{resolve_broker}.
    """
    _parse_broker(value, label)


def resolve_broker(value: object, reactor: Any, label: str = "broker") -> IBroker:
    """
    Turn a value of the C{broker} option into a broker.

    The accepted values, in L{scserver.server.SCServer} and C{twistd
    scserver --broker} alike:

        - C{None} or C{"memory"}: a new
          L{scserver.brokers.memory.MemoryBroker} (in-process);
        - a C{redis://}, C{rediss://} or C{unix://} URL, or several
          separated by commas (shards): a
          L{scserver.brokers.redis.RedisBroker} (see
          L{scserver.brokers.redis.parse_url}; a malformed URL is an
          L{InvalidOptionsError}); it takes its channel prefix from the
          server's C{broker_prefix} option;
        - C{"pkg.module:name"}: C{name} is imported; an L{IBroker} provider
          is used as it is, a class or another callable is called to make
          one, with C{reactor=reactor} when it takes a C{reactor} argument
          and without arguments otherwise;
        - an L{IBroker} provider, or any object with its methods: used as it
          is.

    @param value: the option's value.
    @param reactor: the reactor the server runs on.
    @param label: what C{value} was given as, to start error messages
        with (C{"--broker"} on the command line).
    @return: the broker.
    @raise InvalidOptionsError: when C{value} names no broker, or a factory
        fails or makes something that is not a broker.
    """
    kind, obj = _parse_broker(value, label)
    if kind == "memory":
        from .brokers.memory import MemoryBroker

        return MemoryBroker()
    if kind == "url":
        from .brokers.redis import RedisBroker

        broker: IBroker = RedisBroker.from_url(obj, reactor=reactor)
        return broker
    if kind == "broker":
        broker = obj
        return broker
    try:
        parameters: Mapping[str, inspect.Parameter] = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        parameters = {}
    takesReactor = "reactor" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    try:
        broker = obj(reactor=reactor) if takesReactor else obj()
    except Exception as e:
        raise InvalidOptionsError(
            "{} {}: creating the broker raised {}: {}".format(
                label, str(value).strip(), type(e).__name__, e)) from e
    if not _is_broker(broker):
        raise InvalidOptionsError(
            "{} {}: not a broker (it made a {}, which does not provide IBroker)".format(
                label, str(value).strip(), type(broker).__name__))
    return broker
