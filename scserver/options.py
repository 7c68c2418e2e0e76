"""
The options of L{scserver.SCServer}: names, defaults, validation.

One table serves the server and the C{twistd scserver} plugin, so every
option is also a command-line flag (C{ping_interval} → C{--ping-interval}).
Durations are seconds.
"""

from .errors import InvalidOptionsError

__all__ = ["Option", "OPTIONS", "DEFAULTS", "validate_options"]


class Option:
    """
    One server option.

    @ivar name: the keyword name.
    @ivar default: the default value.
    @ivar parse: converts a command-line string to the value.
    @ivar doc: one line of help.
    """

    def __init__(self, name, default, parse, doc):
        self.name = name
        self.default = default
        self.parse = parse
        self.doc = doc

    @property
    def flag(self):
        """The command-line flag, e.g. C{ping-interval}."""
        return self.name.replace("_", "-")


def _bool(text):
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected a boolean, got {!r}".format(text))


def _optional(parse):
    def parse_optional(text):
        if text is None or (isinstance(text, str) and text.strip().lower() in ("", "none", "null")):
            return None
        return parse(text)
    return parse_optional


def _protocol_version(text):
    if str(text).strip().lower() == "auto":
        return "auto"
    value = int(text)
    if value not in (1, 2):
        raise ValueError("protocol_version must be 1, 2 or 'auto'")
    return value


def _origins(text):
    if isinstance(text, (list, tuple)):
        return list(text)
    return [part for part in str(text).replace(",", " ").split() if part]


def _algorithms(text):
    if text is None or isinstance(text, (list, tuple)):
        return text
    return [part for part in str(text).replace(",", " ").split() if part]


def _text_or_file(text):
    """A PEM key given inline or as C{@path}."""
    if isinstance(text, str) and text.startswith("@"):
        with open(text[1:], "r") as handle:
            return handle.read()
    return text


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
    Option("auth_key", None, _optional(str), "HMAC secret for auth tokens"),
    Option("auth_private_key", None, _optional(_text_or_file), "PEM private key (or @file)"),
    Option("auth_public_key", None, _optional(_text_or_file), "PEM public key (or @file)"),
    Option("auth_algorithm", "HS256", str, "token signing algorithm"),
    Option("auth_verify_algorithms", None, _optional(_algorithms),
           "accepted algorithms (within the configured family)"),
    Option("auth_default_expiry", 86400.0, float, "seconds a token from set_auth_token lives"),
    Option("auth_leeway", 0.0, float, "seconds of clock skew allowed on exp/nbf"),
    Option("socket_channel_limit", 1000, _optional(int), "channels one socket may subscribe to"),
    Option("max_payload", 1048576, int, "largest inbound message in bytes"),
    Option("max_outbound_buffer", 16777216, _optional(int),
           "bytes queued for a client that stopped reading before it is cut off (close 1008;"
           " not applied behind twisted.web)"),
    Option("per_message_deflate", False, _bool, "negotiate permessage-deflate"),
    Option("pub_sub_batch_duration", None, _optional(float),
           "seconds to batch {batch: true} subscribe replies"),
    Option("codec_engine", None, _optional(str), "codec: json, min-bin, or pkg.module:Class"),
    Option("broker", None, _optional(str), "broker URL or pkg.module:factory (default: in-process)"),
    Option("middleware_emit_warnings", True, _bool, "emit 'warning' on middleware blocks"),
]
"""Every server option, in documentation order."""

DEFAULTS = {option.name: option.default for option in OPTIONS}
"""Option name → default value."""

_BY_NAME = {option.name: option for option in OPTIONS}

_NUMBERS_POSITIVE = ("ack_timeout", "handshake_timeout", "ping_interval", "ping_timeout")


def validate_options(options):
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
        if merged["socket_channel_limit"] is not None:
            merged["socket_channel_limit"] = int(merged["socket_channel_limit"])
        merged["auth_default_expiry"] = float(merged["auth_default_expiry"])
        merged["auth_leeway"] = float(merged["auth_leeway"])
        if merged["auth_leeway"] < 0:
            raise ValueError("auth_leeway must not be negative")
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
    return merged
