# -*- test-case-name: tests.test_inspect,tests.test_inspect_browser,tests.test_inspect_workers -*-
"""
The live inspection page: a small HTML + JavaScript page, served on the
WebSocket port at the C{inspect_path} option, that shows what the server
is doing (connections and their peers, channels and their subscribers,
publish and message rates, recent errors and middleware blocks), per
process when several workers run.

It is off by default.  C{inspect_path} turns it on, and needs credentials:
C{inspect_token} (a bearer token), or C{inspect_user} with
C{inspect_password} (HTTP Basic), or both.  A request without valid
credentials gets C{401} and a one-line body, nothing else; secrets are
compared in constant time (C{hmac.compare_digest}).  See
C{docs/inspection.rst}.

Under the path C{P} (without a trailing slash) the transport
(L{scserver._transport}) hands L{Inspector.answer} the plain C{GET} and
C{HEAD} requests of:

    - C{P} and C{P/}: the page (C{inspect_static/index.html});
    - C{P/app.js} and C{P/style.css}: its script and style sheet;
    - C{P/state.json}: the state, polled by the page every second.

Every process keeps a compact snapshot of its own state
(L{Inspector.snapshot}) and, while the page is being looked at, publishes
it every L{TICK} seconds on the internal broker channel L{INSPECT_CHANNEL}
(clients cannot subscribe or publish to it: see
L{scserver.socket.INTERNAL_CHANNEL_PREFIX}).  With a broker that connects
processes (Redis, as C{--workers} requires), every process hears every
other's snapshots; C{state.json}, answered by whichever process the kernel
gave the connection to, merges its own snapshot with the latest of every
process heard from in the last L{STALE_AFTER} seconds.  While nobody looks
at the page no snapshot is built nor published: a request for
C{state.json} sets the process I{watched} for L{WATCH_FOR} seconds, and its
snapshots carry a C{viewer} flag that sets the processes that hear them
watched too.

The state never holds auth tokens, message bodies, nor the text of an
error: errors are reported by class name, with the socket id when there is
one.  Everything is bounded: L{MAX_CONNECTIONS} connections per process
(the most recent, and how many more), L{MAX_CHANNELS} channels (the
busiest), L{MAX_EVENTS} recent errors and blocks, L{MAX_PROCESSES}
processes.
"""

from __future__ import annotations

import base64
import html
import hashlib
import hmac
import json
import os
import socket as _socketmodule
from collections import deque
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence
from urllib.parse import parse_qsl, urlsplit

from twisted.internet.defer import maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._logging import observer as log_observer
from ._events import failure_log_for
from .errors import InvalidOptionsError
from .socket import INTERNAL_CHANNEL_PREFIX

if TYPE_CHECKING:
    from .middleware import Request
    from .server import SCServer
    from .socket import SCServerSocket

__all__ = [
    "INSPECT_CHANNEL",
    "TICK",
    "WATCH_FOR",
    "STALE_AFTER",
    "MAX_CONNECTIONS",
    "MAX_CHANNELS",
    "MAX_EVENTS",
    "MAX_PROCESSES",
    "MAX_PRESENCE_CHANNELS",
    "COOKIE_NAME",
    "HTTPAnswer",
    "check_options",
    "page_paths",
    "Credentials",
    "merge",
    "Inspector",
]

INSPECT_CHANNEL = INTERNAL_CHANNEL_PREFIX + "inspect"
"""The broker channel on which every process publishes its snapshots."""

TICK = 1.0
"""Seconds between two samples of the counters (and snapshots, when watched)."""

WATCH_FOR = 10.0
"""Seconds a process stays watched after a request for C{state.json}."""

STALE_AFTER = 5.0
"""A process not heard from for this many seconds is left out of the state."""

MAX_CONNECTIONS = 200
"""Connections listed per process (the most recent); the others are counted."""

MAX_CHANNELS = 200
"""Channels listed (those with the most subscribers); the others are counted."""

MAX_EVENTS = 50
"""Recent errors, and recent middleware blocks, kept per process."""

MAX_PROCESSES = 64
"""Other processes whose latest snapshot is kept."""

MAX_PRESENCE_CHANNELS = 20
"""
The busiest channels whose presence counts are asked for on each tick, when
the exchange has C{presence_stats}.
"""

