"""
Middleware: functions that allow or block the actions of clients.

A middleware is C{fn(req, next)}.  It allows the action with C{next()},
blocks it with C{next(error)} (an exception or a string), blocks it silently
with C{next(True)} (the client gets a L{SilentMiddlewareBlockedError}; only
the server C{'warning'} is suppressed), and for C{handshakeSC} may pass a
close code, C{next(error, 4500)}; for C{authenticate}, C{next(error, True)}
marks the token bad.

Instead of calling C{next}, a middleware may return a Deferred or a
coroutine: success allows (unless C{next} was called first), failure blocks
with that error.  Any other value that is not C{None} allows.  An exception
raised by the middleware blocks with that exception.  Calling C{next} a
second time emits a C{'warning'} and changes nothing.

Middleware of one type run in the order they were added, each after the
previous one allowed the action; the first block ends the chain.
"""

import inspect
from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._logging import observer as log_observer
from ._events import failure_log_for
from .errors import (
    InvalidActionError,
    InvalidArgumentsError,
    SCError,
    SilentMiddlewareBlockedError,
    server_error,
)

_log = Logger(observer=log_observer)

__all__ = [
    "MIDDLEWARE_HANDSHAKE_WS",
    "MIDDLEWARE_HANDSHAKE_SC",
    "MIDDLEWARE_AUTHENTICATE",
    "MIDDLEWARE_SUBSCRIBE",
    "MIDDLEWARE_PUBLISH_IN",
    "MIDDLEWARE_PUBLISH_OUT",
    "MIDDLEWARE_EMIT",
    "MIDDLEWARE_PRESENCE",
    "MIDDLEWARE_TYPES",
    "Blocked",
    "Request",
    "MiddlewareChain",
]

MIDDLEWARE_HANDSHAKE_WS = "handshakeWS"
MIDDLEWARE_HANDSHAKE_SC = "handshakeSC"
MIDDLEWARE_AUTHENTICATE = "authenticate"
MIDDLEWARE_SUBSCRIBE = "subscribe"
MIDDLEWARE_PUBLISH_IN = "publishIn"
MIDDLEWARE_PUBLISH_OUT = "publishOut"
MIDDLEWARE_EMIT = "emit"
MIDDLEWARE_PRESENCE = "presence"
"""scserver's own type (not SocketCluster's): a client's C{#presence} request."""

MIDDLEWARE_TYPES = (
    MIDDLEWARE_HANDSHAKE_WS,
    MIDDLEWARE_HANDSHAKE_SC,
    MIDDLEWARE_AUTHENTICATE,
    MIDDLEWARE_SUBSCRIBE,
    MIDDLEWARE_PUBLISH_IN,
    MIDDLEWARE_PUBLISH_OUT,
    MIDDLEWARE_EMIT,
    MIDDLEWARE_PRESENCE,
)
"""Every middleware type: SocketCluster's seven, then C{presence}."""


class Request:
    """
    What a middleware is asked about.  The attributes depend on the type:

     - C{handshakeWS}: C{request} (the HTTP upgrade request);
     - C{handshakeSC}: C{socket};
     - C{authenticate}: C{socket}, C{auth_token}, C{signed_auth_token};
     - C{subscribe}: C{socket}, C{channel}, C{data}, C{wait_for_auth},
       C{auth_token_expired_error};
     - C{publishIn}: C{socket}, C{channel}, C{data}, C{ack_data} (settable),
       C{auth_token_expired_error};
     - C{publishOut}: C{socket}, C{channel}, C{data},
       C{auth_token_expired_error};
     - C{emit}: C{socket}, C{event}, C{data}, C{auth_token_expired_error};
     - C{presence}: C{socket}, C{channel}, C{auth_token_expired_error}.

    A middleware may replace C{data}.

    @ivar type: the middleware type.
    """

    def __init__(self, type: str, **attributes: Any) -> None:
        self.type = type
        self.__dict__.update(attributes)

    if TYPE_CHECKING:
        # For type checkers only: the attributes are set from the keywords.
        def __getattr__(self, name: str) -> Any: ...

        def __setattr__(self, name: str, value: Any) -> None: ...

    def __repr__(self) -> str:
        fields = ", ".join(
            "{}={!r}".format(k, v) for k, v in sorted(vars(self).items()) if k != "type")
        return "<Request {} {}>".format(self.type, fields)


class Blocked:
    """
    The outcome of a blocked middleware chain.

    @ivar error: the error to report to the client (a
        L{SilentMiddlewareBlockedError} for a silent block).
    @ivar value: the second argument given to C{next} (a close code for
        C{handshakeSC}, the bad-token flag for C{authenticate}), or C{None}.
    @ivar silent: whether the block was silent.
    """

    __slots__ = ("error", "value", "silent")

    def __init__(self, error: Any, value: Any = None, silent: bool = False) -> None:
        self.error = error
        self.value = value
        self.silent = silent

    def __repr__(self) -> str:
        return "<Blocked {!r} value={!r} silent={}>".format(self.error, self.value, self.silent)


