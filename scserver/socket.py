"""
L{SCServerSocket}: one client connection, as the application sees it.

The socket owns a L{scserver._engine.ProtocolEngine} in the server role (the
wire protocol) and implements what the packets mean: the handshake, client
events with replies, subscriptions, publishing and authentication, with the
middleware of the server in between.

Its seams: the transport feeds it with L{SCServerSocket.receive} and
L{SCServerSocket.connection_lost}; the exchange hands it publications with
L{SCServerSocket.deliver}; it writes through an L{IServerSocketOutput}; it
reaches the server through the server's public attributes (C{options},
C{middleware}, C{auth_engine}, C{auth_config}, C{exchange}, C{emit}) and the
registry the server gave it.
"""

from __future__ import annotations

import copy
import os
import threading
import base64
import time as _time

from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from twisted.internet.defer import Deferred, ensureDeferred, fail, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from ._logging import observer as log_observer
from . import _engine
from ._engine import IEngineOutput, IEngineOwner
from ._metrics import LATENCY_SAMPLE_MASK
from ._events import CallId, EventEmitter, Responder, call_handlers, failure_log_for
from .errors import (
    AuthTokenError,
    AuthTokenExpiredError,
    AuthTokenInvalidError,
    AuthTokenNotBeforeError,
    BrokerError,
    InvalidActionError,
    InvalidArgumentsError,
    SCError,
    dehydrate_error,
    server_error,
    socket_protocol_error,
)
from .interfaces import ICodecEngine
from .middleware import (
    MIDDLEWARE_AUTHENTICATE,
    MIDDLEWARE_EMIT,
    MIDDLEWARE_HANDSHAKE_SC,
    MIDDLEWARE_PUBLISH_IN,
    MIDDLEWARE_PUBLISH_OUT,
    MIDDLEWARE_SUBSCRIBE,
    Blocked,
    Request,
)

if TYPE_CHECKING:
    from ._transport import UpgradeRequest
    from .exchange import Publication
    from .server import SCServer

__all__ = ["SCServerSocket", "IServerSocketOutput", "ISocketRegistry"]

RESERVED_EVENTS = frozenset([
    "connect", "disconnect", "connectAbort", "close", "subscribe", "unsubscribe",
    "authenticate", "deauthenticate", "authStateChange", "badAuthToken",
    "authTokenSigned", "message", "raw", "error",
    "_connect", "_disconnect", "_connectAbort", "_close",
])
"""Event names of the socket itself: never dispatched from the client."""

MAX_CHANNEL_NAME_LENGTH = 256
"""The default longest channel name (in characters) a client may use (the
server's C{max_channel_name_length} option)."""

INTERNAL_CHANNEL_PREFIX = "#scserver/"
"""
Channels whose name starts with this are the server's own (the inspection
page's snapshots, see L{scserver._inspect}): a client's subscribe, publish
or unsubscribe naming one is refused with an C{InvalidActionError}; server
code uses them through C{server.exchange}.
"""

_id_lock = threading.Lock()
_id_sequence = [0]


def generate_id() -> str:
    """
    Return a new socket id in SocketCluster's base64id form: 12 random bytes
    and a 24-bit sequence number, URL-safe base64, 20 characters.
    """
    with _id_lock:
        sequence = _id_sequence[0]
        _id_sequence[0] = (sequence + 1) & 0xFFFFFF
    raw = os.urandom(12) + sequence.to_bytes(3, "big")
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _is_auth_error(error: object) -> bool:
    return isinstance(error, (AuthTokenExpiredError, AuthTokenInvalidError,
                              AuthTokenNotBeforeError, AuthTokenError))


class IServerSocketOutput(IEngineOutput):
    """
    The connection of a server socket: the engine's output, plus the
    delivery of a message framed once for many sockets.
    """

    def write_prepared(prepared: Any) -> None:
        """
        Send a message prepared once for every recipient (see
        L{scserver.exchange.Publication.frame}).
        """


class ISocketRegistry(Interface):
    """
    Where a server keeps its sockets by state; the socket reports its own
    transitions to it.
    """

    def promote(socket: "SCServerSocket") -> None:
        """C{socket} completed its handshake: it is a client now."""

    def remove(socket: "SCServerSocket") -> None:
        """C{socket} closed."""

    def cool_down(address: str, until: float) -> None:
        """
        A socket from C{address} was closed for exceeding its inbound
        budget: until the time C{until}, new sockets from there start
        without a burst.
        """

    def cooling(address: Optional[str], now: float) -> bool:
        """Is C{address} cooling down at the time C{now} (see L{cool_down})?"""


COOLDOWN_BURST = 0.05
"""The fraction of a full inbound budget (of one second's worth) that a
socket from an address cooling down starts with: a flooder that reconnects
as soon as it is cut off gets 1/20 of a second's work per connection
(the C{rate_limit_cooldown} option)."""