COOKIE_NAME = "scserver_inspect"
"""
The cookie set on the page's answer when it was opened with
C{?token=...}: it holds a keyed hash of the token (never the token), so
that the page's script, style sheet and C{state.json} requests are
authenticated too.
"""

_STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "inspect_static")

_FILES = {
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}

_SECURITY_HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy",
     "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none';"
     " form-action 'none'"),
]


class HTTPAnswer:
    """
    The answer to a plain HTTP request (the transport writes it and closes).

    @ivar code: the status code.
    @ivar reason: the reason phrase.
    @ivar headers: C{(name, value)} pairs, besides C{Content-Length} and
        C{Connection}.
    @ivar body: the body (sent for C{GET}, not for C{HEAD}).
    """

    __slots__ = ("code", "reason", "headers", "body")

    def __init__(self, code: int, reason: str, headers: list[tuple[str, str]],
                 body: bytes) -> None:
        self.code = code
        self.reason = reason
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return "<HTTPAnswer {} {} ({} bytes)>".format(self.code, self.reason, len(self.body))


def check_options(options: dict[str, Any]) -> None:
    """
    Check the C{inspect_*} options of validated server options; normalise
    C{inspect_path} (no trailing slash; an empty path is C{None}).

    @raise InvalidOptionsError: a path that does not start with C{/} or is
        another endpoint's (the WebSocket, health or metrics path); a page
        without credentials; C{inspect_user} without C{inspect_password} or
        the reverse; an empty secret.
    """
    path = options.get("inspect_path")
    if not path:
        options["inspect_path"] = None
        return
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidOptionsError("inspect_path must start with /, not {!r}".format(path))
    path = path.rstrip("/")
    if not path:
        raise InvalidOptionsError("inspect_path cannot be / (the page needs a path of its own)")
    if "?" in path or "#" in path or " " in path:
        raise InvalidOptionsError("inspect_path must be a plain path, not {!r}".format(path))
    options["inspect_path"] = path
    taken = {options.get("path"), options.get("health_path"), options.get("metrics_path")}
    for candidate in page_paths(path):
        if candidate in taken or candidate + "/" in taken:
            raise InvalidOptionsError(
                "inspect_path {!r} is already the path of another endpoint".format(path))
    token = options.get("inspect_token")
    user = options.get("inspect_user")
    password = options.get("inspect_password")
    for name, value in (("inspect_token", token), ("inspect_user", user),
                        ("inspect_password", password)):
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidOptionsError("{} must be a non-empty string".format(name))
    if (user is None) != (password is None):
        raise InvalidOptionsError(
            "inspect_user and inspect_password must be given together")
    if user is not None and ":" in user:
        raise InvalidOptionsError("inspect_user cannot contain a colon (HTTP Basic)")
    if token is None and user is None:
        raise InvalidOptionsError(
            "inspect_path needs credentials: inspect_token, or inspect_user and"
            " inspect_password (the page is never served without them)")


def page_paths(base: str) -> list[str]:
    """The request paths of the page under C{base}."""
    return [base, base + "/", base + "/state.json"] + [base + name for name in _FILES]


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class Credentials:
    """
    Checks the credentials of a request, in constant time.

    A request is allowed with C{Authorization: Bearer TOKEN}, C{?token=TOKEN}
    or the L{COOKIE_NAME} cookie (when a token is configured), or with
    C{Authorization: Basic ...} (when a user and password are).  Secrets
    are compared by their SHA-256 digests with C{hmac.compare_digest}, so
    that neither their content nor their length shows in the time taken.
    """

    def __init__(self, token: Optional[str], user: Optional[str],
                 password: Optional[str]) -> None:
        self._token = _digest(token) if token is not None else None
        self._user = _digest(user) if user is not None else None
        self._password = _digest(password) if password is not None else None
        self._cookie: Optional[str] = None
        if token is not None:
            self._cookie = hmac.new(token.encode("utf-8"), b"scserver inspection cookie",
                                    hashlib.sha256).hexdigest()

    @property
    def basic(self) -> bool:
        """Whether HTTP Basic credentials are configured."""
        return self._user is not None

    @property
    def cookie(self) -> Optional[str]:
        """The value of the L{COOKIE_NAME} cookie, when a token is configured."""
        return self._cookie

    def check_token(self, candidate: str) -> bool:
        """Is C{candidate} the token?"""
        if self._token is None:
            return False
        return hmac.compare_digest(_digest(candidate), self._token)

    def check_cookie(self, candidate: str) -> bool:
        """Is C{candidate} the value of the L{COOKIE_NAME} cookie?"""
        if self._cookie is None:
            return False
        return hmac.compare_digest(_digest(candidate), _digest(self._cookie))

    def check_basic(self, encoded: str) -> bool:
        """Are the base64 C{user:password} of a Basic header the right ones?"""
        if self._user is None or self._password is None:
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except ValueError:
            return False
        user, colon, password = decoded.partition(":")
        # Both comparisons are made, whatever the first one says.
        user_ok = hmac.compare_digest(_digest(user), self._user)
        password_ok = hmac.compare_digest(_digest(password), self._password)
        return bool(colon) and user_ok and password_ok

    def allowed(self, headers: dict[str, str], query: dict[str, str]) -> tuple[bool, bool]:
        """
        Check a request.

        @param headers: lower-case header name → value.
        @param query: query parameter → value.
        @return: C{(allowed, by_query)}: whether the request has valid
            credentials, and whether they were the C{token} query
            parameter (the page then sets the cookie).
        """
        authorization = headers.get("authorization", "")
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.check_token(value.strip()):
            return True, False
        if scheme == "basic" and self.check_basic(value):
            return True, False
        token = query.get("token")
        if token is not None and self.check_token(token):
            return True, True
        for name, cookie in _cookies(headers.get("cookie", "")):
            if name == COOKIE_NAME and self.check_cookie(cookie):
                return True, False
        return False, False


