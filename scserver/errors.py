"""
SocketCluster's error classes, and their wire form.

Every class has a C{name} equal to its class name, as in C{sc-errors}.  Extra
fields (C{expiry}, C{date}, C{type}, C{code}) are instance attributes and
travel to the client as members of the dehydrated error object.

L{dehydrate_error} turns an error into what goes on the wire:

  - C{None} stays C{None}; a string, number, boolean, list or dict passes
    through unchanged (SocketCluster sends C{"error": "text"} and
    C{"error": true} as they are);
  - an instance of a built-in exception class (C{ValueError("x")}) becomes
    C{{"message": "x"}} only, like a plain JavaScript C{Error} whose name was
    never assigned;
  - any other exception becomes C{{"message": ..., "name": ..., <public
    attributes>}}: C{name} is the C{name} attribute when it is a string, else
    the class name; public attributes are the instance's attributes not
    starting with C{_}, other than C{message}, C{name} and C{args}.

L{hydrate_error} turns a wire error back into an exception.

L{server_error} is the generic error a client gets when the server failed
unexpectedly: it tells nothing of the cause, which is logged instead.
"""

import builtins
import datetime
import json
from typing import Any, Optional

__all__ = [
    "SCError",
    "AuthTokenExpiredError",
    "AuthTokenInvalidError",
    "AuthTokenNotBeforeError",
    "AuthTokenError",
    "AuthError",
    "SilentMiddlewareBlockedError",
    "InvalidActionError",
    "InvalidArgumentsError",
    "InvalidOptionsError",
    "InvalidMessageError",
    "SocketProtocolError",
    "ServerProtocolError",
    "HTTPServerError",
    "ResourceLimitError",
    "TimeoutError",
    "BadConnectionError",
    "BrokerError",
    "ProcessExitError",
    "UnknownError",
    "RemoteError",
    "SOCKET_PROTOCOL_ERROR_STATUSES",
    "SOCKET_PROTOCOL_IGNORE_STATUSES",
    "dehydrate_error",
    "hydrate_error",
    "as_exception",
    "socket_protocol_error",
    "server_error",
]