@implementer(IEngineOwner)
class SCServerSocket(EventEmitter):
    """
    A client connection.

    @ivar id: the socket id (20 characters).
    @ivar server: the L{scserver.SCServer}.
    @ivar exchange: the server's exchange.
    @ivar request: the HTTP upgrade request (C{path}, C{headers},
        C{origin}, C{peer}, C{params}).
    @ivar remote_address: the client's IP address, or C{None}.
    @ivar auth_token: the decoded auth token (a dict) or C{None}.
    @ivar signed_auth_token: the signed auth token or C{None}.
    @ivar auth_state: L{AUTHENTICATED} or L{UNAUTHENTICATED}.
    @ivar codec: the codec of this connection (the server's when the socket
        was created).
    """

    CONNECTING = _engine.CONNECTING
    OPEN = _engine.OPEN
    CLOSED = _engine.CLOSED
    AUTHENTICATED = "authenticated"
    UNAUTHENTICATED = "unauthenticated"

    _log = Logger(observer=log_observer)

    # The protocol events and the names of their handlers, called with
    # (data, cid, expired): names, not bound methods, so that a socket
    # carries no table of its own.
    _PROTOCOL_HANDLERS = {
        "#subscribe": "_on_subscribe",
        "#unsubscribe": "_on_unsubscribe",
        "#publish": "_on_publish",
        "#authenticate": "_on_authenticate",
        "#removeAuthToken": "_on_remove_auth_token",
        "#presence": "_on_presence",
    }

    def __init__(self, server: "SCServer", output: IServerSocketOutput,
                 registry: ISocketRegistry, request: Optional["UpgradeRequest"] = None,
                 clock: Any = None) -> None:
        """
        Sockets are made by L{scserver.SCServer.accept}.

        @param server: the L{scserver.SCServer}.
        @param output: the connection (an L{IServerSocketOutput}).
        @param registry: the server's L{ISocketRegistry}.
        @param request: the HTTP upgrade request, or C{None}.
        @param clock: an C{IReactorTime}; the server's reactor by default.
        """
        EventEmitter.__init__(self)
        self.server = server
        self.exchange = server.exchange
        self.request = request
        self.remote_address: Optional[str] = getattr(request, "remote_address", None)
        self.id = generate_id()
        self.auth_token: Optional[dict[str, Any]] = None
        self.signed_auth_token: Optional[str] = None
        self.auth_state = self.UNAUTHENTICATED
        self.codec: ICodecEngine = server.codec
        self._output = output
        self._registry = registry
        self._clock: Any = clock if clock is not None else server.reactor
        self._channels: dict[str, bool] = {}
        self._bytes_received = 0
        self._stats = server.stats
        self._now: Callable[[], float] = getattr(self._clock, "seconds", _time.time)
        self._expired: Optional[Exception] = None
        # The token set_auth_token is signing (the latest call wins).
        self._issuing: Optional[dict[str, Any]] = None
        options = server.options
        self._max_channel_name_length: int = options.get(
            "max_channel_name_length", MAX_CHANNEL_NAME_LENGTH)
        budget = None
        if options.get("max_messages_per_second") is not None or \
                options.get("max_bytes_per_second") is not None:
            burst = 1.0
            if options.get("rate_limit_cooldown") and registry.cooling(
                    self.remote_address, self._now()):
                burst = COOLDOWN_BURST
            budget = _engine.InboundBudget(
                self._clock, options.get("max_messages_per_second"),
                options.get("max_bytes_per_second"), options["max_payload"], burst)
        self._engine = _engine.ProtocolEngine(
            self.codec, self._clock, self, output,
            role=_engine.SERVER,
            protocol_version=options["protocol_version"],
            ping_interval=options["ping_interval"],
            ping_timeout=options["ping_timeout"],
            ping_timeout_disabled=options["ping_timeout_disabled"],
            handshake_timeout=options["handshake_timeout"],
            ack_timeout=options["ack_timeout"],
            strict_handshake=options["strict_handshake"],
            batch_duration=options["pub_sub_batch_duration"],
            max_batch_size=options.get("max_batch_size"),
            max_inflight_requests=options.get("max_inflight_requests"),
            budget=budget,
        )
        # Bound once: every event with handlers gets a Responder of its own.
        self._respond = self._engine.respond
        self._warn_twice = self._responded_twice

    def __repr__(self) -> str:
        return "<SCServerSocket {} {}>".format(self.id, self.state)

    # -- state -----------------------------------------------------------

    @property
    def state(self) -> str:
        """C{'connecting'}, C{'open'} or C{'closed'}."""
        return self._engine.state

    @property
    def protocol_version(self) -> Optional[int]:
        """1 or 2 once known (from the first pong, or forced); else C{None}."""
        return self._engine.protocol_version

    def get_state(self) -> str:
        """Return L{state}."""
        return self.state

    def get_bytes_received(self) -> int:
        """Return the number of bytes received on this connection."""
        return self._bytes_received

    def get_auth_token(self) -> Optional[dict[str, Any]]:
        """Return the decoded auth token, or C{None}."""
        return self.auth_token

    def subscriptions(self) -> list[str]:
        """Return the channels this socket is subscribed to, as a list."""
        return list(self._channels)

    def is_subscribed(self, channel: str) -> bool:
        """Return True when this socket is subscribed to C{channel}."""
        return channel in self._channels

    # -- sending ---------------------------------------------------------

    def emit(self, event: str, data: Any = None,
             callback: Optional[Callable[[Any, Any], object]] = None) -> None:
        """
        Send the event C{event} with C{data} to the client.

        With C{callback(error, data)}, ask for a reply: the callback gets
        the client's reply, or a L{scserver.errors.TimeoutError} after
        C{ack_timeout}.  Emitting C{'error'} raises the error locally;
        emitting another reserved name is an C{InvalidActionError}
        reported through the socket's C{'error'} event.
        """
        if event == "error":
            self._emit_error(data)
            return
        if event in RESERVED_EVENTS:
            self._emit_error(InvalidActionError(
                'The "{}" event is reserved and cannot be emitted on a server socket'
                .format(event)))
            return
        try:
            self._engine.emit(event, _engine.MISSING if data is None else data, callback)
        except Exception as e:
            self._emit_error(e)
            if callback is not None:
                callback(e, None)

    def invoke(self, event: str, data: Any = None) -> Deferred[Any]:
        """
        Send C{event} and wait for the client's reply.

        @return: a Deferred firing with the reply data; it fails with the
            client's error (hydrated), L{scserver.errors.TimeoutError} after
            C{ack_timeout}, or L{scserver.errors.BadConnectionError} when
            the connection closes first.
        """
        if event in RESERVED_EVENTS:
            return fail(InvalidActionError(
                'The "{}" event is reserved and cannot be emitted on a server socket'
                .format(event)))
        return self._engine.invoke(event, _engine.MISSING if data is None else data)

    def send(self, data: Union[str, bytes]) -> None:
        """Send C{data} as a raw message (no codec): C{str} as text, C{bytes} as binary."""
        self._engine.send_raw(data)

    def disconnect(self, code: int = 1000, reason: Any = None) -> None:
        """
        Close the connection with C{code} (1000, or 4000-4999 for
        applications) and C{reason}.

        @raise InvalidArgumentsError: when C{code} is not an integer.
        """
        if type(code) is not int:
            raise InvalidArgumentsError("If specified, the code argument must be a number")
        self._engine.close(code, reason)

    def destroy(self, code: int = 1000, reason: Any = None) -> None:
        """Disconnect (an alias kept for SocketCluster's API)."""
        self.disconnect(code, reason)

    def kick_out(self, channel: Union[str, list[str], tuple[str, ...], set[str], None] = None,
                 message: Any = None) -> None:
        """
        Unsubscribe the socket from C{channel} (a name or a list of names;
        every channel when C{None}) and tell the client with C{#kickOut}.
        """
        if channel is None:
            channels = list(self._channels)
        elif isinstance(channel, (list, tuple, set)):
            channels = [c for c in channel if c in self._channels]
        else:
            channels = [channel] if channel in self._channels else []
        for name in channels:
            self._channels.pop(name, None)
            self.exchange.remove_subscriber(self, name)
            data: dict[str, Any] = {}
            if message is not None:
                data["message"] = message
            data["channel"] = name
            self._engine.send_packet({"event": "#kickOut", "data": data})

    # -- the transport's seam --------------------------------------------

    def receive(self, payload: Union[str, bytes]) -> None:
        """
        Handle one inbound WebSocket message (called by the transport).

        The auth token's expiry is checked first: every event of the
        message (all of a batch) tells its middleware.  An unexpected error
        while handling the message is logged, and closes the socket (code
        1011).

        @param payload: C{str} for a text frame, C{bytes} for a binary one.
        """
        try:
            if self.auth_token is None:
                self._engine.receive(payload)
            else:
                self._expired = self._check_auth_expiry()
                try:
                    self._engine.receive(payload)
                finally:
                    self._expired = None
        except Exception:
            self._fail("handling a message")

    def connection_lost(self, code: int, reason: Optional[str] = None) -> None:
        """
        The connection is gone (called by the transport): the peer closed
        it with C{code} and C{reason}, it dropped (1006), or the transport
        cut it off.  Nothing is sent.  Does nothing once the socket is
        closed.
        """
        try:
            self._engine.connection_lost(code, reason)
        except Exception:
            self._log.failure("Unexpected error closing socket {id}", id=self.id)

    def deliver(self, publication: "Publication") -> None:
        """
        Send one publication of a subscribed channel to this client (called
        by the exchange).

        Without C{publishOut} middleware the message framed once for every
        recipient is written as it is; with it, each recipient's middleware
        sees its own copy of the data.

        @param publication: an L{scserver.exchange.Publication}.
        """
        if self._engine.state == _engine.CLOSED:
            return
        if publication.shared:
            prepared = publication.frame(self.codec)
            if prepared is not None:
                self._output.write_prepared(prepared)
            return
        middleware = self.server.middleware
        channel = publication.channel
        req = Request(MIDDLEWARE_PUBLISH_OUT, socket=self, channel=channel,
                      data=copy.deepcopy(publication.data), auth_token_expired_error=None)

        def done(blocked: Optional[Blocked]) -> None:
            if blocked is None and channel in self._channels:
                self._engine.send_packet(
                    {"event": "#publish", "data": {"channel": channel, "data": req.data}})

        # run() returns a Deferred (not None) when has() is true.
        middleware.run(MIDDLEWARE_PUBLISH_OUT, req).addCallback(done).addErrback(  # type: ignore[union-attr]
            self._failed, "publishOut middleware", None)

    # -- engine owner ----------------------------------------------------

    def engine_message(self, message: Union[str, bytes]) -> None:
        """Engine owner: count the message's bytes, emit C{'message'}."""
        if type(message) is bytes:
            size = len(message)
        else:
            size = len(message.encode("utf-8")) if not message.isascii() else len(message)  # type: ignore[union-attr]
        self._bytes_received += size
        stats = self._stats
        stats.messages_in += 1
        stats.bytes_in += size
        if self._handlers.get("message"):
            self._emit("message", message)

    def engine_raw(self, message: Any) -> None:
        """Engine handler: a message that is neither an event nor a reply."""
        self._emit("raw", message)

    def engine_error(self, error: Any) -> None:
        """Engine handler: report an error on this socket."""
        self._emit_error(error)

    def engine_pong(self) -> None:
        """Engine handler: a pong arrived (its expiry check was done on arrival)."""

    def engine_closed(self, code: int, reason: Any, was_open: bool) -> None:
        """Engine handler: the connection closed."""
        self._closed(code, reason, was_open)

    def engine_handshake(self, cid: Optional[CallId], data: Any) -> None:
        """Engine handler: the client sent C{#handshake}."""
        d = ensureDeferred(self._handshake(cid, data))
        d.addErrback(self._handshake_failed)

    def engine_event(self, event: str, data: Any, cid: Optional[CallId]) -> None:
        """Engine handler: the client sent an event (protocol or application)."""
        expired = self._expired
        handler = self._PROTOCOL_HANDLERS.get(event)
        if handler is not None:
            getattr(self, handler)(data, cid, expired)
            return
        if event in RESERVED_EVENTS:
            if cid is not None:
                self._engine.release(cid)
            return
        middleware = self.server.middleware
        if event[:1] == "#" or not middleware.has(MIDDLEWARE_EMIT):
            self._dispatch_event(event, data, cid)
            return
        req = Request(MIDDLEWARE_EMIT, socket=self, event=event, data=data,
                      auth_token_expired_error=expired)

        def done(blocked: Optional[Blocked]) -> None:
            if blocked is not None:
                self._engine.respond(cid, blocked.error)
            elif self.state != self.CLOSED:
                self._dispatch_event(event, req.data, cid)

        # run() returns a Deferred (not None) when has() is true.
        middleware.run(MIDDLEWARE_EMIT, req).addCallback(done).addErrback(  # type: ignore[union-attr]
            self._failed, "emit middleware", cid)

    # -- client events ---------------------------------------------------

    def _dispatch_event(self, event: str, data: Any, cid: Optional[CallId]) -> None:
        handlers = self._handlers.get(event)
        if handlers:
            send = self._respond
            if cid is not None:
                stats = self._stats
                stats.requests += 1
                if stats.requests & LATENCY_SAMPLE_MASK == 1:
                    send = stats.timed(self._now, send)
            respond = Responder(send, cid, self._warn_twice)
            call_handlers(handlers, event, data, respond, cid is not None,
                          self._handler_failed)
        elif cid is not None:
            self._engine.release(cid)

    def _handler_failed(self, failure: Failure, event: str) -> Any:
        """
        A handler raised or failed: a SocketCluster error (an application's
        subclass) is the reply; anything else is a bug, logged at a bounded
        rate, and the client gets the generic L{server_error}.
        """
        if isinstance(failure.value, SCError):
            return failure.value
        failure_log_for(self._clock).failure(
            self._log, "Error in a handler of {event!r} of socket {id}", failure,
            event=event, id=self.id)
        return server_error()

    def _responded_twice(self, cid: CallId) -> None:
        self.server.emit("warning", InvalidActionError(
            "Response {} has already been sent".format(cid)))

    # -- handshake -------------------------------------------------------

    async def _handshake(self, cid: Optional[CallId], data: Any) -> None:
        server = self.server
        signed = data.get("authToken") if type(data) is dict else None
        blocked: Union[Deferred[Optional[Blocked]], Blocked, None]
        blocked = server.middleware.run(MIDDLEWARE_HANDSHAKE_SC, Request(
            MIDDLEWARE_HANDSHAKE_SC, socket=self))
        if blocked is not None:
            blocked = await blocked
        if self.state == self.CLOSED:
            return
        if blocked is not None:
            self._reject_handshake(cid, blocked)
            return
        auth_error = None
        # A handshakeSC middleware may have authenticated the socket with
        # set_auth_token() (which fired the state change already): then the
        # events below are 'authenticate' only, as in v14.
        old_state = self.auth_state
        if self.auth_token is None and signed is not None:
            auth_error, bad = await self._verify_and_authenticate(signed)
            if self.state == self.CLOSED:
                return
            if bad:
                self._bad_token(auth_error, signed)
        self._engine.handshake_done()
        self._registry.promote(self)
        self._stats.handshakes += 1
        self._log.debug("Socket {id} connected from {peer}", id=self.id,
                        peer=self.remote_address)
        status = {"id": self.id, "pingTimeout": int(round(server.options["ping_timeout"] * 1000))}
        if auth_error is not None:
            status["authError"] = auth_error
        status["isAuthenticated"] = self.auth_state == self.AUTHENTICATED
        self._emit("connect", dict(status))
        server.emit("connection", self, dict(status))
        if self.auth_state == self.AUTHENTICATED:
            self._trigger_auth_events(old_state)
        if auth_error is not None:
            status["authError"] = dehydrate_error(auth_error)
        if self.state != self.CLOSED:
            self._engine.respond(cid, None, status)

    def _reject_handshake(self, cid: Optional[CallId], blocked: Blocked) -> None:
        error = blocked.error
        code = blocked.value if type(blocked.value) is int else None
        if code is None:
            code = getattr(error, "status_code", None) or getattr(error, "statusCode", None)
        if type(code) is not int:
            code = 4008
        wire = dehydrate_error(error)
        if type(wire) is dict:
            wire.pop("status_code", None)
            wire["statusCode"] = code
        self._engine.respond(cid, wire, {"code": code})
        self.disconnect(code)

    def _handshake_failed(self, failure: Failure) -> None:
        self._fail("the handshake", failure)

    # -- authentication --------------------------------------------------

    async def _verify_and_authenticate(self, signed: Any) -> tuple[Optional[Exception], bool]:
        """
        Verify C{signed} and run the authenticate middleware.

        The socket's C{auth_token}, C{signed_auth_token} and C{auth_state}
        change only once the middleware allowed the token (the middleware's
        C{req} carries it); a block leaves them as they were, or clears them
        when the token is marked bad.  With C{auth_require_expiry}, a token
        without C{exp} is an L{AuthTokenInvalidError}.

        @return: C{(error, bad)}: C{(None, False)} when the socket is now
            authenticated.
        """
        server = self.server
        if signed is None:
            return AuthTokenInvalidError("jwt must be provided"), True
        if type(signed) is not str:
            return AuthTokenError("Invalid token format - Token must be a string"), True
        config = server.auth_config
        try:
            token = await maybeDeferred(
                server.auth_engine.verify_token, signed, config.verification_key, {
                    "algorithms": config.verify_algorithms,
                    "leeway": config.leeway,
                    "socket": self,
                })
        except Exception as e:
            if _is_auth_error(e):
                return e, not isinstance(e, AuthTokenNotBeforeError)
            # The auth engine failed (a bug, a key store down): the token
            # is refused, and nothing of the cause reaches the client.
            failure_log_for(self._clock).failure(
                self._log, "The auth engine failed to verify a token of socket {id}",
                id=self.id)
            return AuthTokenError("The token could not be verified"), True
        if type(token) is not dict:
            return AuthTokenInvalidError("The token payload must be an object"), True
        if config.require_expiry and "exp" not in token:
            return AuthTokenInvalidError("jwt expiry required: the token has no exp claim"), True
        # The socket takes the token only once the authenticate middleware
        # allowed it: until then (an asynchronous middleware may take a
        # while) the socket keeps its previous state, and events handled
        # meanwhile do not see a token the middleware may still reject.
        blocked: Union[Deferred[Optional[Blocked]], Blocked, None]
        blocked = server.middleware.run(MIDDLEWARE_AUTHENTICATE, Request(
            MIDDLEWARE_AUTHENTICATE, socket=self, auth_token=token, signed_auth_token=signed))
        if blocked is not None:
            blocked = await blocked
        if blocked is not None:
            if blocked.value is True:
                self.auth_token = None
                self.signed_auth_token = None
                self.auth_state = self.UNAUTHENTICATED
            return blocked.error, blocked.value is True
        self.auth_token = token
        self.signed_auth_token = signed
        self.auth_state = self.AUTHENTICATED
        return None, False

    def _bad_token(self, error: Optional[Exception], signed: Optional[str]) -> None:
        info = {"authError": error, "signedAuthToken": signed}
        self._emit_error(error)
        self._emit("badAuthToken", info)
        self.server.emit("badSocketAuthToken", self, info)
        self.deauthenticate()

    def _on_authenticate(self, data: Any, cid: Optional[CallId],
                         expired: Optional[Exception]) -> None:
        old_state = self.auth_state
        d = ensureDeferred(self._verify_and_authenticate(data))

        def verified(result: tuple[Optional[Exception], bool]) -> None:
            error, bad = result
            if self.state == self.CLOSED:
                return
            if error is None:
                self._trigger_auth_events(old_state)
                self._engine.respond(cid, None, {"isAuthenticated": True, "authError": None})
                return
            wire = dehydrate_error(error)
            if bad:
                self._bad_token(error, data if type(data) is str else None)
                self._engine.respond(cid, error, {"isAuthenticated": False, "authError": wire})
            else:
                self._engine.respond(cid, None, {
                    "isAuthenticated": self.auth_state == self.AUTHENTICATED,
                    "authError": wire})

        d.addCallback(verified).addErrback(self._failed, "#authenticate", cid)

    def _on_remove_auth_token(self, data: Any, cid: Optional[CallId],
                              expired: Optional[Exception]) -> None:
        self._deauthenticate_self()

    def set_auth_token(self, data: dict[str, Any], expires_in: Optional[float] = None,
                       **options: Any) -> Deferred[str]:
        """
        Make C{data} (a dict) the socket's auth token: once the token is
        signed, the socket is authenticated with it (C{auth_token},
        C{signed_auth_token}, C{auth_state}) and the signed token is sent
        to the client in a C{#setAuthToken} event.  With an auth engine
        that signs asynchronously, the socket keeps its previous state
        until then (SocketCluster v14 switched at once, before the token
        existed); a later C{set_auth_token} or a C{deauthenticate} while
        signing wins: the earlier token is then neither taken nor sent.

        As in SocketCluster v14, the C{authenticate} middleware does not
        run: the server issued the token itself.  With the server option
        C{auth_require_expiry}, a token without C{exp} (no C{expires_in},
        no C{auth_default_expiry}) is refused.

        @param expires_in: seconds until the token expires; the server's
            C{auth_default_expiry} by default.  An C{exp} in C{data} wins.
        @param options: further token options (C{not_before}, C{audience},
            C{issuer}, C{subject}, C{jwtid}, C{headers}, C{no_timestamp}).
            C{algorithm} is refused: it is the server's to choose.
        @return: a Deferred firing with the signed token once it was sent.
        """
        if "algorithm" in options:
            error = InvalidArgumentsError(
                "Cannot change auth token algorithm at runtime; the server's is used")
            self._emit_error(error)
            return fail(error)
        if type(data) is not dict:
            return fail(InvalidArgumentsError("The auth token data must be a dict"))
        token = copy.deepcopy(data)
        config = self.server.auth_config
        now = int(self._clock.seconds()) if hasattr(self._clock, "seconds") else int(_time.time())
        if not options.get("no_timestamp", False):
            token.setdefault("iat", now)
        if "exp" not in token:
            expiry = config.default_expiry if expires_in is None else expires_in
            if expiry is not None:
                token["exp"] = now + int(expiry)
        if config.require_expiry and "exp" not in token:
            return fail(InvalidArgumentsError(
                "The auth token needs an exp: the server requires expiring tokens"))
        self._issuing = token
        sign_options = dict(options)
        sign_options["algorithm"] = config.algorithm
        sign_options["expires_in"] = None
        d: Deferred[Any] = maybeDeferred(self.server.auth_engine.sign_token, token,
                                         config.signature_key, sign_options)

        def signed(signed_token: str) -> str:
            if self._issuing is not token:
                return signed_token  # superseded, or deauthenticated meanwhile
            self._issuing = None
            previous = self.auth_state
            self.auth_token = token
            self.signed_auth_token = signed_token
            self.auth_state = self.AUTHENTICATED
            self._emit("authTokenSigned", signed_token)
            self._engine.send_packet({"event": "#setAuthToken", "data": {"token": signed_token}})
            self._trigger_auth_events(previous)
            return signed_token

        def failed(failure: Failure) -> Failure:
            self._emit_error(failure.value)
            self._engine.close(4002, None)
            return failure

        d.addCallbacks(signed, failed)
        return d

    def deauthenticate(self) -> None:
        """Deauthenticate the socket and tell the client (C{#removeAuthToken})."""
        self._deauthenticate_self()
        self._engine.send_packet({"event": "#removeAuthToken", "data": None})

    def _deauthenticate_self(self) -> None:
        self._issuing = None
        old_token = self.auth_token
        old_state = self.auth_state
        self.auth_token = None
        self.signed_auth_token = None
        self.auth_state = self.UNAUTHENTICATED
        if old_state != self.UNAUTHENTICATED:
            change = {"oldState": old_state, "newState": self.UNAUTHENTICATED}
            self._emit("authStateChange", change)
            self.server.emit("authenticationStateChange", self, dict(change))
        self._emit("deauthenticate", old_token)
        self.server.emit("deauthentication", self, old_token)

    def _trigger_auth_events(self, old_state: str) -> None:
        if old_state != self.auth_state:
            change: dict[str, Any] = {"oldState": old_state, "newState": self.auth_state}
            if self.auth_state == self.AUTHENTICATED:
                change["authToken"] = self.auth_token
            self._emit("authStateChange", change)
            self.server.emit("authenticationStateChange", self, dict(change))
        if self.auth_state == self.AUTHENTICATED:
            self._emit("authenticate", self.auth_token)
            self.server.emit("authentication", self, self.auth_token)

    def _check_auth_expiry(self) -> Optional[AuthTokenExpiredError]:
        """
        Deauthenticate the socket when its token has expired: when the
        clock is past C{exp} plus the server's C{auth_leeway}, the same
        allowance for clock skew as verification.

        @return: an L{AuthTokenExpiredError} for the middleware of the
            current action, or C{None}.
        """
        token = self.auth_token
        if token is None or self.auth_state != self.AUTHENTICATED:
            return None
        exp: Any = token.get("exp")
        if type(exp) not in (int, float):
            return None
        if self._clock.seconds() <= exp + self.server.auth_config.leeway:
            return None
        error = AuthTokenExpiredError("The socket auth token has expired", expiry=exp)
        self.deauthenticate()
        return error

    # -- pub/sub ---------------------------------------------------------

    def _on_subscribe(self, data: Any, cid: Optional[CallId],
                      expired: Optional[Exception]) -> None:
        batch = type(data) is dict and data.get("batch") is True
        if self.state != self.OPEN:
            self._engine.respond(cid, InvalidActionError(
                "Cannot subscribe socket to a channel before it has completed the handshake"),
                batch=batch)
            return
        if type(data) is str:
            data = {"channel": data}
        channel = data.get("channel") if type(data) is dict else None
        error = self._channel_name_error(channel, "Subscribe")
        if error is not None:
            self._engine.respond(cid, error, batch=batch)
            return
        wait_for_auth = bool(data.get("waitForAuth"))
        if wait_for_auth and expired is not None:
            self._engine.respond(cid, expired, batch=batch)
            return
        req = Request(MIDDLEWARE_SUBSCRIBE, socket=self, channel=channel, data=data.get("data"),
                      wait_for_auth=wait_for_auth, auth_token_expired_error=expired)
        blocked = self.server.middleware.run(MIDDLEWARE_SUBSCRIBE, req)
        if blocked is None:
            self._subscribe(req, data, cid, batch)
        else:
            blocked.addCallback(
                lambda b: self._engine.respond(cid, b.error, batch=batch) if b is not None
                else self._subscribe(req, data, cid, batch))
            blocked.addErrback(self._failed, "subscribe middleware", cid)

    def _channel_name_error(self, channel: object, action: str) -> Optional[InvalidActionError]:
        if type(channel) is not str:
            return InvalidActionError("{} channel name was malformatted".format(action))
        if len(channel) > self._max_channel_name_length:
            return InvalidActionError("{} channel name exceeds {} characters".format(
                action, self._max_channel_name_length))
        if channel.startswith(INTERNAL_CHANNEL_PREFIX):
            return InvalidActionError("{} channel name {!r} is reserved".format(action, channel))
        return None

    def _subscribe(self, req: Request, data: dict[str, Any], cid: Optional[CallId],
                   batch: bool) -> None:
        if self.state != self.OPEN:
            return
        channel = req.channel
        if channel in self._channels:
            self._engine.respond(cid, batch=batch)
            return
        limit = self.server.options["socket_channel_limit"]
        if limit is not None and len(self._channels) >= limit:
            self._engine.respond(cid, BrokerError(
                "Failed to subscribe socket to the {} channel - Socket {} tried to exceed the "
                "channel subscription limit of {}".format(channel, self.id, limit)), batch=batch)
            return
        options = dict(data)
        if req.data is not None or "data" in options:
            options["data"] = req.data
        self._channels[channel] = True
        # A subscription that opted in to recovery (scserver._history):
        # live publications are held back from now until the history is
        # read and replayed.
        recovery = self.exchange.history_store.recovery(self, channel, req.data) \
            if self.exchange.history_store.specs else None
        d = self.exchange.add_subscriber(self, channel)
        if recovery is not None:
            d.addCallback(lambda _: recovery.read())

        def subscribed(reply: Any) -> None:
            if self.state == self.CLOSED or channel not in self._channels:
                return
            self._emit("subscribe", channel, options)
            self.server.emit("subscription", self, channel, options)
            self._engine.respond(cid, None, reply, batch=batch)
            if recovery is not None:
                recovery.finish()

        def failed(failure: Failure) -> None:
            self._stats.broker_errors += 1
            self._channels.pop(channel, None)
            if recovery is not None:
                self.exchange.history_store.forget(self, channel)
            self._engine.respond(cid, BrokerError(
                "Failed to subscribe socket to the {} channel - {}".format(
                    channel, failure.getErrorMessage())), batch=batch)

        d.addCallbacks(subscribed, failed)

    def _on_presence(self, data: Any, cid: Optional[CallId],
                     expired: Optional[Exception]) -> None:
        # scserver's own procedure (see scserver._presence): who is on a
        # channel this socket is subscribed to.
        tracker = self.exchange.presence_tracker
        if tracker is None or self.state != self.OPEN:
            self._engine.respond(cid, InvalidActionError("Presence is not available"))
            return
        d = tracker.client_request(self, data, expired)
        d.addCallback(lambda outcome: self._engine.respond(cid, outcome[0], outcome[1]))
        d.addErrback(self._failed, "#presence", cid)

    def _on_unsubscribe(self, data: Any, cid: Optional[CallId],
                        expired: Optional[Exception]) -> None:
        if type(data) is dict:
            data = data.get("channel")
        error: Optional[Exception] = self._channel_name_error(data, "Unsubscribe")
        if error is not None:
            self._engine.respond(cid, error)
            return
        if data not in self._channels:
            error = BrokerError(
                "Failed to unsubscribe socket from the {} channel - Socket {} tried to "
                "unsubscribe from a channel which it is not subscribed to".format(data, self.id))
            self._emit_error(error)
            self._engine.respond(cid, error)
            return
        self._unsubscribe(data)
        self._engine.respond(cid)

    def _unsubscribe(self, channel: str) -> None:
        del self._channels[channel]
        self.exchange.remove_subscriber(self, channel)
        self._emit("unsubscribe", channel)
        self.server.emit("unsubscription", self, channel)

    def _on_publish(self, data: Any, cid: Optional[CallId],
                    expired: Optional[Exception]) -> None:
        server = self.server
        if not server.options["allow_client_publish"]:
            self._engine.respond(cid, InvalidActionError("Client publish feature is disabled"))
            return
        if self.state != self.OPEN:
            self._engine.respond(cid, InvalidActionError(
                "Cannot publish to a channel before the handshake has completed"))
            return
        # A str once checked below.
        channel: Any = data.get("channel") if type(data) is dict else None
        error = self._channel_name_error(channel, "Publish")
        if error is not None:
            self._engine.respond(cid, error)
            return
        middleware = server.middleware
        if not middleware.has(MIDDLEWARE_PUBLISH_IN):
            # No middleware: no request to show it, and the channel checked
            # above is the one published to.
            self._publish_checked(channel, data.get("data"), None, cid)
            return
        req = Request(MIDDLEWARE_PUBLISH_IN, socket=self, channel=channel, data=data.get("data"),
                      ack_data=None, auth_token_expired_error=expired)
        # run() returns a Deferred (not None) when has() is true.
        blocked = middleware.run(MIDDLEWARE_PUBLISH_IN, req)
        blocked.addCallback(  # type: ignore[union-attr]
            lambda b: self._engine.respond(cid, b.error, req.ack_data) if b is not None
            else self._publish(req, cid))
        blocked.addErrback(self._failed, "publishIn middleware", cid)  # type: ignore[union-attr]

    def _publish(self, req: Request, cid: Optional[CallId]) -> None:
        # After publishIn middleware, which may have changed the channel.
        error = self._channel_name_error(req.channel, "Publish")
        if error is not None:
            self._engine.respond(cid, error, req.ack_data)
            return
        self._publish_checked(req.channel, req.data, req, cid)

    def _publish_checked(self, channel: str, data: Any, req: Optional[Request],
                         cid: Optional[CallId]) -> None:
        # req: the publishIn middleware's request (its ack_data and data
        # are read when the ack goes), or None without middleware.
        # The in-process broker delivers inside publish_now and answers at
        # once (None): the ack goes out synchronously, after the delivery,
        # with no Deferred; an asynchronous broker's Deferred is waited on.
        d = self.exchange.publish_now(channel, data)
        if d is None:
            self._published(None, channel, data, req, cid)
            return

        def failed(failure: Failure) -> None:
            self._stats.broker_errors += 1
            self._engine.respond(cid, BrokerError(failure.getErrorMessage()),
                                 req.ack_data if req is not None else None)

        d.addCallbacks(self._published, failed, callbackArgs=(channel, data, req, cid))

    def _published(self, _: object, channel: str, data: Any, req: Optional[Request],
                   cid: Optional[CallId]) -> None:
        self._stats.publishes += 1
        if req is None:
            self._engine.respond(cid)
        else:
            self._engine.respond(cid, None, req.ack_data)
            data = req.data
        if self._handlers.get("#publish"):
            self._emit("#publish", {"channel": channel, "data": data})

    # -- closing ---------------------------------------------------------

    def _closed(self, code: int, reason: Any, was_open: bool) -> None:
        server = self.server
        self._registry.remove(self)
        cooldown = server.options.get("rate_limit_cooldown")
        if code == _engine.CLOSE_RATE_LIMIT and cooldown and self.remote_address is not None:
            self._registry.cool_down(self.remote_address, self._now() + cooldown)
        self._stats.closed(code)
        self._log.debug("Socket {id} from {peer} disconnected ({code})", id=self.id,
                        peer=self.remote_address, code=code)
        for channel in list(self._channels):
            self._unsubscribe(channel)
        if was_open:
            server.emit("disconnection", self, code, reason)
        else:
            server.emit("connectionAbort", self, code, reason)
        server.emit("closure", self, code, reason)
        self._emit("disconnect" if was_open else "connectAbort", code, reason)
        self._emit("close", code, reason)
        for name in ("authenticate", "authStateChange", "deauthenticate"):
            self.off(name)
        error = socket_protocol_error(code, reason)
        if error is not None:
            self._emit_error(error)

    # -- errors ----------------------------------------------------------

    def _emit_error(self, error: Any) -> None:
        self._stats.error(error)
        self._emit("error", error)
        self.server.emit("warning", error)

    def _failed(self, failure: Failure, what: str, cid: Optional[CallId]) -> None:
        """
        An errback for the continuation of a request: log the failure
        (rate-limited, see L{scserver._events.FailureLog}), and answer the
        request (C{cid}) with a generic error so the client is not left
        waiting and learns nothing of the cause.
        """
        failure_log_for(self._clock).failure(
            self._log, "Unexpected error in {what} of socket {id}", failure,
            what=what, id=self.id)
        self._engine.respond(cid, server_error())

    def _fail(self, what: str, failure: Optional[Failure] = None) -> None:
        """
        Something failed that leaves this connection in an unknown state:
        log it (rate-limited) and close with 1011 (the WebSocket code for an
        unexpected server condition).
        """
        failure_log_for(self._clock).failure(
            self._log, "Unexpected error in {what} of socket {id}", failure,
            what=what, id=self.id)
        self._engine.close(1011, "Server error")