def _cookies(header: str) -> Iterable[tuple[str, str]]:
    for part in header.split(";")[:32]:
        name, _, value = part.strip().partition("=")
        yield name.strip(), value.strip()


def _parse_headers(lines: Sequence[bytes]) -> dict[str, str]:
    """The request headers we look at, lower-case name → value (Latin-1)."""
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        key = name.strip().lower().decode("latin-1")
        if key in ("authorization", "cookie"):
            text = value.strip().decode("latin-1")
            headers[key] = headers[key] + "; " + text if key in headers else text
    return headers


def _number(value: object) -> bool:
    return type(value) in (int, float)


def _clean_presence(stats: object) -> Optional[dict[str, float]]:
    """The numbers of a C{presence_stats} result (at most 8 of them)."""
    if not isinstance(stats, dict):
        return None
    clean: dict[str, float] = {}
    for key, value in stats.items():
        if isinstance(key, str) and _number(value) and len(key) <= 64:
            clean[key] = value
            if len(clean) >= 8:
                break
    return clean


def _merge_one(process: dict[str, Any], channels: dict[str, int],
               presence: dict[str, tuple[float, dict[str, float]]],
               totals: dict[str, float]) -> None:
    """Add one process's snapshot to the sums of L{merge} (checking its shape first)."""
    found = [(entry["name"], int(entry["subscribers"])) for entry in process["channels"]]
    if not all(isinstance(name, str) for name, _ in found):
        raise TypeError("a channel name is not a string")
    int(process.get("channels_more", 0))
    connections = process["connections"]
    rates = process.get("rates") or {}
    added = {"open": int(connections["open"]), "pending": int(connections["pending"]),
             "publishes_per_second": float(rates.get("publishes", 0.0)),
             "messages_in_per_second": float(rates.get("messages_in", 0.0)),
             "messages_out_per_second": float(rates.get("messages_out", 0.0))}
    when = float(process.get("time", 0))
    stats_by_channel = process.get("presence") or {}
    for name, stats in stats_by_channel.items():
        if not isinstance(stats, dict):
            raise TypeError("presence counts are not a dict")
    for name, count in found:
        channels[name] = channels.get(name, 0) + count
    for key, value in added.items():
        totals[key] += value
    for name, stats in stats_by_channel.items():
        seen = presence.get(name)
        if seen is None or when >= seen[0]:
            presence[name] = (when, stats)