class SCError(Exception):
    """
    Base class of every SocketCluster error.

    @ivar message: the human-readable message.
    @ivar name: the SocketCluster error name (the class name by default).
    """

    name = "SCError"

    def __init__(self, message: str = "", **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        for key, value in fields.items():
            setattr(self, key, value)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return "{}({!r})".format(type(self).__name__, self.message)


class AuthTokenExpiredError(SCError):
    """The auth token has expired.  C{expiry} is when (an ISO date or a number)."""

    expiry: Any

    def __init__(self, message: str = "", expiry: Any = None) -> None:
        super().__init__(message, expiry=expiry)


class AuthTokenInvalidError(SCError):
    """The auth token is malformed or its signature does not verify."""


class AuthTokenNotBeforeError(SCError):
    """The auth token is not active yet.  C{date} is when it becomes active."""

    date: Any

    def __init__(self, message: str = "", date: Any = None) -> None:
        super().__init__(message, date=date)


class AuthTokenError(SCError):
    """Any other auth token problem."""


class AuthError(SCError):
    """A generic authentication failure."""


class SilentMiddlewareBlockedError(SCError):
    """A middleware blocked an action silently.  C{type} is the middleware type."""

    type: Optional[str]

    def __init__(self, message: str = "", type: Optional[str] = None) -> None:
        super().__init__(message, type=type)


class InvalidActionError(SCError):
    """The action is not allowed in this state or configuration."""


class InvalidArgumentsError(SCError):
    """A method was called with invalid arguments."""


class InvalidOptionsError(SCError):
    """The server was configured with invalid options."""


class InvalidMessageError(SCError):
    """An inbound message could not be decoded."""


class SocketProtocolError(SCError):
    """The connection closed with a SocketCluster close code (C{code})."""

    code: Optional[int]

    def __init__(self, message: str = "", code: Optional[int] = None) -> None:
        super().__init__(message, code=code)


class ServerProtocolError(SCError):
    """The underlying WebSocket server reported an error."""


class HTTPServerError(SCError):
    """The underlying HTTP server reported an error."""


class ResourceLimitError(SCError):
    """A resource limit (such as the channel limit) was reached."""


class TimeoutError(SCError, builtins.TimeoutError):
    """An acknowledgement did not arrive in time."""


class BadConnectionError(SCError):
    """The connection went away; C{type} is C{'disconnect'} or C{'connectAbort'}."""

    type: Optional[str]

    def __init__(self, message: str = "", type: Optional[str] = None) -> None:
        super().__init__(message, type=type)


class BrokerError(SCError):
    """The broker failed to subscribe, unsubscribe or publish."""


class ProcessExitError(SCError):
    """A process exited (C{code} is its exit code)."""

    code: Optional[int]

    def __init__(self, message: str = "", code: Optional[int] = None) -> None:
        super().__init__(message, code=code)


class UnknownError(SCError):
    """An error of unknown origin."""


class RemoteError(SCError):
    """
    An error received from the peer whose name is not one of SocketCluster's
    classes.  Its C{name} is the name the peer sent.
    """

    def __init__(self, message: str = "", name: str = "Error", **fields: Any) -> None:
        super().__init__(message, **fields)
        self.name = name


SOCKET_PROTOCOL_ERROR_STATUSES = {
    1001: "Socket was disconnected",
    1002: "A WebSocket protocol error was encountered",
    1003: "Server terminated socket because it received invalid data",
    1005: "Socket closed without status code",
    1006: "Socket hung up",
    1007: "Message format was incorrect",
    1008: "Encountered a policy violation",
    1009: "Message was too big to process",
    1010: "Client ended the connection because the server did not comply with extension requirements",
    1011: "Server encountered an unexpected fatal condition",
    4000: "Server ping timed out",
    4001: "Client pong timed out",
    4002: "Server failed to sign auth token",
    4003: "Failed to complete handshake",
    4004: "Client failed to save auth token",
    4005: "Did not receive #handshake from client before timeout",
    4006: "Failed to bind socket to message broker",
    4007: "Client connection establishment timed out",
    4008: "Server rejected handshake from client",
    4009: "Server received a message before the client handshake",
}
"""Close codes and the message of the L{SocketProtocolError} they raise."""

SOCKET_PROTOCOL_IGNORE_STATUSES = {
    1000: "Socket closed normally",
    1001: "Socket hung up",
}
"""Close codes that raise no L{SocketProtocolError}."""

_CLASSES = {
    cls.name: cls
    for cls in (
        AuthTokenExpiredError, AuthTokenInvalidError, AuthTokenNotBeforeError,
        AuthTokenError, AuthError, SilentMiddlewareBlockedError,
        InvalidActionError, InvalidArgumentsError, InvalidOptionsError,
        InvalidMessageError, SocketProtocolError, ServerProtocolError,
        HTTPServerError, ResourceLimitError, TimeoutError, BadConnectionError,
        BrokerError, ProcessExitError, UnknownError,
    )
}


def _wire_value(value: Any) -> Any:
    """Make an attribute value JSON-friendly, as JSON.stringify would."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (value.microsecond // 1000)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _wire_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wire_value(v) for v in value]
    if isinstance(value, BaseException):
        return dehydrate_error(value)
    if isinstance(value, bytes):
        return value
    return str(value)


def dehydrate_error(error: Any) -> Any:
    """
    Convert C{error} to its wire form (see the module docstring).

    @param error: an exception, or any JSON-compatible value.
    @return: a dict, or C{error} itself when it is not an exception.
    """
    if not isinstance(error, BaseException):
        return error
    message = getattr(error, "message", None)
    if not isinstance(message, str):
        message = str(error)
    wire = {"message": message}
    if type(error).__module__ == "builtins" and "name" not in vars(error):
        return wire
    name = getattr(error, "name", None)
    wire["name"] = name if isinstance(name, str) else type(error).__name__
    for key, value in vars(error).items():
        if key.startswith("_") or key in ("message", "name", "args"):
            continue
        wire[key] = _wire_value(value)
    return wire


def hydrate_error(obj: Any) -> Any:
    """
    Convert a wire error back into an exception.

    A dict becomes an instance of the SocketCluster class of that name (or a
    L{RemoteError} carrying the name), with every other member as an
    attribute.  C{None} stays C{None}; any other value (a string, C{True})
    is returned unchanged.

    @param obj: the C{error} member of a reply, as decoded.
    @return: an exception, or C{obj} itself when it is not a dict.
    """
    if not isinstance(obj, dict):
        return obj
    message = obj.get("message")
    if not isinstance(message, str):
        message = "" if message is None else str(message)
    name = obj.get("name")
    # Only plain public names become attributes: a peer must not be able to
    # overwrite "args", "__class__" or a method of the exception.
    fields = {
        k: v for k, v in obj.items()
        if isinstance(k, str) and k.isidentifier() and not k.startswith("_")
        and k not in ("message", "name") and not hasattr(BaseException, k)
    }
    cls = _CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        return RemoteError(message, name=name if isinstance(name, str) else "Error", **fields)
    error = cls(message)
    for key, value in fields.items():
        setattr(error, key, value)
    return error


def as_exception(error: Any) -> BaseException:
    """
    Return a wire error as an exception to fail a Deferred with.

    A hydrated error is returned as it is; any other value the peer sent as
    its error (a string, C{True}, a number) becomes a L{RemoteError} named
    C{"Error"} whose C{value} is the original and whose message is the
    string itself, or the value in JSON.

    @param error: a hydrated error (see L{hydrate_error}) or any other value.
    @return: an exception.
    """
    if isinstance(error, BaseException):
        return error
    message = error if isinstance(error, str) else json.dumps(error, default=str)
    return RemoteError(message, name="Error", value=error)


def socket_protocol_error(code: int, reason: Optional[str] = None) -> Optional[SocketProtocolError]:
    """
    Return the L{SocketProtocolError} a socket reports when it closes with
    C{code}, or C{None} for the codes of a normal close
    (L{SOCKET_PROTOCOL_IGNORE_STATUSES}).

    @param code: the WebSocket close code.
    @param reason: the close reason, used in the message of a code that
        L{SOCKET_PROTOCOL_ERROR_STATUSES} does not list.
    """
    if code in SOCKET_PROTOCOL_IGNORE_STATUSES:
        return None
    message = SOCKET_PROTOCOL_ERROR_STATUSES.get(code)
    if message is None:
        message = "Socket connection closed with status code {}".format(code)
        if reason:
            message += " and reason: {}".format(reason)
    return SocketProtocolError(message, code=code)


def server_error() -> UnknownError:
    """
    Return the error a client is told when the server failed unexpectedly:
    C{UnknownError("Server error")}, which carries nothing of the cause (on
    the wire: C{{"message": "Server error", "name": "UnknownError"}}).

    @return: a new L{UnknownError}.
    """
    return UnknownError("Server error")