def _is_block(error):
    return error is not None and error is not False and not (
        isinstance(error, (str, int, float)) and not isinstance(error, bool) and not error)


class MiddlewareChain:
    """
    The middleware registered on one server.

    @param warn: called with an error for every non-silent block (when
        C{emit_warnings} is true) and for a C{next} called twice.
    """

    def __init__(self, warn: Callable[[Any], object], emit_warnings: bool = True,
                 clock: Any = None) -> None:
        """
        @param clock: the reactor: the unexpected failures of middleware
            are logged at a bounded rate on it (see
            L{scserver._events.FailureLog}); without it each is logged.
        """
        self._warn = warn
        self.emit_warnings = emit_warnings
        self._clock = clock
        self._stacks: dict[str, list[Callable[..., Any]]] = {}
        #: middleware type -> actions it blocked (read by the /metrics scrape)
        self.blocks: dict[str, int] = {}
        #: called as C{observer(type, req, error)} for every block, before
        #: the warning (the inspection page records blocks with these)
        self.block_observers: list[Callable[[str, Request, Any], object]] = []

    def add(self, type: str, fn: Callable[..., Any]) -> None:
        """
        Add C{fn} as a middleware of C{type}.

        @raise InvalidArgumentsError: for an unknown type or a C{fn} that is
            not callable.
        """
        if type not in MIDDLEWARE_TYPES:
            raise InvalidArgumentsError('Middleware type "{}" is not supported'.format(type))
        if not callable(fn):
            raise InvalidArgumentsError("Middleware must be callable")
        self._stacks.setdefault(type, []).append(fn)

    def remove(self, type: str, fn: Callable[..., Any]) -> None:
        """Remove C{fn} from the middleware of C{type} (if it is there)."""
        if type not in MIDDLEWARE_TYPES:
            raise InvalidArgumentsError('Middleware type "{}" is not supported'.format(type))
        stack = self._stacks.get(type)
        if stack and fn in stack:
            stack.remove(fn)
            if not stack:
                del self._stacks[type]

    def has(self, type: str) -> bool:
        """Return True when any middleware of C{type} is registered."""
        return type in self._stacks

    def run(self, type: str, req: Request) -> Optional["Deferred[Optional[Blocked]]"]:
        """
        Run the middleware of C{type} on C{req}.

        @return: C{None} when no middleware of that type is registered
            (allowed at once); otherwise a Deferred firing with C{None}
            (allowed) or a L{Blocked}.
        """
        stack = self._stacks.get(type)
        if not stack:
            return None
        return ensureDeferred(self._run(type, req, list(stack)))

    async def _run(self, type, req, stack):
        for fn in stack:
            error, value = await self._call(type, fn, req)
            if _is_block(error):
                for observer in self.block_observers:
                    observer(type, req, error)
                return self._blocked(type, error, value)
        return None

    def _blocked(self, type, error, value):
        self.blocks[type] = self.blocks.get(type, 0) + 1
        if error is True or getattr(error, "silent", False):
            return Blocked(
                SilentMiddlewareBlockedError(
                    "Action was silently blocked by {} middleware".format(type), type),
                value, silent=True)
        if self.emit_warnings:
            self._warn(error)
        return Blocked(error, value)

    def _call(self, type, fn, req):
        outcome = Deferred()
        state = {"called": False}

        def next_(error=None, value=None):
            if state["called"]:
                self._warn(InvalidActionError(
                    "Callback for {} middleware was already invoked".format(type)))
                return
            state["called"] = True
            outcome.callback((error, value))

        def settle(error):
            if not state["called"]:
                state["called"] = True
                outcome.callback((error, None))

        def failed(failure):
            # Raised, or the failure of the Deferred returned: a
            # SocketCluster error (an application's subclass) blocks with
            # itself; anything else is a bug, kept from the client.
            if isinstance(failure.value, SCError):
                settle(failure.value)
                return
            if self._clock is not None:
                failure_log_for(self._clock).failure(
                    _log, "Error in {type} middleware", failure, type=type)
            else:
                _log.failure("Error in {type} middleware", failure, type=type)
            settle(server_error())

        try:
            result = fn(req, next_)
        except Exception:
            failed(Failure())
            return outcome
        if inspect.iscoroutine(result):
            result = ensureDeferred(result)
        if isinstance(result, Deferred):
            result.addCallbacks(lambda _: settle(None), failed)
        elif result is not None:
            settle(None)
        return outcome