def merge(processes: Sequence[dict[str, Any]], now: float, answered_by: str) -> dict[str, Any]:
    """
    The state served as C{state.json}: the snapshots of every process, and
    the channels and totals summed over them.

    @param processes: one snapshot per process (see L{Inspector.snapshot}).
    @param now: the time of the answer (the answering process's clock).
    @param answered_by: the id of the answering process.
    @return: a JSON-able dict.
    """
    channels: dict[str, int] = {}
    presence: dict[str, tuple[float, dict[str, float]]] = {}
    more = 0
    totals = {"open": 0, "pending": 0, "publishes_per_second": 0.0,
              "messages_in_per_second": 0.0, "messages_out_per_second": 0.0}
    kept = []
    for process in processes:
        try:
            _merge_one(process, channels, presence, totals)
        except (TypeError, ValueError, KeyError, AttributeError):
            continue  # not a snapshot of this version: left out
        more += process.get("channels_more", 0)
        kept.append(process)
    busiest = sorted(channels.items(), key=lambda item: (-item[1], item[0]))
    listed = [{"name": name, "subscribers": count,
               "presence": presence[name][1] if name in presence else None}
              for name, count in busiest[:MAX_CHANNELS]]
    return {
        "version": 1,
        "time": now,
        "answered_by": answered_by,
        "processes": kept,
        "channels": listed,
        "channels_more": max(0, len(busiest) - MAX_CHANNELS) + more,
        "totals": totals,
    }


