"""
A small event emitter with SocketCluster's C{on}/C{off}/C{once} semantics,
and the dispatch of peer events to C{handler(data, respond)} handlers.
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any, Callable, Iterable, Optional, TypeVar, Union

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._logging import observer as log_observer

_log = Logger(observer=log_observer)

Handler = Callable[..., Any]
"""The type of an event handler: any callable (its arguments depend on the event)."""

CallId = Union[int, str]
"""The type of the call id (C{cid}) of a request that wants a reply."""

_HandlerT = TypeVar("_HandlerT", bound=Callable[..., Any])

FAILURE_LOG_LIMIT = 10
"""At most this many unexpected failures are logged (with their
tracebacks) per L{FAILURE_LOG_PERIOD} by one L{FailureLog}."""

FAILURE_LOG_PERIOD = 60.0
"""The window, in seconds, of L{FAILURE_LOG_LIMIT}."""


class FailureLog:
    """
    Logs unexpected failures with their tracebacks, at most C{limit} per
    C{period} seconds, so that a flood (a client triggering the same bug
    again and again) cannot fill the log.  The failures over the limit are
    counted, and one warning says how many were suppressed when the window
    ends.

    Time is read from C{clock} (an C{IReactorTime}), never from the system
    clock, so a C{twisted.internet.task.Clock} drives it in tests.  Use
    L{failure_log_for} to share one per reactor, that is one per process.
    """

    def __init__(self, clock: Any, limit: int = FAILURE_LOG_LIMIT,
                 period: float = FAILURE_LOG_PERIOD) -> None:
        self.limit = limit
        self.period = period
        self._clock = clock
        self._window_end: Optional[float] = None
        self._logged = 0
        self._suppressed = 0
        self._report_call: Any = None
        self._log: Optional[Logger] = None

    def failure(self, log: Logger, format: str, failure: Optional[Failure] = None,
                **kwargs: Any) -> bool:
        """
        Log C{failure} (the exception being handled when C{None}) to C{log}
        with C{format}, unless the limit of the current window was reached.

        @return: whether it was logged.
        """
        now = self._clock.seconds()
        if self._window_end is None or now >= self._window_end:
            self._window_end = now + self.period
            self._logged = 0
        if self._logged < self.limit:
            self._logged += 1
            log.failure(format, failure, **kwargs)
            return True
        self._suppressed += 1
        self._log = log
        if self._report_call is None:
            self._report_call = self._clock.callLater(
                max(0.0, self._window_end - now), self._report)
        return False

    def _report(self) -> None:
        self._report_call = None
        count, self._suppressed = self._suppressed, 0
        if count and self._log is not None:
            self._log.warn(
                "Suppressed {count} similar errors (at most {limit} are logged"
                " every {period} seconds)", count=count, limit=self.limit, period=self.period)


_failure_logs: "weakref.WeakKeyDictionary[Any, FailureLog]" = weakref.WeakKeyDictionary()


def failure_log_for(clock: Any) -> FailureLog:
    """
    Return the L{FailureLog} shared by everything that runs on C{clock} (a
    reactor, so one per process; each test's C{Clock} gets its own).
    """
    try:
        found = _failure_logs.get(clock)
    except TypeError:  # not weakly referenceable: a log of its own
        return FailureLog(clock)
    if found is None:
        found = _failure_logs[clock] = FailureLog(clock)
    return found


def call_handlers(handlers: Iterable[Handler], event: str, data: Any, respond: "Responder",
                  wants_reply: bool,
                  on_failure: Optional[Callable[[Failure, str], Any]] = None) -> None:
    """
    Call every C{handler(data, respond)} of a peer event.

    A handler replies with C{respond(error, data)}; or its result does,
    when the peer wants a reply and none was sent by the time the result is
    ready: a value other than C{None}, a Deferred or a coroutine (its
    result, or its failure).  A handler that raises, or whose Deferred or
    coroutine fails, is answered with an error when a reply is wanted.

    @param respond: the responder; its C{done} attribute tells whether a
        reply was sent.
    @param on_failure: C{on_failure(failure, event)} is told of every
        failure of a handler and returns the error to reply with (the
        server passes one that keeps internals from the client); by
        default the failure's exception is the reply, and a failure no
        reply was wanted for is logged.
    """
    def reply_failed(failure: Failure) -> None:
        if on_failure is not None:
            error = on_failure(failure, event)
        else:
            error = failure.value
            if not wants_reply or respond.done:
                _log.failure("Error in a handler of {event!r}", failure, event=event)
        if wants_reply and not respond.done:
            respond(error)

    for handler in list(handlers):
        try:
            result = handler(data, respond)
        except Exception:
            reply_failed(Failure())  # type: ignore[no-untyped-call]
            continue
        if result is None:
            continue
        if inspect.iscoroutine(result):
            result = ensureDeferred(result)
        if isinstance(result, Deferred):
            result.addCallbacks(
                lambda value: None if not wants_reply or respond.done else respond(None, value),
                reply_failed)
        elif wants_reply and not respond.done:
            respond(None, result)


class Responder:
    """
    The C{respond(error=None, data=None)} callable given to the handlers of
    a peer event.

    It sends the reply once, through C{send(cid, error, data)}, when the
    peer asked for one (C{cid} is not C{None}); a second call sends nothing
    and is reported to C{warn(cid)}.

    @ivar done: whether a reply was sent (or none is wanted).
    """

    __slots__ = ("_send", "_cid", "_warn", "done")

    def __init__(self, send: Callable[[Optional[CallId], Any, Any], object],
                 cid: Optional[CallId], warn: Callable[[CallId], object]) -> None:
        self._send = send
        self._cid = cid
        self._warn = warn
        self.done = cid is None

    def __call__(self, error: Any = None, data: Any = None) -> None:
        if self.done:
            if self._cid is not None:
                self._warn(self._cid)
            return
        self.done = True
        self._send(self._cid, error, data)


class EventEmitter:
    """
    Named events with handlers, called in the order they were added.

    An exception raised by a handler is logged and does not stop the other
    handlers, nor the code that emitted the event.
    """

    _log = Logger(observer=log_observer)

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}

    def on(self, name: str, handler: _HandlerT) -> _HandlerT:
        """
        Call C{handler} every time the event C{name} is emitted.

        @return: C{handler}, so this can be used as a decorator helper.
        """
        self._handlers.setdefault(name, []).append(handler)
        return handler

    def once(self, name: str, handler: Handler) -> Handler:
        """Call C{handler} the next time C{name} is emitted, then forget it."""

        def wrapper(*args: Any) -> Any:
            self.off(name, wrapper)
            return handler(*args)

        wrapper._sc_wrapped = handler  # type: ignore[attr-defined]
        return self.on(name, wrapper)

    def off(self, name: Optional[str] = None, handler: Optional[Handler] = None) -> None:
        """
        Remove handlers: one (C{name} and C{handler}), every handler of C{name}
        (C{handler} omitted) or every handler of every event (no arguments).
        """
        if name is None:
            self._handlers.clear()
            return
        if handler is None:
            self._handlers.pop(name, None)
            return
        handlers = self._handlers.get(name)
        if not handlers:
            return
        for index, existing in enumerate(handlers):
            # == rather than "is": a bound method is a new object on every
            # attribute access, but equal to the one that was added.
            if existing == handler or getattr(existing, "_sc_wrapped", None) == handler:
                del handlers[index]
                break
        if not handlers:
            del self._handlers[name]

    def listeners(self, name: str) -> list[Handler]:
        """Return a list of the handlers of C{name}."""
        return [getattr(h, "_sc_wrapped", h) for h in self._handlers.get(name, ())]

    def _emit(self, name: str, *args: Any) -> bool:
        handlers = self._handlers.get(name)
        if not handlers:
            return False
        for handler in list(handlers):
            try:
                handler(*args)
            except Exception:
                self._log.failure("Error in a {event!r} event handler", event=name)
        return True