class Inspector:
    """
    The inspection page of one L{scserver.SCServer} (C{server.inspector},
    made when the C{inspect_path} option is set).

    @ivar process_id: a random id of this process's server, shown on the
        page.
    @ivar path: the page's path (no trailing slash).
    @ivar credentials: the L{Credentials} requests are checked with.
    """

    _log = Logger(observer=log_observer)

    def __init__(self, server: "SCServer") -> None:
        options = server.options
        self._server = server
        self._clock: Any = server.reactor
        self.path: str = options["inspect_path"]
        self.credentials = Credentials(options.get("inspect_token"),
                                       options.get("inspect_user"),
                                       options.get("inspect_password"))
        self.process_id = os.urandom(6).hex()
        self._pid = os.getpid()
        self._host = _socketmodule.gethostname()[:64]
        self._started = self._now()
        self._since: dict[str, float] = {}
        self._errors: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self._blocks: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self._last_recorded: Any = None
        self._sample: Optional[tuple[float, dict[str, int]]] = None
        self._rates: dict[str, float] = {}
        self._watched_until = float("-inf")
        self._viewer_until = float("-inf")
        self._others: dict[str, tuple[float, dict[str, Any]]] = {}
        self._presence: dict[str, dict[str, float]] = {}
        self._presence_busy = False
        self._loop: Optional[LoopingCall] = None
        self._channel: Any = None
        server.on("handshake", self._socket_made)
        server.on("closure", self._socket_closed)
        server.on("warning", self._warning)
        server.on("error", self._server_error)
        server.middleware.block_observers.append(self._blocked)

    # -- life ------------------------------------------------------------

    def _now(self) -> float:
        return float(self._clock.seconds())

    @property
    def running(self) -> bool:
        """Whether the inspector samples and listens to the other processes."""
        return self._loop is not None

    def start(self) -> None:
        """
        Sample the counters every L{TICK} seconds and listen to the other
        processes' snapshots (called once the server's broker is ready).
        """
        if self._loop is not None:
            return
        exchange = self._server.exchange
        self._channel = exchange.channel(INSPECT_CHANNEL)
        self._channel.watch(self._heard)
        exchange.subscribe(INSPECT_CHANNEL)
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self._clock
        self._loop.start(TICK, now=True).addErrback(
            lambda f: self._log.failure("The inspection loop failed", f))

    def stop(self) -> None:
        """Stop sampling and listening (the server closes)."""
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        if self._channel is not None:
            self._channel.unwatch(self._heard)
            self._server.exchange.unsubscribe(INSPECT_CHANNEL)
            self._channel = None
        self._others.clear()

    # -- events ----------------------------------------------------------

    def _socket_made(self, socket: "SCServerSocket") -> None:
        self._since[socket.id] = self._now()
        socket_id = socket.id
        socket.on("error", lambda error: self._record_error(error, socket_id))

    def _socket_closed(self, socket: "SCServerSocket", code: int, reason: object) -> None:
        self._since.pop(socket.id, None)

    def _record_error(self, error: object, socket_id: Optional[str]) -> None:
        self._last_recorded = error
        self._errors.append({"time": self._now(), "name": type(error).__name__,
                             "socket": socket_id})

    def _warning(self, error: object) -> None:
        # A socket's error, or a block, is also a server warning: it was
        # recorded once already.
        if error is self._last_recorded:
            self._last_recorded = None
            return
        self._record_error(error, None)

    def _server_error(self, error: object) -> None:
        self._record_error(error, None)

    def _blocked(self, kind: str, request: "Request", error: object) -> None:
        socket = getattr(request, "socket", None)
        self._last_recorded = error
        if error is True or getattr(error, "silent", False):
            name = "silent"
        elif isinstance(error, str):
            name = "message"
        else:
            name = type(error).__name__
        self._blocks.append({"time": self._now(), "type": kind, "name": name,
                             "socket": getattr(socket, "id", None)})

    # -- sampling ----------------------------------------------------------

    def _counters(self) -> dict[str, int]:
        stats = self._server.stats
        return {
            "publishes": stats.publishes,
            "messages_in": stats.messages_in,
            "messages_out": stats.messages_out,
            "bytes_in": stats.bytes_in,
            "bytes_out": stats.bytes_out,
            "connections": stats.connections,
            "errors": sum(stats.errors.values()),
            "blocks": sum(self._server.middleware.blocks.values()),
        }

    def tick(self) -> None:
        """
        Sample the counters into per-second rates; when watched, publish
        this process's snapshot and ask for the presence counts of the
        busiest channels.
        """
        now = self._now()
        counters = self._counters()
        previous = self._sample
        if previous is not None and now > previous[0]:
            elapsed = now - previous[0]
            self._rates = {name: round((value - previous[1][name]) / elapsed, 2)
                           for name, value in counters.items()}
        self._sample = (now, counters)
        for process_id, (heard, _) in list(self._others.items()):
            if now - heard > STALE_AFTER:
                del self._others[process_id]
        if now < self._watched_until:
            snapshot = self.snapshot()
            snapshot["viewer"] = now < self._viewer_until
            self._server.exchange.publish(INSPECT_CHANNEL, snapshot).addErrback(
                lambda f: None)
            self._ask_presence(snapshot["channels"])

    def _ask_presence(self, channels: list[dict[str, Any]]) -> None:
        exchange = self._server.exchange
        presence_stats = getattr(exchange, "presence_stats", None)
        if not callable(presence_stats) or self._presence_busy \
                or getattr(exchange, "presence_tracker", True) is None:
            # No presence (or it is off on this exchange).
            return
        names = [entry["name"] for entry in channels[:MAX_PRESENCE_CHANNELS]]
        if not names:
            self._presence = {}
            return
        self._presence_busy = True
        found: dict[str, dict[str, float]] = {}
        waiting = [len(names)]

        def done(result: object, name: str) -> None:
            clean = _clean_presence(result)
            if clean is not None:
                found[name] = clean
            waiting[0] -= 1
            if waiting[0] == 0:
                self._presence = found
                self._presence_busy = False

        def failed(failure: Failure, name: str) -> None:
            done(None, name)

        for name in names:
            maybeDeferred(presence_stats, name).addCallbacks(
                done, failed, callbackArgs=(name,), errbackArgs=(name,))

    def _heard(self, data: Any) -> None:
        """A snapshot on L{INSPECT_CHANNEL} (from any process, this one too)."""
        if not isinstance(data, dict):
            return
        process_id = data.get("id")
        if not isinstance(process_id, str) or process_id == self.process_id:
            return
        now = self._now()
        if process_id not in self._others and len(self._others) >= MAX_PROCESSES:
            return
        self._others[process_id] = (now, data)
        if data.get("viewer") is True:
            self._watched_until = max(self._watched_until, now + WATCH_FOR)

    # -- the state -------------------------------------------------------

    def _socket_entry(self, socket: "SCServerSocket", since: float) -> dict[str, Any]:
        return {
            "id": socket.id,
            "address": socket.remote_address,
            "state": socket.state,
            "authenticated": socket.auth_state == socket.AUTHENTICATED,
            "protocol": socket.protocol_version,
            "since": since,
            "subscriptions": len(socket.subscriptions()),
        }

    def snapshot(self) -> dict[str, Any]:
        """
        This process's state: a JSON-able dict, bounded in size whatever the
        number of connections and channels.
        """
        server = self._server
        now = self._now()
        clients = server.clients
        pending = server.pending_clients
        shown = []
        for socket_id in reversed(self._since):
            socket = clients.get(socket_id) or pending.get(socket_id)
            if socket is None:
                continue
            shown.append(self._socket_entry(socket, self._since[socket_id]))
            if len(shown) >= MAX_CONNECTIONS:
                break
        counts: dict[str, int] = {}
        for socket in clients.values():
            for name in socket.subscriptions():
                counts[name] = counts.get(name, 0) + 1
        busiest = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        total = len(clients) + len(pending)
        return {
            "id": self.process_id,
            "pid": self._pid,
            "host": self._host,
            "started": self._started,
            "time": now,
            "ready": bool(server.is_ready),
            "connections": {"open": len(clients), "pending": len(pending),
                            "shown": shown, "more": max(0, total - len(shown))},
            "channels": [{"name": name, "subscribers": count}
                         for name, count in busiest[:MAX_CHANNELS]],
            "channels_more": max(0, len(busiest) - MAX_CHANNELS),
            "rates": dict(self._rates),
            "totals": self._counters(),
            "errors": list(self._errors),
            "blocks": list(self._blocks),
            "presence": dict(self._presence),
        }

    def state(self) -> dict[str, Any]:
        """
        The merged state of every process heard from lately (see L{merge});
        marks this process watched for L{WATCH_FOR} seconds.
        """
        now = self._now()
        self._watched_until = max(self._watched_until, now + WATCH_FOR)
        self._viewer_until = now + WATCH_FOR
        processes = [self.snapshot()]
        for heard, data in self._others.values():
            if now - heard <= STALE_AFTER:
                processes.append(data)
        processes[1:] = sorted(processes[1:], key=lambda p: str(p.get("id")))
        return merge(processes, now, self.process_id)

    # -- HTTP --------------------------------------------------------------

    def answer(self, method: bytes, target: bytes, header_lines: Sequence[bytes]) -> HTTPAnswer:
        """
        Answer a plain C{GET} or C{HEAD} of one of the page's paths.

        @param method: C{b"GET"} or C{b"HEAD"}.
        @param target: the request target (path and query).
        @param header_lines: the request's header lines.
        @return: the answer: C{401} without valid credentials; C{500} (and
            the failure logged, at a bounded rate) if answering failed.
        """
        try:
            return self._answer(target, header_lines)
        except Exception:
            failure_log_for(self._clock).failure(
                self._log, "Unexpected error answering an inspection page request")
            return HTTPAnswer(500, "Internal Server Error",
                              [("Content-Type", "text/plain; charset=utf-8")]
                              + _SECURITY_HEADERS, b"Internal Server Error\n")

    def _answer(self, target: bytes, header_lines: Sequence[bytes]) -> HTTPAnswer:
        split = urlsplit(target.decode("latin-1"))
        query = dict(parse_qsl(split.query, keep_blank_values=True,
                               max_num_fields=16)) if split.query else {}
        headers = _parse_headers(header_lines)
        allowed, by_query = self.credentials.allowed(headers, query)
        if not allowed:
            challenge = 'Basic realm="scserver inspection", charset="UTF-8"' \
                if self.credentials.basic else 'Bearer realm="scserver inspection"'
            return HTTPAnswer(401, "Unauthorized",
                              [("Content-Type", "text/plain; charset=utf-8"),
                               ("WWW-Authenticate", challenge)] + _SECURITY_HEADERS,
                              b"Unauthorized\n")
        sub = split.path[len(self.path):]
        if sub in ("", "/"):
            with open(os.path.join(_STATIC, "index.html"), "rb") as handle:
                page = handle.read()
            body = page.replace(b"__BASE__", html.escape(self.path, quote=True).encode("utf-8"))
            extra = [("Content-Type", "text/html; charset=utf-8")]
            cookie = self.credentials.cookie
            if by_query and cookie is not None:
                extra.append(("Set-Cookie", "{}={}; Path={}; HttpOnly; SameSite=Strict".format(
                    COOKIE_NAME, cookie, self.path)))
            return HTTPAnswer(200, "OK", extra + _SECURITY_HEADERS, body)
        if sub == "/state.json":
            body = json.dumps(self.state(), separators=(",", ":")).encode("utf-8")
            return HTTPAnswer(200, "OK", [("Content-Type", "application/json")]
                              + _SECURITY_HEADERS, body)
        found = _FILES.get(sub)
        if found is None:
            return HTTPAnswer(404, "Not Found", [("Content-Type", "text/plain; charset=utf-8")]
                              + _SECURITY_HEADERS, b"Not Found\n")
        with open(os.path.join(_STATIC, found[0]), "rb") as handle:
            body = handle.read()
        return HTTPAnswer(200, "OK", [("Content-Type", found[1])] + _SECURITY_HEADERS, body)
